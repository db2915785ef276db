/// The virtio-rng device model (queue, source and limiter) and the broker that shares entropy
/// sources among guests through a hierarchical token bucket.
///
/// This target is laid out so that the daemons can depend on it; the device model and broker
/// arrive with the virtrngd issue. Until then it exposes only this namespace.
public enum VirtRNGCore {}
