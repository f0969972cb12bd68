/* Unit tests: the rules file loader, every matcher, MIME decoding, own-address search. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mime.h"
#include "rules.h"

#ifndef SRCDIR
#define SRCDIR "."
#endif

static struct rules	*load_ok(const char *);
static void		 load_err(const char *, const char *);
static void		 facts_init(struct rules_facts *, const char *);
static bool		 eval_msg(const char *, const char *, struct rules_decision *);
static bool		 probe(const char *);
static bool		 probe_own(const char *, const char *);
static void		 b64_enc(const char *, size_t, char *);

static const char *const own[] = { "1.2.3.4" };
static const char *const rcpt1[] = { "drop@example.com" };

/* A rule set with one data rule whose single condition is cond (YAML flow). */
#define ONE_RULE(cond) \
	"rules:\n" \
	"  - name: r\n" \
	"    stage: data\n" \
	"    conditions:\n" \
	"      - " cond "\n" \
	"    actions: {relay: true, tag: t}\n"

/* Load yaml that must be valid. */
static struct rules *
load_ok(const char *yaml)
{
	char err[256] = "";
	struct rules *rs;

	rs = rules_load_buf("t.yml", yaml, strlen(yaml), err, sizeof(err));
	if (rs == NULL)
		fail_msg("load failed: %s", err);
	return rs;
}

/* Load yaml that must fail with an error starting with want. */
static void
load_err(const char *yaml, const char *want)
{
	char err[256] = "";
	struct rules *rs;

	rs = rules_load_buf("t.yml", yaml, strlen(yaml), err, sizeof(err));
	if (rs != NULL) {
		rules_free(rs);
		fail_msg("loaded, expected error %s", want);
	}
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("error \"%s\", expected \"%s...\"", err, want);
}

/* Facts for a DATA-stage evaluation of msg. */
static void
facts_init(struct rules_facts *f, const char *msg)
{
	memset(f, 0, sizeof(*f));
	f->stage = RULES_STAGE_DATA;
	f->helo = "mail.example.net";
	f->mail_from = "spammer@example.net";
	f->rcpt = rcpt1;
	f->nrcpt = 1;
	f->src_ip = "198.51.100.7";
	f->dst_ip = "10.0.0.5";
	f->dst_port = 25;
	f->msg = (const unsigned char *)msg;
	f->msglen = msg != NULL ? strlen(msg) : 0;
	f->size = f->msglen;
	f->own_addrs = own;
	f->nown = 1;
}

/* Evaluate yaml's rules on msg with the default facts; whether a rule matched. */
static bool
eval_msg(const char *yaml, const char *msg, struct rules_decision *d)
{
	struct rules_facts f;
	struct rules *rs = load_ok(yaml);

	facts_init(&f, msg);
	assert_int_equal(rules_eval(rs, &f, d), 0);
	rules_free(rs);
	return d->matched;
}

/* Whether msg mentions own address 1.2.3.4 (or dst 10.0.0.5). */
static bool
probe(const char *msg)
{
	struct rules_decision d;
	bool m;

	m = eval_msg(ONE_RULE("{mentions_own_address: true}"), msg, &d);
	rules_decision_clear(&d);
	return m;
}

/* Whether msg mentions the own address own1 (dst 10.0.0.5 counts too). */
static bool
probe_own(const char *own1, const char *msg)
{
	const char *ownv[1] = { own1 };
	struct rules_decision d;
	struct rules_facts f;
	struct rules *rs = load_ok(ONE_RULE("{mentions_own_address: true}"));
	bool m;

	facts_init(&f, msg);
	f.own_addrs = ownv;
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	m = d.matched;
	rules_decision_clear(&d);
	rules_free(rs);
	return m;
}

/* Standard base64 of s[0..n) into out (room for 4 * ((n + 2) / 3) + 1). */
static void
b64_enc(const char *s, size_t n, char *out)
{
	static const char a[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *u = (const unsigned char *)s;
	size_t i, o = 0;
	unsigned v;

	for (i = 0; i < n; i += 3) {
		v = (unsigned)u[i] << 16 | (i + 1 < n ? (unsigned)u[i + 1] << 8 : 0) |
		    (i + 2 < n ? u[i + 2] : 0);
		out[o++] = a[v >> 18 & 63];
		out[o++] = a[v >> 12 & 63];
		out[o++] = i + 1 < n ? a[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? a[v & 63] : '=';
	}
	out[o] = '\0';
}

/* ----------------------------------------------------------- loading */

/* Every load error names the file, the line and the key. */
static void
test_load_errors(void **state)
{
	(void)state;
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {bogus: 1}\n",
	    "t.yml:5: rules[0].conditions[0].bogus: unknown key");
	load_err("rules:\n  - stage: data\n    conditions:\n      - {tls: true}\n",
	    "t.yml:2: rules[0].name: missing");
	load_err("rules:\n  - name: a\n    stage: helo\n    conditions:\n"
	    "      - {tls: true}\n", "t.yml:3: rules[0].stage: expected one of");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {body: {regex: \"(unclosed\"}}\n",
	    "t.yml:5: rules[0].conditions[0].body.regex: bad regex at offset");
	load_err("rules:\n  - name: a\n    stage: ehlo\n    conditions:\n"
	    "      - {tls: true}\n    actions: {relay: true}\n",
	    "t.yml:6: rules[0].actions.relay: relay needs a message");
	load_err("rules:\n  - name: a\n    stage: ehlo\n    conditions:\n"
	    "      - {body: {contains: x}}\n",
	    "t.yml:5: rules[0].conditions[0].body: only at stage data");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions: [{tls: true}]\n"
	    "  - name: a\n    stage: data\n    conditions: [{tls: true}]\n",
	    "t.yml:5: rules[1]: duplicate rule name");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions: [{tls: true}]\n"
	    "    actions: {reply: {code: 451, text: \"a\\r\\nb\"}}\n",
	    "t.yml:5: rules[0].actions.reply.text: only printable ASCII");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions: [{tls: true}]\n"
	    "    actions: {reply: {code: 999}}\n",
	    "t.yml:5: rules[0].actions.reply.code: 999 is out of range");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions: [{tls: true}]\n"
	    "    actions: {tag: ../etc}\n",
	    "t.yml:5: rules[0].actions.tag: only letters");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {client: 10.0.0.0/33}\n",
	    "t.yml:5: rules[0].conditions[0].client: expected an address or CIDR");
	/* An item of a list names its index; a single value stands alone. */
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {client: [192.0.2.0/24, 10.0.0.0/33]}\n",
	    "t.yml:5: rules[0].conditions[0].client[1]: expected an address or CIDR");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {subject: [{contains: a}, {contains: \"\"}]}\n",
	    "t.yml:5: rules[0].conditions[0].subject[1].contains: must not be empty");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {subject: {contains: [a, \"\"]}}\n",
	    "t.yml:5: rules[0].conditions[0].subject.contains[1]: must not be empty");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {subject: {contains: \"\"}}\n",
	    "t.yml:5: rules[0].conditions[0].subject.contains: must not be empty");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {tls: true}\n      - {bogus: 1}\n",
	    "t.yml:6: rules[0].conditions[1].bogus: unknown key");
	/* A plain null is no value, in rules as in the config (yaml_util). */
	load_err("rules:\n  - name: ~\n    stage: data\n    conditions: [{tls: true}]\n",
	    "t.yml:2: rules[0].name: must not be empty");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {size: {lt: lots}}\n",
	    "t.yml:5: rules[0].conditions[0].size.lt: expected a number");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {header: {contains: x}}\n",
	    "t.yml:5: rules[0].conditions[0].header.name: missing");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {subject: {contains: x, regex: y}}\n",
	    "t.yml:5: rules[0].conditions[0].subject.regex: only one of");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {subject: {contains: \"\"}}\n",
	    "t.yml:5: rules[0].conditions[0].subject.contains: must not be empty");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {}\n", "t.yml:5: rules[0].conditions[0]: a condition needs");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions: []\n",
	    "t.yml:4: rules[0].conditions: the list is empty");
	load_err("rules:\n  - name: a\n    stage: ehlo\n    conditions:\n"
	    "      - {rcpt_count: 1}\n",
	    "t.yml:5: rules[0].conditions[0].rcpt_count: only at stage data or rset");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {helo: {name: x, equals: y}}\n",
	    "t.yml:5: rules[0].conditions[0].helo.name: only a header test");
	load_err("rules: [\n", "t.yml:2: yaml:");
	load_err("rules: []\n---\nrules: []\n", "t.yml:3: more than one YAML document");
	load_err("ruls: []\n", "t.yml:1: ruls: unknown key");
	load_err("rules:\n  - name: a\n    stage: data\n    conditions:\n"
	    "      - {subject: contains}\n",
	    "t.yml:5: rules[0].conditions[0].subject: expected a test");
}

