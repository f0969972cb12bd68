"""A fake MX for the relay tests: aiosmtpd (Debian python3-aiosmtpd) on
127.0.0.1, run in a thread of the test process.

    mx = FakeMX(starttls=True).start()   # mx.port, mx.messages
    mx = FakeMX(mode="hang", host="127.0.0.2", port=p)  # accepts, never greets
    mx = FakeMX(mode="reject")            # 554 to RCPT
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
        self.sock = socket.socket()
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


class FakeMX:
    def __init__(self, starttls=False, mode="accept", port=None, host="127.0.0.1"):
        self.host = host
        self.starttls = starttls
        self.mode = mode
        self.data_reply = None     # what to answer DATA with, else Postfix's "queued as"
        self.messages = []
        self.port = port
        self._ctl = None
        self._hang = None

    def start(self):
        if self.mode == "hang":
            self._hang = _Hang(self.host, self.port or 0)
            self._hang.start()
            self.port = self._hang.port
            return self
        if not HAVE_AIOSMTPD:
            raise RuntimeError("python3-aiosmtpd is not installed")
        if self.port is None:
            s = socket.socket()
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
