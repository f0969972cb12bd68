/* The built-in rules are the shipped etc/rules.yml, and they load. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rules.h"
#include "rules_default.h"

/* Read a whole file into a NUL-terminated buffer. */
static char *
slurp(const char *path)
{
	FILE *fp = fopen(path, "rb");
	char *buf;
	long n;

	if (fp == NULL)
		return NULL;
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	rewind(fp);
	buf = calloc(1, (size_t)n + 1);
	if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(fp);
	return buf;
}

/* Built from etc/rules.yml at build time: byte for byte the same text. */
static void
test_same_as_shipped_file(void **state)
{
	char *file = slurp("etc/rules.yml");

	assert_non_null(file);
	assert_string_equal(rules_default_yaml, file);
	free(file);
}

/* The built-in rules load, and a small mail mentioning our address is a probe. */
static void
test_loads_and_finds_a_probe(void **state)
{
	static const char mail[] =
	    "From: a@example.org\r\nTo: b@example.net\r\n"
	    "Subject: relay test 192.0.2.7:25\r\n\r\nhello\r\n";
	const char *own[] = { "192.0.2.7" };
	const char *rcpt[] = { "b@example.net" };
	struct rules_facts f;
	struct rules_decision d;
	char err[256];
	struct rules *r = rules_load_buf(RULES_DEFAULT_NAME, rules_default_yaml,
	    strlen(rules_default_yaml), err, sizeof(err));

	if (r == NULL)
		print_error("%s\n", err);
	assert_non_null(r);
	memset(&f, 0, sizeof(f));
	f.stage = RULES_STAGE_DATA;
	f.mail_from = "a@example.org";
	f.rcpt = rcpt;
	f.nrcpt = 1;
	f.src_ip = "198.51.100.1";
	f.dst_ip = "10.0.0.1";
	f.msg = (const unsigned char *)mail;
	f.msglen = sizeof(mail) - 1;
	f.own_addrs = own;
	f.nown = 1;
	assert_int_equal(rules_eval(r, &f, &d), 0);
	assert_true(d.matched);
	assert_true(d.relay);
	assert_string_equal(d.rule, "probe");
	/*
	 * The cheap matchers run first (size, rcpt_count before the address
	 * search that needs the MIME decoding): the evidence is in that order.
	 */
	assert_non_null(d.evidence);
	{
		const char *sz = strstr(d.evidence, "\"matcher\":\"size\"");
		const char *mine = strstr(d.evidence, "\"matcher\":\"mentions_own_address\"");
		assert_non_null(sz);
		assert_non_null(mine);
		assert_true(sz < mine);
	}
	rules_decision_clear(&d);

	/* Not mentioning it: no rule matches. */
	f.own_addrs = (const char *[]){ "192.0.2.8" };
	assert_int_equal(rules_eval(r, &f, &d), 0);
	assert_false(d.matched);
	assert_false(d.relay);
	rules_decision_clear(&d);
	rules_free(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_as_shipped_file),
		cmocka_unit_test(test_loads_and_finds_a_probe),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
