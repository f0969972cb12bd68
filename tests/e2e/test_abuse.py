"""Abuse scenarios (issue 5, "Hostile input"): slowloris, connection floods,
a 1 GiB DATA stream, a pipelining flood, malformed line endings, garbage on
the implicit-TLS port, TLS renegotiation and SMTP smuggling.

STARTTLS injection is covered by test_tls.py (test_starttls_injection_*);
bare LF, NUL and long lines inside DATA by test_smtp.py
(test_bare_lf_nul_long_line_recorded): not repeated here.
"""

import os
import select
import smtplib
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

from harness import (HOST, CollectorTestCase, SMTPRaw, have, is_sanitized,
                     lean_asan_env, queue_id, sha256_hex, skip_under_valgrind,
                     under_valgrind, with_config)
from fixtures import fakedns
from fixtures.abuse import (Trickler, fd_count, loopback_sources, proc_status,
                            raise_nofile, wait_until)


def body_for(tag):
    return b"From: a@example.org\r\nTo: b@example.net\r\nSubject: %s\r\n\r\nbody %s\r\n" % (
        tag.encode(), tag.encode())


class AbuseCase(CollectorTestCase):

    def smtplib_mail(self, tag, source="127.0.0.2"):
        """One whole transaction with smtplib from source; returns (seconds, sha)."""
        body = body_for(tag)
        t0 = time.time()
        s = smtplib.SMTP(HOST, self.c.ports["smtp"], timeout=10 * self.slow,
                         source_address=(source, 0))
        try:
            s.ehlo("normal.example")
            s.sendmail("a@example.org", ["b@example.net"], body)
        finally:
            s.quit()
        return time.time() - t0, sha256_hex(body)

    def baseline_fds(self):
        """The daemon's descriptor count once it is idle."""
        time.sleep(0.2)
        return fd_count(self.c.pid)

    def assert_fds_back(self, base, slack=3):
        ok = wait_until(lambda: fd_count(self.c.pid) <= base + slack, 10 * self.slow, 0.2)
        self.assertTrue(ok, "daemon holds %d descriptors, %d before the abuse"
                        % (fd_count(self.c.pid), base))


class Slowloris(AbuseCase):
    """1500 sessions from 40 addresses, each trickling one byte every 1.5 s of
    a header-like line that never ends.  The global cap is raised to 4000 for
    the test (the default, 1000, would itself lock out the normal client)."""

    SESSIONS = 1500

    @skip_under_valgrind("1500 trickling sessions")
    @with_config({"limits": {"sessions": 4000, "sessions_per_ip": 50, "idle_timeout": 300}})
    def test_slowloris_normal_client_still_served(self):
        raise_nofile(self.SESSIONS + 1024)
        base = self.baseline_fds()
        tr = Trickler(self.c.ports["smtp"], self.SESSIONS, loopback_sources(40), interval=1.5)
        try:
            up = tr.open(timeout=30 * self.slow)
            self.assertEqual(up, self.SESSIONS, "connections established: %d" % up)
            tr.start()
            # every trickling session is a session of the daemon
            ok = wait_until(lambda: fd_count(self.c.pid) >= base + self.SESSIONS - 5,
                            15 * self.slow, 0.2)
            self.assertTrue(ok, "daemon holds %d fds, expected about %d"
                            % (fd_count(self.c.pid), base + self.SESSIONS))
            # Served: each mail is taken and stored while the 1500 sessions
            # trickle.  A starved client hits smtplib's timeout (10 s per
            # step, a liveness bound); how fast it is served is a figure,
            # printed (a latency bound measured the loaded CI machine).
            lat = []
            for i in range(5):
                dt, sha = self.smtplib_mail("during slowloris %d" % i)
                lat.append(dt)
                self.assertIn(sha, self.c.messages())
                time.sleep(0.5)
            print(" [normal client under slowloris: %s s] " % ", ".join("%.2f" % x for x in lat),
                  end="", file=sys.stderr)
            self.assertEqual(tr.closed_by_peer, 0,
                             "trickling sessions closed early (idle timer not reset?)")
            self.assertGreater(tr.sent, self.SESSIONS)
        finally:
            tr.stop()
        self.assertTrue(self.c.running)
        self.assert_fds_back(base)


