/* Pruning: which weights (or whole channels and neurons) a model can do without.
 *
 * Unstructured pruning zeroes single weights of the prunable layers — the weight (input 1) of every
 * Conv, Gemm and MatMul whose weight is a trainable f32 parameter; biases, normalisation parameters and
 * embeddings are never pruned — and stores them sparse. The set of zeros IS the mask: fine-tuning
 * (kn_prune_finetune) re-zeroes them after every optimizer step, and a checkpoint carries them with
 * nothing else to save. Structured pruning (prune_structured.c) removes whole output channels and
 * neurons and shrinks the graph. docs/compress.md, "Pruning", says how each score is computed.
 */
#ifndef KN_COMPRESS_PRUNE_H
#define KN_COMPRESS_PRUNE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/graph.h"
#include "train/data.h"
#include "train/trainer.h"

typedef enum kn_prune_method {
    KN_PRUNE_L1,       /* |w|; a unit: the L1 norm of its weights */
    KN_PRUNE_L2,       /* w^2 (ranks single weights like L1); a unit: the L2 norm of its weights */
    KN_PRUNE_RANDOM,   /* uniform random scores: the baseline */
    KN_PRUNE_TAYLOR,   /* |w * dL/dw| averaged over calibration batches (first-order Taylor) */
    KN_PRUNE_HESSIAN,  /* OBD saliency 1/2 * H_ii * w^2 with H_ii the diagonal empirical Fisher */
} kn_prune_method;

typedef enum kn_prune_structure {
    KN_PRUNE_UNSTRUCTURED,
    KN_PRUNE_CHANNEL,  /* whole output channels (filters) of Conv layers */
    KN_PRUNE_NEURON,   /* whole output neurons of Gemm / MatMul layers */
} kn_prune_structure;

typedef enum kn_prune_schedule { KN_SCHEDULE_ONESHOT, KN_SCHEDULE_AGP } kn_prune_schedule_kind;

#define KN_PRUNE_MAX_SKIP 32

typedef struct kn_prune_config {
    kn_prune_method method;
    kn_prune_structure structure;
    double amount;             /* fraction of the prunable weights (units) to remove, in [0, 1) */
    bool target_is_sparsity;   /* amount is the sparsity wanted over ALL parameters (--target-sparsity) */
    bool global;               /* one threshold across layers; else `amount` of every layer */
    const char *skip[KN_PRUNE_MAX_SKIP]; /* parameter or node names not to prune */
    int n_skip;
    const double *layer_amounts; /* (n prunable layers, kn_prune_layers order) per-layer amounts; NULL: amount */
    int64_t calib_batches;     /* taylor, hessian: batches of the data the scores average over */
    int64_t calib_batch;       /* their size */
    uint64_t seed;             /* random scores, calibration batch order */
    kn_prune_schedule_kind schedule;
    int64_t steps;             /* agp: pruning events */
} kn_prune_config;

kn_prune_config kn_prune_config_default(void);
kiln_status kn_prune_method_parse(const char *name, kn_prune_method *out);
kiln_status kn_prune_structure_parse(const char *name, kn_prune_structure *out);
const char *kn_prune_method_name(kn_prune_method m);

/* One prunable layer: the node and its weight value. */
typedef struct kn_prune_layer {
    int node, weight;
} kn_prune_layer;

/* The prunable layers of g not skipped by config (up to max, in node order); *n gets their number.
 * Fails, naming the skip, when a skip name matches no parameter or node. */
kiln_status kn_prune_layers(const kn_graph *g, const kn_prune_config *config, kn_prune_layer *layers, int max,
                            int *n);

/* Per-element scores of every layer's weight: scores[i] (numel of layer i's weight), higher = keep.
 * taylor and hessian run `data` forward and backward (running statistics left as they were). */
kiln_status kn_prune_scores(kn_graph *g, const kn_prune_layer *layers, int n, const kn_prune_config *config,
                            const kn_dataset *data, float **scores);

/* Unstructured pruning of g in place as `config` says (oneshot). */
kiln_status kn_prune_unstructured(kn_graph *g, const kn_dataset *data, const kn_prune_config *config);