/* Empty files and empty lists load as no rules; a missing file is an error. */
static void
test_load_empty(void **state)
{
	struct rules *rs;
	char err[256];

	(void)state;
	rs = load_ok("");
	assert_int_equal(rules_count(rs), 0);
	rules_free(rs);
	rs = load_ok("rules: []\n");
	assert_int_equal(rules_count(rs), 0);
	rules_free(rs);
	assert_null(rules_load("/nonexistent/rules.yml", err, sizeof(err)));
	assert_non_null(strstr(err, "/nonexistent/rules.yml: cannot open"));
	rules_free(NULL);
}

/* The shipped rules load, relay a small probe and nothing else. */
static void
test_shipped_rules(void **state)
{
	struct rules_decision d;
	struct rules_facts f;
	struct rules *rs;
	char err[256] = "";
	static const char *const many[] = { "a@x.example", "b@x.example",
	    "c@x.example", "d@x.example" };

	(void)state;
	rs = rules_load(SRCDIR "/etc/rules.yml", err, sizeof(err));
	if (rs == NULL)
		fail_msg("%s", err);
	facts_init(&f, "Subject: test 1.2.3.4:25\r\n\r\nhello\r\n");
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_true(d.matched);
	assert_true(d.relay);
	assert_string_equal(d.rule, "probe");
	assert_string_equal(d.tag, "probe");
	/* One piece of evidence per matcher of the condition that held. */
	assert_non_null(strstr(d.evidence, "{\"matcher\":\"mentions_own_address\","
	    "\"where\":\"header:Subject\",\"what\":\"1.2.3.4:25\"}"));
	assert_non_null(strstr(d.evidence, "{\"matcher\":\"size\",\"where\":\"size\","
	    "\"what\":\"35\"}"));
	assert_non_null(strstr(d.evidence, "{\"matcher\":\"rcpt_count\","
	    "\"where\":\"rcpt_count\",\"what\":\"1\"}"));
	rules_decision_clear(&d);
	/* Too many recipients. */
	f.rcpt = many;
	f.nrcpt = 4;
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_false(d.relay);
	rules_decision_clear(&d);
	/* Not a probe. */
	facts_init(&f, "Subject: cheap pills\r\n\r\nbuy now\r\n");
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_false(d.matched);
	assert_false(d.relay);
	assert_true(d.publish);
	assert_null(d.evidence);
	/* Too big: 64K and more. */
	facts_init(&f, "Subject: 1.2.3.4\r\n\r\nx\r\n");
	f.size = 65536;
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_false(d.relay);
	rules_decision_clear(&d);
	/* No magic subject relays anything. */
	facts_init(&f, "Subject: TEST-EMAIL_bd5328c8\r\n\r\nx\r\n");
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_false(d.relay);
	rules_free(rs);
}

/* ------------------------------------------------- ordering and stages */

/* Lower priority first, whatever the file order; file order among equals. */
static void
test_priority_first_match(void **state)
{
	struct rules_decision d;
	struct rules_facts f;
	struct rules *rs;

	(void)state;
	rs = load_ok("rules:\n"
	    "  - {name: late, priority: 50, stage: data, conditions: [{tls: false}],"
	    " actions: {relay: true}}\n"
	    "  - {name: early, priority: 10, stage: data, conditions: [{tls: false}],"
	    " actions: {relay: false, tag: early}}\n"
	    "  - {name: tie1, priority: 5, stage: data, conditions: [{tls: true}]}\n"
	    "  - {name: tie2, priority: 5, stage: data, conditions: [{tls: true}]}\n");
	facts_init(&f, "\r\n");
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_string_equal(d.rule, "early");
	assert_false(d.relay);
	assert_string_equal(d.tag, "early");
	rules_decision_clear(&d);
	f.tls = true;
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_string_equal(d.rule, "tie1");
	rules_decision_clear(&d);
	rules_free(rs);
}

/* Disabled rules never match; rules only run at their stage. */
static void
test_disabled_and_stage(void **state)
{
	struct rules_decision d;
	struct rules_facts f;
	struct rules *rs;

	(void)state;
	rs = load_ok("rules:\n"
	    "  - {name: off, enabled: false, priority: 1, stage: data,"
	    " conditions: [{tls: false}], actions: {relay: true}}\n"
	    "  - {name: ehlo, stage: EHLO, conditions: [{helo: {equals: x.test}}],"
	    " actions: {reply: {code: 451, text: \"4.7.1 Try again later\"},"
	    " publish: false}}\n"
	    "  - {name: data, priority: 200, stage: data, conditions: [{tls: false}]}\n");
	assert_true(rules_has_stage(rs, RULES_STAGE_EHLO));
	assert_false(rules_has_stage(rs, RULES_STAGE_AUTH));
	facts_init(&f, "\r\n");
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_string_equal(d.rule, "data");
	assert_false(d.relay);
	rules_decision_clear(&d);
	f.stage = RULES_STAGE_EHLO;
	f.helo = "x.test";
	f.msg = NULL;
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_string_equal(d.rule, "ehlo");
	assert_int_equal(d.reply_code, 451);
	assert_string_equal(d.reply_text, "4.7.1 Try again later");
	assert_false(d.publish);
	rules_decision_clear(&d);
	f.stage = RULES_STAGE_AUTH;
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_false(d.matched);
	rules_free(rs);
}

/* Any condition suffices; all matchers of a condition must hold. */
static void
test_conditions_any_all(void **state)
{
	struct rules_decision d;
	const char *y = "rules:\n  - name: r\n    stage: data\n    conditions:\n"
	    "      - {helo: {equals: a.test}, tls: true}\n"
	    "      - {helo: {equals: b.test}}\n";
	struct rules_facts f;
	struct rules *rs = load_ok(y);

	(void)state;
	facts_init(&f, "\r\n");
	f.helo = "a.test";
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_false(d.matched);		/* tls false */
	f.tls = true;
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_true(d.matched);
	rules_decision_clear(&d);
	f.tls = false;
	f.helo = "b.test";
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_true(d.matched);
	rules_decision_clear(&d);
	rules_free(rs);
}

/* ------------------------------------------------------------ matchers */

/* One envelope matcher: whether yaml's condition matches facts changed by fn. */
static bool
env_match(const char *cond, void (*fn)(struct rules_facts *))
{
	char yaml[1024];
	struct rules_decision d;
	struct rules_facts f;
	struct rules *rs;
	bool m;

	snprintf(yaml, sizeof(yaml), "rules:\n  - name: r\n    stage: data\n"
	    "    conditions:\n      - %s\n", cond);
	rs = load_ok(yaml);
	facts_init(&f, "Subject: s\r\n\r\nb\r\n");
	if (fn != NULL)
		fn(&f);
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	m = d.matched;
	rules_decision_clear(&d);
	rules_free(rs);
	return m;
}

static const char *const rcpt3[] = { "a@one.example", "B@Two.Example",
	"c@three.example" };

/* Fact changers for env_match(). */
static void
set_auth(struct rules_facts *f)
{
	f->stage = RULES_STAGE_DATA;
	f->auth_user = "admin";
	f->auth_pass = "hunter2";
}

static void
set_rcpt3(struct rules_facts *f)
{
	f->rcpt = rcpt3;
	f->nrcpt = 3;
}

static void
set_v6(struct rules_facts *f)
{
	f->src_ip = "2001:db8::25";
}

static void
set_mapped(struct rules_facts *f)
{
	f->src_ip = "::ffff:192.0.2.77";
}

