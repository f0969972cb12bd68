#!/usr/bin/python3
"""Benchmark baseline: aiosmtpd storing each mail the way FakeOpenSmtpRelay did.

Usage: aiosmtpd_server.py HOST PORT OUTDIR

One file per mail, opened, written with envelope.content and closed; no
fsync, as the original.  Runs until SIGTERM/SIGINT.
"""

import itertools
import os
import signal
import sys
import threading
import time

from aiosmtpd.controller import Controller


class SaveHandler:
	"""Writes every message to its own file in outdir."""

	def __init__(self, outdir):
		self.outdir = outdir
		self.seq = itertools.count()

	async def handle_DATA(self, server, session, envelope):
		name = "%d.%06d.eml" % (time.time_ns(), next(self.seq))
		with open(os.path.join(self.outdir, name), "wb") as f:
			content = envelope.content
			if isinstance(content, str):
				content = content.encode("utf-8", "surrogateescape")
			f.write(content)
		return "250 OK"


def main():
	host, port, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
	os.makedirs(outdir, exist_ok=True)
	# decode_data=False: envelope.content is the raw bytes (aiosmtpd default).
	ctl = Controller(SaveHandler(outdir), hostname=host, port=port,
			 ready_timeout=30)
	stop = threading.Event()
	signal.signal(signal.SIGTERM, lambda *a: stop.set())
	signal.signal(signal.SIGINT, lambda *a: stop.set())
	ctl.start()
	stop.wait()
	ctl.stop()


if __name__ == "__main__":
	main()
