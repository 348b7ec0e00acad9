/* What a compression step bought: the numbers every `kiln prune|quantize|distill` prints before and
 * after, and `kiln report` compares across models. */
#ifndef KN_COMPRESS_SUMMARY_H
#define KN_COMPRESS_SUMMARY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/graph.h"
#include "train/data.h"

typedef struct kn_model_summary {
    bool has_eval;              /* accuracy and loss were measured on a dataset */
    double accuracy, loss;      /* accuracy < 0: the data has no class labels */
    int64_t params;             /* parameter elements */
    int64_t nonzeros;           /* parameter elements that are not 0 */
    int64_t flops;              /* per sample, from the op table's FLOP counts */
    int64_t file_bytes;         /* the .kiln file the graph saves to */
    int64_t peak_memory;        /* a batch-1 session's weights as held (4- and 2-bit ones packed), activation
                                 * arena and scratch, bytes */
    double latency_ms[2];       /* median latency of one run at batch 1 and batch 32; < 0: not measured */
} kn_model_summary;

typedef struct kn_summary_options {
    const kn_dataset *data;     /* evaluate on it; NULL: no accuracy */
    int64_t eval_batch;         /* <= 0: 256 */
    bool latency;               /* time the runtime at batch 1 and 32 */
    int latency_runs;           /* runs per batch size; <= 0: a default that takes about a second */
} kn_summary_options;

/* Measures g as it would be saved now (g is not changed). */
kiln_status kn_model_summarize(const kn_graph *g, const kn_summary_options *options, kn_model_summary *out);

/* A before/after table, one column per model: labels[i] heads column i. Rows: accuracy, loss, params,
 * non-zeros, FLOPs, file bytes, peak memory, latency at batch 1 and 32, and the ratio of the last column
 * to the first where it means something. */
void kn_summary_print_table(FILE *out, const char *const *labels, const kn_model_summary *rows, int n);
/* The same as a JSON array of objects {"label":..., "accuracy":..., ...}. */
void kn_summary_print_json(FILE *out, const char *const *labels, const kn_model_summary *rows, int n);

#endif
