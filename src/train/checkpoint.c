/* The run's options as checkpoint metadata (see checkpoint.h). */
#include "train/checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

typedef enum field_type { FIELD_I64, FIELD_U64, FIELD_F32, FIELD_BOOL, FIELD_OPTIM, FIELD_LOSS, FIELD_REDUCTION,
                          FIELD_SCHEDULE, FIELD_AUGMENT } field_type;

typedef struct option_field {
    const char *key;
    field_type type;
    size_t offset; /* into kn_train_options */
} option_field;

#define FIELD(key, type, member) {key, type, offsetof(kn_train_options, member)}

/* Every option that changes the numbers a run computes. "train.batch", "train.seed" and "train.loss" are
 * also the final model's provenance (kn_loss_of_model reads "train.loss"). */
static const option_field fields[] = {
    FIELD("train.epochs", FIELD_I64, epochs),
    FIELD("train.batch", FIELD_I64, batch),
    FIELD("train.seed", FIELD_U64, seed),
    FIELD("train.early_stop", FIELD_I64, early_stop),
    FIELD("train.keep_best", FIELD_BOOL, keep_best),
    FIELD("train.clip_norm", FIELD_F32, clip_norm),
    FIELD("train.optimizer", FIELD_OPTIM, optim.kind),
    FIELD("train.optim.lr", FIELD_F32, optim.lr),
    FIELD("train.optim.momentum", FIELD_F32, optim.momentum),
    FIELD("train.optim.dampening", FIELD_F32, optim.dampening),
    FIELD("train.optim.nesterov", FIELD_BOOL, optim.nesterov),
    FIELD("train.optim.weight_decay", FIELD_F32, optim.weight_decay),
    FIELD("train.optim.beta1", FIELD_F32, optim.beta1),
    FIELD("train.optim.beta2", FIELD_F32, optim.beta2),
    FIELD("train.optim.eps", FIELD_F32, optim.eps),
    FIELD("train.optim.lr_decay", FIELD_F32, optim.lr_decay),
    FIELD("train.optim.initial_accumulator_value", FIELD_F32, optim.initial_accumulator_value),
    FIELD("train.optim.eps1", FIELD_F32, optim.eps1),
    FIELD("train.optim.eps2", FIELD_F32, optim.eps2),
    FIELD("train.optim.clip_threshold", FIELD_F32, optim.clip_threshold),
    FIELD("train.optim.decay_rate", FIELD_F32, optim.decay_rate),
    FIELD("train.optim.relative_step", FIELD_BOOL, optim.relative_step),
    FIELD("train.optim.scale_parameter", FIELD_BOOL, optim.scale_parameter),
    FIELD("train.optim.warmup_init", FIELD_BOOL, optim.warmup_init),
    FIELD("train.optim.af_beta1", FIELD_F32, optim.af_beta1),
    FIELD("train.loss", FIELD_LOSS, loss.kind),
    FIELD("train.loss.reduction", FIELD_REDUCTION, loss.reduction),
    FIELD("train.loss.label_smoothing", FIELD_F32, loss.label_smoothing),
    FIELD("train.schedule", FIELD_SCHEDULE, schedule.kind),
    FIELD("train.schedule.warmup_steps", FIELD_I64, schedule.warmup_steps),
    FIELD("train.schedule.step_size", FIELD_I64, schedule.step_size),
    FIELD("train.schedule.gamma", FIELD_F32, schedule.gamma),
    FIELD("train.schedule.min_lr", FIELD_F32, schedule.min_lr),
    FIELD("train.augment", FIELD_AUGMENT, augment),
};

enum { N_FIELDS = (int)(sizeof fields / sizeof fields[0]) };

/* The key whose presence says the options were recorded (older checkpoints lack it). */
#define MARKER_KEY "train.optim.lr"

/* An option added after checkpoints recorded options: absent means its default (off), and it is written only
 * when on or already noted, so a run without it writes the same model file as before it existed. */
static bool optional_field(const option_field *f) { return f->type == FIELD_AUGMENT; }

static void format_field(const option_field *f, const kn_train_options *o, char *text, size_t size) {
    const char *p = (const char *)o + f->offset;
    switch (f->type) {
    case FIELD_I64: snprintf(text, size, "%" PRId64, *(const int64_t *)p); break;
    case FIELD_U64: snprintf(text, size, "%" PRIu64, *(const uint64_t *)p); break;
    case FIELD_F32: snprintf(text, size, "%.9g", (double)*(const float *)p); break;
    case FIELD_BOOL: snprintf(text, size, "%s", *(const bool *)p ? "true" : "false"); break;
    case FIELD_OPTIM: snprintf(text, size, "%s", kn_optim_name(*(const kn_optim_kind *)p)); break;
    case FIELD_LOSS: snprintf(text, size, "%s", kn_loss_name(*(const kn_loss_kind *)p)); break;
    case FIELD_REDUCTION:
        snprintf(text, size, "%s", *(const kn_reduction *)p == KN_REDUCTION_SUM ? "sum" : "mean");
        break;
    case FIELD_SCHEDULE: snprintf(text, size, "%s", kn_schedule_name(*(const kn_schedule_kind *)p)); break;
    case FIELD_AUGMENT: kn_augment_format((const kn_augment *)p, text, size); break;
    }
}

