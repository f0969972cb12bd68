#!/usr/bin/python3
"""Prints the benchmark tables and ratios from bench/run.sh's results TSV.

Usage: report.py RESULTS.tsv
"""

import sys


def num(s):
	"""Float of s, or None when s is not a number."""
	try:
		return float(s)
	except (TypeError, ValueError):
		return None


def ratio(a, b):
	"""a/b formatted, or '-' when either is missing."""
	a, b = num(a), num(b)
	if a is None or b is None or b == 0:
		return "-"
	return "%.2f" % (a / b)


def col(c, i):
	"""Field i of row c, or '-' when the row is shorter."""
	return c[i] if len(c) > i and c[i] != "" else "-"


def kv(s):
	"""Parses 'k=v k=v' into a dict."""
	out = {}
	for part in s.split():
		if "=" in part:
			k, v = part.split("=", 1)
			out[k] = v
	return out


def main():
	load, idle, order, servers = {}, {}, [], []
	with open(sys.argv[1]) as f:
		for line in f:
			c = line.rstrip("\n").split("\t")
			if c[0] == "load":
				scen, srv = c[1], c[2]
				if scen not in order:
					order.append(scen)
				if srv not in servers:
					servers.append(srv)
				load[scen, srv] = c
			elif c[0] == "idle":
				idle[c[1], c[2]] = c[3]
				if c[2] not in servers:
					servers.append(c[2])

	print("Load (smtp-source; msgs/s = messages / wall time; CPU = server "
	      "utime+stime / messages; peak RSS = VmHWM)")
	hdr = "%-12s %5s %7s %6s  %-10s %9s %11s %10s %8s  %-20s %s" % (
	    "scenario", "sess", "size", "msgs", "server", "msgs/s",
	    "CPU us/msg", "(usr+sys)", "peak MB", "client", "stored")
	print(hdr)
	print("-" * len(hdr))
	for scen in order:
		for srv in servers:
			c = load.get((scen, srv))
			if not c:
				continue
			hwm = num(c[8])
			print("%-12s %5s %7s %6s  %-10s %9s %11s %10s %8s  %-20s %s" % (
			    scen, c[3], c[4], c[5], srv, c[6], c[7],
			    col(c, 11),
			    "%.1f" % (hwm / 1024) if hwm is not None else "-",
			    c[9], c[10]))
	print()

	print("CPU per message outside the server process too, same interval: "
	      "machine = /proc/stat user+system+irq+softirq+steal\n(not nice, not "
	      "idle/iowait); its parts: server, smtp-source client, hpfeeds broker "
	      "(fosr only), kernel = kernel\nthreads (jbd2, kworkers, loop, "
	      "kblockd) + irq/softirq time, other = the rest (other un-niced work "
	      "on the\nmachine, system time of niced work, exited processes, sync); "
	      "server to exit = server CPU from the load's\nstart to its exit, "
	      "shutdown included (all us/msg)")
	hdr = "%-12s  %-10s %10s %9s %9s %9s %9s %9s  %-10s %s" % (
	    "scenario", "server", "machine", "server", "client", "broker",
	    "kernel", "other", "feed lag s", "server to exit")
	print(hdr)
	print("-" * len(hdr))
	for scen in order:
		for srv in servers:
			c = load.get((scen, srv))
			if not c or len(c) < 17:
				continue
			parts = [num(c[7]), num(c[13]), num(c[14]) or 0.0, num(c[16])]
			m = num(c[12])
			rest = "-"
			if m is not None and None not in parts:
				rest = "%.1f" % (m - sum(parts))
			print("%-12s  %-10s %10s %9s %9s %9s %9s %9s  %-10s %s" % (
			    scen, srv, c[12], c[7], c[13], c[14], c[16], rest,
			    col(c, 15), col(c, 17)))
	print()

	others = [s for s in servers if s != "fosr"]
	if "fosr" in servers and others:
		print("Ratios fosr / other (msgs/s: higher is better for fosr when "
		      "> 1; CPU and RSS: better when < 1)")
		hdr = "%-12s  %-10s %9s %11s %9s" % (
		    "scenario", "vs", "msgs/s", "CPU/msg", "peak RSS")
		print(hdr)
		print("-" * len(hdr))
		for scen in order:
			f = load.get((scen, "fosr"))
			for o in others:
				c = load.get((scen, o))
				if not f or not c:
					continue
				print("%-12s  %-10s %9s %11s %9s" % (
				    scen, o, ratio(f[6], c[6]), ratio(f[7], c[7]),
				    ratio(f[8], c[8])))
		print()

	if idle:
		print("Idle sessions (connect, read banner, stay silent; RSS = "
		      "VmRSS after - before, over sessions open)")
		hdr = "%6s  %-10s %6s %6s %10s %10s %9s %7s" % (
		    "N", "server", "ok", "failed", "before MB", "after MB",
		    "KB/sess", "open s")
		print(hdr)
		print("-" * len(hdr))
		ns = sorted({n for n, _ in idle}, key=int)
		for n in ns:
			for srv in servers:
				s = idle.get((n, srv))
				if s is None:
					continue
				d = kv(s)
				if "kb_per_session" not in d:
					print("%6s  %-10s %s" % (n, srv, s))
					continue
				print("%6s  %-10s %6s %6s %10.1f %10.1f %9s %7s" % (
				    n, srv, d["ok"], d["failed"],
				    int(d["rss_before_kb"]) / 1024,
				    int(d["rss_after_kb"]) / 1024,
				    d["kb_per_session"], d["open_s"]))
		if "fosr" in servers:
			for n in ns:
				f = kv(idle.get((n, "fosr"), ""))
				for o in others:
					d = kv(idle.get((n, o), ""))
					print("%6s  KB/idle session fosr/%s = %s" % (
					    n, o, ratio(f.get("kb_per_session"),
							d.get("kb_per_session"))))


if __name__ == "__main__":
	main()
