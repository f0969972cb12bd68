/*
 * Unit tests for analysis.c: every cap reached is named in the document and
 * holds; blobs are deduplicated and are the hashed bytes; hostile header
 * bytes come out as valid JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "analysis.h"
#include "log.h"
#include "util.h"

/* A growing string. */
struct sb {
	char	*s;
	size_t	 len;
	size_t	 cap;
};

static void
sb_add(struct sb *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0,
		    fmt, ap);
		va_end(ap);
		if (b->s && (size_t)n < b->cap - b->len)
			break;
		b->cap = (b->cap + (size_t)n + 1) * 2;
		assert_non_null(b->s = realloc(b->s, b->cap));
	}
	b->len += (size_t)n;
}

/* Run with lim (NULL: defaults); res filled; returns the JSON. */
static const char *
run(const struct analysis_limits *lim, const char *mail, size_t len,
    struct analysis_result *res)
{
	struct analysis *a;
	char err[256];

	assert_non_null(a = analysis_new(lim, err, sizeof(err)));
	assert_int_equal(analysis_run(a, (const unsigned char *)mail, len, NULL,
	    NULL, res), 0);
	analysis_free(a);
	assert_true(utf8_valid(res->json, res->jsonlen));
	assert_int_equal(strlen(res->json), res->jsonlen);
	return res->json;
}

/*
 * A bomb under the default limits: run() it, print its thread CPU time under
 * what, and require it under a second (the caps, not the per-mail CPU
 * budget, which is checked between parts only, must bound it).
 */
static void
run_bounded(const char *what, const char *mail, size_t len,
    struct analysis_result *res)
{
	struct timespec t0, t1;
	double s;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
	run(NULL, mail, len, res);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("%s: %.3f s CPU\n", what, s);
	assert_true(s < 1.0);
}

/* A mail of n attachments (base64 "AAAA" bodies) and urls URLs. */
static void
flat_mail(struct sb *b, int n, int urls)
{
	int i;

	sb_add(b, "From: a@b.example\nSubject: s\nMIME-Version: 1.0\n"
	    "Content-Type: multipart/mixed; boundary=X\n\n--X\n"
	    "Content-Type: text/plain\n\n");
	for (i = 0; i < urls; i++)
		sb_add(b, "http://u%d.example/ ", i);
	sb_add(b, "\n");
	for (i = 0; i < n; i++)
		sb_add(b, "--X\nContent-Type: application/octet-stream\n"
		    "Content-Transfer-Encoding: base64\n"
		    "Content-Disposition: attachment; filename=f%d\n\nQUJD%c%c%c%c\n",
		    i, 'A' + i % 26, 'A' + i / 26 % 26, 'A', 'A');
	sb_add(b, "--X--\n");
}

static void
test_defaults_clean(void **state)
{
	struct analysis_result r;
	struct sb b = { 0 };

	flat_mail(&b, 3, 3);
	run(NULL, b.s, b.len, &r);
	assert_non_null(strstr(r.json, "\"limits\":[]"));
	assert_int_equal(r.nattachments, 3);
	assert_int_equal(r.nurls, 3);
	assert_int_equal(r.limits, 0);
	analysis_result_free(&r);
	free(b.s);
}

