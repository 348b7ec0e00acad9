/* Knowledge distillation's loss and the teacher beside the training loop (compress/distill.h). */
#include "compress/distill.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/status.h"

/* softmax(z / T) of one row of c into p, and its log into log_p (either may be NULL), in double. */
static void softmax_row(const float *z, int64_t c, double t, double *p, double *log_p) {
    double mx = -INFINITY, sum = 0;
    for (int64_t k = 0; k < c; k++)
        mx = fmax(mx, z[k] / t);
    for (int64_t k = 0; k < c; k++)
        sum += exp(z[k] / t - mx);
    double log_sum = log(sum);
    for (int64_t k = 0; k < c; k++) {
        double lp = z[k] / t - mx - log_sum;
        if (p)
            p[k] = exp(lp);
        if (log_p)
            log_p[k] = lp;
    }
}

void kn_distill_soft_loss(const float *zs, const float *zt, int64_t n, int64_t c, float temperature, double *loss,
                          float *grad) {
    double t = temperature, total = 0;
    double *buf = malloc(sizeof(double) * 4 * (size_t)(c ? c : 1));
    if (!buf) {
        *loss = NAN;
        return;
    }
    double *p_t = buf, *log_p_t = buf + c, *p_s = buf + 2 * c, *log_p_s = buf + 3 * c;
    for (int64_t i = 0; i < n; i++) {
        softmax_row(zt + i * c, c, t, p_t, log_p_t);
        softmax_row(zs + i * c, c, t, p_s, log_p_s);
        for (int64_t k = 0; k < c; k++) {
            if (p_t[k] > 0)
                total += p_t[k] * (log_p_t[k] - log_p_s[k]);
            /* d/dzs of T^2 KL / n = T (p_s - p_t) / n */
            grad[i * c + k] = (float)(t * (p_s[k] - p_t[k]) / (double)n);
        }
    }
    free(buf);
    *loss = t * t * total / (double)n;
}

/* ---- hidden-feature matching ---- */

/* Whether value v is computed by the graph (an input or a node's output), and so can be matched. */
static bool is_activation(const kn_value *v) { return v->kind == KN_VALUE_INPUT || v->kind == KN_VALUE_ACT; }

/* "conv1, relu3, ..." : the names of the graph's activations of rank 2 or 4, as many as fit in buf. */
static void list_activations(const kn_graph *g, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int v = 0; v < g->n_values && used + 1 < size; v++) {
        const kn_value *val = &g->values[v];
        if (!is_activation(val) || (val->shape.ndim != 2 && val->shape.ndim != 4))
            continue;
        int n = snprintf(buf + used, size - used, "%s%s", used ? ", " : "", val->name);
        used = n < 0 ? size : used + (size_t)n;
    }
    if (used >= size && size > 4)
        memcpy(buf + size - 4, "...", 4);
}

static int find_activation(const kn_graph *g, const char *name, const char *which, kiln_status *st) {
    int v = kn_graph_find_value(g, name);
    if (v < 0 || !is_activation(&g->values[v])) {
        char names[512];
        list_activations(g, names, sizeof names);
        *st = kn_fail(KILN_ERR_INVALID_ARG, "--match: the %s has no activation named '%s' (its activations of rank "
                      "2 or 4: %s)", which, name, names);
        return -1;
    }
    if (g->values[v].shape.ndim != 2 && g->values[v].shape.ndim != 4) {
        *st = kn_fail(KILN_ERR_UNSUPPORTED, "--match: the %s's '%s' has rank %d; features of rank 2 (N, C) or 4 "
                      "(N, C, H, W) can be matched", which, name, g->values[v].shape.ndim);
        return -1;
    }
    return v;
}

static bool has_output_room(const kn_graph *g) { return g->n_outputs < KN_GRAPH_MAX_IO; }

/* The projection from student value s to the channels of teacher value t: student output 1, and t the
 * teacher's output 1. Its weight starts uniform in +-1/sqrt(Cs) (PyTorch's default for a 1x1 conv). */
