"""Faults (issue 5): kill -9 under smtp-source load, a full disk, a flapping broker.

The rule in every case: a mail that got "250" is on disk intact (sha256 of
the file == its name == the journal's sha256 for its queue id), nothing else
is half-written, and the service recovers by itself.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import time
import unittest

from harness import (HOST, CollectorTestCase, queue_id, sha256_hex,
                     with_config)
from fixtures.abuse import AckedSender, wait_until
from fixtures.hpfeeds import Broker, HpfeedsCase

SMTP_SOURCE = "/usr/sbin/smtp-source"


class FaultCase(CollectorTestCase):

    def send(self, cl, body):
        """One mail on an open session; the final reply."""
        r = cl.cmd("MAIL FROM:<d@example.org>")
        if r.code == 250:
            r = cl.cmd("RCPT TO:<r@example.net>")
        if r.code == 250:
            r = cl.cmd("DATA")
            if r.code == 354:
                cl.send(body + b".\r\n")
                r = cl.reply()
        if r.code != 250:
            cl.cmd("RSET")
        return r

    def assert_spool_consistent(self, acked):
        """Every acknowledged mail is intact; every file is named by its sha256;
        every journal line has its file."""
        msgs = self.c.messages()
        for name, data in msgs.items():
            self.assertEqual(hashlib.sha256(data).hexdigest(), name,
                             "%s.eml does not hash to its name (%d bytes)" % (name, len(data)))
        journal = self.c.journal(strict=True)
        by_qid = {}
        for rec in journal:
            self.assertIn(rec.get("sha256"), msgs, "journal line without its .eml: %s" % rec)
            by_qid.setdefault(rec.get("queue_id"), []).append(rec)
        for body, qid in acked:
            sha = sha256_hex(body)
            self.assertIn(sha, msgs, "mail acknowledged as %s lost" % qid)
            self.assertEqual(msgs[sha], body)
            recs = by_qid.get(qid, [])
            self.assertEqual(len(recs), 1, "journal records for %s: %s" % (qid, recs))
            self.assertEqual(recs[0]["sha256"], sha)
        tmp = os.path.join(self.c.spool_dir, "tmp")
        return msgs, journal, (os.listdir(tmp) if os.path.isdir(tmp) else [])


class Kill9UnderLoad(FaultCase):
    """kill -9 at a random moment under load: a smoke test beside
    CommitStepKill9, which kills at each step of the commit path.  The first
    check after the restart may run while the segments are still replayed
    (the ports listen before the spool is opened): every name must be whole
    even then."""

    @unittest.skipUnless(os.access(SMTP_SOURCE, os.X_OK), "smtp-source (postfix) not installed")
    @with_config({"limits": {"sessions": 2000, "sessions_per_ip": 2000}})
    def test_kill9_under_smtp_source_then_restart(self):
        port = self.c.ports["smtp"]
        src = subprocess.Popen([SMTP_SOURCE, "-s", "20", "-m", "2000", "-l", "1024",
                                "-M", "source.example", "-f", "s@source.example",
                                "-t", "r@dest.example", "%s:%d" % (HOST, port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        snd = AckedSender(port, threads=4, per_session=10, size=1500, tag="kill9").start()
        try:
            # both loads under way: 40 acknowledged mails, and smtp-source's
            # mails on disk too (more files than the senders' mails, 4 of
            # which may be in flight), so a slow start of smtp-source on a
            # loaded machine does not leave it nothing to lose
            msgdir = os.path.join(self.c.spool_dir, "messages")
            wait_until(lambda: len(snd.acked) >= 40 and
                       len(os.listdir(msgdir)) > len(snd.acked) + 4 + 10, 20 * self.slow, 0.05)
            time.sleep(0.3)
            self.c.kill9()
            self.expect_exit = None
        finally:
            acked = snd.stop()
            if src.poll() is None:
                os.kill(src.pid, signal.SIGKILL)
            src.wait()
        self.assertGreaterEqual(len(acked), 40, "too few acknowledged mails before the kill")
        self.c.start()
        self.expect_exit = 0
        msgs, journal, tmp = self.assert_spool_consistent(acked)
        self.assertGreater(len(msgs), len(acked), "smtp-source mails missing: %d files" % len(msgs))
        # a restarted daemon takes mail again; the journal is appendable
        snd2 = AckedSender(port, threads=1, per_session=3, size=500, tag="after").start()
        wait_until(lambda: len(snd2.acked) >= 3, 10 * self.slow)
        acked2 = snd2.stop()
        self.assertGreaterEqual(len(acked2), 3)
        self.assert_spool_consistent(acked + acked2)


def proc_state(pid):
    """The state letter of /proc/pid/stat ("T" stopped), or "" when gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return ""
    return data[data.rindex(")") + 2]


