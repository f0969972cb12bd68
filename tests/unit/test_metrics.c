/* Unit tests for metrics.c: registry, exposition format, escaping, bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "metrics.h"
#include "testutil.h"

static char	*render(struct metrics *);
static void	 test_counter_gauge(void **);
static void	 test_escaping(void **);
static void	 test_overflow(void **);
static void	 test_label_cut(void **);
static void	 test_histogram(void **);
static void	 test_no_labels(void **);
static void	 test_pick(void **);
static void	 test_scrape_cb(void **);
static void	 test_global(void **);
static void	 test_accept_pause(void **);

/* The exposition text of m as a C string (the caller frees it). */
static char *
render(struct metrics *m)
{
	struct evbuffer *b = evbuffer_new();
	size_t len;
	char *s;

	assert_non_null(b);
	assert_int_equal(metrics_render(m, b), 0);
	len = evbuffer_get_length(b);
	s = malloc(len + 1);
	assert_non_null(s);
	evbuffer_remove(b, s, len);
	s[len] = '\0';
	evbuffer_free(b);
	return s;
}

/* HELP, TYPE and one line per label set; counters never go down. */
static void
test_counter_gauge(void **st)
{
	struct metrics *m = metrics_new();
	struct metric_family *c, *g;
	char *s;

	c = metrics_family(m, "t_conn_total", "Connections.", METRIC_COUNTER, "listener",
	    NULL, 0, 0);
	g = metrics_family(m, "t_active", "Active.", METRIC_GAUGE, "listener,kind", NULL, 0, 0);
	assert_non_null(c);
	assert_non_null(g);
	metric_add(c, (const char *[]){ "smtp" }, 1);
	metric_add(c, (const char *[]){ "smtp" }, 2);
	metric_add(c, (const char *[]){ "submission" }, 1);
	metric_add(c, (const char *[]){ "smtp" }, -5);	/* ignored: a counter */
	metric_set(g, (const char *[]){ "smtp", "a" }, 7);
	metric_add(g, (const char *[]){ "smtp", "a" }, -2);
	metric_set(g, (const char *[]){ "smtp", "b" }, 0.25);
	s = render(m);
	assert_string_equal(s,
	    "# HELP t_conn_total Connections.\n"
	    "# TYPE t_conn_total counter\n"
	    "t_conn_total{listener=\"smtp\"} 3\n"
	    "t_conn_total{listener=\"submission\"} 1\n"
	    "# HELP t_active Active.\n"
	    "# TYPE t_active gauge\n"
	    "t_active{listener=\"smtp\",kind=\"a\"} 5\n"
	    "t_active{listener=\"smtp\",kind=\"b\"} 0.25\n");
	free(s);
	metric_reset(g);
	s = render(m);
	assert_null(strstr(s, "t_active{"));
	free(s);
	metrics_free(m);
}

/* Label values escape backslash, double quote and newline; HELP backslash and newline. */
static void
test_escaping(void **st)
{
	struct metrics *m = metrics_new();
	struct metric_family *c;
	char *s;

	c = metrics_family(m, "t_total", "Line one\nback\\slash \"q\".", METRIC_COUNTER,
	    "rule", NULL, 0, 0);
	metric_add(c, (const char *[]){ "a\\b\"c\nd" }, 1);
	s = render(m);
	assert_string_equal(s,
	    "# HELP t_total Line one\\nback\\\\slash \"q\".\n"
	    "# TYPE t_total counter\n"
	    "t_total{rule=\"a\\\\b\\\"c\\nd\"} 1\n");
	free(s);
	metrics_free(m);
}

/* Past the cap, new label sets count under the overflow label set. */
static void
test_overflow(void **st)
{
	struct metrics *m = metrics_new();
	struct metric_family *c;
	char *s;

	c = metrics_family(m, "t_total", "T.", METRIC_COUNTER, "rule,stage", NULL, 0, 2);
	metric_add(c, (const char *[]){ "r1", "data" }, 1);
	metric_add(c, (const char *[]){ "r2", "data" }, 1);
	metric_add(c, (const char *[]){ "r3", "data" }, 1);
	metric_add(c, (const char *[]){ "r4", "ehlo" }, 2);
	metric_add(c, (const char *[]){ "r1", "data" }, 1);	/* known: its own series */
	for (int i = 0; i < 1000; i++) {
		char name[16];
		snprintf(name, sizeof(name), "x%d", i);
		metric_add(c, (const char *[]){ name, "data" }, 1);
	}
	s = render(m);
	assert_string_equal(s,
	    "# HELP t_total T.\n"
	    "# TYPE t_total counter\n"
	    "t_total{rule=\"r1\",stage=\"data\"} 2\n"
	    "t_total{rule=\"r2\",stage=\"data\"} 1\n"
	    "t_total{rule=\"__overflow__\",stage=\"__overflow__\"} 1003\n");
	free(s);
	metrics_free(m);
}

