"""The analysis worker in the daemon (issue 15): every mail received over SMTP
is analysed off the SMTP path, driven by the reception journal with its own
durable cursor: a fosr.mail.parsed event, a line in spool/parsed.jsonl, the
attachments stored as spool/attachments/<sha256>; a restart resumes (no mail
skipped, none analysed more than once more); a MIME bomb neither stops the
worker nor slows the SMTP side; analysis.enabled: false writes nothing."""

import binascii
import hashlib
import http.client
import json
import os
import re
import subprocess
import time
import unittest

import harness
from harness import HOST, CollectorTestCase, free_port, with_config
from test_analysis import pdf_bytes, spam_variant, unrelated_mail, zip_bytes
from email.message import EmailMessage


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def crlf(b):
    """SMTP wants CRLF lines; what is stored (and hashed) is exactly this."""
    b = b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return b if b.endswith(b"\r\n") else b + b"\r\n"


def mixed_mail(n=0, pad=0):
    pdf, z = pdf_bytes() + (b"%% %d\n" % n) + os.urandom(pad), zip_bytes()
    m = EmailMessage()
    m["From"] = "Billing <billing@invoices.example>"
    m["To"] = "victim@example.org"
    m["Subject"] = "Invoice %d" % n
    m.set_content("Your invoice is attached. Pay at https://pay.invoices.example/i/%d\n" % n)
    m.add_attachment(pdf, maintype="application", subtype="pdf", filename="invoice.pdf")
    m.add_attachment(z, maintype="application", subtype="zip", filename="invoice.zip")
    return crlf(bytes(m)), [pdf, z]