static kiln_status match_setup(kn_distill *d, kn_graph *teacher, kn_graph *student) {
    kiln_status st = KILN_OK;
    int t = find_activation(teacher, d->c.match_teacher, "teacher", &st);
    int s = t < 0 ? -1 : find_activation(student, d->c.match_student, "student", &st);
    if (s < 0)
        return st;
    const kn_shape *ts = &teacher->values[t].shape, *ss = &student->values[s].shape;
    if (ts->ndim != ss->ndim)
        return kn_fail(KILN_ERR_SHAPE, "--match: the teacher's '%s' has rank %d, the student's '%s' %d",
                       d->c.match_teacher, ts->ndim, d->c.match_student, ss->ndim);
    if (!has_output_room(teacher) || !has_output_room(student))
        return kn_fail(KILN_ERR_UNSUPPORTED, "--match: the graphs have too many outputs");
    int64_t ct = ts->d[1], cs = ss->d[1];
    bool conv = ss->ndim == 4;
    kn_shape w_shape = conv ? kn_shape_of(4, (int64_t[]){ct, cs, 1, 1}) : kn_shape_of(2, (int64_t[]){cs, ct});
    char name[512];
    snprintf(name, sizeof name, "%s:match_projection", d->c.match_student);
    KN_TRY(kn_graph_add_value(student, name, KN_VALUE_PARAM, KN_F32, &w_shape, &d->proj_weight));
    snprintf(name, sizeof name, "%s:matched", d->c.match_student);
    KN_TRY(kn_graph_add_value(student, name, KN_VALUE_ACT, KN_F32, ts, &d->proj_out));
    int in[2] = {s, d->proj_weight};
    KN_TRY(kn_graph_add_node(student, conv ? "Conv" : "MatMul", name, 2, in, 1, &d->proj_out, &d->proj_node));
    kn_rng rng = kn_rng_seeded(0x6d61746368ull);
    float bound = 1.0f / sqrtf((float)cs), *w = student->values[d->proj_weight].data;
    for (int64_t i = 0; i < kn_shape_numel(&w_shape); i++)
        w[i] = bound * (2.0f * kn_rng_uniform(&rng) - 1.0f);
    KN_TRY(kn_graph_add_output(student, d->proj_out));
    /* As a graph output the teacher value is written whole: the tape never fuses its producer with a Relu
     * that would then write only the Relu's output. */
    KN_TRY(kn_graph_add_output(teacher, t));
    return kn_graph_infer_shapes(student);
}

void kn_distill_finish(kn_distill *d, kn_graph *student) {
    if (d->proj_node < 0)
        return;
    int *new_id = malloc(sizeof(int) * (size_t)student->n_values);
    if (!new_id)
        return;
    student->n_nodes--; /* the projection was added last */
    student->n_outputs--;
    d->teacher_graph->n_outputs--;
    for (int v = 0; v < student->n_values; v++)
        new_id[v] = v == d->proj_weight || v == d->proj_out ? -1 : v;
    kn_graph_drop_values(student, new_id);
    free(new_id);
    d->proj_node = d->proj_weight = d->proj_out = -1;
}

/* Adds match_weight * mean((P(S) - T)^2) to the loss and its gradient to the projection's output. */
static kiln_status match_loss(kn_distill *d, kn_tape *tape, double *loss) {
    const kn_tensor *y = kn_tape_output(tape, 1), *t = kn_tape_output(&d->teacher, 1);
    char a[64], b[64];
    if (!kn_shape_equal(&y->shape, &t->shape))
        return kn_fail(KILN_ERR_SHAPE, "--match: the projected student value is %s but the teacher's '%s' %s",
                       kn_shape_str(&y->shape, a, sizeof a), d->c.match_teacher, kn_shape_str(&t->shape, b, sizeof b));
    int64_t n = kn_numel(y);
    const float *ys = kn_f32(y), *ts = kn_f32(t);
    float *grad = kn_f32(kn_tape_output_grad(tape, 1)); // (n)
    double sum = 0, w = d->c.match_weight;
    for (int64_t i = 0; i < n; i++) {
        double diff = (double)ys[i] - ts[i];
        sum += diff * diff;
        grad[i] = (float)(w * 2.0 * diff / (double)n);
    }
    d->last_match_loss = w * sum / (double)n;
    *loss += d->last_match_loss;
    return KILN_OK;
}

