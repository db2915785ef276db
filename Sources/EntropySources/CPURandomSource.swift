internal import CEntropyShims

/// Which random-number instructions a CPU implements, as CPUID reports them.
public struct CPURandomFeatures: Hashable, Sendable {
    /// CPUID.01H:ECX bit 30.
    public var rdrand: Bool
    /// CPUID.07H.0:EBX bit 18.
    public var rdseed: Bool

    /// Features given explicitly (tests, or a caller that wants to forbid an instruction).
    public init(rdrand: Bool, rdseed: Bool) {
        self.rdrand = rdrand
        self.rdseed = rdseed
    }

    /// This CPU's features, from CPUID (both `false` on non-x86 builds).
    public static var current: CPURandomFeatures {
        CPURandomFeatures(rdrand: ces_cpu_has_rdrand() != 0, rdseed: ces_cpu_has_rdseed() != 0)
    }

    /// Whether `instruction` is available.
    public func supports(_ instruction: CPURandomInstruction) -> Bool {
        switch instruction {
        case .rdrand: return rdrand
        case .rdseed: return rdseed
        }
    }
}

/// RDRAND or RDSEED, 8 bytes per instruction.
///
/// RDRAND returns output of the CPU's DRBG (Intel's guidance: at most 10 failures in a row on a
/// healthy part, so ``retries`` defaults to 10); RDSEED returns conditioned entropy and fails more
/// often under load (the default allows 1,024 attempts, each after a `PAUSE`). A step that fails
/// ``retries`` + 1 times in a row ends the fill: bytes already written are returned, and a fill
/// that wrote nothing throws ``EntropySourceError/instructionFailed(_:attempts:)``. Creating the
/// source on a CPU without the instruction throws
/// ``EntropySourceError/instructionNotSupported(_:)``.
///
/// The instructions never block (``mayBlock`` is `false`). Some AMD parts have returned all-ones
/// from RDRAND after a resume; wrap the source in a ``HealthMonitor`` to catch such output.
public struct CPURandomSource: EntropySource, Sendable {
    /// The instruction used.
    public let instruction: CPURandomInstruction
    /// How many times a failed step is retried before the fill stops.
    public let retries: UInt32
    /// A simulated instruction step (tests): returns a word, or nil for "no data" (CF = 0).
    let simulatedStep: (@Sendable () -> UInt64?)?

    /// A source for `instruction`, after checking `features` (this CPU's by default).
    public init(
        _ instruction: CPURandomInstruction, retries: UInt32? = nil, features: CPURandomFeatures = .current
    ) throws(EntropySourceError) {
        guard features.supports(instruction) else { throw .instructionNotSupported(instruction) }
        self.instruction = instruction
        self.retries = retries ?? (instruction == .rdrand ? 10 : 1_024)
        self.simulatedStep = nil
    }

    /// A source whose instruction is simulated by `step` (tests of the failure paths).
    init(_ instruction: CPURandomInstruction, retries: UInt32, simulatedStep: @escaping @Sendable () -> UInt64?) {
        self.instruction = instruction
        self.retries = retries
        self.simulatedStep = simulatedStep
    }

    /// `"RDRAND"` or `"RDSEED"`.
    public var name: String { instruction.rawValue }

    /// `false`: each step is one instruction, retried a bounded number of times.
    public var mayBlock: Bool { false }

    /// Fills as much of `buffer` as the instruction delivers (all of it on a healthy CPU).
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(EntropySourceError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let done: Int
        if let simulatedStep {
            done = Self.simulatedFill(buffer, retries: retries, step: simulatedStep)
        } else {
            switch instruction {
            case .rdrand: done = ces_rdrand_fill(base, buffer.count, retries)
            case .rdseed: done = ces_rdseed_fill(base, buffer.count, retries)
            }
        }
        guard done > 0 else { throw .instructionFailed(instruction, attempts: Int(retries) + 1) }
        return done
    }

    private static func simulatedFill(
        _ buffer: UnsafeMutableRawBufferPointer, retries: UInt32, step: () -> UInt64?
    ) -> Int {
        var done = 0
        outer: while done < buffer.count {
            var word: UInt64?
            for _ in 0...retries {
                word = step()
                if word != nil { break }
            }
            guard var value = word else { break outer }
            let n = min(8, buffer.count - done)
            withUnsafeBytes(of: &value) { bytes in
                UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<n]))
            }
            done += n
        }
        return done
    }
}
