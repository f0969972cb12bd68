"""Charsets beyond glibc's built-ins under sandbox.chroot (src/charsets.c).

glibc converts most charsets (KOI8-R, windows-1251, Shift_JIS, GB2312,
Big5, ISO-2022-JP, EUC-KR, ISO-8859-2..16, ...) with modules it dlopen()s from
/usr/lib/<arch>/gconv on first use, a directory that is not inside a chroot.
Each mail here has its Subject (RFC 2047), its text body and an attachment's
file name (RFC 2231) in one such charset: the analysis (GMime) must decode the
Subject and the file name into the fosr.mail.parsed document, and the rules
(src/mime.c) must match a word of the decoded Subject and one of the decoded
body.  The same mails are checked with and without a chroot.
"""

import base64
import os
import time
import unittest
import urllib.parse

from harness import (CollectorTestCase, binary_default, is_sanitized, sha256_hex,
                     under_valgrind)

# charset (as mail names it), a word of its script for the Subject, one for the body
SAMPLES = [
    ("iso-8859-1", "Grüße", "Überweisung"),
    ("koi8-r", "Привет", "Счёт"),
    ("koi8-u", "Привіт", "Рахунок"),
    ("windows-1251", "Здравствуйте", "Оплата"),
    ("iso-8859-5", "Спасибо", "Посылка"),
    ("windows-1250", "Příliš", "žluťoučký"),
    ("iso-8859-2", "Zażółć", "gęślą"),
    ("iso-8859-7", "Καλημέρα", "Τιμολόγιο"),
    ("windows-1253", "Ευχαριστώ", "Πληρωμή"),
    ("iso-8859-9", "Güneşli", "Ödeme"),
    ("windows-1254", "Teşekkür", "Fatura"),
    ("iso-8859-8", "שלום", "חשבונית"),
    ("windows-1256", "مرحبا", "فاتورة"),
    ("windows-1252", "Café€", "Rechnung€"),
    ("iso-8859-15", "Prix€", "Œuvre"),
    ("shift_jis", "こんにちは", "請求書"),
    ("iso-2022-jp", "ありがとう", "お支払い"),
    ("euc-jp", "さようなら", "配達"),
    ("gb2312", "你好世界", "发票"),
    ("gbk", "中奖通知", "幸运"),
    ("gb18030", "优惠活动", "免费"),
    ("big5", "發票通知", "恭喜發財"),
    ("euc-kr", "안녕하세요", "결제"),
    ("tis-620", "สวัสดี", "ขอบคุณ"),
]


def rule_name(cs):
    return "cs-" + cs


def rules_yaml():
    out = ["rules:"]
    for i, (cs, subj, body) in enumerate(SAMPLES):
        out += ["  - name: %s" % rule_name(cs),
                "    priority: %d" % (10 + i),
                "    stage: data",
                "    conditions:",
                "      - subject: {contains: \"%s\"}" % subj,
                "        body: {contains: \"%s\"}" % body,
                "    actions:",
                "      tag: %s" % cs]
    return "\n".join(out) + "\n"


def mail(cs, subj, body):
    """Subject as an encoded-word, a text part and a file name in charset cs."""
    s = base64.b64encode(subj.encode(cs)).decode()
    fname = urllib.parse.quote_from_bytes((body + ".txt").encode(cs))
    text = ("text: " + body + " end\r\n").encode(cs)
    return (b"From: spammer@example.org\r\nTo: victim@example.net\r\n"
            b"Subject: =?" + cs.encode() + b"?B?" + s.encode() + b"?= " + cs.encode() + b"\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain; charset=" + cs.encode() + b"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" +
            base64.encodebytes(text).replace(b"\n", b"\r\n") +
            b"--b1\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename*=" + cs.encode() + b"''" +
            fname.encode() + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            b"aGVsbG8K\r\n--b1--\r\n")


def no_leak_check_env():
    """LeakSanitizer lists threads in /proc/<pid>/task: not there in a chroot."""
    if not is_sanitized(binary_default()):
        return {}
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "detect_leaks=0"}


