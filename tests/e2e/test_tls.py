"""TLS: STARTTLS on both STARTTLS listeners, implicit TLS, SNI, certificate
generation, STARTTLS command injection, swaks and openssl s_client as clients."""

import os
import re
import smtplib
import socket
import ssl
import stat
import subprocess
import time
import unittest

from harness import (HOST, CollectorTestCase, have, queue_id, run_tool, sha256_hex,
                     unverified_context, with_config)

TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


def body_for(tag):
    return b"Subject: " + tag.encode() + b"\r\n\r\ntls body " + tag.encode() + b"\r\n"


class TLSTests(CollectorTestCase):

    def _smtplib_starttls(self, name):
        body = body_for("starttls " + name)
        s = smtplib.SMTP(HOST, self.c.ports[name], local_hostname="tls.client", timeout=10 * self.slow)
        try:
            s.ehlo()
            self.assertTrue(s.has_extn("starttls"))
            code, _ = s.starttls(context=unverified_context())
            self.assertEqual(code, 220)
            s.ehlo()
            self.assertFalse(s.has_extn("starttls"), "STARTTLS still offered inside TLS")
            cipher = s.sock.cipher()
            version = s.sock.version()
            src_port = s.sock.getsockname()[1]
            s.sendmail("t@example.org", ["r@example.net"], body)
        finally:
            s.quit()
        ev = self.c.wait_event("fosr.mail.received", lambda e: e.get("src_port") == src_port)
        rec, _ = self.assert_stored(body, ev["queue_id"])
        self.assertEqual(rec["listener"], name)
        self.assertIsInstance(rec["tls"], dict, rec)
        self.assertEqual(rec["tls"]["version"], version)
        self.assertEqual(rec["tls"]["cipher"], cipher[0])
        self.assertIn(rec["tls"]["sni"], (None, ""))        # smtplib sends no SNI for an IP
        tev = self.c.wait_event("fosr.session.tls", lambda e: e.get("src_port") == src_port)
        self.assertEqual(tev["version"], version)
        self.assertEqual(tev["cipher"], cipher[0])
        self.assertEqual(tev["session"], ev["session"])

    def test_starttls_smtp(self):
        self._smtplib_starttls("smtp")

    def test_starttls_submission(self):
        self._smtplib_starttls("submission")

    def test_implicit_tls_submissions(self):
        body = body_for("implicit")
        s = smtplib.SMTP_SSL(HOST, self.c.ports["submissions"], context=unverified_context(),
                             timeout=10 * self.slow)
        try:
            code, _ = s.ehlo()
            self.assertEqual(code, 250)
            self.assertFalse(s.has_extn("starttls"))
            self.assertTrue(s.has_extn("auth"))
            version = s.sock.version()
            self.assertIn(version, TLS_VERSIONS)
            src_port = s.sock.getsockname()[1]
            s.sendmail("t@example.org", ["r@example.net"], body)
            code, _ = s.docmd("STARTTLS")
            self.assertEqual(code // 100, 5)
        finally:
            s.quit()
        ev = self.c.wait_event("fosr.mail.received", lambda e: e.get("src_port") == src_port)
        rec, _ = self.assert_stored(body, ev["queue_id"])
        self.assertEqual(rec["listener"], "submissions")
        self.assertEqual(rec["tls"]["version"], version)

    def test_implicit_tls_speaks_no_plaintext(self):
        # the fork's 465 spoke plain text: a plain client must get no banner
        sock = socket.create_connection((HOST, self.c.ports["submissions"]), 5)
        try:
            sock.settimeout(1.0)
            try:
                data = sock.recv(100)
            except socket.timeout:
                data = b""
            self.assertFalse(data.startswith(b"220"), data)
        finally:
            sock.close()

    def test_sni_recorded(self):
        cl = self.client("smtp")
        cl.ehlo()
        self.assertEqual(cl.starttls(server_hostname="sni.example").code, 220)
        cl.ehlo("after.tls")
        cl.expect("MAIL FROM:<s@example.org>", 250)
        cl.expect("RCPT TO:<r@example.net>", 250)
        body = body_for("sni")
        qid = queue_id(cl.data(body))
        rec, _ = self.assert_stored(body, qid)
        self.assertEqual(rec["tls"]["sni"], "sni.example")
        tev = self.c.wait_event("fosr.session.tls", lambda e: e.get("src_port") == cl.local_port)
        self.assertEqual(tev["sni"], "sni.example")

    def test_tls12_and_tls13(self):
        for ver, want in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
            ctx = unverified_context()
            ctx.minimum_version = ctx.maximum_version = ver
            s = smtplib.SMTP(HOST, self.c.ports["smtp"], timeout=10 * self.slow)
            try:
                s.ehlo()
                s.starttls(context=ctx)
                self.assertEqual(s.sock.version(), want)
                port = s.sock.getsockname()[1]
                s.ehlo()
            finally:
                s.quit()
            tev = self.c.wait_event("fosr.session.tls", lambda e: e.get("src_port") == port)
            self.assertEqual(tev["version"], want)

    def test_starttls_injection_rset(self):
        """RFC 3207 / CVE-2011-0411: what is pipelined after STARTTLS is discarded,
        and the session forgets what it learnt before TLS (the EHLO name)."""
        cl = self.client("smtp")
        cl.ehlo("before.tls")
        cl.send(b"STARTTLS\r\nRSET\r\n")
        r = cl.reply()
        self.assertEqual(r.code, 220, r)
        self.assertEqual(cl.pending(0.5), b"", "a reply to the injected RSET before TLS")
        cl._wrap(None)
        self.assertEqual(cl.pending(0.7), b"", "a reply to the injected RSET inside TLS")
        r = cl.cmd("MAIL FROM:<a@example.org>")
        if r.code == 503:
            # EHLO required again after STARTTLS
            self.assertEqual(cl.ehlo().code, 250)
            cl.expect("MAIL FROM:<a@example.org>", 250)
            helo = "client.example"
        else:
            # Postfix (smtpd_helo_required = no) takes MAIL without EHLO;
            # the pre-TLS EHLO name must be forgotten all the same
            self.assertEqual(r.code, 250, r)
            helo = ""
        cl.expect("RCPT TO:<r@example.net>", 250)
        body = body_for("injection rset")
        rec, _ = self.assert_stored(body, queue_id(cl.data(body)))
        self.assertEqual(rec["helo"] or "", helo, "pre-TLS EHLO name kept after STARTTLS")

    def test_starttls_injection_mail(self):
        cl = self.client("submission")
        cl.ehlo("before.tls")
        cl.send(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\n")
        self.assertEqual(cl.reply().code, 220)
        cl._wrap("sni.example")
        self.assertEqual(cl.ehlo("after.tls").code, 250)
        r = cl.cmd("RCPT TO:<x@example.net>")
        self.assertEqual(r.first, "503 5.5.1 Error: need MAIL command",
                         "injected MAIL FROM was executed: %r" % r)
        cl.expect("MAIL FROM:<good@example.org>", 250)
        cl.expect("RCPT TO:<r@example.net>", 250)
        body = body_for("after injection")
        qid = queue_id(cl.data(body))
        rec, _ = self.assert_stored(body, qid)
        self.assertEqual(rec["helo"], "after.tls")
        self.assertEqual(rec["mail_from"], "good@example.org")
        self.assertEqual(rec["rcpt_to"], ["r@example.net"])

    def test_starttls_twice_refused(self):
        cl = self.client("smtp")
        cl.ehlo()
        self.assertEqual(cl.starttls().code, 220)
        cl.ehlo()
        self.assertEqual(cl.cmd("STARTTLS").code // 100, 5)
        self.assertEqual(cl.cmd("NOOP").code, 250)

    def test_starttls_argument_checked_first(self):
        """Postfix checks the argument before anything else: "STARTTLS foo"
        inside TLS is a syntax error (501), not "TLS already active" (554)."""
        cl = self.client("smtp")
        cl.ehlo()
        self.assertEqual(cl.starttls().code, 220)
        self.assertEqual(cl.cmd("STARTTLS foo").first, "501 5.5.4 Syntax: STARTTLS")
        self.assertEqual(cl.cmd("STARTTLS").first, "554 5.5.1 Error: TLS already active")
        cl = self.client("submissions")
        self.assertEqual(cl.cmd("STARTTLS foo").first, "501 5.5.4 Syntax: STARTTLS")

    def test_bad_handshake_does_not_hurt(self):
        cl = self.client("smtp")
        cl.ehlo()
        self.assertEqual(cl.cmd("STARTTLS").code, 220)
        cl.send(b"this is not a TLS ClientHello\r\n" * 10)
        self.assertTrue(cl.wait_closed(10 * self.slow))
        # the daemon still serves
        cl2 = self.client("smtp")
        self.assertEqual(cl2.ehlo().code, 250)

    @unittest.skipUnless(have("openssl"), "openssl not installed")
    def test_openssl_s_client_sni(self):
        port = self.c.ports["smtp"]
        p = run_tool(["openssl", "s_client", "-starttls", "smtp", "-connect", "%s:%d" % (HOST, port),
                      "-servername", "sni.example", "-crlf", "-quiet"],
                     input=b"EHLO s-client.example\nQUIT\n", timeout=20 * self.slow)
        out = p.stdout.decode("utf-8", "replace")
        self.assertIn("221", out, out + p.stderr.decode("utf-8", "replace"))
        tev = self.c.wait_event("fosr.session.tls", lambda e: e.get("sni") == "sni.example")
        self.assertIn(tev["version"], TLS_VERSIONS)
        self.assertTrue(tev["cipher"])
        self.assertEqual(tev["dst_port"], port)

    @unittest.skipUnless(have("openssl"), "openssl not installed")
    def test_openssl_s_client_implicit_tls12(self):
        port = self.c.ports["submissions"]
        p = run_tool(["openssl", "s_client", "-connect", "%s:%d" % (HOST, port), "-tls1_2",
                      "-servername", "implicit.example", "-crlf", "-quiet"],
                     input=b"EHLO s-client.example\nQUIT\n", timeout=20 * self.slow)
        out = p.stdout.decode("utf-8", "replace")
        self.assertIn("220 ", out, p.stderr.decode("utf-8", "replace"))
        self.assertIn("221", out)
        tev = self.c.wait_event("fosr.session.tls", lambda e: e.get("sni") == "implicit.example")
        self.assertEqual(tev["version"], "TLSv1.2")

    @unittest.skipUnless(have("swaks"), "swaks not installed")
    def test_swaks_starttls(self):
        for name in ("smtp", "submission"):
            p = run_tool(["swaks", "--server", "%s:%d" % (HOST, self.c.ports[name]),
                          "--to", "a@example.net", "--from", "c@example.org", "--tls",
                          "--header", "Subject: swaks " + name],
                         timeout=30 * self.slow)
            out = p.stdout.decode("utf-8", "replace")
            self.assertEqual(p.returncode, 0, out + p.stderr.decode("utf-8", "replace"))
            self.assertIn("queued as", out)
            self.assertIn("TLS started", out)
        self._check_all_stored(2)

    @unittest.skipUnless(have("swaks"), "swaks not installed")
    def test_swaks_tls_on_connect_with_auth(self):
        p = run_tool(["swaks", "--server", "%s:%d" % (HOST, self.c.ports["submissions"]),
                      "--to", "a@example.net", "--from", "c@example.org", "--tls-on-connect",
                      "--auth", "LOGIN", "--auth-user", "swaksuser", "--auth-password", "swakspass"],
                     timeout=30 * self.slow)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out + p.stderr.decode("utf-8", "replace"))
        self.assertIn("queued as", out)
        self._check_all_stored(1)
        ev = self.c.wait_event("fosr.login.attempt")
        self.assertEqual((ev["mechanism"], ev["username"], ev["password"]),
                         ("LOGIN", "swaksuser", "swakspass"))

    def _check_all_stored(self, n):
        recs = self.c.journal()
        self.assertEqual(len(recs), n, recs)
        for rec in recs:
            data = self.c.message_bytes(rec["sha256"])
            self.assertEqual(sha256_hex(data), rec["sha256"])
            self.assertEqual(len(data), rec["size"])
            self.assertIsInstance(rec["tls"], dict)
            ev = self.c.wait_event("fosr.mail.received", lambda e: e.get("queue_id") == rec["queue_id"])
            self.assertEqual(ev["sha256"], rec["sha256"])


class GeneratedCertificate(CollectorTestCase):
    config = {"tls": {"certificate": "{tmp}/tls/cert.pem", "key": "{tmp}/tls/key.pem"}}

    def test_generated_then_reused(self):
        cert = os.path.join(self.tmpdir, "tls", "cert.pem")
        key = os.path.join(self.tmpdir, "tls", "key.pem")
        self.assertTrue(os.path.exists(cert))
        self.assertTrue(os.path.exists(key))
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode) & 0o077, 0, "key readable by others")
        with open(cert) as f:
            pem = f.read()
        der = ssl.PEM_cert_to_DER_cert(pem)
        txt = subprocess.run(["openssl", "x509", "-noout", "-subject", "-ext", "subjectAltName"],
                             input=pem.encode(), stdout=subprocess.PIPE, check=True).stdout.decode()
        self.assertIn("mx.example.test", txt)
        cl = self.client("submissions")
        self.assertEqual(cl.sock.getpeercert(binary_form=True), der)
        cl.close()
        self.c.restart()
        with open(cert) as f:
            self.assertEqual(f.read(), pem, "certificate regenerated on restart")
        cl = self.client("smtp")
        cl.ehlo()
        cl.starttls()
        self.assertEqual(cl.sock.getpeercert(binary_form=True), der)


