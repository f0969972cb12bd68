/* Unit tests for persona.c: the reply tables and the placeholder expander. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include <stdio.h>

#include "persona.h"

/* Every reply of the default persona is "DDD " + text, or "DDD" alone. */
static void
test_every_reply_well_formed(void **state)
{
	const struct persona *p = persona_default();
	int id;

	(void)state;
	assert_non_null(p);
	for (id = 0; id < PR_COUNT; id++) {
		const char *r = p->replies[id];

		if (r == NULL)
			fail_msg("reply id %d is empty", id);
		assert_true(strlen(r) >= 4);
		assert_true(r[0] >= '2' && r[0] <= '5');
		assert_true(r[1] >= '0' && r[1] <= '9');
		assert_true(r[2] >= '0' && r[2] <= '9');
		if (r[3] != ' ')
			fail_msg("reply id %d lacks the space after the code: %s", id, r);
		assert_null(strchr(r, '\r'));
		assert_null(strchr(r, '\n'));
	}
}

/* Every reply expands to a single printable line with no placeholder left. */
static void
test_every_reply_expands(void **state)
{
	const struct persona *p = persona_default();
	struct persona_vars v = {
		.host = "mail.example.com", .qid = "4F1A2B3C4D5", .addr = "192.0.2.7",
		.arg = "x@example.net", .arglen = 13, .n = 42, .size = 33554432,
	};
	char out[1024];
	int id;
	size_t i, n;

	(void)state;
	for (id = 0; id < PR_COUNT; id++) {
		n = persona_format(out, sizeof(out), p->replies[id], &v);
		assert_int_equal(n, strlen(out));
		if (strchr(out, '{') != NULL)
			fail_msg("reply id %d left a placeholder: %s", id, out);
		for (i = 0; i < n; i++)
			assert_true(out[i] >= 0x20 && out[i] <= 0x7e);
	}
}

/* The texts that matter most are exactly the recorded Postfix ones. */
static void
test_recorded_texts(void **state)
{
	const struct persona *p = persona_find("postfix-3.7");
	struct persona_vars v = { .host = "mail.example.com", .qid = "B87DBA7211C", .n = 20 };
	char out[512];

	(void)state;
	assert_ptr_equal(p, persona_default());
	persona_format(out, sizeof(out), p->replies[PR_BANNER], &v);
	assert_string_equal(out, "220 mail.example.com ESMTP Postfix (Debian/GNU)");
	persona_format(out, sizeof(out), p->replies[PR_TOO_MANY_ERRORS], &v);
	assert_string_equal(out, "421 4.7.0 mail.example.com Error: too many errors");
	persona_format(out, sizeof(out), p->replies[PR_QUEUED], &v);
	assert_string_equal(out, "250 2.0.0 Ok: queued as B87DBA7211C");
	persona_format(out, sizeof(out), p->replies[PR_BDAT_QUEUED], &v);
	assert_string_equal(out, "250 2.0.0 Ok: 20 bytes queued as B87DBA7211C");
	assert_string_equal(p->replies[PR_UNKNOWN], "500 5.5.2 Error: command not recognized");
	assert_string_equal(p->replies[PR_FORBIDDEN],
	    "221 2.7.0 Error: I can break rules, too. Goodbye.");
	assert_string_equal(p->replies[PR_DATA_GO], "354 End data with <CR><LF>.<CR><LF>");
	/* AUTH PLAIN's empty challenge keeps the space after 334. */
	v.arg = "";
	v.arglen = 0;
	persona_format(out, sizeof(out), p->replies[PR_AUTH_CHALLENGE], &v);
	assert_string_equal(out, "334 ");
}

/* The EHLO keywords are Debian Postfix 3.7's, in the recorded order. */
static void
test_ehlo_list(void **state)
{
	static const char *const want[] = {
		"PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS",
		"AUTH PLAIN LOGIN CRAM-MD5", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN",
		"SMTPUTF8", "CHUNKING", NULL
	};
	const struct persona *p = persona_default();
	struct persona_vars v = { .size = 10240000 };
	char out[128];
	int i;

	(void)state;
	for (i = 0; want[i] != NULL; i++) {
		assert_non_null(p->ehlo[i]);
		persona_format(out, sizeof(out), p->ehlo[i], &v);
		assert_string_equal(out, want[i]);
	}
	assert_null(p->ehlo[i]);
	assert_string_equal(p->auth_mechs, "PLAIN LOGIN CRAM-MD5");
}

/* persona_find knows the default and nothing else. */
static void
test_find(void **state)
{
	(void)state;
	assert_non_null(persona_find("postfix-3.7"));
	assert_null(persona_find("postfix"));
	assert_null(persona_find(""));
	assert_null(persona_find(NULL));
	assert_string_equal(persona_default()->name, "postfix-3.7");
}

/* All placeholders expand; unknown ones and lone braces are kept. */
static void
test_placeholders(void **state)
{
	struct persona_vars v = {
		.host = "h.example", .qid = "QID1", .addr = "198.51.100.1",
		.arg = "ARGxyz", .arglen = 3, .n = 0, .size = 18446744073709551615ULL,
	};
	char out[256];
	size_t n;

	(void)state;
	n = persona_format(out, sizeof(out),
	    "{host}|{qid}|{addr}|{arg}|{n}|{size}|{nope}|{|}", &v);
	assert_string_equal(out,
	    "h.example|QID1|198.51.100.1|ARG|0|18446744073709551615|{nope}|{|}");
	assert_int_equal(n, strlen(out));
	/* NULL values and NULL vars expand to nothing. */
	memset(&v, 0, sizeof(v));
	persona_format(out, sizeof(out), "a{host}b{arg}c{n}", &v);
	assert_string_equal(out, "abc0");
	persona_format(out, sizeof(out), "a{host}b", NULL);
	assert_string_equal(out, "ab");
	persona_format(out, sizeof(out), NULL, &v);
	assert_string_equal(out, "");
}

