"""AUTH capture: PLAIN, LOGIN, CRAM-MD5 through smtplib and raw, outcomes, bad input."""

import base64
import hmac
import json
import os
import re
import signal
import smtplib
import time
import unittest

from fixtures.abuse import loopback_sources, wait_until
from harness import (HOST, HOSTNAME, CollectorTestCase, queue_id, unverified_context,
                     with_config)


def b64(s):
    if isinstance(s, str):
        s = s.encode("utf-8")
    return base64.b64encode(s).decode("ascii")


BODY = b"Subject: auth\r\n\r\nauthenticated mail\r\n"


class AuthTests(CollectorTestCase):

    def _smtplib_auth(self, mech, user, password, initial=True, name="submission", tls=True):
        challenges = []
        if name == "submissions":
            s = smtplib.SMTP_SSL(HOST, self.c.ports[name], context=unverified_context(),
                                 timeout=10 * self.slow)
        else:
            s = smtplib.SMTP(HOST, self.c.ports[name], timeout=10 * self.slow)
        try:
            s.ehlo()
            if tls and name != "submissions":
                s.starttls(context=unverified_context())
                s.ehlo()
            self.assertIn(mech, s.esmtp_features.get("auth", "").split())
            s.user, s.password = user, password
            if mech == "PLAIN":
                obj = s.auth_plain
            elif mech == "LOGIN":
                obj = s.auth_login
            else:
                def obj(challenge=None):
                    if challenge is None:
                        return None
                    challenges.append(challenge)
                    return s.auth_cram_md5(challenge)
            code, resp = s.auth(mech, obj, initial_response_ok=initial)
            self.assertEqual(code, 235)
            self.assertEqual(resp, b"2.7.0 Authentication successful")
            port = s.sock.getsockname()[1]
            s.sendmail("a@example.org", ["b@example.net"], BODY)
        finally:
            s.quit()
        ev = self.c.wait_event("fosr.login.attempt", lambda e: e.get("src_port") == port)
        self.assertEqual(ev["mechanism"], mech)
        self.assertEqual(ev["username"], user)
        self.assertIs(ev["success"], True)
        mev = self.c.wait_event("fosr.mail.received", lambda e: e.get("src_port") == port)
        rec = self.c.journal_record(mev["queue_id"])
        self.assertIsInstance(rec["auth"], dict, rec)
        self.assertEqual(rec["auth"]["mechanism"], mech)
        self.assertEqual(rec["auth"]["username"], user)
        return ev, rec, challenges

    def test_plain_initial_response(self):
        ev, rec, _ = self._smtplib_auth("PLAIN", "alice", "s3cret pass")
        self.assertEqual(ev["password"], "s3cret pass")
        self.assertEqual(rec["auth"]["password"], "s3cret pass")

    def test_plain_continuation(self):
        ev, rec, _ = self._smtplib_auth("PLAIN", "bob@example.org", "pw", initial=False)
        self.assertEqual(ev["password"], "pw")

    def test_login_initial_response(self):
        ev, rec, _ = self._smtplib_auth("LOGIN", "carol", "Pa55:word", initial=True)
        self.assertEqual(ev["password"], "Pa55:word")
        self.assertEqual(rec["auth"]["password"], "Pa55:word")

    def test_login_two_step(self):
        ev, rec, _ = self._smtplib_auth("LOGIN", "dave", "two step", initial=False)
        self.assertEqual(ev["password"], "two step")

    def test_utf8_credentials_decoded(self):
        # smtplib cannot send non-ASCII credentials: raw client
        cl = self.client("smtp")
        cl.ehlo()
        self.assertEqual(cl.cmd("AUTH LOGIN " + b64("jürgen")).code, 334)
        self.assertEqual(cl.cmd(b64("pässwörd€")).code, 235)
        ev = self.c.wait_event("fosr.login.attempt", lambda e: e.get("src_port") == cl.local_port)
        self.assertEqual((ev["username"], ev["password"]), ("jürgen", "pässwörd€"))

    def test_cram_md5(self):
        ev, rec, ch = self._smtplib_auth("CRAM-MD5", "erin", "cram-secret")
        self.assertEqual(len(ch), 1)
        challenge = ch[0].decode("ascii")
        self.assertRegex(challenge, r"^<[0-9]+\.[0-9]+@" + re.escape(HOSTNAME) + ">$")
        digest = hmac.new(b"cram-secret", ch[0], "md5").hexdigest()
        dump = json.dumps(rec["auth"])
        self.assertTrue(challenge in dump or b64(challenge) in dump,
                        "CRAM challenge not recorded: %s" % dump)
        self.assertIn(digest, dump, "CRAM response not recorded")
        self.assertIn(digest, json.dumps(ev))

    def test_cram_challenges_differ(self):
        seen = set()
        for _ in range(3):
            cl = self.client("smtp")
            cl.ehlo()
            r = cl.cmd("AUTH CRAM-MD5")
            self.assertEqual(r.code, 334)
            seen.add(base64.b64decode(r.lines[0]))
            self.assertEqual(cl.cmd("*").code, 501)
        self.assertEqual(len(seen), 3, seen)

    def test_implicit_tls_auth(self):
        ev, rec, _ = self._smtplib_auth("PLAIN", "frank", "implicit", name="submissions")
        self.assertEqual(rec["listener"], "submissions")
        self.assertIsInstance(rec["tls"], dict)

    def test_plain_on_port_25_without_tls(self):
        ev, rec, _ = self._smtplib_auth("LOGIN", "grace", "plaintext", name="smtp", tls=False)
        self.assertIsNone(rec["tls"])

    def test_raw_plain_with_authzid(self):
        cl = self.client("smtp")
        cl.ehlo()
        r = cl.cmd("AUTH PLAIN " + b64("admin\0heidi\0pw"))
        self.assertEqual(r.first, "235 2.7.0 Authentication successful")
        ev = self.c.wait_event("fosr.login.attempt", lambda e: e.get("src_port") == cl.local_port)
        self.assertEqual(ev["username"], "heidi")
        # AUTH again in the same session: already authenticated
        self.assertEqual(cl.cmd("AUTH PLAIN " + b64("\0x\0y")).code, 503)

    def test_raw_login_prompts(self):
        cl = self.client("smtp")
        cl.ehlo()
        r = cl.cmd("AUTH LOGIN")
        self.assertEqual(r.first, "334 VXNlcm5hbWU6")
        r = cl.cmd(b64("ivan"))
        self.assertEqual(r.first, "334 UGFzc3dvcmQ6")
        r = cl.cmd(b64("ivanpw"))
        self.assertEqual(r.code, 235)
        ev = self.c.wait_event("fosr.login.attempt", lambda e: e.get("src_port") == cl.local_port)
        self.assertEqual((ev["username"], ev["password"]), ("ivan", "ivanpw"))

    def test_binary_credentials_keep_event_log_valid(self):
        cl = self.client("smtp")
        cl.ehlo()
        raw = b"\0us\xff\xfeer\x01\"\\\0pa\xc3\x28ss\n\r"
        r = cl.cmd("AUTH PLAIN " + base64.b64encode(raw).decode())
        self.assertEqual(r.code, 235)
        self.c.wait_event("fosr.login.attempt", lambda e: e.get("src_port") == cl.local_port)
        self.c.events(strict=True)

    def test_auth_before_ehlo(self):
        # Postfix (smtpd_helo_required = no) takes AUTH as the first command
        cl = self.client("smtp")
        self.assertEqual(cl.cmd("AUTH PLAIN " + b64("\0early\0bird")).code, 235)
        ev = self.c.wait_event("fosr.login.attempt", lambda e: e.get("src_port") == cl.local_port)
        self.assertEqual((ev["username"], ev["password"]), ("early", "bird"))

    def test_bad_auth_input(self):
        cl = self.client("smtp")
        cl.ehlo()
        self.assertEqual(cl.cmd("AUTH").first, "501 5.5.4 Syntax: AUTH mechanism")
        r = cl.cmd("AUTH PLAIN !!!not*base64")
        self.assertEqual(r.first, "535 5.7.8 Error: authentication failed: bad protocol / cancel")
        self.assertEqual(cl.cmd("AUTH LOGIN").code, 334)
        self.assertEqual(cl.cmd("%%%%").code, 535)                       # bad base64 continuation
        self.assertEqual(cl.cmd("AUTH LOGIN").code, 334)
        self.assertEqual(cl.cmd("*").first, "501 5.7.0 Authentication aborted")
        r = cl.cmd("AUTH XOAUTH9")
        self.assertEqual(r.first, "535 5.7.8 Error: authentication failed: no mechanism available")
        self.assertEqual(cl.cmd("AUTH PLAIN " + b64("nonul")).code, 535)
        cl.expect("MAIL FROM:<a@example.org>", 250)
        r = cl.cmd("AUTH PLAIN " + b64("\0u\0p"))
        self.assertEqual(r.first, "503 5.5.1 Error: MAIL transaction in progress")
        self.assertEqual(cl.cmd("RSET").code, 250)
        self.assertEqual(cl.cmd("AUTH PLAIN " + b64("\0u\0p")).code, 235)
        self.assertEqual(cl.cmd("NOOP").code, 250)

    def test_auth_line_too_long(self):
        cl = self.client("smtp")
        cl.ehlo()
        r = cl.cmd("AUTH PLAIN " + "A" * 20000)
        self.assertEqual(r.code // 100, 5, r)
        cl2 = self.client("smtp")
        self.assertEqual(cl2.ehlo().code, 250)

    @with_config({"auth": {"outcome": "reject"}})
    def test_outcome_reject(self):
        cl = self.client("smtp")
        cl.ehlo()
        r = cl.cmd("AUTH PLAIN " + b64("\0judy\0nope"))
        self.assertEqual(r.code, 535, r)
        self.assertTrue(r.lines[0].startswith("5.7.8"), r)
        ev = self.c.wait_event("fosr.login.attempt", lambda e: e.get("src_port") == cl.local_port)
        self.assertIs(ev["success"], False)
        self.assertEqual((ev["username"], ev["password"]), ("judy", "nope"))
        # still an open relay without AUTH
        cl.expect("MAIL FROM:<a@example.org>", 250)
        cl.expect("RCPT TO:<b@example.net>", 250)
        queue_id(cl.data(BODY))

    @with_config({"auth": {"outcome": "accept_after", "accept_after": 2}})
    def test_outcome_accept_after(self):
        cl = self.client("smtp")
        cl.ehlo()
        codes = [cl.cmd("AUTH PLAIN " + b64("\0kim\0try%d" % i)).code for i in range(3)]
        self.assertEqual(codes, [535, 535, 235])
        port = cl.local_port
        self.c.wait_event("fosr.login.attempt", lambda e: e.get("src_port") == port
                          and e.get("password") == "try2")
        evs = self.c.session_events(port, "fosr.login.attempt")
        self.assertEqual([e["success"] for e in evs], [False, False, True])
        self.assertEqual([e["password"] for e in evs], ["try0", "try1", "try2"])


SUBMISSION_LISTENERS = [
    {"name": "smtp", "port": 0, "tls": "starttls"},
    {"name": "submissions", "port": 0, "tls": "implicit", "policy": "submission"},
    {"name": "submission", "port": 0, "tls": "starttls", "policy": "submission"},
]
NEED_TLS = "5.7.0 Must issue a STARTTLS command first"


class SubmissionPolicyTests(CollectorTestCase):
    """policy: submission = Debian's master.cf submission/submissions templates,
    replies as recorded from Postfix 3.7.11 with those -o settings."""

    def _ehlo_keywords(self, r):
        return [l.split()[0] for l in r.lines[1:]]

    @with_config(listeners=SUBMISSION_LISTENERS)
    def test_587_before_starttls(self):
        cl = self.client("submission")
        r = cl.ehlo()
        kw = self._ehlo_keywords(r)
        self.assertIn("STARTTLS", kw)
        self.assertNotIn("AUTH", kw)
        for line in ("AUTH PLAIN " + b64("\0user\0password"), "MAIL FROM:<a@b.c>",
                     "RCPT TO:<d@e.f>", "VRFY root", "DATA", "RSET", "ETRN x", "BDAT 0 LAST",
                     "AUTH LOGIN"):
            r = cl.cmd(line)
            self.assertEqual((r.code, r.lines), (530, [NEED_TLS]), line)
        self.assertEqual(cl.cmd("XFORWARD NAME=x").lines, [NEED_TLS])
        self.assertEqual(cl.cmd("XCLIENT NAME=x").lines, ["5.7.0 Error: insufficient authorization"])
        self.assertEqual(cl.cmd("NOOP").code, 250)
        self.assertEqual(cl.cmd("HELO x").code, 250)
        self.assertEqual(cl.cmd("EXPN root").code, 500)
        self.assertEqual(cl.cmd("STARTTLS x").lines, ["5.5.4 Syntax: STARTTLS"])
        self.assertEqual(cl.cmd("QUIT").code, 221)

    @with_config({"limits": {"hard_errors": 20, "error_sleep": 0}},
                 listeners=SUBMISSION_LISTENERS)
    def test_587_need_tls_counts_as_error(self):
        cl = self.client("submission")
        for _ in range(20):
            self.assertEqual(cl.cmd("RSET").code, 530)
        r = cl.cmd("RSET")
        self.assertEqual(r.code, 421)
        self.assertTrue(cl.wait_closed())

    def _tls_client(self, name):
        cl = self.client(name)
        if name == "submission":
            cl.ehlo()
            self.assertEqual(cl.starttls().code, 220)
        return cl

    @with_config(listeners=SUBMISSION_LISTENERS)
    def test_submission_without_auth_access_denied(self):
        for name in ("submission", "submissions"):
            with self.subTest(name=name):
                cl = self._tls_client(name)
                r = cl.ehlo()
                self.assertIn("AUTH", self._ehlo_keywords(r))
                self.assertEqual(cl.cmd("MAIL FROM:<a@b.c>").code, 250)
                for line, addr in (("RCPT TO:<d@e.f>", "d@e.f"), ("RCPT TO:<root>", "root"),
                                   ("VRFY root", "root"), ("VRFY d@e.f", "d@e.f"),
                                   ('RCPT TO:<"no such"@h.example>', "no such@h.example"),
                                   ("RCPT TO:<Root@X>", "Root@X"), ('VRFY <"a b"@c>', "a b@c"),
                                   ("RCPT TO:<@r1,@r2:u@d>", "u@d")):
                    r = cl.cmd(line)
                    self.assertEqual((r.code, r.lines), (554, [
                        "5.7.1 <%s>: Recipient address rejected: Access denied" % addr]), line)
                r = cl.cmd("DATA")
                self.assertEqual((r.code, r.lines), (554, ["5.5.1 Error: no valid recipients"]))
                # Postfix always lets the bare postmaster through (smtpd_check_rcpt)
                self.assertEqual(cl.cmd("VRFY Postmaster").lines, ["2.0.0 Postmaster"])
                cl.expect("RCPT TO:<postmaster>", 250)
                # its internal form (quotes and quoted pairs removed), as Postfix
                for form in ('<"postmaster">', '"Postmaster"', "<post\\master>",
                             "<@r1:postmaster>"):
                    cl.expect("RCPT TO:" + form, 250)
                    self.assertEqual(cl.cmd("VRFY " + form).lines, ["2.0.0 " + form])
                cl.expect('RCPT TO:<"postmaster"@example.net>', 554)
                r = cl.cmd("AUTH PLAIN " + b64("\0user\0password"))
                self.assertEqual((r.code, r.lines), (503, ["5.5.1 Error: MAIL transaction in progress"]))
                self.assertEqual(cl.data(b"Subject: to postmaster\r\n\r\nx\r\n").code, 250)
                cl.expect("RSET", 250)
                cl.expect("AUTH PLAIN " + b64("\0user\0password"), 235)
                cl.expect("MAIL FROM:<a@b.c>", 250)
                cl.expect("RCPT TO:<d@e.f>", 250)
                # smtpd_reject_unlisted_recipient = no: no local-recipient check
                cl.expect("RCPT TO:<nosuchuser@%s>" % HOSTNAME, 250)
                r = cl.cmd("VRFY root")
                self.assertEqual((r.code, r.lines), (252, ["2.0.0 root"]))
                r = cl.data(BODY)
                self.assertEqual(r.code, 250)
                self.assertTrue(queue_id(r))
                cl.expect("QUIT", 221)

    @with_config(listeners=SUBMISSION_LISTENERS)
    def test_unauthenticated_commands_are_events(self):
        """F5: MAIL/RCPT/VRFY/DATA without AUTH on 587 and 465 leave no mail
        record: each is an event with the reply given."""
        cl = self.client("submission")
        port = cl.sock.getsockname()[1]
        cl.ehlo()
        cl.expect("MAIL FROM:<spam@example.org>", 530)
        # credentials sent before TLS are refused unread by Postfix: kept here
        cl.expect("AUTH PLAIN " + b64("\0info@x\0Secret99"), 530)
        cl.expect("NOOP", 250)
        cl.expect("QUIT", 221)
        self.c.wait_event("fosr.session.closed", lambda e: e.get("src_port") == port)
        evs = self.c.session_events(port, "fosr.command.unauthenticated")
        self.assertEqual([(e["input"], e["reply"], e["tls_active"]) for e in evs], [
            ("MAIL FROM:<spam@example.org>", "530 5.7.0 Must issue a STARTTLS command first",
             False),
            ("AUTH PLAIN " + b64("\0info@x\0Secret99"),
             "530 5.7.0 Must issue a STARTTLS command first", False)])
        cl = self._tls_client("submissions")
        port = cl.sock.getsockname()[1]
        cl.ehlo()
        cl.expect("MAIL FROM:<spam@example.org>", 250)
        cl.expect('RCPT TO:<"victim"@example.net>', 554)
        cl.expect("VRFY root", 554)
        cl.expect("DATA", 554)
        cl.expect("RSET", 250)
        cl.expect("AUTH PLAIN " + b64("\0user\0password"), 235)
        cl.expect("MAIL FROM:<spam@example.org>", 250)    # logged in: no event
        cl.expect("RCPT TO:<ok@example.net>", 250)
        cl.expect("QUIT", 221)
        self.c.wait_event("fosr.session.closed", lambda e: e.get("src_port") == port)
        evs = self.c.session_events(port, "fosr.command.unauthenticated")
        self.assertEqual([(e["input"], e["reply"], e.get("mail_from"), e["tls_active"]) for e in evs], [
            ("MAIL FROM:<spam@example.org>", "250 2.1.0 Ok", None, True),
            ('RCPT TO:<"victim"@example.net>',
             "554 5.7.1 <victim@example.net>: Recipient address rejected: Access denied",
             "spam@example.org", True),
            ("VRFY root", "554 5.7.1 <root>: Recipient address rejected: Access denied",
             "spam@example.org", True),
            ("DATA", "554 5.5.1 Error: no valid recipients", "spam@example.org", True)])

    @with_config(listeners=SUBMISSION_LISTENERS)
    def test_bdat_without_valid_recipient(self):
        """BDAT after refused recipients, as Postfix: a non-last chunk leaves
        the transaction in BDAT's error state, the last one ends it."""
        cl = self._tls_client("submissions")
        cl.ehlo()
        cl.expect("MAIL FROM:<a@b.c>", 250)
        cl.expect("RCPT TO:<d@e.f>", 554)
        r = cl.cmd("BDAT 0")
        self.assertEqual((r.code, r.lines), (551, ["5.7.1 Null BDAT request"]))
        cl.send(b"BDAT 5\r\nabcde")
        r = cl.reply()
        self.assertEqual((r.code, r.lines), (554, ["5.5.1 Error: no valid recipients"]))
        r = cl.cmd("DATA")
        self.assertEqual((r.code, r.lines), (503, ["5.5.1 Error: DATA after BDAT"]))
        r = cl.cmd("BDAT 0 LAST")
        self.assertEqual((r.code, r.lines), (551, ["5.0.0 Discarded 0 bytes after earlier error"]))
        cl.expect("MAIL FROM:<a@b.c>", 250)
        cl.expect("RCPT TO:<d@e.f>", 554)
        cl.send(b"BDAT 4 LAST\r\nabcd")
        r = cl.reply()
        self.assertEqual((r.code, r.lines), (554, ["5.5.1 Error: no valid recipients"]))
        cl.expect("MAIL FROM:<a@b.c>", 250)

    @with_config(listeners=SUBMISSION_LISTENERS)
    def test_port_25_relay_unchanged(self):
        cl = self.client("smtp")
        # a quoted blank is part of the address; two words are not one (Postfix 3.7.11)
        r = cl.cmd('VRFY <"a b"@c>')
        self.assertEqual((r.code, r.lines), (252, ['2.0.0 <"a b"@c>']))
        r = cl.cmd('VRFY "x y"@c')
        self.assertEqual((r.code, r.lines), (252, ['2.0.0 "x y"@c']))
        self.assertEqual(cl.cmd("VRFY a b").lines, ["5.1.3 Bad recipient address syntax"])
        self.assertEqual(cl.cmd("VRFY <a b>").lines, ["5.1.3 Bad recipient address syntax"])
        r = cl.ehlo()
        self.assertIn("AUTH", self._ehlo_keywords(r))
        cl.expect("MAIL FROM:<a@b.c>", 250)
        cl.expect("RCPT TO:<d@e.f>", 250)


class CredentialPolicyTests(CollectorTestCase):
    """auth.outcome policy (the daemon's default): the shipped list, a file,
    SIGHUP reload; every attempt is an event whatever the outcome."""

    def _login(self, cl, user, password):
        return cl.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, password)))

    @with_config({"auth": {"outcome": "policy"}}, listeners=SUBMISSION_LISTENERS)
    def test_default_policy(self):
        cl = self.client("submissions")
        cl.ehlo()
        port = cl.sock.getsockname()[1]
        # a detector's pairs
        for user, pw in (("admin", "admin"), ("test", "test"), ("qz8XkP3v", "Jr7mWq2N"),
                         ("info@" + HOSTNAME, "info"), ("root", "123456")):
            r = self._login(cl, user, pw)
            self.assertEqual((r.code, r.lines),
                             (535, ["5.7.8 Error: authentication failed: authentication failure"]),
                             (user, pw))
        # a plausible mailbox login gets in and relays (captured)
        r = self._login(cl, "info@" + HOSTNAME, "Sunflower77")
        self.assertEqual(r.code, 235)
        cl.expect("MAIL FROM:<info@%s>" % HOSTNAME, 250)
        cl.expect("RCPT TO:<victim@example.net>", 250)
        self.assertEqual(cl.data(BODY).code, 250)
        evs = [e for e in self.c.session_events(port, "fosr.login.attempt")]
        self.assertEqual([(e["username"], e["password"], e["success"]) for e in evs], [
            ("admin", "admin", False), ("test", "test", False), ("qz8XkP3v", "Jr7mWq2N", False),
            ("info@" + HOSTNAME, "info", False), ("root", "123456", False),
            ("info@" + HOSTNAME, "Sunflower77", True)])
        self.assertTrue(all(e["outcome"] == "policy" for e in evs))
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "etc",
                               "credentials.txt")) as f:
            rules = f.read().split("\n")
        self.assertEqual(rules[evs[0]["policy_line"] - 1], "!*:{user}")
        self.assertEqual(evs[-1]["policy_line"] - 1, rules.index("info@{domain}:*"))

    def _cram(self, cl, user, password=None, digest=None):
        r = cl.cmd("AUTH CRAM-MD5")
        self.assertEqual(r.code, 334)
        chal = base64.b64decode(r.lines[0])
        if digest is None:
            digest = hmac.new(password.encode(), chal, "md5").hexdigest()
        return cl.cmd(b64("%s %s" % (user, digest)))

    @with_config({"auth": {"outcome": "policy"}}, listeners=SUBMISSION_LISTENERS)
    def test_one_password_per_mailbox(self):
        """F1: a mailbox has one password: after a login with P, the same user
        with another password is refused, in later sessions too (case of the
        user ignored); the system accounts never get in."""
        info = "info@" + HOSTNAME
        for user, pw, code in ((info, "Sunflower77", 235), (info, "Daisy12345", 535),
                               (info.upper(), "Daisy12345", 535), (info, "Sunflower77", 235),
                               ("root", "Xk29vLq7", 535), ("root@" + HOSTNAME, "Xk29vLq7", 535),
                               ("daemon", "Xk29vLq7", 535), ("postmaster@" + HOSTNAME,
                                                             "Xk29vLq7", 535),
                               ("sales@" + HOSTNAME, "Tulip2024x", 235)):
            with self.c.connect("submissions") as cl:
                cl.ehlo()
                port = cl.sock.getsockname()[1]
                self.assertEqual(self._login(cl, user, pw).code, code, (user, pw))
                ev = self.c.wait_event("fosr.login.attempt", lambda e: e.get("src_port") == port)
                self.assertEqual(ev["success"], code == 235)
                if pw == "Daisy12345":
                    self.assertEqual(ev["known_user"], "other password")
        # CRAM-MD5 against the remembered password: the digest is checked
        with self.c.connect("submissions") as cl:
            cl.ehlo()
            self.assertEqual(self._cram(cl, info, "Daisy12345").code, 535)
            self.assertEqual(self._cram(cl, info, "Sunflower77").code, 235)

    def _try(self, user, pw, source=None, cram=False, digest=None):
        """One login in its own session from source; returns (code, event)."""
        kw = {"source_address": (source, 0)} if source else {}
        with self.c.connect("submissions", **kw) as cl:
            cl.ehlo()
            port = cl.sock.getsockname()[1]
            r = self._cram(cl, user, pw, digest=digest) if cram else self._login(cl, user, pw)
            ev = self.c.wait_event("fosr.login.attempt", lambda e: e.get("src_port") == port)
        self.assertEqual(ev["success"], r.code == 235)
        return r.code, ev

    @with_config({"auth": {"outcome": "policy"}}, listeners=SUBMISSION_LISTENERS)
    def test_memory_per_source(self):
        """The lock-out: client A logs in once as each plausible mailbox (and
        pins one with a junk CRAM-MD5 digest); client B (another /24) still
        gets in with its own passwords; A still sees one password per mailbox
        (what a detector checks), and so does B."""
        a, b = "127.0.0.1", loopback_sources(1)[0]     # 127.0.0.0/24, 127.0.1.0/24
        info, sales = "info@" + HOSTNAME, "sales@" + HOSTNAME
        self.assertEqual(self._try(info, "Sunflower77", a)[0], 235)
        self.assertEqual(self._try(sales, None, a, cram=True, digest="0" * 32)[0], 235)
        # B: another source, another plausible password: in, and its spam captured
        self.assertEqual(self._try(info, "Daisy12345", b)[0], 235)
        self.assertEqual(self._try(sales, "Tulip2024x", b)[0], 235)
        # A: the same mailbox with a second password is refused (a real mailbox)
        code, ev = self._try(info, "Daisy12345", a)
        self.assertEqual((code, ev["known_user"]), (535, "other password"))
        self.assertEqual(self._try(sales, "Tulip2024x", a)[0], 535)
        self.assertEqual(self._try(info, "Sunflower77", a)[0], 235)
        # B's memory is B's: its first password stays, another is refused
        self.assertEqual(self._try(info, "Sunflower77", b)[0], 535)
        self.assertEqual(self._try(info, "Daisy12345", b)[0], 235)

    @with_config({"auth": {"outcome": "policy", "memory_ttl": 4}}, listeners=SUBMISSION_LISTENERS)
    def test_memory_ttl(self):
        """auth.memory_ttl: a source's memory of a mailbox goes after that many
        seconds (before it, a second password is refused)."""
        a, info = "127.0.0.1", "info@" + HOSTNAME
        # The daemon keeps whole seconds (tv_sec): an entry made at x.999 is
        # gone at x+4.000, 3.001 s later.  The login is remembered after t0
        # and checked before the second try returns: under 3 s between them
        # the entry is still live, whatever the machine's load.  (t0 taken
        # after the first try, with a 1.5 s margin on a 2 s TTL, failed
        # under load: a TLS session and an event wait lie between.)
        t0 = time.monotonic()
        self.assertEqual(self._try(info, "Sunflower77", a)[0], 235)
        code = self._try(info, "Daisy12345", a)[0]
        if time.monotonic() - t0 < 3.0:     # still within the TTL: refused
            self.assertEqual(code, 535)
        self.assertTrue(wait_until(lambda: self._try(info, "Orchid5555", a)[0] == 235,
                                   15 * self.c.slow, step=0.2),
                        "the login memory never expired")
        self.assertEqual(self._try(info, "Sunflower77", a)[0], 535)

    @with_config({"auth": {"outcome": "policy"}}, listeners=SUBMISSION_LISTENERS)
    def test_cram_md5_judged_by_policy(self):
        """F2: CRAM-MD5 is judged like PLAIN/LOGIN: the user from the response,
        and, the password being unknown, the rules that do not look at it."""
        fail = (535, ["5.7.8 Error: authentication failed: authentication failure"])
        for user in ("qz8XkP3v", "admin", "root", "test", "info@other.example.net"):
            with self.c.connect("submissions") as cl:
                cl.ehlo()
                r = self._cram(cl, user, "Jr7mWq2N")
                self.assertEqual((r.code, r.lines), fail, user)
        with self.c.connect("submissions") as cl:
            cl.ehlo()
            port = cl.sock.getsockname()[1]
            self.assertEqual(self._cram(cl, "sales@" + HOSTNAME, digest="0" * 32).code, 235)
            ev = self.c.wait_event("fosr.login.attempt", lambda e: e.get("src_port") == port)
            self.assertEqual((ev["mechanism"], ev["password"], ev["success"]),
                             ("CRAM-MD5", "0" * 32, True))
            self.assertGreater(ev["policy_line"], 0)
        # a later password for that user must match the digest it logged in with
        with self.c.connect("submissions") as cl:
            cl.ehlo()
            self.assertEqual(self._login(cl, "sales@" + HOSTNAME, "Tulip2024x").code, 535)

    @with_config({"auth": {"outcome": "policy"}}, listeners=SUBMISSION_LISTENERS)
    def test_hostile_credentials_escaped(self):
        """Attacker bytes: JSON-escaped in the event, escaped in the log line."""
        cl = self.client("submissions")
        cl.ehlo()
        port = cl.sock.getsockname()[1]
        user, pw = "a\"b\\c\x01\x1b[31m*@" + HOSTNAME, "p\u00e9\x7f" + "x" * 100
        r = self._login(cl, user, pw)
        self.assertEqual(r.code, 535)
        ev = self.c.wait_event("fosr.login.attempt", lambda e: e.get("src_port") == port)
        self.assertEqual((ev["username"], ev["password"]), (user, pw))
        self.assertFalse(ev["success"])
        err = self.c.stderr_text()
        self.assertNotIn("\x1b[31m", err)
        self.assertIn("result=fail", err)


