/*
 * mime.h: the decoded view of a message that the rules match on (headers
 * unfolded and RFC 2047-decoded, the text leaves transfer-decoded and in
 * UTF-8), the decoders on their own, and the caps on hostile input.
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

#include "mime.h"

#define S(lit)	lit, sizeof(lit) - 1

/* Parse a literal message; the test fails when the parse does. */
static void
parse(const char *raw, struct mime_msg *m)
{
	memset(m, 0, sizeof(*m));
	assert_int_equal(mime_parse((const unsigned char *)raw, strlen(raw), m), 0);
}

/* The body holds needle, or the test fails showing the body. */
static void
body_has(const struct mime_msg *m, const char *needle)
{
	if (strstr(m->body, needle) == NULL)
		fail_msg("\"%s\" not in body \"%s\"", needle, m->body);
}

/* Top-level headers: names as sent, values unfolded and decoded, found by any case. */
static void
test_headers(void **state)
{
	struct mime_msg m;
	const struct mime_header *h;

	parse("Subject: =?utf-8?B?w6l0w6k=?= x\r\n"
	    "X-Long: one\r\n\ttwo\r\n"
	    "From: a@example.org\r\n"
	    "\r\n"
	    "Subject: not a header\r\n", &m);
	assert_int_equal(m.nhdrs, 3);
	assert_non_null(h = mime_header_get(&m, "SUBJECT"));
	assert_string_equal(h->name, "Subject");
	assert_string_equal(h->value, "\xc3\xa9t\xc3\xa9 x");
	assert_int_equal(h->valuelen, strlen(h->value));
	assert_non_null(h = mime_header_get(&m, "x-long"));
	assert_non_null(strstr(h->value, "one"));
	assert_non_null(strstr(h->value, "two"));
	assert_null(strchr(h->value, '\n'));
	assert_null(mime_header_get(&m, "To"));
	body_has(&m, "Subject: not a header");
	assert_false(m.truncated);
	mime_msg_free(&m);
}

/* Nested multiparts: QP in Latin-1 and base64 HTML come out as UTF-8 text. */
static void
test_multipart(void **state)
{
	struct mime_msg m;

	parse("Subject: x\n"
	    "MIME-Version: 1.0\n"
	    "Content-Type: multipart/mixed; boundary=\"o\"\n"
	    "\n"
	    "--o\n"
	    "Content-Type: multipart/alternative; boundary=i\n"
	    "\n"
	    "--i\n"
	    "Content-Type: text/plain; charset=iso-8859-1\n"
	    "Content-Transfer-Encoding: quoted-printable\n"
	    "\n"
	    "caf=E9 au=\n"
	    " lait\n"
	    "--i\n"
	    "Content-Type: text/html; charset=utf-8\n"
	    "Content-Transfer-Encoding: base64\n"
	    "\n"
	    "PGI+MTY5MDkwNjA8L2I+\n"
	    "--i--\n"
	    "--o\n"
	    "Content-Type: application/octet-stream\n"
	    "Content-Transfer-Encoding: base64\n"
	    "\n"
	    "c2VjcmV0IGJpbmFyeQ==\n"
	    "--o--\n", &m);
	body_has(&m, "caf\xc3\xa9 au lait");
	body_has(&m, "<b>16909060</b>");
	/* Only text leaves are text: the attachment is not decoded into it. */
	assert_null(strstr(m.body, "secret binary"));
	assert_null(strstr(m.body, "c2VjcmV0"));
	assert_false(m.truncated);
	mime_msg_free(&m);
}

/* An empty message parses to no headers and an empty body. */
static void
test_empty(void **state)
{
	struct mime_msg m;

	parse("", &m);
	assert_int_equal(m.nhdrs, 0);
	assert_non_null(m.body);
	assert_int_equal(m.bodylen, 0);
	assert_null(mime_header_get(&m, "Subject"));
	mime_msg_free(&m);
}

