// swift-tools-version: 6.1
//
// Proof that another hypervisor tool can depend on VirtQueue alone: this package uses only the
// VirtQueue product, so its build compiles no SwiftNIO, no logging and no libftdi. CI builds and runs it
// and checks the build folder for modules that must not be there.
import PackageDescription

// A path dependency's identity is the last component of its directory (whatever the clone is called).
let virtRNG = String(Context.packageDirectory.split(separator: "/").dropLast(2).last ?? "virtrng").lowercased()

let package = Package(
    name: "VirtQueueConsumer",
    dependencies: [.package(path: "../..")],
    targets: [
        .executableTarget(name: "VirtQueueConsumer", dependencies: [.product(name: "VirtQueue", package: virtRNG)])
    ],
    swiftLanguageModes: [.v6]
)
