/* SPDX-License-Identifier: Apache-2.0 */
/* The .torcx/digests list and the archive digest pins (digests.c); not
 * exported. */
#ifndef TORCX_DIGESTS_H
#define TORCX_DIGESTS_H

#include <stddef.h>
#include <xxhash.h>

#include "job.h"

#define DIGESTS_PATH ".torcx/digests"
#define DIGESTS_MAX (64u << 20)

/* Checks a file's content digest against the list and marks it seen. */
HIDDEN int torcx_check_listed(struct job *j, const char *path, XXH128_hash_t actual);
/* Before the list: remembers a body (or link) to check when it arrives. */
HIDDEN int torcx_remember_early(struct job *j, const char *path, XXH128_hash_t digest, bool link);
HIDDEN void torcx_free_early(struct job *j);
/* Loads the list (text is modified) and checks the files extracted before it. */
HIDDEN int torcx_load_digest_list(struct job *j, char *text, size_t len);
/* After the archive is read: its digests, the pins, and listed files missing. */
HIDDEN int torcx_finish_checks(struct job *j);

#endif
