/*
 * Unit tests for console.c, the -i review console, through console_main()
 * with its standard input a file of commands and its output captured: the
 * journal read from its end (segments too, a torn last line left out), the
 * list, its filter and pages, picking a mail by row or sha256 prefix, and
 * every stored byte escaped on the terminal.  (verify and send go through
 * the relay: tests/e2e/test_relay_console.py.)
 */
#include <sys/stat.h>

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "config.h"
#include "console.h"
#include "log.h"
#include "spool.h"
#include "testutil.h"

static char		 dir[64];
static struct cfg	*cfg;

static int
setup(void **state)
{
	char path[128];

	snprintf(dir, sizeof(dir), "/tmp/test_console.XXXXXX");
	assert_non_null(mkdtemp(dir));
	cfg = calloc(1, sizeof(*cfg));
	assert_non_null(cfg);
	cfg_defaults(cfg);
	snprintf(cfg->spool_dir, sizeof(cfg->spool_dir), "%s", dir);
	snprintf(cfg->event_log, sizeof(cfg->event_log), "%s/events.json", dir);
	cfg->relay.mode = RELAY_MODE_DRY_RUN;
	snprintf(path, sizeof(path), "%s/messages", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	return 0;
}

static int
teardown(void **state)
{
	free(cfg);
	rm_rf(dir);
	return 0;
}

/* Append s to dir/name. */
static void
append(const char *name, const char *s)
{
	char path[256];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_non_null(fp = fopen(path, "a"));
	fputs(s, fp);
	assert_int_equal(fclose(fp), 0);
}

/* A journal line to name: sha from one hex digit, the rest given (JSON members). */
static void
rec(const char *name, char hexdigit, const char *members)
{
	char line[2048], sha[65];

	memset(sha, hexdigit, 64);
	sha[64] = '\0';
	snprintf(line, sizeof(line), "{\"sha256\":\"%s\",%s}\n", sha, members);
	append(name, line);
}

/* console_main(cfg) with commands on stdin; its status, its output (malloc'd) in *out. */
static int
run_console(const char *commands, bool test_mode, char **out)
{
	char in[128], outp[128];
	int fd, saved, rc;

	snprintf(in, sizeof(in), "%s/commands", dir);
	snprintf(outp, sizeof(outp), "%s/output", dir);
	unlink(in);
	append("commands", commands);
	assert_non_null(freopen(in, "r", stdin));
	fd = open(outp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	assert_int_equal(dup2(fd, STDOUT_FILENO), STDOUT_FILENO);
	rc = console_main(cfg, test_mode);
	fflush(stdout);
	assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
	close(saved);
	close(fd);
	*out = slurp(outp, NULL);
	return rc;
}

/* Whether out holds s; the test fails with the output otherwise. */
static void
expect(const char *out, const char *s)
{
	FILE *fp;

	if (strstr(out, s) == NULL) {
		if ((fp = fopen("/tmp/test_console.out", "w")) != NULL) {
			fputs(out, fp);
			fclose(fp);
		}
		fail_msg("no \"%s\" in the console's output (in /tmp/test_console.out)", s);
	}
}

/*
 * Every field of a stored record the console prints is escaped: a record
 * may come from a damaged or edited journal, and the terminal acts on ESC
 * and C1 controls.
 */
static void
test_stored_bytes_escaped(void **state)
{
	char *out;

	(void)state;
	rec(SPOOL_JOURNAL_NAME, 'a',
	    "\"time\":\"2026\\u001b]0;t\\u0007\",\"queue_id\":\"Q\\u001b[2J\","
	    "\"src_ip\":\"1.2.3.4\\u001b[31m\",\"dst_ip\":\"5.6.7.8\\u009b2J\","
	    "\"src_port\":1,\"dst_port\":25,\"helo\":\"h\\u001b[1m\","
	    "\"auth\":{\"username\":\"u\\u001b\",\"password\":\"p\\u009b\"},"
	    "\"mail_from\":\"f\\u001b@x\",\"rcpt_to\":[\"t\\u001b@y\"],\"size\":5");
	assert_int_equal(run_console("list\nshow 1\nshow aaaaaa\n", false, &out), 0);
	expect(out, "1 captured mail in");
	expect(out, "aaaaaaaaaaaa");
	if (strchr(out, '\x1b') != NULL || strstr(out, "\xc2\x9b") != NULL ||
	    strchr(out, '\a') != NULL)
		fail_msg("a raw control byte on the terminal:\n%s", out);
	expect(out, "\\x1b");
	free(out);
}

/*
 * The journal from its end: the live file and its rotated segments (by
 * number), newest first; a torn last line (no newline yet) and lines that are no record left
 * out.  list filters (case-insensitive: sender, recipients, client, HELO,
 * sha256, queue id); show takes a row of the list or a sha256 prefix.
 */
static void
test_list_filter_show(void **state)
{
	char name[64], *out;

	(void)state;
	/* Segment 2 written first: the directory's order is not the journal's. */
	snprintf(name, sizeof(name), SPOOL_JOURNAL_NAME ".%020d", 2);
	rec(name, '2', "\"time\":\"2026-01-01T00:00:02Z\",\"src_ip\":\"192.0.2.2\","
	    "\"mail_from\":\"two@a.example\",\"rcpt_to\":[\"carol@c.example\"]");
	snprintf(name, sizeof(name), SPOOL_JOURNAL_NAME ".%020d", 1);
	rec(name, '1', "\"time\":\"2026-01-01T00:00:01Z\",\"src_ip\":\"192.0.2.1\","
	    "\"mail_from\":\"one@a.example\",\"rcpt_to\":[\"Bob@b.example\"]");
	rec(SPOOL_JOURNAL_NAME, '3', "\"time\":\"2026-01-01T00:00:03Z\",\"src_ip\":\"192.0.2.3\","
	    "\"mail_from\":\"three@a.example\",\"rcpt_to\":[\"dave@d.example\",\"bob@b.example\"]");
	/* Not a record; a whole record but no newline yet: torn, being written. */
	append(SPOOL_JOURNAL_NAME, "not a record\n{\"sha256\":\"4444444444444444444444444444"
	    "444444444444444444444444444444444444\",\"mail_from\":\"\",\"rcpt_to\":[\"x@y\"]}");
	assert_int_equal(run_console("list\nlist BOB@B\nshow 2\nlist 192.0.2.2\nlist nobody\nshow 2\nshow 222222\n"
	    "show 9\nshow 22\nshow\nshow 2222222222\nshow 33333g\n", false, &out), 0);
	expect(out, "3 captured mails in");
	/* Newest first: row 1 is mail 3, row 3 mail 1. */
	expect(out, "    1  2026-01-01T00:00:03   333333333333  192.0.2.3");
	expect(out, "    3  2026-01-01T00:00:01   111111111111  192.0.2.1");
	expect(out, "rows 1-3 of 3");
	/* The filter: mails 3 and 1; show 2 is then mail 1. */
	expect(out, "rows 1-2 of 2, filter \"BOB@B\"");
	expect(out, "sha256:    1111111111111111111111111111111111111111111111111111111111111111");
	expect(out, "rows 1-1 of 1, filter \"192.0.2.2\"");
	expect(out, "no captured mail matches \"nobody\"");
	expect(out, "no row 2 (list shows 0)");
	expect(out, "sha256:    2222222222222222222222222222222222222222222222222222222222222222");
	/* Up to 9 decimal digits is a row number, even when a sha256 starts so. */
	expect(out, "no row 222222 (list shows 0)");
	expect(out, "no row 9 (list shows 0)");
	expect(out, "no mail matches \"33333g\"");
	expect(out, "which mail?");
	assert_null(strstr(out, "4444"));
	expect(out, "end of input: leaving the console");
	free(out);
}

/* verify: the decision on a stored mail, its stored client address escaped too. */
static void
test_verify_escaped(void **state)
{
	static const char msg[] = "Subject: relay test 203.0.113.5\r\n\r\nhello\r\n";
	unsigned char md[32];
	char sha[65], name[128], line[1024], *out;

	(void)state;
	assert_int_equal(EVP_Digest(msg, sizeof(msg) - 1, md, NULL, EVP_sha256(), NULL), 1);
	for (int i = 0; i < 32; i++)
		snprintf(sha + 2 * i, 3, "%02x", md[i]);
	snprintf(name, sizeof(name), "messages/%s.eml", sha);
	append(name, msg);
	snprintf(line, sizeof(line), "{\"sha256\":\"%s\",\"size\":%zu,"
	    "\"src_ip\":\"198.51.100.7\\u001b[31m\",\"dst_ip\":\"203.0.113.5\","
	    "\"mail_from\":\"a@b.example\",\"rcpt_to\":[\"c@d.example\"]}\n", sha,
	    sizeof(msg) - 1);
	append(SPOOL_JOURNAL_NAME, line);
	assert_int_equal(run_console("verify 1\n", false, &out), 0);
	expect(out, "per_client_ip");
	expect(out, "198.51.100.7\\x1b[31m");
	if (strchr(out, '\x1b') != NULL)
		fail_msg("a raw ESC on the terminal:\n%s", out);
	free(out);
}

/* Rotated segments are read by number, whatever order the directory lists them in. */
static void
test_segments_by_number(void **state)
{
	const int order[] = { 3, 1, 5, 2, 4 };
	char name[64], digit, want[16], *out;
	const char *prev, *at;

	(void)state;
	for (size_t i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), SPOOL_JOURNAL_NAME ".%020d", order[i]);
		digit = (char)('0' + order[i]);
		rec(name, digit, "\"mail_from\":\"\",\"rcpt_to\":[\"x@y\"]");
	}
	assert_int_equal(run_console("list\n", false, &out), 0);
	expect(out, "5 captured mails in");
	/* Newest (the highest number) first. */
	prev = out;
	for (int n = 5; n >= 1; n--) {
		memset(want, '0' + n, 12);
		want[12] = '\0';
		if ((at = strstr(out, want)) == NULL || at < prev)
			fail_msg("segment %d out of order:\n%s", n, out);
		prev = at;
	}
	free(out);
}

