"""End-to-end tests of relaying (issue 4): the real daemon, a fake DNS server
(fixtures/fakedns.py) and a fake MX (aiosmtpd, fixtures/fakemx.py) on loopback.

A probe mentions the honeypot's own address; it must be relayed exactly once,
arrive byte-identical plus one Received header, and every cap must hold, also
across kill -9.  Run with /usr/bin/python3 (Debian's python3-aiosmtpd).
"""

import ctypes
import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
import unittest


import harness
from harness import sha256_hex
from fixtures import fakemx
from fixtures.relay import DROP, RelayCase, SPAM, probe

RECEIVED_RE = re.compile(
    rb"^Received: from client\.example \((unknown|[a-z0-9.-]+) \[127\.0\.0\.1\]\)\r\n"
    rb"\tby " + re.escape(harness.HOSTNAME.encode()) +
    rb" \(Postfix\) with ESMTPS? id ([0-9A-F]{10,12})\r\n"
    # Postfix's mail_date(): "%a, %e %b %Y ...", the day space-padded ("Sun,  6 Dec")
    rb"\tfor <([^>]+)>; [A-Z][a-z]{2}, [ 1-3]\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000 \(UTC\)\r\n")


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
        self.assertEqual(m.group(1), b"unknown")    # 127.0.0.1 has no name here
        self.assertEqual(m.group(3).decode(), DROP)
        self.assertEqual(raw[m.end():], body, "relayed bytes differ from the capture")
        self.assertEqual(raw.count(b"Received:"), 1)
        att = [e for e in self.c.events() if e.get("eventid") == "fosr.relay.attempt"
               and e.get("sha256") == sha]
        self.assertEqual(len(att), 1, att)
        self.assertTrue(att[0]["tls"] and att[0]["tls"]["version"].startswith("TLS"), att[0])
        rec = self.relay_record(sha)
        self.assertEqual(rec["status"], "delivered")
        self.assertEqual(rec["relay_queue_id"], m.group(2).decode())
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


    def test_never_relay_spellings_refused(self):
        # The same mailboxes spelt otherwise: a quoted local part is the
        # unquoted one (RFC 5321 4.1.2), a subaddress reaches the base
        # mailbox.  Each was relayed to the MX before (never_relay compared
        # the spelling).
        rcpts = ('"postmaster"@spammer.example', '"abuse"@spammer.example',
                 "postmaster+x@spammer.example", "abuse-desk@spammer.example",
                 '"po\\stmaster"@spammer.example')
        accepted = []
        for i, rcpt in enumerate(rcpts):
            body = probe(110 + i)
            cl = self.client("smtp")
            cl.ehlo("client.example")
            cl.expect("MAIL FROM:<%s>" % DROP, 250)
            if cl.cmd("RCPT TO:<%s>" % rcpt).code == 250:
                cl.data(body)
                accepted.append((rcpt, sha256_hex(body)))
            cl.cmd("QUIT")
        self.assertEqual([a[0] for a in accepted], list(rcpts), "the persona refused some")
        for rcpt, sha in accepted:
            d = self.wait_decisions(sha, 1)
            self.assertEqual(d[0]["verdict"], "refused", (rcpt, d[0]))
            self.assertRegex(d[0]["reason"], "never_relay|recipient", (rcpt, d[0]))
        time.sleep(0.5)
        self.assertEqual(self.mx.messages, [])


def _lan_table(port):
    t = RelayCase.default_table(port)
    for d in ("nas.lan", "printer.local", "gw.home.arpa", "db.internal"):
        t[d] = {"MX": [(10, "mx." + d)]}
        t["mx." + d] = {"A": ["127.0.0.1"]}
    t["spammer.example"] = {"MX": [(10, "mx1.spammer.example"), (20, "mx.nas.lan")]}
    t["mx1.spammer.example"] = {"A": ["127.0.0.2"]}    # down: the next MX is tried
    return t



