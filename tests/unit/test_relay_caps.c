/* Unit tests for relay_caps.c: every cap, exact limits, persistence, locking, never-relay list. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

	assert_true(relay_never_relay(list, n, "postmaster@example.net", &w));
	assert_string_equal(w, "postmaster@");
	assert_true(relay_never_relay(list, n, "PostMaster@example.net", NULL));
	assert_true(relay_never_relay(list, n, "abuse@x.y", NULL));
	assert_false(relay_never_relay(list, n, "notabuse@x.y", NULL));
	assert_false(relay_never_relay(list, n, "abuse.x@x.y", NULL));
	assert_true(relay_never_relay(list, n, "a@mail-abuse.org", NULL));
	assert_true(relay_never_relay(list, n, "a@relay-test.MAIL-ABUSE.org", NULL));
	assert_false(relay_never_relay(list, n, "a@notmail-abuse.org", NULL));
	assert_true(relay_never_relay(list, n, "x@blocked.example", NULL));
	assert_true(relay_never_relay(list, n, "someone@EXAMPLE.com", NULL));
	assert_false(relay_never_relay(list, n, "someone2@example.com", NULL));
	assert_false(relay_never_relay(list, n, "drop@spammer.example", NULL));
	/*
	 * Subaddresses (recipient_delimiter "+" or "-") reach the listed
	 * mailbox: postmaster+x@ is postmaster@ at most providers.
	 */
	assert_true(relay_never_relay(list, n, "postmaster+x@example.net", &w));
	assert_string_equal(w, "postmaster@");
	assert_true(relay_never_relay(list, n, "Abuse-Reports@x.y", NULL));
	assert_true(relay_never_relay(list, n, "abuse+@x.y", NULL));
	assert_true(relay_never_relay(list, n, "someone+tag@example.com", NULL));
	assert_true(relay_never_relay(list, n, "someone-tag@EXAMPLE.com", NULL));
	assert_false(relay_never_relay(list, n, "someone+tag@example.org", NULL));
	assert_false(relay_never_relay(list, n, "abusex@x.y", NULL));
	assert_false(relay_never_relay(list, n, "abuse_x@x.y", NULL));
	assert_false(relay_never_relay(list, n, "x+abuse@x.y", NULL));
	assert_string_equal(relay_addr_domain("a@b@c.example"), "c.example");
	assert_string_equal(relay_addr_domain("nodomain"), "");
}

/* The shipped defaults refuse postmaster@ and abuse@. */
static void
test_never_relay_defaults(void **state)
{
	struct cfg *c = malloc(sizeof(*c));

	assert_non_null(c);
	cfg_defaults(c);
	assert_true(relay_never_relay(c->relay.never_relay, c->relay.nnever,
	    "postmaster@gmail.com", NULL));
	assert_true(relay_never_relay(c->relay.never_relay, c->relay.nnever,
	    "abuse@gmail.com", NULL));
	assert_false(relay_never_relay(c->relay.never_relay, c->relay.nnever,
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
		cmocka_unit_test(test_never_relay),
		cmocka_unit_test(test_never_relay_defaults),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