static void
set_tls(struct rules_facts *f)
{
	f->tls = true;
}

/* helo, mail_from, rcpt, auth_*: equals, contains, nocase, regex, not, lists. */
static void
test_string_matchers(void **state)
{
	(void)state;
	assert_true(env_match("{helo: {equals: mail.example.net}}", NULL));
	assert_false(env_match("{helo: {equals: MAIL.example.net}}", NULL));
	assert_true(env_match("{helo: {equals: MAIL.example.net, nocase: true}}",
	    NULL));
	assert_true(env_match("{helo: {contains: example}}", NULL));
	assert_false(env_match("{helo: {contains: EXAMPLE}}", NULL));
	assert_true(env_match("{helo: {contains: EXAMPLE, nocase: true}}", NULL));
	assert_true(env_match("{helo: {contains: EXAMPLE, not: true}}", NULL));
	assert_false(env_match("{helo: {contains: example, not: true}}", NULL));
	assert_true(env_match("{helo: {regex: \"^mail\\\\.[a-z]+\\\\.net$\"}}",
	    NULL));
	assert_false(env_match("{helo: {regex: \"^MAIL\"}}", NULL));
	assert_true(env_match("{helo: {regex: \"^MAIL\", nocase: true}}", NULL));
	assert_true(env_match("{mail_from: {equals: [x@y, spammer@example.net]}}",
	    NULL));
	assert_false(env_match("{mail_from: {equals: [x@y, z@w]}}", NULL));
	assert_true(env_match("{mail_from: [{contains: spammer}, {contains: .net}]}",
	    NULL));
	assert_false(env_match("{mail_from: [{contains: spammer}, {contains: .org}]}",
	    NULL));
	assert_false(env_match("{auth_user: {equals: admin}}", NULL));
	assert_true(env_match("{auth_user: {equals: admin}}", set_auth));
	assert_true(env_match("{auth_pass: {regex: \"^hunter[0-9]$\"}}", set_auth));
	assert_true(env_match("{auth_user: {regex: x, not: true}}", NULL));
	assert_true(env_match("{rcpt: {contains: two.example, nocase: true}}",
	    set_rcpt3));
	assert_false(env_match("{rcpt: {contains: two.example}}", set_rcpt3));
	assert_true(env_match("{rcpt: {equals: c@three.example}}", set_rcpt3));
	assert_false(env_match("{rcpt: {equals: c@three.example, not: true}}",
	    set_rcpt3));
}

/* rcpt_count, size, client, tls. */
static void
test_other_matchers(void **state)
{
	(void)state;
	assert_true(env_match("{rcpt_count: 1}", NULL));
	assert_true(env_match("{rcpt_count: {le: 3, ge: 3}}", set_rcpt3));
	assert_false(env_match("{rcpt_count: {lt: 3}}", set_rcpt3));
	assert_true(env_match("{rcpt_count: {gt: 2}}", set_rcpt3));
	assert_false(env_match("{rcpt_count: {eq: 2}}", set_rcpt3));
	assert_true(env_match("{size: {lt: 1K}}", NULL));
	assert_false(env_match("{size: {gt: 1K}}", NULL));
	assert_true(env_match("{size: {ge: 17, le: 17}}", NULL));
	assert_true(env_match("{client: 198.51.100.0/24}", NULL));
	assert_true(env_match("{client: 198.51.100.7}", NULL));
	assert_false(env_match("{client: 198.51.100.8}", NULL));
	assert_false(env_match("{client: 198.51.101.0/24}", NULL));
	assert_true(env_match("{client: 198.51.96.0/20}", NULL));
	assert_false(env_match("{client: 198.51.112.0/20}", NULL));
	assert_true(env_match("{client: [10.0.0.0/8, \"2001:db8::/32\"]}", set_v6));
	assert_false(env_match("{client: \"2001:db9::/32\"}", set_v6));
	assert_true(env_match("{client: 0.0.0.0/0}", NULL));
	assert_false(env_match("{client: \"::/0\"}", NULL));
	assert_true(env_match("{client: 192.0.2.0/24}", set_mapped));
	assert_true(env_match("{tls: false}", NULL));
	assert_false(env_match("{tls: true}", NULL));
	assert_true(env_match("{tls: true}", set_tls));
}

/* header (by name, decoded, presence), subject and body matchers. */
static void
test_message_matchers(void **state)
{
	struct rules_decision d;
	const char *msg =
	    "From: a@b\r\n"
	    "X-SpamInfo: relay check\r\n"
	    "Subject: =?UTF-8?B?SGVsbG8gV8O2cmxk?=\r\n"
	    "X-Multi: first\r\n"
	    "X-Multi: second\r\n"
	    "\r\n"
	    "Body text here\r\n";

	(void)state;
	assert_true(eval_msg(ONE_RULE("{header: {name: x-spaminfo, contains: check}}"),
	    msg, &d));
	assert_non_null(strstr(d.evidence, "\"where\":\"header:X-SpamInfo\""));
	rules_decision_clear(&d);
	assert_true(eval_msg(ONE_RULE("{header: {name: X-Spaminfo}}"), msg, &d));
	rules_decision_clear(&d);
	assert_false(eval_msg(ONE_RULE("{header: {name: X-Absent}}"), msg, &d));
	assert_true(eval_msg(ONE_RULE("{header: {name: X-Absent, not: true}}"), msg,
	    &d));
	rules_decision_clear(&d);
	assert_true(eval_msg(ONE_RULE("{header: {name: X-Multi, equals: second}}"),
	    msg, &d));
	rules_decision_clear(&d);
	assert_true(eval_msg(ONE_RULE("{subject: {equals: \"Hello Wörld\"}}"), msg,
	    &d));
	assert_non_null(strstr(d.evidence, "\"what\":\"Hello Wörld\""));
	rules_decision_clear(&d);
	assert_true(eval_msg(ONE_RULE("{subject: {regex: \"W.rld$\"}}"), msg, &d));
	rules_decision_clear(&d);
	assert_true(eval_msg(ONE_RULE("{subject: {regex: \"WÖRLD\", nocase: true}}"),
	    msg, &d));
	rules_decision_clear(&d);
	assert_true(eval_msg(ONE_RULE("{body: {contains: \"TEXT HERE\", nocase: true}}"),
	    msg, &d));
	assert_non_null(strstr(d.evidence, "\"what\":\"text here\""));
	rules_decision_clear(&d);
	assert_false(eval_msg(ONE_RULE("{body: {contains: X-SpamInfo}}"), msg, &d));
	assert_false(eval_msg(ONE_RULE("{subject: {contains: x}}"), "\r\nno header\r\n",
	    &d));
	assert_true(eval_msg(ONE_RULE("{subject: {contains: x, not: true}}"),
	    "\r\nno header\r\n", &d));
	rules_decision_clear(&d);
}

/* ---------------------------------------------------------------- MIME */

/* Decode one header value and compare. */
static void
hdr_is(const char *raw, const char *want)
{
	size_t n = 0;
	char *d = mime_decode_header(raw, strlen(raw), 4096, &n);

	assert_non_null(d);
	assert_string_equal(d, want);
	assert_int_equal(n, strlen(want));
	free(d);
}

/* RFC 2047: B and Q, charsets, adjacent words, folding, junk. */
static void
test_rfc2047(void **state)
{
	(void)state;
	hdr_is("=?UTF-8?B?SGVsbG8gV8O2cmxk?=", "Hello Wörld");
	hdr_is("=?iso-8859-1?q?caf=E9_cr=E8me?=", "café crème");
	hdr_is("=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=", "ab");
	hdr_is("=?utf-8?q?a?=\r\n  =?utf-8?q?b?= c", "ab c");
	hdr_is("x =?utf-8?q?a?= y", "x a y");
	hdr_is("  folded\r\n\tline  ", "folded\tline");
	hdr_is("=?utf-8*en?b?w6k=?=", "é");
	hdr_is("=?windows-1252?Q?=80?=", "€");
	hdr_is("=?bogus-charset?Q?ok?=", "ok");
	hdr_is("=?utf-8?x?bad?=", "=?utf-8?x?bad?=");
	hdr_is("=?utf-8?q?unterminated", "=?utf-8?q?unterminated");
	hdr_is("raw latin1 \xe9", "raw latin1 é");
	hdr_is("valid utf8 \xc3\xa9", "valid utf8 é");
	hdr_is("=?utf-8?b?/w==?=", "ÿ");		/* stray byte: Latin-1 */
	hdr_is("=?us-ascii//TRANSLIT?q?x?=", "=?us-ascii//TRANSLIT?q?x?=");
}

