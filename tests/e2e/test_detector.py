"""A honeypot detector's checks (issue 13, item 4), each answered like the
private stock Postfix of the differential test.

The checks public SMTP honeypot detectors score, played against fosr with its
defaults (auth.outcome policy, the shipped credential list, the client lookup
before the banner) and against a private Debian Postfix 3.7 built from the
package's own templates (tests/persona/postfix_private.sh; one instance with
master.cf as shipped plus the submission/submissions templates):

  instant banner      the 220 waits for the client lookup: with a DNS that
                      answers after 0.4 s, no 220 before it (a real Postfix
                      resolves the client before it greets, smtpd_peer.c)
  credentials         random garbage and the default pairs detectors try are
                      refused with Postfix's 535, PLAIN and LOGIN, on 465 and
                      587 (the reference's one real account is not tried)
  VRFY of everyone    the same reply as Postfix for each name
  CRAM-MD5, EHLO      the same EHLO keyword list on 25 (plain and after
                      STARTTLS), 587 (before and after STARTTLS) and 465;
                      AUTH PLAIN LOGIN CRAM-MD5 where Postfix offers AUTH
  default hostnames   no "localhost"/"honeypot"/the original's banner; with
                      no hostname configured fosr names itself as
                      `postconf -d myhostname` does

Needs root and Postfix, like test_persona_diff (skipped without Postfix).
"""

import os
import shutil
import subprocess
import tempfile
import time
import unittest


import harness
from fixtures import fakedns
from harness import HOST, SMTPRaw
from test_persona_diff import (HOSTNAME, SUBMISSION_OPTS, SUBMISSIONS_OPTS,
                               PostfixInstance, postfix_installed)

DNS_DELAY = 0.4

# What detectors and brute-forcers try first (never the reference's account,
# user@mail.example.com / "password").
DETECTOR_PAIRS = [
    ("admin", "admin"), ("test", "test"), ("root", "root"), ("guest", "guest"),
    ("administrator", "password"), ("admin", "123456"), ("root", "toor"),
    ("qz8XkP3vLm", "Jr7mWq2NxT"), ("x9f2kq@" + HOSTNAME, "h3kLp0Zq"),
    ("info@" + HOSTNAME, "info"), ("postmaster@" + HOSTNAME, "postmaster"),
    ("support", "support123"), ("", "x"),
]
VRFY_NAMES = ["root", "admin", "postmaster", "nosuchuser", "info", "test", "abuse", "www-data",
              "user", "mailer-daemon", "root@" + HOSTNAME, "bob@" + HOSTNAME, "x@example.net",
              "<root>", "honeypot"]
TELLS = ("localhost", "honeypot", "smtp mailer ready", "250 help")


def b64(s):
    import base64
    return base64.b64encode(s.encode()).decode()


