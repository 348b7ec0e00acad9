/* The HTML page of `kiln report` (compress/report.h). Every chart is inline SVG drawn here; the page has
 * ids a test (and a reader's browser tools) can find: #summary, #accuracy-size, #accuracy-latency,
 * #layers, #histograms, #sensitivity, and one row per model (class "model-row"). */
#include "compress/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "format/storage.h"

enum { CHART_W = 520, CHART_H = 320, MARGIN_L = 72, MARGIN_R = 24, MARGIN_T = 20, MARGIN_B = 48, HIST_BINS = 64 };

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
#define COLOR(i) palette[(i) % (int)(sizeof palette / sizeof palette[0])]

static void html_text(FILE *out, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '&': fputs("&amp;", out); break;
        case '"': fputs("&quot;", out); break;
        default: fputc(*s, out);
        }
    }
}

/* The weights a report looks at: trainable initializers and compact-stored constants of rank >= 2
 * (convolution kernels, dense and attention matrices), not biases or normalisation vectors. */
static bool is_weight(const kn_value *v) {
    return (v->kind == KN_VALUE_PARAM || (v->kind == KN_VALUE_CONST && v->storage)) && v->shape.ndim >= 2 &&
           v->dtype == KN_F32 && v->data;
}

/* Bits per stored weight element: 32 for plain f32, else the storage's (sparse: its values'). */
static int weight_bits(const kn_value *v) {
    const kn_storage *s = v->storage;
    if (!s)
        return 32;
    if (kn_encoding_is_sparse(s->encoding))
        s = s->values;
    return s->bits;
}

/* ---- charts ---- */

typedef struct axis {
    double lo, hi;
    bool log;
} axis;

static double axis_pos(const axis *a, double v, double pixels) {
    double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo)) : (v - a->lo) / (a->hi - a->lo);
    return t * pixels;
}

/* A range around [lo, hi] with some room; a log axis needs lo > 0. */
static axis axis_around(double lo, double hi, bool log_scale) {
    if (log_scale) {
        lo = lo > 0 ? lo / 1.5 : 1;
        hi = hi > lo ? hi * 1.5 : lo * 10;
    } else {
        double pad = hi > lo ? 0.08 * (hi - lo) : 0.01;
        lo -= pad;
        hi += pad;
    }
    return (axis){lo, hi, log_scale};
}

static void chart_frame(FILE *out, const char *id, const char *x_label, const char *y_label, const axis *x,
                        const axis *y, const char *x_unit) {
    int w = CHART_W - MARGIN_L - MARGIN_R, h = CHART_H - MARGIN_T - MARGIN_B;
    fprintf(out, "<svg id=\"%s\" class=\"chart\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                 "xmlns=\"http://www.w3.org/2000/svg\">\n", id, CHART_W, CHART_H, CHART_W, CHART_H);
    fprintf(out, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" stroke=\"#999\"/>\n", MARGIN_L,
            MARGIN_T, w, h);
    for (int i = 0; i <= 4; i++) {
        double t = i / 4.0;
        double xv = x->log ? pow(10, log10(x->lo) + t * (log10(x->hi) - log10(x->lo))) : x->lo + t * (x->hi - x->lo);
        double yv = y->lo + t * (y->hi - y->lo);
        double px = MARGIN_L + t * w, py = MARGIN_T + h - t * h;
        fprintf(out, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/>", px, MARGIN_T, px,
                MARGIN_T + h);
        fprintf(out, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", MARGIN_L, py,
                MARGIN_L + w, py);
        fprintf(out, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%.3g%s</text>", px,
                MARGIN_T + h + 16, xv, x_unit);
        fprintf(out, "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%.4g</text>\n", MARGIN_L - 6,
                py + 4, yv);
    }
    fprintf(out, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">", MARGIN_L + w / 2, CHART_H - 8);
    html_text(out, x_label);
    fprintf(out, "</text><text x=\"14\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\" "
                 "transform=\"rotate(-90 14 %d)\">", MARGIN_T + h / 2, MARGIN_T + h / 2);
    html_text(out, y_label);
    fprintf(out, "</text>\n");
}

