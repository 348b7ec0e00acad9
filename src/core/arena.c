#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/align.h"

enum { KN_ARENA_BLOCK = 1 << 16 };

struct kn_arena_block {
    kn_arena_block *next;
    size_t size;
    size_t used;
    unsigned char *data;
};

void *kn_arena_alloc(kn_arena *arena, size_t bytes) {
    size_t rounded;
    if (bytes > SIZE_MAX / 2 || !kn_align_up(bytes, &rounded))
        return NULL;
    kn_arena_block *b = arena->head;
    if (!b || b->size - b->used < rounded) {
        size_t size = rounded > KN_ARENA_BLOCK ? rounded : KN_ARENA_BLOCK;
        b = malloc(sizeof *b);
        if (!b)
            return NULL;
        b->data = kn_aligned_alloc(size);
        if (!b->data) {
            free(b);
            return NULL;
        }
        b->size = size;
        b->used = 0;
        /* A large one-off block goes behind the current one so the head keeps its free space. */
        if (arena->head && rounded > KN_ARENA_BLOCK) {
            b->next = arena->head->next;
            arena->head->next = b;
        } else {
            b->next = arena->head;
            arena->head = b;
        }
    }
    void *p = b->data + b->used;
    b->used += rounded;
    arena->bytes_used += rounded;
    memset(p, 0, rounded);
    return p;
}

char *kn_arena_strdup(kn_arena *arena, const char *s) {
    size_t n = strlen(s) + 1;
    char *p = kn_arena_alloc(arena, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void kn_arena_free(kn_arena *arena) {
    kn_arena_block *b = arena->head;
    while (b) {
        kn_arena_block *next = b->next;
        free(b->data);
        free(b);
        b = next;
    }
    arena->head = NULL;
    arena->bytes_used = 0;
}
