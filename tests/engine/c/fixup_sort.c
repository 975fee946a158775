/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The folder-fixup sort must not read the paths: counting each path's depth
 * in every comparison made 100k folders with 4 KB paths cost 100x more than
 * short ones. The paths are moved onto a page that cannot be read before the
 * sort; reading one kills the program. Built with every csrc/ unit but
 * entries.c, which this file includes to reach its static functions.
 */
#include "../../../csrc/entries.c"

#include <assert.h>
#include <sys/mman.h>

int main(void) {
    struct torcx_result out = {0};
    struct job j = {.out = &out, .staging_fd = -1, .cache_fd = -1};
    struct archive_entry *e = archive_entry_new();
    char path[64];
    enum { N = 1000 };
    for (int i = 0; i < N; i++) {
        bool deep = i % 3;
        snprintf(path, sizeof(path), "%s/%d", deep ? "a/b" : "c", i);
        archive_entry_set_perm(e, deep ? 3 : 2); /* the depth, to check the order */
        assert(add_fixup(&j, path, e) == 0);
    }
    assert(j.nfixups == N);
    char *guard = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert(guard != MAP_FAILED);
    for (size_t i = 0; i < j.nfixups; i++)
        j.fixups[i].path = guard; /* any read of a path now faults */
    qsort(j.fixups, j.nfixups, sizeof(*j.fixups), cmp_depth_desc);
    for (size_t i = 1; i < j.nfixups; i++)
        assert(j.fixups[i - 1].mode >= j.fixups[i].mode);
    archive_entry_free(e);
    torcx_map_free(&j.fixup_at);
    free(j.fixups);
    puts("ok");
    return 0;
}
