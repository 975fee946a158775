/* SPDX-License-Identifier: Apache-2.0 */
/* Entries: creating each archive entry (file, folder, symlink, hard link,
 * node) below the staging folder, replacing an earlier one at the same path,
 * with its metadata and xattrs; then the folders' modes, owners and times,
 * applied last, deepest first. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "digests.h"
#include "entries.h"
#include "safepath.h"

#define ZEROS_LEN 65536
#define PRESIZE_MIN (2u << 20) /* one huge page */

static const uint8_t zeros[ZEROS_LEN];

/* ---- metadata ---- */

static mode_t mode_bits(struct job *j, mode_t mode) {
    return mode & (j->ownership ? 07777 : 0777);
}

/* The allowlist: user.* always; security.capability only with ownership
 * (a file capability is a privilege, like a setuid bit). Everything else is
 * dropped: trusted.* (overlayfs whiteouts and redirects), other security.*
 * names (LSM labels, IMA), and system.posix_acl_* (ACLs are not restored: an
 * ACL would also rewrite the mode). */
static bool xattr_allowed(struct job *j, const char *name) {
    if (strncmp(name, "user.", 5) == 0)
        return true;
    return j->ownership && strcmp(name, "security.capability") == 0;
}

static int apply_xattrs(struct job *j, struct archive_entry *e, int fd) {
    const char *name;
    const void *value;
    size_t size;
    archive_entry_xattr_reset(e);
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
        if (!xattr_allowed(j, name))
            continue;
        if (fsetxattr(fd, name, value, size, 0) < 0) {
            if (errno == ENOTSUP || errno == EOPNOTSUPP)
                continue; /* filesystem without xattrs, ignoring */
            return torcx_job_fail(j, TORCX_E_OS, errno, "cannot set xattr %s", name);
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

/* Removes whatever is at dirfd/name so a later entry can replace it.
 * Empty folders only; a non-empty folder is not replaced by a non-folder. */
static int remove_existing(struct job *j, int dirfd, const char *name) {
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (S_ISDIR(st.st_mode)) {
        if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0)
            return -errno;
        torcx_cache_drop(j); /* the cached fd may have been that folder */
        return 0;
    }
    return unlinkat(dirfd, name, 0) < 0 ? -errno : 0;
}

/* Creates at path, replacing an earlier entry there (a later entry replaces
 * an earlier one completely, as tar does). Sets *pfd and *leaf for the
 * metadata calls that follow; returns an fd (files) or 0, or -1 on failure. */
static int create_replacing(struct job *j, char *path, const struct creation *c, int *pfd,
                            const char **leaf) {
    if ((*pfd = torcx_parent_of(j, path, leaf)) < 0)
        return -1;
    int r = create_once(*pfd, *leaf, c);
    if (r == -EEXIST) {
        int rr = remove_existing(j, *pfd, *leaf);
        if (rr < 0)
            return torcx_job_fail(j, TORCX_E_OS, -rr, "cannot replace an earlier entry with a %s",
                                  c->what);
        if ((*pfd = torcx_parent_of(j, path, leaf)) < 0) /* the cache may have been dropped */
            return -1;
        r = create_once(*pfd, *leaf, c);
    }
    if (r < 0)
        return torcx_job_fail(j, TORCX_E_OS, -r, "cannot create %s", c->what);
    return r;
}

/* Owner and times of a symlink or node, which have no fd of their own. */
static int set_owner_at(struct job *j, struct archive_entry *e, int pfd, const char *leaf) {
    if (j->ownership && j->is_root &&
        fchownat(pfd, leaf, (uid_t)archive_entry_uid(e), (gid_t)archive_entry_gid(e),
                 AT_SYMLINK_NOFOLLOW) < 0)
        return torcx_job_fail(j, TORCX_E_OS, errno, "cannot set owner");
    return 0;
}

static int set_times_at(struct job *j, struct archive_entry *e, int pfd, const char *leaf) {
    struct timespec ts[2] = {entry_atime(e), entry_mtime(e)};
    if (utimensat(pfd, leaf, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return torcx_job_fail(j, TORCX_E_OS, errno, "cannot set times");
    return 0;
}

/* ---- entries ---- */

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
    bool is_list = strcmp(path, DIGESTS_PATH) == 0;
    if (!is_list && (uint64_t)size > j->max_bytes - j->out->bytes) /* no wrap: bytes <= max */
        return torcx_job_fail(j, TORCX_E_LIMIT, 0, "unpacked size exceeds the limit of %llu bytes",
                              (unsigned long long)j->max_bytes);
    if (is_list && size > DIGESTS_MAX)
        return torcx_job_fail(j, TORCX_E_LIMIT, 0, DIGESTS_PATH " is larger than %u bytes",
                              DIGESTS_MAX);
    char *list = NULL;
    if (is_list && !(list = calloc(1, (size_t)size + 1)))
        return torcx_job_fail(j, TORCX_E_OS, ENOMEM, "cannot read " DIGESTS_PATH);

    int fd = -1, r = -1;
    if (j->write) {
        const struct creation c = {.kind = CREATE_FILE, .what = "file"};
        const char *leaf;
        int pfd;
        if ((fd = create_replacing(j, path, &c, &pfd, &leaf)) < 0)
            goto out;
        /* Sized first: a tmpfs mounted huge=within_size gives a large file
         * huge pages only below its size, so appending would get none. */
        if (size >= PRESIZE_MIN && ftruncate(fd, size) < 0) {
            torcx_job_fail(j, TORCX_E_OS, errno, "cannot set file size");
            goto out;
        }
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
            torcx_job_fail(j, TORCX_E_FORMAT, 0, "%s", archive_error_string(j->ar) ?: "read error");
            goto out;
        }
        if (off < 0 || (uint64_t)off + len > (uint64_t)size) {
            torcx_job_fail(j, TORCX_E_FORMAT, 0, "entry data outside its size");
            goto out;
        }
        if ((uint64_t)off > pos) { /* a hole: stays a hole */
            hash_zeros(j, (uint64_t)off - pos);
            if (fd >= 0 && lseek(fd, off, SEEK_SET) < 0) {
                torcx_job_fail(j, TORCX_E_OS, errno, "cannot seek");
                goto out;
            }
            pos = (uint64_t)off;
        } else if ((uint64_t)off < pos) {
            torcx_job_fail(j, TORCX_E_FORMAT, 0, "sparse map goes backwards");
            goto out;
        }
        XXH3_128bits_update(j->fxxh, buf, len);
        if (list)
            memcpy(list + pos, buf, len);
        if (fd >= 0) {
            int w = write_all(fd, buf, len);
            if (w < 0) {
                torcx_job_fail(j, TORCX_E_OS, -w, "cannot write file");
                goto out;
            }
        }
        pos += len;
    }
    if (pos < (uint64_t)size) { /* ends with a hole */
        hash_zeros(j, (uint64_t)size - pos);
        if (fd >= 0 && ftruncate(fd, size) < 0) {
            torcx_job_fail(j, TORCX_E_OS, errno, "cannot set file size");
            goto out;
        }
    }
    if (!is_list) /* the image's own files: the digest list torcx adds is not counted */
        j->out->bytes += (uint64_t)size;
    XXH128_hash_t digest = XXH3_128bits_digest(j->fxxh);

    if (fd >= 0) {
        if (j->ownership && j->is_root &&
            fchown(fd, (uid_t)archive_entry_uid(e), (gid_t)archive_entry_gid(e)) < 0) {
            torcx_job_fail(j, TORCX_E_OS, errno, "cannot set owner");
            goto out;
        }
        if (fchmod(fd, mode_bits(j, archive_entry_perm(e))) < 0) {
            torcx_job_fail(j, TORCX_E_OS, errno, "cannot set mode");
            goto out;
        }
        if (apply_xattrs(j, e, fd) < 0)
            goto out;
        struct timespec ts[2] = {entry_atime(e), entry_mtime(e)};
        if (futimens(fd, ts) < 0) {
            torcx_job_fail(j, TORCX_E_OS, errno, "cannot set times");
            goto out;
        }
    }

    if (is_list) {
        if (memchr(list, '\0', (size_t)size)) {
            torcx_job_fail(j, TORCX_E_DIGEST_LIST, 0, DIGESTS_PATH " contains a NUL byte");
            goto out;
        }
        r = torcx_load_digest_list(j, list, (size_t)size);
        goto out;
    }
    struct map_slot *slot = torcx_map_put(&j->files, path, digest);
    if (!slot) {
        torcx_job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
        goto out;
    }
    slot->link = false;
    if (j->have_list ? torcx_check_listed(j, path, digest) < 0
                     : torcx_remember_early(j, path, digest, false) < 0)
        goto out;
    j->out->files++;
    r = 0;
out:
    if (fd >= 0 && close(fd) < 0 && r == 0)
        r = torcx_job_fail(j, TORCX_E_OS, errno, "cannot write file");
    free(list);
    return r;
}

static size_t depth(const char *p) {
    size_t d = 1;
    for (; *p; p++)
        d += *p == '/';
    return d;
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
    struct map_slot *s = torcx_map_find(&j->fixup_at, path);
    if (s) {
        struct dir_fixup *old = &j->fixups[s->digest.low64];
        f.path = old->path;
        f.depth = old->depth;
        *old = f;
        return 0;
    }
    if (j->nfixups == j->capfixups) {
        size_t ncap = j->capfixups ? j->capfixups * 2 : 256;
        struct dir_fixup *n = realloc(j->fixups, ncap * sizeof(*n));
        if (!n)
            return torcx_job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
        j->fixups = n;
        j->capfixups = ncap;
    }
    s = torcx_map_put(&j->fixup_at, path, (XXH128_hash_t){.low64 = j->nfixups});
    if (!s)
        return torcx_job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
    f.path = s->key; /* owned by the map, which never deletes */
    f.depth = depth(f.path);
    j->fixups[j->nfixups++] = f;
    return 0;
}

static int do_dir(struct job *j, struct archive_entry *e, char *path) {
    if (!j->write)
        return 0;
    if (*path) {
        const char *leaf;
        int pfd = torcx_parent_of(j, path, &leaf);
        if (pfd < 0)
            return -1;
        if (mkdirat(pfd, leaf, 0700) < 0) {
            int err = errno;
            struct stat st;
            if (err != EEXIST || fstatat(pfd, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return torcx_job_fail(j, TORCX_E_OS, err, "cannot create folder");
            if (!S_ISDIR(st.st_mode)) { /* a symlink or file: replaced, never followed */
                if (unlinkat(pfd, leaf, 0) < 0 || mkdirat(pfd, leaf, 0700) < 0)
                    return torcx_job_fail(j, TORCX_E_OS, errno, "cannot replace with a folder");
            }
        }
        if (archive_entry_xattr_count(e) > 0) {
            int dfd = openat(pfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (dfd < 0)
                return torcx_job_fail(j, TORCX_E_OS, errno, "cannot open folder");
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
        return torcx_job_fail(j, TORCX_E_FORMAT, 0, "symlink without target");
    if (strlen(target) > j->max_path)
        return torcx_job_fail(j, TORCX_E_LIMIT, 0, "symlink target longer than %u bytes",
                              j->max_path);
    if (!*path)
        return torcx_job_fail(j, TORCX_E_UNSAFE, 0, "the image root cannot be a symlink");
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
    if (torcx_normalize(j, archive_entry_hardlink(e), target, sizeof(target)) < 0)
        return -1;
    struct map_slot *t = torcx_map_find(&j->files, target);
    if (!t)
        return torcx_job_fail(j, TORCX_E_LINK, 0,
                              "hard link to %s, which is not a file extracted earlier", target);
    XXH128_hash_t digest = t->digest;
    if (strcmp(target, path) == 0)
        return 0;
    if (j->write) {
        char tparent[4096];
        snprintf(tparent, sizeof(tparent), "%s", target);
        char *slash = strrchr(tparent, '/');
        const char *tleaf = slash ? slash + 1 : tparent;
        int tfd = slash ? (*slash = '\0', torcx_open_dir(j, tparent, false)) : dup(j->staging_fd);
        if (tfd < 0)
            return torcx_job_fail(j, TORCX_E_LINK, -tfd, "cannot reach hard link target %s",
                                  target);
        const struct creation c = {
            .kind = CREATE_LINK, .what = "hard link", .target = tleaf, .target_fd = tfd};
        const char *leaf;
        int pfd;
        int r = create_replacing(j, path, &c, &pfd, &leaf);
        close(tfd);
        if (r < 0)
            return -1;
    }
    struct map_slot *slot = torcx_map_put(&j->files, path, digest);
    if (!slot)
        return torcx_job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
    slot->link = true;
    if (j->have_list) { /* links need not be listed; if listed, they must match */
        struct map_slot *s = torcx_map_find(&j->listed, path);
        if (s && torcx_check_listed(j, path, digest) < 0)
            return -1;
    } else if (torcx_remember_early(j, path, digest, true) < 0) {
        return -1;
    }
    j->out->hardlinks++;
    return 0;
}

static int do_special(struct job *j, struct archive_entry *e, char *path, mode_t type) {
    if (!(j->in->flags & TORCX_JOB_ALLOW_DEVICES))
        return torcx_job_fail(j, TORCX_E_DEVICE, 0, "%s refused (devices are not allowed)",
                              type == S_IFIFO    ? "FIFO"
                              : type == S_IFSOCK ? "socket"
                                                 : "device node");
    if (type == S_IFSOCK)
        return torcx_job_fail(j, TORCX_E_DEVICE, 0, "socket refused");
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
        return torcx_job_fail(j, TORCX_E_OS, errno, "cannot set mode");
    if (set_times_at(j, e, pfd, leaf) < 0)
        return -1;
    j->out->others++;
    return 0;
}

/* A folder, symlink or node replaces whatever file was at path, in both
 * modes alike: a later hard link may not point at it, and a listed file
 * that no longer is one in the image is missing, not verified. */
static void forget_file(struct job *j, const char *path) {
    torcx_map_del(&j->files, path);
    struct map_slot *s = torcx_map_find(&j->listed, path);
    if (s)
        s->seen = false;
}

/* Verify-only jobs write nothing, so the filesystem cannot refuse a path
 * through an earlier symlink or file for them, nor count the folders
 * made for missing parents: a tree of nodes does both. */
#define NODE_NONDIR 1u   /* not a folder: nothing may go below it */
#define NODE_PARENT 2u   /* a folder with entries below: not replaceable */

/* The node of `name` below node `parent`; created (flags 0) when `create`
 * and missing, with *created set. NULL when missing or on ENOMEM. */
static struct map_slot *tree_node(struct job *j, uint64_t parent, const char *name, size_t len,
                                  bool create, bool *created) {
    char key[NAME_MAX + 24];
    snprintf(key, sizeof(key), "%llx/%.*s", (unsigned long long)parent, (int)len, name);
    struct map_slot *s = torcx_map_find(&j->nodes, key);
    *created = false;
    if (s || !create)
        return s;
    s = torcx_map_put(&j->nodes, key, (XXH128_hash_t){.low64 = ++j->nnodes});
    *created = s != NULL;
    return s;
}

static int track_tree(struct job *j, const char *path, mode_t type, bool hardlink) {
    uint64_t parent = 0; /* the image root */
    for (const char *c = path;;) {
        const char *end = strchrnul(c, '/');
        bool leaf = !*end, created;
        struct map_slot *s = tree_node(j, parent, c, (size_t)(end - c), true, &created);
        if (!s)
            return torcx_job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
        if (!leaf) {
            if (s->digest.high64 & NODE_NONDIR)
                return torcx_job_fail(j, TORCX_E_UNSAFE, 0, "path goes through a symlink or file");
            if (created && torcx_count_implicit(j) < 0)
                return -1;
            s->digest.high64 |= NODE_PARENT;
            parent = s->digest.low64;
            c = end + 1;
            continue;
        }
        if (type == AE_IFDIR && !hardlink) {
            s->digest.high64 &= ~(uint64_t)NODE_NONDIR;
            return 0;
        }
        if (s->digest.high64 & NODE_PARENT) /* as rmdir would refuse when extracting */
            return torcx_job_fail(j, TORCX_E_OS, ENOTEMPTY, "cannot replace folder");
        s->digest.high64 |= NODE_NONDIR;
        return 0;
    }
}

int torcx_do_entry(struct job *j, struct archive_entry *e) {
    j->entry = NULL;
    const char *raw = archive_entry_pathname(e);
    if (!raw)
        raw = archive_entry_pathname_utf8(e);
    if (!raw)
        return torcx_job_fail(j, TORCX_E_FORMAT, 0, "entry without a path");
    j->entry = raw;
    if (strlen(raw) > j->max_path)
        return torcx_job_fail(j, TORCX_E_LIMIT, 0, "path longer than %u bytes", j->max_path);
    if (++j->out->entries + j->implicit > j->max_entries)
        return torcx_job_fail(j, TORCX_E_LIMIT, 0,
                              "more than %llu entries (folders made for missing parents included)",
                              (unsigned long long)j->max_entries);
    char path[4096];
    if (torcx_normalize(j, raw, path, sizeof(path)) < 0)
        return -1;
    /* uid_t is 32 bits and (uid_t)-1 means "unchanged" to chown: an id
     * outside [0, 2^32-2] would be silently truncated into another one. */
    if (archive_entry_uid(e) < 0 || archive_entry_uid(e) > UINT32_MAX - 1 ||
        archive_entry_gid(e) < 0 || archive_entry_gid(e) > UINT32_MAX - 1)
        return torcx_job_fail(j, TORCX_E_FORMAT, 0, "uid or gid out of range");
    mode_t type = archive_entry_filetype(e);
    if (!*path && (type != AE_IFDIR || archive_entry_hardlink(e)))
        return torcx_job_fail(j, TORCX_E_UNSAFE, 0, "entry replaces the image root");
    if (strcmp(path, DIGESTS_PATH) == 0 && (type != AE_IFREG || archive_entry_hardlink(e)))
        return torcx_job_fail(j, TORCX_E_DIGEST_LIST, 0, DIGESTS_PATH " must be a regular file");
    if (!j->write && *path && track_tree(j, path, type, archive_entry_hardlink(e) != NULL) < 0)
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
        return torcx_job_fail(j, TORCX_E_FORMAT, 0, "unknown entry type 0%o", (unsigned)type);
    }
}

/* ---- folders: modes last, deepest first ---- */

/* Depths were counted once when the folder was recorded: counting here made
 * the sort cost the length of every path on every comparison. */
static int cmp_depth_desc(const void *a, const void *b) {
    size_t da = ((const struct dir_fixup *)a)->depth;
    size_t db = ((const struct dir_fixup *)b)->depth;
    return da < db ? 1 : da > db ? -1 : 0;
}

static int fix_dir(struct job *j, int dfd, const struct dir_fixup *f) {
    if (j->ownership && j->is_root && fchown(dfd, f->uid, f->gid) < 0)
        return torcx_job_fail(j, TORCX_E_OS, errno, "cannot set owner of folder %s", f->path);
    if (fchmod(dfd, mode_bits(j, f->mode)) < 0)
        return torcx_job_fail(j, TORCX_E_OS, errno, "cannot set mode of folder %s", f->path);
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, f->mtime};
    if (futimens(dfd, ts) < 0)
        return torcx_job_fail(j, TORCX_E_OS, errno, "cannot set times of folder %s", f->path);
    return 0;
}

int torcx_apply_fixups(struct job *j) {
    j->entry = NULL;
    torcx_cache_drop(j);
    if (j->nfixups) /* qsort(NULL, 0, ...) is undefined */
        qsort(j->fixups, j->nfixups, sizeof(*j->fixups), cmp_depth_desc);
    for (size_t i = 0; i < j->nfixups; i++) {
        const struct dir_fixup *f = &j->fixups[i];
        int dfd = torcx_open_fixup_dir(j, f->path);
        if (dfd < 0) {
            if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
                continue; /* replaced by a later non-folder entry */
            return torcx_job_fail(j, TORCX_E_OS, errno, "cannot open folder %s", f->path);
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