class CommitStepKill9(FaultCase):
    """kill -9 at each step of the commit path, not at a random moment (items 5
    and 5b of "Trust, proven from outside"): the daemon runs with
    FOSR_TEST_HOOKS (src/testhook.h), stops itself (SIGSTOP) the Nth time it
    reaches the step, and is killed there.  Then, before any restart, no name
    in messages/ may hold bytes that do not hash to it (a reader of messages/
    never sees a torn mail), and after a restart every acknowledged mail is
    intact with its journal line and the segments are replayed away."""

    autostart = False

    # step -> (FOSR_TEST_HOOKS, body size of the senders' mails)
    # 1500 B: in memory; 100 KB: spilled to a tmp file, still through the
    # segment; 300 KB: the big path (fsync, link, fsync of messages/).
    # A failed .eml write (ENOSPC) asks for a checkpoint now, so the
    # checkpoint thread's steps are reached without waiting 35 s.
    STEPS = {
        "seg_write": ("stop=seg_write:4", 1500),
        "seg_sync": ("stop=seg_sync:4", 1500),
        "eml_write": ("stop=eml_write:6", 1500),
        "eml_link": ("stop=eml_link:6", 1500),
        "journal_write": ("stop=journal_write:4", 1500),
        "journal_sync": ("stop=journal_sync:4", 1500),
        "acked": ("stop=acked:4", 1500),
        "spilled_eml_link": ("stop=eml_link:4", 100 * 1024),
        "big_fsync": ("stop=big_fsync:3", 300 * 1024),
        "big_link": ("stop=big_link:3", 300 * 1024),
        "enospc_ckpt_syncfs": ("fail=eml_write:5:ENOSPC,stop=ckpt_syncfs:1", 1500),
        "enospc_ckpt_unlink": ("fail=eml_write:5:ENOSPC,stop=ckpt_unlink:1", 1500),
        "enospc_ckpt_pass_end": ("fail=eml_write:5:ENOSPC,stop=ckpt_pass_end:1", 1500),
    }

    def assert_names_whole(self, when):
        d = os.path.join(self.c.spool_dir, "messages")
        for name in os.listdir(d):
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            self.assertTrue(name.endswith(".eml"), "%s in messages/ %s" % (name, when))
            self.assertEqual(hashlib.sha256(data).hexdigest(), name[:-4],
                             "%s does not hash to its name (%d bytes) %s"
                             % (name, len(data), when))

    def kill_at(self, hooks, size, acked_before=()):
        """Start with hooks, send until the daemon stops itself, kill -9 it there;
        returns the mails acknowledged (acked_before included)."""
        self.c.env_extra["FOSR_TEST_HOOKS"] = hooks
        self.c.start()
        snd = AckedSender(self.c.ports["smtp"], threads=3, per_session=4, size=size,
                          tag="step-%s" % hooks).start()
        try:
            stopped = wait_until(lambda: proc_state(self.c.pid) == "T", 30 * self.slow, 0.02)
            self.assertTrue(stopped, "the daemon never reached %s:\n%s"
                            % (hooks, self.c.stderr_tail()))
            self.assertIn("testhook: stop at", self.c.stderr_text())
            self.c.kill9()
            self.expect_exit = None
        finally:
            acked = snd.stop()
            del self.c.env_extra["FOSR_TEST_HOOKS"]
        self.assert_names_whole("after a kill -9 at %s" % hooks)
        return list(acked_before) + acked

    def restart_and_check(self, acked):
        # listening comes before the spool is opened (and the segments
        # replayed): the "ready" line says the replay is over
        readies = self.c.stderr_text().count(" ready: ")
        self.c.start()
        self.assertTrue(wait_until(lambda: self.c.stderr_text().count(" ready: ") > readies,
                                   20 * self.slow), "no ready line after the restart")
        msgs, journal, tmp = self.assert_spool_consistent(acked)
        self.assertEqual(tmp, [], "tmp/ after the restart")
        self.assertEqual(os.listdir(os.path.join(self.c.spool_dir, "segments")), [],
                         "segments left after the replay")
        self.assertEqual(self.c.stop(), 0)
        self.expect_exit = 0
        return msgs

    def _step(self, step):
        hooks, size = self.STEPS[step]
        acked = self.kill_at(hooks, size)
        self.restart_and_check(acked)

    def test_kill9_during_replay(self):
        """A crash during the replay itself: the next replay finishes the job."""
        acked = self.kill_at("stop=eml_link:6", 1500)
        segs = os.listdir(os.path.join(self.c.spool_dir, "segments"))
        self.assertTrue(segs, "no segment left to replay")
        # corrupt an acknowledged mail (as a power loss could) so the replay rewrites it
        victim = self.c.message_path(sha256_hex(acked[-1][0]))
        with open(victim, "r+b") as f:
            f.truncate(0)
        for hooks in ("stop=replay_restore:2", "stop=replay_unlink:1"):
            self.c.env_extra["FOSR_TEST_HOOKS"] = hooks
            self.c.start(wait=False)
            try:
                self.assertTrue(wait_until(lambda: proc_state(self.c.pid) == "T",
                                           30 * self.slow, 0.02),
                                "replay never reached %s:\n%s" % (hooks, self.c.stderr_tail()))
                self.c.kill9()
            finally:
                del self.c.env_extra["FOSR_TEST_HOOKS"]
        self.restart_and_check(acked)

    def test_kill9_before_big_dirsync_then_duplicate(self):
        """kill -9 after a big mail's link, before the fsync of messages/: its
        name is there, nothing made it durable.  The same body sent after the
        restart must not be acknowledged on that name alone: its group fsyncs
        messages/ first (made to fail here: 451, no 250), then retried: 250."""
        body = b"Subject: big twice\r\n\r\n" + (b"x" * 998 + b"\r\n") * 310
        self.c.env_extra["FOSR_TEST_HOOKS"] = "stop=big_dirsync:1"
        try:
            self.c.start()
            cl = self.client()
            cl.ehlo()
            self.assertEqual(cl.cmd("MAIL FROM:<d@example.org>").code, 250)
            self.assertEqual(cl.cmd("RCPT TO:<r@example.net>").code, 250)
            self.assertEqual(cl.cmd("DATA").code, 354)
            cl.send(body + b".\r\n")
            self.assertTrue(wait_until(lambda: proc_state(self.c.pid) == "T",
                                       30 * self.slow, 0.02),
                            "never reached big_dirsync:\n%s" % self.c.stderr_tail())
            self.c.kill9()
            self.expect_exit = None
        finally:
            del self.c.env_extra["FOSR_TEST_HOOKS"]
        self.assertTrue(os.path.exists(self.c.message_path(sha256_hex(body))),
                        "the big mail was not linked before the stop")
        self.c.env_extra["FOSR_TEST_HOOKS"] = "fail=big_dirsync:1:EIO"
        try:
            self.c.start()
        finally:
            del self.c.env_extra["FOSR_TEST_HOOKS"]
        cl = self.client()
        cl.ehlo()
        r = self.send(cl, body)
        self.assertNotEqual(r.code, 250, "duplicate acknowledged on a name no fsync of "
                            "messages/ made durable: %s" % (r,))
        self.assertEqual(r.code, 451, r)
        r = self.send(cl, body)
        self.assertEqual(r.code, 250, r)
        self.assert_spool_consistent([(body, queue_id(r))])
        self.assertEqual(self.c.stop(), 0)
        self.expect_exit = 0


