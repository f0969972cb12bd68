/*
 * Unit tests for the AMQP output without a broker: the amqp: config section
 * (defaults, every key, errors naming file, line and key), the backoff, the
 * cursor's name, and the payloads shared with hpfeeds (hpf_payload_mail,
 * hpf_payload_raw).
 * The broker side is tests/e2e/test_amqp.py (a private rabbitmq-server).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "amqp.h"
#include "config.h"
#include "hpfeeds_wire.h"
#include "json.h"
#include "log.h"
#include "persona.h"

#define SHA_X	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static struct cfg *
load(const char *yaml, char *err, int *rc)
{
	struct cfg *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	cfg_defaults(c);
	*rc = cfg_load_buf(c, "t.yml", yaml, strlen(yaml), err, 256);
	return c;
}

static void
expect_err(const char *yaml, const char *want)
{
	char err[256] = "";
	int rc;
	struct cfg *c = load(yaml, err, &rc);

	assert_int_equal(rc, -1);
	if (strstr(err, want) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, want);
	free(c);
}

static void
test_absent_is_off(void **st)
{
	char err[256];
	int rc;
	struct cfg *c = load("hostname: mx.example\n", err, &rc);

	assert_int_equal(rc, 0);
	assert_false(c->amqp.enabled);
	free(c);
	c = load("amqp:\n", err, &rc);
	assert_int_equal(rc, 0);
	assert_false(c->amqp.enabled);
	free(c);
}

static void
test_defaults(void **st)
{
	char err[256];
	int rc;
	struct cfg *c = load("amqp:\n  host: rabbit.example\n  user: u\n  password: p\n"
	    "  exchange: spam\n", err, &rc);

	assert_int_equal(rc, 0);
	assert_true(c->amqp.enabled);
	assert_string_equal(c->amqp.host, "rabbit.example");
	assert_int_equal(c->amqp.port, 5672);
	assert_string_equal(c->amqp.vhost, "/");
	assert_string_equal(c->amqp.exchange_type, "topic");
	assert_string_equal(c->amqp.routing_key, "");
	assert_false(c->amqp.tls);
	assert_true(c->amqp.metadata);
	assert_int_equal(c->amqp.payload, CFG_PAYLOAD_JSON);
	assert_true(c->amqp.received_header);
	assert_true(c->amqp.timeout > 0);
	free(c);
	c = load("amqp:\n  host: h\n  user: u\n  password: p\n  exchange: spam\n  tls: true\n",
	    err, &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(c->amqp.port, 5671);	/* amqps */
	free(c);
}

static void
test_every_key(void **st)
{
	char err[256];
	int rc;
	struct cfg *c = load("amqp:\n  host: 10.0.0.1\n  port: 5673\n  vhost: honey\n"
	    "  user: sensor1\n  password: \"s3cret\"\n  exchange: spamtrap\n"
	    "  exchange_type: direct\n  routing_key: mails.raw\n  tls: yes\n"
	    "  ca_file: /etc/ssl/ca.pem\n  payload: raw\n  metadata: false\n"
	    "  timeout: 7\n  received_header: false\n", err, &rc);

	assert_int_equal(rc, 0);
	assert_int_equal(c->amqp.port, 5673);
	assert_string_equal(c->amqp.vhost, "honey");
	assert_string_equal(c->amqp.user, "sensor1");
	assert_string_equal(c->amqp.password, "s3cret");
	assert_string_equal(c->amqp.exchange, "spamtrap");
	assert_string_equal(c->amqp.exchange_type, "direct");
	assert_string_equal(c->amqp.routing_key, "mails.raw");
	assert_true(c->amqp.tls);
	assert_string_equal(c->amqp.ca_file, "/etc/ssl/ca.pem");
	assert_false(c->amqp.metadata);
	assert_int_equal(c->amqp.timeout, 7);
	assert_int_equal(c->amqp.payload, CFG_PAYLOAD_RAW);
	assert_false(c->amqp.received_header);
	free(c);
}

