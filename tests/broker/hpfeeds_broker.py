#!/usr/bin/python3
"""A small hpfeeds 3 broker for tests, written from the protocol description
(../../shared/hpfeeds-vectors.md in the lead's notes), standard library only.

Behaves like the reference broker where the tests care:
  * sends INFO ("hpfeeds", 4-byte random nonce) first, expects AUTH with
    SHA1(nonce || secret); anything else first -> ERROR "First message was not AUTH";
  * wrong identity or secret -> ERROR "Authentication failed for <ident>", close;
  * per-identity publish/subscribe channel lists (ACLs); refusal -> ERROR
    "Authkey not allowed to pub here. ident=<i>, chan=<c>" (or "sub"), close;
  * oversized or malformed frames -> close without ERROR
    (limits: ERROR/PUBLISH 1048581, INFO/AUTH 281, (UN)SUBSCRIBE 1048576);
  * fan-out of each publish to every subscriber of the channel, the publisher
    included (echo);
  * a second SUBSCRIBE to the same channel on one connection is logged as
    "double-subscribe" and, unless --lenient, the connection is closed (the
    reference broker corrupts its channel state; a test must notice).

Usage:
  hpfeeds_broker.py [--port 0] [--config users.json] [--user ident:secret:pub1,pub2:sub1,sub2]...
                    [--tls-cert cert.pem --tls-key key.pem] [--record FILE]
Prints "PORT <n>" on stdout once listening on 127.0.0.1.  Logs one line per
event on stderr: "connect", "auth-ok ident=..", "auth-failed ident=..",
"publish ident=.. chan=.. len=..", "close", ...  With --record, every accepted
publish is appended to FILE as a JSON line {"ident","chan","payload_b64"}.

users.json: {"users": [{"ident": "writer", "secret": "secret",
             "pubchans": ["spam.mails"], "subchans": ["spam.mails"]}]}

Also a subscriber client for tests:
  hpfeeds_broker.py --subscribe --port P --ident I --secret S --chan C [--chan C2]
prints each received publish as a JSON line {"ident","chan","payload_b64"}.
"""
import argparse
import asyncio
import base64
import hashlib
import json
import os
import signal
import ssl
import struct
import sys

OP_ERROR, OP_INFO, OP_AUTH, OP_PUBLISH, OP_SUBSCRIBE, OP_UNSUBSCRIBE = range(6)
MAX_FRAME = {OP_ERROR: 1048581, OP_INFO: 281, OP_AUTH: 281, OP_PUBLISH: 1048581,
             OP_SUBSCRIBE: 1048576, OP_UNSUBSCRIBE: 1048576}


def log(*parts):
    print(" ".join(str(p) for p in parts), file=sys.stderr, flush=True)


def frame(op, body):
    return struct.pack("!IB", 5 + len(body), op) + body


def str8(b):
    if len(b) > 255:
        raise ValueError("str8 too long")
    return bytes([len(b)]) + b


def msg_error(text):
    return frame(OP_ERROR, text.encode())


def msg_info(name, nonce):
    return frame(OP_INFO, str8(name) + nonce)


def msg_auth(nonce, ident, secret):
    return frame(OP_AUTH, str8(ident) + hashlib.sha1(nonce + secret).digest())


def msg_publish(ident, chan, payload):
    return frame(OP_PUBLISH, str8(ident) + str8(chan) + payload)


def msg_subscribe(ident, chan, op=OP_SUBSCRIBE):
    return frame(op, str8(ident) + chan)


class Malformed(Exception):
    pass


def take_str8(body, pos):
    if pos >= len(body):
        raise Malformed("missing str8")
    n = body[pos]
    if pos + 1 + n > len(body):
        raise Malformed("str8 overruns frame")
    return body[pos + 1:pos + 1 + n], pos + 1 + n


