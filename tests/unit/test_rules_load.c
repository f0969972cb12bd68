/*
 * Unit tests for rules_load.c: the rules file loader (every error names the
 * file, the line and the key), its bounds, the order of a loaded set and
 * what it reports (count, stages, stage names).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "rules.h"
#include "yaml_util.h"
#include "testutil.h"

/* A rule set with one data rule whose single condition is cond (YAML flow). */
#define ONE_RULE(cond) \
	"rules:\n" \
	"  - name: r\n" \
	"    stage: data\n" \
	"    conditions:\n" \
	"      - " cond "\n" \
	"    actions: {relay: true, tag: t}\n"


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

/* The rules file loaded from disk reports the file name. */
static void
test_load_file(void **state)
{
	char path[] = "/tmp/test_rules_XXXXXX", err[256];
	const char *y = "rules:\n  - name: x\n    stage: data\n    conditions:\n"
	    "      - {tls: maybe}\n";
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
}

/* Which rule a DATA message without TLS gets from the set yaml ("" for none). */
static void
expect_first(const char *yaml, const char *want)
{
	struct rules *rs = load_ok(yaml);
	struct rules_facts f;
	struct rules_decision d;
	const char *rcpt[] = { "a@example.com" };

	memset(&f, 0, sizeof(f));
	f.stage = RULES_STAGE_DATA;
	f.mail_from = "x@example.net";
	f.rcpt = rcpt;
	f.nrcpt = 1;
	f.msg = (const unsigned char *)"Subject: x\r\n\r\nx\r\n";
	f.msglen = strlen((const char *)f.msg);
	assert_int_equal(rules_eval(rs, &f, &d), 0);
	assert_string_equal(d.rule, want);
	rules_decision_clear(&d);
	rules_free(rs);
}

/* Priority order (lowest first), file order among equals; the default priority is 100. */
static void
test_priority_order(void **state)
{
	(void)state;
	expect_first("rules:\n"
	    "  - {name: a, priority: 200, stage: data, conditions: [{tls: false}]}\n"
	    "  - {name: b, priority: 50, stage: data, conditions: [{tls: false}]}\n"
	    "  - {name: c, priority: 50, stage: data, conditions: [{tls: false}]}\n", "b");
	expect_first("rules:\n"
	    "  - {name: x, stage: data, conditions: [{tls: false}]}\n"
	    "  - {name: y, priority: 100, stage: data, conditions: [{tls: false}]}\n"
	    "  - {name: z, priority: 101, stage: data, conditions: [{tls: false}]}\n", "x");
	expect_first("rules:\n"
	    "  - {name: x, stage: data, conditions: [{tls: false}]}\n"
	    "  - {name: y, priority: 99, stage: data, conditions: [{tls: false}]}\n", "y");
	/* A disabled rule never decides. */
	expect_first("rules:\n"
	    "  - {name: x, priority: 1, enabled: false, stage: data, conditions: [{tls: false}]}\n"
	    "  - {name: y, stage: data, conditions: [{tls: false}]}\n", "y");
	load_err("rules:\n  - {name: x, priority: 1000001, stage: data, conditions: [{tls: false}]}\n",
	    "t.yml:2: rules[0].priority: 1000001 is out of range (0..1000000)");
}

/* Count, stages with an enabled rule, stage names. */
static void
test_count_and_stages(void **state)
{
	struct rules *rs;

	(void)state;
	rs = load_ok("rules:\n"
	    "  - {name: a, stage: ehlo, conditions: [{tls: false}]}\n"
	    "  - {name: b, stage: AUTH, enabled: false, conditions: [{tls: false}]}\n"
	    "  - {name: c, stage: rset, conditions: [{tls: false}]}\n");
	assert_int_equal(rules_count(rs), 3);
	assert_true(rules_has_stage(rs, RULES_STAGE_EHLO));
	assert_false(rules_has_stage(rs, RULES_STAGE_AUTH));
	assert_true(rules_has_stage(rs, RULES_STAGE_RSET));
	assert_false(rules_has_stage(rs, RULES_STAGE_DATA));
	rules_free(rs);
	assert_int_equal(rules_count(NULL), 0);
	assert_false(rules_has_stage(NULL, RULES_STAGE_DATA));
	assert_string_equal(rules_stage_name(RULES_STAGE_EHLO), "ehlo");
	assert_string_equal(rules_stage_name(RULES_STAGE_AUTH), "auth");
	assert_string_equal(rules_stage_name(RULES_STAGE_RSET), "rset");
	assert_string_equal(rules_stage_name(RULES_STAGE_DATA), "data");
	assert_string_equal(rules_stage_name((enum rules_stage)4), "?");
	assert_string_equal(rules_stage_name((enum rules_stage)-1), "?");
}

