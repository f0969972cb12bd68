/*
 * Unit tests of the reception record (record.c): the writer's bytes, whole;
 * writer -> parser round trips with hostile bytes (quotes, backslashes,
 * controls, non-UTF-8, U+2028, long fields); every prefix of a line (a torn
 * journal tail) refused without a crash; unknown members ignored, the first
 * of a duplicate kept; the DATA decision kept under "rules" read back; the
 * metadata keys hpfeeds copies are all written.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fosr_limits.h"
#include "log.h"
#include "persona.h"
#include "record.h"
#include "rules.h"

#define SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

struct rcpts {
	const char *const	*v;
	int			 n;
	bool			 fail;
};

/* record_rcpt_each over a plain array. */
static int
rcpts_each(const void *src, void (*put)(void *, const char *, size_t), void *arg)
{
	const struct rcpts *r = src;

	if (r->fail)
		return -1;
	for (int i = 0; i < r->n; i++)
		put(arg, r->v[i], strlen(r->v[i]));
	return 0;
}

/* A record_in with every optional member present. */
static void
full_in(struct record_in *in, const struct rcpts *rc)
{
	static const char *const an[] = { "bare_lf", "smuggling" };

	memset(in, 0, sizeof(*in));
	in->time = "2026-12-06T08:00:00.000001Z";
	in->session = 0x1234abcdULL;
	in->queue_id = "4QX9Zt0BcdzLW";
	in->sha256 = SHA;
	in->size = 1234;
	in->sensor = "sensor-1";
	in->src_ip = "198.51.100.7";
	in->src_port = 40000;
	in->dst_ip = "203.0.113.1";
	in->dst_port = 587;
	in->listener = "submission";
	in->client_name = "";
	in->reverse_name = "ptr.example";
	in->name_status = "temp";
	in->helo = "client.example";
	in->protocol = "ESMTP";
	in->tls = true;
	in->tls_version = "TLSv1.3";
	in->tls_cipher = "TLS_AES_256_GCM_SHA384";
	in->tls_bits = 256;
	in->tls_sni = "mx.example";
	in->auth = true;
	in->auth_mech = "CRAM-MD5";
	in->auth_user = "user";
	in->auth_pass = "pass";
	in->auth_challenge = "<1.2@h>";
	in->mail_from = "a@example.org";
	in->rcpt_each = rcpts_each;
	in->rcpt_src = rc;
	in->body = "8BITMIME";
	in->smtputf8 = true;
	in->transfer = "BDAT";
	in->ruled = true;
	in->publish = false;
	in->tag = "bulk";
	in->rule = "greylist";
	in->rule_stage = "data";
	in->reply = "451 4.7.1 Try again later";
	in->rules = "{\"stage\":\"data\",\"matched\":true}";
	in->anomalies = an;
	in->nanomalies = 2;
}

/* Write in into a fresh jbuf; the caller frees buf. */
static char *
write_rec(const struct record_in *in, size_t *len)
{
	struct jbuf jb;

	jb_init(&jb);
	record_write(&jb, in);
	assert_false(jb.oom);
	*len = jb.len;
	return jb.buf;
}