kiln_status kn_distill_init(kn_distill *d, kn_graph *teacher, kn_graph *student, const kn_distill_config *c,
                            int64_t batch) {
    memset(d, 0, sizeof *d);
    d->proj_node = d->proj_weight = d->proj_out = -1;
    d->teacher_graph = teacher;
    if (!(c->temperature > 0) || !isfinite(c->temperature))
        return kn_fail(KILN_ERR_INVALID_ARG, "--temperature %g: it must be > 0", (double)c->temperature);
    if (!(c->alpha >= 0 && c->alpha <= 1))
        return kn_fail(KILN_ERR_INVALID_ARG, "--alpha %g: it must be in [0, 1]", (double)c->alpha);
    if (teacher->n_inputs != 1 || student->n_inputs != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "the teacher has %d inputs and the student %d; distillation takes one "
                       "each", teacher->n_inputs, student->n_inputs);
    const kn_shape *ti = &teacher->values[teacher->inputs[0]].shape, *si = &student->values[student->inputs[0]].shape;
    bool inputs_match = ti->ndim == si->ndim;
    for (int k = 1; k < ti->ndim && inputs_match; k++)
        inputs_match = ti->d[k] == si->d[k];
    char a[64], b[64];
    if (!inputs_match)
        return kn_fail(KILN_ERR_SHAPE, "the teacher's input %s does not match the student's %s",
                       kn_shape_str(ti, a, sizeof a), kn_shape_str(si, b, sizeof b));
    d->c = *c;
    if ((c->match_teacher != NULL) != (c->match_student != NULL) || !(c->match_weight >= 0))
        return kn_fail(KILN_ERR_INVALID_ARG, "--match takes TEACHER_VALUE:STUDENT_VALUE and a weight >= 0");
    kiln_status st = c->match_teacher ? match_setup(d, teacher, student) : KILN_OK;
    if (st == KILN_OK)
        st = kn_tape_init(&d->teacher, teacher, batch, false);
    if (st != KILN_OK) {
        kn_distill_finish(d, student);
        return st;
    }
    kn_shape to_shape = kn_tape_output(&d->teacher, 0)->shape; /* a copy: the tape goes on a mismatch */
    const kn_shape *to = &to_shape;
    const kn_shape *so = &student->values[student->outputs[0]].shape;
    bool outputs_match = to->ndim == so->ndim;
    for (int k = 1; k < to->ndim && outputs_match; k++)
        outputs_match = to->d[k] == so->d[k] || so->d[k] < 0;
    if (!outputs_match) {
        kn_tape_free(&d->teacher);
        kn_distill_finish(d, student);
        return kn_fail(KILN_ERR_SHAPE, "the teacher's output %s does not match the student's %s (per sample: they "
                       "must have the same classes)", kn_shape_str(to, a, sizeof a), kn_shape_str(so, b, sizeof b));
    }
    return KILN_OK;
}

kiln_status kn_distill_bind_data(kn_distill *d, const kn_dataset *train) {
    const kn_graph *t = d->teacher_graph;
    const float *t_mean = t->input_mean && t->input_std ? t->input_mean : NULL, *t_std = t_mean ? t->input_std : NULL;
    const float *d_mean = train->feature_mean && train->feature_std ? train->feature_mean : NULL;
    const float *d_std = d_mean ? train->feature_std : NULL;
    int64_t features = train->sample_size;
    if (t_mean && t->n_norm != features)
        return kn_fail(KILN_ERR_SHAPE, "the teacher's input standardisation has %lld features, the data %lld",
                       (long long)t->n_norm, (long long)features);
    free(d->in_scale);
    free(d->in_shift);
    d->in_scale = d->in_shift = NULL;
    if (!t_mean && !d_mean)
        return KILN_OK;
    float *scale = malloc(sizeof(float) * (size_t)features), *shift = malloc(sizeof(float) * (size_t)features);
    if (!scale || !shift) {
        free(scale);
        free(shift);
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the teacher's input standardisation");
    }
    bool same = true;
    for (int64_t f = 0; f < features; f++) {
        /* raw = x * d_std + d_mean; x_t = (raw - t_mean) / t_std */
        double ds = d_std ? d_std[f] : 1, dm = d_mean ? d_mean[f] : 0;
        double ts = t_std ? t_std[f] : 1, tm = t_mean ? t_mean[f] : 0;
        scale[f] = (float)(ds / ts);
        shift[f] = (float)((dm - tm) / ts);
        same = same && scale[f] == 1.0f && shift[f] == 0.0f;
    }
    if (same) {
        free(scale);
        free(shift);
        return KILN_OK;
    }
    d->in_scale = scale;
    d->in_shift = shift;
    d->in_features = features;
    return KILN_OK;
}

