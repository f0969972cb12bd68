"""A tiny DNS server for the relay tests (standard library only).

Answers MX, A and AAAA questions from a table over UDP on 127.0.0.1:

    dns = FakeDNS({"spammer.example": {"MX": [(10, "mx1.spammer.example")]},
                   "mx1.spammer.example": {"A": ["127.0.0.1"]}})
    dns.start(); ... "127.0.0.1:%d" % dns.port ...; dns.stop()

A name with a "CNAME" entry answers every question with the CNAME record
followed by the target's records of the asked type, as a recursive server
does ({"alias.example": {"CNAME": "target.example"}}).
A name in the table without the asked type gets an empty answer (NODATA);
a name not in the table gets NXDOMAIN.  A name mapped to "SERVFAIL" gets
SERVFAIL, and a name mapped to "DROP" gets no answer at all (a dead server).
Every question is counted in dns.queries.

PTR records ({"1.0.0.127.in-addr.arpa": {"PTR": ["host.example"]}}) may be
given as str, or as bytes (a name with any bytes in its labels: b"a\x01b.x",
labels split on b"."), or as a list of bytes labels (a label holding a dot:
[b"a.b", b"example"]).  Several PTRs are answered in the order given.
"""

import socket
import struct
import threading
import time

TYPES = {1: "A", 28: "AAAA", 15: "MX", 5: "CNAME", 12: "PTR"}


def _encode_name(name):
    if isinstance(name, bytes):
        labels = name.rstrip(b".").split(b".")
    elif isinstance(name, (list, tuple)):
        labels = list(name)
    else:
        labels = [l.encode("ascii") for l in name.rstrip(".").split(".")]
    out = b""
    for b in labels:
        if b:
            out += bytes([len(b)]) + b
    return out + b"\x00"


def _decode_name(data, off):
    labels = []
    while True:
        n = data[off]
        if n == 0:
            return ".".join(labels), off + 1
        if n & 0xC0:
            raise ValueError("compression in a question")
        labels.append(data[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n


class FakeDNS:
    def __init__(self, table=None):
        self.table = {k.lower().rstrip("."): v for k, v in (table or {}).items()}
        self.queries = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = None
        self.delay = 0.0     # seconds before each answer (a far resolver)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop = True
        try:
            self.sock.sendto(b"", ("127.0.0.1", self.port))
        except OSError:
            pass
        if self._thread:
            self._thread.join(2)
        self.sock.close()

    def _serve(self):
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            if self._stop or len(data) < 12:
                continue
            try:
                reply = self.answer(data)
            except (ValueError, IndexError):
                continue
            if reply:
                if self.delay:
                    time.sleep(self.delay)
                self.sock.sendto(reply, peer)

    def answer(self, data):
        qid, flags, qd = struct.unpack("!HHH", data[:6])
        if qd != 1:
            return None
        name, off = _decode_name(data, 12)
        qtype, qclass = struct.unpack("!HH", data[off:off + 4])
        question = data[12:off + 4]
        key = name.lower().rstrip(".")
        tname = TYPES.get(qtype, str(qtype))
        self.queries.append((key, tname))
        rd = flags & 0x0100
        entry = self.table.get(key)
        rcode = 0
        answers = []
        if entry is None:
            rcode = 3
        elif entry == "SERVFAIL":
            rcode = 2
        elif entry == "DROP":
            return None
        else:
            owner = b"\xc0\x0c"
            if "CNAME" in entry and tname != "CNAME":
                target = entry["CNAME"]
                rdata = _encode_name(target)
                answers.append(owner + struct.pack("!HHIH", 5, 1, 60, len(rdata)) + rdata)
                owner = _encode_name(target)
                entry = self.table.get(target.lower().rstrip("."), {})
                if not isinstance(entry, dict):
                    entry = {}
            for value in entry.get(tname, []):
                if tname == "A":
                    rdata = socket.inet_pton(socket.AF_INET, value)
                elif tname == "AAAA":
                    rdata = socket.inet_pton(socket.AF_INET6, value)
                elif tname == "MX":
                    pref, host = value
                    rdata = struct.pack("!H", pref) + _encode_name(host)
                elif tname == "PTR":
                    rdata = _encode_name(value)
                else:
                    continue
                answers.append(owner + struct.pack("!HHIH", qtype, 1, 60, len(rdata)) + rdata)
        hdr = struct.pack("!HHHHHH", qid, 0x8000 | 0x0400 | rd | 0x0080 | rcode, 1,
                          len(answers), 0, 0)
        return hdr + question + b"".join(answers)


if __name__ == "__main__":
    import sys
    import time
    d = FakeDNS({"example.test": {"MX": [(10, "mx.example.test")]},
                 "mx.example.test": {"A": ["127.0.0.1"]}}).start()
    print(d.address)
    sys.stdout.flush()
    time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 3600)
