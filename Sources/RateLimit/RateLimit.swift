/// Rate limiters on an injected monotonic clock.
public enum RateLimit {}
