/* The name -> id maps the ONNX importer and exporter keep (onnx_internal.h). */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "format/onnx/onnx_internal.h"

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The slot holding `key`, or the empty slot where it would go (the map is never full). */
static size_t slot_of(const kn_name_map *m, const char *key) {
    size_t i = hash_name(key) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], key) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

bool kn_name_map_find(const kn_name_map *m, const char *key, int *id) {
    if (!m->cap)
        return false;
    size_t i = slot_of(m, key);
    if (m->keys[i] && id)
        *id = m->ids[i];
    return m->keys[i] != NULL;
}

int kn_name_map_get(const kn_name_map *m, const char *key) {
    int id;
    return kn_name_map_find(m, key, &id) ? id : -1;
}

static void insert(kn_name_map *m, const char *key, int id) {
    size_t i = slot_of(m, key);
    m->keys[i] = key;
    m->ids[i] = id;
    m->count++;
}

kiln_status kn_name_map_put(kn_name_map *m, const char *key, int id) {
    if (2 * (m->count + 1) > m->cap) { /* at most half full */
        kn_name_map grown = {.cap = m->cap ? 2 * m->cap : 64};
        grown.keys = calloc(grown.cap, sizeof *grown.keys);
        grown.ids = calloc(grown.cap, sizeof *grown.ids);
        if (!grown.keys || !grown.ids) {
            free(grown.keys);
            free(grown.ids);
            return kn_fail(KILN_ERR_NOMEM, "out of memory indexing names");
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i])
                insert(&grown, m->keys[i], m->ids[i]);
        free(m->keys);
        free(m->ids);
        *m = grown;
    }
    insert(m, key, id);
    return KILN_OK;
}

void kn_name_map_free(kn_name_map *m) {
    free(m->keys);
    free(m->ids);
    memset(m, 0, sizeof *m);
}
