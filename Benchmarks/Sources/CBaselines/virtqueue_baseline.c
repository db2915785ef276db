#include "CVirtQueueBaseline.h"
#include "CBaselines.h"

#include <string.h>

#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4

static inline const cvq_region *find_region(const cvq_queue *q, uint64_t a) {
    if (a - q->regions[0].gpa < q->regions[0].size) return &q->regions[0];
    for (int i = 1; i < q->nregions; i++)
        if (a - q->regions[i].gpa < q->regions[i].size) return &q->regions[i];
    return NULL;
}

static inline uint8_t *translate(const cvq_queue *q, uint64_t a, uint64_t len) {
    const cvq_region *r = find_region(q, a);
    if (!r) return NULL;
    uint64_t off = a - r->gpa;
    if (len > r->size - off) return NULL;
    return r->hva + off;
}

typedef struct {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
} raw_desc;

static inline raw_desc read_desc(const uint8_t *p) {
    raw_desc d;
    memcpy(&d.addr, p, 8);
    memcpy(&d.len, p + 8, 4);
    memcpy(&d.flags, p + 12, 2);
    memcpy(&d.next, p + 14, 2);
    return d;
}

static inline int append(cvq_queue *q, raw_desc d, int *saw_writable, uint64_t *total) {
    int writable = (d.flags & F_WRITE) != 0;
    if (writable) *saw_writable = 1;
    else if (*saw_writable) return -1;
    if (d.len == 0) return -1;
    *total += d.len;
    if (*total > (1ull << 32)) return -1;
    uint8_t *host = translate(q, d.addr, d.len);
    if (!host || q->nseg >= q->cap) return -1;
    q->segs[q->nseg++] = (cvq_segment){d.addr, host, d.len};
    if (writable) q->writable_len += d.len;
    else q->nreadable++;
    return 0;
}

static int walk_indirect(cvq_queue *q, raw_desc d, int *saw_writable, uint64_t *total) {
    if (!q->indirect || (d.flags & F_NEXT) || d.len == 0 || d.len % 16 || d.len / 16 > 65536) return -1;
    uint32_t n = d.len / 16;
    const uint8_t *table = translate(q, d.addr, d.len);
    if (!table) return -1;
    uint32_t i = 0, ttl = n;
    for (;;) {
        if (ttl-- == 0) return -1;
        raw_desc e = read_desc(table + 16 * (size_t)i);
        if (e.flags & F_INDIRECT) return -1;
        if (append(q, e, saw_writable, total)) return -1;
        if (!(e.flags & F_NEXT)) return 0;
        if (e.next >= n) return -1;
        i = e.next;
    }
}

int cvq_pop(cvq_queue *q) {
    uint16_t avail_idx = __atomic_load_n((uint16_t *)(q->avail + 2), __ATOMIC_ACQUIRE);
    uint16_t pending = (uint16_t)(avail_idx - q->next_avail);
    if (pending == 0) return 0;
    if (pending > q->size) return -1;
    uint16_t head;
    memcpy(&head, q->avail + 4 + 2 * (size_t)(q->next_avail & (q->size - 1)), 2);
    if (head >= q->size) return -1;
    q->head = head;
    q->nseg = 0;
    q->nreadable = 0;
    q->writable_len = 0;
    int saw_writable = 0;
    uint64_t total = 0;
    uint16_t i = head;
    uint32_t ttl = q->size;
    for (;;) {
        if (ttl-- == 0) return -1;
        raw_desc d = read_desc(q->desc + 16 * (size_t)i);
        if (d.flags & F_INDIRECT) {
            if (walk_indirect(q, d, &saw_writable, &total)) return -1;
            break;
        }
        if (append(q, d, &saw_writable, &total)) return -1;
        if (!(d.flags & F_NEXT)) break;
        if (d.next >= q->size) return -1;
        i = d.next;
    }
    q->next_avail++;
    if (q->event_idx && q->notifications_enabled)
        __atomic_store_n((uint16_t *)(q->used + 4 + 8 * (size_t)q->size), q->next_avail, __ATOMIC_RELAXED);
    return 1;
}

static inline int write_used(cvq_queue *q, uint16_t head, uint32_t len) {
    if (head >= q->size) return -1;
    uint8_t *slot = q->used + 4 + 8 * (size_t)(q->next_used & (q->size - 1));
    uint32_t id = head;
    memcpy(slot, &id, 4);
    memcpy(slot + 4, &len, 4);
    q->next_used++;
    q->used_since_check++;
    return 0;
}

int cvq_add_used(cvq_queue *q, uint16_t head, uint32_t len) {
    if (write_used(q, head, len)) return -1;
    __atomic_store_n((uint16_t *)(q->used + 2), q->next_used, __ATOMIC_RELEASE);
    return 0;
}

static inline void driver_publish(cvq_queue *q, uint16_t count) {
    uint16_t *idx = (uint16_t *)(q->avail + 2);
    __atomic_store_n(idx, (uint16_t)(*idx + count), __ATOMIC_RELEASE);
}

uint64_t cvq_loop_pop_add_used(cvq_queue *q, uint64_t iterations) {
    uint64_t served = 0;
    for (uint64_t n = 0; n < iterations; n++) {
        driver_publish(q, 1);
        if (cvq_pop(q) != 1) break;
        if (cvq_add_used(q, q->head, (uint32_t)q->writable_len)) break;
        served++;
    }
    return served;
}

uint64_t cvq_loop_pop_fill64(cvq_queue *q, uint64_t iterations, uint8_t *pool, size_t pool_size) {
    uint64_t served = 0;
    size_t cursor = pool_size;
    for (uint64_t n = 0; n < iterations; n++) {
        driver_publish(q, 1);
        if (cvq_pop(q) != 1) break;
        uint32_t want = q->writable_len < 64 ? (uint32_t)q->writable_len : 64, written = 0;
        for (int s = q->nreadable; s < q->nseg && written < want; s++) {
            uint32_t chunk = q->segs[s].len < want - written ? q->segs[s].len : want - written;
            if (cursor + chunk > pool_size) {
                if (cb_getrandom(pool, pool_size)) return served;
                cursor = 0;
            }
            memcpy(q->segs[s].host, pool + cursor, chunk);
            memset(pool + cursor, 0, chunk);
            cursor += chunk;
            written += chunk;
        }
        if (cvq_add_used(q, q->head, written)) break;
        served++;
    }
    return served;
}

uint64_t cvq_loop_batch(cvq_queue *q, uint64_t iterations, uint16_t batch) {
    uint64_t served = 0;
    uint16_t heads[1024];
    uint32_t lens[1024];
    if (batch > 1024) return 0;
    for (uint64_t n = 0; n < iterations; n++) {
        driver_publish(q, batch);
        for (uint16_t b = 0; b < batch; b++) {
            if (cvq_pop(q) != 1) return served;
            heads[b] = q->head;
            lens[b] = (uint32_t)q->writable_len;
        }
        for (uint16_t b = 0; b < batch; b++)
            if (write_used(q, heads[b], lens[b])) return served;
        __atomic_store_n((uint16_t *)(q->used + 2), q->next_used, __ATOMIC_RELEASE);
        served += batch;
    }
    return served;
}
