// egd-load: the load generator of scripts/bench-daemon.py, a separate process so that the daemon under
// test (virtrngd, release) has its own threads and the client's work is not counted as the server's.
//
//   egd-load getrandom SIZE SECONDS
//       Baseline: one thread calling getrandom(2) for SIZE bytes (cb_getrandom) for SECONDS.
//   egd-load pipeline PATH CONNECTIONS DEPTH WARMUP SECONDS
//       One thread, epoll, CONNECTIONS non-blocking unix-socket connections, each keeping DEPTH
//       `02 FF` requests in flight (a new one is sent as soon as an answer's 255th byte arrives).
//       Latency of a request: CLOCK_MONOTONIC from the write that carries it to the read that brings
//       its 255th byte. The first WARMUP seconds are not counted.
//   egd-load idle PATH CONNECTIONS
//       Opens CONNECTIONS connections (RLIMIT_NOFILE raised to fit), sends `00` (entropy level) on each
//       and reads the 4-byte answer, so every connection is known to be accepted and served; prints
//       `ready ...` and holds them, sending nothing, until standard input reaches end of file.
//
// Each mode prints one line of key=value pairs on standard output; errors go to standard error with
// exit status 1. Not a library and not a general tool: it exists for the benchmark.
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "CBaselines.h"

#define RESPONSE 255 // bytes answered to one `02 FF`
#define MAX_DEPTH 64

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "egd-load: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int connect_unix(const char *path, int nonblocking) {
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof address.sun_path) {
        fprintf(stderr, "egd-load: socket path too long: %s\n", path);
        exit(1);
    }
    strcpy(address.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    // Blocking connect: it waits while the listener's backlog is full instead of failing.
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) die("connect");
    if (nonblocking && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
    return fd;
}

// MARK: Latency histogram
//
// Log-linear, HdrHistogram style: values below 128 ns have a bucket each; above, each power of two
// [2^m, 2^(m+1)) is split into 64 buckets, so a bucket is at most 1/64 (1.6%) of its value wide.
// Index of v >= 128 with top bit m (m >= 7): shift = m - 6, top = v >> shift in [64, 128),
// index = 128 + (shift - 1) * 64 + (top - 64). 2^40 ns (18 min) needs index < 128 + 34 * 64.

#define BUCKETS (128 + 40 * 64)
static uint64_t histogram[BUCKETS];
static uint64_t recorded;

static int bucket_of(uint64_t v) {
    if (v < 128) return (int)v;
    int m = 63 - __builtin_clzll(v);
    int shift = m - 6;
    int index = 128 + (shift - 1) * 64 + (int)((v >> shift) - 64);
    return index < BUCKETS ? index : BUCKETS - 1;
}

/// The middle of a bucket's range.
static double value_of(int index) {
    if (index < 128) return index;
    int shift = (index - 128) / 64 + 1;
    uint64_t top = (uint64_t)((index - 128) % 64 + 64);
    return (double)(top << shift) + (double)(1ull << shift) / 2;
}

static double percentile(double p) {
    if (recorded == 0) return 0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)recorded);
    if (rank >= recorded) rank = recorded - 1;
    uint64_t seen = 0;
    for (int i = 0; i < BUCKETS; i++) {
        seen += histogram[i];
        if (seen > rank) return value_of(i);
    }
    return value_of(BUCKETS - 1);
}

// MARK: getrandom baseline

static int run_getrandom(size_t size, double seconds) {
    unsigned char *buffer = aligned_alloc(64, (size + 63) / 64 * 64);
    if (!buffer) die("aligned_alloc");
    uint64_t start = now_ns(), deadline = start + (uint64_t)(seconds * 1e9), end = start, calls = 0;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (cb_getrandom(buffer, size) != 0) die("getrandom");
        }
        calls += 64;
        end = now_ns();
        if (end >= deadline) break;
    }
    double elapsed = (double)(end - start) / 1e9;
    printf("mode=getrandom size=%zu calls=%llu seconds=%.3f mbps=%.1f\n", size, (unsigned long long)calls,
           elapsed, (double)calls * (double)size / elapsed / 1e6);
    free(buffer);
    return 0;
}

// MARK: Pipelined load

typedef struct {
    int fd;
    uint64_t sent_at[MAX_DEPTH]; // ring of the in-flight requests' send times, oldest at head
    int head, in_flight;         // requests fully written and not yet answered
    int received;                // bytes of the oldest request's answer received so far
    int to_send;                 // bytes of requests queued but not yet written (2 per request)
    int phase;                   // 0: the next byte to write is 0x02; 1: it is 0xFF
} connection;

static unsigned char pattern[2 * MAX_DEPTH + 1];

/// Writes what is queued; each request whose last byte went out is stamped `now`.
static int flush(connection *c, uint64_t now) {
    while (c->to_send > 0) {
        ssize_t n = write(c->fd, pattern + c->phase, (size_t)c->to_send);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return 0;
            return -1;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (c->phase == 1) { // the 0xFF completes a request
                c->sent_at[(c->head + c->in_flight) % MAX_DEPTH] = now;
                c->in_flight++;
            }
            c->phase ^= 1;
        }
        c->to_send -= (int)n;
    }
    return 0;
}

