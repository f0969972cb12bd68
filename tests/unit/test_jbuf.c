/* Unit tests for jbuf.c: the JSON writer (escaping, structure, growth, limits). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jbuf.h"
#include "utf8.h"

static size_t	 json_str_decode(const char *, size_t, unsigned char *, size_t *);
static void	 expect_json(const void *, size_t, const char *);

/*
 * Parse one JSON string literal at s (strict: no raw controls, known escapes
 * only, valid UTF-8) and decode it into out; returns the length of the
 * literal consumed or 0 when it is invalid.
 */
static size_t
json_str_decode(const char *s, size_t len, unsigned char *out, size_t *outlen)
{
	size_t i = 1, o = 0, start;
	unsigned v;

	if (len < 2 || s[0] != '"')
		return 0;
	while (i < len && s[i] != '"') {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20)
			return 0;
		if (c == '\\') {
			if (i + 1 >= len)
				return 0;
			switch (s[i + 1]) {
			case '"': out[o++] = '"'; i += 2; continue;
			case '\\': out[o++] = '\\'; i += 2; continue;
			case '/': out[o++] = '/'; i += 2; continue;
			case 'n': out[o++] = '\n'; i += 2; continue;
			case 'r': out[o++] = '\r'; i += 2; continue;
			case 't': out[o++] = '\t'; i += 2; continue;
			case 'b': out[o++] = '\b'; i += 2; continue;
			case 'f': out[o++] = '\f'; i += 2; continue;
			case 'u':
				if (i + 6 > len || sscanf(s + i + 2, "%4x", &v) != 1)
					return 0;
				for (int k = 2; k < 6; k++)
					if (!isxdigit((unsigned char)s[i + k]))
						return 0;
				/* Only BMP non-surrogates expected from jb_str. */
				if (v >= 0xd800 && v <= 0xdfff)
					return 0;
				if (v < 0x80)
					out[o++] = (unsigned char)v;
				else if (v < 0x800) {
					out[o++] = (unsigned char)(0xc0 | (v >> 6));
					out[o++] = (unsigned char)(0x80 | (v & 0x3f));
				} else {
					out[o++] = (unsigned char)(0xe0 | (v >> 12));
					out[o++] = (unsigned char)(0x80 | ((v >> 6) & 0x3f));
					out[o++] = (unsigned char)(0x80 | (v & 0x3f));
				}
				i += 6;
				continue;
			default:
				return 0;
			}
		}
		start = i;
		while (i < len && s[i] != '"' && s[i] != '\\' &&
		    (unsigned char)s[i] >= 0x20)
			i++;
		if (!utf8_valid(s + start, i - start))
			return 0;
		memcpy(out + o, s + start, i - start);
		o += i - start;
	}
	if (i >= len)
		return 0;
	*outlen = o;
	return i + 1;
}

/* Check that jb_str of the given bytes produces exactly want. */
static void
expect_json(const void *in, size_t len, const char *want)
{
	struct jbuf jb;

	jb_init(&jb);
	jb_str(&jb, in, len);
	assert_false(jb.oom);
	assert_int_equal(jb.len, strlen(want));
	assert_string_equal(jb.buf, want);
	jb_free(&jb);
}

