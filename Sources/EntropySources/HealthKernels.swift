internal import CEntropyShims

/// Whether the health tests run on the AVX-512 kernels of CEntropyShims (`HealthKernels.c`).
///
/// The kernels need AVX-512 F, BW, VBMI, VBMI2, VPOPCNTDQ and BITALG, GFNI and POPCNT (Ice Lake,
/// Sapphire Rapids and later Intel parts, AMD Zen 4 and later) with ZMM state enabled by the OS;
/// CPUID and XGETBV are read once. Elsewhere ``FIPSTest`` and ``ContinuousHealthTests`` run their
/// portable Swift code, which gives the same results bit for bit (the tests run both).
enum HealthKernels {
    /// Checked once per process.
    static let available = ces_cpu_has_health_kernels() != 0
}
