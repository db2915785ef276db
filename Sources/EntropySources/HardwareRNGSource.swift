#if canImport(Glibc)
    import Glibc
#endif

/// The kernel's hardware RNG character device, `/dev/hwrng` (misc device 10:183), which reads the
/// RNG that `/sys/class/misc/hw_random/rng_current` names (a TPM, a CPU's RNG, or `virtio_rng.0`
/// inside a guest).
///
/// Opening checks sysfs first: when `rng_current` says `none` the source throws
/// ``EntropySourceError/noHardwareRNG(path:available:)`` listing `rng_available`, instead of opening a
/// device whose reads fail with `ENODEV`. A missing node is ``EntropySourceError/notFound(path:)``
/// (the hw_random core is not loaded) and the usual `crw------- root` node gives
/// ``EntropySourceError/permissionDenied(path:rootOnly:)`` with `rootOnly == true` for other users.
///
/// Reads block until the device produces data (a virtio-rng device inside a VM may deliver only a few
/// kB/s), so ``mayBlock`` is `true`: run the source on a ``PrefetchPool``'s filler thread.
public final class HardwareRNGSource: EntropySource, @unchecked Sendable {
    // @unchecked Sendable: immutable apart from the wrapped FileSource, whose single-owner contract
    // this type inherits.

    /// The name of the RNG that was current when the source was opened (from `rng_current`, e.g.
    /// `"virtio_rng.0"`).
    public let currentRNG: String
    /// The RNGs registered when the source was opened (from `rng_available`).
    public let availableRNGs: [String]
    let file: FileSource

    /// Opens `devicePath` after reading `rng_current` and `rng_available` below `sysfsDirectory`.
    ///
    /// - Parameters:
    ///   - devicePath: the device node, `/dev/hwrng` by default.
    ///   - sysfsDirectory: the hw_random class directory, `/sys/class/misc/hw_random` by default.
    ///     When it is missing the device is opened anyway and ``currentRNG`` is `"unknown"`.
    public convenience init(
        devicePath: String = "/dev/hwrng", sysfsDirectory: String = "/sys/class/misc/hw_random"
    ) throws(EntropySourceError) {
        try self.init(devicePath: devicePath, sysfsDirectory: sysfsDirectory, calls: .live)
    }

    init(devicePath: String, sysfsDirectory: String, calls: SystemCalls) throws(EntropySourceError) {
        let current = Self.readAttribute(sysfsDirectory + "/rng_current")
        let available =
            Self.readAttribute(sysfsDirectory + "/rng_available")
            .map { $0.split(separator: " ").map(String.init) } ?? []
        if current == "none" {
            throw .noHardwareRNG(path: devicePath, available: available)
        }
        self.currentRNG = current ?? "unknown"
        self.availableRNGs = available
        self.file = try FileSource(path: devicePath, nonBlocking: false, calls: calls)
    }

    /// The device path.
    public var name: String { file.path }

    /// `true`: reads wait for the device.
    public var mayBlock: Bool { true }

    /// One `read(2)` of the device (the kernel loops internally in 64-byte chunks until the request is
    /// met or a signal arrives). `ENODEV` (the RNG was unregistered) becomes
    /// ``EntropySourceError/noHardwareRNG(path:available:)``.
    public func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        do throws(EntropySourceError) {
            return try file.fill(buffer)
        } catch .noHardwareRNG(let path, _) {
            throw .noHardwareRNG(path: path, available: availableRNGs)
        }
    }

    /// Reads a small sysfs or procfs file (at most `maximumBytes`), trimmed of whitespace; nil if
    /// unreadable.
    static func readAttribute(_ path: String, maximumBytes: Int = 4096) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: maximumBytes)
        var total = 0
        while total < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + total, $0.count - total) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            total += n
        }
        let text = String(decoding: bytes[..<total], as: UTF8.self)
        return String(text.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