/* Every member, in the journal's order, as the session has always written them. */
static void
test_write_bytes(void **state)
{
	static const char *const rv[] = { "b@example.net", "c@example.net" };
	struct rcpts rc = { rv, 2, false };
	struct record_in in;
	char *buf;
	size_t len;

	full_in(&in, &rc);
	buf = write_rec(&in, &len);
	assert_string_equal(buf,
	    "{\"time\":\"2026-12-06T08:00:00.000001Z\",\"session\":\"000000001234abcd\","
	    "\"queue_id\":\"4QX9Zt0BcdzLW\",\"sha256\":\"" SHA "\",\"size\":1234,"
	    "\"sensor\":\"sensor-1\",\"src_ip\":\"198.51.100.7\",\"src_port\":40000,"
	    "\"dst_ip\":\"203.0.113.1\",\"dst_port\":587,\"listener\":\"submission\","
	    "\"client_name\":\"unknown\",\"reverse_client_name\":\"ptr.example\","
	    "\"client_name_status\":\"temp\",\"helo\":\"client.example\",\"protocol\":\"ESMTP\","
	    "\"tls\":{\"version\":\"TLSv1.3\",\"cipher\":\"TLS_AES_256_GCM_SHA384\",\"bits\":256,"
	    "\"sni\":\"mx.example\"},\"auth\":{\"mechanism\":\"CRAM-MD5\",\"username\":\"user\","
	    "\"password\":\"pass\",\"challenge\":\"<1.2@h>\"},\"mail_from\":\"a@example.org\","
	    "\"rcpt_to\":[\"b@example.net\",\"c@example.net\"],\"body\":\"8BITMIME\","
	    "\"smtputf8\":true,\"transfer\":\"BDAT\",\"outcome\":\"queued\",\"publish\":false,"
	    "\"tag\":\"bulk\",\"rule\":\"greylist\",\"rule_stage\":\"data\","
	    "\"reply\":\"451 4.7.1 Try again later\",\"rules\":{\"stage\":\"data\","
	    "\"matched\":true},\"anomalies\":[\"bare_lf\",\"smuggling\"]}");
	assert_int_equal(len, strlen(buf));
	free(buf);

	/* Without the optional members; the recipients unreadable: no record. */
	in.tls = in.auth = in.ruled = false;
	in.name_status = in.body = in.rules = NULL;
	in.nanomalies = 0;
	buf = write_rec(&in, &len);
	assert_non_null(strstr(buf, "\"protocol\":\"ESMTP\",\"tls\":null,\"auth\":null,"));
	assert_non_null(strstr(buf, "\"outcome\":\"queued\",\"anomalies\":[]}"));
	assert_null(strstr(buf, "client_name_status"));
	free(buf);
	{
		struct jbuf jb;

		rc.fail = true;
		jb_init(&jb);
		record_write(&jb, &in);
		assert_true(jb.oom);
		jb_free(&jb);
	}
}

/* Hostile bytes survive the trip (invalid UTF-8 as U+FFFD, as jb_str writes it). */
static void
test_round_trip_hostile(void **state)
{
	char longrcpt[2049], longfrom[2049], longhelo[256];
	const char *rv[] = { "q\"uo\\te@x", "ctl\x01\x7f@x", "bad\xff\xfe@x", "ls\xe2\x80\xa8@x",
	    longrcpt };
	struct rcpts rc = { rv, 5, false };
	struct record_in in;
	struct record *r;
	char *buf, err[256];
	size_t len;

	memset(longrcpt, 'r', sizeof(longrcpt) - 1);
	longrcpt[sizeof(longrcpt) - 1] = '\0';
	memset(longfrom, 'f', sizeof(longfrom) - 1);
	longfrom[sizeof(longfrom) - 1] = '\0';
	memset(longhelo, 'h', sizeof(longhelo) - 1);
	longhelo[sizeof(longhelo) - 1] = '\0';
	full_in(&in, &rc);
	in.helo = "he\"lo\r\n\\x";
	in.mail_from = "from\t\"\xc3\x28@x";
	in.auth_user = "us\"er\x1b[31m";
	in.auth_pass = "p\\a\xf0\x9f\x98\x80ss";
	buf = write_rec(&in, &len);
	assert_true(utf8_valid(buf, len));
	assert_null(memchr(buf, '\n', len));	/* one journal line */
	r = record_parse(buf, len, err, sizeof(err));
	if (r == NULL)
		fail_msg("not parsed: %s", err);
	assert_string_equal(r->sha256, SHA);
	assert_string_equal(r->queue_id, "4QX9Zt0BcdzLW");
	assert_string_equal(r->session, "000000001234abcd");
	assert_string_equal(r->time, "2026-12-06T08:00:00.000001Z");
	assert_int_equal(r->size, 1234);
	assert_string_equal(r->src_ip, "198.51.100.7");
	assert_int_equal(r->src_port, 40000);
	assert_string_equal(r->dst_ip, "203.0.113.1");
	assert_int_equal(r->dst_port, 587);
	assert_string_equal(r->client_name, "unknown");
	assert_string_equal(r->protocol, "ESMTP");
	assert_string_equal(r->helo, "he\"lo\r\n\\x");
	assert_true(r->tls);
	assert_true(r->auth);
	assert_string_equal(r->auth_user, "us\"er\x1b[31m");
	assert_string_equal(r->auth_pass, "p\\a\xf0\x9f\x98\x80ss");
	assert_string_equal(r->mail_from, "from\t\"\xef\xbf\xbd(@x");
	assert_int_equal(r->nrcpt, 5);
	assert_string_equal(r->rcpt[0], "q\"uo\\te@x");
	assert_string_equal(r->rcpt[1], "ctl\x01\x7f@x");
	assert_string_equal(r->rcpt[2], "bad\xef\xbf\xbd\xef\xbf\xbd@x");
	assert_string_equal(r->rcpt[3], "ls\xe2\x80\xa8@x");
	assert_string_equal(r->rcpt[4], longrcpt);
	assert_true(r->smuggling);
	assert_false(r->bare_cr);
	record_free(r);
	free(buf);

	/* The longest sender and HELO the session accepts come back whole. */
	in.mail_from = longfrom;
	in.helo = longhelo;
	buf = write_rec(&in, &len);
	assert_non_null(r = record_parse(buf, len, err, sizeof(err)));
	assert_string_equal(r->mail_from, longfrom);
	assert_string_equal(r->helo, longhelo);
	record_free(r);
	free(buf);
}

