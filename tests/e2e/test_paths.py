"""Paths prepared as root (issue "Trust, proven from outside", item 7).

Started as root with `user: nobody`, the daemon creates the spool and the event
log and gives them to nobody before it drops privileges.  Everything inside
the spool is nobody's afterwards: nobody can put a symbolic link where a spool
directory or receptions.jsonl was.  The next root start must not follow it (a
chown through it would hand the target, any root file, to nobody): it refuses
to start and names the path.  These tests need root (they skip otherwise).
"""

import os
import pwd
import shutil
import time
import unittest


from harness import CollectorTestCase, shared_tls


class RootPaths(CollectorTestCase):
    autostart = False
    config = {"user": "nobody"}

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root (the daemon drops to nobody)")
        super().setUp()
        # nobody must reach its spool through the test's directory.
        os.chmod(self.tmpdir, 0o755)
        self.nobody = pwd.getpwnam("nobody")
        # A root-owned file and directory outside the spool: what an attacker
        # running as nobody would like to own.
        self.victim_dir = os.path.join(self.tmpdir, "victim-dir")
        os.mkdir(self.victim_dir, 0o700)
        self.victim_file = os.path.join(self.tmpdir, "victim-file")
        with open(self.victim_file, "w") as f:
            f.write("root's secret\n")
        os.chmod(self.victim_file, 0o600)

    def first_start(self):
        """A normal root start: the spool is nobody's, mail is accepted."""
        self.c.start()
        # Listening comes before the paths are prepared: wait for "ready".
        end = time.time() + 30 * self.slow
        while " ready: " not in self.c.stderr_text() and time.time() < end:
            time.sleep(0.02)
        st = os.stat(self.c.spool_dir)
        self.assertEqual(st.st_uid, self.nobody.pw_uid)
        for sub in ("tmp", "messages", "segments", "feed", "relay"):
            self.assertEqual(os.lstat(os.path.join(self.c.spool_dir, sub)).st_uid,
                             self.nobody.pw_uid, sub)
        body = b"Subject: paths\r\n\r\nhello\r\n"
        cl, qid = self.send_mail(body)
        cl.cmd("QUIT")
        self.assert_stored(body, qid)
        self.assertEqual(self.c.stop(), 0)

    def start_again(self):
        """Start as root again; True when it came up ("ready" logged), False
        when it exited first.  (Its ports are bound before the paths are
        prepared: listening does not mean it accepted them.)"""
        self.expect_exit = None
        readies = self.c.stderr_text().count(" ready: ")
        self.c.start(wait=False)
        end = time.time() + 30 * self.slow
        started = None
        while started is None and time.time() < end:
            if self.c.proc.poll() is not None:
                started = False
            elif self.c.stderr_text().count(" ready: ") > readies:
                started = True
            else:
                time.sleep(0.05)
        self.c.stop()
        self.assertIsNotNone(started, "neither ready nor exited:\n" + self.c.stderr_tail())
        return started

    def assert_victims_root(self):
        for v in (self.victim_dir, self.victim_file):
            st = os.lstat(v)
            self.assertEqual((st.st_uid, st.st_gid), (0, 0), "%s was given away" % v)

    def refused(self, path, why="symbolic link"):
        """The second root start must leave the victims alone, exit non-zero
        and name path."""
        started = self.start_again()
        self.assert_victims_root()
        err = self.c.stderr_text()
        self.assertFalse(started, "started through %s:\n%s" % (path, err))
        self.assertIn(path, err)
        self.assertIn(why, err)

    def test_symlinked_spool_subdir_refused(self):
        self.first_start()
        relay = os.path.join(self.c.spool_dir, "relay")
        os.rename(relay, relay + ".old")
        os.symlink(self.victim_dir, relay)
        os.lchown(relay, self.nobody.pw_uid, self.nobody.pw_gid)
        self.refused(relay)

    def test_symlinked_journal_refused(self):
        self.first_start()
        journal = self.c.journal_path
        os.rename(journal, journal + ".old")
        os.symlink(self.victim_file, journal)
        os.lchown(journal, self.nobody.pw_uid, self.nobody.pw_gid)
        self.refused(journal)

    def test_symlinked_event_log_refused(self):
        self.first_start()
        ev = self.c.event_log
        os.rename(ev, ev + ".old")
        os.symlink(self.victim_file, ev)
        self.refused(ev)

    def test_hardlinked_journal_refused(self):
        """A second name for a root file (where protected_hardlinks is off) is
        refused too: chown follows hard links by nature."""
        self.first_start()
        journal = self.c.journal_path
        os.rename(journal, journal + ".old")
        os.link(self.victim_file, journal)
        self.refused(journal, "hard link")


class TlsFilesNotRegular(CollectorTestCase):
    """The certificate and key are read as root before anything else: where
    someone else can write (a tls/ below the spool, a shared directory), a
    FIFO in place of the key hung the start for ever (OpenSSL blocks in its
    read), a directory gave OpenSSL's cryptic error.  Refused now, naming
    the path; a symbolic link to a regular file (Let's Encrypt's live/) is
    still followed."""

    autostart = False
    config = {"tls": {"certificate": "{tmp}/tls/cert.pem", "key": "{tmp}/tls/key.pem"}}

    def setUp(self):
        super().setUp()
        d = os.path.join(self.tmpdir, "tls")
        os.mkdir(d)
        self.cert, self.key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        shutil.copy(shared_tls()["certificate"], self.cert)

    def start_fails(self, path, why):
        self.expect_exit = None
        self.c.start(wait=False)
        end = time.time() + 20 * self.slow
        while self.c.proc.poll() is None and time.time() < end:
            time.sleep(0.05)
        rc = self.c.proc.poll()
        self.c.stop()
        err = self.c.stderr_text()
        self.assertIsNotNone(rc, "still starting after 20 s (blocked on %s?):\n%s" % (path, err))
        self.assertNotEqual(rc, 0)
        self.assertIn(path, err)
        self.assertIn(why, err)

    def test_fifo_key_refused(self):
        os.mkfifo(self.key)
        self.start_fails(self.key, "not a regular file")

    def test_directory_cert_refused(self):
        shutil.copy(shared_tls()["key"], self.key)
        os.rename(self.cert, self.cert + ".real")
        os.mkdir(self.cert)
        self.start_fails(self.cert, "not a regular file")

    def test_symlinked_key_followed(self):
        real = os.path.join(self.tmpdir, "live-key.pem")
        shutil.copy(shared_tls()["key"], real)
        os.symlink(real, self.key)
        self.c.start()
        body = b"Subject: tls link\r\n\r\nhello\r\n"
        cl, qid = self.send_mail(body)
        cl.cmd("QUIT")
        self.assert_stored(body, qid)


if __name__ == "__main__":
    unittest.main()
