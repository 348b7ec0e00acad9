/* libFuzzer target: resuming from a checkpoint, as `kiln train --resume CKPT` does — the .kiln reader
 * with a checkpoint's extras (optimizer state) and the trainer's restore of its counters and state, then
 * one step on two zero samples. Graphs of more than 65536 parameters are skipped to keep each input fast.
 * Seeds in tests/fuzz/corpus/checkpoint. */
#include <stdlib.h>
#include <string.h>

#include "format/kiln_file.h"
#include "fuzz_input.h"
#include "train/trainer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_graph g;
    kn_named_tensor *extras;
    int n_extras;
    if (kn_kiln_load_buffer(data, size, &g, &extras, &n_extras) != KILN_OK)
        return 0;
    if (g.n_inputs == 1 && kn_graph_param_count(&g) <= 65536) {
        const kn_value *input = &g.values[g.inputs[0]];
        kn_dataset ds = {.count = 2, .class_count = 2, .source = "fuzz"};
        ds.sample_shape = input->shape;
        if (ds.sample_shape.ndim > 0) { /* drop the batch dimension */
            memmove(ds.sample_shape.d, ds.sample_shape.d + 1, sizeof(int64_t) * (size_t)(ds.sample_shape.ndim - 1));
            ds.sample_shape.ndim--;
        }
        ds.sample_size = 1;
        for (int i = 0; i < ds.sample_shape.ndim; i++)
            ds.sample_size = ds.sample_shape.d[i] > 0 && ds.sample_size <= 4096 ? ds.sample_size * ds.sample_shape.d[i] : 4097;
        if (ds.sample_size <= 4096) {
            float *x = calloc((size_t)(2 * ds.sample_size), sizeof(float));
            int64_t labels[2] = {0, 1};
            ds.x = x;
            ds.labels = labels;
            const char *optimizer = kn_graph_meta(&g, "train.optimizer");
            kn_optim_kind kind = KN_OPTIM_ADAM;
            if (optimizer)
                kn_optim_parse(optimizer, &kind);
            kn_train_options o = {.batch = 2, .optim = kn_optim_defaults(kind), .loss = {.kind = KN_LOSS_CE},
                                  .seed = 1, .resume = true};
            kn_train_result r;
            /* One epoch more than the checkpoint says it did (the trainer checks the counter itself). */
            const char *done = kn_graph_meta(&g, "train.epochs_done");
            long long epochs_done = done ? strtoll(done, NULL, 10) : -1;
            o.epochs = epochs_done >= 0 && epochs_done < 1000 ? epochs_done + 1 : 1;
            kn_train(&g, &ds, NULL, &o, extras, n_extras, &r);
            free(x);
        }
    }
    kn_named_tensors_free(extras, n_extras);
    kn_graph_free(&g);
    return 0;
}
