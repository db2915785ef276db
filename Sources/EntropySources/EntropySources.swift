/// Entropy sources for virtio-rng backends: getrandom, files and character devices, `/dev/hwrng`,
/// RDRAND/RDSEED, a remote EGD server, a prefetch pool and continuous health tests.
///
/// The sources arrive with the EntropySources issue. The blocking EGD transport they will use for a
/// remote EGD server is here already: `EGDConnection` and `EGDClient`.
public enum EntropySources {}
