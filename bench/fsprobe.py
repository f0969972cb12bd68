#!/usr/bin/python3
"""Filesystem probe for the benchmark: what creating and fsyncing a file costs.

Usage: fsprobe.py DIR

Creates 300 files of 1200 bytes in a new subdirectory of DIR (open O_CREAT,
write, close), then 100 more with an fsync each, and prints the CPU and wall
time per file.  On a filesystem where many files were deleted recently
(ext4 without a journal scans recently freed inodes) creation alone can cost
hundreds of microseconds of kernel CPU, which every server pays per mail.
"""

import os
import shutil
import sys
import tempfile
import time


def run(d, n, sync):
	"""Returns (cpu_us, wall_us) per file for n files in d."""
	c, w = time.process_time(), time.monotonic()
	for i in range(n):
		fd = os.open(os.path.join(d, "%d.%d" % (sync, i)),
			     os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
		os.write(fd, b"x" * 1200)
		if sync:
			os.fsync(fd)
		os.close(fd)
	return ((time.process_time() - c) / n * 1e6,
		(time.monotonic() - w) / n * 1e6)


def main():
	d = tempfile.mkdtemp(prefix="fsprobe.", dir=sys.argv[1])
	try:
		cc, cw = run(d, 300, False)
		sc, sw = run(d, 100, True)
	finally:
		shutil.rmtree(d, ignore_errors=True)
	print("create+write+close %.0f us cpu / %.0f us wall per file; "
	      "with fsync %.0f us cpu / %.0f us wall" % (cc, cw, sc, sw))


if __name__ == "__main__":
	main()
