/* SPDX-License-Identifier: Apache-2.0 */
/* Paths below a job's staging folder: normalizing archive paths, and opening
 * folders without ever following a symlink, with openat2 RESOLVE_BENEATH or,
 * where openat2 is missing, a walk one O_NOFOLLOW component at a time. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "safepath.h"

/* ---- paths ---- */

/* Normalizes an archive path: strips "./" and empty components; refuses
 * absolute paths and "..". "" is the image root. */
int torcx_normalize(struct job *j, const char *in, char *out, size_t cap) {
    assert(in && out && cap > 1);
    if (in[0] == '/')
        return torcx_job_fail(j, TORCX_E_UNSAFE, 0, "absolute path refused");
    size_t o = 0;
    const char *p = in;
    while (*p) {
        const char *end = strchrnul(p, '/');
        size_t len = (size_t)(end - p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return torcx_job_fail(j, TORCX_E_UNSAFE, 0, "path with '..' refused");
        if (len > NAME_MAX)
            return torcx_job_fail(j, TORCX_E_LIMIT, ENAMETOOLONG,
                                  "path component longer than %d bytes", NAME_MAX);
        if (len > 0 && !(len == 1 && p[0] == '.')) {
            if (o + len + 2 > cap)
                return torcx_job_fail(j, TORCX_E_LIMIT, 0, "path longer than %zu bytes", cap);
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

int torcx_count_implicit(struct job *j) {
    if (j->out->entries + j->implicit >= j->max_entries)
        return torcx_job_fail(j, TORCX_E_LIMIT, 0,
                              "more than %llu entries (folders made for missing parents included)",
                              (unsigned long long)j->max_entries);
    j->implicit++;
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
            if (torcx_count_implicit(j) < 0) {
                close(fd);
                return -EDQUOT; /* the job has failed with the limit */
            }
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
int torcx_open_dir(struct job *j, const char *rel, bool create) {
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

void torcx_cache_drop(struct job *j) {
    if (j->cache_fd >= 0)
        close(j->cache_fd);
    j->cache_fd = -1;
    j->cache_path[0] = '\0';
}

/* Splits a normalized path into its parent's fd (cached) and leaf name. */
int torcx_parent_of(struct job *j, char *path, const char **leaf) {
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
    int fd = torcx_open_dir(j, parent, true);
    if (fd < 0) {
        int e = -fd;
        *slash = '/';
        if (e == ELOOP || e == EXDEV)
            return torcx_job_fail(j, TORCX_E_UNSAFE, 0, "path goes through a symlink"), -1;
        if (e == ENOTDIR)
            return torcx_job_fail(j, TORCX_E_UNSAFE, 0, "path goes through a non-directory"), -1;
        return torcx_job_fail(j, TORCX_E_OS, e, "cannot open parent folder"), -1;
    }
    torcx_cache_drop(j);
    snprintf(j->cache_path, sizeof(j->cache_path), "%s", parent);
    j->cache_fd = fd;
    *slash = '/';
    return fd;
}

/* A folder fd fchmod accepts (not O_PATH), never through a symlink; -1 and
 * errno on failure. The fallback opens the leaf from its walked parent:
 * reopening an O_PATH fd through /proc would need /proc mounted. */
int torcx_open_fixup_dir(struct job *j, const char *rel) {
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
