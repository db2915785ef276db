import EGDCodec
import Testing
