// A plain C device-side split queue with the validation VirtQueue performs, over the same ring layout:
// the physical limit the Swift implementation is measured against. Not a library: benchmarks only.
#ifndef CVIRTQUEUE_BASELINE_H
#define CVIRTQUEUE_BASELINE_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t gpa;
    uint64_t size;
    uint8_t *hva;
} cvq_region;

typedef struct {
    uint64_t gpa;
    uint8_t *host;
    uint32_t len;
} cvq_segment;

typedef struct {
    const cvq_region *regions;
    int nregions;
    uint8_t *desc, *avail, *used; // host addresses of the three ring areas
    uint16_t size, next_avail, next_used, head;
    int indirect, event_idx, notifications_enabled;
    cvq_segment *segs;
    int cap, nseg, nreadable;
    uint64_t writable_len;
    uint32_t used_since_check;
} cvq_queue;

/// Pops one chain into q->segs. Returns 1 when popped, 0 when nothing is available, -1 on a bad ring.
int cvq_pop(cvq_queue *q);
/// Writes one used element and publishes used.idx (release). Returns 0 or -1 for a bad head.
int cvq_add_used(cvq_queue *q, uint16_t head, uint32_t len);

/// `iterations` × (driver publishes one more avail entry; device pops the chain and returns it).
/// Returns the number of chains served.
uint64_t cvq_loop_pop_add_used(cvq_queue *q, uint64_t iterations);
/// As above, filling 64 bytes into each chain from a prefetch buffer refilled with getrandom(2).
uint64_t cvq_loop_pop_fill64(cvq_queue *q, uint64_t iterations, uint8_t *pool, size_t pool_size);
/// `iterations` × (driver publishes `batch` entries; device pops them all, returns them as one batch).
uint64_t cvq_loop_batch(cvq_queue *q, uint64_t iterations, uint16_t batch);
#endif
