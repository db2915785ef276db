import VirtRNGCoreTestSupport

/// libFuzzer entry: one program of broker operations, with every promise checked after each step.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBroker(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    BrokerFuzzHarness.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