class TestReceivedClientName(RelayCase):
    """The relayed copy's Received header names the client as Postfix does:
    the name its PTR gives, once that name's A record lists the address."""

    client_lookup_here = True

    @staticmethod
    def mx_table(port):
        t = RelayCase.default_table(port)
        t["1.0.0.127.in-addr.arpa"] = {"PTR": ["probe-sender.fosr.test"]}
        t["probe-sender.fosr.test"] = {"A": ["127.0.0.1"]}
        return t

    def test_received_carries_the_verified_name(self):
        body = probe(7)
        sha = sha256_hex(body)
        self.send(body)
        self.assertEqual(self.result(sha)["status"], "delivered")
        raw = self.mx.wait_messages(1)[0][2]
        m = RECEIVED_RE.match(raw)
        self.assertIsNotNone(m, raw[:400])
        self.assertEqual(m.group(1), b"probe-sender.fosr.test", raw[:200])

    def test_received_unknown_when_not_confirmed(self):
        self.dns.table["probe-sender.fosr.test"] = {"A": ["192.0.2.9"]}
        body = probe(8)
        sha = sha256_hex(body)
        self.send(body)
        self.assertEqual(self.result(sha)["status"], "delivered")
        raw = self.mx.wait_messages(1)[0][2]
        m = RECEIVED_RE.match(raw)
        self.assertIsNotNone(m, raw[:400])
        self.assertEqual(m.group(1), b"unknown", raw[:200])

class TestLocalNetworkNames(RelayCase):
    """Names the local resolver answers with the honeypot's neighbours (mDNS
    .local, a router's .lan, .home.arpa, .internal): their hosts often have
    global IPv6 addresses the range check cannot refuse.  The fake MX (on an
    address relay.allow_destinations lets through) stands for such a host:
    it was delivered to."""
    mx_table = staticmethod(_lan_table)

    def test_local_network_domains_and_mx_names_refused(self):
        rcpts = ["drop@nas.lan", "drop@printer.local", "drop@gw.home.arpa", "drop@db.internal"]
        for i, rcpt in enumerate(rcpts):
            body = probe(120 + i)
            self.send(body, rcpt=rcpt)
            d = self.wait_decisions(sha256_hex(body), 1)
            self.assertEqual(d[0]["verdict"], "refused", (rcpt, d[0]))
            self.assertIn("local network domain", d[0]["reason"])
        body = probe(130)
        sha = sha256_hex(body)
        self.send(body)
        res = self.result(sha)
        self.assertEqual(res["status"], "failed", res)
        att = self.relay_record(sha)["attempts"]
        self.assertEqual([a["mx"] for a in att], ["mx1.spammer.example", "mx.nas.lan"], att)
        self.assertEqual(att[1]["status"], "refused", att)
        self.assertIn("local network name", att[1]["status_text"])
        time.sleep(0.3)
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
        # mx1's greeting is awaited long enough (4 s, x slow_factor) that the
        # five sessions below, on a loaded machine, are served inside the wait
        self.timeouts = dict(RelayCase.timeouts, greeting=4 * harness.slow_factor())
        super().setUp()
        # mx1 accepts connections on the MX port and never greets.
        self.hang = fakemx.FakeMX(mode="hang", host="127.0.0.2", port=self.mx.port).start()
        self.extra.append(self.hang)

    def test_sessions_served_while_mx_hangs(self):
        body = probe(5)
        sha = sha256_hex(body)
        self.send(body)
        self.wait_decisions(sha, 1)
        # The relay is waiting for mx1's greeting ...
        end = time.time() + 10 * self.slow
        while not self.hang.connections and time.time() < end:
            time.sleep(0.05)
        self.assertTrue(self.hang.connections, "the relay never reached the hanging MX")
        # ... and sessions are served meanwhile: all five end before the
        # relay's attempt does.  A loop blocked on the MX would serve them
        # only after the greeting's timeout, once the result is written.
        # (Wall-clock bounds, 1 s a session and 2.5 s in all, measured the
        # machine's load, not this.)
        for i in range(5):
            self.send(b"Subject: during the hang %d\r\n\r\nx\r\n" % i)
        self.assertEqual([e for e in self.c.events() if e.get("eventid") == "fosr.relay.result"
                          and e.get("sha256") == sha], [],
                         "the relay's result came before the sessions were served")
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


