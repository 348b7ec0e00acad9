/* Structured pruning: removes whole output channels (Conv filters) or neurons (Gemm / MatMul outputs)
 * and shrinks the graph around them — the layer's weight and bias, the BatchNormalization after it,
 * the input channels of the layers that read it (through activations, pooling, depthwise convs,
 * Flatten's column groups, per-unit bias constants, residual adds and concats), so that the pruned model
 * is a smaller dense model.
 *
 * Channels are tracked as units: every output unit of a prunable layer, followed through the graph
 * along one axis per tensor (1 for channels, the last for a MatMul's neurons on sequences). Where an
 * elementwise Add (Sub, Mul, ...) joins two tracked tensors, unit c of one and unit c of the other are
 * one class: removed together or not at all, so a residual block and its shortcut keep the same
 * channels. A unit that reaches something kiln cannot shrink (a graph output, a Reshape, a grouped
 * Conv, a Softmax or LayerNormalization, an elementwise op with a constant of another shape) is fixed
 * and never removed.
 */
#ifndef KN_COMPRESS_PRUNE_STRUCTURED_H
#define KN_COMPRESS_PRUNE_STRUCTURED_H

#include "compress/prune.h"

/* A layer whose outputs structured pruning shrank: its name and its units before and after. */
typedef struct kn_prune_unit_count {
    const char *name;     /* the layer's weight value name (in g's arena) */
    int64_t before, after;
} kn_prune_unit_count;

struct kn_prune_structured_result {
    kn_prune_unit_count layers[256];
    int n_layers;
};

/* Removes config->amount of the prunable units of g (config->structure: channel or neuron), scored by
 * config->method, per group of layers tied together (scope layer) or ranked across the model (global,
 * each unit's score divided by its group's mean). With `mask_only` nothing is removed: the removed
 * units' weights, biases and the next layers' input weights are set to zero instead, giving the dense
 * model whose outputs the shrunken one reproduces. result may be NULL. */
kiln_status kn_prune_structured(kn_graph *g, const kn_dataset *data, const kn_prune_config *config, bool mask_only,
                                kn_prune_structured_result *result);

#endif