class CredentialFileTests(CollectorTestCase):
    """auth.credentials: a file beside the config, reloaded on SIGHUP."""

    autostart = False
    config = {"auth": {"outcome": "policy", "credentials": "creds.txt"}}

    def _write(self, text):
        path = os.path.join(self.c.tmpdir, "creds.txt")
        with open(path + ".new", "w") as f:
            f.write(text)
        os.rename(path + ".new", path)

    def _try(self, user, pw):
        with self.c.connect("submissions") as cl:
            cl.ehlo()
            return cl.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, pw))).code

    def test_file_and_sighup(self):
        self._write("!bob:secret\nbob:*\n")
        self.c.start()
        self.assertEqual(self._try("bob", "secret"), 535)
        self.assertEqual(self._try("bob", "other"), 235)
        self.assertEqual(self._try("carol", "other"), 535)
        # a bad file keeps the rules in force
        self._write("nocolon\n")
        self.c.signal(signal.SIGHUP)
        deadline = time.time() + 10 * self.slow
        while "keeping the previous rules" not in self.c.stderr_text():
            self.assertLess(time.time(), deadline, self.c.stderr_tail())
            time.sleep(0.05)
        self.assertIn("creds.txt: line 1: expected user:password", self.c.stderr_text())
        self.assertEqual(self._try("bob", "other"), 235)
        # a good one replaces them
        self._write("carol:*\n")
        self.c.signal(signal.SIGHUP)
        while "credential policy reloaded" not in self.c.stderr_text():
            self.assertLess(time.time(), deadline, self.c.stderr_tail())
            time.sleep(0.05)
        self.assertEqual(self._try("bob", "other"), 535)
        self.assertEqual(self._try("carol", "other"), 235)

    def test_missing_file_is_fatal(self):
        self.expect_exit = None
        self.c.start(wait=False)
        deadline = time.time() + 10 * self.slow
        while self.c.running:
            self.assertLess(time.time(), deadline)
            time.sleep(0.05)
        self.assertIn("auth: credential policy:", self.c.stderr_text())
        self.assertIn("creds.txt: No such file or directory", self.c.stderr_text())

if __name__ == "__main__":
    unittest.main(verbosity=2)