/* Each cap, alone, reached and named. */
static void
test_limits(void **state)
{
	struct analysis_limits lim;
	struct analysis_result r;
	struct sb b = { 0 };
	int i;

	flat_mail(&b, 5, 5);

	analysis_limits_default(&lim);
	lim.leaves_max = 3;		/* the text part and 2 attachments */
	run(&lim, b.s, b.len, &r);
	assert_int_equal(r.limits, ANALYSIS_LIM_LEAVES);
	assert_non_null(strstr(r.json, "\"limits\":[\"leaves\"]"));
	assert_int_equal(r.nattachments, 2);
	analysis_result_free(&r);

	analysis_limits_default(&lim);
	lim.items_max = 2;
	run(&lim, b.s, b.len, &r);
	assert_true(r.limits & ANALYSIS_LIM_ITEMS);
	assert_int_equal(r.nurls, 2);
	analysis_result_free(&r);

	analysis_limits_default(&lim);
	lim.decoded_max = 100;		/* the text (~100 bytes) and a little */
	run(&lim, b.s, b.len, &r);
	assert_true(r.limits & ANALYSIS_LIM_DECODED);
	assert_true(r.nattachments < 5);
	analysis_result_free(&r);

	analysis_limits_default(&lim);
	lim.raw_max = b.len / 2;
	run(&lim, b.s, b.len, &r);
	assert_true(r.limits & ANALYSIS_LIM_RAW);
	assert_true(r.nattachments < 5);
	analysis_result_free(&r);

	analysis_limits_default(&lim);
	lim.cpu_ms_max = 0;		/* spent before the first part */
	run(&lim, b.s, b.len, &r);
	assert_int_equal(r.limits, ANALYSIS_LIM_CPU);
	assert_int_equal(r.nattachments, 0);
	assert_non_null(strstr(r.json, "\"limits\":[\"cpu\"]"));
	analysis_result_free(&r);

	analysis_limits_default(&lim);
	lim.text_max = 40;		/* the text normalises to 70 bytes */
	run(&lim, "Subject: x\n\nthe quick brown fox jumps over the lazy dog "
	    "and again the quick brown fox jumps\n", 92, &r);
	assert_int_equal(r.limits, ANALYSIS_LIM_TEXT);
	analysis_result_free(&r);

	analysis_limits_default(&lim);
	lim.blob_max = 2;
	run(&lim, b.s, b.len, &r);
	assert_int_equal(r.limits, ANALYSIS_LIM_BLOB);
	assert_int_equal(r.nblobs, 0);
	assert_int_equal(r.nattachments, 5);
	analysis_result_free(&r);
	free(b.s);

	/* nesting: 30 multiparts deep (the default depth cap is 32) */
	memset(&b, 0, sizeof(b));
	sb_add(&b, "From: a@b.example\nMIME-Version: 1.0\n");
	for (i = 0; i < 30; i++)
		sb_add(&b, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n",
		    i, i);
	sb_add(&b, "Content-Type: application/x-deep\n\ndeep\n");
	for (i = 29; i >= 0; i--)
		sb_add(&b, "--b%d--\n", i);
	analysis_limits_default(&lim);
	lim.depth_max = 10;
	run(&lim, b.s, b.len, &r);
	assert_int_equal(r.limits, ANALYSIS_LIM_DEPTH);
	assert_int_equal(r.nattachments, 0);
	analysis_result_free(&r);
	analysis_limits_default(&lim);
	lim.containers_max = 10;
	run(&lim, b.s, b.len, &r);
	assert_true(r.limits & ANALYSIS_LIM_CONTAINERS);
	analysis_result_free(&r);
	run(NULL, b.s, b.len, &r);
	assert_int_equal(r.limits, 0);
	assert_int_equal(r.nattachments, 1);
	analysis_result_free(&r);
	free(b.s);

	/* HTML tags */
	memset(&b, 0, sizeof(b));
	sb_add(&b, "Content-Type: text/html\n\n");
	for (i = 0; i < 100; i++)
		sb_add(&b, "<a href=\"http://h%d.example/\">x</a>", i);
	analysis_limits_default(&lim);
	lim.html_tags_max = 20;
	run(&lim, b.s, b.len, &r);
	assert_int_equal(r.limits, ANALYSIS_LIM_HTML);
	assert_int_equal(r.nurls, 100);	/* past the cap: the text scan */
	analysis_result_free(&r);
	run(NULL, b.s, b.len, &r);
	assert_int_equal(r.nurls, 100);
	analysis_result_free(&r);
	free(b.s);
}

