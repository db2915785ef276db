#!/usr/bin/env python3
"""A small EGD server (Python 3 stdlib only): the interop harness's stand-in for virtrngd and the
"simple Python EGD server" that virtrngd's throughput is compared with.

It speaks the whole EGD protocol (0x00 level, 0x01 non-blocking read, 0x02 blocking read, 0x03 write,
0x04 pid; an unknown command closes that client), answers pipelined requests in order, handles
requests split across reads, and sets TCP_NODELAY on TCP clients (without it ekeyd-egd-linux's
back-to-back requests meet Nagle and delayed ACK: about 40 ms a round).

It takes the part of virtrngd's command line that the harness uses, so that one can stand in for
the other:
  --socket PATH[,rate=R][,ceil=C]     a unix listener (repeatable); each listener is one class
  --tcp HOST:PORT[,rate=R][,ceil=C]   a TCP listener (repeatable); also a class
  --rate R, --ceil C                  defaults for classes that give none
  --source S                          getrandom (default) | urandom | file:PATH
Rates are bytes/s with an optional k, M or G (powers of 1000). A class with a rate gets a token bucket
of BURST bytes and never borrows (ceil is ignored): a simple stand-in for virtrngd's HTB, enough to
check the harness's share measurement. Blocking reads wait for tokens and are answered in order;
non-blocking reads get what the bucket holds.

On SIGTERM or SIGINT it logs one line per class and a total, then exits 0:
  egd_stub: served class=0 listener=unix:/tmp/x/egd0.sock bytes=65600 requests=1025 connections=1
  egd_stub: served total bytes=65600
"""
import argparse
import os
import selectors
import signal
import socket
import sys
import time

POOL_SIZE = 1 << 16  # bytes fetched from the source at a time
BURST = 4096  # bytes a rate-limited class's bucket holds
MAX_PENDING_OUTPUT = 1 << 20  # stop reading a client that does not read its answers


def log(message):
    print(f"egd_stub: {message}", file=sys.stderr, flush=True)


class Source:
    """Random bytes in slices of a pool refilled POOL_SIZE bytes at a time."""

    def __init__(self, spec):
        self.spec = spec
        self.file = None
        if spec == "getrandom":
            self.fill = lambda n: os.getrandom(n)
        elif spec == "urandom":
            self.file = open("/dev/urandom", "rb", buffering=0)
            self.fill = self._read_file
        elif spec.startswith("file:"):
            self.file = open(spec[len("file:"):], "rb", buffering=0)
            self.fill = self._read_file
        else:
            raise SystemExit(f"egd_stub: unknown --source {spec!r} (getrandom, urandom, file:PATH)")
        self.pool = b""
        self.offset = 0

    def _read_file(self, n):
        data = b""
        while len(data) < n:
            chunk = self.file.read(n - len(data))
            if not chunk:
                raise SystemExit(f"egd_stub: source {self.spec} ran dry")
            data += chunk
        return data

    def take(self, n):
        out = bytearray()
        while len(out) < n:
            if self.offset == len(self.pool):
                self.pool, self.offset = self.fill(POOL_SIZE), 0
            step = min(n - len(out), len(self.pool) - self.offset)
            out += self.pool[self.offset:self.offset + step]
            self.offset += step
        return bytes(out)


