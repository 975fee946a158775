/* SPDX-License-Identifier: Apache-2.0 */
/* Paths below the staging folder, never through a symlink (safepath.c); not
 * exported. */
#ifndef TORCX_SAFEPATH_H
#define TORCX_SAFEPATH_H

#include <stdbool.h>
#include <stddef.h>

#include "job.h"

/* Normalizes an archive path into out; "" is the image root. */
HIDDEN int torcx_normalize(struct job *j, const char *in, char *out, size_t cap);
/* Counts one folder made for a missing parent against max_entries (every
 * inode a job creates counts); 0, or -1 with the job failed. */
HIDDEN int torcx_count_implicit(struct job *j);
/* O_PATH fd of folder rel below staging, or -errno. */
HIDDEN int torcx_open_dir(struct job *j, const char *rel, bool create);
HIDDEN void torcx_cache_drop(struct job *j);
/* The parent's fd (cached, not to be closed) and the leaf name, or -1. */
HIDDEN int torcx_parent_of(struct job *j, char *path, const char **leaf);
/* A folder fd fchmod accepts, or -1 and errno. */
HIDDEN int torcx_open_fixup_dir(struct job *j, const char *rel);

#endif
