import RateLimit
import Testing
