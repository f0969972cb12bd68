/* Unit tests for addr.c: the canonical form of mail addresses. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

/* canonical(in) == want (want NULL: refused), and the result is a fixed point. */
static void
canon_is(const char *in, const char *want)
{
	char out[ADDR_CANON_MAX], again[ADDR_CANON_MAX];
	int rc = addr_canonical(in, out, sizeof(out));

	if (want == NULL) {
		if (rc != -1)
			fail_msg("\"%s\" gave \"%s\", expected a refusal", in, out);
		return;
	}
	if (rc != 0)
		fail_msg("\"%s\" refused, expected \"%s\"", in, want);
	if (strcmp(out, want) != 0)
		fail_msg("\"%s\" gave \"%s\", expected \"%s\"", in, out, want);
	assert_int_equal(addr_canonical(out, again, sizeof(again)), 0);
	assert_string_equal(again, out);
}

/* Every form of the issue, and the usual ones. */
static void
test_forms(void **state)
{
	canon_is("abuse@example.com", "abuse@example.com");
	canon_is("\"abuse\"@example.com", "abuse@example.com");
	canon_is("\"postmaster\"@example.net", "postmaster@example.net");
	canon_is("post\\master@example.net", "postmaster@example.net");
	canon_is("\"post\\master\"@example.net", "postmaster@example.net");
	canon_is("x@SpamHaus.Org.", "x@spamhaus.org");
	canon_is("x@spamhaus.org..", "x@spamhaus.org");
	canon_is("Mixed.Case@Example.COM", "Mixed.Case@example.com");
	canon_is("\"a.b\"@x", "a.b@x");
	canon_is("a.\"b\".c@x", "a.b.c@x");
	canon_is("\"a b\"@x", "\"a b\"@x");
	canon_is("a\\ b@x", "\"a b\"@x");
	canon_is("\"a..b\"@x", "\"a..b\"@x");
	canon_is("\".a\"@x", "\".a\"@x");
	canon_is("\"a\\\"b\"@x", "\"a\\\"b\"@x");
	canon_is("\"a\\\\b\"@x", "\"a\\\\b\"@x");
	canon_is("\"abuse@spamhaus.org\"@evil.example", "\"abuse@spamhaus.org\"@evil.example");
	canon_is("\"\"@x", "\"\"@x");
	canon_is("@x", "\"\"@x");
	canon_is("postmaster", "postmaster");
	canon_is("\"postmaster\"", "postmaster");
	canon_is("a@[1.2.3.4]", "a@[1.2.3.4]");
	canon_is("a@[IPv6:2001:DB8::1]", "a@[ipv6:2001:db8::1]");
	canon_is("a+tag@x.example", "a+tag@x.example");
	canon_is("a@b@c.example", "\"a@b\"@c.example");
}

/* IDN domains in A-label form; UTF-8 local parts kept (SMTPUTF8). */
static void
test_idn_utf8(void **state)
{
	canon_is("a@b\xc3\xbc" "cher.example", "a@xn--bcher-kva.example");
	canon_is("a@B\xc3\x9c" "CHER.example.", "a@xn--bcher-kva.example");
	canon_is("a@xn--BCHER-kva.example", "a@xn--bcher-kva.example");
	/* U+3002 IDEOGRAPHIC FULL STOP separates labels too. */
	canon_is("a@spamhaus\xe3\x80\x82org", "a@spamhaus.org");
	canon_is("\xd0\xb8\xd0\xb2\xd0\xb0\xd0\xbd@example.com",
	    "\xd0\xb8\xd0\xb2\xd0\xb0\xd0\xbd@example.com");
	canon_is("\"\xd0\xb8\xd0\xb2\xd0\xb0\xd0\xbd\"@example.com",
	    "\xd0\xb8\xd0\xb2\xd0\xb0\xd0\xbd@example.com");
	/* Not UTF-8: each bad byte as U+FFFD, like the JSON logs. */
	canon_is("\xe9t\xe9@example.com", "\xef\xbf\xbdt\xef\xbf\xbd@example.com");
	/* A domain that is not UTF-8 or not IDNA cannot be canonical. */
	canon_is("a@\xe9t\xe9.example", NULL);
	/* U+3000 IDEOGRAPHIC SPACE maps to a space without the STD3 rules (fuzz_caps finding). */
	canon_is("@\xe3\x80\x80", NULL);
	{
		/* Refused or mapped (libidn2 versions differ), but never with a space. */
		char out[ADDR_CANON_MAX], again[ADDR_CANON_MAX];
		if (addr_canonical("a@x\xe3\x80\x80y.example", out, sizeof(out)) == 0) {
			assert_null(strchr(out, ' '));
			assert_int_equal(addr_canonical(out, again, sizeof(again)), 0);
			assert_string_equal(out, again);
		}
	}
}

/* Refusals and bounds: control bytes, open quotes, empty domains, overlong input. */
static void
test_bad_and_long(void **state)
{
	char big[ADDR_CANON_MAX + 100], out[ADDR_CANON_MAX], small[8];

	canon_is("", NULL);
	canon_is("a@", NULL);
	canon_is("a@.", NULL);
	canon_is("\"abuse@x", NULL);
	canon_is("a\\", NULL);
	canon_is("a\x01@x", NULL);
	canon_is("a@x\x7f", NULL);
	canon_is("a@x y", NULL);
	canon_is("a@\"x\"", NULL);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(addr_canonical(big, out, sizeof(out)), -1);
	/* The longest path the SMTP side takes, all escapes, fits. */
	for (size_t i = 0; i + 1 < SMTP_PATH_MAX - 2; i += 2)
		memcpy(big + i, "\\\"", 2);
	snprintf(big + SMTP_PATH_MAX - 3, 4, "@x");
	assert_int_equal(addr_canonical(big, out, sizeof(out)), 0);
	/* Too small an output: refused, never overrun. */
	assert_int_equal(addr_canonical("abcdefgh@x", small, sizeof(small)), -1);
	assert_int_equal(addr_canonical("\"a b\"@x", small, 6), -1);
	assert_int_equal(addr_canonical("a@b\xc3\xbc" "cher.example", small, sizeof(small)), -1);
}

/* The counting key lower-cases the local part as well; addr_domain splits outside quotes. */
static void
test_key_domain(void **state)
{
	char out[ADDR_CANON_MAX];

	assert_int_equal(addr_key("\"PostMaster\"@Example.NET.", out, sizeof(out)), 0);
	assert_string_equal(out, "postmaster@example.net");
	assert_string_equal(addr_domain("a@b.example"), "b.example");
	assert_string_equal(addr_domain("\"a@b\"@c.example"), "c.example");
	assert_string_equal(addr_domain("\"a@b\""), "");
	assert_string_equal(addr_domain("postmaster"), "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forms),
		cmocka_unit_test(test_idn_utf8),
		cmocka_unit_test(test_bad_and_long),
		cmocka_unit_test(test_key_domain),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
