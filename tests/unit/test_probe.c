/*
 * Unit tests for probe.c: a session's or a record's facts turned into a rules
 * decision (the stage map, the own addresses of a capture, the session's
 * stage result, the record of a DATA request).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "probe.h"
#include "record.h"
#include "rules.h"
#include "testutil.h"

static struct cfg	*cfg_new(enum relay_mode, int nown);

/* Defaults, relaying in mode, nown own addresses 10.0.<i/256>.<i%256>. */
static struct cfg *
cfg_new(enum relay_mode mode, int nown)
{
	struct cfg *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	cfg_defaults(c);
	c->relay.mode = mode;
	assert_true(nown <= CFG_RELAY_LIST_MAX);
	for (int i = 0; i < nown; i++)
		snprintf(c->relay.own_addresses[i], sizeof(c->relay.own_addresses[i]),
		    "10.0.%d.%d", i / 256, i % 256);
	c->relay.nown = nown;
	return c;
}

static const char *const stage_rules =
    "rules:\n"
    "  - name: helo-probe\n"
    "    stage: ehlo\n"
    "    conditions: [{helo: {equals: probe.example}}]\n"
    "    actions: {tag: scan, publish: false, reply: {code: 554, text: \"5.7.1 go away\"}}\n"
    "  - name: off\n"
    "    enabled: false\n"
    "    stage: auth\n"
    "    conditions: [{tls: false}]\n"
    "  - name: mention\n"
    "    stage: data\n"
    "    conditions: [{mentions_own_address: true}]\n"
    "    actions: {relay: true, tag: probe}\n";

/* Every session stage has its rules stage. */
static void
test_stage_map(void **state)
{
	(void)state;
	assert_int_equal(probe_stage(SMTP_STAGE_EHLO), RULES_STAGE_EHLO);
	assert_int_equal(probe_stage(SMTP_STAGE_AUTH), RULES_STAGE_AUTH);
	assert_int_equal(probe_stage(SMTP_STAGE_RSET), RULES_STAGE_RSET);
	assert_int_equal(probe_stage(SMTP_STAGE_DATA), RULES_STAGE_DATA);
}

/* The own addresses: the configured ones, then the capture's destination when there is one. */
static void
test_own(void **state)
{
	struct cfg *c = cfg_new(RELAY_MODE_DRY_RUN, 2);
	char buf[PROBE_OWN_MAX][64];
	const char *own[PROBE_OWN_MAX];

	(void)state;
	assert_int_equal(probe_own(c, "192.0.2.7", buf, own), 3);
	assert_string_equal(own[0], "10.0.0.0");
	assert_string_equal(own[1], "10.0.0.1");
	assert_string_equal(own[2], "192.0.2.7");
	assert_ptr_equal(own[2], buf[2]);
	assert_int_equal(probe_own(c, "", buf, own), 2);
	assert_int_equal(probe_own(c, NULL, buf, NULL), 2);
	free(c);
	/* A full list still has room for the destination. */
	c = cfg_new(RELAY_MODE_DRY_RUN, CFG_RELAY_LIST_MAX);
	assert_int_equal(probe_own(c, "192.0.2.7", buf, own), PROBE_OWN_MAX);
	assert_string_equal(own[PROBE_OWN_MAX - 1], "192.0.2.7");
	free(c);
}

/*
 * Every own address probe_own() lists is looked for: with the configured
 * list full (relay.own_addresses takes CFG_RELAY_LIST_MAX), the last
 * configured one and the capture's destination still count.
 */
static void
test_own_all_searched(void **state)
{
	struct cfg *c = cfg_new(RELAY_MODE_DRY_RUN, CFG_RELAY_LIST_MAX);
	struct rules *rs = load_ok(stage_rules);
	struct record rec;
	struct rules_decision d;
	char buf[PROBE_OWN_MAX][64], msg[256];
	const char *own[PROBE_OWN_MAX];
	const char *last[] = { "192.0.2.7", buf[CFG_RELAY_LIST_MAX - 1] };
	char *rcpt[] = { "a@example.com", NULL };
	int n;

	(void)state;
	memset(&rec, 0, sizeof(rec));
	rec.mail_from = "x@example.net";
	rec.rcpt = rcpt;
	rec.nrcpt = 1;
	snprintf(rec.dst_ip, sizeof(rec.dst_ip), "192.0.2.7");
	n = probe_own(c, rec.dst_ip, buf, own);
	for (size_t i = 0; i < 2; i++) {
		snprintf(msg, sizeof(msg), "Subject: relay test %s\r\n\r\nhi\r\n", last[i]);
		assert_int_equal(probe_decide(rs, &rec, RULES_STAGE_DATA, own, n,
		    (const unsigned char *)msg, strlen(msg), strlen(msg), &d), 0);
		if (!d.matched)
			fail_msg("own address %s (of %d) not searched", last[i], n);
		assert_string_equal(d.rule, "mention");
		rules_decision_clear(&d);
	}
	rules_free(rs);
	free(c);
}

