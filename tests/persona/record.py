#!/usr/bin/python3
"""Record the exact replies of a real Postfix to scripted SMTP dialogues.

Usage: record.py [--host 127.0.0.1] --port P [--tls-port P2] [--local-port P3]
                 [--dest-port P4] [--mode plain|starttls|implicit]
                 [--credentials mixed|good|wrong] [--kind normal,creds,wrong]
                 [--out FILE] [--only NAME[,NAME...]] [--jobs N]

--mode decides how the cases' ordinary connections are made: plain (to --port),
starttls (to --port, then EHLO + STARTTLS + handshake before the case body) or
implicit (TLS to --tls-port).  Cases that make no sense in a mode (the STARTTLS
cases inside TLS, cases on the special --local-port/--dest-port instances)
only run in plain mode.

--credentials decides the passwords of the cases of kind "creds" (every AUTH
case whose outcome depends on the password): "mixed" (default) sends wrong and
right ones as written, "good" makes every credential right, "wrong" makes every
credential wrong.  Kind "wrong" cases send exactly one wrong credential each;
--kind selects which kinds run (default: all).

The module is also imported by tests/e2e/test_persona_diff.py (run_cases()).

Each case runs on a fresh connection.  Raw sockets and the ssl module are
used (not smtplib) so that every reply line is seen exactly as sent.  Queue
ids, CRAM-MD5 challenges and timings are normalised so that the transcript is
stable between runs.  The same script is meant to be pointed at the honeypot
for the differential test: identical transcripts = identical behaviour.

Transcript format, one case after another:
    === name: description
    C: <bytes sent, escaped>
    S: <one reply line>
    S: <connection closed>
    # comment (timing, normalisation notes)
"""
import argparse
import base64
import concurrent.futures
import re
import socket
import ssl
import sys
import time

HOST = "mail.example.com"
# Every wait for a reply or a close is multiplied by this (test_persona_diff
# sets harness.slow_factor(): 3 for an ASan daemon).  A fixed 1.5-3 s wait
# that a slow daemon on a loaded machine overruns records "<no reply>" or
# "still open" on its side only: a difference that is the machine's, not the
# persona's.  The scale is the same for both servers, and the transcripts
# print the unscaled figures.
TIME_SCALE = 1.0
USER = "user@" + HOST
PASSWORD = "password"


def esc(b):
    """Printable form of client bytes for the transcript."""
    out = []
    for c in b:
        if c == 13:
            out.append("\\r")
        elif c == 10:
            out.append("\\n")
        elif c == 0x5c:
            out.append("\\\\")
        elif 0x20 <= c < 0x7f:
            out.append(chr(c))
        else:
            out.append("\\x%02x" % c)
    return "".join(out)


def shorten(s, limit=160):
    """Long client lines are summarised (the exact bytes are in the case)."""
    if len(s) <= limit:
        return s
    return s[:60] + "...[%d chars]..." % len(s) + s[-40:]


class Normaliser:
    """Replaces the run-dependent parts of reply lines by placeholders."""

    QID = re.compile(r"queued as [0-9A-F]{6,20}\b")

    CRAM = re.compile(rb"<\d+\.\d+@[^>]+>")

    def __call__(self, line):
        line = self.QID.sub("queued as {qid}", line)
        if line.startswith("334 ") and len(line) > 8:
            try:
                dec = base64.b64decode(line[4:], validate=True)
            except ValueError:
                dec = b""
            if self.CRAM.fullmatch(dec):
                line = "334 {b64 of <digits.digits@host>}"
        return line


