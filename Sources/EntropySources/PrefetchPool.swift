#if canImport(Glibc)
    import Glibc
#endif

/// A buffer of random bytes kept filled from a source by a dedicated background thread, serving
/// requests by copying out.
///
/// The filler thread starts filling when the level drops below ``lowWatermark`` and stops at
/// ``highWatermark`` (hysteresis, so a busy pool refills in large reads rather than one per request).
/// It calls the source outside the lock, at most 16 KiB per call, and publishes each fill at once, so
/// a slow source's bytes become available as they arrive. Because the source runs only on that
/// thread, a blocking source (`/dev/hwrng`, a FIFO, a remote server) never blocks the caller: this is
/// the supported way to use a source whose ``EntropySource/mayBlock`` is `true` from an event loop.
///
/// **Serving.** ``fill(_:)`` copies `min(request, level)` bytes and wipes them in the buffer before
/// releasing the lock, so no byte is ever handed to two consumers or served twice. It blocks while the
/// pool is empty: when the source stalls the pool degrades to blocking, never to non-random bytes.
/// ``tryFill(_:)`` never waits (it returns 0 when empty) and is what an event loop calls.
/// A warm pool serves a request with one uncontended lock, a copy and a wipe; no call allocates.
///
/// **Errors.** When the source throws, the filler records the error and retries with exponential
/// backoff (1 ms doubling to 1 s, woken early by ``close()``), except for errors after which the
/// source cannot produce again (``EntropySourceError/exhausted(source:)``, not found, permission
/// denied, unsupported instruction, invalid parameters), which stop the filler. Consumers are served
/// the bytes already buffered (they passed any health tests before they entered the pool); once the
/// pool is empty, a consumer gets the recorded error instead of waiting. ``lastError`` exposes it.
///
/// **Lifetime.** ``close()`` (or releasing the pool) stops the filler and wipes the buffer; consumers
/// waiting get ``EntropySourceError/poolClosed``. A filler blocked inside the source's `fill` exits
/// as soon as that call returns; the thread is detached and owns the source until then.
public final class PrefetchPool: EntropySource, Sendable {
    /// The buffer's size in bytes.
    public let capacity: Int
    /// Filling starts when the level falls below this.
    public let lowWatermark: Int
    /// Filling stops when the level reaches this.
    public let highWatermark: Int
    /// The source's name.
    public let name: String
    let core: PoolCore

    /// Starts a filler thread that owns `source`.
    ///
    /// - Parameters:
    ///   - source: the source; moved to the filler thread (`sending`), which is its only caller.
    ///   - capacity: the buffer size, at least 64 bytes (default 64 KiB).
    ///   - lowWatermark: default `capacity / 2`.
    ///   - highWatermark: default `capacity`; must satisfy `0 ≤ low < high ≤ capacity`.
    /// - Throws: ``EntropySourceError/invalidParameter(name:value:)``.
    public init<Source: EntropySource>(
        source: sending Source, capacity: Int = 65_536, lowWatermark: Int? = nil, highWatermark: Int? = nil
    ) throws(EntropySourceError) {
        guard capacity >= 64 else { throw .invalidParameter(name: "capacity", value: capacity) }
        let high = highWatermark ?? capacity
        let low = lowWatermark ?? capacity / 2
        guard high > 0, high <= capacity else { throw .invalidParameter(name: "highWatermark", value: high) }
        guard low >= 0, low < high else { throw .invalidParameter(name: "lowWatermark", value: low) }
        self.capacity = capacity
        self.lowWatermark = low
        self.highWatermark = high
        self.name = "pool(\(source.name))"
        self.core = PoolCore(capacity: capacity, low: low, high: high)
        let filler = Filler(source: source, core: core)
        var thread = pthread_t()
        let context = Unmanaged.passRetained(filler).toOpaque()
        let started = pthread_create(
            &thread, nil,
            { context in
                let filler = Unmanaged<AnyObject>.fromOpaque(context!).takeRetainedValue() as! any FillerRunning
                filler.run()
                return nil
            }, context)
        guard started == 0 else {
            Unmanaged<Filler<Source>>.fromOpaque(context).release()
            throw .readFailed(source: "pool filler thread", errno: SystemErrno(started))
        }
        pthread_detach(thread)
    }

    deinit { core.close() }

    /// `true`: ``fill(_:)`` waits while the pool is empty; ``tryFill(_:)`` never waits.
    public var mayBlock: Bool { true }

    /// The bytes buffered now.
    public var level: Int { core.withLock { core.count } }

    /// The source's last error, cleared by its next successful fill.
    public var lastError: EntropySourceError? { core.withLock { core.error } }

