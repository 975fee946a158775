/* SPDX-License-Identifier: Apache-2.0 */
/* The staging folder a job extracts into, next to its destination, and its
 * best-effort removal when the job fails. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "staging.h"

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

int torcx_make_staging(struct job *j) {
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
        return torcx_job_fail(j, TORCX_E_EXISTS, EEXIST, "destination %s", dest);
    if (!(j->staging = malloc(n + 32)))
        return torcx_job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
    snprintf(j->staging, n + 32, "%.*s.%.*s.staging-XXXXXX", (int)plen, dest, (int)(n - plen),
             base);
    if (!mkdtemp(j->staging)) {
        int e = errno;
        free(j->staging);
        j->staging = NULL;
        return torcx_job_fail(j, TORCX_E_OS, e, "cannot create staging folder next to %s", dest);
    }
    j->staging_fd = open(j->staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (j->staging_fd < 0)
        return torcx_job_fail(j, TORCX_E_OS, errno, "cannot open staging folder %s", j->staging);
    return 0;
}

void torcx_remove_staging(struct job *j) {
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