@unittest.skipUnless(postfix_installed(), "postfix is not installed: no reference server")
class DetectorChecks(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise AssertionError("starts a private Postfix, whose master must be started as root")
        cls.tmp = tempfile.mkdtemp(prefix="fosr-detector-")
        os.chmod(cls.tmp, 0o755)
        cls.fosr = []
        cls.dns = fakedns.FakeDNS({}).start()
        cls.pf = PostfixInstance(cls.tmp, "postfix",
                                 extra_main="mydestination = $myhostname, localhost",
                                 local_opts=SUBMISSION_OPTS, tls_opts=SUBMISSIONS_OPTS)
        try:
            cls.pf.start()
            cert = os.path.join(cls.pf.dir, "tls", "cert.pem")
            key = os.path.join(cls.pf.dir, "tls", "key.pem")
            p = harness.free_ports(4)
            listeners = [{"name": "smtp", "tls": "starttls", "port": p[0]},
                         {"name": "submission", "tls": "starttls", "port": p[1],
                          "policy": "submission"},
                         {"name": "submissions", "tls": "implicit", "port": p[2],
                          "policy": "submission"}]
            # fosr's defaults, but for the harness's settings that are not a
            # sensor's: the shipped credential policy, a client lookup.
            base = {"tls": {"certificate": cert, "key": key},
                    "auth": {"outcome": "policy"},
                    "client_lookup": {"dns_server": cls.dns.address}}
            cls.fo = cls._collector("fosr", listeners, dict(base, hostname=HOSTNAME))
            # no hostname configured: named as Postfix names itself
            cls.fo_noname = cls._collector("fosr-noname", [dict(listeners[0], port=p[3])],
                                           dict(base, hostname=""))
            for c in cls.fosr:
                c.start()
        except BaseException:
            cls._stop_all()
            raise

    @classmethod
    def _collector(cls, name, listeners, config):
        d = os.path.join(cls.tmp, name)
        os.makedirs(d)
        c = harness.Collector(d, config=config, listeners=listeners)
        cls.fosr.append(c)
        return c

    @classmethod
    def _stop_all(cls):
        errors = []
        for c in cls.fosr:
            try:
                rc = c.stop()
                c.check_sanitizers()
                if rc not in (0, None):
                    errors.append("fosr-collector exit status %s:\n%s" % (rc, c.stderr_tail()))
            except AssertionError as e:
                errors.append(str(e))
            finally:
                c.cleanup()
        cls.pf.stop()
        cls.dns.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        return errors

    @classmethod
    def tearDownClass(cls):
        errors = cls._stop_all()
        if errors:
            raise AssertionError("\n".join(errors))

    # ------------------------------------------------------------ helpers

    def ports(self, target):
        """{kind: port}: smtp (25), submission (587), submissions (465)."""
        if target == "postfix":
            return {"smtp": self.pf.port("PF_PORT"), "submission": self.pf.port("PF_LOCALPORT"),
                    "submissions": self.pf.port("PF_TLSPORT")}
        return dict(self.fo.ports)

    def conn(self, target, kind, starttls=False):
        port = self.ports(target)[kind]
        cl = SMTPRaw(HOST, port, tls=kind == "submissions", server_hostname=HOSTNAME,
                     timeout=20 * harness.slow_factor())
        self.addCleanup(cl.close)
        self.assertEqual(cl.reply().code, 220)
        if starttls:
            cl.cmd("EHLO detector.example")
            self.assertEqual(cl.cmd("STARTTLS").code, 220)
            cl._wrap(HOSTNAME)
        return cl

    def both(self, fn):
        """fn(target) for Postfix and fosr; asserts equal results, returns Postfix's."""
        a, b = fn("postfix"), fn("fosr")
        self.assertEqual(a, b, "- postfix, + fosr")
        return a

    # ------------------------------------------------------------ checks

    def test_banner_waits_for_the_lookup(self):
        """"Instant banner": a 220 in under a few ms says "no DNS lookup".
        fosr greets after its client lookup, so the delay is the DNS's."""
        self.dns.delay = DNS_DELAY
        try:
            for _ in range(3):
                t0 = time.monotonic()
                cl = SMTPRaw(HOST, self.fo.ports["smtp"], timeout=20)
                r = cl.reply()
                took = time.monotonic() - t0
                cl.close()
                self.assertEqual(r.code, 220)
                self.assertGreaterEqual(took, DNS_DELAY, "220 before the lookup's answer")
        finally:
            self.dns.delay = 0.0
        # the banner itself is Postfix's

        def banner(t):
            cl = SMTPRaw(HOST, self.ports(t)["smtp"], timeout=20)
            self.addCleanup(cl.close)
            return cl.reply().lines
        self.both(banner)

    def test_garbage_and_default_credentials_refused(self):
        """Every pair a detector tries: Postfix's 535, for PLAIN and LOGIN,
        on 465 and on 587 after STARTTLS."""
        def run(t):
            out = []
            for kind in ("submissions", "submission"):
                cl = self.conn(t, kind, starttls=kind == "submission")
                cl.cmd("EHLO detector.example")
                for user, pw in DETECTOR_PAIRS:
                    out.append((kind, user, pw, "PLAIN",
                                cl.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, pw))).first))
                    r = cl.cmd("AUTH LOGIN " + b64(user)) if user else cl.cmd("AUTH LOGIN")
                    if r.code == 334 and not user:
                        r = cl.cmd("")
                    if r.code == 334:
                        r = cl.cmd(b64(pw))
                    out.append((kind, user, pw, "LOGIN", r.first))
                    if len(out) % 8 == 0:     # stay under the error limits
                        cl.cmd("QUIT")
                        cl = self.conn(t, kind, starttls=kind == "submission")
                        cl.cmd("EHLO detector.example")
            return out
        res = self.both(run)
        self.assertTrue(all(r[4].startswith("535 ") or r[4].startswith("454 ") for r in res), res)

    def test_vrfy_everyone(self):
        def run(t):
            cl = self.conn(t, "smtp")
            cl.cmd("EHLO detector.example")
            out = []
            for i, name in enumerate(VRFY_NAMES):
                if i and i % 8 == 0:
                    cl.cmd("QUIT")
                    cl = self.conn(t, "smtp")
                out.append((name, cl.cmd("VRFY " + name).first))
            return out
        self.both(run)

    def test_ehlo_keywords_and_cram_md5(self):
        def run(t):
            out = []
            for kind, tls in (("smtp", False), ("smtp", True), ("submission", False),
                              ("submission", True), ("submissions", False)):
                cl = self.conn(t, kind, starttls=tls)
                out.append((kind, tls, cl.cmd("EHLO detector.example").lines))
            return out
        res = self.both(run)
        auth = [ln for _k, _t, lines in res for ln in lines if ln.startswith("AUTH")]
        self.assertTrue(auth)
        self.assertTrue(all(ln == "AUTH PLAIN LOGIN CRAM-MD5" for ln in auth), auth)

    def test_no_default_hostnames(self):
        for c in (self.fo, self.fo_noname):
            cl = SMTPRaw(HOST, c.ports["smtp"], timeout=20)
            self.addCleanup(cl.close)
            text = (cl.reply().lines[0] + "\n" + "\n".join(cl.cmd("EHLO x").lines)).lower()
            for tell in TELLS:
                self.assertNotIn(tell, text)
        # no hostname in the config: the name Postfix would give itself
        want = subprocess.run(["postconf", "-d", "-h", "myhostname"], stdout=subprocess.PIPE,
                              universal_newlines=True, check=True).stdout.strip()
        cl = SMTPRaw(HOST, self.fo_noname.ports["smtp"], timeout=20)
        self.addCleanup(cl.close)
        self.assertEqual(cl.reply().lines, ["%s ESMTP Postfix (Debian/GNU)" % want])


if __name__ == "__main__":
    unittest.main(verbosity=2)
