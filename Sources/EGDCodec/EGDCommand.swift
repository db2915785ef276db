/// The command byte that opens every EGD request.
///
/// EGD has five commands and no others; a server closes the connection of a client that sends any
/// other byte where a command is due (ekeyd `setup.lua`, konrad `egd.c`). See <doc:ByteLayouts>.
public enum EGDCommand: UInt8, Sendable, Hashable, CaseIterable {
    /// `00`: report the entropy available, in bits; answered with a big-endian `u32`.
    case entropyLevel = 0x00
    /// `01 NN`: read up to `NN` bytes without waiting; answered with `MM` and `MM` bytes, `MM ≤ NN`.
    case readNonBlocking = 0x01
    /// `02 NN`: read exactly `NN` bytes, waiting for them; answered with `NN` raw bytes, no length.
    case readBlocking = 0x02
    /// `03 EH EL NN` and `NN` bytes: add entropy with an estimate of `EH EL` bits; no answer.
    case writeEntropy = 0x03
    /// `04`: report the server's process ID; answered with `LL` and `LL` ASCII characters.
    case reportPID = 0x04
}

/// A set of EGD commands, used to say which commands a server accepts.
public struct EGDCommandSet: OptionSet, Sendable, Hashable {
    /// One bit per command: bit `n` is command byte `n`.
    public var rawValue: UInt8

    /// Creates a set from its bits (bit `n` is command byte `n`).
    @inlinable
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Creates a set holding exactly `command`.
    @inlinable
    public init(_ command: EGDCommand) { self.rawValue = 1 &<< command.rawValue }

    /// `00`, entropy level.
    public static let entropyLevel = EGDCommandSet(.entropyLevel)
    /// `01`, non-blocking read.
    public static let readNonBlocking = EGDCommandSet(.readNonBlocking)
    /// `02`, blocking read.
    public static let readBlocking = EGDCommandSet(.readBlocking)
    /// `03`, write entropy.
    public static let writeEntropy = EGDCommandSet(.writeEntropy)
    /// `04`, report PID.
    public static let reportPID = EGDCommandSet(.reportPID)
    /// All five commands.
    public static let all: EGDCommandSet = [.entropyLevel, .readNonBlocking, .readBlocking, .writeEntropy, .reportPID]

    /// Whether the set holds `command`.
    @inlinable
    public func contains(_ command: EGDCommand) -> Bool { rawValue & (1 &<< command.rawValue) != 0 }
}