/* Pages of 20: n and p move by a page and stop at the ends. */
static void
test_pages(void **state)
{
	char members[256], *out;
	const char hex[] = "0123456789abcdef";

	(void)state;
	for (int i = 0; i < 25; i++) {
		char sha[65], line[512];

		for (int k = 0; k < 64; k++)
			sha[k] = hex[(i + k) % 16];
		sha[0] = hex[i / 16];
		sha[1] = hex[i % 16];
		sha[64] = '\0';
		snprintf(members, sizeof(members), "\"mail_from\":\"m%d@x\",\"rcpt_to\":[\"r@y\"]", i);
		snprintf(line, sizeof(line), "{\"sha256\":\"%s\",%s}\n", sha, members);
		append(SPOOL_JOURNAL_NAME, line);
	}
	assert_int_equal(run_console("list\nn\nn\np\np\nquit\nlist\n", false, &out), 0);
	expect(out, "rows 1-20 of 25");
	expect(out, "rows 21-25 of 25");
	/* After quit nothing more is read. */
	{
		const char *p = out;
		int n = 0;

		while ((p = strstr(p, "rows 1-20 of 25")) != NULL) {
			n++;
			p++;
		}
		assert_int_equal(n, 3);		/* list, p, p (stays on the first page) */
	}
	assert_null(strstr(out, "end of input"));
	free(out);
}

/* Unknown commands and options are named back escaped; -t needs its settings. */
static void
test_commands(void **state)
{
	char *out;

	(void)state;
	assert_int_equal(run_console("frob\x1b[2J\nsend 1 --lvie\x1b\nhelp\n", false, &out), 0);
	expect(out, "0 captured mails in");
	expect(out, "unknown command \"frob\\x1b[2J\"");
	expect(out, "unknown option \"--lvie\\x1b\"");
	expect(out, "commands:");
	assert_null(strchr(out, '\x1b'));
	free(out);
	assert_int_equal(run_console("list\n", true, &out), 1);
	expect(out, "relay.test_mode.recipient and .server must be set");
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_stored_bytes_escaped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_filter_show, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_escaped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segments_by_number, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commands, setup, teardown),
	};

	log_init(LOG_LVL_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
