/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The extraction engine: a batch of jobs on a pool of threads. Each job
 * streams one tar archive (see source.c for decoding and archive hashing)
 * into a staging folder next to its destination, creating every entry
 * relative to a directory fd with no symlink ever followed, hashing every
 * regular file with XXH3-128 as it is written and checking it against the
 * archive's .torcx/digests, then renames the folder into place.
 *
 * This unit runs the jobs and the batch. The other units: map.c (the path
 * map), safepath.c (paths below the staging folder, never through a
 * symlink), entries.c (entries, metadata and folder fixups), digests.c
 * (.torcx/digests and the archive pins), staging.c (the staging folder).
 *
 * Why not archive_write_disk: it resolves paths against the process-wide
 * current directory (unusable from several threads at once) and follows
 * its own symlink checks by path; creating with *at() calls from a
 * directory fd is both thread-safe and race-free.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "digests.h"
#include "entries.h"
#include "job.h"
#include "map.h"
#include "safepath.h"
#include "staging.h"
#include "torcx_engine.h"

#define DEFAULT_MAX_ENTRIES 1000000u
#define DEFAULT_MAX_BYTES (1ull << 36) /* 64 GiB: bounds the time spent hashing sparse holes (~3 s) */
#define DEFAULT_MAX_PATH 4096u
#define DECODED_SLACK (64ull << 20) /* headers, padding: default max_decoded = 2 * max_bytes + this */

/* Records the failure in the result (first failure wins) and returns -1. */
__attribute__((format(printf, 4, 5)))
int torcx_job_fail(struct job *j, int code, int err, const char *fmt, ...) {
    struct torcx_result *o = j->out;
    if (o->code != TORCX_OK)
        return -1;
    o->code = code;
    o->err_no = err;
    o->entry_index = j->entry ? j->index : -1;
    snprintf(o->entry_path, sizeof(o->entry_path), "%s", j->entry ? j->entry : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->message, sizeof(o->message), fmt, ap);
    va_end(ap);
    if (err) {
        char buf[128]; /* strerror is not thread-safe; GNU strerror_r is */
        size_t l = strlen(o->message);
        snprintf(o->message + l, sizeof(o->message) - l, ": %s",
                 strerror_r(err, buf, sizeof(buf)));
    }
    return -1;
}

/* ---- one job ---- */

static la_ssize_t read_cb(struct archive *a, void *client, const void **buf) {
    struct job *j = client;
    size_t len;
    int r = torcx_source_next(&j->src, buf, &len);
    if (r < 0) {
        j->src_failed = true;
        archive_set_error(a, r == SOURCE_E_CORRUPT || r == SOURCE_E_LIMIT ? EIO : -r, "%s",
                          j->src.errmsg);
        return -1;
    }
    return (la_ssize_t)len;
}

static int source_failed(struct job *j) {
    if (j->src.error == SOURCE_E_LIMIT)
        return torcx_job_fail(j, TORCX_E_LIMIT, 0, "%s", j->src.errmsg);
    if (j->src.error == SOURCE_E_CORRUPT)
        return torcx_job_fail(j, TORCX_E_FORMAT, 0, "%s", j->src.errmsg);
    return torcx_job_fail(j, TORCX_E_OS, -j->src.error, "%s", j->src.errmsg);
}