/* A stage is wanted when relaying is not off and an enabled rule is there. */
static void
test_stage_wanted(void **state)
{
	struct cfg *c = cfg_new(RELAY_MODE_DRY_RUN, 0);
	struct rules *rs = load_ok(stage_rules);

	(void)state;
	assert_true(probe_stage_wanted(c, rs, SMTP_STAGE_EHLO));
	assert_true(probe_stage_wanted(c, rs, SMTP_STAGE_DATA));
	assert_false(probe_stage_wanted(c, rs, SMTP_STAGE_AUTH));	/* disabled */
	assert_false(probe_stage_wanted(c, rs, SMTP_STAGE_RSET));
	assert_false(probe_stage_wanted(c, NULL, SMTP_STAGE_EHLO));
	c->relay.mode = RELAY_MODE_OFF;
	assert_false(probe_stage_wanted(c, rs, SMTP_STAGE_EHLO));
	c->relay.mode = RELAY_MODE_LIVE;
	assert_true(probe_stage_wanted(c, rs, SMTP_STAGE_EHLO));
	rules_free(rs);
	free(c);
}

/* EHLO decided on the session's facts: the result carries the rule's reply, tag and publish. */
static void
test_stage_decide(void **state)
{
	struct cfg *c = cfg_new(RELAY_MODE_DRY_RUN, 0);
	struct rules *rs = load_ok(stage_rules);
	struct smtp_stage_req req;
	struct smtp_stage_result res;

	(void)state;
	memset(&req, 0, sizeof(req));
	req.stage = SMTP_STAGE_EHLO;
	req.session = 0x1234;
	req.helo = "probe.example";
	req.src_ip = "198.51.100.7";
	req.dst_ip = "192.0.2.7";
	req.client_name = "unknown";
	memset(&res, 0x5a, sizeof(res));
	assert_int_equal(probe_stage_decide(c, rs, &req, &res), 0);
	assert_true(res.matched);
	assert_false(res.publish);
	assert_int_equal(res.reply_code, 554);
	assert_string_equal(res.reply_text, "5.7.1 go away");
	assert_string_equal(res.tag, "scan");
	assert_string_equal(res.rule, "helo-probe");
	assert_null(res.record);
	/* No match: an empty result that publishes. */
	req.helo = "mail.example";
	memset(&res, 0x5a, sizeof(res));
	assert_int_equal(probe_stage_decide(c, rs, &req, &res), 0);
	assert_false(res.matched);
	assert_true(res.publish);
	assert_int_equal(res.reply_code, 0);
	assert_string_equal(res.rule, "");
	assert_null(res.record);
	/* Nothing to decide: -1, the session goes on as without rules. */
	req.stage = SMTP_STAGE_AUTH;
	assert_int_equal(probe_stage_decide(c, rs, &req, &res), -1);
	req.stage = SMTP_STAGE_EHLO;
	c->relay.mode = RELAY_MODE_OFF;
	assert_int_equal(probe_stage_decide(c, rs, &req, &res), -1);
	rules_free(rs);
	free(c);
}

/* A decision as a stage result: fields of an unmatched decision are not carried over. */
static void
test_result_fill(void **state)
{
	struct rules_decision d;
	struct smtp_stage_result res;

	(void)state;
	memset(&d, 0, sizeof(d));
	snprintf(d.rule, sizeof(d.rule), "leftover");
	snprintf(d.tag, sizeof(d.tag), "leftover");
	d.reply_code = 451;
	d.publish = false;
	memset(&res, 0x5a, sizeof(res));
	probe_result_fill(&res, &d);
	assert_false(res.matched);
	assert_true(res.publish);
	assert_int_equal(res.reply_code, 0);
	assert_string_equal(res.rule, "");
	assert_string_equal(res.tag, "");
	assert_string_equal(res.reply_text, "");
	assert_null(res.record);
	d.matched = true;
	memset(d.reply_text, 'x', sizeof(d.reply_text) - 1);
	d.reply_text[sizeof(d.reply_text) - 1] = '\0';
	probe_result_fill(&res, &d);
	assert_true(res.matched);
	assert_false(res.publish);
	assert_int_equal(res.reply_code, 451);
	assert_string_equal(res.rule, "leftover");
	assert_int_equal(strlen(res.reply_text), sizeof(res.reply_text) - 1);
}