for _step in CommitStepKill9.STEPS:
    setattr(CommitStepKill9, "test_kill9_at_" + _step,
            lambda self, _s=_step: self._step(_s))


class DiskFull(FaultCase):
    """The spool on a 2 MiB tmpfs, most of it taken by a filler file."""

    autostart = False

    def setUp(self):
        super().setUp()
        self.mounted = False
        spool = self.c.spool_dir
        os.makedirs(spool, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", spool],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            self.skipTest("cannot mount a tmpfs (%s)" % r.stdout.decode(errors="replace").strip())
        self.mounted = True

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            if self.mounted:
                subprocess.run(["umount", "-l", self.c.spool_dir], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)

    # soft_errors raised: with Postfix's 10, the 11th refusal's reply is held
    # forever (bug h14-2, test_abuse.ErrorSleep), which is not what this tests
    @with_config({"spool": {"min_free": 0}, "limits": {"soft_errors": 100}})
    def test_disk_full_then_recovery(self):
        self.c.start()
        spool = self.c.spool_dir
        st = os.statvfs(spool)
        free = st.f_bavail * st.f_frsize
        filler = os.path.join(spool, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, free - 300 * 1024))
        cl = self.client()
        cl.ehlo()
        acked, refused = [], []
        for i in range(20):
            body = (b"Subject: full %d\r\n\r\n" % i) + (hashlib.sha256(b"%d" % i).hexdigest().encode()
                                                     + b"\r\n") * 900   # ~58 KB
            r = self.send(cl, body)
            if r.code == 250:
                acked.append((body, queue_id(r)))
            else:
                self.assertIn(r.code, (451, 452), r)
                refused.append((body, r))
        self.assertTrue(refused, "20 x 58 KB into 300 KB: nothing refused")
        self.assertTrue(acked, "nothing accepted before the disk filled")
        msgs, journal, tmp = self.assert_spool_consistent(acked)
        for body, r in refused:
            self.assertNotIn(sha256_hex(body), msgs, "a refused mail (%r) is on disk" % r)
        self.assertEqual(len(journal), len(acked))
        wait_until(lambda: not os.listdir(os.path.join(spool, "tmp")), 5 * self.slow)
        self.assertEqual(os.listdir(os.path.join(spool, "tmp")), [], "partial tmp files left")
        # space comes back: new mail is taken again, on the same session and a new one
        os.unlink(filler)
        body = b"Subject: after\r\n\r\nroom again\r\n"
        r = self.send(cl, body)
        self.assertEqual(r.code, 250, r)
        acked.append((body, queue_id(r)))
        cl2 = self.client()
        cl2.ehlo()
        body2 = refused[0][0]
        r = self.send(cl2, body2)
        self.assertEqual(r.code, 250, r)
        acked.append((body2, queue_id(r)))
        self.assert_spool_consistent(acked)


class BrokerFlapping(HpfeedsCase):
    """test_hpfeeds.py kills the broker once between batches; here it is killed
    and restarted four times while senders keep going."""

    def test_broker_flapping_under_load_nothing_lost(self):
        self.start()
        # paced (about 150 mails/s) so that sending spans all four restarts and
        # the backlog stays a few seconds' work for the Python test broker
        snd = AckedSender(self.c.ports["smtp"], threads=3, per_session=10, size=800,
                          tag="flap", pace=0.02).start()
        try:
            for _ in range(4):
                time.sleep(1.5)
                self.broker.kill()
                time.sleep(1.0)
                self.broker.start()
            time.sleep(1.0)
        finally:
            acked = snd.stop()
        self.assertGreater(len(acked), 50, "too few mails sent: %d" % len(acked))
        want = {sha256_hex(b) for b, _ in acked}
        self.wait_for(lambda: want <= self.broker.shas(), 60,
                      "all %d acknowledged mails published" % len(want))
        self.assertTrue(self.c.running)


if __name__ == "__main__":
    unittest.main(verbosity=2)
