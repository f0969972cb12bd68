"""End-to-end tests of relaying (issue 4): the real daemon, a fake DNS server
(fakedns.py) and a fake MX (aiosmtpd, fakemx.py) on loopback.

A probe mentions the honeypot's own address; it must be relayed exactly once,
arrive byte-identical plus one Received header, and every cap must hold, also
across kill -9.  Run with /usr/bin/python3 (Debian's python3-aiosmtpd).
"""

import json
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import CollectorTestCase, sha256_hex  # noqa: E402
import fakedns  # noqa: E402
import fakemx  # noqa: E402

OWN = "203.0.113.5"
DROP = "drop@spammer.example"

# The shipped probe rule, minimal (rules file syntax of src/rules.c).
RULES = """\
rules:
  - name: probe
    priority: 10
    stage: DATA
    conditions:
      - mentions_own_address: true
    actions:
      relay: true
"""

RECEIVED_RE = re.compile(
    rb"^Received: from client\.example \(unknown \[127\.0\.0\.1\]\)\r\n"
    rb"\tby " + re.escape(harness.HOSTNAME.encode()) +
    rb" \(Postfix\) with ESMTPS? id ([0-9A-F]{10,12})\r\n"
    rb"\tfor <([^>]+)>; [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000 \(UTC\)\r\n")


def probe(n=0, extra=b""):
    """A relay probe as spammers send them: the relay's address in the Subject."""
    return (b"From: tester <drop@spammer.example>\r\n"
            b"To: drop@spammer.example\r\n"
            b"Subject: relay test " + OWN.encode() + b":25 #" + str(n).encode() + b"\r\n"
            b"\r\n"
            b"test " + str(n).encode() + b"\r\n"
            b".leading dot and 8-bit \xe9\xe8\r\n" + extra)


SPAM = (b"From: pills <sales@pharma.example>\r\n"
        b"Subject: cheap pills\r\n\r\nbuy now\r\n")


class RelayCase(CollectorTestCase):
    """Starts fakes before the daemon; subclasses say which MX setup they want."""

    autostart = False
    mx_table = None        # callable(port) -> DNS table
    mx_starttls = True
    relay_mode = "live"
    caps = {}
    test_mode = False

    def setUp(self):
        if not fakemx.HAVE_AIOSMTPD:
            self.skipTest("python3-aiosmtpd is not installed (run with /usr/bin/python3)")
        self.mx = fakemx.FakeMX(starttls=self.mx_starttls).start()
        self.extra = []
        table = (self.mx_table or RelayCase.default_table)(self.mx.port)
        self.dns = fakedns.FakeDNS(table).start()
        caps = {"per_day": 20, "per_hour": 100, "per_recipient": 100, "per_domain": 100,
                "per_client_ip": 100}
        caps.update(self.caps)
        self.config = harness.deep_merge(type(self).config or {}, {
            "relay": {
                "mode": self.relay_mode,
                "rules": "{tmp}/rules.yml",
                "own_addresses": [OWN],
                "dns_server": self.dns.address,
                "mx_port": self.mx.port,
                "timeouts": {"connect": 2, "greeting": 3, "command": 3, "data": 3},
                "caps": caps,
            }})
        if self.test_mode:
            self.config["relay"]["test_mode"] = {
                "recipient": "relay-test@test.example",
                "server": "127.0.0.1:%d" % self.mx.port}
        super().setUp()
        with open(os.path.join(self.tmpdir, "rules.yml"), "w") as f:
            f.write(RULES)
        self.c.start()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            for m in [self.mx] + self.extra:
                m.stop()
            self.dns.stop()

    @staticmethod
    def default_table(port):
        return {"spammer.example": {"MX": [(10, "mx1.spammer.example")]},
                "mx1.spammer.example": {"A": ["127.0.0.1"]}}

    # -- helpers
    def send(self, body, rcpt=DROP):
        cl, qid = self.send_mail(body, mail_from=DROP, rcpts=(rcpt,))
        cl.cmd("QUIT")
        return qid

    def result(self, sha, timeout=20):
        return self.c.wait_event("fosr.relay.result", lambda e: e.get("sha256") == sha,
                                 timeout=timeout)

    def decisions(self, sha):
        return [e for e in self.c.events() if e.get("eventid") == "fosr.relay.decision"
                and e.get("sha256") == sha]

    def wait_decisions(self, sha, n, timeout=10):
        end = time.time() + timeout * self.slow
        while time.time() < end:
            d = self.decisions(sha)
            if len(d) >= n:
                return d
            time.sleep(0.05)
        self.fail("fewer than %d decisions for %s: %s" % (n, sha, self.decisions(sha)))

    def relay_record(self, sha, timeout=10):
        # The result event is emitted before the worker has written the record.
        path = os.path.join(self.c.spool_dir, "relay", sha + ".json")
        end = time.time() + timeout * self.slow
        while not os.path.exists(path) and time.time() < end:
            time.sleep(0.05)
        with open(path) as f:
            return json.load(f)


