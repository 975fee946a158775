/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Archive input: every byte read from the archive file is hashed (XXH3-128,
 * optionally SHA-256) as it is read. gzip content is inflated here with
 * ISA-L, several times faster than zlib; other compressions are decoded by a
 * second libarchive reader (format "raw", built-in filters only). Either way
 * the tar reader only sees decoded bytes that went through here, so every
 * one of them is counted against max_decoded, including those libarchive
 * decodes only to skip them (the body of a hard link).
 * With `threaded`, a producer thread reads and inflates into a ring of slots
 * so decoding overlaps the writing done by the caller's thread.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "torcx_engine.h"

static int fail(struct source *s, int r, const char *msg) {
    if (!s->error) {
        s->error = r;
        snprintf(s->errmsg, sizeof(s->errmsg), "%s", msg);
    }
    return r;
}

static void hash_bytes(struct source *s, const uint8_t *p, size_t n) {
    XXH3_128bits_update(s->xxh, p, n);
    if (s->want_sha256)
        torcx_md_update(&s->sha256, p, n);
    if (s->want_sha512)
        torcx_md_update(&s->sha512, p, n);
    s->bytes += n;
}

/* Reads up to cap bytes of the file into buf, hashing them; 0 at EOF. */
static ssize_t read_hashed(struct source *s, uint8_t *buf, size_t cap) {
    ssize_t n;
    do
        n = read(s->fd, buf, cap);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    hash_bytes(s, buf, (size_t)n);
    return n;
}

/* Makes at least `want` unread bytes available in s->in unless EOF. */
static int fill_input(struct source *s, size_t want) {
    while (s->in_len - s->in_pos < want && !s->in_eof) {
        if (s->in_pos > 0) {
            memmove(s->in, s->in + s->in_pos, s->in_len - s->in_pos);
            s->in_len -= s->in_pos;
            s->in_pos = 0;
        }
        ssize_t n = read_hashed(s, s->in + s->in_len, SOURCE_BLOCK - s->in_len);
        if (n < 0)
            return fail(s, (int)n, "cannot read archive");
        if (n == 0)
            s->in_eof = true;
        s->in_len += (size_t)n;
    }
    return 0;
}

static bool gzip_magic_at(struct source *s) {
    return s->in_len - s->in_pos >= 3 && s->in[s->in_pos] == 0x1f &&
           s->in[s->in_pos + 1] == 0x8b && s->in[s->in_pos + 2] == 8;
}

/* Inflates into slot; len 0 means the gzip stream (all members) ended. */
static int produce_gzip(struct source *s, struct source_slot *slot) {
    struct inflate_state *st = s->inflate;
    slot->len = 0;
    while (!s->inflate_done && slot->len < SOURCE_BLOCK) {
        int r = fill_input(s, 1);
        if (r < 0)
            return r;
        st->next_in = s->in + s->in_pos;
        st->avail_in = (uint32_t)(s->in_len - s->in_pos);
        st->next_out = slot->data + slot->len;
        st->avail_out = (uint32_t)(SOURCE_BLOCK - slot->len);
        r = isal_inflate(st);
        s->in_pos = s->in_len - st->avail_in;
        slot->len = SOURCE_BLOCK - st->avail_out;
        if (r < 0)
            return fail(s, SOURCE_E_CORRUPT, r == ISAL_INCORRECT_CHECKSUM
                                                 ? "corrupt gzip stream: checksum mismatch"
                                                 : "corrupt gzip stream");
        if (st->block_state == ISAL_BLOCK_FINISH) {
            /* Another member may follow (concatenated gzip); anything else
             * after the stream is trailing data, hashed but not decoded. */
            r = fill_input(s, 3);
            if (r < 0)
                return r;
            if (gzip_magic_at(s)) {
                isal_inflate_reset(st);
                st->crc_flag = ISAL_GZIP;
            } else {
                s->inflate_done = true;
            }
        } else if (s->in_eof && s->in_pos == s->in_len && st->avail_out > 0) {
            return fail(s, SOURCE_E_CORRUPT, "truncated gzip stream");
        }
    }
    return 0;
}

/* libarchive's read callback for the raw reader: the bytes read to sniff
 * the format first, then the file, hashed as it is read. */