/* A torn last line (crash mid-append): every strict prefix is refused, none crashes. */
static void
test_torn(void **state)
{
	static const char *const rv[] = { "b@example.net" };
	struct rcpts rc = { rv, 1, false };
	struct record_in in;
	struct record *r;
	char *buf, *cut, err[256];
	size_t len;

	full_in(&in, &rc);
	buf = write_rec(&in, &len);
	for (size_t n = 0; n < len; n++) {
		/* An exact-size copy: ASan sees any read past the cut. */
		assert_non_null(cut = malloc(n ? n : 1));
		memcpy(cut, buf, n);
		r = record_parse(cut, n, err, sizeof(err));
		if (r != NULL)
			fail_msg("a prefix of %zu bytes parsed", n);
		free(cut);
	}
	assert_non_null(r = record_parse(buf, len, err, sizeof(err)));
	record_free(r);
	free(buf);
}

/* Unknown members (a newer writer) are skipped; the first of a duplicate counts. */
static void
test_unknown_keys(void **state)
{
	const char *j = "{\"x_new\":{\"a\":[1,{\"sha256\":\"no\"}],\"b\":null},\"sha256\":\"" SHA
	    "\",\"y\":\"\\u0000?\",\"mail_from\":\"m@f\",\"rcpt_to\":[\"r@x\"],"
	    "\"mail_from\":\"second\",\"z\":[true,false,-1.5e3]}";
	struct record *r;
	char err[256];

	assert_non_null(r = record_parse(j, strlen(j), err, sizeof(err)));
	assert_string_equal(r->sha256, SHA);
	assert_string_equal(r->mail_from, "m@f");
	assert_int_equal(r->nrcpt, 1);
	assert_string_equal(r->rcpt[0], "r@x");
	record_free(r);
	/* Not records: no sha256, a bad one, no rcpt_to, not an object. */
	assert_null(record_parse("{\"mail_from\":\"\",\"rcpt_to\":[]}", 30, err, sizeof(err)));
	j = "{\"sha256\":\"" SHA "0\",\"mail_from\":\"\",\"rcpt_to\":[]}";
	assert_null(record_parse(j, strlen(j), err, sizeof(err)));
	j = "{\"sha256\":\"" SHA "\",\"mail_from\":\"\"}";
	assert_null(record_parse(j, strlen(j), err, sizeof(err)));
	assert_string_equal(err, "record: no rcpt_to");
	assert_null(record_parse("[1]", 3, err, sizeof(err)));
}

/*
 * A field longer than its buffer is cut at a UTF-8 boundary, not blanked:
 * AUTH PLAIN with a user of 100 bytes 0xfe (stored as 300 bytes of U+FFFD)
 * and a 256-byte password.
 */