class TestTestServerIsOurListener(RelayCase):
    """The operator's test server (and smarthost) skip the destination checks,
    but never the daemon's own listener: a -t server naming our SMTP port made
    each relayed copy a new capture, a probe again, relayed again (a loop
    bounded only by the caps)."""
    collector_args = ("-t",)
    test_mode = True

    def setUp(self):
        self.test_server_port = harness.free_port()
        fn = getattr(self, self._testMethodName).__func__
        fn.fosr_kwargs = {"listeners": [{"name": "smtp", "port": self.test_server_port,
                                         "tls": "starttls"}]}
        super().setUp()

    def test_test_server_on_our_listener_refused(self):
        body = probe(950)
        sha = sha256_hex(body)
        self.send(body)
        res = self.result(sha)
        self.assertEqual(res["status"], "failed", res)
        att = self.relay_record(sha)["attempts"]
        self.assertEqual([(a["status"], a["status_text"]) for a in att],
                         [("refused", "refused: this daemon's own listener")], att)
        time.sleep(0.5)
        caps = [e for e in self.c.events() if e.get("eventid") == "fosr.relay.decision"]
        self.assertEqual(len(caps), 1, "the relayed copy came back: %s" % caps)


class TestTestServerUnspecifiedIsOurListener(TestTestServerIsOurListener):
    """The same through 0.0.0.0, which connect() takes for this host: our
    listener on 127.0.0.1 answered."""

    def setUp(self):
        super().setUp()

    def _server(self):
        return "0.0.0.0:%d" % self.test_server_port


# ---------------------------------------------------------------- destinations
#
# A honeypot must never deliver to loopback, private, link-local, shared,
# documentation, multicast, reserved... addresses nor to itself.  The fake DNS
# answers MX/A/AAAA with every forbidden range; a fake MX on 127.0.0.1 and a
# connection counter on 127.0.0.2 (both on the MX port) must see nothing.
# Without the fix only the loopback answers reach a listener here; the other
# ranges are never connected to by the fixed daemon (no traffic leaves).

FORBIDDEN_V4 = [
    "0.0.0.1", "0.255.255.255", "10.0.0.1", "10.255.255.255", "100.64.0.1",
    "100.127.255.254", "127.0.0.1", "127.0.0.2", "127.255.255.254", "169.254.0.1",
    "169.254.255.254", "172.16.0.1", "172.31.255.254", "192.0.0.1", "192.0.0.255",
    "192.0.2.1", "192.88.99.1", "192.168.0.1", "192.168.255.254", "198.18.0.1",
    "198.19.255.254", "198.51.100.1", "203.0.113.1", "224.0.0.1", "239.255.255.255",
    "240.0.0.1", "255.255.255.255", "203.0.113.5",
]
FORBIDDEN_V6 = [
    "::", "::1", "::ffff:127.0.0.2", "::ffff:10.0.0.1", "::ffff:0.0.0.0",
    "::a00:1", "64:ff9b::7f00:2", "64:ff9b::a00:1", "64:ff9b:1::1", "100::1",
    "2001::1", "2001:1ff:ffff::1", "2001:db8::1", "2001:10::1", "2001:20::1",
    "2002:7f00:2::1", "2002:a00:1::1", "3fff::1", "5f00::1", "fc00::1", "fdff::1",
    "fe80::1", "febf::1", "fec0::1", "ff02::1", "4000::1", "1::1", "1fff::1",
]


def _chunks(lst, n):
    return [lst[i:i + n] for i in range(0, len(lst), n)]


