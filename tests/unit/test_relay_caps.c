/* Unit tests for relay_caps.c: every cap, exact limits, persistence, locking, never-relay list. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "relay_caps.h"

#define T0	1764218130

static char	 dir[256];

static void	 limits(struct cfg_relay_caps *);
static void	 sha_of(char *, int);
static int	 take(struct relay_caps *, const char *, const char *, const char *, time_t);
static struct relay_caps *open_caps(const struct cfg_relay_caps *);

/* Generous limits; each test tightens the one it checks. */
static void
limits(struct cfg_relay_caps *l)
{
	memset(l, 0, sizeof(*l));
	l->per_day = 1000;
	l->per_hour = 1000;
	l->per_recipient = 1000;
	l->per_domain = 1000;
	l->per_client_ip = 1000;
	l->per_client_network = 1000;
	l->max_recipients = 1;
	l->max_size = 1024 * 1024;
}

/* A distinct fake sha256 for i. */
static void
sha_of(char *out, int i)
{
	snprintf(out, 65, "%064x", i + 1);
}

/* Check, then reserve and persist one relay; 0 allowed, -1 refused. */
static int
take(struct relay_caps *c, const char *sha, const char *ip, const char *rcpt, time_t now)
{
	const char *rc[1] = { rcpt };
	struct relay_caps_req q = { sha, ip, rc, 1, 100 };
	char why[256], err[256], *line;
	size_t len;

	if (relay_caps_check(c, &q, now, why, sizeof(why)) == -1)
		return -1;
	assert_int_equal(relay_caps_reserve(c, &q, now, "test", &line, &len), 0);
	assert_int_equal(relay_caps_persist(c, line, len, err, sizeof(err)), 0);
	free(line);
	return 0;
}

/* Open the writable journal in the test directory. */
static struct relay_caps *
open_caps(const struct cfg_relay_caps *l)
{
	char err[256];
	struct relay_caps *c = relay_caps_open(dir, "caps", l, false, err, sizeof(err));

	if (c == NULL)
		fail_msg("relay_caps_open: %s", err);
	return c;
}

/* A fresh directory per test. */
static int
setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/test_relay_caps.XXXXXX");
	assert_non_null(mkdtemp(dir));
	return 0;
}

/* Remove the directory. */
static int
teardown(void **state)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* per_day 20: exactly 20 pass, the 21st is refused, also a day minus a second later. */
static void
test_per_day_exact(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	char sha[65], why[256];
	int i;

	limits(&l);
	l.per_day = 20;
	c = open_caps(&l);
	for (i = 0; i < 20; i++) {
		sha_of(sha, i);
		assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", T0 + i), 0);
	}
	sha_of(sha, 20);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", T0 + 20), -1);
	{
		const char *rc[1] = { "a@example.org" };
		struct relay_caps_req q = { sha, "192.0.2.1", rc, 1, 100 };
		assert_int_equal(relay_caps_check(c, &q, T0 + 86399, why, sizeof(why)), -1);
		assert_non_null(strstr(why, "per_day"));
		/* The first one ages out after a whole day: one slot again. */
		assert_int_equal(relay_caps_check(c, &q, T0 + 86400, why, sizeof(why)), 0);
	}
	assert_int_equal(relay_caps_count_day(c, T0 + 30), 20);
	relay_caps_free(c);
}

/* per_hour: the 4th of an hour is refused, allowed again an hour later. */
static void
test_per_hour(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	char sha[65];

	limits(&l);
	l.per_hour = 3;
	c = open_caps(&l);
	for (int i = 0; i < 3; i++) {
		sha_of(sha, i);
		assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", T0 + i * 60), 0);
	}
	sha_of(sha, 3);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", T0 + 600), -1);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", T0 + 3600), 0);
	relay_caps_free(c);
}

