"""The reception journal at scale: the -i console reads it from its end, its
start time and memory bounded whatever the journal's size, newest first."""

import hashlib
import os
import resource
import subprocess
import time
import unittest

from harness import (Collector, is_sanitized, slow_factor, binary_default, free_port,
                     to_yaml)
from fixtures.abuse import proc_status
from fixtures.hpfeeds import CHAN, HpfeedsCase, mail

RECORDS = 3_000_000


def record(i):
    return ('{"time":"2026-01-01T00:00:00Z","sha256":"%064x","size":%d,"src_ip":"192.0.2.%d",'
            '"mail_from":"s%d@example.org","rcpt_to":["r@example.net"]}\n'
            % (i, 100 + i % 1000, i % 250, i)).encode()


def proc_io(pid, field):
    """A /proc/PID/io counter of process pid (rchar: bytes its read calls returned)."""
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class ConsoleJournal(unittest.TestCase):

    def setUp(self):
        self.c = Collector()
        os.makedirs(self.c.spool_dir, exist_ok=True)
        self.journal = os.path.join(self.c.spool_dir, "receptions.jsonl")
        with open(self.journal, "wb") as f:
            block = []
            for i in range(RECORDS):
                block.append(record(i))
                if len(block) == 100000:
                    f.write(b"".join(block))
                    block = []
            f.write(b"".join(block))
            f.write(b'{"time":"2026-01-01T00:00:01Z","sha256":"torn')   # a torn last line

    def tearDown(self):
        self.c.cleanup()

    def test_console_reads_a_huge_journal_from_its_end(self):
        binary = binary_default()
        sanitized = is_sanitized(binary)

        def limit():
            # A console that loads everything must fail here, not take the machine.
            if not sanitized:
                resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        outp = os.path.join(self.c.tmpdir, "console.out")
        second_page = ("%064x" % (RECORDS - 21))[:12].encode()
        t0 = time.monotonic()
        with open(outp, "wb") as fo:
            p = subprocess.Popen([binary, "-c", self.c.config_path, "-i"], stdin=subprocess.PIPE,
                                 stdout=fo, stderr=subprocess.STDOUT, preexec_fn=limit)
            try:
                p.stdin.write(b"list\nn\n")
                p.stdin.flush()
                deadline = t0 + 60 * slow_factor(binary)
                while time.monotonic() < deadline and p.poll() is None:
                    with open(outp, "rb") as f:
                        if second_page in f.read():
                            break
                    time.sleep(0.02)
                elapsed = time.monotonic() - t0
                # The console's own peak, read while it runs: VmHWM belongs to
                # its address space, not to the forked test process (wait4's
                # ru_maxrss keeps the parent's RSS across fork+exec).
                peak_kb = proc_status(p.pid, "VmHWM")
                read_bytes = proc_io(p.pid, "rchar")
                p.stdin.write(b"quit\n")
                p.stdin.close()
                p.wait(timeout=30)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        with open(outp, "rb") as f:
            out = f.read()
        err = out
        text = out.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, err.decode(errors="replace")[-2000:])
        size_mb = os.path.getsize(self.journal) >> 20
        print("\n    journal %d records, %d MiB: console start+list %.2f s, read %d MiB, "
              "peak RSS %d MiB" % (RECORDS, size_mb, elapsed, read_bytes >> 20, peak_kb >> 10))
        # newest first: the last complete record is row 1, the next page follows on
        newest = "%064x" % (RECORDS - 1)
        rows = [l for l in text.splitlines() if l.strip()[:1].isdigit()]
        self.assertTrue(rows and rows[0].split()[0] == "1" and newest[:12] in rows[0], text[:3000])
        self.assertIn(("%064x" % (RECORDS - 21))[:12], text)      # row 21, second page
        self.assertIn("the newest 20000 records of the journal are loaded", text)
        self.assertNotIn("torn", text)
        # From its end: what the console read is a small part of the
        # journal (its bytes read, /proc/PID/io rchar, the console's own).
        # A wall-clock bound (15 s) stood for this and measured the machine's
        # load; the time is a figure, printed above, and the wait for the
        # second page above has its deadline (60 s x slow: a hang fails).
        self.assertLess(read_bytes, os.path.getsize(self.journal) // 8,
                        "the console read %d MiB of a %d MiB journal"
                        % (read_bytes >> 20, size_mb))
        if not sanitized:
            self.assertLess(peak_kb, 150 * 1024, "console memory on a %d MiB journal" % size_mb)