/*
 * GMime takes a type written with comments or folding whitespace before the
 * '/' ("multipart (x)/mixed", "message\n /rfc822") and nests it: the
 * container cap must count those too, or a deep nest gets past it (it did:
 * "multipart /mixed" nested 300 deep with containers_max 10).
 */
static void
test_containers_cfws(void **state)
{
	static const char *const types[] = { "multipart/mixed",
	    "multipart /mixed", "Multipart(a(b)\\)c)/mixed", "multipart\n\t/mixed",
	    "multipart", "message/rfc822", "message /rfc822",
	    "MESSAGE(c)\n /rfc822", "message" };
	struct analysis_limits lim;
	struct analysis_result r;
	size_t t;
	int i;

	analysis_limits_default(&lim);
	lim.containers_max = 10;
	lim.depth_max = 1000;
	for (t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		struct sb b = { 0 };
		bool msg = strncasecmp(types[t], "message", 7) == 0;

		sb_add(&b, "From: a@b.example\nMIME-Version: 1.0\n");
		for (i = 0; i < 300; i++) {
			if (msg)
				sb_add(&b, "Content-Type: %s\n\nSubject: %d\n",
				    types[t], i);
			else
				sb_add(&b, "Content-Type: %s; boundary=b%d\n\n"
				    "--b%d\n", types[t], i, i);
		}
		sb_add(&b, "Content-Type: application/x-deep\n\ndeep\n");
		run(&lim, b.s, b.len, &r);
		/* capped, or not a container to GMime at all ("message") */
		{
			const char *p = r.json, *q;

			while ((q = strstr(p, "\"depth\":")) != NULL)
				p = q + 1;	/* the last: fosr.analysis.depth */
			if (!(r.limits & ANALYSIS_LIM_CONTAINERS) &&
			    atoi(p + 8) > 10)
				fail_msg("%s: not capped: %s", types[t], p);
		}
		analysis_result_free(&r);
		free(b.s);
	}
}

/*
 * gumbo is quadratic in the nesting depth (60,000 nested <div> took 5.5 s of
 * CPU, past the per-mail budget, which is checked between parts only): the
 * tag cap bounds it, and absolute URLs past the cap are still found.
 */
static void
test_html_nesting(void **state)
{
	struct analysis_result r;
	struct sb b = { 0 };
	int i;

	sb_add(&b, "Content-Type: text/html\n\n");
	for (i = 0; i < 60000; i++)
		sb_add(&b, "<div>");
	sb_add(&b, "<a href=\"http://tail.example/x?a=1&amp;b=2\">x</a>");
	run_bounded("60,000 nested <div>", b.s, b.len, &r);
	assert_true(r.limits & ANALYSIS_LIM_HTML);
	assert_false(r.limits & ANALYSIS_LIM_CPU);
	assert_non_null(strstr(r.json, "\"http://tail.example/x?a=1&amp;b=2\""));
	analysis_result_free(&r);
	free(b.s);
}

/*
 * GMime makes an object of every header field: 800,000 "a: b" lines (4 MB)
 * took 2.5 s of CPU and 520 MB.  The field cap bounds both.
 */
static void
test_header_bomb(void **state)
{
	struct analysis_limits lim;
	struct analysis_result r;
	struct sb b = { 0 };
	int i;

	sb_add(&b, "Subject: many\n");
	for (i = 0; i < 800000; i++)
		sb_add(&b, "a: b\n");
	sb_add(&b, "\nbody http://after.example/\n");
	run_bounded("800,000 header fields", b.s, b.len, &r);
	assert_true(r.limits & ANALYSIS_LIM_HEADERS);
	assert_non_null(strstr(r.json, "\"subject\":\"many\""));
	analysis_result_free(&r);

	/* a mail under the cap is whole */
	analysis_limits_default(&lim);
	lim.headers_max = 10;
	run(&lim, "A: 1\nB: 2\n\nhttp://x.example/ a: b\n", 34, &r);
	assert_int_equal(r.limits, 0);
	assert_int_equal(r.nurls, 1);
	analysis_result_free(&r);
	free(b.s);
}