def bomb_mail():
    depth = 10000
    parts = ["From: b@bomb.example\nSubject: nest\nMIME-Version: 1.0\n"]
    for i in range(depth):
        parts.append('Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i))
    parts.append("Content-Type: text/plain\n\ndeep\n")
    for i in reversed(range(depth)):
        parts.append("--b%d--\n" % i)
    return crlf("".join(parts).encode())


def slow_mail(n=170):
    """~9.5 MB of text holding n uuencoded JSON-like files: each one hashed,
    ssdeep'd and typed by libmagic, ~0.7 s of analysis (the window in which
    a test kills the daemon)."""
    parts = []
    for i in range(n):
        d = (b'{"a":[%d,' % i + b"1," * 20000)[:40000]
        lines = [binascii.b2a_uu(d[j:j + 45]).decode() for j in range(0, len(d), 45)]
        parts.append("begin 644 f%d.json\n%s`\nend\n" % (i, "".join(lines)))
    return crlf(("From: a@example.com\nTo: b@example.com\nSubject: uu\n"
                 "Content-Type: text/plain\n\n" + "".join(parts)).encode())


class AnalysisDaemon(CollectorTestCase):

    def parsed_path(self):
        return os.path.join(self.c.spool_dir, "parsed.jsonl")

    def parsed(self):
        return self.c._jsonl(self.parsed_path())

    def wait_parsed(self, shas, timeout=30):
        """Wait until every sha256 in shas has a fosr.mail.parsed event and
        its line in parsed.jsonl: the worker writes the event first, then
        appends the document, so the event alone does not say the line is
        there yet (a test reading parsed.jsonl after the event alone missed
        the last mail's line when the worker was preempted in between)."""
        end = time.time() + timeout * self.slow
        while True:
            got = {e.get("sha256"): e for e in self.c.events()
                   if e.get("eventid") == "fosr.mail.parsed"}
            lines = {l.get("sha256") for l in self.parsed()}
            if set(shas) <= set(got) and set(shas) <= lines:
                return got
            if time.time() > end:
                raise AssertionError("parsed %d of %d mails within %ss (%d in %s):\n%s"
                                     % (len(set(shas) & set(got)), len(set(shas)), timeout,
                                        len(set(shas) & lines), self.parsed_path(),
                                        self.c.stderr_tail()))
            time.sleep(0.05)

    def attachment(self, sha):
        with open(os.path.join(self.c.spool_dir, "attachments", sha), "rb") as f:
            return f.read()

    @with_config({"metrics": {"port": free_port()}})
    def test_corpus_over_smtp(self):
        body, atts = mixed_mail()
        v1 = crlf(spam_variant("Johnson", "http://a.example/1", 3))
        v2 = crlf(spam_variant("Okafor", "https://b.example/zz?r=9", 8))
        un = crlf(unrelated_mail())
        for b in (body, v1, v2, un):
            self.send_mail(b)
        got = self.wait_parsed([sha256(b) for b in (body, v1, v2, un)])
        ev = got[sha256(body)]
        self.assertEqual({a["file"]["hash"]["sha256"] for a in ev["email"]["attachments"]},
                         {sha256(a) for a in atts})
        self.assertIn("https://pay.invoices.example/i/0", ev["url"]["full"])
        for a in atts:
            stored = self.attachment(sha256(a))
            self.assertEqual(sha256(stored), sha256(a))
            self.assertEqual(stored, a)
        c1, c2, cu = (got[sha256(x)]["fosr"]["campaign"] for x in (v1, v2, un))
        self.assertEqual(c1["id"], c2["id"])
        self.assertNotEqual(c1["id"], cu["id"])
        # the parsed journal: one line per mail, the same document as the event
        lines = self.parsed()
        self.assertEqual(sorted(l["sha256"] for l in lines),
                         sorted(sha256(b) for b in (body, v1, v2, un)))
        line = [l for l in lines if l["sha256"] == sha256(body)][0]
        self.assertEqual(line["email"], ev["email"])
        # metrics: mails analysed, and no lag left (the counter may follow
        # the event by a moment: wait for it)
        port = self.c.config["metrics"]["port"]
        end = time.time() + 10 * self.slow
        while True:
            conn = http.client.HTTPConnection(HOST, port, timeout=10 * self.slow)
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
            conn.close()
            if (re.search(r"(?m)^fosr_analysis_mails_total 4$", text) and
                    re.search(r"(?m)^fosr_analysis_backlog_bytes 0$", text)):
                break
            self.assertLess(time.time(), end, text[-600:])
            time.sleep(0.05)

    @with_config(env={"FOSR_TEST_HOOKS": "fail=parsed_write:1:ENOSPC"})
    def test_document_not_written_is_retried(self):
        # The first append to parsed.jsonl fails (a full disk): the mail is
        # not passed without its document, the worker holds and analyses it
        # again; the file holds whole lines only.
        bodies = [crlf(spam_variant("Ngata%d" % i, "http://n.example/%d" % i, i))
                  for i in range(3)]
        for b in bodies:
            self.send_mail(b)
        want = sorted(sha256(b) for b in bodies)
        end = time.time() + 30 * self.slow
        while sorted({l["sha256"] for l in self.parsed()}) != want:
            self.assertLess(time.time(), end, "parsed.jsonl: %s\n%s" % (
                sorted({l["sha256"] for l in self.parsed()}), self.c.stderr_tail()))
            time.sleep(0.05)
        with open(self.parsed_path(), "rb") as f:
            for line in f.read().splitlines():
                json.loads(line)
        err = self.c.stderr_text()
        self.assertEqual(err.count("parsed.jsonl: No space left on device"), 1, err)
        self.assertEqual(err.count("parsed.jsonl not written; retrying"), 1, err)

    @with_config(env={"FOSR_TEST_HOOKS": "stop=parsed_sync:2,fail=parsed_sync:1:EIO"})
    def test_document_not_synced_is_written_again(self):
        # The fdatasync of parsed.jsonl fails (EIO): Linux marks the pages
        # clean, so the batch's documents may never reach the disk and a
        # later fdatasync proves nothing: the batch must not be confirmed.
        # The daemon stops itself at the next sync; the file is cut back to
        # what a power cut leaves of it (nothing was synced), kill -9,
        # restart: the first mail's document must be written again.
        self.expect_exit = None
        a = crlf(spam_variant("Ngata", "http://n.example/a", 1))
        b = crlf(spam_variant("Okafor", "http://o.example/b", 2))
        self.send_mail(a)
        end = time.time() + 30 * self.slow
        while "fdatasync: Input/output error" not in self.c.stderr_text():
            self.assertLess(time.time(), end, self.c.stderr_tail())
            time.sleep(0.05)
        self.send_mail(b)
        while "testhook: stop at parsed_sync" not in self.c.stderr_text():
            self.assertLess(time.time(), end, self.c.stderr_tail())
            time.sleep(0.05)
        os.truncate(self.parsed_path(), 0)
        self.c.kill9()
        del self.c.env_extra["FOSR_TEST_HOOKS"]
        self.c.start()
        end = time.time() + 30 * self.slow
        while sha256(b) not in {l["sha256"] for l in self.parsed()}:
            self.assertLess(time.time(), end, self.c.stderr_tail())
            time.sleep(0.05)
        self.c.stop()
        shas = [l["sha256"] for l in self.parsed()]
        self.assertEqual(sorted(shas), sorted([sha256(a), sha256(b)]),
                         "mail a %s, b %s: %s" % (sha256(a), sha256(b), shas))

    @with_config(env={"FOSR_TEST_HOOKS": "stop=parsed_dirsync:2,fail=parsed_dirsync:1:EIO"})
    def test_parsed_name_not_synced_is_not_confirmed(self):
        # parsed.jsonl was just created (or rotated): until an fsync of the
        # spool directory succeeds its name may not be on disk, and a power
        # cut takes the whole file.  That fsync fails (EIO): the batch must
        # not be confirmed.  At the retry the daemon stops itself; the file
        # is removed (what the power cut leaves), kill -9, restart: the
        # mail's document must be written again.
        self.expect_exit = None
        a = crlf(spam_variant("Ngata", "http://n.example/a", 1))
        self.send_mail(a)
        end = time.time() + 30 * self.slow
        while "testhook: stop at parsed_dirsync" not in self.c.stderr_text():
            self.assertLess(time.time(), end, self.c.stderr_tail())
            time.sleep(0.05)
        os.unlink(self.parsed_path())
        self.c.kill9()
        del self.c.env_extra["FOSR_TEST_HOOKS"]
        self.c.start()
        end = time.time() + 30 * self.slow
        while sha256(a) not in {l["sha256"] for l in self.parsed()}:
            self.assertLess(time.time(), end, self.c.stderr_tail())
            time.sleep(0.05)
        self.c.stop()
        self.assertEqual([l["sha256"] for l in self.parsed()], [sha256(a)])

    @with_config({"analysis": {"enabled": False}})
    def test_restart_in_a_backlog(self):
        # a backlog on disk: mails received while the analysis was off
        self.expect_exit = None
        n = 60
        bodies = []
        cl = None
        for i in range(n):
            b, _ = mixed_mail(i, pad=200 * 1024)
            bodies.append(b)
            cl, _ = self.send_mail(b, client=cl)
        self.assertEqual(self.c.stop(), 0)
        self.assertEqual(self.parsed(), [])
        self.c.config["analysis"]["enabled"] = True
        with open(self.c.config_path, "w") as f:
            f.write(harness.to_yaml(self.c.config))
        self.c.start()
        # kill -9 once the worker is under way, not done
        end = time.time() + 30 * self.slow
        while not self.parsed() and time.time() < end:
            time.sleep(0.002)
        self.c.kill9()
        done_before = len(self.parsed())
        self.assertGreater(done_before, 0)
        self.assertLess(done_before, n, "the kill came after the backlog was done")
        # what a kill in the middle of a write leaves: cut at the restart
        with open(self.parsed_path(), "ab") as f:
            f.write(b'{"eventid":"fosr.mail.parsed","sha256":"torn')
        self.c.start()
        self.wait_parsed([sha256(b) for b in bodies], timeout=60)
        counts = {}
        for l in self.parsed():
            counts[l["sha256"]] = counts.get(l["sha256"], 0) + 1
        self.assertEqual(set(counts), {sha256(b) for b in bodies})
        # each mail at most once more, and only one written before the kill
        # (the batch the kill interrupted, before its cursor was saved)
        self.assertLessEqual(max(counts.values()), 2, counts)
        again = sum(1 for v in counts.values() if v == 2)
        self.assertLessEqual(again, done_before, "%d of %d re-analysed (%d done before the kill)"
                             % (again, n, done_before))
        self.assertEqual(len(self.c._jsonl(self.parsed_path(), strict=True)), n + again)
        self.assertIn("cutting a torn last line", self.c.stderr_text())

    def guard(self):
        """What spool/analysis.inflight says: [sha256, begun] or []."""
        try:
            with open(os.path.join(self.c.spool_dir, "analysis.inflight")) as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def kill_while_analysing(self, sha, begun):
        end = time.time() + 60 * self.slow
        while self.guard() != [sha, str(begun)]:
            if time.time() > end:
                raise AssertionError("mail %s not being analysed (%d) within 60 s: %r\n%s"
                                     % (sha, begun, self.guard(), self.c.stderr_tail()))
            time.sleep(0.001)
        self.c.kill9()

    def test_poison_mail_abandoned(self):
        # a mail in whose analysis the daemon dies (a library's crash, a
        # memory limit: here kill -9 while it is analysed) twice is passed
        # at the next start, with an event saying so, not analysed again
        # and again at every restart (attack review: a crash loop)
        self.expect_exit = None
        poison = slow_mail()
        sha = sha256(poison)
        self.send_mail(poison)
        self.kill_while_analysing(sha, 1)
        self.c.start()
        self.kill_while_analysing(sha, 2)
        self.c.start()
        after, _ = mixed_mail(3)
        self.send_mail(after)
        got = self.wait_parsed([sha, sha256(after)], timeout=60)
        a = got[sha]["fosr"]["analysis"]
        self.assertEqual(a["abandoned"], "crashed")
        self.assertEqual(a["crashes"], 2)
        self.assertEqual(a["limits"], ["abandoned"])
        self.assertEqual(got[sha]["email"]["attachments"], [])
        self.assertEqual(got[sha]["url"]["full"], [])
        self.assertEqual(len(got[sha256(after)]["email"]["attachments"]), 2)
        self.assertIn("mail %s abandoned: the daemon stopped 2 times" % sha,
                      self.c.stderr_text())
        self.assertEqual([l["sha256"] for l in self.parsed()].count(sha), 1)
        self.assertEqual(self.guard(), [])
        self.assertTrue(self.c.running)

    @with_config({"analysis": {"enabled": False}})
    def test_unreadable_message_held_logged_once_per_series(self):
        # A .eml the worker cannot read (a directory in its place: EISDIR) holds
        # it, retried every second, the cursor unmoved: one warning for the
        # series, one "resumed" when it reads again.
        body, _ = mixed_mail(3)
        cl, qid = self.send_mail(body)
        self.c.wait_event("fosr.mail.received", lambda e: e.get("queue_id") == qid)
        self.assertEqual(self.c.stop(), 0)
        p = self.c.message_path(sha256(body))
        os.rename(p, p + ".aside")
        os.mkdir(p)
        self.c.config["analysis"]["enabled"] = True
        with open(self.c.config_path, "w") as f:
            f.write(harness.to_yaml(self.c.config))
        self.c.start()
        held = lambda: [l for l in self.c.stderr_text().splitlines()
                        if "analysis:" in l and "Is a directory; retrying" in l]
        end = time.time() + 20 * self.slow
        while not held() and time.time() < end:
            time.sleep(0.05)
        self.assertTrue(held(), self.c.stderr_tail())
        # the worker retries once a second (AW_HOLD_MS): three retries or more
        time.sleep(3.5)
        self.assertEqual(self.parsed(), [])
        os.rmdir(p)
        os.rename(p + ".aside", p)
        self.wait_parsed([sha256(body)])
        self.assertEqual(len(held()), 1, held())
        self.assertEqual(self.c.stderr_text().count("analysis: resumed"), 1)

    def test_bomb_does_not_stop_the_worker(self):
        bomb = bomb_mail()
        self.send_mail(bomb)
        # the SMTP side still takes mail after the bomb (a session left
        # unanswered hits the client's timeout: the liveness bound).  A 2 s
        # bound on this mail measured the machine's load: the analysis caps
        # the bomb (containers) in ~20 ms of CPU, so no wall time here could
        # show the worker blocking the loop.
        after, _ = mixed_mail(7)
        cl, _ = self.send_mail(after)
        got = self.wait_parsed([sha256(bomb), sha256(after)], timeout=60)
        self.assertIn("containers", got[sha256(bomb)]["fosr"]["analysis"]["limits"])
        self.assertEqual(len(got[sha256(after)]["email"]["attachments"]), 2)

    @with_config({"analysis": {"enabled": False}})
    def test_disabled_writes_nothing(self):
        body, _ = mixed_mail()
        cl, qid = self.send_mail(body)
        self.c.wait_event("fosr.mail.received", lambda e: e.get("queue_id") == qid)
        self.assertEqual(self.c.stop(), 0)
        self.assertFalse(os.path.exists(self.parsed_path()))
        self.assertFalse(os.path.exists(os.path.join(self.c.spool_dir, "attachments")))
        self.assertEqual([e for e in self.c.events() if e.get("eventid") == "fosr.mail.parsed"],
                         [])
        feed = os.path.join(self.c.spool_dir, "feed")
        self.assertEqual([f for f in os.listdir(feed) if f.startswith(b"analysis".hex())]
                         if os.path.isdir(feed) else [], [])

    def test_console_show_lists_the_analysis(self):
        body, atts = mixed_mail(5)
        m = EmailMessage()
        m["From"] = "a@b.example"
        m["Subject"] = "links"
        m.set_content("go to http://evil.example/\x1b[31m and https://second.example/p\n")
        links = crlf(bytes(m))
        spam = crlf(spam_variant("Johnson", "http://a.example/1", 3))
        for b in (body, links, spam):
            self.send_mail(b)
        got = self.wait_parsed([sha256(body), sha256(links), sha256(spam)])
        self.assertEqual(self.c.stop(), 0)
        r = subprocess.run([self.c.binary, "-c", self.c.config_path, "-i"],
                           input=("show %s\nshow %s\nshow %s\n" % (
                               sha256(body)[:12], sha256(links)[:12],
                               sha256(spam)[:12])).encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30 * self.slow)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.decode("ascii")
        for a in atts:
            self.assertIn(sha256(a), out)
        self.assertIn("invoice.pdf", out)
        self.assertIn("application/pdf", out)
        self.assertIn("url:       https://pay.invoices.example/i/5", out)
        self.assertIn("url:       https://second.example/p", out)
        self.assertIn("campaign:  %d (1 mails" % got[sha256(spam)]["fosr"]["campaign"]["id"], out)
        self.assertNotIn("\x1b", out)

    @with_config({"analysis": {"store_attachments": False}})
    def test_no_attachment_store(self):
        body, _ = mixed_mail()
        self.send_mail(body)
        got = self.wait_parsed([sha256(body)])
        self.assertEqual(len(got[sha256(body)]["email"]["attachments"]), 2)
        self.assertFalse(os.path.exists(os.path.join(self.c.spool_dir, "attachments")))


if __name__ == "__main__":
    harness.main()
