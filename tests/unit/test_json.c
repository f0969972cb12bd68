/*
 * Unit tests for json.c, the one strict JSON reader.  Most of them pin the
 * points where the two readers it replaced (relay_json.c, lenient, and the
 * one in hpfeeds_wire.c, strict) disagreed: numbers and literals, escapes,
 * lone surrogates, UTF-8, integers out of range.  A text is valid or not the
 * same way whichever module reads it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "hpfeeds_wire.h"
#include "json.h"
#include "log.h"

static bool	obj1(const char *);
static void	test_numbers(void **);
static void	test_literals(void **);
static void	test_escapes(void **);
static void	test_surrogates(void **);
static void	test_utf8(void **);
static void	test_int(void **);
static void	test_bytes(void **);
static void	test_walk_agrees(void **);
static void	test_roundtrip_jb(void **);
static void	test_payload_verify_surrogate(void **);

/* Whether {"v": value} is accepted, by json_is_object() and the member walk. */
static bool
obj1(const char *value)
{
	char buf[256];
	const char *k, *v;
	size_t pos = 0, kl, vl;
	int n, r;
	bool walk, whole;

	n = snprintf(buf, sizeof(buf), "{\"v\": %s}", value);
	whole = json_is_object(buf, (size_t)n);
	while ((r = json_member(buf, (size_t)n, &pos, &k, &kl, &v, &vl)) == 1)
		;
	walk = r == 0;
	/* The two ways of reading agree. */
	assert_int_equal(whole, walk);
	return whole;
}

/* Numbers follow RFC 8259's grammar (relay_json.c took any [-+.0-9a-zA-Z] run). */
static void
test_numbers(void **state)
{
	static const char *const good[] = {
		"0", "-0", "1", "-1", "10", "1.5", "-0.25", "1e5", "1E+5", "1e-5",
		"123456789012345678901234567890", "0.0e0",
	};
	static const char *const bad[] = {
		"01", "-01", "+1", ".5", "1.", "1.e5", "1e", "1e+", "--1", "-",
		"1.2.3", "0x10", "1a", "Infinity", "NaN", "-Infinity", "1_000",
	};
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(obj1(good[i]));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (obj1(bad[i]))
			fail_msg("number accepted: %s", bad[i]);
	}
}

/* The literals are spelled out, nothing else is a bare word. */
static void
test_literals(void **state)
{
	static const char *const bad[] = {
		"tru", "truex", "nul", "nulll", "False", "TRUE", "none", "t", "n",
		"undefined",
	};
	size_t i;

	assert_true(obj1("true"));
	assert_true(obj1("false"));
	assert_true(obj1("null"));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (obj1(bad[i]))
			fail_msg("literal accepted: %s", bad[i]);
	}
}

/* Only the eight short escapes and \uXXXX (relay_json.c's walk took any). */
static void
test_escapes(void **state)
{
	char out[32];

	assert_true(obj1("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9\""));
	assert_false(obj1("\"\\x41\""));
	assert_false(obj1("\"\\a\""));
	assert_false(obj1("\"\\'\""));
	assert_false(obj1("\"\\u12G4\""));
	assert_false(obj1("\"\\u12\""));
	assert_false(obj1("\"\\\""));
	assert_false(obj1("\"a\tb\""));		/* a raw control byte */
	assert_int_equal(json_str("\"\\x41\"", 6, out, sizeof(out)), -1);
	assert_int_equal(json_str("\"a\\/b\\u00e9\"", 12, out, sizeof(out)), 0);
	assert_string_equal(out, "a/b\xc3\xa9");
}

/*
 * A lone surrogate is refused everywhere: hpfeeds_wire.c's decoder made it
 * U+FFFD while relay_json.c refused it, and both walks accepted the text.
 */
static void
test_surrogates(void **state)
{
	char out[32];
	long n;

	assert_true(obj1("\"\\ud83d\\ude00\""));
	assert_int_equal(json_str("\"\\ud83d\\ude00\"", 14, out, sizeof(out)), 0);
	assert_string_equal(out, "\xf0\x9f\x98\x80");
	assert_int_equal(json_str("\"\\uD83D\\uDE00\"", 14, out, sizeof(out)), 0);
	assert_string_equal(out, "\xf0\x9f\x98\x80");
	assert_false(obj1("\"\\ud800\""));
	assert_false(obj1("\"\\udc00\""));
	assert_false(obj1("\"\\ude00\\ud83d\""));	/* the wrong order */
	assert_false(obj1("\"\\ud800\\u0041\""));
	assert_false(obj1("\"\\ud800x\""));
	assert_false(obj1("\"\\ud800\\ud800\""));
	n = json_bytes("\"\\ud800\"", 8, out, sizeof(out));
	assert_int_equal(n, -1);
	assert_int_equal(json_str("\"\\udfff\"", 8, out, sizeof(out)), -1);
}

