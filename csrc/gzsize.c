/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The decoded size of a gzip file of one or more members (`cat a.gz b.gz`),
 * without inflating the first member. Each member ends with ISIZE, its decoded length mod
 * 2^32; the file's last 4 bytes give only the last member's. Member starts
 * are found by scanning the mapped file for the gzip magic (memchr over the
 * page cache, which the unpack reads next anyway) and confirmed by inflating up to 64 KiB from there: in
 * compressed data a stray magic followed by a valid header and 64 KiB of
 * valid deflate does not occur. A real member always passes, so the sum never
 * falls short; an ISIZE that wrapped is lifted as for a single member.
 * Each candidate is then inflated whole: only one that ends at the end of the
 * file or at the next member is one (a .gz stored verbatim inside the stream
 * is not), which costs decoding the members after the first, none for the
 * usual single member.
 */
#include <errno.h>
#include <fcntl.h>
#include <isa-l/igzip_lib.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "torcx_engine.h"

#define SCAN_BLOCK (1u << 20)
#define PROBE_IN (64u << 10)
#define HEADER_MAX (8u << 10) /* name, comment and extra fields past this: not a member we take */
/* Bounds on what a hostile file can make the plan do: probes, and bytes
 * inflated whole (deflate expands 1032x at most, so a real chain of members
 * stays below 1032 times the file). Past them: -E2BIG, sized the old way. */
#define MAX_PROBES 4096u
#define MAX_RATIO 1032u

