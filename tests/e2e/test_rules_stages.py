"""Rules at every stage (issue 4): EHLO, AUTH, RSET replies; DATA replies after
the commit; publish: false kept off hpfeeds; one fosr.rule.match per decision;
a client that leaves while its DATA rules run.

The rules file is src/rules.c's syntax; relay.mode is dry-run (rules run only
when relaying is not off), so nothing is ever sent anywhere.
"""

import base64
import os
import socket
import time
import unittest


import harness
from harness import CollectorTestCase, sha256_hex
from fixtures.hpfeeds import Broker, feed_cfg

RULES = """\
rules:
  - name: bad-helo
    priority: 10
    stage: ehlo
    conditions:
      - helo: {equals: bad.example}
    actions:
      reply: {code: 554, text: "5.7.1 Go away"}
      tag: bad-helo

  - name: bye-helo
    priority: 11
    stage: ehlo
    conditions:
      - helo: {equals: bye.example}
    actions:
      reply: {code: 421, text: "4.7.0 Closing"}

  - name: monitoring
    priority: 12
    stage: ehlo
    conditions:
      - helo: {equals: monitor.example}
    actions:
      publish: false
      tag: monitoring

  - name: stolen-creds
    priority: 10
    stage: auth
    conditions:
      - auth_user: {equals: blocked}
    actions:
      reply: {code: 535, text: "5.7.8 Error: authentication failed: nope"}
      tag: blocked-user

  - name: rset-trap
    priority: 10
    stage: rset
    conditions:
      - mail_from: {equals: trap@example.org}
    actions:
      reply: {code: 250, text: "2.0.0 Flushed"}
      tag: rset-trap

  - name: greylist
    priority: 10
    stage: data
    conditions:
      - subject: {contains: greylist-me}
    actions:
      reply: {code: 451, text: "4.7.1 Try again later"}
      tag: greylisted

  - name: private
    priority: 20
    stage: data
    conditions:
      - subject: {contains: keep-private}
    actions:
      publish: false
      tag: private

  - name: slow-body
    priority: 30
    stage: data
    conditions:
      - body: {regex: "needle-[0-9]+-end"}
    actions:
      tag: needle
"""


def mail(subject, extra=b""):
    return (b"From: spammer@example.org\r\nTo: victim@example.net\r\nSubject: " +
            subject.encode() + b"\r\n\r\nbody of " + subject.encode() + b"\r\n" + extra)


class RulesCase(CollectorTestCase):
    autostart = False
    config = {"relay": {"mode": "dry-run", "rules": "{tmp}/rules.yml",
                        "own_addresses": ["203.0.113.5"]}}

    def setUp(self):
        super().setUp()
        with open(os.path.join(self.tmpdir, "rules.yml"), "w") as f:
            f.write(RULES)

    def matches(self, **kw):
        return [e for e in self.c.events() if e.get("eventid") == "fosr.rule.match"
                and all(e.get(k) == v for k, v in kw.items())]

    def journal_by_sha(self, sha):
        for r in self.c.journal():
            if r.get("sha256") == sha:
                return r
        return None

    def wait_journal(self, sha, timeout=10):
        end = time.time() + timeout * self.slow
        while time.time() < end:
            r = self.journal_by_sha(sha)
            if r is not None:
                return r
            time.sleep(0.05)
        self.fail("no journal record for %s\n%s" % (sha, self.c.stderr_tail()))

    def transaction(self, cl, body, mail_from="spammer@example.org"):
        self.assertEqual(cl.cmd("MAIL FROM:<%s>" % mail_from).code, 250)
        self.assertEqual(cl.cmd("RCPT TO:<victim@example.net>").code, 250)
        return cl.data(body)


