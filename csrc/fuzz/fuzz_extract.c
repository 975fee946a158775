/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target and corpus runner for the engine, outside Python.
 *
 * libFuzzer:  clang -g -O1 -fsanitize=fuzzer,address,undefined -DTORCX_LIBFUZZER \
 *               -D_GNU_SOURCE -DTORCX_VERSION='"fuzz"' -Icsrc csrc/fuzz/fuzz_extract.c \
 *               $(find csrc -maxdepth 1 -name '*.c') \
 *               -larchive -lxxhash -lisal -lpthread -o fuzz_extract
 * Corpus run: the same with gcc and -fsanitize=address,undefined, without
 *             -DTORCX_LIBFUZZER; then `fuzz_extract FILE...` runs each file.
 *
 * Every input is extracted twice: verify-only, and for real into a fresh
 * folder (removed afterwards), on two threads so decode-ahead runs too; and
 * sized as a gzip (torcx_gzip_size) as the apply's plan does.
 *
 * Run it as tests/engine/test_engine_fuzz.py does: chrooted into a tmpfs of
 * its own in a private mount namespace (tests/engine/sandboxrun.py). An
 * input may hold symlinks to anywhere; the harness never follows one, and
 * the sandbox keeps a mistake from reaching the machine.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "torcx_engine.h"

/* Removes dirfd/name with everything below it. fd-relative and never
 * following a symlink: an archive's symlink may point anywhere (a link to
 * "/" once made a path-based chmod change the mode of "/"). Only folders
 * are made writable, and only after lstat-like fstatat said so; nothing
 * else writes below base while this runs. */
static void remove_at(int dirfd, const char *name) {
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        (void)unlinkat(dirfd, name, 0);
        return;
    }
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) { /* a folder left 0000 (not as root) */
        int pfd = openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
        if (pfd >= 0 && chmod(proc, 0700) == 0) /* the folder pfd holds, not a link */
            fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (pfd >= 0)
            close(pfd);
    }
    if (fd < 0)
        return;
    (void)fchmod(fd, 0700);
    DIR *d = fdopendir(dup(fd));
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = realloc(names, cap * sizeof(*names));
            if (!names)
                abort();
        }
        if (!(names[n++] = strdup(de->d_name)))
            abort();
    }
    if (d)
        closedir(d);
    for (size_t i = 0; i < n; i++) {
        remove_at(fd, names[i]);
        free(names[i]);
    }
    free(names);
    close(fd);
    (void)unlinkat(dirfd, name, AT_REMOVEDIR);
}

static void run_one(const char *archive) {
    const char *tmp = getenv("TMPDIR");
    char base[512];
    snprintf(base, sizeof(base), "%s/torcx-fuzz.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base))
        abort();
    char dest[sizeof(base) + 8];
    snprintf(dest, sizeof(dest), "%s/out", base);
    struct torcx_job jobs[2] = {
        /* Small bounds keep each run short, so the fuzzer makes many. */
        {.archive = archive, .flags = TORCX_JOB_NO_WRITE | TORCX_JOB_SHA256,
         .max_bytes = 8u << 20, .max_decoded = 24u << 20, .max_entries = 2000},
        {.archive = archive, .dest = dest, .max_bytes = 8u << 20, .max_decoded = 24u << 20,
         .max_entries = 2000},
    };
    struct torcx_result results[2];
    if (torcx_extract_batch(jobs, results, 2, 2) < 0)
        abort();
    for (int i = 0; i < 2; i++)
        if (results[i].code < 0 || results[i].code > TORCX_E_EXISTS)
            abort(); /* an undefined result code */
    uint64_t total, members; /* the apply's sizing reads the same bytes */
    (void)torcx_gzip_size(archive, &total, &members);
    remove_at(AT_FDCWD, base);
}

/* Removal holds one fd per folder level: an archive may nest 2000. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

#ifdef TORCX_LIBFUZZER
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    raise_fd_limit();
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    /* A file in TMPDIR rather than a memfd: the runner's chroot has no /proc. */
    const char *tmp = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/input", tmp && *tmp ? tmp : "/tmp");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size || close(fd) < 0)
        abort();
    run_one(path);
    return 0;
}
#else
int main(int argc, char **argv) {
    raise_fd_limit();
    for (int i = 1; i < argc; i++)
        run_one(argv[i]);
    return 0;
}
#endif