def _forbidden_table(port):
    t = {}
    for i, ch in enumerate(_chunks(FORBIDDEN_V4, 8)):
        t["v4-%d.example" % i] = {"MX": [(10, "mx.v4-%d.example" % i)]}
        t["mx.v4-%d.example" % i] = {"A": ch}
    for i, ch in enumerate(_chunks(FORBIDDEN_V6, 8)):
        t["v6-%d.example" % i] = {"MX": [(10, "mx.v6-%d.example" % i)]}
        t["mx.v6-%d.example" % i] = {"AAAA": ch}
    # MX names that must fail as names, whatever they resolve to.
    t["names.example"] = {"MX": [(10, "127.0.0.2"), (20, "localhost"), (30, "[127.0.0.2]"),
                                 (40, "::1"), (50, "bad_name.names.example")]}
    t["localhost"] = {"A": ["127.0.0.2"], "AAAA": ["::1"]}
    t["bad_name.names.example"] = {"A": ["127.0.0.2"]}
    t["lo.example"] = {"MX": [(10, "mx.lo.example")]}
    t["mx.lo.example"] = {"A": ["127.0.0.1", "127.0.0.2"], "AAAA": ["::1", "::ffff:127.0.0.2"]}
    t["null.example"] = {"MX": [(0, ".")]}
    t["implicit.example"] = {"A": ["127.0.0.2"], "AAAA": ["::1"]}   # no MX: RFC 5321 5.1
    # CNAME chains: a public-looking MX name, a domain, an implicit MX.
    t["cname.example"] = {"MX": [(10, "mx.cname.example")]}
    t["mx.cname.example"] = {"CNAME": "deep.cname.example"}
    t["deep.cname.example"] = {"A": ["127.0.0.2"], "AAAA": ["::ffff:127.0.0.2", "64:ff9b::7f00:2"]}
    t["alias.example"] = {"CNAME": "lo.example"}
    t["implcname.example"] = {"CNAME": "deep.cname.example"}
    return t


