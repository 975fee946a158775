/* SPDX-License-Identifier: Apache-2.0 */
/* The staging folder next to a job's destination (staging.c); not exported. */
#ifndef TORCX_STAGING_H
#define TORCX_STAGING_H

#include "job.h"

HIDDEN int torcx_make_staging(struct job *j);
/* Removes the staging folder with everything in it, best effort. */
HIDDEN void torcx_remove_staging(struct job *j);

#endif
