/// Why a limiter could not be configured or a class could not be found.
///
/// Each case names the offending value, and for a hierarchical token bucket the class it belongs
/// to, so that a configuration tool can point at the exact parameter.
public enum RateLimitError: Error, Equatable, Sendable {
    /// A fixed-window period of 0 ms (QEMU: "'period' parameter expects a positive integer";
    /// vhost-device-rng: `InvalidPeriodInput`).
    case periodIsZero
    /// A fixed-window period above the variant's maximum (vhost-device-rng accepts at most 65,536 ms;
    /// QEMU's `period` is a 32-bit property).
    case periodTooLong(milliseconds: UInt64, maximum: UInt64)
    /// `max-bytes` of 0: the window would never grant a byte, so the guest would wait forever.
    case maxBytesIsZero
    /// `max-bytes` above the variant's maximum (QEMU: "must be non-negative, and less than 2^63").
    case maxBytesTooLarge(UInt64, maximum: UInt64)
    /// A vhost-device-rng `--socket-count` of 0 (`InvalidSocketCount`).
    case socketCountIsZero
    /// `max-bytes / socket-count` rounds to 0, so each guest's share would be nothing.
    case shareIsZero(maxBytes: UInt64, socketCount: UInt32)
    /// A token bucket capacity that is not positive.
    case capacityNotPositive(Int)
    /// A token bucket refill period shorter than one nanosecond.
    case refillPeriodNotPositive(Duration)
    /// A negative one-time burst.
    case oneTimeBurstNegative(Int)
    /// A hierarchical token bucket whose largest single grant is not positive.
    case maximumGrantNotPositive(Int)
    /// A class rate that is not positive.
    case rateNotPositive(class: HTBClassID, rate: Int)
    /// A class whose ceil is below its rate (tc-htb: ceil ≥ rate).
    case ceilBelowRate(class: HTBClassID, rate: Int, ceil: Int)
    /// A class whose ceil is above its parent's (the HTB guide: parent ceil ≥ children's ceil).
    case ceilAboveParentCeil(class: HTBClassID, ceil: Int, parent: HTBClassID, parentCeil: Int)
    /// A class whose burst is not positive.
    case burstNotPositive(class: HTBClassID, burst: Int)
    /// A class whose cburst is not positive.
    case cburstNotPositive(class: HTBClassID, cburst: Int)
    /// A class whose quantum is not positive.
    case quantumNotPositive(class: HTBClassID, quantum: Int)
    /// A class prio outside `0...7` (TC_HTB_NUMPRIO = 8).
    case prioOutOfRange(class: HTBClassID, prio: Int)
    /// Two classes with the same identifier.
    case duplicateClass(HTBClassID)
    /// No class has this identifier.
    case unknownClass(HTBClassID)
    /// A class names a parent that does not exist.
    case unknownParent(class: HTBClassID, parent: HTBClassID)
    /// Following parents from this class leads back to it.
    case cycle(HTBClassID)
    /// The class would sit deeper than the maximum depth (TC_HTB_MAXDEPTH = 8 levels).
    case depthExceeded(class: HTBClassID, depth: Int, maximum: Int)
    /// An inner class cannot be removed while it has children.
    case classHasChildren(HTBClassID)
    /// Demand and requests are made on leaves only; this class has children.
    case notALeaf(HTBClassID)
}
