import CoreMetrics
import EGDCodec
import EntropySources
import Logging
import NIOCore
import RateLimit
import VirtRNGCore

/// One EGD client connection: decodes its requests, hands them to the broker in order, writes the
/// broker's answers, and applies back-pressure both ways.
///
/// Input: requests are decoded one at a time and submitted only while the client has room (pending
/// blocking bytes below the broker's per-client limit less one request); otherwise the undecoded bytes
/// are kept (at most one read's worth) and reading stops until deliveries drain the pending bytes.
/// Output: answers accumulate in one buffer per broker call and are written with one flush; when the
/// channel stops being writable the client is paused in the broker (its share goes to others) and a
/// stall timer closes it if the peer never reads again.
final class EGDConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let service: EGDService
    let classID: HTBClassID
    var client: BrokerClient?
    var context: ChannelHandlerContext?
    var decoder: EGDRequestDecoder
    /// Input received but not yet decoded (held back by back-pressure).
    var stash: ByteBuffer?
    var out: ByteBuffer
    var isDirty = false
    /// A read was asked for while the input was held; issue it on resume.
    var readPending = false
    var inputHeld = false
    var inputClosed = false
    var closeAfterFlush = false
    /// The client sent something that is not EGD: its earlier requests are answered, then it is closed.
    var protocolFailed = false
    var stallTimer: Scheduled<Void>?
    var peer = "?"

    let bytesCounter: Counter?
    /// Bytes to send before the client asks (see `EGDListener.prefillBytes`).
    let prefill: Int

    init(service: EGDService, classID: HTBClassID, prefill: Int, allocator: ByteBufferAllocator) {
        self.service = service
        self.classID = classID
        self.prefill = prefill
        self.bytesCounter = service.classCounters[classID]
        self.decoder = EGDRequestDecoder(
            configuration: .init(acceptedCommands: service.configuration.acceptedCommands))
        self.out = allocator.buffer(capacity: 0)
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        peer = context.remoteAddress?.description ?? "unix"
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        service.admitted -= 1
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        do {
            client = try service.broker.connect(to: classID) { [unowned self] delivery in receive(delivery) }
        } catch {
            service.connectionsRefused.increment()
            service.logger.warning(
                "refusing connection", metadata: ["class": "\(classID)", "peer": "\(peer)", "reason": "\(error)"])
            context.close(promise: nil)
            return
        }
        service.register(self)
        if prefill > 0, let client {
            // Served like a blocking read the client never sent; QEMU takes the bytes for its next request.
            try? service.broker.submit(.read(prefill), for: client, at: .now)
            service.requestRun()
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stallTimer?.cancel()
        if let client {
            try? service.broker.disconnect(client)
            self.client = nil
            service.unregister(self)
        }
        stash = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        service.logger.debug("connection error", metadata: ["peer": "\(peer)", "error": "\(error)"])
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            // Half-close: answer what was asked, then close.
            inputClosed = true
            closeIfFinished()
        } else if let event = event as? IdleStateHandler.IdleStateEvent, event == .all {
            if let client, (try? service.broker.pendingRequests(of: client)) == 0, stash == nil {
                service.logger.debug("closing idle connection", metadata: ["peer": "\(peer)"])
                context.close(promise: nil)
            }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    // MARK: Input

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if stash == nil {
            stash = bytes
        } else {
            stash!.writeBuffer(&bytes)
        }
        drainInput()
        // Serve at once, in this connection's turn of the loop: the answer leaves with the next write
        // instead of after every other readable connection has been read (the latency of a tick).
        service.runNow()
    }

    func read(context: ChannelHandlerContext) {
        if inputHeld || service.shuttingDown {
            readPending = true
        } else {
            context.read()
        }
    }

    /// Whether the client may submit one more request of any size.
    var hasRoom: Bool {
        guard let client, let pending = try? service.broker.pendingBytes(of: client),
            let requests = try? service.broker.pendingRequests(of: client)
        else { return false }
        let limits = service.configuration.broker
        return pending <= limits.maximumPendingBytesPerClient - 255
            && requests < limits.maximumPendingRequestsPerClient
    }

    /// Decodes and submits stashed requests while the client has room.
    func drainInput() {
        guard let client, var input = stash, !closeAfterFlush, !protocolFailed else { return }
        let now = ContinuousClock.now
        var failure: EGDDecodingError?
        var refused: BrokerError?
        while input.readableBytes > 0 && hasRoom {
            let outcome = input.withUnsafeReadableBytes { raw -> (Int, Result<EGDRequest?, EGDDecodingError>) in
                var slice = raw[...]
                let result = Result { () throws(EGDDecodingError) -> EGDRequest? in try decoder.decode(&slice) }
                return (raw.count - slice.count, result)
            }
            input.moveReaderIndex(forwardBy: outcome.0)
            let request: EGDRequest
            switch outcome.1 {
            case .failure(let error):
                failure = error
            case .success(nil):
                continue
            case .success(let decoded?):
                request = decoded
                do throws(BrokerError) {
                    try submit(request, for: client, at: now)
                } catch {
                    refused = error
                }
            }
            if failure != nil || refused != nil { break }
        }
        stash = input.readableBytes > 0 ? input : nil
        if let failure {
            // Answer what came before the offending byte, read nothing more, then close.
            service.protocolErrors.increment()
            service.logger.warning(
                "closing client: not EGD", metadata: ["peer": "\(peer)", "class": "\(classID)", "error": "\(failure)"])
            stash = nil
            protocolFailed = true
            inputHeld = true
            closeIfFinished()
            return
        }
        if let refused {
            service.protocolErrors.increment()
            service.logger.warning(
                "closing client", metadata: ["peer": "\(peer)", "class": "\(classID)", "reason": "\(refused)"])
            closeNow()
            return
        }
        if stash != nil {
            inputHeld = true
            service.held[ObjectIdentifier(self)] = self
        }
    }

    func submit(_ request: EGDRequest, for client: BrokerClient, at now: ContinuousClock.Instant) throws(BrokerError) {
        switch request {
        case .readBlocking(let count): try service.broker.submit(.read(Int(count)), for: client, at: now)
        case .readNonBlocking(let count): try service.broker.submit(.readAvailable(Int(count)), for: client, at: now)
        case .entropyLevel: try service.broker.submit(.entropyLevel, for: client, at: now)
        case .reportPID: try service.broker.submit(.marker(0), for: client, at: now)
        case .writeEntropy(_, let data):
            // Parsed and discarded, as ekeyd does: a client's bytes never reach another client.
            service.writesDiscarded.increment(by: data.count)
        }
    }

    /// Back-pressure lifted: decode what was held and read again.
    func resumeInput() {
        guard !protocolFailed else { return }
        inputHeld = false
        drainInput()
        if !inputHeld && readPending && !service.shuttingDown {
            readPending = false
            context?.read()
        }
    }

    // MARK: Output

    /// The broker's sink: appends the answer to the output buffer (no I/O inside the broker's call).
    func receive(_ delivery: BrokerDelivery) {
        switch delivery {
        case .bytes(let bytes, _):
            out.writeBytes(bytes)
        case .available(let bytes):
            out.writeInteger(UInt8(bytes.count))
            out.writeBytes(bytes)
        case .entropyLevel(let bits):
            out.writeInteger(UInt32(clamping: bits), endianness: .big)
        case .marker:
            let text = String(service.pid).utf8
            out.writeInteger(UInt8(text.count))
            out.writeBytes(text)
        case .failed(let error):
            service.logger.warning(
                "failing client's requests: the source failed", metadata: ["peer": "\(peer)", "error": "\(error)"])
            closeAfterFlush = true
        }
        if !isDirty {
            isDirty = true
            service.dirty.append(self)
        }
    }

    /// Writes the accumulated answers with one flush.
    func flush() {
        isDirty = false
        guard let context else { return }
        if out.readableBytes > 0 {
            bytesCounter?.increment(by: out.readableBytes)
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
            // The socket usually takes it all at once and NIO lets go of the storage, so clearing
            // reuses it; if NIO still holds part of it, the next write copies (copy-on-write). A
            // buffer grown by a burst is let go, so idle connections do not keep bursts' memory.
            if out.capacity > 16_384 {
                out = context.channel.allocator.buffer(capacity: 0)
            } else {
                out.clear()
            }
        }
        if closeAfterFlush {
            closeNow()
        } else {
            closeIfFinished()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        guard let client else { return }
        let writable = context.channel.isWritable
        try? service.broker.setAcceptingBytes(writable, for: client)
        if writable {
            stallTimer?.cancel()
            stallTimer = nil
            service.requestRun()
        } else if stallTimer == nil {
            let timeout = service.configuration.stallTimeout.wholeNanoseconds
            stallTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(timeout)) { [self] in
                stallTimer = nil
                guard let context = self.context, !context.channel.isWritable else { return }
                service.logger.warning("closing client: it stopped reading its answers", metadata: ["peer": "\(peer)"])
                closeNow()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    /// After a half-close or during shutdown: closes once nothing is pending.
    func closeIfFinished() {
        guard inputClosed || protocolFailed || service.shuttingDown, let client else { return }
        guard stash == nil, (try? service.broker.pendingRequests(of: client)) == 0 else { return }
        closeNow()
    }

    func closeNow() {
        guard let context else { return }
        closeAfterFlush = false
        stash = nil
        context.close(promise: nil)
    }
}