/* per_recipient (case-insensitive), per_domain, per_client_ip. */
static void
test_per_rcpt_domain_ip(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	char sha[65];
	int n = 0;

	limits(&l);
	l.per_recipient = 2;
	l.per_domain = 3;
	l.per_client_ip = 4;
	c = open_caps(&l);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", T0), 0);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.2", "A@Example.ORG", T0), 0);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.3", "a@example.org", T0), -1);	/* recipient */
	assert_int_equal(take(c, sha, "192.0.2.3", "b@example.org", T0), 0);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.3", "c@example.org", T0), -1);	/* domain */
	/* Client IP: 192.0.2.9 four times to other domains, the fifth refused. */
	for (int i = 0; i < 4; i++) {
		char rc[64];
		snprintf(rc, sizeof(rc), "x@d%d.example", i);
		sha_of(sha, n++);
		assert_int_equal(take(c, sha, "192.0.2.9", rc, T0), 0);
	}
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.9", "y@other.example", T0), -1);
	assert_int_equal(take(c, sha, "192.0.2.10", "y@other.example", T0), 0);
	relay_caps_free(c);
}

/*
 * per_client_network: one /24 (or IPv6 /64, or an IPv4-mapped /24) cannot
 * take more than its share of the day, whatever addresses of it send; the
 * next network still gets its probe through, and a reopened journal (a
 * restart) counts the same.
 */
static void
test_per_client_network(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	struct relay_caps_usage u;
	const char *rc[1] = { "z@example.org" };
	struct relay_caps_req q;
	char sha[65], why[256], rcpt[64];
	int n = 0;
	/* Now: the reopen compacts what is older than a day. */
	time_t t0 = time(NULL);

	limits(&l);
	l.per_day = 8;
	l.per_client_network = 3;
	c = open_caps(&l);
	for (int i = 0; i < 3; i++) {
		char ip[32];
		snprintf(ip, sizeof(ip), "198.51.100.%d", 10 + i);
		snprintf(rcpt, sizeof(rcpt), "a%d@example.org", i);
		sha_of(sha, n++);
		assert_int_equal(take(c, sha, ip, rcpt, t0), 0);
	}
	/* A fourth address of the /24, also written IPv4-mapped: refused. */
	sha_of(sha, n++);
	q = (struct relay_caps_req){ sha, "198.51.100.200", rc, 1, 100 };
	assert_int_equal(relay_caps_check(c, &q, t0, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "per_client_network: 3 of 3 used (198.51.100.0/24)"));
	relay_caps_usage(c, &q, t0, &u);
	assert_int_equal(u.client_network, 3);
	assert_int_equal(take(c, sha, "::ffff:198.51.100.201", "b@example.org", t0), -1);
	/* Another /24 next door, and IPv6: /64 by /64. */
	assert_int_equal(take(c, sha, "198.51.101.1", "b@example.org", t0), 0);
	for (int i = 0; i < 3; i++) {
		char ip[64];
		snprintf(ip, sizeof(ip), "2001:db8:0:1:%x::1", i + 1);
		snprintf(rcpt, sizeof(rcpt), "c%d@example.org", i);
		sha_of(sha, n++);
		assert_int_equal(take(c, sha, ip, rcpt, t0), 0);
	}
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "2001:db8:0:1::9", "d@example.org", t0), -1);
	assert_int_equal(take(c, sha, "2001:db8:0:2::9", "d@example.org", t0), 0);
	relay_caps_free(c);

	/* Reopened: the counts are the journal's. */
	c = open_caps(&l);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "198.51.100.77", "e@example.org", t0 + 60), -1);
	assert_int_equal(take(c, sha, "2001:db8:0:1:ffff::2", "e@example.org", t0 + 60), -1);
	/* A day later the share is free again. */
	assert_int_equal(take(c, sha, "198.51.100.77", "e@example.org", t0 + 86400), 0);
	relay_caps_free(c);
}

/* The default share is a quarter of per_day (at least 1). */
static void
test_per_client_network_default(void **state)
{
	struct cfg_relay_caps l;

	limits(&l);
	l.per_client_network = -1;
	l.per_day = 20;
	assert_int_equal(cfg_relay_caps_per_network(&l), 5);
	l.per_day = 3;
	assert_int_equal(cfg_relay_caps_per_network(&l), 1);
	l.per_client_network = 7;
	assert_int_equal(cfg_relay_caps_per_network(&l), 7);
}