class Unpacker:
    """Incremental frame splitter; raises Malformed on a bad header."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data

    def frames(self):
        while len(self.buf) >= 5:
            total, op = struct.unpack("!IB", self.buf[:5])
            if op not in MAX_FRAME or total < 5 or total > MAX_FRAME[op]:
                raise Malformed("bad header op=%d len=%d" % (op, total))
            if len(self.buf) < total:
                return
            body = bytes(self.buf[5:total])
            del self.buf[:total]
            yield op, body


class Broker:
    def __init__(self, users, record=None, lenient=False):
        self.users = users          # ident(bytes) -> (secret, pubset, subset)
        self.subs = {}              # chan(bytes) -> list of connections
        self.record = open(record, "a") if record else None
        self.lenient = lenient
        self.nconn = 0

    def fanout(self, ident, chan, payload):
        # recorded before anyone (the publisher's own echo included) hears of
        # it: a broker killed between the two must not have confirmed a
        # publish its record lacks
        if self.record:
            self.record.write(json.dumps({"ident": ident.decode("latin-1"),
                                          "chan": chan.decode("latin-1"),
                                          "payload_b64": base64.b64encode(payload).decode()}) + "\n")
            self.record.flush()
        data = msg_publish(ident, chan, payload)
        for c in list(self.subs.get(chan, ())):
            c.send(data)


class Conn(asyncio.Protocol):
    def __init__(self, broker):
        self.b = broker
        self.t = None
        self.unp = Unpacker()
        self.nonce = os.urandom(4)
        self.ident = None
        self.user = None
        self.subscribed = set()
        self.closed = False

    def connection_made(self, transport):
        self.t = transport
        self.b.nconn += 1
        self.id = self.b.nconn
        peer = transport.get_extra_info("peername")
        log("connect", "conn=%d" % self.id, "peer=%s:%d" % (peer[0], peer[1]))
        self.send(msg_info(b"hpfeeds", self.nonce))

    def send(self, data):
        if not self.closed:
            self.t.write(data)

    def refuse(self, text):
        log("error", "conn=%d" % self.id, repr(text))
        self.send(msg_error(text))
        self.close()

    def close(self):
        if not self.closed:
            self.closed = True
            self.t.close()

    def connection_lost(self, exc):
        self.closed = True
        for ch in self.subscribed:
            lst = self.b.subs.get(ch, [])
            while self in lst:
                lst.remove(self)
        log("close", "conn=%d" % self.id)

    def data_received(self, data):
        if self.closed:
            return
        self.unp.feed(data)
        try:
            for op, body in self.unp.frames():
                self.handle(op, body)
                if self.closed:
                    return
        except Malformed as e:
            log("malformed", "conn=%d" % self.id, str(e))
            self.close()

    def handle(self, op, body):
        if self.ident is None:
            if op != OP_AUTH:
                self.refuse("First message was not AUTH")
                return
            ident, pos = take_str8(body, 0)
            digest = body[pos:]
            if len(digest) != 20:
                raise Malformed("auth hash length")
            u = self.b.users.get(ident)
            if u is None or hashlib.sha1(self.nonce + u[0]).digest() != digest:
                log("auth-failed", "conn=%d" % self.id, "ident=%s" % ident.decode("latin-1"))
                self.refuse("Authentication failed for %s" % ident.decode("latin-1"))
                return
            self.ident, self.user = ident, u
            log("auth-ok", "conn=%d" % self.id, "ident=%s" % ident.decode("latin-1"))
            return
        if op == OP_PUBLISH:
            ident, pos = take_str8(body, 0)
            chan, pos = take_str8(body, pos)
            payload = body[pos:]
            if ident != self.ident:
                self.refuse("Invalid authkey in message, ident=%s" % ident.decode("latin-1"))
                return
            if chan not in self.user[1]:
                self.refuse("Authkey not allowed to pub here. ident=%s, chan=%s" %
                            (ident.decode("latin-1"), chan.decode("latin-1")))
                return
            log("publish", "conn=%d" % self.id, "ident=%s" % ident.decode("latin-1"),
                "chan=%s" % chan.decode("latin-1"), "len=%d" % len(payload))
            self.b.fanout(ident, chan, payload)
        elif op in (OP_SUBSCRIBE, OP_UNSUBSCRIBE):
            ident, pos = take_str8(body, 0)
            chan = body[pos:]
            name = "sub" if op == OP_SUBSCRIBE else "unsub"
            if op == OP_SUBSCRIBE and chan not in self.user[2]:
                self.refuse("Authkey not allowed to sub here. ident=%s, chan=%s" %
                            (ident.decode("latin-1"), chan.decode("latin-1")))
                return
            log(name, "conn=%d" % self.id, "ident=%s" % ident.decode("latin-1"),
                "chan=%s" % chan.decode("latin-1"))
            if op == OP_SUBSCRIBE:
                if chan in self.subscribed:
                    log("double-subscribe", "conn=%d" % self.id, "chan=%s" % chan.decode("latin-1"))
                    if not self.b.lenient:
                        self.close()
                        return
                self.subscribed.add(chan)
                self.b.subs.setdefault(chan, []).append(self)
            else:
                self.subscribed.discard(chan)
                lst = self.b.subs.get(chan, [])
                while self in lst:
                    lst.remove(self)
        elif op == OP_AUTH:
            self.refuse("Already authenticated")
        else:
            raise Malformed("unexpected opcode %d" % op)


def parse_users(args):
    users = {}
    if args.config:
        with open(args.config) as f:
            cfg = json.load(f)
        for u in cfg.get("users", []):
            users[u["ident"].encode()] = (u["secret"].encode(),
                                          {c.encode() for c in u.get("pubchans", [])},
                                          {c.encode() for c in u.get("subchans", [])})
    for spec in args.user or []:
        parts = spec.split(":")
        if len(parts) != 4:
            sys.exit("--user wants ident:secret:pub1,pub2:sub1,sub2")
        users[parts[0].encode()] = (parts[1].encode(),
                                    {c.encode() for c in parts[2].split(",") if c},
                                    {c.encode() for c in parts[3].split(",") if c})
    return users


async def serve(args):
    broker = Broker(parse_users(args), args.record, args.lenient)
    sslctx = None
    if args.tls_cert:
        sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sslctx.load_cert_chain(args.tls_cert, args.tls_key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(broker), "127.0.0.1", args.port,
                                      ssl=sslctx, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    print("PORT %d" % port, flush=True)
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    async with server:
        await stop.wait()


async def subscribe(args):
    """Test subscriber: prints received publishes as JSON lines; reconnects."""
    while True:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", args.port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        unp = Unpacker()
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                unp.feed(data)
                for op, body in unp.frames():
                    if op == OP_INFO:
                        name, pos = take_str8(body, 0)
                        w.write(msg_auth(body[pos:], args.ident.encode(), args.secret.encode()))
                        for c in args.chan:
                            w.write(msg_subscribe(args.ident.encode(), c.encode()))
                        print(json.dumps({"status": "subscribed"}), flush=True)
                    elif op == OP_PUBLISH:
                        ident, pos = take_str8(body, 0)
                        chan, pos = take_str8(body, pos)
                        print(json.dumps({"ident": ident.decode("latin-1"),
                                          "chan": chan.decode("latin-1"),
                                          "payload_b64": base64.b64encode(body[pos:]).decode()}),
                              flush=True)
                    elif op == OP_ERROR:
                        print(json.dumps({"error": body.decode("utf-8", "replace")}), flush=True)
        except (OSError, Malformed):
            pass
        w.close()
        await asyncio.sleep(0.5)


def main():
    ap = argparse.ArgumentParser(description="hpfeeds test broker")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--config")
    ap.add_argument("--user", action="append")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--record")
    ap.add_argument("--lenient", action="store_true")
    ap.add_argument("--subscribe", action="store_true")
    ap.add_argument("--ident")
    ap.add_argument("--secret")
    ap.add_argument("--chan", action="append", default=[])
    args = ap.parse_args()
    try:
        asyncio.run(subscribe(args) if args.subscribe else serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
