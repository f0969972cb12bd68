#!/usr/bin/python3
"""A small TLS load client for the benchmark (bench/tls.sh).

Usage: tls_load.py HOST PORT MODE SECONDS [PROCS] [THREADS] [KIND]

MODE is "implicit" (TLS from the first byte, as on 465) or "starttls"
(banner, EHLO, STARTTLS, as on 587).  PROCS processes (default 2) of THREADS
threads (default 4) each loop, for SECONDS seconds, over whole sessions:

  connect -> (TLS handshake | banner, EHLO, STARTTLS, handshake) -> [banner]
  -> EHLO -> MAIL -> RCPT -> DATA (1 KB, a distinct Message-Id) -> QUIT

KIND "mail" (default) is that; KIND "handshake" stops after the TLS handshake
and the banner (implicit) or the EHLO after it (starttls), then QUIT: the
handshake rate without storage.

Each session is a full handshake (no session resumption, no tickets reused).
The certificate is not verified (self-signed).  Prints one line:

  sessions=N errors=N seconds=S rate=R protocol=TLSv1.3 cipher=NAME first_error=...

rate is completed sessions (250 for the mail, then 221) per second.
"""

import multiprocessing
import os
import re
import socket
import ssl
import sys
import threading
import time

BODY_LEN = 1024
TIMEOUT = 30.0


class SessionError(Exception):
	pass


def client_context():
	"""A TLS client context that accepts any certificate."""
	ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
	ctx.check_hostname = False
	ctx.verify_mode = ssl.CERT_NONE
	return ctx


class Conn:
	"""A socket (plain, then TLS) with a reader of whole SMTP replies."""

	def __init__(self, host, port):
		self.sock = socket.create_connection((host, port), TIMEOUT)
		self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
		self.buf = b""

	def wrap(self, ctx):
		if self.buf:
			raise SessionError("bytes before the TLS handshake: %r" % self.buf[:80])
		self.sock = ctx.wrap_socket(self.sock, server_hostname="mx.bench.example")

	def reply(self):
		"""The code of the next complete (possibly multi-line) reply."""
		while True:
			m = re.match(rb"(?:[0-9]{3}-[^\n]*\n)*([0-9]{3})(?: [^\n]*)?\r?\n", self.buf)
			if m:
				self.buf = self.buf[m.end():]
				return int(m.group(1))
			d = self.sock.recv(65536)
			if not d:
				raise SessionError("connection closed; unread %r" % self.buf[:80])
			self.buf += d

	def cmd(self, line, want):
		self.sock.sendall(line)
		code = self.reply()
		if code != want:
			raise SessionError("%r -> %d, expected %d" % (line.strip()[:40], code, want))

	def close(self):
		try:
			self.sock.close()
		except OSError:
			pass


def body(tag):
	"""A 1 KB message with a distinct Message-Id (no dot-stuffing needed)."""
	head = (b"From: <load@client.bench.example>\r\nTo: <rcpt@dest.bench.example>\r\n"
		b"Subject: tls load\r\nMessage-Id: <%s@client.bench.example>\r\n\r\n" % tag)
	line = b"x" * 62 + b"\r\n"
	n = max(1, (BODY_LEN - len(head)) // len(line))
	return head + line * n


def session(host, port, mode, ctx, tag, kind="mail"):
	"""One whole session; returns (protocol, cipher) or raises."""
	c = Conn(host, port)
	try:
		if mode == "implicit":
			c.wrap(ctx)
			if c.reply() != 220:
				raise SessionError("no 220 banner")
		else:
			if c.reply() != 220:
				raise SessionError("no 220 banner")
			c.cmd(b"EHLO client.bench.example\r\n", 250)
			c.cmd(b"STARTTLS\r\n", 220)
			c.wrap(ctx)
		if kind == "handshake":
			if mode == "starttls":
				c.cmd(b"EHLO client.bench.example\r\n", 250)
			c.cmd(b"QUIT\r\n", 221)
			return c.sock.version(), c.sock.cipher()[0]
		c.cmd(b"EHLO client.bench.example\r\n", 250)
		c.cmd(b"MAIL FROM:<load@client.bench.example>\r\n", 250)
		c.cmd(b"RCPT TO:<rcpt@dest.bench.example>\r\n", 250)
		c.cmd(b"DATA\r\n", 354)
		c.cmd(body(tag) + b".\r\n", 250)
		c.cmd(b"QUIT\r\n", 221)
		return c.sock.version(), c.sock.cipher()[0]
	finally:
		c.close()


def worker(host, port, mode, seconds, threads, kind, out):
	"""One process: THREADS threads looping over sessions until the deadline."""
	ctx = client_context()
	lock = threading.Lock()
	st = {"ok": 0, "err": 0, "first_error": "", "proto": "", "cipher": ""}
	end = time.time() + seconds

	def loop(tid):
		i = 0
		while time.time() < end:
			i += 1
			tag = b"%d.%d.%d.%d" % (os.getpid(), tid, i, time.time_ns())
			try:
				proto, cipher = session(host, port, mode, ctx, tag, kind)
				with lock:
					st["ok"] += 1
					st["proto"], st["cipher"] = proto, cipher
			except (OSError, SessionError, ssl.SSLError) as e:
				with lock:
					st["err"] += 1
					if not st["first_error"]:
						st["first_error"] = "%s: %s" % (type(e).__name__, e)

	ths = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
	for t in ths:
		t.start()
	for t in ths:
		t.join()
	out.put(st)


def main():
	if len(sys.argv) < 5:
		sys.exit(__doc__)
	host, port, mode, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
	procs = int(sys.argv[5]) if len(sys.argv) > 5 else 2
	threads = int(sys.argv[6]) if len(sys.argv) > 6 else 4
	kind = sys.argv[7] if len(sys.argv) > 7 else "mail"
	if kind not in ("mail", "handshake"):
		sys.exit("KIND is mail or handshake")
	if mode not in ("implicit", "starttls"):
		sys.exit("MODE is implicit or starttls")
	q = multiprocessing.Queue()
	t0 = time.time()
	ps = [multiprocessing.Process(target=worker, args=(host, port, mode, seconds, threads, kind, q))
	      for w in range(procs)]
	for p in ps:
		p.start()
	res = [q.get() for _ in ps]
	for p in ps:
		p.join()
	dt = time.time() - t0
	ok = sum(r["ok"] for r in res)
	err = sum(r["err"] for r in res)
	proto = next((r["proto"] for r in res if r["proto"]), "-")
	cipher = next((r["cipher"] for r in res if r["cipher"]), "-")
	first = next((r["first_error"] for r in res if r["first_error"]), "")
	print("sessions=%d errors=%d seconds=%.2f rate=%.1f protocol=%s cipher=%s first_error=%s"
	      % (ok, err, dt, ok / dt, proto, cipher, first.replace(" ", "_")[:200] or "-"))


if __name__ == "__main__":
	main()
