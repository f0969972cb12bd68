/*
 * Unit tests for smtp_client.c's DATA writer: every line end goes out as
 * CRLF (bare CR and bare LF included: no smuggling sequence is relayed),
 * dots are stuffed at every line start, and the terminator follows a line end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "smtp_client.h"

/* smtp_client_body(hdr, msg) as a NUL-terminated string (caller frees). */
static char *
body(const char *hdr, const char *msg, size_t msglen)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	char *s;

	assert_non_null(b);
	smtp_client_body(b, (const unsigned char *)hdr, strlen(hdr),
	    (const unsigned char *)msg, msglen);
	n = evbuffer_get_length(b);
	s = malloc(n + 1);
	assert_non_null(s);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	evbuffer_free(b);
	return s;
}

/*
 * The payload is want; SIZE= declares its length less the terminator and
 * the stuffing dots (a line start "..": one of them).
 */
static void
check(const char *hdr, const char *msg, const char *want)
{
	char *got = body(hdr, msg, strlen(msg));
	size_t n = strlen(want) - 3, bol = 1;

	assert_string_equal(got, want);
	for (size_t i = 0; i + 3 < strlen(want); i++) {
		if (bol && want[i] == '.')
			n--, i++;
		bol = want[i] == '\n';
	}
	assert_int_equal(smtp_client_body_size((const unsigned char *)hdr, strlen(hdr),
	    (const unsigned char *)msg, strlen(msg)), n);
	free(got);
}

static void
test_crlf_untouched_dots_stuffed(void **state)
{
	check("H: 1\r\n", "a\r\n.b\r\n..c\r\n.\r\nend\r\n",
	    "H: 1\r\na\r\n..b\r\n...c\r\n..\r\nend\r\n.\r\n");
	check("", ".first\r\n", "..first\r\n.\r\n");
	check("", "", ".\r\n");
}

static void
test_bare_line_ends_made_crlf(void **state)
{
	/* Bare LF, bare CR, LF.LF and CR.CR: each a line end, dots stuffed. */
	check("", "a\nb\r\n", "a\r\nb\r\n.\r\n");
	check("", "a\rb\r\n", "a\r\nb\r\n.\r\n");
	check("", "x\n.\nMAIL FROM:<a@b>\r\n", "x\r\n..\r\nMAIL FROM:<a@b>\r\n.\r\n");
	check("", "x\r.\rRCPT TO:<c@d>\r\n", "x\r\n..\r\nRCPT TO:<c@d>\r\n.\r\n");
	check("", "x\r\r\n.\r\n", "x\r\n\r\n..\r\n.\r\n");
	check("", "x\n\r.\r\n", "x\r\n\r\n..\r\n.\r\n");
}

static void
test_final_line_end(void **state)
{
	check("", "no end", "no end\r\n.\r\n");
	check("", "cr end\r", "cr end\r\n.\r\n");
	check("", "lf end\n", "lf end\r\n.\r\n");
	/* Header and message are one byte stream: a dot mid-line is content. */
	check("H: x", ".m\r\n", "H: x.m\r\n.\r\n");
}

static void
test_large_and_binary(void **state)
{
	size_t n = 100000, i;
	char *msg = malloc(n), *got;

	assert_non_null(msg);
	for (i = 0; i < n; i++)
		msg[i] = (i % 50 == 49) ? '\n' : (i % 50 == 0) ? '.' : (char)('A' + i % 26);
	msg[7] = '\0';
	got = body("", msg, n);
	/* Every line: stuffed dot, 48 bytes, CRLF; NUL kept as content. */
	for (i = 0; i < n / 50; i++) {
		const char *line = got + i * 52;
		assert_true(line[0] == '.' && line[1] == '.');
		assert_true(line[50] == '\r' && line[51] == '\n');
	}
	assert_memory_equal(got + n / 50 * 52, ".\r\n", 3);
	free(got);
	free(msg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crlf_untouched_dots_stuffed),
		cmocka_unit_test(test_bare_line_ends_made_crlf),
		cmocka_unit_test(test_final_line_end),
		cmocka_unit_test(test_large_and_binary),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