static int read_entries(struct job *j) {
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(j->ar, &e);
        if (r == ARCHIVE_EOF)
            return 0;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) { /* RETRY: a damaged header */
            j->entry = NULL;
            if (j->src_failed)
                return source_failed(j);
            return torcx_job_fail(j, TORCX_E_FORMAT, 0, "%s",
                                  archive_error_string(j->ar) ?: "cannot read archive");
        }
        if (torcx_do_entry(j, e) < 0) {
            if (j->src_failed) { /* a decode failure surfaced as a short entry */
                j->out->code = TORCX_OK;
                return source_failed(j);
            }
            return -1;
        }
        /* The entry's strings belong to libarchive and die with the next
         * header: a later fault (a gzip trailer after the end marker) must
         * not name them, nor an index past the last entry. */
        j->entry = NULL;
        j->index++;
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void run_job(const struct torcx_job *in, struct torcx_result *out, bool threaded) {
    double t0 = now();
    memset(out, 0, sizeof(*out));
    out->entry_index = -1;
    struct job j = {
        .in = in,
        .out = out,
        .write = !(in->flags & TORCX_JOB_NO_WRITE),
        .is_root = geteuid() == 0,
        .max_entries = in->max_entries ? in->max_entries : DEFAULT_MAX_ENTRIES,
        .max_bytes = in->max_bytes ? in->max_bytes : DEFAULT_MAX_BYTES,
        .max_path = in->max_path ? in->max_path : DEFAULT_MAX_PATH,
        .staging_fd = -1,
        .cache_fd = -1,
        .src = {.fd = -1}, /* torcx_source_close runs even if open never did */
    };
    j.ownership = (in->flags & TORCX_JOB_OWNERSHIP) && j.is_root;
    if (j.max_path > 4000)
        j.max_path = 4000; /* our buffers are PATH_MAX */

    if (!in->archive || (j.write && !in->dest)) {
        torcx_job_fail(&j, TORCX_E_OS, EINVAL, "job without archive or destination");
        goto done;
    }
    if (!(j.fxxh = XXH3_createState())) {
        torcx_job_fail(&j, TORCX_E_OS, ENOMEM, "out of memory");
        goto done;
    }
    uint64_t max_decoded = in->max_decoded;
    if (!max_decoded) /* saturating: 2 * max_bytes + slack */
        max_decoded = j.max_bytes > (UINT64_MAX - DECODED_SLACK) / 2 ? UINT64_MAX
                                                                     : 2 * j.max_bytes + DECODED_SLACK;
    if (torcx_source_open(&j.src, in->archive, in->flags & (TORCX_JOB_SHA256 | TORCX_JOB_SHA512),
                          threaded, max_decoded) < 0) {
        source_failed(&j);
        goto done;
    }
    snprintf(out->compression, sizeof(out->compression), "%s", j.src.compression);
    if (j.write && torcx_make_staging(&j) < 0)
        goto done;
    if (!(j.ar = archive_read_new())) {
        torcx_job_fail(&j, TORCX_E_OS, ENOMEM, "out of memory");
        goto done;
    }
    /* Decoded bytes only, all counted by the source (source.c); no filter
     * here, so nothing libarchive decodes escapes the count. */
    archive_read_support_format_tar(j.ar);
    archive_read_support_format_gnutar(j.ar);
    if (archive_read_open(j.ar, &j, NULL, read_cb, NULL) != ARCHIVE_OK) {
        if (j.src_failed)
            source_failed(&j);
        else
            torcx_job_fail(&j, TORCX_E_FORMAT, 0, "%s",
                           archive_error_string(j.ar) ?: "not a tar archive");
        goto done;
    }
    if (read_entries(&j) < 0)
        goto done;
    if (torcx_source_drain(&j.src) < 0) {
        source_failed(&j);
        goto done;
    }
    if (torcx_finish_checks(&j) < 0)
        goto done;
    if (j.write) {
        if (torcx_apply_fixups(&j) < 0)
            goto done;
        close(j.staging_fd);
        j.staging_fd = -1;
        if (renameat2(AT_FDCWD, j.staging, AT_FDCWD, in->dest, RENAME_NOREPLACE) < 0) {
            torcx_job_fail(&j, errno == EEXIST ? TORCX_E_EXISTS : TORCX_E_OS, errno,
                           "cannot move staging folder to %s", in->dest);
            goto done;
        }
        free(j.staging);
        j.staging = NULL;
    }
done:
    if (j.ar)
        archive_read_free(j.ar);
    torcx_cache_drop(&j);
    if (j.staging_fd >= 0)
        close(j.staging_fd);
    if (out->code != TORCX_OK)
        torcx_remove_staging(&j);
    free(j.staging);
    torcx_source_close(&j.src);
    if (j.fxxh)
        XXH3_freeState(j.fxxh);
    torcx_map_free(&j.files);
    torcx_map_free(&j.listed);
    torcx_map_free(&j.nodes);
    torcx_map_free(&j.fixup_at);
    torcx_free_early(&j);
    free(j.fixups);
    if (out->code != TORCX_OK)
        out->verified = 0;
    out->seconds = now() - t0;
}

/* ---- the batch ---- */

struct batch {
    const struct torcx_job *jobs;
    struct torcx_result *results;
    size_t n;
    size_t *order; /* job indexes, largest archive first */
    off_t *sizes;
    unsigned threads;
    atomic_size_t next;
    atomic_int failed;
};

static void *worker(void *arg) {
    struct batch *b = arg;
    for (;;) {
        size_t k = atomic_fetch_add(&b->next, 1);
        if (k >= b->n)
            return NULL;
        size_t i = b->order[k];
        /* Once fewer jobs remain than threads, cores would idle: let this
         * job decode on a thread of its own, ahead of its writes. */
        bool threaded = b->n - k < b->threads;
        run_job(&b->jobs[i], &b->results[i], threaded);
        if (b->results[i].code != TORCX_OK)
            atomic_fetch_add(&b->failed, 1);
    }
}

static int cmp_size_desc(const void *a, const void *b, void *sizes_arg) {
    const off_t *sizes = sizes_arg;
    off_t sa = sizes[*(const size_t *)a], sb = sizes[*(const size_t *)b];
    if (sa != sb)
        return sa < sb ? 1 : -1;
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

const char *torcx_version(void) { return TORCX_VERSION; }

int torcx_extract_batch(const struct torcx_job *jobs, struct torcx_result *results, size_t n,
                        unsigned threads) {
    if (n == 0)
        return 0;
    if (!jobs || !results)
        return -EINVAL;
    if (threads == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        threads = c > 0 ? (unsigned)c : 1;
    }
    unsigned workers = threads < n ? threads : (unsigned)n;
    struct batch b = {.jobs = jobs, .results = results, .n = n, .threads = threads};
    atomic_init(&b.next, 0);
    atomic_init(&b.failed, 0);

    /* Largest first, so the batch does not end waiting on one big job. */
    b.order = calloc(n, sizeof(*b.order));
    b.sizes = calloc(n, sizeof(*b.sizes));
    pthread_t *tids = calloc(workers, sizeof(*tids));
    if (!b.order || !b.sizes || !tids) {
        free(b.order);
        free(b.sizes);
        free(tids);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        b.order[i] = i;
        b.sizes[i] = jobs[i].archive && stat(jobs[i].archive, &st) == 0 ? st.st_size : 0;
    }
    qsort_r(b.order, n, sizeof(*b.order), cmp_size_desc, b.sizes);
    unsigned started = 0;
    for (unsigned i = 1; i < workers; i++) { /* the caller is worker 0 */
        if (pthread_create(&tids[i], NULL, worker, &b) != 0)
            break;
        started = i;
    }
    worker(&b);
    for (unsigned i = 1; i <= started; i++)
        pthread_join(tids[i], NULL);
    free(tids);
    free(b.order);
    free(b.sizes);
    return atomic_load(&b.failed);
}
