/*
 * Unit tests for campaign.c: the threshold measured on variants of spam
 * through the real extractor, LRU eviction, the durable table (atomic
 * rewrite, read back, ids never reused) and a damaged table refused.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <fuzzy.h>

#include "analysis.h"
#include "campaign.h"
#include "util.h"

#define NTPL	4
#define NVAR	5

static const char *const templates[NTPL] = {
	/* advance fee */
	"Dear %s,\n\nI am the manager of the foreign remittance department of our\n"
	"bank and I have an urgent and confidential business proposal for you. A\n"
	"customer of our bank died in a plane crash in %d leaving a deposit of %d\n"
	"million US dollars with no next of kin. I want you to stand as the\n"
	"beneficiary so the funds can be released to you; we share sixty to forty.\n"
	"Send me your full name and your private telephone number at %s as soon\n"
	"as possible, and keep this strictly secret between the two of us.\n"
	"Yours faithfully,\nDr. %s\n",
	/* replica watches */
	"Hello %s! Best replica watches at the lowest prices on the market today.\n"
	"Rolex, Omega, Breitling and more, shipped worldwide in discreet boxes.\n"
	"Order %d pieces now and receive a free bottle of vitamins with every %d\n"
	"watches. Our online store accepts every major credit card and ships\n"
	"within a day; visit our catalogue at %s and enjoy a discount on your\n"
	"first order with us. Satisfaction guaranteed or your money back. %s\n",
	/* phishing */
	"Dear customer %s,\n\nWe detected unusual sign-in activity on your account\n"
	"from a new device on %d/%d. For your security your mailbox has been\n"
	"temporarily suspended. To restore full access please confirm your\n"
	"identity within twenty four hours using the secure link below:\n%s\n"
	"If you do not confirm, your account and all messages will be deleted\n"
	"permanently. Thank you for your understanding. The Security Team %s\n",
	/* stock pump */
	"%s, this small cap is about to explode! Shares of the company rose %d\n"
	"percent last week and analysts expect another %d percent before the\n"
	"official announcement of the merger on Monday. Insiders are buying\n"
	"heavily right now. Get in before the news hits the wires and the price\n"
	"goes through the roof: research it at %s and call your broker today.\n"
	"This is not investment advice, just a friendly tip from %s.\n",
};

static const char *const names[NVAR] = { "Johnson", "Okafor", "Maria Lopez",
    "Wei", "Schmidt" };
static const char *const links[NVAR] = { "http://a.example/1",
    "https://b.example/zz?r=9", "http://203.0.113.9/x", "www.c.example/promo",
    "https://d.example/" };

/* The fingerprint of template t, variant v, through analysis_run(). */
static void
fingerprint(struct analysis *a, int t, int v, char *out)
{
	char mail[4096], body[2048];
	struct analysis_result res;
	int n;

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	snprintf(body, sizeof(body), templates[t], names[v], 1990 + v * 7,
	    3 + v * 11, links[v], names[v]);
#pragma GCC diagnostic pop
	/* what else spammers vary: a greeting, a postscript */
	if (v % 2 == 1)
		strncat(body, "P.S. Please reply today, time is short.\n",
		    sizeof(body) - strlen(body) - 1);
	if (v == 4 && strncmp(body, "Dear ", 5) == 0)
		memcpy(body, "Hi!! ", 5);
	n = snprintf(mail, sizeof(mail), "From: %s <x%d@spam%d.example>\n"
	    "Subject: offer %d\nMessage-ID: <%d.%d@example>\n\n%s", names[v], v,
	    v, v * 13, t, v, body);
	assert_int_equal(analysis_run(a, (unsigned char *)mail, (size_t)n, NULL,
	    NULL, &res), 0);
	assert_true(res.fingerprint[0] != '\0');
	strcpy(out, res.fingerprint);
	analysis_result_free(&res);
}

/*
 * Variants of one spam score at least the threshold against each other;
 * different spams score below it.  Prints the figures the threshold in
 * campaign.h was chosen from.
 */