static ssize_t read_at(int fd, void *buf, size_t n, off_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, off + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Length of the gzip member header at p (n bytes), or 0 if it is none. */
static size_t header_length(const uint8_t *p, size_t n) {
    if (n < 10 || p[0] != 0x1f || p[1] != 0x8b || p[2] != 8 || (p[3] & 0xe0))
        return 0;
    size_t pos = 10;
    if (p[3] & 4) { /* FEXTRA */
        if (pos + 2 > n)
            return 0;
        pos += 2 + (size_t)(p[pos] | p[pos + 1] << 8);
    }
    for (unsigned bit = 8; bit <= 16; bit <<= 1) { /* FNAME, FCOMMENT: zero-terminated */
        if (!(p[3] & bit))
            continue;
        const uint8_t *z = pos < n ? memchr(p + pos, 0, n - pos) : NULL;
        if (!z)
            return 0;
        pos = (size_t)(z - p) + 1;
    }
    if (p[3] & 2) /* FHCRC */
        pos += 2;
    return pos < n ? pos : 0;
}

/* Whether a gzip member starts at off: a header, then deflate data that
 * inflates without error for 64 KiB of input or to the member's end. */
static bool member_at(int fd, off_t off, off_t size, uint8_t *buf, uint8_t *out,
                      size_t *hlen) {
    ssize_t got = read_at(fd, buf, HEADER_MAX + PROBE_IN, off);
    if (got <= 0 || !(*hlen = header_length(buf, (size_t)got)))
        return false;
    struct inflate_state st;
    isal_inflate_init(&st);
    st.crc_flag = ISAL_DEFLATE; /* raw: the header was read above */
    st.next_in = buf + *hlen;
    st.avail_in = (uint32_t)((size_t)got - *hlen);
    for (;;) {
        st.next_out = out;
        st.avail_out = SCAN_BLOCK;
        if (isal_inflate(&st) < 0)
            return false;
        if (st.block_state == ISAL_BLOCK_FINISH)
            return true;
        if (st.avail_in == 0) /* all taken: valid so far, unless the file ended here */
            return off + got < size;
    }
}

/* Inflates the member at off to its end, checking its CRC and ISIZE: its
 * decoded size and where it ends, or false. */
static bool whole_member(int fd, off_t off, uint8_t *buf, uint8_t *out, uint64_t *decoded,
                         off_t *end, uint64_t *spent, uint64_t limit) {
    struct inflate_state st;
    isal_inflate_init(&st);
    st.crc_flag = ISAL_GZIP;
    off_t pos = off;
    *decoded = 0;
    for (;;) {
        if (st.avail_in == 0) {
            ssize_t got = read_at(fd, buf, PROBE_IN, pos);
            if (got <= 0)
                return false; /* the file ended inside the member */
            pos += got;
            st.next_in = buf;
            st.avail_in = (uint32_t)got;
        }
        st.next_out = out;
        st.avail_out = SCAN_BLOCK;
        if (isal_inflate(&st) < 0)
            return false;
        *decoded += SCAN_BLOCK - st.avail_out;
        *spent += SCAN_BLOCK - st.avail_out;
        if (*spent > limit)
            return false;
        if (st.block_state == ISAL_BLOCK_FINISH) {
            *end = pos - (off_t)st.avail_in;
            return true;
        }
    }
}

static uint64_t lifted(uint32_t isize, uint64_t member_len, size_t hlen) {
    uint64_t v = isize;
    if (member_len > hlen + 8) {
        /* Deflate at worst stores data in blocks with 5 bytes of overhead
         * (zlib's are 16 KiB, not 64): no sane member decodes to less than
         * half its deflate bytes, so only an ISIZE below that has wrapped. */
        uint64_t floor = (member_len - hlen - 8) / 2;
        while (v < floor)
            v += 1ull << 32;
    }
    return v;
}

int torcx_gzip_size(const char *path, uint64_t *total, uint64_t *members) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    uint8_t *probe = malloc(HEADER_MAX + PROBE_IN), *out = malloc(SCAN_BLOCK);
    off_t *cand = NULL;
    size_t ncand = 0, capcand = 0;
    struct stat st;
    int r = 0;
    if (!probe || !out) {
        r = -ENOMEM;
        goto done;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 18) {
        r = fstat(fd, &st) < 0 ? -errno : -EINVAL;
        goto done;
    }
    off_t size = st.st_size;
    ssize_t got = read_at(fd, probe, HEADER_MAX, 0);
    size_t hlen = got > 0 ? header_length(probe, (size_t)got) : 0, chlen;
    if (!hlen) {
        r = -EINVAL; /* not gzip */
        goto done;
    }
    /* Mapped, not read: memchr runs over the page cache without a copy. */
    const uint8_t *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED) {
        r = -errno;
        goto done;
    }
    (void)madvise((void *)map, (size_t)size, MADV_SEQUENTIAL);
    const uint8_t *end = map + size - 2; /* the magic's 3 bytes must fit */
    unsigned probes = 0;
    for (const uint8_t *p = map + 18; p < end && (p = memchr(p, 0x1f, (size_t)(end - p))); p++) {
        off_t c = p - map;
        if (p[1] != 0x8b || p[2] != 8 || c + 18 > size)
            continue;
        if (++probes > MAX_PROBES) {
            munmap((void *)map, (size_t)size);
            r = -E2BIG;
            goto done;
        }
        if (!member_at(fd, c, size, probe, out, &chlen))
            continue;
        if (ncand == capcand) {
            size_t ncap = capcand ? capcand * 2 : 16;
            off_t *n = realloc(cand, ncap * sizeof(*n));
            if (!n) {
                munmap((void *)map, (size_t)size);
                r = -ENOMEM;
                goto done;
            }
            cand = n;
            capcand = ncap;
        }
        cand[ncand++] = c;
    }
    /* A candidate is a member only if, inflated whole, it ends at the end of
     * the file or where a later member starts: a .gz file stored verbatim in
     * a stored deflate block passes the probe but ends mid-stream. Later
     * candidates first; members after the first are thus sized exactly. */
    off_t first_end = size; /* where the first member ends */
    uint64_t rest = 0, n = 1, spent = 0, limit = (uint64_t)size * MAX_RATIO + (64u << 20);
    for (size_t i = ncand; i-- > 0;) {
        uint64_t decoded;
        off_t mend;
        bool whole = whole_member(fd, cand[i], probe, out, &decoded, &mend, &spent, limit);
        if (spent > limit) {
            munmap((void *)map, (size_t)size);
            r = -E2BIG;
            goto done;
        }
        if (!whole || mend != first_end)
            continue;
        rest += decoded;
        n++;
        first_end = cand[i];
    }
    uint32_t isize = (uint32_t)(map[first_end - 4] | map[first_end - 3] << 8 |
                                map[first_end - 2] << 16) | (uint32_t)map[first_end - 1] << 24;
    munmap((void *)map, (size_t)size);
    *total = lifted(isize, (uint64_t)first_end, hlen) + rest;
    *members = n;
done:
    free(cand);
    free(probe);
    free(out);
    close(fd);
    return r;
}