CERT_LOG = re.compile(r'tls: certificate (\S+): subject "([^"]*)", expires (\S+)')


def make_pair(directory, cn, days):
    """cert.pem and key.pem in directory, as the seed's README had users make them."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                    "-days", str(days), "-subj", "/O=Seed Test/CN=" + cn,
                    "-keyout", os.path.join(directory, "key.pem"),
                    "-out", os.path.join(directory, "cert.pem")],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def expiry_iso(cert_path):
    """The certificate's notAfter as the daemon logs it (UTC, ISO 8601)."""
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", cert_path],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    t = ssl.cert_time_to_seconds(out.strip().split("=", 1)[1])
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class SeedCertificate(CollectorTestCase):
    """No tls paths configured: the seed's cert.pem/key.pem in the working
    directory are used when both are there, else tls/ is generated as
    before; either way the log names the certificate, its subject and expiry."""
    config = {"tls": None}      # nothing configured: the defaults apply
    autostart = False

    def cert_line(self):
        lines = [m for m in (CERT_LOG.search(ln) for ln in self.c.stderr_tail(400).splitlines()) if m]
        self.assertEqual(len(lines), 1, self.c.stderr_tail())
        return lines[0].groups()

    def presented(self, name="submissions"):
        cl = self.client(name)
        der = cl.sock.getpeercert(binary_form=True)
        cl.close()
        return der

    def test_seed_pair_in_working_directory_used(self):
        make_pair(self.tmpdir, "seed.example.test", 400)
        cert = os.path.join(self.tmpdir, "cert.pem")
        with open(cert) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        self.c.start()
        self.assertEqual(self.presented(), der)
        path, subject, expires = self.cert_line()
        self.assertEqual(path, "cert.pem")
        self.assertIn("CN=seed.example.test", subject)
        self.assertIn("O=Seed Test", subject)
        self.assertEqual(expires, expiry_iso(cert))
        self.assertFalse(os.path.exists(os.path.join(self.tmpdir, "tls")), "generated one anyway")
        # STARTTLS on 25 presents it too
        cl = self.client("smtp")
        cl.ehlo()
        cl.starttls()
        self.assertEqual(cl.sock.getpeercert(binary_form=True), der)

    def test_generated_when_no_seed_pair(self):
        self.c.start()
        cert = os.path.join(self.tmpdir, "tls", "cert.pem")
        self.assertTrue(os.path.exists(cert))
        with open(cert) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        self.assertEqual(self.presented(), der)
        path, subject, expires = self.cert_line()
        self.assertEqual(path, "tls/cert.pem")
        self.assertEqual(subject, "CN=mx.example.test")
        self.assertEqual(expires, expiry_iso(cert))

    def test_half_a_seed_pair_is_not_used(self):
        """cert.pem without key.pem: the generated pair, and a warning naming what is missing."""
        make_pair(self.tmpdir, "seed.example.test", 30)
        os.unlink(os.path.join(self.tmpdir, "key.pem"))
        self.c.start()
        path, subject, _ = self.cert_line()
        self.assertEqual(path, "tls/cert.pem")
        self.assertEqual(subject, "CN=mx.example.test")
        self.assertIn("key.pem", self.c.stderr_tail())

    @with_config({"tls": {"certificate": "{tmp}/mine/c.pem", "key": "{tmp}/mine/k.pem"}})
    def test_configured_paths_win_over_seed_pair(self):
        make_pair(self.tmpdir, "seed.example.test", 30)
        os.mkdir(os.path.join(self.tmpdir, "mine"))
        make_pair(os.path.join(self.tmpdir, "mine"), "configured.example.test", 30)
        os.rename(os.path.join(self.tmpdir, "mine", "cert.pem"), os.path.join(self.tmpdir, "mine", "c.pem"))
        os.rename(os.path.join(self.tmpdir, "mine", "key.pem"), os.path.join(self.tmpdir, "mine", "k.pem"))
        self.c.start()
        with open(os.path.join(self.tmpdir, "mine", "c.pem")) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        self.assertEqual(self.presented(), der)
        path, subject, _ = self.cert_line()
        self.assertEqual(path, os.path.join(self.tmpdir, "mine", "c.pem"))
        self.assertIn("CN=configured.example.test", subject)


class PlainListener(CollectorTestCase):

    @with_config(listeners=[{"name": "plain", "port": 0, "tls": "plain"}])
    def test_no_starttls_on_plain_listener(self):
        cl = self.client("plain")
        r = cl.ehlo()
        self.assertNotIn("STARTTLS", r.lines)
        self.assertEqual(cl.cmd("STARTTLS").code // 100, 5)
        # the argument is checked first, as Postfix does
        self.assertEqual(cl.cmd("STARTTLS foo").first, "501 5.5.4 Syntax: STARTTLS")
        body = body_for("plain")
        _, qid = self.send_mail(body, client=cl)
        rec, _ = self.assert_stored(body, qid)
        self.assertEqual(rec["listener"], "plain")
        self.assertIsNone(rec["tls"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
