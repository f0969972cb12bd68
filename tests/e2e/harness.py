"""End-to-end harness for fosr-collector: start the real binary on free loopback
ports, speak SMTP to it, read what it wrote (spool, journal, event log).

Standard library only.  Every process a test starts is stopped by its pid.
Environment:
  FOSR_BIN      the daemon to test (default: <repo>/fosr-collector)
  FOSR_KEEP=1   keep each test's temporary directory (for post-mortems)
  FOSR_SLOW=N   multiply every start/stop/reply timeout by N (default 1, 3 under ASan)
  FOSR_VALGRIND=1  the daemon runs under valgrind: tests of time or memory skip
"""

import atexit
import base64
import copy
import hashlib
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EVENTS_SCHEMA = os.path.join(REPO, "etc", "events.schema.json")
_events_validator = None


def events_validator():
    """The JSON Schema validator of etc/events.schema.json (python3-jsonschema)."""
    global _events_validator
    if _events_validator is None:
        import jsonschema
        with open(EVENTS_SCHEMA) as f:
            schema = json.load(f)
        jsonschema.Draft202012Validator.check_schema(schema)
        _events_validator = jsonschema.Draft202012Validator(schema)
    return _events_validator


def validate_events(events, limit=5):
    """Descriptions of the events that do not match the schema (at most limit)."""
    v = events_validator()
    bad = []
    for e in events:
        for err in v.iter_errors(e):
            bad.append("%s: %s at %s: %s" % (e.get("eventid") if isinstance(e, dict) else "?",
                                              err.message[:300], "/".join(map(str, err.absolute_path)),
                                              json.dumps(e)[:400]))
            break
        if len(bad) >= limit:
            break
    return bad
HOSTNAME = "mx.example.test"
SENSOR = "e2e-sensor"
HOST = "127.0.0.1"
CRLF = b"\r\n"

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "ERROR: UndefinedBehaviorSanitizer")


# ---------------------------------------------------------------- utilities

