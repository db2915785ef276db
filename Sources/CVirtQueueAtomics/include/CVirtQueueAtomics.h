// Memory-ordering primitives for rings shared with a guest that runs on another CPU.
//
// The rings live in guest memory, so Swift cannot own them as `Atomic` values. These static inline
// functions compile to single instructions (plain loads/stores plus compiler barriers on x86-64,
// LDAR/STLR on arm64, MFENCE/DMB for the full fence) and are inlined into Swift callers.
#ifndef CVIRTQUEUE_ATOMICS_H
#define CVIRTQUEUE_ATOMICS_H

#include <stdint.h>

/// Loads a little-endian u16 ring index with acquire ordering (reads after it see the guest's
/// writes that preceded its release store of the index).
static inline uint16_t virtq_load_acquire_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}

/// Loads a u16 with relaxed ordering (flags, event indices read after an explicit fence).
static inline uint16_t virtq_load_relaxed_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
}

/// Stores a u16 ring index with release ordering (the guest that acquires it sees every write
/// made before it, e.g. the used elements).
static inline void virtq_store_release_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
}

/// Stores a u16 with relaxed ordering (flags and avail_event, followed by an explicit fence).
static inline void virtq_store_relaxed_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED);
}

/// A full (sequentially consistent) fence: orders an earlier store before a later load, which
/// acquire/release alone do not (needed around EVENT_IDX reads, see virtio 1.2, 2.7.10).
static inline void virtq_fence_seq_cst(void) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

#endif
