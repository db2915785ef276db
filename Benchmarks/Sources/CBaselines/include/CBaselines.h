// Plain C baselines measured in the same run as the Swift code under test.
#ifndef CBASELINES_H
#define CBASELINES_H
#include <stddef.h>
#include <stdint.h>

#include "CVirtQueueBaseline.h"

/// getrandom(2) until `len` bytes are written (EINTR and short reads retried). Returns 0 or -errno.
int cb_getrandom(void *buf, size_t len);

/// memcpy, out of line so the compiler cannot elide it.
void cb_memcpy(void *dst, const void *src, size_t len);

#endif
