import RateLimit