static la_ssize_t raw_read_cb(struct archive *a, void *client, const void **buf) {
    struct source *s = client;
    if (s->in_pos < s->in_len) {
        *buf = s->in + s->in_pos;
        size_t n = s->in_len - s->in_pos;
        s->in_pos = s->in_len;
        return (la_ssize_t)n;
    }
    s->in_pos = s->in_len = 0;
    if (s->in_eof)
        return 0;
    ssize_t n = read_hashed(s, s->in, SOURCE_BLOCK);
    if (n < 0) {
        archive_set_error(a, (int)-n, "cannot read archive");
        return -1;
    }
    if (n == 0)
        s->in_eof = true;
    *buf = s->in;
    return n;
}

static int raw_failed(struct source *s, const char *what) {
    char msg[160];
    snprintf(msg, sizeof(msg), "%s: %s", what, archive_error_string(s->raw) ?: "damaged data");
    return fail(s, SOURCE_E_CORRUPT, msg);
}

static int produce_filtered(struct source *s, struct source_slot *slot) {
    slot->len = 0;
    while (slot->len < SOURCE_BLOCK) {
        la_ssize_t n = archive_read_data(s->raw, slot->data + slot->len, SOURCE_BLOCK - slot->len);
        if (n < 0)
            return raw_failed(s, "corrupt compressed stream");
        if (n == 0)
            break;
        slot->len += (size_t)n;
    }
    return 0;
}

static int produce(struct source *s, struct source_slot *slot) {
    int r = s->gzip ? produce_gzip(s, slot) : produce_filtered(s, slot);
    if (r < 0)
        return r;
    if (slot->len > s->max_decoded - s->decoded) { /* decoded <= max_decoded: no wrap */
        char msg[160];
        snprintf(msg, sizeof(msg), "archive decodes to more than %llu bytes",
                 (unsigned long long)s->max_decoded);
        return fail(s, SOURCE_E_LIMIT, msg);
    }
    s->decoded += slot->len;
    return 0;
}

/* Every decoder libarchive has built in, none that runs a program. */
static int open_raw(struct source *s) {
    if (!(s->raw = archive_read_new()))
        return fail(s, -ENOMEM, "out of memory");
    archive_read_support_format_raw(s->raw);
    archive_read_support_filter_bzip2(s->raw);
    archive_read_support_filter_xz(s->raw);
    archive_read_support_filter_lzma(s->raw);
    archive_read_support_filter_lz4(s->raw);
    archive_read_support_filter_zstd(s->raw);
    struct archive_entry *e;
    if (archive_read_open(s->raw, s, NULL, raw_read_cb, NULL) != ARCHIVE_OK)
        return raw_failed(s, "cannot read archive");
    int r = archive_read_next_header(s->raw, &e);
    if (r == ARCHIVE_EOF)
        return fail(s, SOURCE_E_CORRUPT, "empty archive");
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
        return raw_failed(s, "cannot read archive");
    const char *name = archive_filter_count(s->raw) > 1 ? archive_filter_name(s->raw, 0) : NULL;
    snprintf(s->compression, sizeof(s->compression), "%s", name ? name : "none");
    return 0;
}

static void *producer_main(void *arg) {
    struct source *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (s->filled == s->nslots && !s->cancel)
            pthread_cond_wait(&s->cond, &s->lock);
        if (s->cancel) {
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        struct source_slot *slot = &s->slots[s->head];
        pthread_mutex_unlock(&s->lock);

        int r = produce(s, slot);

        pthread_mutex_lock(&s->lock);
        if (r < 0 || slot->len == 0) {
            s->produced_eof = true;
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        s->head = (s->head + 1) % s->nslots;
        s->filled++;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
    }
}

int torcx_source_open(struct source *s, const char *path, unsigned want, bool threaded,
                      uint64_t max_decoded) {
    memset(s, 0, sizeof(*s));
    s->fd = -1;
    s->max_decoded = max_decoded;
    s->want_sha256 = want & TORCX_JOB_SHA256;
    s->want_sha512 = want & TORCX_JOB_SHA512;
    s->xxh = XXH3_createState();
    s->in = malloc(SOURCE_BLOCK);
    if (!s->xxh || !s->in)
        return fail(s, -ENOMEM, "out of memory");
    XXH3_128bits_reset(s->xxh);
    int r = 0;
    if ((s->want_sha256 && (r = torcx_md_init(&s->sha256, "sha256")) < 0) ||
        (s->want_sha512 && (r = torcx_md_init(&s->sha512, "sha512")) < 0))
        return fail(s, r, r == -ELIBACC ? torcx_md_error() : "cannot set up the archive digest");

    /* O_NONBLOCK: opening a FIFO without a writer would block for ever;
     * the type is checked right after, and regular files ignore the flag. */
    do
        s->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    while (s->fd < 0 && errno == EINTR);
    if (s->fd < 0)
        return fail(s, -errno, "cannot open archive");
    struct stat st;
    if (fstat(s->fd, &st) < 0)
        return fail(s, -errno, "cannot stat archive");
    if (!S_ISREG(st.st_mode))
        return fail(s, -EINVAL, "archive is not a regular file");
    if (fcntl(s->fd, F_SETFL, O_RDONLY) < 0)
        return fail(s, -errno, "cannot clear O_NONBLOCK on archive");
    (void)posix_fadvise(s->fd, 0, 0, POSIX_FADV_SEQUENTIAL);

    r = fill_input(s, 3);
    if (r < 0)
        return r;
    s->gzip = gzip_magic_at(s);
    if (s->gzip) {
        s->inflate = malloc(sizeof(*s->inflate));
        if (!s->inflate)
            return fail(s, -ENOMEM, "out of memory");
        isal_inflate_init(s->inflate);
        s->inflate->crc_flag = ISAL_GZIP;
        snprintf(s->compression, sizeof(s->compression), "gzip");
    } else if ((r = open_raw(s)) < 0) {
        return r;
    }

    s->threaded = threaded;
    s->nslots = threaded ? SOURCE_SLOTS : 1;
    for (unsigned i = 0; i < s->nslots; i++) {
        s->slots[i].data = malloc(SOURCE_BLOCK);
        if (!s->slots[i].data)
            return fail(s, -ENOMEM, "out of memory");
    }
    if (threaded) {
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->cond, NULL);
        r = pthread_create(&s->thread, NULL, producer_main, s);
        if (r != 0) { /* run synchronously instead */
            pthread_mutex_destroy(&s->lock);
            pthread_cond_destroy(&s->cond);
            s->threaded = false;
        } else {
            s->thread_started = true;
        }
    }
    return 0;
}

