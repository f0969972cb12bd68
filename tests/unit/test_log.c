/* Unit tests for log.c: escaping, UTF-8 checks, the event log (the JSON builder: test_jbuf.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <pthread.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "testutil.h"

static size_t	 kv_next(const char **, const char **, size_t *);

/* Controls, backslash and 8-bit bytes are escaped; printable ASCII is kept. */
static void
test_escape_basic(void **state)
{
	char out[128];

	log_escape(out, sizeof(out), "a\r\n\t\\\x01\xff\x7f z", 10);
	assert_string_equal(out, "a\\r\\n\\t\\\\\\x01\\xff\\x7f z");
	log_escape(out, sizeof(out), "", 0);
	assert_string_equal(out, "");
	log_escape(out, sizeof(out), "a\0b", 3);
	assert_string_equal(out, "a\\x00b");
}

/* Truncation keeps whole tokens and appends "..."; an exact fit is not truncated. */
static void
test_escape_truncate(void **state)
{
	char out[8];

	log_escape(out, sizeof(out), "abcdefghij", 10);
	assert_string_equal(out, "abcd...");
	log_escape(out, sizeof(out), "abcdefg", 7);
	assert_string_equal(out, "abcdefg");
	log_escape(out, sizeof(out), "ab\x01\x02", 4);
	assert_string_equal(out, "ab...");
	log_escape(out, 4, "abc", 3);
	assert_string_equal(out, "abc");
	log_escape(out, 4, "abcd", 4);
	assert_string_equal(out, "...");
}

/*
 * Parse one key=value log field at *pp: value an unquoted token or a
 * "quoted" string with backslash escapes.  Returns the key length (0 at the
 * end), sets *val and *vlen to the raw value and advances *pp.
 */
static size_t
kv_next(const char **pp, const char **val, size_t *vlen)
{
	const char *p = *pp, *k;
	size_t klen;

	while (*p == ' ')
		p++;
	k = p;
	while (*p != '\0' && *p != '=' && *p != ' ')
		p++;
	if (*p != '=')
		return 0;
	klen = (size_t)(p - k);
	p++;
	*val = p;
	if (*p == '"') {
		for (p++; *p != '\0' && *p != '"'; p++)
			if (*p == '\\' && p[1] != '\0')
				p++;
		assert_int_equal(*p, '"');
		p++;
	} else
		while (*p != '\0' && *p != ' ')
			p++;
	*vlen = (size_t)(p - *val);
	*pp = p;
	return klen;
}

/*
 * A value quoted in a log line cannot close its quotes: the forged AUTH user
 * of the issue stays one field, and only printable ASCII comes out (C0, DEL,
 * C1 raw or as UTF-8, bidi controls, invalid UTF-8 are all \xNN).
 */
static void
test_escape_quote_fields(void **state)
{
	static const char *const evil[] = {
		"admin\" password=\"hunter2\" result=ok x=\"",
		"a\\\" b=\"c",
		"\xc2\x9b" "31m \x9b \xe2\x80\xae \xe2\x80\x8f \xe2\x81\xa6 \xd8\x9c \x1b[2J\x7f",
		"\xff\xc0\x80\xed\xa0\x80",
	};
	char esc[512], line[700];
	const char *p, *v;
	size_t i, klen, vlen, nkeys;

	for (i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
		log_escape(esc, sizeof(esc), evil[i], strlen(evil[i]));
		for (p = esc; *p; p++)
			assert_true(*p >= 0x20 && *p <= 0x7e);
		snprintf(line, sizeof(line), "user=\"%s\" result=fail", esc);
		p = line;
		nkeys = 0;
		while ((klen = kv_next(&p, &v, &vlen)) != 0) {
			if (nkeys == 0)
				assert_memory_equal(p - vlen - klen - 1, "user", 4);
			else {
				assert_int_equal(klen, 6);
				assert_memory_equal(v, "fail", 4);
			}
			nkeys++;
		}
		assert_int_equal(nkeys, 2);
		assert_int_equal(*p, '\0');
	}
	log_escape(esc, sizeof(esc), "q\"b", 3);
	assert_string_equal(esc, "q\\\"b");
}