class TestStages(RulesCase):

    def setUp(self):
        super().setUp()
        self.c.start()

    def test_ehlo_rule_554(self):
        cl = self.client()
        r = cl.ehlo("bad.example")
        self.assertEqual((r.code, r.lines), (554, ["5.7.1 Go away"]))
        r = cl.cmd("HELO bad.example")
        self.assertEqual((r.code, r.lines), (554, ["5.7.1 Go away"]))
        # Another name is answered as usual, keyword list and all.
        r = cl.ehlo("good.example")
        self.assertEqual(r.code, 250)
        self.assertIn("PIPELINING", r.lines)
        cl.cmd("QUIT")
        ev = self.c.wait_event("fosr.rule.match", lambda e: e.get("rule") == "bad-helo")
        self.assertEqual(ev["stage"], "ehlo")
        self.assertEqual(ev["tag"], "bad-helo")
        self.assertEqual(ev["reply_code"], 554)
        self.assertEqual(ev["src_port"], cl.local_port)
        self.assertTrue(any(x.get("matcher") == "helo" and x.get("what") == "bad.example"
                            for x in ev["evidence"]), ev)
        self.assertEqual(len(self.matches(rule="bad-helo")), 2)   # EHLO and HELO

    def test_ehlo_rule_421_closes(self):
        cl = self.client()
        r = cl.ehlo("bye.example")
        self.assertEqual((r.code, r.lines), (421, ["4.7.0 Closing"]))
        self.assertTrue(cl.wait_closed(5 * self.slow))

    def test_ehlo_tag_and_publish_false_reach_the_record(self):
        body = mail("from the monitor")
        cl, qid = self.send_mail(body, ehlo="monitor.example")
        cl.cmd("QUIT")
        rec = self.c.journal_record(qid)
        self.assertEqual(rec.get("tag"), "monitoring", rec)
        self.assertIs(rec.get("publish"), False, rec)
        self.assertEqual(rec.get("rule"), "monitoring", rec)
        self.assertEqual(rec.get("rule_stage"), "ehlo", rec)

    def test_auth_rule_refuses(self):
        cl = self.client()
        self.assertEqual(cl.ehlo().code, 250)
        cred = base64.b64encode(b"\0blocked\0secret").decode()
        r = cl.cmd("AUTH PLAIN " + cred)
        self.assertEqual((r.code, r.lines), (535, ["5.7.8 Error: authentication failed: nope"]))
        cred = base64.b64encode(b"\0alice\0secret").decode()
        self.assertEqual(cl.cmd("AUTH PLAIN " + cred).code, 235)
        cl.cmd("QUIT")
        ev = self.c.wait_event("fosr.rule.match", lambda e: e.get("rule") == "stolen-creds")
        self.assertEqual(ev["stage"], "auth")
        login = [e for e in self.c.events() if e.get("eventid") == "fosr.login.attempt"]
        self.assertEqual([e["success"] for e in login], [False, True])

    def test_rset_rule_reply(self):
        cl = self.client()
        self.assertEqual(cl.ehlo().code, 250)
        self.assertEqual(cl.cmd("MAIL FROM:<trap@example.org>").code, 250)
        r = cl.cmd("RSET")
        self.assertEqual((r.code, r.lines), (250, ["2.0.0 Flushed"]))
        # The transaction is gone, as after any RSET.
        self.assertEqual(cl.cmd("MAIL FROM:<other@example.org>").code, 250)
        r = cl.cmd("RSET")
        self.assertEqual((r.code, r.lines), (250, ["2.0.0 Ok"]))
        cl.cmd("QUIT")
        ev = self.c.wait_event("fosr.rule.match", lambda e: e.get("rule") == "rset-trap")
        self.assertEqual(ev["stage"], "rset")

    def test_data_rule_451_after_commit(self):
        body = mail("please greylist-me now")
        sha = sha256_hex(body)
        cl = self.client()
        self.assertEqual(cl.ehlo().code, 250)
        r = self.transaction(cl, body)
        self.assertEqual((r.code, r.lines), (451, ["4.7.1 Try again later"]))
        # The session goes on as after any message.
        self.assertEqual(cl.cmd("NOOP").code, 250)
        cl.cmd("QUIT")
        # Kept all the same: spool, journal (with the decision), event.
        self.assertEqual(self.c.message_bytes(sha), body)
        rec = self.wait_journal(sha)
        self.assertEqual(rec["tag"], "greylisted")
        self.assertEqual(rec["rule"], "greylist")
        self.assertEqual(rec["rule_stage"], "data")
        self.assertIs(rec["publish"], True)
        self.assertEqual(rec["reply"], "451 4.7.1 Try again later")
        self.assertEqual(rec["rules"]["rule"], "greylist")
        ev = self.c.wait_event("fosr.mail.received", lambda e: e.get("sha256") == sha)
        self.assertEqual(ev["reply_code"], 451)
        # One decision, one event: the relay reuses it, it does not decide again.
        self.c.wait_event("fosr.relay.decision", lambda e: e.get("sha256") == sha)
        m = self.matches(sha256=sha)
        self.assertEqual(len(m), 1, m)
        self.assertEqual(m[0]["stage"], "data")
        self.assertEqual(m[0]["rule"], "greylist")
        self.assertEqual(m[0]["reply_code"], 451)
        self.assertTrue(any(x.get("matcher") == "subject" for x in m[0]["evidence"]), m)
        d = [e for e in self.c.events() if e.get("eventid") == "fosr.relay.decision"
             and e.get("sha256") == sha]
        self.assertEqual(d[0]["rule"], "greylist")

    def test_data_no_match_unchanged(self):
        body = mail("nothing special")
        cl, qid = self.send_mail(body)
        cl.cmd("QUIT")
        rec, _ = self.assert_stored(body, qid)
        for k in ("publish", "tag", "rule", "reply"):
            self.assertNotIn(k, rec)
        self.assertEqual(rec["rules"], {"stage": "data", "matched": False})
        self.c.wait_event("fosr.relay.decision", lambda e: e.get("sha256") == sha256_hex(body))
        self.assertEqual(self.matches(sha256=sha256_hex(body)), [])

    def test_bdat_last_rule_reply(self):
        body = mail("greylist-me by bdat")
        sha = sha256_hex(body)
        cl = self.client()
        self.assertEqual(cl.ehlo().code, 250)
        self.assertEqual(cl.cmd("MAIL FROM:<a@example.org>").code, 250)
        self.assertEqual(cl.cmd("RCPT TO:<b@example.net>").code, 250)
        cl.send(b"BDAT %d LAST\r\n" % len(body) + body)
        r = cl.reply()
        self.assertEqual((r.code, r.lines), (451, ["4.7.1 Try again later"]))
        cl.cmd("QUIT")
        self.assertEqual(self.wait_journal(sha)["transfer"], "BDAT")
        self.assertEqual(self.c.message_bytes(sha), body)

    def test_body_rule_small_and_large_mails_alike(self):
        # Mails under 64 KiB are decided on the loop from the spool's memory,
        # bigger ones on the worker from the file: the decision is the same.
        for size in (200, 60 * 1024, 70 * 1024, 300 * 1024):
            body = mail("needle by size %d" % size,
                        b"needle-%d-end\r\n" % size + b"y" * (size - 2) + b"\r\n")
            cl, qid = self.send_mail(body)
            cl.cmd("QUIT")
            rec, _ = self.assert_stored(body, qid)
            self.assertEqual(rec.get("tag"), "needle", (size, rec))
            self.assertEqual(rec["rules"]["rule"], "slow-body", (size, rec))

    def test_disconnect_while_data_rules_run(self):
        # A big body makes the rules (MIME decoding) take a while on the worker: the
        # client sends the final dot and leaves at once, most probably while
        # the rules run (the debug log shows the state).  Whatever the timing,
        # the daemon survives and the message is durable with its decision.
        filler = (b"x" * 998 + b"\r\n") * 8000
        shas = []
        for i in range(5):
            body = mail("leaving %d" % i, b"needle-%d-end\r\n" % i + filler)
            shas.append(sha256_hex(body))
            s = socket.create_connection((harness.HOST, self.c.ports["smtp"]), 10)
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n"
                      b"RCPT TO:<b@example.net>\r\nDATA\r\n")
            while not f.readline().startswith(b"354"):
                pass
            s.sendall(body + b".\r\n")
            s.shutdown(socket.SHUT_RDWR)
            s.close()
        for i, sha in enumerate(shas):
            rec = self.wait_journal(sha, timeout=30)
            self.assertEqual(rec["tag"], "needle", rec)
            self.assertTrue(os.path.exists(self.c.message_path(sha)))
        self.assertTrue(self.c.running)
        # The daemon still serves.
        body = mail("after")
        cl, qid = self.send_mail(body)
        cl.cmd("QUIT")
        self.assert_stored(body, qid)


