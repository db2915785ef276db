/// The virtio-rng building blocks above the libraries: ``EntropyBroker`` shares entropy supplies
/// among guests through a hierarchical token bucket, for `virtrngd` (EGD) and vhost-user backends alike.
public enum VirtRNGCore {}