class Listener:
    """One listening socket = one class, with its counters and, if rate-limited, its bucket."""

    def __init__(self, index, name, sock, rate):
        self.index, self.name, self.sock, self.rate = index, name, sock, rate
        self.served = self.requests = self.connections = 0
        self.tokens, self.refilled = float(BURST), time.monotonic()

    def grant(self, count, partial):
        """Bytes that may be served now: `count`, or 0 (blocking) / what the bucket holds
        (`partial`) when the bucket is short. Without a rate, always `count`."""
        if not self.rate:
            return count
        now = time.monotonic()
        self.tokens = min(BURST, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        granted = count if self.tokens >= count else (int(self.tokens) if partial else 0)
        self.tokens -= granted
        return granted

    def ready_at(self, count):
        """When the bucket will hold `count` tokens."""
        return self.refilled + max(0.0, count - self.tokens) / self.rate


class Client:
    def __init__(self, sock, listener):
        self.sock, self.listener = sock, listener
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.events = selectors.EVENT_READ  # as registered with the selector
        self.wait_until = None  # a blocking read waits for its class's tokens until then


class Server:
    def __init__(self, args):
        self.source = Source(args.source)
        self.selector = selectors.DefaultSelector()
        self.listeners = []
        self.unix_paths = []
        self.stopping = False
        self.clients = set()
        for kind, spec, rate in args.listeners:
            if kind == "socket":
                if os.path.exists(spec):
                    os.unlink(spec)  # a stale socket from an earlier run
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(spec)
                self.unix_paths.append(spec)
                self._listen(sock, f"unix:{spec}", rate)
            else:
                host, _, port = spec.rpartition(":")
                family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.bind((host.strip("[]"), int(port)))
                self._listen(sock, f"tcp:{spec}", rate)
        if not self.listeners:
            raise SystemExit("egd_stub: give at least one --socket or --tcp")

    def _listen(self, sock, name, rate):
        sock.listen(64)
        sock.setblocking(False)
        listener = Listener(len(self.listeners), name, sock, rate)
        self.listeners.append(listener)
        self.selector.register(sock, selectors.EVENT_READ, listener)
        log(f"listening class={listener.index} listener={name}" + (f" rate={rate}" if rate else ""))

    def run(self):
        while not self.stopping:
            now, timeout = time.monotonic(), 0.2  # the timeout also bounds the reaction to SIGTERM
            for client in self.clients:
                if client.wait_until is not None:
                    timeout = min(timeout, max(0.0, client.wait_until - now))
            for key, events in self.selector.select(timeout=timeout):
                if isinstance(key.data, Listener):
                    self._accept(key.data)
                else:
                    self._service(key.data, events)
            now = time.monotonic()
            for client in [c for c in self.clients if c.wait_until is not None and c.wait_until <= now]:
                client.wait_until = None
                self._resume(client)
        self._report()
        for path in self.unix_paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _accept(self, listener):
        try:
            sock, _ = listener.sock.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.connections += 1
        client = Client(sock, listener)
        self.clients.add(client)
        self.selector.register(sock, selectors.EVENT_READ, client)

    def _close(self, client):
        self.clients.discard(client)
        self.selector.unregister(client.sock)
        client.sock.close()

    def _resume(self, client):
        """Answers requests that waited for tokens."""
        if not self._parse(client):
            self._close(client)
        else:
            self._flush(client)

    def _service(self, client, events):
        if events & selectors.EVENT_READ:
            try:
                data = client.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._close(client)
                return
            if data:
                client.inbuf += data
                if client.wait_until is None and not self._parse(client):
                    self._close(client)
                    return
        self._flush(client)

    def _parse(self, client):
        """Answers every complete request in inbuf, in order. False: unknown command, drop client."""
        buf, pos, listener = client.inbuf, 0, client.listener
        while pos < len(buf):
            command = buf[pos]
            if command == 0x00:  # entropy level in bits
                client.outbuf += (1 << 20).to_bytes(4, "big")
                pos += 1
            elif command in (0x01, 0x02):
                if pos + 2 > len(buf):
                    break
                count = buf[pos + 1]
                granted = listener.grant(count, partial=command == 0x01)
                if granted < count and command == 0x02:
                    client.wait_until = listener.ready_at(count)  # answered in order, later
                    break
                payload = self.source.take(granted)
                client.outbuf += (bytes([granted]) + payload) if command == 0x01 else payload
                listener.served += granted
                listener.requests += 1
                pos += 2
            elif command == 0x03:  # write entropy: accepted and discarded
                if pos + 4 > len(buf) or pos + 4 + buf[pos + 3] > len(buf):
                    break
                pos += 4 + buf[pos + 3]
            elif command == 0x04:
                pid = str(os.getpid()).encode()
                client.outbuf += bytes([len(pid)]) + pid
                pos += 1
            else:
                log(f"unknown command 0x{command:02x} from a client of class {listener.index}: closing it")
                return False
        del buf[:pos]
        return True

    def _flush(self, client):
        if client.outbuf:
            try:
                sent = client.sock.send(client.outbuf)
                del client.outbuf[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close(client)
                return
        # Wait for writability while output is pending; stop reading while too much is pending.
        events = selectors.EVENT_WRITE if client.outbuf else 0
        if len(client.outbuf) < MAX_PENDING_OUTPUT:
            events |= selectors.EVENT_READ
        if events != client.events:
            self.selector.modify(client.sock, events, client)
            client.events = events

    def _report(self):
        total = 0
        for listener in self.listeners:
            total += listener.served
            log(f"served class={listener.index} listener={listener.name} bytes={listener.served} "
                f"requests={listener.requests} connections={listener.connections}")
        log(f"served total bytes={total}")


def parse_size(text):
    """`20000`, `20k`, `1M`, `2G` (powers of 1000), as virtrngd reads rates."""
    multiplier = {"k": 1000, "K": 1000, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    value = int(text[:-1] if multiplier > 1 else text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value * multiplier


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", action="append", default=[], metavar="PATH[,opts]")
    parser.add_argument("--tcp", action="append", default=[], metavar="HOST:PORT[,opts]")
    parser.add_argument("--rate", type=parse_size, metavar="BYTES/s")
    parser.add_argument("--ceil", type=parse_size, metavar="BYTES/s")
    parser.add_argument("--source", default="getrandom")
    args = parser.parse_args()
    args.listeners = []
    for kind, specs in (("socket", args.socket), ("tcp", args.tcp)):
        for spec in specs:
            address, *options = spec.split(",")
            rate = args.rate
            for option in options:
                key, _, value = option.partition("=")
                if key not in ("rate", "ceil"):
                    parser.error(f"{spec}: unknown option {key!r} (the stub knows rate and ceil)")
                if key == "rate":
                    rate = parse_size(value)
            args.listeners.append((kind, address, rate))
    server = Server(args)

    def stop(signum, _frame):
        server.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started = time.monotonic()
    server.run()
    log(f"stopped after {time.monotonic() - started:.2f} s")


if __name__ == "__main__":
    main()
