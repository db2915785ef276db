import VirtQueue
