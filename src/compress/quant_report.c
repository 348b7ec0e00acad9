/* The per-layer quantization report: one line per quantized weight and activation. */
#include <math.h>

#include "compress/quantize.h"

void kn_quant_json_string(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

/* A number, or null for an infinite SQNR (no error at all). */
static void json_double(FILE *out, const char *key, double v) {
    fprintf(out, ",\"%s\":", key);
    if (isfinite(v))
        fprintf(out, "%.6g", v);
    else
        fprintf(out, "null");
}

void kn_quant_report_print(FILE *out, const kn_quant_report *r) {
    fprintf(out, "%-22s %-26s %-28s %10s %10s %11s %8s %9s\n", "layer", "value", "stored as", "min", "max", "scale",
            "clipped", "SQNR dB");
    for (int i = 0; i < r->n; i++) {
        const kn_quant_stat *s = &r->stats[i];
        char scale[32] = "-", sqnr[16] = "inf", clipped[16] = "-";
        if (s->scale_max > 0 && s->scale_min == s->scale_max)
            snprintf(scale, sizeof scale, "%.3g", s->scale_min);
        else if (s->scale_max > 0)
            snprintf(scale, sizeof scale, "%.2g..%.2g", s->scale_min, s->scale_max);
        if (isfinite(s->sqnr_db))
            snprintf(sqnr, sizeof sqnr, "%.1f", s->sqnr_db);
        if (s->scale_max > 0)
            snprintf(clipped, sizeof clipped, "%.2f%%", 100 * s->clip_fraction);
        fprintf(out, "%-22.22s %-26.26s %-28.28s %10.4g %10.4g %11s %8s %9s\n", s->layer, s->name, s->encoding, s->lo,
                s->hi, scale, clipped, sqnr);
    }
    for (int i = 0; i < r->n; i++) {
        const kn_quant_stat *s = &r->stats[i];
        if (s->adaround)
            fprintf(out, "AdaRound %s: output MSE on calibration data %.4g (nearest) -> %.4g (learned), "
                    "%.2f%% of weights rounded the other way\n", s->layer, s->round_nearest_mse, s->round_learned_mse,
                    s->count ? 100.0 * (double)s->round_flipped / (double)s->count : 0.0);
    }
}

void kn_quant_report_print_json(FILE *out, const kn_quant_report *r) {
    fprintf(out, "[");
    for (int i = 0; i < r->n; i++) {
        const kn_quant_stat *s = &r->stats[i];
        fprintf(out, "%s{\"layer\":", i ? "," : "");
        kn_quant_json_string(out, s->layer);
        fprintf(out, ",\"value\":");
        kn_quant_json_string(out, s->name);
        fprintf(out, ",\"kind\":\"%s\",\"stored_as\":", s->is_weight ? "weight" : "activation");
        kn_quant_json_string(out, s->encoding);
        fprintf(out, ",\"bits\":%d,\"elements\":%lld", s->bits, (long long)s->count);
        json_double(out, "min", s->lo);
        json_double(out, "max", s->hi);
        json_double(out, "scale_min", s->scale_min);
        json_double(out, "scale_max", s->scale_max);
        json_double(out, "clip_fraction", s->clip_fraction);
        json_double(out, "sqnr_db", s->sqnr_db);
        if (s->adaround) {
            fprintf(out, ",\"adaround\":{\"flipped\":%lld", (long long)s->round_flipped);
            json_double(out, "nearest_mse", s->round_nearest_mse);
            json_double(out, "learned_mse", s->round_learned_mse);
            fprintf(out, "}");
        }
        fprintf(out, "}");
    }
    fprintf(out, "]");
}