class TestForbiddenDestinations(RelayCase):
    allow_destinations = None
    mx_table = staticmethod(_forbidden_table)
    caps = {"per_day": 1000, "per_hour": 1000}

    def setUp(self):
        super().setUp()
        self.mx2 = fakemx.FakeMX(mode="hang", host="127.0.0.2", port=self.mx.port).start()
        self.extra.append(self.mx2)

    def assert_nothing_seen(self):
        time.sleep(0.3)
        self.assertEqual(self.mx.messages, [])
        self.assertEqual(self.mx2.connections, 0, "a forbidden address was connected to")

    def relay_to(self, rcpt, n):
        body = probe(n)
        sha = sha256_hex(body)
        self.send(body, rcpt=rcpt)
        return sha

    def test_address_literals_and_routing_tricks_refused(self):
        # The repros first, then the rest of the class.
        rcpts = ["victim%target.example@[127.0.0.2]", '"abuse"@[127.0.0.2]',
                 "drop@[IPv6:::1]", "drop@[127.0.0.1]", "victim%target.example@spammer.example",
                 "victim!target.example@spammer.example", '"victim@target.example"@spammer.example',
                 '"victim%target"@spammer.example', "drop@bad_domain.example",
                 "drop@-bad.spammer.example", "drop@spammer..example",
                 "drop@" + "a" * 64 + ".example", "drop@127.0.0.2"]
        accepted = []
        for i, r in enumerate(rcpts):
            body = probe(300 + i)
            cl = self.client("smtp")
            cl.ehlo("client.example")
            cl.expect("MAIL FROM:<%s>" % DROP, 250)
            if cl.cmd("RCPT TO:<%s>" % r).code == 250:    # the persona may refuse some
                cl.data(body)
                accepted.append((r, sha256_hex(body)))
            cl.cmd("QUIT")
        self.assertEqual([a[0] for a in accepted[:2]], rcpts[:2], accepted)
        self.assertGreaterEqual(len(accepted), len(rcpts) - 2, accepted)
        for r, sha in accepted:
            d = self.wait_decisions(sha, 1)
            self.assertEqual(d[0]["verdict"], "refused", (r, d[0]))
            self.assertIn("recipient", d[0]["reason"], (r, d[0]))
        self.assertNotIn(("127.0.0.2", "A"), self.dns.queries)
        self.assert_nothing_seen()

    def test_loopback_answers_and_mx_names_never_connected(self):
        cases = {"drop@lo.example": None, "drop@names.example": None,
                 "drop@null.example": "null MX", "drop@implicit.example": None}
        shas = {r: self.relay_to(r, 400 + i) for i, r in enumerate(cases)}
        for r, sha in shas.items():
            res = self.result(sha)
            self.assertEqual(res["status"], "failed", (r, res))
            rec = self.relay_record(sha)
            if cases[r]:
                self.assertIn(cases[r], rec["attempts"][0].get("status_text", ""), rec)
            for a in rec["attempts"]:
                self.assertNotIn(a["status"], ("tempfail", "permfail", "delivered"), (r, a))
        rec = self.relay_record(shas["drop@names.example"])
        self.assertEqual([a["mx"] for a in rec["attempts"]],
                         ["127.0.0.2", "localhost", "[127.0.0.2]", "::1",
                          "bad_name.names.example"], rec)
        self.assertNotIn(("localhost", "A"), self.dns.queries)
        self.assert_nothing_seen()

    def test_cname_chains_to_loopback_refused(self):
        cases = ["drop@cname.example", "drop@alias.example", "drop@implcname.example"]
        shas = {r: self.relay_to(r, 450 + i) for i, r in enumerate(cases)}
        for r, sha in shas.items():
            res = self.result(sha)
            self.assertEqual(res["status"], "failed", (r, res))
            atts = self.relay_record(sha)["attempts"]
            self.assertTrue(any(a["ip"] for a in atts), (r, atts))
            for a in atts:
                self.assertTrue(a["status"].startswith("refused"), (r, a))
        self.assertIn(("mx.cname.example", "A"), self.dns.queries)
        self.assert_nothing_seen()

    def test_every_forbidden_range_refused_after_resolution(self):
        doms = ["v4-%d.example" % i for i in range(len(_chunks(FORBIDDEN_V4, 8)))] + \
               ["v6-%d.example" % i for i in range(len(_chunks(FORBIDDEN_V6, 8)))]
        shas = [self.relay_to("drop@" + d, 500 + i) for i, d in enumerate(doms)]
        refused = set()
        for d, sha in zip(doms, shas):
            res = self.result(sha)
            self.assertEqual(res["status"], "failed", (d, res))
            for a in self.relay_record(sha)["attempts"]:
                self.assertTrue(a["status"].startswith("refused"), (d, a))
                if a["ip"]:
                    refused.add(ipaddress.ip_address(a["ip"]))
        want = {ipaddress.ip_address(x) for x in FORBIDDEN_V4 + FORBIDDEN_V6}
        self.assertEqual(want - refused, set(), "addresses neither refused nor reported")
        self.assert_nothing_seen()


def _own_table(port):
    return {"spammer.example": {"MX": [(10, "mx1.spammer.example")]},
            "mx1.spammer.example": {"A": ["127.0.0.2", "127.0.0.1"]}}


class TestAllowDestinationsNarrow(RelayCase):
    """The hatch lets through exactly what it names: 127.0.0.1/32, not .2."""
    allow_destinations = ["127.0.0.1/32"]
    mx_table = staticmethod(_own_table)

    def setUp(self):
        super().setUp()
        self.mx2 = fakemx.FakeMX(mode="hang", host="127.0.0.2", port=self.mx.port).start()
        self.extra.append(self.mx2)

    def test_only_the_allowed_address_is_used(self):
        body = probe(8)
        sha = sha256_hex(body)
        self.send(body)
        self.assertEqual(self.result(sha)["status"], "delivered")
        rec = self.relay_record(sha)
        self.assertTrue(rec["attempts"][0]["status"].startswith("refused"), rec)
        self.assertEqual(rec["attempts"][0]["ip"], "127.0.0.2")
        self.assertEqual(rec["attempts"][1]["status"], "delivered")
        self.assertEqual(self.mx2.connections, 0)


