// Decisions per second of the limiters, each beside an empty loop of the same shape (pick a leaf,
// advance the instant, consume the result), so figures are read as ratios. Trees are built before
// `startMeasurement()`: the measured region must allocate nothing (CI gates mallocCountTotal == 0).
import Benchmark
import BenchmarkSupport
import RateLimit

typealias Instant = ContinuousClock.Instant

/// A root of `leaves × 1,000` B/s over groups of at most 100 leaves of 1,000 B/s, ceil = root rate.
func makeTree(leaves: Int, start: Instant) -> (HierarchicalTokenBucket<Instant>, [HTBClass]) {
    let rootRate = leaves * 1_000
    var classes = [HTBClassConfiguration(id: HTBClassID(1), rate: rootRate)]
    let groups = max(1, leaves / 100)
    for g in 0..<groups {
        let share = leaves / groups + (g < leaves % groups ? 1 : 0)
        classes.append(
            HTBClassConfiguration(
                id: HTBClassID(UInt32(2 + g)), parent: HTBClassID(1), rate: share * 1_000, ceil: rootRate))
    }
    var ids: [HTBClassID] = []
    for i in 0..<leaves {
        let id = HTBClassID(UInt32(100_000 + i))
        ids.append(id)
        classes.append(
            HTBClassConfiguration(
                id: id, parent: HTBClassID(UInt32(2 + i % groups)), rate: 1_000, ceil: rootRate, quantum: 1_000))
    }
    let htb = try! HierarchicalTokenBucket(classes: classes, start: start, maximumGrant: 1_024)
    return (htb, ids.map { htb.handle(for: $0)! })
}

let benchmarks: @Sendable () -> Void = {
    BenchmarkDefaults.apply()
    let tiny = Benchmark.Configuration(scalingFactor: .kilo)

    Benchmark("TokenBucket_request", configuration: tiny) { benchmark in
        let start = ContinuousClock.now
        var bucket = try! TokenBucket(capacity: 3_000, refillPeriod: .seconds(1), start: start)
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            blackHole(bucket.request(64, at: start.advanced(by: .microseconds(i))))
        }
    }

    Benchmark("TokenBucket_baseline_emptyLoop", configuration: tiny) { benchmark in
        let start = ContinuousClock.now
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            blackHole(start.advanced(by: .microseconds(i)))
        }
    }

    for leaves in [10, 1_000, 10_000] {
        Benchmark("HTB_request_leaves_\(leaves)", configuration: tiny) { benchmark in
            let start = ContinuousClock.now
            var (htb, handles) = makeTree(leaves: leaves, start: start)
            benchmark.startMeasurement()
            for i in benchmark.scaledIterations {
                let leaf = handles[i % leaves]
                blackHole(try? htb.request(64, from: leaf, at: start.advanced(by: .microseconds(i))))
            }
        }

        Benchmark("HTB_dequeue_leaves_\(leaves)", configuration: tiny) { benchmark in
            let start = ContinuousClock.now
            var (htb, handles) = makeTree(leaves: leaves, start: start)
            for leaf in handles { try! htb.addDemand(.max / 2, for: leaf) }
            var now = start
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                let decision = htb.dequeue(at: now)
                if case .waitUntil(let t) = decision { now = t }
                blackHole(decision)
            }
        }

        Benchmark("HTB_baseline_emptyLoop_leaves_\(leaves)", configuration: tiny) { benchmark in
            let start = ContinuousClock.now
            let (_, handles) = makeTree(leaves: leaves, start: start)
            benchmark.startMeasurement()
            for i in benchmark.scaledIterations {
                blackHole(handles[i % leaves])
                blackHole(start.advanced(by: .microseconds(i)))
            }
        }
    }
}