/*
 * GMime's parameter list is quadratic (8,000 parameters on a Content-Type:
 * 0.24 s; 500,000 ran for minutes) and an address list costs an object per
 * address (600,000: 1.9 s, 275 MB): each header field is cut at
 * FIELD_MAX bytes.
 */
static void
test_field_bomb(void **state)
{
	struct analysis_result r;
	struct sb b = { 0 };
	int i;

	sb_add(&b, "Subject: fields\nTo: ");
	for (i = 0; i < 300000; i++)
		sb_add(&b, "%su%d@x.example", i ? ",\n " : "", i);
	sb_add(&b, "\nContent-Type: text/plain; charset=us-ascii");
	for (i = 0; i < 30000; i++)
		sb_add(&b, "; p%d=%d", i, i);
	sb_add(&b, "\n\nbody http://after.example/\n");
	run_bounded("300,000 addresses, 30,000 parameters", b.s, b.len, &r);
	assert_true(r.limits & ANALYSIS_LIM_HEADERS);
	assert_non_null(strstr(r.json, "\"subject\":\"fields\""));
	assert_non_null(strstr(r.json, "\"u0@x.example\""));
	assert_non_null(strstr(r.json, "\"http://after.example/\""));
	analysis_result_free(&r);
	free(b.s);
}

/* Two copies of one attachment: two records, one blob, the right bytes. */
static void
test_blobs(void **state)
{
	static const char mail[] =
	    "Content-Type: multipart/mixed; boundary=X\n\n"
	    "--X\nContent-Type: image/gif\nContent-Transfer-Encoding: base64\n\n"
	    "R0lGODlhAQABAAAAACw=\n"
	    "--X\nContent-Type: image/gif\nContent-Transfer-Encoding: base64\n\n"
	    "R0lGODlhAQABAAAAACw=\n--X--\n";
	static const unsigned char gif[] = "GIF89a\001\000\001\000\000\000\000,";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	struct analysis_result r;
	char hex[65];

	run(NULL, mail, sizeof(mail) - 1, &r);
	assert_int_equal(r.nattachments, 2);
	assert_int_equal(r.nblobs, 1);
	assert_int_equal(r.blobs[0].len, sizeof(gif) - 1);
	assert_memory_equal(r.blobs[0].data, gif, sizeof(gif) - 1);
	EVP_Digest(gif, sizeof(gif) - 1, md, &mdlen, EVP_sha256(), NULL);
	util_hex(md, mdlen, hex);
	assert_string_equal(r.blobs[0].sha256, hex);
	assert_non_null(strstr(r.json, "\"magic_type\":\"image/gif\""));
	analysis_result_free(&r);
}

/* Control bytes, invalid UTF-8, quotes: escaped, valid JSON. */
static void
test_hostile_strings(void **state)
{
	static const char mail[] =
	    "Subject: a\"b\\c\001\x7f\xff\xfe =?utf-8?b?4oCu?= end\n"
	    "From: \"\x1b[31m\" <x\001y@evil.example>\n"
	    "X-Mailer: \xc0\xaf\n"
	    "Content-Type: text/plain\n\nhttp://h.example/\"<\x01>\n";
	struct analysis_result r;

	run(NULL, mail, sizeof(mail) - 1, &r);
	assert_null(memchr(r.json, '\001', r.jsonlen));
	assert_null(memchr(r.json, '\x1b', r.jsonlen));
	assert_null(strstr(r.json, "\xe2\x80\xae"));	/* RLO escaped */
	assert_non_null(strstr(r.json, "\"http://h.example/\""));
	analysis_result_free(&r);
}

/*
 * An empty attachment: GMime's byte array of it has no data pointer, which
 * must not reach memcpy (UBSan in fuzz_analysis over fuzz/corpus/mime).
 */