/* The text must be UTF-8 (RFC 8259 8.1); relay_json.c did not look. */
static void
test_utf8(void **state)
{
	char out[32];

	assert_true(obj1("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""));
	assert_false(obj1("\"\xff\""));
	assert_false(obj1("\"\xc3\""));			/* truncated */
	assert_false(obj1("\"\xc0\xaf\""));		/* overlong */
	assert_false(obj1("\"\xed\xa0\x80\""));		/* a surrogate in UTF-8 */
	assert_false(obj1("\"\xf8\x88\x80\x80\x80\""));	/* 5-byte form */
	assert_false(obj1("\xc3\xa9"));			/* outside a string */
	assert_int_equal(json_str("\"a\xff\"", 4, out, sizeof(out)), -1);
}

/* Integers: the grammar, and no silent clamping (strtoll clamped to LLONG_MAX). */
static void
test_int(void **state)
{
	long long v;

	assert_int_equal(json_int("0", 1, &v), 0);
	assert_true(v == 0);
	assert_int_equal(json_int("-42", 3, &v), 0);
	assert_true(v == -42);
	assert_int_equal(json_int("9223372036854775807", 19, &v), 0);
	assert_true(v == INT64_MAX);
	assert_int_equal(json_int("-9223372036854775808", 20, &v), 0);
	assert_true(v == INT64_MIN);
	assert_int_equal(json_int("9223372036854775808", 19, &v), -1);
	assert_int_equal(json_int("-9223372036854775809", 20, &v), -1);
	assert_int_equal(json_int("99999999999999999999", 20, &v), -1);
	assert_int_equal(json_int("007", 3, &v), -1);
	assert_int_equal(json_int("1.0", 3, &v), -1);
	assert_int_equal(json_int("1e3", 3, &v), -1);
	assert_int_equal(json_int("+1", 2, &v), -1);
	assert_int_equal(json_int("-", 1, &v), -1);
	assert_int_equal(json_int("", 0, &v), -1);
	assert_int_equal(json_int(" 1", 2, &v), -1);
	assert_int_equal(json_int("\"1\"", 3, &v), -1);
}

/* json_bytes keeps NUL bytes (a mail's \u0000), json_str refuses them. */
static void
test_bytes(void **state)
{
	char out[16];
	long n;

	n = json_bytes("\"a\\u0000b\"", 10, out, sizeof(out));
	assert_int_equal(n, 3);
	assert_memory_equal(out, "a\0b", 3);
	assert_int_equal(json_str("\"a\\u0000b\"", 10, out, sizeof(out)), -1);
	/* Too small an output is an error, never a cut. */
	assert_int_equal(json_bytes("\"abcdef\"", 8, out, 5), -1);
	assert_int_equal(json_bytes("\"abcdef\"", 8, out, 6), 6);
	assert_int_equal(json_str("\"abcdef\"", 8, out, 6), -1);
	assert_int_equal(json_str("\"abcdef\"", 8, out, 7), 0);
	assert_int_equal(json_bytes("abc", 3, out, sizeof(out)), -1);
	assert_int_equal(json_bytes("\"", 1, out, sizeof(out)), -1);
}

/* json_get and json_index read what the walk reads, nested too. */
static void
test_walk_agrees(void **state)
{
	const char *j = "{\"a\": [1, {\"b\": \"x\"}, null], \"c\": true}";
	const char *v, *e;
	size_t vl, el;
	char out[8];

	assert_int_equal(json_get(j, strlen(j), "a", &v, &vl), 0);
	assert_int_equal(json_index(v, vl, 1, &e, &el), 0);
	assert_int_equal(json_get_str(e, el, "b", out, sizeof(out)), 0);
	assert_string_equal(out, "x");
	assert_int_equal(json_index(v, vl, 2, &e, &el), 0);
	assert_true(json_is_null(e, el));
	assert_int_equal(json_index(v, vl, 3, &e, &el), -1);
	/* A member after a bad value is not found: the walk stops there. */
	assert_int_equal(json_get("{\"a\": 01, \"c\": 1}", 17, "c", &v, &vl), -1);
	assert_int_equal(json_get("{\"a\": tru, \"c\": 1}", 18, "c", &v, &vl), -1);
}

/* Whatever bytes jb_str() writes, the reader reads back exactly (or U+FFFD). */
static void
test_roundtrip_jb(void **state)
{
	static const char in[] = "a\"b\\c\n\r\t\x01\x7f\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80";
	struct jbuf jb;
	char out[128];
	long n;

	jb_init(&jb);
	jb_str(&jb, in, sizeof(in) - 1);
	assert_false(jb.oom);
	n = json_bytes(jb.buf, jb.len, out, sizeof(out));
	assert_int_equal(n, sizeof(in) - 1);
	assert_memory_equal(out, in, sizeof(in) - 1);
	jb_reset(&jb);
	jb_str(&jb, "\xff", 1);
	n = json_bytes(jb.buf, jb.len, out, sizeof(out));
	assert_int_equal(n, 3);
	assert_memory_equal(out, "\xef\xbf\xbd", 3);
	jb_free(&jb);
}

/*
 * A payload whose msg holds a lone surrogate is not JSON this reader takes:
 * hpf_payload_verify() says -1 (not a payload), where it decoded U+FFFD before.
 */
static void
test_payload_verify_surrogate(void **state)
{
	static const char p[] = "{\"sha256\":\""
	    "0000000000000000000000000000000000000000000000000000000000000000"
	    "\",\"msg\":\"\\ud800\"}";

	assert_int_equal(hpf_payload_verify(p, sizeof(p) - 1), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_literals),
		cmocka_unit_test(test_escapes),
		cmocka_unit_test(test_surrogates),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_int),
		cmocka_unit_test(test_bytes),
		cmocka_unit_test(test_walk_agrees),
		cmocka_unit_test(test_roundtrip_jb),
		cmocka_unit_test(test_payload_verify_surrogate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