int torcx_source_next(struct source *s, const void **buf, size_t *len) {
    if (!s->threaded) {
        int r = produce(s, &s->slots[0]);
        if (r < 0)
            return r;
        *buf = s->slots[0].data;
        *len = s->slots[0].len;
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    if (s->consumer_holds) { /* libarchive is done with the previous block */
        s->tail = (s->tail + 1) % s->nslots;
        s->filled--;
        s->consumer_holds = false;
        pthread_cond_broadcast(&s->cond);
    }
    while (s->filled == 0 && !s->produced_eof)
        pthread_cond_wait(&s->cond, &s->lock);
    int r = 0;
    if (s->filled > 0) {
        *buf = s->slots[s->tail].data;
        *len = s->slots[s->tail].len;
        s->consumer_holds = true;
    } else {
        *buf = NULL;
        *len = 0;
        r = s->error;
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

static void stop_thread(struct source *s) {
    if (!s->thread_started)
        return;
    pthread_mutex_lock(&s->lock);
    s->cancel = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    s->thread_started = false;
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
}

int torcx_source_drain(struct source *s) {
    /* libarchive may stop before the end of the decoded stream (tar padding):
     * consume it so gzip trailers are checked, then hash the rest of the file. */
    const void *buf;
    size_t len;
    uint64_t trailing = 0;
    do {
        int r = torcx_source_next(s, &buf, &len);
        if (r < 0)
            return r;
        trailing += len;
        if (trailing > SOURCE_TRAILING_MAX) {
            stop_thread(s); /* only then is s->error this thread's to write */
            char msg[160];
            snprintf(msg, sizeof(msg), "more than %u bytes of data after the end of the tar stream",
                     SOURCE_TRAILING_MAX);
            s->error = 0;
            return fail(s, SOURCE_E_LIMIT, msg);
        }
    } while (len > 0);
    stop_thread(s);
    s->threaded = false;
    s->in_pos = s->in_len;
    while (!s->in_eof) {
        ssize_t n = read_hashed(s, s->in, SOURCE_BLOCK);
        if (n < 0)
            return fail(s, (int)n, "cannot read archive");
        if (n == 0)
            s->in_eof = true;
    }
    return 0;
}

void torcx_source_close(struct source *s) {
    stop_thread(s);
    if (s->raw)
        archive_read_free(s->raw);
    s->raw = NULL;
    if (s->fd >= 0)
        close(s->fd);
    for (unsigned i = 0; i < SOURCE_SLOTS; i++)
        free(s->slots[i].data);
    free(s->inflate);
    free(s->in);
    if (s->xxh)
        XXH3_freeState(s->xxh);
    torcx_md_free(&s->sha256);
    torcx_md_free(&s->sha512);
    s->fd = -1;
    s->inflate = NULL;
    s->in = NULL;
    s->xxh = NULL;
}
