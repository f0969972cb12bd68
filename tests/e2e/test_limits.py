"""Limits: idle timeout, session lifetime, session caps, error caps, line length."""

import os
import socket
import time
import unittest

from harness import (HOST, HOSTNAME, CollectorTestCase, lean_asan_env, queue_id,
                     under_valgrind, with_config)


class Limits(CollectorTestCase):

    @with_config({"limits": {"idle_timeout": 2}})
    def test_idle_timeout(self):
        # timed from before the connection: the daemon's timer starts after
        # it, so the lower bound holds however late this process reads the
        # banner (t0 taken after reading it lost up to a loaded machine's
        # scheduling delay)
        t0 = time.time()
        cl = self.client()
        cl.sock.settimeout(10 * self.slow)
        r = cl.reply()
        waited = time.time() - t0
        self.assertEqual(r.code, 421, r)
        self.assertTrue(r.lines[0].startswith("4.4.2"), r)
        self.assertIn("timeout exceeded", r.lines[0])
        self.assertIn(HOSTNAME, r.lines[0])
        self.assertGreater(waited, 1.9)
        self.assertLess(waited, 6 * self.slow)
        self.assertTrue(cl.wait_closed())
        self.c.wait_event("fosr.session.closed", lambda e: e.get("src_port") == cl.local_port)

    @with_config({"limits": {"idle_timeout": 2}})
    def test_idle_timeout_in_data(self):
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<a@example.org>", 250)
        cl.expect("RCPT TO:<b@example.net>", 250)
        cl.expect("DATA", 354)
        cl.send(b"Subject: stalled\r\n\r\npartial")
        cl.sock.settimeout(10 * self.slow)
        r = cl.reply()
        self.assertEqual(r.code, 421, r)
        self.assertTrue(cl.wait_closed())
        self.assertEqual(self.c.messages(), {})
        self.assertEqual(self.c.journal(), [])

    @with_config({"limits": {"idle_timeout": 3}})
    def test_activity_resets_idle_timer(self):
        # 8 x 0.6 s = 4.8 s of session, past the 3 s idle timeout; each gap
        # (0.6 s and a NOOP's round trip) leaves 2.4 s of margin for a loaded
        # machine (with 2 s and 6 NOOPs, 1.4 s)
        cl = self.client()
        for _ in range(8):
            time.sleep(0.6)
            self.assertEqual(cl.cmd("NOOP").code, 250)

    @with_config({"limits": {"session_lifetime": 3, "idle_timeout": 60}})
    def test_session_lifetime(self):
        t0 = time.time()        # before the session: its lifetime starts after
        cl = self.client()
        cl.ehlo()
        got = None
        while time.time() - t0 < 10 * self.slow:
            time.sleep(0.3)
            try:
                r = cl.cmd("NOOP")
            except (EOFError, ConnectionError):
                break
            if r.code != 250:
                got = r
                break
        self.assertIsNotNone(got, "session outlived its lifetime")
        self.assertEqual(got.code, 421, got)
        self.assertGreater(time.time() - t0, 2.0)
        self.assertTrue(cl.wait_closed())

    @with_config({"limits": {"sessions_per_ip": 2}})
    def test_sessions_per_ip(self):
        a = self.client()
        b = self.client()
        extra = self.c.connect("smtp", banner=False)
        self._clients.append(extra)
        r = extra.reply()
        self.assertEqual(r.code, 421, r)
        self.assertIn("too many connections", r.lines[0])
        self.assertTrue(extra.wait_closed())
        # the two sessions still work
        self.assertEqual(a.ehlo().code, 250)
        self.assertEqual(b.ehlo().code, 250)
        # a freed slot is reusable
        a.cmd("QUIT")
        a.wait_closed()
        self.c.wait_event("fosr.session.closed", lambda e: e.get("src_port") == a.local_port)
        c = self.client()
        self.assertEqual(c.ehlo().code, 250)

    @with_config({"limits": {"sessions": 3, "sessions_per_ip": 50}})
    def test_sessions_total(self):
        names = ["smtp", "submission", "smtp"]
        for n in names:
            self.client(n)
        extra = self.c.connect("submission", banner=False)
        self._clients.append(extra)
        r = extra.reply()
        self.assertEqual(r.code, 421, r)
        self.assertTrue(extra.wait_closed())

    @with_config({"limits": {"hard_errors": 3, "soft_errors": 100, "error_sleep": 0}})
    def test_hard_error_limit(self):
        cl = self.client()
        cl.ehlo()
        replies = []
        for i in range(8):
            try:
                r = cl.cmd("BOGUS%d" % i)
            except (EOFError, ConnectionError):
                break
            replies.append(r)
            if r.code == 421:
                break
        self.assertEqual(replies[-1].code, 421, replies)
        self.assertIn("too many errors", replies[-1].lines[0])
        self.assertLessEqual(len(replies), 4, replies)
        self.assertTrue(cl.wait_closed())

    def test_command_line_too_long(self):
        # Postfix (line_length_limit 2048): the first 2048 bytes run as the
        # command, the rest of the line is dropped (never run), no disconnect
        cl = self.client()
        cl.ehlo()
        line = b"NOOP " + b"x" * 3000 + b"QUIT" + b"y" * 100000
        cl.send(line + b"\r\n")
        r = cl.reply()
        self.assertEqual(r.first, "250 2.0.0 Ok")
        self.assertEqual(cl.pending(0.3), b"", "the tail of a long line was run as a command")
        self.assertEqual(cl.cmd("NOOP").code, 250)
        r = cl.cmd("MAIL FROM:<" + "a" * 3000 + "@example.org>")
        self.assertEqual(r.code, 501, r)
        self.assertEqual(cl.cmd("NOOP").code, 250)

    @with_config(env=lean_asan_env())
    def test_endless_line_is_bounded(self):
        rss_before = self.c.status("VmRSS")
        cl = self.client()
        cl.sock.settimeout(10 * self.slow)
        chunk = b"A" * (1 << 20)
        try:
            for _ in range(40):
                cl.sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        time.sleep(0.5)
        grew = self.c.status("VmRSS") - rss_before
        if not under_valgrind():     # memcheck's shadow memory is not the daemon's
            self.assertLess(grew, 16 * 1024, "RSS grew by %d kB on a 40 MiB line" % grew)
        cl.close()
        cl2 = self.client()
        self.assertEqual(cl2.ehlo().code, 250)

    @with_config({"limits": {"banner_delay_ms": 800, "banner_jitter_ms": 0}})
    def test_banner_delay(self):
        t0 = time.time()
        cl = self.c.connect("smtp", banner=False)
        self._clients.append(cl)
        r = cl.banner()
        self.assertEqual(r.code, 220)
        self.assertGreater(time.time() - t0, 0.7)

    def test_client_vanishes_mid_data(self):
        cl = self.client()
        cl.ehlo()
        cl.expect("MAIL FROM:<a@example.org>", 250)
        cl.expect("RCPT TO:<b@example.net>", 250)
        cl.expect("DATA", 354)
        cl.send(b"Subject: gone\r\n\r\n" + b"q" * 100000)
        cl.close()
        self.c.wait_event("fosr.session.closed", lambda e: e.get("src_port") == cl.local_port)
        self.assertEqual(self.c.messages(), {})
        self.assertEqual(self.c.journal(), [])
        tmp = os.path.join(self.c.spool_dir, "tmp")
        if os.path.isdir(tmp):
            self.assertEqual(os.listdir(tmp), [], "tmp file left behind by an aborted message")
        cl2 = self.client()
        self.assertEqual(cl2.ehlo().code, 250)


if __name__ == "__main__":
    unittest.main(verbosity=2)
