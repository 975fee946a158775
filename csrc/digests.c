/* SPDX-License-Identifier: Apache-2.0 */
/* Digests: the archive's .torcx/digests list (parsed, and checked against
 * every regular file as it is extracted), and the archive digest pins checked
 * once the archive is read. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digests.h"
#include "safepath.h"

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

int torcx_check_listed(struct job *j, const char *path, XXH128_hash_t actual) {
    struct map_slot *s = torcx_map_find(&j->listed, path);
    if (!s)
        return torcx_job_fail(j, TORCX_E_UNLISTED, 0, "file %s is not listed in " DIGESTS_PATH,
                              path);
    if (!digest_equal(s->digest, actual)) {
        char want[33], got[33];
        digest_hex(s->digest, want);
        digest_hex(actual, got);
        return torcx_job_fail(j, TORCX_E_DIGEST, 0, "digest mismatch for %s: expected %s, got %s",
                              path, want, got);
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
int torcx_load_digest_list(struct job *j, char *text, size_t len) {
    if (j->have_list)
        return torcx_job_fail(j, TORCX_E_DIGEST_LIST, 0, DIGESTS_PATH " appears twice");
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
                return torcx_job_fail(j, TORCX_E_DIGEST_LIST, 0,
                                      DIGESTS_PATH " line %zu is malformed", lineno);
            const char *path = line + 34;
            if (path[0] == '.' && path[1] == '/')
                path += 2;
            if (path[0] == '/' || torcx_normalize(j, path, norm, sizeof(norm)) < 0 || !*norm) {
                j->out->code = TORCX_OK; /* replace normalize's message with ours */
                return torcx_job_fail(j, TORCX_E_DIGEST_LIST, 0,
                                      DIGESTS_PATH " line %zu has an invalid path", lineno);
            }
            if (!torcx_map_put(&j->listed, norm, d))
                return torcx_job_fail(j, TORCX_E_OS, ENOMEM, "cannot load " DIGESTS_PATH);
        }
        line = end + 1;
    }
    j->have_list = true;
    /* Every body made before the list is checked by the name it was made
     * under, as if the list had come first: a name replaced since may leave
     * that body reachable through a hard link, so checking only the names
     * as they are now would let it land unchecked. Links need no line; a
     * listed one must match. */
    for (size_t i = 0; i < j->nearly; i++) {
        const struct early_file *f = &j->early[i];
        if (f->link && !torcx_map_find(&j->listed, f->path))
            continue;
        if (torcx_check_listed(j, f->path, f->digest) < 0)
            return -1;
    }
    /* "Seen" says what the tree holds now, as it would with the list first. */
    for (size_t i = 0; i < j->listed.cap; i++)
        j->listed.slots[i].seen = false;
    for (size_t i = 0; i < j->files.cap; i++) {
        struct map_slot *s = &j->files.slots[i];
        struct map_slot *l = s->state == SLOT_LIVE ? torcx_map_find(&j->listed, s->key) : NULL;
        if (l)
            l->seen = true;
    }
    torcx_free_early(j);
    return 0;
}

int torcx_remember_early(struct job *j, const char *path, XXH128_hash_t digest, bool link) {
    if (j->nearly == j->capearly) {
        size_t ncap = j->capearly ? j->capearly * 2 : 64;
        struct early_file *n = realloc(j->early, ncap * sizeof(*n));
        if (!n)
            return torcx_job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
        j->early = n;
        j->capearly = ncap;
    }
    char *copy = strdup(path);
    if (!copy)
        return torcx_job_fail(j, TORCX_E_OS, ENOMEM, "out of memory");
    j->early[j->nearly++] = (struct early_file){.path = copy, .digest = digest, .link = link};
    return 0;
}

void torcx_free_early(struct job *j) {
    for (size_t i = 0; i < j->nearly; i++)
        free(j->early[i].path);
    free(j->early);
    j->early = NULL;
    j->nearly = j->capearly = 0;
}

static bool pin_matches(const char *pin, const char *actual) {
    return strcasecmp(pin, actual) == 0;
}

int torcx_finish_checks(struct job *j) {
    j->entry = NULL;
    XXH128_hash_t ad = XXH3_128bits_digest(j->src.xxh);
    digest_hex(ad, j->out->archive_xxh3);
    if (j->src.want_sha256)
        torcx_md_final_hex(&j->src.sha256, j->out->archive_sha256, sizeof(j->out->archive_sha256));
    if (j->src.want_sha512)
        torcx_md_final_hex(&j->src.sha512, j->out->archive_sha512, sizeof(j->out->archive_sha512));
    j->out->archive_bytes = j->src.bytes;
    j->out->decoded_bytes = j->src.decoded;
    if (j->in->pin_xxh3 && !pin_matches(j->in->pin_xxh3, j->out->archive_xxh3))
        return torcx_job_fail(j, TORCX_E_ARCHIVE_DIGEST, 0,
                              "archive digest mismatch: expected xxh3-128 %s, got %s",
                              j->in->pin_xxh3, j->out->archive_xxh3);
    if (j->in->pin_sha256 && !pin_matches(j->in->pin_sha256, j->out->archive_sha256))
        return torcx_job_fail(j, TORCX_E_ARCHIVE_DIGEST, 0,
                              "archive digest mismatch: expected sha256 %s, got %s",
                              j->in->pin_sha256, j->out->archive_sha256);
    if (j->in->pin_sha512 && !pin_matches(j->in->pin_sha512, j->out->archive_sha512))
        return torcx_job_fail(j, TORCX_E_ARCHIVE_DIGEST, 0,
                              "archive digest mismatch: expected sha512 %s, got %s",
                              j->in->pin_sha512, j->out->archive_sha512);
    if (!j->have_list) {
        if (j->in->flags & TORCX_JOB_REQUIRE_DIGESTS)
            return torcx_job_fail(j, TORCX_E_DIGEST_LIST, 0, "archive has no " DIGESTS_PATH);
        return 0;
    }
    for (size_t i = 0; i < j->listed.cap; i++) {
        struct map_slot *s = &j->listed.slots[i];
        if (s->state == SLOT_LIVE && !s->seen)
            return torcx_job_fail(j, TORCX_E_MISSING, 0,
                                  "file %s is listed in " DIGESTS_PATH " but not in the archive",
                                  s->key);
    }
    j->out->verified = 1;
    return 0;
}