class Conn:
    """One client connection with a reply reader that keeps exact lines."""

    def __init__(self, case, port, tls=False, timeout=10.0):
        self.case = case
        self.t0 = time.monotonic()
        self.sock = socket.create_connection((case.host, port), timeout=timeout * TIME_SCALE)
        self.timeout = timeout
        self.buf = b""
        self.closed = False
        if tls:
            self.starttls(quiet=True)

    def starttls(self, quiet=False):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname=HOST)
        self.case.log("# TLS handshake done: %s" % self.sock.version())

    def elapsed(self):
        return time.monotonic() - self.t0

    def send(self, data, show=True):
        if show:
            self.case.log("C: " + shorten(esc(data)))
        try:
            self.sock.sendall(data)
        except OSError:
            # Racy (depends on when the peer's close is seen): not logged,
            # the following read shows the close.
            pass

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return None
        except ssl.SSLError as e:
            self.case.log("# ssl error: %s" % e.reason)
            d = b""
        except ConnectionResetError:
            d = b""
        if not d:
            self.closed = True
            return b""
        self.buf += d
        return d

    def line(self, timeout=None):
        """One reply line without CRLF, or None on close/timeout."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout * TIME_SCALE
        while b"\n" not in self.buf:
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r = self._fill(left)
            if r is None:
                return None
        ln, self.buf = self.buf.split(b"\n", 1)
        if ln.endswith(b"\r"):
            ln = ln[:-1]
        else:
            self.case.log("# reply line not CRLF terminated")
        return ln.decode("latin-1")

    def reply(self, timeout=None, quiet=False):
        """One complete (possibly multi-line) reply; logs it; returns lines."""
        lines = []
        while True:
            ln = self.line(timeout)
            if ln is None:
                if self.closed:
                    if not quiet:
                        self.case.log("S: <connection closed>")
                else:
                    self.case.log("S: <no reply within %ss>" % (timeout or self.timeout))
                return lines
            ln = self.case.norm(ln)
            lines.append(ln)
            if not quiet:
                self.case.log("S: " + ln)
            if len(ln) < 4 or ln[3] != "-":
                return lines

    def cmd(self, data, nreplies=1, timeout=None):
        self.send(data)
        out = []
        for _ in range(nreplies):
            r = self.reply(timeout)
            out.append(r)
            if not r:
                break
        return out[-1] if out else []

    def drain(self, timeout=1.5):
        """Log whatever replies come within timeout, and a close."""
        while True:
            ln = self.line(timeout)
            if ln is None:
                if self.closed:
                    self.case.log("S: <connection closed>")
                return
            self.case.log("S: " + self.case.norm(ln))

    def expect_close(self, timeout=3.0):
        ln = self.line(timeout)
        if ln is None and self.closed:
            self.case.log("S: <connection closed>")
        elif ln is None:
            self.case.log("# connection still open after %ss" % timeout)
        else:
            self.case.log("S: " + self.case.norm(ln))
            self.expect_close(timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Case:
    def __init__(self, name, desc, fn, args):
        self.name = name
        self.desc = desc
        self.fn = fn
        self.args = args
        self.mode = getattr(args, "mode", "plain") or "plain"
        self.credentials = getattr(args, "credentials", "mixed") or "mixed"
        self.host = args.host
        self.lines = []
        self.norm = Normaliser()
        self.conns = []

    def log(self, s):
        self.lines.append(s)

    def conn(self, port=None, tls=False, banner=True, timeout=10.0):
        """A connection to port (default: the mode's listener), banner read.
        In starttls mode the default connection is upgraded first (EHLO,
        STARTTLS, handshake, all logged) so that the case runs inside TLS."""
        default = port is None
        if default and self.mode == "implicit":
            port, tls = self.args.tls_port, True
        c = Conn(self, port or self.args.port, tls=tls, timeout=timeout)
        self.conns.append(c)
        if banner:
            c.reply()
            if default and self.mode == "starttls":
                c.cmd(b"EHLO prelude.example\r\n")
                c.cmd(b"STARTTLS\r\n")
                c.starttls()
        return c

    # Credentials: what a case calls "the right password" and "a wrong one"
    # depends on --credentials (see the module comment).
    def pw_good(self):
        return "not-the-password" if self.credentials == "wrong" else PASSWORD

    def pw_bad(self):
        return PASSWORD if self.credentials == "good" else "wrong"

    def user_unknown(self):
        return USER if self.credentials == "good" else "nosuch@" + HOST

    def cram_response(self, c, good):
        """Answer the CRAM-MD5 challenge on c (the 334 line is read and logged
        here, normalised); the response itself is logged as a placeholder."""
        import hashlib
        import hmac
        raw = c.line()  # not through the normaliser: the challenge is needed
        if raw is None:
            self.log("S: <connection closed>" if c.closed else "S: <no reply>")
            return
        self.log("S: " + self.norm(raw))
        try:
            chal = base64.b64decode(raw[4:], validate=True)
        except ValueError:
            self.log("# challenge is not base64")
            return
        self.log("# challenge is base64 of <random.time@myhostname>: %s" %
                 bool(re.fullmatch(rb"<\d+\.\d+@mail\.example\.com>", chal)))
        pw = self.pw_good() if good else self.pw_bad()
        dig = hmac.new(pw.encode(), chal, hashlib.md5).hexdigest()
        c.send(b64(USER + " " + dig).encode() + b"\r\n", show=False)
        self.log("C: {b64 of 'user@mail.example.com <hmac-md5 hex, %s password>'}\\r\\n"
                 % ("right" if good else "wrong"))
        c.reply()

    def run(self):
        try:
            self.fn(self)
        except Exception as e:  # a failing case must not hide the others
            self.log("# case raised %s: %s" % (e.__class__.__name__, e))
        finally:
            for c in self.conns:
                c.close()
        return self


CASES = []
ALL_MODES = ("plain", "starttls", "implicit")
PLAIN = ("plain",)
NOT_STARTTLS = ("plain", "implicit")     # the case reads the banner itself


def case(desc, modes=ALL_MODES, kind="normal"):
    """Register a case.  kind: "normal" (no credential is checked), "creds"
    (passwords follow --credentials), "wrong" (exactly one wrong credential:
    the only step where the honeypot's default AUTH policy differs)."""
    def deco(fn):
        fn.modes = modes
        fn.kind = kind
        CASES.append((fn.__name__, desc, fn))
        return fn
    return deco


def delay(dt):
    """A reply delay in whole-second buckets that survive a loaded machine:
    Postfix's sleeps are exactly 1 s (smtpd_error_sleep_time)."""
    if dt < 0.5:
        return "0s"
    if dt < 1.9:
        return "1s"
    return "%.0fs" % dt


def b64(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


def ehlo(c, name=b"client.example"):
    c.cmd(b"EHLO " + name + b"\r\n")


def quit_(c):
    c.cmd(b"QUIT\r\n")
    c.expect_close()
    c.close()


# ---------------------------------------------------------------- greeting

@case("banner, and its delay", modes=NOT_STARTTLS)
def banner(k):
    t0 = time.monotonic()
    c = k.conn(banner=False)
    c.reply()
    dt = time.monotonic() - t0
    # A delay the server means is on every connection; a loaded machine's
    # (the CPU, this process's other case threads) rarely on three in a row:
    # the shortest of up to three counts.  Once was a failure seen in the
    # release build under load (implicit TLS: handshake and lookup, > 0.5 s).
    # The extra connections are not part of the transcript.
    for _ in range(2):
        if dt < 0.5:
            break
        mark = len(k.lines)
        t0 = time.monotonic()
        c2 = k.conn(banner=False)
        c2.reply(quiet=True)
        dt = min(dt, time.monotonic() - t0)
        c2.close()
        del k.lines[mark:]
    k.log("# banner delay < 0.5s: %s" % (dt < 0.5))
    quit_(c)


@case("EHLO with an argument")
def ehlo_arg(k):
    c = k.conn()
    ehlo(c)
    quit_(c)


@case("EHLO without an argument")
def ehlo_noarg(k):
    c = k.conn()
    c.cmd(b"EHLO\r\n")
    c.cmd(b"EHLO \r\n")
    quit_(c)


@case("HELO with and without an argument")
def helo(k):
    c = k.conn()
    c.cmd(b"HELO\r\n")
    c.cmd(b"HELO client.example\r\n")
    c.cmd(b"MAIL FROM:<a@example.org> SIZE=10\r\n")
    quit_(c)


@case("EHLO twice (the second resets the transaction)")
def ehlo_twice(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    ehlo(c, b"other.example")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"HELO third.example\r\n")
    quit_(c)


@case("EHLO with odd arguments")
def ehlo_odd(k):
    c = k.conn()
    c.cmd(b"EHLO [1.2.3.4]\r\n")
    c.cmd(b"EHLO a b c\r\n")
    c.cmd(b"EHLO \xff\xfe\r\n")
    c.cmd(b"ehlo lower.example\r\n")
    quit_(c)


@case("implicit TLS port: banner and EHLO (no STARTTLS offered)", modes=PLAIN)
def tls_port(k):
    c = k.conn(port=k.args.tls_port, tls=True)
    ehlo(c)
    c.cmd(b"STARTTLS\r\n")
    c.cmd(b"STARTTLS foo\r\n")
    quit_(c)


# ---------------------------------------------------------------- sequencing

@case("MAIL before EHLO")
def mail_before_ehlo(k):
    c = k.conn()
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"DATA\r\n")
    c.cmd(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    quit_(c)


@case("RCPT before MAIL")
def rcpt_before_mail(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    quit_(c)


@case("DATA before MAIL")
def data_before_mail(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"DATA\r\n")
    quit_(c)


@case("DATA with MAIL but no RCPT")
def data_no_rcpt(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"DATA\r\n")
    quit_(c)


@case("DATA after a rejected RCPT only")
def data_rejected_rcpt(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<bad address>\r\n")
    c.cmd(b"DATA\r\n")
    quit_(c)


@case("nested MAIL")
def mail_nested(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"MAIL FROM:<c@example.org>\r\n")
    quit_(c)


# ---------------------------------------------------------------- MAIL

@case("MAIL syntax errors")
def mail_syntax(k):
    c = k.conn()
    ehlo(c)
    for line in (b"MAIL", b"MAIL FROM", b"MAIL FROM:", b"MAIL FROM: ",
                 b"MAIL FROM:<a@b", b"MAIL TO:<a@b>", b"MAIL FROM:a@b",
                 b"MAIL FROM: <a@b>", b"MAIL FROM:<>", b"MAIL FROM:<a b@c>",
                 b"MAIL FROM:<@x,@y:a@b>", b"MAIL FROM:<a@[1.2.3.4]>",
                 b"MAIL FROM:<a@>", b"MAIL FROM:<@b>", b"MAIL FROM:<a@b>>",
                 b"mail from:<a@b.c>", b"MAIL FROM:<a@b.c> SIZE=1 FOO",
                 b"MAIL  FROM:<a@b.c>", b"MAIL FROM :<a@b.c>",
                 b"MAIL FROM:<\"quoted local\"@example.org>",
                 b"MAIL FROM:<a@b.c>x"):
        c.cmd(line + b"\r\n")
        if c.closed:
            return
        c.cmd(b"RSET\r\n")
    quit_(c)


@case("MAIL FROM with 8-bit bytes in the address")
def mail_8bit(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<\xc3\xa9@example.org>\r\n")
    c.cmd(b"MAIL FROM:<\xff@example.org>\r\n")
    c.cmd(b"MAIL FROM:<\xc3\xa9@example.org> SMTPUTF8\r\n")
    quit_(c)


@case("MAIL parameters")
def mail_params(k):
    c = k.conn()
    ehlo(c)
    for p in (b"SIZE=1000", b"SIZE=abc", b"SIZE=99999999999", b"SIZE=10240000",
              b"SIZE=10240001", b"SIZE=", b"SIZE", b"BODY=8BITMIME", b"BODY=7BIT",
              b"BODY=BINARYMIME", b"BODY=foo", b"SMTPUTF8", b"FOO=bar",
              b"RET=HDRS ENVID=x", b"RET=FULL", b"RET=foo", b"ENVID=a+2Bb",
              b"AUTH=<>", b"AUTH=user@x", b"size=5", b"SIZE=1 SIZE=2"):
        c.cmd(b"MAIL FROM:<a@example.org> " + p + b"\r\n")
        if c.closed:
            return
        c.cmd(b"RSET\r\n")
    quit_(c)


@case("MAIL parameters before EHLO (HELO session)")
def mail_params_helo(k):
    c = k.conn()
    c.cmd(b"HELO client.example\r\n")
    c.cmd(b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\n")
    c.cmd(b"RSET\r\n")
    c.cmd(b"MAIL FROM:<a@example.org> SIZE=99999999999\r\n")
    quit_(c)


# ---------------------------------------------------------------- RCPT

@case("RCPT syntax errors and parameters")
def rcpt_syntax(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    for line in (b"RCPT", b"RCPT TO", b"RCPT TO:", b"RCPT TO:<b@c",
                 b"RCPT FROM:<b@c>", b"RCPT TO:b@example.net", b"RCPT TO:<>",
                 b"RCPT TO:<b@example.net> NOTIFY=NEVER",
                 b"RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE",
                 b"RCPT TO:<b@example.net> NOTIFY=bogus",
                 b"RCPT TO:<b@example.net> ORCPT=rfc822;a@b",
                 b"RCPT TO:<b@example.net> ORCPT=bogus",
                 b"RCPT TO:<b@example.net> FOO=1",
                 b"RCPT TO:<postmaster>", b"RCPT TO:<b@[1.2.3.4]>",
                 b"RCPT TO:<b>", b"rcpt to:<b@example.net>"):
        c.cmd(line + b"\r\n")
        if c.closed:
            return
    quit_(c)


@case("local domain: unknown and known local recipients (instance with mydestination=$myhostname, localhost)", modes=PLAIN)
def rcpt_local(k):
    c = k.conn(port=k.args.dest_port)
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    for rcpt in (b"nosuchuser@mail.example.com", b"root@mail.example.com", b"postmaster",
                 b"b", b"ROOT@MAIL.EXAMPLE.COM", b"root+ext@mail.example.com",
                 b"NoSuch@Mail.Example.Com", b"x@localhost", b"abuse@mail.example.com",
                 b"mailer-daemon@mail.example.com", b"x@[127.0.0.1]",
                 b"x@sub.mail.example.com", b'"no such"@mail.example.com'):
        c.cmd(b"RCPT TO:<" + rcpt + b">\r\n")
    c.cmd(b"VRFY nosuchuser@mail.example.com\r\n")
    c.cmd(b"VRFY <nosuchuser@mail.example.com>\r\n")
    c.cmd(b"VRFY nosuchuser\r\n")
    c.cmd(b"VRFY root@mail.example.com\r\n")
    quit_(c)


@case("postmaster in every form (submission lets the bare one through without AUTH)")
def rcpt_postmaster_forms(k):
    forms = (b"<postmaster>", b"<PostMaster>", b'<"postmaster">', b'<"Postmaster">',
             b"postmaster", b'"postmaster"', b"<@r1,@r2:postmaster>", b"<postmaster@example.net>",
             b'<"postmaster"@example.net>', b'<"postmaster@example.net">', b"<post\\master>",
             b'<"post\\master">', b'<"post master">', b"<postmaster.>", b"<postmaster@>")
    for i in range(0, len(forms), 5):
        c = k.conn()
        ehlo(c)
        c.cmd(b"MAIL FROM:<a@example.org>\r\n")
        for f in forms[i:i + 5]:
            c.cmd(b"RCPT TO:" + f + b"\r\n")
            c.cmd(b"VRFY " + f + b"\r\n")
        quit_(c)


@case("1001 recipients, pipelined")
def rcpt_1001(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    n = 1002
    c.send(b"".join(b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(1, n + 1)),
           show=False)
    k.log("C: RCPT TO:<r1@example.net> ... RCPT TO:<r%d@example.net> (%d lines, one write)" % (n, n))
    got = {}
    for i in range(1, n + 1):
        r = c.reply(quiet=True, timeout=30)
        if not r:
            k.log("# reply %d missing" % i)
            break
        got.setdefault(r[0], []).append(i)
    for text, idx in got.items():
        rng = "%d..%d" % (idx[0], idx[-1]) if len(idx) > 1 else str(idx[0])
        k.log("S: %s   # replies to RCPT #%s (%d)" % (text, rng, len(idx)))
    c.cmd(b"DATA\r\n")
    c.cmd(b"Subject: t\r\n\r\nbody\r\n.\r\n")
    quit_(c)


# ---------------------------------------------------------------- DATA

@case("full DATA transaction, dot-stuffing, then a second one")
def data_full(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"DATA\r\n")
    c.cmd(b"Subject: hi\r\n\r\nline\r\n..stuffed\r\n.\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"DATA\r\n")
    c.cmd(b".\r\n")
    quit_(c)


@case("DATA with an argument")
def data_args(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"DATA foo\r\n")          # the state is checked before the argument
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"DATA foo\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"BDAT 3\r\nabc")
    c.cmd(b"DATA foo\r\n")
    c.cmd(b"RSET\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"DATA foo\r\n")
    c.cmd(b"DATA\r\n")
    c.cmd(b".\r\n")
    quit_(c)


@case("message over message_size_limit (local port, limit 20000)", modes=PLAIN)
def data_too_big(k):
    c = k.conn(port=k.args.local_port)
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org> SIZE=20001\r\n")
    # quirk: the rejected SIZE stays in force until RSET/EHLO or a new SIZE=
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RSET\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"DATA\r\n")
    c.send(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 30, show=False)
    k.log("C: <30 lines of 998 x> (30000 bytes)")
    c.cmd(b".\r\n")
    c.cmd(b"NOOP\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    quit_(c)


@case("pipelined MAIL/RCPT/DATA in one write (PIPELINING)")
def pipelining(k):
    c = k.conn()
    ehlo(c)
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
           b"RCPT TO:<bad>\r\nDATA\r\n")
    for _ in range(4):
        c.reply()
    c.cmd(b"Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\n", nreplies=2)
    c.send(b"RSET\r\nMAIL FROM:<a@example.org>\r\nDATA\r\nNOOP\r\n")
    for _ in range(4):
        c.reply()
    quit_(c)


@case("pipelining before the banner (client talks first)", modes=NOT_STARTTLS)
def talk_first(k):
    c = k.conn(banner=False)
    c.send(b"EHLO early.example\r\n")
    c.reply()
    c.reply()
    quit_(c)


@case("bare LF in DATA, and <LF>.<LF> (smuggling)")
def data_bare_lf(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"DATA\r\n")
    c.send(b"Subject: lf\n\nbody\n.\nMAIL FROM:<smuggled@example.org>\r\n"
           b"RCPT TO:<c@example.net>\r\nDATA\r\nsmuggled\r\n.\r\n")
    c.drain(2)
    quit_(c)


@case("<CR><LF>.<LF> and <LF>.<CR><LF> and <CR>.<CR><LF> terminators")
def data_dot_variants(k):
    for term in (b"\r\n.\n", b"\n.\r\n", b"\r\n.\r\r\n", b"\r.\r\n"):
        c = k.conn()
        ehlo(c)
        c.cmd(b"MAIL FROM:<a@example.org>\r\n")
        c.cmd(b"RCPT TO:<b@example.net>\r\n")
        c.cmd(b"DATA\r\n")
        c.send(b"Subject: t\r\n\r\nbody" + term + b"NOOP\r\n")
        c.drain(2)
        if term == b"\r.\r\n":
            c.send(b"\r\n.\r\n")
            c.drain(2)
        quit_(c)


@case("a lone '.' or '*' as a command (non-letter: forbidden)")
def lone_dot(k):
    for line in (b".", b"*", b"-", b"\xc3\xa9HLO x"):
        c = k.conn()
        ehlo(c)
        c.cmd(line + b"\r\n")
        c.expect_close(2)
        c.close()


@case("BDAT: one chunk LAST, two chunks, BDAT 0 LAST")
def bdat(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    body = b"Subject: b\r\n\r\nbody\r\n"
    c.cmd(b"BDAT %d LAST\r\n" % len(body) + body)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"BDAT 10\r\n" + body[:10])
    c.cmd(b"BDAT %d LAST\r\n" % (len(body) - 10) + body[10:])
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"BDAT 5\r\nabcde")
    c.cmd(b"BDAT 0 LAST\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"BDAT 0\r\n")
    c.cmd(b"RSET\r\n")
    quit_(c)


@case("BDAT errors: without MAIL, without RCPT, bad syntax, DATA after BDAT")
def bdat_errors(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"BDAT 4 LAST\r\nabcd")
    c.cmd(b"NOOP\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"BDAT 4 LAST\r\nabcd")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    quit_(c)
    for bad in (b"BDAT", b"BDAT x", b"BDAT -1", b"BDAT 4 FIRST", b"BDAT 4 LAST x",
                b"BDAT 99999999999999999999", b"BDAT 4  LAST\r\nabcd", b"BDAT 4 last\r\nabcd",
                b"BDAT 04 LAST\r\nabcd", b"BDAT +4 LAST\r\nabcd"):
        c = k.conn()
        ehlo(c)
        c.cmd(b"MAIL FROM:<a@example.org>\r\n")
        c.cmd(b"RCPT TO:<b@example.net>\r\n")
        c.cmd(bad + (b"" if bad.endswith(b"abcd") else b"\r\n"))
        if not c.closed:
            c.cmd(b"NOOP\r\n")
        if not c.closed:
            quit_(c)
        else:
            c.close()


@case("DATA after BDAT, BDAT after DATA")
def bdat_data_mix(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"BDAT 4\r\nabcd")
    c.cmd(b"DATA\r\n")
    c.cmd(b"NOOP\r\n")
    c.cmd(b"RSET\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    quit_(c)


@case("BDAT before EHLO / in a HELO session")
def bdat_helo(k):
    c = k.conn()
    c.cmd(b"BDAT 4 LAST\r\nabcd")
    c.cmd(b"HELO client.example\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"BDAT 4 LAST\r\nabcd")
    quit_(c)


@case("BDAT over message_size_limit (local port)", modes=PLAIN)
def bdat_too_big(k):
    c = k.conn(port=k.args.local_port)
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"BDAT 30000\r\n" + b"x" * 30000)
    c.cmd(b"BDAT 4 LAST\r\nabcd")
    c.cmd(b"NOOP\r\n")
    quit_(c)


# ---------------------------------------------------------------- misc commands

@case("RSET, NOOP, with and without arguments")
def rset_noop(k):
    c = k.conn()
    c.cmd(b"RSET\r\n")
    c.cmd(b"NOOP\r\n")
    ehlo(c)
    c.cmd(b"RSET\r\n")
    c.cmd(b"RSET x\r\n")
    c.cmd(b"NOOP\r\n")
    c.cmd(b"NOOP x y\r\n")
    quit_(c)


@case("VRFY, EXPN, HELP, TURN, unknown commands")
def misc(k):
    c = k.conn()
    for line in (b"VRFY", b"VRFY b@example.net", b"VRFY postmaster",
                 b"VRFY root@mail.example.com", b"VRFY <b@example.net>",
                 b"VRFY a b", b"EXPN", b"EXPN list", b"HELP", b"HELP MAIL",
                 b"TURN", b"ATRN", b"XCLIENT ADDR=1.2.3.4", b"XFORWARD NAME=x",
                 b"FOO", b"FOO bar"):
        c.cmd(line + b"\r\n")
        if c.closed:
            return
    quit_(c)


@case("ETRN before EHLO, without argument, with a domain, in MAIL")
def etrn(k):
    c = k.conn()
    c.cmd(b"ETRN example.net\r\n")
    ehlo(c)
    c.cmd(b"ETRN\r\n")
    c.cmd(b"ETRN example.net\r\n")
    c.cmd(b"ETRN @example.net\r\n")
    c.cmd(b"ETRN #foo\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"ETRN example.net\r\n")
    quit_(c)


@case("empty line, whitespace line, a line with a NUL")
def empty(k):
    c = k.conn()
    c.cmd(b"\r\n")
    c.cmd(b" \r\n")
    c.cmd(b"\t\r\n")
    c.cmd(b"NO\x00OP\r\n")
    c.cmd(b"NOOP\x00\r\n")
    c.cmd(b"MAIL FROM:<a\x00b@example.org>\r\n")
    quit_(c)


@case("NUL in the middle of the command verb after EHLO")
def nul_after_ehlo(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a\x00b@example.org>\r\n")
    c.cmd(b"RCPT\x00 TO:<b@example.net>\r\n")
    quit_(c)


@case("overlong lines (line_length_limit 2048)")
def long_lines(k):
    c = k.conn()
    ehlo(c)
    for line in (b"NOOP " + b"x" * 3000, b"X" * 3000,
                 b"MAIL FROM:<" + b"a" * 3000 + b"@example.org>",
                 b"MAIL FROM:<" + b"a" * 2000 + b"@example.org>",
                 b"RCPT TO:<" + b"a" * 3000 + b"@example.net>",
                 b"HELO " + b"h" * 3000,
                 b"NOOP " + b"y" * 100000):
        c.send(line + b"\r\n", show=False)
        k.log("C: " + shorten(esc(line + b"\r\n")))
        c.reply(timeout=10)
        if c.closed:
            return
    c.cmd(b"NOOP\r\n")
    quit_(c)


@case("command split at 2048: the rest of an overlong line is skipped, not run")
def long_line_tail(k):
    c = k.conn()
    ehlo(c)
    line = b"NOOP " + b"x" * 2043 + b"QUIT\r\n"
    c.send(line, show=False)
    k.log("C: " + shorten(esc(line)))
    c.reply()
    c.cmd(b"NOOP\r\n")
    quit_(c)


@case("bare LF terminated commands, CR-only, CR in the middle")
def bare_lf_cmds(k):
    c = k.conn()
    c.cmd(b"EHLO lf.example\n")
    c.cmd(b"MAIL FROM:<a@example.org>\n")
    c.cmd(b"RCPT TO:<b@example.net>\n")
    c.cmd(b"NOOP\r\r\n")
    c.cmd(b"NOOP\rNOOP\r\n")
    c.cmd(b"DATA\n")
    c.cmd(b"Subject: x\n\nbody\n.\n")
    c.cmd(b"QUIT\n")
    c.expect_close()


@case("commands that look like mail headers or other protocols")
def header_like(k):
    for line in (b"Subject: hi", b"From: a@b", b"To: x", b"Received: from x",
                 b"GET / HTTP/1.0", b"POST /x HTTP/1.1", b"CONNECT 1.2.3.4:25 HTTP/1.0",
                 b"foo", b"quit", b"1234", b"\x16\x03\x01\x02\x00", b"USER x",
                 b"EHLO: x"):
        c = k.conn()
        c.cmd(line + b"\r\n")
        c.expect_close(2)
        c.close()
        k.log("")


@case("binary garbage as commands (letter first, so not forbidden)")
def binary_garbage(k):
    c = k.conn()
    ehlo(c)
    for line in (b"A\x80\x81\x82", b"Z\xff\x00\x01", b"NOOP \xfe\xfd",
                 b"x" + bytes(range(1, 9)) + bytes(range(14, 32)),
                 b"MAIL FROM:<a@example.org> \xc0\xaf", b"RSET\x7f"):
        c.cmd(line + b"\r\n")
        if c.closed:
            return
    quit_(c)


@case("QUIT, QUIT with an argument")
def quit_args(k):
    c = k.conn()
    c.cmd(b"QUIT now\r\n")
    c.expect_close()
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"QUIT\r\n")
    c.expect_close()


# ---------------------------------------------------------------- STARTTLS

@case("STARTTLS before EHLO, with an argument", modes=PLAIN)
def starttls_misc(k):
    c = k.conn()
    c.cmd(b"STARTTLS\r\n")
    c.starttls()
    c.cmd(b"EHLO client.example\r\n")
    quit_(c)
    c = k.conn()
    ehlo(c)
    c.cmd(b"STARTTLS foo\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"STARTTLS\r\n")
    quit_(c)


@case("STARTTLS, then EHLO, then STARTTLS again inside TLS; state reset", modes=PLAIN)
def starttls_twice(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"STARTTLS\r\n")
    c.starttls()
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    ehlo(c)
    c.cmd(b"STARTTLS\r\n")
    c.cmd(b"STARTTLS foo\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"DATA\r\n")
    c.cmd(b"Subject: tls\r\n\r\nx\r\n.\r\n")
    quit_(c)


@case("STARTTLS with a command pipelined after it (discarded?)", modes=PLAIN)
def starttls_pipelined(k):
    c = k.conn()
    ehlo(c)
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
    c.reply()
    time.sleep(0.3)
    c.starttls()
    c.cmd(b"EHLO client.example\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    quit_(c)


@case("STARTTLS then plaintext instead of a handshake", modes=PLAIN)
def starttls_plain(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"STARTTLS\r\n")
    c.cmd(b"EHLO client.example\r\n", timeout=3)
    c.expect_close(3)


@case("STARTTLS with a MAIL transaction open", modes=PLAIN)
def starttls_in_mail(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"STARTTLS\r\n")
    c.starttls()
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"DATA\r\n")
    quit_(c)


@case("STARTTLS, TLS, then MAIL without a new EHLO; AUTH after TLS", modes=PLAIN, kind="creds")
def starttls_noehlo(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"STARTTLS\r\n")
    c.starttls()
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"AUTH PLAIN " + b64("\0" + USER + "\0" + k.pw_good()).encode() + b"\r\n")
    c.cmd(b"RSET\r\n")
    c.cmd(b"AUTH PLAIN " + b64("\0" + USER + "\0" + k.pw_good()).encode() + b"\r\n")
    quit_(c)


# ---------------------------------------------------------------- AUTH

@case("AUTH: bare, unknown mechanism, lower case, extra args; before EHLO", kind="creds")
def auth_basic(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"AUTH\r\n")
    c.cmd(b"AUTH FOO\r\n")
    c.cmd(b"AUTH DIGEST-MD5\r\n")
    c.cmd(b"AUTH SCRAM-SHA-1\r\n")
    c.cmd(b"AUTH PLAIN a b c\r\n")
    c.cmd(b"AUTH plain\r\n")
    c.cmd(b"*\r\n")
    c.cmd(b"AUTH login\r\n")
    c.cmd(b"*\r\n")
    quit_(c)
    c = k.conn()
    c.cmd(b"AUTH\r\n")
    c.cmd(b"AUTH PLAIN " + b64("\0" + USER + "\0" + k.pw_good()).encode() + b"\r\n")
    quit_(c)


@case("AUTH PLAIN with initial response: good, bad, then twice", kind="creds")
def auth_plain_ir(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"AUTH PLAIN " + b64("\0" + USER + "\0" + k.pw_bad()).encode() + b"\r\n")
    c.cmd(b"AUTH PLAIN " + b64("\0" + k.user_unknown() + "\0" + k.pw_bad()).encode() + b"\r\n")
    c.cmd(b"AUTH PLAIN " + b64("\0" + USER + "\0" + k.pw_good()).encode() + b"\r\n")
    c.cmd(b"AUTH PLAIN " + b64("\0" + USER + "\0" + k.pw_good()).encode() + b"\r\n")
    c.cmd(b"AUTH LOGIN\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    quit_(c)


@case("AUTH PLAIN via 334 continuation; empty initial response '='", kind="creds")
def auth_plain_cont(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"AUTH PLAIN\r\n")
    c.cmd(b64("\0" + USER + "\0" + k.pw_bad()).encode() + b"\r\n")
    c.cmd(b"AUTH PLAIN =\r\n")
    c.cmd(b"\r\n")
    c.cmd(b"AUTH PLAIN\r\n")
    c.cmd(b64("\0" + USER + "\0" + k.pw_good()).encode() + b"\r\n")
    quit_(c)


@case("AUTH LOGIN, both forms", kind="creds")
def auth_login(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"AUTH LOGIN\r\n")
    c.cmd(b64(USER).encode() + b"\r\n")
    c.cmd(b64(k.pw_bad()).encode() + b"\r\n")
    c.cmd(b"AUTH LOGIN " + b64(USER).encode() + b"\r\n")
    c.cmd(b64(k.pw_good()).encode() + b"\r\n")
    quit_(c)


@case("AUTH CRAM-MD5 (challenge normalised)", kind="creds")
def auth_cram(k):
    c = k.conn()
    ehlo(c)
    c.send(b"AUTH CRAM-MD5\r\n")
    k.cram_response(c, good=False)
    c.send(b"AUTH CRAM-MD5\r\n")
    k.cram_response(c, good=True)
    quit_(c)


@case("AUTH cancel '*', bad base64")
def auth_cancel(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"AUTH LOGIN\r\n")
    c.cmd(b"*\r\n")
    c.cmd(b"AUTH LOGIN\r\n")
    c.cmd(b"!!!notbase64\r\n")
    c.cmd(b"AUTH PLAIN !!!notbase64\r\n")
    c.cmd(b"AUTH LOGIN\r\n")
    c.cmd(b64(USER).encode() + b"\r\n")
    c.cmd(b"*\r\n")
    c.cmd(b"AUTH PLAIN *\r\n")
    c.cmd(b"AUTH PLAIN\r\n")
    c.cmd(b"*\r\n")
    c.cmd(b"AUTH PLAIN\r\n")
    c.cmd(b"!!!notbase64\r\n")
    c.cmd(b"AUTH PLAIN " + b64("no-nuls").encode() + b"\r\n")
    c.cmd(b"AUTH CRAM-MD5\r\n", timeout=5)
    c.cmd(b"*\r\n")
    quit_(c)


@case("AUTH: bad base64 at every step of every mechanism")
def auth_bad_b64(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"AUTH LOGIN !!!notbase64\r\n")
    c.cmd(b"AUTH LOGIN " + b64(USER).encode() + b"\r\n")
    c.cmd(b"!!!notbase64\r\n")
    c.cmd(b"AUTH LOGIN\r\n")
    c.cmd(b64(USER).encode() + b"\r\n")
    c.cmd(b"@@@@\r\n")
    c.cmd(b"AUTH CRAM-MD5\r\n")
    c.cmd(b"!!!notbase64\r\n")
    c.cmd(b"AUTH CRAM-MD5 " + b64("x").encode() + b"\r\n")
    c.cmd(b"AUTH PLAIN \xff\xfe\r\n")
    quit_(c)
    # Cyrus' sasl_decode64(): a length that is not a multiple of 4 (unpadded
    # base64, "=", "*" as an initial response) is "another step is needed".
    c = k.conn()
    for line in (b"AUTH PLAIN YW", b"AUTH PLAIN YWJjZA=", b"AUTH PLAIN YW=a", b"AUTH LOGIN *",
                 b"AUTH LOGIN =", b"AUTH CRAM-MD5 *", b"AUTH CRAM-MD5 YWJj",
                 b"AUTH PLAIN", b"YW", b"AUTH LOGIN", b"YW", b"AUTH LOGIN YWJj", b"YWJjZA",
                 b"AUTH CRAM-MD5", b"YW"):
        c.cmd(line + b"\r\n")
        if c.closed:
            return
    quit_(c)
    # empty continuation lines and a leading space
    c = k.conn()
    for line in (b"AUTH PLAIN", b"", b"AUTH CRAM-MD5", b"", b"AUTH LOGIN", b"", b"*",
                 b"AUTH PLAIN", b" YWJj"):
        c.cmd(line + b"\r\n")
        if c.closed:
            return
    quit_(c)


@case("AUTH: malformed credentials (not a password check): empty user, NUL count, CRAM form")
def auth_malformed(k):
    c = k.conn()
    ehlo(c)
    for resp in (b"\0\0pw", b"\0\0", b"a\0b", b"a\0b\0c\0d",
                 b"\0" + USER.encode() + b"\0x\0"):
        c.cmd(b"AUTH PLAIN " + b64(resp).encode() + b"\r\n")
    c.cmd(b"AUTH LOGIN\r\n")
    c.cmd(b"\r\n")
    c.cmd(b64("pw").encode() + b"\r\n")
    for resp in (b"user", b" " + b"0" * 32):
        c.cmd(b"AUTH CRAM-MD5\r\n")
        c.cmd(b64(resp).encode() + b"\r\n")
    quit_(c)


@case("AUTH inside a MAIL transaction", kind="creds")
def auth_in_mail(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"AUTH PLAIN " + b64("\0" + USER + "\0" + k.pw_good()).encode() + b"\r\n")
    c.cmd(b"AUTH\r\n")
    c.cmd(b"AUTH FOO\r\n")
    c.cmd(b"RSET\r\n")
    c.cmd(b"AUTH PLAIN " + b64("\0" + USER + "\0" + k.pw_good()).encode() + b"\r\n")
    # authenticated AND in a transaction: which check comes first
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"AUTH PLAIN " + b64("\0" + USER + "\0" + k.pw_good()).encode() + b"\r\n")
    c.cmd(b"AUTH\r\n")
    c.cmd(b"RSET\r\n")
    c.cmd(b"AUTH\r\n")
    quit_(c)


@case("AUTH in a HELO session", kind="creds")
def auth_helo(k):
    c = k.conn()
    c.cmd(b"HELO client.example\r\n")
    c.cmd(b"AUTH PLAIN " + b64("\0" + USER + "\0" + k.pw_good()).encode() + b"\r\n")
    quit_(c)


@case("AUTH continuation line too long / pipelined after AUTH")
def auth_pipelined(k):
    c = k.conn()
    ehlo(c)
    c.send(b"AUTH LOGIN\r\nNOOP\r\n")
    c.reply()
    c.reply()
    c.cmd(b"*\r\n")   # cancel: the outcome must not depend on a password
    c.cmd(b"NOOP\r\n")
    quit_(c)


# One wrong credential per connection, then a whole transaction: the reply to
# that one step is where the honeypot's default policy (auth.outcome accept)
# differs from Postfix on purpose; everything after it must be identical.

def _wrong_then_mail(c):
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"DATA\r\n")
    c.cmd(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    quit_(c)


@case("wrong credential: AUTH PLAIN initial response, wrong password", kind="wrong")
def auth_wrong_plain(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"AUTH PLAIN " + b64("\0" + USER + "\0wrong").encode() + b"\r\n")
    _wrong_then_mail(c)


@case("wrong credential: AUTH PLAIN, unknown user with an authzid", kind="wrong")
def auth_wrong_plain_user(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"AUTH PLAIN " + b64("admin\0nosuch@" + HOST + "\0secret").encode() + b"\r\n")
    _wrong_then_mail(c)


@case("wrong credential: AUTH PLAIN, empty password", kind="wrong")
def auth_wrong_plain_empty(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"AUTH PLAIN " + b64("\0" + USER + "\0").encode() + b"\r\n")
    _wrong_then_mail(c)


@case("wrong credential: AUTH PLAIN via the 334 continuation", kind="wrong")
def auth_wrong_plain_cont(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"AUTH PLAIN\r\n")
    c.cmd(b64("\0" + USER + "\0wrong").encode() + b"\r\n")
    _wrong_then_mail(c)


@case("wrong credential: AUTH LOGIN, wrong password", kind="wrong")
def auth_wrong_login(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"AUTH LOGIN\r\n")
    c.cmd(b64(USER).encode() + b"\r\n")
    c.cmd(b64("wrong").encode() + b"\r\n")
    _wrong_then_mail(c)


@case("wrong credential: AUTH LOGIN with initial response, empty password", kind="wrong")
def auth_wrong_login_empty(k):
    c = k.conn()
    ehlo(c)
    c.cmd(b"AUTH LOGIN " + b64(USER).encode() + b"\r\n")
    c.cmd(b"\r\n")
    _wrong_then_mail(c)


@case("wrong credential: AUTH CRAM-MD5, wrong digest", kind="wrong")
def auth_wrong_cram(k):
    c = k.conn()
    ehlo(c)
    c.send(b"AUTH CRAM-MD5\r\n")
    k.cram_response(c, good=False)
    _wrong_then_mail(c)


@case("AUTH failures count as errors: 4 failed AUTH then unknown commands", kind="creds")
def auth_fail_errors(k):
    c = k.conn()
    ehlo(c)
    for _ in range(4):
        c.cmd(b"AUTH PLAIN " + b64("\0" + USER + "\0" + k.pw_bad()).encode() + b"\r\n", timeout=30)
        if c.closed:
            return
    quit_(c)


# ---------------------------------------------------------------- error limit

@case("error limit: 25 unknown commands, one at a time, with reply times")
def error_limit(k):
    c = k.conn(timeout=60)
    ehlo(c)
    last = c.elapsed()
    for i in range(1, 26):
        c.send(b"XYZZY%d\r\n" % i)
        r = c.reply(timeout=60)
        now = c.elapsed()
        k.log("# reply %d after %s" % (i, delay(now - last)))
        last = now
        if c.closed or not r:
            break
        if r and r[0].startswith("421"):
            c.expect_close()
            break


@case("error limit with pipelined errors (25 in one write)")
def error_limit_pipelined(k):
    c = k.conn(timeout=120)
    ehlo(c)
    c.send(b"".join(b"XYZZY%d\r\n" % i for i in range(1, 26)), show=False)
    k.log("C: XYZZY1 .. XYZZY25 (one write)")
    for i in range(1, 26):
        r = c.reply(timeout=120)
        if c.closed or not r:
            break


@case("errors of other kinds count too: bad MAIL syntax and rejected RCPT")
def error_kinds(k):
    c = k.conn(timeout=60)
    ehlo(c)
    last = c.elapsed()
    seq = [b"MAIL FROM:<a@b"] * 5 + [b"RCPT TO:<b@example.net>"] * 5 + \
          [b"MAIL FROM:<a@example.org>"] + [b"RCPT TO:<bad"] * 12
    for i, line in enumerate(seq, 1):
        c.send(line + b"\r\n")
        r = c.reply(timeout=60)
        now = c.elapsed()
        k.log("# reply %d after %s" % (i, delay(now - last)))
        last = now
        if c.closed or not r:
            break


@case("junk command limit: 125 NOOPs one at a time (smtpd_junk_command_limit 100)")
def junk_limit(k):
    c = k.conn(timeout=60)
    ehlo(c)
    k.log("C: NOOP\\r\\n x125, each after the previous reply")
    for i in range(1, 126):
        t = c.elapsed()
        c.send(b"NOOP\r\n", show=False)
        r = c.reply(timeout=60, quiet=True)
        dt = c.elapsed() - t
        if not r:
            k.log("S: <connection closed>   # before reply %d" % i)
            break
        if i >= 100 or r[0] != "250 2.0.0 Ok":
            k.log("S: %s   # reply %d%s" % (r[0], i, ", delayed " + delay(dt) if dt >= 0.5 else ""))


@case("junk command limit without EHLO: HELO and EHLO are junk commands too", modes=PLAIN)
def junk_limit_bare(k):
    c = k.conn(timeout=60)
    k.log("C: NOOP\\r\\n x125, each after the previous reply")
    for i in range(1, 126):
        t = c.elapsed()
        c.send(b"NOOP\r\n", show=False)
        r = c.reply(timeout=60, quiet=True)
        dt = c.elapsed() - t
        if not r:
            k.log("S: <connection closed>   # before reply %d" % i)
            break
        if i >= 100 or r[0] != "250 2.0.0 Ok":
            k.log("S: %s   # reply %d%s" % (r[0], i, ", delayed " + delay(dt) if dt >= 0.5 else ""))


@case("idle timeout (local port, smtpd_timeout=5s)", modes=PLAIN)
def timeout(k):
    c = k.conn(port=k.args.local_port, timeout=20)
    ehlo(c)
    t = c.elapsed()
    c.reply(timeout=20)
    k.log("# timeout reply after ~%ds" % round(c.elapsed() - t))
    c.expect_close()


@case("timeout in DATA (local port)", modes=PLAIN)
def timeout_data(k):
    c = k.conn(port=k.args.local_port, timeout=20)
    ehlo(c)
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<b@example.net>\r\n")
    c.cmd(b"DATA\r\n")
    c.send(b"Subject: x\r\n\r\npartial")
    c.reply(timeout=20)
    c.expect_close()


def select_cases(args, kinds=None, names=None):
    """The Case objects that apply to args (mode, available ports), limited
    to kinds (a set of case kinds) and names when given."""
    mode = getattr(args, "mode", "plain") or "plain"
    todo = []
    for name, desc, fn in CASES:
        if names and name not in names:
            continue
        if kinds and fn.kind not in kinds:
            continue
        if mode not in fn.modes:
            continue
        if fn is tls_port and not args.tls_port:
            continue
        if mode == "implicit" and not args.tls_port:
            continue
        if fn is rcpt_local and not getattr(args, "dest_port", None):
            continue
        if fn in (data_too_big, bdat_too_big, timeout, timeout_data) \
                and not args.local_port:
            continue
        todo.append(Case(name, desc, fn, args))
    return todo


def run_cases(cases, jobs=8):
    """Run Case objects in parallel threads (slow cases, such as the error
    sleeps, overlap with the rest); returns them in the same order."""
    if not cases:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as ex:
        return list(ex.map(lambda k: k.run(), cases))


def make_args(**kw):
    """An args namespace for select_cases() without the command line."""
    ns = argparse.Namespace(host="127.0.0.1", port=None, tls_port=None,
                            local_port=None, dest_port=None, mode="plain",
                            credentials="mixed")
    for key, v in kw.items():
        setattr(ns, key, v)
    return ns


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-port", type=int)
    ap.add_argument("--local-port", type=int)
    ap.add_argument("--dest-port", type=int,
                    help="instance whose mydestination holds mail.example.com")
    ap.add_argument("--mode", choices=ALL_MODES, default="plain")
    ap.add_argument("--credentials", choices=("mixed", "good", "wrong"), default="mixed")
    ap.add_argument("--kind", default="", help="normal,creds,wrong (default: all)")
    ap.add_argument("--out", default="-")
    ap.add_argument("--only", default="")
    ap.add_argument("--jobs", type=int, default=8)
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    kinds = set(filter(None, args.kind.split(",")))
    done = run_cases(select_cases(args, kinds, only), args.jobs)
    out = sys.stdout if args.out == "-" else open(args.out, "w")
    out.write("# Replies of %s, recorded by tests/persona/record.py\n" %
              "Postfix 3.7.11 (Debian 12), myhostname=mail.example.com")
    out.write("# mode=%s credentials=%s\n" % (args.mode, args.credentials))
    out.write("# C: client bytes (escaped)   S: one server reply line\n\n")
    for k in done:
        out.write("=== %s: %s\n" % (k.name, k.desc))
        for ln in k.lines:
            out.write(ln + "\n")
        out.write("\n")
    if out is not sys.stdout:
        out.close()


if __name__ == "__main__":
    main()