/* The student's batch x (n, features) into the teacher's input, through the standardisation map if any. */
static void teacher_input(const kn_distill *d, const float *x, int64_t numel, float *to) {
    if (!d->in_scale) {
        memcpy(to, x, sizeof(float) * (size_t)numel);
        return;
    }
    for (int64_t i = 0; i < numel; i++) {
        int64_t f = i % d->in_features;
        to[i] = x[i] * d->in_scale[f] + d->in_shift[f];
    }
}

/* ---- the teacher's logits, kept per sample ---- */

/* Two independent 64-bit hashes of a sample's input bits; the first is made nonzero (0 marks an empty slot). */
static void sample_key(const float *x, int64_t size, uint64_t key[2]) {
    uint64_t a = 0xcbf29ce484222325ull, b = 0x9e3779b97f4a7c15ull ^ (uint64_t)size;
    for (int64_t i = 0; i < size; i++) {
        uint32_t w;
        memcpy(&w, x + i, sizeof w);
        a = (a ^ w) * 0x100000001b3ull;
        b = (b + w) * 0xff51afd7ed558ccdull;
        b ^= b >> 29;
    }
    key[0] = a ? a : 1;
    key[1] = b;
}

/* The slot of key: where it is, or the empty slot where it would go. */
static int64_t cache_slot(const kn_distill_cache *k, const uint64_t key[2]) {
    int64_t mask = k->capacity - 1, i = (int64_t)(key[0] & (uint64_t)mask);
    while (k->keys[2 * i] && (k->keys[2 * i] != key[0] || k->keys[2 * i + 1] != key[1]))
        i = (i + 1) & mask;
    return i;
}

static const float *cache_find(const kn_distill_cache *k, const uint64_t key[2]) {
    if (!k->capacity)
        return NULL;
    int64_t i = cache_slot(k, key);
    return k->keys[2 * i] ? k->logits + k->row[i] * k->c : NULL;
}

/* Doubles the table (at least 1024 slots) and re-inserts the keys. false when out of memory. */
static bool cache_grow_table(kn_distill_cache *k) {
    kn_distill_cache bigger = *k;
    bigger.capacity = k->capacity ? 2 * k->capacity : 1024;
    bigger.keys = calloc((size_t)bigger.capacity * 2, sizeof(uint64_t));
    bigger.row = malloc(sizeof(int64_t) * (size_t)bigger.capacity);
    if (!bigger.keys || !bigger.row) {
        free(bigger.keys);
        free(bigger.row);
        return false;
    }
    for (int64_t i = 0; i < k->capacity; i++) {
        if (!k->keys[2 * i])
            continue;
        int64_t j = cache_slot(&bigger, k->keys + 2 * i);
        memcpy(bigger.keys + 2 * j, k->keys + 2 * i, 2 * sizeof(uint64_t));
        bigger.row[j] = k->row[i];
    }
    free(k->keys);
    free(k->row);
    *k = bigger;
    return true;
}

/* Keeps the c logits of a sample; does nothing when the cache is full or memory runs out (the teacher then
 * runs for that sample again). */
static void cache_insert(kn_distill_cache *k, const uint64_t key[2], const float *logits, int64_t c) {
    if (k->count && c != k->c)
        return;
    if (2 * (k->count + 1) > k->capacity && !cache_grow_table(k))
        return;
    if (k->count == k->rows_cap) {
        int64_t rows = k->rows_cap ? 2 * k->rows_cap : 1024;
        if ((size_t)(rows * c) * sizeof(float) > KN_DISTILL_CACHE_BYTES)
            rows = (int64_t)(KN_DISTILL_CACHE_BYTES / sizeof(float) / (size_t)c);
        float *more = rows > k->rows_cap ? realloc(k->logits, sizeof(float) * (size_t)(rows * c)) : NULL;
        if (!more)
            return;
        k->logits = more;
        k->rows_cap = rows;
    }
    int64_t i = cache_slot(k, key);
    if (k->keys[2 * i])
        return;
    memcpy(k->keys + 2 * i, key, 2 * sizeof(uint64_t));
    k->row[i] = k->count;
    memcpy(k->logits + k->count * c, logits, sizeof(float) * (size_t)c);
    k->c = c;
    k->count++;
}