static void
test_long_fields_cut(void **state)
{
	static const char *const rv[] = { "b@example.net" };
	struct rcpts rc = { rv, 1, false };
	struct record_in in;
	struct record *r;
	char user[301], pass[257], helo[400], cname[400], want[256], *buf, err[256];
	size_t len, k;

	for (k = 0; k < 300; k += 3)
		memcpy(user + k, "\xef\xbf\xbd", 3);
	user[300] = '\0';
	memset(pass, 'p', 256);
	pass[256] = '\0';
	/* 'h' then 2-byte characters: byte 255 of the buffer falls inside one. */
	helo[0] = 'h';
	for (k = 1; k + 2 < sizeof(helo); k += 2)
		memcpy(helo + k, "\xc3\xa9", 2);
	helo[k] = '\0';
	memset(cname, 'n', sizeof(cname) - 1);
	cname[sizeof(cname) - 1] = '\0';
	full_in(&in, &rc);
	in.auth_user = user;
	in.auth_pass = pass;
	in.helo = helo;
	in.client_name = cname;
	buf = write_rec(&in, &len);
	assert_non_null(r = record_parse(buf, len, err, sizeof(err)));
	assert_true(r->auth);
	/* 85 whole U+FFFD (255 bytes): the 86th does not fit. */
	assert_int_equal(strlen(r->auth_user), 255);
	assert_memory_equal(r->auth_user, user, 255);
	memset(want, 'p', 255);
	want[255] = '\0';
	assert_string_equal(r->auth_pass, want);
	/* 'h' and 127 whole "é" (255 bytes), never half of one. */
	assert_int_equal(strlen(r->helo), 255);
	assert_memory_equal(r->helo, helo, 255);
	assert_true(utf8_valid(r->helo, strlen(r->helo)));
	assert_int_equal(strlen(r->client_name), 255);
	assert_memory_equal(r->client_name, cname, 255);
	record_free(r);
	free(buf);

	/* The DATA decision's strings too. */
	{
		struct rules_decision d;
		char j[1024];

		memset(pass, 'x', 256);
		snprintf(j, sizeof(j), "{\"sha256\":\"" SHA "\",\"rules\":{\"stage\":\"data\","
		    "\"matched\":true,\"reply_text\":\"%s\"}}", pass);
		memset(&d, 0, sizeof(d));
		assert_true(record_decision(j, strlen(j), &d));
		assert_int_equal(strlen(d.reply_text), sizeof(d.reply_text) - 1);
		rules_decision_clear(&d);
	}
}

/*
 * Hostile journal lines: a member of the wrong type or out of range counts
 * as absent (the record is refused when the member is required), never as
 * a wrapped or empty value.
 */
static void
test_hostile_members(void **state)
{
	const char *j;
	struct record *r;
	char err[256];

	j = "{\"sha256\":\"" SHA "\",\"src_port\":99999999999,\"dst_port\":-1,"
	    "\"mail_from\":\"m@f\",\"rcpt_to\":[\"r@x\"]}";
	assert_non_null(r = record_parse(j, strlen(j), err, sizeof(err)));
	assert_int_equal(r->src_port, 0);
	assert_int_equal(r->dst_port, 0);
	record_free(r);
	j = "{\"sha256\":\"" SHA "\",\"src_port\":65535,\"mail_from\":\"m@f\",\"rcpt_to\":[\"r@x\"]}";
	assert_non_null(r = record_parse(j, strlen(j), err, sizeof(err)));
	assert_int_equal(r->src_port, 65535);
	record_free(r);
	j = "{\"sha256\":\"" SHA "\",\"mail_from\":\"m@f\",\"rcpt_to\":\"notarray\"}";
	assert_null(record_parse(j, strlen(j), err, sizeof(err)));
	assert_string_equal(err, "record: no rcpt_to");
	j = "{\"sha256\":\"" SHA "\",\"mail_from\":\"m@f\",\"rcpt_to\":{\"a\":\"r@x\"}}";
	assert_null(record_parse(j, strlen(j), err, sizeof(err)));
	j = "{\"sha256\":\"" SHA "\",\"mail_from\":1,\"rcpt_to\":[\"r@x\"]}";
	assert_null(record_parse(j, strlen(j), err, sizeof(err)));
	assert_string_equal(err, "record: no mail_from");
}

/*
 * The most recipients the session takes, each the longest and worst
 * escaped (C1 controls: 2 bytes in, 6 out), are read back whole; more
 * than that is not a record the session writes and is refused rather
 * than read in part.
 */
