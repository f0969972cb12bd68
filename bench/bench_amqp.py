#!/usr/bin/python3
"""Benchmark: AMQP (RabbitMQ, publisher confirms) next to hpfeeds: the publish
rate of a backlog and the collector's CPU per mail published.

  FOSR_BIN=./fosr-collector /usr/bin/python3 bench/bench_amqp.py [N] [CONNECTIONS]

For each output: N mails (~1 KB) are received with the output pointing at a
closed port (a backlog builds in the journal), the collector is stopped, the
broker started, and the collector started again with the right port: the time
until the output's durable cursor covers the whole journal (every mail
confirmed: basic.ack for AMQP, the broker's echo for hpfeeds, the identity
subscribing to its channel) gives the rate; the collector's CPU over that run
(all threads, start-up included) per mail is the publisher's cost.  Then a
live run: mails sent while the output is up, time from the first SMTP
connection until the cursor covers the journal.

Brokers: a private rabbitmq-server (tests/e2e/fixtures/rabbitmq.py, needs root)
and the project's Python test hpfeeds broker (tests/broker/): the latter, not
the collector, may bound the hpfeeds rate.
"""
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from harness import HOST, Collector, free_port  # noqa: E402
from fixtures.hpfeeds import CHAN, Broker, feed_cfg, mail  # noqa: E402
from fixtures import rabbitmq  # noqa: E402

EXCHANGE, RKEY = "fosr.bench", "spam.mail"


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


def send_all(c, bodies, conns):
    ths = [threading.Thread(target=send, args=(c, bodies[k::conns])) for k in range(conns)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()


def cursor_path(c, name):
    return os.path.join(c.spool_dir, "feed", name.encode().hex() + ".cursor")


def wait_cursor(c, name, limit=600):
    """Until the cursor's offset equals the journal's size (every line confirmed)."""
    end = os.path.getsize(os.path.join(c.spool_dir, "receptions.jsonl"))
    t0 = time.time()
    while time.time() - t0 < limit:
        try:
            with open(cursor_path(c, name)) as f:
                if int(f.read().split()[0]) == end:
                    return
        except (FileNotFoundError, ValueError, IndexError):
            pass
        time.sleep(0.02)
    raise SystemExit("timeout: %s cursor never reached the journal's end\n%s"
                     % (name, c.stderr_tail()))


class Counter:
    """Messages that reached the broker: the rabbit queue's depth, or the lines of
    the hpfeeds broker's record file (read incrementally)."""

    def __init__(self, kind, cons=None, broker=None):
        self.kind, self.cons, self.broker = kind, cons, broker
        self.off, self.lines = 0, 0

    def count(self):
        if self.kind == "amqp":
            q = self.cons._channel().queue_declare(self.cons.queue, passive=True)
            return q.method.message_count
        try:
            with open(self.broker.record, "rb") as f:
                f.seek(self.off)
                data = f.read()
        except FileNotFoundError:
            return 0
        k = data.rfind(b"\n") + 1
        self.lines += data.count(b"\n", 0, k)
        self.off += k
        return self.lines

    def wait(self, n, limit=600):
        t0 = time.time()
        while self.count() < n:
            if time.time() - t0 > limit:
                raise SystemExit("timeout: %d of %d at the broker" % (self.count(), n))
            time.sleep(0.01)


def output_cfg(kind, port):
    if kind == "amqp":
        return {"amqp": {"host": HOST, "port": port, "user": "guest", "password": "guest",
                         "exchange": EXCHANGE, "routing_key": RKEY}}
    return feed_cfg(port)


def run(kind, n, conns, rabbit):
    tmp = tempfile.mkdtemp(prefix="fosr-bench-")
    bodies = [mail(i, b"x" * 1000 + b"\r\n") for i in range(n)]
    name = "amqp:%s/%s" % (EXCHANGE, RKEY) if kind == "amqp" else CHAN
    broker = None
    if kind == "amqp":
        port = rabbit.port
        cons = rabbitmq.Consumer(rabbit, EXCHANGE, RKEY, "q.bench").declare()
        cons._channel().queue_purge("q.bench")
    else:
        port = free_port()
        # the identity may subscribe: every publish is confirmed by its echo
        broker = Broker(tmp, users=["writer:secret:%s:%s" % (CHAN, CHAN)], port=port)
    # 1. the backlog: the output points at a closed port
    c = Collector(tmp, config=output_cfg(kind, free_port()))
    c.start()
    send_all(c, bodies, conns)
    c.stop()
    if broker:
        broker.start()
    counter = Counter(kind, cons if kind == "amqp" else None, broker)
    c = Collector(tmp, config=output_cfg(kind, port))
    t0 = time.time()
    c.start()
    try:
        counter.wait(n)
        backlog = (time.time() - t0, cpu_seconds(c.pid))
        wait_cursor(c, name)    # and confirmed (the cursor is saved once a second)
        # 2. live: the same number again while the output is up
        bodies = [mail(n + i, b"x" * 1000 + b"\r\n") for i in range(n)]
        cpu0, t0 = cpu_seconds(c.pid), time.time()
        send_all(c, bodies, conns)
        t_smtp = time.time() - t0
        counter.wait(2 * n)
        live = (t_smtp, time.time() - t0, cpu_seconds(c.pid) - cpu0)
        wait_cursor(c, name)
    finally:
        c.stop()
        if broker:
            broker.kill()
        c.cleanup()
        if kind == "amqp":
            cons._channel().queue_purge("q.bench")
            cons.close()
    return backlog, live


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    conns = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    rabbit = rabbitmq.RabbitMQ().start()
    try:
        res = {k: run(k, n, conns, rabbit) for k in ("hpfeeds", "amqp")}
    finally:
        rabbit.cleanup()
    print("mails=%d (~1 KB) connections=%d" % (n, conns))
    print("| output | backlog: mails/s | backlog: collector CPU us/mail | live: accept->confirmed "
          "mails/s | live: collector CPU us/mail (SMTP + publish) |")
    print("|---|---|---|---|---|")
    for k, label in (("hpfeeds", "hpfeeds (echo confirms, Python test broker)"),
                     ("amqp", "AMQP (publisher confirms, rabbitmq-server 3.10)")):
        (bt, bcpu), (ls, lt, lcpu) = res[k]
        print("| %s | %.0f | %.0f | %.0f | %.0f |" % (label, n / bt, bcpu / n * 1e6, n / lt,
                                                      lcpu / n * 1e6))


if __name__ == "__main__":
    main()