class CharsetsCase:
    """Mixed into a CollectorTestCase below."""
    autostart = False
    chroot = False

    def setUp(self):
        super().setUp()
        if self.chroot:
            self.root = os.path.join(self.tmpdir, "root")
            os.mkdir(self.root)
            rules = os.path.join(self.root, "rules.yml")
        else:
            rules = os.path.join(self.tmpdir, "rules.yml")
        with open(rules, "w", encoding="utf-8") as f:
            f.write(rules_yaml())
        if self.chroot:
            self.c.env_extra.update(no_leak_check_env())
        self.c.start()

    def started(self):
        """In the test, not setUp: a failed setUp gets no tearDown to stop the daemon."""
        if self.chroot:
            # the harness reads files from outside the chroot
            self.c.spool_dir = os.path.join(self.root, "spool")
            self.c.event_log = os.path.join(self.root, "events.json")
            # the ports listen before the chroot; the start event is after it
            self.c.wait_event("fosr.collector.start")
            self.assertEqual(os.readlink("/proc/%d/root" % self.c.proc.pid), self.root)

    def wait_parsed(self, shas, timeout=30):
        end = time.time() + timeout * self.slow
        while True:
            got = {e.get("sha256"): e for e in self.c.events()
                   if e.get("eventid") == "fosr.mail.parsed"}
            if set(shas) <= set(got):
                return got
            if time.time() > end:
                self.fail("parsed %d of %d mails\n%s" % (len(set(shas) & set(got)),
                                                        len(shas), self.c.stderr_tail()))
            time.sleep(0.05)

    def records(self, shas, timeout=30):
        end = time.time() + timeout * self.slow
        while True:
            got = {r.get("sha256"): r for r in self.c.journal() if r.get("sha256") in shas}
            if len(got) == len(shas) and all("rules" in r for r in got.values()):
                return got
            if time.time() > end:
                self.fail("journal: %d of %d records\n%s" % (len(got), len(shas),
                                                            self.c.stderr_tail()))
            time.sleep(0.05)

    def test_charsets_decoded(self):
        self.started()
        mails = {}
        for cs, subj, body in SAMPLES:
            b = mail(cs, subj, body)
            self.send_mail(b)
            mails[sha256_hex(b)] = (cs, subj, body)
        parsed = self.wait_parsed(list(mails))
        recs = self.records(set(mails))
        bad = []
        for sha, (cs, subj, body) in mails.items():
            em = parsed[sha]["email"]
            if em.get("subject") != subj + " " + cs:
                bad.append("%s: subject %r" % (cs, em.get("subject")))
            names = [a.get("file", {}).get("name") for a in em.get("attachments", [])]
            if names != [body + ".txt"]:
                bad.append("%s: file name %r" % (cs, names))
            r = recs[sha]["rules"]
            if r.get("rule") != rule_name(cs):
                bad.append("%s: rules %r" % (cs, r))
        self.assertEqual(bad, [], "\n".join(bad))
        self.assertTrue(self.c.running)

    def test_unlisted_charset(self):
        """EBCDIC (IBM037) is not in src/charsets.c's list: without a chroot
        glibc loads its module and it decodes; under one it cannot, and the
        mail is still stored, parsed and ruled on, its text kept raw."""
        self.started()
        b = mail("cp037", "Grüße", "Überweisung")
        self.send_mail(b)
        sha = sha256_hex(b)
        em = self.wait_parsed([sha])[sha]["email"]
        rec = self.records({sha})[sha]
        if self.chroot:
            self.assertNotIn("Grüße", em["subject"], em)
            self.assertTrue(em["subject"].endswith(" cp037"), em)
            self.assertIs(rec["rules"]["matched"], False, rec)
        else:
            self.assertEqual(em["subject"], "Grüße cp037", em)
        self.assertTrue(self.c.running)


class Charsets(CharsetsCase, CollectorTestCase):
    """No chroot: every module is found where glibc looks."""
    config = {"relay": {"mode": "dry-run", "rules": "{tmp}/rules.yml"},
              "sandbox": {"seccomp": not under_valgrind()}}


@unittest.skipUnless(os.geteuid() == 0, "chroot needs root")
class CharsetsChroot(CharsetsCase, CollectorTestCase):
    """sandbox.chroot into an empty directory: no gconv module inside."""
    chroot = True
    config = {"relay": {"mode": "dry-run", "rules": "/rules.yml"},
              "sandbox": {"seccomp": not under_valgrind(), "chroot": "{tmp}/root"},
              "spool": {"directory": "/spool"},
              "event_log": "/events.json"}


if __name__ == "__main__":
    unittest.main()