/* Accuracy (y) against x_of(model) (x, log scale): one labelled point per model that has both. */
static void scatter(FILE *out, const char *id, const char *x_label, const char *x_unit, const kn_report_model *m,
                    int n, double (*x_of)(const kn_model_summary *)) {
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int i = 0; i < n; i++) {
        double x = x_of(&m[i].summary);
        if (x > 0) {
            xlo = fmin(xlo, x);
            xhi = fmax(xhi, x);
        }
        if (m[i].summary.has_eval && m[i].summary.accuracy >= 0) {
            ylo = fmin(ylo, m[i].summary.accuracy);
            yhi = fmax(yhi, m[i].summary.accuracy);
        }
    }
    if (!(xlo <= xhi))
        xlo = xhi = 1;
    if (!(ylo <= yhi))
        ylo = 0, yhi = 1;
    axis x = axis_around(xlo, xhi, true), y = axis_around(ylo, yhi, false);
    chart_frame(out, id, x_label, "accuracy", &x, &y, x_unit);
    int w = CHART_W - MARGIN_L - MARGIN_R, h = CHART_H - MARGIN_T - MARGIN_B;
    for (int i = 0; i < n; i++) {
        double xv = x_of(&m[i].summary);
        if (!(xv > 0) || !m[i].summary.has_eval || m[i].summary.accuracy < 0)
            continue;
        double px = MARGIN_L + axis_pos(&x, xv, w), py = MARGIN_T + h - axis_pos(&y, m[i].summary.accuracy, h);
        fprintf(out, "<circle class=\"point\" cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\"><title>", px, py, COLOR(i));
        html_text(out, m[i].label);
        bool right_half = px > MARGIN_L + 0.6 * w; /* labels there go left of the point, inside the chart */
        fprintf(out, ": %.4f</title></circle><text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"%s\">",
                m[i].summary.accuracy, right_half ? px - 7 : px + 7, py - 6, right_half ? "end" : "start");
        html_text(out, m[i].label);
        fprintf(out, "</text>\n");
    }
    fprintf(out, "</svg>\n");
}

static double file_kib(const kn_model_summary *s) { return (double)s->file_bytes / 1024.0; }
static double latency_b1(const kn_model_summary *s) { return s->latency_ms[0]; }
static double latency_b32(const kn_model_summary *s) { return s->latency_ms[1]; }

/* ---- sections ---- */

static void summary_table(FILE *out, const kn_report_model *m, int n) {
    fprintf(out, "<h2>Summary</h2>\n<table id=\"summary\"><tr><th>model</th><th>accuracy</th><th>loss</th>"
                 "<th>params</th><th>non-zeros</th><th>FLOPs/sample</th><th>file bytes</th><th>peak memory</th>"
                 "<th>latency b1 (ms)</th><th>latency b32 (ms)</th></tr>\n");
    for (int i = 0; i < n; i++) {
        const kn_model_summary *s = &m[i].summary;
        fprintf(out, "<tr class=\"model-row\"><td><span class=\"swatch\" style=\"background:%s\"></span>", COLOR(i));
        html_text(out, m[i].label);
        if (s->has_eval && s->accuracy >= 0)
            fprintf(out, "</td><td>%.4f</td><td>%.4f</td>", s->accuracy, s->loss);
        else if (s->has_eval)
            fprintf(out, "</td><td>-</td><td>%.4f</td>", s->loss);
        else
            fprintf(out, "</td><td>-</td><td>-</td>");
        fprintf(out, "<td>%lld</td><td>%lld</td><td>%lld</td><td>%lld</td><td>%lld</td>", (long long)s->params,
                (long long)s->nonzeros, (long long)s->flops, (long long)s->file_bytes, (long long)s->peak_memory);
        for (int b = 0; b < 2; b++)
            if (s->latency_ms[b] >= 0)
                fprintf(out, "<td>%.3f</td>", s->latency_ms[b]);
            else
                fprintf(out, "<td>-</td>");
        fprintf(out, "</tr>\n");
    }
    fprintf(out, "</table>\n");
}

