internal import CEntropyShims

#if canImport(Glibc)
    import Glibc
#endif

/// The implementations of the health tests' hot loops, best last.
///
/// ``FIPSTest`` and ``ContinuousHealthTests`` count with the C kernels of CEntropyShims
/// (`HealthKernels.c`) where the CPU has them, else with their portable Swift code. Every tier gives
/// the same results bit for bit (the tests run each tier the CPU has against the others, the first
/// implementation and a bit-by-bit oracle).
enum HealthKernelTier: Int, Comparable, CaseIterable, Sendable, CustomStringConvertible {
    /// Portable Swift (about 1 ns a byte).
    case swift
    /// x86-64 with AVX2 and POPCNT (Haswell and later, every AMD Zen), YMM state enabled by the OS.
    case avx2
    /// x86-64 with AVX-512 F, BW, VBMI, VBMI2, VPOPCNTDQ, BITALG, GFNI and POPCNT (Ice Lake,
    /// Sapphire Rapids and later Intel parts, AMD Zen 4 and later), ZMM state enabled by the OS.
    case avx512

    static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The spelling of ``HealthKernels/environmentVariable``'s values.
    var description: String {
        switch self {
        case .swift: "swift"
        case .avx2: "avx2"
        case .avx512: "avx512"
        }
    }
}

/// Which ``HealthKernelTier`` the health tests use.
///
/// CPUID and XGETBV are read once (`ces_cpu_health_kernel_tier`), and so is the environment variable
/// `VIRTRNG_HEALTH_KERNEL` (`avx512`, `avx2` or `swift`), which caps the tier for benchmarks and
/// comparisons: a tier the CPU lacks falls to the best one below it that it has, and an unset, empty
/// or unknown value (or `auto`) leaves the best tier the CPU has.
enum HealthKernels {
    /// The environment variable read by ``selected``.
    static let environmentVariable = "VIRTRNG_HEALTH_KERNEL"

    /// The best tier the CPU and OS support. Checked once per process.
    static let supported: HealthKernelTier = {
        switch ces_cpu_health_kernel_tier() {
        case CES_HEALTH_TIER_AVX512: .avx512
        case CES_HEALTH_TIER_AVX2: .avx2
        default: .swift
        }
    }()

    /// The tier used by ``FIPSTest/init()`` and ``ContinuousHealthTests``' public initialiser:
    /// ``supported``, capped by `VIRTRNG_HEALTH_KERNEL`. Read once per process.
    static let selected: HealthKernelTier = {
        let requested = getenv(environmentVariable).map { String(cString: $0) }
        return tier(requested: requested, supported: supported)
    }()

    /// Every tier the CPU supports, worst first (always includes ``HealthKernelTier/swift``).
    static var supportedTiers: [HealthKernelTier] { HealthKernelTier.allCases.filter { $0 <= supported } }

    /// The tier to use for a request (`nil`: none) on a CPU that supports up to `supported`.
    static func tier(requested: String?, supported: HealthKernelTier) -> HealthKernelTier {
        guard let requested, let tier = HealthKernelTier.allCases.first(where: { "\($0)" == requested }) else {
            return supported
        }
        return min(tier, supported)
    }

    /// `tier` if the CPU supports it, else the best tier below it that it does.
    static func available(_ tier: HealthKernelTier) -> HealthKernelTier { min(tier, supported) }

    /// Counts one FIPS block with the kernel of `tier` (``HealthKernelTier/avx2`` or better).
    static func fipsCount(
        _ block: UnsafeRawBufferPointer, previousWord: UInt32, tier: HealthKernelTier,
        into counts: inout ces_fips_counts
    ) {
        precondition(block.count == Int(CES_FIPS_BLOCK_SIZE) && tier > .swift && tier <= supported)
        switch tier {
        case .avx512: ces_fips_count_avx512(block.baseAddress, previousWord, &counts)
        default: ces_fips_count_avx2(block.baseAddress, previousWord, &counts)
        }
    }

    /// Whether four consecutive bytes among the `count` at `p` are equal, with the kernel of `tier`
    /// (a plain loop for ``HealthKernelTier/swift``).
    static func hasFourEqualBytes(_ p: UnsafeRawPointer, count: Int, tier: HealthKernelTier) -> Bool {
        switch tier {
        case .avx512: return ces_has_four_equal_bytes_avx512(p, count) != 0
        case .avx2: return ces_has_four_equal_bytes_avx2(p, count) != 0
        case .swift:
            let bytes = p.assumingMemoryBound(to: UInt8.self)
            var i = 0
            while i + 3 < count {
                if bytes[i] == bytes[i + 1] && bytes[i] == bytes[i + 2] && bytes[i] == bytes[i + 3] { return true }
                i += 1
            }
            return false
        }
    }

    /// The number of bytes equal to `value` among the `count` at `p`, with the kernel of `tier`
    /// (``HealthKernelTier/avx2`` or better).
    static func countByte(_ value: UInt8, in p: UnsafeRawPointer, count: Int, tier: HealthKernelTier) -> Int {
        precondition(tier > .swift && tier <= supported)
        switch tier {
        case .avx512: return ces_count_byte_avx512(p, count, value)
        default: return ces_count_byte_avx2(p, count, value)
        }
    }
}
