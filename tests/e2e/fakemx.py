"""A fake MX for the relay tests: aiosmtpd (Debian python3-aiosmtpd) on
127.0.0.1, run in a thread of the test process.

    mx = FakeMX(starttls=True).start()   # mx.port, mx.messages
    mx = FakeMX(mode="hang", host="127.0.0.2", port=p)  # accepts, never greets
    mx = FakeMX(mode="reject")            # 554 to RCPT
    mx = FakeMX(mode="record")            # raw: mx.raw_data = [exact DATA bytes]
    mx = FakeMX(mode="drip", drip=1.0)    # greets one byte a second, never a line
Every mode counts the TCP connections it accepted in mx.connections.
Each message is kept as (envelope_from, [rcpts], raw bytes after the
server's own un-stuffing, tls_used).
"""

import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time

try:
    from aiosmtpd.controller import Controller
    HAVE_AIOSMTPD = True
except ImportError:     # pragma: no cover
    HAVE_AIOSMTPD = False


def _cert():
    d = tempfile.mkdtemp(prefix="fakemx-")
    cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=fake-mx.test"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class _Handler:
    def __init__(self, owner):
        self.owner = owner

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.owner.mode == "reject":
            return "554 5.7.1 <%s>: Relay access denied" % address
        if self.owner.mode == "tempfail":
            return "451 4.3.0 try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        tls = session.ssl is not None
        self.owner.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                    envelope.original_content, tls))
        if self.owner.data_reply:
            return self.owner.data_reply
        return "250 2.0.0 Ok: queued as FAKE%d" % len(self.owner.messages)


class _Hang:
    """Accepts TCP connections and never says anything."""

    def __init__(self, host="127.0.0.1", port=0):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(50)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except socket.timeout:
                continue
            except OSError:
                return

    def start(self):
        self.thread.start()

    def stop(self):
        self._stop = True
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


class _Raw(_Hang):
    """A raw-socket MX, one thread per connection.  "record": a minimal SMTP
    server keeping the exact bytes between 354 and the final dot; "drip":
    writes "220 " then one byte every `drip` seconds, never ending the line
    (each byte restarts a per-read timeout; only a total deadline ends it)."""

    def __init__(self, mode, host="127.0.0.1", port=0, drip=1.0):
        super().__init__(host, port)
        self.mode = mode
        self.drip = drip
        self.raw_data = []

    def _run(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(30)
            if self.mode == "drip":
                c.sendall(b"220 ")
                while not self._stop:
                    time.sleep(self.drip)
                    c.sendall(b"x")
                return
            f = c.makefile("rb")
            c.sendall(b"220 raw.test ESMTP\r\n")
            while not self._stop:
                line = f.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    c.sendall(b"250 raw.test\r\n")
                elif verb == b"DATA":
                    c.sendall(b"354 go\r\n")
                    data = b""
                    while not data.endswith(b"\r\n.\r\n"):
                        chunk = c.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    self.raw_data.append(data)
                    c.sendall(b"250 2.0.0 Ok: queued as RAW%d\r\n" % len(self.raw_data))
                elif verb == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    return
                else:
                    c.sendall(b"250 ok\r\n")
        except OSError:
            pass


class FakeMX:
    def __init__(self, starttls=False, mode="accept", port=None, host="127.0.0.1", drip=1.0):
        self.host = host
        self.drip = drip
        self.starttls = starttls
        self.mode = mode
        self.data_reply = None     # what to answer DATA with, else Postfix's "queued as"
        self.messages = []
        self.port = port
        self._ctl = None
        self._hang = None

    @property
    def connections(self):
        """TCP connections accepted so far (hang, record and drip modes)."""
        return len(self._hang.conns) if self._hang else None

    @property
    def raw_data(self):
        return self._hang.raw_data if self._hang else []

    def start(self):
        if self.mode in ("record", "drip"):
            self._hang = _Raw(self.mode, self.host, self.port or 0, self.drip)
            self._hang.start()
            self.port = self._hang.port
            return self
        if self.mode == "hang":
            self._hang = _Hang(self.host, self.port or 0)
            self._hang.start()
            self.port = self._hang.port
            return self
        if not HAVE_AIOSMTPD:
            raise RuntimeError("python3-aiosmtpd is not installed")
        if self.port is None:
            s = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
            s.bind((self.host, 0))
            self.port = s.getsockname()[1]
            s.close()
        kw = {}
        if self.starttls:
            cert, key = _cert()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            kw = {"tls_context": ctx, "require_starttls": False}
        self._ctl = Controller(_Handler(self), hostname=self.host, port=self.port,
                               server_hostname="fake-mx.test", decode_data=False,
                               ready_timeout=10, **kw)
        self._ctl.start()
        return self

    def stop(self):
        if self._ctl:
            self._ctl.stop()
        if self._hang:
            self._hang.stop()

    def wait_messages(self, n, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            if len(self.messages) >= n:
                return self.messages
            time.sleep(0.05)
        return self.messages