/* The stage is read first whatever the key order: what it allows is checked against it. */
static void
test_stage_first(void **state)
{
	(void)state;
	load_err("rules:\n  - conditions: [{body: {contains: x}}]\n    name: a\n    stage: ehlo\n",
	    "t.yml:2: rules[0].conditions[0].body: only at stage data");
	load_err("rules:\n  - actions: {relay: true}\n    name: a\n    stage: rset\n"
	    "    conditions: [{tls: true}]\n",
	    "t.yml:2: rules[0].actions.relay: relay needs a message");
}

/* Build "rules:" with n copies of a rule (names r0..), or one rule with n conditions / values. */
static char *
big_yaml(const char *kind, int n, size_t vlen)
{
	size_t cap = 64 + (size_t)n * 96 + vlen;
	char *y = malloc(cap), *p = y;
	char *val;

	assert_non_null(y);
	if (strcmp(kind, "rules") == 0) {
		p += sprintf(p, "rules:\n");
		for (int i = 0; i < n; i++)
			p += sprintf(p, "  - {name: r%d, stage: data, conditions: [{tls: true}]}\n", i);
	} else if (strcmp(kind, "conditions") == 0) {
		p += sprintf(p, "rules:\n  - name: a\n    stage: data\n    conditions:\n");
		for (int i = 0; i < n; i++)
			p += sprintf(p, "      - {tls: true}\n");
	} else if (strcmp(kind, "values") == 0) {
		p += sprintf(p, "rules:\n  - name: a\n    stage: data\n    conditions:\n"
		    "      - {helo: {equals: [");
		for (int i = 0; i < n; i++)
			p += sprintf(p, "%sv%d", i ? ", " : "", i);
		p += sprintf(p, "]}}\n");
	} else {	/* one value or regex of vlen bytes */
		val = malloc(vlen + 1);
		assert_non_null(val);
		memset(val, 'a', vlen);
		val[vlen] = '\0';
		p += sprintf(p, "rules:\n  - name: a\n    stage: data\n    conditions:\n"
		    "      - {helo: {%s: %s}}\n", kind, val);
		free(val);
	}
	assert_true((size_t)(p - y) < cap);
	return y;
}

/* The loader's bounds: each at its limit loads, one more is an error naming the key. */
static void
test_bounds(void **state)
{
	struct rules *rs;
	char *y, err[256];

	(void)state;
	y = big_yaml("rules", 1024, 0);
	rs = load_ok(y);
	assert_int_equal(rules_count(rs), 1024);
	rules_free(rs);
	free(y);
	y = big_yaml("rules", 1025, 0);
	load_err(y, "t.yml:2: rules: more than 1024 items");
	free(y);
	y = big_yaml("conditions", 64, 0);
	rules_free(load_ok(y));
	free(y);
	y = big_yaml("conditions", 65, 0);
	load_err(y, "t.yml:5: rules[0].conditions: more than 64 items");
	free(y);
	y = big_yaml("values", 256, 0);
	rules_free(load_ok(y));
	free(y);
	y = big_yaml("values", 257, 0);
	load_err(y, "t.yml:5: rules[0].conditions[0].helo.equals: more than 256 items");
	free(y);
	y = big_yaml("equals", 1024, 1024);
	rules_free(load_ok(y));
	free(y);
	y = big_yaml("equals", 1025, 1025);
	load_err(y, "t.yml:5: rules[0].conditions[0].helo.equals: longer than 1024 bytes");
	free(y);
	y = big_yaml("regex", 1024, 1024);
	rules_free(load_ok(y));
	free(y);
	y = big_yaml("regex", 1025, 1025);
	load_err(y, "t.yml:5: rules[0].conditions[0].helo.regex: longer than 1024 bytes");
	free(y);
	/* A buffer larger than a rules file may be: refused before parsing. */
	y = malloc(YU_FILE_MAX + 2);
	assert_non_null(y);
	memset(y, '#', YU_FILE_MAX + 1);
	y[YU_FILE_MAX + 1] = '\0';
	assert_null(rules_load_buf("t.yml", y, YU_FILE_MAX + 1, err, sizeof(err)));
	assert_string_equal(err, "t.yml: larger than 1048576 bytes");
	free(y);
}