/* The same content is never relayed twice, not even a week later. */
static void
test_same_sha256(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	char sha[65];

	limits(&l);
	c = open_caps(&l);
	sha_of(sha, 7);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", T0), 0);
	assert_int_equal(take(c, sha, "192.0.2.2", "b@example.net", T0 + 1), -1);
	relay_caps_free(c);
	c = open_caps(&l);
	assert_int_equal(take(c, sha, "192.0.2.2", "b@example.net", T0 + 7 * 86400), -1);
	relay_caps_free(c);
}

/* max_recipients and max_size. */
static void
test_recipients_and_size(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	const char *two[2] = { "a@example.org", "b@example.org" };
	char sha[65], why[256];
	struct relay_caps_req q;

	limits(&l);
	l.max_size = 1000;
	c = open_caps(&l);
	sha_of(sha, 1);
	q = (struct relay_caps_req){ sha, "192.0.2.1", two, 2, 100 };
	assert_int_equal(relay_caps_check(c, &q, T0, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "max_recipients"));
	q.nrcpt = 1;
	assert_int_equal(relay_caps_check(c, &q, T0, why, sizeof(why)), 0);
	q.size = 1001;
	assert_int_equal(relay_caps_check(c, &q, T0, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "max_size"));
	q.nrcpt = 0;
	q.size = 10;
	assert_int_equal(relay_caps_check(c, &q, T0, why, sizeof(why)), -1);
	relay_caps_free(c);
}

/* 20 taken, closed, reopened (as after kill -9): the 21st is still refused. */
static void
test_persistence(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	char sha[65], path[300];
	int fd;

	limits(&l);
	l.per_day = 20;
	c = open_caps(&l);
	for (int i = 0; i < 20; i++) {
		sha_of(sha, i);
		assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", time(NULL)), 0);
	}
	relay_caps_free(c);
	/* A torn line (crash in the middle of an append) is cut off at open. */
	snprintf(path, sizeof(path), "%s/caps.log", dir);
	fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "{\"t\":1,\"sha2", 12), 12);
	close(fd);
	c = open_caps(&l);
	assert_int_equal(relay_caps_count_day(c, time(NULL)), 20);
	sha_of(sha, 20);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", time(NULL)), -1);
	relay_caps_free(c);
	/* The torn tail is gone: every line of the file parses. */
	{
		FILE *f = fopen(path, "r");
		char line[1024];
		int n = 0;
		assert_non_null(f);
		while (fgets(line, sizeof(line), f)) {
			assert_non_null(strchr(line, '\n'));
			n++;
		}
		fclose(f);
		assert_int_equal(n, 20);
	}
}

/* Reservation counts in memory before any write: the next check already sees it. */
static void
test_reserve_counts_at_once(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	const char *rc[1] = { "a@example.org" };
	char sha1[65], sha2[65], why[256], *line;
	size_t len;
	struct relay_caps_req q1 = { sha1, "192.0.2.1", rc, 1, 10 };
	struct relay_caps_req q2 = { sha2, "192.0.2.1", rc, 1, 10 };

	limits(&l);
	l.per_day = 1;
	c = open_caps(&l);
	sha_of(sha1, 1);
	sha_of(sha2, 2);
	assert_int_equal(relay_caps_check(c, &q1, T0, why, sizeof(why)), 0);
	assert_int_equal(relay_caps_check(c, &q2, T0, why, sizeof(why)), 0);
	assert_int_equal(relay_caps_reserve(c, &q1, T0, "test", &line, &len), 0);
	/* Not yet persisted, yet the second probe cannot race past the cap. */
	assert_int_equal(relay_caps_check(c, &q2, T0, why, sizeof(why)), -1);
	free(line);
	relay_caps_free(c);
}

