"""The container, tested from outside (run by scripts/check-container.sh,
`make check-container`; needs root and podman).

Argument: the image.  Environment: FOSR_PODMAN, the podman command line to use
(runtime and store), as check-container.sh sets it.

It runs the image read-only (--read-only, as uid 2000 from the image) with a
named volume and the three ports published on loopback, sends a mail to each
port (25 plain and STARTTLS, 465 implicit TLS with AUTH, 587 STARTTLS with
AUTH) and a relay probe, finds the mails (.eml), their events and the probe's
dry-run caps reservation on the volume, then restarts the container and checks
the hostname (banner), the certificate and the caps (a probe after the restart
is decided under caps that count the one before) are kept.
"""

import hashlib
import json
import os
import shlex
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import unittest

IMAGE = sys.argv[1] if len(sys.argv) > 1 else "localhost/fosr-collector:check"
PODMAN = shlex.split(os.environ.get("FOSR_PODMAN", "podman --runtime runc"))
NAME = "fosr-check"
VOLUME = "fosr-check"
HOST = "127.0.0.1"
# Login the shipped credential policy accepts (README: root with a non-trivial password).
LOGIN = ("root", "abcdef")
TIMEOUT = 60


def podman(*args, check=True):
    p = subprocess.run(PODMAN + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=300)
    if check and p.returncode != 0:
        raise AssertionError("podman %s: exit %d: %s" % (" ".join(args), p.returncode,
                                                          p.stderr.decode(errors="replace")))
    return p.stdout.decode(errors="replace").strip()


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def ctx():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def wait(cond, what, timeout=TIMEOUT, name=NAME):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what + "\n" + podman("logs", "--tail", "40", name, check=False))


def body(tag):
    return ("From: c@example.org\r\nTo: r@example.net\r\nSubject: container %s\r\n\r\n"
            "container test %s %f\r\n" % (tag, tag, time.time())).encode()