def _v6_table(port):
    return {"spammer.example": {"MX": [(10, "mx1.spammer.example")]},
            "mx1.spammer.example": {"AAAA": ["::1"]}}


class TestIPv6MX(RelayCase):
    """An MX reached over IPv6 (AAAA only).  c-ares 1.18 answered every AAAA
    query as empty through dns.c's A-first parsing: this failed with
    "address lookup notfound"."""
    mx_host = "::1"
    allow_destinations = ["::1"]
    mx_table = staticmethod(_v6_table)

    def test_aaaa_only_mx(self):
        body = probe(9)
        sha = sha256_hex(body)
        self.send(body)
        self.assertEqual(self.result(sha)["status"], "delivered")
        rec = self.relay_record(sha)
        self.assertEqual(rec["attempts"][-1]["ip"], "::1", rec)
        self.assertEqual(len(self.mx.wait_messages(1)), 1)


CLONE_NEWNET = 0x40000000
NEW_OWN = "192.31.196.1"    # global unicast (AS112): only the own-address check can refuse it


def _new_own_table(port):
    return {"spammer.example": {"MX": [(10, "mx1.spammer.example")]},
            "mx1.spammer.example": {"A": [NEW_OWN]}}


class PrivateNetns:
    """Mixin: the test class runs in a private network namespace holding only
    lo (root and ip(8) needed, else skipped): addresses and wildcard listeners
    set up there cannot reach or be reached from anything else."""
    _libc = None
    _oldns = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise unittest.SkipTest("needs root and ip(8) for a private network namespace")
        # The suite's shared fake DNS is made before leaving the namespace:
        # made first in here (the first test of a run), its socket would stay
        # in the private namespace, out of reach of every later test's daemon.
        harness.shared_dns()
        cls._libc = ctypes.CDLL(None, use_errno=True)
        cls._oldns = os.open("/proc/self/ns/net", os.O_RDONLY)
        if cls._libc.unshare(CLONE_NEWNET) != 0:
            os.close(cls._oldns)
            cls._oldns = None
            raise unittest.SkipTest("unshare(CLONE_NEWNET): %s" % os.strerror(ctypes.get_errno()))
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        links = subprocess.run(["ip", "-o", "link"], check=True, capture_output=True,
                               text=True).stdout.splitlines()
        assert len(links) == 1 and ": lo:" in links[0], links

    @classmethod
    def tearDownClass(cls):
        if cls._oldns is not None:
            cls._libc.setns(cls._oldns, CLONE_NEWNET)
            os.close(cls._oldns)
        super().tearDownClass()


class TestOwnAddressAddedLater(PrivateNetns, RelayCase):
    """An address this host gains after the daemon started (DHCP, an IPv6
    temporary address, a new interface) is still ours.  The interface list was
    read once at start: an MX resolving to a newer address of this host was
    connected to (the honeypot relayed to itself).  The global NEW_OWN is put
    on lo of the private namespace after the daemon started."""
    allow_destinations = None
    mx_table = staticmethod(_new_own_table)

    def test_address_added_after_start_is_ours(self):
        subprocess.run(["ip", "addr", "add", NEW_OWN + "/32", "dev", "lo"], check=True)
        here = fakemx.FakeMX(mode="record", host=NEW_OWN, port=self.mx.port).start()
        self.extra.append(here)
        body = probe(900)
        sha = sha256_hex(body)
        self.send(body)
        res = self.result(sha)
        self.assertEqual(res["status"], "failed", res)
        att = self.relay_record(sha)["attempts"]
        self.assertEqual([(a["ip"], a["status"], a["status_text"]) for a in att],
                         [(NEW_OWN, "refused", "refused: an address of this honeypot")], att)
        time.sleep(0.3)
        self.assertEqual(here.connections, 0, "the relay connected to this host")


