"""Events that index cleanly: etc/events.schema.json describes every eventid,
one type per field name across all of them, and every event the suite makes
is validated against it (harness.Collector.cleanup)."""

import copy
import json
import os
import subprocess
import sys
import unittest

from harness import EVENTS_SCHEMA, REPO, CollectorTestCase, events_validator, validate_events

CONNECT = {
    "eventid": "fosr.session.connect", "timestamp": "2026-12-06T08:00:00.123456Z",
    "session": "0123456789abcdef", "src_ip": "192.0.2.7", "src_port": 40000,
    "dst_ip": "198.51.100.1", "dst_port": 25, "protocol": "smtp", "sensor": "s1",
    "listener": "smtp", "tls_mode": "starttls",
    "message": "New connection: 192.0.2.7:40000 (198.51.100.1:25) [session: 0123456789abcdef]",
}


class Schema(unittest.TestCase):

    def setUp(self):
        with open(EVENTS_SCHEMA) as f:
            self.schema = json.load(f)

    def test_generated_from_its_source(self):
        out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "events_schema.py")],
                             stdout=subprocess.PIPE, check=True).stdout
        self.assertEqual(json.loads(out), self.schema,
                         "etc/events.schema.json differs from scripts/events_schema.py's output")

    def test_one_type_per_field_name(self):
        events_validator()      # check_schema: a valid 2020-12 schema
        for name, prop in self.schema["properties"].items():
            self.assertIsInstance(prop.get("type"), str, "%s: one type, not %r" % (name, prop))
        ids = self.schema["properties"]["eventid"]["enum"]
        conds = [c["if"]["properties"]["eventid"]["const"] for c in self.schema["allOf"]]
        self.assertEqual(sorted(ids), sorted(conds))
        for c in self.schema["allOf"]:
            for n in c["then"]["propertyNames"]["enum"]:
                self.assertIn(n, self.schema["properties"], c["if"])

    def test_rejects_what_would_break_an_index(self):
        self.assertEqual(validate_events([CONNECT]), [])
        cases = {
            "unknown eventid": dict(CONNECT, eventid="fosr.session.bogus"),
            "field of another event": dict(CONNECT, duration_ms=5),
            "undeclared field": dict(CONNECT, extra="x"),
            "port as text": dict(CONNECT, src_port="40000"),
            "no message": {k: v for k, v in CONNECT.items() if k != "message"},
            "bad timestamp": dict(CONNECT, timestamp="2026-12-06 08:00:00"),
        }
        closed = {k: v for k, v in CONNECT.items() if k not in ("listener", "tls_mode")}
        closed.update(eventid="fosr.session.closed", reason="quit", commands=3, mails=1,
                      errors=0, message="Connection lost")
        self.assertEqual(validate_events([dict(closed, duration_ms=12)]), [])
        cases["duration in seconds"] = dict(closed, duration_ms=0.012)
        cases["the old duration"] = dict(closed, duration=0.012)
        attempt = {k: v for k, v in CONNECT.items() if k not in ("listener", "tls_mode")}
        attempt.update(eventid="fosr.relay.attempt", sha256="a" * 64, queue_id="4F1A2B3C4D",
                       source="daemon", mode="live", test_mode=False, rcpt="a@example.net",
                       target_rcpt="a@example.net", relay_queue_id="5B2C", mx="mx.example.net",
                       ip="", port=25, status="refused",
                       status_text="refused: loopback (127.0.0.0/8)", message="Relay attempt")
        self.assertEqual(validate_events([attempt]), [])
        cases["status as text"] = dict(attempt, status="refused: loopback (127.0.0.0/8)")
        cases["tls null"] = dict(attempt, tls=None)
        for why, ev in cases.items():
            self.assertTrue(validate_events([ev]), "accepted: %s" % why)


class EveryEvent(CollectorTestCase):
    """A session that makes each session event, validated and typed."""

    config = {"auth": {"outcome": "accept"}}

    def test_session_events_match_the_schema(self):
        cl = self.client("smtp")
        self.assertEqual(cl.ehlo("client.example").code, 250)
        self.assertEqual(cl.cmd("XYZZY hello").code, 500)
        self.assertEqual(cl.cmd("AUTH PLAIN AHVzZXIAcGFzc3dvcmQ=").code, 235)
        self.send_mail(b"Subject: s\r\n\r\nbody\r\n", client=cl)
        cl.cmd("QUIT")
        cl.close()
        closed = self.c.wait_event("fosr.session.closed")
        evs = self.c.events()
        ids = {e["eventid"] for e in evs}
        for want in ("fosr.collector.start", "fosr.session.connect", "fosr.command.unknown",
                     "fosr.login.attempt", "fosr.mail.received", "fosr.session.closed"):
            self.assertIn(want, ids)
        self.assertEqual(validate_events(evs), [])
        self.assertIsInstance(closed["duration_ms"], int)
        self.assertNotIn("duration", closed)
        login = [e for e in evs if e["eventid"] == "fosr.login.attempt"][0]
        self.assertIn("[user/password] succeeded", login["message"])
        unknown = [e for e in evs if e["eventid"] == "fosr.command.unknown"][0]
        self.assertIn("XYZZY hello", unknown["message"])
        for e in evs:
            self.assertTrue(e["message"], e)

    def test_a_bad_event_fails_the_test_that_made_it(self):
        # What the harness checks at cleanup: an event that does not match fails.
        ev = copy.deepcopy(CONNECT)
        self.assertEqual(self.c.stop(), 0)
        with open(self.c.event_log, "a") as f:
            f.write(json.dumps(dict(ev, src_port="x")) + "\n")
        with self.assertRaises(AssertionError) as cm:
            self.c.cleanup()
        self.assertIn("src_port", str(cm.exception))
        with open(self.c.event_log, "w"):
            pass     # let tearDown's own cleanup pass


if __name__ == "__main__":
    unittest.main()