static void
test_threshold(void **state)
{
	static char fp[NTPL][NVAR][FUZZY_MAX_RESULT];
	struct campaigns *cp;
	struct campaign_match m;
	struct analysis *a;
	char err[256];
	int t, u, v, w, s, minin = 100, maxin = 0, maxout = 0;
	uint64_t ids[NTPL];

	assert_non_null(a = analysis_new(NULL, err, sizeof(err)));
	for (t = 0; t < NTPL; t++)
		for (v = 0; v < NVAR; v++)
			fingerprint(a, t, v, fp[t][v]);
	for (t = 0; t < NTPL; t++)
		for (v = 0; v < NVAR; v++)
			for (u = 0; u < NTPL; u++)
				for (w = 0; w < NVAR; w++) {
					if (t == u && v == w)
						continue;
					s = fuzzy_compare(fp[t][v], fp[u][w]);
					if (t == u) {
						minin = s < minin ? s : minin;
						maxin = s > maxin ? s : maxin;
					} else
						maxout = s > maxout ? s : maxout;
				}
	printf("campaign threshold: variants %d-%d, unrelated max %d, "
	    "threshold %d\n", minin, maxin, maxout, CAMPAIGN_THRESHOLD_DEFAULT);
	assert_true(minin >= CAMPAIGN_THRESHOLD_DEFAULT);
	assert_true(maxout < CAMPAIGN_THRESHOLD_DEFAULT);

	/* Assigned in a table: one campaign per template, NVAR mails each. */
	assert_non_null(cp = campaigns_open(NULL, 0, 0, err, sizeof(err)));
	for (v = 0; v < NVAR; v++)
		for (t = 0; t < NTPL; t++) {
			assert_int_equal(campaigns_assign(cp, fp[t][v], 1000 + v,
			    &m), 0);
			if (v == 0) {
				assert_true(m.created);
				ids[t] = m.id;
			} else {
				assert_false(m.created);
				assert_int_equal(m.id, ids[t]);
			}
			assert_int_equal(m.count, (uint64_t)v + 1);
		}
	assert_int_equal(campaigns_count(cp), NTPL);
	campaigns_free(cp);
	analysis_free(a);
}

/* An unrelated fingerprint: ssdeep of random bytes. */
static void
random_fp(char *out)
{
	unsigned char buf[8192];

	util_random(buf, sizeof(buf));
	assert_int_equal(fuzzy_hash_buf(buf, sizeof(buf), out), 0);
}

/* Full: the least recently seen campaign goes; ids are not reused. */
static void
test_lru(void **state)
{
	char fp[5][FUZZY_MAX_RESULT], err[256];
	struct campaigns *cp;
	struct campaign_match m;
	int i;

	for (i = 0; i < 5; i++)
		random_fp(fp[i]);
	assert_non_null(cp = campaigns_open(NULL, 3, 0, err, sizeof(err)));
	for (i = 0; i < 3; i++) {
		assert_int_equal(campaigns_assign(cp, fp[i], 100 + i, &m), 0);
		assert_int_equal(m.id, (uint64_t)i + 1);
	}
	/* campaign 1 seen again: 2 is now the least recent */
	assert_int_equal(campaigns_assign(cp, fp[0], 200, &m), 0);
	assert_int_equal(m.id, 1);
	assert_int_equal(m.count, 2);
	assert_int_equal(m.score, 100);
	assert_int_equal(campaigns_assign(cp, fp[3], 201, &m), 0);
	assert_true(m.created);
	assert_int_equal(m.id, 4);
	assert_int_equal(campaigns_count(cp), 3);
	assert_null(campaigns_get(cp, 2));
	assert_non_null(campaigns_get(cp, 1));
	assert_non_null(campaigns_get(cp, 3));
	/* not a fingerprint */
	assert_int_equal(campaigns_assign(cp, "", 1, &m), -1);
	assert_int_equal(campaigns_assign(cp, "3:ab cd:ef", 1, &m), -1);
	assert_int_equal(campaigns_assign(cp, "3:abc", 1, &m), -1);
	campaigns_free(cp);
}