/* Hostile shapes hit a cap and say so, without failing the parse. */
static void
test_caps(void **state)
{
	struct mime_msg m;
	char *raw, *p;
	int i;

	/* More headers than are kept. */
	assert_non_null(raw = malloc((MIME_HDR_MAX + 10) * 16 + 16));
	p = raw;
	for (i = 0; i < MIME_HDR_MAX + 10; i++)
		p += sprintf(p, "X-H%d: v\r\n", i);
	strcpy(p, "\r\nbody\r\n");
	parse(raw, &m);
	assert_int_equal(m.nhdrs, MIME_HDR_MAX);
	assert_true(m.truncated);
	mime_msg_free(&m);
	free(raw);

	/* Multiparts nested deeper than the cap: the text inside is not reached. */
	assert_non_null(raw = malloc(4096));
	p = raw;
	p += sprintf(p, "Content-Type: multipart/mixed; boundary=b0\r\n\r\n");
	for (i = 0; i < MIME_DEPTH_MAX + 4; i++)
		p += sprintf(p, "--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n",
		    i, i + 1);
	sprintf(p, "--b%d\r\nContent-Type: text/plain\r\n\r\ndeep text\r\n", i);
	parse(raw, &m);
	assert_true(m.truncated);
	assert_null(strstr(m.body, "deep text"));
	mime_msg_free(&m);
	free(raw);
}

/* mime_decode_header: RFC 2047 words (B and Q), unfolding, the size cap. */
static void
test_decode_header(void **state)
{
	size_t n;
	char *s;

	assert_non_null(s = mime_decode_header(S("=?iso-8859-1?q?caf=E9_au_lait?="), 100, &n));
	assert_string_equal(s, "caf\xc3\xa9 au lait");
	assert_int_equal(n, strlen(s));
	free(s);
	assert_non_null(s = mime_decode_header(S("plain\r\n folded"), 100, &n));
	assert_null(strchr(s, '\r'));
	assert_non_null(strstr(s, "plain"));
	assert_non_null(strstr(s, "folded"));
	free(s);
	/* An encoded word that does not close stays as it was sent. */
	assert_non_null(s = mime_decode_header(S("=?utf-8?B?w6k"), 100, &n));
	assert_string_equal(s, "=?utf-8?B?w6k");
	free(s);
	assert_non_null(s = mime_decode_header(S("0123456789abcdef"), 8, &n));
	assert_true(n <= 8);
	assert_int_equal(strlen(s), n);
	assert_memory_equal(s, "01234567", n);
	free(s);
}

/* Lenient base64 and quoted-printable, never past outmax. */
static void
test_decoders(void **state)
{
	unsigned char out[32];

	assert_int_equal(mime_b64_decode(S("aGVsbG8="), out, sizeof(out)), 5);
	assert_memory_equal(out, "hello", 5);
	assert_int_equal(mime_b64_decode(S("aGV s\r\nb*G8"), out, sizeof(out)), 5);
	assert_memory_equal(out, "hello", 5);
	assert_int_equal(mime_b64_decode(S("aGVsbG8gd29ybGQ="), out, 4), 4);
	assert_memory_equal(out, "hell", 4);
	assert_int_equal(mime_b64_decode(S(""), out, sizeof(out)), 0);

	assert_int_equal(mime_qp_decode(S("caf=E9=\r\nx=3d"), false, out, sizeof(out)), 6);
	assert_memory_equal(out, "caf\xe9x=", 6);
	assert_int_equal(mime_qp_decode(S("a_b=5F"), true, out, sizeof(out)), 4);
	assert_memory_equal(out, "a b_", 4);
	assert_int_equal(mime_qp_decode(S("a_b"), false, out, sizeof(out)), 3);
	assert_memory_equal(out, "a_b", 3);
	assert_int_equal(mime_qp_decode(S("abcdef"), false, out, 3), 3);
	assert_memory_equal(out, "abc", 3);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_multipart),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_decode_header),
		cmocka_unit_test(test_decoders),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
