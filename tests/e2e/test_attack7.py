"""Hostile review (s7-attack7) of the AMQP broker name lookup and connect:
a broker whose TCP connect hangs (a listener whose accept queue is full drops
every SYN: the connect waits for its deadline), no rabbitmq-server needed."""

import signal
import socket
import time
import unittest

from harness import HOST, Collector, CollectorTestCase, free_port
from fixtures.fakedns import FakeDNS


class HungConnect(CollectorTestCase):

    autostart = False

    def setUp(self):
        super().setUp()
        # backlog 0: one connection fills the queue, every later SYN is dropped
        self.ls = socket.socket()
        self.ls.bind((HOST, 0))
        self.ls.listen(0)
        self.port = self.ls.getsockname()[1]
        self.filler = socket.create_connection((HOST, self.port), 5)
        self.dns = None

    def tearDown(self):
        self.filler.close()
        self.ls.close()
        if self.dns is not None:
            self.dns.stop()
        super().tearDown()

    def start(self, host, timeout, **kw):
        a = {"host": host, "port": self.port, "user": "u", "password": "p",
             "exchange": "x", "routing_key": "k", "timeout": timeout}
        a.update(kw)
        self.c = Collector(self.tmpdir, config={"amqp": a})
        self.c.start()

    # Not fixed (s7-attack7 report): the TCP connect runs inside librabbitmq's
    # open, on a socket the watchdog never sees (0.11 has no set_sockfd for
    # TLS); the stop waits for amqp.timeout (up to 3600 s; the unit's
    # TimeoutStopSec is 45).  Remove the decorator with the fix.
    @unittest.expectedFailure
    def test_sigterm_during_a_hung_tcp_connect_exits_promptly(self):
        # amqp.timeout 30: the connect (inside librabbitmq's open, no socket
        # the watchdog knows) must not make the stop wait for it
        self.start(HOST, 30)
        time.sleep(2)       # the thread is in the connect (nothing shows it)
        t0 = time.time()
        self.c.signal(signal.SIGTERM)
        while self.c.running and time.time() - t0 < 5 * self.slow:
            time.sleep(0.05)
        took = time.time() - t0
        self.assertFalse(self.c.running, "still running %.1f s after SIGTERM:\n%s"
                         % (took, self.c.stderr_tail()))
        self.assertEqual(self.c.stop(), 0)

    def test_connect_attempt_bounded_by_the_timeout_not_per_address(self):
        # A name with 4 addresses that all hang: librabbitmq's own lookup gave
        # the whole attempt one deadline (amqp.timeout) over every address;
        # each address its own makes it 4 x timeout.
        self.dns = FakeDNS({"many.test": {"A": ["127.0.0.1"] * 4}}).start()
        self.start("many.test", 2, dns_server=self.dns.address)
        self.wait(lambda: self.dns.queries, 10, "the lookup")
        t0 = time.time()
        self.wait(lambda: "cannot connect to broker" in self.c.stderr_text(), 30,
                  "the attempt's failure")
        took = time.time() - t0
        line = [l for l in self.c.stderr_text().splitlines() if "cannot connect" in l]
        self.assertLess(took, 2 + 1.5 * self.slow, "one attempt took %.1f s: %s"
                        % (took, line))


class Renegotiation(CollectorTestCase):
    """A TLS 1.2 broker that renegotiates after the handshake (openssl
    s_server's "r" command): amq_ssl_info_cb sees a second HANDSHAKE_START
    outside librabbitmq's open and dups the socket again."""

    autostart = False

    def setUp(self):
        super().setUp()
        self.srv = None
        self.ls = None

    def tearDown(self):
        if self.srv is not None and self.srv.poll() is None:
            self.srv.kill()
            self.srv.wait()
        if self.ls is not None:
            self.ls.close()
        super().tearDown()

    def test_sigterm_during_the_handshake_after_a_renegotiation_exits_promptly(self):
        import os
        import shutil
        import subprocess
        import threading
        from fixtures.hpfeeds import make_ca
        ca, crt, key = make_ca(self.tmpdir)
        cafile = os.path.join(self.tmpdir, "ca-copy.pem")
        shutil.copy(ca, cafile)
        port = free_port()
        self.srv = subprocess.Popen(
            ["openssl", "s_server", "-accept", "%s:%d" % (HOST, port), "-tls1_2",
             "-cert", crt, "-key", key, "-naccept", "1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = []

        def reader():
            while True:
                b = os.read(self.srv.stdout.fileno(), 65536)
                if not b:
                    return
                out.append(b)
        threading.Thread(target=reader, daemon=True).start()
        self.c = Collector(self.tmpdir, config={"amqp": {
            "host": HOST, "port": port, "user": "u", "password": "p",
            "exchange": "x", "routing_key": "k", "timeout": 5, "tls": True,
            "ca_file": cafile, "server_name": "broker.test"}})
        self.c.start()
        # the AMQP protocol header arrived over TLS: renegotiate
        self.wait(lambda: b"AMQP" in b"".join(out), 20, "the AMQP header")
        try:
            self.srv.stdin.write(b"r\n")
            self.srv.stdin.flush()
        except BrokenPipeError:
            raise AssertionError("s_server gone:\n%s\ncollector:\n%s" % (
                b"".join(out).decode("latin-1"), self.c.stderr_tail()))
        self.wait(lambda: b"renegotiat" in b"".join(out).lower(), 10,
                  "the renegotiation")
        # the login times out (no connection.start): the connection is dropped
        self.wait(lambda: "broker" in self.c.stderr_text() and
                  ("timed out" in self.c.stderr_text() or "login" in self.c.stderr_text()),
                  20, "the login's failure")
        self.srv.kill()
        self.srv.wait()
        # the next attempt meets a TLS endpoint that never answers its ClientHello
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((HOST, port))
        self.ls.listen(4)
        self.ls.settimeout(30 * self.slow)
        conn, _ = self.ls.accept()
        try:
            conn.settimeout(10 * self.slow)
            self.assertEqual(conn.recv(1), b"\x16")
            t0 = time.time()
            self.c.signal(signal.SIGTERM)
            while self.c.running and time.time() - t0 < 5 * self.slow:
                time.sleep(0.05)
            took = time.time() - t0
            self.assertFalse(self.c.running, "still running %.1f s after SIGTERM:\n%s\n"
                             "s_server:\n%s" % (took, self.c.stderr_tail(),
                                                b"".join(out[-20:]).decode("latin-1")))
            self.assertEqual(self.c.stop(), 0)
        finally:
            conn.close()