/* A long value is cut to METRICS_LABEL_MAX bytes, never inside a UTF-8 character. */
static void
test_label_cut(void **st)
{
	struct metrics *m = metrics_new();
	struct metric_family *c;
	char v[200], want[300];
	char *s;

	c = metrics_family(m, "t_total", "T.", METRIC_COUNTER, "l", NULL, 0, 0);
	/* 63 'a' then "é" (2 bytes): byte 64 is inside it, so the cut is at 63. */
	memset(v, 'a', 63);
	memcpy(v + 63, "\xc3\xa9zzzz", 7);
	metric_add(c, (const char *[]){ v }, 1);
	memset(v, 'b', sizeof(v) - 1);
	v[sizeof(v) - 1] = '\0';
	metric_add(c, (const char *[]){ v }, 1);
	s = render(m);
	snprintf(want, sizeof(want),
	    "# HELP t_total T.\n# TYPE t_total counter\n"
	    "t_total{l=\"%.63s\"} 1\nt_total{l=\"%.64s\"} 1\n",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", v);
	assert_string_equal(s, want);
	free(s);
	metrics_free(m);
}

/* Buckets are cumulative, +Inf is the count, _sum the sum. */
static void
test_histogram(void **st)
{
	static const double b[] = { 0.01, 0.1, 1 };
	struct metrics *m = metrics_new();
	struct metric_family *h;
	char *s;

	assert_null(metrics_family(m, "t_bad", "T.", METRIC_HISTOGRAM, "", NULL, 0, 0));
	h = metrics_family(m, "t_seconds", "T.", METRIC_HISTOGRAM, "", b, 3, 0);
	assert_non_null(h);
	metric_observe(h, NULL, 0.005);
	metric_observe(h, NULL, 0.01);	/* le is inclusive */
	metric_observe(h, NULL, 0.5);
	metric_observe(h, NULL, 2);
	s = render(m);
	assert_string_equal(s,
	    "# HELP t_seconds T.\n"
	    "# TYPE t_seconds histogram\n"
	    "t_seconds_bucket{le=\"0.01\"} 2\n"
	    "t_seconds_bucket{le=\"0.1\"} 2\n"
	    "t_seconds_bucket{le=\"1\"} 3\n"
	    "t_seconds_bucket{le=\"+Inf\"} 4\n"
	    "t_seconds_sum 2.515\n"
	    "t_seconds_count 4\n");
	free(s);
	metrics_free(m);
}

/* A family without labels shows 0 before anything happened; with labels, no sample. */
static void
test_no_labels(void **st)
{
	struct metrics *m = metrics_new();
	char *s;

	assert_non_null(metrics_family(m, "t_bytes", "B.", METRIC_GAUGE, "", NULL, 0, 0));
	assert_non_null(metrics_family(m, "t_total", "C.", METRIC_COUNTER, "x", NULL, 0, 0));
	assert_null(metrics_family(m, "t_4", "C.", METRIC_COUNTER, "a,b,c,d", NULL, 0, 0));
	assert_null(metrics_family(m, "t_e", "C.", METRIC_COUNTER, "a,,b", NULL, 0, 0));
	s = render(m);
	assert_string_equal(s,
	    "# HELP t_bytes B.\n# TYPE t_bytes gauge\nt_bytes 0\n"
	    "# HELP t_total C.\n# TYPE t_total counter\n");
	free(s);
	metrics_free(m);
}

/* Attacker words map to the known set or "other". */
static void
test_pick(void **st)
{
	assert_string_equal(metrics_pick("plain", 5, metrics_auth_mechs), "PLAIN");
	assert_string_equal(metrics_pick("CRAM-MD5", 8, metrics_auth_mechs), "CRAM-MD5");
	assert_string_equal(metrics_pick("PLAINX", 5, metrics_auth_mechs), "PLAIN");
	assert_string_equal(metrics_pick("PLAIN", 4, metrics_auth_mechs), "other");
	assert_string_equal(metrics_pick("a\"b\n", 4, metrics_auth_mechs), "other");
	assert_string_equal(metrics_pick("TLSv1.3", 7, metrics_tls_versions), "TLSv1.3");
	assert_string_equal(metrics_pick("", 0, metrics_tls_versions), "other");
}

static int	scrapes;
static struct metric_family *scrape_fam;

/* A scrape-time callback: sets a gauge to the number of scrapes. */
static void
scrape_cb(void *arg)
{
	scrapes++;
	metric_set(scrape_fam, NULL, (double)scrapes * *(int *)arg);
}

/* Callbacks run before each render, once per (fn, arg), and not after unwatch. */
static void
test_scrape_cb(void **st)
{
	struct metrics *m = metrics_new();
	int mul = 10;
	char *s;

	scrapes = 0;
	scrape_fam = metrics_family(m, "t_backlog_bytes", "B.", METRIC_GAUGE, "", NULL, 0, 0);
	assert_int_equal(metrics_watch(m, scrape_cb, &mul), 0);
	assert_int_equal(metrics_watch(m, scrape_cb, &mul), 0);
	s = render(m);
	assert_non_null(strstr(s, "\nt_backlog_bytes 10\n"));
	free(s);
	s = render(m);
	assert_non_null(strstr(s, "\nt_backlog_bytes 20\n"));
	free(s);
	metrics_unwatch(m, scrape_cb, &mul);
	s = render(m);
	assert_non_null(strstr(s, "\nt_backlog_bytes 20\n"));
	free(s);
	assert_int_equal(scrapes, 2);
	metrics_free(m);
}

/* The global helpers are no-ops before metrics_init and count after. */
static void
test_global(void **st)
{
	char *s;

	assert_null(metrics_global());
	metrics_inc(M_MESSAGES, "smtp", NULL);		/* no registry: nothing */
	assert_int_equal(metrics_on_scrape(scrape_cb, NULL), 0);
	assert_int_equal(metrics_init(), 0);
	metrics_inc(M_MESSAGES, "smtp", NULL);
	metrics_add(M_MESSAGE_BYTES, "smtp", NULL, 1234);
	metrics_inc(M_AUTH, metrics_pick("x\"y", 3, metrics_auth_mechs), "failure");
	metrics_observe(M_COMMIT_LATENCY, 0.003);
	/* a reply counts once, by its last line; nothing else is a reply */
	metrics_reply("250-mx.example", 14);
	metrics_reply("250 SMTPUTF8", 12);
	metrics_reply("354", 3);
	metrics_reply("35", 2);
	metrics_reply("999 x", 5);
	metrics_reply("1234", 4);
	s = render(metrics_global());
	assert_non_null(strstr(s, "\nfosr_smtpd_replies_total{class=\"2xx\"} 1\n"));
	assert_non_null(strstr(s, "\nfosr_smtpd_replies_total{class=\"3xx\"} 1\n"));
	assert_null(strstr(s, "class=\"other"));
	assert_non_null(strstr(s, "\nfosr_messages_received_total{listener=\"smtp\"} 1\n"));
	assert_non_null(strstr(s, "\nfosr_messages_received_bytes_total{listener=\"smtp\"} 1234\n"));
	assert_non_null(strstr(s,
	    "\nfosr_smtpd_auth_attempts_total{mechanism=\"other\",outcome=\"failure\"} 1\n"));
	assert_non_null(strstr(s, "\nfosr_commit_latency_seconds_bucket{le=\"0.005\"} 1\n"));
	assert_non_null(strstr(s, "\nfosr_commit_latency_seconds_bucket{le=\"0.0025\"} 0\n"));
	assert_non_null(strstr(s, "\nfosr_spool_free_bytes 0\n"));
	free(s);
	metrics_shutdown();
	assert_null(metrics_global());
}

/*
 * Out of descriptors with a connection waiting: the listener pauses (one
 * log line) instead of the loop spinning on accept(2) and libevent's
 * "Error from accept() call" (a million lines in 5 s before).
 */
static void
test_accept_pause(void **st)
{
	char path[] = "/tmp/test_metrics_emfile.XXXXXX";
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	struct event_base *base;
	struct rlimit rl, low;
	struct rusage r0, r1;
	struct timeval tv = { 0, 300000 };
	char err[256], *buf, *p;
	int lfd, c, logfd, saved, fds[256], nfds = 0, pauses = 0;
	long us;
	size_t len;

	assert_non_null(base = event_base_new());
	/* a free port: bind 0, read it, close */
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true((lfd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
	close(lfd);
	assert_int_equal(metrics_listen(base, "127.0.0.1", ntohs(sin.sin_port), err,
	    sizeof(err)), 0);
	assert_true((c = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	assert_int_equal(connect(c, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_true((logfd = mkstemp(path)) >= 0);
	saved = dup(2);
	dup2(logfd, 2);
	/* no descriptor left for accept(2) */
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	low = rl;
	low.rlim_cur = 64;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	while (nfds < 256 && (fds[nfds] = dup(0)) != -1)
		nfds++;
	getrusage(RUSAGE_SELF, &r0);
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	getrusage(RUSAGE_SELF, &r1);
	while (nfds > 0)
		close(fds[--nfds]);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	dup2(saved, 2);
	close(saved);
	close(logfd);
	close(c);
	buf = slurp(path, &len);
	unlink(path);
	for (p = buf; (p = strstr(p, "pausing")) != NULL; p++)
		pauses++;
	assert_int_equal(pauses, 1);
	assert_null(strstr(buf, "Error from accept"));
	/* a spin detector: 300 ms of a loop spinning on accept is ~300 ms of CPU */
	us = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec -
	    r0.ru_stime.tv_sec) * 1000000L + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) +
	    (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
	assert_true(us < 150000);
	free(buf);
	metrics_shutdown();
	event_base_free(base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counter_gauge),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test(test_overflow),
		cmocka_unit_test(test_label_cut),
		cmocka_unit_test(test_histogram),
		cmocka_unit_test(test_no_labels),
		cmocka_unit_test(test_pick),
		cmocka_unit_test(test_scrape_cb),
		cmocka_unit_test(test_global),
		cmocka_unit_test(test_accept_pause),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