class TestDebugState(RulesCase):
    collector_args = ("-d",)

    def test_session_waits_in_rules_state(self):
        self.c.start()
        body = mail("greylist-me with -d")
        cl = self.client()
        self.assertEqual(cl.ehlo().code, 250)
        self.assertEqual(self.transaction(cl, body).code, 451)
        cl.cmd("QUIT")
        self.wait_journal(sha256_hex(body))
        err = self.c.stderr_text()
        self.assertIn("state command -> rules", err)
        self.assertIn("state rules -> command", err)


class TestRulesOff(RulesCase):
    config = {"relay": {"mode": "off", "rules": "{tmp}/rules.yml"}}

    def test_mode_off_changes_nothing(self):
        self.c.start()
        cl = self.client()
        self.assertEqual(cl.ehlo("bad.example").code, 250)
        body = mail("greylist-me but off")
        _, qid = self.send_mail(body, client=cl)
        cl.cmd("QUIT")
        rec, _ = self.assert_stored(body, qid)
        for k in ("publish", "tag", "rule", "rules"):
            self.assertNotIn(k, rec)
        self.assertEqual(self.matches(), [])


class TestPublishFalse(RulesCase):

    def setUp(self):
        super().setUp()
        self.broker = Broker(self.tmpdir).start()
        self.c = harness.Collector(self.tmpdir, config=harness.deep_merge(
            self.config, feed_cfg(self.broker.port)))
        self.c.start()

    def tearDown(self):
        try:
            self.broker.kill()
        finally:
            super().tearDown()

    def test_publish_false_not_published(self):
        private = mail("keep-private please")
        public = mail("a public one")
        cl, q1 = self.send_mail(private)
        _, q2 = self.send_mail(public, client=cl)
        cl.cmd("QUIT")
        rec = self.c.journal_record(q1)
        self.assertIs(rec["publish"], False, rec)
        self.assertEqual(rec["tag"], "private")
        # The later mail is published, so the private one was looked at first.
        end = time.time() + 15 * self.slow
        while time.time() < end and sha256_hex(public) not in self.broker.shas():
            time.sleep(0.1)
        self.assertIn(sha256_hex(public), self.broker.shas(), self.c.stderr_tail())
        self.assertNotIn(sha256_hex(private), self.broker.shas())
        # Still stored.
        self.assertEqual(self.c.message_bytes(sha256_hex(private)), private)


