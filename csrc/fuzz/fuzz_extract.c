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
 * folder (removed afterwards), on two threads so decode-ahead runs too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "torcx_engine.h"

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    (void)chmod(path, 0700);
    return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

static void run_one(const char *archive) {
    char base[] = "/tmp/torcx-fuzz.XXXXXX";
    if (!mkdtemp(base))
        abort();
    char dest[sizeof(base) + 8];
    snprintf(dest, sizeof(dest), "%s/out", base);
    struct torcx_job jobs[2] = {
        {.archive = archive, .flags = TORCX_JOB_NO_WRITE | TORCX_JOB_SHA256,
         .max_bytes = 64u << 20},
        {.archive = archive, .dest = dest, .max_bytes = 64u << 20},
    };
    struct torcx_result results[2];
    if (torcx_extract_batch(jobs, results, 2, 2) < 0)
        abort();
    for (int i = 0; i < 2; i++)
        if (results[i].code < 0 || results[i].code > TORCX_E_EXISTS)
            abort(); /* an undefined result code */
    (void)nftw(base, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#ifdef TORCX_LIBFUZZER
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    int fd = memfd_create("torcx-fuzz", MFD_CLOEXEC);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    run_one(path);
    close(fd);
    return 0;
}
#else
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        run_one(argv[i]);
    return 0;
}
#endif