def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    return free_ports(1)[0]


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n):
    """n distinct ports free on 127.0.0.1 now, for a server started later.

    Chosen below the kernel's ephemeral range (ip_local_port_range): a port the
    kernel picked for bind(0) is released before the server binds it, and in the
    meantime any outgoing connection on the machine may be given it as its local
    port (CI: RabbitMQ's distribution port taken so, "dist_port_already_used").
    Ports under the range are never handed out that way.  All sockets are held
    until every port is chosen, so the n ports are distinct."""
    low = _ephemeral_low()
    socks = []
    try:
        while len(socks) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if low > 11024:
                port = random.randrange(10000, low)
            else:
                port = 0        # no room under the range: the kernel's pick
            try:
                s.bind((HOST, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


_MEASURE = r"""
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    f.write("%d %r %d" % (rc, r.ru_utime + r.ru_stime, r.ru_maxrss))
"""


def run_measured(argv, timeout):
    """Run argv; return (returncode, stdout, stderr, cpu seconds, peak RSS in KB).

    The figures are the child's own.  wait4's ru_maxrss cannot be read from
    this process: Python starts children with vfork/fork, and the kernel
    carries the parent's address space's high-water RSS (hundreds of MB in a
    long suite) over exec into the child's figure.  So a small launcher (a
    fresh interpreter, ~10 MB) starts the child and reports its rusage."""
    fd, path = tempfile.mkstemp(prefix="fosr-measure-")
    os.close(fd)
    try:
        p = subprocess.run([sys.executable, "-c", _MEASURE, path] + list(argv),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        with open(path) as f:
            rc, cpu, rss = f.read().split()
        return int(rc), p.stdout, p.stderr, float(cpu), int(rss)
    finally:
        os.unlink(path)


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def dot_stuff(body):
    """SMTP transparency (RFC 5321 4.5.2): double a leading '.' on every line."""
    return re.sub(rb"(?m)^\.", b"..", body)


def unverified_context():
    """A TLS client context that accepts the daemon's self-signed certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def binary_default():
    return os.path.abspath(os.environ.get("FOSR_BIN", os.path.join(REPO, "fosr-collector")))


_asan_cache = {}


def is_sanitized(binary):
    """Whether binary was built with AddressSanitizer (slower; bigger RSS)."""
    binary = os.path.abspath(binary)
    if binary not in _asan_cache:
        try:
            with open(binary, "rb") as f:
                _asan_cache[binary] = b"__asan_init" in f.read()
        except OSError:
            _asan_cache[binary] = False
    return _asan_cache[binary]


def slow_factor(binary=None):
    """How much longer than a plain build the daemon takes: 3 under ASan, or
    FOSR_SLOW (an integer, e.g. 20 under valgrind) when that is set."""
    env = os.environ.get("FOSR_SLOW", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return 3 if is_sanitized(binary or binary_default()) else 1


def under_valgrind():
    """Whether the daemon runs under valgrind (FOSR_VALGRIND=1, tests/valgrind.sh)."""
    return os.environ.get("FOSR_VALGRIND", "") == "1"


def skip_under_valgrind(why):
    """Decorator: skip a test that measures time or memory when under valgrind."""
    return unittest.skipIf(under_valgrind(), "under valgrind: " + why)


def lean_asan_env():
    """Environment for memory-use tests: ASan's quarantine keeps freed memory
    resident (256 MB by default), which is not the daemon's footprint."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") +
            "quarantine_size_mb=1:thread_local_quarantine_size_kb=64"}


def have(program):
    return shutil.which(program) is not None


# A certificate shared by every collector of this process: generating an RSA
# key in each test's daemon would cost time for nothing.  Tests that check the
# daemon's own generation point tls.certificate at a missing file instead.
_shared_tls = {}


def shared_tls():
    if not _shared_tls:
        d = tempfile.mkdtemp(prefix="fosr-e2e-tls-")
        atexit.register(shutil.rmtree, d, True)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2",
                        "-subj", "/CN=" + HOSTNAME,
                        "-addext", "subjectAltName=DNS:" + HOSTNAME],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _shared_tls.update(certificate=cert, key=key)
    return dict(_shared_tls)


# The client name lookup before each greeting is on by default (as Postfix's):
# every daemon a test starts asks this fake DNS, which answers NXDOMAIN to
# everything at once, unless the test gives its own client_lookup.  The
# system resolver may be far or absent here, and the lookup waits for it.
_shared_dns = []


def shared_dns():
    if not _shared_dns:
        from fixtures import fakedns
        d = fakedns.FakeDNS({}).start()
        atexit.register(d.stop)
        _shared_dns.append(d)
    return _shared_dns[0]


# ---------------------------------------------------------------- tiny YAML

def _yaml_scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7f:
            out.append("\\x%02x" % o)
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _yaml_lines(obj, indent):
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                lines.append("%s%s:" % (pad, k))
                lines.extend(_yaml_lines(v, indent + 2))
            elif isinstance(v, list) and v:
                lines.append("%s%s:" % (pad, k))
                lines.extend(_yaml_lines(v, indent + 2))
            elif isinstance(v, dict):
                lines.append("%s%s: {}" % (pad, k))
            elif isinstance(v, list):
                lines.append("%s%s: []" % (pad, k))
            else:
                lines.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                sub = _yaml_lines(item, indent + 2)
                first = sub[0][indent + 2:]
                lines.append("%s- %s" % (pad, first))
                lines.extend(sub[1:])
            else:
                lines.append("%s- %s" % (pad, _yaml_scalar(item) if not isinstance(item, (dict, list))
                                          else ("{}" if isinstance(item, dict) else "[]")))
    else:
        lines.append(pad + _yaml_scalar(obj))
    return lines


def to_yaml(obj):
    """YAML for dicts, lists and scalars (every string double-quoted)."""
    return "\n".join(_yaml_lines(obj, 0)) + "\n"


def deep_merge(base, over):
    """over merged into a copy of base; a None value in over deletes the key."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _subst_tmp(obj, tmpdir):
    """Replace "{tmp}" in every string of a config with the test's directory."""
    if isinstance(obj, dict):
        return {k: _subst_tmp(v, tmpdir) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_subst_tmp(v, tmpdir) for v in obj]
    if isinstance(obj, str):
        return obj.replace("{tmp}", tmpdir)
    return obj


# ---------------------------------------------------------------- SMTP line client

class Reply:
    """One complete SMTP reply: code, text lines (without code/separator)."""

    def __init__(self, code, lines, raw):
        self.code = code
        self.lines = lines
        self.raw = raw

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def first(self):
        """'250 2.0.0 Ok' style first line."""
        return "%d %s" % (self.code, self.lines[0] if self.lines else "")

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.lines)


