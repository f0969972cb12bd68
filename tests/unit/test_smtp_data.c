/*
 * Unit tests for the DATA/BDAT body scanner (smtp_data): dot-unstuffing,
 * CRLF kept, every anomaly, the end marker, input split at every byte
 * position (a line, the terminator), a full output buffer, BDAT chunks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "smtp_data.h"

/* What a scan of a whole input gave. */
struct res {
	unsigned char	 out[8192];
	size_t		 olen;
	size_t		 used;		/* input bytes consumed */
	bool		 done;
	unsigned	 anomalies;
};

static void	feed(struct smtp_data *, const unsigned char *, size_t, size_t outcap,
		    struct res *);
static void	scan_split(const char *in, size_t n, size_t cut, size_t outcap,
		    struct res *);
static void	expectn(const char *in, size_t n, const char *want, size_t wn,
		    unsigned anomalies, bool done);

/* String literals, NULs included. */
#define EXPECT(in, want, an, done) \
	expectn((in), sizeof(in) - 1, (want), sizeof(want) - 1, (an), (done))

/* Feed in[0..n) to d as one read, calling the scanner until it is consumed. */
static void
feed(struct smtp_data *d, const unsigned char *in, size_t n, size_t outcap,
    struct res *r)
{
	unsigned char out[8192];
	size_t off = 0, olen, used;

	assert_true(outcap <= sizeof(out));
	while (off < n && !r->done) {
		used = smtp_data_scan(d, in + off, n - off, out, outcap, &olen, &r->done);
		assert_true(olen <= outcap);
		assert_true(used > 0 || olen > 0 || r->done);
		assert_true(r->olen + olen <= sizeof(r->out));
		memcpy(r->out + r->olen, out, olen);
		r->olen += olen;
		off += used;
	}
	r->used += off;
	r->anomalies = d->anomalies;
}

/* Scan in as two reads, cut at byte cut. */
static void
scan_split(const char *in, size_t n, size_t cut, size_t outcap, struct res *r)
{
	struct smtp_data d;

	memset(r, 0, sizeof(*r));
	smtp_data_init(&d);
	feed(&d, (const unsigned char *)in, cut, outcap, r);
	if (!r->done)
		feed(&d, (const unsigned char *)in + cut, n - cut, outcap, r);
}

/*
 * in gives content want, these anomalies, and (done) the end, consuming all
 * of in; the same whatever byte the input is cut at, and byte by byte with
 * the smallest output buffer.
 */
static void
expectn(const char *in, size_t n, const char *want, size_t wn, unsigned anomalies,
    bool done)
{
	struct smtp_data d;
	struct res r, whole;
	size_t cut, i;

	scan_split(in, n, n, sizeof(whole.out), &whole);
	if (whole.olen != wn || memcmp(whole.out, want, wn) != 0)
		fail_msg("content of %zu bytes, want %zu: \"%.*s\"", whole.olen, wn,
		    (int)whole.olen, whole.out);
	assert_int_equal(whole.anomalies, anomalies);
	assert_int_equal(whole.done, done);
	assert_int_equal(whole.used, n);
	for (cut = 0; cut <= n; cut++) {
		scan_split(in, n, cut, sizeof(r.out), &r);
		assert_int_equal(r.olen, wn);
		assert_memory_equal(r.out, want, wn);
		assert_int_equal(r.anomalies, anomalies);
		assert_int_equal(r.done, done);
		assert_int_equal(r.used, n);
	}
	memset(&r, 0, sizeof(r));
	smtp_data_init(&d);
	for (i = 0; i < n && !r.done; i++)
		feed(&d, (const unsigned char *)in + i, 1, SMTP_DATA_OUT_MIN, &r);
	assert_int_equal(r.olen, wn);
	assert_memory_equal(r.out, want, wn);
	assert_int_equal(r.anomalies, anomalies);
	assert_int_equal(r.done, done);
}

/* A clean message: CRLF kept, the end marker dropped, no anomaly. */
static void
test_plain(void **state)
{
	EXPECT("Subject: x\r\n\r\nhello\r\n.\r\n", "Subject: x\r\n\r\nhello\r\n", 0, true);
	EXPECT(".\r\n", "", 0, true);
	EXPECT("a\tb ~\r\n", "a\tb ~\r\n", 0, false);	/* no end yet */
	EXPECT("", "", 0, false);
}

