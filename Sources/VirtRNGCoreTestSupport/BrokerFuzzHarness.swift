import EntropySources
import RateLimit
public import RateLimitTestSupport
import VirtRNGCore

/// A structure-aware fuzz harness for ``EntropyBroker``: the input is a program of operations (clients
/// connecting, disconnecting, pausing, submitting every kind of request with hostile counts; the
/// supply running dry, failing and recovering; time moving, backwards too) on a broker with three
/// classes (two leaves under a capped parent, one windowed). After every step it checks what the
/// broker promises, and traps (a fuzzer finding) when a promise is broken:
///
/// - every client's answers come in the order of its requests, each blocking read is answered with
///   exactly its count, in pieces, `completesRead` on the last only; a non-blocking read with at most
///   its count;
/// - every byte delivered is the supply's next byte, so none is invented, repeated or given twice;
/// - nothing is delivered to a disconnected client, nor beyond what was asked;
/// - pending bytes and requests never exceed the limits, and refused requests are typed errors.
public enum BrokerFuzzHarness {
    /// The fuzzed broker runs on the test clock of RateLimitTestSupport.
    public typealias Instant = ManualClock.Instant

    /// What a client expects next, in order.
    enum Expected {
        case read(remaining: Int)
        case available(maximum: Int)
        case level
        case marker(UInt64)
    }

    final class Client {
        var handle: BrokerClient
        var expected: [Expected] = []
        var head = 0
        var connected = true
        let supply: ScriptedSupply
        let ledger: Ledger

        init(handle: BrokerClient, supply: ScriptedSupply, ledger: Ledger) {
            self.handle = handle
            self.supply = supply
            self.ledger = ledger
        }

        func receive(_ delivery: BrokerDelivery) {
            precondition(connected, "a delivery reached a disconnected client")
            precondition(head < expected.count, "a delivery nobody asked for: \(delivery)")
            switch (expected[head], delivery) {
            case (.read(let remaining), .bytes(let bytes, let completes)):
                precondition(bytes.count <= remaining, "more bytes than the read asked for")
                ledger.check(bytes)
                let left = remaining - bytes.count
                precondition(completes == (left == 0), "completesRead on the wrong piece")
                if left == 0 { head += 1 } else { expected[head] = .read(remaining: left) }
            case (.available(let maximum), .available(let bytes)):
                precondition(bytes.count <= maximum, "a non-blocking read got more than its count")
                ledger.check(bytes)
                head += 1
            case (.level, .entropyLevel(let bits)):
                precondition(bits >= 0 && bits % 8 == 0, "a level that is not whole bytes")
                head += 1
            case (.marker(let tag), .marker(let got)):
                precondition(tag == got, "markers out of order")
                head += 1
            case (_, .failed):
                // Under failRequests every pending request is dropped.
                head = expected.count
            default:
                preconditionFailure("answer \(delivery) where \(expected[head]) was due")
            }
        }

        var pendingExpected: Int { expected.count - head }
    }

    /// Checks every delivered byte against the supply's stream, in delivery order.
    final class Ledger {
        let supply: ScriptedSupply
        var delivered = 0

        init(supply: ScriptedSupply) { self.supply = supply }

        func check(_ bytes: UnsafeRawBufferPointer) {
            guard !bytes.isEmpty else { return }
            precondition(delivered + bytes.count <= supply.produced, "bytes the supply never handed out")
            let expected = supply.expectedBytes(delivered..<(delivered + bytes.count))
            precondition(expected.elementsEqual(bytes), "a byte that is not the supply's next")
            delivered += bytes.count
        }
    }