class SMTPRaw:
    """A line client over socket/ssl that reads whole multi-line replies exactly."""

    def __init__(self, host, port, tls=False, server_hostname=None, timeout=10,
                 source_address=None):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout,
                                             source_address=source_address)
        self.local_port = self.sock.getsockname()[1]
        self.buf = b""
        self.tls = False
        if tls:
            self._wrap(server_hostname)

    # -- plumbing
    def _wrap(self, server_hostname):
        if self.buf:
            raise AssertionError("bytes received in plain text before the TLS "
                                 "handshake: %r" % self.buf)
        ctx = unverified_context()
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self.tls = True

    def _recv(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed by the server; unread: %r" % self.buf)
        self.buf += d

    def readline(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                return line
            self._recv()

    def reply(self):
        """Read one complete reply; every line must be CRLF-terminated 'NNN-'/'NNN '."""
        raw = b""
        lines = []
        code = None
        while True:
            line = self.readline()
            raw += line
            if not line.endswith(CRLF):
                raise AssertionError("reply line without CRLF: %r" % line)
            m = re.match(rb"^([2-5][0-9][0-9])([ -]?)(.*)\r\n$", line, re.S)
            if not m:
                raise AssertionError("malformed reply line: %r" % line)
            c = int(m.group(1))
            if code is not None and c != code:
                raise AssertionError("reply code changed inside a multi-line reply: %r" % raw)
            code = c
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) != b"-":
                return Reply(code, lines, raw)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def cmd(self, line):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + CRLF)
        return self.reply()

    def pending(self, wait=0.5):
        """Bytes that arrive (beyond those already buffered) within wait seconds."""
        got = b""
        end = time.time() + wait
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            got += self.sock.recv(65536)
        while True:
            left = end - time.time()
            if left <= 0:
                break
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                break
            try:
                self.sock.settimeout(0.2)
                d = self.sock.recv(65536)
            except (ssl.SSLWantReadError, socket.timeout):
                continue
            finally:
                self.sock.settimeout(self.timeout)
            if not d:
                break
            got += d
        self.buf += got
        return got

    def wait_closed(self, timeout=None):
        """True when the server closes the connection within timeout (data is
        kept).  The default is the client's own timeout (10 s x slow_factor
        for Collector.connect's): a fixed 5 s was short for ASan under load."""
        end = time.time() + (self.timeout if timeout is None else timeout)
        while time.time() < end:
            r, _, _ = select.select([self.sock], [], [], max(0.0, end - time.time()))
            if not r:
                continue
            try:
                d = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
                return True
            if not d:
                return True
            self.buf += d
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # -- SMTP steps
    def banner(self):
        return self.reply()

    def ehlo(self, name="client.example"):
        return self.cmd("EHLO " + name)

    def starttls(self, server_hostname=None):
        r = self.cmd("STARTTLS")
        if r.code == 220:
            self._wrap(server_hostname)
        return r

    def data(self, body, stuff=True):
        """DATA + body (dot-stuffed unless stuff=False) + '.'; returns the final reply.
        The body must end with CRLF (what is stored is exactly body)."""
        r = self.cmd("DATA")
        if r.code != 354:
            raise AssertionError("DATA refused: %r" % r)
        payload = dot_stuff(body) if stuff else body
        self.send(payload + b".\r\n")
        return self.reply()

    def expect(self, line, code):
        r = self.cmd(line)
        if r.code != code:
            raise AssertionError("%r -> %r, expected %d" % (line, r, code))
        return r


