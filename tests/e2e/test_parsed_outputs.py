"""The analysis worker's fosr.mail.parsed documents on the outputs (issue 15):
the hpfeeds channel feed.parsed_channel and the AMQP routing key
amqp.parsed_routing_key publish every line of spool/parsed.jsonl at least once
(a durable cursor each, as the mails'): broker down then up, the daemon killed
-9 and restarted, nothing is missing; parsed.jsonl rotates into numbered
segments (spool.journal_segment) deleted only once every reader is past them;
the parsed journal and the stored attachments count in spool.max_bytes."""

import hashlib
import json
import os
import time
import unittest

from harness import HOST, Collector, CollectorTestCase, free_port, sha256_hex
from fixtures.hpfeeds import CHAN, HpfeedsCase, mail
from fixtures import rabbitmq
from test_analysis_daemon import mixed_mail

PCHAN = "fosr.parsed"
WRITER = "writer:secret:%s,%s:%s,%s" % (CHAN, PCHAN, CHAN, PCHAN)


def parsed_lines(spool):
    """Every document of parsed.jsonl and its segments, oldest segment first."""
    names = sorted(n for n in os.listdir(spool) if n.startswith("parsed.jsonl."))
    out = []
    for n in names + ["parsed.jsonl"]:
        try:
            with open(os.path.join(spool, n), "rb") as f:
                out += [l for l in f.read().split(b"\n") if l]
        except FileNotFoundError:
            pass
    return out


def check_document(test, doc, bodies_by_sha, atts_by_sha):
    """A published document is the worker's, for a mail we sent, with its attachments."""
    test.assertEqual(doc.get("eventid"), "fosr.mail.parsed")
    sha = doc["sha256"]
    test.assertIn(sha, bodies_by_sha)
    test.assertEqual(doc["size"], len(bodies_by_sha[sha]))
    want = {hashlib.sha256(a).hexdigest() for a in atts_by_sha.get(sha, [])}
    got = {a["file"]["hash"]["sha256"] for a in doc.get("email", {}).get("attachments", [])}
    test.assertEqual(got, want, doc)


def corpus(n, pad=0):
    bodies, atts = {}, {}
    for i in range(n):
        b, a = mixed_mail(i, pad)
        s = sha256_hex(b)
        bodies[s], atts[s] = b, a
    return bodies, atts


