/*
 * json.h through its public calls only: the reader of the reception
 * records and the caps journal (files this daemon wrote, read as untrusted).
 * Kept small on purpose: the JSON reader is to become one module (issue 12),
 * and these cases should move with it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"

#define S(lit)	lit, sizeof(lit) - 1

/* Exactly one object, whitespace around allowed; anything else is not. */
static void
test_is_object(void **state)
{
	static const char *const bad[] = {
		"", "{", "}", "[1]", "\"a\"", "{\"a\":}", "{\"a\" 1}", "{\"a\":1,}",
		"{\"a\":1}x", "{\"a\":1}{}", "{a:1}", "{\"a\":\"x}", "{\"a\":[1,2}",
	};
	char deep[200];
	size_t i;

	assert_true(json_is_object(S("{}")));
	assert_true(json_is_object(S(" {\"a\":1} \n")));
	assert_true(json_is_object(S("{\"a\":{\"b\":[1,\"}\",null]},\"c\":true}")));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (json_is_object(bad[i], strlen(bad[i])))
			fail_msg("accepted '%s'", bad[i]);
	/* Nesting is capped: 90 levels of arrays are refused, not recursed into. */
	memcpy(deep, "{\"a\":", 5);
	memset(deep + 5, '[', 90);
	memset(deep + 95, ']', 90);
	memcpy(deep + 185, "}", 2);
	assert_false(json_is_object(deep, strlen(deep)));
	/* ... and 20 levels are read. */
	memmove(deep + 25, deep + 95, 20);
	memcpy(deep + 45, "}", 2);
	assert_true(json_is_object(deep, strlen(deep)));
}

/* get finds a top-level member only and gives its raw value text. */
static void
test_get(void **state)
{
	const char obj[] = "{\"n\":{\"x\":1},\"x\" : \"v\\\"w\" ,\"a\":[1,2]}";
	const char *v;
	size_t vl;

	assert_int_equal(json_get(S(obj), "x", &v, &vl), 0);
	assert_int_equal(vl, 6);
	assert_memory_equal(v, "\"v\\\"w\"", 6);
	assert_int_equal(json_get(S(obj), "a", &v, &vl), 0);
	assert_memory_equal(v, "[1,2]", vl);
	assert_int_equal(json_get(S(obj), "n", &v, &vl), 0);
	assert_memory_equal(v, "{\"x\":1}", vl);
	assert_int_equal(json_get(S(obj), "y", &v, &vl), -1);
	/* get does not check the rest of the object (callers ask is_object
	 * first): a member before a tear is found, one at the tear is not. */
	assert_int_equal(json_get(S("{\"x\":1,\"y\""), "x", &v, &vl), 0);
	assert_int_equal(json_get(S("{\"x\":1,\"y\""), "y", &v, &vl), -1);
	assert_int_equal(json_get(S("{\"x\":1,\"y\":"), "y", &v, &vl), -1);
	assert_int_equal(json_get(S("[\"x\",1]"), "x", &v, &vl), -1);
}

