/// Placeholder replaced by the split queue implementation.
public enum VirtQueuePlaceholder {}
