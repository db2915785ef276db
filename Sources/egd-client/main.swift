// egd-client: talks to any EGD server. Parsing and commands live in EGDClientCommand.swift; the
// transport and the protocol in EntropySources (EGDClient) and EGDCodec.
import ArgumentParser

EGDClientCommand.main()