/* Client CIDRs: an address, or an address with a prefix length within its family's bits. */
static void
test_cidrs(void **state)
{
	(void)state;
	rules_free(load_ok(ONE_RULE("{client: [10.0.0.0/8, 192.0.2.1, \"2001:db8::/32\", \"::1/128\", 0.0.0.0/0]}")));
	load_err(ONE_RULE("{client: \"2001:db8::/129\"}"),
	    "t.yml:5: rules[0].conditions[0].client: expected an address or CIDR");
	load_err(ONE_RULE("{client: 10.0.0.0/}"),
	    "t.yml:5: rules[0].conditions[0].client: expected an address or CIDR");
	load_err(ONE_RULE("{client: /8}"),
	    "t.yml:5: rules[0].conditions[0].client: expected an address or CIDR");
	load_err(ONE_RULE("{client: 10.0.0.0/-1}"),
	    "t.yml:5: rules[0].conditions[0].client: expected an address or CIDR");
	load_err(ONE_RULE("{client: example.com/8}"),
	    "t.yml:5: rules[0].conditions[0].client: expected an address or CIDR");
	/* What is quoted back is escaped. */
	load_err(ONE_RULE("{client: \"\\e[2J/8\"}"),
	    "t.yml:5: rules[0].conditions[0].client: expected an address or CIDR such as "
	    "192.0.2.0/24 or 2001:db8::/32, got \"\\x1b[2J/8\"");
}

/*
 * What a rules file says is escaped in the errors quoting it: a rule name
 * (any byte but a control character may be in one) named again by the
 * duplicate error, a stage, a value.
 */
static void
test_error_escaping(void **state)
{
	char err[256];
	struct rules *rs;
	const char *y =
	    "rules:\n"
	    "  - {name: \"a\\u009b2J\\xff\", stage: data, conditions: [{tls: true}]}\n"
	    "  - {name: \"a\\u009b2J\\xff\", stage: data, conditions: [{tls: true}]}\n";

	(void)state;
	rs = rules_load_buf("t.yml", y, strlen(y), err, sizeof(err));
	assert_null(rs);
	if (strncmp(err, "t.yml:3: rules[1]: duplicate rule name", 38) != 0)
		fail_msg("error \"%s\"", err);
	if (strstr(err, "\xc2\x9b") != NULL || strstr(err, "\xc3\xbf") != NULL)
		fail_msg("raw bytes of the name in \"%s\"", err);
	load_err("rules:\n  - {name: \"a\\tb\", stage: data, conditions: [{tls: true}]}\n",
	    "t.yml:2: rules[0].name: contains a control character");
	load_err("rules:\n  - {name: a, stage: \"\\e[2J\", conditions: [{tls: true}]}\n",
	    "t.yml:2: rules[0].stage: expected one of ehlo, auth, rset, data, got \"\\x1b[2J\"");
}

/* The err buffer: cut to its size, never overrun; none at all is fine. */
static void
test_err_buffer(void **state)
{
	char small[12], none[4] = "zzz";
	const char *y = "rules:\n  - {name: a, stage: nope, conditions: [{tls: true}]}\n";

	(void)state;
	memset(small, 'x', sizeof(small));
	assert_null(rules_load_buf("t.yml", y, strlen(y), small, sizeof(small)));
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_string_equal(small, "t.yml:2: ru");
	assert_null(rules_load_buf("t.yml", y, strlen(y), none, 0));
	assert_string_equal(none, "zzz");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_load_empty),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_mentions_places_errors),
		cmocka_unit_test(test_priority_order),
		cmocka_unit_test(test_count_and_stages),
		cmocka_unit_test(test_stage_first),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_cidrs),
		cmocka_unit_test(test_error_escaping),
		cmocka_unit_test(test_err_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
