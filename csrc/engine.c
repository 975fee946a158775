/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The extraction engine: a batch of jobs on a pool of threads. Each job
 * streams one tar archive (see source.c for decoding and archive hashing)
 * into a staging folder next to its destination, creating every entry
 * relative to a directory fd with no symlink ever followed, hashing every
 * regular file with XXH3-128 as it is written and checking it against the
 * archive's .torcx/digests, then renames the folder into place.
 *
 * Why not archive_write_disk: it resolves paths against the process-wide
 * current directory (unusable from several threads at once) and follows
 * its own symlink checks by path; creating with *at() calls from a
 * directory fd is both thread-safe and race-free.
 */
#include <archive.h>
#include <archive_entry.h>
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "torcx_engine.h"

#define DIGESTS_PATH ".torcx/digests"
#define DIGESTS_MAX (64u << 20)
#define DEFAULT_MAX_ENTRIES 1000000u
#define DEFAULT_MAX_BYTES (1ull << 36) /* 64 GiB: bounds the time spent hashing sparse holes (~3 s) */
#define DEFAULT_MAX_PATH 4096u
#define ZEROS_LEN 65536

static const uint8_t zeros[ZEROS_LEN];

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

static struct map_slot *map_find(struct map *m, const char *key) {
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
static struct map_slot *map_put(struct map *m, const char *key, XXH128_hash_t digest) {
    struct map_slot *s = map_find(m, key);
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

static void map_del(struct map *m, const char *key) {
    struct map_slot *s = map_find(m, key);
    if (s)
        s->state = SLOT_DEAD; /* key freed on reuse or grow */
}

static void map_free(struct map *m) {
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    m->slots = NULL;
    m->cap = m->used = 0;
}

/* ---- per-job state ---- */

struct dir_fixup {
    const char *path; /* normalized, "" for the root; a key of fixup_at */
    mode_t mode;
    uid_t uid;
    gid_t gid;
    struct timespec mtime;
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
    struct map nondirs; /* verify-only: paths of entries that are not folders */
    struct map parents; /* verify-only: folders that have entries below them */
    bool have_list;
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
static int job_fail(struct job *j, int code, int err, const char *fmt, ...) {
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

static void hex(const uint8_t *p, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static void digest_hex(XXH128_hash_t h, char out[33]) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    hex(c.digest, sizeof(c.digest), out);
}

static bool digest_equal(XXH128_hash_t a, XXH128_hash_t b) {
    return a.high64 == b.high64 && a.low64 == b.low64;
}

/* ---- paths ---- */

/* Normalizes an archive path: strips "./" and empty components; refuses
 * absolute paths and "..". "" is the image root. */
static int normalize(struct job *j, const char *in, char *out, size_t cap) {
    assert(in && out && cap > 1);
    if (in[0] == '/')
        return job_fail(j, TORCX_E_UNSAFE, 0, "absolute path refused");
    size_t o = 0;
    const char *p = in;
    while (*p) {
        const char *end = strchrnul(p, '/');
        size_t len = (size_t)(end - p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return job_fail(j, TORCX_E_UNSAFE, 0, "path with '..' refused");
        if (len > NAME_MAX)
            return job_fail(j, TORCX_E_LIMIT, ENAMETOOLONG, "path component longer than %d bytes",
                            NAME_MAX);
        if (len > 0 && !(len == 1 && p[0] == '.')) {
            if (o + len + 2 > cap)
                return job_fail(j, TORCX_E_LIMIT, 0, "path longer than %zu bytes", cap);
            if (o)
                out[o++] = '/';
            memcpy(out + o, p, len);
            o += len;
        }
        p = *end ? end + 1 : end;
    }
    out[o] = '\0';
    return 0;
}

static int openat2_beneath(int dirfd, const char *path, int flags) {
    struct open_how how = {
        .flags = (uint64_t)flags | O_CLOEXEC,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    long r;
    do
        r = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    while (r < 0 && errno == EINTR);
    return (int)r;
}

/* openat2 missing (ENOSYS), answered EPERM by a container seccomp profile
 * older than it, or racing a rename (EAGAIN): the walk below does the job. */
static bool openat2_unavailable(int e) { return e == ENOSYS || e == EPERM || e == EAGAIN; }

/* Opens folder `rel` (normalized, non-empty) below the staging root, one
 * component at a time, never following a symlink; creates missing folders
 * when `create`. Works where openat2 does not exist. */
static int walk_open(struct job *j, const char *rel, bool create) {
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", rel);
    int fd = dup(j->staging_fd);
    if (fd < 0)
        return -errno;
    char *save = NULL;
    for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        int next = openat(fd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0 && errno == ENOENT && create) {
            if (mkdirat(fd, c, 0755) < 0 && errno != EEXIST) {
                int e = errno;
                close(fd);
                return -e;
            }
            next = openat(fd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (next < 0) {
            int e = errno;
            struct stat st;
            if ((e == ENOTDIR || e == ELOOP) && fstatat(fd, c, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                S_ISLNK(st.st_mode))
                e = ELOOP;
            close(fd);
            return -e;
        }
        close(fd);
        fd = next;
    }
    return fd;
}

/* fd of folder `rel` below staging (O_PATH), creating it and its parents as
 * needed. Refuses any path through a symlink. */
static int open_dir(struct job *j, const char *rel, bool create) {
    if (!*rel)
        return dup(j->staging_fd);
    int fd = openat2_beneath(j->staging_fd, rel, O_PATH | O_DIRECTORY);
    if (fd >= 0)
        return fd;
    int e = errno;
    if (e == ENOENT || openat2_unavailable(e)) {
        fd = walk_open(j, rel, create);
        if (fd >= 0)
            return fd;
        e = -fd;
    }
    return -e;
}

static void cache_drop(struct job *j) {
    if (j->cache_fd >= 0)
        close(j->cache_fd);
    j->cache_fd = -1;
    j->cache_path[0] = '\0';
}

/* Splits a normalized path into its parent's fd (cached) and leaf name. */
static int parent_of(struct job *j, char *path, const char **leaf) {
    assert(j->write && *path && path[0] != '/');
    char *slash = strrchr(path, '/');
    const char *parent = "";
    if (slash) {
        *slash = '\0';
        parent = path;
        *leaf = slash + 1;
    } else {
        *leaf = path;
    }
    if (!*parent) {
        if (slash)
            *slash = '/';
        return j->staging_fd;
    }
    if (j->cache_fd >= 0 && strcmp(j->cache_path, parent) == 0) {
        *slash = '/';
        return j->cache_fd;
    }
    int fd = open_dir(j, parent, true);
    if (fd < 0) {
        int e = -fd;
        *slash = '/';
        if (e == ELOOP || e == EXDEV)
            return job_fail(j, TORCX_E_UNSAFE, 0, "path goes through a symlink"), -1;
        if (e == ENOTDIR)
            return job_fail(j, TORCX_E_UNSAFE, 0, "path goes through a non-directory"), -1;
        return job_fail(j, TORCX_E_OS, e, "cannot open parent folder"), -1;
    }
    cache_drop(j);
    snprintf(j->cache_path, sizeof(j->cache_path), "%s", parent);
    j->cache_fd = fd;
    *slash = '/';
    return fd;
}

/* Removes whatever is at dirfd/name so a later entry can replace it.
 * Empty folders only; a non-empty folder is not replaced by a non-folder. */
static int remove_existing(struct job *j, int dirfd, const char *name) {
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (S_ISDIR(st.st_mode)) {
        if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0)
            return -errno;
        cache_drop(j); /* the cached fd may have been that folder */
        return 0;
    }
    return unlinkat(dirfd, name, 0) < 0 ? -errno : 0;
}

/* ---- metadata ---- */

static mode_t mode_bits(struct job *j, mode_t mode) {
    return mode & (j->ownership ? 07777 : 0777);
}

static int apply_xattrs(struct job *j, struct archive_entry *e, int fd) {
    const char *name;
    const void *value;
    size_t size;
    archive_entry_xattr_reset(e);
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
        bool user = strncmp(name, "user.", 5) == 0;
        if (!user && !j->is_root)
            continue; /* privileged namespaces need root: skipped, as tar does */
        if (fsetxattr(fd, name, value, size, 0) < 0) {
            if (errno == ENOTSUP || errno == EOPNOTSUPP)
                continue; /* filesystem without xattrs, ignoring */
            return job_fail(j, TORCX_E_OS, errno, "cannot set xattr %s", name);
        }
    }
    return 0;
}

static struct timespec entry_mtime(struct archive_entry *e) {
    if (!archive_entry_mtime_is_set(e))
        return (struct timespec){.tv_nsec = UTIME_OMIT};
    return (struct timespec){archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
}

static struct timespec entry_atime(struct archive_entry *e) {
    if (!archive_entry_atime_is_set(e))
        return (struct timespec){.tv_nsec = UTIME_NOW};
    return (struct timespec){archive_entry_atime(e), archive_entry_atime_nsec(e)};
}

/* What one entry creates at its path: a file (opened for writing), a
 * symlink, a hard link or a node. */
struct creation {
    enum { CREATE_FILE, CREATE_SYMLINK, CREATE_LINK, CREATE_NODE } kind;
    const char *what;   /* for the error message */
    const char *target; /* symlink text, or the hard link target's leaf */
    int target_fd;      /* hard link: the target's folder */
    mode_t type;        /* node */
    dev_t dev;
};

/* fd (files) or 0, or -errno. */
static int create_once(int pfd, const char *leaf, const struct creation *c) {
    switch (c->kind) {
    case CREATE_FILE: {
        int fd = openat(pfd, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        return fd < 0 ? -errno : fd;
    }
    case CREATE_SYMLINK:
        return symlinkat(c->target, pfd, leaf) < 0 ? -errno : 0;
    case CREATE_LINK:
        return linkat(c->target_fd, c->target, pfd, leaf, 0) < 0 ? -errno : 0;
    case CREATE_NODE:
        return mknodat(pfd, leaf, c->type | 0600, c->dev) < 0 ? -errno : 0;
    }
    return -EINVAL;
}

/* Creates at path, replacing an earlier entry there (a later entry replaces
 * an earlier one completely, as tar does). Sets *pfd and *leaf for the
 * metadata calls that follow; returns an fd (files) or 0, or -1 on failure. */
static int create_replacing(struct job *j, char *path, const struct creation *c, int *pfd,
                            const char **leaf) {
    if ((*pfd = parent_of(j, path, leaf)) < 0)
        return -1;
    int r = create_once(*pfd, *leaf, c);
    if (r == -EEXIST) {
        int rr = remove_existing(j, *pfd, *leaf);
        if (rr < 0)
            return job_fail(j, TORCX_E_OS, -rr, "cannot replace an earlier entry with a %s",
                            c->what);
        if ((*pfd = parent_of(j, path, leaf)) < 0) /* the cache may have been dropped */
            return -1;
        r = create_once(*pfd, *leaf, c);
    }
    if (r < 0)
        return job_fail(j, TORCX_E_OS, -r, "cannot create %s", c->what);
    return r;
}

/* Owner and times of a symlink or node, which have no fd of their own. */
static int set_owner_at(struct job *j, struct archive_entry *e, int pfd, const char *leaf) {
    if (j->ownership && j->is_root &&
        fchownat(pfd, leaf, (uid_t)archive_entry_uid(e), (gid_t)archive_entry_gid(e),
                 AT_SYMLINK_NOFOLLOW) < 0)
        return job_fail(j, TORCX_E_OS, errno, "cannot set owner");
    return 0;
}

static int set_times_at(struct job *j, struct archive_entry *e, int pfd, const char *leaf) {
    struct timespec ts[2] = {entry_atime(e), entry_mtime(e)};
    if (utimensat(pfd, leaf, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return job_fail(j, TORCX_E_OS, errno, "cannot set times");
    return 0;
}

/* ---- entries ---- */

static int check_listed(struct job *j, const char *path, XXH128_hash_t actual) {
    struct map_slot *s = map_find(&j->listed, path);
    if (!s)
        return job_fail(j, TORCX_E_UNLISTED, 0, "file %s is not listed in " DIGESTS_PATH, path);
    if (!digest_equal(s->digest, actual)) {
        char want[33], got[33];
        digest_hex(s->digest, want);
        digest_hex(actual, got);
        return job_fail(j, TORCX_E_DIGEST, 0, "digest mismatch for %s: expected %s, got %s", path,
                        want, got);
    }
    s->seen = true;
    return 0;
}

static int parse_hex_digest(const char *p, XXH128_hash_t *out) {
    XXH128_canonical_t c;
    for (int i = 0; i < 16; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char ch = p[2 * i + k];
            int d = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (d < 0)
                return -1;
            v = v * 16 + d;
        }
        c.digest[i] = (unsigned char)v;
    }
    *out = XXH128_hashFromCanonical(&c);
    return 0;
}

/* Parses xxh128sum output: "<32 hex>  <path>" per line. */
static int load_digest_list(struct job *j, char *text, size_t len) {
    if (j->have_list)
        return job_fail(j, TORCX_E_DIGEST_LIST, 0, DIGESTS_PATH " appears twice");
    size_t lineno = 0;
    char norm[4096];
    for (char *line = text; line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        char *end = nl ? nl : text + len;
        lineno++;
        *end = '\0';
        if (end > line && end[-1] == '\r')
            end[-1] = '\0';
        if (*line) {
            XXH128_hash_t d;
            if (strlen(line) < 35 || parse_hex_digest(line, &d) < 0 || line[32] != ' ' ||
                (line[33] != ' ' && line[33] != '*'))
                return job_fail(j, TORCX_E_DIGEST_LIST, 0, DIGESTS_PATH " line %zu is malformed",
                                lineno);
            const char *path = line + 34;
            if (path[0] == '.' && path[1] == '/')
                path += 2;
            if (path[0] == '/' || normalize(j, path, norm, sizeof(norm)) < 0 || !*norm) {
                j->out->code = TORCX_OK; /* replace normalize's message with ours */
                return job_fail(j, TORCX_E_DIGEST_LIST, 0,
                                DIGESTS_PATH " line %zu has an invalid path", lineno);
            }
            if (!map_put(&j->listed, norm, d))
                return job_fail(j, TORCX_E_OS, ENOMEM, "cannot load " DIGESTS_PATH);
        }
        line = end + 1;
    }
    j->have_list = true;
    /* Files extracted before the list arrived are checked now. */
    for (size_t i = 0; i < j->files.cap; i++) {
        struct map_slot *s = &j->files.slots[i];
        if (s->state != SLOT_LIVE || (s->link && !map_find(&j->listed, s->key)))
            continue; /* as do_hardlink: a link is checked only if listed */
        if (check_listed(j, s->key, s->digest) < 0)
            return -1;
    }
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void hash_zeros(struct job *j, uint64_t n) {
    while (n > 0) {
        size_t k = n < ZEROS_LEN ? (size_t)n : ZEROS_LEN;
        XXH3_128bits_update(j->fxxh, zeros, k);
        n -= k;
    }
}

static int do_file(struct job *j, struct archive_entry *e, char *path) {
    int64_t size = archive_entry_size(e);
    if (size < 0)
        size = 0;
    if ((uint64_t)size > j->max_bytes - j->out->bytes) /* bytes <= max_bytes: no wrap */
        return job_fail(j, TORCX_E_LIMIT, 0, "unpacked size exceeds the limit of %llu bytes",
                        (unsigned long long)j->max_bytes);
    bool is_list = strcmp(path, DIGESTS_PATH) == 0;
    if (is_list && size > DIGESTS_MAX)
        return job_fail(j, TORCX_E_LIMIT, 0, DIGESTS_PATH " is larger than %u bytes", DIGESTS_MAX);
    char *list = NULL;
    if (is_list && !(list = calloc(1, (size_t)size + 1)))
        return job_fail(j, TORCX_E_OS, ENOMEM, "cannot read " DIGESTS_PATH);

    int fd = -1, r = -1;
    if (j->write) {
        const struct creation c = {.kind = CREATE_FILE, .what = "file"};
        const char *leaf;
        int pfd;
        if ((fd = create_replacing(j, path, &c, &pfd, &leaf)) < 0)
            goto out;
    }

    XXH3_128bits_reset(j->fxxh);
    uint64_t pos = 0;
    for (;;) {
        const void *buf;
        size_t len;
        la_int64_t off;
        int ar = archive_read_data_block(j->ar, &buf, &len, &off);
        if (ar == ARCHIVE_EOF)
            break;
        if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) { /* RETRY too: damaged data */
            job_fail(j, TORCX_E_FORMAT, 0, "%s", archive_error_string(j->ar) ?: "read error");
            goto out;
        }
        if (off < 0 || (uint64_t)off + len > (uint64_t)size) {
            job_fail(j, TORCX_E_FORMAT, 0, "entry data outside its size");
            goto out;
        }
        if ((uint64_t)off > pos) { /* a hole: stays a hole */
            hash_zeros(j, (uint64_t)off - pos);
            if (fd >= 0 && lseek(fd, off, SEEK_SET) < 0) {
                job_fail(j, TORCX_E_OS, errno, "cannot seek");
                goto out;
            }
            pos = (uint64_t)off;
        } else if ((uint64_t)off < pos) {
            job_fail(j, TORCX_E_FORMAT, 0, "sparse map goes backwards");
            goto out;
        }
        XXH3_128bits_update(j->fxxh, buf, len);
        if (list)
            memcpy(list + pos, buf, len);
        if (fd >= 0) {
            int w = write_all(fd, buf, len);
            if (w < 0) {
                job_fail(j, TORCX_E_OS, -w, "cannot write file");
                goto out;
            }
        }
        pos += len;
    }
    if (pos < (uint64_t)size) { /* ends with a hole */
        hash_zeros(j, (uint64_t)size - pos);
        if (fd >= 0 && ftruncate(fd, size) < 0) {
            job_fail(j, TORCX_E_OS, errno, "cannot set file size");
            goto out;
        }
    }
    j->out->bytes += (uint64_t)size;
    XXH128_hash_t digest = XXH3_128bits_digest(j->fxxh);

    if (fd >= 0) {
        if (j->ownership && j->is_root &&
            fchown(fd, (uid_t)archive_entry_uid(e), (gid_t)archive_entry_gid(e)) < 0) {
            job_fail(j, TORCX_E_OS, errno, "cannot set owner");
            goto out;
        }
        if (fchmod(fd, mode_bits(j, archive_entry_perm(e))) < 0) {
            job_fail(j, TORCX_E_OS, errno, "cannot set mode");
            goto out;
        }
        if (apply_xattrs(j, e, fd) < 0)
            goto out;
        struct timespec ts[2] = {entry_atime(e), entry_mtime(e)};
        if (futimens(fd, ts) < 0) {
            job_fail(j, TORCX_E_OS, errno, "cannot set times");
            goto out;
        }
    }

    if (is_list) {
        if (memchr(list, '\0', (size_t)size)) {
            job_fail(j, TORCX_E_DIGEST_LIST, 0, DIGESTS_PATH " contains a NUL byte");
            goto out;
        }
        r = load_digest_list(j, list, (size_t)size);
        goto out;
    }
    struct map_slot *slot = map_put(&j->files, path, digest);
    if (!slot) {
        job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
        goto out;
    }
    slot->link = false;
    if (j->have_list && check_listed(j, path, digest) < 0)
        goto out;
    j->out->files++;
    r = 0;
out:
    if (fd >= 0 && close(fd) < 0 && r == 0)
        r = job_fail(j, TORCX_E_OS, errno, "cannot write file");
    free(list);
    return r;
}

static int add_fixup(struct job *j, const char *path, struct archive_entry *e) {
    struct dir_fixup f = {
        .mode = archive_entry_perm(e),
        .uid = (uid_t)archive_entry_uid(e),
        .gid = (gid_t)archive_entry_gid(e),
        .mtime = entry_mtime(e),
    };
    if (!*path) {
        j->root_fixup = f;
        j->root_fixup_set = true;
        return 0;
    }
    /* A folder listed twice: the later entry's metadata wins. Looked up in
     * a map: a linear scan made 60k folders cost 6 s, 1M ones half an hour. */
    struct map_slot *s = map_find(&j->fixup_at, path);
    if (s) {
        struct dir_fixup *old = &j->fixups[s->digest.low64];
        f.path = old->path;
        *old = f;
        return 0;
    }
    if (j->nfixups == j->capfixups) {
        size_t ncap = j->capfixups ? j->capfixups * 2 : 256;
        struct dir_fixup *n = realloc(j->fixups, ncap * sizeof(*n));
        if (!n)
            return job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
        j->fixups = n;
        j->capfixups = ncap;
    }
    s = map_put(&j->fixup_at, path, (XXH128_hash_t){.low64 = j->nfixups});
    if (!s)
        return job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
    f.path = s->key; /* owned by the map, which never deletes */
    j->fixups[j->nfixups++] = f;
    return 0;
}

static int do_dir(struct job *j, struct archive_entry *e, char *path) {
    if (!j->write)
        return 0;
    if (*path) {
        const char *leaf;
        int pfd = parent_of(j, path, &leaf);
        if (pfd < 0)
            return -1;
        if (mkdirat(pfd, leaf, 0700) < 0) {
            int err = errno;
            struct stat st;
            if (err != EEXIST || fstatat(pfd, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return job_fail(j, TORCX_E_OS, err, "cannot create folder");
            if (!S_ISDIR(st.st_mode)) { /* a symlink or file: replaced, never followed */
                if (unlinkat(pfd, leaf, 0) < 0 || mkdirat(pfd, leaf, 0700) < 0)
                    return job_fail(j, TORCX_E_OS, errno, "cannot replace with a folder");
            }
        }
        if (archive_entry_xattr_count(e) > 0) {
            int dfd = openat(pfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (dfd < 0)
                return job_fail(j, TORCX_E_OS, errno, "cannot open folder");
            int r = apply_xattrs(j, e, dfd);
            close(dfd);
            if (r < 0)
                return -1;
        }
    }
    return add_fixup(j, path, e);
}

static int do_symlink(struct job *j, struct archive_entry *e, char *path) {
    const char *target = archive_entry_symlink(e);
    if (!target)
        return job_fail(j, TORCX_E_FORMAT, 0, "symlink without target");
    if (strlen(target) > j->max_path)
        return job_fail(j, TORCX_E_LIMIT, 0, "symlink target longer than %u bytes", j->max_path);
    if (!*path)
        return job_fail(j, TORCX_E_UNSAFE, 0, "the image root cannot be a symlink");
    if (!j->write)
        return 0;
    const struct creation c = {.kind = CREATE_SYMLINK, .what = "symlink", .target = target};
    const char *leaf;
    int pfd;
    if (create_replacing(j, path, &c, &pfd, &leaf) < 0 || set_owner_at(j, e, pfd, leaf) < 0)
        return -1;
    return set_times_at(j, e, pfd, leaf);
}

static int do_hardlink(struct job *j, struct archive_entry *e, char *path) {
    char target[4096];
    if (normalize(j, archive_entry_hardlink(e), target, sizeof(target)) < 0)
        return -1;
    struct map_slot *t = map_find(&j->files, target);
    if (!t)
        return job_fail(j, TORCX_E_LINK, 0,
                        "hard link to %s, which is not a file extracted earlier", target);
    XXH128_hash_t digest = t->digest;
    if (strcmp(target, path) == 0)
        return 0;
    if (j->write) {
        char tparent[4096];
        snprintf(tparent, sizeof(tparent), "%s", target);
        char *slash = strrchr(tparent, '/');
        const char *tleaf = slash ? slash + 1 : tparent;
        int tfd = slash ? (*slash = '\0', open_dir(j, tparent, false)) : dup(j->staging_fd);
        if (tfd < 0)
            return job_fail(j, TORCX_E_LINK, -tfd, "cannot reach hard link target %s", target);
        const struct creation c = {
            .kind = CREATE_LINK, .what = "hard link", .target = tleaf, .target_fd = tfd};
        const char *leaf;
        int pfd;
        int r = create_replacing(j, path, &c, &pfd, &leaf);
        close(tfd);
        if (r < 0)
            return -1;
    }
    struct map_slot *slot = map_put(&j->files, path, digest);
    if (!slot)
        return job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
    slot->link = true;
    if (j->have_list) { /* links need not be listed; if listed, they must match */
        struct map_slot *s = map_find(&j->listed, path);
        if (s && check_listed(j, path, digest) < 0)
            return -1;
    }
    j->out->hardlinks++;
    return 0;
}

static int do_special(struct job *j, struct archive_entry *e, char *path, mode_t type) {
    if (!(j->in->flags & TORCX_JOB_ALLOW_DEVICES))
        return job_fail(j, TORCX_E_DEVICE, 0, "%s refused (devices are not allowed)",
                        type == S_IFIFO ? "FIFO" : type == S_IFSOCK ? "socket" : "device node");
    if (type == S_IFSOCK)
        return job_fail(j, TORCX_E_DEVICE, 0, "socket refused");
    if (!j->write)
        return 0;
    const struct creation c = {
        .kind = CREATE_NODE, .what = "node", .type = type,
        .dev = makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e))};
    const char *leaf;
    int pfd;
    if (create_replacing(j, path, &c, &pfd, &leaf) < 0 || set_owner_at(j, e, pfd, leaf) < 0)
        return -1;
    /* After the owner: chown clears setuid and setgid bits. */
    if (fchmodat(pfd, leaf, mode_bits(j, archive_entry_perm(e)), 0) < 0)
        return job_fail(j, TORCX_E_OS, errno, "cannot set mode");
    if (set_times_at(j, e, pfd, leaf) < 0)
        return -1;
    j->out->others++;
    return 0;
}

/* A folder, symlink or node replaces whatever file was at path, in both
 * modes alike: a later hard link may not point at it, and a listed file
 * that no longer is one in the image is missing, not verified. */
static void forget_file(struct job *j, const char *path) {
    map_del(&j->files, path);
    struct map_slot *s = map_find(&j->listed, path);
    if (s)
        s->seen = false;
}

/* Verify-only jobs write nothing, so the filesystem cannot refuse a path
 * through an earlier symlink or file for them: track non-folders instead. */
static int track_nondirs(struct job *j, char *path, mode_t type, bool hardlink) {
    XXH128_hash_t none = {0, 0};
    for (char *slash = strchr(path, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        bool blocked = map_find(&j->nondirs, path) != NULL;
        bool ok = blocked || map_put(&j->parents, path, none);
        *slash = '/';
        if (blocked)
            return job_fail(j, TORCX_E_UNSAFE, 0, "path goes through a symlink or file");
        if (!ok)
            return job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
    }
    if (type == AE_IFDIR && !hardlink) {
        map_del(&j->nondirs, path);
        return 0;
    }
    if (map_find(&j->parents, path)) /* as rmdir would refuse when extracting */
        return job_fail(j, TORCX_E_OS, ENOTEMPTY, "cannot replace folder");
    if (!map_put(&j->nondirs, path, none))
        return job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
    return 0;
}

static int do_entry(struct job *j, struct archive_entry *e) {
    j->entry = NULL;
    const char *raw = archive_entry_pathname(e);
    if (!raw)
        raw = archive_entry_pathname_utf8(e);
    if (!raw)
        return job_fail(j, TORCX_E_FORMAT, 0, "entry without a path");
    j->entry = raw;
    if (strlen(raw) > j->max_path)
        return job_fail(j, TORCX_E_LIMIT, 0, "path longer than %u bytes", j->max_path);
    if (++j->out->entries > j->max_entries)
        return job_fail(j, TORCX_E_LIMIT, 0, "more than %llu entries",
                        (unsigned long long)j->max_entries);
    char path[4096];
    if (normalize(j, raw, path, sizeof(path)) < 0)
        return -1;
    /* uid_t is 32 bits and (uid_t)-1 means "unchanged" to chown: an id
     * outside [0, 2^32-2] would be silently truncated into another one. */
    if (archive_entry_uid(e) < 0 || archive_entry_uid(e) > UINT32_MAX - 1 ||
        archive_entry_gid(e) < 0 || archive_entry_gid(e) > UINT32_MAX - 1)
        return job_fail(j, TORCX_E_FORMAT, 0, "uid or gid out of range");
    mode_t type = archive_entry_filetype(e);
    if (!*path && (type != AE_IFDIR || archive_entry_hardlink(e)))
        return job_fail(j, TORCX_E_UNSAFE, 0, "entry replaces the image root");
    if (strcmp(path, DIGESTS_PATH) == 0 && (type != AE_IFREG || archive_entry_hardlink(e)))
        return job_fail(j, TORCX_E_DIGEST_LIST, 0, DIGESTS_PATH " must be a regular file");
    if (!j->write && track_nondirs(j, path, type, archive_entry_hardlink(e) != NULL) < 0)
        return -1;
    if (archive_entry_hardlink(e))
        return do_hardlink(j, e, path);
    if (type != AE_IFREG)
        forget_file(j, path);
    switch (type) {
    case AE_IFREG:
        return do_file(j, e, path);
    case AE_IFDIR:
        j->out->dirs++;
        return do_dir(j, e, path);
    case AE_IFLNK:
        j->out->symlinks++;
        return do_symlink(j, e, path);
    case AE_IFIFO:
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFSOCK:
        return do_special(j, e, path, type);
    default:
        return job_fail(j, TORCX_E_FORMAT, 0, "unknown entry type 0%o", (unsigned)type);
    }
}

/* ---- folders: modes last, deepest first ---- */

static size_t depth(const char *p) {
    size_t d = 1;
    for (; *p; p++)
        d += *p == '/';
    return d;
}

static int cmp_depth_desc(const void *a, const void *b) {
    size_t da = depth(((const struct dir_fixup *)a)->path);
    size_t db = depth(((const struct dir_fixup *)b)->path);
    return da < db ? 1 : da > db ? -1 : 0;
}

static int fix_dir(struct job *j, int dfd, const struct dir_fixup *f) {
    if (j->ownership && j->is_root && fchown(dfd, f->uid, f->gid) < 0)
        return job_fail(j, TORCX_E_OS, errno, "cannot set owner of folder %s", f->path);
    if (fchmod(dfd, mode_bits(j, f->mode)) < 0)
        return job_fail(j, TORCX_E_OS, errno, "cannot set mode of folder %s", f->path);
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, f->mtime};
    if (futimens(dfd, ts) < 0)
        return job_fail(j, TORCX_E_OS, errno, "cannot set times of folder %s", f->path);
    return 0;
}

/* A folder fd fchmod accepts (not O_PATH), never through a symlink; -1 and
 * errno on failure. The fallback opens the leaf from its walked parent:
 * reopening an O_PATH fd through /proc would need /proc mounted. */
static int open_fixup_dir(struct job *j, const char *rel) {
    int fd = openat2_beneath(j->staging_fd, rel, O_RDONLY | O_DIRECTORY);
    if (fd >= 0 || !openat2_unavailable(errno))
        return fd;
    char parent[4096];
    snprintf(parent, sizeof(parent), "%s", rel);
    char *slash = strrchr(parent, '/');
    const char *leaf = slash ? rel + (slash + 1 - parent) : rel;
    int pfd = slash ? (*slash = '\0', walk_open(j, parent, false)) : dup(j->staging_fd);
    if (pfd < 0) {
        if (slash)
            errno = -pfd;
        return -1;
    }
    fd = openat(pfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    close(pfd);
    errno = e;
    return fd;
}

static int apply_fixups(struct job *j) {
    j->entry = NULL;
    cache_drop(j);
    if (j->nfixups) /* qsort(NULL, 0, ...) is undefined */
        qsort(j->fixups, j->nfixups, sizeof(*j->fixups), cmp_depth_desc);
    for (size_t i = 0; i < j->nfixups; i++) {
        const struct dir_fixup *f = &j->fixups[i];
        int dfd = open_fixup_dir(j, f->path);
        if (dfd < 0) {
            if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
                continue; /* replaced by a later non-folder entry */
            return job_fail(j, TORCX_E_OS, errno, "cannot open folder %s", f->path);
        }
        int r = fix_dir(j, dfd, f);
        close(dfd);
        if (r < 0)
            return -1;
    }
    struct dir_fixup root = j->root_fixup_set
                                ? j->root_fixup
                                : (struct dir_fixup){.mode = 0755, .mtime = {.tv_nsec = UTIME_OMIT}};
    root.path = "";
    if (!j->root_fixup_set) {
        root.uid = getuid();
        root.gid = getgid();
    }
    return fix_dir(j, j->staging_fd, &root);
}

/* ---- staging folder ---- */

/* Opens folder `name` below dirfd for removal; a folder of ours left
 * read-only (or unreadable) by a fixup is made writable first. */
static int open_for_removal(int dirfd, const char *name) {
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) {
        (void)fchmodat(dirfd, name, 0700, 0);
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd >= 0)
        (void)fchmod(fd, 0700);
    return fd;
}

/* Unlinks every non-folder in fd; returns the name of a subfolder left
 * (malloc'd), or NULL when none is left or on error (*err set). */
static char *unlink_files_in(int fd, int *err) {
    int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        *err = -1;
        if (dfd >= 0)
            close(dfd);
        return NULL;
    }
    char *sub = NULL;
    struct dirent *de;
    while (!sub && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (unlinkat(fd, de->d_name, 0) < 0 && errno == EISDIR && !(sub = strdup(de->d_name)))
            *err = -1;
    }
    closedir(d);
    return sub;
}

/* Removes folder `name` below dirfd with everything in it, best effort.
 * Iterative and holding two fds at most: an archive path may nest 2000
 * folders, more than RLIMIT_NOFILE allows at boot (1024). It climbs back
 * with "..", which is safe in a staging folder only this job writes to. */
static void remove_tree_at(int dirfd, const char *name) {
    char **stack = NULL;
    size_t depth = 0, cap = 0;
    int fd = open_for_removal(dirfd, name);
    if (fd < 0) {
        (void)unlinkat(dirfd, name, 0);
        return;
    }
    for (;;) {
        int err = 0;
        char *sub = unlink_files_in(fd, &err);
        if (err)
            break;
        if (sub) { /* descend */
            if (depth == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                char **n = realloc(stack, ncap * sizeof(*n));
                if (n) {
                    stack = n;
                    cap = ncap;
                }
            }
            int next = depth < cap ? open_for_removal(fd, sub) : -1;
            if (next < 0) {
                free(sub);
                break;
            }
            stack[depth++] = sub;
            close(fd);
            fd = next;
            continue;
        }
        if (depth == 0) { /* the top folder is empty */
            close(fd);
            fd = -1;
            (void)unlinkat(dirfd, name, AT_REMOVEDIR);
            break;
        }
        int up = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        close(fd);
        fd = up;
        char *child = stack[--depth];
        /* A folder that cannot go would be found again forever: give up. */
        bool gone = fd >= 0 && unlinkat(fd, child, AT_REMOVEDIR) == 0;
        free(child);
        if (!gone)
            break;
    }
    if (fd >= 0)
        close(fd);
    while (depth > 0)
        free(stack[--depth]);
    free(stack);
}

static int make_staging(struct job *j) {
    const char *dest = j->in->dest;
    size_t n = strlen(dest);
    while (n > 1 && dest[n - 1] == '/')
        n--;
    const char *base = dest + n;
    while (base > dest && base[-1] != '/')
        base--;
    size_t plen = (size_t)(base - dest);
    struct stat st;
    /* Before j->staging is set: on failure it names what is to be removed. */
    if (fstatat(AT_FDCWD, dest, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return job_fail(j, TORCX_E_EXISTS, EEXIST, "destination %s", dest);
    if (!(j->staging = malloc(n + 32)))
        return job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
    snprintf(j->staging, n + 32, "%.*s.%.*s.staging-XXXXXX", (int)plen, dest, (int)(n - plen),
             base);
    if (!mkdtemp(j->staging)) {
        int e = errno;
        free(j->staging);
        j->staging = NULL;
        return job_fail(j, TORCX_E_OS, e, "cannot create staging folder next to %s", dest);
    }
    j->staging_fd = open(j->staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (j->staging_fd < 0)
        return job_fail(j, TORCX_E_OS, errno, "cannot open staging folder %s", j->staging);
    return 0;
}

static void remove_staging(struct job *j) {
    if (!j->staging)
        return;
    char *slash = strrchr(j->staging, '/');
    if (slash) {
        *slash = '\0';
        int pfd = open(*j->staging ? j->staging : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        *slash = '/';
        if (pfd >= 0) {
            remove_tree_at(pfd, slash + 1);
            close(pfd);
        }
    } else {
        remove_tree_at(AT_FDCWD, j->staging);
    }
}

/* ---- one job ---- */

static la_ssize_t read_cb(struct archive *a, void *client, const void **buf) {
    struct job *j = client;
    size_t len;
    int r = torcx_source_next(&j->src, buf, &len);
    if (r < 0) {
        j->src_failed = true;
        archive_set_error(a, r == SOURCE_E_CORRUPT ? EIO : -r, "%s",
                          j->src.errmsg);
        return -1;
    }
    return (la_ssize_t)len;
}

static int source_failed(struct job *j) {
    if (j->src.error == SOURCE_E_CORRUPT)
        return job_fail(j, TORCX_E_FORMAT, 0, "%s", j->src.errmsg);
    return job_fail(j, TORCX_E_OS, -j->src.error, "%s", j->src.errmsg);
}

static bool pin_matches(const char *pin, const char *actual) {
    return strcasecmp(pin, actual) == 0;
}

static void name_compression(struct job *j) {
    if (j->out->compression[0])
        return;
    const char *name = archive_filter_name(j->ar, 0);
    snprintf(j->out->compression, sizeof(j->out->compression), "%s",
             archive_filter_count(j->ar) <= 1 ? "none" : name ? name : "unknown");
}

static int read_entries(struct job *j) {
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(j->ar, &e);
        if (r == ARCHIVE_EOF) {
            name_compression(j); /* an archive without members too */
            return 0;
        }
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) { /* RETRY: a damaged header */
            j->entry = NULL;
            if (j->src_failed)
                return source_failed(j);
            return job_fail(j, TORCX_E_FORMAT, 0, "%s",
                            archive_error_string(j->ar) ?: "cannot read archive");
        }
        if (j->index == 0)
            name_compression(j);
        if (do_entry(j, e) < 0) {
            if (j->src_failed) { /* a decode failure surfaced as a short entry */
                j->out->code = TORCX_OK;
                return source_failed(j);
            }
            return -1;
        }
        j->index++;
    }
}

static int finish_checks(struct job *j) {
    j->entry = NULL;
    uint8_t sha[32];
    XXH128_hash_t ad = XXH3_128bits_digest(j->src.xxh);
    digest_hex(ad, j->out->archive_xxh3);
    if (j->src.want_sha256) {
        torcx_sha256_final(&j->src.sha, sha);
        hex(sha, 32, j->out->archive_sha256);
    }
    j->out->archive_bytes = j->src.bytes;
    if (j->in->pin_xxh3 && !pin_matches(j->in->pin_xxh3, j->out->archive_xxh3))
        return job_fail(j, TORCX_E_ARCHIVE_DIGEST, 0,
                        "archive digest mismatch: expected xxh3-128 %s, got %s", j->in->pin_xxh3,
                        j->out->archive_xxh3);
    if (j->in->pin_sha256 && !pin_matches(j->in->pin_sha256, j->out->archive_sha256))
        return job_fail(j, TORCX_E_ARCHIVE_DIGEST, 0,
                        "archive digest mismatch: expected sha256 %s, got %s", j->in->pin_sha256,
                        j->out->archive_sha256);
    if (!j->have_list) {
        if (j->in->flags & TORCX_JOB_REQUIRE_DIGESTS)
            return job_fail(j, TORCX_E_DIGEST_LIST, 0, "archive has no " DIGESTS_PATH);
        return 0;
    }
    for (size_t i = 0; i < j->listed.cap; i++) {
        struct map_slot *s = &j->listed.slots[i];
        if (s->state == SLOT_LIVE && !s->seen)
            return job_fail(j, TORCX_E_MISSING, 0,
                            "file %s is listed in " DIGESTS_PATH " but not in the archive",
                            s->key);
    }
    j->out->verified = 1;
    return 0;
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
        job_fail(&j, TORCX_E_OS, EINVAL, "job without archive or destination");
        goto done;
    }
    if (!(j.fxxh = XXH3_createState())) {
        job_fail(&j, TORCX_E_OS, ENOMEM, "out of memory");
        goto done;
    }
    if (torcx_source_open(&j.src, in->archive, in->flags & TORCX_JOB_SHA256, threaded) < 0) {
        source_failed(&j);
        goto done;
    }
    if (j.src.gzip)
        snprintf(out->compression, sizeof(out->compression), "gzip");
    if (j.write && make_staging(&j) < 0)
        goto done;
    if (!(j.ar = archive_read_new())) {
        job_fail(&j, TORCX_E_OS, ENOMEM, "out of memory");
        goto done;
    }
    archive_read_support_format_tar(j.ar);
    archive_read_support_format_gnutar(j.ar);
    /* Built-in decoders only: filter_all would let an archive's magic pick
     * an external program (lrzip, lzop, grzip) to run at boot. */
    archive_read_support_filter_gzip(j.ar);
    archive_read_support_filter_bzip2(j.ar);
    archive_read_support_filter_xz(j.ar);
    archive_read_support_filter_lzma(j.ar);
    archive_read_support_filter_lz4(j.ar);
    archive_read_support_filter_zstd(j.ar);
    if (archive_read_open(j.ar, &j, NULL, read_cb, NULL) != ARCHIVE_OK) {
        if (j.src_failed)
            source_failed(&j);
        else
            job_fail(&j, TORCX_E_FORMAT, 0, "%s",
                     archive_error_string(j.ar) ?: "not a tar archive");
        goto done;
    }
    if (read_entries(&j) < 0)
        goto done;
    if (torcx_source_drain(&j.src) < 0) {
        source_failed(&j);
        goto done;
    }
    if (finish_checks(&j) < 0)
        goto done;
    if (j.write) {
        if (apply_fixups(&j) < 0)
            goto done;
        close(j.staging_fd);
        j.staging_fd = -1;
        if (renameat2(AT_FDCWD, j.staging, AT_FDCWD, in->dest, RENAME_NOREPLACE) < 0) {
            job_fail(&j, errno == EEXIST ? TORCX_E_EXISTS : TORCX_E_OS, errno,
                     "cannot move staging folder to %s", in->dest);
            goto done;
        }
        free(j.staging);
        j.staging = NULL;
    }
done:
    if (j.ar)
        archive_read_free(j.ar);
    cache_drop(&j);
    if (j.staging_fd >= 0)
        close(j.staging_fd);
    if (out->code != TORCX_OK)
        remove_staging(&j);
    free(j.staging);
    torcx_source_close(&j.src);
    if (j.fxxh)
        XXH3_freeState(j.fxxh);
    map_free(&j.files);
    map_free(&j.listed);
    map_free(&j.nondirs);
    map_free(&j.parents);
    map_free(&j.fixup_at);
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
