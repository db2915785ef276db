import EGDCodecTestSupport

/// libFuzzer entry: checks the server-side (request decoder) properties on one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEGDServer(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    EGDFuzzHarness.fuzzServer(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