static int run_pipeline(const char *path, int connections, int depth, double warmup, double seconds) {
    if (depth < 1 || depth > MAX_DEPTH || connections < 1) {
        fprintf(stderr, "egd-load: depth must be in 1...%d and connections at least 1\n", MAX_DEPTH);
        return 1;
    }
    for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = i % 2 == 0 ? 0x02 : 0xFF;
    connection *conns = calloc((size_t)connections, sizeof *conns);
    int epoll = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || epoll < 0) die("setup");
    for (int i = 0; i < connections; i++) {
        conns[i].fd = connect_unix(path, 1);
        struct epoll_event event = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
        if (epoll_ctl(epoll, EPOLL_CTL_ADD, conns[i].fd, &event) < 0) die("epoll_ctl");
    }
    uint64_t start = now_ns();
    uint64_t measure_from = start + (uint64_t)(warmup * 1e9);
    uint64_t measure_to = measure_from + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < connections; i++) {
        conns[i].to_send = 2 * depth;
        if (flush(&conns[i], now_ns()) < 0) die("write");
    }
    static unsigned char buffer[1 << 16];
    struct epoll_event events[256];
    uint64_t bytes = 0, answered = 0, now = start;
    while (now < measure_to) {
        int n = epoll_wait(epoll, events, 256, 10);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int e = 0; e < n; e++) {
            connection *c = &conns[events[e].data.u32];
            ssize_t got = read(c->fd, buffer, sizeof buffer);
            now = now_ns();
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (got <= 0) {
                fprintf(stderr, "egd-load: the daemon closed connection %u (%s)\n", events[e].data.u32,
                        got < 0 ? strerror(errno) : "end of file");
                return 1;
            }
            if ((uint64_t)got > (uint64_t)c->in_flight * RESPONSE - (uint64_t)c->received) {
                fprintf(stderr, "egd-load: more bytes than were asked for on connection %u\n", events[e].data.u32);
                return 1;
            }
            if (now >= measure_from && now < measure_to) bytes += (uint64_t)got;
            c->received += (int)got;
            while (c->received >= RESPONSE) {
                c->received -= RESPONSE;
                uint64_t sent = c->sent_at[c->head];
                c->head = (c->head + 1) % MAX_DEPTH;
                c->in_flight--;
                if (sent >= measure_from && now < measure_to) {
                    histogram[bucket_of(now - sent)]++;
                    recorded++;
                    answered++;
                }
                c->to_send += 2;
            }
            if (flush(c, now) < 0) die("write");
        }
        if (n == 0) now = now_ns();
    }
    double elapsed = (double)(now - measure_from) / 1e9;
    printf("mode=pipeline connections=%d depth=%d seconds=%.3f bytes=%llu requests=%llu mbps=%.2f "
           "p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f\n",
           connections, depth, elapsed, (unsigned long long)bytes, (unsigned long long)answered,
           (double)bytes / elapsed / 1e6, percentile(50) / 1e3, percentile(90) / 1e3, percentile(99) / 1e3,
           percentile(99.9) / 1e3, percentile(100) / 1e3);
    for (int i = 0; i < connections; i++) close(conns[i].fd);
    free(conns);
    return 0;
}

// MARK: Idle connections

static int run_idle(const char *path, int connections) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) < 0) die("getrlimit");
    rlim_t wanted = (rlim_t)connections + 64;
    if (limit.rlim_cur < wanted) {
        limit.rlim_cur = limit.rlim_max == RLIM_INFINITY || limit.rlim_max > wanted ? wanted : limit.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &limit) < 0) die("setrlimit");
    }
    int *fds = calloc((size_t)connections, sizeof *fds);
    if (!fds) die("calloc");
    struct timeval timeout = {.tv_sec = 10};
    for (int i = 0; i < connections; i++) {
        fds[i] = connect_unix(path, 0);
        if (setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) < 0) die("setsockopt");
    }
    int served = 0;
    for (int i = 0; i < connections; i++) {
        unsigned char level[4];
        if (write(fds[i], "\x00", 1) != 1) die("write");
        size_t got = 0;
        while (got < sizeof level) {
            ssize_t n = read(fds[i], level + got, sizeof level - got);
            if (n <= 0) break;
            got += (size_t)n;
        }
        if (got == sizeof level) served++;
    }
    printf("mode=idle connections=%d served=%d\n", connections, served);
    fflush(stdout);
    char ignored[64];
    while (read(0, ignored, sizeof ignored) > 0) {}
    for (int i = 0; i < connections; i++) close(fds[i]);
    free(fds);
    return served == connections ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "getrandom") == 0) return run_getrandom(strtoul(argv[2], NULL, 10), atof(argv[3]));
    if (argc == 7 && strcmp(argv[1], "pipeline") == 0)
        return run_pipeline(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]), atof(argv[6]));
    if (argc == 4 && strcmp(argv[1], "idle") == 0) return run_idle(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: egd-load getrandom SIZE SECONDS\n"
                    "       egd-load pipeline PATH CONNECTIONS DEPTH WARMUP SECONDS\n"
                    "       egd-load idle PATH CONNECTIONS\n");
    return 2;
}