/* One writer at a time; a read-only view works beside it. */
static void
test_lock(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c, *c2;
	char err[256], sha[65];

	limits(&l);
	c = open_caps(&l);
	sha_of(sha, 1);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", time(NULL)), 0);
	c2 = relay_caps_open(dir, "caps", &l, false, err, sizeof(err));
	assert_null(c2);
	assert_non_null(strstr(err, "locked"));
	c2 = relay_caps_open(dir, "caps", &l, true, err, sizeof(err));
	assert_non_null(c2);
	assert_int_equal(relay_caps_count_day(c2, time(NULL)), 1);
	relay_caps_free(c2);
	relay_caps_free(c);
	/* Read-only over a missing journal: empty. */
	c2 = relay_caps_open(dir, "nothing", &l, true, err, sizeof(err));
	assert_non_null(c2);
	assert_int_equal(relay_caps_count_day(c2, time(NULL)), 0);
	relay_caps_free(c2);
}

/* Take with several recipients at once; 0 allowed, -1 refused. */
static int
take_n(struct relay_caps *c, const char *sha, const char *ip, const char *const *rc,
    int n, time_t now)
{
	struct relay_caps_req q = { sha, ip, rc, n, 100 };
	char why[256], err[256], *line;
	size_t len;

	if (relay_caps_check(c, &q, now, why, sizeof(why)) == -1)
		return -1;
	assert_int_equal(relay_caps_reserve(c, &q, now, "test", &line, &len), 0);
	assert_int_equal(relay_caps_persist(c, line, len, err, sizeof(err)), 0);
	free(line);
	return 0;
}

/* Reopen (as after a restart) and return the new handle. */
static struct relay_caps *
reopen(struct relay_caps *c, const struct cfg_relay_caps *l)
{
	relay_caps_free(c);
	return open_caps(l);
}

/* The journal's path. */
static const char *
caps_path(void)
{
	static char path[300];

	snprintf(path, sizeof(path), "%s/caps.log", dir);
	return path;
}

/* Append raw bytes to the journal. */
static void
append_raw(const char *s, size_t len)
{
	int fd = open(caps_path(), O_WRONLY | O_APPEND | O_CREAT, 0640);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, s, len), (ssize_t)len);
	close(fd);
}

/* The journal's size. */
static off_t
caps_size(void)
{
	struct stat st;

	assert_int_equal(stat(caps_path(), &st), 0);
	return st.st_size;
}

/* Each cap, taken to its limit, still holds after a restart. */
static void
test_restart_each_cap(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	char sha[65];
	time_t now = time(NULL);
	int n = 0;

	/* per_day */
	limits(&l);
	l.per_day = 2;
	c = open_caps(&l);
	for (int i = 0; i < 2; i++) {
		sha_of(sha, n++);
		assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", now), 0);
	}
	c = reopen(c, &l);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.2", "b@example.net", now), -1);
	relay_caps_free(c);
	unlink(caps_path());

	/* per_hour */
	limits(&l);
	l.per_hour = 2;
	c = open_caps(&l);
	for (int i = 0; i < 2; i++) {
		sha_of(sha, n++);
		assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", now), 0);
	}
	c = reopen(c, &l);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.2", "b@example.net", now), -1);
	relay_caps_free(c);
	unlink(caps_path());

	/* per_client_ip */
	limits(&l);
	l.per_client_ip = 2;
	c = open_caps(&l);
	for (int i = 0; i < 2; i++) {
		char rc[64];
		snprintf(rc, sizeof(rc), "a@d%d.example", i);
		sha_of(sha, n++);
		assert_int_equal(take(c, sha, "192.0.2.7", rc, now), 0);
	}
	c = reopen(c, &l);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.7", "z@other.example", now), -1);
	assert_int_equal(take(c, sha, "192.0.2.8", "z@other.example", now), 0);
	relay_caps_free(c);
	unlink(caps_path());

	/* per_recipient, per_domain */
	limits(&l);
	l.per_recipient = 1;
	l.per_domain = 2;
	c = open_caps(&l);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", now), 0);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.1", "b@example.org", now), 0);
	c = reopen(c, &l);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.net", now), 0);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.net", now), -1);	/* recipient */
	assert_int_equal(take(c, sha, "192.0.2.1", "c@example.org", now), -1);	/* domain */
	relay_caps_free(c);
	unlink(caps_path());

	/* same sha256 */
	limits(&l);
	c = open_caps(&l);
	sha_of(sha, 999);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", now), 0);
	c = reopen(c, &l);
	assert_int_equal(take(c, sha, "192.0.2.2", "b@example.net", now), -1);
	relay_caps_free(c);
}