class ConsoleSegments(unittest.TestCase):

    def test_console_reads_rotated_segments_newest_first(self):
        c = Collector()
        try:
            os.makedirs(c.spool_dir, exist_ok=True)
            # segment 1: records 0-9, segment 2: 10-19, current: 20-24
            for name, rng in (("receptions.jsonl.%020d" % 1, range(0, 10)),
                              ("receptions.jsonl.%020d" % 2, range(10, 20)),
                              ("receptions.jsonl", range(20, 25))):
                with open(os.path.join(c.spool_dir, name), "wb") as f:
                    f.write(b"".join(record(i) for i in rng))
            r = subprocess.run([c.binary, "-c", c.config_path, "-i"], input=b"list\nn\n",
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            text = r.stdout.decode("utf-8", "replace")
            self.assertEqual(r.returncode, 0, text)
            self.assertIn("25 captured mails", text)
            rows = [l.split() for l in text.splitlines() if l.strip()[:1].isdigit()]
            order = [int(row[4][1:row[4].index("@")]) for row in rows]
            self.assertEqual(order, list(range(24, -1, -1)), text)
        finally:
            c.cleanup()


class JournalSegments(HpfeedsCase):
    """The journal is rotated at a size into receptions.jsonl.<n>; every feed
    cursor continues across rotations (and a restart), and a segment is
    deleted once every cursor is past it and journal_keep allows."""

    COPY = "spam.copy"

    def segments(self):
        return sorted(n for n in os.listdir(self.c.spool_dir) if n.startswith("receptions.jsonl."))

    def test_cursors_continue_across_rotations(self):
        self.broker.users = ["writer:secret:%s,%s:%s,%s" % (CHAN, self.COPY, CHAN, self.COPY)]
        self.broker.port = free_port()
        self.start(broker=False, feed={"channels": [CHAN, self.COPY]},
                   config={"spool": {"journal_segment": 4096, "journal_keep": 1}})
        shas = set(self.send_many([mail(i) for i in range(40)]))
        self.assertGreaterEqual(len(self.segments()), 3, os.listdir(self.c.spool_dir))
        # a restart while the backlog spans several segments
        self.c.stop()
        self.c.start()
        self.broker.start()
        self.wait_for(lambda: shas <= self.broker.shas() and shas <= self.broker.shas(self.COPY),
                      90, "every mail of every segment published on both channels")
        # once both cursors are past them, the next rotation deletes the old segments
        ino = os.stat(os.path.join(self.c.spool_dir, "receptions.jsonl")).st_ino
        # the analysis worker's cursor keeps segments too (issue 15)
        cursors = [os.path.join(self.c.spool_dir, "feed", ch.encode().hex() + ".cursor")
                   for ch in (CHAN, self.COPY, "analysis")]
        self.wait_for(lambda: all(" ino=%d " % ino in open(p).read() for p in cursors), 10,
                      "both cursors saved in the current journal file")
        before = self.segments()
        self.assertGreater(len(before), 1)
        # One mail at a time, each published and both cursors saved in the
        # current file before the next: a rotation then finds every cursor
        # past the older segments (a cursor still in one keeps it, rightly).
        more = set()
        def rotated():
            segs = self.segments()
            return not segs or segs[-1] != before[-1]
        while not rotated() or len(more) < 2:
            b = mail(1000 + len(more))
            self.send_many([b])
            more.add(hashlib.sha256(b).hexdigest())
            self.wait_for(lambda: more <= self.broker.shas() and
                          more <= self.broker.shas(self.COPY), 30, "the mail published")
            ino = os.stat(os.path.join(self.c.spool_dir, "receptions.jsonl")).st_ino
            self.wait_for(lambda: all(" ino=%d " % ino in open(p).read() for p in cursors),
                          10, "both cursors saved in the current journal file")
            self.assertLess(len(more), 40, "no rotation after 40 mails")
        self.assertLessEqual(len(self.segments()), 1, self.segments())
        self.assertNotIn(before[-1], self.segments())
        self.assertNotIn("not published", self.c.stderr_text())

    def backlog_in_segments(self, n=40):
        """Broker down: n mails spread over several segments, then stopped."""
        self.broker.port = free_port()
        self.start(broker=False, config={"spool": {"journal_segment": 4096, "journal_keep": 0}})
        shas = set(self.send_many([mail(i) for i in range(n)]))
        self.assertGreaterEqual(len(self.segments()), 3, os.listdir(self.c.spool_dir))
        cursor = os.path.join(self.c.spool_dir, "feed", CHAN.encode().hex() + ".cursor")
        seg1 = os.stat(os.path.join(self.c.spool_dir, self.segments()[0])).st_ino
        self.wait_for(lambda: os.path.exists(cursor) and " ino=%d " % seg1 in open(cursor).read(),
                      10, "the cursor saved in the first segment")
        self.c.stop()
        return shas, cursor

    def test_segments_followed_in_number_order_not_mtime(self):
        # Segments written within one tick of a coarse clock have the same
        # mtime (and a clock stepped back orders them backwards): the next
        # segment is the next number, never "the next mtime".
        shas, _ = self.backlog_in_segments()
        for name in self.segments():
            os.utime(os.path.join(self.c.spool_dir, name), (1767225600, 1767225600))
        self.c.start()
        self.broker.start()
        self.wait_for(lambda: shas <= self.broker.shas(), 60,
                      "every mail of every segment published")

    def lost_cursor(self, damage):
        # "A bad cursor means duplicates from the start, never a loss": the
        # start is the oldest segment still there, not the current file.
        shas, cursor = self.backlog_in_segments()
        damage(cursor)
        self.c.start()
        self.broker.start()
        self.wait_for(lambda: shas <= self.broker.shas(), 60,
                      "every mail of every segment published")

    def test_corrupt_cursor_publishes_every_segment(self):
        def corrupt(p):
            with open(p, "w") as f:
                f.write("garbage\n")
        self.lost_cursor(corrupt)

    def test_missing_cursor_publishes_every_segment(self):
        self.lost_cursor(os.unlink)


    def test_unreadable_cursor_keeps_every_segment(self):
        # "When in doubt, keep": a cursor the pruning cannot read (EMFILE,
        # EIO at a rotation) protects every segment, as a corrupt one does.
        shas, cursor = self.backlog_in_segments()
        self.c.env_extra["FOSR_TEST_HOOKS"] = "fail=prune_cursor:1:EIO"
        self.c.start()
        before = self.segments()
        more = set(self.send_many([mail(100 + i) for i in range(20)]))
        self.wait_for(lambda: self.segments()[-1:] != before[-1:], 30, "a rotation")
        self.broker.start()
        self.wait_for(lambda: shas | more <= self.broker.shas(), 60,
                      "every mail of every segment published")


    def channels(self, chans):
        """Configure these channels for the next start."""
        self.c.config["feed"]["channels"] = list(chans)
        with open(self.c.config_path, "w") as f:
            f.write(to_yaml(self.c.config))

    def cursor_path(self, ch, stale=False):
        return os.path.join(self.c.spool_dir, "feed", *(["stale"] if stale else []),
                            ch.encode().hex() + ".cursor")

    def rotate_until_pruned(self, chans):
        """One mail at a time, each published on chans and every live cursor
        saved in the current file, until a rotation happened after the
        first such mail: then no cursor in feed/ keeps an older segment."""
        before = self.segments()
        live = [self.cursor_path(ch) for ch in list(chans) + ["analysis"]]
        more = set()

        def rotated():
            segs = self.segments()
            return not segs or segs[-1] != before[-1]
        while not rotated() or len(more) < 2:
            b = mail(1000 + len(more))
            self.send_many([b])
            more.add(hashlib.sha256(b).hexdigest())
            self.wait_for(lambda: all(more <= self.broker.shas(ch) for ch in chans), 30,
                          "the mail published")
            ino = os.stat(self.c.journal_path).st_ino
            self.wait_for(lambda: all(" ino=%d " % ino in open(p).read() for p in live),
                          10, "the live cursors saved in the current journal file")
            self.assertLess(len(more), 40, "no rotation after 40 mails")
        return before

    def test_removed_output_cursor_moved_aside_frees_segments(self):
        # A channel removed from the configuration: its cursor left in feed/
        # kept every segment from the one it points into, forever.  At start
        # it is moved to feed/stale/ (said in the log) and keeps none; the
        # configured channel's cursor is never touched; re-added, the
        # channel gets its cursor back and publishes again.
        self.broker.users = ["writer:secret:%s,%s:%s,%s" % (CHAN, self.COPY, CHAN, self.COPY)]
        self.broker.port = free_port()
        self.start(broker=False, feed={"channels": [CHAN, self.COPY]},
                   config={"spool": {"journal_segment": 4096, "journal_keep": 0}})
        shas = set(self.send_many([mail(i) for i in range(40)]))
        self.assertGreaterEqual(len(self.segments()), 3, os.listdir(self.c.spool_dir))
        seg1 = os.stat(os.path.join(self.c.spool_dir, self.segments()[0])).st_ino
        self.wait_for(lambda: all(" ino=%d " % seg1 in open(self.cursor_path(ch)).read()
                                  for ch in (CHAN, self.COPY)), 10,
                      "both cursors saved in the first segment")
        self.c.stop()

        self.channels([CHAN])
        self.c.start()
        self.broker.start()
        self.wait_for(lambda: os.path.exists(self.cursor_path(self.COPY, stale=True)), 10,
                      "the removed channel's cursor moved to feed/stale/")
        self.assertFalse(os.path.exists(self.cursor_path(self.COPY)))
        self.assertTrue(os.path.exists(self.cursor_path(CHAN)))
        self.assertFalse(os.path.exists(self.cursor_path(CHAN, stale=True)))
        line = [l for l in self.c.stderr_text().splitlines() if "feed/stale" in l]
        self.assertEqual(len(line), 1, line)
        self.assertIn('"%s"' % self.COPY, line[0])
        self.assertIn("no longer configured", line[0])
        self.wait_for(lambda: shas <= self.broker.shas(), 60, "the backlog published on CHAN")
        self.rotate_until_pruned([CHAN])
        self.assertLessEqual(len(self.segments()), 1, self.segments())
        # the configured channel published each mail once: its cursor was kept
        got = [p["sha256"] for p in self.broker.payloads(CHAN)]
        self.assertEqual(len(got), len(set(got)))
        self.c.stop()

        self.channels([CHAN, self.COPY])
        self.c.start()
        self.wait_for(lambda: os.path.exists(self.cursor_path(self.COPY)), 10,
                      "the cursor back in feed/")
        self.assertFalse(os.path.exists(self.cursor_path(self.COPY, stale=True)))
        self.assertIn("restored", self.c.stderr_text())
        new = set(self.send_many([mail(500 + i) for i in range(3)]))
        self.wait_for(lambda: new <= self.broker.shas(self.COPY) and new <= self.broker.shas(),
                      30, "new mail published on both channels again")

if __name__ == "__main__":
    unittest.main(verbosity=2)