/* utf8_valid follows RFC 3629 strictly. */
static void
test_utf8_valid(void **state)
{
	assert_true(utf8_valid("", 0));
	assert_true(utf8_valid("abc", 3));
	assert_true(utf8_valid("\xc2\x80", 2));
	assert_true(utf8_valid("\xef\xbf\xbf", 3));
	assert_true(utf8_valid("\xf4\x8f\xbf\xbf", 4));
	assert_true(utf8_valid("\xed\x9f\xbf", 3));		/* U+D7FF */
	assert_true(utf8_valid("\xee\x80\x80", 3));		/* U+E000 */
	assert_false(utf8_valid("\xc1\xbf", 2));		/* overlong */
	assert_false(utf8_valid("\xe0\x9f\xbf", 3));		/* overlong */
	assert_false(utf8_valid("\xf0\x8f\xbf\xbf", 4));	/* overlong */
	assert_false(utf8_valid("\xed\xa0\x80", 3));		/* surrogate */
	assert_false(utf8_valid("\xf4\x90\x80\x80", 4));	/* > U+10FFFF */
	assert_false(utf8_valid("\xf5\x80\x80\x80", 4));
	assert_false(utf8_valid("\xc2", 1));
	assert_false(utf8_valid("\xc2\x41", 2));
	assert_false(utf8_valid("\x80", 1));
}

