"""The -i console driven through a pseudo-terminal and through a pipe: list,
show, verify, send after confirmation (against the fake MX, -t), bad input,
EOF.  Never a crash, always an answer."""

import os
import pty
import select
import subprocess
import time
import unittest


from harness import sha256_hex
from fixtures import fakemx
from fixtures.relay import RelayCase, probe, SPAM


class TestConsole(RelayCase):
    relay_mode = "dry-run"
    test_mode = True

    def capture(self):
        self.body = probe(42)
        self.sha = sha256_hex(self.body)
        self.send(self.body)
        self.result(self.sha)
        self.send(SPAM)
        self.c.stop()

    def run_pty(self, lines, timeout=20):
        """Run -i on a pty, write lines one by one, return all output."""
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(self.c.binary, [self.c.binary, "-c", self.c.config_path, "-i", "-t"])
        out = b""
        try:
            for line in lines + [None]:
                end = time.time() + 3 * self.slow
                while b"fosr> " not in out[-200:] and b"send: " not in out[-50:] \
                        and time.time() < end:
                    r, _, _ = select.select([fd], [], [], 0.2)
                    if r:
                        try:
                            out += os.read(fd, 65536)
                        except OSError:
                            break
                if line is None:
                    os.write(fd, b"\x04")     # EOF (^D)
                    break
                tail = len(out)
                os.write(fd, line + b"\n")
                # wait for the echo/answer to move past the prompt we saw
                end = time.time() + 15 * self.slow
                while len(out) == tail and time.time() < end:
                    r, _, _ = select.select([fd], [], [], 0.2)
                    if r:
                        out += os.read(fd, 65536)
                time.sleep(0.3 * self.slow)
                while True:
                    r, _, _ = select.select([fd], [], [], 0.3)
                    if not r:
                        break
                    try:
                        d = os.read(fd, 65536)
                    except OSError:
                        d = b""
                    if not d:
                        break
                    out += d
            end = time.time() + timeout
            while time.time() < end:
                r, _, _ = select.select([fd], [], [], 0.2)
                if r:
                    try:
                        d = os.read(fd, 65536)
                    except OSError:     # EIO: the child side is closed
                        d = b""
                    out += d
                    if not d:
                        time.sleep(0.05)
                wpid, status = os.waitpid(pid, os.WNOHANG)
                if wpid:
                    return out, os.waitstatus_to_exitcode(status)
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            self.fail("console did not exit: %r" % out[-2000:])
        finally:
            os.close(fd)

    def test_console_tty(self):
        self.capture()
        out, rc = self.run_pty([b"help", b"list", b"show 2", b"verify 2", b"verify 1",
                                b"\x01\xff garbage", b"show 99", b"send 2",
                                b"send 2 --live", b"no", b"send 2 --live", b"yes",
                                b"verify 2", b"send 2 --bogus"])
        text = out.decode("utf-8", "replace")
        self.assertEqual(rc, 0, text[-3000:])
        self.assertIn("commands:", text)
        self.assertIn(self.sha[:12], text)
        self.assertIn("Subject: relay test", text)
        self.assertIn("rule \"probe\"", text)
        self.assertIn("no rule matched", text)
        self.assertIn("unknown command", text)
        self.assertIn("no row 99", text)
        self.assertIn("not sent", text)
        # relay.mode is dry-run: "send N" decides and sends nothing; only
        # "send N --live" (then "yes") goes out.  It used to send at once.
        first = text.index("fosr> send 2\r\n")
        dry = text[first:text.index("fosr> send 2 --live", first)]
        self.assertIn("relay.mode is dry-run: nothing was sent", dry)
        self.assertIn("rule \"probe\"", dry)
        self.assertNotIn("This really sends", dry)
        self.assertIn("This really sends the mail", text)
        self.assertIn("sent: delivered", text)
        self.assertEqual(text.count("sent: delivered"), 1)
        self.assertIn("unknown option \"--bogus\"", text)
        self.assertIn("same content   already relayed", text)
        self.assertIn("end of input", text)
        msgs = self.mx.wait_messages(1)
        self.assertEqual(len(msgs), 1)
        self.assertTrue(msgs[0][2].endswith(self.body))

    def test_console_without_terminal(self):
        self.capture()
        r = subprocess.run([self.c.binary, "-c", self.c.config_path, "-i"], input=b"list\n",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"not a terminal", r.stdout)
        self.assertIn(self.sha[:12].encode(), r.stdout)
        r = subprocess.run([self.c.binary, "-c", self.c.config_path, "-i"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"end of input", r.stdout)

    def test_console_escapes_stored_and_remote_bytes(self):
        """verify quotes a refused recipient (attacker bytes): never raw C1,
        bidi or escape bytes on the operator's terminal."""
        evil = b"x\xc2\x9b31m\xe2\x80\xae\xe2\x81\xa6"
        body = probe(43)
        cl = self.client("smtp")
        self.assertEqual(cl.ehlo().code, 250)
        self.assertEqual(cl.cmd("MAIL FROM:<drop@spammer.example> SMTPUTF8").code, 250)
        cl.send(b"RCPT TO:<" + evil + b"@spammer.example>\r\n")
        self.assertEqual(cl.reply().code, 250)
        self.assertEqual(cl.data(body).code, 250)
        cl.cmd("QUIT")
        self.wait_decisions(sha256_hex(body), 1)
        self.c.stop()
        r = subprocess.run([self.c.binary, "-c", self.c.config_path, "-i"],
                           input=b"verify 1\nshow 1\nlist\n", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"refused: recipient <x\\xc2\\x9b31m", r.stdout)
        for bad in (b"\x1b", b"\xc2\x9b", b"\xe2\x80\xae", b"\xe2\x81\xa6"):
            self.assertNotIn(bad, r.stdout)


if __name__ == "__main__":
    if not fakemx.HAVE_AIOSMTPD:
        print("python3-aiosmtpd missing")
    unittest.main(verbosity=2)
