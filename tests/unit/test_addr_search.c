/*
 * Unit tests for addr_search.c: the set of own addresses, each spelling the
 * search finds (and the look-alikes it must not), the body reading that skips
 * trace fields, the hit text and the bound on what is searched.  The rules'
 * mentions_own_address matcher over whole messages is tested in test_rules.c.
 */
#include <sys/socket.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "addr_search.h"
#include "util.h"

static void	 set1(struct addr_search *, const char *);
static bool	 found(const char *own, const char *text, bool b64, const char *what);

/* A set of one address. */
static void
set1(struct addr_search *e, const char *own)
{
	memset(e, 0, sizeof(*e));
	addr_search_add(e, own);
	assert_int_equal(e->nown, 1);
}

/*
 * Whether text names own (addr_search_text); with a hit and what not NULL,
 * the hit's text must be what.
 */
static bool
found(const char *own, const char *text, bool b64, const char *what)
{
	struct addr_search e;
	struct addr_hit h;

	set1(&e, own);
	memset(&h, 0, sizeof(h));
	if (!addr_search_text(&e, text, strlen(text), b64, &h))
		return false;
	assert_int_equal(h.whatlen, strlen(h.what));
	if (what != NULL && strcmp(h.what, what) != 0)
		fail_msg("\"%s\" in \"%s\": hit \"%s\", expected \"%s\"", own, text,
		    h.what, what);
	return true;
}

