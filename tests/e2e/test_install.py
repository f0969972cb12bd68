"""What an operator installs: `make install` (PREFIX, DESTDIR) lays out the
daemon, the systemd unit, the configuration, the examples, the man pages and
the logrotate snippet; the installed unit passes `systemd-analyze verify`; the
man pages render without a warning and name every option and configuration
key; the logrotate snippet, run by logrotate against a daemon taking mail,
keeps every event line and never touches the spool.

Needs make, groff (groff-base), man (man-db), logrotate and systemd-analyze
(scripts/deps.sh installs them).  `make install` installs the ./fosr-collector
built by `make`, whatever FOSR_BIN is.
"""

import gzip
import json
import os
import re
import shutil
import signal
import smtplib
import stat
import subprocess
import tempfile
import threading
import time
import unittest

from harness import HOST, REPO, CollectorTestCase

PAGES = {"man8/fosr-collector.8": "fosr-collector", "man5/fosr-collector.yml.5": "fosr-collector.yml"}
SNIPPET = os.path.join(REPO, "etc", "logrotate.d", "fosr-collector")
UNIT_EVENT_LOG = "/var/lib/fosr-collector/fosr-events.json"


def make_install(*args):
    p = subprocess.run(["make", "-s", "-C", REPO, "install"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    if p.returncode != 0:
        raise AssertionError("make install %s: exit %d\n%s"
                             % (" ".join(args), p.returncode, p.stdout.decode(errors="replace")))


def tree(root):
    """{path relative to root: mode} of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


class MakeInstall(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fosr-e2e-install-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_destdir_layout(self):
        dest = os.path.join(self.tmp, "dest")
        make_install("DESTDIR=" + dest)
        want = {
            "usr/local/sbin/fosr-collector": 0o755,
            "usr/local/lib/systemd/system/fosr-collector.service": 0o644,
            "etc/fosr-collector/fosr-collector.yml": 0o640,
            "etc/logrotate.d/fosr-collector": 0o644,
            "usr/local/share/man/man8/fosr-collector.8": 0o644,
            "usr/local/share/man/man5/fosr-collector.yml.5": 0o644,
        }
        for f in ("fosr-collector.yml", "credentials.txt", "rules.yml", "feed_config.yml",
                  "feed_config.json"):
            want["usr/local/share/doc/fosr-collector/examples/" + f] = 0o644
        self.assertEqual(tree(dest), want)
        with open(os.path.join(REPO, "fosr-collector"), "rb") as a, \
                open(os.path.join(dest, "usr/local/sbin/fosr-collector"), "rb") as b:
            self.assertTrue(a.read() == b.read(), "installed binary differs from ./fosr-collector")
        with open(os.path.join(dest, "usr/local/lib/systemd/system/fosr-collector.service")) as f:
            unit = f.read()
        self.assertIn("\nExecStart=/usr/local/sbin/fosr-collector -c "
                      "/etc/fosr-collector/fosr-collector.yml\n", unit)
        # a second install keeps the operator's configuration
        conf = os.path.join(dest, "etc/fosr-collector/fosr-collector.yml")
        with open(conf, "w") as f:
            f.write("hostname: mine.example\n")
        make_install("DESTDIR=" + dest)
        with open(conf) as f:
            self.assertEqual(f.read(), "hostname: mine.example\n", "configuration overwritten")

    def test_prefix(self):
        dest = os.path.join(self.tmp, "dest")
        make_install("DESTDIR=" + dest, "PREFIX=/usr")
        files = tree(dest)
        self.assertIn("usr/sbin/fosr-collector", files)
        self.assertIn("usr/lib/systemd/system/fosr-collector.service", files)
        self.assertIn("usr/share/man/man8/fosr-collector.8", files)
        self.assertFalse([f for f in files if f.startswith("usr/local")], files)
        with open(os.path.join(dest, "usr/lib/systemd/system/fosr-collector.service")) as f:
            self.assertIn("\nExecStart=/usr/sbin/fosr-collector -c", f.read())

    def test_installed_unit_verifies(self):
        """The unit as installed (here under a temporary PREFIX, so that its
        ExecStart exists) passes systemd-analyze verify."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze not installed (Debian package systemd)")
        prefix = os.path.join(self.tmp, "p")
        make_install("PREFIX=" + prefix, "SYSCONFDIR=" + os.path.join(self.tmp, "etc"))
        unit = os.path.join(prefix, "lib/systemd/system/fosr-collector.service")
        with open(unit) as f:
            self.assertIn("ExecStart=%s/sbin/fosr-collector -c %s/etc/fosr-collector/fosr-collector.yml"
                          % (prefix, self.tmp), f.read())
        p = subprocess.run([analyze, "verify", "--man=no", unit], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        text = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, text)
        self.assertEqual([ln for ln in text.splitlines() if "fosr-collector.service" in ln], [], text)

    def render(self, page):
        env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_DISABLE_SECCOMP="1")
        p = subprocess.run(["man", "--warnings", "-l", page], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr.decode(errors="replace"), "", "man warnings for " + page)
        g = subprocess.run(["groff", "-man", "-ww", "-z", page], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        self.assertEqual((g.returncode, g.stderr.decode(errors="replace")), (0, ""), page)
        # plain text: no overstrike, ASCII hyphens, words hyphenated at line ends joined
        text = re.sub(r".\x08", "", p.stdout.decode("utf-8", "replace"))
        text = text.replace("\u2010", "-").replace("\u2212", "-")
        return re.sub(r"(\w)-\n\s*(\w)", r"\1\2", text)

    def test_man_pages_render_and_are_complete(self):
        dest = os.path.join(self.tmp, "dest")
        make_install("DESTDIR=" + dest)
        texts = {}
        for rel, name in PAGES.items():
            page = os.path.join(dest, "usr/local/share/man", rel)
            text = self.render(page)
            self.assertRegex(text, r"NAME\s+%s - " % re.escape(name))
            texts[name] = re.sub(r"\s+", " ", text)
        # every option of -h is in fosr-collector(8)
        usage = subprocess.run([os.path.join(REPO, "fosr-collector"), "-h"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT).stdout.decode()
        opts = set(re.findall(r"(?<![\w-])(--[a-zA-Z][\w-]*|-[a-zA-Z])\b", usage))
        self.assertGreaterEqual(len(opts), 15, usage)
        for o in sorted(opts):
            self.assertIn(o, texts["fosr-collector"], "option %s not in fosr-collector(8)" % o)
        # every key of the example configuration is in fosr-collector.yml(5)
        with open(os.path.join(REPO, "etc", "fosr-collector.yml")) as f:
            conf = f.read()
        keys = set(re.findall(r"(?m)^#? ?([a-z_]+):", conf))
        keys |= set(re.findall(r"(?m)^#?\s+([a-z_]+):", conf))
        self.assertGreater(len(keys), 50, keys)
        for k in sorted(keys):
            self.assertRegex(texts["fosr-collector.yml"], r"\b%s\b" % re.escape(k),
                             "key %s not in fosr-collector.yml(5)" % k)


class LogRotate(CollectorTestCase):
    """etc/logrotate.d/fosr-collector run by logrotate -f, twice, while mail
    comes in: every event line is kept (across the new file, the rotated one
    and the compressed one) and the spool is not touched."""
    config = {"event_log": "{tmp}/fosr-events.json", "spool": {"directory": "{tmp}/spool"}}

    def snippet(self):
        with open(SNIPPET) as f:
            text = f.read()
        # it names the event log the unit writes, and nothing else
        paths = re.findall(r"(?m)^(\S[^{\n]*?)\s*\{", text)
        self.assertEqual(paths, [UNIT_EVENT_LOG], text)
        self.assertNotIn("spool", re.sub(r"(?m)#.*$", "", text))
        self.assertIn("\tcreate 0640\n", text)
        # for the test: this daemon's event log, and SIGHUP to it by pid
        reload_line = re.search(r"(?m)^\s*if systemctl .*reload fosr-collector.service; fi$", text)
        self.assertIsNotNone(reload_line, text)
        text = text.replace(reload_line.group(0), "\t\tkill -HUP %d" % self.c.pid)
        text = text.replace(UNIT_EVENT_LOG, self.c.event_log)
        path = os.path.join(self.tmpdir, "logrotate.conf")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        return path

    def rotate(self, conf):
        p = subprocess.run(["logrotate", "-v", "-f", "-s", os.path.join(self.tmpdir, "lr.state"), conf],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertNotIn("/spool", out)
        return out

    def spool_files(self):
        """The spool's files by inode, but for those the daemon itself replaces
        by an atomic rename (the outputs' cursors, the campaign table)."""
        out = {}
        for d, _, files in os.walk(self.c.spool_dir):
            for f in files:
                if f.endswith(".cursor") or f == "campaigns" or ".tmp" in f:
                    continue
                p = os.path.join(d, f)
                out[p] = os.lstat(p).st_ino
        return out

    def test_rotation_keeps_every_event(self):
        if shutil.which("logrotate") is None:
            self.skipTest("logrotate not installed (Debian package logrotate)")
        conf = self.snippet()
        sent = []
        stop = threading.Event()
        errors = []

        def sender():
            try:
                s = smtplib.SMTP(HOST, self.c.ports["smtp"], timeout=30 * self.slow)
                s.ehlo("rotate.client")
                i = 0
                while not stop.is_set() or i < 20:
                    body = ("Subject: rotate %d\r\n\r\nline %d\r\n" % (i, i)).encode()
                    s.sendmail("a@example.org", ["b@example.net"], body)
                    sent.append(i)
                    i += 1
                s.quit()
            except Exception as e:      # noqa: BLE001 - reported by the test
                errors.append(e)

        t = threading.Thread(target=sender)
        t.start()
        try:
            self.wait_for(lambda: len(sent) >= 20, "20 mails before the first rotation")
            before = self.spool_files()
            self.rotate(conf)
            n = len(sent)
            self.wait_for(lambda: len(sent) >= n + 20, "20 mails between the rotations")
            self.rotate(conf)
            n = len(sent)
            self.wait_for(lambda: len(sent) >= n + 20, "20 mails after the second rotation")
        finally:
            stop.set()
            t.join(120)
        self.assertEqual(errors, [])
        log = self.c.event_log
        self.assertTrue(os.path.exists(log + ".1"), os.listdir(self.tmpdir))
        self.assertTrue(os.path.exists(log + ".2.gz"), os.listdir(self.tmpdir))

        def received():
            lines = []
            for p, opener in ((log + ".2.gz", gzip.open), (log + ".1", open), (log, open)):
                with opener(p, "rb") as f:
                    lines += f.read().splitlines()
            evs = [json.loads(ln) for ln in lines]     # every line whole
            return [e for e in evs if e["eventid"] == "fosr.mail.received"]
        self.wait_for(lambda: len(received()) >= len(sent), "every mail's event")
        evs = received()
        self.assertEqual(len(evs), len(sent))
        self.assertEqual(len({e["queue_id"] for e in evs}), len(sent), "an event twice")
        # the spool: every file there before is still there, the same file
        after = self.spool_files()
        segs = os.path.join(self.c.spool_dir, "segments")
        for p, ino in before.items():
            # A sealed segment of the write-ahead log is deleted by the
            # spool's checkpoint thread (35 s after its seal, sooner when
            # asked): gone is its normal end, replaced never.
            if p not in after and os.path.dirname(p) == segs:
                continue
            self.assertEqual(after.get(p), ino, "spool file %s moved or replaced" % p)
        self.assertEqual([p for p in after if re.search(r"\.gz$|\.json\.\d+$|-\d{8}$", p)], [])

    def wait_for(self, cond, what, timeout=60):
        end = time.time() + timeout * self.slow
        while not cond():
            if time.time() > end:
                raise AssertionError("timed out waiting for " + what)
            time.sleep(0.05)


if __name__ == "__main__":
    unittest.main()
