/* SPDX-License-Identifier: Apache-2.0 */
/* The state of one job, shared by the engine's units (batch.c runs jobs and
 * records their failures); not exported. */
#ifndef TORCX_JOB_H
#define TORCX_JOB_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>
#include <xxhash.h>

#include "internal.h"
#include "map.h"
#include "torcx_engine.h"

struct archive;

/* ---- per-job state ---- */

struct dir_fixup {
    const char *path; /* normalized, "" for the root; a key of fixup_at */
    size_t depth;     /* components of path, counted once for the sort */
    mode_t mode;
    uid_t uid;
    gid_t gid;
    struct timespec mtime;
};

/* A file body or hard link made before .torcx/digests arrived, checked when
 * it does: by its name at creation, whatever later replaced that name. */
struct early_file {
    char *path;
    XXH128_hash_t digest;
    bool link;
};

struct job {
    const struct torcx_job *in;
    struct torcx_result *out;
    bool write;       /* false: verify only */
    bool ownership;   /* apply uid/gid and special bits */
    bool is_root;
    uint64_t max_entries, max_bytes;
    uint32_t max_path;
    int staging_fd;
    char *staging;    /* path of the staging folder */
    char cache_path[4096]; /* parent folder whose fd is cached */
    int cache_fd;
    struct map files;  /* regular files extracted: path -> content digest */
    struct map listed; /* .torcx/digests: path -> expected digest */
    /* Verify-only: the tree as extracting would make it, one node per path
     * component keyed by its parent's id and its name, so memory follows
     * the bytes of the paths (a map of every folder prefix grew with their
     * square). */
    struct map nodes;
    uint64_t nnodes;
    uint64_t implicit; /* folders created for missing parents */
    bool have_list;
    struct early_file *early; /* before the list (pack puts it first: none) */
    size_t nearly, capearly;
    struct dir_fixup *fixups;
    size_t nfixups, capfixups;
    struct map fixup_at; /* path -> index in fixups (in digest.low64) */
    bool root_fixup_set;
    struct dir_fixup root_fixup;
    XXH3_state_t *fxxh;
    struct source src;
    struct archive *ar;
    int64_t index;
    const char *entry; /* raw path of the current entry */
    /* The source reported its failure to this thread (read_cb or drain).
     * Only then may src.error be read: before that, a decode-ahead
     * producer may still be writing it, and a fault it found ahead of the
     * entry being refused must not replace that entry's error. */
    bool src_failed;
};

/* Records the failure in the result (first failure wins) and returns -1. */
__attribute__((format(printf, 4, 5)))
HIDDEN int torcx_job_fail(struct job *j, int code, int err, const char *fmt, ...);

#endif
