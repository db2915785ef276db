/// A client's state in the broker: its queue of requests, in order, and its place in the schedule.
struct ClientState {
    var generation: UInt32 = 0
    var live = true
    let classSlot: Int
    var sink: (BrokerDelivery) -> Void
    var queue = RequestQueue()
    /// Bytes of blocking reads in `queue` not yet served.
    var pendingBytes = 0
    /// The transport can take bytes (its write buffer is not full).
    var accepting = true
    /// In its class's round robin, its demand registered with the class.
    var scheduled = false
    var served: UInt64 = 0

    init(classSlot: Int, sink: @escaping (BrokerDelivery) -> Void) {
        self.classSlot = classSlot
        self.sink = sink
    }

    /// Frees the slot: drops the queue and the sink (and what the sink holds).
    mutating func release() {
        live = false
        queue.removeAll()
        pendingBytes = 0
        scheduled = false
        sink = { _ in }
    }
}

/// A FIFO of requests over one array that is compacted rather than shifted on every removal, so
/// steady pipelining allocates nothing once the array has grown to the client's depth.
struct RequestQueue {
    private var storage: ContiguousArray<BrokerRequest> = []
    private var head = 0

    var count: Int { storage.count - head }
    var isEmpty: Bool { head == storage.count }
    var first: BrokerRequest? { head < storage.count ? storage[head] : nil }

    mutating func append(_ request: BrokerRequest) {
        if head > 0 && head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        storage.append(request)
    }

    mutating func removeFirst() {
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        }
    }

    mutating func replaceFirst(with request: BrokerRequest) { storage[head] = request }

    mutating func removeAll() {
        storage.removeAll(keepingCapacity: false)
        head = 0
    }
}