static void cache_free(kn_distill_cache *k) {
    free(k->keys);
    free(k->row);
    free(k->logits);
    memset(k, 0, sizeof *k);
}

/* Whether a sample's teacher logits can be served again later: not with matching (it needs the teacher's
 * hidden value each step), nor with augmentation (a view is not seen twice). */
static bool keeps_logits(const kn_distill *d) { return d->proj_node < 0 && !d->c.views_change; }

/* The teacher's logits of the batch on the student's tape into zt (n, c): from the cache when it holds every
 * sample, else by running the teacher (and keeping what it gives, when it may). */
static kiln_status teacher_logits(kn_distill *d, const kn_tensor *x, int64_t n, int64_t c, float *zt) {
    int64_t size = kn_numel(x) / (n ? n : 1);
    const float *xs = kn_f32(x);
    const bool keep = keeps_logits(d);
    uint64_t *keys = keep ? malloc(sizeof(uint64_t) * 2 * (size_t)(n ? n : 1)) : NULL; // (n, 2)
    if (keep && !keys)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the distillation cache keys");
    bool all_kept = keep;
    for (int64_t i = 0; i < n && keep; i++) {
        sample_key(xs + i * size, size, keys + 2 * i);
        const float *kept = all_kept ? cache_find(&d->cache, keys + 2 * i) : NULL;
        if (kept && d->cache.c == c)
            memcpy(zt + i * c, kept, sizeof(float) * (size_t)c);
        else
            all_kept = false;
    }
    kiln_status st = KILN_OK;
    if (all_kept) {
        d->cache.hits += n;
    } else {
        if (n != d->teacher.batch)
            st = kn_tape_set_batch(&d->teacher, n);
        if (st == KILN_OK) {
            teacher_input(d, xs, kn_numel(x), kn_tape_input(&d->teacher, 0)->data);
            st = kn_tape_forward(&d->teacher, false);
        }
        const kn_tensor *out = st == KILN_OK ? kn_tape_output(&d->teacher, 0) : NULL;
        if (out && kn_numel(out) != n * c)
            st = kn_fail(KILN_ERR_SHAPE, "the teacher gave %lld outputs for the batch, the student %lld",
                         (long long)kn_numel(out), (long long)(n * c));
        if (st == KILN_OK) {
            memcpy(zt, kn_f32(out), sizeof(float) * (size_t)(n * c));
            for (int64_t i = 0; i < n && keep; i++)
                cache_insert(&d->cache, keys + 2 * i, zt + i * c, c);
            d->cache.misses += n;
        }
    }
    free(keys);
    return st;
}

void kn_distill_free(kn_distill *d) {
    kn_tape_free(&d->teacher);
    cache_free(&d->cache);
    free(d->in_scale);
    free(d->in_shift);
    d->in_scale = d->in_shift = NULL;
}

kiln_status kn_distill_on_loss(void *user, kn_tape *tape, const int64_t *labels, double *loss) {
    (void)labels;
    kn_distill *d = user;
    const kn_tensor *zs = kn_tape_output(tape, 0);
    kn_tensor *dpred = kn_tape_output_grad(tape, 0);
    int64_t n = zs->shape.d[0], c = kn_numel(zs) / (n ? n : 1);
    float *buf = calloc(2 * (size_t)(n * c > 0 ? n * c : 1), sizeof(float));
    if (!buf)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the distillation gradient");
    float *zt = buf, *soft_grad = buf + n * c; // (n, c) each
    kiln_status st = teacher_logits(d, kn_tape_input(tape, 0), n, c, zt);
    if (st != KILN_OK) {
        free(buf);
        return st;
    }
    double soft;
    kn_distill_soft_loss(kn_f32(zs), zt, n, c, d->c.temperature, &soft, soft_grad);
    float alpha = d->c.alpha, *g = kn_f32(dpred);
    for (int64_t i = 0; i < n * c; i++)
        g[i] = (1.0f - alpha) * g[i] + alpha * soft_grad[i];
    free(buf);
    if (!isfinite(soft))
        return kn_fail(KILN_ERR_NUMERIC, "the distillation loss is not finite");
    d->last_soft_loss = soft;
    *loss = (1.0 - alpha) * *loss + alpha * soft;
    return d->proj_node >= 0 ? match_loss(d, tape, loss) : KILN_OK;
}