static void
test_max_recipients(void **state)
{
	struct rcpts rc;
	struct record_in in;
	struct record *r;
	const char **rv;
	char *buf, err[256];
	size_t len, k;
	int i, n = SMTP_RCPT_MAX + 1;

	assert_true(RECORD_RCPT_MAX >= SMTP_RCPT_MAX);
	assert_non_null(rv = calloc((size_t)n, sizeof(*rv)));
	for (i = 0; i < n; i++) {
		char *a;

		assert_non_null(a = malloc(SMTP_PATH_MAX + 1));
		k = (size_t)snprintf(a, 8, "%04d", i);
		for (; k + 2 <= SMTP_PATH_MAX - 10; k += 2)
			memcpy(a + k, "\xc2\x80", 2);
		memcpy(a + k, "@x.example", 10);
		a[k + 10] = '\0';
		rv[i] = a;
	}
	rc.v = rv;
	rc.n = SMTP_RCPT_MAX;
	rc.fail = false;
	full_in(&in, &rc);
	buf = write_rec(&in, &len);
	assert_true(len < JOURNAL_LINE_MAX);
	r = record_parse(buf, len, err, sizeof(err));
	if (r == NULL)
		fail_msg("not parsed: %s", err);
	assert_int_equal(r->nrcpt, SMTP_RCPT_MAX);
	for (i = 0; i < SMTP_RCPT_MAX; i++)
		assert_string_equal(r->rcpt[i], rv[i]);
	record_free(r);
	free(buf);
	rc.n = RECORD_RCPT_MAX + 1;
	if (rc.n > n)
		rc.n = n;
	if (rc.n > RECORD_RCPT_MAX) {
		buf = write_rec(&in, &len);
		assert_null(record_parse(buf, len, err, sizeof(err)));
		free(buf);
	}
	for (i = 0; i < n; i++)
		free((char *)rv[i]);
	free(rv);
}

/* The DATA decision written under "rules" reads back the same. */
static void
test_decision(void **state)
{
	static const char *const rv[] = { "b@example.net" };
	struct rcpts rc = { rv, 1, false };
	struct rules_decision d, back;
	struct record_in in;
	char *dj, *buf;
	size_t len;

	memset(&d, 0, sizeof(d));
	d.matched = true;
	d.relay = true;
	d.publish = false;
	d.reply_code = 451;
	snprintf(d.rule, sizeof(d.rule), "pro\"be");
	snprintf(d.tag, sizeof(d.tag), "t\\g");
	snprintf(d.reply_text, sizeof(d.reply_text), "4.7.1 later");
	d.evidence = strdup("[{\"field\":\"subject\"}]");
	assert_non_null(dj = record_decision_json(&d));
	full_in(&in, &rc);
	in.rules = dj;
	buf = write_rec(&in, &len);
	memset(&back, 0, sizeof(back));
	assert_true(record_decision(buf, len, &back));
	assert_true(back.matched);
	assert_true(back.relay);
	assert_false(back.publish);
	assert_int_equal(back.reply_code, 451);
	assert_string_equal(back.rule, "pro\"be");
	assert_string_equal(back.tag, "t\\g");
	assert_string_equal(back.reply_text, "4.7.1 later");
	assert_string_equal(back.evidence, "[{\"field\":\"subject\"}]");
	rules_decision_clear(&back);
	free(buf);
	/* None kept: false. */
	in.rules = NULL;
	buf = write_rec(&in, &len);
	assert_false(record_decision(buf, len, &back));
	free(buf);
	free(dj);
	rules_decision_clear(&d);
}

/* Every key hpfeeds copies into the metadata is one the writer writes. */
static void
test_meta_keys(void **state)
{
	static const char *const rv[] = { "b@example.net" };
	struct rcpts rc = { rv, 1, false };
	struct record_in in;
	char *buf, key[64];
	size_t len;

	full_in(&in, &rc);
	buf = write_rec(&in, &len);
	for (int i = 0; i < RECORD_META_NKEYS; i++) {
		snprintf(key, sizeof(key), "\"%s\":", record_meta_keys[i]);
		if (strstr(buf, key) == NULL)
			fail_msg("meta key %s is not written", record_meta_keys[i]);
	}
	free(buf);
}