/* Dot-stuffing: a leading dot is removed, only one; other dots are content. */
static void
test_dot_unstuffing(void **state)
{
	EXPECT("..\r\n.x\r\na.b\r\n...\r\n.\r\n", ".\r\nx\r\na.b\r\n..\r\n", 0, true);
	/* ".\r" then content: the dot was stuffing, the CR is kept (and bare). */
	EXPECT(".\rx\r\n.\r\n", "\rx\r\n", SMTP_DATA_BARE_CR, true);
	/* ".\r\r\r" then content: every CR is kept. */
	EXPECT(".\r\r\rx\r\n.\r\n", "\r\r\rx\r\n", SMTP_DATA_BARE_CR, true);
	/* ".\r\r\n" then content is not possible: ".\r\r\n" ends (Postfix). */
}

/* Each anomaly alone, and the content kept exactly. */
static void
test_anomalies(void **state)
{
	EXPECT("a\nb\r\n.\r\n", "a\nb\r\n", SMTP_DATA_BARE_LF, true);
	EXPECT("a\rb\r\n.\r\n", "a\rb\r\n", SMTP_DATA_BARE_CR, true);
	EXPECT("a\r\r\n.\r\n", "a\r\r\n", SMTP_DATA_BARE_CR, true);
	EXPECT("a\0b\r\n.\r\n", "a\0b\r\n", SMTP_DATA_NUL, true);
	EXPECT("caf\xc3\xa9\r\n.\r\n", "caf\xc3\xa9\r\n", SMTP_DATA_8BIT, true);
	EXPECT("\x80\0\r\n.\r\n", "\x80\0\r\n", SMTP_DATA_8BIT | SMTP_DATA_NUL, true);
}

/* 998 octets before the CRLF are fine, 999 are a long line (bare LF: the same). */
static void
test_long_line(void **state)
{
	static char in[2100], want[2100];
	size_t n;

	memset(in, 'x', 998);
	memcpy(in + 998, "\r\n.\r\n", 5);
	memcpy(want, in, 1000);
	expectn(in, 1003, want, 1000, 0, true);
	memset(in, 'x', 999);
	memcpy(in + 999, "\r\n.\r\n", 5);
	memcpy(want, in, 1001);
	expectn(in, 1004, want, 1001, SMTP_DATA_LONG_LINE, true);
	memset(in, 'x', 999);
	memcpy(in + 999, "\n.\r\n", 4);
	memcpy(want, in, 1000);
	/* (the end marker after a bare-LF line is a smuggling try too) */
	expectn(in, 1003, want, 1000, SMTP_DATA_LONG_LINE | SMTP_DATA_BARE_LF |
	    SMTP_DATA_SMUGGLE, true);
	/* A line longer than the output buffer: cut into pieces, kept whole. */
	n = 2000;
	memset(in, 'y', n);
	memcpy(in + n, "\r\n.\r\n", 5);
	memcpy(want, in, n + 2);
	expectn(in, n + 5, want, n + 2, SMTP_DATA_LONG_LINE, true);
}

/* End markers other than <CRLF>.<CRLF>: the smuggling anomaly. */
static void
test_smuggling(void **state)
{
	/* <LF>.<LF> ends the message (as Postfix) and is noted. */
	EXPECT("a\r\n.\n", "a\r\n", SMTP_DATA_SMUGGLE, true);
	/* <LF>.<CRLF> after a bare-LF line. */
	EXPECT("a\n.\r\n", "a\n", SMTP_DATA_SMUGGLE | SMTP_DATA_BARE_LF, true);
	/* .<CR><CR><LF> ends it too (Postfix strips one CR) and is noted. */
	EXPECT("a\r\n.\r\r\n", "a\r\n", SMTP_DATA_SMUGGLE, true);
	/* <CR>.<CR> ends nothing but is a smuggling try. */
	EXPECT("a\r.\rb\r\n.\r\n", "a\r.\rb\r\n", SMTP_DATA_SMUGGLE | SMTP_DATA_BARE_CR,
	    true);
	/* <CR><LF>.<CR> then content: not an end. */
	EXPECT("a\r\n.\rb\r\n", "a\r\n\rb\r\n", SMTP_DATA_BARE_CR, false);
}