class ParsedHpfeeds(HpfeedsCase):

    def start_parsed(self, broker=True, config=None, feed=None):
        self.broker.users = [WRITER]
        if not broker:
            self.broker.port = free_port()
        self.start(broker=broker, feed=dict({"parsed_channel": PCHAN}, **(feed or {})),
                   config=config)

    def published_docs(self):
        return [json.loads(p) for _, _, p in self.broker.published(PCHAN)]

    def published_shas(self):
        return {d["sha256"] for d in self.published_docs()}

    def cursor(self):
        return os.path.join(self.c.spool_dir, "feed", PCHAN.encode().hex() + ".cursor")

    def test_every_document_published_with_the_right_content(self):
        self.start_parsed()
        bodies, atts = corpus(20)
        self.send_many(list(bodies.values()))
        self.wait_for(lambda: set(bodies) <= self.published_shas(), 60,
                      "every parsed document on %s" % PCHAN)
        lines = {json.loads(l)["sha256"]: l for l in parsed_lines(self.c.spool_dir)}
        for _, _, payload in self.broker.published(PCHAN):
            doc = json.loads(payload)
            check_document(self, doc, bodies, atts)
            # the same bytes as the line of parsed.jsonl
            self.assertEqual(payload, lines[doc["sha256"]])
        # the mails themselves still go to their channel
        self.wait_for(lambda: set(bodies) <= self.broker.shas(), 30, "the mails")

    def test_broker_down_while_mails_arrive_then_up(self):
        self.start_parsed(broker=False)
        bodies, atts = corpus(15)
        self.send_many(list(bodies.values()))
        self.wait_for(lambda: len(parsed_lines(self.c.spool_dir)) >= 15, 60,
                      "every mail analysed")
        self.broker.start()
        self.wait_for(lambda: set(bodies) <= self.published_shas(), 60,
                      "the parsed backlog published")
        for d in self.published_docs():
            check_document(self, d, bodies, atts)

    def test_kill9_and_restart_nothing_missing(self):
        self.start_parsed()
        bodies, atts = corpus(30)
        items = list(bodies.values())
        self.send_many(items[:15])
        self.wait_for(lambda: len(self.published_shas()) > 0, 60, "publishing started")
        self.c.kill9()
        self.expect_exit = None
        self.c.start()
        self.send_many(items[15:])
        self.c.kill9()
        self.c.start()
        self.expect_exit = 0
        self.wait_for(lambda: set(bodies) <= self.published_shas(), 90,
                      "every parsed document after two kill -9")
        for d in self.published_docs():
            check_document(self, d, bodies, atts)

    def test_documents_not_synced_published_once_synced(self):
        # The first fdatasync of parsed.jsonl fails (EIO): its batch is not
        # confirmed, the documents not synced are cut off (the reader never
        # reads past the synced length) and written again after the backoff:
        # every document is published, each line is in parsed.jsonl once.
        self.start_parsed()
        self.c.stop()
        self.c.env_extra["FOSR_TEST_HOOKS"] = "fail=parsed_sync:1:EIO"
        self.c.start()
        bodies, atts = corpus(3)
        self.send_many(list(bodies.values()))
        self.wait_for(lambda: set(bodies) <= self.published_shas(), 60,
                      "every parsed document on %s" % PCHAN)
        for d in self.published_docs():
            check_document(self, d, bodies, atts)
        shas = [json.loads(l)["sha256"] for l in parsed_lines(self.c.spool_dir)]
        self.assertEqual(sorted(shas), sorted(bodies))
        err = self.c.stderr_text()
        self.assertEqual(err.count("parsed.jsonl: fdatasync: Input/output error"), 1, err)

    def test_segments_rotate_and_only_published_ones_are_deleted(self):
        # Broker down: the documents pile up over several segments, none deleted.
        self.start_parsed(broker=False,
                          config={"spool": {"journal_segment": 4096, "journal_keep": 0}})
        bodies, atts = corpus(24)
        self.send_many(list(bodies.values()))
        spool = self.c.spool_dir
        self.wait_for(lambda: len(parsed_lines(spool)) >= 24, 60, "every mail analysed")
        segs = lambda: sorted(n for n in os.listdir(spool) if n.startswith("parsed.jsonl."))
        self.assertGreaterEqual(len(segs()), 3, os.listdir(spool))
        # past the periodic prune (5 s): nothing unpublished went away
        time.sleep(6)
        self.assertEqual({json.loads(l)["sha256"] for l in parsed_lines(spool)}, set(bodies))
        # a restart on the way (the cursor and the segment numbers survive it)
        self.c.stop()
        self.c.start()
        self.broker.start()
        self.wait_for(lambda: set(bodies) <= self.published_shas(), 90,
                      "every document of every segment published")
        # once the cursor is past them, the segments go (keep 0)
        self.wait_for(lambda: not segs(), 30, "the published segments deleted")
        self.assertIn("every reader past it", self.c.stderr_text())

    def test_private_mail_document_not_published(self):
        # A rule keeps a mail off the outputs ("publish": false): its document too.
        rules = os.path.join(self.tmpdir, "rules.yml")
        with open(rules, "w") as f:
            f.write("rules:\n  - name: private\n    priority: 20\n    stage: data\n"
                    "    conditions:\n      - subject: {contains: secret-run}\n"
                    "    actions:\n      publish: false\n      tag: private\n")
        # and off the events channel: neither its reception nor its analysis there
        echan = "fosr.events"
        self.broker.users = ["writer:secret:%s,%s,%s:%s,%s,%s" % ((CHAN, PCHAN, echan) * 2)]
        self.start(feed={"parsed_channel": PCHAN, "events_channel": echan},
                   config={"relay": {"mode": "dry-run", "rules": rules,
                                     "own_addresses": ["203.0.113.5"]}})
        priv = mail(1, b"").replace(b"Subject: hpfeeds test 1", b"Subject: secret-run")
        pub = mail(2)
        self.send_many([priv, pub])
        self.wait_for(lambda: sha256_hex(pub) in self.published_shas(), 60, "the public one")
        lines = [json.loads(l) for l in parsed_lines(self.c.spool_dir)]
        self.assertEqual({d["sha256"] for d in lines}, {sha256_hex(priv), sha256_hex(pub)})
        self.assertEqual([d.get("publish") for d in lines if d["sha256"] == sha256_hex(priv)],
                         [False])
        self.assertNotIn(sha256_hex(priv), self.published_shas())
        self.assertNotIn(sha256_hex(priv), self.broker.shas())
        evs = lambda: [json.loads(p) for _, _, p in self.broker.published(echan)]
        self.wait_for(lambda: any(e.get("eventid") == "fosr.mail.parsed" and
                                  e.get("sha256") == sha256_hex(pub) for e in evs()),
                      30, "the public mail's events on %s" % echan)
        # the relay's events of the private mail too (fosr.relay.decision here)
        self.assertTrue(any(e.get("eventid") == "fosr.relay.decision" and
                            e.get("sha256") == sha256_hex(priv) for e in self.c.events()))
        leaked = [e["eventid"] for e in evs() if e.get("sha256") == sha256_hex(priv)]
        self.assertEqual(leaked, [], "events of the private mail published")
        self.assertEqual([e for e in evs() if e.get("publish") is False], [])


