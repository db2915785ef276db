// EGD service over NIO