/* Recipients of every length the relay takes (up to 519 bytes) and every recipient of a line reload. */
static void
test_restart_long_and_many_rcpts(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	char sha[65], longa[520], longb[520];
	const char *many[12];
	char manybuf[12][48];
	time_t now = time(NULL);

	limits(&l);
	l.per_recipient = 1;
	l.max_recipients = 20;
	c = open_caps(&l);
	memset(longa, 'a', sizeof(longa));
	memcpy(longa + 519 - 12, "@example.org", 13);
	memset(longb, 'b', sizeof(longb));
	memcpy(longb + 300 - 12, "@example.org", 13);
	sha_of(sha, 1);
	assert_int_equal(take(c, sha, "192.0.2.1", longa, now), 0);
	sha_of(sha, 2);
	assert_int_equal(take(c, sha, "192.0.2.1", longb, now), 0);
	for (int i = 0; i < 12; i++) {
		snprintf(manybuf[i], sizeof(manybuf[i]), "r%d@m%d.example", i, i);
		many[i] = manybuf[i];
	}
	sha_of(sha, 3);
	assert_int_equal(take_n(c, sha, "192.0.2.1", many, 12, now), 0);
	c = reopen(c, &l);
	sha_of(sha, 4);
	assert_int_equal(take(c, sha, "192.0.2.1", longa, now), -1);
	assert_int_equal(take(c, sha, "192.0.2.1", longb, now), -1);
	for (int i = 0; i < 12; i++)
		assert_int_equal(take(c, sha, "192.0.2.1", many[i], now), -1);
	assert_int_equal(relay_caps_count_day(c, now), 3);
	relay_caps_free(c);
}

/* A complete line that does not parse: open works, relaying is refused, naming the file and line. */
static void
test_corrupt_line_fails_closed(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	const char *rc[1] = { "a@example.org" };
	char sha[65], why[512];
	struct relay_caps_req q = { sha, "192.0.2.1", rc, 1, 100 };
	time_t now = time(NULL);
	off_t size;

	limits(&l);
	c = open_caps(&l);
	sha_of(sha, 1);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", now), 0);
	relay_caps_free(c);
	append_raw("{\"t\":12,\"sha256\":\"nothex\"}\n", 27);
	size = caps_size();
	c = open_caps(&l);
	sha_of(sha, 2);
	assert_int_equal(relay_caps_check(c, &q, now, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "caps.log"));
	assert_non_null(strstr(why, "line 2"));
	/* Nothing was cut or rewritten: the operator looks at the file as it was. */
	relay_caps_free(c);
	assert_int_equal(caps_size(), size);
}

/* A torn tail is cut at open; a short write in persist is undone. */
static void
test_torn_tail_and_short_write(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	char sha[65], err[256];
	time_t now = time(NULL);
	off_t size;

	limits(&l);
	l.per_recipient = 1;
	c = open_caps(&l);
	sha_of(sha, 1);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", now), 0);
	size = caps_size();
	/* A real short write (the file size limit lets 10 bytes through): cut back. */
	{
		const char *rc[1] = { "c@example.org" };
		struct relay_caps_req q = { sha, "192.0.2.1", rc, 1, 100 };
		struct rlimit old, lim;
		char *line;
		size_t len;

		sha_of(sha, 9);
		assert_int_equal(relay_caps_reserve(c, &q, now, "test", &line, &len), 0);
		signal(SIGXFSZ, SIG_IGN);
		assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
		lim = old;
		lim.rlim_cur = (rlim_t)size + 10;
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
		assert_int_equal(relay_caps_persist(c, line, len, err, sizeof(err)), -1);
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
		free(line);
		assert_int_equal(caps_size(), size);
	}
	/* The next line is whole, not glued to a fragment. */
	sha_of(sha, 2);
	assert_int_equal(take(c, sha, "192.0.2.1", "b@example.org", now), 0);
	relay_caps_free(c);
	append_raw("{\"t\":1,\"sha", 11);
	c = open_caps(&l);
	sha_of(sha, 3);
	assert_int_equal(take(c, sha, "192.0.2.1", "a@example.org", now), -1);
	assert_int_equal(take(c, sha, "192.0.2.1", "b@example.org", now), -1);
	assert_int_equal(relay_caps_count_day(c, now), 2);
	relay_caps_free(c);
}

