/* train_prune SPEC DATA VAL OUT — kiln's training and compression library in a program: train a model
 * from a spec for one epoch, prune half of its weights by magnitude, fine-tune one epoch keeping them at
 * zero, and save it (.kiln or .onnx by OUT's extension). Prints the accuracy on VAL at each step. */
#include <kiln/compress.h>
#include <stdio.h>

static int fail(const char *what) {
    fprintf(stderr, "train_prune: %s: %s\n", what, kiln_last_error());
    return 1;
}

static int report(const char *step, kiln_graph *net, const kiln_dataset *val) {
    kiln_metrics m;
    if (kiln_evaluate(net, val, 0, &m) != KILN_OK)
        return fail("evaluate");
    printf("%-8s accuracy %.4f  loss %.4f  (%lld samples)\n", step, m.accuracy, m.loss, (long long)m.count);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: train_prune SPEC DATA VAL OUT\n");
        return 2;
    }
    kiln_graph *net = NULL;
    kiln_dataset *data = NULL, *val = NULL;
    int status = 1;
    if (kiln_graph_load(argv[1], 1, &net) != KILN_OK) {
        status = fail(argv[1]);
        goto done;
    }
    if (kiln_dataset_load(argv[2], net, &data) != KILN_OK || kiln_dataset_load(argv[3], net, &val) != KILN_OK) {
        status = fail("data");
        goto done;
    }
    kiln_train_config train = kiln_train_config_default();
    train.epochs = 1;
    if (kiln_train(net, data, NULL, &train, NULL) != KILN_OK) {
        status = fail("train");
        goto done;
    }
    if (report("trained", net, val))
        goto done;
    kiln_prune_config prune = kiln_prune_config_default();
    prune.amount = 0.5;
    prune.finetune_epochs = 1;
    prune.train = train;
    if (kiln_prune(net, data, NULL, &prune) != KILN_OK) {
        status = fail("prune");
        goto done;
    }
    if (report("pruned", net, val))
        goto done;
    if (kiln_graph_save(net, argv[4]) != KILN_OK) {
        status = fail(argv[4]);
        goto done;
    }
    status = 0;
done:
    kiln_dataset_free(data);
    kiln_dataset_free(val);
    kiln_graph_free(net);
    return status;
}
