/* kiln_distill (include/kiln/compress.h): a thin wrapper over compress/distill.h and the trainer. */
#include "compress/distill.h"
#include "core/status.h"
#include "core/threads.h"
#include "kiln/compress.h"
#include "train/api.h"

kiln_status kiln_distill(kiln_graph *student, kiln_graph *teacher, const kiln_dataset *train, const kiln_dataset *val,
                         const kiln_train_config *config, const kiln_distill_config *distill, kiln_metrics *final) {
    if (!student || !teacher || !train || !config || !distill)
        return kn_fail(KILN_ERR_INVALID_ARG, "kiln_distill: NULL argument");
    kn_train_options o;
    KN_TRY(kn_train_options_from_config(config, &o));
    if (config->threads > 0)
        kn_threads_set(config->threads);
    kn_distill d;
    kn_distill_config c = {.temperature = distill->temperature, .alpha = distill->alpha,
                           .match_teacher = distill->match_teacher, .match_student = distill->match_student,
                           .match_weight = distill->match_weight, .views_change = kn_augment_on(&o.augment)};
    KN_TRY(kn_distill_init(&d, &teacher->g, &student->g, &c, o.batch));
    kiln_status st = kn_distill_bind_data(&d, &train->d);
    if (st != KILN_OK) {
        kn_distill_finish(&d, &student->g);
        kn_distill_free(&d);
        return st;
    }
    kn_train_hooks hooks = {.user = &d, .on_loss = kn_distill_on_loss};
    o.hooks = &hooks;
    kn_train_result r;
    st = kn_train(&student->g, &train->d, val ? &val->d : NULL, &o, NULL, 0, &r);
    kn_distill_finish(&d, &student->g);
    kn_distill_free(&d);
    if (st == KILN_OK && final) {
        final->count = val ? val->d.count : train->d.count;
        final->loss = r.has_val ? r.val_loss : r.train_loss;
        final->accuracy = r.has_val ? r.val_accuracy : r.train_accuracy;
    }
    return st;
}
