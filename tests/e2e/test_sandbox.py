"""Least privilege of the running daemon (src/sandbox.c), seen from outside:
every thread without a capability, with no_new_privs and under the seccomp
filter; mail, TLS, SIGHUP and a graceful stop still work under it; the
filter can be turned off; the optional chroot.

That a forbidden system call kills the process is tested in
tests/unit/test_sandbox.c (a forked child calls one).  Every other e2e test
runs under the filter too: a call it does not allow would end the daemon by
SIGSYS, and CollectorTestCase requires exit status 0.
"""

import os
import shutil
import signal
import tempfile
import threading
import time
import unittest

from harness import (Collector, CollectorTestCase, binary_default, is_sanitized,
                     under_valgrind, with_config)
from fixtures.fakedns import FakeDNS

BODY = b"Subject: sandbox\r\nFrom: a@example.org\r\n\r\nunder the filter\r\n"


def no_leak_check_env():
    """LeakSanitizer lists threads in /proc/<pid>/task: not there in a chroot."""
    if not is_sanitized(binary_default()):
        return {}
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "detect_leaks=0"}


def task_status(pid):
    """{tid: {field: value}} from /proc/<pid>/task/*/status."""
    out = {}
    base = "/proc/%d/task" % pid
    for tid in os.listdir(base):
        try:
            with open(os.path.join(base, tid, "status")) as f:
                fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except FileNotFoundError:
            continue
        out[int(tid)] = {k: v.strip() for k, v in fields.items()}
    return out


class Sandbox(CollectorTestCase):
    """The default configuration: seccomp on, no chroot (valgrind cannot
    run a seccomp filter: there the filter is off and only the rest checked)."""

    config = {"sandbox": {"seccomp": not under_valgrind()}}

    def assert_confined(self, seccomp, wait=True):
        # the ports listen before the sandbox is entered; the start event is after
        if wait:
            self.c.wait_event("fosr.collector.start")
        tasks = task_status(self.c.proc.pid)
        # main loop, spool worker, relay worker at least
        self.assertGreaterEqual(len(tasks), 3, tasks.keys())
        for tid, st in tasks.items():
            for cap in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
                self.assertEqual(int(st[cap], 16), 0, "thread %d %s=%s" % (tid, cap, st[cap]))
            self.assertEqual(st["NoNewPrivs"], "1", "thread %d" % tid)
            self.assertEqual(st["Seccomp"], "2" if seccomp else "0", "thread %d" % tid)
        return tasks

    def test_every_thread_confined(self):
        tasks = self.assert_confined(not under_valgrind())
        if os.geteuid() == 0:
            # started as root: the bounding set was emptied before the drop
            main = tasks[self.c.proc.pid]
            self.assertEqual(int(main["CapBnd"], 16), 0, main["CapBnd"])

    def test_work_under_the_filter(self):
        """Mail over STARTTLS and implicit TLS, SIGHUP (event log reopened,
        rules reloaded), more mail, then a graceful stop with status 0."""
        self.assert_confined(not under_valgrind())
        cl, qid = self.send_mail(BODY, tls=True)
        self.assert_stored(BODY, qid)
        self.assertEqual(cl.cmd("QUIT").code, 221)
        log = self.c.event_log
        os.rename(log, log + ".1")
        self.c.signal(signal.SIGHUP)
        body2 = BODY.replace(b"under the filter", b"after SIGHUP")
        cl2, qid2 = self.send_mail(body2, name="submissions")
        self.assert_stored(body2, qid2)
        self.assertTrue(os.path.exists(log), "event log not reopened after SIGHUP")
        self.assert_confined(not under_valgrind(), wait=False)
        self.assertEqual(self.c.stop(), 0, self.c.stderr_tail())

    @with_config({"sandbox": {"seccomp": False}})
    def test_seccomp_off(self):
        """seccomp: false leaves the filter out, never the capability drop."""
        self.assert_confined(False)
        cl, qid = self.send_mail(BODY)
        self.assert_stored(BODY, qid)


@unittest.skipUnless(os.geteuid() == 0, "chroot needs root")
class Chroot(CollectorTestCase):
    """sandbox.chroot: paths after start (spool, event log) are inside it."""

    config = {
        "sandbox": {"seccomp": not under_valgrind(), "chroot": "{tmp}/root"},
        "spool": {"directory": "/spool"},
        "event_log": "/events.json",
    }
    autostart = False

    @with_config(env=no_leak_check_env())
    def test_chroot_spool_inside(self):
        root = os.path.join(self.tmpdir, "root")
        os.mkdir(root)
        self.c.start()
        # the harness reads files from outside the chroot
        self.c.spool_dir = os.path.join(root, "spool")
        self.c.event_log = os.path.join(root, "events.json")
        # the ports listen before the chroot; the start event is after it
        self.c.wait_event("fosr.collector.start")
        self.assertEqual(os.readlink("/proc/%d/root" % self.c.proc.pid), root)
        cl, qid = self.send_mail(BODY)
        self.assert_stored(BODY, qid)

    def test_dns_ids_unpredictable(self):
        """c-ares keys its query IDs from /dev/urandom when it creates a
        channel, else from rand() (which GMime seeds with time(NULL)): the
        client lookup's channel is created before the chroot, so two daemons
        started in the same second ask with different IDs."""
        dns = FakeDNS({}).start()
        self.addCleanup(dns.stop)
        cfg = {"sandbox": {"seccomp": not under_valgrind(), "chroot": "{tmp}/root"},
               "spool": {"directory": "/spool"}, "event_log": "/events.json",
               "client_lookup": {"dns_server": dns.address}}
        pair = []
        for _ in range(2):
            c = Collector(tempfile.mkdtemp(prefix="fosr-e2e-"), config=cfg,
                          env=no_leak_check_env())
            self.addCleanup(shutil.rmtree, c.tmpdir, True)
            self.addCleanup(lambda c=c: c.running and c.stop())
            os.mkdir(os.path.join(c.tmpdir, "root"))
            pair.append(c)
        # both start early in one second: GMime seeds rand() with time(NULL)
        time.sleep(1.05 - time.time() % 1)
        th = threading.Thread(target=pair[1].start)
        th.start()
        pair[0].start()
        th.join()
        ids = []
        for c in pair:
            root = os.path.join(c.tmpdir, "root")
            c.spool_dir = os.path.join(root, "spool")
            c.event_log = os.path.join(root, "events.json")
            c.wait_event("fosr.collector.start")
            n = len(dns.query_ids)
            c.connect("smtp").close()
            end = time.time() + 10 * self.slow
            while len(dns.query_ids) == n and time.time() < end:
                time.sleep(0.02)
            self.assertGreater(len(dns.query_ids), n, "no client lookup")
            ids.append(dns.query_ids[n])
        for c in pair:
            self.assertEqual(c.stop(), 0, c.stderr_tail())
        self.assertNotEqual(ids[0], ids[1], "the same first query ID in two daemons")


if __name__ == "__main__":
    unittest.main()
