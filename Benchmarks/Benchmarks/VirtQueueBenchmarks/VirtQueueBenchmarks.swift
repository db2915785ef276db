import Benchmark
import BenchmarkSupport
import CBaselines
import VirtQueue

/// Pop + add_used (and the 64-byte fill of virtio-rng) in Swift, each beside the same loop in plain C
/// over an identical ring (the physical limit), an empty loop, memcpy and raw getrandom, all measured
/// in the same run. Compare ratios, not absolute times.
let benchmarks: @Sendable () -> Void = {
    BenchmarkDefaults.apply()

    func fixture(_ shape: RingFixture.Shape) -> RingFixture {
        do { return try RingFixture(shape) } catch { fatalError("fixture \(shape): \(error)") }
    }

    // MARK: Baselines

    Benchmark("Baseline.EmptyLoop", configuration: .init(scalingFactor: .mega)) { benchmark in
        for index in benchmark.scaledIterations { blackHole(index) }
    }

    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 64)
    let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 64)
    source.initializeMemory(as: UInt8.self, repeating: 0x5A)
    Benchmark("Baseline.Memcpy64", configuration: .init(scalingFactor: .mega)) { benchmark in
        for _ in benchmark.scaledIterations {
            cb_memcpy(destination.baseAddress, source.baseAddress, 64)
        }
    }

    let bulk = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 64)
    Benchmark("Baseline.Getrandom64KiB", configuration: .init(scalingFactor: .one)) { benchmark in
        for _ in benchmark.scaledIterations {
            precondition(cb_getrandom(bulk.baseAddress, bulk.count) == 0)
        }
    }
    Benchmark("Baseline.Getrandom64B", configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations {
            precondition(cb_getrandom(bulk.baseAddress, 64) == 0)
        }
    }

    // MARK: pop + add_used, one 64-byte writable descriptor per chain (Linux virtio_rng)

    let cSingle = fixture(.rngBuffer)
    Benchmark("VirtQueue.PopAddUsed.C", configuration: .init(scalingFactor: .mega)) { benchmark in
        let count = UInt64(benchmark.scaledIterations.count)
        precondition(cvq_loop_pop_add_used(&cSingle.cQueue, count) == count)
    }
    let single = fixture(.rngBuffer)
    Benchmark("VirtQueue.PopAddUsed.Swift", configuration: .init(scalingFactor: .mega)) { benchmark in
        var queue = single.queue
        defer { single.queue = queue }
        let memory = single.memory
        let chain = single.chain
        for _ in benchmark.scaledIterations {
            single.publish()
            guard try queue.popChain(into: chain, memory: memory) else { fatalError("ring empty") }
            try queue.addUsed(chain, written: UInt32(truncatingIfNeeded: chain.writableLength), memory: memory)
        }
    }

    // MARK: pop + 64-byte fill from a prefetched getrandom buffer + add_used

    let poolSize = 64 << 10
    let cPool = UnsafeMutableRawBufferPointer.allocate(byteCount: poolSize, alignment: 64)
    let cFill = fixture(.rngBuffer)
    Benchmark("VirtQueue.PopFill64.C", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let count = UInt64(benchmark.scaledIterations.count)
        let pool = cPool.baseAddress!.assumingMemoryBound(to: UInt8.self)
        precondition(cvq_loop_pop_fill64(&cFill.cQueue, count, pool, poolSize) == count)
    }
    let pool = UnsafeMutableRawBufferPointer.allocate(byteCount: poolSize, alignment: 64)
    let fill = fixture(.rngBuffer)
    Benchmark("VirtQueue.PopFill64.Swift", configuration: .init(scalingFactor: .kilo)) { benchmark in
        var cursor = poolSize  // as in the C loop: the pool is refilled on first use in each run
        var queue = fill.queue
        defer { fill.queue = queue }
        let memory = fill.memory
        let chain = fill.chain
        for _ in benchmark.scaledIterations {
            fill.publish()
            guard try queue.popChain(into: chain, memory: memory) else { fatalError("ring empty") }
            let written = chain.fillWritable(upTo: 64) { buffer in
                if cursor + buffer.count > poolSize {
                    precondition(cb_getrandom(pool.baseAddress, poolSize) == 0)
                    cursor = 0
                }
                let served = UnsafeMutableRawBufferPointer(rebasing: pool[cursor..<cursor + buffer.count])
                buffer.copyMemory(from: UnsafeRawBufferPointer(served))
                served.initializeMemory(as: UInt8.self, repeating: 0)  // a served byte is never served again
                cursor += buffer.count
                return buffer.count
            }
            try queue.addUsed(chain, written: UInt32(written), memory: memory)
        }
    }

    // MARK: Long chains and deep rings, direct and indirect

    for (name, shape) in [
        ("Chain128", RingFixture.Shape.chain128), ("Chains128Batch", .chains128),
        ("IndirectChain128", .indirectChain128), ("IndirectChains128Batch", .indirectChains128),
    ] {
        let cFixture = fixture(shape)
        Benchmark("VirtQueue.\(name).C", configuration: .init(scalingFactor: .kilo)) { benchmark in
            let count = UInt64(benchmark.scaledIterations.count)
            let served =
                cFixture.batch == 1
                ? cvq_loop_pop_add_used(&cFixture.cQueue, count)
                : cvq_loop_batch(&cFixture.cQueue, count, cFixture.batch) / UInt64(cFixture.batch)
            precondition(served == count)
        }
        let swiftFixture = fixture(shape)
        Benchmark("VirtQueue.\(name).Swift", configuration: .init(scalingFactor: .kilo)) { benchmark in
            var queue = swiftFixture.queue
            defer { swiftFixture.queue = queue }
            let memory = swiftFixture.memory
            let chain = swiftFixture.chain
            let used = swiftFixture.used
            let batch = Int(swiftFixture.batch)
            for _ in benchmark.scaledIterations {
                swiftFixture.publish()
                for index in 0..<batch {
                    guard try queue.popChain(into: chain, memory: memory) else { fatalError("ring empty") }
                    used[index] = UsedElement(
                        head: chain.head, length: UInt32(truncatingIfNeeded: chain.writableLength))
                }
                try queue.addUsed(contentsOf: UnsafeMutableBufferPointer(rebasing: used[0..<batch]), memory: memory)
            }
        }
    }
}
