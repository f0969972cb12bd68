"""The stderr log cannot be forged or used against a terminal (issue "Trust,
proven from outside", item 8): every line the daemon writes is parsed back into
key=value fields; attacker bytes stay inside their own quoted value and only
printable ASCII reaches the log.  Run with /usr/bin/python3 (the relay case
needs Debian's python3-aiosmtpd).
"""

import base64
import os
import re
import resource
import socket
import time
import unittest


import harness
from harness import CollectorTestCase, sha256_hex
from fixtures.relay import DROP, RelayCase, probe
from fixtures.abuse import loopback_sources

FORGED_USER = 'admin" password="hunter2" result=ok x="'
# CSI (U+009B), RLO (U+202E), LRI (U+2066), as UTF-8 (SMTPUTF8 allows them in an address).
EVIL = b"x\xc2\x9b31m\xe2\x80\xae\xe2\x81\xa6"

LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (err|warn|info|debug) (.*)$")


def unescape(v):
    """The bytes a log_escape()d value stands for."""
    out = bytearray()
    i = 0
    while i < len(v):
        c = v[i]
        if c != "\\":
            out.append(ord(c))
            i += 1
            continue
        n = v[i + 1]
        if n == "x":
            out.append(int(v[i + 2:i + 4], 16))
            i += 4
            continue
        out.append({"r": 13, "n": 10, "t": 9, "\\": 92, '"': 34}[n])
        i += 2
    return bytes(out)


def parse_line(line):
    """One log line -> (level, words, {key: raw value}).  Values are unquoted
    tokens or "quoted" with backslash escapes; a key seen twice is an error."""
    for ch in line:
        assert 0x20 <= ord(ch) <= 0x7e, "raw byte %r in log line %r" % (ch, line)
    m = LINE_RE.match(line)
    assert m, "not a log line: %r" % line
    rest = m.group(2)
    if rest.endswith("..."):
        rest = rest[:-3]    # truncated at LOG_LINE_MAX: an open quote may remain
    words, fields = [], {}
    i = 0
    while i < len(rest):
        if rest[i] == " ":
            i += 1
            continue
        j = i
        while j < len(rest) and rest[j] not in ' ="':
            j += 1
        key = rest[i:j] if j < len(rest) and rest[j] == "=" else None
        if key is not None:
            j += 1
        if j < len(rest) and rest[j] == '"':
            k = j + 1
            while k < len(rest) and rest[k] != '"':
                k += 2 if rest[k] == "\\" else 1
            val = rest[j + 1:k]
            k += 1
        else:
            k = j
            while k < len(rest) and rest[k] != " ":
                k += 1
            val = rest[j:k]
        if key is None:
            words.append(rest[i:k])
        else:
            assert key not in fields, "key %s twice in %r" % (key, line)
            fields[key] = val
        i = k
    return m.group(1), words, fields


class LogLines:
    def log_lines(self):
        out = []
        for line in self.c.stderr_text().splitlines():
            if LINE_RE.match(line) or not line.startswith("20"):
                out.append(parse_line(line))
        return out

    def wait_line(self, pred, timeout=10):
        end = time.time() + timeout * self.slow
        while True:
            for lv, words, f in self.log_lines():
                if pred(words, f):
                    return words, f
            if time.time() > end:
                self.fail("no such log line:\n" + self.c.stderr_tail())
            time.sleep(0.05)


class AuthForgery(CollectorTestCase, LogLines):

    def test_forged_auth_fields_stay_in_their_value(self):
        cl = self.client("smtp")
        cl.ehlo()
        pw = b"pw\xe2\x80\xae\xc2\x9b"
        raw = b"\0" + FORGED_USER.encode() + b"\0" + pw
        r = cl.cmd("AUTH PLAIN " + base64.b64encode(raw).decode())
        self.assertEqual(r.code, 235, r)
        cl.cmd("QUIT")
        words, f = self.wait_line(lambda w, f: "auth" in w and "mechanism" in f)
        self.assertEqual(set(f), {"mechanism", "username", "password", "result"}, f)
        self.assertEqual(unescape(f["username"]), FORGED_USER.encode())
        self.assertEqual(unescape(f["password"]), pw)
        self.assertEqual(f["result"], "ok")
        # Every line of the run parses (parse_line asserts printable ASCII).
        self.assertTrue(self.log_lines())


