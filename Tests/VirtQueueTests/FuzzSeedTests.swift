import Foundation
import Testing
import VirtQueue
import VirtQueueTestSupport

/// Builds the fuzz seed corpus with the simulated driver and runs it (and the checked-in corpus)
/// through the harness. `VIRTRNG_WRITE_SEEDS=1 swift test --filter FuzzSeedTests` rewrites
/// `Fuzz/FuzzVirtQueue/Seeds/`.
@Suite struct FuzzSeedTests {
    typealias Op = VirtQueueFuzzer.Operation

    struct Seed {
        let name: String
        let bytes: [UInt8]
    }

    static let seedDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/FuzzVirtQueue/Seeds")

    /// Lays a queue out in the harness's region A exactly as the harness will, lets `post` drive it,
    /// and serialises header, operations and region A's contents.
    static func seed(
        _ name: String, sizeLog2: UInt8, flags: UInt8, start: UInt16 = 0, operations: [(Op, UInt8)],
        post: (SimulatedDriver<BufferGuestMemory>) throws -> Void
    ) throws -> Seed {
        let memory = try BufferGuestMemory(regions: VirtQueueFuzzer.regionLayout)
        var features: VirtioFeatures = [.version1]
        if flags & 1 != 0 { features.insert(.indirectDescriptors) }
        if flags & 2 != 0 { features.insert(.eventIndex) }
        let regionA = memory.regions[0]
        let layout = RingLayout(
            size: 1 << sizeLog2, base: regionA.guestAddress, end: regionA.guestAddress + 0x6000, features: features,
            zeroLengthDescriptors: flags & 4 != 0 ? .skip : .reject)
        let driver = try SimulatedDriver(memory: memory, layout: layout, startIndex: start)
        try post(driver)
        let image = UnsafeRawBufferPointer(start: regionA.hostAddress, count: Int(regionA.size))
        let used = (image.lastIndex { $0 != 0 } ?? 0) + 1
        var bytes: [UInt8] = [sizeLog2, flags, UInt8(start & 0xFF), UInt8(start >> 8), UInt8(operations.count)]
        for (operation, argument) in operations { bytes += [operation.rawValue, argument] }
        bytes += image[0..<used]
        return Seed(name: name, bytes: bytes)
    }

    static func corpus() throws -> [Seed] {
        let serve: [(Op, UInt8)] = [
            (.pop, 0x11), (.addUsed, 4), (.needsNotification, 0), (.enableNotifications, 0),
            (.pop, 0x22), (.addUsed, 255), (.disableNotifications, 0), (.pop, 0), (.addUsedBatch, 0),
        ]
        return [
            try seed("virtio-rng-64", sizeLog2: 2, flags: 3, operations: serve) { try $0.postRNGBuffer() },
            try seed("virtio-rng-legacy-flags", sizeLog2: 3, flags: 0, operations: serve) { driver in
                for _ in 0..<3 { try driver.postRNGBuffer() }
            },
            try seed(
                "deep-ring", sizeLog2: 8, flags: 2,
                operations: Array(repeating: (.pop, 1), count: 40) + [(.addUsedBatch, 0)]
            ) { driver in for _ in 0..<128 { try driver.postRNGBuffer() } },
            try seed("long-chain", sizeLog2: 7, flags: 0, operations: serve) { driver in
                try driver.post(Array(repeating: .writable(32), count: 60))
            },
            try seed("indirect", sizeLog2: 3, flags: 1, operations: serve) { driver in
                try driver.postIndirect([.readable(16)] + Array(repeating: .writable(48), count: 20))
                try driver.post([.readable(8), .writable(8)])
            },
            try seed("wrap-65535", sizeLog2: 1, flags: 2, start: 65534, operations: serve + serve) { driver in
                try driver.postRNGBuffer()
                try driver.postRNGBuffer()
            },
            try seed("straddles-regions", sizeLog2: 2, flags: 0, operations: serve) { driver in
                try driver.writeDescriptor(index: 0, address: 0x1FFF0, length: 0x40, flags: 2, next: 0)
                try driver.publish(head: 0)
            },
            try seed("zero-length-skip", sizeLog2: 2, flags: 4, operations: serve) { driver in
                try driver.post([.writable(0), .writable(16)])
            },
            try seed(
                "hostile-guest", sizeLog2: 3, flags: 3,
                operations: [
                    (.guestPublishesHead, 3), (.pop, 0), (.guestCorruptsDescriptor, 12), (.pop, 0),
                    (.resetAndActivate, 0), (.guestBumpsAvailIndex, 3), (.availableCount, 0), (.pop, 0),
                ]
            ) { driver in
                try driver.writeDescriptor(index: 3, address: 0x10000 + 0x5000, length: 64, flags: 1 | 2, next: 3)
            },
        ]
    }

    @Test func generatedSeedsKeepEveryInvariant() throws {
        let seeds = try Self.corpus()
        for seed in seeds {
            #expect(throws: Never.self, "\(seed.name)") {
                try seed.bytes.withUnsafeBytes { try VirtQueueFuzzer.run($0) }
            }
        }
        if ProcessInfo.processInfo.environment["VIRTRNG_WRITE_SEEDS"] == "1" {
            try FileManager.default.createDirectory(at: Self.seedDirectory, withIntermediateDirectories: true)
            for seed in seeds {
                try Data(seed.bytes).write(to: Self.seedDirectory.appendingPathComponent(seed.name))
            }
        }
    }

    @Test func checkedInSeedsKeepEveryInvariant() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.seedDirectory.path)
        #expect(names.count >= 9)
        for name in names {
            let bytes = try Data(contentsOf: Self.seedDirectory.appendingPathComponent(name))
            #expect(throws: Never.self, "\(name)") { try bytes.withUnsafeBytes { try VirtQueueFuzzer.run($0) } }
        }
    }

    @Test func eachSeedExercisesWhatItWasMadeFor() throws {
        var statistics: [String: VirtQueueFuzzer.Statistics] = [:]
        for seed in try Self.corpus() {
            statistics[seed.name] = try seed.bytes.withUnsafeBytes { try VirtQueueFuzzer.run($0) }
        }
        #expect(statistics["virtio-rng-64"] == .init(chainsPopped: 1, usedAdded: 1, queueFailures: 0))
        #expect(statistics["virtio-rng-legacy-flags"] == .init(chainsPopped: 3, usedAdded: 3, queueFailures: 0))
        #expect(statistics["deep-ring"] == .init(chainsPopped: 40, usedAdded: 40, queueFailures: 0))
        #expect(statistics["indirect"]?.chainsPopped == 2)
        #expect(statistics["wrap-65535"]?.chainsPopped == 2)
        #expect(statistics["straddles-regions"]?.chainsPopped == 1)
        #expect(statistics["zero-length-skip"]?.chainsPopped == 1)
        #expect(statistics["hostile-guest"]?.queueFailures ?? 0 >= 1)
    }
}