/* Parse msg and compare the body text. */
static void
body_is(const char *msg, const char *want)
{
	struct mime_msg m;

	assert_int_equal(mime_parse((const unsigned char *)msg, strlen(msg), &m), 0);
	if (strcmp(m.body, want) != 0)
		fail_msg("body \"%s\", expected \"%s\"", m.body, want);
	mime_msg_free(&m);
}

/* Transfer encodings and charsets of single-part bodies. */
static void
test_mime_bodies(void **state)
{
	(void)state;
	body_is("Subject: x\r\n\r\nplain\r\n", "plain\r\n");
	body_is("Content-Transfer-Encoding: base64\r\n\r\nSGVs\r\nbG8=\r\n", "Hello\n");
	body_is("Content-Transfer-Encoding: Quoted-Printable\r\n"
	    "Content-Type: text/plain; charset=\"ISO-8859-1\"\r\n\r\n"
	    "caf=E9 soft=\r\nbreak =3D\r\n", "café softbreak =\r\n");
	body_is("Content-Type: text/plain; charset=utf-16le\r\n"
	    "Content-Transfer-Encoding: base64\r\n\r\naABpAA==\r\n", "hi\n");
	body_is("Content-Type: application/octet-stream\r\n\r\nbinary\r\n", "");
	body_is("no header line\r\nsecond\r\n", "no header line\r\nsecond\r\n");
	body_is("Subject: x\n\nLF only\n", "LF only\n");
	body_is("", "");
	/* Stray 8-bit bytes among ASCII at various offsets (8-byte steps). */
	body_is("Subject: x\r\n\r\nabcdefgh\xe9ijklmnop\xc3\xa9qrstuvwxyz0123\xff",
	    "abcdefgh\xc3\xa9ijklmnop\xc3\xa9qrstuvwxyz0123\xc3\xbf\n");
	body_is("Subject: x\r\n\r\n\xe9" "abcdefghijklmnopq\xe2\x82\xac" "rst",
	    "\xc3\xa9" "abcdefghijklmnopq\xe2\x82\xac" "rst\n");
}

/* Header field lines: "Name :" (obsolete syntax), an mbox "From " line. */
static void
test_mime_field_lines(void **state)
{
	static const struct {
		const char *msg, *name, *value;
	} c[] = {
		{ "Subject\t : hi\r\n\r\nx\r\n", "Subject", "hi" },
		{ "From: a@b\r\nX-SpamInfo  : 1\r\n\r\nx\r\n", "X-SpamInfo", "1" },
		{ "From x@y Sun Dec  6 04:00:00 2026\r\nSubject: s\r\n\r\nx\r\n",
		    "Subject", "s" },
		/* A field so written, not an mbox line. */
		{ "From : a@b\r\nSubject: s\r\n\r\nx\r\n", "From", "a@b" },
		{ "From  :a@b\r\n\r\nx\r\n", "From", "a@b" },
	};
	const struct mime_header *h;
	struct mime_msg m;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		assert_int_equal(mime_parse((const unsigned char *)c[i].msg,
		    strlen(c[i].msg), &m), 0);
		if ((h = mime_header_get(&m, c[i].name)) == NULL)
			fail_msg("no %s in %s", c[i].name, c[i].msg);
		assert_string_equal(h->value, c[i].value);
		assert_string_equal(m.body, "x\r\n");
		mime_msg_free(&m);
	}
}

/* Multipart trees: nesting, alternatives, attachments, rfc822, no boundary. */
static void
test_mime_multipart(void **state)
{
	struct mime_msg m;
	const char *nested =
	    "Subject: outer\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
	    "\r\n"
	    "preamble\r\n"
	    "--outer\r\n"
	    "Content-Type: multipart/alternative; boundary=inner\r\n"
	    "\r\n"
	    "--inner\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: base64\r\n"
	    "\r\n"
	    "aW5uZXIgcGxhaW4=\r\n"
	    "--inner\r\n"
	    "Content-Type: text/html\r\n"
	    "\r\n"
	    "<b>html</b>\r\n"
	    "--inner--\r\n"
	    "--outer\r\n"
	    "Content-Type: application/pdf\r\n"
	    "Content-Transfer-Encoding: base64\r\n"
	    "\r\n"
	    "JVBERi0=\r\n"
	    "--outer\r\n"
	    "Content-Type: message/rfc822\r\n"
	    "\r\n"
	    "Subject: =?utf-8?q?inner_subj?=\r\n"
	    "\r\n"
	    "attached body\r\n"
	    "--outer--\r\n"
	    "epilogue\r\n";

	(void)state;
	body_is(nested, "inner plain\n<b>html</b>\nSubject: inner subj\n"
	    "attached body\n");
	assert_int_equal(mime_parse((const unsigned char *)nested, strlen(nested),
	    &m), 0);
	assert_int_equal(m.nhdrs, 3);
	assert_string_equal(mime_header_get(&m, "subject")->value, "outer");
	assert_null(mime_header_get(&m, "X-None"));
	mime_msg_free(&m);
	/* A declared boundary that never appears: the body is read as text. */
	body_is("Content-Type: multipart/mixed; boundary=zz\r\n\r\nlost text\r\n",
	    "lost text\r\n");
	/* No close delimiter. */
	body_is("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n"
	    "--b\r\n\r\ntwo", "one\ntwo\n");
}

/* Hostile structure: deep nesting, many parts, huge headers stay bounded. */
static void
test_mime_limits(void **state)
{
	struct mime_msg m;
	char *big, *p;
	size_t i, n;

	(void)state;
	/* 200 levels of multipart: stops at the depth cap, no crash. */
	big = malloc(200 * 80 + 64);
	assert_non_null(big);
	p = big;
	for (i = 0; i < 200; i++)
		p += sprintf(p, "Content-Type: multipart/mixed; boundary=b%zu\r\n"
		    "\r\n--b%zu\r\n", i, i);
	p += sprintf(p, "\r\ndeep text\r\n");
	assert_int_equal(mime_parse((unsigned char *)big, strlen(big), &m), 0);
	assert_true(m.truncated);
	assert_null(strstr(m.body, "deep text"));
	mime_msg_free(&m);
	free(big);
	/* A 3 MiB body: the decoded text is capped. */
	n = 3u * 1024 * 1024;
	big = malloc(n + 1);
	assert_non_null(big);
	memcpy(big, "Subject: x\r\n\r\n", 14);
	memset(big + 14, 'a', n - 14);
	big[n] = '\0';
	assert_int_equal(mime_parse((unsigned char *)big, n, &m), 0);
	assert_true(m.truncated);
	assert_int_equal(m.bodylen, MIME_BODY_MAX);
	mime_msg_free(&m);
	/* 2000 headers: MIME_HDR_MAX kept. */
	p = big;
	for (i = 0; i < 2000; i++)
		p += sprintf(p, "X-H%zu: v\r\n", i);
	p += sprintf(p, "\r\nbody\r\n");
	assert_int_equal(mime_parse((unsigned char *)big, (size_t)(p - big), &m), 0);
	assert_int_equal(m.nhdrs, MIME_HDR_MAX);
	assert_string_equal(m.body, "body\r\n");
	mime_msg_free(&m);
	free(big);
	/* Base64 and QP helpers respect outmax. */
	{
		unsigned char out[4];

		assert_int_equal(mime_b64_decode("SGVsbG8gV29ybGQ=", 16, out, 4), 4);
		assert_memory_equal(out, "Hell", 4);
		assert_int_equal(mime_qp_decode("=41=42=43=44=45", 15, false, out, 4),
		    4);
		assert_memory_equal(out, "ABCD", 4);
		assert_int_equal(mime_qp_decode("=4", 2, false, out, 4), 2);
		assert_memory_equal(out, "=4", 2);
	}
}

/* ---------------------------------------------- mentions_own_address */

