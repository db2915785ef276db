#include "CBaselines.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

int cb_getrandom(void *buf, size_t len) {
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

__attribute__((noinline)) void cb_memcpy(void *dst, const void *src, size_t len) { memcpy(dst, src, len); }