class Flood(AbuseCase):

    @with_config({"limits": {"sessions": 120, "sessions_per_ip": 50}})
    def test_caps_421_and_no_fd_leak(self):
        base = self.baseline_fds()
        held = []
        codes = {}

        def grab(source, n):
            for _ in range(n):
                s = SMTPRaw(HOST, self.c.ports["smtp"], timeout=10 * self.slow,
                            source_address=(source, 0))
                r = s.reply()
                codes.setdefault(source, []).append(r.code)
                if r.code == 220:
                    held.append(s)
                else:
                    self.assertEqual(r.code, 421, r)
                    self.assertTrue(s.wait_closed(5 * self.slow))
                    s.close()

        try:
            # one address: 50 admitted, then "too many connections"
            grab("127.0.0.10", 60)
            self.assertEqual(codes["127.0.0.10"].count(220), 50, codes)
            self.assertEqual(codes["127.0.0.10"].count(421), 10, codes)
            # more addresses: the global cap (120) is reached
            for src in ("127.0.0.11", "127.0.0.12"):
                grab(src, 40)
            allc = sum(codes.values(), [])
            self.assertEqual(allc.count(220), 120, codes)
            # sessions_per_ip is answered by a session (after the client
            # lookup, as Postfix): its event may follow the reply
            def reasons():
                return {e.get("reason") for e in self.c.events()
                        if e.get("eventid") == "fosr.session.refused"}
            wait_until(lambda: reasons() == {"sessions", "sessions_per_ip"}, 5 * self.slow, 0.05)
            self.assertEqual(reasons(), {"sessions", "sessions_per_ip"})
        finally:
            for s in held:
                s.close()
        self.assert_fds_back(base)

    @with_config({"limits": {"sessions": 2000, "sessions_per_ip": 2000}})
    def test_accept_queue_holds_a_burst(self):
        """A burst of connections while the daemon cannot accept (stopped with
        SIGSTOP) waits in the kernel's accept queue, as deep as
        net.core.somaxconn allows.  libevent re-listens with a backlog of 128
        unless told the socket already listens: then a burst loses its SYNs and
        each such client stalls a second or more for its retransmission."""
        with open("/proc/sys/net/core/somaxconn") as f:
            somax = int(f.read())
        n = min(600, somax - 8)
        if n < 300:
            self.skipTest("net.core.somaxconn is %d" % somax)
        raise_nofile(n + 200)
        port = self.c.ports["smtp"]
        socks = []
        os.kill(self.c.pid, signal.SIGSTOP)
        try:
            for _ in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex((HOST, port))
                socks.append(s)
            # a handshake on loopback completes at once in the kernel, or
            # its SYN was dropped and the retransmission is a second away
            p = select.poll()
            for s in socks:
                p.register(s, select.POLLOUT)
            done = set()
            end = time.time() + 0.8
            while time.time() < end and len(done) < n:
                for fd, ev in p.poll(50):
                    done.add(fd)
                    p.unregister(fd)
            handshaken = [s for s in socks if s.fileno() in done and
                          s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
        finally:
            os.kill(self.c.pid, signal.SIGCONT)
        try:
            self.assertEqual(len(handshaken), n,
                             "%d of %d connections made while the daemon was stopped"
                             % (len(handshaken), n))
            # and every one of them is served once it runs again
            for s in handshaken:
                s.setblocking(True)
                s.settimeout(10 * self.slow)
                self.assertTrue(s.recv(4).startswith(b"220"))
        finally:
            for s in socks:
                s.close()
        self.assertTrue(self.c.running)


class ConnectStorm(AbuseCase):

    # With client lookups against a fake DNS that never answers the storm's
    # PTR queries: each storm connection leaves a lookup pending after its
    # client left (c-ares cannot cancel one query) until the query's end (the
    # daemon gives c-ares a try of a third of timeout_ms, at most 5 s, then
    # one twice as long: 15 s here).  Pending lookups are capped
    # (DNS_PEER_PENDING_MAX, 256): past it a client is "unknown" at once, and
    # the normal client is still answered.  Before the cap every connection
    # added a pending query (F6: thousands, ~9 KB each).  The storm stops by
    # itself at STORM_END s; the daemon may take its queued connections later
    # still, so the queries are counted in a window where no lookup has ended.
    STORM_END = 11
    STORM_MIN = 300     # connections: more than the cap, or the cap is not tested
    STORM_MAX = 8000    # and no more: every session's events are checked
                        # against the schema at tearDown (~10 ms a session)

    def setUp(self):
        self.dns = fakedns.FakeDNS({}).start()
        self.config = {"limits": {"sessions": 200, "sessions_per_ip": 20},
                       "client_lookup": {"dns_server": self.dns.address, "timeout_ms": 60000}}
        super().setUp()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.dns.stop()

    def test_connect_close_storm(self):
        """8 threads open and drop connections as fast as they can for a few
        seconds (some send a command first, some reset the connection)."""
        base = self.baseline_fds()
        stop = threading.Event()
        counts = {"conn": 0, "err": 0}
        port = self.c.ports["smtp"]
        storm_ptrs = {"%d.0.0.127.in-addr.arpa" % (20 + k) for k in range(8)}
        for name in storm_ptrs:
            self.dns.table[name] = "DROP"
        t0 = time.time()
        end = t0 + self.STORM_END

        def storm(k):
            i = 0
            while not stop.is_set() and time.time() < end and counts["conn"] < self.STORM_MAX:
                i += 1
                try:
                    s = socket.create_connection((HOST, port), 5 * self.slow,
                                                 source_address=("127.0.0.%d" % (20 + k), 0))
                    if i % 3 == 0:
                        s.sendall(b"EHLO storm\r\n")
                    if i % 5 == 0:
                        # RST instead of FIN
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                    s.close()
                    counts["conn"] += 1
                except OSError:
                    counts["err"] += 1

        ths = [threading.Thread(target=storm, args=(k,), daemon=True) for k in range(8)]
        try:
            for t in ths:
                t.start()
            # The normal client comes once the storm is a storm: past 600
            # connections and 4 s in (or half its connections made, so that
            # it still storms), at the latest 4 s before the storm's end.  A
            # rate bound (500 connections in a fixed 4 s) measured this
            # test's own threads on a loaded machine, not the daemon.
            while ((counts["conn"] < 600 or
                    (time.time() - t0 < 4 and counts["conn"] < self.STORM_MAX // 2))
                   and time.time() < end - 4 and self.c.running):
                time.sleep(0.1)
            # the daemon answers a normal client in the middle of the storm (a
            # client left unanswered hits smtplib's timeout: a liveness bound)
            dt, sha = self.smtplib_mail("during storm", source="127.0.0.2")
        finally:
            # whatever happened, the storm ends with the test (a failure here
            # once left 8 threads hammering loopback through the next tests)
            stop.set()
            for t in ths:
                t.join(10)
        print("storm: %d connections in %.1f s, normal mail in %.2f s"
              % (counts["conn"], time.time() - t0, dt))
        self.assertGreaterEqual(counts["conn"], self.STORM_MIN,
                                "the storm was too small to test the cap: %s" % counts)
        self.assertTrue(self.c.running)
        # Each pending lookup's PTR query at most twice (c-ares tries 2).
        # No lookup ends before 15 s after its first query (a 5 s try, then
        # a 10 s one), so within 14 s of the storm's first query at most 256
        # lookups were started, at most 512 queries asked.  Counted in that
        # window only: under load the daemon still takes the storm's queued
        # connections well after the storm, when the first lookups have
        # ended and freed their slots (ASan on a loaded machine here: the
        # normal mail took 20 s, the storm 25 s).
        times = [t for q, t in zip(self.dns.queries, self.dns.query_times) if q[0] in storm_ptrs]
        self.assertGreater(len(times), 0)
        window = [t for t in times if t < times[0] + 14]
        self.assertLessEqual(len(window), 2 * 256,
                             "%d storm PTR queries within 14 s (%d in all, %d connections)"
                             % (len(window), len(times), counts["conn"]))
        self.assert_fds_back(base)
        self.assertIn(sha, self.c.messages())


class BigData(AbuseCase):

    @skip_under_valgrind("1 GiB through memcheck, and a VmHWM bound")
    @with_config({"limits": {"message_size": 1048576}}, env=lean_asan_env())
    def test_gigabyte_data_552_memory_flat(self):
        total = (256 if is_sanitized(self.c.binary) else 1024) << 20
        hwm0 = proc_status(self.c.pid, "VmHWM")
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<big@example.org>", 250)
        cl.expect("RCPT TO:<r@example.net>", 250)
        cl.expect("DATA", 354)
        chunk = (b"y" * 1022 + b"\r\n") * 1024          # 1 MiB of 1 KiB lines
        cl.sock.settimeout(60 * self.slow)
        t0 = time.time()
        sent = 0
        while sent < total:
            cl.sock.sendall(chunk)
            sent += len(chunk)
        cl.send(b".\r\n")
        r = cl.reply()
        dt = time.time() - t0
        self.assertEqual(r.first, "552 5.3.4 Error: message file too big")
        hwm1 = proc_status(self.c.pid, "VmHWM")
        grew = hwm1 - hwm0
        self.assertLess(grew, 16 * 1024, "VmHWM grew by %d kB on a %d MiB DATA" % (grew, total >> 20))
        if not is_sanitized(self.c.binary):
            self.assertLess(hwm1, 64 * 1024, "VmHWM %d kB" % hwm1)
        self.assertEqual(self.c.messages(), {})
        self.assertEqual(self.c.journal(), [])
        tmp = os.path.join(self.c.spool_dir, "tmp")
        if os.path.isdir(tmp):
            self.assertEqual(os.listdir(tmp), [])
        # the session goes on
        self.assertEqual(cl.cmd("NOOP").code, 250)
        body = body_for("after the gigabyte")
        cl.expect("MAIL FROM:<a@example.org>", 250)
        cl.expect("RCPT TO:<b@example.net>", 250)
        self.assert_stored(body, queue_id(cl.data(body)))
        print(" [%d MiB in %.1f s] " % (total >> 20, dt), end="", file=sys.stderr)


# What a session may hold in memory however it is driven (README, "Memory is
# bounded"): the recipients of a transaction past 8 KiB go to a file, a body
# past 64 KiB, and the rest is capped (AUTH lines, sender, input, replies).
SESSION_BOUND_KB = 100


def session_bound_kb(binary):
    """ASan's redzones and quarantine roughly double small allocations: not the
    daemon's footprint, so its builds get twice the bound."""
    return SESSION_BOUND_KB * (2 if is_sanitized(binary) else 1)


def long_rcpt(i, size=2000):
    """A distinct recipient of size bytes (Postfix takes up to its 2048-byte line)."""
    head = "r%04d-" % i
    tail = "@example.net"
    return head + "x" * (size - len(head) - len(tail)) + tail


class RecipientFlood(AbuseCase):
    """1000 recipients of 2000 bytes per transaction (Postfix accepts them all):
    they used to be kept in memory, 2 MB a session, 2 GB at the default 1000
    sessions."""

    def fill(self, cl, n=1000, size=2000):
        cl.ehlo()
        cl.expect("MAIL FROM:<flood@example.org>", 250)
        rcpts = [long_rcpt(i, size) for i in range(n)]
        # Pipelined by hundreds (Postfix answers each): the replies are read as we go.
        for k in range(0, n, 100):
            cl.send(b"".join(b"RCPT TO:<" + r.encode() + b">\r\n" for r in rcpts[k:k + 100]))
            for _ in rcpts[k:k + 100]:
                r = cl.reply()
                self.assertEqual(r.first, "250 2.1.5 Ok", r)
        return rcpts

    @skip_under_valgrind("an RSS bound")
    @with_config({"limits": {"sessions_per_ip": 100}}, env=lean_asan_env())
    def test_recipient_flood_memory_per_session_bounded(self):
        n = 20
        warm = self.client()
        self.fill(warm, 50)
        warm.cmd("RSET")
        rss0 = proc_status(self.c.pid, "VmRSS")
        clients = []
        for _ in range(n):
            cl = self.client()
            self.fill(cl)
            clients.append(cl)
        rss1 = proc_status(self.c.pid, "VmRSS")
        per = (rss1 - rss0) / n
        print(" [%d sessions x 1000 rcpts of 2000 B: RSS %d -> %d kB, %.1f kB/session] "
              % (n, rss0, rss1, per), end="", file=sys.stderr)
        self.assertLessEqual(per, session_bound_kb(self.c.binary),
                             "RSS grew %.0f kB per session holding 1000 long recipients" % per)
        # Every session can still finish its mail.
        for i, cl in enumerate(clients[:3]):
            body = body_for("flood %d" % i)
            self.assertEqual(cl.data(body).code, 250)
        for cl in clients:
            cl.cmd("QUIT")

    @skip_under_valgrind("an RSS bound")
    @with_config({"limits": {"sessions_per_ip": 100}}, env=lean_asan_env())
    def test_everything_at_once_per_session_bounded(self):
        """Every per-session buffer a client can fill, filled at once: an AUTH
        line of 12 KB, a 2000-byte sender, 1000 recipients of 2000 bytes, an
        unfinished body of 61 KiB (the spool's in-memory buffer)."""
        import base64
        n = 20
        warm = self.client()
        self.fill(warm, 50)
        warm.cmd("RSET")
        rss0 = proc_status(self.c.pid, "VmRSS")
        clients = []
        sender = "s" * (2000 - len("@example.org")) + "@example.org"
        for i in range(n):
            cl = self.client()
            cl.ehlo()
            sasl = base64.b64encode(b"\0" + b"u" * 4000 + b"\0" + b"p" * 5000).decode()
            # Too long for a real login (535), but its 12 KB line is kept for the record.
            self.assertIn(cl.cmd("AUTH PLAIN " + sasl).code, (235, 535))
            cl.expect("MAIL FROM:<%s>" % sender, 250)
            for k in range(0, 1000, 100):
                cl.send(b"".join(b"RCPT TO:<" + long_rcpt(j).encode() + b">\r\n"
                                 for j in range(k, k + 100)))
                for _ in range(100):
                    self.assertEqual(cl.reply().code, 250)
            cl.expect("DATA", 354)
            cl.send((b"z" * 1022 + b"\r\n") * 61)
            clients.append(cl)
        # The body bytes are in once the spool's tmp/ holds nothing more and the
        # input is drained: wait for the RSS to settle rather than a fixed time.
        last, rss1 = None, proc_status(self.c.pid, "VmRSS")
        end = time.time() + 5 * self.slow
        while rss1 != last and time.time() < end:
            time.sleep(0.2)
            last, rss1 = rss1, proc_status(self.c.pid, "VmRSS")
        per = (rss1 - rss0) / n
        print(" [%d hostile sessions: RSS %d -> %d kB, %.1f kB/session] "
              % (n, rss0, rss1, per), end="", file=sys.stderr)
        self.assertLessEqual(per, session_bound_kb(self.c.binary),
                             "RSS grew %.0f kB per hostile session" % per)
        cl = clients[0]
        cl.send(b".\r\n")
        self.assertEqual(cl.reply().code, 250)
        for cl in clients:
            cl.close()

    def test_thousand_long_recipients_all_recorded(self):
        cl = self.client()
        rcpts = self.fill(cl)
        # The 1001st: Postfix's 452, the transaction goes on.
        r = cl.cmd("RCPT TO:<one-too-many@example.net>")
        self.assertEqual(r.first, "452 4.5.3 Error: too many recipients", r)
        body = body_for("thousand")
        qid = queue_id(cl.data(body))
        cl.cmd("QUIT")
        rec, ev = self.assert_stored(body, qid)
        self.assertEqual(rec["rcpt_to"], rcpts)
        self.assertEqual(ev["rcpt_to"], rcpts)
        # Nothing is left behind in the spool's tmp/.
        self.assertEqual(os.listdir(os.path.join(self.c.spool_dir, "tmp")), [])

    @with_config({"spool": {"max_bytes": 4096}})
    def test_spilled_recipients_respect_spool_quota(self):
        """Spilled recipients are spool bytes: over spool.max_bytes they get
        the queue-file write error, the session goes on."""
        cl = self.client()
        cl.ehlo()
        body = b"Subject: fill\r\n\r\n" + b"f" * 3000 + b"\r\n"
        cl.expect("MAIL FROM:<a@example.org>", 250)
        cl.expect("RCPT TO:<b@example.net>", 250)
        self.assert_stored(body, queue_id(cl.data(body)))
        cl.expect("MAIL FROM:<a@example.org>", 250)
        codes = [cl.cmd("RCPT TO:<%s>" % long_rcpt(i)).code for i in range(6)]
        # Four fit in memory (8 KiB); the fifth would go to the spool's disk.
        self.assertEqual(codes[:4], [250] * 4, codes)
        self.assertEqual(codes[4:], [451, 451], codes)
        cl.expect("RSET", 250)
        self.assertEqual(cl.cmd("NOOP").code, 250)

    @with_config({"spool": {"max_bytes": 65536}, "limits": {"sessions_per_ip": 100}})
    def test_spilled_recipients_count_toward_spool_quota(self):
        """Each recipient was checked alone against spool.max_bytes, the
        spilled bytes never counted: one session spilled 2 MB into a 64 KiB
        spool, N sessions N times that.  Spilled bytes are spool bytes until
        the transaction ends; then they are given back."""
        sessions, taken = [], 0
        for _ in range(4):
            cl = self.client()
            cl.ehlo()
            cl.expect("MAIL FROM:<a@example.org>", 250)
            for k in range(0, 100, 25):
                cl.send(b"".join(b"RCPT TO:<" + long_rcpt(i).encode() + b">\r\n"
                                 for i in range(k, k + 25)))
                taken += sum(cl.reply().code == 250 for _ in range(25))
            sessions.append(cl)
        # 4 in memory per session (8 KiB), then at most 64 KiB of spill in all.
        self.assertLessEqual(taken, 4 * 4 + 65536 // 2000, taken)
        for cl in sessions:
            cl.expect("RSET", 250)
        # Given back at RSET: a new transaction spills again.
        cl = sessions[0]
        cl.expect("MAIL FROM:<a@example.org>", 250)
        codes = [cl.cmd("RCPT TO:<%s>" % long_rcpt(i)).code for i in range(8)]
        self.assertEqual(codes, [250] * 8, codes)

    @skip_under_valgrind("an RSS bound")
    @with_config({"limits": {"sessions_per_ip": 100}}, env=lean_asan_env())
    def test_messages_ended_together_memory_bounded(self):
        """Sessions that end their messages at the same moment each held
        their reception record and the rules' copy of the recipients (3.7 MB
        for 1000 of 2,000 bytes) while their commits queued behind the one
        spool worker: 40 of them took 150 MB.  A global budget (32 MiB of
        estimated commit memory) makes further ends wait; all are stored."""
        n = 40
        rc = b"".join(b"RCPT TO:<" + long_rcpt(i).encode() + b">\r\n" for i in range(1000))
        clients = []
        for k in range(n):
            cl = self.client()
            cl.ehlo()
            cl.expect("MAIL FROM:<a@example.org>", 250)
            cl.send(rc)
            for _ in range(1000):
                self.assertEqual(cl.reply().code, 250)
            cl.expect("DATA", 354)
            cl.send(body_for("together %d" % k))
            clients.append(cl)
        rss0 = proc_status(self.c.pid, "VmRSS")
        for cl in clients:
            cl.send(b".\r\n")
        qids = [queue_id(cl.reply()) for cl in clients]
        peak = proc_status(self.c.pid, "VmHWM") - rss0
        print(" [%d sessions end together: peak +%d kB] " % (n, peak), end="", file=sys.stderr)
        self.assertLessEqual(peak, (64 if is_sanitized(self.c.binary) else 48) * 1024,
                             "%d sessions ending at once grew the peak by %d kB" % (n, peak))
        for k in (0, n // 2, n - 1):
            rec, _ = self.assert_stored(body_for("together %d" % k), qids[k])
            self.assertEqual(len(rec["rcpt_to"]), 1000)

    def test_spilled_recipients_dropped_on_rset(self):
        """RSET, a new MAIL and a small transaction: only its own recipient."""
        cl = self.client()
        self.fill(cl, 20)
        cl.expect("RSET", 250)
        cl.expect("MAIL FROM:<a@example.org>", 250)
        cl.expect("RCPT TO:<only@example.net>", 250)
        body = body_for("after rset")
        rec, _ = self.assert_stored(body, queue_id(cl.data(body)))
        self.assertEqual(rec["rcpt_to"], ["only@example.net"])


class PipeliningFlood(AbuseCase):
    """Commands written without reading a single reply.  The daemon must not
    queue replies without bound: it stops reading at its output high-water
    mark, or ends the session (as Postfix, NOOP/RSET/VRFY/ETRN/HELO/EHLO are
    junk commands: past 100 each one is an error, and the hard error limit
    ends the session with 421).  Either way memory stays flat and other
    clients are served promptly."""

    def flood(self, line, limit=64 << 20, seconds=10):
        hwm0 = proc_status(self.c.pid, "VmHWM")
        base = self.baseline_fds()
        cl = self.client()
        cl.ehlo()
        cl.sock.setblocking(False)
        block = line * (65536 // len(line))
        sent = 0
        stalled = False
        closed = False
        quiet_since = None
        end = time.time() + seconds * self.slow
        while sent < limit and time.time() < end:
            try:
                sent += cl.sock.send(block)
                quiet_since = None
            except BlockingIOError:
                r, _, _ = select.select([cl.sock], [], [], 0)
                if r and b"421 " in cl.sock.recv(65536, socket.MSG_PEEK):
                    closed = True
                    break
                if quiet_since is None:
                    quiet_since = time.time()
                elif time.time() - quiet_since > 1.5:
                    stalled = True
                    break
                select.select([], [cl.sock], [], 0.2)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        self.assertTrue(stalled or closed, "daemon swallowed %d MiB of %r in %ds without pushing back"
                        % (sent >> 20, line, seconds))
        time.sleep(0.3)
        grew = proc_status(self.c.pid, "VmHWM") - hwm0
        if not under_valgrind():     # memcheck's own memory and speed
            self.assertLess(grew, 16 * 1024, "VmHWM grew by %d kB after %d kB of %r" % (grew, sent >> 10, line))
        # another client is served while the flooder is stuck (one left
        # unanswered hits smtplib's timeout, a liveness bound; the latency
        # itself is a figure: a bound measured the loaded machine)
        dt, sha = self.smtplib_mail("during pipelining flood")
        self.assertIn(sha, self.c.messages())
        print(" [normal mail during the flood: %.2f s] " % dt, end="", file=sys.stderr)
        # the flooder now reads: replies in order, 250s, perhaps one final 421
        cl.sock.setblocking(True)
        cl.sock.settimeout(20 * self.slow)
        want = sent // len(line)
        got = 0
        final = None
        buf = b""
        try:
            while got < want and final is None:
                d = cl.sock.recv(1 << 20)
                if not d:
                    break
                buf += d
                lines = buf.split(b"\r\n")
                buf = lines.pop()
                for ln in lines:
                    if ln.startswith(b"421 "):
                        self.assertIn(b"too many errors", ln)
                        final = ln
                        break
                    self.assertTrue(ln.startswith(b"250"), ln)
                    if ln.startswith(b"250 "):
                        got += 1
        except ConnectionResetError:
            pass
        cl.close()
        self.assertTrue(self.c.running)
        self.assert_fds_back(base)
        return sent, got, final

    @with_config({"limits": {"error_sleep": 0}}, env=lean_asan_env())
    def test_noop_flood_default_limits(self):
        """Postfix's limits, but no 1 s error sleep (it only makes the test slow)."""
        sent, got, final = self.flood(b"NOOP\r\n")
        self.assertIsNotNone(final, "no 421 after %d NOOPs (%d answered)" % (sent // 6, got))
        # 1 EHLO + up to 100 junk commands + hard_errors (20) errors
        self.assertLessEqual(got, 125, got)

    @with_config({"limits": {"hard_errors": 10000, "soft_errors": 10000, "error_sleep": 0}},
                 env=lean_asan_env())
    def test_ehlo_flood_backpressure(self):
        """Error limits at their maximum: 10,000 EHLOs with a ~150-byte reply
        each, i.e. megabytes of replies nobody reads."""
        sent, got, final = self.flood(b"EHLO flood.example\r\n")
        # Over loopback the kernel's socket buffers (tcp_wmem, up to 4 MiB)
        # absorb these 2 MB of replies, so the session is ended by the error
        # limit (10,000 + 100 junk + the first EHLO) before the daemon's own
        # 256 KiB output mark is reached.  Replies after the reset are lost.
        ev = self.c.wait_event("fosr.session.closed", lambda e: e.get("commands", 0) > 1000)
        self.assertIn(ev["reason"], ("too-many-errors", "eof", "error"), ev)
        self.assertLessEqual(ev["commands"], 10102, ev)


class LineEndings(AbuseCase):

    def test_bare_cr_in_data_recorded(self):
        body = b"Subject: cr\r\n\r\nbare\rcr here\r\nend\r\n"
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<a@example.org>", 250)
        cl.expect("RCPT TO:<b@example.net>", 250)
        rec, _ = self.assert_stored(body, queue_id(cl.data(body)))
        self.assertIn("bare_cr", rec["anomalies"], rec)

    def test_command_anomalies_recorded(self):
        """Bare LF, NUL and an overlong command line are answered as Postfix
        would and recorded, in the reception record and the session's end."""
        cl = self.client()
        cl.send(b"EHLO lf.example\n")
        r = cl.reply()
        self.assertEqual(r.code, 250, r)
        r = cl.cmd(b"NOOP \x00nul")
        self.assertIn(r.code, (250, 500, 501), r)
        r = cl.cmd(b"NOOP " + b"L" * 5000)
        self.assertEqual(r.code, 250, r)
        cl.expect("MAIL FROM:<a@example.org>", 250)
        cl.expect("RCPT TO:<b@example.net>", 250)
        body = body_for("command anomalies")
        rec, _ = self.assert_stored(body, queue_id(cl.data(body)))
        for a in ("command_bare_lf", "command_nul", "command_too_long"):
            self.assertIn(a, rec["anomalies"], rec)
        cl.cmd("QUIT")
        self.assertTrue(cl.wait_closed())
        ev = self.c.wait_event("fosr.session.closed", lambda e: e.get("src_port") == cl.local_port)
        for a in ("command_bare_lf", "command_nul", "command_too_long"):
            self.assertIn(a, ev.get("anomalies", []), ev)
        self.c.events(strict=True)
        self.c.journal(strict=True)

    def test_endless_nul_line_in_data(self):
        """A 5 MiB line of NUL bytes in DATA: stored exactly, recorded."""
        body = b"Subject: nul\r\n\r\n" + b"\0" * (5 << 20) + b"\r\n"
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<a@example.org>", 250)
        cl.expect("RCPT TO:<b@example.net>", 250)
        cl.sock.settimeout(30 * self.slow)
        rec, _ = self.assert_stored(body, queue_id(cl.data(body)))
        self.assertIn("nul", rec["anomalies"])
        self.assertIn("long_line", rec["anomalies"])


class ErrorSleep(AbuseCase):

    @with_config({"limits": {"message_size": 1024, "soft_errors": 1, "error_sleep": 1}})
    def test_reply_after_data_during_error_sleep_is_sent(self):
        """Regression for h14-2 (fixed): once soft_errors is reached, replies go to heldbuf, but
        only the command path (smtp_process after smtp_command) arms the
        release timer.  A 552/452/451 produced at the end of DATA (or in the
        spool commit callback) stays held until the idle timeout: the client
        waits 300 s.  Found with a full disk (test_faults.DiskFull)."""
        cl = self.client()
        cl.ehlo()
        self.assertEqual(cl.cmd("BOGUS").code, 500)     # 1 error = soft_errors
        cl.expect("MAIL FROM:<a@example.org>", 250)
        cl.expect("RCPT TO:<b@example.net>", 250)
        cl.expect("DATA", 354)
        cl.sock.settimeout(6 * self.slow)
        cl.send(b"Subject: big\r\n\r\n" + b"z" * 2000 + b"\r\n.\r\n")
        self.assertEqual(cl.reply().code, 552)


class Smuggling(AbuseCase):
    """Postfix 3.7.11 defaults (tests/persona/NOTES.md section 5): a '.' alone on
    a line ends DATA whatever the line ending (so <LF>.<LF> ends it: the
    smuggled commands run), <CR>.<CR> does not."""

    def open_data(self):
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<a@example.org>", 250)
        cl.expect("RCPT TO:<b@example.net>", 250)
        cl.expect("DATA", 354)
        return cl

    def test_lf_dot_lf_ends_message_smuggled_mail_accepted(self):
        cl = self.open_data()
        first = b"Subject: outer\r\n\r\nouter body\n"
        smuggled = b"Subject: smuggled\r\n\r\ninner body\r\n"
        cl.send(first + b".\nMAIL FROM:<s@evil.example>\r\nRCPT TO:<c@victim.example>\r\nDATA\r\n"
                + smuggled + b".\r\n")
        replies = [cl.reply() for _ in range(5)]
        self.assertEqual([r.code for r in replies], [250, 250, 250, 354, 250], replies)
        q1, q2 = queue_id(replies[0]), queue_id(replies[4])
        rec1, _ = self.assert_stored(first, q1)
        rec2, _ = self.assert_stored(smuggled, q2)
        self.assertIn("smuggling", rec1["anomalies"], rec1)
        self.assertIn("bare_lf", rec1["anomalies"], rec1)
        self.assertEqual(rec2["mail_from"], "s@evil.example")
        self.assertEqual(rec2["rcpt_to"], ["c@victim.example"])

    def test_crlf_dot_lf_and_lf_dot_crlf_end_message(self):
        for tag, end, kept in (("crlf-dot-lf", b"\r\n.\n", b"\r\n"),
                               ("lf-dot-crlf", b"\n.\r\n", b"\n")):
            cl = self.open_data()
            text = b"Subject: %s\r\n\r\nline" % tag.encode()
            cl.send(text + end)
            rec, _ = self.assert_stored(text + kept, queue_id(cl.reply()))
            self.assertIn("smuggling", rec["anomalies"], (tag, rec))
            self.assertEqual(cl.cmd("NOOP").code, 250)

    def test_cr_dot_cr_does_not_end_message(self):
        cl = self.open_data()
        body = (b"Subject: cr\r\n\r\nouter\r.\rMAIL FROM:<s@evil.example>\r\n"
                b"RCPT TO:<c@victim.example>\r\nDATA\r\ninner\r\n")
        cl.send(body + b".\r\n")
        r = cl.reply()
        self.assertEqual(cl.pending(0.3), b"", "more than one reply: <CR>.<CR> ended the message")
        rec, _ = self.assert_stored(body, queue_id(r))
        self.assertIn("bare_cr", rec["anomalies"], rec)
        self.assertEqual(len(self.c.journal()), 1)

    def test_cr_dot_cr_recorded_as_smuggling(self):
        """Regression for h14-1 (fixed): <CR>.<CR> inside DATA is kept as content (right) but recorded
        only as bare_cr, not as "smuggling" (issue 5 asks both sequences to be
        recorded).  smtp_data_input only looks for a dot at the start of a line."""
        cl = self.open_data()
        body = b"Subject: cr\r\n\r\nouter\r.\rMAIL FROM:<s@evil.example>\r\ninner\r\n"
        cl.send(body + b".\r\n")
        rec, _ = self.assert_stored(body, queue_id(cl.reply()))
        self.assertIn("smuggling", rec["anomalies"], rec)

    def test_clean_message_has_no_smuggling_anomaly(self):
        cl = self.open_data()
        body = b"Subject: clean\r\n\r\n.leading dot\r\nend\r\n"
        cl.send(b"Subject: clean\r\n\r\n..leading dot\r\nend\r\n.\r\n")
        rec, _ = self.assert_stored(body, queue_id(cl.reply()))
        self.assertNotIn("smuggling", rec.get("anomalies", []), rec)


class TlsAbuse(AbuseCase):

    @with_config({"limits": {"idle_timeout": 3}})
    def test_garbage_instead_of_client_hello(self):
        port = self.c.ports["submissions"]
        base = self.baseline_fds()
        cases = [b"EHLO plain.example\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                 os.urandom(4096), b"\x16\x03\x01\xff\xff" + os.urandom(2000),
                 b"\x16\x03\x01\x00\x30" + b"\x01" * 10]   # truncated record, then silence
        for i, data in enumerate(cases):
            s = socket.create_connection((HOST, port), 5 * self.slow)
            s.settimeout(10 * self.slow)
            try:
                try:
                    s.sendall(data)
                except OSError:
                    pass
                t0 = time.time()
                got = b""
                try:
                    while True:
                        d = s.recv(4096)
                        if not d:
                            break
                        got += d
                except (ConnectionResetError, socket.timeout):
                    pass
                dt = time.time() - t0
                self.assertFalse(got.startswith(b"220"), (i, got))
                self.assertLess(dt, 8 * self.slow, "case %d: not closed within %.1fs" % (i, dt))
                port_i = s.getsockname()[1]
                ev = self.c.wait_event("fosr.session.closed", lambda e: e.get("src_port") == port_i)
                self.assertTrue(ev.get("reason"), ev)
            finally:
                s.close()
        # a garbage flood of 5 MiB is cut short, too
        s = socket.create_connection((HOST, port), 5 * self.slow)
        s.settimeout(10 * self.slow)
        try:
            sent = 0
            try:
                while sent < (5 << 20):
                    s.sendall(b"\x17" * 65536)
                    sent += 65536
            except OSError:
                pass
        finally:
            s.close()
        cl = self.client("submissions")
        self.assertEqual(cl.ehlo().code, 250)
        cl.close()
        self.assertTrue(self.c.running)
        self.assert_fds_back(base)

    @unittest.skipUnless(have("openssl"), "openssl not installed")
    def test_client_renegotiation_refused_daemon_fine(self):
        """openssl s_client's 'R' command asks for a TLS 1.2 renegotiation.  The
        server context sets SSL_OP_NO_RENEGOTIATION: the attempt is refused
        (no_renegotiation alert or connection closed), never served."""
        port = self.c.ports["submissions"]
        p = subprocess.Popen(["openssl", "s_client", "-connect", "%s:%d" % (HOST, port),
                              "-tls1_2", "-crlf"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        chunks = []

        def read():
            while True:
                d = p.stdout.read1(65536)
                if not d:
                    return
                chunks.append(d)

        def wait_output(what, timeout):
            """Wait for what in s_client's output (a step is sent only once the
            previous one is seen: s_client reads its stdin by buffers, and takes
            "R" as its command only when it comes alone, not queued behind the
            EHLO of a slow handshake)."""
            end = time.time() + timeout * self.slow
            while time.time() < end:
                if what in b"".join(chunks):
                    return True
                if p.poll() is not None and not reader.is_alive():
                    break
                time.sleep(0.05)
            return what in b"".join(chunks)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            # stdin stays open between the lines: s_client ends at EOF on stdin
            steps = ((b"EHLO reneg.example\n", b"250 "), (b"R\n", b"RENEGOTIATING"),
                     (b"NOOP\n", b"250 2.0.0 Ok"), (b"QUIT\n", None))
            for line, seen in steps:
                try:
                    p.stdin.write(line)
                    p.stdin.flush()
                except (BrokenPipeError, ValueError):
                    break
                # the NOOP's answer, if any, comes within the same time
                # as before (its absence is what is expected)
                if seen is not None and not wait_output(seen, 1.5 if line == b"NOOP\n" else 20):
                    if line != b"NOOP\n":
                        break
            try:
                p.stdin.close()
            except BrokenPipeError:
                pass
            p.wait(20 * self.slow)
        finally:
            if p.poll() is None:
                os.kill(p.pid, 9)
                p.wait()
        reader.join(10)
        out = b"".join(chunks)
        text = out.decode("utf-8", "replace")
        self.assertIn("RENEGOTIATING", text, text[-2000:])
        self.assertIn("250-", text, "EHLO not answered over TLS:\n" + text[-2000:])
        # refused: either the alert is printed, or the server closed; never a
        # second handshake followed by a NOOP answer
        served = "250 2.0.0 Ok" in text.split("RENEGOTIATING", 1)[1]
        self.assertFalse(served, "renegotiation was accepted:\n" + text[-2000:])
        # the daemon is fine
        cl = self.client("submissions")
        self.assertEqual(cl.ehlo().code, 250)
        self.assertTrue(self.c.running)


if __name__ == "__main__":
    unittest.main(verbosity=2)