/* Every encoding and place of the own address that must be recognised. */
static void
test_mentions_positive(void **state)
{
	(void)state;
	assert_true(probe("Subject: test 1.2.3.4\r\n\r\nx\r\n"));
	assert_true(probe("Subject: 1.2.3.4:25\r\n\r\nx\r\n"));
	assert_true(probe("Subject: [1.2.3.4]\r\n\r\nx\r\n"));
	assert_true(probe("Subject: relay at 1.2.3.4.\r\n\r\nx\r\n"));
	assert_true(probe("Subject: smtp://user:pass@1.2.3.4:587/\r\n\r\nx\r\n"));
	assert_true(probe("Subject: 0x01020304\r\n\r\nx\r\n"));
	assert_true(probe("Subject: 0X1020304\r\n\r\nx\r\n"));
	assert_true(probe("Subject: 0x1.0x2.0x3.0x4\r\n\r\nx\r\n"));
	assert_true(probe("Subject: 16909060\r\n\r\nx\r\n"));
	/* base64 of "1.2.3.4:25", of "ip=1.2.3.4", and with a prefix glued on. */
	assert_true(probe("Subject: MS4yLjMuNDoyNQ==\r\n\r\nx\r\n"));
	assert_true(probe("Subject: x\r\n\r\ncheck aXA9MS4yLjMuNA==\r\n"));
	assert_true(probe("Subject: x\r\n\r\nABCaXA9MS4yLjMuNA\r\n"));
	/* base64 split over two lines. */
	assert_true(probe("Subject: x\r\n\r\naXA9MS4y\r\nLjMuNA==\r\n"));
	assert_true(probe("Subject: =?utf-8?B?cmVsYXkgMS4yLjMuNA==?=\r\n\r\nx\r\n"));
	assert_true(probe("Subject: x\r\nX-SpamInfo: 1.2.3.4:25 user pass\r\n"
	    "\r\nx\r\n"));
	assert_true(probe("Subject: hi\r\n\r\nline one\r\nline two\r\n"
	    "server 1.2.3.4\r\n"));
	assert_true(probe("Subject: hi\r\nContent-Transfer-Encoding: base64\r\n"
	    "\r\naXAgMS4yLjMuNA==\r\n"));
	assert_true(probe("Subject: hi\r\nContent-Transfer-Encoding: quoted-printable"
	    "\r\n\r\nip 1.2.=\r\n3.4\r\n"));
	/* The local address the client reached counts too. */
	assert_true(probe("Subject: 10.0.0.5\r\n\r\nx\r\n"));
}

/* Near misses that must not count as the own address. */
static void
test_mentions_negative(void **state)
{
	(void)state;
	assert_false(probe("Subject: 11.2.3.45\r\n\r\nx\r\n"));
	assert_false(probe("Subject: 1.2.3.45\r\n\r\nx\r\n"));
	assert_false(probe("Subject: 11.2.3.4\r\n\r\nx\r\n"));
	assert_false(probe("Subject: 1.2.3.4.5\r\n\r\nx\r\n"));
	assert_false(probe("Subject: 0.1.2.3.4\r\n\r\nx\r\n"));
	assert_false(probe("Subject: 1.2.3.40\r\n\r\nx\r\n"));
	assert_false(probe("Subject: 1.2.3.4abc\r\n\r\nx\r\n"));
	assert_false(probe("Subject: v1.2.3.4\r\n\r\nx\r\n"));
	assert_false(probe("Subject: 169090601\r\n\r\nx\r\n"));
	assert_false(probe("Subject: 0x010203040\r\n\r\nx\r\n"));
	assert_false(probe("Subject: 1.2.3\r\n\r\nx\r\n"));
	assert_false(probe("Subject: hello\r\n\r\nnothing here\r\n"));
	/* base64 of "11.2.3.45". */
	assert_false(probe("Subject: MTEuMi4zLjQ1\r\n\r\nx\r\n"));
	/* Not in the envelope or in a non-text attachment. */
	assert_false(probe("Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n"
	    "\r\n--b\r\nContent-Type: image/png\r\n\r\n1.2.3.4\r\n--b--\r\n"));
	assert_false(probe(NULL));
}

/*
 * Inside base64, at every alignment: the address after 0..5 bytes of prefix
 * (no joiner such as '=': a decimal glued to one is no address, see
 * test_decimal_in_url_is_no_probe)
 * (so its encoding starts at each of the 4 positions of a base64 quad, and
 * the search must decode the run at the matching offset), glued to base64
 * text on both sides, and broken over lines at every position.
 */
static void
test_mentions_b64_alignments(void **state)
{
	static const char *const forms[] = { "1.2.3.4", "0x01020304",
	    "16909060", "01.2.0x3.4:25" };
	char plain[64], enc[128], enc2[160], msg[512];
	size_t f, k, cut, n;

	(void)state;
	for (f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
		for (k = 0; k <= 5; k++) {
			n = (size_t)snprintf(plain, sizeof(plain), "%.*s%s tail",
			    (int)k, ";,(;,", forms[f]);
			b64_enc(plain, n, enc);
			/* Glued to base64 of "AB " in front, and to "ABC"
			 * (3 characters: the text's quads start at offset 3). */
			snprintf(msg, sizeof(msg), "Subject: x\r\n\r\nQUIg%s\r\n",
			    enc);
			if (!probe(msg))
				fail_msg("%s after %zu bytes: %s", forms[f], k, msg);
			snprintf(msg, sizeof(msg), "Subject: x\r\n\r\nABC%s\r\n",
			    enc);
			if (!probe(msg))
				fail_msg("%s after %zu bytes: %s", forms[f], k, msg);
			/* Every line break position inside the run. */
			for (cut = 1; cut < strlen(enc); cut++) {
				snprintf(enc2, sizeof(enc2), "%.*s\r\n%s", (int)cut,
				    enc, enc + cut);
				snprintf(msg, sizeof(msg), "Subject: x\r\n\r\n%s\r\n",
				    enc2);
				/* A break before '+' or '/' ends the run (as before). */
				if (enc[cut] == '+' || enc[cut] == '/')
					continue;
				if (!probe(msg))
					fail_msg("%s after %zu, cut %zu: %s", forms[f],
					    k, cut, msg);
			}
		}
	}
	/*
	 * A lone digit (own address 0.0.0.9 as the integer "9") at each of the
	 * 3 byte positions of a quad, at each of the 4 alignments: the only
	 * decoded digit comes from one pair of characters.
	 */
	for (k = 0; k <= 5; k++) {
		n = (size_t)snprintf(plain, sizeof(plain), "%.*s9 is the one",
		    (int)k, ";,(;,");
		b64_enc(plain, n, enc);
		for (cut = 0; cut < 4; cut++) {
			snprintf(msg, sizeof(msg), "Subject: x\r\n\r\n%.*s%s\r\n",
			    (int)cut, "ABC", enc);
			if (!probe_own("0.0.0.9", msg))
				fail_msg("9 after %zu, glued %zu: %s", k, cut, msg);
		}
	}
	/* Near misses stay misses at every alignment. */
	for (k = 0; k <= 3; k++) {
		n = (size_t)snprintf(plain, sizeof(plain), "%.*s11.2.3.45 x",
		    (int)k, "abc");
		b64_enc(plain, n, enc);
		snprintf(msg, sizeof(msg), "Subject: %s\r\n\r\nx\r\n", enc);
		assert_false(probe(msg));
	}
	/* Long base64-looking text without digits or colons when decoded. */
	assert_false(probe("Subject: x\r\n\r\n"
	    "1XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n"
	    "2XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n"));
	/* IPv6 inside base64 ("at [2001:db8::1]:25"), at 3 alignments. */
	for (k = 0; k < 3; k++) {
		n = (size_t)snprintf(plain, sizeof(plain),
		    "%.*sat [2001:db8::1]:25", (int)k, "ab");
		b64_enc(plain, n, enc);
		snprintf(msg, sizeof(msg), "Subject: x\r\n\r\n%s\r\n", enc);
		assert_true(probe_own("2001:db8::1", msg));
		assert_false(probe_own("2001:db8::2", msg));
	}
}