/* Hostile bytes in {arg} become '?', and {arg} is capped at 256 bytes. */
static void
test_arg_sanitised(void **state)
{
	static const char hostile[] = "a\r\nb\0c\x7f\x80\xff\t\x1b[31m d";
	struct persona_vars v = { .arg = hostile, .arglen = sizeof(hostile) - 1 };
	char big[1000], out[2048];
	size_t n;

	(void)state;
	persona_format(out, sizeof(out), "252 2.0.0 {arg}", &v);
	assert_string_equal(out, "252 2.0.0 a??b?c?????[31m d");
	/* Other values are made printable too (a hostname from the config). */
	v.host = "evil\r\n250 injected";
	persona_format(out, sizeof(out), "{host}", &v);
	assert_string_equal(out, "evil??250 injected");

	memset(big, 'A', sizeof(big));
	v.arg = big;
	v.arglen = sizeof(big);
	n = persona_format(out, sizeof(out), "<{arg}>", &v);
	assert_int_equal(n, 256 + 2);
	assert_int_equal(out[0], '<');
	assert_int_equal(out[257], '>');
	assert_int_equal(out[258], '\0');
}

/* Output is truncated at outlen-1 and always NUL-terminated; no overrun. */
static void
test_truncation(void **state)
{
	struct persona_vars v = {
		.host = "mail.example.com", .qid = "ABCDEF", .arg = "xxxxxxxxxxxx", .arglen = 12,
		.n = 1234567890,
	};
	const char *tmpl = "421 4.7.0 {host} {arg} {n} {qid}";
	char full[256], buf[64];
	size_t len, cut, n;

	(void)state;
	len = persona_format(full, sizeof(full), tmpl, &v);
	assert_true(len > 40);
	for (cut = 1; cut <= len + 2 && cut <= sizeof(buf) - 8; cut++) {
		memset(buf, '#', sizeof(buf));
		n = persona_format(buf, cut, tmpl, &v);
		assert_true(n <= cut - 1);
		assert_int_equal(n, strlen(buf));
		assert_int_equal(buf[n], '\0');
		assert_memory_equal(buf, full, n);
		assert_int_equal(n, cut - 1 < len ? cut - 1 : len);
		/* Nothing written past the given size. */
		assert_int_equal(buf[cut], '#');
	}
	/* outlen 0 writes nothing at all. */
	buf[0] = '#';
	assert_int_equal(persona_format(buf, 0, tmpl, &v), 0);
	assert_int_equal(buf[0], '#');
	assert_int_equal(persona_format(NULL, 10, tmpl, &v), 0);
}

/*
 * The banner is the smtpd_banner Debian ships (main.cf.debian, written by
 * the "Internet Site" setup), $myhostname and $mail_name expanded; VRFY is
 * offered because disable_vrfy_command is "no" (postconf -d).
 */
static void
test_debian_stock(void **state)
{
	const struct persona *p = persona_default();
	const char *pfx = "smtpd_banner = ";
	char line[512], want[512], *v, *nl, *mn;
	FILE *f, *pc;
	int found = 0, vrfy = 0, i;

	if ((f = fopen("/usr/share/postfix/main.cf.debian", "r")) == NULL)
		fail_msg("/usr/share/postfix/main.cf.debian: postfix is a test dependency "
		    "(scripts/deps.sh)");
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, pfx, strlen(pfx)) != 0)
			continue;
		v = line + strlen(pfx);
		if ((nl = strchr(v, '\n')) != NULL)
			*nl = '\0';
		/* "$myhostname ESMTP $mail_name (Debian/GNU)" */
		mn = strstr(v, "$mail_name");
		assert_true(strncmp(v, "$myhostname ", 12) == 0 && mn != NULL);
		snprintf(want, sizeof(want), "220 {host} %.*sPostfix%s",
		    (int)(mn - (v + 12)), v + 12, mn + strlen("$mail_name"));
		assert_string_equal(p->replies[PR_BANNER], want);
		found = 1;
	}
	fclose(f);
	assert_true(found);
	pc = popen("PATH=/usr/sbin:/sbin:$PATH postconf -dh disable_vrfy_command 2>&1", "r");
	assert_non_null(pc);
	if (fgets(line, sizeof(line), pc) == NULL)
		line[0] = '\0';
	assert_int_equal(pclose(pc), 0);
	assert_string_equal(line, "no\n");
	for (i = 0; p->ehlo[i] != NULL; i++)
		vrfy |= strcmp(p->ehlo[i], "VRFY") == 0;
	assert_true(vrfy);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_reply_well_formed),
		cmocka_unit_test(test_every_reply_expands),
		cmocka_unit_test(test_recorded_texts),
		cmocka_unit_test(test_ehlo_list),
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_debian_stock),
		cmocka_unit_test(test_placeholders),
		cmocka_unit_test(test_arg_sanitised),
		cmocka_unit_test(test_truncation),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