/* Compaction at open: old lines keep only their sha256, recent ones stay whole. */
static void
test_compaction(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	char sha[65], line[512], old[65];
	time_t now = time(NULL);
	off_t before;
	int n;
	FILE *f;

	limits(&l);
	l.per_recipient = 1;
	/* 200 reservations two days ago, two in the last hour. */
	for (int i = 0; i < 200; i++) {
		sha_of(sha, i);
		n = snprintf(line, sizeof(line), "{\"t\":%lld,\"sha256\":\"%s\",\"src_ip\":"
		    "\"192.0.2.1\",\"rcpt\":[\"old%d@example.org\"],\"source\":\"daemon\"}\n",
		    (long long)(now - 2 * 86400), sha, i);
		append_raw(line, (size_t)n);
	}
	sha_of(old, 5);
	c = open_caps(&l);
	sha_of(sha, 500);
	assert_int_equal(take(c, sha, "192.0.2.1", "new@example.org", now - 60), 0);
	relay_caps_free(c);
	before = caps_size();
	c = open_caps(&l);
	relay_caps_free(c);
	/* Already compact: the second open changes nothing. */
	assert_int_equal(caps_size(), before);
	f = fopen(caps_path(), "r");
	assert_non_null(f);
	n = 0;
	while (fgets(line, sizeof(line), f)) {
		assert_non_null(strchr(line, '\n'));
		if (strstr(line, "old") != NULL)
			fail_msg("an old recipient survived compaction: %s", line);
		n++;
	}
	fclose(f);
	assert_int_equal(n, 201);
	c = open_caps(&l);
	/* The old sha256 is still refused, the recent recipient still counted. */
	assert_int_equal(take(c, old, "192.0.2.9", "x@example.net", now), -1);
	sha_of(sha, 501);
	assert_int_equal(take(c, sha, "192.0.2.9", "new@example.org", now), -1);
	assert_int_equal(take(c, sha, "192.0.2.9", "old1@example.org", now), 0);
	relay_caps_free(c);
}

/* A compaction that cannot be written (its temporary name is taken) does not stop the open. */
static void
test_compaction_failure_not_fatal(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	char sha[65], line[512];
	time_t now = time(NULL);
	off_t before;
	int n;

	limits(&l);
	sha_of(sha, 1);
	n = snprintf(line, sizeof(line), "{\"t\":%lld,\"sha256\":\"%s\",\"src_ip\":\"192.0.2.1\","
	    "\"rcpt\":[\"old@example.org\"],\"source\":\"daemon\"}\n",
	    (long long)(now - 3 * 86400), sha);
	append_raw(line, (size_t)n);
	before = caps_size();
	snprintf(line, sizeof(line), "%s.tmp", caps_path());
	assert_int_equal(mkdir(line, 0700), 0);	/* even root cannot open it as a file */
	c = open_caps(&l);
	assert_int_equal(rmdir(line), 0);
	assert_int_equal(caps_size(), before);
	assert_int_equal(take(c, sha, "192.0.2.1", "x@example.net", now), -1);	/* same sha256 */
	relay_caps_free(c);
}