# ---------------------------------------------------------------- hygiene

class TestSmugglingNotRelayed(RelayCase):

    def test_bare_cr_and_smuggling_probes_refused(self):
        bodies = [probe(600, b"x\rMAIL FROM:<a@b.example>\rRCPT TO:<c@d.example>\r\n"),
                  probe(602, b"x\r.\rRCPT TO:<c@d.example>\r\n")]
        for b in bodies:
            sha = sha256_hex(b)
            cl, _ = self.send_mail(b, mail_from=DROP, rcpts=(DROP,))
            cl.cmd("QUIT")
            d = self.wait_decisions(sha, 1)
            self.assertEqual(d[0]["verdict"], "refused", d[0])
            self.assertIn("smuggling anomaly", d[0]["reason"])
        time.sleep(0.3)
        self.assertEqual(self.mx.messages, [])


class TestLineEndsNormalised(RelayCase):
    """A relayed copy has CRLF line ends only (bare LF is not refused: Postfix
    accepts it and so do we; the copy is normalised) and is dot-stuffed."""

    mx_mode = "record"

    def test_bare_lf_normalised_and_dots_stuffed(self):
        body = probe(700, b"lf line\n.dot after lf\nlast\r\n")
        sha = sha256_hex(body)
        self.send(body)
        self.assertEqual(self.result(sha)["status"], "delivered")
        data = self.mx.raw_data[0]
        self.assertNotRegex(data, rb"[^\r]\n", "a bare LF went out")
        self.assertNotRegex(data, rb"\r[^\n]", "a bare CR went out")
        self.assertIn(b"\r\nlf line\r\n..dot after lf\r\nlast\r\n.\r\n", data)


class TestDrippingMX(RelayCase):
    """A hostile MX drips a byte a second: the per-read timeout (3 s) never
    fires; the attempt's total deadline (relay.timeouts.attempt) ends it."""
    timeouts = {"connect": 2, "greeting": 3, "command": 3, "data": 3, "attempt": 4}

    mx_mode = "drip"

    def test_attempt_abandoned_at_the_deadline(self):
        body = probe(800)
        sha = sha256_hex(body)
        self.send(body)
        d = self.wait_decisions(sha, 1)
        t0 = time.time()
        res = self.result(sha, timeout=15)
        took = time.time() - t0
        self.assertEqual(res["status"], "failed", res)
        att = self.relay_record(sha)["attempts"][0]
        self.assertIn("deadline", att.get("error", ""), att)
        self.assertEqual(att["stage"], "greeting", att)
        self.assertGreaterEqual(self.mx.connections, 1)
        self.assertLess(took, 4 + 3 * self.slow, "the attempt outlived its deadline")
        self.assertEqual(d[0]["verdict"], "relay")


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
        # The decision is logged when the reservation is counted in memory;
        # the relay's worker writes it to the caps journal after, and only
        # then is the result logged (a kill -9 before that sent nothing, so
        # rightly counts nothing).  The results are waited for.
        for n in (300, 301):
            self.assertEqual(self.result(sha256_hex(probe(n)))["status"], "dry-run")
        self.c.kill9()
        self.c.start()
        # Dot-atom forms reach the caps, keyed in canonical form; quoted or
        # escaped ones are refused before (the relay sends plain dot-atoms only).
        for i, rcpt in enumerate(["drop@SPAMMER.example", "DROP@spammer.example",
                                  LONG_RCPT, LONG_RCPT.upper()]):
            d = self.verdict(probe(310 + i), rcpt)
            self.assertEqual(d["verdict"], "refused", (rcpt, d))
            self.assertIn("per_recipient", d["reason"])
        for i, rcpt in enumerate(['"drop"@spammer.example', "dr\\op@SPAMMER.example",
                                  '"' + "d" * 300 + '"@Spammer.Example',
                                  "drop@spammer.example."]):
            d = self.verdict(probe(315 + i), rcpt)
            self.assertEqual(d["verdict"], "refused", (rcpt, d))
            self.assertRegex(d["reason"], "not a dot-atom|not a valid host name")
        # Another recipient at the same domain is still within the caps.
        d = self.verdict(probe(320), "other@spammer.example")
        self.assertEqual(d["verdict"], "dry-run", d)
        self.expect_exit = None

    def test_never_relay_equivalent_forms(self):
        for i, rcpt in enumerate(["ABUSE@example.com", "Postmaster+x@example.net",
                                  "x@SpamHaus.Org", "x@sub.spamhaus.ORG"]):
            d = self.verdict(probe(330 + i), rcpt)
            self.assertEqual(d["verdict"], "refused", (rcpt, d))
            self.assertIn("never_relay", d["reason"])
            if "pamhaus" in rcpt.lower():   # matched as that domain
                self.assertIn('matches "spamhaus.org"', d["reason"])
        # Quoted or escaped local parts, trailing dots and IDN domains (in
        # any mapping, libidn2 inside the sandboxed daemon) never reach a
        # relay at all: refused before never_relay is asked.
        for i, rcpt in enumerate(['"abuse"@example.com', '"postmaster"@example.net',
                                  "post\\master@example.net", "x@SpamHaus.Org.",
                                  "x@spamhaus\u3002org", "x@\uff33pamhaus.org"]):
            d = self.verdict(probe(360 + i), rcpt)
            self.assertEqual(d["verdict"], "refused", (rcpt, d))
            self.assertRegex(d["reason"], "not a dot-atom|not a valid host name|never_relay")

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