    /// Copies out `min(buffer.count, level)` bytes, waiting while the pool is empty.
    ///
    /// - Throws: the source's error when the pool is empty and the source is failing;
    ///   ``EntropySourceError/poolClosed`` after ``close()``.
    public func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        guard !buffer.isEmpty else { return 0 }
        return try core.take(into: buffer, wait: true)
    }

    /// Copies out `min(buffer.count, level)` bytes without waiting; 0 when the pool is empty and the
    /// source is merely slow.
    ///
    /// - Throws: as ``fill(_:)``, when the pool is empty.
    public func tryFill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        guard !buffer.isEmpty else { return 0 }
        return try core.take(into: buffer, wait: false)
    }

    /// Calls `handler` once, on some thread, as soon as a ``tryFill(_:)`` would hand out bytes or
    /// would throw news: the pool holds bytes, the source failed (or failed again on a retry), or the
    /// pool was closed. If that is already so, `handler` runs now, on the caller's thread. A failure a
    /// ``tryFill(_:)`` or ``fill(_:)`` already threw is not news: the handler waits for the filler's
    /// next attempt (the backoff's 1 ms to 1 s) or the close, so an event loop that calls `tryFill`
    /// again on every notification does not spin while the source stays failed. A later call
    /// replaces a handler that has not run yet.
    ///
    /// This is how an event loop waits for a slow or stalled source without polling: it calls
    /// `tryFill`, and on 0 (or an error) asks to be told, then hops back to its own thread in the handler.
    public func notifyWhenAvailable(_ handler: @escaping @Sendable () -> Void) {
        let runNow = core.withLock { () -> Bool in
            if core.count > 0 || ((core.error != nil || core.closed) && !core.failureReported) { return true }
            core.availabilityHandler = handler
            return false
        }
        if runNow { handler() }
    }

    /// Stops the filler, wipes the buffer and wakes every waiting consumer with
    /// ``EntropySourceError/poolClosed``. Idempotent.
    public func close() { core.close() }
}

protocol FillerRunning: AnyObject {
    func run()
}

/// The filler thread's state: the source and the shared core.
final class Filler<Source: EntropySource>: FillerRunning {
    var source: Source
    let core: PoolCore

    init(source: sending Source, core: PoolCore) {
        self.source = source
        self.core = core
    }

    func run() {
        var backoffMilliseconds = 1
        while let region = core.nextRegion() {
            do throws(EntropySourceError) {
                let n = try source.fill(region)
                core.publish(min(max(n, 0), region.count))
                backoffMilliseconds = 1
            } catch {
                region.initializeMemory(as: UInt8.self, repeating: 0)
                let stop = error.endsSource
                core.record(error, stopping: stop)
                if stop { return }
                core.pause(milliseconds: backoffMilliseconds)
                backoffMilliseconds = min(backoffMilliseconds * 2, 1_000)
            }
        }
    }
}

extension EntropySourceError {
    /// Errors after which a source cannot produce again, so a pool stops calling it.
    var endsSource: Bool {
        switch self {
        case .exhausted, .notFound, .permissionDenied, .openFailed, .instructionNotSupported, .poolClosed,
            .invalidParameter, .contractViolation, .remoteFailed:
            return true
        case .allSourcesFailed(let primary, let fallback):
            return primary.endsSource && fallback.endsSource
        case .readFailed, .wouldBlock, .noHardwareRNG, .instructionFailed, .unhealthy, .remoteUnavailable:
            // A remote server that stayed away for a whole retry budget may come back: keep trying.
            return false
        }
    }
}

/// The ring buffer and its lock and conditions, shared by consumers and the filler thread.
///
/// Invariants (under `mutex`): 0 ≤ count ≤ capacity; bytes `[read, read + count)` (mod capacity) are
/// unserved random bytes; every other byte is zero except the region the filler is writing, which is
/// `[read + count, read + count + n)` and is disjoint from the served bytes.
final class PoolCore: @unchecked Sendable {
    // @unchecked Sendable: every mutable field is read and written only with `mutex` held, except
    // the bytes of the region handed to the filler, which no consumer touches until it is published.
    let storage: UnsafeMutableRawBufferPointer
    let capacity: Int
    let low: Int
    let high: Int
    var read = 0
    var count = 0
    var filling = true
    var closed = false
    var stopped = false
    var error: EntropySourceError?
    /// A consumer was thrown `error` (or ``EntropySourceError/poolClosed``) since it was last recorded.
    var failureReported = false
    /// One-shot waiter of ``PrefetchPool/notifyWhenAvailable(_:)``; taken and called outside the lock.
    var availabilityHandler: (@Sendable () -> Void)?
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let dataAvailable: UnsafeMutablePointer<pthread_cond_t>
    private let spaceNeeded: UnsafeMutablePointer<pthread_cond_t>

    static let maximumFill = 16_384

