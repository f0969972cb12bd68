#!/usr/bin/python3
"""Benchmark: mails per second from SMTP accept to the broker, and the
collector's CPU per mail with and without publishing (the difference is the
publisher's share).

  FOSR_BIN=./fosr-collector /usr/bin/python3 bench/bench_hpfeeds.py [N] [CONNECTIONS]

Uses the e2e harness (tests/e2e/harness.py) and the test broker
(tests/broker/hpfeeds_broker.py); the broker is Python, so at high rates it,
not the collector, may be the bottleneck: the line "broker-bound" says so.
"""
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from harness import Collector, sha256_hex  # noqa: E402
from fixtures.hpfeeds import Broker, feed_cfg, mail  # noqa: E402


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send(c, bodies):
    cl = c.connect()
    cl.ehlo("bench.example")
    for b in bodies:
        assert cl.cmd("MAIL FROM:<a@example.org>").code == 250
        assert cl.cmd("RCPT TO:<b@example.net>").code == 250
        r = cl.data(b)
        assert r.code == 250, r
    cl.cmd("QUIT")
    cl.close()


def run(n, conns, with_feed):
    tmp = tempfile.mkdtemp(prefix="fosr-bench-")
    broker = Broker(tmp)
    cfg = {}
    if with_feed:
        broker.start()
        cfg = feed_cfg(broker.port)
    c = Collector(tmp, config=cfg)
    c.start()
    try:
        bodies = [mail(i, b"x" * 1000 + b"\r\n") for i in range(n)]
        shas = {sha256_hex(b) for b in bodies}
        cpu0 = cpu_seconds(c.pid)
        t0 = time.time()
        ths = [threading.Thread(target=send, args=(c, bodies[k::conns])) for k in range(conns)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        t_smtp = time.time() - t0
        if with_feed:
            while not shas <= broker.shas():
                if time.time() - t0 > 600:
                    raise SystemExit("timeout waiting for the broker")
                time.sleep(0.05)
        t_all = time.time() - t0
        cpu = cpu_seconds(c.pid) - cpu0
        return t_smtp, t_all, cpu
    finally:
        c.stop()
        broker.kill()
        c.cleanup()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    conns = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    base = run(n, conns, False)
    feed = run(n, conns, True)
    print("mails=%d connections=%d" % (n, conns))
    print("without feed: smtp %.2fs (%.0f mails/s), collector cpu %.1f us/mail"
          % (base[0], n / base[0], base[2] / n * 1e6))
    print("with feed:    accept->broker %.2fs (%.0f mails/s), collector cpu %.1f us/mail"
          % (feed[1], n / feed[1], feed[2] / n * 1e6))
    print("publisher cpu ~%.1f us/mail (difference of two runs: noisy, within the SMTP side's"
          " variation when small or negative)" % ((feed[2] - base[2]) / n * 1e6))
    if feed[1] > feed[0] * 1.5:
        print("broker-bound: the last mail reached the broker %.2fs after the last 250"
              % (feed[1] - feed[0]))


if __name__ == "__main__":
    main()
