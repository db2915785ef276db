import EGDCodecTestSupport
import Foundation
import Testing

/// The checked-in seed corpora are exactly the generated ones, and every seed passes its harness.
@Suite struct EGDFuzzSeedTests {
    static let fuzzDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz")

    @Test(arguments: [("FuzzEGDServer", EGDFuzzSeeds.server), ("FuzzEGDClient", EGDFuzzSeeds.client)])
    func checkedInSeedsMatchTheGeneratedOnes(target: String, seeds: [(name: String, bytes: [UInt8])]) throws {
        let directory = Self.fuzzDirectory.appendingPathComponent(target).appendingPathComponent("Seeds")
        if ProcessInfo.processInfo.environment["EGD_REGENERATE_SEEDS"] == "1" {
            try? FileManager.default.removeItem(at: directory)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            for seed in seeds { try Data(seed.bytes).write(to: directory.appendingPathComponent(seed.name)) }
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(names == seeds.map(\.name).sorted())
        for seed in seeds {
            let onDisk = try Data(contentsOf: directory.appendingPathComponent(seed.name))
            #expect([UInt8](onDisk) == seed.bytes, "\(target)/Seeds/\(seed.name) differs from EGDFuzzSeeds")
        }
    }

    @Test func everySeedSatisfiesTheHarnessProperties() {
        for seed in EGDFuzzSeeds.server { seed.bytes.withUnsafeBytes { EGDFuzzHarness.fuzzServer($0) } }
        for seed in EGDFuzzSeeds.client { seed.bytes.withUnsafeBytes { EGDFuzzHarness.fuzzClient($0) } }
    }

    @Test(arguments: 0..<64)
    func randomStreamsSatisfyTheHarnessProperties(seed: Int) {
        // A small in-test fuzz: 64 reproducible random inputs per harness, biased to EGD bytes.
        var generator = SplitMix64(seed: UInt64(seed))
        let length = Int(generator.next() % 600)
        let bytes = (0..<length).map { _ in
            let value = generator.next()
            return value % 4 == 0 ? UInt8(truncatingIfNeeded: value >> 8) : UInt8(truncatingIfNeeded: value >> 8) % 6
        }
        bytes.withUnsafeBytes { EGDFuzzHarness.fuzzServer($0) }
        bytes.withUnsafeBytes { EGDFuzzHarness.fuzzClient($0) }
    }
}
