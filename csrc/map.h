/* SPDX-License-Identifier: Apache-2.0 */
/* The path hash map (map.c); not exported. */
#ifndef TORCX_MAP_H
#define TORCX_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <xxhash.h>

#include "internal.h"

/* ---- a small string -> digest map (open addressing) ---- */

enum { SLOT_EMPTY = 0, SLOT_LIVE, SLOT_DEAD };

struct map_slot {
    char *key;
    XXH128_hash_t digest;
    uint8_t state;
    bool seen; /* listed map: the file was found in the archive */
    bool link; /* files map: a hard link, which needs no line of its own */
};

struct map {
    struct map_slot *slots;
    size_t cap, used; /* used counts live and dead slots */
    uint64_t seed;
};

HIDDEN struct map_slot *torcx_map_find(struct map *m, const char *key);
/* Inserts or replaces; returns the slot or NULL on ENOMEM. */
HIDDEN struct map_slot *torcx_map_put(struct map *m, const char *key, XXH128_hash_t digest);
HIDDEN void torcx_map_del(struct map *m, const char *key);
HIDDEN void torcx_map_free(struct map *m);

#endif