class RecipientEscapes(RelayCase, LogLines):
    """A refusal's reason quoting the recipient (never_relay's, or the relay's
    own refusal of an 8-bit local part) in the relay's decision line: escaped
    once on stderr, the recipient recoverable from it."""

    def test_never_relay_reason_escaped(self):
        rcpt = EVIL + b"@relay-test.mail-abuse.org"
        body = probe(7)
        cl = self.client("smtp")
        self.assertEqual(cl.ehlo().code, 250)
        self.assertEqual(cl.cmd("MAIL FROM:<%s> SMTPUTF8" % DROP).code, 250)
        cl.send(b"RCPT TO:<" + rcpt + b">\r\n")
        self.assertEqual(cl.reply().code, 250)
        self.assertEqual(cl.data(body).code, 250)
        cl.cmd("QUIT")
        d = self.wait_decisions(sha256_hex(body), 1)
        self.assertEqual(d[0]["verdict"], "refused", d[0])
        words, f = self.wait_line(lambda w, f: f.get("verdict") == "refused")
        self.assertEqual(set(f), {"queue_id", "verdict", "rule", "reason"}, f)
        self.assertIn(EVIL, unescape(f["reason"]))
        self.assertTrue(self.log_lines())
        # The JSON files keep the address exactly, but never the raw control
        # or bidi bytes (a viewer of the event log or journal acts on them).
        rec = [r for r in self.c.journal() if r.get("sha256") == sha256_hex(body)]
        self.assertEqual(rec[0]["rcpt_to"], [rcpt.decode()])
        for path in (self.c.event_log, self.c.journal_path):
            with open(path, "rb") as fh:
                raw = fh.read()
            for bad in (b"\xc2\x9b", b"\xe2\x80\xae", b"\xe2\x81\xa6"):
                self.assertNotIn(bad, raw, path)


class SenderFields(CollectorTestCase, LogLines):
    """A quoted local part may hold blanks (RFC 5321 Quoted-string): in an
    unquoted value they would start new key=value fields."""

    def test_quoted_sender_cannot_forge_message_fields(self):
        sender = '"x nrcpt=999 sha256=forged"@example.org'
        body = b"Subject: quoted sender\r\n\r\nhello\r\n"
        cl, qid = self.send_mail(body, mail_from=sender)
        cl.cmd("QUIT")
        words, f = self.wait_line(lambda w, f: "message" in w and f.get("queue_id") == qid)
        self.assertEqual(set(f), {"queue_id", "sha256", "size", "from", "nrcpt"}, f)
        self.assertEqual(f["nrcpt"], "1", f)
        self.assertEqual(f["sha256"], sha256_hex(body), f)
        self.assertEqual(unescape(f["from"]), ("<%s>" % sender).encode())


class MXReplyFields(RelayCase, LogLines):
    """The relay's attempt line quotes what the MX said (and the recipient
    and MX name): a reply is several words and any of them could be k=v."""

    mx_starttls = False

    def test_mx_reply_cannot_forge_attempt_fields(self):
        self.mx.data_reply = '250 2.0.0 Ok status=forged ip=6.6.6.6 "x'
        body = probe(11)
        self.send(body)
        self.assertEqual(self.result(sha256_hex(body))["status"], "delivered")
        words, f = self.wait_line(lambda w, f: "attempt" in w and "reply" in f)
        self.assertEqual(set(f), {"rcpt", "mx", "ip", "port", "status", "reply"}, f)
        self.assertEqual(f["ip"], "127.0.0.1", f)
        self.assertIn(b"status=forged", unescape(f["reply"]))
        self.assertTrue(self.log_lines())


def flood(port, seconds, keep=400, sources=50):
    """Open connections to port for seconds from several loopback sources,
    holding the last keep of them; returns how many connects succeeded."""
    socks, n, srcs, i = [], 0, loopback_sources(sources), 0
    end = time.time() + seconds
    while time.time() < end:
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.bind((srcs[i % len(srcs)], 0))
            i += 1
            s.connect(("127.0.0.1", port))
            socks.append(s)
            n += 1
        except OSError:
            s.close()
            time.sleep(0.01)
        if len(socks) > keep:
            socks.pop(0).close()
    for s in socks:
        s.close()
    return n