/* The plain-text search: token edges, long tokens, offsets, 8-bit bytes. */
static void
test_mentions_tokens(void **state)
{
	char msg[512];
	size_t pad;

	(void)state;
	/* At every offset (the digit search reads 8 bytes a step). */
	for (pad = 0; pad <= 17; pad++) {
		snprintf(msg, sizeof(msg), "Subject: x\r\n\r\n%*s1.2.3.4\r\n",
		    (int)pad, "");
		assert_true(probe(msg));
		snprintf(msg, sizeof(msg), "Subject: x\r\n\r\n%*s1.2.3.4%s\r\n",
		    (int)pad, "", "5");
		assert_false(probe(msg));
	}
	/* A token of up to 64 bytes counts (trailing dots), 65 does not. */
	snprintf(msg, sizeof(msg), "Subject: x\r\n\r\nat 1.2.3.4%.*s\r\n", 57,
	    "..........................................................");
	assert_true(probe(msg));
	snprintf(msg, sizeof(msg), "Subject: x\r\n\r\nat 1.2.3.4%.*s\r\n", 58,
	    "..........................................................");
	assert_false(probe(msg));
	/* A digit inside a long or letter-led token is no start; the next is. */
	assert_false(probe("Subject: x\r\n\r\n"
	    "X0000000000000000000000000000000000000000000000000000000000000000000001.2.3.4\r\n"));
	assert_true(probe("Subject: x\r\n\r\n"
	    "00000000000000000000000000000000000000000000000000000000000000000000000 1.2.3.4\r\n"));
	/* Bytes with the high bit set are not digits or dots. */
	assert_false(probe("Subject: x\r\n\r\n\xb1\xae\xb2\xae\xb3\xae\xb4\r\n"));
	assert_true(probe("Subject: x\r\n\r\n\xb1\xb2\xb3\xb4\xb5\xb6\xb7\xb8"
	    "1.2.3.4\r\n"));
	/* IPv6 runs: found around any colon, dots before them are no part. */
	assert_true(probe_own("2001:db8::1", "Subject: x\r\n\r\nx..2001:db8::1\r\n"));
	assert_true(probe_own("2001:db8::1",
	    "Subject: x\r\n\r\na:b 12:34 2001:db8::1,\r\n"));
	assert_false(probe_own("2001:db8::1", "Subject: x\r\n\r\na2001:db8::1\r\n"));
	assert_false(probe_own("2001:db8::1", "Subject: x\r\n\r\n2001:db8::1g\r\n"));
	assert_true(probe_own("::ffff:1.2.3.5", "Subject: x\r\n\r\nto 1.2.3.5\r\n"));
}

/* Whether a rule with the given mentions_own_address value matches msg. */
static bool
mentions_with(const char *val, const char *own1, const char *msg,
    char *where, size_t wherelen)
{
	char yaml[1024];
	const char *ownv[1] = { own1 };
	struct rules_decision d;
	struct rules_facts f;
	struct rules *rs;
	const char *w;
	bool m;

	snprintf(yaml, sizeof(yaml), ONE_RULE("{mentions_own_address: %s}"), val);
	rs = load_ok(yaml);
	facts_init(&f, msg);
	f.own_addrs = ownv;
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	m = d.matched;
	if (where != NULL) {
		where[0] = '\0';
		if (m && (w = strstr(d.evidence, "\"where\":\"")) != NULL)
			snprintf(where, wherelen, "%.*s", (int)strcspn(w + 9, "\""),
			    w + 9);
	}
	rules_decision_clear(&d);
	rules_free(rs);
	return m;
}

/*
 * The address as 8 bare hex digits (a published open-relay test format:
 * 217.128.138.253 is D9808AFD), optionally with a port: a whole token in one
 * case.  The decoys are hex runs that merely contain it.
 */
