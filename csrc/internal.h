/* SPDX-License-Identifier: Apache-2.0 */
/* Declarations shared between the engine's translation units; not exported. */
#ifndef TORCX_INTERNAL_H
#define TORCX_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <xxhash.h>
#include <isa-l/igzip_lib.h>

#define HIDDEN __attribute__((visibility("hidden")))

/* ---- SHA-256/SHA-512 through libcrypto's EVP (digest.c), loaded on first use ---- */
struct torcx_md {
    struct evp_md_ctx_st *ctx; /* EVP_MD_CTX; NULL when not in use */
};
/* name: "sha256" or "sha512". Returns 0 or -errno; -ELIBACC when libcrypto
 * cannot be loaded, and torcx_md_error() then says why. Thread-safe. */
HIDDEN int torcx_md_init(struct torcx_md *m, const char *name);
HIDDEN const char *torcx_md_error(void);
HIDDEN void torcx_md_update(struct torcx_md *m, const void *data, size_t n);
/* Lowercase hex into out (cap bytes, NUL included). Returns 0 or -errno. */
HIDDEN int torcx_md_final_hex(struct torcx_md *m, char *out, size_t cap);
HIDDEN void torcx_md_free(struct torcx_md *m);

/* ---- Archive input (source.c): reads the file, hashes its bytes, inflates
 * gzip with ISA-L, and hands tar bytes to libarchive; optionally on its own
 * thread so decoding overlaps writing. ---- */
#define SOURCE_BLOCK (1u << 20)
#define SOURCE_SLOTS 4

struct source_slot {
    uint8_t *data;
    size_t len;
};

struct archive;

struct source {
    int fd;
    bool gzip;           /* content is gzip: inflated here, not by libarchive */
    struct archive *raw; /* other content: decoded by libarchive's filters alone */
    char compression[16];
    uint64_t decoded;    /* tar bytes produced, skipped ones included */
    uint64_t max_decoded;
    bool want_sha256;
    bool want_sha512;
    bool threaded;
    uint64_t bytes;      /* archive bytes read and hashed */
    XXH3_state_t *xxh;
    struct torcx_md sha256;
    struct torcx_md sha512;
    struct inflate_state *inflate;
    bool inflate_done;   /* gzip stream ended; later bytes are only hashed */
    uint8_t *in;         /* raw input buffer */
    size_t in_len, in_pos;
    bool in_eof;
    /* output slots: one used synchronously, SOURCE_SLOTS when threaded */
    struct source_slot slots[SOURCE_SLOTS];
    unsigned nslots;
    /* producer/consumer ring (threaded) */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned head, tail, filled; /* produce at head, consume at tail */
    bool consumer_holds;         /* consumer holds slot at tail */
    bool produced_eof;
    bool cancel;
    int error;                   /* -errno or a SOURCE_E_* when production failed */
    char errmsg[160];
};

#define SOURCE_E_CORRUPT (-100000) /* corrupt or truncated compressed stream */
#define SOURCE_E_LIMIT (-100001)   /* more decoded bytes than allowed */
/* Decoded bytes allowed after the tar end marker (record padding, a last
 * gzip member of zeros): more is refused, not decoded to its end. */
#define SOURCE_TRAILING_MAX (16u << 20)

/* want: TORCX_JOB_SHA256 and/or TORCX_JOB_SHA512 bits of the job's flags. */
HIDDEN int torcx_source_open(struct source *s, const char *path, unsigned want, bool threaded,
                             uint64_t max_decoded);
/* Next block of tar bytes; *len 0 at the end. Returns 0 or a negative error. */
HIDDEN int torcx_source_next(struct source *s, const void **buf, size_t *len);
/* Reads and hashes whatever is left of the file (the archive digest covers
 * every byte, including padding after the end of the tar stream). */
HIDDEN int torcx_source_drain(struct source *s);
HIDDEN void torcx_source_close(struct source *s);

#endif
