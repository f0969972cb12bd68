"""SMTP capture core, plain text: smtplib and raw sockets against the real daemon."""

import base64
import errno
import hashlib
import json
import os
import re
import smtplib
import socket
import time
import unittest

from harness import (CRLF, HOST, HOSTNAME, SENSOR, Collector, CollectorTestCase,
                     SMTPRaw, dot_stuff, free_port, lean_asan_env, queue_id, sha256_hex,
                     under_valgrind, with_config)

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
QID_RE = re.compile(r"^[0-9A-Za-z]{8,20}$")


def queue_id_from_line(line):
    return line.rsplit(" ", 1)[1]


def simple_body(tag="hello"):
    return (b"From: sender@example.org\r\nTo: rcpt@example.net\r\nSubject: " + tag.encode()
            + b"\r\n\r\nbody of " + tag.encode() + b"\r\n")


class Commands(CollectorTestCase):
    """The greeting, EHLO's keywords, command order and state errors."""

    def test_banner_and_ehlo_keywords(self):
        cl = self.c.connect("smtp", banner=False)
        self._clients.append(cl)
        b = cl.banner()
        self.assertEqual(b.code, 220)
        self.assertTrue(b.lines[0].startswith(HOSTNAME + " ESMTP"), b)
        r = cl.ehlo()
        self.assertEqual(r.code, 250)
        self.assertEqual(r.lines[0], HOSTNAME)
        kw = [l.split(" ")[0].upper() for l in r.lines[1:]]
        for k in ("PIPELINING", "SIZE", "STARTTLS", "AUTH", "ENHANCEDSTATUSCODES", "8BITMIME",
                  "SMTPUTF8", "CHUNKING"):
            self.assertIn(k, kw, r)
        size = [l for l in r.lines if l.upper().startswith("SIZE ")]
        # a stock Postfix: message_size_limit = 10240000 (postconf -d)
        self.assertEqual(size, ["SIZE 10240000"], r)
        auth = [l for l in r.lines if l.upper().startswith("AUTH ")][0].split()[1:]
        for m in ("PLAIN", "LOGIN", "CRAM-MD5"):
            self.assertIn(m, auth)
        self.assertEqual(cl.cmd("QUIT").code, 221)
        self.assertTrue(cl.wait_closed())

    def test_rset_and_state_errors(self):
        cl = self.client()
        cl.ehlo()
        self.assertEqual(cl.cmd("RCPT TO:<a@example.net>").first, "503 5.5.1 Error: need MAIL command")
        self.assertEqual(cl.cmd("DATA").code, 503)
        cl.expect("MAIL FROM:<a@example.org>", 250)
        self.assertEqual(cl.cmd("MAIL FROM:<a@example.org>").code, 503)     # nested
        self.assertEqual(cl.cmd("DATA").code, 554)                            # no valid recipients
        self.assertEqual(cl.cmd("RSET").code, 250)
        self.assertEqual(cl.cmd("RCPT TO:<a@example.net>").code, 503)
        self.assertEqual(cl.cmd("NOOP").code, 250)
        self.assertEqual(cl.cmd("VRFY postmaster").code // 100, 2)
        # Postfix has no HELP (502); the original's "250 HELP" was a fingerprint
        self.assertNotEqual(cl.cmd("HELP").first, "250 HELP")
        self.assertEqual(cl.cmd("BOGUS command").first, "500 5.5.2 Error: command not recognized")
        self.assertEqual(cl.cmd("QUIT").code, 221)

    def test_mail_without_helo(self):
        # Postfix's default smtpd_helo_required = no
        cl = self.client()
        body = simple_body("no helo")
        _, qid = self.send_mail(body, client=cl)
        rec, _ = self.assert_stored(body, qid)
        self.assertIn(rec["helo"], ("", None))

    def test_helo_then_mail(self):
        cl = self.client()
        r = cl.cmd("HELO old.client")
        self.assertEqual(r.code, 250)
        self.assertEqual(r.lines, [HOSTNAME])
        body = simple_body("helo")
        _, qid = self.send_mail(body, client=cl)
        self.assertEqual(self.c.journal_record(qid)["helo"], "old.client")

    def test_forbidden_command_closes(self):
        # Postfix: a header-like or non-letter command gets 221 and the connection is closed
        for line in (b"Subject: hi", b"\x16\x03\x01 not a command", b"GET / HTTP/1.0"):
            cl = self.client()
            r = cl.cmd(line)
            self.assertEqual(r.code, 221, (line, r))
            self.assertTrue(cl.wait_closed(), line)


class Events(CollectorTestCase):
    """The JSON events and the stored copy of each mail (sha256, queue ids, valid JSON)."""

    def test_smtplib_plain_mail_and_events(self):
        body = simple_body("smtplib")
        s = smtplib.SMTP(HOST, self.c.ports["smtp"], local_hostname="client.example",
                         timeout=10 * self.slow)
        try:
            code, _ = s.ehlo()
            self.assertEqual(code, 250)
            src_port = s.sock.getsockname()[1]
            refused = s.sendmail("sender@example.org", ["a@example.net", "b@example.com"], body)
            self.assertEqual(refused, {})
        finally:
            s.quit()
        ev = self.c.wait_event("fosr.mail.received", lambda e: e.get("src_port") == src_port)
        sha = sha256_hex(body)
        self.assertEqual(ev["sha256"], sha)
        self.assertEqual(ev["size"], len(body))
        self.assertEqual(ev["mail_from"], "sender@example.org")
        self.assertEqual(ev["rcpt_to"], ["a@example.net", "b@example.com"])
        self.assertRegex(ev["queue_id"], QID_RE)
        self.assertEqual(self.c.message_bytes(sha), body)
        rec = self.c.journal_record(ev["queue_id"])
        self.assertEqual(rec["sha256"], sha)
        self.assertEqual(rec["size"], len(body))
        self.assertEqual(rec["src_ip"], HOST)
        self.assertEqual(rec["src_port"], src_port)
        self.assertEqual(rec["dst_ip"], HOST)
        self.assertEqual(rec["dst_port"], self.c.ports["smtp"])
        self.assertEqual(rec["listener"], "smtp")
        self.assertEqual(rec["helo"], "client.example")
        self.assertIsNone(rec["tls"])
        self.assertIsNone(rec["auth"])
        self.assertEqual(rec["mail_from"], "sender@example.org")
        self.assertEqual(rec["rcpt_to"], ["a@example.net", "b@example.com"])
        self.assertEqual(rec["session"], ev["session"])
        self.assertIsInstance(rec["anomalies"], list)
        self.assertIn("outcome", rec)
        self.assertIn("time", rec)
        closed = self.c.wait_event("fosr.session.closed", lambda e: e.get("src_port") == src_port)
        self.assertIsInstance(closed["duration_ms"], int)
        self.assertGreaterEqual(closed["duration_ms"], 0)

    def test_event_common_fields(self):
        cl, qid = self.send_mail(simple_body("fields"))
        port = cl.local_port
        cl.cmd("QUIT")
        self.c.wait_event("fosr.session.closed", lambda e: e.get("src_port") == port)
        evs = self.c.session_events(port)
        ids = [e["eventid"] for e in evs]
        self.assertEqual(ids[0], "fosr.session.connect", ids)
        self.assertIn("fosr.mail.received", ids)
        # sinks (relay decisions, ...) may report after the session closed
        self.assertEqual(ids.count("fosr.session.closed"), 1, ids)
        self.assertLess(ids.index("fosr.mail.received"), ids.index("fosr.session.closed"), ids)
        sessions = {e["session"] for e in evs}
        self.assertEqual(len(sessions), 1, evs)
        for e in evs:
            self.assertRegex(e["timestamp"], TS_RE)
            self.assertEqual(e["src_ip"], HOST)
            self.assertEqual(e["src_port"], port)
            self.assertEqual(e["dst_ip"], HOST)
            self.assertEqual(e["dst_port"], self.c.ports["smtp"])
            self.assertEqual(e["protocol"], "smtp")
            self.assertEqual(e["sensor"], SENSOR)
            self.assertIsInstance(e["session"], str)
        for e in self.c.events(strict=True):
            pass

    def test_event_written_before_its_reply(self):
        # Log lines are gathered per loop pass; the replies of the pass go out
        # only after them, so the mail.received event of a 250 is in the file
        # the moment the client reads that 250 (no waiting here).
        cl = None
        for i in range(40):
            body = simple_body("ordered %d" % i)
            if cl is None:
                cl, qid = self.send_mail(body)
            else:
                _, qid = self.send_mail(body, client=cl)
            got = [e for e in self.c.events()
                   if e.get("eventid") == "fosr.mail.received" and e.get("queue_id") == qid]
            self.assertEqual(len(got), 1, "mail %d: event of %s not yet written" % (i, qid))

    def test_sha256_everywhere_and_queue_ids_unique(self):
        qids = set()
        cl = None
        for i in range(3):
            body = simple_body("msg %d" % i)
            if cl is None:
                cl, qid = self.send_mail(body)
            else:
                _, qid = self.send_mail(body, client=cl)
            self.assertNotIn(qid, qids)
            qids.add(qid)
            self.assert_stored(body, qid)
        for sha, data in self.c.messages().items():
            self.assertEqual(hashlib.sha256(data).hexdigest(), sha)

    def test_same_content_twice_stored_once_recorded_twice(self):
        body = simple_body("duplicate")
        cl, q1 = self.send_mail(body)
        _, q2 = self.send_mail(body, client=cl)
        self.assertNotEqual(q1, q2)
        self.assertEqual(list(self.c.messages()), [sha256_hex(body)])
        recs = [r for r in self.c.journal() if r.get("sha256") == sha256_hex(body)]
        self.assertEqual(sorted(r["queue_id"] for r in recs), sorted([q1, q2]))

    def test_invalid_utf8_keeps_logs_valid_json(self):
        cl = self.client()
        helo = b"\xff\xfe\xc3\x28.\"quote\\back\x7f"
        if cl.cmd(b"EHLO " + helo).code != 250:     # Postfix may refuse bad UTF-8 (500)
            cl.ehlo("fallback.example")
        r = cl.cmd(b"MAIL FROM:<\xff\xc0\xaf\"\\@ex\xe9mple.org>")
        if r.code == 250:
            cl.cmd(b"RCPT TO:<\xed\xa0\x80@\xf4\x90\x80\x80.example>")
            cl.cmd(b"RCPT TO:<ok@example.net>")
            cl.cmd(b"DATA")
            cl.send(b"Subject: 8bit envelope\r\n\r\nx\r\n.\r\n")
            cl.reply()
        # a verb starting with a letter (a non-letter start is Postfix's 221 + close)
        cl.cmd(b"B\xffOGUS \xc3\x00\x01\x1b[31m")
        cl.expect(b"RSET", 250)
        cl.expect(b"MAIL FROM:<a@example.org>", 250)
        cl.expect(b"RCPT TO:<b@example.net>", 250)
        body = b"Subject: \xff\xfe\r\n\r\n\x00\x01\xc3\x28\r\n"
        qid = queue_id(cl.data(body))
        cl.cmd("QUIT")
        port = cl.local_port
        self.c.wait_event("fosr.session.closed", lambda e: e.get("src_port") == port)
        self.c.events(strict=True)      # every line: valid UTF-8, valid JSON
        self.c.journal(strict=True)
        rec, _ = self.assert_stored(body, qid)
        self.assertIsInstance(rec["helo"], str)


class MessageContent(CollectorTestCase):
    """What DATA carries is stored byte for byte: dot stuffing, 8-bit, UTF-8, bare LF, NUL, long lines."""

    def test_dot_stuffing_round_trip(self):
        body = (b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n. \r\n"
                b"middle.dot\r\n...\r\nlast\r\n")
        # smtplib does the stuffing itself
        s = smtplib.SMTP(HOST, self.c.ports["smtp"], timeout=10 * self.slow)
        try:
            s.sendmail("a@example.org", ["b@example.net"], body)
        finally:
            s.quit()
        sha = sha256_hex(body)
        self.c.wait_event("fosr.mail.received", lambda e: e.get("sha256") == sha)
        self.assertEqual(self.c.message_bytes(sha), body)
        # and by hand, a message that is only a '.' line
        body2 = b".\r\n"
        _, qid = self.send_mail(body2)
        self.assert_stored(body2, qid)

    def test_empty_message(self):
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<>", 250)
        cl.expect("RCPT TO:<x@example.net>", 250)
        cl.expect("DATA", 354)
        cl.send(b".\r\n")
        qid = queue_id(cl.reply())
        self.assert_stored(b"", qid)
        self.assertEqual(self.c.journal_record(qid)["mail_from"], "")

    def test_8bit_body(self):
        body = (b"Subject: =?utf-8?q?8bit?=\r\nContent-Type: text/plain; charset=latin1\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n\r\n"
                + bytes(range(0x80, 0x100)) + b"\r\n" + "grüße €\r\n".encode("utf-8")
                + b"\xff\xfe invalid utf-8 \xc3\x28\r\n")
        cl, qid = self.send_mail(body, mail_params=" BODY=8BITMIME")
        rec, ev = self.assert_stored(body, qid)
        self.assertIn("8bit", rec["anomalies"])

    def test_smtputf8_addresses(self):
        cl = self.client()
        cl.ehlo()
        frm = "jörg@exämple.org"
        cl.expect(("MAIL FROM:<%s> SMTPUTF8" % frm), 250)
        cl.expect("RCPT TO:<пользователь@пример.рф>", 250)
        body = "Subject: utf8\r\n\r\nпривет\r\n".encode()
        qid = queue_id(cl.data(body))
        rec, ev = self.assert_stored(body, qid)
        self.assertEqual(rec["mail_from"], frm)
        self.assertEqual(rec["rcpt_to"], ["пользователь@пример.рф"])

    def test_bare_lf_nul_long_line_recorded(self):
        long_line = b"x" * 5000
        body = (b"Subject: anomalies\r\n\r\nbare\nlf\r\nnul\x00byte\r\n" + long_line + b"\r\nend\r\n")
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<a@example.org>", 250)
        cl.expect("RCPT TO:<b@example.net>", 250)
        qid = queue_id(cl.data(body))
        rec, ev = self.assert_stored(body, qid)
        for a in ("bare_lf", "nul", "long_line"):
            self.assertIn(a, rec["anomalies"], rec)

    def test_long_line_boundary_and_clean_body(self):
        # RFC 5321: 998 octets before CRLF is the most a line may hold.  The
        # body scanner copies plain runs in bulk; the boundary stays exact,
        # whatever the split between the bulk path and the byte path.
        cases = [(b"x" * 998, False), (b"x" * 999, True), (b"\t" * 999, True),
                 (b"a\r\n" + b"y" * 998 + b"\r\nz", False),
                 (b"a\r\n" + b"y" * 999 + b"\r\nz", True),
                 (b"." * 10 + b"w" * 989, True)]
        cl = self.client()
        cl.ehlo()
        for text, long_line in cases:
            body = text + b"\r\n"
            cl.expect("MAIL FROM:<a@example.org>", 250)
            cl.expect("RCPT TO:<b@example.net>", 250)
            qid = queue_id(cl.data(body))
            rec, _ = self.assert_stored(body, qid)
            self.assertEqual("long_line" in rec["anomalies"], long_line, (len(text), rec))
            self.assertNotIn("8bit", rec["anomalies"])
            self.assertNotIn("bare_cr", rec["anomalies"])


class Pipelining(CollectorTestCase):
    """Pipelined commands answered in order, a client's half-close, parallel sessions."""

    def test_pipelining_replies_in_order(self):
        cl = self.client()
        r = cl.ehlo()
        self.assertIn("PIPELINING", r.lines)
        cl.send(b"MAIL FROM:<p@example.org>\r\nRCPT TO:<one@example.net>\r\n"
                b"RCPT TO:<two@example.net>\r\nDATA\r\n")
        codes = [cl.reply() for _ in range(4)]
        self.assertEqual([r.code for r in codes], [250, 250, 250, 354], codes)
        self.assertTrue(codes[0].lines[0].startswith("2.1.0"), codes)
        self.assertTrue(codes[1].lines[0].startswith("2.1.5"), codes)
        body = simple_body("pipelined")
        cl.send(body + b".\r\n")
        qid = queue_id(cl.reply())
        rec, _ = self.assert_stored(body, qid)
        self.assertEqual(rec["rcpt_to"], ["one@example.net", "two@example.net"])
        # a whole second transaction and QUIT in one write after the 250
        body2 = simple_body("pipelined 2")
        cl.send(b"RSET\r\nMAIL FROM:<q@example.org>\r\nRCPT TO:<three@example.net>\r\nDATA\r\n")
        self.assertEqual([cl.reply().code for _ in range(4)], [250, 250, 250, 354])
        cl.send(body2 + b".\r\nQUIT\r\n")
        qid2 = queue_id(cl.reply())
        self.assertEqual(cl.reply().code, 221)
        self.assertTrue(cl.wait_closed())
        self.assert_stored(body2, qid2)

    def _half_close(self, tail, tag):
        """Send a transaction whose end ('.' + tail) is followed at once by
        shutdown(SHUT_WR); return every reply line the server still sends."""
        sock = socket.create_connection((HOST, self.c.ports["smtp"]), 10 * self.slow)
        try:
            f = sock.makefile("rb")

            def reply():
                lines = []
                while True:
                    l = f.readline()
                    if not l:
                        return lines
                    lines.append(l.decode().rstrip("\r\n"))
                    if l[3:4] != b"-":
                        return lines
            self.assertTrue(reply()[0].startswith("220"))
            sock.sendall(b"EHLO half.example\r\n")
            reply()
            sock.sendall(b"MAIL FROM:<h@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n")
            self.assertEqual([reply()[0][:3] for _ in range(3)], ["250", "250", "354"])
            body = simple_body(tag)
            sock.sendall(body + b".\r\n" + tail)
            sock.shutdown(socket.SHUT_WR)
            out = []
            while True:
                r = reply()
                if not r:
                    return out, body
                out.append(r[-1])
        finally:
            sock.close()

    def test_half_close_after_dot_and_quit_still_answered(self):
        # The client's EOF arrives while the message is being committed: the
        # 250 and the QUIT's 221 still go out (as from Postfix), then the end.
        out, body = self._half_close(b"QUIT\r\n", "half-close quit")
        self.assertEqual(len(out), 2, out)
        self.assertTrue(out[0].startswith("250 2.0.0 Ok: queued as "), out)
        self.assertTrue(out[1].startswith("221"), out)
        self.assert_stored(body, queue_id_from_line(out[0]))

    def test_half_close_after_dot_gets_250(self):
        out, body = self._half_close(b"", "half-close")
        self.assertEqual(len(out), 1, out)
        self.assertTrue(out[0].startswith("250 2.0.0 Ok: queued as "), out)
        self.assert_stored(body, queue_id_from_line(out[0]))
        ev = self.c.wait_event("fosr.session.closed", lambda e: e.get("mails") == 1
                               and e.get("reason") == "eof")
        self.assertEqual(ev["reason"], "eof")

    def test_pipelined_errors_keep_order(self):
        cl = self.client()
        cl.ehlo()
        cl.send(b"RCPT TO:<x@example.net>\r\nNOOP\r\nMAIL FROM:<a@example.org>\r\n"
                b"MAIL FROM:<b@example.org>\r\nDATA\r\nNOOP\r\n")
        got = [cl.reply() for _ in range(6)]
        # Postfix: need MAIL, ok, ok, nested MAIL, no valid recipients, ok
        self.assertEqual([r.code for r in got], [503, 250, 250, 503, 554, 250], got)
        self.assertEqual(got[0].first, "503 5.5.1 Error: need MAIL command")

    def test_many_sessions_in_parallel(self):
        clients = [self.client() for _ in range(20)]
        for cl in clients:
            cl.send(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        bodies = []
        for i, cl in enumerate(clients):
            self.assertEqual([cl.reply().code for _ in range(4)], [250, 250, 250, 354])
            b = simple_body("parallel %d" % i)
            bodies.append(b)
            cl.send(b)
        for cl in clients:
            cl.send(b".\r\n")
        for cl, b in zip(clients, bodies):
            self.assert_stored(b, queue_id(cl.reply()))


class Bdat(CollectorTestCase):
    """CHUNKING: BDAT in one or several chunks, DATA after BDAT, BDAT over the size limit."""

    def test_bdat_single_chunk(self):
        cl = self.client()
        r = cl.ehlo()
        self.assertIn("CHUNKING", r.lines)
        cl.expect("MAIL FROM:<b@example.org>", 250)
        cl.expect("RCPT TO:<c@example.net>", 250)
        # BDAT is not dot-stuffed: a leading dot stays as it is
        body = b"Subject: bdat\r\n\r\n.dot stays\r\nno final crlf"
        cl.send(b"BDAT %d LAST\r\n" % len(body) + body)
        qid = queue_id(cl.reply())
        self.assert_stored(body, qid)

    def test_bdat_two_chunks(self):
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<b@example.org>", 250)
        cl.expect("RCPT TO:<c@example.net>", 250)
        c1 = b"Subject: bdat 2\r\n\r\nfirst chunk\r\n"
        c2 = b"second chunk\r\n.\r\n"
        cl.send(b"BDAT %d\r\n" % len(c1) + c1)
        r = cl.reply()
        self.assertEqual(r.code, 250, r)
        cl.send(b"BDAT %d LAST\r\n" % len(c2) + c2)
        qid = queue_id(cl.reply())
        self.assert_stored(c1 + c2, qid)
        # pipelined BDAT chunks, including an empty LAST
        cl.expect("MAIL FROM:<b@example.org>", 250)
        cl.expect("RCPT TO:<c@example.net>", 250)
        c3 = b"Subject: bdat 3\r\n\r\n" + b"y" * 100000 + b"\r\n"
        cl.send(b"BDAT %d\r\n" % len(c3) + c3 + b"BDAT 0 LAST\r\n")
        self.assertEqual(cl.reply().code, 250)
        qid = queue_id(cl.reply())
        self.assert_stored(c3, qid)

    def test_data_after_bdat_refused(self):
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<b@example.org>", 250)
        cl.expect("RCPT TO:<c@example.net>", 250)
        cl.send(b"BDAT 5\r\nhello")
        self.assertEqual(cl.reply().code, 250)
        r = cl.cmd("DATA")
        self.assertEqual(r.code // 100, 5, r)
        self.assertEqual(cl.cmd("NOOP").code, 250)

    @with_config({"limits": {"message_size": 10000}})
    def test_oversize_bdat(self):
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<big@example.org>", 250)
        cl.expect("RCPT TO:<c@example.net>", 250)
        chunk = b"w" * 8000
        cl.send(b"BDAT 8000\r\n" + chunk)
        self.assertIn(cl.reply().code, (250, 552))
        cl.send(b"BDAT 8000 LAST\r\n" + chunk)
        r = cl.reply()
        self.assertEqual(r.code, 552, r)
        self.assertTrue(r.lines[0].startswith("5.3.4"), r)
        self.assertEqual(self.c.messages(), {})
        self.assertEqual(cl.cmd("RSET").code, 250)
        self.assertEqual(cl.cmd("NOOP").code, 250)


class MessageLimits(CollectorTestCase):
    """Recipient and size limits, and a large message streamed to disk."""

    @with_config({"limits": {"recipients": 5}})
    def test_too_many_recipients(self):
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<m@example.org>", 250)
        for i in range(5):
            cl.expect("RCPT TO:<r%d@example.net>" % i, 250)
        r = cl.cmd("RCPT TO:<r5@example.net>")
        self.assertEqual(r.code, 452, r)
        self.assertTrue(r.lines[0].startswith("4.5.3"), r)
        body = simple_body("many rcpts")
        qid = queue_id(cl.data(body))
        rec, ev = self.assert_stored(body, qid)
        self.assertEqual(rec["rcpt_to"], ["r%d@example.net" % i for i in range(5)])

    def test_thousand_recipients_default(self):
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<m@example.org>", 250)
        cl.send(b"".join(b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(1001)))
        codes = [cl.reply().code for _ in range(1001)]
        self.assertEqual(codes[:1000], [250] * 1000)
        self.assertEqual(codes[1000], 452)
        body = simple_body("1000 rcpts")
        qid = queue_id(cl.data(body))
        self.assertEqual(len(self.c.journal_record(qid)["rcpt_to"]), 1000)

    @with_config({"limits": {"message_size": 10000}})
    def test_oversize_552_after_data_connection_usable(self):
        cl = self.client()
        r = cl.ehlo()
        self.assertIn("SIZE 10000", r.lines)
        cl.expect("MAIL FROM:<big@example.org>", 250)
        cl.expect("RCPT TO:<c@example.net>", 250)
        cl.expect("DATA", 354)
        big = b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 30
        cl.send(big)
        # nothing is answered before the end of the data
        self.assertEqual(cl.pending(0.5), b"")
        cl.send(b".\r\n")
        r = cl.reply()
        # Postfix's words after DATA (the MAIL SIZE= refusal is "Message size exceeds fixed limit")
        self.assertEqual(r.first, "552 5.3.4 Error: message file too big")
        self.assertEqual(self.c.messages(), {})
        self.assertEqual(self.c.journal(), [])
        # the transaction is over
        self.assertEqual(cl.cmd("RCPT TO:<c@example.net>").code, 503)
        # the connection is still usable
        body = simple_body("small after big")
        _, qid = self.send_mail(body, client=cl)
        self.assert_stored(body, qid)
        # SIZE= over the limit is refused at MAIL
        r = cl.cmd("MAIL FROM:<big@example.org> SIZE=20000")
        self.assertEqual(r.first, "552 5.3.4 Message size exceeds fixed limit")
        self.assertEqual(cl.cmd("NOOP").code, 250)

    # a limit above the stock 10240000 so that 30 MiB is accepted: what is
    # measured is the memory a large message costs while it is streamed.
    # The analysis is off: its worker, woken by the commit before the 250,
    # reads the mail into memory (up to analysis raw_max, 32 MiB; about 3 x
    # that at its peak, by design), so VmHWM after the 250 held it or not
    # depending on how far the worker had got when the test read it.
    @with_config({"limits": {"message_size": 32 * 1024 * 1024},
                  "analysis": {"enabled": False}}, env=lean_asan_env())
    def test_30mib_message_streamed(self):
        size_target = 30 * 1024 * 1024
        line = 76
        nlines = size_target // (line + 2)
        raw = os.urandom(nlines * line * 3 // 4)
        b64 = base64.b64encode(raw)        # no '.', no CR/LF
        lines = [b64[i:i + line] for i in range(0, nlines * line, line)]
        body = b"Subject: thirty\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
        self.assertGreaterEqual(len(body), 30 * 1000 * 1000)
        hwm_before = self.c.status("VmHWM")
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<huge@example.org> SIZE=%d" % len(body), 250)
        cl.expect("RCPT TO:<c@example.net>", 250)
        cl.expect("DATA", 354)
        cl.sock.settimeout(120)
        view = memoryview(body)
        for i in range(0, len(body), 1 << 20):
            cl.sock.sendall(view[i:i + (1 << 20)])
        cl.send(b".\r\n")
        qid = queue_id(cl.reply())
        hwm_kb = self.c.status("VmHWM")
        sha = hashlib.sha256(body).hexdigest()
        self.assertEqual(self.c.journal_record(qid)["sha256"], sha)
        with open(self.c.message_path(sha), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), sha)
        limit_kb = 30 * 1024
        if under_valgrind():
            pass    # memcheck's shadow memory is not the daemon's footprint
        elif self.slow > 1:
            # Under ASan the baseline RSS is the sanitizer's: judge the growth.
            self.assertLess(hwm_kb - hwm_before, limit_kb,
                            "RSS grew by %d kB while receiving %d bytes" % (hwm_kb - hwm_before, len(body)))
        else:
            self.assertLess(hwm_kb, limit_kb, "VmHWM %d kB for a %d-byte message" % (hwm_kb, len(body)))


class DualStack(CollectorTestCase):
    """inet_protocols = all: one port on IPv4 and on a v6-only IPv6 socket, each
    client address in the events as its own family (no ::ffff: prefix).
    Loopback only: 127.0.0.1 and [::1] stand in for the default 0.0.0.0 and [::]."""

    autostart = False

    @staticmethod
    def port_free_on_both():
        """A port free on 127.0.0.1 (below the ephemeral range) and on ::1
        too, or None when ::1 cannot be bound here (IPv6 off: machine state,
        not the daemon's)."""
        for _ in range(50):
            port = free_port()
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s6.bind(("::1", port))
                return port
            except OSError as e:
                if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    return None
            finally:
                s6.close()
        return None

    @unittest.skipUnless(socket.has_ipv6, "no IPv6 in Python")
    def test_ipv4_and_ipv6_on_one_port(self):
        port = self.port_free_on_both()
        if port is None:
            self.skipTest("no IPv6 loopback (::1) on this machine")
        self.c.cleanup()
        self.c = Collector(self.tmpdir, listeners=[
            {"name": "smtp", "port": port, "tls": "starttls"},
            {"name": "smtp6", "address": "[::1]", "port": port, "tls": "starttls"}])
        self.c.start()
        seen = {}
        for host in ("127.0.0.1", "::1"):
            cl = SMTPRaw(host, port, timeout=10 * self.slow)
            self._clients.append(cl)
            self.assertEqual(cl.banner().code, 220)
            self.assertEqual(cl.cmd("EHLO client.example").code, 250)
            seen[host] = cl.local_port
            self.assertEqual(cl.cmd("QUIT").code, 221)
        for host, src_port in seen.items():
            e = self.c.wait_event("fosr.session.connect",
                                  lambda e, p=src_port: e.get("src_port") == p)
            self.assertEqual(e["src_ip"], host, e)
            self.assertEqual(e["dst_ip"], host, e)
            self.assertEqual(e["dst_port"], port, e)


class Maildir(CollectorTestCase):

    @with_config({"spool": {"maildir": "{tmp}/Maildir"}})
    def test_maildir_new(self):
        body = simple_body("maildir")
        _, qid = self.send_mail(body)
        self.assert_stored(body, qid)
        new = os.path.join(self.tmpdir, "Maildir", "new")
        files = os.listdir(new)
        self.assertEqual(len(files), 1, files)
        with open(os.path.join(new, files[0]), "rb") as f:
            self.assertEqual(f.read(), body)
        for sub in ("cur", "tmp"):
            self.assertTrue(os.path.isdir(os.path.join(self.tmpdir, "Maildir", sub)))


class SpoolQuota(CollectorTestCase):

    @with_config({"spool": {"max_bytes": 4096}})
    def test_quota_gives_temporary_failure_never_250(self):
        cl = self.client()
        cl.ehlo()
        acked = []
        refused = None
        for i in range(6):
            body = b"Subject: quota %d\r\n\r\n" % i + os.urandom(1500).hex().encode() + b"\r\n"
            r = cl.cmd("MAIL FROM:<q@example.org>")
            if r.code == 250:
                r = cl.cmd("RCPT TO:<r@example.net>")
            if r.code == 250:
                r = cl.cmd("DATA")
                if r.code == 354:
                    cl.send(body + b".\r\n")
                    r = cl.reply()
            if r.code == 250:
                acked.append((body, queue_id(r)))
                continue
            refused = (body, r)
            cl.cmd("RSET")
            break
        self.assertIsNotNone(refused, "a 12 kB spool over a 4 kB quota accepted everything")
        self.assertIn(refused[1].code, (451, 452), refused[1])
        self.assertFalse(os.path.exists(self.c.message_path(sha256_hex(refused[0]))))
        for body, qid in acked:
            self.assert_stored(body, qid)
        self.assertEqual(len(self.c.journal()), len(acked))


if __name__ == "__main__":
    unittest.main(verbosity=2)
