// swift-tools-version: 6.1
//
// VirtRNG: virtio-rng building blocks for Linux hosts.
//
// The first five libraries (VirtQueue, EGDCodec, RateLimit, EntropySources, VirtRNGCore) import
// nothing outside the Swift toolchain (and our own small C shims), so a hypervisor tool can depend
// on exactly the piece it needs. Benchmarks live in their own package under Benchmarks/ so that
// depending on VirtRNG never resolves the benchmark harness. No unsafe compiler flags anywhere: they would
// make this package unusable as a dependency.
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "VirtRNG",
    products: [
        .library(name: "VirtQueue", targets: ["VirtQueue"]),
        .library(name: "EGDCodec", targets: ["EGDCodec"]),
        .library(name: "RateLimit", targets: ["RateLimit"]),
        .library(name: "EntropySources", targets: ["EntropySources"]),
        .library(name: "VirtRNGCore", targets: ["VirtRNGCore"]),
        // Test support ships as products so that other hypervisor tools (and our benchmark package)
        // can drive a queue from the driver side or run a limiter on a manual clock.
        .library(name: "VirtQueueTestSupport", targets: ["VirtQueueTestSupport"]),
        .library(name: "RateLimitTestSupport", targets: ["RateLimitTestSupport"]),
        .library(name: "EGDCodecTestSupport", targets: ["EGDCodecTestSupport"]),
        .library(name: "EntropySourcesTestSupport", targets: ["EntropySourcesTestSupport"]),
        .library(name: "VirtRNGCoreTestSupport", targets: ["VirtRNGCoreTestSupport"]),
        .executable(name: "virtrng-sim", targets: ["virtrng-sim"]),
        .executable(name: "egd-client", targets: ["egd-client"]),
        .executable(name: "virtrngd", targets: ["virtrngd"]),
        .library(name: "EGDServer", targets: ["EGDServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // `make docs` (and CI) build every library's DocC catalog with --warnings-as-errors.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
        // The daemons' edges only: no library of the first five imports these.
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // MARK: C shims (our own; no system libraries)
        .target(name: "CVirtQueueAtomics"),
        // getrandom(2) and RDRAND/RDSEED/CPUID, which `import Glibc` does not reach (see TOOLCHAIN.md).
        .target(name: "CEntropyShims"),

        // MARK: Libraries
        .target(name: "VirtQueue", dependencies: ["CVirtQueueAtomics"], swiftSettings: strictSettings),
        .target(name: "EGDCodec", swiftSettings: strictSettings),
        .target(name: "RateLimit", swiftSettings: strictSettings),
        .target(name: "EntropySources", dependencies: ["CEntropyShims", "EGDCodec"], swiftSettings: strictSettings),
        .target(
            name: "VirtRNGCore",
            dependencies: ["VirtQueue", "EGDCodec", "RateLimit", "EntropySources"],
            swiftSettings: strictSettings
        ),

        // The EGD service over unix and TCP sockets: SwiftNIO channels in front of the broker.
        .target(
            name: "EGDServer",
            dependencies: [
                "EGDCodec", "EntropySources", "RateLimit", "VirtRNGCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),

        // MARK: Test support (driver-side simulation, fuzz harnesses, manual clocks)
        .target(name: "VirtQueueTestSupport", dependencies: ["VirtQueue"], swiftSettings: strictSettings),
        .target(name: "RateLimitTestSupport", dependencies: ["RateLimit"], swiftSettings: strictSettings),
        .target(name: "EGDCodecTestSupport", dependencies: ["EGDCodec"], swiftSettings: strictSettings),
        .target(
            name: "EntropySourcesTestSupport", dependencies: ["EntropySources", "EGDCodec"],
            swiftSettings: strictSettings),
        // A scripted supply for the broker: EGDServer's tests drive the broker with it too.
        .target(
            name: "VirtRNGCoreTestSupport",
            dependencies: ["VirtRNGCore", "EntropySources", "RateLimit", "RateLimitTestSupport"],
            swiftSettings: strictSettings),

        // MARK: Executables (thin: parse flags, wire, run)
        .executableTarget(
            name: "virtrng-sim",
            dependencies: [
                "VirtQueue", "VirtQueueTestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "egd-client",
            dependencies: [
                "EGDCodec", "EntropySources", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),

        .executableTarget(
            name: "virtrngd",
            dependencies: [
                "EGDServer", "EntropySources", "RateLimit", "VirtRNGCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),

        // MARK: Fuzz targets (libFuzzer; main.swift holds only the entry point)
        .executableTarget(
            name: "FuzzVirtQueue", dependencies: ["VirtQueueTestSupport"], path: "Fuzz/FuzzVirtQueue",
            exclude: ["Seeds"]),
        .executableTarget(
            name: "FuzzEGDServer",
            dependencies: ["EGDCodecTestSupport"],
            path: "Fuzz/FuzzEGDServer",
            exclude: ["Seeds"]
        ),
        .executableTarget(
            name: "FuzzBroker",
            dependencies: ["VirtRNGCoreTestSupport"],
            path: "Fuzz/FuzzBroker",
            exclude: ["Seeds"]
        ),
        .executableTarget(
            name: "FuzzEGDClient",
            dependencies: ["EGDCodecTestSupport"],
            path: "Fuzz/FuzzEGDClient",
            exclude: ["Seeds"]
        ),

        // MARK: Tests (Swift Testing)
        .testTarget(
            name: "VirtQueueTests",
            dependencies: ["VirtQueue", "VirtQueueTestSupport"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "EntropySourcesTests",
            dependencies: ["EntropySources", "EntropySourcesTestSupport"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "EGDCodecTests",
            dependencies: ["EGDCodec", "EGDCodecTestSupport"],
            swiftSettings: strictSettings
        ),
        // Runs the built egd-client binary against a small EGD server on a unix socket in a temp dir.
        .testTarget(
            name: "EGDClientTests",
            dependencies: ["egd-client", "EGDCodec", "EntropySources"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "VirtRNGCoreTests",
            dependencies: [
                "VirtRNGCore", "VirtRNGCoreTestSupport", "RateLimitTestSupport", "EntropySourcesTestSupport",
            ],
            swiftSettings: strictSettings
        ),
        // An in-process EGDServer on unix sockets, driven by raw-socket clients (hostile ones included).
        .testTarget(
            name: "EGDServerTests",
            dependencies: ["EGDServer", "EntropySources", "EntropySourcesTestSupport", "VirtRNGCore", "RateLimit"],
            swiftSettings: strictSettings
        ),
        // Runs the built virtrngd binary: configuration errors, signals, socket files.
        .testTarget(
            name: "VirtRNGDTests",
            dependencies: ["virtrngd", "EntropySources"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "RateLimitTests",
            dependencies: ["RateLimit", "RateLimitTestSupport"],
            swiftSettings: strictSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