/* The record of a DATA request: every fact copied, NULLs as "", AUTH only when there was one. */
static void
test_record(void **state)
{
	const char *rcpt[] = { "a@example.com", "b@example.com" };
	struct smtp_stage_req req;
	struct record *rec;
	char longhelo[600];

	(void)state;
	memset(&req, 0, sizeof(req));
	req.stage = SMTP_STAGE_DATA;
	req.session = 0xabcdef;
	req.helo = "h.example";
	req.mail_from = "x@example.net";
	req.rcpt = rcpt;
	req.nrcpt = 2;
	req.src_ip = "198.51.100.7";
	req.src_port = 40000;
	req.dst_ip = "192.0.2.7";
	req.dst_port = 25;
	req.tls = true;
	req.size = 1234;
	req.sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	req.queue_id = "4ABCDEF";
	rec = probe_record(&req);
	assert_non_null(rec);
	assert_string_equal(rec->session, "0000000000abcdef");
	assert_string_equal(rec->helo, "h.example");
	assert_string_equal(rec->mail_from, "x@example.net");
	assert_int_equal(rec->nrcpt, 2);
	assert_string_equal(rec->rcpt[1], "b@example.com");
	assert_null(rec->rcpt[2]);
	assert_true(rec->rcpt[0] != rcpt[0]);	/* owned copies */
	assert_string_equal(rec->src_ip, "198.51.100.7");
	assert_int_equal(rec->src_port, 40000);
	assert_string_equal(rec->dst_ip, "192.0.2.7");
	assert_int_equal(rec->dst_port, 25);
	assert_true(rec->tls);
	assert_true(rec->size == 1234);
	assert_string_equal(rec->sha256, req.sha256);
	assert_string_equal(rec->queue_id, "4ABCDEF");
	assert_false(rec->auth);
	assert_string_equal(rec->client_name, "");
	record_free(rec);
	/* AUTH, NULLs, a fact longer than its field: cut, never overflowing. */
	memset(longhelo, 'h', sizeof(longhelo) - 1);
	longhelo[sizeof(longhelo) - 1] = '\0';
	memset(&req, 0, sizeof(req));
	req.helo = longhelo;
	req.auth_user = "user";
	rec = probe_record(&req);
	assert_non_null(rec);
	assert_true(rec->auth);
	assert_string_equal(rec->auth_user, "user");
	assert_string_equal(rec->auth_pass, "");
	assert_string_equal(rec->mail_from, "");
	assert_int_equal(rec->nrcpt, 0);
	assert_non_null(rec->rcpt);
	assert_int_equal(strlen(rec->helo), sizeof(rec->helo) - 1);
	assert_string_equal(rec->sha256, "");
	record_free(rec);
}

/* A record's facts: AUTH only when the record says so; the size given, not the record's. */
static void
test_decide_facts(void **state)
{
	struct rules *rs = load_ok(
	    "rules:\n"
	    "  - name: user\n"
	    "    stage: data\n"
	    "    conditions: [{auth_user: {equals: bob}}]\n"
	    "  - name: big\n"
	    "    stage: data\n"
	    "    conditions: [{size: {gt: 1000}}]\n");
	struct record rec;
	struct rules_decision d;
	char *rcpt[] = { "a@example.com", NULL };

	(void)state;
	memset(&rec, 0, sizeof(rec));
	rec.mail_from = "x@example.net";
	rec.rcpt = rcpt;
	rec.nrcpt = 1;
	snprintf(rec.auth_user, sizeof(rec.auth_user), "bob");
	rec.size = 5000;
	assert_int_equal(probe_decide(rs, &rec, RULES_STAGE_DATA, NULL, 0,
	    (const unsigned char *)"x", 1, 10, &d), 0);
	assert_false(d.matched);		/* no AUTH, size 10 */
	rules_decision_clear(&d);
	rec.auth = true;
	assert_int_equal(probe_decide(rs, &rec, RULES_STAGE_DATA, NULL, 0,
	    (const unsigned char *)"x", 1, 10, &d), 0);
	assert_true(d.matched);
	assert_string_equal(d.rule, "user");
	rules_decision_clear(&d);
	rec.auth = false;
	assert_int_equal(probe_decide(rs, &rec, RULES_STAGE_DATA, NULL, 0,
	    (const unsigned char *)"x", 1, 2000, &d), 0);
	assert_true(d.matched);
	assert_string_equal(d.rule, "big");
	rules_decision_clear(&d);
	rules_free(rs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stage_map),
		cmocka_unit_test(test_own),
		cmocka_unit_test(test_own_all_searched),
		cmocka_unit_test(test_stage_wanted),
		cmocka_unit_test(test_stage_decide),
		cmocka_unit_test(test_result_fill),
		cmocka_unit_test(test_record),
		cmocka_unit_test(test_decide_facts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