def smtp_raw(host, port, **kw):
    return SMTPRaw(host, port, **kw)


# DATA: "250 2.0.0 Ok: queued as QID"; BDAT LAST: "250 2.0.0 Ok: N bytes queued as QID"
QUEUED_RE = re.compile(r"^2\.0\.0 Ok: (?:[0-9]+ bytes )?queued as ([0-9A-Za-z]+)$")


def queue_id(reply):
    """The queue id of a '250 2.0.0 Ok: [N bytes ]queued as QID' reply, or AssertionError."""
    m = QUEUED_RE.match(reply.lines[0]) if reply.code == 250 and reply.lines else None
    if not m:
        raise AssertionError("not a queued reply: %r" % reply)
    return m.group(1)


# ---------------------------------------------------------------- the daemon

def _listen_inodes():
    """{port: socket inode} of every TCP socket listening on 127.0.0.1 (from /proc)."""
    out = {}
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                addr, port = parts[1].split(":")
                if addr == "0100007F" and parts[3] == "0A":
                    out[int(port, 16)] = parts[9]
    except OSError:
        pass
    return out


def _socket_inodes(pid):
    """Inodes of the sockets process pid holds open."""
    out = set()
    d = "/proc/%d/fd" % pid
    try:
        for fd in os.listdir(d):
            try:
                link = os.readlink(os.path.join(d, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(link[8:-1])
    except OSError:
        pass
    return out


class Collector:
    """One fosr-collector process with its own config, spool and event log."""

    def __init__(self, tmpdir=None, config=None, binary=None, args=(), listeners=None,
                 env=None, nofile=None):
        self.own_tmpdir = tmpdir is None
        self.tmpdir = tmpdir or tempfile.mkdtemp(prefix="fosr-e2e-")
        self.binary = os.path.abspath(binary or binary_default())
        self.args = list(args)
        self.env_extra = dict(env or {})
        self.nofile = nofile    # RLIMIT_NOFILE (soft = hard) for the daemon, None = inherited
        self.proc = None
        self.returncode = None
        self.ports = {}
        if listeners is None:
            listeners = [
                {"name": "smtp", "port": 0, "tls": "starttls"},
                {"name": "submissions", "port": 0, "tls": "implicit"},
                {"name": "submission", "port": 0, "tls": "starttls"},
            ]
        auto = free_ports(len(listeners))
        lst = []
        for i, l in enumerate(listeners):
            l = dict(l)
            l.setdefault("address", HOST)
            if not l.get("port"):
                l["port"] = auto[i]
            self.ports[l["name"]] = l["port"]
            e = {"address": l["address"], "port": l["port"], "tls": l["tls"], "name": l["name"]}
            if "policy" in l:
                e["policy"] = l["policy"]
            lst.append(e)
        self.spool_dir = os.path.join(self.tmpdir, "spool")
        self.event_log = os.path.join(self.tmpdir, "events.json")
        defaults = {
            "hostname": HOSTNAME,
            "sensor": SENSOR,
            "user": "",
            "listeners": lst,
            "tls": shared_tls(),
            "spool": {"directory": self.spool_dir},
            "event_log": self.event_log,
            # The seccomp filter is on, as in production; valgrind cannot
            # run a process that installs one.
            "sandbox": {"seccomp": not under_valgrind()},
            "client_lookup": {"dns_server": shared_dns().address},
            # Most tests log in with made-up credentials to exercise capture;
            # the shipped credential policy (the daemon's default) is tested
            # in test_auth.CredentialPolicyTests.
            "auth": {"outcome": "accept"},
        }
        if isinstance(config, str):
            self.config = None
            self.config_text = config
        else:
            self.config = _subst_tmp(deep_merge(defaults, config), self.tmpdir)
            self.config_text = to_yaml(self.config)
            sp = self.config.get("spool", {}).get("directory")
            if sp:
                self.spool_dir = sp
            self.event_log = self.config.get("event_log") or self.event_log
        self.config_path = os.path.join(self.tmpdir, "fosr-collector.yml")
        with open(self.config_path, "w") as f:
            f.write(self.config_text)
        self.stderr_path = os.path.join(self.tmpdir, "stderr.log")
        self.stdout_path = os.path.join(self.tmpdir, "stdout.log")
        self.slow = slow_factor(self.binary)

    # -- lifecycle
    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def command(self):
        return [self.binary, "-c", self.config_path] + self.args

    def start(self, wait=True):
        env = dict(os.environ)
        env.update(self.env_extra)
        self._stderr = open(self.stderr_path, "ab")
        self._stdout = open(self.stdout_path, "ab")
        self._ready_from = self._stderr.tell()     # this start's lines follow
        self.returncode = None
        nofile = self.nofile

        def limits():
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self._stdout, stderr=self._stderr,
                                     cwd=self.tmpdir, env=env,
                                     preexec_fn=limits if nofile is not None else None)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20):
        end = time.time() + timeout * self.slow
        while time.time() < end:
            if self.proc.poll() is not None:
                raise AssertionError("fosr-collector exited with %s before listening:\n%s"
                                     % (self.proc.returncode, self.stderr_tail()))
            # listening, and the sockets are this process's (not another
            # test run's daemon that happened to pick the same port)
            listening = _listen_inodes()
            if all(p in listening for p in self.ports.values()):
                mine = _socket_inodes(self.proc.pid)
                if all(listening[p] in mine for p in self.ports.values()) and self._said_ready():
                    return
            time.sleep(0.05)
        raise AssertionError("fosr-collector not listening and ready on %s after %ss:\n%s"
                             % (self.ports, timeout, self.stderr_tail()))

    def _said_ready(self):
        """The daemon logged "ready:" since this start: the ports are bound
        before the chroot, the outputs and the sandbox, so a listening socket
        alone (the kernel completes handshakes into the backlog) does not say
        the startup is over (test_chroot_spool_inside read /proc/PID/root as
        "/" in that window)."""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(self._ready_from)
                return b" ready: " in f.read()
        except OSError:
            return False

    def _reap(self):
        for f in (getattr(self, "_stderr", None), getattr(self, "_stdout", None)):
            if f:
                f.close()
        self._stderr = self._stdout = None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signal the daemon by pid and wait; SIGKILL after timeout (returncode -9)."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout * self.slow)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.returncode = self.proc.returncode
        self.proc = None
        self._reap()
        return self.returncode

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        if self.running:
            rc = self.stop()
            if rc != 0:
                raise AssertionError("exit status %s on restart:\n%s" % (rc, self.stderr_tail()))
        self.proc = None
        # The kernel may still hold the old sockets in TIME_WAIT; the daemon
        # must bind anyway (SO_REUSEADDR), so no waiting here.
        return self.start()

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def cleanup(self):
        if self.running:
            self.kill9()
        try:
            # Every event any test makes must match etc/events.schema.json.
            bad = validate_events(self._jsonl(self.event_log))
        finally:
            if self.own_tmpdir and not os.environ.get("FOSR_KEEP"):
                shutil.rmtree(self.tmpdir, ignore_errors=True)
        if bad:
            raise AssertionError("events not matching etc/events.schema.json:\n" + "\n".join(bad))

    # -- clients
    def connect(self, name="smtp", banner=True, **kw):
        """SMTPRaw to a listener (TLS wrapped for implicit listeners); reads the banner."""
        tls = self._tls_mode(name) == "implicit"
        kw.setdefault("timeout", 10 * self.slow)
        c = SMTPRaw(HOST, self.ports[name], tls=tls, **kw)
        if banner:
            r = c.banner()
            if r.code != 220:
                c.close()
                raise AssertionError("banner: %r" % r)
        return c

    def _tls_mode(self, name):
        if self.config:
            for l in self.config.get("listeners", []):
                if l["name"] == name:
                    return l["tls"]
        return "plain"

    # -- what the daemon wrote
    def _jsonl(self, path, strict=False):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        out = []
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines and not strict:
            lines.pop()     # a line being written right now
        for n, line in enumerate(lines, 1):
            try:
                text = line.decode("utf-8")
                obj = json.loads(text)
            except (UnicodeDecodeError, ValueError) as e:
                if strict:
                    raise AssertionError("%s:%d: not a valid UTF-8 JSON line (%s): %r"
                                         % (path, n, e, line[:300]))
                continue
            if strict and not isinstance(obj, dict):
                raise AssertionError("%s:%d: not a JSON object" % (path, n))
            out.append(obj)
        return out

    def events(self, strict=False):
        return self._jsonl(self.event_log, strict)

    def session_events(self, src_port, eventid=None):
        """Events of the session whose client port is src_port."""
        return [e for e in self.events()
                if e.get("src_port") == src_port and (eventid is None or e.get("eventid") == eventid)]

    def wait_event(self, eventid, pred=None, timeout=10):
        end = time.time() + timeout * self.slow
        while True:
            for e in self.events():
                if e.get("eventid") == eventid and (pred is None or pred(e)):
                    return e
            if time.time() > end:
                raise AssertionError("no %s event (pred %s) within %ss; events:\n%s"
                                     % (eventid, pred, timeout,
                                        "\n".join(json.dumps(e) for e in self.events()[-20:])))
            time.sleep(0.05)

    @property
    def journal_path(self):
        return os.path.join(self.spool_dir, "receptions.jsonl")

    def journal(self, strict=False):
        return self._jsonl(self.journal_path, strict)

    def journal_record(self, queue_id):
        recs = [r for r in self.journal() if r.get("queue_id") == queue_id]
        if len(recs) != 1:
            raise AssertionError("journal has %d records for queue id %s: %s"
                                 % (len(recs), queue_id, self.journal()[-5:]))
        return recs[0]

    def message_path(self, sha):
        return os.path.join(self.spool_dir, "messages", sha + ".eml")

    def message_bytes(self, sha):
        with open(self.message_path(sha), "rb") as f:
            return f.read()

    def messages(self):
        d = os.path.join(self.spool_dir, "messages")
        out = {}
        if os.path.isdir(d):
            for name in os.listdir(d):
                if name.endswith(".eml"):
                    with open(os.path.join(d, name), "rb") as f:
                        out[name[:-4]] = f.read()
        return out

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, n=40):
        return "\n".join(self.stderr_text().splitlines()[-n:])

    def check_sanitizers(self):
        text = self.stderr_text()
        for m in SANITIZER_MARKERS:
            if m in text:
                i = text.index(m)
                raise AssertionError("sanitizer report in daemon stderr:\n%s"
                                     % text[max(0, i - 2000):i + 6000])

    def status(self, field):
        """A /proc/PID/status value in kB (VmHWM, VmRSS...)."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)


def run_tool(args, timeout=30, **kw):
    """Run a helper program (swaks, openssl, the daemon) with a timeout; kill by pid after."""
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, **kw)


# ---------------------------------------------------------------- unittest glue

def with_config(cfg=None, **kw):
    """Decorator: config (merged over the class's) and Collector kwargs for one test."""
    def deco(fn):
        fn.fosr_config = cfg or {}
        fn.fosr_kwargs = kw
        return fn
    return deco


class CollectorTestCase(unittest.TestCase):
    """setUp: a tmpdir and a started Collector (self.c); tearDown: stop by pid,
    require exit 0 and a clean sanitizer report, remove the tmpdir."""

    config = None          # class-wide config overrides
    collector_args = ()
    autostart = True
    expect_exit = 0        # a test that kills the daemon sets self.expect_exit = None

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix="fosr-e2e-")
        fn = getattr(self, self._testMethodName)
        cfg = deep_merge(self.config or {}, getattr(fn, "fosr_config", {}))
        kw = dict(getattr(fn, "fosr_kwargs", {}))
        kw.setdefault("args", self.collector_args)
        self.c = Collector(self.tmpdir, config=cfg, **kw)
        self.slow = self.c.slow
        self.expect_exit = type(self).expect_exit
        self._clients = []
        if self.autostart:
            self.c.start()

    def wait(self, pred, timeout, what):
        """Until pred() is true, at most timeout seconds (times the build's
        slowness); else fail naming what and the daemon's stderr tail."""
        end = time.time() + timeout * self.slow
        while time.time() < end:
            if pred():
                return
            time.sleep(0.05)
        raise AssertionError("%s not reached within %ss\ncollector:\n%s"
                             % (what, timeout, self.c.stderr_tail()))

    def client(self, name="smtp", **kw):
        """A connected SMTPRaw (banner read) closed at tearDown."""
        cl = self.c.connect(name, **kw)
        self._clients.append(cl)
        return cl

    def tearDown(self):
        for cl in self._clients:
            cl.close()
        try:
            rc = self.c.stop() if self.c.running else self.c.returncode
            self.c.check_sanitizers()
            if self.expect_exit is not None and rc is not None and rc != self.expect_exit:
                raise AssertionError("fosr-collector exit status %s (expected %s):\n%s"
                                     % (rc, self.expect_exit, self.c.stderr_tail()))
        finally:
            self.c.cleanup()
            if not os.environ.get("FOSR_KEEP"):
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    # -- helpers used by many tests
    def send_mail(self, body, mail_from="sender@example.org", rcpts=("rcpt@example.net",),
                  name="smtp", ehlo="client.example", tls=False, client=None, mail_params=""):
        """One plain transaction over a raw client; returns (client, queue_id)."""
        cl = client or self.client(name)
        if client is None:
            r = cl.ehlo(ehlo)
            self.assertEqual(r.code, 250, r)
            if tls:
                self.assertEqual(cl.starttls().code, 220)
                self.assertEqual(cl.ehlo(ehlo).code, 250)
        self.assertEqual(cl.cmd("MAIL FROM:<%s>%s" % (mail_from, mail_params)).code, 250)
        for r in rcpts:
            self.assertEqual(cl.cmd("RCPT TO:<%s>" % r).code, 250)
        rep = cl.data(body)
        return cl, queue_id(rep)

    def assert_stored(self, body, qid):
        """body is on disk under its sha256, the journal and the event say the same."""
        sha = sha256_hex(body)
        path = self.c.message_path(sha)
        self.assertTrue(os.path.exists(path), "no %s; messages: %s" % (path, list(self.c.messages())))
        stored = self.c.message_bytes(sha)
        self.assertEqual(len(stored), len(body))
        self.assertEqual(stored, body, "stored bytes differ from the DATA payload")
        rec = self.c.journal_record(qid)
        self.assertEqual(rec.get("sha256"), sha, rec)
        self.assertEqual(rec.get("size"), len(body), rec)
        ev = self.c.wait_event("fosr.mail.received", lambda e: e.get("queue_id") == qid)
        self.assertEqual(ev.get("sha256"), sha, ev)
        self.assertEqual(ev.get("size"), len(body), ev)
        return rec, ev


def main():
    unittest.main(verbosity=2)
