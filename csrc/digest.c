/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Archive digests through OpenSSL's libcrypto (EVP): SHA-256 and SHA-512 of
 * the archive bytes while the engine streams them, and torcx_digest_files,
 * the SHA-512 (signed) or XXH3-128 (recorded, integrity only) of whole image
 * files, several in parallel, one sequential read each, that the boot
 * compares with a signed or recorded value.
 * libcrypto picks the fastest code for the CPU (SHA-NI, AVX2). It is not
 * linked: it is loaded on the first SHA digest, so a boot that checks only
 * XXH3 (the default "integrity" policy) never pays for mapping it (~2 ms).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
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

/* ---- libcrypto, loaded once on first use ---- */

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)
/* The soname of the OpenSSL the headers are from: libcrypto.so.3 for 3.x. */
#define LIBCRYPTO "libcrypto.so." STRINGIFY(OPENSSL_VERSION_MAJOR)

/* The EVP functions used here, typed by the headers so they cannot drift. */
static struct {
    __typeof__(&EVP_sha256) sha256;
    __typeof__(&EVP_sha512) sha512;
    __typeof__(&EVP_MD_CTX_new) ctx_new;
    __typeof__(&EVP_MD_CTX_free) ctx_free;
    __typeof__(&EVP_DigestInit_ex) init;
    __typeof__(&EVP_DigestUpdate) update;
    __typeof__(&EVP_DigestFinal_ex) final;
} evp;
static pthread_once_t evp_once = PTHREAD_ONCE_INIT;
static char evp_error[256]; /* why libcrypto is unusable; "" once loaded */

static void evp_load(void) {
    static const char *const names[] = {"EVP_sha256",      "EVP_sha512",        "EVP_MD_CTX_new",
                                        "EVP_MD_CTX_free", "EVP_DigestInit_ex", "EVP_DigestUpdate",
                                        "EVP_DigestFinal_ex"};
    void *fns[sizeof(names) / sizeof(names[0])];
    _Static_assert(sizeof(fns) == sizeof(evp), "one name per EVP function");
    void *h = dlopen(LIBCRYPTO, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(evp_error, sizeof(evp_error), "cannot load %s for a SHA digest: %s", LIBCRYPTO,
                 dlerror());
        return;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!(fns[i] = dlsym(h, names[i]))) {
            snprintf(evp_error, sizeof(evp_error), "%s has no %s: %s", LIBCRYPTO, names[i],
                     dlerror());
            return;
        }
    memcpy(&evp, fns, sizeof(evp)); /* h stays open: the functions serve until exit */
}

const char *torcx_md_error(void) {
    return evp_error;
}

int torcx_md_init(struct torcx_md *m, const char *name) {
    m->ctx = NULL;
    pthread_once(&evp_once, evp_load);
    if (evp_error[0])
        return -ELIBACC;
    const EVP_MD *md = strcmp(name, "sha512") == 0 ? evp.sha512() : evp.sha256();
    m->ctx = evp.ctx_new();
    if (!m->ctx)
        return -ENOMEM;
    if (evp.init(m->ctx, md, NULL) != 1) {
        evp.ctx_free(m->ctx);
        m->ctx = NULL;
        return -EINVAL;
    }
    return 0;
}

void torcx_md_update(struct torcx_md *m, const void *data, size_t n) {
    if (m->ctx && n)
        evp.update(m->ctx, data, n);
}

int torcx_md_final_hex(struct torcx_md *m, char *out, size_t cap) {
    static const char digits[] = "0123456789abcdef";
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    out[0] = '\0';
    if (!m->ctx || evp.final(m->ctx, d, &n) != 1 || 2 * (size_t)n + 1 > cap)
        return -EINVAL;
    for (unsigned int i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
    return 0;
}

void torcx_md_free(struct torcx_md *m) {
    if (m->ctx)
        evp.ctx_free(m->ctx);
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