/* Parsing: IPv4, IPv6, "[v6]", v4-mapped as IPv4; nothing else. */
static void
test_parse(void **state)
{
	static const char *const bad[] = {
		"", "1.2.3", "1.2.3.4.5", "1.2.3.256", " 1.2.3.4", "1.2.3.4 ",
		"01.2.3.4", "0x1.2.3.4", "[]", "[", "example.com", "::g",
		"1234:5678:9abc:def0:1234:5678:9abc:def0:1",
		"[0000:0000:0000:0000:0000:ffff:255.255.255.255]x",
	};
	struct addr_bin a;

	(void)state;
	assert_int_equal(addr_search_parse("192.0.2.1", &a), 0);
	assert_int_equal(a.af, AF_INET);
	assert_memory_equal(a.a, "\xc0\x00\x02\x01", 4);
	assert_int_equal(addr_search_parse("[2001:db8::1]", &a), 0);
	assert_int_equal(a.af, AF_INET6);
	assert_memory_equal(a.a, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
	assert_int_equal(addr_search_parse("::ffff:192.0.2.1", &a), 0);
	assert_int_equal(a.af, AF_INET);
	assert_memory_equal(a.a, "\xc0\x00\x02\x01\0\0\0\0\0\0\0\0\0\0\0\0", 16);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (addr_search_parse(bad[i], &a) != -1)
			fail_msg("\"%s\" parsed", bad[i]);
	assert_int_equal(addr_search_parse(NULL, &a), -1);
}

/* The set: duplicates (a v4-mapped one too) and garbage skipped, at most ADDR_SEARCH_MAX kept. */
static void
test_set(void **state)
{
	struct addr_search e;
	char s[32];

	(void)state;
	memset(&e, 0, sizeof(e));
	addr_search_add(&e, "1.2.3.4");
	addr_search_add(&e, "1.2.3.4");
	addr_search_add(&e, "::ffff:1.2.3.4");
	addr_search_add(&e, "garbage");
	addr_search_add(&e, NULL);
	assert_int_equal(e.nown, 1);
	assert_int_equal(e.nown4, 1);
	assert_false(e.own_v6);
	assert_true(e.own4[0] == 0x01020304u);
	addr_search_add(&e, "2001:db8::1");
	addr_search_add(&e, "[2001:db8:0::1]");
	assert_int_equal(e.nown, 2);
	assert_int_equal(e.nown4, 1);
	assert_true(e.own_v6);
	for (int i = 0; i < 2 * ADDR_SEARCH_MAX; i++) {
		snprintf(s, sizeof(s), "10.0.%d.%d", i / 256, i % 256);
		addr_search_add(&e, s);
	}
	assert_int_equal(e.nown, ADDR_SEARCH_MAX);
	assert_int_equal(e.nown4, ADDR_SEARCH_MAX - 1);
	/* The last one kept is found, the first one dropped is not. */
	snprintf(s, sizeof(s), "x 10.0.0.%d y", ADDR_SEARCH_MAX - 3);
	assert_true(addr_search_text(&e, s, strlen(s), false, &(struct addr_hit){ 0 }));
	snprintf(s, sizeof(s), "x 10.0.0.%d y", ADDR_SEARCH_MAX - 2);
	assert_false(addr_search_text(&e, s, strlen(s), false, &(struct addr_hit){ 0 }));
	/* An empty set finds nothing. */
	memset(&e, 0, sizeof(e));
	assert_false(addr_search_text(&e, "1.2.3.4", 7, true, &(struct addr_hit){ 0 }));
}

/* The IPv4 spellings, as whole tokens; the hit is the token with its ":port". */
static void
test_v4_forms(void **state)
{
	(void)state;
	assert_true(found("1.2.3.4", "relayed by 1.2.3.4.", false, NULL));
	assert_true(found("1.2.3.4", "relayed by 1.2.3.4 now", false, "1.2.3.4"));
	assert_true(found("1.2.3.4", "relay 1.2.3.4:25 ok", false, "1.2.3.4:25"));
	assert_true(found("1.2.3.4", "1.2.3.4:", false, "1.2.3.4"));
	assert_true(found("1.2.3.4", "(0x01.0x02.0x03.0x04)", false, "0x01.0x02.0x03.0x04"));
	assert_true(found("1.2.3.4", "ip 16909060 end", false, "16909060"));
	assert_true(found("1.2.3.4", "ip 0x01020304 end", false, "0x01020304"));
	assert_true(found("1.2.3.4", "1.2.3.4", false, "1.2.3.4"));
	/* Look-alikes. */
	assert_false(found("1.2.3.4", "11.2.3.4", false, NULL));
	assert_false(found("1.2.3.4", "1.2.3.45", false, NULL));
	assert_false(found("1.2.3.4", "v1.2.3.4", false, NULL));
	assert_false(found("1.2.3.4", "1.2.3.4.5", false, NULL));
	assert_false(found("1.2.3.4", "1.2.3.4x", false, NULL));
	assert_false(found("1.2.3.4", "0x1.2.3.4a", false, NULL));
	assert_false(found("1.2.3.4", "01.02.003.0004", false, NULL));
	/* The integer form glued to a joiner is a number in a URL, not an address. */
	assert_false(found("1.2.3.4", "?t=16909060", false, NULL));
	assert_false(found("1.2.3.4", "/16909060/", false, NULL));
	assert_false(found("1.2.3.4", "id-16909060", false, NULL));
	assert_true(found("1.2.3.4", "t 16909060.", false, NULL));
	/* Other addresses of the text do not stop the search. */
	assert_true(found("1.2.3.4", "5.6.7.8 and 1.2.3.4", false, "1.2.3.4"));
}

/* Eight hex digits of one case, a whole token; without a letter only with a port. */
static void
test_hex8(void **state)
{
	const char *own = "217.128.138.253";	/* D9808AFD */

	(void)state;
	assert_true(found(own, "at D9808AFD:8080 now", false, "D9808AFD:8080"));
	assert_true(found(own, "id d9808afd.", false, "d9808afd"));
	assert_true(found(own, "D9808AFD", false, "D9808AFD"));
	assert_true(found(own, "at 1D9808AFD:8080:6 o'clock", false, "1D9808AFD:8080:6"));
	assert_false(found(own, "1D9808AFD", false, NULL));
	assert_false(found(own, "d9808AFD", false, NULL));
	assert_false(found(own, "xD9808AFD", false, NULL));
	assert_false(found(own, "D9808AFD1", false, NULL));
	assert_false(found(own, "#D9808AFD", false, NULL));
	assert_false(found(own, "D9808AFD-1234", false, NULL));
	assert_false(found(own, "D9808AFD:123456", false, NULL));
	/* 18.52.86.120 is 12345678: a number, unless a port says otherwise. */
	assert_false(found("18.52.86.120", "order 12345678 shipped", false, NULL));
	assert_true(found("18.52.86.120", "12345678:25", false, "12345678:25"));
}

/* IPv6 in any spelling inet_pton reads, not glued to a word. */
static void
test_v6(void **state)
{
	(void)state;
	assert_true(found("2001:db8::1", "via 2001:db8::1 ok", false, "2001:db8::1"));
	assert_true(found("2001:db8::1", "[2001:DB8:0:0::0001]", false, "2001:DB8:0:0::0001"));
	assert_false(found("2001:db8::1", "2001:db8::10", false, NULL));
	assert_false(found("2001:db8::1", "x2001:db8::1", false, NULL));
	assert_false(found("2001:db8::1", "2001:db8::1g", false, NULL));
	assert_false(found("2001:db8::1", "1.2.3.4", false, NULL));
	/* An IPv4 own address is not looked for in IPv6 runs. */
	assert_false(found("1.2.3.4", "::ffff:1.2.3.4x", false, NULL));
}

/* Base64 at each alignment, only when asked; the hit shows the encoded text and what it says. */
static void
test_base64(void **state)
{
	char enc[256], text[300], want[300];
	struct addr_search e;
	struct addr_hit h;
	const char *prefix[] = { "", "x", "xy" };

	(void)state;
	for (size_t i = 0; i < 3; i++) {
		char plain[64];

		snprintf(plain, sizeof(plain), "%stest from 1.2.3.4 ok", prefix[i]);
		util_b64_encode(plain, strlen(plain), enc);
		snprintf(text, sizeof(text), "Subject: %s\r\n", enc);
		assert_false(found("1.2.3.4", text, false, NULL));
		snprintf(want, sizeof(want), "%s (base64: 1.2.3.4)", enc);
		assert_true(found("1.2.3.4", text, true, want));
	}
	/* A long run: the hit text stays within its bound, a C string. */
	{
		char plain[600], big[900];

		memset(plain, 'a', sizeof(plain));
		memcpy(plain + 300, " 1.2.3.4 ", 9);
		util_b64_encode(plain, sizeof(plain), big);
		set1(&e, "1.2.3.4");
		assert_true(addr_search_text(&e, big, strlen(big), true, &h));
		assert_true(h.whatlen <= ADDR_SEARCH_WHAT_MAX);
		assert_int_equal(strlen(h.what), h.whatlen);
		assert_non_null(strstr(h.what, "(base64: 1.2.3.4)"));
	}
}

/* Only the first ADDR_SEARCH_SCAN_MAX (1 MiB) of a text is searched. */
static void
test_scan_bound(void **state)
{
	const size_t mib = 1024 * 1024;
	struct addr_search e;
	struct addr_hit h;
	char *s;

	(void)state;
	s = malloc(mib + 64);
	assert_non_null(s);
	memset(s, ' ', mib + 64);
	set1(&e, "1.2.3.4");
	memcpy(s + mib - 9, "1.2.3.4", 7);
	assert_true(addr_search_text(&e, s, mib + 64, false, &h));
	assert_true(addr_search_lines(&e, s, mib + 64, false, &h));
	memset(s, ' ', mib + 64);
	memcpy(s + mib + 8, "1.2.3.4", 7);
	assert_false(addr_search_text(&e, s, mib + 64, false, &h));
	assert_false(addr_search_lines(&e, s, mib + 64, false, &h));
	/* n bytes exactly: what follows is not read. */
	assert_false(addr_search_text(&e, "1.2.3.45", 7 - 1, false, &h));
	free(s);
}

/* A body's trace fields (copied, quoted, folded) are skipped; the rest is searched. */
static void
test_lines(void **state)
{
	static const struct {
		const char	*text;
		bool		 hit;
	} cases[] = {
		{ "hello 1.2.3.4\r\n", true },
		{ "Received: from [1.2.3.4]\r\nhello\r\n", false },
		{ "Received : from [1.2.3.4]\r\nhello\r\n", false },
		{ "received: from [1.2.3.4]\r\n", false },
		{ "Received: from x\r\n\tby 1.2.3.4\r\nhello\r\n", false },
		{ "Received: from x\r\nby 1.2.3.4\r\n", true },
		{ "> Received: from [1.2.3.4]\r\n> hello\r\n", false },
		{ "> > X-Originating-IP: [1.2.3.4]\r\n", false },
		{ "> Subject: 1.2.3.4\r\n", true },
		{ "Message-ID: <1.2.3.4@x>\r\nSubject: test\r\n\r\nsent via 1.2.3.4\r\n", true },
		{ "Message-ID: <1.2.3.4@x>\r\n", false },
		{ "  Received: from [1.2.3.4]\r\n", false },
		/* Folded: deeper than the field's own indentation. */
		{ "  Received: x\r\n    1.2.3.4\r\n", false },
		{ "  Received: x\r\n  1.2.3.4\r\n", true },
		/* A fold has the field's quote marks: an unquoted line after a quoted field is text. */
		{ "> Received: x\r\n    1.2.3.4\r\n", true },
		{ "Received: x\r\n> 1.2.3.4\r\n", true },
		{ "no newline at the end 1.2.3.4", true },
	};
	struct addr_search e;
	struct addr_hit h;

	(void)state;
	set1(&e, "1.2.3.4");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (addr_search_lines(&e, cases[i].text, strlen(cases[i].text), false, &h) !=
		    cases[i].hit)
			fail_msg("case %zu \"%s\": expected %s", i, cases[i].text,
			    cases[i].hit ? "a hit" : "none");
	/* addr_search_text reads no lines: a trace field there counts. */
	assert_true(addr_search_text(&e, cases[1].text, strlen(cases[1].text), false, &h));
}

/* Field names: case-insensitive, exact or a prefix; the trace list. */
static void
test_field_names(void **state)
{
	static const char *const trace[] = {
		"Received", "received", "RETURN-PATH", "Resent-From", "X-Originating-IP",
		"ARC-Seal", "DKIM-Signature", "Message-ID", "References", "X-Spam-Status",
		"Authentication-Results", "X-Forwarded-For",
	};
	static const char *const other[] = {
		"Subject", "From", "To", "X-Mailer", "Received-By-Me", "Resent",
		"X-Spam", "DKIM", "X-Originating", "",
	};

	(void)state;
	assert_true(addr_search_name_match("X-Spam-", 7, true, "x-spam-status"));
	assert_true(addr_search_name_match("X-Spam-", 7, true, "X-Spam-"));
	assert_false(addr_search_name_match("X-Spam-", 7, true, "X-Spam"));
	assert_true(addr_search_name_match("Subject", 7, false, "SUBJECT"));
	assert_false(addr_search_name_match("Subject", 7, false, "Subjects"));
	assert_false(addr_search_name_match("Subject", 7, false, "Subjec"));
	for (size_t i = 0; i < sizeof(trace) / sizeof(trace[0]); i++)
		if (!addr_search_trace_field(trace[i]))
			fail_msg("%s: not a trace field", trace[i]);
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
		if (addr_search_trace_field(other[i]))
			fail_msg("%s: a trace field", other[i]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_set),
		cmocka_unit_test(test_v4_forms),
		cmocka_unit_test(test_hex8),
		cmocka_unit_test(test_v6),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_scan_bound),
		cmocka_unit_test(test_lines),
		cmocka_unit_test(test_field_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
