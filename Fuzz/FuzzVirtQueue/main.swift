import VirtQueueTestSupport

/// One guest memory for the whole run: the harness zeroes it before each input.
let memory = VirtQueueFuzzer.makeMemory()

/// libFuzzer entry point: one input through the VirtQueue harness; a broken invariant crashes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtQueue(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    do {
        try VirtQueueFuzzer.run(UnsafeRawBufferPointer(start: data, count: size), reusing: memory)
    } catch {
        fatalError("VirtQueue invariant broken: \(error)")
    }
    return 0
}