static void
test_mentions_hex8(void **state)
{
	static const char *const yes[] = {
		"Subject: D9808AFD:8080\r\n\r\nx\r\n",
		"Subject: d9808afd:8080\r\n\r\nx\r\n",
		"Subject: D9808AFD\r\n\r\nx\r\n",
		"Subject: x\r\n\r\nrelay d9808afd:25 ok\r\n",
		"Subject: x\r\n\r\nmeeting at 1D9808AFD:8080:6 o'clock.\r\n",
		"Subject: [D9808AFD:25]\r\n\r\nx\r\n",
		"Subject: (d9808afd)\r\n\r\nx\r\n",
		"Subject: x\r\n\r\nat D9808AFD.\r\n",
		"Subject: x\r\n\r\n\"D9808AFD\",\r\n",
		"Subject: x\r\n\r\nid:D9808AFD\r\n",
		"Subject: 0xD9808AFD\r\n\r\nx\r\n",	/* the 0x form */
		/* base64 of "relay D9808AFD:8080". */
		"Subject: cmVsYXkgRDk4MDhBRkQ6ODA4MA==\r\n\r\nx\r\n",
	};
	static const char *const no[] = {
		"Subject: D9808aFD:8080\r\n\r\nx\r\n",		/* mixed case */
		"Subject: d9808AFD\r\n\r\nx\r\n",
		"Subject: D9808AFE:8080\r\n\r\nx\r\n",		/* another address */
		"Subject: 1D9808AFD\r\n\r\nx\r\n",		/* longer hex runs */
		"Subject: D9808AFD0\r\n\r\nx\r\n",
		"Subject: 1D9808AFD:8080\r\n\r\nx\r\n",
		"Subject: x\r\n\r\nsha1 e3b0c442d9808afd98fc1c149afbf4c8996fb924\r\n",
		"Subject: x\r\n\r\nmd5 D9808AFD0C1E4B7A9D2E1F2A3B4C5D6E\r\n",
		"Subject: x\r\n\r\nxD9808AFD D9808AFDz _D9808AFD D9808AFD_1\r\n",
		"Subject: x\r\n\r\nd9808afd-0c1e-4b7a-9d2e-1f2a3b4c5d6e\r\n",	/* UUID */
		"Subject: x\r\n\r\n0c1e4b7a-d9808afd\r\n",
		"Subject: x\r\n\r\ncolor: #d9808afd;\r\n",	/* CSS colour */
		"Subject: x\r\n\r\n<D9808AFD.12345@mail.example>\r\n",
		"Subject: x\r\n\r\nhost.D9808AFD D9808AFD.example.com\r\n",
		"Subject: x\r\n\r\nhttp://x.example/D9808AFD?id=D9808AFD&a=1\r\n",
		"Subject: x\r\n\r\nD9808AFD:8080x D9808AFD:1234567\r\n",
		"Subject: x\r\n\r\nZDk4MDhhZmQtMGMxZQ==\r\n",	/* base64 of the UUID start */
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		if (!probe_own("217.128.138.253", yes[i]))
			fail_msg("not found: %s", yes[i]);
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		if (probe_own("217.128.138.253", no[i]))
			fail_msg("found in a decoy: %s", no[i]);
	/* Evidence: the token with its port. */
	{
		char where[64];

		assert_true(mentions_with("true", "217.128.138.253",
		    "Subject: hi\r\nX-Test: 1 d9808afd:8080 x\r\n\r\nx\r\n",
		    where, sizeof(where)));
		assert_string_equal(where, "header:X-Test");
	}
	/*
	 * Hex without a letter a-f (18.52.86.120 is 12345678) reads as a
	 * decimal number (a date, an order number): only with a port.
	 */
	assert_false(probe_own("18.52.86.120", "Subject: order 12345678\r\n\r\nx\r\n"));
	assert_true(probe_own("18.52.86.120", "Subject: 12345678:25\r\n\r\nx\r\n"));
	/* 10.0.0.5 (the reached address) is 0A000005. */
	assert_true(probe("Subject: 0A000005:25\r\n\r\nx\r\n"));
	assert_true(probe("Subject: 0a000005\r\n\r\nx\r\n"));
}

/*
 * Trace and identification header fields are written by mail software, and
 * botnets forge them naming the target server: they are no sign of a probe.
 */
static const char *const trace_decoys[] = {
	"Received: from pc-12.dsl.example ([198.51.100.9]) by mx.corp.example "
	    "([1.2.3.4]) with SMTP; Sun, 6 Dec 2026 04:00:00 +0000",
	"X-Received: by 1.2.3.4 with SMTP id x; Sun, 6 Dec 2026 04:00:00 +0000",
	"X-Originating-IP: [1.2.3.4]",
	"X-Forwarded-For: 198.51.100.9, 1.2.3.4",
	"X-Real-IP: 1.2.3.4",
	"Message-ID: <20261206.1234@[1.2.3.4]>",
	"References: <a@example.org> <b@[1.2.3.4]>",
	"In-Reply-To: <b@[1.2.3.4]>",
	"Return-Path: <bounce@[1.2.3.4]>",
	"Resent-From: x@[1.2.3.4]",
	"DKIM-Signature: v=1; d=example.org; s=1.2.3.4; b=abc",
	"ARC-Authentication-Results: i=1; mx; spf=pass smtp.client-ip=1.2.3.4",
	"Authentication-Results: mx.corp.example; spf=pass smtp.client-ip=1.2.3.4",
	"Received-SPF: pass (mx: domain designates 1.2.3.4 as permitted sender)",
	"X-MS-Exchange-Organization-OriginalClientIPAddress: 1.2.3.4",
	"X-Google-Smtp-Source: 1.2.3.4",
	"Delivered-To: user@[1.2.3.4]",
	"X-Spam-Status: No, relay=1.2.3.4",
};

/* Where mentions_own_address looks: true skips trace fields; in: chooses. */
static void
test_mentions_places(void **state)
{
	char msg[512], where[64];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(trace_decoys) / sizeof(trace_decoys[0]); i++) {
		snprintf(msg, sizeof(msg), "From: a@example.net\r\n%s\r\n"
		    "Subject: hello\r\n\r\nbuy now\r\n", trace_decoys[i]);
		if (mentions_with("true", "1.2.3.4", msg, where, sizeof(where)))
			fail_msg("a trace field counted (%s): %s", where, msg);
		/* Named explicitly, a field counts. */
		snprintf(where, sizeof(where), "[\"header:%.*s\"]",
		    (int)strcspn(trace_decoys[i], ":"), trace_decoys[i]);
		{
			char val[128];

			snprintf(val, sizeof(val), "{in: %s}", where);
			if (!mentions_with(val, "1.2.3.4", msg, where,
			    sizeof(where)))
				fail_msg("named and not found: %s", msg);
		}
		if (strncmp(where, "header:", 7) != 0 ||
		    strncasecmp(where + 7, trace_decoys[i],
		    strcspn(trace_decoys[i], ":")) != 0)
			fail_msg("evidence where \"%s\" for %s", where, msg);
		/* And false holds when only a trace field has it. */
		assert_true(mentions_with("false", "1.2.3.4", msg, NULL, 0));
	}
	/* Other (custom) header fields still count with true. */
	assert_true(mentions_with("true", "1.2.3.4",
	    "Subject: hi\r\nX-SpamInfo: 1.2.3.4:25 user pass\r\n\r\nx\r\n",
	    where, sizeof(where)));
	assert_string_equal(where, "header:X-SpamInfo");
	/* A second Subject field is searched with the other headers. */
	assert_true(mentions_with("true", "1.2.3.4",
	    "Subject: x\r\nSubject: 1.2.3.4\r\n\r\nx\r\n", NULL, 0));
	/* in: only the places listed, searched in the order listed. */
	msg[0] = '\0';
	snprintf(msg, sizeof(msg), "Subject: 1.2.3.4\r\nX-A: 1.2.3.4\r\n"
	    "X-SpamInfo: 1.2.3.4\r\n\r\n1.2.3.4\r\n");
	assert_true(mentions_with("{in: [body, subject]}", "1.2.3.4", msg,
	    where, sizeof(where)));
	assert_string_equal(where, "body");
	assert_true(mentions_with("{in: [subject, body]}", "1.2.3.4", msg,
	    where, sizeof(where)));
	assert_string_equal(where, "header:Subject");
	assert_true(mentions_with("{in: [\"header:x-spaminfo\"]}", "1.2.3.4", msg,
	    where, sizeof(where)));
	assert_string_equal(where, "header:X-SpamInfo");
	assert_true(mentions_with("{in: [\"header:X-Spam*\"]}", "1.2.3.4", msg,
	    where, sizeof(where)));
	assert_string_equal(where, "header:X-SpamInfo");
	assert_true(mentions_with("{in: [headers]}", "1.2.3.4",
	    "Subject: x\r\nX-A: 1.2.3.4\r\n\r\nx\r\n", where, sizeof(where)));
	assert_string_equal(where, "header:X-A");
	assert_false(mentions_with("{in: [subject]}", "1.2.3.4",
	    "Subject: x\r\nX-A: 1.2.3.4\r\n\r\n1.2.3.4\r\n", NULL, 0));
	assert_false(mentions_with("{in: [body]}", "1.2.3.4",
	    "Subject: 1.2.3.4\r\n\r\nx\r\n", NULL, 0));
	assert_false(mentions_with("{in: [\"header:X-SpamInfo\"]}", "1.2.3.4",
	    "Subject: 1.2.3.4\r\nX-Spaminfo2: 1.2.3.4\r\n\r\n1.2.3.4\r\n",
	    NULL, 0));
	assert_false(mentions_with("{in: [headers]}", "1.2.3.4",
	    "Subject: x\r\nReceived: by [1.2.3.4]\r\n\r\n1.2.3.4\r\n", NULL, 0));
	/* not: true */
	assert_true(mentions_with("{in: [subject], not: true}", "1.2.3.4",
	    "Subject: x\r\n\r\n1.2.3.4\r\n", NULL, 0));
	assert_false(mentions_with("{in: [subject], not: true}", "1.2.3.4",
	    "Subject: 1.2.3.4\r\n\r\nx\r\n", NULL, 0));
	/*
	 * The header of an attached message (message/rfc822, text/rfc822-headers
	 * of a bounce) lands in the body text: its trace lines do not count.
	 */
	assert_false(mentions_with("true", "1.2.3.4",
	    "Subject: Undelivered Mail\r\nContent-Type: multipart/mixed; b"
	    "oundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsorry\r\n"
	    "--b\r\nContent-Type: message/rfc822\r\n\r\nReceived: from x (["
	    "198.51.100.9])\r\n\tby mx.corp.example ([1.2.3.4]); Sun, 6 Dec 2026"
	    "\r\nMessage-ID: <a@[1.2.3.4]>\r\nSubject: hi\r\n\r\nbuy\r\n--b--\r\n",
	    where, sizeof(where)));
	assert_false(mentions_with("true", "1.2.3.4",
	    "Subject: x\r\nContent-Type: text/rfc822-headers\r\n\r\n"
	    "Received: from x ([198.51.100.9])\r\n by mx ([1.2.3.4]);\r\n"
	    "X-Originating-IP: 1.2.3.4\r\n", NULL, 0));
	/* A body line that is not a trace field still counts. */
	assert_true(mentions_with("true", "1.2.3.4",
	    "Subject: x\r\n\r\nReceived: ok\r\nserver 1.2.3.4\r\n", NULL, 0));
}