/*
 * The Received header our MTA adds on reception (relayed copies and raw
 * hpfeeds payloads): the persona's templates, Postfix's smtpd shape; one
 * recipient gets "for <RCPT>;", several none (smtpd.c: the date on its own
 * line after "id QID;").
 */
static void
test_received_header(void **state)
{
	const struct persona *p = persona_default();
	struct persona custom;
	struct record r;
	char out[1024];
	size_t n;

	memset(&r, 0, sizeof(r));
	snprintf(r.helo, sizeof(r.helo), "bad\r\nhelo");
	snprintf(r.src_ip, sizeof(r.src_ip), "198.51.100.7");
	snprintf(r.protocol, sizeof(r.protocol), "ESMTP");
	n = record_received_header(out, sizeof(out), p, &r, "mx.example.test", "4ABCDEF0123",
	    "drop@spammer.example", 1764218130);
	assert_int_equal(n, strlen(out));
	assert_string_equal(out,
	    "Received: from bad??helo (unknown [198.51.100.7])\r\n"
	    "\tby mx.example.test (Postfix) with ESMTP id 4ABCDEF0123\r\n"
	    "\tfor <drop@spammer.example>; Thu, 27 Nov 2025 04:35:30 +0000 (UTC)\r\n");
	/* Several recipients: no "for", the date on the third line (smtpd.c). */
	n = record_received_header(out, sizeof(out), p, &r, "mx.example.test", "4ABCDEF0123",
	    NULL, 1764218130);
	assert_int_equal(n, strlen(out));
	assert_string_equal(out,
	    "Received: from bad??helo (unknown [198.51.100.7])\r\n"
	    "\tby mx.example.test (Postfix) with ESMTP id 4ABCDEF0123;\r\n"
	    "\tThu, 27 Nov 2025 04:35:30 +0000 (UTC)\r\n");
	/* Postfix's mail_date(): "%e", a space-padded day of the month. */
	record_received_header(out, sizeof(out), p, &r, "h", "Q", NULL, 1764547200);
	assert_non_null(strstr(out, "\tMon,  1 Dec 2025 00:00:00 +0000 (UTC)\r\n"));
	r.tls = r.auth = true;
	snprintf(r.src_ip, sizeof(r.src_ip), "2001:db8::1");
	record_received_header(out, sizeof(out), p, &r, "h", "Q", "a@b", 0);
	assert_non_null(strstr(out, "[IPv6:2001:db8::1]"));
	assert_non_null(strstr(out, "with ESMTPSA id Q"));
	r.auth = false;
	record_received_header(out, sizeof(out), p, &r, "h", "Q", "a@b", 0);
	assert_non_null(strstr(out, "with ESMTPS id Q"));
	r.tls = false;
	r.auth = true;
	record_received_header(out, sizeof(out), p, &r, "h", "Q", "a@b", 0);
	assert_non_null(strstr(out, "with ESMTPA id Q"));
	snprintf(r.protocol, sizeof(r.protocol), "SMTP");
	record_received_header(out, sizeof(out), p, &r, "h", "Q", "a@b", 0);
	assert_non_null(strstr(out, "with SMTP id Q"));
	snprintf(r.protocol, sizeof(r.protocol), "ESMTP");
	assert_int_equal(record_received_header(out, 20, p, &r, "h", "Q", "a@b", 0), 0);
	assert_int_equal(record_received_header(out, 20, p, &r, "h", "Q", NULL, 0), 0);

	/* Postfix's "from HELO (NAME [ADDR])": the verified client name. */
	snprintf(r.src_ip, sizeof(r.src_ip), "198.51.100.7");
	snprintf(r.helo, sizeof(r.helo), "client.example");
	snprintf(r.client_name, sizeof(r.client_name), "mail.client.example");
	record_received_header(out, sizeof(out), p, &r, "h", "Q", "a@b", 0);
	assert_non_null(strstr(out, "Received: from client.example "
	    "(mail.client.example [198.51.100.7])\r\n"));
	/* No HELO: the name stands for it, as in Postfix's smtpd. */
	r.helo[0] = '\0';
	record_received_header(out, sizeof(out), p, &r, "h", "Q", "a@b", 0);
	assert_non_null(strstr(out, "Received: from mail.client.example "
	    "(mail.client.example [198.51.100.7])\r\n"));
	snprintf(r.client_name, sizeof(r.client_name), "unknown");
	record_received_header(out, sizeof(out), p, &r, "h", "Q", "a@b", 0);
	assert_non_null(strstr(out, "Received: from unknown (unknown [198.51.100.7])\r\n"));
	/* A record whose name is not a host name (edited, old): "unknown". */
	snprintf(r.helo, sizeof(r.helo), "x");
	snprintf(r.client_name, sizeof(r.client_name), "a (b) [c]\r\nX: y");
	record_received_header(out, sizeof(out), p, &r, "h", "Q", "a@b", 0);
	assert_non_null(strstr(out, "Received: from x (unknown [198.51.100.7])\r\n"));
	/* Hostile HELO bytes: no header injection, no fold, no 8-bit byte. */
	snprintf(r.helo, sizeof(r.helo), "a\r\nX-Evil: 1\tb\xff(c)");
	record_received_header(out, sizeof(out), p, &r, "h", "Q", NULL, 0);
	assert_non_null(strstr(out, "Received: from a??X-Evil:?1?b?(c) (unknown [198.51.100.7])\r\n"));
	assert_null(strstr(out, "\r\nX-Evil"));
	/* A hostile recipient is sanitised the same way. */
	record_received_header(out, sizeof(out), p, &r, "h", "Q", "a@b>\r\nX-Evil: 1", 0);
	assert_non_null(strstr(out, "\tfor <a@b>??X-Evil:?1>; "));

	/* The shape is the persona's: another template, another header. */
	custom = *p;
	custom.received_fmt = "X-Relayed: {with} {qid} <{rcpt}> {nope}\r\n";
	custom.received_multi_fmt = "X-Relayed: {with} {qid} {date}\r\n";
	n = record_received_header(out, sizeof(out), &custom, &r, "h", "Q", "a@b", 0);
	assert_string_equal(out, "X-Relayed: ESMTPA Q <a@b> {nope}\r\n");
	assert_int_equal(n, strlen(out));
	record_received_header(out, sizeof(out), &custom, &r, "h", "Q", NULL, 0);
	assert_string_equal(out, "X-Relayed: ESMTPA Q Thu,  1 Jan 1970 00:00:00 +0000 (UTC)\r\n");
	/* A long recipient is kept whole (as before the template: no 256-byte cap). */
	{
		char rcpt[501];

		memset(rcpt, 'r', 500);
		rcpt[500] = '\0';
		record_received_header(out, sizeof(out), p, &r, "h", "Q", rcpt, 0);
		assert_non_null(strstr(out, rcpt));
	}
}

