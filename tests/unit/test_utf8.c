/* Unit tests for utf8.c: the strict decoder, the encoder, and cutting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "utf8.h"

static void	test_decode_valid(void **);
static void	test_decode_overlong(void **);
static void	test_decode_surrogate(void **);
static void	test_decode_long_forms(void **);
static void	test_decode_truncated(void **);
static void	test_encode(void **);
static void	test_roundtrip(void **);
static void	test_prefix(void **);

/* Decode a C string literal of n bytes; returns the length, cp in *cp. */
static size_t
dec(const char *s, size_t n, uint32_t *cp)
{
	*cp = 0xffffffffu;
	return utf8_decode(s, n, cp);
}

/* Each length's smallest and largest code point decodes. */
static void
test_decode_valid(void **state)
{
	uint32_t cp;

	assert_int_equal(dec("\x00", 1, &cp), 1);
	assert_int_equal(cp, 0);
	assert_int_equal(dec("\x7f", 1, &cp), 1);
	assert_int_equal(cp, 0x7f);
	assert_int_equal(dec("\xc2\x80", 2, &cp), 2);
	assert_int_equal(cp, 0x80);
	assert_int_equal(dec("\xdf\xbf", 2, &cp), 2);
	assert_int_equal(cp, 0x7ff);
	assert_int_equal(dec("\xe0\xa0\x80", 3, &cp), 3);
	assert_int_equal(cp, 0x800);
	assert_int_equal(dec("\xed\x9f\xbf", 3, &cp), 3);	/* U+D7FF */
	assert_int_equal(cp, 0xd7ff);
	assert_int_equal(dec("\xee\x80\x80", 3, &cp), 3);	/* U+E000 */
	assert_int_equal(cp, 0xe000);
	assert_int_equal(dec("\xef\xbf\xbf", 3, &cp), 3);
	assert_int_equal(cp, 0xffff);
	assert_int_equal(dec("\xf0\x90\x80\x80", 4, &cp), 4);
	assert_int_equal(cp, 0x10000);
	assert_int_equal(dec("\xf4\x8f\xbf\xbf", 4, &cp), 4);
	assert_int_equal(cp, 0x10ffff);
	/* Only the first sequence is read. */
	assert_int_equal(dec("\xc3\xa9zz", 4, &cp), 2);
	assert_int_equal(cp, 0xe9);
	assert_true(utf8_valid("", 0));
	assert_true(utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
}

/* Overlong forms of every length are refused. */
static void
test_decode_overlong(void **state)
{
	uint32_t cp;

	assert_int_equal(dec("\xc0\x80", 2, &cp), 0);		/* U+0000 */
	assert_int_equal(dec("\xc1\xbf", 2, &cp), 0);
	assert_int_equal(dec("\xe0\x80\x80", 3, &cp), 0);
	assert_int_equal(dec("\xe0\x9f\xbf", 3, &cp), 0);
	assert_int_equal(dec("\xf0\x80\x80\x80", 4, &cp), 0);
	assert_int_equal(dec("\xf0\x8f\xbf\xbf", 4, &cp), 0);
	assert_false(utf8_valid("a\xc0\xafz", 4));		/* overlong '/' */
}

/* UTF-16 surrogates encoded in UTF-8 (CESU-8, WTF-8) are refused. */
static void
test_decode_surrogate(void **state)
{
	uint32_t cp;

	assert_int_equal(dec("\xed\xa0\x80", 3, &cp), 0);	/* U+D800 */
	assert_int_equal(dec("\xed\xaf\xbf", 3, &cp), 0);	/* U+DBFF */
	assert_int_equal(dec("\xed\xb0\x80", 3, &cp), 0);	/* U+DC00 */
	assert_int_equal(dec("\xed\xbf\xbf", 3, &cp), 0);	/* U+DFFF */
	assert_false(utf8_valid("\xed\xa0\xbd\xed\xb8\x80", 6));	/* a pair */
}

/* Above U+10FFFF, the 5- and 6-byte forms of RFC 2279, and stray bytes. */
static void
test_decode_long_forms(void **state)
{
	uint32_t cp;

	assert_int_equal(dec("\xf4\x90\x80\x80", 4, &cp), 0);	/* U+110000 */
	assert_int_equal(dec("\xf5\x80\x80\x80", 4, &cp), 0);
	assert_int_equal(dec("\xf7\xbf\xbf\xbf", 4, &cp), 0);
	assert_int_equal(dec("\xf8\x88\x80\x80\x80", 5, &cp), 0);
	assert_int_equal(dec("\xfb\xbf\xbf\xbf\xbf", 5, &cp), 0);
	assert_int_equal(dec("\xfc\x84\x80\x80\x80\x80", 6, &cp), 0);
	assert_int_equal(dec("\xfd\xbf\xbf\xbf\xbf\xbf", 6, &cp), 0);
	assert_int_equal(dec("\xfe", 1, &cp), 0);
	assert_int_equal(dec("\xff", 1, &cp), 0);
	assert_int_equal(dec("\x80", 1, &cp), 0);		/* lone continuation */
	assert_int_equal(dec("\xbf", 1, &cp), 0);
	assert_int_equal(cp, 0xffffffffu);	/* untouched on failure */
}

/* A sequence cut short, or broken by a non-continuation byte. */
static void
test_decode_truncated(void **state)
{
	uint32_t cp;

	assert_int_equal(dec("", 0, &cp), 0);
	assert_int_equal(dec("\xc3", 1, &cp), 0);
	assert_int_equal(dec("\xe2\x82", 2, &cp), 0);
	assert_int_equal(dec("\xf0\x9f\x98", 3, &cp), 0);
	/* The bytes are there in memory but not in len. */
	assert_int_equal(dec("\xe2\x82\xac", 2, &cp), 0);
	assert_int_equal(dec("\xc3\x41", 2, &cp), 0);
	assert_int_equal(dec("\xe2\x82\x41", 3, &cp), 0);
	assert_int_equal(dec("\xf0\x9f\x41\x80", 4, &cp), 0);
	assert_int_equal(dec("\xe2\xc3\xa9", 3, &cp), 0);
	assert_false(utf8_valid("abc\xe2\x82", 5));
}

/* Each length's boundaries; surrogates and > U+10FFFF write nothing. */
static void
test_encode(void **state)
{
	unsigned char out[UTF8_MAX + 1];

	memset(out, 0xaa, sizeof(out));
	assert_int_equal(utf8_encode(0x41, out), 1);
	assert_memory_equal(out, "A", 1);
	assert_int_equal(utf8_encode(0x80, out), 2);
	assert_memory_equal(out, "\xc2\x80", 2);
	assert_int_equal(utf8_encode(0x7ff, out), 2);
	assert_memory_equal(out, "\xdf\xbf", 2);
	assert_int_equal(utf8_encode(0x800, out), 3);
	assert_memory_equal(out, "\xe0\xa0\x80", 3);
	assert_int_equal(utf8_encode(0x20ac, out), 3);
	assert_memory_equal(out, "\xe2\x82\xac", 3);
	assert_int_equal(utf8_encode(0xffff, out), 3);
	assert_memory_equal(out, "\xef\xbf\xbf", 3);
	assert_int_equal(utf8_encode(0x10000, out), 4);
	assert_memory_equal(out, "\xf0\x90\x80\x80", 4);
	assert_int_equal(utf8_encode(0x10ffff, out), 4);
	assert_memory_equal(out, "\xf4\x8f\xbf\xbf", 4);
	assert_int_equal(out[4], 0xaa);
	memset(out, 0xaa, sizeof(out));
	assert_int_equal(utf8_encode(0xd800, out), 0);
	assert_int_equal(utf8_encode(0xdfff, out), 0);
	assert_int_equal(utf8_encode(0x110000, out), 0);
	assert_int_equal(utf8_encode(0xffffffffu, out), 0);
	assert_int_equal(out[0], 0xaa);
}

/* Every scalar value encodes to what the decoder reads back. */
static void
test_roundtrip(void **state)
{
	unsigned char out[UTF8_MAX];
	uint32_t cp, back;
	size_t n;

	for (cp = 0; cp <= 0x10ffff; cp++) {
		n = utf8_encode(cp, out);
		if (cp >= 0xd800 && cp <= 0xdfff) {
			assert_int_equal(n, 0);
			continue;
		}
		assert_true(n >= 1 && n <= UTF8_MAX);
		assert_int_equal(utf8_decode(out, n, &back), n);
		assert_int_equal(back, cp);
		assert_true(utf8_valid(out, n));
		/* One byte short is a truncated sequence. */
		if (n > 1)
			assert_int_equal(utf8_decode(out, n - 1, &back), 0);
	}
}

/* Cutting to max bytes backs off to a sequence boundary. */
static void
test_prefix(void **state)
{
	const char *s = "ab\xe2\x82\xac" "cd";	/* a b EURO c d: 7 bytes */

	assert_int_equal(utf8_prefix(s, 7, 10), 7);
	assert_int_equal(utf8_prefix(s, 7, 7), 7);
	assert_int_equal(utf8_prefix(s, 7, 6), 6);
	assert_int_equal(utf8_prefix(s, 7, 5), 5);
	assert_int_equal(utf8_prefix(s, 7, 4), 2);	/* not inside the euro */
	assert_int_equal(utf8_prefix(s, 7, 3), 2);
	assert_true(utf8_valid(s, utf8_prefix(s, 7, 4)));
	/* Below three bytes too: the euro first, then nothing before it. */
	assert_int_equal(utf8_prefix("\xe2\x82\xac", 3, 2), 0);
	assert_int_equal(utf8_prefix("\xe2\x82\xac", 3, 1), 0);
	assert_int_equal(utf8_prefix("\xe2\x82\xac", 3, 0), 0);
	assert_int_equal(utf8_prefix("a\xc3\xa9", 3, 2), 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode_valid),
		cmocka_unit_test(test_decode_overlong),
		cmocka_unit_test(test_decode_surrogate),
		cmocka_unit_test(test_decode_long_forms),
		cmocka_unit_test(test_decode_truncated),
		cmocka_unit_test(test_encode),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_prefix),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
