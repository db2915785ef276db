// swift-tools-version: 6.1
//
// Benchmarks for VirtRNG, kept in their own package so that depending on VirtRNG never resolves the
// benchmark harness. Run with `make bench` (or `swift package --package-path Benchmarks benchmark`).
// Every suite measures its in-run baseline (a C loop, memcpy, raw getrandom, an empty loop) beside the
// code under test, because these machines are noisy: compare ratios, not absolute figures.
import PackageDescription

// A path dependency's identity is the last component of its directory, which is whatever the
// repository was cloned as; compute it instead of hard-coding a checkout name.
let rootIdentity = String(Context.packageDirectory.split(separator: "/").dropLast().last ?? "virtrng").lowercased()

func benchmarkTarget(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .executableTarget(
        name: name,
        dependencies: dependencies + ["BenchmarkSupport", .product(name: "Benchmark", package: "benchmark")],
        path: "Benchmarks/\(name)",
        swiftSettings: [.enableUpcomingFeature("ExistentialAny")],
        plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    )
}

let package = Package(
    name: "VirtRNGBenchmarks",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // Physical-limit baselines written in plain C: the same ring validation, memcpy, getrandom.
        .target(name: "CBaselines"),
        // The load generator of scripts/bench-daemon.py (virtrngd in its own process; see the script).
        .executableTarget(name: "egd-load", dependencies: ["CBaselines"]),
        .target(
            name: "BenchmarkSupport",
            dependencies: [.product(name: "Benchmark", package: "benchmark")],
            swiftSettings: [.enableUpcomingFeature("InternalImportsByDefault")]
        ),
        benchmarkTarget(
            "VirtQueueBenchmarks",
            [
                "CBaselines",
                .product(name: "VirtQueue", package: rootIdentity),
                .product(name: "VirtQueueTestSupport", package: rootIdentity),
            ]
        ),
        benchmarkTarget("RateLimitBenchmarks", [.product(name: "RateLimit", package: rootIdentity)]),
        benchmarkTarget("EGDCodecBenchmarks", [.product(name: "EGDCodec", package: rootIdentity)]),
        benchmarkTarget(
            "EntropySourcesBenchmarks",
            [
                "CBaselines",
                .product(name: "EntropySources", package: rootIdentity),
                .product(name: "EntropySourcesTestSupport", package: rootIdentity),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