class TestCapsPerNetwork(RelayCase):
    """One client network (a /24, an IPv6 /64) cannot take the whole day's
    budget: relay.caps.per_client_network, by default a quarter of per_day,
    leaves probes for every other spammer, and a restart keeps the counts."""
    caps = {"per_day": 8, "per_client_network": None}    # the default share: 2

    def relay_from(self, n, source, rcpt):
        body = probe(n)
        self.send(body, rcpt=rcpt, source=source)
        return self.wait_decisions(sha256_hex(body), 1)[0]

    def test_one_network_cannot_take_the_day(self):
        got = []
        # Four addresses of one /24, each under per_client_ip: two relayed.
        for i, src in enumerate(["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]):
            got.append(self.relay_from(600 + i, src, "n%d@spammer.example" % i))
        self.assertEqual([d["verdict"] for d in got], ["relay", "relay", "refused", "refused"],
                         got)
        for d in got[2:]:
            self.assertIn("per_client_network: 2 of 2 used (127.0.0.0/24)", d["reason"])
        self.assertEqual(got[2]["caps"]["client_network"], 2, got[2])
        self.assertEqual(got[2]["caps"]["per_client_network"], 2, got[2])
        # Another network's probe still goes out.
        d = self.relay_from(610, "127.0.1.1", "m@spammer.example")
        self.assertEqual(d["verdict"], "relay", d)
        self.mx.wait_messages(3)
        # kill -9 and restart: the journal still counts the first network's share.
        self.c.kill9()
        self.c.start()
        d = self.relay_from(620, "127.0.0.9", "o@spammer.example")
        self.assertEqual(d["verdict"], "refused", d)
        self.assertIn("per_client_network", d["reason"])
        d = self.relay_from(621, "127.0.2.1", "p@spammer.example")
        self.assertEqual(d["verdict"], "relay", d)
        self.mx.wait_messages(4)
        time.sleep(0.3)
        self.assertEqual(len(self.mx.messages), 4)
        self.expect_exit = None


if __name__ == "__main__":
    unittest.main(verbosity=2)
