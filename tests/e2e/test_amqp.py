"""The AMQP 0-9-1 output against a real, private rabbitmq-server (fixtures/rabbitmq.py):
publisher confirms move the cursor, nothing acknowledged by SMTP is ever lost.
"""

import base64
import email
import email.policy
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import unittest

import harness
from harness import HOST, Collector, CollectorTestCase, free_port, sha256_hex
from fixtures.hpfeeds import CHAN, Broker, feed_cfg, mail, make_ca
from fixtures.fakedns import FakeDNS
from fixtures.prometheus import Prometheus, get, parse
from fixtures.spamtrap import RECEIVED_MANY, RECEIVED_ONE, spamtrap_sender
from fixtures import fakeamqp, rabbitmq


def payload_bytes(p):
    """The mail's bytes in a JSON payload (raw_b64 when present, else msg)."""
    if "raw_b64" in p:
        return base64.b64decode(p["raw_b64"])
    return p["msg"].encode("utf-8")


def big_mail(n=6000000):
    """A mail of about n bytes of random hex in 900-byte lines: its publish
    cannot fit in the socket buffers of a broker that does not read."""
    body = b"Subject: big\r\n\r\n" + os.urandom(n // 2).hex().encode()
    return b"\r\n".join(body[i:i + 900] for i in range(0, len(body), 900)) + b"\r\n"


def unread(broker):
    """Bytes the stand-in broker's connections hold unread (FIONREAD)."""
    import fcntl
    import struct
    import termios
    n = 0
    for c in list(broker.conns):
        try:
            n += struct.unpack("i", fcntl.ioctl(c.fileno(), termios.FIONREAD, b"\0" * 4))[0]
        except OSError:
            pass
    return n


class StalledBroker(CollectorTestCase):
    """A broker that stops reading (RabbitMQ under a memory or disk alarm):
    every send of the publisher thread has a deadline, SIGTERM is honoured
    at once (fixtures/fakeamqp.py; no rabbitmq-server needed)."""

    autostart = False

    def setUp(self):
        super().setUp()
        self.broker = None

    def tearDown(self):
        if self.broker is not None:
            self.broker.close()
        super().tearDown()

    def start(self, mode, **kw):
        self.broker = fakeamqp.StallBroker(mode)
        a = {"host": HOST, "port": self.broker.port, "user": "u", "password": "p",
             "exchange": "x", "routing_key": "k", "timeout": 30}
        a.update(kw)
        self.c = Collector(self.tmpdir, config={"amqp": a})
        self.c.start()
        self.wait(lambda: self.broker.handshakes >= 1, 20, "the handshake")

    def sigterm_exits_within(self, seconds):
        t0 = time.time()
        self.c.signal(signal.SIGTERM)
        while self.c.running and time.time() - t0 < seconds * self.slow:
            time.sleep(0.05)
        took = time.time() - t0
        self.assertFalse(self.c.running, "still running %.0f s after SIGTERM:\n%s"
                         % (took, self.c.stderr_tail()))
        self.assertEqual(self.c.stop(), 0)

    def test_sigterm_while_a_publish_is_blocked_exits_promptly(self):
        # timeout 30: the stop must not wait for any deadline
        self.start("stall")
        self.send_mail(big_mail())
        # the publish started and the broker does not read it
        self.wait(lambda: unread(self.broker) > 0, 20, "the publish under way")
        self.sigterm_exits_within(5)

    def test_sigterm_while_reading_a_returned_document_exits_promptly(self):
        # A basic.return on the parsed documents' channel whose body never
        # comes: librabbitmq waits for it with no deadline, so the read is
        # watched as the mails' channel's is (review: it was not).
        self.start("return2", parsed_routing_key="p")
        # The return is read: sent by the broker, and nothing of it left in
        # the daemon's receive queue (a fixed 1 s stood for it: on a slow
        # machine the SIGTERM came first and the test passed without a read).
        self.wait(self.broker.returned.is_set, 20, "the basic.return sent")
        self.wait(lambda: self.unread_by_daemon() == 0, 20, "the basic.return read")
        self.sigterm_exits_within(5)

    def test_sigterm_during_a_hung_tls_handshake_exits_promptly(self):
        # A TLS endpoint that accepts and never answers the ClientHello: the
        # handshake runs inside librabbitmq's socket open (bounded by
        # timeout, 30 s); the stop must not wait for it.
        ls = socket.socket()
        ls.bind((HOST, 0))
        ls.listen(4)
        conns = []
        # A CA of its own: a fresh Debian root has no system bundle
        # (ca-certificates), and without one no connection is even tried.
        ca, _, _ = make_ca(self.tmpdir)
        try:
            self.c = Collector(self.tmpdir, config={"amqp": {
                "host": HOST, "port": ls.getsockname()[1], "user": "u", "password": "p",
                "exchange": "x", "routing_key": "k", "timeout": 30, "tls": True,
                "ca_file": ca}})
            self.c.start()
            ls.settimeout(20 * self.slow)
            c, _ = ls.accept()
            conns.append(c)
            c.settimeout(10 * self.slow)
            self.assertEqual(c.recv(1), b"\x16")     # a TLS handshake record
            self.sigterm_exits_within(5)
        finally:
            for c in conns:
                c.close()
            ls.close()

    def unread_by_daemon(self):
        """Bytes waiting in the receive queue of the daemon's connection to
        the broker (/proc/net/tcp rx_queue); None before it is there."""
        mine = harness._socket_inodes(self.c.pid)
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                w = line.split()
                if int(w[2].split(":")[1], 16) == self.broker.port and w[9] in mine:
                    return int(w[4].split(":")[1], 16)
        return None

    def test_sigterm_during_a_hung_handshake_exits_promptly(self):
        # the login waits for the broker's answer (bounded by timeout: 30 s)
        self.start("mute")
        self.sigterm_exits_within(5)

    def test_connection_blocked_declared_logged_publishing_paused(self):
        self.start("blocked")
        self.assertIn(b"connection.blocked", self.broker.capabilities)
        self.wait(lambda: "low on disk" in self.c.stderr_text(), 20, "the block logged")
        lines = [l for l in self.c.stderr_text().splitlines() if "low on disk" in l]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("blocked", lines[0])
        self.assertIn("127.0.0.1:%d" % self.broker.port, lines[0])
        # blocked: the mail is kept, not sent into a socket nobody reads
        self.send_mail(big_mail(600000))
        time.sleep(1)
        self.assertEqual(unread(self.broker), 0)
        self.sigterm_exits_within(5)


@unittest.skipUnless(rabbitmq.available(), "needs rabbitmq-server (Debian package) and root")
class AMQPCase(CollectorTestCase):
    """One rabbitmq-server for the class; each test its own exchange and queue."""

    autostart = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rabbit = rabbitmq.RabbitMQ()
        try:
            cls.rabbit.start()
        except Exception:
            cls.rabbit.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.rabbit.cleanup()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        if self.rabbit.pid is None:     # a test left it stopped
            self.rabbit.start()
        self.exchange = "fosr.%s" % self._testMethodName
        self.rkey = "spam.mail"
        self.consumer = rabbitmq.Consumer(self.rabbit, self.exchange, self.rkey,
                                          "q.%s" % self._testMethodName)

    def tearDown(self):
        self.consumer.close()
        super().tearDown()

    def amqp_cfg(self, **kw):
        a = {"host": HOST, "port": self.rabbit.port, "user": "guest", "password": "guest",
             "exchange": self.exchange, "routing_key": self.rkey, "timeout": 5}
        a.update(kw)
        return {"amqp": a}

    def start(self, config=None, **kw):
        cfg = self.amqp_cfg(**kw)
        cfg.update(config or {})
        self.c = Collector(self.tmpdir, config=cfg)
        self.c.start()

    def wait_for(self, pred, timeout, what):
        end = time.time() + timeout * self.slow
        while time.time() < end:
            if pred():
                return
            time.sleep(0.1)
        raise AssertionError("%s not reached within %ss\ncollector:\n%s\nbroker:\n%s"
                             % (what, timeout, self.c.stderr_tail(), self.rabbit.log()[-3000:]))

    def send_many(self, bodies, per_conn=50):
        shas = []
        for k in range(0, len(bodies), per_conn):
            cl = self.client()
            self.assertEqual(cl.ehlo("client.example").code, 250)
            for b in bodies[k:k + per_conn]:
                self.send_mail(b, client=cl)
                shas.append(sha256_hex(b))
            cl.cmd("QUIT")
            cl.close()
        return shas

    def consumed_shas(self):
        return {json.loads(b)["sha256"] for _, b in self.consumer.get()}


class Publish(AMQPCase):

    def test_every_acknowledged_mail_consumed_with_the_right_bytes(self):
        self.consumer.declare()
        self.start()
        bodies = [mail(i, b"x" * (i % 300) + b"\r\n") for i in range(200)]
        bodies.append(b"Subject: latin1\r\n\r\ncaf\xe9 \xff\x00\r\n")     # not UTF-8: raw_b64
        shas = self.send_many(bodies)
        self.wait_for(lambda: set(shas) <= self.consumed_shas(), 30, "every mail consumed")
        seen = {}
        for props, body in self.consumer.received:
            p = json.loads(body)
            raw = payload_bytes(p)
            # the payload's bytes hash to its sha256, which names the stored .eml
            self.assertEqual(hashlib.sha256(raw).hexdigest(), p["sha256"])
            self.assertEqual(self.c.message_bytes(p["sha256"]), raw)
            self.assertEqual(props.delivery_mode, 2)
            self.assertEqual(props.content_type, "application/json")
            self.assertEqual(props.message_id, p["sha256"])
            self.assertTrue(props.timestamp and abs(props.timestamp - time.time()) < 600)
            # the record's metadata, as hpfeeds publishes it
            self.assertIn("queue_id", p)
            self.assertEqual(p.get("sensor"), self.c.config["sensor"])
            seen[p["sha256"]] = p
        rec = self.c.journal()[0]
        self.assertEqual(seen[rec["sha256"]]["queue_id"], rec["queue_id"])
        self.assertIn("publisher confirms", self.c.stderr_text())

    def test_unroutable_mail_is_retried_never_dropped(self):
        # No queue bound: the broker returns every publish (mandatory).
        self.start()
        shas = self.send_many([mail(i) for i in range(3)])
        self.wait_for(lambda: "returned by broker" in self.c.stderr_text(), 20,
                      "the return logged")
        line = [l for l in self.c.stderr_text().splitlines() if "returned by broker" in l][0]
        self.assertIn("127.0.0.1:%d" % self.rabbit.port, line)
        self.assertIn("NO_ROUTE", line)
        self.consumer.declare()
        self.wait_for(lambda: set(shas) <= self.consumed_shas(), 30,
                      "returned mails published again once a queue is bound")

    def test_nacked_mail_is_retried_never_dropped(self):
        # A queue that takes 5 messages and nacks the rest (reject-publish):
        # only basic.ack may move the cursor.
        self.consumer.declare({"x-max-length": 5, "x-overflow": "reject-publish"})
        self.start()
        shas = self.send_many([mail(i) for i in range(12)])
        self.wait_for(lambda: "nacked by broker" in self.c.stderr_text(), 20, "a nack logged")
        # drain the queue while the collector retries: every mail arrives
        self.wait_for(lambda: set(shas) <= self.consumed_shas(), 60,
                      "nacked mails published again")


class TLS(AMQPCase):

    def setUp(self):
        super().setUp()
        # the daemon reads its CA file at start, as itself: a copy of its own
        self.ca = os.path.join(self.tmpdir, "ca.pem")
        shutil.copy(self.rabbit.ca, self.ca)

    def test_tls_with_ca_file_and_server_name(self):
        self.consumer.declare()
        self.start(tls=True, port=self.rabbit.tls_port, ca_file=self.ca)
        shas = self.send_many([mail(i) for i in range(5)])
        self.wait_for(lambda: set(shas) <= self.consumed_shas(), 30, "published over TLS")
        self.assertIn("(TLS)", self.c.stderr_text())
        # the certificate's other name, expected by server_name
        self.c.stop()
        self.start(tls=True, port=self.rabbit.tls_port, ca_file=self.ca,
                   server_name="broker.test")
        shas = self.send_many([mail(i) for i in range(10, 15)])
        self.wait_for(lambda: set(shas) <= self.consumed_shas(), 30, "published (server_name)")

    def test_tls_wrong_name_or_ca_refused_mail_kept(self):
        self.consumer.declare()
        self.start(tls=True, port=self.rabbit.tls_port, ca_file=self.ca,
                   server_name="other.test")
        shas = self.send_many([mail(i) for i in range(3)])
        self.wait_for(lambda: "cannot connect to broker" in self.c.stderr_text(), 20,
                      "the refused certificate logged")
        self.c.stop()
        self.start(tls=True, port=self.rabbit.tls_port)      # the system's CAs: not ours
        self.wait_for(lambda: self.c.stderr_text().count("cannot connect to broker") >= 2, 20,
                      "the unknown CA refused")
        self.assertEqual(self.consumed_shas(), set())
        self.c.stop()
        self.start(tls=True, port=self.rabbit.tls_port, ca_file=self.ca)
        self.wait_for(lambda: set(shas) <= self.consumed_shas(), 30, "kept mail published")


class SNIRecorder:
    """A TLS listener on 127.0.0.1 that records the server name (SNI) of each
    ClientHello, completes the handshake with a certificate for broker.test
    and 127.0.0.1, then closes: the publisher's connection fails after TLS."""

    def __init__(self, tmpdir):
        self.ca, crt, key = make_ca(tmpdir)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(crt, key)
        self.names = []
        self.ctx.sni_callback = lambda sock, name, ctx: self.names.append(name)
        self.ls = socket.socket()
        self.ls.bind((HOST, 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.done = False
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        while not self.done:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            c.settimeout(5)
            try:
                with self.ctx.wrap_socket(c, server_side=True) as t:
                    t.recv(8)
            except (OSError, ssl.SSLError):
                pass
            finally:
                c.close()

    def close(self):
        self.done = True
        self.ls.close()


class BrokerName(AMQPCase):
    """amqp.host a name: looked up with c-ares (amqp.dns_server here, a fake
    DNS), the resolver made before a chroot; TLS checks the configured name
    (not the address it resolved to) and sends it as SNI."""

    def setUp(self):
        super().setUp()
        self.dns = FakeDNS({"rabbit.test": {"A": ["127.0.0.1"]},
                            "broker.test": {"A": ["127.0.0.1"]},
                            "other.test": {"A": ["127.0.0.1"]}}).start()
        self.ca = os.path.join(self.tmpdir, "ca.pem")
        shutil.copy(self.rabbit.ca, self.ca)

    def tearDown(self):
        self.dns.stop()
        super().tearDown()

    def test_name_resolved_through_the_configured_dns(self):
        self.consumer.declare()
        self.start(host="rabbit.test", dns_server=self.dns.address)
        shas = self.send_many([mail(i) for i in range(3)])
        self.wait_for(lambda: set(shas) <= self.consumed_shas(), 30,
                      "published to the broker named rabbit.test")
        self.assertIn(("rabbit.test", "A"), self.dns.queries)
        self.assertIn("connected to broker rabbit.test:%d" % self.rabbit.port,
                      self.c.stderr_text())

    @unittest.skipUnless(os.geteuid() == 0, "chroot needs root")
    def test_name_resolved_inside_a_chroot(self):
        from test_sandbox import no_leak_check_env
        root = os.path.join(self.tmpdir, "root")
        os.mkdir(root)
        self.consumer.declare()
        cfg = self.amqp_cfg(host="rabbit.test", dns_server=self.dns.address)
        cfg.update({"sandbox": {"chroot": root}, "spool": {"directory": "/spool"},
                    "event_log": "/events.json"})
        self.c = Collector(self.tmpdir, config=cfg, env=no_leak_check_env())
        self.c.start()
        self.c.spool_dir = os.path.join(root, "spool")
        self.c.event_log = os.path.join(root, "events.json")
        self.c.wait_event("fosr.collector.start")
        self.assertEqual(os.readlink("/proc/%d/root" % self.c.proc.pid), root)
        shas = self.send_many([mail(i) for i in range(2)])
        self.wait_for(lambda: set(shas) <= self.consumed_shas(), 30,
                      "published from the chroot to the broker by name")

    def test_tls_by_name_verified_against_the_name(self):
        self.consumer.declare()
        self.start(host="broker.test", dns_server=self.dns.address, tls=True,
                   port=self.rabbit.tls_port, ca_file=self.ca)
        shas = self.send_many([mail(i) for i in range(3)])
        self.wait_for(lambda: set(shas) <= self.consumed_shas(), 30,
                      "published over TLS to broker.test")
        self.c.stop()
        # The same address under a name the certificate does not hold: its
        # IP subjectAltName (127.0.0.1) must not make it pass.
        self.start(host="other.test", dns_server=self.dns.address, tls=True,
                   port=self.rabbit.tls_port, ca_file=self.ca)
        sha = self.send_many([mail(10)])[0]
        self.wait_for(lambda: "cannot connect to broker other.test" in self.c.stderr_text(),
                      20, "the certificate refused for other.test")
        self.assertNotIn(sha, self.consumed_shas())
        self.assertIn(("other.test", "A"), self.dns.queries)

    def test_tls_sends_the_configured_name_as_sni(self):
        rec = SNIRecorder(self.tmpdir)
        try:
            ca = os.path.join(self.tmpdir, "sni-ca.pem")
            shutil.copy(rec.ca, ca)
            # by name, resolved through the DNS
            self.start(host="broker.test", dns_server=self.dns.address, tls=True,
                       port=rec.port, ca_file=ca)
            self.wait_for(lambda: rec.names, 20, "a ClientHello")
            self.c.stop()
            self.assertEqual(set(rec.names), {"broker.test"})
            # an address with server_name: the name, never the address
            del rec.names[:]
            self.start(host=HOST, tls=True, port=rec.port, ca_file=ca,
                       server_name="broker.test")
            self.wait_for(lambda: rec.names, 20, "a ClientHello")
            self.c.stop()
            self.assertEqual(set(rec.names), {"broker.test"})
        finally:
            rec.close()


class BrokerNameNoAnswer(CollectorTestCase):
    """A broker name whose DNS never answers (no rabbitmq-server needed): the
    lookup is bounded by amqp.timeout, retried with the backoff, logged once
    per series, and SIGTERM does not wait for it."""

    autostart = False

    def setUp(self):
        super().setUp()
        self.dns = FakeDNS({"dead.test": "DROP"}).start()

    def tearDown(self):
        self.dns.stop()
        super().tearDown()

    def start(self, timeout):
        self.c = Collector(self.tmpdir, config={"amqp": {
            "host": "dead.test", "port": free_port(), "user": "u", "password": "p",
            "exchange": "x", "routing_key": "k", "timeout": timeout,
            "dns_server": self.dns.address}})
        self.c.start()

    def lookups(self):
        """When each lookup began: A questions for dead.test more than 1.5 s
        after the one before (a lookup's own retry comes sooner)."""
        t = [w for (q, w) in zip(list(self.dns.queries), list(self.dns.query_times))
             if q == ("dead.test", "A")]
        return [w for i, w in enumerate(t) if i == 0 or w - t[i - 1] > 1.5]

    def test_sigterm_during_a_lookup_exits_promptly(self):
        self.start(timeout=30)
        self.wait(lambda: self.lookups(), 10, "the lookup sent")
        t0 = time.time()
        self.c.signal(signal.SIGTERM)
        while self.c.running and time.time() - t0 < 3 * self.slow:
            time.sleep(0.05)
        self.assertFalse(self.c.running, "still running %.1f s after SIGTERM:\n%s"
                         % (time.time() - t0, self.c.stderr_tail()))
        self.assertEqual(self.c.stop(), 0)

    def test_lookup_bounded_retried_with_backoff_logged_once(self):
        self.start(timeout=2)
        self.wait(lambda: len(self.lookups()) >= 4, 40, "four lookups")
        starts = self.lookups()
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        # each: the lookup (bounded by the 2 s timeout), then the backoff
        # (1 s, 2 s, 4 s ...): the first gap at most 2 + 1 s, then growing
        self.assertLess(gaps[0], 3 + 0.5 * self.slow, gaps)
        for i in range(1, len(gaps)):
            self.assertGreater(gaps[i], gaps[i - 1] + 0.5, gaps)
        err = self.c.stderr_text()
        self.assertEqual(err.count("cannot resolve broker"), 1, err)
        self.assertRegex(err, r"warn amqp: cannot resolve broker dead\.test:\d+ \(tempfail\): "
                              r"dead\.test: Timeout while contacting DNS servers; retrying")


class Durability(AMQPCase):

    def test_broker_killed_and_restarted_under_load(self):
        self.consumer.declare()
        self.start()
        bodies = [mail(i, b"y" * (i % 400) + b"\r\n") for i in range(800)]
        shas = []
        killed = False
        for k in range(0, len(bodies), 100):
            shas += self.send_many(bodies[k:k + 100])
            if not killed and k >= 300 and self.consumed_shas():
                self.rabbit.kill()      # SIGKILL: whatever it confirmed is on its disk
                killed = True
        self.assertTrue(killed)
        self.rabbit.start()
        self.wait_for(lambda: set(shas) <= self.consumed_shas(), 90, "all 800 consumed")
        self.assertIn("disconnected from broker", self.c.stderr_text())

    def test_stalled_broker_dropped_reconnected_then_everything_delivered(self):
        # A broker that stops reading (fixtures/fakeamqp.py) on the configured
        # address; later the real one behind the same address.
        self.consumer.declare()
        stall = fakeamqp.StallBroker("stall")
        try:
            self.start(port=stall.port, timeout=2)
            body = big_mail()
            self.send_mail(body)
            shas = [sha256_hex(body)] + self.send_many([mail(i) for i in range(5)])
            # each stalled connection is cut after the timeout (2 s without
            # progress) and opened again after a growing backoff
            self.wait_for(lambda: stall.handshakes >= 5, 60, "four reconnections")
            # the backoff grows over the series (1, 2, 4, 8 s after each stall);
            # a stall is seen at the watchdog's 1 s tick, so each gap also
            # varies by a second or so: compare the first gap with the fourth
            # (7 s more backoff), not neighbours (1 s)
            t = stall.times
            self.assertGreater(t[4] - t[3], t[1] - t[0] + 3, t)
            lines = [l for l in self.c.stderr_text().splitlines() if " stalled: nothing sent" in l]
            self.assertEqual(len(lines), 1, lines)
            self.assertIn("127.0.0.1:%d" % stall.port, lines[0])
            self.assertTrue(self.c.running)
            # the alarm clears: the same address reaches the real broker
            stall.forward(self.rabbit.port)
            self.wait_for(lambda: set(shas) <= self.consumed_shas(), 90,
                          "every mail published once the broker reads again")
        finally:
            stall.close()

    def test_wrong_credentials_clear_error_bounded_retries_mail_kept(self):
        self.consumer.declare()
        self.start(password="not-the-password")
        shas = self.send_many([mail(i) for i in range(5)])
        t0 = time.time()
        self.wait_for(lambda: "login refused" in self.c.stderr_text(), 20, "the login error")
        # attempts 1 s, 2 s, 4 s apart: at least 3 within ~4 s, the log line once
        node_log = lambda: "\n".join(
            open(os.path.join(self.rabbit.dir, "log", n), errors="replace").read()
            for n in os.listdir(os.path.join(self.rabbit.dir, "log")) if n.endswith(".log"))
        self.wait_for(lambda: node_log().count("invalid credentials") >= 3, 15, "3 attempts")
        time.sleep(max(0, 6 - (time.time() - t0)))
        attempts = node_log().count("invalid credentials")
        self.assertLessEqual(attempts, 5, "retries not backed off")
        lines = [l for l in self.c.stderr_text().splitlines() if "login refused" in l]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn('user "guest"', lines[0])
        self.assertIn("127.0.0.1:%d" % self.rabbit.port, lines[0])
        self.assertIn("ACCESS_REFUSED", lines[0])
        self.assertEqual(self.consumed_shas(), set())
        # the mail is kept: with the right password everything is published
        self.c.stop()
        self.start()
        self.wait_for(lambda: set(shas) <= self.consumed_shas(), 30, "kept mail published")

    def test_collector_kill9_with_backlog(self):
        self.consumer.declare()
        # A backlog: the broker's port is wrong at first.
        self.start(port=free_port())
        shas = set(self.send_many([mail(i) for i in range(300)]))
        self.c.kill9()
        self.expect_exit = None
        self.start()
        # and a kill -9 in the middle of publishing the backlog
        self.wait_for(lambda: len(self.consumed_shas()) > 0, 30, "publishing started")
        self.c.kill9()
        self.start()
        self.expect_exit = 0
        self.wait_for(lambda: shas <= self.consumed_shas(), 30, "backlog published after restart")

    def test_clean_restart_does_not_republish(self):
        self.consumer.declare()
        mport = free_port()
        self.c = Collector(self.tmpdir, config=dict(self.amqp_cfg(), metrics={"port": mport}))
        self.c.start()
        shas = set(self.send_many([mail(i) for i in range(20)]))
        self.wait_for(lambda: shas <= self.consumed_shas(), 20, "published")

        def confirmed():
            conn = http.client.HTTPConnection(HOST, mport, timeout=10 * self.slow)
            try:
                conn.request("GET", "/metrics")
                text = conn.getresponse().read().decode()
            finally:
                conn.close()
            return sum(float(l.rsplit(None, 1)[1]) for l in text.splitlines()
                       if l.startswith("fosr_feed_confirmed_total{") and 'output="amqp"' in l)
        # Confirmed by the broker (publisher confirms read) before the stop:
        # consumed is not confirmed yet, and an entry whose confirm the
        # collector had not read when stopped is rightly sent again.
        self.wait_for(lambda: confirmed() == 20, 20, "all 20 confirmed")
        self.c.stop()
        n = len(self.consumer.get())
        self.start()
        time.sleep(2)
        self.assertEqual(len(self.consumer.get()), n, "confirmed entries were published again")


class RawPayload(AMQPCase):
    """payload: raw (and received_header), one builder for both outputs: the
    consumer receives exactly the bytes the hpfeeds broker receives for the
    same mail, and finds the client as the spamtrap-system backend does."""

    def setUp(self):
        super().setUp()
        self.broker = Broker(self.tmpdir).start()
        self.addCleanup(self.broker.kill)

    def start_both(self, **raw):
        feed = feed_cfg(self.broker.port, payload="raw", **raw)
        self.start(config=feed, payload="raw", **raw)

    def send_tls_auth(self, body, rcpts=("rcpt@example.net",), ehlo="helo.example"):
        cl = self.client("smtp")
        self.assertEqual(cl.ehlo(ehlo).code, 250)
        self.assertEqual(cl.starttls().code, 220)
        self.assertEqual(cl.ehlo(ehlo).code, 250)
        self.assertEqual(cl.cmd("AUTH PLAIN " + base64.b64encode(b"\0user\0pw").decode()).code,
                         235)
        _, qid = self.send_mail(body, rcpts=rcpts, client=cl)
        cl.cmd("QUIT")
        cl.close()
        return qid

    def both(self, n):
        """The first n payloads at the AMQP consumer and at the hpfeeds broker."""
        self.wait_for(lambda: len(self.consumer.get()) >= n and
                      len(self.broker.published(CHAN)) >= n, 20, "%d payloads at both" % n)
        return ([b for _, b in self.consumer.received],
                [p for _, _, p in self.broker.published(CHAN)])

    def test_raw_same_bytes_as_hpfeeds_client_in_received(self):
        self.consumer.declare()
        self.start_both()
        one, many = mail(1), mail(2, b"caf\xe9 \xff not utf-8\r\n")
        qid1 = self.send_tls_auth(one)
        qid2 = self.send_tls_auth(many, rcpts=("a@example.net", "b@example.net"))
        amqp, hpf = self.both(2)
        self.assertEqual(amqp, hpf)
        m = RECEIVED_ONE.match(amqp[0])
        self.assertIsNotNone(m, amqp[0][:400])
        self.assertEqual((m.group(1), m.group(3), m.group(5), m.group(6).decode()),
                         (b"helo.example", b"127.0.0.1", b"ESMTPSA", qid1))
        self.assertEqual(amqp[0][m.end():], one)
        m = RECEIVED_MANY.match(amqp[1])
        self.assertIsNotNone(m, amqp[1][:400])
        self.assertEqual(m.group(6).decode(), qid2)
        self.assertEqual(amqp[1][m.end():], many)
        for body, (props, raw) in zip((one, many), self.consumer.received):
            # the spamtrap-system backend's steps: email parser, client from Received
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            self.assertEqual(len(msg.get_all("received")), 1)
            self.assertEqual(spamtrap_sender(raw), "127.0.0.1")
            self.assertEqual(props.content_type, "message/rfc822")
            self.assertEqual(props.delivery_mode, 2)
            # message_id names the stored .eml; the published bytes differ by the header
            self.assertEqual(props.message_id, sha256_hex(body))
            self.assertEqual(self.c.message_bytes(props.message_id), body)
            self.assertNotEqual(sha256_hex(raw), props.message_id)

    def test_raw_without_received_header_is_the_stored_eml(self):
        self.consumer.declare()
        self.start_both(received_header=False)
        body = mail(3, b"\xff\xfe not utf-8\r\n")
        self.send_tls_auth(body)
        amqp, hpf = self.both(1)
        self.assertEqual(amqp, [body])
        self.assertEqual(hpf, [body])
        props = self.consumer.received[0][0]
        self.assertEqual(props.content_type, "message/rfc822")
        self.assertEqual(props.message_id, sha256_hex(body))


class Metrics(AMQPCase):
    """The AMQP output's counters at /metrics, as the hpfeeds output's:
    published, confirmed, nacked, returned, connection attempts, connected,
    backlog; scraped over HTTP and by a real prometheus."""

    def scrape(self):
        conn = http.client.HTTPConnection(HOST, self.mport, timeout=10 * self.slow)
        try:
            conn.request("GET", "/metrics")
            body = conn.getresponse().read()
        finally:
            conn.close()
        return parse(body.decode("utf-8")), body

    def wait_amqp(self, want, what):
        got = {}
        chan = "amqp:%s/%s" % (self.exchange, self.rkey)

        def pred():
            m, _ = self.scrape()
            got.clear()
            for k in want:
                if k in ("confirmed", "backlog", "skipped"):
                    name = {"confirmed": "fosr_feed_confirmed_total",
                            "backlog": "fosr_feed_backlog_bytes",
                            "skipped": "fosr_feed_skipped_total"}[k]
                    got[k] = get(m, name, output="amqp", channel=chan)
                else:
                    got[k] = get(m, "fosr_feed_%s" % k, output="amqp")
            return all(f(got[k]) if callable(f) else got[k] == f for k, f in want.items())
        try:
            self.wait_for(pred, 20, what)
        except AssertionError as e:
            raise AssertionError("%s: got %s" % (e, got))
        return dict(got)

    def test_counters_scraped_and_by_prometheus(self):
        self.mport = free_port()
        # no queue bound yet: every publish is returned (mandatory)
        self.start(config={"metrics": {"port": self.mport}})
        shas = set(self.send_many([mail(i) for i in range(3)]))
        self.wait_amqp({"connected": 1, "returned_total": lambda v: v and v >= 1,
                        "confirmed": None, "backlog": lambda v: v and v > 0},
                       "returns counted, nothing confirmed")
        self.consumer.declare()
        self.wait_for(lambda: shas <= self.consumed_shas(), 30, "published once bound")
        before = self.wait_amqp({"connected": 1, "confirmed": 3, "backlog": 0,
                                 "connects_total": 1, "nacked_total": None,
                                 "published_total": lambda v: v and v >= 3 + 1},
                                "3 confirmed, backlog 0")
        # promtool agrees with the format
        _, body = self.scrape()
        if harness.have("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=body,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.assertEqual(p.returncode, 0, p.stdout.decode())
        # broker down: disconnected, a backlog of exactly the new journal line
        self.rabbit.stop()
        self.send_mail(mail(10))
        with open(self.c.journal_path, "rb") as f:
            last = f.read().splitlines(True)[-1]
        self.wait_amqp({"connected": 0, "backlog": len(last), "confirmed": 3},
                       "the broker gone, one line waiting")
        self.rabbit.start()
        self.wait_amqp({"connected": 1, "backlog": 0, "confirmed": 4,
                        "connects_total": lambda v: v and v >= 2,
                        "published_total": lambda v: v and v >= before["published_total"] + 1},
                       "reconnected, the mail confirmed")
        # the nack path: a queue that takes 2 and rejects the rest
        self.c.stop()
        self.consumer.get()
        self.consumer.close()       # a fresh connection: the broker was restarted
        self.consumer._channel().queue_unbind(self.consumer.queue, self.exchange, self.rkey)
        self.consumer.queue = "q.%s.short" % self._testMethodName
        self.consumer.declare({"x-max-length": 2, "x-overflow": "reject-publish"})
        self.c.start()
        self.send_many([mail(20 + i) for i in range(6)])
        self.wait_amqp({"nacked_total": lambda v: v and v >= 1}, "nacks counted")
        # a real prometheus scrapes the same values
        if not harness.have("prometheus"):
            return
        prom = Prometheus(self.tmpdir, [self.mport]).start()
        try:
            res = prom.query('fosr_feed_nacked_total{output="amqp"}',
                             lambda r: float(r[0]["value"][1]) >= 1, 60 * self.slow)
            self.assertEqual(res[0]["metric"]["job"], "fosr")
            res = prom.query('fosr_feed_connected{output="amqp"}',
                             lambda r: r[0]["value"][1] == "1", 30 * self.slow)
            self.assertEqual(prom.health(), ["up"])
        finally:
            prom.stop()

    def test_skipped_entry_counted(self):
        # A mail whose .eml is gone is passed unpublished: a loss the
        # operator sees at /metrics (fosr_feed_skipped_total), as hpfeeds'.
        self.consumer.declare()
        self.start(password="wrong")        # nothing published yet
        shas = self.send_many([mail(i) for i in range(3)])
        os.unlink(self.c.message_path(shas[1]))
        self.c.stop()
        self.mport = free_port()
        self.start(config={"metrics": {"port": self.mport}})
        self.wait_for(lambda: {shas[0], shas[2]} <= self.consumed_shas(), 30,
                      "the two others published")
        self.wait_amqp({"skipped": 1, "confirmed": 2, "backlog": 0},
                       "one skipped, two confirmed")
        self.assertNotIn(shas[1], self.consumed_shas())


class Config(unittest.TestCase):

    def test_errors_name_file_line_and_key(self):
        import tempfile
        from harness import run_tool, binary_default
        d = tempfile.mkdtemp(prefix="fosr-e2e-")
        try:
            p = os.path.join(d, "c.yml")
            with open(p, "w") as f:
                f.write("amqp:\n  host: 127.0.0.1\n  user: u\n  password: p\n  exchange: x\n"
                        "  exchange_type: bogus\n")
            r = run_tool([binary_default(), "-c", p, "--check-config"])
            self.assertNotEqual(r.returncode, 0)
            self.assertRegex(r.stderr.decode(), re.escape(p) + r":6: amqp\.exchange_type")
            with open(p, "w") as f:
                f.write("amqp:\n  host: 127.0.0.1\n  user: u\n  password: p\n")
            r = run_tool([binary_default(), "-c", p, "--check-config"])
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("amqp.exchange", r.stderr.decode())
        finally:
            import shutil
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