/* Saved, read back: the same campaigns and counts, ids continue. */
static void
test_persist(void **state)
{
	char dir[] = "/tmp/test_campaign.XXXXXX", path[256], tmp[300];
	char fp[3][FUZZY_MAX_RESULT], err[256];
	struct campaigns *cp;
	struct campaign_match m;
	struct stat st;
	const struct campaign *c;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/campaigns", dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	random_fp(fp[0]);
	random_fp(fp[1]);
	random_fp(fp[2]);
	assert_non_null(cp = campaigns_open(path, 0, 0, err, sizeof(err)));
	assert_int_equal(campaigns_save(cp, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), -1);	/* nothing changed: no file */
	assert_int_equal(campaigns_assign(cp, fp[0], 10, &m), 0);
	assert_int_equal(campaigns_assign(cp, fp[0], 20, &m), 0);
	assert_int_equal(campaigns_assign(cp, fp[1], 30, &m), 0);
	assert_int_equal(campaigns_save(cp, err, sizeof(err)), 0);
	assert_int_equal(stat(tmp, &st), -1);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);
	campaigns_free(cp);

	assert_non_null(cp = campaigns_open(path, 0, 0, err, sizeof(err)));
	assert_int_equal(campaigns_count(cp), 2);
	assert_non_null(c = campaigns_get(cp, 1));
	assert_int_equal(c->count, 2);
	assert_int_equal(c->first, 10);
	assert_int_equal(c->last, 20);
	assert_string_equal(c->fp, fp[0]);
	assert_int_equal(campaigns_assign(cp, fp[0], 40, &m), 0);
	assert_int_equal(m.id, 1);
	assert_int_equal(m.count, 3);
	assert_int_equal(campaigns_assign(cp, fp[2], 50, &m), 0);
	assert_int_equal(m.id, 3);
	assert_int_equal(campaigns_save(cp, err, sizeof(err)), 0);
	campaigns_free(cp);

	/* Read back into a smaller table: the most recently seen stay. */
	assert_non_null(cp = campaigns_open(path, 2, 0, err, sizeof(err)));
	assert_int_equal(campaigns_count(cp), 2);
	assert_non_null(campaigns_get(cp, 1));
	assert_null(campaigns_get(cp, 2));
	assert_non_null(campaigns_get(cp, 3));
	campaigns_free(cp);
	unlink(path);
	rmdir(dir);
}

static void
write_file(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(s, f);
	fclose(f);
}

/* A damaged table is an error naming the line, never replaced. */
static void
test_bad_file(void **state)
{
	static const char *const bad[] = {
		"not a table\n",
		"fosr-campaigns 2 next=1\n",
		"fosr-campaigns 1 next=5\n1 1 0 0 3:abc:def",		/* torn */
		"fosr-campaigns 1 next=5\n1 1 0 0 3:a c:def\n",
		"fosr-campaigns 1 next=5\n7 1 0 0 3:abc:def\n",	/* id >= next */
		"fosr-campaigns 1 next=5\n0 1 0 0 3:abc:def\n",
		"fosr-campaigns 1 next=5\n1 1 0 0 3:abc:def extra\n",
	};
	char dir[] = "/tmp/test_campaign.XXXXXX", path[256], err[256];
	struct campaigns *cp;
	size_t i;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/campaigns", dir);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_file(path, bad[i]);
		err[0] = '\0';
		cp = campaigns_open(path, 0, 0, err, sizeof(err));
		if (cp != NULL)
			fail_msg("accepted: %s", bad[i]);
		assert_non_null(strstr(err, path));
	}
	write_file(path, "fosr-campaigns 1 next=5\n4 2 1 2 3:abc:def\n");
	assert_non_null(cp = campaigns_open(path, 0, 0, err, sizeof(err)));
	assert_int_equal(campaigns_count(cp), 1);
	campaigns_free(cp);
	unlink(path);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_threshold),
		cmocka_unit_test(test_lru),
		cmocka_unit_test(test_persist),
		cmocka_unit_test(test_bad_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