/* Events carry the fixed fields in order, one line each; reopen follows a rename. */
static void
test_log_event_line(void **state)
{
	char dir[] = "/tmp/test_log.XXXXXX", path[256], moved[256], err[256];
	struct event_conn conn = {
		.session = 0xdeadbeefull, .src_ip = "192.0.2.1", .src_port = 40000,
		.dst_ip = "198.51.100.2", .dst_port = 25, .protocol = "smtp",
	};
	const char *prefix = "{\"eventid\":\"fosr.test\",\"timestamp\":\"";
	const char *rest = "\",\"session\":\"00000000deadbeef\",\"src_ip\":\"192.0.2.1\","
	    "\"src_port\":40000,\"dst_ip\":\"198.51.100.2\",\"dst_port\":25,"
	    "\"protocol\":\"smtp\",\"sensor\":\"s1\",\"x\":\"\\n\xef\xbf\xbd\"}\n";
	const char *pat = "dddd-dd-ddTdd:dd:dd.ddddddZ";
	struct jbuf jb;
	struct stat st;
	char *buf;
	size_t len, i, pl;

	mode_t old = umask(022);

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ev.json", dir);
	snprintf(moved, sizeof(moved), "%s/ev.json.1", dir);
	assert_int_equal(log_event_open(path, "s1", err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);
	umask(old);

	jb_init(&jb);
	log_event_begin(&jb, "fosr.test", &conn);
	jb_kstr(&jb, "x", "\n\xff", 2);
	log_event_emit(&jb);

	buf = slurp(path, &len);
	pl = strlen(prefix);
	assert_true(len > pl + strlen(pat));
	assert_memory_equal(buf, prefix, pl);
	for (i = 0; i < strlen(pat); i++) {
		if (pat[i] == 'd')
			assert_true(isdigit((unsigned char)buf[pl + i]));
		else
			assert_int_equal(buf[pl + i], pat[i]);
	}
	assert_string_equal(buf + pl + strlen(pat), rest);
	free(buf);

	/* A session-less event has no connection fields. */
	log_event_begin(&jb, "fosr.startup", NULL);
	log_event_emit(&jb);
	buf = slurp(path, &len);
	assert_non_null(strstr(buf, "\n{\"eventid\":\"fosr.startup\",\"timestamp\":\""));
	assert_non_null(strstr(buf, "Z\",\"sensor\":\"s1\"}\n"));
	assert_int_equal(buf[len - 1], '\n');
	free(buf);

	/* logrotate: rename, SIGHUP -> reopen, next event goes to the new file. */
	assert_int_equal(rename(path, moved), 0);
	log_event_reopen();
	log_event_begin(&jb, "fosr.after", NULL);
	log_event_emit(&jb);
	buf = slurp(path, &len);
	assert_non_null(strstr(buf, "\"eventid\":\"fosr.after\""));
	assert_ptr_equal(strchr(buf, '\n'), buf + len - 1);	/* one line */
	free(buf);
	buf = slurp(moved, &len);
	assert_null(strstr(buf, "fosr.after"));
	free(buf);

	/* Closed: events are discarded, nothing is written. */
	log_event_close();
	log_event_begin(&jb, "fosr.dropped", NULL);
	log_event_emit(&jb);
	buf = slurp(path, &len);
	assert_null(strstr(buf, "fosr.dropped"));
	free(buf);

	/* Empty path disables, bad path fails with a message. */
	assert_int_equal(log_event_open("", "s", err, sizeof(err)), 0);
	assert_int_equal(log_event_open("/nonexistent/dir/ev.json", "s", err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "/nonexistent/dir/ev.json"));

	jb_free(&jb);
	unlink(path);
	unlink(moved);
	rmdir(dir);
}

static int kicks;

/* The deferral's kick: count calls. */
static void
count_kick(void *arg)
{
	(void)arg;
	kicks++;
}

/* Another thread's event: written at once even while the loop thread defers. */
static void *
emit_other_thread(void *arg)
{
	struct jbuf jb;

	(void)arg;
	jb_init(&jb);
	log_event_begin(&jb, "fosr.other", NULL);
	log_event_emit(&jb);
	jb_free(&jb);
	return NULL;
}

/*
 * Deferred writes: the loop thread's events wait for log_flush() (one kick
 * per batch), come out in order, other threads write at once, and
 * log_defer_stop() writes what is left.
 */
static void
test_log_event_defer(void **state)
{
	char dir[] = "/tmp/test_log_defer.XXXXXX", path[256], err[256];
	struct jbuf jb;
	pthread_t th;
	char *buf, *a, *b;
	size_t len;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ev.json", dir);
	assert_int_equal(log_event_open(path, "s", err, sizeof(err)), 0);
	kicks = 0;
	log_defer_start(count_kick, NULL);
	jb_init(&jb);
	log_event_begin(&jb, "fosr.first", NULL);
	log_event_emit(&jb);
	log_event_begin(&jb, "fosr.second", NULL);
	log_event_emit(&jb);
	assert_int_equal(kicks, 1);
	buf = slurp(path, &len);
	assert_int_equal(len, 0);	/* nothing written yet */
	free(buf);

	assert_int_equal(pthread_create(&th, NULL, emit_other_thread, NULL), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	buf = slurp(path, &len);
	assert_non_null(strstr(buf, "fosr.other"));
	assert_null(strstr(buf, "fosr.first"));
	free(buf);

	log_flush();
	buf = slurp(path, &len);
	a = strstr(buf, "fosr.first");
	b = strstr(buf, "fosr.second");
	assert_non_null(a);
	assert_non_null(b);
	assert_true(a < b);
	free(buf);

	/* A new batch kicks again; stopping writes it. */
	log_event_begin(&jb, "fosr.third", NULL);
	log_event_emit(&jb);
	assert_int_equal(kicks, 2);
	log_defer_stop();
	buf = slurp(path, &len);
	assert_non_null(strstr(buf, "fosr.third"));
	free(buf);

	/* Not deferring any more: written at once. */
	log_event_begin(&jb, "fosr.fourth", NULL);
	log_event_emit(&jb);
	buf = slurp(path, &len);
	assert_non_null(strstr(buf, "fosr.fourth"));
	free(buf);
	jb_free(&jb);
	log_event_close();
	unlink(path);
	rmdir(dir);
}

/* Text lines are "TIMESTAMP level message", filtered by the threshold. */
static void
test_text_log(void **state)
{
	char path[] = "/tmp/test_log_txt.XXXXXX";
	char *buf;
	size_t len;
	int fd, saved;

	fd = mkstemp(path);
	assert_true(fd >= 0);
	saved = dup(2);
	dup2(fd, 2);
	log_init(LOG_LVL_INFO);
	assert_false(log_debug_enabled());
	log_info("hello %d", 5);
	log_debug("hidden");
	log_warn("w");
	log_init(LOG_LVL_DEBUG);
	assert_true(log_debug_enabled());
	log_debug("shown");
	log_init(LOG_LVL_ERR);
	log_warn("hidden too");
	log_err("e");
	dup2(saved, 2);
	close(saved);
	close(fd);
	buf = slurp(path, &len);
	unlink(path);
	assert_int_equal(len, 4 * 27 + strlen(" info hello 5\n warn w\n debug shown\n err e\n"));
	assert_memory_equal(buf + 27, " info hello 5\n", 14);
	assert_int_equal(buf[26], 'Z');
	assert_non_null(strstr(buf, "Z warn w\n"));
	assert_non_null(strstr(buf, "Z debug shown\n"));
	assert_non_null(strstr(buf, "Z err e\n"));
	assert_null(strstr(buf, "hidden"));
	free(buf);
	log_init(LOG_LVL_INFO);
}

/*
 * libevent's own lines go through the text log at their level, escaped, and
 * rate-limited: a flood (EMFILE on accept used to write a million lines in
 * 5 s) comes out as a few lines and a count of the suppressed ones.
 */
static void
test_libevent_log(void **state)
{
	char path[] = "/tmp/test_log_ev.XXXXXX";
	char *buf, *p;
	size_t len;
	int fd, saved, lines = 0;

	fd = mkstemp(path);
	assert_true(fd >= 0);
	saved = dup(2);
	dup2(fd, 2);
	log_init(LOG_LVL_INFO);
	log_libevent(EVENT_LOG_DEBUG, "quiet");
	log_libevent(EVENT_LOG_WARN, "Error from accept() call: bad\n\x1b");
	for (int i = 0; i < 100000; i++)
		log_libevent(EVENT_LOG_WARN, "Error from accept() call");
	/* the next window: the count of what the last one dropped */
	usleep((LOG_LIBEVENT_WINDOW_S * 1000 + 100) * 1000);
	log_libevent(EVENT_LOG_ERR, "last");
	dup2(saved, 2);
	close(saved);
	close(fd);
	buf = slurp(path, &len);
	unlink(path);
	for (p = buf; (p = strchr(p, '\n')) != NULL; p++)
		lines++;
	assert_true(lines <= LOG_LIBEVENT_BURST + 2);
	assert_null(strstr(buf, "quiet"));
	assert_non_null(strstr(buf, "Z warn libevent: Error from accept() call: bad\\n\\x1b\n"));
	assert_non_null(strstr(buf, "Z err libevent: last\n"));
	assert_non_null(strstr(buf, "lines suppressed"));
	free(buf);
}

/*
 * A repeated condition (log_series): a flood of occurrences is one line, a
 * flapping condition (occurs, ends, occurs...) two; the next window's line
 * and the closing line carry the counts; errno is kept.
 */
static void
test_log_series(void **state)
{
	struct log_series a, b;
	char path[] = "/tmp/test_log_series.XXXXXX";
	char *buf, *p;
	size_t len;
	int fd, saved, lines = 0;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	fd = mkstemp(path);
	assert_true(fd >= 0);
	saved = dup(2);
	dup2(fd, 2);
	log_init(LOG_LVL_INFO);
	for (int i = 0; i < 100000; i++) {
		errno = EMFILE;
		log_series(&a, LOG_LVL_WARN, "accept on smtp: %s", strerror(EMFILE));
		assert_int_equal(errno, EMFILE);
	}
	log_series_end(&a, LOG_LVL_INFO, "accepting again");
	/* Flapping: 1000 series in a row, a line each way at most. */
	for (int i = 0; i < 1000; i++) {
		log_series(&b, LOG_LVL_WARN, "refusing %d", i);
		log_series_end(&b, LOG_LVL_INFO, "refusals over");
	}
	/* A window later (made so): one line with what was held back. */
	b.last -= LOG_SERIES_S;
	b.last_end -= LOG_SERIES_S;
	log_series(&b, LOG_LVL_WARN, "refusing again");
	log_series_end(&b, LOG_LVL_INFO, "refusals over");
	dup2(saved, 2);
	close(saved);
	close(fd);
	buf = slurp(path, &len);
	unlink(path);
	for (p = buf; (p = strchr(p, '\n')) != NULL; p++)
		lines++;
	assert_int_equal(lines, 6);
	assert_non_null(strstr(buf, "Z warn accept on smtp: Too many open files\n"));
	assert_non_null(strstr(buf, "Z info accepting again (after 100000 occurrences)\n"));
	assert_non_null(strstr(buf, "Z warn refusing 0\n"));
	assert_non_null(strstr(buf, "Z info refusals over (after 1 occurrences)\n"));
	assert_non_null(strstr(buf, "Z warn refusing again (999 more not logged in the last"));
	assert_non_null(strstr(buf, "Z info refusals over (after 1000 occurrences)\n"));
	free(buf);
}

/* log_timestamp has the documented shape. */
static void
test_timestamp(void **state)
{
	char ts[64];

	log_timestamp(ts, sizeof(ts));
	assert_int_equal(strlen(ts), 27);
	assert_int_equal(ts[10], 'T');
	assert_int_equal(ts[19], '.');
	assert_int_equal(ts[26], 'Z');
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_basic),
		cmocka_unit_test(test_escape_truncate),
		cmocka_unit_test(test_escape_quote_fields),
		cmocka_unit_test(test_utf8_valid),
		cmocka_unit_test(test_log_event_line),
		cmocka_unit_test(test_log_event_defer),
		cmocka_unit_test(test_timestamp),
		cmocka_unit_test(test_text_log),
		cmocka_unit_test(test_libevent_log),
		cmocka_unit_test(test_log_series),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