/* The record's ISO time, read back for the Received header's date. */
static void
test_record_when(void **state)
{
	struct record r;
	time_t t;

	memset(&r, 0, sizeof(r));
	snprintf(r.time, sizeof(r.time), "2025-11-27T04:35:30.123456Z");
	assert_int_equal(record_when(&r, &t), 0);
	assert_int_equal((long long)t, 1764218130LL);
	snprintf(r.time, sizeof(r.time), "2025-11-27T04:35:30Z");
	assert_int_equal(record_when(&r, &t), 0);
	assert_int_equal((long long)t, 1764218130LL);
	snprintf(r.time, sizeof(r.time), "yesterday");
	assert_int_equal(record_when(&r, &t), -1);
	r.time[0] = '\0';
	assert_int_equal(record_when(&r, &t), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_write_bytes),
		cmocka_unit_test(test_round_trip_hostile),
		cmocka_unit_test(test_torn),
		cmocka_unit_test(test_unknown_keys),
		cmocka_unit_test(test_decision),
		cmocka_unit_test(test_meta_keys),
		cmocka_unit_test(test_received_header),
		cmocka_unit_test(test_record_when),
		cmocka_unit_test(test_long_fields_cut),
		cmocka_unit_test(test_hostile_members),
		cmocka_unit_test(test_max_recipients),
	};

	log_init(LOG_LVL_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
