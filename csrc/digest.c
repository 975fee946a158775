/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Archive digests through OpenSSL's libcrypto (EVP): SHA-256 and SHA-512 of
 * the archive bytes while the engine streams them, and torcx_digest_files,
 * the SHA-512 (signed) or XXH3-128 (recorded, integrity only) of whole image
 * files, several in parallel, one sequential read each, that the boot
 * compares with a signed or recorded value.
 * libcrypto picks the fastest code for the CPU (SHA-NI, AVX2).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "torcx_engine.h"

#define FILE_BLOCK (1u << 20)
#define FILES_MAX_THREADS 64u

int torcx_md_init(struct torcx_md *m, const char *name) {
    const EVP_MD *md = strcmp(name, "sha512") == 0 ? EVP_sha512() : EVP_sha256();
    m->ctx = EVP_MD_CTX_new();
    if (!m->ctx)
        return -ENOMEM;
    if (EVP_DigestInit_ex(m->ctx, md, NULL) != 1) {
        EVP_MD_CTX_free(m->ctx);
        m->ctx = NULL;
        return -EINVAL;
    }
    return 0;
}

void torcx_md_update(struct torcx_md *m, const void *data, size_t n) {
    if (m->ctx && n)
        EVP_DigestUpdate(m->ctx, data, n);
}

int torcx_md_final_hex(struct torcx_md *m, char *out, size_t cap) {
    static const char digits[] = "0123456789abcdef";
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    out[0] = '\0';
    if (!m->ctx || EVP_DigestFinal_ex(m->ctx, d, &n) != 1 || 2 * (size_t)n + 1 > cap)
        return -EINVAL;
    for (unsigned int i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
    return 0;
}

void torcx_md_free(struct torcx_md *m) {
    EVP_MD_CTX_free(m->ctx);
    m->ctx = NULL;
}

/* ---- whole-file digests ---- */

static void xxh3_hex(XXH128_hash_t h, char out[33]) {
    static const char digits[] = "0123456789abcdef";
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    for (size_t i = 0; i < sizeof(c.digest); i++) {
        out[2 * i] = digits[c.digest[i] >> 4];
        out[2 * i + 1] = digits[c.digest[i] & 15];
    }
    out[32] = '\0';
}

static int digest_one(struct torcx_file_digest *f, uint8_t *buf) {
    struct torcx_md m = {0}, m256 = {0};
    bool want_256 = f->algos & TORCX_FILE_SHA256;
    XXH3_state_t *x = NULL;
    bool want_sha = !f->algos || (f->algos & TORCX_FILE_SHA512);
    bool want_xxh = f->algos & TORCX_FILE_XXH3;
    int fd, r;
    do
        fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        r = -EINVAL;
        goto done;
    }
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    if (want_sha && (r = torcx_md_init(&m, "sha512")) < 0)
        goto done;
    if (want_256 && (r = torcx_md_init(&m256, "sha256")) < 0)
        goto done;
    if (want_xxh) {
        if (!(x = XXH3_createState())) {
            r = -ENOMEM;
            goto done;
        }
        XXH3_128bits_reset(x);
    }
    for (;;) {
        ssize_t n = read(fd, buf, FILE_BLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            goto done;
        }
        if (n == 0)
            break;
        if (want_sha)
            torcx_md_update(&m, buf, (size_t)n);
        if (want_256)
            torcx_md_update(&m256, buf, (size_t)n);
        if (want_xxh)
            XXH3_128bits_update(x, buf, (size_t)n);
        f->bytes += (uint64_t)n;
    }
    r = want_sha ? torcx_md_final_hex(&m, f->sha512, sizeof(f->sha512)) : 0;
    if (r == 0 && want_256)
        r = torcx_md_final_hex(&m256, f->sha256, sizeof(f->sha256));
    if (want_xxh)
        xxh3_hex(XXH3_128bits_digest(x), f->xxh3);
done:
    if (x)
        XXH3_freeState(x);
    torcx_md_free(&m);
    torcx_md_free(&m256);
    close(fd);
    return r;
}

struct files_pool {
    struct torcx_file_digest *files;
    size_t n, next;
    pthread_mutex_t lock;
};

static void *files_worker(void *arg) {
    struct files_pool *p = arg;
    uint8_t *buf = malloc(FILE_BLOCK);
    for (;;) {
        pthread_mutex_lock(&p->lock);
        size_t i = p->next < p->n ? p->next++ : p->n;
        pthread_mutex_unlock(&p->lock);
        if (i == p->n)
            break;
        struct torcx_file_digest *f = &p->files[i];
        int r = buf ? digest_one(f, buf) : -ENOMEM;
        f->err_no = r < 0 ? -r : 0;
    }
    free(buf);
    return NULL;
}

int torcx_digest_files(struct torcx_file_digest *files, size_t n, unsigned threads) {
    if (!files && n)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        files[i].err_no = 0;
        files[i].bytes = 0;
        files[i].sha512[0] = '\0';
        files[i].xxh3[0] = '\0';
        files[i].sha256[0] = '\0';
    }
    if (threads == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > 0 ? (unsigned)cores : 1;
    }
    if (threads > n)
        threads = (unsigned)n;
    if (threads > FILES_MAX_THREADS)
        threads = FILES_MAX_THREADS;
    struct files_pool p = {.files = files, .n = n};
    pthread_mutex_init(&p.lock, NULL);
    pthread_t tids[FILES_MAX_THREADS];
    unsigned started = 0;
    for (unsigned t = 1; t < threads; t++) /* the caller's thread is one of them */
        if (pthread_create(&tids[started], NULL, files_worker, &p) == 0)
            started++;
    files_worker(&p);
    for (unsigned t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    pthread_mutex_destroy(&p.lock);
    size_t failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += files[i].err_no != 0;
    return (int)failed;
}
