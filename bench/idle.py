#!/usr/bin/python3
"""Idle-session memory probe for the benchmark.

Usage: idle.py HOST PORT SERVER_PID N

Makes one warm-up session (banner, QUIT), reads the server's VmRSS, opens N
TCP connections that each read the banner and then stay silent, reads VmRSS
again, and prints one line:  ok=<n> failed=<n> rss_before_kb=<kb>
rss_after_kb=<kb> kb_per_session=<x> open_s=<seconds>.  Then it closes them.
"""

import asyncio
import resource
import sys
import time

CONCURRENT_OPENS = 200
TIMEOUT = 30.0


def vm_kb(pid, key):
	"""Returns a Vm* field of /proc/PID/status in KiB."""
	with open("/proc/%d/status" % pid) as f:
		for line in f:
			if line.startswith(key + ":"):
				return int(line.split()[1])
	return -1


async def read_banner(reader):
	"""Reads the (possibly multi-line) 220 greeting; True when it came."""
	while True:
		line = await reader.readline()
		if not line:
			return False
		if len(line) >= 4 and line[3:4] == b" ":
			return line.startswith(b"220")


async def open_one(host, port, sem, conns):
	"""Opens one connection, waits for the banner, keeps it open."""
	async with sem:
		try:
			r, w = await asyncio.wait_for(
			    asyncio.open_connection(host, port), TIMEOUT)
		except (OSError, asyncio.TimeoutError):
			return False
		try:
			ok = await asyncio.wait_for(read_banner(r), TIMEOUT)
		except (OSError, asyncio.TimeoutError):
			ok = False
		conns.append(w)
		return ok


async def main():
	host, port, pid, n = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
			      int(sys.argv[4]))
	soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
	if soft < n + 64:
		resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
	# Warm-up: one full session so lazy first-use allocations are not
	# counted against the idle sessions.
	r, w = await asyncio.open_connection(host, port)
	await read_banner(r)
	w.write(b"QUIT\r\n")
	await w.drain()
	await r.read()
	w.close()
	await asyncio.sleep(0.5)
	before = vm_kb(pid, "VmRSS")
	sem = asyncio.Semaphore(CONCURRENT_OPENS)
	conns = []
	t0 = time.monotonic()
	res = await asyncio.gather(*(open_one(host, port, sem, conns)
				     for _ in range(n)))
	dt = time.monotonic() - t0
	await asyncio.sleep(1.0)
	after = vm_kb(pid, "VmRSS")
	ok = sum(1 for x in res if x)
	per = (after - before) / ok if ok else float("nan")
	print("ok=%d failed=%d rss_before_kb=%d rss_after_kb=%d "
	      "kb_per_session=%.2f open_s=%.2f" %
	      (ok, n - ok, before, after, per, dt), flush=True)
	for w in conns:
		w.close()
	await asyncio.sleep(0.2)


if __name__ == "__main__":
	asyncio.run(main())