/* jb_str escapes quotes, backslashes, controls, DEL and U+2028/2029. */
static void
test_json_escapes(void **state)
{
	expect_json("plain", 5, "\"plain\"");
	expect_json("q\"b\\", 4, "\"q\\\"b\\\\\"");
	expect_json("\r\n\t\x01\x1f\x7f", 6,
	    "\"\\r\\n\\t\\u0001\\u001f\\u007f\"");
	expect_json("\0", 1, "\"\\u0000\"");
	expect_json("a\xe2\x80\xa8" "b\xe2\x80\xa9", 8, "\"a\\u2028b\\u2029\"");
	/* Valid multibyte sequences pass through. */
	expect_json("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9,
	    "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
}

/*
 * C1 controls and the bidi controls (a terminal or viewer acts on them) are
 * written as \\uXXXX, never raw.
 */
static void
test_json_c1_bidi(void **state)
{
	expect_json("\xc2\x80\xc2\x9b\xc2\x9f\xc2\xa0", 8, "\"\\u0080\\u009b\\u009f\xc2\xa0\"");
	expect_json("\xe2\x80\x8e\xe2\x80\x8f", 6, "\"\\u200e\\u200f\"");
	expect_json("\xe2\x80\xaa\xe2\x80\xae", 6, "\"\\u202a\\u202e\"");
	expect_json("\xe2\x81\xa6\xe2\x81\xa9", 6, "\"\\u2066\\u2069\"");
	expect_json("\xd8\x9c", 2, "\"\\u061c\"");
	/* A raw C1 byte is invalid UTF-8: U+FFFD. */
	expect_json("\x9b", 1, "\"\xef\xbf\xbd\"");
	/* Neighbours stay as they are. */
	expect_json("\xe2\x80\x8d\xe2\x80\xaf", 6, "\"\xe2\x80\x8d\xe2\x80\xaf\"");
}

/* Each byte of an invalid sequence becomes U+FFFD. */
static void
test_json_invalid_utf8(void **state)
{
	/* lone continuation, 0xff */
	expect_json("\x80\xff", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"");
	/* overlong NUL */
	expect_json("\xc0\x80", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"");
	/* overlong 3-byte */
	expect_json("\xe0\x80\xaf", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
	/* surrogate U+D800 */
	expect_json("\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
	/* above U+10FFFF */
	expect_json("\xf4\x90\x80\x80", 4,
	    "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
	/* truncated sequence followed by ASCII */
	expect_json("\xe2\x82" "A", 3, "\"\xef\xbf\xbd\xef\xbf\xbd" "A\"");
	/* truncated at end of input */
	expect_json("x\xf0\x9f\x98", 4, "\"x\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
}

/*
 * For random bytes, jb_str's output is a valid JSON string whose decoded
 * value is the input with each invalid byte replaced by U+FFFD; valid input
 * round-trips exactly.
 */
static void
test_json_random(void **state)
{
	unsigned char in[64], dec[64 * 6], want[64 * 3];
	struct jbuf jb;
	size_t len, dlen, wlen, i, n, used;
	int iter;

	srand(12345);
	jb_init(&jb);
	for (iter = 0; iter < 20000; iter++) {
		len = (size_t)rand() % sizeof(in);
		for (i = 0; i < len; i++) {
			/* Bias towards interesting bytes. */
			switch (rand() % 4) {
			case 0: in[i] = (unsigned char)(rand() % 0x20); break;
			case 1: in[i] = (unsigned char)(0x80 + rand() % 0x80); break;
			case 2: in[i] = (unsigned char)(0xc0 + rand() % 0x40); break;
			default: in[i] = (unsigned char)rand(); break;
			}
		}
		jb_reset(&jb);
		jb_str(&jb, in, len);
		assert_false(jb.oom);
		assert_true(utf8_valid(jb.buf, jb.len));
		used = json_str_decode(jb.buf, jb.len, dec, &dlen);
		assert_int_equal(used, jb.len);
		/* Expected value: maximal valid prefixes copied, else U+FFFD. */
		wlen = 0;
		for (i = 0; i < len; i += n) {
			for (n = 4; n > 0; n--)
				if (i + n <= len && utf8_valid(in + i, n))
					break;
			if (n == 0) {
				memcpy(want + wlen, "\xef\xbf\xbd", 3);
				wlen += 3;
				n = 1;
			} else {
				memcpy(want + wlen, in + i, n);
				wlen += n;
			}
		}
		assert_int_equal(dlen, wlen);
		assert_memory_equal(dec, want, wlen);
		if (utf8_valid(in, len)) {
			assert_int_equal(dlen, len);
			assert_memory_equal(dec, in, len);
		}
	}
	jb_free(&jb);
}

/* Commas and nesting come out right for every value kind. */
static void
test_json_structure(void **state)
{
	struct jbuf jb;

	jb_init(&jb);
	jb_obj_open(&jb);
	jb_kint(&jb, "a", -1);
	jb_key(&jb, "b");
	jb_arr_open(&jb);
	jb_uint(&jb, 18446744073709551615ull);
	jb_cstr(&jb, "x");
	jb_bool(&jb, true);
	jb_null(&jb);
	jb_cstr(&jb, NULL);
	jb_raw(&jb, "{\"r\":1}", 7);
	jb_arr_close(&jb);
	jb_key(&jb, "c");
	jb_obj_open(&jb);
	jb_obj_close(&jb);
	jb_kbool(&jb, "d", false);
	jb_kstr(&jb, "e", "a\"b", 3);
	jb_kcstr(&jb, "f", NULL);
	jb_kuint(&jb, "g", 7);
	jb_key(&jb, "h");
	jb_arr_open(&jb);
	jb_arr_close(&jb);
	jb_obj_close(&jb);
	assert_false(jb.oom);
	assert_string_equal(jb.buf,
	    "{\"a\":-1,\"b\":[18446744073709551615,\"x\",true,null,null,{\"r\":1}],"
	    "\"c\":{},\"d\":false,\"e\":\"a\\\"b\",\"f\":null,\"g\":7,\"h\":[]}");
	assert_int_equal(jb.depth, 0);

	/* Reset reuses the memory and starts afresh. */
	jb_reset(&jb);
	jb_arr_open(&jb);
	jb_int(&jb, 1);
	jb_int(&jb, 2);
	jb_arr_close(&jb);
	assert_string_equal(jb.buf, "[1,2]");
	jb_free(&jb);
	jb_free(NULL);
}

/* The buffer grows for large strings; too deep nesting marks the result unusable. */
static void
test_json_growth_depth(void **state)
{
	struct jbuf jb;
	char *big;
	size_t n = 1 << 20;
	int i;

	big = malloc(n);
	assert_non_null(big);
	memset(big, 'a', n);
	jb_init(&jb);
	jb_str(&jb, big, n);
	assert_false(jb.oom);
	assert_int_equal(jb.len, n + 2);
	assert_int_equal(jb.buf[0], '"');
	assert_int_equal(jb.buf[n + 1], '"');
	free(big);

	jb_reset(&jb);
	for (i = 0; i < 15; i++)
		jb_arr_open(&jb);
	assert_false(jb.oom);
	jb_arr_open(&jb);
	assert_true(jb.oom);
	jb_free(&jb);
}

/* The empty string, and keys: escaped like values (a key is trusted, not blindly). */
static void
test_empty_and_keys(void **state)
{
	struct jbuf jb;

	(void)state;
	expect_json("", 0, "\"\"");
	jb_init(&jb);
	jb_obj_open(&jb);
	jb_kcstr(&jb, "a\"b\\\n", "");
	jb_kstr(&jb, "", "x", 1);
	jb_obj_close(&jb);
	assert_false(jb.oom);
	assert_string_equal(jb.buf, "{\"a\\\"b\\\\\\n\":\"\",\"\":\"x\"}");
	jb_free(&jb);
}

/* Integers at their limits. */
static void
test_integer_limits(void **state)
{
	struct jbuf jb;

	(void)state;
	jb_init(&jb);
	jb_arr_open(&jb);
	jb_int(&jb, LLONG_MIN);
	jb_int(&jb, LLONG_MAX);
	jb_int(&jb, 0);
	jb_uint(&jb, 0);
	jb_arr_close(&jb);
	assert_string_equal(jb.buf,
	    "[-9223372036854775808,9223372036854775807,0,0]");
	jb_free(&jb);
}

/* jb_put appends raw bytes, no comma, no quotes (a line's end); the buffer is a C string after every call. */
static void
test_put_and_nul(void **state)
{
	struct jbuf jb;

	(void)state;
	jb_init(&jb);
	jb_obj_open(&jb);
	assert_int_equal(jb.buf[jb.len], '\0');
	jb_kint(&jb, "a", 1);
	assert_int_equal(jb.buf[jb.len], '\0');
	jb_obj_close(&jb);
	jb_put(&jb, "\n", 1);
	assert_int_equal(jb.len, strlen(jb.buf));
	assert_string_equal(jb.buf, "{\"a\":1}\n");
	jb_free(&jb);
}

/*
 * Once unusable (too deep, or a length that cannot be reserved) the builder
 * writes nothing more and never reads the input; jb_reset() makes it usable
 * again, and a closed-too-often builder stays at depth 0.
 */
static void
test_oom_sticky_and_reset(void **state)
{
	struct jbuf jb;
	size_t len;

	(void)state;
	jb_init(&jb);
	jb_reset(&jb);			/* nothing allocated yet */
	assert_int_equal(jb.len, 0);
	jb_cstr(&jb, "ab");
	/*
	 * A length whose worst-case escaping (6 bytes out per byte in) wraps
	 * to a small reservation: refused before any read.
	 */
	jb_str(&jb, "x", SIZE_MAX / 6 + 1);
	assert_true(jb.oom);
	jb_reset(&jb);
	jb_str(&jb, "x", SIZE_MAX / 2);
	assert_true(jb.oom);
	len = jb.len;
	jb_cstr(&jb, "more");
	jb_int(&jb, 5);
	assert_int_equal(jb.len, len);
	jb_reset(&jb);
	assert_false(jb.oom);
	assert_int_equal(jb.len, 0);
	assert_string_equal(jb.buf, "");
	jb_arr_close(&jb);
	jb_obj_close(&jb);
	assert_int_equal(jb.depth, 0);
	jb_reset(&jb);
	/* Objects count towards the depth limit like arrays. */
	for (int i = 0; i < 15; i++)
		jb_obj_open(&jb);
	assert_false(jb.oom);
	jb_obj_open(&jb);
	assert_true(jb.oom);
	/* jb_free leaves a builder ready for use. */
	jb_free(&jb);
	assert_null(jb.buf);
	jb_cstr(&jb, "again");
	assert_false(jb.oom);
	assert_string_equal(jb.buf, "\"again\"");
	jb_free(&jb);
}

/* Commas after nested containers, at each depth separately. */
static void
test_nested_separators(void **state)
{
	struct jbuf jb;

	(void)state;
	jb_init(&jb);
	jb_arr_open(&jb);
	jb_arr_open(&jb);
	jb_int(&jb, 1);
	jb_arr_close(&jb);
	jb_arr_open(&jb);
	jb_obj_open(&jb);
	jb_obj_close(&jb);
	jb_int(&jb, 2);
	jb_arr_close(&jb);
	jb_obj_open(&jb);
	jb_key(&jb, "k");
	jb_arr_open(&jb);
	jb_arr_close(&jb);
	jb_kint(&jb, "j", 3);
	jb_obj_close(&jb);
	jb_arr_close(&jb);
	assert_false(jb.oom);
	assert_string_equal(jb.buf, "[[1],[{},2],{\"k\":[],\"j\":3}]");
	jb_free(&jb);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_escapes),
		cmocka_unit_test(test_json_c1_bidi),
		cmocka_unit_test(test_json_invalid_utf8),
		cmocka_unit_test(test_json_random),
		cmocka_unit_test(test_json_structure),
		cmocka_unit_test(test_json_growth_depth),
		cmocka_unit_test(test_empty_and_keys),
		cmocka_unit_test(test_integer_limits),
		cmocka_unit_test(test_put_and_nul),
		cmocka_unit_test(test_oom_sticky_and_reset),
		cmocka_unit_test(test_nested_separators),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