    /// Runs one input. Returns the number of operations executed (for statistics).
    @discardableResult
    public static func run(_ input: UnsafeRawBufferPointer) -> Int {
        var reader = ByteReader(input)
        let policy: SourceFailurePolicy = reader.next() & 1 == 0 ? .wait : .failRequests
        let limits = BrokerConfiguration(
            maximumPendingBytesPerClient: 600, maximumPendingRequestsPerClient: 12,
            maximumGrant: 64 + Int(reader.next() % 4) * 100, bytesPerRun: 2_000, failurePolicy: policy)
        let supply = ScriptedSupply(available: Int(reader.next()) * 40, maximumPerFill: 1 + Int(reader.next()) * 7)
        let ledger = Ledger(supply: supply)
        var now = Instant(nanoseconds: 0)
        guard
            let broker = try? EntropyBroker(
                supply: supply, configuration: limits, start: now, sourceReady: {}, onEvent: { _ in })
        else { preconditionFailure("valid configuration refused") }
        let parent = HTBClassConfiguration(id: HTBClassID(1), rate: 5_000, ceil: 20_000)
        let classes = [
            BrokerClassConfiguration(shaping: parent),
            BrokerClassConfiguration(
                shaping: HTBClassConfiguration(id: HTBClassID(2), parent: HTBClassID(1), rate: 2_000, ceil: 20_000),
                clientQuantum: 1 + Int(reader.next() % 200), maximumClients: 4),
            BrokerClassConfiguration(
                shaping: HTBClassConfiguration(id: HTBClassID(3), parent: HTBClassID(1), rate: 3_000, ceil: 10_000),
                maximumClients: 4),
            BrokerClassConfiguration(
                shaping: HTBClassConfiguration(id: HTBClassID(4), rate: 100_000),
                window: BrokerWindow(maxBytes: 700, periodMilliseconds: 50), maximumClients: 4),
        ]
        for c in classes {
            do { try broker.addClass(c, at: now) } catch { preconditionFailure("class refused: \(error)") }
        }
        var clients: [Client] = []
        var operations = 0
        while !reader.isAtEnd {
            operations += 1
            let op = reader.next()
            let argument = reader.next()
            switch op % 12 {
            case 0, 1:
                let id = HTBClassID(UInt32(2 + argument % 3))
                var client: Client?
                do {
                    let handle = try broker.connect(to: id) { client?.receive($0) }
                    let made = Client(handle: handle, supply: supply, ledger: ledger)
                    client = made
                    clients.append(made)
                } catch .classFull {
                } catch {
                    preconditionFailure("connect: \(error)")
                }
            case 2:
                guard !clients.isEmpty else { continue }
                let c = clients.remove(at: Int(argument) % clients.count)
                do { try broker.disconnect(c.handle) } catch { preconditionFailure("disconnect: \(error)") }
                c.connected = false
                precondition((try? broker.pendingBytes(of: c.handle)) == nil, "a stale handle still works")
            case 3, 4, 5, 6:
                guard !clients.isEmpty else { continue }
                let c = clients[Int(argument) % clients.count]
                let count = Int(reader.next()) * (op & 16 == 0 ? 1 : 5) - (op & 32 == 0 ? 0 : 3)
                let kind = reader.next() % 4
                let request: BrokerRequest =
                    switch kind {
                    case 0: .read(count)
                    case 1: .readAvailable(count)
                    case 2: .entropyLevel
                    default: .marker(UInt64(operations))
                    }
                let expectation: Expected =
                    switch request {
                    case .read(let n): .read(remaining: n)
                    case .readAvailable(let n): .available(maximum: n)
                    case .entropyLevel: .level
                    case .marker(let tag): .marker(tag)
                    }
                let pendingBefore = (try? broker.pendingBytes(of: c.handle)) ?? -1
                let requestsBefore = (try? broker.pendingRequests(of: c.handle)) ?? -1
                // Record the expectation before submitting: an answer may come at once.
                c.expected.append(expectation)
                do {
                    try broker.submit(request, for: c.handle, at: now)
                    precondition(requestsBefore < 12, "a request beyond the limit was accepted")
                    precondition(kind != 0 || pendingBefore + count <= 600, "pending bytes beyond the limit")
                } catch .invalidCount(let n) {
                    c.expected.removeLast()
                    precondition(n < 0 && kind <= 1 && requestsBefore < 12, "a valid count refused")
                } catch .tooManyPendingBytes {
                    c.expected.removeLast()
                    precondition(kind == 0 && pendingBefore + count > 600, "refused within the byte limit")
                } catch .tooManyPendingRequests {
                    c.expected.removeLast()
                    precondition(requestsBefore >= 12, "refused within the request limit")
                } catch {
                    preconditionFailure("submit: \(error)")
                }
            case 7:
                guard !clients.isEmpty else { continue }
                let c = clients[Int(argument) % clients.count]
                do {
                    try broker.setAcceptingBytes(argument & 1 == 0, for: c.handle)
                } catch {
                    preconditionFailure("pause: \(error)")
                }
            case 8:
                supply.refill(Int(argument) * 16)
            case 9:
                switch argument % 4 {
                case 0:
                    supply.fail(
                        with: .unhealthy(source: "fuzz", failure: .repetitionCount(value: 0, count: 9, cutoff: 5)))
                case 1: supply.fail(with: .readFailed(source: "fuzz", errno: SystemErrno(5)))
                case 2: supply.error = nil
                default: supply.maximumPerFill = 1 + Int(argument)
                }
            case 10:
                // Time moves forward by up to ~0.5 s, sometimes backwards (it must be ignored).
                let step = Int64(argument) * 2_000_000
                now = Instant(nanoseconds: argument == 255 ? now.nanoseconds - 5_000_000 : now.nanoseconds + step)
            default:
                _ = broker.run(at: now)
            }
            // Limits hold after every step.
            for c in clients {
                guard let pending = try? broker.pendingBytes(of: c.handle),
                    let requests = try? broker.pendingRequests(of: c.handle)
                else { preconditionFailure("a live client lost its handle") }
                precondition(pending <= 600, "pending bytes above the limit")
                precondition(requests <= 12, "pending requests above the limit")
                precondition(requests == c.pendingExpected || policy == .failRequests, "requests lost or invented")
            }
        }
        // Drain: with the supply healthy and time moving, every read is answered in full.
        supply.error = nil
        supply.maximumPerFill = .max
        supply.refill(1 << 20)
        for c in clients { try? broker.setAcceptingBytes(true, for: c.handle) }
        for _ in 0..<400 {
            now = now.advanced(by: .milliseconds(50))
            _ = broker.run(at: now)
            if clients.allSatisfy({ $0.pendingExpected == 0 }) { break }
        }
        for c in clients {
            precondition(c.pendingExpected == 0, "a request never answered: \(c.expected[c.head...].first!)")
        }
        return operations
    }

    struct ByteReader {
        let bytes: UnsafeRawBufferPointer
        var index = 0
        init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
        var isAtEnd: Bool { index >= bytes.count }
        mutating func next() -> UInt8 {
            guard index < bytes.count else { return 0 }
            defer { index += 1 }
            return bytes[index]
        }
    }
}