static void
test_errors(void **st)
{
	expect_err("amqp:\n  host: h\n  user: u\n  password: p\n",
	    "t.yml:2: amqp.exchange: missing");
	expect_err("amqp:\n  host: h\n  user: u\n  password: p\n  exchange: x\n"
	    "  port: 70000\n", "t.yml:6: amqp.port");
	expect_err("amqp:\n  host: h\n  user: u\n  password: p\n  exchange: x\n"
	    "  exchange_type: bogus\n", "t.yml:6: amqp.exchange_type");
	expect_err("amqp:\n  host: h\n  user: u\n  password: p\n  exchange: x\n"
	    "  payload: xml\n", "t.yml:6: amqp.payload");
	expect_err("amqp:\n  host: h\n  user: u\n  password: p\n  exchange: x\n"
	    "  received_header: maybe\n", "t.yml:6: amqp.received_header");
	expect_err("amqp:\n  host: h\n  user: u\n  password: p\n  exchange: x\n"
	    "  colour: red\n", "t.yml:6: amqp.colour");
	expect_err("amqp:\n  host: \"\"\n  user: u\n  password: p\n  exchange: x\n",
	    "t.yml:2: amqp.host");
	expect_err("amqp: [1, 2]\n", "t.yml:1: amqp");
}

static void
test_backoff(void **st)
{
	int ms = 0, seq[] = { 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000 };
	size_t i;

	for (i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
		ms = amq_backoff_next(ms);
		assert_int_equal(ms, seq[i]);
	}
}

static void
test_cursor_name(void **st)
{
	char buf[64];

	assert_int_equal(amq_cursor_name(buf, sizeof(buf), "spam", "mails.new"), 0);
	assert_string_equal(buf, "amqp:spam/mails.new");
	/* never an hpfeeds channel's name: those have no "amqp:" prefix in the cursor */
	assert_int_equal(amq_cursor_name(buf, sizeof(buf), "x", ""), 0);
	assert_string_equal(buf, "amqp:x/");
	assert_int_equal(amq_cursor_name(buf, 8, "exchange", "key"), -1);
}

