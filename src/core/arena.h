/* A growing arena: many allocations, one free. Blocks are 64-byte aligned. */
#ifndef KN_ARENA_H
#define KN_ARENA_H

#include <stddef.h>

typedef struct kn_arena_block kn_arena_block;

typedef struct kn_arena {
    kn_arena_block *head;
    size_t bytes_used;
} kn_arena;

/* Zeroed, 64-byte aligned memory owned by the arena; NULL on overflow or out of memory. */
void *kn_arena_alloc(kn_arena *arena, size_t bytes);
char *kn_arena_strdup(kn_arena *arena, const char *s);
void kn_arena_free(kn_arena *arena);

#endif