/* The terminator split across reads at each of its bytes; what follows stays unread. */
static void
test_terminator_split(void **state)
{
	static const char in[] = "x\r\n.\r\nQUIT\r\n";
	struct res r;
	size_t cut;

	for (cut = 0; cut <= sizeof(in) - 1; cut++) {
		scan_split(in, sizeof(in) - 1, cut, sizeof(r.out), &r);
		assert_true(r.done);
		assert_int_equal(r.used, 6);	/* up to the end marker's LF */
		assert_int_equal(r.olen, 3);
		assert_memory_equal(r.out, "x\r\n", 3);
		assert_int_equal(r.anomalies, 0);
	}
}

/* A full output buffer: the scanner stops and goes on, nothing lost or doubled. */
static void
test_small_output(void **state)
{
	static char in[5000], want[5000];
	struct smtp_data d;
	unsigned char out[SMTP_DATA_OUT_MIN];
	size_t n = 0, w = 0, off = 0, olen, used, got = 0;
	static unsigned char all[5000];
	bool done = false;
	int i;

	for (i = 0; i < 300; i++) {
		memcpy(in + n, ".\r\r\r\r..ab\r\n", 11);
		n += 11;
		memcpy(want + w, "\r\r\r\r..ab\r\n", 10);
		w += 10;
	}
	memcpy(in + n, ".\r\n", 3);
	n += 3;
	smtp_data_init(&d);
	while (!done) {
		used = smtp_data_scan(&d, (unsigned char *)in + off, n - off, out, sizeof(out),
		    &olen, &done);
		assert_true(used > 0);
		memcpy(all + got, out, olen);
		got += olen;
		off += used;
	}
	assert_int_equal(off, n);
	assert_int_equal(got, w);
	assert_memory_equal(all, want, w);
	assert_int_equal(d.anomalies, SMTP_DATA_BARE_CR);
}

/* BDAT: content is not scanned for dots; NUL, 8-bit and the last bytes are noted. */
static void
test_bdat_chunks(void **state)
{
	struct smtp_data d;

	smtp_data_init(&d);
	assert_false(smtp_data_ends_crlf(&d, 0));
	smtp_data_bdat(&d, (const unsigned char *)"a\r\n.\r\n", 6);
	assert_int_equal(d.anomalies, 0);
	assert_true(smtp_data_ends_crlf(&d, 6));
	/* Chunks of one byte: the last two bytes span them. */
	smtp_data_bdat(&d, (const unsigned char *)"x", 1);
	assert_false(smtp_data_ends_crlf(&d, 7));
	smtp_data_bdat(&d, (const unsigned char *)"\r", 1);
	assert_false(smtp_data_ends_crlf(&d, 8));
	smtp_data_bdat(&d, (const unsigned char *)"\n", 1);
	assert_true(smtp_data_ends_crlf(&d, 9));
	smtp_data_bdat(&d, (const unsigned char *)"", 0);	/* an empty LAST chunk */
	assert_true(smtp_data_ends_crlf(&d, 9));
	smtp_data_bdat(&d, (const unsigned char *)"\0", 1);
	assert_int_equal(d.anomalies, SMTP_DATA_NUL);
	smtp_data_bdat(&d, (const unsigned char *)"\xff\r\n", 3);
	assert_int_equal(d.anomalies, SMTP_DATA_NUL | SMTP_DATA_8BIT);
	assert_true(smtp_data_ends_crlf(&d, 13));
	/* A one-byte message "\n": not CRLF, even if an older byte was CR. */
	smtp_data_init(&d);
	smtp_data_bdat(&d, (const unsigned char *)"\n", 1);
	assert_false(smtp_data_ends_crlf(&d, 1));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_dot_unstuffing),
		cmocka_unit_test(test_anomalies),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_smuggling),
		cmocka_unit_test(test_terminator_split),
		cmocka_unit_test(test_small_output),
		cmocka_unit_test(test_bdat_chunks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