/* The weight named `name` in g, or NULL. */
static const kn_value *find_weight(const kn_graph *g, const char *name) {
    for (int v = 0; v < g->n_values; v++)
        if (is_weight(&g->values[v]) && strcmp(g->values[v].name, name) == 0)
            return &g->values[v];
    return NULL;
}

/* One row per weight of the first model (and of any later model's weights it lacks, e.g. after
 * structured pruning renamed nothing but dropped nothing either): sparsity and bits per model, with a bar. */
static void layer_table(FILE *out, const kn_report_model *m, int n) {
    fprintf(out, "<h2>Layers: sparsity and bits per weight</h2>\n<table id=\"layers\"><tr><th>weight</th>");
    for (int i = 0; i < n; i++) {
        fprintf(out, "<th>");
        html_text(out, m[i].label);
        fprintf(out, "</th>");
    }
    fprintf(out, "</tr>\n");
    for (int k = 0; k < n; k++) {
        const kn_graph *g = m[k].graph;
        for (int v = 0; v < g->n_values; v++) {
            const kn_value *w = &g->values[v];
            bool seen_before = false;
            for (int j = 0; j < k && !seen_before; j++)
                seen_before = find_weight(m[j].graph, w->name) != NULL;
            if (!is_weight(w) || seen_before)
                continue;
            fprintf(out, "<tr class=\"layer-row\"><td>");
            html_text(out, w->name);
            fprintf(out, "</td>");
            for (int i = 0; i < n; i++) {
                const kn_value *x = find_weight(m[i].graph, w->name);
                if (!x) {
                    fprintf(out, "<td>-</td>");
                    continue;
                }
                int64_t numel = kn_shape_numel(&x->shape), zeros = 0;
                for (int64_t e = 0; e < numel; e++)
                    zeros += ((const float *)x->data)[e] == 0.0f;
                double sparsity = numel ? (double)zeros / (double)numel : 0;
                fprintf(out, "<td><svg width=\"60\" height=\"10\"><rect width=\"60\" height=\"10\" fill=\"#eee\"/>"
                             "<rect width=\"%.1f\" height=\"10\" fill=\"%s\"/></svg> %.1f%% &middot; %d-bit "
                             "&middot; %lld</td>",
                        60 * sparsity, COLOR(i), 100 * sparsity, weight_bits(x), (long long)numel);
            }
            fprintf(out, "</tr>\n");
        }
    }
    fprintf(out, "</table>\n");
}

/* Histograms of every model's non-zero weights over one common range (the largest magnitude of all),
 * as outlines on one chart; the share of exact zeros is given in the legend. */
