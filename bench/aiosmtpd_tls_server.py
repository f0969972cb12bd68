#!/usr/bin/python3
"""TLS baseline for bench/tls.sh: aiosmtpd with an ssl_context.

Usage: aiosmtpd_tls_server.py HOST IMPLICIT_PORT STARTTLS_PORT CERT KEY OUTDIR

Two Controllers in one process (as one daemon serving 465 and 587): implicit
TLS through Controller(ssl_context=...), STARTTLS through the SMTP class's
tls_context (require_starttls=True, as a submission port).  Each mail is
stored by bench/aiosmtpd_server.py's SaveHandler (a file per mail, no fsync,
as FakeOpenSmtpRelay).  Runs until SIGTERM/SIGINT.
"""

import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aiosmtpd_server import SaveHandler  # noqa: E402


def server_context(cert, key):
	"""The server side TLS context (Python's defaults: TLS 1.2+)."""
	ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
	ctx.load_cert_chain(cert, key)
	return ctx


def main():
	host, iport, sport, cert, key, outdir = sys.argv[1:7]
	os.makedirs(outdir, exist_ok=True)
	handler = SaveHandler(outdir)
	implicit = Controller(handler, hostname=host, port=int(iport), ready_timeout=30,
			      ssl_context=server_context(cert, key))
	starttls = Controller(handler, hostname=host, port=int(sport), ready_timeout=30,
			      tls_context=server_context(cert, key), require_starttls=True)
	stop = threading.Event()
	signal.signal(signal.SIGTERM, lambda *a: stop.set())
	signal.signal(signal.SIGINT, lambda *a: stop.set())
	implicit.start()
	starttls.start()
	stop.wait()
	implicit.stop()
	starttls.stop()


if __name__ == "__main__":
	main()