static const option_field *field_of(const char *key) {
    for (int i = 0; i < N_FIELDS; i++)
        if (strcmp(fields[i].key, key) == 0)
            return &fields[i];
    kn_fail(KILN_ERR_INVALID_ARG, "'%s' is not a recorded training option", key);
    return NULL;
}

/* The bytes a field of the type takes in kn_train_options. */
static size_t field_size(field_type type) {
    switch (type) {
    case FIELD_I64: return sizeof(int64_t);
    case FIELD_U64: return sizeof(uint64_t);
    case FIELD_F32: return sizeof(float);
    case FIELD_BOOL: return sizeof(bool);
    case FIELD_OPTIM: return sizeof(kn_optim_kind);
    case FIELD_LOSS: return sizeof(kn_loss_kind);
    case FIELD_REDUCTION: return sizeof(kn_reduction);
    case FIELD_SCHEDULE: return sizeof(kn_schedule_kind);
    case FIELD_AUGMENT: return sizeof(kn_augment);
    }
    return 0;
}

kiln_status kn_checkpoint_option_text(const kn_train_options *o, const char *key, char *text, size_t size) {
    const option_field *f = field_of(key);
    if (!f)
        return KILN_ERR_INVALID_ARG;
    format_field(f, o, text, size);
    return KILN_OK;
}

kiln_status kn_checkpoint_option_copy(kn_train_options *dst, const kn_train_options *src, const char *key) {
    const option_field *f = field_of(key);
    if (!f)
        return KILN_ERR_INVALID_ARG;
    memcpy((char *)dst + f->offset, (const char *)src + f->offset, field_size(f->type));
    return KILN_OK;
}

kiln_status kn_checkpoint_options_save(kn_graph *g, const kn_train_options *o) {
    for (int i = 0; i < N_FIELDS; i++) {
        char text[64];
        format_field(&fields[i], o, text, sizeof text);
        if (optional_field(&fields[i]) && strcmp(text, "none") == 0 && !kn_graph_meta(g, fields[i].key))
            continue;
        KN_TRY(kn_graph_set_meta(g, fields[i].key, text));
    }
    return KILN_OK;
}

/* Parses `text` as the field's type into `dest`; false when it is not one. */
static bool parse_field(const option_field *f, const char *text, void *dest) {
    char *end;
    errno = 0;
    switch (f->type) {
    case FIELD_I64: {
        long long v = strtoll(text, &end, 10);
        *(int64_t *)dest = v;
        return !errno && end != text && !*end;
    }
    case FIELD_U64: {
        unsigned long long v = strtoull(text, &end, 10);
        *(uint64_t *)dest = v;
        return !errno && end != text && !*end && text[0] != '-';
    }
    case FIELD_F32: {
        float v = strtof(text, &end);
        *(float *)dest = v;
        return !errno && end != text && !*end;
    }
    case FIELD_BOOL:
        *(bool *)dest = strcmp(text, "true") == 0;
        return *(bool *)dest || strcmp(text, "false") == 0;
    case FIELD_OPTIM: return kn_optim_parse(text, dest) == KILN_OK;
    case FIELD_LOSS: return kn_loss_parse(text, dest) == KILN_OK;
    case FIELD_REDUCTION:
        *(kn_reduction *)dest = strcmp(text, "sum") == 0 ? KN_REDUCTION_SUM : KN_REDUCTION_MEAN;
        return strcmp(text, "sum") == 0 || strcmp(text, "mean") == 0;
    case FIELD_SCHEDULE: return kn_schedule_parse(text, dest) == KILN_OK;
    case FIELD_AUGMENT: return kn_augment_parse(text, dest) == KILN_OK;
    }
    return false;
}

kiln_status kn_checkpoint_options_load(const kn_graph *g, kn_train_options *o, bool *found) {
    *found = kn_graph_meta(g, MARKER_KEY) != NULL;
    if (!*found)
        return KILN_OK;
    kn_train_options read = *o;
    for (int i = 0; i < N_FIELDS; i++) {
        const char *text = kn_graph_meta(g, fields[i].key);
        if (!text && optional_field(&fields[i])) {
            memset((char *)&read + fields[i].offset, 0, field_size(fields[i].type));
            continue;
        }
        if (!text || !parse_field(&fields[i], text, (char *)&read + fields[i].offset))
            return kn_fail(KILN_ERR_FORMAT, "the checkpoint's option '%s' is %s", fields[i].key,
                           text ? "not valid" : "missing");
    }
    *o = read;
    return KILN_OK;
}