/* Strings: escapes and \u (surrogate pairs too) decoded to UTF-8; bad ones refused. */
static void
test_str(void **state)
{
	char out[32];

	assert_int_equal(json_str(S("\"a\\\"b\\\\c\\/d\\n\\t\""), out, sizeof(out)), 0);
	assert_string_equal(out, "a\"b\\c/d\n\t");
	assert_int_equal(json_str(S("\"\\u00e9\\u20ac\\ud83d\\ude00\""), out, sizeof(out)), 0);
	assert_string_equal(out, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	assert_int_equal(json_str(S("\"\""), out, sizeof(out)), 0);
	assert_string_equal(out, "");
	/* A NUL cannot be returned in a C string; lone surrogates are not characters. */
	assert_int_equal(json_str(S("\"a\\u0000b\""), out, sizeof(out)), -1);
	assert_int_equal(json_str(S("\"\\ude00\""), out, sizeof(out)), -1);
	assert_int_equal(json_str(S("\"\\ud83d\""), out, sizeof(out)), -1);
	assert_int_equal(json_str(S("\"\\x\""), out, sizeof(out)), -1);
	assert_int_equal(json_str(S("\"abc"), out, sizeof(out)), -1);
	assert_int_equal(json_str(S("abc"), out, sizeof(out)), -1);
	/* Room for the text and its NUL, or -1 (never truncated). */
	assert_int_equal(json_str(S("\"abcd\""), out, 5), 0);
	assert_int_equal(json_str(S("\"abcde\""), out, 5), -1);
	assert_int_equal(json_str(S("\"\\u00e9\""), out, 2), -1);
}

/* Integers, booleans and null are told apart from look-alikes. */
static void
test_scalars(void **state)
{
	long long n;
	bool b;

	assert_int_equal(json_int(S("42"), &n), 0);
	assert_int_equal(n, 42);
	assert_int_equal(json_int(S("-9007199254740993"), &n), 0);
	assert_true(n == -9007199254740993LL);
	assert_int_equal(json_int(S("4x"), &n), -1);
	assert_int_equal(json_int(S("\"4\""), &n), -1);
	assert_int_equal(json_int(S(""), &n), -1);
	assert_int_equal(json_int(S("true"), &n), -1);
	assert_int_equal(json_bool(S("true"), &b), 0);
	assert_true(b);
	assert_int_equal(json_bool(S("false"), &b), 0);
	assert_false(b);
	assert_int_equal(json_bool(S("tru"), &b), -1);
	assert_int_equal(json_bool(S("1"), &b), -1);
	assert_true(json_is_null(S("null")));
	assert_false(json_is_null(S("nul")));
	assert_false(json_is_null(S("\"null\"")));
}

/* Arrays by index and by walk; objects by walk, in order. */
static void
test_walk(void **state)
{
	const char arr[] = "[1, \"a,b\" ,[2,3],{\"k\":[]}]";
	const char obj[] = "{\"a\":1,\"b\":\"x\",\"c\":[true]}";
	const char *want_arr[] = { "1", "\"a,b\"", "[2,3]", "{\"k\":[]}" };
	const char *want_key[] = { "a", "b", "c" };
	const char *want_val[] = { "1", "\"x\"", "[true]" };
	const char *e, *k, *v;
	size_t el, kl, vl, pos;
	int i, r;

	for (i = 0; i < 4; i++) {
		assert_int_equal(json_index(S(arr), i, &e, &el), 0);
		assert_int_equal(el, strlen(want_arr[i]));
		assert_memory_equal(e, want_arr[i], el);
	}
	assert_int_equal(json_index(S(arr), 4, &e, &el), -1);
	assert_int_equal(json_index(S("[]"), 0, &e, &el), -1);

	pos = 0;
	for (i = 0; (r = json_element(S(arr), &pos, &e, &el)) == 1; i++) {
		assert_true(i < 4);
		assert_memory_equal(e, want_arr[i], el);
	}
	assert_int_equal(r, 0);
	assert_int_equal(i, 4);

	pos = 0;
	for (i = 0; (r = json_member(S(obj), &pos, &k, &kl, &v, &vl)) == 1; i++) {
		assert_true(i < 3);
		assert_int_equal(kl, strlen(want_key[i]));
		assert_memory_equal(k, want_key[i], kl);
		assert_int_equal(vl, strlen(want_val[i]));
		assert_memory_equal(v, want_val[i], vl);
	}
	assert_int_equal(r, 0);
	assert_int_equal(i, 3);

	/* A torn line: the members before the tear, then -1. */
	pos = 0;
	assert_int_equal(json_member(S("{\"a\":1,\"b\":"), &pos, &k, &kl, &v, &vl), 1);
	assert_int_equal(json_member(S("{\"a\":1,\"b\":"), &pos, &k, &kl, &v, &vl), -1);
	pos = 0;
	assert_int_equal(json_element(S("[1,"), &pos, &e, &el), 1);
	assert_int_equal(json_element(S("[1,"), &pos, &e, &el), -1);
}

/* get_str: find and decode in one call; a non-string value is -1. */
static void
test_get_str(void **state)
{
	const char obj[] = "{\"sha256\":\"ab\\u0063\",\"size\":60}";
	char out[16];

	assert_int_equal(json_get_str(S(obj), "sha256", out, sizeof(out)), 0);
	assert_string_equal(out, "abc");
	assert_int_equal(json_get_str(S(obj), "size", out, sizeof(out)), -1);
	assert_int_equal(json_get_str(S(obj), "none", out, sizeof(out)), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_is_object),
		cmocka_unit_test(test_get),
		cmocka_unit_test(test_str),
		cmocka_unit_test(test_scalars),
		cmocka_unit_test(test_walk),
		cmocka_unit_test(test_get_str),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