class TestProbe(RelayCase):

    def test_probe_relayed_once_byte_identical_with_starttls(self):
        body = probe(1)
        sha = sha256_hex(body)
        self.send(body)
        res = self.result(sha)
        self.assertEqual(res["status"], "delivered", res)
        msgs = self.mx.wait_messages(1)
        self.assertEqual(len(msgs), 1)
        mail_from, rcpts, raw, tls = msgs[0]
        self.assertEqual(mail_from, DROP)
        self.assertEqual(rcpts, [DROP])
        self.assertTrue(tls, "STARTTLS was offered but not used")
        m = RECEIVED_RE.match(raw)
        self.assertIsNotNone(m, raw[:400])
        self.assertEqual(m.group(2).decode(), DROP)
        self.assertEqual(raw[m.end():], body, "relayed bytes differ from the capture")
        self.assertEqual(raw.count(b"Received:"), 1)
        att = [e for e in self.c.events() if e.get("eventid") == "fosr.relay.attempt"
               and e.get("sha256") == sha]
        self.assertEqual(len(att), 1, att)
        self.assertTrue(att[0]["tls"] and att[0]["tls"]["version"].startswith("TLS"), att[0])
        rec = self.relay_record(sha)
        self.assertEqual(rec["status"], "delivered")
        self.assertEqual(rec["relay_queue_id"], m.group(1).decode())
        self.assertEqual(rec["attempts"][0]["mx"], "mx1.spammer.example")

        # The same probe again: refused, never sent twice.
        self.send(body)
        d = self.wait_decisions(sha, 2)
        self.assertEqual(d[-1]["verdict"], "refused", d[-1])
        self.assertIn("same content", d[-1]["reason"])
        time.sleep(0.5)
        self.assertEqual(len(self.mx.messages), 1)

    def test_non_probe_never_relayed(self):
        sha = sha256_hex(SPAM)
        self.send(SPAM)
        d = self.wait_decisions(sha, 1)
        self.assertEqual(d[0]["verdict"], "not-relayed", d[0])
        time.sleep(1)
        self.assertEqual(self.mx.messages, [])
        self.assertFalse(os.path.exists(os.path.join(self.c.spool_dir, "relay", sha + ".json")))

    def test_never_relay_addresses_refused(self):
        for i, rcpt in enumerate(("postmaster@spammer.example", "abuse@spammer.example",
                                  "x@relay-test.mail-abuse.org")):
            body = probe(100 + i)
            self.send(body, rcpt=rcpt)
            d = self.wait_decisions(sha256_hex(body), 1)
            self.assertEqual(d[0]["verdict"], "refused", d[0])
            self.assertIn("never_relay", d[0]["reason"])
        time.sleep(0.5)
        self.assertEqual(self.mx.messages, [])


class TestPlainMX(RelayCase):
    mx_starttls = False

    def test_plain_mx_without_starttls(self):
        body = probe(2)
        self.send(body)
        self.assertEqual(self.result(sha256_hex(body))["status"], "delivered")
        msgs = self.mx.wait_messages(1)
        self.assertFalse(msgs[0][3])


class TestDailyCap(RelayCase):

    def test_21st_probe_of_a_day_refused_across_kill9(self):
        shas = []
        for i in range(10):
            body = probe(200 + i)
            shas.append(sha256_hex(body))
            self.send(body)
        for s in shas:
            self.assertEqual(self.result(s)["status"], "delivered")
        self.c.kill9()
        self.c.start()
        for i in range(10, 21):
            body = probe(200 + i)
            shas.append(sha256_hex(body))
            self.send(body)
        for s in shas[10:20]:
            self.assertEqual(self.result(s)["status"], "delivered")
        d = self.wait_decisions(shas[20], 1)
        self.assertEqual(d[0]["verdict"], "refused", d[0])
        self.assertIn("per_day", d[0]["reason"])
        time.sleep(0.5)
        self.assertEqual(len(self.mx.messages), 20)
        # And again after a second kill -9: still refused.
        self.c.kill9()
        self.c.start()
        body = probe(999)
        self.send(body)
        d = self.wait_decisions(sha256_hex(body), 1)
        self.assertIn("per_day", d[0]["reason"])
        self.assertEqual(len(self.mx.messages), 20)
        self.expect_exit = None


