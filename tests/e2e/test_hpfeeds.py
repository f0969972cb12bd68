"""hpfeeds end to end: mail in over SMTP, payload out at a broker (tests/broker/hpfeeds_broker.py).

The test broker records every publish it accepted (--record) and logs one line
per event on stderr (connect, auth-ok, auth-failed, publish, double-subscribe).
"""

import base64
import email
import email.policy
import email.utils
import http.client
import json
import os
import re
import shutil
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (HOST, HOSTNAME, Collector, free_port, sha256_hex,
                     with_config)
from fixtures.hpfeeds import (BROKER, Broker, CHAN, PY, HpfeedsCase, broker_users, feed_cfg,
                              mail, make_ca)
from fixtures.spamtrap import RECEIVED_MANY, RECEIVED_ONE, spamtrap_sender

MAX_PAYLOAD = 1048576 - 2 - len("writer") - len(CHAN)


class Publish(HpfeedsCase):

    def test_mail_reaches_broker_with_seed_payload(self):
        self.start()
        body = mail(1)
        self.send_mail(body)
        sha = sha256_hex(body)
        self.wait_for(lambda: sha in self.broker.shas(), 10, "publish of the mail")
        p = [p for p in self.broker.payloads() if p["sha256"] == sha][0]
        # Exactly the seed's two keys by default, msg = the mail as text.
        self.assertEqual(sorted(p.keys()), ["msg", "sha256"])
        self.assertEqual(p["msg"].encode("utf-8"), body)
        ident = self.broker.published()[0][0]
        self.assertEqual(ident, "writer")
        self.assertIn("auth-ok", self.broker.log())
        self.assertNotIn("double-subscribe", self.broker.log())

    def test_subscriber_tool_verifies(self):
        self.start()
        sub_cfg = os.path.join(self.tmpdir, "reader.yml")
        with open(sub_cfg, "w") as f:
            f.write('broker: "%s"\nport: %d\nidentity: "reader"\nsecret: "readersecret"\n'
                    'channels:\n  - "%s"\n' % (HOST, self.broker.port, CHAN))
        out = os.path.join(self.tmpdir, "sub.out")
        with open(out, "wb") as o, open(os.path.join(self.tmpdir, "sub.err"), "wb") as e:
            sub = subprocess.Popen([self.c.binary, "--feed-subscribe", "-f", sub_cfg],
                                   stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        try:
            # subscribed, not only logged in: a publish before the broker
            # has the subscription is not fanned out to it (a fixed 0.3 s
            # after the login stood for this)
            self.wait_for(lambda: re.search(r"(?m)^sub .*ident=reader chan=%s$" % re.escape(CHAN),
                                            self.broker.log()),
                          10, "subscriber subscribed")
            bodies = [mail(1), mail(2, b"\xff\xfe not utf-8 \xc3\r\n")]
            for b in bodies:
                self.send_mail(b)

            def lines():
                with open(out, "rb") as f:
                    return [json.loads(l) for l in f.read().splitlines() if l.strip()]
            self.wait_for(lambda: len(lines()) >= 2, 10, "two lines from the subscriber tool")
            got = {l["sha256"]: l for l in lines()}
            for b in bodies:
                line = got[sha256_hex(b)]
                self.assertTrue(line["verified"], line)
                self.assertEqual(line["channel"], CHAN)
                self.assertEqual(line["ident"], "writer")
        finally:
            os.kill(sub.pid, signal.SIGTERM)
            sub.wait(5)

    def test_non_utf8_mail(self):
        self.start()
        body = mail(3, b"caf\xe9 \xff\xfe\x80 \xc3\r\n\xf0\x9f\x98\x80 ok\r\n")
        self.send_mail(body)
        sha = sha256_hex(body)
        self.wait_for(lambda: sha in self.broker.shas(), 10, "publish")
        raw = [r for _, _, r in self.broker.published(CHAN) if json.loads(r)["sha256"] == sha][0]
        raw.decode("utf-8")     # the payload is valid UTF-8
        p = json.loads(raw)
        self.assertIn("\ufffd", p["msg"])
        self.assertIn("\U0001F600 ok", p["msg"])
        self.assertEqual(base64.b64decode(p["raw_b64"]), body)
        self.assertEqual(sha256_hex(base64.b64decode(p["raw_b64"])), sha)

    def test_big_mail_truncated(self):
        self.start()
        line = b"0123456789abcdef" * 4 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * (5 * 1024 * 1024 // len(line))
        self.send_mail(body)
        small = mail(4)
        self.send_mail(small)
        sha = sha256_hex(body)
        self.wait_for(lambda: {sha, sha256_hex(small)} <= self.broker.shas(), 20,
                      "publish of the big mail and the next one")
        raw = [r for _, _, r in self.broker.published(CHAN) if json.loads(r)["sha256"] == sha][0]
        self.assertLessEqual(len(raw), MAX_PAYLOAD)
        p = json.loads(raw)
        self.assertIs(p["truncated"], True)
        self.assertEqual(p["size"], len(body))
        self.assertTrue(body.startswith(p["msg"].encode()))
        self.assertGreater(len(p["msg"]), 200000)
        # The whole mail stays in the spool.
        self.assertEqual(self.c.message_bytes(sha), body)
        self.assertNotIn("malformed", self.broker.log())

    def test_max_recipients_worst_case_record_published_whole(self):
        """Every record the session can answer 250 for fits the journal readers' line:
        the most recipients the configuration allows (SMTP_RCPT_MAX, Postfix's
        smtpd_recipient_limit default), each of the longest path (2048 bytes),
        all C1 characters (2 bytes in, 6 out as \\u0080)."""
        rmax = 1000
        # One more than the maximum is refused by the configuration.
        over = Collector(self.tmpdir, config={"limits": {"recipients": rmax + 1}})
        p = subprocess.run([over.binary, "--check-config", "-c", over.config_path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertNotEqual(p.returncode, 0, "limits.recipients %d accepted" % (rmax + 1))
        self.start(feed={"metadata": True},
                   config={"limits": {"recipients": rmax, "line_length": 4096}})
        rcpts = []
        for i in range(rmax):
            r = b"%04d" % i + b"\xc2\x80" * 1017 + b"@x.example"
            self.assertEqual(len(r), 2048)
            rcpts.append(r)
        body = mail(7)
        cl = self.client("smtp")
        self.assertEqual(cl.ehlo("client.example").code, 250)
        self.assertEqual(cl.cmd("MAIL FROM:<s@example.org>").code, 250)
        # Pipelined: 1000 round trips are slow under ASan.
        cl.send(b"".join(b"RCPT TO:<" + r + b">\r\n" for r in rcpts))
        for i in range(rmax):
            self.assertEqual(cl.reply().code, 250, i)
        rep = cl.data(body)
        self.assertEqual(rep.code, 250, rep)
        sha = sha256_hex(body)
        self.wait_for(lambda: sha in self.broker.shas(), 60, "publish of the mail")
        rec = [r for r in self.c.journal() if r.get("sha256") == sha][0]
        self.assertEqual([x.encode() for x in rec["rcpt_to"]], rcpts)
        self.assertNotIn("not published", self.c.stderr_text())

    def test_two_channels(self):
        self.broker.users = ["writer:secret:%s,spam.copy:%s,spam.copy" % (CHAN, CHAN)]
        self.start(feed={"channels": [CHAN, "spam.copy"]})
        bodies = [mail(i) for i in range(5)]
        shas = set(self.send_many(bodies))
        self.wait_for(lambda: shas <= self.broker.shas(CHAN) and shas <= self.broker.shas("spam.copy"),
                      10, "both channels")
        self.assertNotIn("double-subscribe", self.broker.log())

    def test_metadata(self):
        self.start(feed={"metadata": True})
        body = mail(5)
        self.send_mail(body, mail_from="probe@example.org", rcpts=("a@example.net", "b@example.net"),
                       ehlo="helo.example")
        sha = sha256_hex(body)
        self.wait_for(lambda: sha in self.broker.shas(), 10, "publish")
        p = [p for p in self.broker.payloads() if p["sha256"] == sha][0]
        self.assertEqual(p["msg"].encode(), body)
        self.assertEqual(p["rcpt_to"], ["a@example.net", "b@example.net"])
        self.assertEqual(p["helo"], "helo.example")
        self.assertEqual(p["src_ip"], "127.0.0.1")
        # the client lookup's name (the shared fake DNS has no PTR: unknown)
        self.assertEqual((p["client_name"], p["client_name_status"]), ("unknown", "perm"))
        self.assertIn("sensor", p)

    def test_events_channel(self):
        self.broker.users = ["writer:secret:%s,spam.events:%s,spam.events" % (CHAN, CHAN)]
        self.start(feed={"events_channel": "spam.events"})
        body = mail(6)
        self.send_mail(body)
        sha = sha256_hex(body)

        def received():
            return [p for p in self.broker.payloads("spam.events")
                    if p.get("eventid") == "fosr.mail.received" and p.get("sha256") == sha]
        self.wait_for(lambda: received() and sha in self.broker.shas(), 10, "event and mail published")
        # Each event line of the log is published as it is.
        logged = [e for e in self.c.events() if e.get("eventid") == "fosr.mail.received"]
        self.assertIn(received()[0], logged)

    @broker_users("writer:secret:%s:" % CHAN, "reader:readersecret::%s" % CHAN)
    def test_identity_without_subscribe_right(self):
        # No echo possible: entries are confirmed by TCP acknowledgement.
        self.start()
        shas = set(self.send_many([mail(i) for i in range(20)]))
        self.wait_for(lambda: shas <= self.broker.shas(), 15, "all 20 published")
        cursor = os.path.join(self.c.spool_dir, "feed", CHAN.encode().hex() + ".cursor")
        size = os.path.getsize(self.c.journal_path)
        self.wait_for(lambda: os.path.exists(cursor) and int(open(cursor).read().split()[0]) == size, 10,
                      "cursor at the end of the journal")



class Subscriber:
    """A subscriber on the test broker (hpfeeds_broker.py --subscribe): every
    payload it receives, as bytes."""

    def __init__(self, case, ident="reader", secret="readersecret", chan=CHAN):
        self.case = case
        self.out = os.path.join(case.tmpdir, "subscriber.jsonl")
        self.f = open(self.out, "wb")
        self.proc = subprocess.Popen([PY, BROKER, "--subscribe", "--port", str(case.broker.port),
                                      "--ident", ident, "--secret", secret, "--chan", chan],
                                     stdout=self.f, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        case.wait_for(lambda: ("sub conn=" in case.broker.log() and
                               "ident=%s chan=%s" % (ident, chan) in case.broker.log()),
                      10, "subscriber subscribed")

    def payloads(self):
        out = []
        with open(self.out, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    o = json.loads(line)
                    if "payload_b64" in o:
                        out.append(base64.b64decode(o["payload_b64"]))
        return out

    def close(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(5)
        self.f.close()


class RawPayload(HpfeedsCase):
    """payload: raw, for the spamtrap-system backend: the .eml's bytes behind
    one Postfix Received header (received_header: false: the bytes alone)."""

    def start_raw(self, **feed):
        feed.setdefault("payload", "raw")
        self.start(feed=feed)
        self.sub = Subscriber(self)
        self.addCleanup(self.sub.close)

    def send_tls_auth(self, body, rcpts=("rcpt@example.net",), ehlo="helo.example"):
        cl = self.client("smtp")
        self.assertEqual(cl.ehlo(ehlo).code, 250)
        self.assertEqual(cl.starttls().code, 220)
        self.assertEqual(cl.ehlo(ehlo).code, 250)
        self.assertEqual(cl.cmd("AUTH PLAIN " + base64.b64encode(b"\0user\0pw").decode()).code, 235)
        _, qid = self.send_mail(body, rcpts=rcpts, client=cl)
        return qid

    def received(self, n=1, what="the raw payload at the subscriber"):
        self.wait_for(lambda: len(self.sub.payloads()) >= n, 15, what)
        return self.sub.payloads()

    def assert_confirmed(self):
        """The collector's own echo of the raw payload confirmed it: the cursor
        reaches the journal's end."""
        cursor = os.path.join(self.c.spool_dir, "feed", CHAN.encode().hex() + ".cursor")
        size = os.path.getsize(self.c.journal_path)
        self.wait_for(lambda: os.path.exists(cursor) and int(open(cursor).read().split()[0]) == size,
                      10, "cursor at the end of the journal")

    def test_raw_with_received_header(self):
        self.start_raw()
        body = mail(1)
        qid = self.send_tls_auth(body)
        p = self.received()[0]
        m = RECEIVED_ONE.match(p)
        self.assertIsNotNone(m, p[:400])
        self.assertEqual(m.group(1), b"helo.example")
        self.assertEqual(m.group(2), b"unknown")        # the fake DNS has no PTR
        self.assertEqual(m.group(3), b"127.0.0.1")
        self.assertEqual(m.group(4), HOSTNAME.encode())
        self.assertEqual(m.group(5), b"ESMTPSA")
        self.assertEqual(m.group(6).decode(), qid)
        self.assertEqual(m.group(7), b"rcpt@example.net")
        when = email.utils.parsedate_to_datetime(m.group(8).decode())
        self.assertLess(abs(when.timestamp() - time.time()), 120)
        # Postfix's mail_date(): day space-padded, +0000 (UTC)
        self.assertRegex(m.group(8).decode(),
                         r"^[A-Z][a-z]{2}, [ 1-3][0-9] [A-Z][a-z]{2} [0-9]{4} "
                         r"[0-9]{2}:[0-9]{2}:[0-9]{2} \+0000 \(UTC\)$")
        # The rest is the stored .eml, byte for byte.
        sha = sha256_hex(body)
        self.assertEqual(p[m.end():], self.c.message_bytes(sha))
        self.assertEqual(p[m.end():], body)
        self.assertNotEqual(sha256_hex(p), sha)
        # What the backend does with it: the email parser, the client from Received.
        msg = email.message_from_bytes(p, policy=email.policy.default)
        self.assertEqual(len(msg.get_all("received")), 1)
        self.assertEqual(msg["subject"], "hpfeeds test 1")
        self.assertEqual(msg.get_content().replace("\r\n", "\n"), "body 1\n")
        self.assertEqual(spamtrap_sender(p), "127.0.0.1")
        self.assertEqual([r for _, _, r in self.broker.published(CHAN)], [p])
        self.assert_confirmed()

    def test_raw_several_recipients_no_for(self):
        self.start_raw()
        body = mail(2)
        qid = self.send_tls_auth(body, rcpts=("a@example.net", "b@example.net"))
        p = self.received()[0]
        self.assertIsNone(RECEIVED_ONE.match(p), p[:400])
        m = RECEIVED_MANY.match(p)
        self.assertIsNotNone(m, p[:400])
        self.assertEqual(m.group(6).decode(), qid)
        self.assertNotIn(b"for <", p[:m.end()])
        email.utils.parsedate_to_datetime(m.group(7).decode())
        self.assertEqual(p[m.end():], body)
        self.assertEqual(spamtrap_sender(p), "127.0.0.1")

    def test_raw_without_received_header(self):
        self.start_raw(received_header=False)
        body = mail(3, b"\xff\xfe not utf-8\r\n")
        self.send_tls_auth(body)
        p = self.received()[0]
        self.assertEqual(p, body)
        self.assertEqual(sha256_hex(p), sha256_hex(body))
        self.assertTrue(os.path.exists(self.c.message_path(sha256_hex(p))))
        self.assert_confirmed()

    @broker_users("writer:secret:%s:" % CHAN, "reader:readersecret::%s" % CHAN)
    def test_raw_confirmed_without_subscribe_right(self):
        # No echo: confirmed by TCP acknowledgement (SIOCOUTQ), as the JSON form.
        self.start_raw()
        self.send_tls_auth(mail(4))
        self.received()
        self.assert_confirmed()

    def test_raw_over_the_frame_limit_published_truncated(self):
        self.start_raw()
        line = b"0123456789abcdef" * 4 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * (2 * 1024 * 1024 // len(line))
        qid = self.send_tls_auth(body)
        small = mail(5)
        self.send_tls_auth(small)
        got = self.received(2, "the big mail and the next one")
        p = got[0]
        m = RECEIVED_ONE.match(p)
        self.assertIsNotNone(m, p[:400])
        self.assertEqual(m.group(6).decode(), qid)
        self.assertEqual(len(p), MAX_PAYLOAD)
        self.assertEqual(p[m.end():], body[:MAX_PAYLOAD - m.end()])
        self.assertEqual(got[1][RECEIVED_ONE.match(got[1]).end():], small)
        # Said, not silent: a warning naming the mail and both sizes.
        sha = sha256_hex(body)
        self.wait_for(lambda: re.search(r"warn hpfeeds: message=%s size=%d published truncated "
                                        r"to %d bytes" % (sha, len(body), MAX_PAYLOAD),
                                        self.c.stderr_text()),
                      5, "the truncation warning")
        # The whole mail stays in the spool; the backend still parses the cut one.
        self.assertEqual(self.c.message_bytes(sha), body)
        msg = email.message_from_bytes(p, policy=email.policy.default)
        self.assertEqual(msg["subject"], "big")
        self.assertEqual(spamtrap_sender(p), "127.0.0.1")

    def test_default_stays_json_byte_identical(self):
        self.start()
        self.sub = Subscriber(self)
        self.addCleanup(self.sub.close)
        body = mail(6, b"caf\xc3\xa9 \"quoted\" \\ </tag>\r\n")
        self.send_tls_auth(body)
        p = self.received()[0]
        want = ('{"sha256":"%s","msg":%s}' % (sha256_hex(body), json.dumps(
            body.decode("utf-8"), ensure_ascii=False))).encode("utf-8")
        self.assertEqual(p, want)


class Durability(HpfeedsCase):

    def test_broker_down_at_start(self):
        self.broker.port = free_port()
        self.start(broker=False)
        shas = set(self.send_many([mail(i) for i in range(5)]))
        time.sleep(1.5)
        self.broker.start()
        self.wait_for(lambda: shas <= self.broker.shas(), 70, "backlog published once the broker is up")

    def test_broker_killed_mid_stream(self):
        self.start()
        bodies = [mail(i, b"x" * (i % 500) + b"\r\n") for i in range(1000)]
        shas = []
        killed = False
        for k in range(0, 1000, 100):
            shas += self.send_many(bodies[k:k + 100])
            if not killed and len(self.broker.shas()) > 0 and k >= 300:
                self.broker.kill()
                killed = True
        self.assertTrue(killed)
        time.sleep(1)
        self.broker.start()
        self.wait_for(lambda: set(shas) <= self.broker.shas(), 90, "all 1000 published")

    def test_collector_kill9_with_backlog(self):
        self.broker.port = free_port()
        self.start(broker=False)
        shas = set(self.send_many([mail(i) for i in range(50)]))
        self.c.kill9()
        self.expect_exit = None
        self.broker.start()
        self.c.start()
        self.expect_exit = 0
        self.wait_for(lambda: shas <= self.broker.shas(), 30, "backlog published after restart")

    def test_clean_restart_does_not_republish(self):
        mport = free_port()
        self.start(config={"metrics": {"port": mport}})
        shas = set(self.send_many([mail(i) for i in range(10)]))
        self.wait_for(lambda: shas <= self.broker.shas(), 10, "published")

        def backlog():
            conn = http.client.HTTPConnection(HOST, mport, timeout=10 * self.slow)
            try:
                conn.request("GET", "/metrics")
                text = conn.getresponse().read().decode()
            finally:
                conn.close()
            for line in text.splitlines():
                if (line.startswith("fosr_feed_backlog_bytes{") and 'output="hpfeeds"' in line
                        and 'channel="%s"' % CHAN in line):
                    return float(line.rsplit(None, 1)[1])
            return None
        # Confirmed (the broker's echoes read: nothing left in the backlog)
        # before the stop: a fixed 1.5 s stood for it, and under load the
        # echoes could come later, their entries rightly sent again.
        self.wait_for(lambda: backlog() == 0, 10, "every entry confirmed")
        self.c.stop()
        n = len(self.broker.published())
        self.c.start()
        time.sleep(2)
        self.assertEqual(len(self.broker.published()), n, "entries confirmed before the stop were sent again")


class JournalCut(HpfeedsCase):

    def test_publisher_never_reads_past_the_acknowledged_journal(self):
        # A journal append whose fdatasync fails is refused (4xx) and cut back;
        # when the cut fails too the refused line stays in the file until the
        # next append cuts it.  The publisher used to read to the end of the
        # file: it published the refused mail, moved its offset past the cut,
        # and the next mail's line, written at the cut, was found only by the
        # copytruncate detection (a re-read, or with no copy found, the whole
        # journal again).  It now reads the live journal only up to its
        # acknowledged lines (spool_journal_committed).
        self.broker.start()
        self.c = Collector(self.tmpdir, config=feed_cfg(self.broker.port))
        self.c.env_extra["FOSR_TEST_HOOKS"] = \
            "fail=journal_sync:2:EIO,fail=journal_trunc:1:EIO"
        self.c.start()
        a, b, c = mail(1), mail(2, b"x" * 40 + b"\r\n"), mail(3, b"y" * 400 + b"\r\n")
        self.send_mail(a)
        self.wait_for(lambda: sha256_hex(a) in self.broker.shas(), 10, "publish of A")
        cl = self.client()
        self.assertEqual(cl.ehlo("client.example").code, 250)
        self.assertEqual(cl.cmd("MAIL FROM:<s@example.org>").code, 250)
        self.assertEqual(cl.cmd("RCPT TO:<r@example.net>").code, 250)
        r = cl.data(b)
        self.assertEqual(r.code // 100, 4, r)
        cl.cmd("QUIT")
        # Give a publisher that reads the refused line the time to publish it.
        end = time.time() + 2 * self.slow
        while time.time() < end and sha256_hex(b) not in self.broker.shas():
            time.sleep(0.1)
        self.assertNotIn(sha256_hex(b), self.broker.shas(), "a refused mail was published")
        self.send_mail(c)
        self.wait_for(lambda: sha256_hex(c) in self.broker.shas(), 10,
                      "publish of the mail acknowledged after the cut")
        self.assertNotIn("not published", self.c.stderr_text())


class Descriptors(HpfeedsCase):

    def test_descriptor_exhaustion_never_drops_the_backlog(self):
        # The review's reproduction: 128 descriptors, broker down, 20 mails, 110
        # idle SMTP connections, broker up.  Sessions are refused before the
        # outputs starve (a reserve), and a failed open of a .eml is retried,
        # never skipped: every mail is published while the connections are held.
        self.broker.port = free_port()
        self.start(broker=False, nofile=128,
                   config={"limits": {"sessions": 1000, "sessions_per_ip": 1000}})
        shas = set(self.send_many([mail(i) for i in range(20)]))
        held = []
        try:
            for _ in range(110):
                s = socket.create_connection((HOST, self.c.ports["smtp"]), timeout=10)
                held.append(s)
            # each connection served (banner) or refused (421), or the daemon out of
            # descriptors (the rest wait in the backlog)
            def settled():
                nfd = len(os.listdir("/proc/%d/fd" % self.c.pid))
                answered = sum(1 for s in held if select.select([s], [], [], 0)[0])
                return answered == len(held) or nfd >= 126
            self.wait_for(settled, 10, "the 110 connections served, refused or stuck")
            self.broker.start()
            self.wait_for(lambda: shas <= self.broker.shas(), 30,
                          "every mail published while 110 connections are held")
        finally:
            for s in held:
                s.close()
        err = self.c.stderr_text()
        self.assertNotIn("not published", err)
        cursor = os.path.join(self.c.spool_dir, "feed", CHAN.encode().hex() + ".cursor")
        size = os.path.getsize(self.c.journal_path)
        self.wait_for(lambda: os.path.exists(cursor) and int(open(cursor).read().split()[0]) == size,
                      10, "cursor at the end of the journal")


    def test_unreadable_message_is_retried_missing_one_skipped_loudly(self):
        # A .eml that cannot be read (here a directory in its place: EISDIR) holds
        # the feed and is retried, the cursor unmoved; a .eml that is gone (ENOENT)
        # is the one entry skipped, with a warning and a fosr.output.skipped event.
        self.broker.port = free_port()
        self.start(broker=False)
        bodies = [mail(i) for i in range(3)]
        shas = self.send_many(bodies)
        # The analysis worker reads the same .eml files: it is let past them
        # first, or it met the directory and the gone file too (when it was
        # slower than this test), with its own skipped event and its own
        # "Is a directory" line, which the wait below then took for hpfeeds'.
        parsed = os.path.join(self.c.spool_dir, "parsed.jsonl")
        self.wait_for(lambda: all(s.encode() in open(parsed, "rb").read() for s in shas), 30,
                      "the three mails analysed")
        p0, p1 = self.c.message_path(shas[0]), self.c.message_path(shas[1])
        os.rename(p0, p0 + ".aside")
        os.mkdir(p0)
        os.unlink(p1)
        self.broker.start()
        # hpfeeds' own line: the analysis worker may meet the same directory
        # first and say "Is a directory" in its own words, while hpfeeds is
        # still waiting out its reconnection backoff (ASan: 0 hpfeeds lines
        # when the directory was put back a second after the worker's).
        held = "hpfeeds: message=%s Is a directory; retrying (the entry stays in the spool)" % p0
        self.wait_for(lambda: held in self.c.stderr_text(), 15, "hpfeeds' read error logged")
        time.sleep(1)
        self.assertEqual(self.broker.shas(), set(), "published past an unreadable mail")
        self.assertNotIn("not published", self.c.stderr_text())
        os.rmdir(p0)
        os.rename(p0 + ".aside", p0)
        self.wait_for(lambda: {shas[0], shas[2]} <= self.broker.shas(), 15,
                      "the mail published once readable, and the one after the gone one")
        self.assertNotIn(shas[1], self.broker.shas())
        err = self.c.stderr_text()
        self.assertIn("message=%s is gone" % p1, err)
        # hpfeeds' own line (the worker's ends at "retrying")
        self.assertEqual(err.count("Is a directory; retrying (the entry stays in the spool)"),
                         1, "logged once per series")
        # hpfeeds skips the gone mail once (the analysis worker was past the
        # three mails before they were broken: it skips nothing)
        ev = [e for e in self.c.events() if e.get("eventid") == "fosr.output.skipped"]
        self.assertEqual([(e["sha256"], e["output"]) for e in ev], [(shas[1], "hpfeeds")])


class BadBroker:
    """A listener on 127.0.0.1:port that misbehaves: "silent" accepts and never
    sends a byte (a hung broker, a proxy with a dead backend, a TLS endpoint
    that never answers the ClientHello); "stop-reading" sends INFO and then
    never reads (a tiny receive buffer, so the publisher's writes stall)."""

    def __init__(self, port, mode):
        self.mode = mode
        self.accepted = 0
        self.conns = []
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if mode == "stop-reading":
            self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.ls.bind((HOST, port))
        self.ls.listen(16)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            r, _, _ = select.select([self.ls], [], [], 0.1)
            if not r:
                continue
            try:
                c, _ = self.ls.accept()
            except OSError:
                continue
            self.accepted += 1
            self.conns.append(c)
            if self.mode == "stop-reading":
                # INFO name=hpfeeds nonce=deadbeef, then silence on our side
                c.sendall(bytes.fromhex("00000011010768706665656473deadbeef"))

    def close(self):
        self.stopping = True
        self.thread.join()
        for c in self.conns:
            c.close()
        self.ls.close()


class ForeignEchoBroker:
    """One connection on 127.0.0.1:port: INFO, then, for the collector's first
    PUBLISH, it does not store it but forwards a publish of the same mail by
    another sensor sharing the identity (same ident, channel and sha256: a
    spam run sends byte-identical mails to many sensors), then closes."""

    def __init__(self, port):
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((HOST, port))
        self.ls.listen(4)
        self.echoed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        c, _ = self.ls.accept()
        c.sendall(bytes.fromhex("00000011010768706665656473deadbeef"))
        buf = b""
        while not self.echoed.is_set():
            d = c.recv(65536)
            if not d:
                break
            buf += d
            while len(buf) >= 5 and len(buf) >= int.from_bytes(buf[:4], "big"):
                n = int.from_bytes(buf[:4], "big")
                op, body, buf = buf[4], buf[5:n], buf[n:]
                if op != 3:
                    continue
                il = body[0]
                cl = body[1 + il]
                chan = body[2 + il:2 + il + cl]
                sha = json.loads(body[2 + il + cl:])["sha256"]
                other = json.dumps({"sha256": sha, "sensor": "another-sensor"}, separators=(",", ":")).encode()
                pub = bytes([len(b"writer")]) + b"writer" + bytes([len(chan)]) + chan + other
                c.sendall((5 + len(pub)).to_bytes(4, "big") + bytes([3]) + pub)
                self.echoed.set()
                break
        time.sleep(1)       # the collector reads the echo before the close
        c.close()
        self.ls.close()


class Confirmation(HpfeedsCase):
    """Only the broker's echo of our own publish confirms it."""

    def test_another_sensors_publish_of_the_same_mail_confirms_nothing(self):
        self.broker.port = free_port()
        fake = ForeignEchoBroker(self.broker.port)
        self.start(broker=False)
        shas = set(self.send_many([mail(1)]))
        self.assertTrue(fake.echoed.wait(30 * self.slow), self.c.stderr_tail())
        fake.thread.join()
        self.broker.start()
        self.wait_for(lambda: shas <= self.broker.shas(), 30,
                      "the mail the broker never stored published to the next broker")


class Deadlines(HpfeedsCase):
    """Every connection state has a deadline (feed.timeout); a missed one drops the
    connection and reconnects with backoff, logged once per series."""

    def run_bad(self, mode, text, feed=None, bodies=None):
        self.broker.port = free_port()
        bad = BadBroker(self.broker.port, mode)
        try:
            f = {"timeout": 1}
            f.update(feed or {})
            self.start(broker=False, feed=f)
            shas = set(self.send_many(bodies or [mail(i) for i in range(5)]))
            self.wait_for(lambda: bad.accepted >= 3, 30,
                          "three connections to the %s broker (deadline missed, reconnect)" % mode)
        finally:
            bad.close()
        err = self.c.stderr_text()
        self.assertEqual(err.count(text), 1, "not logged once per series:\n" + err[-3000:])
        self.broker.start()
        self.wait_for(lambda: shas <= self.broker.shas(), 60,
                      "every mail published once a good broker is back")

    def test_silent_broker(self):
        self.run_bad("silent", "sent no INFO within 1 s; reconnecting")

    def test_tls_broker_never_answers_client_hello(self):
        ca, crt, key = make_ca(self.tmpdir)
        self.broker.tls = (crt, key)
        self.run_bad("silent", "connect and TLS handshake not complete within 1 s",
                     feed={"tls": True, "ca_file": ca, "server_name": "broker.test"})

    def test_broker_stops_reading_mid_stream(self):
        # 12 mails of ~600 KB: more than the socket buffers hold, less than the window
        big = [mail(i, (b"%06d" % i) * 100000 + b"\r\n") for i in range(12)]
        self.run_bad("stop-reading", "stopped reading (nothing taken for 1 s)", bodies=big)


class EventLogRotation(HpfeedsCase):
    """The event log's unpublished tail survives a rotation: the old file is
    published to its end (confirmed) before the new one; the cursor records
    which file (inode) it points into, so a rotation while stopped is handled."""

    EV = "spam.events"

    def setUp(self):
        super().setUp()
        self.broker.users = ["writer:secret:%s,%s:%s,%s" % (CHAN, self.EV, CHAN, self.EV)]

    def lines(self, path):
        with open(path, "rb") as f:
            return [l for l in f.read().split(b"\n") if l]

    def published_events(self):
        return {p for _, _, p in self.broker.published(self.EV)}

    def rotate_with_broker_down(self, rotate, restart=False, damage=None):
        self.broker.port = free_port()
        self.start(broker=False, feed={"events_channel": self.EV})
        self.send_many([mail(i) for i in range(5)])
        log = self.c.event_log
        self.wait_for(lambda: len([l for l in self.lines(log) if b"fosr.mail.received" in l]) == 5,
                      10, "5 mails in the event log")
        if rotate == self.copytruncate:
            # A cut file is told from a grown one by its first bytes, which the
            # publisher records once a second (in the cursor): a copytruncate
            # within the daemon's first second could not be told.
            cursor = os.path.join(self.c.spool_dir, "feed", self.EV.encode().hex() + ".cursor")
            self.wait_for(lambda: os.path.exists(cursor) and ":256\n" in open(cursor).read(),
                          10, "the event log's head recorded")
        if restart:
            self.c.stop()
        rotate(log)
        if damage:
            damage(os.path.join(self.c.spool_dir, "feed", self.EV.encode().hex() + ".cursor"))
        if restart:
            self.c.start()
        else:
            self.c.signal(signal.SIGHUP)
        self.send_many([mail(i) for i in range(5, 7)])
        old = set(self.lines(log + ".1"))
        self.assertGreaterEqual(len(old), 10)
        self.broker.start()
        self.wait_for(lambda: old | set(self.lines(log)) <= self.published_events(), 30,
                      "every event of the rotated file and of the new one published")
        return old

    @staticmethod
    def mv(log):
        os.rename(log, log + ".1")

    @staticmethod
    def copytruncate(log):
        shutil.copyfile(log, log + ".1")
        os.truncate(log, 0)

    def test_create_rotation_broker_down(self):
        self.rotate_with_broker_down(self.mv)

    def test_copytruncate_rotation_broker_down(self):
        self.rotate_with_broker_down(self.copytruncate)

    def test_rotation_while_stopped(self):
        self.rotate_with_broker_down(self.mv, restart=True)

    def test_copytruncate_while_stopped(self):
        self.rotate_with_broker_down(self.copytruncate, restart=True)

    def test_rotation_while_stopped_cursor_unreadable(self):
        # "A bad cursor means duplicates from the start, never a loss": the
        # start is the oldest rotated file beside it, not the current file.
        def corrupt(p):
            with open(p, "w") as f:
                f.write("garbage\n")
        self.rotate_with_broker_down(self.mv, restart=True, damage=corrupt)

    def test_rotated_file_gone_is_said_loudly(self):
        self.broker.port = free_port()
        self.start(broker=False, feed={"events_channel": self.EV})
        self.send_many([mail(i) for i in range(2)])
        self.c.stop()
        os.unlink(self.c.event_log)
        self.c.start()
        self.send_many([mail(i) for i in range(2, 4)])
        self.broker.start()
        new = set(self.lines(self.c.event_log))
        self.wait_for(lambda: new <= self.published_events(), 30, "the new file published")
        # the file is gone, or a new one got its inode number: said either way
        self.assertIn("is lost", self.c.stderr_text())


class Failures(HpfeedsCase):

    def test_wrong_secret_not_a_busy_loop(self):
        self.start(feed={"secret": "not-the-secret"})
        self.send_mail(mail(1))
        # a second attempt comes (the collector retries), then the backoff
        # bounds the attempts of a 6 s window from the first (a busy loop
        # makes hundreds).  Load only makes fewer: the window is counted
        # from the broker's first refusal, not a fixed sleep from the start.
        self.wait_for(lambda: self.broker.log().count("auth-failed") >= 1, 10, "a first attempt")
        t0 = time.time()
        self.wait_for(lambda: self.broker.log().count("auth-failed") >= 2, 10, "a second attempt")
        time.sleep(max(0, 6 - (time.time() - t0)))
        attempts = self.broker.log().count("auth-failed")
        self.assertLessEqual(attempts, 5, "reconnects faster than the backoff allows")
        err = self.c.stderr_text()
        self.assertEqual(err.count("Authentication failed for writer"), 1, err)
        self.assertEqual(self.broker.published(), [])


class Tls(HpfeedsCase):

    def test_tls_broker(self):
        ca, crt, key = make_ca(self.tmpdir)
        self.broker.tls = (crt, key)
        self.start(feed={"tls": True, "ca_file": ca, "server_name": "broker.test"})
        body = mail(7)
        self.send_mail(body)
        self.wait_for(lambda: sha256_hex(body) in self.broker.shas(), 10, "publish over TLS")

    def test_tls_wrong_name_refused(self):
        ca, crt, key = make_ca(self.tmpdir)
        self.broker.tls = (crt, key)
        self.start(feed={"tls": True, "ca_file": ca, "server_name": "other.test"})
        self.send_mail(mail(8))
        # the refusal is waited for (a fixed 2 s sleep before looking for it
        # was too short for ASan on a loaded machine)
        self.wait_for(lambda: "certificate verify failed" in self.c.stderr_text(), 10,
                      "the verification failure logged")
        self.assertEqual(self.broker.published(), [])


class BrokerName(HpfeedsCase):
    """feed.broker a name inside sandbox.chroot: the resolver (libevent's
    evdns: resolv.conf and the hosts file) is set up before the chroot,
    where neither file is."""

    @unittest.skipUnless(os.geteuid() == 0, "chroot needs root")
    def test_broker_by_name_inside_a_chroot(self):
        from test_sandbox import no_leak_check_env
        root = os.path.join(self.tmpdir, "root")
        os.mkdir(root)
        self.broker.start()
        cfg = feed_cfg(self.broker.port, broker="localhost")     # /etc/hosts
        cfg.update({"sandbox": {"chroot": root}, "spool": {"directory": "/spool"},
                    "event_log": "/events.json"})
        self.c = Collector(self.tmpdir, config=cfg, env=no_leak_check_env())
        self.c.start()
        self.c.spool_dir = os.path.join(root, "spool")
        self.c.event_log = os.path.join(root, "events.json")
        self.c.wait_event("fosr.collector.start")
        self.assertEqual(os.readlink("/proc/%d/root" % self.c.proc.pid), root)
        body = mail(9)
        self.send_mail(body)
        self.wait_for(lambda: sha256_hex(body) in self.broker.shas(), 15,
                      "published from the chroot to the broker named localhost")


class SeedConfig(unittest.TestCase):
    """The seed's feed_config.yml, verbatim (port 10_000), through -f."""

    SEED = ('---  # Broker config\n'
            '  broker: "127.0.0.1"\n'
            '  port: 10_000\n'
            '  identity: "writer"\n'
            '  secret: "secret"\n'
            '  channels:\n'
            '    - "spam.mails"\n')

    def test_seed_feed_config_verbatim(self):
        tmp = tempfile.mkdtemp(prefix="fosr-e2e-seed-")
        b = Broker(tmp, port=10000)
        c = None
        try:
            try:
                b.start()
            except AssertionError:
                self.skipTest("port 10000 busy")
            path = os.path.join(tmp, "feed_config.yml")
            with open(path, "w") as f:
                f.write(self.SEED)
            c = Collector(tmp, args=["-f", path])
            c.start()
            body = mail(9)
            cl = c.connect()
            cl.ehlo("client.example")
            cl.cmd("MAIL FROM:<a@example.org>")
            cl.cmd("RCPT TO:<b@example.net>")
            cl.data(body)
            cl.close()
            end = time.time() + 10 * c.slow
            while sha256_hex(body) not in b.shas() and time.time() < end:
                time.sleep(0.1)
            self.assertIn(sha256_hex(body), b.shas(), c.stderr_tail())
            self.assertEqual(c.stop(), 0)
            c.check_sanitizers()
        finally:
            b.kill()
            if c:
                c.cleanup()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
