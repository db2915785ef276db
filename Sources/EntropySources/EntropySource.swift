/// A source of random bytes that fills a caller's buffer.
///
/// The protocol is shaped for the hot path of a virtio-rng device: the caller owns the buffer (a
/// guest's writable segment, a pool's ring), the source writes into it without allocating, and
/// reports how many bytes it wrote. Errors are typed, so a daemon can tell a missing device from an
/// exhausted file from a failed health test without parsing text.
///
/// ## Contract
///
/// - ``fill(_:)`` writes `1...buffer.count` bytes to the start of `buffer` and returns the count.
///   It never returns 0 for a non-empty buffer: end of input is ``EntropySourceError/exhausted(source:)``,
///   "no data right now" on a non-blocking descriptor is ``EntropySourceError/wouldBlock(source:)``.
///   An empty buffer returns 0 without touching the source.
/// - A source may write fewer bytes than asked (a FIFO, a character device); use
///   ``fillAll(_:)-6uakr`` to loop until the buffer is full.
/// - Bytes past the returned count are unspecified; a source must not report bytes it did not
///   obtain from its generator.
///
/// ## Blocking
///
/// ``mayBlock`` tells whether one call can wait for hardware or a peer (a `/dev/hwrng` read, a FIFO,
/// a remote server, a stalled device). Such a source must never be called from an event loop
/// thread. Run it on a thread of its own; the usual way is a ``PrefetchPool``, whose dedicated
/// filler thread calls the source and whose ``PrefetchPool/tryFill(_:)`` never blocks. Sources
/// with `mayBlock == false` (``GetRandomSource``, ``CPURandomSource``) finish in bounded time and
/// may be called anywhere.
///
/// ## Composition
///
/// Sources compose generically, without a type per combination: ``FallbackSource`` ("RDSEED, else
/// getrandom"), ``XORSource`` (the XOR of two sources), ``HealthMonitor`` (continuous health tests)
/// and ``PrefetchPool`` are themselves sources, so they nest.
public protocol EntropySource {
    /// A short name for messages and errors, e.g. `"getrandom"` or `"/dev/hwrng"`.
    var name: String { get }

    /// Whether one ``fill(_:)`` call can block for an unbounded time (see "Blocking" above).
    var mayBlock: Bool { get }

    /// Writes between 1 and `buffer.count` random bytes to the start of `buffer` and returns how many
    /// it wrote (0 only for an empty buffer).
    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int
}

extension EntropySource {
    /// Calls ``fill(_:)`` until `buffer` is full.
    ///
    /// On an error the bytes already written stay in the buffer but are not reported; callers that
    /// must not keep them should wipe the buffer.
    @inlinable
    public mutating func fillAll(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) {
        try fillAllLoop(&self, buffer)
    }
}

/// The loop behind both `fillAll` overloads.
@inlinable
func fillAllLoop<Source: EntropySource>(
    _ source: inout Source, _ buffer: UnsafeMutableRawBufferPointer
) throws(EntropySourceError) {
    var done = 0
    while done < buffer.count {
        let n = try source.fill(UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
        // A conforming source writes at least one byte into a non-empty buffer; guard against one
        // that does not rather than spin forever.
        guard n > 0, n <= buffer.count - done else {
            throw EntropySourceError.contractViolation(source: source.name, returned: n, requested: buffer.count - done)
        }
        done += n
    }
}

extension EntropySource where Self: AnyObject {
    /// Calls ``fill(_:)`` until `buffer` is full; for class sources (a pool, a monitor, a file), so
    /// a `let` reference can call it.
    @inlinable
    public func fillAll(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) {
        var this = self
        try fillAllLoop(&this, buffer)
    }
}
