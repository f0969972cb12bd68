"""Helpers for the abuse and fault end-to-end tests (test_abuse.py, test_faults.py).

Standard library only.  Nothing here starts a process: the tests own their
daemons (harness.Collector) and stop them by pid.
"""

import errno
import hashlib
import os
import resource
import selectors
import socket
import threading
import time

from harness import HOST, SMTPRaw, dot_stuff, queue_id


def raise_nofile(want):
    """Raise this process's RLIMIT_NOFILE soft limit to want (the hard limit too
    when it is lower and we may).  Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        if hard != resource.RLIM_INFINITY and hard < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fd_count(pid):
    """How many descriptors process pid holds open."""
    return len(os.listdir("/proc/%d/fd" % pid))


def proc_status(pid, field):
    """A /proc/PID/status value in kB (VmHWM, VmRSS, ...)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def loopback_sources(n, base=(127, 0, 1)):
    """n distinct loopback source addresses 127.0.1.1 ... (all of 127/8 is local)."""
    out = []
    for i in range(n):
        hi, lo = divmod(i, 250)
        out.append("%d.%d.%d.%d" % (base[0], base[1], base[2] + hi, lo + 1))
    return out


def wait_until(pred, timeout, step=0.05):
    """Poll pred until it is true or timeout seconds passed; returns its last value."""
    end = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() > end:
            return v
        time.sleep(step)


class Trickler:
    """Many non-blocking connections, each sending one byte every `interval`
    seconds (slowloris).  Runs in its own thread; replies are read and dropped."""

    def __init__(self, port, count, sources, interval=1.5, payload=b"X-Slow: " + b"a" * 4000):
        self.port = port
        self.count = count
        self.sources = sources
        self.interval = interval
        self.payload = payload
        self.socks = []
        self.sent = 0
        self.closed_by_peer = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = None

    def open(self, timeout=30):
        """Connect every socket (non-blocking), wait until all are established."""
        sel = selectors.DefaultSelector()
        pending = 0
        for i in range(self.count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.bind((self.sources[i % len(self.sources)], 0))
            e = s.connect_ex((HOST, self.port))
            if e not in (0, errno.EINPROGRESS):
                s.close()
                self.errors += 1
                continue
            sel.register(s, selectors.EVENT_WRITE)
            pending += 1
            self.socks.append(s)
        end = time.time() + timeout
        while pending and time.time() < end:
            for key, _ in sel.select(0.5):
                sel.unregister(key.fileobj)
                pending -= 1
                if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self.errors += 1
        sel.close()
        return self.count - self.errors - pending

    def _run(self):
        pos = 0
        per_sock = len(self.socks)
        while not self._stop.is_set():
            t0 = time.time()
            for s in self.socks:
                if self._stop.is_set():
                    break
                if s.fileno() < 0:
                    continue
                try:
                    try:
                        d = s.recv(4096)
                        if d == b"":
                            self.closed_by_peer += 1
                            s.close()
                            continue
                    except BlockingIOError:
                        pass
                    s.send(self.payload[pos % len(self.payload):pos % len(self.payload) + 1])
                    self.sent += 1
                except OSError:
                    self.closed_by_peer += 1
                    s.close()
            pos += 1
            left = self.interval - (time.time() - t0)
            if per_sock and left > 0:
                self._stop.wait(left)

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def alive(self):
        return sum(1 for s in self.socks if s.fileno() >= 0)

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


class AckedSender:
    """Threads that each send mails over one SMTP session after another and
    record every message the daemon acknowledged with 250 (body, queue id).
    Errors (connection refused or reset, the daemon killed) end a thread's
    current session; the thread reconnects until stop()."""

    def __init__(self, port, threads=4, per_session=20, size=1024, tag="acked", timeout=10,
                 pace=0.0):
        self.port = port
        self.pace = pace         # seconds each thread waits between two mails
        self.nthreads = threads
        self.per_session = per_session
        self.size = size
        self.tag = tag
        self.timeout = timeout
        self.acked = []          # (body, qid)
        self.refused = []        # (body, reply code) for mails that got 4xx/5xx after DATA
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._seq = 0

    def _body(self):
        with self._lock:
            self._seq += 1
            n = self._seq
        head = b"Subject: %s %d\r\nMessage-Id: <%d.%s@client.example>\r\n\r\n" % (
            self.tag.encode(), n, n, self.tag.encode())
        line = hashlib.sha256(b"%s-%d" % (self.tag.encode(), n)).hexdigest().encode()
        body = b""
        while len(body) < self.size:
            body += line + b"\r\n"
        return head + body

    def _session(self):
        cl = SMTPRaw(HOST, self.port, timeout=self.timeout)
        try:
            if cl.banner().code != 220:
                return
            if cl.ehlo("sender.example").code != 250:
                return
            for _ in range(self.per_session):
                if self._stop.is_set():
                    break
                if self.pace:
                    time.sleep(self.pace)
                body = self._body()
                if cl.cmd("MAIL FROM:<s@example.org>").code != 250:
                    return
                if cl.cmd("RCPT TO:<r@example.net>").code != 250:
                    return
                if cl.cmd("DATA").code != 354:
                    return
                cl.send(dot_stuff(body) + b".\r\n")
                r = cl.reply()
                if r.code == 250:
                    with self._lock:
                        self.acked.append((body, queue_id(r)))
                else:
                    with self._lock:
                        self.refused.append((body, r.code))
            cl.cmd("QUIT")
        finally:
            cl.close()

    def _run(self):
        while not self._stop.is_set():
            try:
                self._session()
            except (OSError, EOFError, AssertionError):
                with self._lock:
                    self.failures += 1
                self._stop.wait(0.05)

    def start(self):
        for _ in range(self.nthreads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout=30):
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        return list(self.acked)
