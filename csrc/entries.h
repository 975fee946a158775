/* SPDX-License-Identifier: Apache-2.0 */
/* Creating entries and fixing up folders (entries.c); not exported. */
#ifndef TORCX_ENTRIES_H
#define TORCX_ENTRIES_H

#include "job.h"

struct archive_entry;

/* Checks and creates (or, verify-only, tracks) one archive entry. */
HIDDEN int torcx_do_entry(struct job *j, struct archive_entry *e);
/* Folders' modes, owners and times, deepest first, the root last. */
HIDDEN int torcx_apply_fixups(struct job *j);

#endif
