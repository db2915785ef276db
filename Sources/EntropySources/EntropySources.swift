/// Entropy sources for virtio-rng backends: getrandom, files and character devices, `/dev/hwrng`,
/// RDRAND/RDSEED, a remote EGD server, a prefetch pool and continuous health tests.
///
/// This target is laid out so that other targets can depend on it; its sources arrive with the
/// EntropySources issue. Until then it exposes only this namespace.
public enum EntropySources {}