/* The never-relay list forms. */
static void
test_never_relay(void **state)
{
	static const char list[][CFG_RELAY_ENTRY_MAX] = {
		"postmaster@", "abuse@", "mail-abuse.org", "@blocked.example",
		"someone@example.com",
	};
	const char *w = NULL;
	int n = 5;

	assert_true(relay_caps_never_relay(list, n, "postmaster@example.net", &w));
	assert_string_equal(w, "postmaster@");
	assert_true(relay_caps_never_relay(list, n, "PostMaster@example.net", NULL));
	assert_true(relay_caps_never_relay(list, n, "abuse@x.y", NULL));
	assert_false(relay_caps_never_relay(list, n, "notabuse@x.y", NULL));
	assert_false(relay_caps_never_relay(list, n, "abuse.x@x.y", NULL));
	assert_true(relay_caps_never_relay(list, n, "a@mail-abuse.org", NULL));
	assert_true(relay_caps_never_relay(list, n, "a@relay-test.MAIL-ABUSE.org", NULL));
	assert_false(relay_caps_never_relay(list, n, "a@notmail-abuse.org", NULL));
	assert_true(relay_caps_never_relay(list, n, "x@blocked.example", NULL));
	assert_true(relay_caps_never_relay(list, n, "someone@EXAMPLE.com", NULL));
	assert_false(relay_caps_never_relay(list, n, "someone2@example.com", NULL));
	assert_false(relay_caps_never_relay(list, n, "drop@spammer.example", NULL));
	/*
	 * Subaddresses (recipient_delimiter "+" or "-") reach the listed
	 * mailbox: postmaster+x@ is postmaster@ at most providers.
	 */
	assert_true(relay_caps_never_relay(list, n, "postmaster+x@example.net", &w));
	assert_string_equal(w, "postmaster@");
	assert_true(relay_caps_never_relay(list, n, "Abuse-Reports@x.y", NULL));
	assert_true(relay_caps_never_relay(list, n, "abuse+@x.y", NULL));
	assert_true(relay_caps_never_relay(list, n, "someone+tag@example.com", NULL));
	assert_true(relay_caps_never_relay(list, n, "someone-tag@EXAMPLE.com", NULL));
	assert_false(relay_caps_never_relay(list, n, "someone+tag@example.org", NULL));
	assert_false(relay_caps_never_relay(list, n, "abusex@x.y", NULL));
	assert_false(relay_caps_never_relay(list, n, "abuse_x@x.y", NULL));
	assert_false(relay_caps_never_relay(list, n, "x+abuse@x.y", NULL));
	assert_string_equal(relay_addr_domain("a@b@c.example"), "c.example");
	assert_string_equal(relay_addr_domain("nodomain"), "");
}

/* Equivalent address forms (issue: quoted, escaped, case, trailing dot) match the never-relay list. */
static void
test_never_relay_equivalent_forms(void **state)
{
	struct cfg *cf = malloc(sizeof(*cf));
	const char *w;

	assert_non_null(cf);
	cfg_defaults(cf);
#define NR(a) relay_caps_never_relay(cf->relay.never_relay, cf->relay.nnever, (a), &w)
	assert_true(NR("abuse@example.com"));
	assert_true(NR("\"abuse\"@example.com"));
	assert_true(NR("\"postmaster\"@example.net"));
	assert_true(NR("post\\master@example.net"));
	assert_true(NR("\"post\\master\"@example.net"));
	assert_true(NR("\"ABUSE\"@example.com"));
	assert_true(NR("x@SpamHaus.Org."));
	assert_true(NR("x@relay.spamhaus.org."));
	assert_true(NR("x@spamhaus.org.."));
	assert_true(NR("postmaster"));		/* no domain: Postfix takes it */
	assert_true(NR("\"postmaster\""));
	assert_false(NR("\"abuse x\"@example.com"));
	assert_false(NR("drop@spammer.example"));
	assert_false(NR("a@[1.2.3.4]"));
	{
		static const char list[][CFG_RELAY_ENTRY_MAX] = {
			"bücher.example", "someone@example.com", "xn--mnchen-3ya.example",
		};
		assert_true(relay_caps_never_relay(list, 3, "a@xn--bcher-kva.example", NULL));
		assert_true(relay_caps_never_relay(list, 3, "a@B\xc3\xbc" "cher.example", NULL));
		assert_true(relay_caps_never_relay(list, 3, "a@m\xc3\xbcnchen.example.", NULL));
		assert_true(relay_caps_never_relay(list, 3, "\"someone\"@Example.COM.", NULL));
		assert_false(relay_caps_never_relay(list, 3, "someone@example.comx", NULL));
	}
#undef NR
	{
		/* ipv4_only_domains: a domain and its subdomains, canonical forms compared. */
		static const char v4[][CFG_RELAY_ENTRY_MAX] = { "gmail.com", "@b\xc3\xbc" "cher.example" };
		char longdom[600];

		assert_true(relay_domain_in_list(v4, 2, "GMail.COM.", &w));
		assert_string_equal(w, "gmail.com");
		assert_true(relay_domain_in_list(v4, 2, "alt1.gmail.com", NULL));
		assert_true(relay_domain_in_list(v4, 2, "xn--bcher-kva.example", NULL));
		assert_false(relay_domain_in_list(v4, 2, "notgmail.com", NULL));
		assert_false(relay_domain_in_list(v4, 2, "", NULL));
		/* Longer than a list entry: compared whole, not truncated into a match. */
		memset(longdom, 'a', sizeof(longdom));
		snprintf(longdom + sizeof(longdom) - 12, 12, ".gmail.comx");
		assert_false(relay_domain_in_list(v4, 2, longdom, NULL));
		snprintf(longdom + sizeof(longdom) - 12, 12, "..gmail.com");
		assert_true(relay_domain_in_list(v4, 2, longdom, NULL));
	}
	free(cf);
}

