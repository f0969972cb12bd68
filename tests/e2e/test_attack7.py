"""Hostile review (s7-attack7) of the AMQP broker name lookup and connect:
a broker whose TCP connect hangs (a listener whose accept queue is full drops
every SYN: the connect waits for its deadline), no rabbitmq-server needed."""

import signal
import socket
import time

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

    def wait(self, pred, timeout, what):
        end = time.time() + timeout * self.slow
        while time.time() < end:
            if pred():
                return
            time.sleep(0.05)
        raise AssertionError("%s not reached within %ss\ncollector:\n%s"
                             % (what, timeout, self.c.stderr_tail()))

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
