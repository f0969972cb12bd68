"""AUTH capture: PLAIN, LOGIN, CRAM-MD5 through smtplib and raw, outcomes, bad input."""

import base64
import hmac
import json
import os
import re
import smtplib
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (HOST, HOSTNAME, CollectorTestCase, queue_id, unverified_context,  # noqa: E402
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
                                   ("VRFY root", "root"), ("VRFY d@e.f", "d@e.f")):
                    r = cl.cmd(line)
                    self.assertEqual((r.code, r.lines), (554, [
                        "5.7.1 <%s>: Recipient address rejected: Access denied" % addr]), line)
                r = cl.cmd("DATA")
                self.assertEqual((r.code, r.lines), (554, ["5.5.1 Error: no valid recipients"]))
                r = cl.cmd("AUTH PLAIN " + b64("\0user\0password"))
                self.assertEqual((r.code, r.lines), (503, ["5.5.1 Error: MAIL transaction in progress"]))
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
    def test_port_25_relay_unchanged(self):
        cl = self.client("smtp")
        r = cl.ehlo()
        self.assertIn("AUTH", self._ehlo_keywords(r))
        cl.expect("MAIL FROM:<a@b.c>", 250)
        cl.expect("RCPT TO:<d@e.f>", 250)


if __name__ == "__main__":
    unittest.main(verbosity=2)