    init(capacity: Int, low: Int, high: Int) {
        self.capacity = capacity
        self.low = low
        self.high = high
        storage = .allocate(byteCount: capacity, alignment: 64)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        dataAvailable = .allocate(capacity: 1)
        pthread_cond_init(dataAvailable, &attributes)
        spaceNeeded = .allocate(capacity: 1)
        pthread_cond_init(spaceNeeded, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        storage.initializeMemory(as: UInt8.self, repeating: 0)
        storage.deallocate()
        pthread_cond_destroy(dataAvailable)
        pthread_cond_destroy(spaceNeeded)
        pthread_mutex_destroy(mutex)
        dataAvailable.deallocate()
        spaceNeeded.deallocate()
        mutex.deallocate()
    }

    @inline(__always)
    func withLock<T>(_ body: () throws(EntropySourceError) -> T) throws(EntropySourceError) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    @inline(__always)
    func withLock<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    func take(into buffer: UnsafeMutableRawBufferPointer, wait: Bool) throws(EntropySourceError) -> Int {
        try withLock { () throws(EntropySourceError) -> Int in
            while count == 0 {
                if closed {
                    failureReported = true
                    throw .poolClosed
                }
                if let error {
                    failureReported = true
                    throw error
                }
                guard wait else { return 0 }
                pthread_cond_wait(dataAvailable, mutex)
            }
            let n = min(buffer.count, count)
            // At most two contiguous pieces: [read, end of storage) and [0, rest).
            let first = min(n, capacity - read)
            let piece1 = UnsafeMutableRawBufferPointer(rebasing: storage[read..<(read + first)])
            buffer.baseAddress!.copyMemory(from: piece1.baseAddress!, byteCount: first)
            piece1.initializeMemory(as: UInt8.self, repeating: 0)
            if first < n {
                let piece2 = UnsafeMutableRawBufferPointer(rebasing: storage[0..<(n - first)])
                (buffer.baseAddress! + first).copyMemory(from: piece2.baseAddress!, byteCount: n - first)
                piece2.initializeMemory(as: UInt8.self, repeating: 0)
            }
            read = (read + n) % capacity
            count -= n
            if !filling && count < low {
                filling = true
                pthread_cond_signal(spaceNeeded)
            }
            return n
        }
    }

    /// Waits until filling is wanted; returns the free region to fill, or nil once closed.
    func nextRegion() -> UnsafeMutableRawBufferPointer? {
        withLock { () -> UnsafeMutableRawBufferPointer? in
            while !closed && !filling { pthread_cond_wait(spaceNeeded, mutex) }
            if closed { return nil }
            let write = (read + count) % capacity
            let free = min(high - count, capacity - write, Self.maximumFill)
            return UnsafeMutableRawBufferPointer(rebasing: storage[write..<(write + free)])
        }
    }

    func publish(_ n: Int) {
        let handler = withLock { () -> (@Sendable () -> Void)? in
            guard !closed else { return nil }
            count += n
            error = nil
            if count >= high { filling = false }
            pthread_cond_broadcast(dataAvailable)
            return takeAvailabilityHandler()
        }
        handler?()
    }

    func record(_ error: EntropySourceError, stopping: Bool) {
        let handler = withLock { () -> (@Sendable () -> Void)? in
            self.error = error
            failureReported = false
            if stopping { stopped = true }
            pthread_cond_broadcast(dataAvailable)
            return takeAvailabilityHandler()
        }
        handler?()
    }

    /// Under the lock: the waiting handler, cleared.
    private func takeAvailabilityHandler() -> (@Sendable () -> Void)? {
        defer { availabilityHandler = nil }
        return availabilityHandler
    }

    /// Sleeps on the filler's condition for the backoff, woken early by close.
    func pause(milliseconds: Int) {
        withLock {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            var nanoseconds = now.tv_nsec + milliseconds % 1_000 * 1_000_000
            var deadline = timespec(tv_sec: now.tv_sec + milliseconds / 1_000, tv_nsec: 0)
            if nanoseconds >= 1_000_000_000 {
                deadline.tv_sec += 1
                nanoseconds -= 1_000_000_000
            }
            deadline.tv_nsec = nanoseconds
            while !closed {
                if pthread_cond_timedwait(spaceNeeded, mutex, &deadline) == ETIMEDOUT { break }
            }
        }
    }

    func close() {
        let handler = withLock { () -> (@Sendable () -> Void)? in
            guard !closed else { return nil }
            closed = true
            failureReported = false
            // Wipe the unserved bytes only; the filler may still be writing its own region, which
            // deinit wipes once the filler has let go of the core.
            let first = min(count, capacity - read)
            UnsafeMutableRawBufferPointer(rebasing: storage[read..<(read + first)])
                .initializeMemory(as: UInt8.self, repeating: 0)
            UnsafeMutableRawBufferPointer(rebasing: storage[0..<(count - first)])
                .initializeMemory(as: UInt8.self, repeating: 0)
            count = 0
            pthread_cond_broadcast(dataAvailable)
            pthread_cond_broadcast(spaceNeeded)
            return takeAvailabilityHandler()
        }
        handler?()
    }
}
