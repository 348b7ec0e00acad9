/* The model spec: a text file, one layer per line (grammar in docs/spec.md and ../shared/DESIGN.md),
 * turned into a kn_graph with freshly initialised parameters. */
#ifndef KN_SPEC_H
#define KN_SPEC_H

#include <stdint.h>

#include "core/graph.h"

/* Parses spec text (`origin` names it in errors: "fmnist_mlp.txt:3: ...") into a new graph whose
 * parameters are initialised like PyTorch's defaults from `seed`. The graph's one input has batch
 * dimension 1; the executor re-infers shapes for other batch sizes. On error the graph is freed. */
kiln_status kn_spec_parse(const char *text, const char *origin, uint64_t seed, kn_graph *g);

/* Reads the file at `path` and parses it. */
kiln_status kn_spec_load(const char *path, uint64_t seed, kn_graph *g);

#endif