class TestShippedProbeRule(RulesCase):
    """The built-in rules (relay.rules ""), dry-run: forged trace headers naming
    our address are ordinary spam; the 8-hex-digit address form is a probe."""
    config = {"relay": {"mode": "dry-run", "own_addresses": ["203.0.113.5"]}}

    def decision(self, sha):
        return self.c.wait_event("fosr.relay.decision", lambda e: e.get("sha256") == sha)

    def test_forged_trace_headers_not_a_probe(self):
        self.c.start()
        for own in ("203.0.113.5", harness.HOST):
            body = (b"Received: from pc-12.dsl.example ([198.51.100.9])\r\n"
                    b"\tby mx.corp.example ([" + own.encode() + b"]) with SMTP;\r\n"
                    b"\tSun, 6 Dec 2026 04:00:00 +0000\r\n"
                    b"X-Originating-IP: [" + own.encode() + b"]\r\n"
                    b"Message-ID: <20261206.4711@[" + own.encode() + b"]>\r\n"
                    b"References: <a.1@[" + own.encode() + b"]>\r\n"
                    b"From: \"Shop\" <sales@shop.example>\r\n"
                    b"To: victim@other.example\r\n"
                    b"Subject: 80% off today\r\n\r\nBuy now.\r\n")
            sha = sha256_hex(body)
            cl, qid = self.send_mail(body, mail_from="sales@shop.example",
                                     rcpts=("victim@other.example",))
            cl.cmd("QUIT")
            rec, _ = self.assert_stored(body, qid)
            self.assertEqual(rec["rules"], {"stage": "data", "matched": False}, rec)
            d = self.decision(sha)
            self.assertIs(d["relay"], False, d)
            self.assertEqual(self.matches(sha256=sha), [])

    def test_copied_header_in_text_not_a_probe(self):
        """A header copied into the text (a bounce indents it, a reply quotes
        it), or a header after an mbox From line: its fields naming our
        address are no probe."""
        self.c.start()
        for own in ("203.0.113.5", harness.HOST):
            o = own.encode()
            bodies = (
                b"From: MAILER-DAEMON@relay.example\r\nTo: victim@other.example\r\n"
                b"Subject: Undeliverable: offer\r\n\r\nDelivery has failed.\r\n\r\n"
                b"   Received: from pc ([198.51.100.9])\r\n    \tby mx ([" + o + b"])\r\n"
                b"> X-Originating-IP: [" + o + b"]\r\n"
                b"> Received : by " + o + b"\r\n",
                b"From spammer@pc.example Sun Dec  6 04:00:00 2026\r\n"
                b"Received: from pc ([198.51.100.9]) by mx ([" + o + b"])\r\n"
                b"Cc: <admin@[" + o + b"]>\r\nFrom: <sales@shop.example>\r\n"
                b"Subject: 80% off today\r\n\r\nBuy now.\r\n")
            for body in bodies:
                sha = sha256_hex(body)
                cl, qid = self.send_mail(body, mail_from="sales@shop.example",
                                         rcpts=("victim@other.example",))
                cl.cmd("QUIT")
                rec, _ = self.assert_stored(body, qid)
                self.assertEqual(rec["rules"], {"stage": "data", "matched": False}, rec)
                self.assertIs(self.decision(sha)["relay"], False)

    def test_domain_literal_recipient_not_relayed(self):
        """A probe-like mail to a domain literal (delivered to that address,
        no MX: back to us, or into our network) is not relayed."""
        self.c.start()
        for rcpt in ("postmaster@[%s]" % harness.HOST, "drop@[10.0.0.1]"):
            body = (b"From: Postmaster@isp.example\r\nSubject: Open relay notice "
                    b"203.0.113.5\r\n\r\nYour server relays for " + rcpt.encode() + b".\r\n")
            sha = sha256_hex(body)
            cl, qid = self.send_mail(body, mail_from="postmaster@isp.example",
                                     rcpts=(rcpt,))
            cl.cmd("QUIT")
            rec, _ = self.assert_stored(body, qid)
            self.assertIs(rec["rules"]["matched"], False, rec)
            self.assertIs(self.decision(sha)["relay"], False)

    def test_hex_address_is_a_probe(self):
        self.c.start()
        # 203.0.113.5 is CB007105.
        body = (b"From: tester <drop@spammer.example>\r\nTo: drop@spammer.example\r\n"
                b"Subject: CB007105:25\r\n\r\ntest\r\n")
        sha = sha256_hex(body)
        cl, qid = self.send_mail(body, mail_from="drop@spammer.example",
                                 rcpts=("drop@spammer.example",))
        cl.cmd("QUIT")
        ev = self.c.wait_event("fosr.rule.match", lambda e: e.get("sha256") == sha)
        self.assertEqual(ev["rule"], "probe")
        self.assertIn({"matcher": "mentions_own_address", "where": "header:Subject",
                       "what": "CB007105:25"}, ev["evidence"])
        self.assertIs(self.decision(sha)["relay"], True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
