import EGDCodecTestSupport

/// libFuzzer entry: checks the client-side (response decoder) properties on one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEGDClient(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    EGDFuzzHarness.fuzzClient(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
