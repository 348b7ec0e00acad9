/* `kiln report`: one self-contained HTML page comparing models — accuracy against file size and against
 * latency, the summary table, per-layer sparsity and bits, weight histograms, and per-layer sensitivity
 * curves where a model carries them. Inline SVG and CSS only: no script, nothing loaded from elsewhere. */
#ifndef KN_COMPRESS_REPORT_H
#define KN_COMPRESS_REPORT_H

#include <stdio.h>

#include "compress/summary.h"
#include "core/graph.h"

typedef struct kn_report_model {
    const char *label;           /* shown in every chart: the file name */
    const kn_graph *graph;       /* as loaded */
    kn_model_summary summary;
} kn_report_model;

/* Writes the page to `out`. `title` heads it; `data` names the evaluation data (may be NULL). */
kiln_status kn_report_write_html(FILE *out, const char *title, const char *data, const kn_report_model *models,
                                 int n);

#endif