def _down_table(port):
    return {"spammer.example": {"MX": [(10, "mx1.spammer.example"), (20, "mx2.spammer.example")]},
            "mx1.spammer.example": {"A": ["127.0.0.2"]},      # nothing listens there
            "mx2.spammer.example": {"A": ["127.0.0.1"]}}


class TestNextMX(RelayCase):
    mx_table = staticmethod(_down_table)

    def test_first_mx_down_next_mx(self):
        body = probe(3)
        sha = sha256_hex(body)
        self.send(body)
        self.assertEqual(self.result(sha)["status"], "delivered")
        rec = self.relay_record(sha)
        self.assertEqual([a["mx"] for a in rec["attempts"]],
                         ["mx1.spammer.example", "mx2.spammer.example"])
        self.assertEqual(rec["attempts"][0]["status"], "tempfail")
        self.assertEqual(rec["attempts"][1]["status"], "delivered")
        self.assertEqual(len(self.mx.wait_messages(1)), 1)


def _all_down_table(port):
    return {"spammer.example": {"MX": [(10, "mx1.spammer.example"), (20, "mx2.spammer.example")]},
            "mx1.spammer.example": {"A": ["127.0.0.2"]},
            "mx2.spammer.example": {"A": ["127.0.0.3"]}}


class TestAllDown(RelayCase):
    mx_table = staticmethod(_all_down_table)

    def test_all_mx_down_recorded_failure(self):
        body = probe(4)
        sha = sha256_hex(body)
        self.send(body)
        res = self.result(sha)
        self.assertEqual(res["status"], "failed", res)
        rec = self.relay_record(sha)
        self.assertEqual(rec["status"], "failed")
        self.assertEqual(len(rec["attempts"]), 2)
        self.assertTrue(all(a["status"] == "tempfail" for a in rec["attempts"]))


class TestHangingMX(RelayCase):
    mx_table = staticmethod(_down_table)

    def setUp(self):
        super().setUp()
        # mx1 accepts connections on the MX port and never greets.
        self.extra.append(fakemx.FakeMX(mode="hang", host="127.0.0.2", port=self.mx.port).start())

    @harness.skip_under_valgrind("five sessions within a 2.5 s bound")
    def test_sessions_served_while_mx_hangs(self):
        body = probe(5)
        sha = sha256_hex(body)
        self.send(body)
        self.wait_decisions(sha, 1)
        # While the relay waits for mx1's greeting (3 s), sessions are served at once.
        t0 = time.time()
        for i in range(5):
            s = time.time()
            self.send(b"Subject: during the hang %d\r\n\r\nx\r\n" % i)
            self.assertLess(time.time() - s, 1.0 * self.slow, "a session stalled")
        self.assertEqual([e for e in self.c.events() if e.get("eventid") == "fosr.relay.result"
                          and e.get("sha256") == sha], [],
                         "the hanging MX did not hang (test ineffective)")
        self.assertLess(time.time() - t0, 2.5)
        res = self.result(sha)
        self.assertEqual(res["status"], "delivered")
        rec = self.relay_record(sha)
        self.assertEqual(rec["attempts"][0]["stage"], "greeting")


class TestDryRun(RelayCase):
    relay_mode = "dry-run"

    def test_dry_run_never_sends(self):
        body = probe(6)
        sha = sha256_hex(body)
        self.send(body)
        self.assertEqual(self.result(sha)["status"], "dry-run")
        time.sleep(0.5)
        self.assertEqual(self.mx.messages, [])


class TestTestMode(RelayCase):
    collector_args = ("-t",)
    test_mode = True

    def test_t_sends_to_test_recipient_via_test_server(self):
        body = probe(7)
        sha = sha256_hex(body)
        self.send(body)
        self.assertEqual(self.result(sha)["status"], "delivered")
        msgs = self.mx.wait_messages(1)
        self.assertEqual(msgs[0][1], ["relay-test@test.example"])
        m = RECEIVED_RE.match(msgs[0][2])
        self.assertIsNotNone(m)
        self.assertEqual(msgs[0][2][m.end():], body)
        # No MX lookup happened: the test server was used.
        self.assertNotIn(("spammer.example", "MX"), self.dns.queries)


LONG_RCPT = "d" * 300 + "@spammer.example"