/* Zeroes the lowest-scored weights: `amount` of every layer, or of all of them with one threshold
 * (global). Weights already zero are pruned first, so a mask only ever grows. */
kiln_status kn_prune_apply_scores(kn_graph *g, const kn_prune_layer *layers, int n, float *const *scores,
                                  const double *amounts, bool global, double amount);

/* The fraction of g's prunable weights to remove so that `sparsity` of all its parameters are zero. */
kiln_status kn_prune_amount_for_sparsity(const kn_graph *g, const kn_prune_layer *layers, int n, double sparsity,
                                         double *amount);

/* Stores every pruned layer weight in the smaller of the sparse encodings (bitmask or CSR, f32 values),
 * when that is smaller than dense f32. */
kiln_status kn_prune_store_sparse(kn_graph *g, const kn_prune_layer *layers, int n);

/* Fine-tuning that keeps pruned weights at zero: the masks are the zeros of every layer weight when it
 * starts; with an AGP schedule the sparsity rises from 0 to config->amount over config->steps pruning
 * events in the first half of the run. options->hooks is overridden. */
kiln_status kn_prune_finetune(kn_graph *g, const kn_dataset *train, const kn_dataset *val, const kn_prune_config *config,
                              const kn_train_options *options, const kn_named_tensor *optim_state, int n_optim_state,
                              kn_train_result *result);

/* AGP's target sparsity at pruning event k of n (k = 0..n): final * (1 - (1 - k/n)^3). */
double kn_prune_agp_sparsity(double final, int64_t k, int64_t n);

/* Zero elements of the layers' weights and their total. */
void kn_prune_count(const kn_graph *g, const kn_prune_layer *layers, int n, int64_t *zeros, int64_t *total);



/* ---- the whole job: what `kiln prune` and kiln_prune() run (prune_run.c) ---- */

#define KN_SENSITIVITY_LEVELS 9 /* each layer alone at 10%, 20%, ... 90% */

typedef struct kn_prune_sensitivity {
    int n_layers;
    const char *names[256];                          /* the layers' weight names */
    int64_t weights[256];                            /* their element counts */
    double accuracy[256][KN_SENSITIVITY_LEVELS];     /* on the validation data, each layer pruned alone */
    double base_accuracy;                            /* unpruned */
    double chosen[256];                              /* per-layer amounts meeting the target */
} kn_prune_sensitivity;

typedef struct kn_prune_job {
    kn_prune_config config;
    const kn_dataset *data;            /* calibration (taylor, hessian) and fine-tuning data */
    const kn_dataset *val;             /* the sensitivity scan's evaluation data; fine-tuning's validation */
    bool sensitivity;                  /* scan first, then prune with the per-layer amounts it chooses */
    const kn_train_options *finetune;  /* NULL: no fine-tuning */
    bool resume;                       /* finetune continues a checkpoint: g is pruned already */
    const kn_named_tensor *optim_state;
    int n_optim_state;
} kn_prune_job;

typedef struct kn_prune_structured_result kn_prune_structured_result;

typedef struct kn_prune_report {
    kn_prune_sensitivity *sensitivity; /* filled when the job scans (caller-owned, may be NULL) */
    kn_prune_structured_result *structured; /* filled for structured pruning (may be NULL) */
    bool finetuned;
    kn_train_result train;
} kn_prune_report;

/* Prunes g in place (after a sensitivity scan when asked), fine-tunes it keeping the zeros, and stores
 * unstructured layers sparse. */
kiln_status kn_prune_run(kn_graph *g, const kn_prune_job *job, kn_prune_report *report);

/* The per-layer scan: each prunable layer alone at 10..90%, accuracy on `val`; then the per-layer
 * amounts that remove config->amount of the prunable weights losing the least accuracy (greedy on
 * accuracy lost per weight removed, the scan's losses taken as additive). g is left as it was. */
kiln_status kn_prune_sensitivity_scan(kn_graph *g, const kn_dataset *data, const kn_dataset *val,
                                      const kn_prune_config *config, kn_prune_sensitivity *out);
#endif