/* The place list: every error names the file, the line and the key. */
static void
test_mentions_places_errors(void **state)
{
	(void)state;
	load_err(ONE_RULE("{mentions_own_address: {in: [subjekt]}}"),
	    "t.yml:5: rules[0].conditions[0].mentions_own_address.in[0]: "
	    "unknown place \"subjekt\"");
	load_err(ONE_RULE("{mentions_own_address: {in: [body, \"header:\"]}}"),
	    "t.yml:5: rules[0].conditions[0].mentions_own_address.in[1]: "
	    "not a header field name");
	load_err(ONE_RULE("{mentions_own_address: {in: [\"header:a b\"]}}"),
	    "t.yml:5: rules[0].conditions[0].mentions_own_address.in[0]: "
	    "not a header field name");
	load_err(ONE_RULE("{mentions_own_address: {in: [\"header:*\"]}}"),
	    "t.yml:5: rules[0].conditions[0].mentions_own_address.in[0]: "
	    "not a header field name");
	load_err(ONE_RULE("{mentions_own_address: {in: [\"header:X*Y\"]}}"),
	    "t.yml:5: rules[0].conditions[0].mentions_own_address.in[0]: "
	    "not a header field name");
	load_err(ONE_RULE("{mentions_own_address: {in: []}}"),
	    "t.yml:5: rules[0].conditions[0].mentions_own_address.in: "
	    "the list is empty");
	load_err(ONE_RULE("{mentions_own_address: {in: body}}"),
	    "t.yml:5: rules[0].conditions[0].mentions_own_address.in: "
	    "expected a list");
	load_err(ONE_RULE("{mentions_own_address: {not: true}}"),
	    "t.yml:5: rules[0].conditions[0].mentions_own_address.in: missing");
	load_err(ONE_RULE("{mentions_own_address: {in: [body], where: x}}"),
	    "t.yml:5: rules[0].conditions[0].mentions_own_address.where: "
	    "unknown key");
	load_err(ONE_RULE("{mentions_own_address: [body]}"),
	    "t.yml:5: rules[0].conditions[0].mentions_own_address: expected "
	    "true, false or {in: [...]}");
	load_err(ONE_RULE("{mentions_own_address: maybe}"),
	    "t.yml:5: rules[0].conditions[0].mentions_own_address: expected "
	    "true or false");
}

/* IPv6 own addresses, evidence format and false. */
static void
test_mentions_v6_and_evidence(void **state)
{
	static const char *const own6[] = { "2001:db8::1", "garbage" };
	struct rules_decision d;
	struct rules_facts f;
	struct rules *rs;

	(void)state;
	rs = load_ok(ONE_RULE("{mentions_own_address: true}"));
	facts_init(&f, "Subject: x\r\nX-Info: [2001:DB8:0::1]:25\r\n\r\nx\r\n");
	f.own_addrs = own6;
	f.nown = 2;
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_true(d.matched);
	assert_non_null(strstr(d.evidence, "\"where\":\"header:X-Info\""));
	rules_decision_clear(&d);
	facts_init(&f, "Subject: x\r\n\r\n2001:db8::10\r\n");
	f.own_addrs = own6;
	f.nown = 2;
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_false(d.matched);
	/* Evidence: matcher, where, what; base64 shows both forms. */
	facts_init(&f, "Subject: MS4yLjMuNDoyNQ==\r\n\r\nx\r\n");
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_true(d.matched);
	assert_string_equal(d.evidence,
	    "[{\"matcher\":\"mentions_own_address\",\"where\":\"header:Subject\","
	    "\"what\":\"MS4yLjMuNDoyNQ== (base64: 1.2.3.4:25)\"}]");
	rules_decision_clear(&d);
	facts_init(&f, "Subject: x\r\n\r\nserver: 1.2.3.4:2525\r\n");
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_string_equal(d.evidence,
	    "[{\"matcher\":\"mentions_own_address\",\"where\":\"body\","
	    "\"what\":\"1.2.3.4:2525\"}]");
	rules_decision_clear(&d);
	rules_free(rs);
	/* mentions_own_address: false */
	assert_true(eval_msg(ONE_RULE("{mentions_own_address: false}"),
	    "Subject: x\r\n\r\ny\r\n", &d));
	rules_decision_clear(&d);
	assert_false(eval_msg(ONE_RULE("{mentions_own_address: false}"),
	    "Subject: 1.2.3.4\r\n\r\ny\r\n", &d));
}

/* Attacker bytes in evidence are escaped and bounded. */
static void
test_evidence_escaping(void **state)
{
	struct rules_decision d;
	char msg[1024];

	(void)state;
	snprintf(msg, sizeof(msg), "Subject: x\r\nX-Evil\"\\: a\"b\\c\x01\xff%0300d"
	    "\r\n\r\nz\r\n", 0);
	assert_true(eval_msg(ONE_RULE("{header: {name: X-Evil\"\\, contains: a}}"),
	    msg, &d));
	assert_non_null(strstr(d.evidence, "header:X-Evil\\\"\\\\"));
	assert_null(strchr(d.evidence, '\x01'));
	assert_true(strlen(d.evidence) < 400);
	rules_decision_clear(&d);
	assert_true(eval_msg(ONE_RULE("{header: {name: X-Evil\"\\, regex: \"a.*\"}}"),
	    msg, &d));
	assert_non_null(strstr(d.evidence, "a\\\"b\\\\c\\u0001"));
	rules_decision_clear(&d);
}

/* A catastrophic regex over a large body gives up quickly without matching. */
static void
test_regex_bounded(void **state)
{
	struct rules_decision d;
	struct rules_facts f;
	struct rules *rs;
	struct timespec a, b;
	size_t n = 900 * 1024, i;
	char *msg;
	double ms;

	(void)state;
	msg = malloc(n + 1);
	assert_non_null(msg);
	memcpy(msg, "Subject: x\r\n\r\n", 14);
	memset(msg + 14, 'a', n - 14);
	for (i = 100; i < n; i += 64)
		msg[i] = '\n';
	msg[n] = '\0';
	rs = load_ok("rules:\n"
	    "  - {name: evil, priority: 1, stage: data, conditions:"
	    " [{body: {regex: \"(?:a|a){1,12}[b-z]\"}}], actions: {relay: true}}\n"
	    "  - {name: evil2, priority: 2, stage: data, conditions:"
	    " [{body: {regex: \"(a+)+[b-z]\"}}], actions: {relay: true}}\n"
	    "  - {name: after, priority: 3, stage: data, conditions:"
	    " [{body: {contains: aaaa}}]}\n");
	facts_init(&f, msg);
	clock_gettime(CLOCK_MONOTONIC, &a);
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	clock_gettime(CLOCK_MONOTONIC, &b);
	ms = (double)(b.tv_sec - a.tv_sec) * 1e3 +
	    (double)(b.tv_nsec - a.tv_nsec) / 1e6;
	assert_string_equal(d.rule, "after");
	assert_false(d.relay);
	/* Unbounded, the first regex alone takes minutes (12 s per 100 KiB). */
	assert_true(ms < 5000);
	rules_decision_clear(&d);
	rules_free(rs);
	free(msg);
}

/* The rules file loaded from disk reports the file name; decisions clear. */
static void
test_load_file(void **state)
{
	char path[] = "/tmp/test_rules_XXXXXX", err[256];
	const char *y = "rules:\n  - name: x\n    stage: data\n    conditions:\n"
	    "      - {tls: maybe}\n";
	struct rules_decision d;
	FILE *fp;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	fp = fdopen(fd, "w");
	assert_non_null(fp);
	fputs(y, fp);
	fclose(fp);
	assert_null(rules_load(path, err, sizeof(err)));
	assert_non_null(strstr(err, ":5: rules[0].conditions[0].tls: expected true"));
	assert_int_equal(strncmp(err, path, strlen(path)), 0);
	unlink(path);
	memset(&d, 0x5a, sizeof(d));
	d.evidence = NULL;
	rules_decision_clear(&d);
	assert_false(d.matched);
	assert_true(d.publish);
	assert_string_equal(rules_stage_name(RULES_STAGE_RSET), "rset");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_load_empty),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_shipped_rules),
		cmocka_unit_test(test_priority_first_match),
		cmocka_unit_test(test_disabled_and_stage),
		cmocka_unit_test(test_conditions_any_all),
		cmocka_unit_test(test_string_matchers),
		cmocka_unit_test(test_other_matchers),
		cmocka_unit_test(test_message_matchers),
		cmocka_unit_test(test_rfc2047),
		cmocka_unit_test(test_mime_bodies),
		cmocka_unit_test(test_mime_field_lines),
		cmocka_unit_test(test_mime_multipart),
		cmocka_unit_test(test_mime_limits),
		cmocka_unit_test(test_mentions_positive),
		cmocka_unit_test(test_mentions_negative),
		cmocka_unit_test(test_mentions_v6_and_evidence),
		cmocka_unit_test(test_mentions_b64_alignments),
		cmocka_unit_test(test_mentions_tokens),
		cmocka_unit_test(test_mentions_hex8),
		cmocka_unit_test(test_mentions_places),
		cmocka_unit_test(test_mentions_places_errors),
		cmocka_unit_test(test_evidence_escaping),
		cmocka_unit_test(test_regex_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
