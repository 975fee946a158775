/* SPDX-License-Identifier: Apache-2.0 */
/*
 * torcx engine: parallel, streaming, verified extraction of tar archives and
 * the mount helpers of the boot-time apply.
 *
 * The part between the cffi markers is fed verbatim to ffibuilder.cdef(), so
 * it must stay plain declarations: no includes, no conditionals, no macros
 * other than integer constants.
 */
#ifndef TORCX_ENGINE_H
#define TORCX_ENGINE_H

#include <stddef.h>
#include <stdint.h>

/* cffi:begin */
#define TORCX_ENGINE_ABI 1

/* job flags */
#define TORCX_JOB_OWNERSHIP 1     /* apply uid/gid (root only) and special mode bits */
#define TORCX_JOB_ALLOW_DEVICES 2 /* create FIFOs and device nodes instead of refusing */
#define TORCX_JOB_SHA256 4        /* also compute SHA-256 of the archive bytes */
#define TORCX_JOB_NO_WRITE 8      /* read and verify only; dest is ignored */
#define TORCX_JOB_REQUIRE_DIGESTS 16 /* fail when the archive has no .torcx/digests */
#define TORCX_JOB_SHA512 32       /* also compute SHA-512 of the archive bytes */

/* result codes (torcx_result.code) */
#define TORCX_OK 0
#define TORCX_E_OS 1            /* a system call failed; see err_no */
#define TORCX_E_FORMAT 2        /* corrupt, truncated or unsupported archive */
#define TORCX_E_UNSAFE 3        /* entry would land outside the destination */
#define TORCX_E_LINK 4          /* hard link to something not extracted by this job */
#define TORCX_E_LIMIT 5         /* a hard limit was exceeded */
#define TORCX_E_DEVICE 6        /* device node or FIFO refused */
#define TORCX_E_DIGEST 7        /* a file's content does not match .torcx/digests */
#define TORCX_E_UNLISTED 8      /* a regular file missing from .torcx/digests */
#define TORCX_E_MISSING 9       /* a file listed in .torcx/digests is not in the archive */
#define TORCX_E_ARCHIVE_DIGEST 10 /* archive bytes do not match the pinned digest */
#define TORCX_E_DIGEST_LIST 11  /* .torcx/digests is malformed or missing when required */
#define TORCX_E_EXISTS 12       /* destination already exists */

struct torcx_job {
    const char *archive;       /* path of the archive file */
    const char *dest;          /* folder to create; must not exist */
    const char *pin_xxh3;      /* 32 hex digits or NULL */
    const char *pin_sha256;    /* 64 hex digits or NULL */
    uint64_t max_entries;      /* inodes: entries plus folders made for missing parents;
                                  0: default */
    uint64_t max_bytes;        /* total logical bytes of regular files; 0: default */
    uint64_t max_decoded;      /* bytes of the decoded tar stream, skipped data included;
                                  0: 2 * max_bytes + 64 MiB */
    uint32_t max_path;         /* bytes of one entry path; 0: default */
    uint32_t flags;            /* TORCX_JOB_* */
    const char *pin_sha512;    /* 128 hex digits or NULL (a signed store's digest) */
};

struct torcx_result {
    int code;                  /* TORCX_OK or TORCX_E_* */
    int err_no;                /* errno behind the failure, 0 if none */
    int64_t entry_index;       /* index of the faulty entry, -1 if none */
    char entry_path[4096];     /* path inside the archive of the faulty entry */
    char message[512];
    uint64_t entries;
    uint64_t files;            /* regular files, .torcx/digests not counted */
    uint64_t dirs;
    uint64_t symlinks;
    uint64_t hardlinks;
    uint64_t others;           /* FIFOs and device nodes */
    uint64_t bytes;            /* their logical bytes (.torcx/digests not counted) */
    uint64_t archive_bytes;    /* bytes read from the archive file */
    uint64_t decoded_bytes;    /* bytes of the decoded tar stream */
    char archive_xxh3[33];     /* hex XXH3-128 of the archive bytes */
    char archive_sha256[65];   /* hex SHA-256 when TORCX_JOB_SHA256, else "" */
    char compression[16];      /* "gzip", "zstd", "xz", "none", ... */
    int verified;              /* 1 when every file matched .torcx/digests */
    double seconds;
    char archive_sha512[129];  /* hex SHA-512 when TORCX_JOB_SHA512, else "" */
};

/* One whole file to digest (torcx_digest_files). */
#define TORCX_FILE_SHA512 1
#define TORCX_FILE_XXH3 2
#define TORCX_FILE_SHA256 4
struct torcx_file_digest {
    const char *path;
    unsigned algos;            /* TORCX_FILE_*; 0 means SHA-512 */
    int err_no;                /* 0, or the errno that stopped reading it */
    uint64_t bytes;            /* bytes read */
    char sha512[129];          /* hex SHA-512 of the whole file, if asked */
    char xxh3[33];             /* hex XXH3-128 of the whole file, if asked */
    char sha256[65];           /* hex SHA-256 of the whole file, if asked */
};

/* Version of the compiled engine, checked against the Python package's. */
const char *torcx_version(void);

/* Run n jobs on up to `threads` threads (0: one per online core). Fills
 * results[i] for jobs[i]; a failed job never stops the others. Returns the
 * number of failed jobs, or -errno if the batch itself could not run. */
int torcx_extract_batch(const struct torcx_job *jobs, struct torcx_result *results,
                        size_t n, unsigned threads);

/* SHA-512, SHA-256 and/or XXH3-128 of n whole files on up to `threads` threads (0: one
 * per online core), one sequential read each; a mountable image is checked this way
 * before it is mounted. Returns the number of files that could not be read
 * (see err_no), or -errno. */
int torcx_digest_files(struct torcx_file_digest *files, size_t n, unsigned threads);

/* Decoded size of a gzip file: the ISIZEs of all its members, each lifted
 * past 4 GiB where it wrapped, without inflating it. 0 or -errno (-EINVAL:
 * not gzip). */
int torcx_gzip_size(const char *path, uint64_t *total, uint64_t *members);

/* Mount helpers of the apply. Each returns 0 or -errno. */
/* nr_inodes 0: the kernel's default (half of RAM's pages). */
int torcx_mount_tmpfs(const char *target, uint64_t size_bytes, unsigned mode, uint64_t nr_inodes);
int torcx_remount_ro(const char *target);
int torcx_loop_mount(const char *image, const char *target, const char *fstype);
int torcx_umount(const char *target);
/* cffi:end */

#endif
