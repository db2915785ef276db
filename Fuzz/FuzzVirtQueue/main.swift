@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtQueue(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    0
}
