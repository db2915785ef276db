public import Benchmark

#if canImport(Glibc)
    import Glibc
#endif

/// Settings every VirtRNG benchmark suite shares.
///
/// `VIRTRNG_BENCH_SHORT=1` (set by `make bench-ci`) runs each benchmark briefly, enough to print a
/// table and to gate allocation counts, which are deterministic. Without it each benchmark runs long
/// enough for stable percentiles. Wall-clock figures are only meaningful as ratios against the
/// baseline that the same suite measures in the same run.
public enum BenchmarkDefaults {
    /// Whether the short CI mode was requested.
    public static var isShortMode: Bool {
        guard let value = getenv("VIRTRNG_BENCH_SHORT") else { return false }
        return String(cString: value) == "1"
    }

    /// The metrics every benchmark reports: time, throughput and allocations.
    public static let metrics: [BenchmarkMetric] = [.wallClock, .throughput, .mallocCountTotal]

    /// Installs the shared default configuration; call first in each suite's `benchmarks` closure.
    public static func apply() {
        Benchmark.defaultConfiguration = .init(
            metrics: metrics,
            timeUnits: .nanoseconds,
            warmupIterations: isShortMode ? 1 : 3,
            maxDuration: isShortMode ? .milliseconds(250) : .seconds(2),
            maxIterations: isShortMode ? 20 : 1_000
        )
    }
}
