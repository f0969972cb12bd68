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

/* Bytes to decode: a literal's, or fewer (n) when the cut is the point. */
struct seq {
	const char	*s;
	size_t		 n;
};
#define SEQ(lit)	{ lit, sizeof(lit) - 1 }
#define NITEMS(v)	(sizeof(v) / sizeof((v)[0]))

/* Every sequence of v is refused: nothing read, *cp untouched. */
static void
refused(const struct seq *v, size_t nv)
{
	uint32_t cp;
	size_t i;

	for (i = 0; i < nv; i++)
		if (dec(v[i].s, v[i].n, &cp) != 0 || cp != 0xffffffffu)
			fail_msg("sequence %zu (%zu bytes) was read", i, v[i].n);
}

/* Each length's smallest and largest code point decodes. */
static void
test_decode_valid(void **state)
{
	static const struct {
		struct seq	 in;
		size_t		 len;
		uint32_t	 cp;
	} v[] = {
		{ SEQ("\x00"), 1, 0 },
		{ SEQ("\x7f"), 1, 0x7f },
		{ SEQ("\xc2\x80"), 2, 0x80 },
		{ SEQ("\xdf\xbf"), 2, 0x7ff },
		{ SEQ("\xe0\xa0\x80"), 3, 0x800 },
		{ SEQ("\xed\x9f\xbf"), 3, 0xd7ff },
		{ SEQ("\xee\x80\x80"), 3, 0xe000 },
		{ SEQ("\xef\xbf\xbf"), 3, 0xffff },
		{ SEQ("\xf0\x90\x80\x80"), 4, 0x10000 },
		{ SEQ("\xf4\x8f\xbf\xbf"), 4, 0x10ffff },
		{ SEQ("\xc3\xa9zz"), 2, 0xe9 },	/* only the first is read */
	};
	uint32_t cp;
	size_t i;

	for (i = 0; i < NITEMS(v); i++) {
		assert_int_equal(dec(v[i].in.s, v[i].in.n, &cp), v[i].len);
		assert_int_equal(cp, v[i].cp);
	}
	assert_true(utf8_valid("", 0));
	assert_true(utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
}

/* Overlong forms of every length are refused. */
static void
test_decode_overlong(void **state)
{
	static const struct seq v[] = {
		SEQ("\xc0\x80"),		/* U+0000 */
		SEQ("\xc1\xbf"),
		SEQ("\xe0\x80\x80"),
		SEQ("\xe0\x9f\xbf"),
		SEQ("\xf0\x80\x80\x80"),
		SEQ("\xf0\x8f\xbf\xbf"),
	};

	refused(v, NITEMS(v));
	assert_false(utf8_valid("a\xc0\xafz", 4));		/* overlong '/' */
}

/* UTF-16 surrogates encoded in UTF-8 (CESU-8, WTF-8) are refused. */
static void
test_decode_surrogate(void **state)
{
	static const struct seq v[] = {
		SEQ("\xed\xa0\x80"),	/* U+D800 */
		SEQ("\xed\xaf\xbf"),	/* U+DBFF */
		SEQ("\xed\xb0\x80"),	/* U+DC00 */
		SEQ("\xed\xbf\xbf"),	/* U+DFFF */
	};

	refused(v, NITEMS(v));
	assert_false(utf8_valid("\xed\xa0\xbd\xed\xb8\x80", 6));	/* a pair */
}

/* Above U+10FFFF, the 5- and 6-byte forms of RFC 2279, and stray bytes. */
static void
test_decode_long_forms(void **state)
{
	static const struct seq v[] = {
		SEQ("\xf4\x90\x80\x80"),	/* U+110000 */
		SEQ("\xf5\x80\x80\x80"),
		SEQ("\xf7\xbf\xbf\xbf"),
		SEQ("\xf8\x88\x80\x80\x80"),
		SEQ("\xfb\xbf\xbf\xbf\xbf"),
		SEQ("\xfc\x84\x80\x80\x80\x80"),
		SEQ("\xfd\xbf\xbf\xbf\xbf\xbf"),
		SEQ("\xfe"),
		SEQ("\xff"),
		SEQ("\x80"),			/* lone continuation */
		SEQ("\xbf"),
	};

	refused(v, NITEMS(v));
}

/* A sequence cut short, or broken by a non-continuation byte. */
static void
test_decode_truncated(void **state)
{
	static const struct seq v[] = {
		SEQ(""),
		SEQ("\xc3"),
		SEQ("\xe2\x82"),
		SEQ("\xf0\x9f\x98"),
		{ "\xe2\x82\xac", 2 },	/* the bytes are there, not in len */
		SEQ("\xc3\x41"),
		SEQ("\xe2\x82\x41"),
		SEQ("\xf0\x9f\x41\x80"),
		SEQ("\xe2\xc3\xa9"),
	};

	refused(v, NITEMS(v));
	assert_false(utf8_valid("abc\xe2\x82", 5));
}

/* Each length's boundaries; surrogates and > U+10FFFF write nothing. */
static void
test_encode(void **state)
{
	static const struct {
		uint32_t	 cp;
		struct seq	 out;
	} v[] = {
		{ 0x41, SEQ("A") },
		{ 0x80, SEQ("\xc2\x80") },
		{ 0x7ff, SEQ("\xdf\xbf") },
		{ 0x800, SEQ("\xe0\xa0\x80") },
		{ 0x20ac, SEQ("\xe2\x82\xac") },
		{ 0xffff, SEQ("\xef\xbf\xbf") },
		{ 0x10000, SEQ("\xf0\x90\x80\x80") },
		{ 0x10ffff, SEQ("\xf4\x8f\xbf\xbf") },
	};
	static const uint32_t none[] = { 0xd800, 0xdfff, 0x110000, 0xffffffffu };
	unsigned char out[UTF8_MAX + 1];
	size_t i;

	memset(out, 0xaa, sizeof(out));
	for (i = 0; i < NITEMS(v); i++) {
		assert_int_equal(utf8_encode(v[i].cp, out), v[i].out.n);
		assert_memory_equal(out, v[i].out.s, v[i].out.n);
	}
	assert_int_equal(out[4], 0xaa);
	memset(out, 0xaa, sizeof(out));
	for (i = 0; i < NITEMS(none); i++)
		assert_int_equal(utf8_encode(none[i], out), 0);
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