/* The payload hpfeeds and AMQP publish: sha256 verifies, metadata from the record. */
static void
test_payload_mail(void **st)
{
	static const char body[] = "Subject: hi\r\n\r\nhello\r\n";
	static const char rec[] = "{\"sha256\":\"x\",\"queue_id\":\"4AbCdEfGhIj\","
	    "\"peer\":{\"ip\":\"192.0.2.7\"},\"not_meta\":1}";
	unsigned char md[32];
	char hex[65];
	struct jbuf jb;
	const char *v;
	size_t vl, i;
	bool cut, dropped;

	EVP_Digest(body, strlen(body), md, NULL, EVP_sha256(), NULL);
	for (i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	jb_init(&jb);
	assert_int_equal(hpf_payload_mail(&jb, rec, strlen(rec), true, "sensor-1", hex,
	    body, strlen(body), strlen(body), 1 << 20, &cut, &dropped), 0);
	assert_false(cut);
	assert_false(dropped);
	assert_int_equal(hpf_payload_verify(jb.buf, jb.len), 1);
	assert_int_equal(json_get(jb.buf, jb.len, "queue_id", &v, &vl), 0);
	assert_int_equal(json_get(jb.buf, jb.len, "sensor", &v, &vl), 0);
	assert_memory_equal(v, "\"sensor-1\"", vl);
	assert_int_not_equal(json_get(jb.buf, jb.len, "not_meta", &v, &vl), 0);
	/* metadata off: only the mail */
	assert_int_equal(hpf_payload_mail(&jb, rec, strlen(rec), false, "sensor-1", hex,
	    body, strlen(body), strlen(body), 1 << 20, &cut, &dropped), 0);
	assert_int_not_equal(json_get(jb.buf, jb.len, "queue_id", &v, &vl), 0);
	assert_int_not_equal(json_get(jb.buf, jb.len, "sensor", &v, &vl), 0);
	/* metadata over half the limit: left out, said so */
	assert_int_equal(hpf_payload_mail(&jb, rec, strlen(rec), true,
	    "a-sensor-name-long-enough-to-push-the-metadata-over-half-the-limit", hex,
	    body, strlen(body), strlen(body), 200, &cut, &dropped), 0);
	assert_true(dropped);
	assert_int_equal(hpf_payload_verify(jb.buf, jb.len), 1);
	jb_free(&jb);
}

/*
 * The raw payload both outputs publish (hpf_payload_raw, its one builder):
 * our Received header then the stored bytes; without a persona the bytes
 * alone; cut to the limit, said; a record it cannot read: no header, said.
 */
static void
test_payload_raw(void **st)
{
	static const char body[] = "Subject: hi\r\n\r\nhello\r\n";
	static const char rec[] = "{\"time\":\"2025-11-27T04:35:30.123456Z\","
	    "\"queue_id\":\"4AbCdEfGhIj\",\"sha256\":\"" SHA_X "\",\"size\":23,"
	    "\"src_ip\":\"192.0.2.7\",\"src_port\":4000,\"helo\":\"client.example\","
	    "\"protocol\":\"ESMTP\",\"mail_from\":\"a@example.org\","
	    "\"rcpt_to\":[\"b@example.net\"]}";
	const struct persona *p = persona_default();
	static const char want_hdr[] =
	    "Received: from client.example (unknown [192.0.2.7])\r\n"
	    "\tby mx.example.test (Postfix) with ESMTP id 4AbCdEfGhIj\r\n"
	    "\tfor <b@example.net>; Thu, 27 Nov 2025 04:35:30 +0000 (UTC)\r\n";
	size_t hl = strlen(want_hdr), bl = strlen(body);
	char note[256];
	struct jbuf jb;
	bool cut;

	jb_init(&jb);
	assert_int_equal(hpf_payload_raw(&jb, rec, strlen(rec), p, "mx.example.test", body,
	    bl, bl, 1 << 20, &cut, note, sizeof(note)), 0);
	assert_false(cut);
	assert_string_equal(note, "");
	assert_int_equal(jb.len, hl + bl);
	assert_memory_equal(jb.buf, want_hdr, hl);
	assert_memory_equal(jb.buf + hl, body, bl);
	/* received_header off: the stored bytes, untouched */
	assert_int_equal(hpf_payload_raw(&jb, rec, strlen(rec), NULL, NULL, body, bl, bl,
	    1 << 20, &cut, note, sizeof(note)), 0);
	assert_int_equal(jb.len, bl);
	assert_memory_equal(jb.buf, body, bl);
	/* over the limit: cut, the header kept whole */
	assert_int_equal(hpf_payload_raw(&jb, rec, strlen(rec), p, "mx.example.test", body,
	    bl, bl, hl + 5, &cut, note, sizeof(note)), 0);
	assert_true(cut);
	assert_int_equal(jb.len, hl + 5);
	assert_memory_equal(jb.buf + hl, body, 5);
	/* only part of the mail was read: cut even within the limit */
	assert_int_equal(hpf_payload_raw(&jb, rec, strlen(rec), NULL, NULL, body, 5, bl,
	    1 << 20, &cut, note, sizeof(note)), 0);
	assert_true(cut);
	/* a limit below the header: the bytes without it, said */
	assert_int_equal(hpf_payload_raw(&jb, rec, strlen(rec), p, "mx.example.test", body,
	    bl, bl, 10, &cut, note, sizeof(note)), 0);
	assert_true(cut);
	assert_int_equal(jb.len, 10);
	assert_memory_equal(jb.buf, body, 10);
	assert_non_null(strstr(note, "Received header too long"));
	/* not a record: no header, said; the mail still goes */
	assert_int_equal(hpf_payload_raw(&jb, "[1]", 3, p, "mx.example.test", body, bl, bl,
	    1 << 20, &cut, note, sizeof(note)), 0);
	assert_int_equal(jb.len, bl);
	assert_non_null(strstr(note, "published without a Received header"));
	jb_free(&jb);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_absent_is_off),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_cursor_name),
		cmocka_unit_test(test_payload_mail),
		cmocka_unit_test(test_payload_raw),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
