import EntropySources
public import RateLimit
import VirtRNGCore

/// Parses a listener as `virtrngd --socket`/`--tcp` take it, QEMU `-object` style:
/// `ADDRESS[,rate=R][,ceil=C][,burst=B][,max-bytes=N,period=MS][,max-clients=K][,prio=P][,prefill=N][,mode=OCTAL]`
/// (`prefill` only for sockets QEMU's `rng-egd` connects to: see ``EGDListener/prefillBytes``).
///
/// Rates are bytes per second and sizes bytes, with an optional `k`, `M` or `G` suffix (powers of
/// 1000, as `tc` reads `kbps`-less byte rates: `20k` = 20,000). Unset values take the defaults given.
public struct ListenerDefaults: Sendable, Equatable {
    /// Rate of a class that gives none (default: unlimited).
    public var rate: Int?
    /// Ceil of a class that gives none (default: its rate).
    public var ceil: Int?
    /// QEMU `max-bytes` of a class that gives none (nil: no window).
    public var maxBytes: UInt64?
    /// QEMU `period` in ms (default 1000 when only max-bytes is given, as libvirt's `<rate period>`).
    public var periodMilliseconds: UInt32?
    /// Clients per class.
    public var maximumClients: Int

    /// Defaults: unlimited, no window, 1,024 clients per class.
    public init(
        rate: Int? = nil, ceil: Int? = nil, maxBytes: UInt64? = nil, periodMilliseconds: UInt32? = nil,
        maximumClients: Int = 1_024
    ) {
        self.rate = rate
        self.ceil = ceil
        self.maxBytes = maxBytes
        self.periodMilliseconds = periodMilliseconds
        self.maximumClients = maximumClients
    }
}

/// Why a listener specification was refused.
public enum ListenerSpecificationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An option that is not one of rate, ceil, burst, max-bytes, period, max-clients, prio.
    case unknownOption(spec: String, option: String)
    /// A value that is not a positive number (with optional k/M/G).
    case invalidValue(spec: String, option: String, value: String)
    /// A TCP address that is not HOST:PORT.
    case invalidAddress(String)
    /// period without max-bytes.
    case periodWithoutMaxBytes(spec: String)

    /// One line.
    public var description: String {
        switch self {
        case .unknownOption(let spec, let option):
            "'\(spec)': unknown option '\(option)' (rate, ceil, burst, max-bytes, period, max-clients, prio, prefill, mode)"
        case .invalidValue(let spec, let option, let value):
            option == "mode"
                ? "'\(spec)': mode=\(value) is not octal permission bits of a unix socket (e.g. 660)"
                : "'\(spec)': \(option)=\(value) is not a positive number (k, M, G suffixes allowed)"
        case .invalidAddress(let text): "'\(text)' is not HOST:PORT"
        case .periodWithoutMaxBytes(let spec): "'\(spec)': period needs max-bytes"
        }
    }
}

extension EGDListener {
    /// Parses `spec` for a unix socket (`tcp == false`, the address is a path) or a TCP address, giving
    /// its class the identifier `id`.
    public init(
        parsing spec: String, tcp: Bool, id: HTBClassID, defaults: ListenerDefaults = .init()
    ) throws(ListenerSpecificationError) {
        var parts = spec.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let address = parts.removeFirst()
        let endpoint: EGDEndpoint
        if tcp {
            do {
                endpoint = try EGDEndpoint(tcpAddress: address)
            } catch {
                throw .invalidAddress(address)
            }
        } else {
            endpoint = .unix(path: address)
        }
        var rate = defaults.rate
        var ceil = defaults.ceil
        var burst: Int?
        var maxBytes = defaults.maxBytes
        var period = defaults.periodMilliseconds
        var maximumClients = defaults.maximumClients
        var prio = 0
        var prefill = 0
        var mode: UInt32?
        var periodGiven = false
        for part in parts {
            guard let equals = part.firstIndex(of: "=") else { throw .unknownOption(spec: spec, option: part) }
            let key = String(part[..<equals])
            let text = String(part[part.index(after: equals)...])
            if key == "mode" {
                guard !tcp, let bits = UInt32(text, radix: 8), bits <= 0o777 else {
                    throw .invalidValue(spec: spec, option: key, value: text)
                }
                mode = bits
                continue
            }
            guard let value = Self.parseSize(text), value > 0 || key == "prio" || key == "prefill" else {
                throw .invalidValue(spec: spec, option: key, value: text)
            }
            switch key {
            case "rate": rate = value
            case "ceil": ceil = value
            case "burst": burst = value
            case "max-bytes": maxBytes = UInt64(value)
            case "period":
                guard value <= Int(UInt32.max) else { throw .invalidValue(spec: spec, option: key, value: text) }
                period = UInt32(value)
                periodGiven = true
            case "max-clients": maximumClients = value
            case "prio": prio = value
            case "prefill":
                guard value <= 65_536 else { throw .invalidValue(spec: spec, option: key, value: text) }
                prefill = value
            default: throw .unknownOption(spec: spec, option: key)
            }
        }
        if periodGiven && maxBytes == nil { throw .periodWithoutMaxBytes(spec: spec) }
        let classRate = rate ?? BrokerClassConfiguration.unlimitedRate
        let shaping = HTBClassConfiguration(
            id: id, rate: classRate, ceil: ceil ?? classRate, burst: burst,
            prio: prio)
        let window = maxBytes.map { BrokerWindow(maxBytes: $0, periodMilliseconds: period ?? 1_000) }
        self.init(
            endpoint: endpoint,
            shaping: BrokerClassConfiguration(shaping: shaping, window: window, maximumClients: maximumClients),
            prefillBytes: prefill, socketMode: mode)
    }

    /// `123`, `20k`, `1M`, `2G` (powers of 1000); nil when not a number or on overflow.
    public static func parseSize(_ text: String) -> Int? {
        var digits = Substring(text)
        var multiplier = 1
        switch digits.last {
        case "k", "K": multiplier = 1_000
        case "M": multiplier = 1_000_000
        case "G": multiplier = 1_000_000_000
        default: break
        }
        if multiplier != 1 { digits = digits.dropLast() }
        guard let value = Int(digits), value >= 0 else { return nil }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }
}