/* The per-recipient and per-domain caps count equivalent forms as one, also after a restart. */
static void
test_caps_equivalent_forms(void **state)
{
	struct cfg_relay_caps l;
	struct relay_caps *c;
	char sha[65];
	time_t now = time(NULL);
	static const char *const forms[] = {
		"\"drop\"@spammer.example", "dr\\op@spammer.example", "drop@SPAMMER.example.",
		"\"dr\\op\"@spammer.example", "DROP@spammer.example",
	};
	int n = 0;

	limits(&l);
	l.per_recipient = 1;
	l.per_domain = 2;
	c = open_caps(&l);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.1", "drop@spammer.example", now), 0);
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		sha_of(sha, n++);
		assert_int_equal(take(c, sha, "192.0.2.1", forms[i], now), -1);
	}
	c = reopen(c, &l);
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		sha_of(sha, n++);
		assert_int_equal(take(c, sha, "192.0.2.1", forms[i], now), -1);
	}
	/* per_domain: one more at the domain (another form of it), then full. */
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.1", "other@Spammer.Example.", now), 0);
	sha_of(sha, n++);
	assert_int_equal(take(c, sha, "192.0.2.1", "third@spammer.example", now), -1);
	relay_caps_free(c);
}

/* The shipped defaults refuse postmaster@ and abuse@. */
static void
test_never_relay_defaults(void **state)
{
	struct cfg *c = malloc(sizeof(*c));

	assert_non_null(c);
	cfg_defaults(c);
	assert_true(relay_caps_never_relay(c->relay.never_relay, c->relay.nnever,
	    "postmaster@gmail.com", NULL));
	assert_true(relay_caps_never_relay(c->relay.never_relay, c->relay.nnever,
	    "abuse@gmail.com", NULL));
	assert_false(relay_caps_never_relay(c->relay.never_relay, c->relay.nnever,
	    "dropbox@gmail.com", NULL));
	assert_int_equal(c->relay.caps.per_day, 20);
	assert_int_equal(c->relay.caps.max_recipients, 1);
	assert_int_equal(c->relay.mode, RELAY_MODE_DRY_RUN);
	free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_per_day_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_per_hour, setup, teardown),
		cmocka_unit_test_setup_teardown(test_per_rcpt_domain_ip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_sha256, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recipients_and_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reserve_counts_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_each_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_long_and_many_rcpts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_line_fails_closed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_and_short_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compaction_failure_not_fatal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_per_client_network, setup, teardown),
		cmocka_unit_test(test_per_client_network_default),
		cmocka_unit_test(test_never_relay),
		cmocka_unit_test(test_never_relay_defaults),
		cmocka_unit_test(test_never_relay_equivalent_forms),
		cmocka_unit_test_setup_teardown(test_caps_equivalent_forms, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