static kiln_status histograms(FILE *out, const kn_report_model *m, int n) {
    double limit = 0;
    for (int i = 0; i < n; i++)
        for (int v = 0; v < m[i].graph->n_values; v++) {
            const kn_value *w = &m[i].graph->values[v];
            if (!is_weight(w))
                continue;
            for (int64_t e = 0; e < kn_shape_numel(&w->shape); e++)
                limit = fmax(limit, fabs((double)((const float *)w->data)[e]));
        }
    if (!(limit > 0) || !isfinite(limit))
        limit = 1;
    double *bins = calloc((size_t)n * HIST_BINS, sizeof(double)); /* (n, HIST_BINS) fractions */
    double *zero_share = calloc((size_t)n, sizeof(double));
    if (!bins || !zero_share) {
        free(bins);
        free(zero_share);
        return kn_fail(KILN_ERR_NOMEM, "out of memory for histograms");
    }
    double top = 0;
    for (int i = 0; i < n; i++) {
        int64_t total = 0, zeros = 0;
        for (int v = 0; v < m[i].graph->n_values; v++) {
            const kn_value *w = &m[i].graph->values[v];
            if (!is_weight(w))
                continue;
            for (int64_t e = 0; e < kn_shape_numel(&w->shape); e++) {
                double x = ((const float *)w->data)[e];
                total++;
                if (x == 0) {
                    zeros++;
                    continue;
                }
                int b = (int)((x + limit) / (2 * limit) * HIST_BINS);
                bins[i * HIST_BINS + (b < 0 ? 0 : b >= HIST_BINS ? HIST_BINS - 1 : b)] += 1;
            }
        }
        for (int b = 0; b < HIST_BINS; b++) {
            bins[i * HIST_BINS + b] /= total ? (double)total : 1;
            top = fmax(top, bins[i * HIST_BINS + b]);
        }
        zero_share[i] = total ? (double)zeros / (double)total : 0;
    }
    axis x = {-limit, limit, false}, y = {0, top > 0 ? top * 1.1 : 1, false};
    fprintf(out, "<h2>Weight histograms (non-zero weights; share of all weights per bin)</h2>\n");
    chart_frame(out, "histograms", "weight value", "share", &x, &y, "");
    int w = CHART_W - MARGIN_L - MARGIN_R, h = CHART_H - MARGIN_T - MARGIN_B;
    for (int i = 0; i < n; i++) {
        fprintf(out, "<polyline class=\"histogram\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"",
                COLOR(i));
        for (int b = 0; b < HIST_BINS; b++) {
            double x0 = MARGIN_L + (double)b / HIST_BINS * w, x1 = MARGIN_L + (double)(b + 1) / HIST_BINS * w;
            double py = MARGIN_T + h - axis_pos(&y, bins[i * HIST_BINS + b], h);
            fprintf(out, "%.1f,%.1f %.1f,%.1f ", x0, py, x1, py);
        }
        fprintf(out, "\"/>\n");
    }
    fprintf(out, "</svg>\n<ul class=\"legend\">");
    for (int i = 0; i < n; i++) {
        fprintf(out, "<li><span class=\"swatch\" style=\"background:%s\"></span>", COLOR(i));
        html_text(out, m[i].label);
        fprintf(out, ": %.1f%% of weights are exactly 0</li>", 100 * zero_share[i]);
    }
    fprintf(out, "</ul>\n");
    free(bins);
    free(zero_share);
    return KILN_OK;
}

/* Sensitivity curves from a model's "compress.sensitivity" metadata (written by kiln prune
 * --sensitivity): "LAYER:AMOUNT=ACCURACY,AMOUNT=ACCURACY;LAYER:..." — accuracy with that layer alone
 * pruned by each amount. */
typedef struct curve {
    char name[128];
    int n;
    double amount[16], accuracy[16];
} curve;

static int parse_curves(const char *text, curve *curves, int max) {
    int n = 0;
    while (text && *text && n < max) {
        const char *colon = strchr(text, ':'), *end = strchr(text, ';');
        if (!end)
            end = text + strlen(text);
        if (!colon || colon > end)
            break;
        curve *c = &curves[n];
        snprintf(c->name, sizeof c->name, "%.*s", (int)(colon - text) < 127 ? (int)(colon - text) : 127, text);
        c->n = 0;
        for (const char *p = colon + 1; p < end && c->n < 16;) {
            char *next;
            double a = strtod(p, &next);
            if (next == p || *next != '=')
                break;
            double acc = strtod(next + 1, &next);
            c->amount[c->n] = a;
            c->accuracy[c->n++] = acc;
            if (*next != ',')
                break;
            p = next + 1;
        }
        n += c->n > 0;
        text = *end ? end + 1 : end;
    }
    return n;
}

