/// The Entropy Gathering Daemon protocol: requests and responses, encoders and incremental decoders.
public enum EGDProtocol {}