class TestCapsRestart(RelayCase):
    """Issue "Trust, proven from outside" 3 and 4: the caps survive a restart for
    every recipient form and length, and equivalent forms of an address are one."""
    relay_mode = "dry-run"
    caps = {"per_recipient": 1, "per_domain": 100}

    def verdict(self, body, rcpt):
        self.send(body, rcpt=rcpt)
        return self.wait_decisions(sha256_hex(body), 1)[0]

    def test_recipient_caps_hold_across_kill9_in_any_form(self):
        d = self.verdict(probe(300), "drop@spammer.example")
        self.assertEqual(d["verdict"], "dry-run", d)
        d = self.verdict(probe(301), LONG_RCPT)
        self.assertEqual(d["verdict"], "dry-run", d)
        self.c.kill9()
        self.c.start()
        for i, rcpt in enumerate(['"drop"@spammer.example', "dr\\op@SPAMMER.example.",
                                  "DROP@spammer.example", LONG_RCPT,
                                  '"' + "d" * 300 + '"@Spammer.Example']):
            d = self.verdict(probe(310 + i), rcpt)
            self.assertEqual(d["verdict"], "refused", (rcpt, d))
            self.assertIn("per_recipient", d["reason"])
        # Another recipient at the same domain is still within the caps.
        d = self.verdict(probe(320), "other@spammer.example")
        self.assertEqual(d["verdict"], "dry-run", d)
        self.expect_exit = None

    def test_never_relay_equivalent_forms(self):
        for i, rcpt in enumerate(['"abuse"@example.com', '"postmaster"@example.net',
                                  "post\\master@example.net", "x@SpamHaus.Org.",
                                  # IDN mapping (libidn2) inside the sandboxed daemon
                                  "x@spamhaus\u3002org", "x@\uff33pamhaus.org"]):
            d = self.verdict(probe(330 + i), rcpt)
            self.assertEqual(d["verdict"], "refused", (rcpt, d))
            self.assertIn("never_relay", d["reason"])
            if "pamhaus" in rcpt:   # matched as that domain, not as "no canonical form"
                self.assertIn('matches "spamhaus.org"', d["reason"])

    def test_unreadable_caps_line_turns_relaying_off(self):
        d = self.verdict(probe(340), "drop@spammer.example")
        self.assertEqual(d["verdict"], "dry-run", d)
        self.c.stop()
        path = os.path.join(self.c.spool_dir, "relay", "caps-dry-run.log")
        with open(path, "ab") as f:
            f.write(b'{"t":1,"sha256":"not a sha"}\n')
        size = os.path.getsize(path)
        self.c.start()
        d = self.verdict(probe(341), "fresh@other.example")
        self.assertEqual(d["verdict"], "refused", d)
        self.assertIn("caps-dry-run.log line 2", d["reason"])
        self.assertIn("line 2 is not a reservation", self.c.stderr_text())
        self.c.stop()
        self.assertEqual(os.path.getsize(path), size)

    def test_caps_journal_compacted_at_start(self):
        self.c.stop()
        path = os.path.join(self.c.spool_dir, "relay", "caps-dry-run.log")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        old_body = probe(350)
        old = int(time.time()) - 3 * 86400
        with open(path, "w") as f:
            for i in range(50):
                sha = sha256_hex(old_body) if i == 0 else "%064x" % (i + 1)
                f.write(json.dumps({"t": old, "sha256": sha, "src_ip": "192.0.2.1",
                                    "rcpt": ["old%d@spammer.example" % i],
                                    "source": "daemon"}) + "\n")
        before = os.path.getsize(path)
        self.c.start()
        # The relay (and its caps) may open after the listeners: wait for its log line.
        end = time.time() + 10 * self.slow
        while "compacted" not in self.c.stderr_text() and time.time() < end:
            time.sleep(0.05)
        self.assertIn("caps-dry-run.log compacted", self.c.stderr_text())
        with open(path) as f:
            text = f.read()
        self.assertNotIn("old", text)
        self.assertEqual(len(text.splitlines()), 50)
        self.assertLess(os.path.getsize(path), before)
        # The old content is still never relayed again; its old recipient is free again.
        d = self.verdict(old_body, "drop@spammer.example")
        self.assertEqual(d["verdict"], "refused", d)
        self.assertIn("same content", d["reason"])
        d = self.verdict(probe(351), "old0@spammer.example")
        self.assertEqual(d["verdict"], "dry-run", d)


if __name__ == "__main__":
    unittest.main(verbosity=2)