class RepeatedConditions(CollectorTestCase):
    """A condition an attacker can make repeat (accept failing for want of
    descriptors, the session cap flapping) is logged once per series with a
    count, never once per occurrence: a flood cannot flood stderr."""

    def count(self, needle):
        return sum(1 for l in self.c.stderr_text().splitlines() if needle in l)

    def test_accept_failures_logged_once_per_series(self):
        # No descriptor left: RLIMIT_NOFILE lowered under the daemon to its
        # lowest free descriptor, so every accept(2) fails with EMFILE; the
        # listener pauses 500 ms and tries again, for as long as the flood lasts.
        pid = self.c.pid
        end = time.time() + 10 * self.slow    # the start's own checks need descriptors
        while "fosr-collector ready" not in self.c.stderr_text() and time.time() < end:
            time.sleep(0.05)
        old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        fds = {int(f) for f in os.listdir("/proc/%d/fd" % pid)}
        lowest = min(set(range(len(fds) + 1)) - fds)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest, old[1]))
        try:
            flood(self.c.ports["smtp"], 4 * self.slow, keep=100)
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
        # 4 s of pauses of 500 ms: 8 failing rounds at least, one line.
        self.assertEqual(self.count("smtp accept on smtp"), 1, self.c.stderr_tail())
        # Descriptors again: the series ends with its count.
        cl = self.client("smtp")
        self.assertEqual(cl.cmd("QUIT").code, 221)
        end = time.time() + 10 * self.slow
        while "smtp accepting again" not in self.c.stderr_text() and time.time() < end:
            time.sleep(0.05)
        m = re.search(r"smtp accepting again .*after (\d+) occurrences", self.c.stderr_text())
        self.assertIsNotNone(m, self.c.stderr_tail())
        self.assertGreaterEqual(int(m.group(1)), 4)

    @harness.with_config({"spool": {"max_bytes": 4096}})
    def test_spool_full_warnings_once_per_series(self):
        # A full spool refuses every recipient past the in-memory ones: one
        # warning each, at the client's pace, before.  The mail and its parsed
        # document (about 900 bytes, appended after the 250) leave the next
        # transaction room to begin: the analysis is waited for, or a 4,000
        # byte mail gave MAIL FROM a 250 or a 452 depending on which came first.
        body = b"Subject: fill\r\n\r\n" + b"x" * 2400 + b"\r\n"
        cl, _ = self.send_mail(body)
        parsed = os.path.join(self.c.spool_dir, "parsed.jsonl")
        end = time.time() + 30 * self.slow
        while sha256_hex(body).encode() not in open(parsed, "rb").read():
            self.assertLess(time.time(), end, self.c.stderr_tail())
            time.sleep(0.05)
        r = cl.cmd("MAIL FROM:<a@example.org>")
        self.assertEqual(r.code, 250, r)
        codes = [cl.cmd("RCPT TO:<%s%04d@example.net>" % ("r" * 90, i)).code
                 for i in range(300)]
        self.assertIn(451, codes, codes)    # 451 4.3.0: the spool is full
        cl.cmd("QUIT")
        n = self.count("spool full, recipient refused")
        self.assertGreaterEqual(n, 1, self.c.stderr_tail())
        self.assertLessEqual(n, 1, "%d lines:\n%s" % (n, self.c.stderr_tail()))

    @harness.with_config(nofile=64)
    def test_descriptor_refusals_logged_once_per_series(self):
        # The session cap for descriptors reached and left again and again
        # (connections held, then let go): before, 40 "refusing sessions"
        # lines and as many "accepting again" in 4 s.
        n = flood(self.c.ports["smtp"], 4 * self.slow)
        self.assertGreater(n, 400)
        self.assertLessEqual(self.count("smtp refusing sessions"), 1, self.c.stderr_tail())
        self.assertLessEqual(self.count("smtp accepting sessions again"), 1,
                             self.c.stderr_tail())


if __name__ == "__main__":
    unittest.main()