static void
test_empty_attachment(void **state)
{
	static const char mail[] =
	    "Content-Type: multipart/mixed; boundary=X\n\n"
	    "--X\nContent-Type: application/octet-stream\n"
	    "Content-Transfer-Encoding: base64\n\n"
	    "--X--\n";
	struct analysis_result r;

	run(NULL, mail, sizeof(mail) - 1, &r);
	assert_int_equal(r.nattachments, 1);
	assert_int_equal(r.nblobs, 1);
	assert_int_equal(r.blobs[0].len, 0);
	assert_string_equal(r.blobs[0].sha256,
	    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	analysis_result_free(&r);
}

/* The reception record's sha256 is used as given. */
static void
test_sha256_given(void **state)
{
	static const char mail[] = "Subject: x\n\nhello\n";
	static const char sha[] =
	    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	struct analysis_result r;
	struct analysis *a;
	char err[256];

	assert_non_null(a = analysis_new(NULL, err, sizeof(err)));
	assert_int_equal(analysis_run(a, (const unsigned char *)mail,
	    sizeof(mail) - 1, sha, NULL, &r), 0);
	assert_non_null(strstr(r.json, sha));
	analysis_result_free(&r);
	analysis_free(a);
}

static void
test_decoded_charset_growth(void **state)
{
	/*
	 * A Latin-1 text part grows in its conversion to UTF-8 (900 bytes of
	 * 0xe9 become 1,800): the decoded count then passes decoded_max and
	 * the cap must still hold for the parts after it (size_t arithmetic:
	 * "decoded_max - decoded" wrapped and let everything through).
	 */
	struct analysis_limits lim;
	struct analysis_result r;
	struct sb b = { 0 };
	int i;

	(void)state;
	sb_add(&b, "From: a@example.com\nSubject: x\nMIME-Version: 1.0\n"
	    "Content-Type: multipart/mixed; boundary=B\n\n--B\n"
	    "Content-Type: text/plain; charset=iso-8859-1\n"
	    "Content-Transfer-Encoding: 8bit\n\n");
	for (i = 0; i < 900; i++)
		sb_add(&b, "%c", 0xe9);
	sb_add(&b, "\n--B\nContent-Type: application/octet-stream\n\n");
	for (i = 0; i < 50; i++)
		sb_add(&b, "0123456789");
	sb_add(&b, "\n--B--\n");
	analysis_limits_default(&lim);
	lim.decoded_max = 1000;
	run(&lim, b.s, b.len, &r);
	assert_true(r.limits & ANALYSIS_LIM_DECODED);
	assert_int_equal(r.nattachments, 0);
	analysis_result_free(&r);
	free(b.s);
}

static void
test_document_max(void **state)
{
	/*
	 * Every list and string at its worst at once (bytes escaped six times
	 * or made U+FFFD three times): the document stays under 1 MiB, the
	 * cuts named and counted (fosr.analysis.limits "document", truncated,
	 * omitted).
	 */
	struct analysis_result r;
	struct sb b = { 0 };
	int i, j;

	(void)state;
	sb_add(&b, "From: a@example.com\n");
	for (i = 0; i < 64; i++) {
		sb_add(&b, "Received: from x");
		for (j = 0; j < 400; j++)
			sb_add(&b, " [10.%d.%d.%d]", i, j / 250, j % 250);
		sb_add(&b, "\n");
	}
	sb_add(&b, "Subject: ");
	for (i = 0; i < 20000; i++)
		sb_add(&b, "\x01");
	sb_add(&b, "\nX-Mailer: ");
	for (i = 0; i < 20000; i++)
		sb_add(&b, "\x02");
	sb_add(&b, "\nTo: ");
	for (i = 0; i < 600; i++)
		sb_add(&b, "%sx%0200d@d%d.example", i ? ",\n " : "", i, i);
	sb_add(&b, "\nMIME-Version: 1.0\n"
	    "Content-Type: multipart/mixed; boundary=B\n\n--B\n"
	    "Content-Type: text/plain\n\n");
	for (i = 0; i < 600; i++) {
		sb_add(&b, "http://h%d.example/", i);
		for (j = 0; j < 2000; j++)
			sb_add(&b, "\x80");
		sb_add(&b, " u%0200d@h%d.example 10.1.%d.%d\n", i, i, i / 250,
		    i % 250);
	}
	for (i = 0; i < 990; i++) {
		sb_add(&b, "--B\nContent-Type: application/x-%d\n"
		    "Content-Disposition: attachment; filename=\"", i);
		for (j = 0; j < 400; j++)
			sb_add(&b, "\x01");
		sb_add(&b, "\"\n\n%d\n", i);
	}
	sb_add(&b, "--B--\n");
	run(NULL, b.s, b.len, &r);
	assert_true(r.jsonlen < 1000 * 1000);
	assert_true(r.limits & ANALYSIS_LIM_DOCUMENT);
	assert_non_null(strstr(r.json, "\"omitted\":{\"email.to.address\":"));
	assert_non_null(strstr(r.json, "\"url.full\":"));
	assert_non_null(strstr(r.json, "\"email.attachments\":"));
	assert_non_null(strstr(r.json, "\"fosr.received\":"));
	assert_non_null(strstr(r.json, "\"truncated\":"));
	analysis_result_free(&r);
	free(b.s);
}

static void
test_cpu_inside_a_part(void **state)
{
	/*
	 * 200 uuencoded JSON-like files in one text part (each hashed, ssdeep'd
	 * and typed by libmagic: ~4 ms each): the CPU cap is looked at before
	 * each, not only between MIME parts (before: all 200, ~0.7 s, whatever
	 * the cap).
	 */
	/* {"a":[1, then 1,1,1...: JSON to libmagic, its slowest test */
	static const char uu[] = "M,2PQ+#$L,2PQ+#$L,2PQ+#$L,2PQ+#$L,2PQ+#$L,2PQ+#$L,2PQ+#$L,2PQ\n";
	struct analysis_limits lim;
	struct analysis_result r;
	struct analysis *a;
	struct timespec t0, t1;
	struct sb b = { 0 };
	char err[256];
	double s;
	int i, j;

	(void)state;
	sb_add(&b, "From: a@example.com\nSubject: uu\nContent-Type: text/plain\n\n");
	for (i = 0; i < 200; i++) {
		sb_add(&b, "begin 644 f%d.json\n(>R)A(CI;,2P \n", i);
		for (j = 0; j < 700; j++)
			sb_add(&b, "%s", uu);
		sb_add(&b, "`\nend\n");
	}
	analysis_limits_default(&lim);
	lim.cpu_ms_max = 300;	/* the scans of the text take ~60 ms */
	assert_non_null(a = analysis_new(&lim, err, sizeof(err)));
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
	assert_int_equal(analysis_run(a, (const unsigned char *)b.s, b.len, NULL,
	    NULL, &r), 0);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	print_message("200 uuencoded files, cpu_ms_max 300: %u analysed, %.3f s CPU\n",
	    r.nattachments, s);
	assert_true(r.limits & ANALYSIS_LIM_CPU);
	assert_true(r.nattachments < 200);
#ifndef __SANITIZE_ADDRESS__
	/* the text's scans fit in the cap: the files are what it stopped */
	assert_true(r.nattachments > 0);
#endif
	analysis_result_free(&r);
	analysis_free(a);
	free(b.s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_clean),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_containers_cfws),
		cmocka_unit_test(test_html_nesting),
		cmocka_unit_test(test_header_bomb),
		cmocka_unit_test(test_field_bomb),
		cmocka_unit_test(test_blobs),
		cmocka_unit_test(test_hostile_strings),
		cmocka_unit_test(test_sha256_given),
		cmocka_unit_test(test_empty_attachment),
		cmocka_unit_test(test_decoded_charset_growth),
		cmocka_unit_test(test_document_max),
		cmocka_unit_test(test_cpu_inside_a_part),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