class ParsedBudget(CollectorTestCase):
    """spool.max_bytes counts the parsed journal and the attachments too."""

    autostart = False

    def test_attachments_count_in_max_bytes(self):
        att = os.urandom(600 * 1024)
        def big(i):
            from email.message import EmailMessage
            m = EmailMessage()
            m["From"] = "a@b.example"
            m["Subject"] = "big %d" % i
            m.set_content("see attached\n")
            m.add_attachment(att + bytes([i]), maintype="application",
                             subtype="octet-stream", filename="blob.bin")
            return bytes(m).replace(b"\n", b"\r\n")
        first = big(1)
        # messages/ holds the first mail (~820 KiB of base64); its attachment
        # (600 KiB) and document (~1 KiB) make ~1.4 MiB; 1.9 MiB then has no
        # room for a second mail, which messages/ alone would still take.
        self.c = Collector(self.tmpdir, config={"spool": {"max_bytes": 1900 * 1024}})
        self.c.start()
        self.send_mail(first)
        sha = sha256_hex(first)
        path = os.path.join(self.c.spool_dir, "attachments",
                            hashlib.sha256(att + bytes([1])).hexdigest())
        end = time.time() + 30 * self.slow
        while not os.path.exists(path) or not any(
                json.loads(l)["sha256"] == sha for l in parsed_lines(self.c.spool_dir)):
            self.assertLess(time.time(), end, "the first mail analysed")
            time.sleep(0.05)
        time.sleep(0.3)     # the batch committed
        for restart in (False, True):
            if restart:     # counted again at the start
                self.c.stop()
                self.c.start()
            cl = self.client()
            self.assertEqual(cl.ehlo("client.example").code, 250)
            self.assertEqual(cl.cmd("MAIL FROM:<s@example.org>").code, 250)
            self.assertEqual(cl.cmd("RCPT TO:<r@example.net>").code, 250)
            r = cl.data(big(2))
            self.assertNotEqual(r.code, 250, "a second mail over the budget was taken")
            self.assertEqual(r.code // 100, 4, r)
            cl.cmd("QUIT")

    def test_attachments_leave_the_mails_reserve(self):
        # The filesystem has A free.  spool.min_free = A/2 + 8 MiB: a mail
        # still fits (it needs min_free), an attachment does not: derived data
        # stops at twice the reserve, so attachments never eat the room the
        # mails' own reserve keeps (before: stored down to zero free space).
        os.makedirs(os.path.join(self.tmpdir, "spool"), exist_ok=True)
        vfs = os.statvfs(self.tmpdir)
        avail = vfs.f_bavail * vfs.f_frsize
        min_free = avail // 2 + 8 * 1024 * 1024
        att = os.urandom(64 * 1024)
        from email.message import EmailMessage
        m = EmailMessage()
        m["From"] = "a@b.example"
        m["Subject"] = "reserve"
        m.set_content("see attached\n")
        m.add_attachment(att, maintype="application", subtype="octet-stream",
                         filename="blob.bin")
        body = bytes(m).replace(b"\n", b"\r\n")
        self.c = Collector(self.tmpdir, config={"spool": {"min_free": min_free}})
        self.c.start()
        self.send_mail(body)
        sha = sha256_hex(body)
        end = time.time() + 30 * self.slow
        while not any(json.loads(l)["sha256"] == sha for l in parsed_lines(self.c.spool_dir)):
            self.assertLess(time.time(), end, "the mail analysed")
            time.sleep(0.05)
        doc = [json.loads(l) for l in parsed_lines(self.c.spool_dir)
               if json.loads(l)["sha256"] == sha][0]
        self.assertEqual([a["file"]["hash"]["sha256"] for a in doc["email"]["attachments"]],
                         [hashlib.sha256(att).hexdigest()])
        self.assertFalse(os.path.exists(os.path.join(
            self.c.spool_dir, "attachments", hashlib.sha256(att).hexdigest())))
        self.assertEqual(self.c.stderr_text().count("attachments are no longer stored"), 1,
                         self.c.stderr_tail())


@unittest.skipUnless(rabbitmq.available(), "needs rabbitmq-server (Debian package) and root")
class ParsedAMQP(CollectorTestCase):

    autostart = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rabbit = rabbitmq.RabbitMQ()
        try:
            cls.rabbit.start()
        except Exception:
            cls.rabbit.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.rabbit.cleanup()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        if self.rabbit.pid is None:
            self.rabbit.start()
        self.exchange = "fosr.%s" % self._testMethodName
        self.mails = rabbitmq.Consumer(self.rabbit, self.exchange, "spam.mail",
                                       "qm.%s" % self._testMethodName)
        self.docs = rabbitmq.Consumer(self.rabbit, self.exchange, "spam.parsed",
                                      "qp.%s" % self._testMethodName)

    def tearDown(self):
        self.mails.close()
        self.docs.close()
        super().tearDown()

    def start(self, **kw):
        a = {"host": HOST, "port": self.rabbit.port, "user": "guest", "password": "guest",
             "exchange": self.exchange, "routing_key": "spam.mail",
             "parsed_routing_key": "spam.parsed", "timeout": 5}
        a.update(kw)
        self.c = Collector(self.tmpdir, config={"amqp": a})
        self.c.start()

    def wait_for(self, pred, timeout, what):
        end = time.time() + timeout * self.slow
        while time.time() < end:
            if pred():
                return
            time.sleep(0.1)
        raise AssertionError("%s not reached within %ss\ncollector:\n%s\nbroker:\n%s"
                             % (what, timeout, self.c.stderr_tail(), self.rabbit.log()[-3000:]))

    def send_all(self, bodies):
        cl = self.client()
        self.assertEqual(cl.ehlo("client.example").code, 250)
        for b in bodies:
            self.send_mail(b, client=cl)
        cl.cmd("QUIT")

    def doc_shas(self):
        return {json.loads(b)["sha256"] for _, b in self.docs.get()}

    def test_every_document_consumed_with_the_right_content(self):
        self.mails.declare()
        self.docs.declare()
        self.start()
        bodies, atts = corpus(20)
        self.send_all(bodies.values())
        self.wait_for(lambda: set(bodies) <= self.doc_shas(), 60, "every parsed document")
        lines = {json.loads(l)["sha256"]: l for l in parsed_lines(self.c.spool_dir)}
        for props, body in self.docs.received:
            doc = json.loads(body)
            check_document(self, doc, bodies, atts)
            self.assertEqual(body, lines[doc["sha256"]])
            self.assertEqual(props.message_id, doc["sha256"])
            self.assertEqual(props.type, "fosr.mail.parsed")
            self.assertEqual(props.delivery_mode, 2)
            self.assertEqual(props.content_type, "application/json")
        # the mails on their own key; no document there, no mail here
        self.wait_for(lambda: set(bodies) <= {json.loads(b)["sha256"] for _, b in self.mails.get()},
                      30, "every mail")
        self.assertTrue(all("msg" in json.loads(b) for _, b in self.mails.received))
        self.assertTrue(all("msg" not in json.loads(b) for _, b in self.docs.received))

    def test_broker_down_while_mails_arrive_then_up(self):
        self.mails.declare()
        self.docs.declare()
        self.start()
        self.rabbit.stop()
        self.docs.close()
        bodies, atts = corpus(15)
        self.send_all(bodies.values())
        self.wait_for(lambda: len(parsed_lines(self.c.spool_dir)) >= 15, 60,
                      "every mail analysed")
        self.rabbit.start()
        self.wait_for(lambda: set(bodies) <= self.doc_shas(), 90, "the parsed backlog")
        for _, body in self.docs.received:
            check_document(self, json.loads(body), bodies, atts)

    def test_kill9_and_restart_nothing_missing(self):
        self.mails.declare()
        self.docs.declare()
        # a backlog first: the broker's port is wrong
        self.start(port=free_port())
        bodies, atts = corpus(30)
        items = list(bodies.values())
        self.send_all(items[:20])
        self.wait_for(lambda: len(parsed_lines(self.c.spool_dir)) >= 20, 60, "analysed")
        self.c.kill9()
        self.expect_exit = None
        self.start()
        self.send_all(items[20:])
        self.wait_for(lambda: len(self.doc_shas()) > 0, 30, "publishing started")
        self.c.kill9()
        self.start()
        self.expect_exit = 0
        self.wait_for(lambda: set(bodies) <= self.doc_shas(), 60,
                      "every parsed document after two kill -9")

    def test_unroutable_document_kept_until_a_queue_takes_it(self):
        # No queue bound to spam.parsed: returned (mandatory), published again, never dropped.
        self.mails.declare()
        self.start()
        bodies, _ = corpus(3)
        self.send_all(bodies.values())
        self.wait_for(lambda: "parsed document of message=" in self.c.stderr_text() and
                      "returned by broker" in self.c.stderr_text(), 60, "the return logged")
        self.docs.declare()
        self.wait_for(lambda: set(bodies) <= self.doc_shas(), 60, "kept documents published")


class ParsedConsole(CollectorTestCase):
    """The console's show N finds a mail's document in a rotated segment too."""

    config = {"spool": {"journal_segment": 4096, "journal_keep": 8}}

    def test_show_reads_rotated_segments(self):
        import subprocess
        bodies, atts = corpus(12)
        cl = self.client()
        self.assertEqual(cl.ehlo("client.example").code, 250)
        for b in bodies.values():
            self.send_mail(b, client=cl)
        first = next(iter(bodies))
        spool = self.c.spool_dir
        end = time.time() + 60 * self.slow
        while len(parsed_lines(spool)) < len(bodies):
            self.assertLess(time.time(), end, "every mail analysed")
            time.sleep(0.05)
        self.assertEqual(self.c.stop(), 0)
        with open(os.path.join(spool, "parsed.jsonl"), "rb") as f:
            self.assertNotIn(first.encode(), f.read(), "the first document is in a segment")
        r = subprocess.run([self.c.binary, "-c", self.c.config_path, "-i"],
                           input=("show %s\n" % first[:12]).encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30 * self.slow)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.decode("ascii")
        for a in atts[first]:
            self.assertIn(hashlib.sha256(a).hexdigest(), out)


class ParsedWorkerHold(CollectorTestCase):
    """A mail the worker cannot read now (EISDIR) is retried, the warning once
    per series, not once per retry; then it is analysed."""

    def test_unreadable_mail_warned_once_then_analysed(self):
        body = mail(7)
        sha = sha256_hex(body)
        self.send_mail(body)
        spool = self.c.spool_dir
        end = time.time() + 30 * self.slow
        while not any(json.loads(l)["sha256"] == sha for l in parsed_lines(spool)):
            self.assertLess(time.time(), end, "analysed")
            time.sleep(0.05)
        self.assertEqual(self.c.stop(), 0)
        # analysed again from the start at the next run, its .eml unreadable
        os.unlink(os.path.join(spool, "feed", b"analysis".hex() + ".cursor"))
        p = self.c.message_path(sha)
        os.rename(p, p + ".aside")
        os.mkdir(p)
        self.c.start()
        end = time.time() + 30 * self.slow
        while "analysis: " not in self.c.stderr_text() or \
                "Is a directory; retrying" not in self.c.stderr_text():
            self.assertLess(time.time(), end, "the read error logged")
            time.sleep(0.05)
        time.sleep(3.5)     # three retries (one a second)
        warn = [l for l in self.c.stderr_text().splitlines()
                if "analysis: " in l and "Is a directory; retrying" in l]
        self.assertEqual(len(warn), 1, warn)
        os.rmdir(p)
        os.rename(p + ".aside", p)
        end = time.time() + 30 * self.slow
        while sum(json.loads(l)["sha256"] == sha for l in parsed_lines(spool)) < 2:
            self.assertLess(time.time(), end, "analysed once readable")
            time.sleep(0.05)
        self.assertIn("analysis: resumed", self.c.stderr_text())
