/* SPDX-License-Identifier: Apache-2.0 */
/* The path hash map of a job: files extracted, files listed in the digest
 * list, folder fixups, and the verify-only path tracking. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "map.h"

/* Seeded per map: paths come from the archive, and names crafted to share
 * their unseeded hash would turn every probe into a scan of the table. */
static uint64_t key_hash(const struct map *m, const char *k) {
    return XXH3_64bits_withSeed(k, strlen(k), m->seed);
}

static uint64_t map_seed(const struct map *m) {
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == sizeof(seed))
        return seed;
    struct timespec ts; /* entropy not ready this early at boot: good enough */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)(uintptr_t)m ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32);
}

struct map_slot *torcx_map_find(struct map *m, const char *key) {
    if (!m->cap)
        return NULL;
    for (size_t i = key_hash(m, key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct map_slot *s = &m->slots[i];
        if (s->state == SLOT_EMPTY)
            return NULL;
        if (s->state == SLOT_LIVE && strcmp(s->key, key) == 0)
            return s;
    }
}

static int map_grow(struct map *m) {
    if (!m->cap)
        m->seed = map_seed(m);
    size_t ncap = m->cap ? m->cap * 2 : 1024;
    struct map_slot *n = calloc(ncap, sizeof(*n));
    if (!n)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        struct map_slot *s = &m->slots[i];
        if (s->state == SLOT_LIVE) {
            size_t j = key_hash(m, s->key) & (ncap - 1);
            while (n[j].state != SLOT_EMPTY)
                j = (j + 1) & (ncap - 1);
            n[j] = *s;
        } else if (s->state == SLOT_DEAD) {
            free(s->key);
        }
    }
    free(m->slots);
    m->slots = n;
    m->cap = ncap;
    size_t live = 0;
    for (size_t i = 0; i < ncap; i++)
        live += n[i].state == SLOT_LIVE;
    m->used = live;
    return 0;
}

/* Inserts or replaces; returns the slot or NULL on ENOMEM. */
struct map_slot *torcx_map_put(struct map *m, const char *key, XXH128_hash_t digest) {
    struct map_slot *s = torcx_map_find(m, key);
    if (s) {
        s->digest = digest;
        return s;
    }
    if ((m->used + 1) * 4 > m->cap * 3 && map_grow(m) < 0)
        return NULL;
    size_t i = key_hash(m, key) & (m->cap - 1);
    while (m->slots[i].state == SLOT_LIVE)
        i = (i + 1) & (m->cap - 1);
    s = &m->slots[i];
    char *k = strdup(key);
    if (!k)
        return NULL;
    if (s->state == SLOT_DEAD)
        free(s->key);
    else
        m->used++;
    *s = (struct map_slot){.key = k, .digest = digest, .state = SLOT_LIVE};
    return s;
}

void torcx_map_del(struct map *m, const char *key) {
    struct map_slot *s = torcx_map_find(m, key);
    if (s)
        s->state = SLOT_DEAD; /* key freed on reuse or grow */
}

void torcx_map_free(struct map *m) {
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    m->slots = NULL;
    m->cap = m->used = 0;
}