class Container(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        podman("rm", "-f", "-t", "0", NAME, check=False)
        podman("volume", "rm", "-f", VOLUME, check=False)
        podman("volume", "create", VOLUME)
        cls.vol = podman("volume", "inspect", "--format", "{{.Mountpoint}}", VOLUME)
        cls.ports = dict(zip((25, 465, 587), free_ports(3)))
        args = ["run", "-d", "--name", NAME, "--read-only", "--ulimit", "host",
                "-v", VOLUME + ":/var/lib/fosr-collector"]
        for inner, outer in cls.ports.items():
            args += ["-p", "%s:%d:%d" % (HOST, outer, inner)]
        podman(*(args + [IMAGE]))
        cls.ip = podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", NAME)

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("FOSR_CONTAINER_KEEP") != "1":
            podman("rm", "-f", "-t", "0", NAME, check=False)
            podman("volume", "rm", "-f", VOLUME, check=False)

    # -- helpers
    def banner(self, inner):
        """The 220 line on a published port, under TLS on 465 (waits for the
        daemon to listen: it looks the client up first)."""
        def try_once():
            try:
                with socket.create_connection((HOST, self.ports[inner]), timeout=5) as s:
                    s.settimeout(30)
                    if inner == 465:
                        s = ctx().wrap_socket(s)
                    line = s.makefile("rb").readline().decode()
                    s.close()
                    return line if line.startswith("220 ") else None
            except OSError:
                return None
        return wait(try_once, "a banner on %d" % inner)

    def events(self):
        try:
            with open(os.path.join(self.vol, "log", "fosr-events.json"), "rb") as f:
                return [json.loads(ln) for ln in f if ln.strip()]
        except FileNotFoundError:
            return []

    def wait_event(self, eventid, pred):
        return wait(lambda: next((e for e in self.events()
                                  if e.get("eventid") == eventid and pred(e)), None), eventid)

    def send(self, port, data, rcpt="r@example.net"):
        """Send data to the published port; returns the sha256 of what is stored."""
        outer = self.ports[port]
        if port == 465:
            s = smtplib.SMTP_SSL(HOST, outer, context=ctx(), timeout=TIMEOUT)
        else:
            s = smtplib.SMTP(HOST, outer, timeout=TIMEOUT)
        try:
            s.ehlo("client.example.org")
            if port == 587:
                s.starttls(context=ctx())
                s.ehlo("client.example.org")
            if port != 25:
                s.login(*LOGIN)
            s.sendmail("c@example.org", [rcpt], data)
        finally:
            s.quit()
        return hashlib.sha256(data).hexdigest()

    def peer_cert(self):
        with socket.create_connection((HOST, self.ports[465]), timeout=TIMEOUT) as raw:
            with ctx().wrap_socket(raw) as s:
                return s.getpeercert(binary_form=True)

    def main_pid(self):
        return int(podman("inspect", "--format", "{{.State.Pid}}", NAME))

    def probe(self, n):
        return ("From: t <drop@spammer.example>\r\nTo: drop@spammer.example\r\n"
                "Subject: relay test %s:25 #%d\r\n\r\ntest %d\r\n" % (self.ip, n, n)).encode()

    # -- the test: one sequence, the restart in the middle
    def test_container(self):
        for port in (25, 465, 587):
            self.banner(port)
        host = self.banner(25).split()[1]
        self.assertNotEqual(host, podman("inspect", "--format", "{{.Config.Hostname}}", NAME),
                            "banner names the container id")
        self.assertTrue(host.endswith(".localdomain"), host)

        # uid/gid 2000, read-only root
        with open("/proc/%d/status" % self.main_pid()) as f:
            st = dict(ln.split(":", 1) for ln in f)
        self.assertEqual(st["Uid"].split()[:2], ["2000", "2000"], st["Uid"])
        self.assertEqual(st["Gid"].split()[:2], ["2000", "2000"], st["Gid"])
        self.assertEqual(st["CapEff"].strip(), "0" * 16, "capabilities kept after bind")
        self.assertEqual(podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", NAME), "true")
        r = subprocess.run(PODMAN + ["exec", NAME, "touch", "/usr/local/x"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertNotEqual(r.returncode, 0, "root file system writable")

        # a mail on each port: the .eml and the event on the volume
        for port in (25, 465, 587):
            data = body(str(port))
            sha = self.send(port, data)
            ev = self.wait_event("fosr.mail.received", lambda e: e.get("sha256") == sha)
            self.assertEqual(ev["dst_port"], port, ev)
            self.assertEqual(ev["sensor"], host, ev)
            # what etc/tpot/logstash.conf relies on: an ISO 8601 timestamp, dst_* to rename
            self.assertRegex(ev["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
            self.assertEqual(ev["dst_ip"], self.ip, ev)
            for k in ("src_ip", "src_port", "session", "eventid"):
                self.assertIn(k, ev)
            eml = wait(lambda: [os.path.join(d, f) for d, _, fs in
                                os.walk(os.path.join(self.vol, "spool"))
                                for f in fs if f.startswith(sha)], "the .eml of " + sha)
            with open(eml[0], "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), sha)
        print("mail on 25, 465, 587: stored and logged on the volume", file=sys.stderr)

        # a relay probe: dry-run decision, its reservation in the caps journal
        p1 = self.send(25, self.probe(1), rcpt="drop@spammer.example")
        d = self.wait_event("fosr.relay.decision", lambda e: e.get("sha256") == p1)
        self.assertEqual(d["verdict"], "dry-run", d)
        caps = os.path.join(self.vol, "spool", "relay", "caps-dry-run.log")
        with open(caps, "rb") as f:
            self.assertIn(p1.encode(), f.read())

        cert = self.peer_cert()
        pid = self.main_pid()
        t = time.time()
        podman("restart", "-t", "45", NAME)
        print("restart: %.1f s" % (time.time() - t), file=sys.stderr)
        self.assertNotEqual(self.main_pid(), pid)
        self.ip = podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", NAME)
        self.assertEqual(self.banner(25).split()[1], host, "hostname changed")
        self.banner(465)
        self.assertEqual(self.peer_cert(), cert, "certificate changed")
        # another probe (the address it names may have changed with the
        # restart): the caps it is decided under count the one before it
        p2 = self.send(25, self.probe(2), rcpt="drop@spammer.example")
        d2 = self.wait_event("fosr.relay.decision", lambda e: e.get("sha256") == p2)
        for k in ("day", "hour", "recipient", "domain", "client_ip"):
            self.assertEqual(d2["caps"][k], d["caps"][k] + 1, (k, d, d2))
        print("after restart: hostname %s, certificate and caps kept (day %d -> %d)"
              % (host, d["caps"]["day"], d2["caps"]["day"]), file=sys.stderr)


class Hostname(unittest.TestCase):
    """FOSR_HOSTNAME names the sensor; a name that is not a DNS name is refused
    before anything reaches a configuration."""

    def run_container(self, name, env, wait_exit=False):
        podman("rm", "-f", "-t", "0", name, check=False)
        self.addCleanup(podman, "rm", "-f", "-t", "0", name, check=False)
        self.addCleanup(podman, "volume", "rm", "-f", name, check=False)
        port = free_ports(1)[0]
        podman("run", "-d", "--name", name, "--read-only", "--ulimit", "host", "-e", env,
               "-v", name + ":/var/lib/fosr-collector", "-p", "%s:%d:25" % (HOST, port), IMAGE)
        return port

    def test_from_environment(self):
        port = self.run_container("fosr-check-env", "FOSR_HOSTNAME=mail.example.com")

        def banner():
            try:
                with socket.create_connection((HOST, port), timeout=5) as s:
                    s.settimeout(30)
                    return s.makefile("rb").readline().decode()
            except OSError:
                return None
        line = wait(banner, "a banner", name="fosr-check-env")
        self.assertTrue(line.startswith("220 mail.example.com ESMTP"), line)

    def test_bad_name_refused(self):
        self.run_container("fosr-check-bad", "FOSR_HOSTNAME=x\"\nuser: root")
        wait(lambda: podman("inspect", "--format", "{{.State.Status}}", "fosr-check-bad") == "exited",
             "the container to exit", name="fosr-check-bad")
        self.assertEqual(podman("inspect", "--format", "{{.State.ExitCode}}", "fosr-check-bad"), "2")
        logs = subprocess.run(PODMAN + ["logs", "fosr-check-bad"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT).stdout.decode(errors="replace")
        self.assertIn("is not a DNS name", logs)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
