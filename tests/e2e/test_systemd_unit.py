"""The systemd unit etc/fosr-collector.service: parsed by `systemd-analyze
verify` without a warning, carries the hardening the issue asks for, and
`systemd-analyze security --offline` rates it OK.

systemd-analyze (Debian package systemd) must be installed; without it the
tests are skipped with a message.  verify wants ExecStart's binary to exist,
so the unit is checked from a copy whose ExecStart is the binary under test.
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import REPO, binary_default

UNIT = os.path.join(REPO, "etc", "fosr-collector.service")
NAME = "fosr-collector.service"

# Directive -> the value it must have (None: present, any value).
REQUIRED = {
    "ExecStart": "/usr/local/sbin/fosr-collector -c /etc/fosr-collector/fosr-collector.yml",
    "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
    "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ReadWritePaths": "/var/lib/fosr-collector",
    "StateDirectory": "fosr-collector",
    "WorkingDirectory": "/var/lib/fosr-collector",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectHome": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "SystemCallArchitectures": "native",
    "Restart": "on-failure",
    "KillSignal": "SIGTERM",
    "TimeoutStopSec": "45",
}

# Highest acceptable "Overall exposure level" of systemd-analyze security.
MAX_EXPOSURE = 2.5


def parse_unit(text):
    """{section: {key: value}} of a unit file (last assignment wins)."""
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        section[key.strip()] = value.strip()
    return out


class SystemdUnit(unittest.TestCase):

    def setUp(self):
        self.analyze = shutil.which("systemd-analyze")
        if self.analyze is None:
            self.skipTest("systemd-analyze not installed (Debian package systemd): "
                          "the unit is not verified")
        self.tmp = tempfile.mkdtemp(prefix="fosr-e2e-unit-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.bin = binary_default()
        self.assertTrue(os.access(self.bin, os.X_OK), "%s is not built" % self.bin)

    def copy_unit(self, text=None, name=NAME):
        """The unit, with ExecStart pointing at the binary under test."""
        if text is None:
            with open(UNIT) as f:
                text = f.read()
        conf = os.path.join(REPO, "etc", "fosr-collector.yml")
        text = re.sub(r"(?m)^ExecStart=.*$", "ExecStart=%s -c %s" % (self.bin, conf), text)
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def verify(self, path):
        p = subprocess.run([self.analyze, "verify", "--man=no", path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        text = p.stdout.decode("utf-8", "replace")
        # only what is said about this unit: a host may have broken units of its own
        mine = [ln for ln in text.splitlines() if os.path.basename(path) in ln]
        return p.returncode, mine, text

    def test_verify_clean(self):
        rc, mine, text = self.verify(self.copy_unit())
        self.assertEqual(rc, 0, text)
        self.assertEqual(mine, [], text)

    def test_verify_notices_mistakes(self):
        """The check above is not blind: a misspelt key and a bad value are reported."""
        with open(UNIT) as f:
            text = f.read()
        text = text.replace("ProtectSystem=strict", "ProtectSytem=strict")
        text = text.replace("NoNewPrivileges=yes", "NoNewPrivileges=maybe")
        rc, mine, out = self.verify(self.copy_unit(text, "fosr-broken.service"))
        joined = "\n".join(mine)
        self.assertIn("ProtectSytem", joined, out)
        self.assertIn("maybe", joined, out)

    def test_hardening_directives(self):
        with open(UNIT) as f:
            unit = parse_unit(f.read())
        svc = unit.get("Service", {})
        for key, want in REQUIRED.items():
            self.assertIn(key, svc, "[Service] has no %s=" % key)
            if want is not None:
                self.assertEqual(svc[key], want, key)
        self.assertTrue(svc.get("DynamicUser") == "yes" or svc.get("User"),
                        "neither DynamicUser=yes nor User=")
        # the daemon installs its own filter: a systemd allow list must let it
        if "SystemCallFilter" in svc and not svc["SystemCallFilter"].startswith("~"):
            self.assertIn("seccomp", svc["SystemCallFilter"].split())
        self.assertEqual(unit.get("Install", {}).get("WantedBy"), "multi-user.target")

    def test_security_exposure(self):
        path = self.copy_unit()
        p = subprocess.run([self.analyze, "security", "--offline=true", "--no-pager", path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        text = p.stdout.decode("utf-8", "replace")
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", text)
        if m is None and ("--offline" in text or "unrecognized option" in text):
            self.skipTest("this systemd-analyze has no security --offline (systemd < 250)")
        self.assertIsNotNone(m, text[-2000:])
        self.assertLessEqual(float(m.group(1)), MAX_EXPOSURE, text[-3000:])


if __name__ == "__main__":
    unittest.main()