static void sensitivity(FILE *out, const kn_report_model *m, int n) {
    fprintf(out, "<h2>Pruning sensitivity per layer</h2>\n");
    for (int i = 0; i < n; i++) {
        curve curves[32];
        int k = parse_curves(kn_graph_meta(m[i].graph, "compress.sensitivity"), curves, 32);
        if (k == 0)
            continue;
        double lo = INFINITY, hi = -INFINITY;
        for (int c = 0; c < k; c++)
            for (int j = 0; j < curves[c].n; j++) {
                lo = fmin(lo, curves[c].accuracy[j]);
                hi = fmax(hi, curves[c].accuracy[j]);
            }
        axis x = {0, 1, false}, y = axis_around(lo, hi, false);
        fprintf(out, "<p>");
        html_text(out, m[i].label);
        fprintf(out, ": accuracy with one layer pruned alone</p>\n");
        chart_frame(out, "sensitivity", "amount pruned", "accuracy", &x, &y, "");
        int w = CHART_W - MARGIN_L - MARGIN_R, h = CHART_H - MARGIN_T - MARGIN_B;
        for (int c = 0; c < k; c++) {
            fprintf(out, "<polyline class=\"curve\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"",
                    COLOR(c));
            for (int j = 0; j < curves[c].n; j++)
                fprintf(out, "%.1f,%.1f ", MARGIN_L + axis_pos(&x, curves[c].amount[j], w),
                        MARGIN_T + h - axis_pos(&y, curves[c].accuracy[j], h));
            fprintf(out, "\"><title>");
            html_text(out, curves[c].name);
            fprintf(out, "</title></polyline>\n");
        }
        fprintf(out, "</svg>\n<ul class=\"legend\">");
        for (int c = 0; c < k; c++) {
            fprintf(out, "<li><span class=\"swatch\" style=\"background:%s\"></span>", COLOR(c));
            html_text(out, curves[c].name);
            fprintf(out, "</li>");
        }
        fprintf(out, "</ul>\n");
        return; /* the first model that has curves */
    }
    fprintf(out, "<p id=\"sensitivity\">No model carries a sensitivity scan (kiln prune --sensitivity "
                 "writes one).</p>\n");
}

kiln_status kn_report_write_html(FILE *out, const char *title, const char *data, const kn_report_model *models,
                                 int n) {
    if (n < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "a report needs at least one model");
    fprintf(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    html_text(out, title);
    fprintf(out, "</title>\n<style>body{font-family:sans-serif;margin:24px;color:#222}"
                 "table{border-collapse:collapse;margin:8px 0 24px}td,th{border:1px solid #ccc;padding:4px 8px;"
                 "font-size:13px;text-align:right}td:first-child,th:first-child{text-align:left}"
                 ".swatch{display:inline-block;width:10px;height:10px;margin-right:6px}"
                 ".charts{display:flex;flex-wrap:wrap;gap:16px}.legend{list-style:none;padding:0;font-size:13px}"
                 "</style></head><body>\n<h1>");
    html_text(out, title);
    fprintf(out, "</h1>\n");
    if (data) {
        fprintf(out, "<p>Accuracy and loss on <code>");
        html_text(out, data);
        fprintf(out, "</code>; latency is the median of runs on this machine, one session each.</p>\n");
    }
    summary_table(out, models, n);
    fprintf(out, "<h2>Accuracy against size and latency</h2>\n<div class=\"charts\">\n");
    scatter(out, "accuracy-size", "file size (KiB, log scale)", "", models, n, file_kib);
    scatter(out, "accuracy-latency", "latency at batch 1 (ms, log scale)", "", models, n, latency_b1);
    scatter(out, "accuracy-latency32", "latency at batch 32 (ms, log scale)", "", models, n, latency_b32);
    fprintf(out, "</div>\n");
    layer_table(out, models, n);
    KN_TRY(histograms(out, models, n));
    sensitivity(out, models, n);
    fprintf(out, "</body></html>\n");
    return ferror(out) ? kn_fail(KILN_ERR_IO, "writing the report failed") : KILN_OK;
}
