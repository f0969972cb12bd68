/*
 * Unit tests for analysis_worker.c: the worker over a spool directory (a
 * reception journal and its messages), through aw_new/aw_start/aw_kick/aw_free:
 * each mail analysed once into parsed.jsonl, its attachments stored by
 * content, the cursor saved so a restart goes on after it, a torn last line
 * of parsed.jsonl cut at the start, what a crash left in attachments/ removed.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "analysis_worker.h"
#include "config.h"
#include "log.h"
#include "testutil.h"

/* "hello world", base64 in the mail below, and its SHA-256: the attachment's name. */
#define ATT_SHA	"b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"

static const char mail_att[] =
    "From: a@example.com\r\n"
    "To: b@example.com\r\n"
    "Subject: invoice\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"XX\"\r\n"
    "\r\n"
    "--XX\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "see http://example.com/x\r\n"
    "--XX\r\n"
    "Content-Type: application/octet-stream\r\n"
    "Content-Disposition: attachment; filename=\"a.bin\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "aGVsbG8gd29ybGQ=\r\n"
    "--XX--\r\n";

struct fix {
	char			 dir[64];
	struct cfg_analysis	 cfg;
};

static int
setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	char path[128];

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_aw.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(path, sizeof(path), "%s/messages", f->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/feed", f->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	f->cfg.enabled = true;
	f->cfg.store_attachments = true;
	f->cfg.attachment_max = 1 << 20;
	f->cfg.campaigns_max = 1000;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fix *f = *state;

	rm_rf(f->dir);
	free(f);
	return 0;
}

/* Append s to dir/name. */
static void
append(const char *dir, const char *name, const char *s)
{
	char path[256];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "a");
	assert_non_null(fp);
	assert_int_equal(fputs(s, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
}

/* A stored mail named sha (64 hex) and its journal line. */
static void
add_mail(struct fix *f, const char *sha, const char *body)
{
	char name[128], line[128];

	snprintf(name, sizeof(name), "messages/%s.eml", sha);
	append(f->dir, name, body);
	snprintf(line, sizeof(line), "{\"sha256\":\"%s\"}\n", sha);
	append(f->dir, "receptions.jsonl", line);
}

/* 64 hex digits from one. */
static const char *
sha_of(char c)
{
	static char s[65];

	memset(s, c, 64);
	s[64] = '\0';
	return s;
}

/* The lines of dir/parsed.jsonl (0 when it is not there). */
static int
parsed_lines(struct fix *f)
{
	char path[128];
	struct stat st;
	char *buf;
	int n = 0;

	snprintf(path, sizeof(path), "%s/parsed.jsonl", f->dir);
	if (stat(path, &st) == -1)
		return 0;
	buf = slurp(path, NULL);
	for (char *p = buf; *p != '\0'; p++)
		n += *p == '\n';
	free(buf);
	return n;
}

/* Wait (10 s at most, kicking) until parsed.jsonl has want lines. */
static void
wait_parsed(struct fix *f, struct aw *w, int want)
{
	struct timespec ts = { 0, 10 * 1000 * 1000 };

	for (int i = 0; i < 1000; i++) {
		if (parsed_lines(f) >= want)
			return;
		aw_kick(w);
		nanosleep(&ts, NULL);
	}
	fail_msg("parsed.jsonl: %d lines, expected %d", parsed_lines(f), want);
}

static struct aw *
start(struct fix *f)
{
	char err[256] = "";
	struct aw *w = aw_new(&f->cfg, err, sizeof(err));

	if (w == NULL)
		fail_msg("aw_new: %s", err);
	if (aw_start(w, f->dir, NULL, NULL, err, sizeof(err)) == -1) {
		aw_free(w);
		fail_msg("aw_start: %s", err);
	}
	return w;
}

/* The lines of dir/name that hold needle. */
static int
count_in(struct fix *f, const char *name, const char *needle)
{
	char path[128], *buf, *line, *save = NULL;
	int n = 0;

	snprintf(path, sizeof(path), "%s/%s", f->dir, name);
	buf = slurp(path, NULL);
	for (line = strtok_r(buf, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save))
		n += strstr(line, needle) != NULL;
	free(buf);
	return n;
}

/*
 * A mail is analysed into one parsed.jsonl line (an event), its attachment
 * stored under its content's name; after a restart the worker goes on after
 * its cursor: the first mail is not analysed again.
 */
static void
test_analyse_once(void **state)
{
	struct fix *f = *state;
	char path[256], *att;
	struct aw *w;
	size_t len;

	add_mail(f, sha_of('a'), mail_att);
	w = start(f);
	wait_parsed(f, w, 1);
	aw_free(w);
	assert_int_equal(count_in(f, "parsed.jsonl", "\"eventid\":\"fosr.mail.parsed\""), 1);
	assert_int_equal(count_in(f, "parsed.jsonl", sha_of('a')), 1);
	snprintf(path, sizeof(path), "%s/attachments/" ATT_SHA, f->dir);
	att = slurp(path, &len);
	assert_int_equal(len, 11);
	assert_memory_equal(att, "hello world", 11);
	free(att);
	snprintf(path, sizeof(path), "%s/feed/616e616c79736973.cursor", f->dir);
	assert_int_equal(access(path, F_OK), 0);

	/* A restart, a second mail: only it is analysed. */
	add_mail(f, sha_of('b'), "Subject: second\r\n\r\nbody\r\n");
	w = start(f);
	wait_parsed(f, w, 2);
	aw_free(w);
	assert_int_equal(parsed_lines(f), 2);
	assert_int_equal(count_in(f, "parsed.jsonl", sha_of('a')), 1);
	assert_int_equal(count_in(f, "parsed.jsonl", sha_of('b')), 1);
}

/* A journal line whose mail is gone is passed over; the next one is analysed. */
static void
test_missing_message_skipped(void **state)
{
	struct fix *f = *state;
	char line[128];
	struct aw *w;

	snprintf(line, sizeof(line), "{\"sha256\":\"%s\"}\nnot a record\n", sha_of('c'));
	append(f->dir, "receptions.jsonl", line);
	add_mail(f, sha_of('d'), "Subject: d\r\n\r\nbody\r\n");
	w = start(f);
	wait_parsed(f, w, 1);
	aw_free(w);
	assert_int_equal(parsed_lines(f), 1);
	assert_int_equal(count_in(f, "parsed.jsonl", sha_of('d')), 1);
}

/*
 * A torn last line of parsed.jsonl (a crash mid-write) is cut at the start,
 * whatever its length (more than the 64 KiB read at a time); whole lines are kept.
 */
static void
test_torn_parsed_cut(void **state)
{
	struct fix *f = *state;
	char path[128], *torn, *buf;
	struct aw *w;
	size_t len;

	append(f->dir, "parsed.jsonl", "{\"a\":1}\n{\"b\":2}\n{\"c\":");
	w = start(f);
	aw_free(w);
	snprintf(path, sizeof(path), "%s/parsed.jsonl", f->dir);
	buf = slurp(path, &len);
	assert_string_equal(buf, "{\"a\":1}\n{\"b\":2}\n");
	free(buf);

	torn = malloc(200 * 1024 + 1);
	assert_non_null(torn);
	memset(torn, 'x', 200 * 1024);
	torn[200 * 1024] = '\0';
	append(f->dir, "parsed.jsonl", torn);
	w = start(f);
	aw_free(w);
	buf = slurp(path, &len);
	assert_string_equal(buf, "{\"a\":1}\n{\"b\":2}\n");
	free(buf);

	/* No newline at all: nothing whole, the file is emptied. */
	assert_int_equal(truncate(path, 0), 0);
	append(f->dir, "parsed.jsonl", torn);
	w = start(f);
	aw_free(w);
	buf = slurp(path, &len);
	assert_int_equal(len, 0);
	free(buf);
	free(torn);

	/* A whole last line is not touched. */
	append(f->dir, "parsed.jsonl", "{\"d\":4}\n");
	w = start(f);
	aw_free(w);
	buf = slurp(path, &len);
	assert_string_equal(buf, "{\"d\":4}\n");
	free(buf);
}

/* What a crash left half written in attachments/ is removed at the start; nothing else. */
static void
test_tmp_attachments_removed(void **state)
{
	struct fix *f = *state;
	char path[256];
	struct aw *w;

	snprintf(path, sizeof(path), "%s/attachments", f->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	append(f->dir, "attachments/.tmp." ATT_SHA, "half");
	append(f->dir, "attachments/" ATT_SHA, "hello world");
	w = start(f);
	aw_free(w);
	snprintf(path, sizeof(path), "%s/attachments/.tmp." ATT_SHA, f->dir);
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/attachments/" ATT_SHA, f->dir);
	assert_int_equal(access(path, F_OK), 0);
}

/* store_attachments off: analysed all the same, nothing written under attachments/. */
static void
test_attachments_off(void **state)
{
	struct fix *f = *state;
	char path[128];
	struct aw *w;

	f->cfg.store_attachments = false;
	add_mail(f, sha_of('e'), mail_att);
	w = start(f);
	wait_parsed(f, w, 1);
	aw_free(w);
	snprintf(path, sizeof(path), "%s/attachments", f->dir);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(count_in(f, "parsed.jsonl", sha_of('e')), 1);
}

/* A spool that is not there: aw_start fails and says which path; NULL is harmless. */
static void
test_start_errors(void **state)
{
	struct fix *f = *state;
	char err[256] = "", dir[128];
	struct aw *w;

	w = aw_new(&f->cfg, err, sizeof(err));
	assert_non_null(w);
	snprintf(dir, sizeof(dir), "%s/nonexistent", f->dir);
	assert_int_equal(aw_start(w, dir, NULL, NULL, err, sizeof(err)), -1);
	if (strstr(err, dir) == NULL)
		fail_msg("error \"%s\" does not name %s", err, dir);
	aw_free(w);
	aw_kick(NULL);
	aw_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_analyse_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_message_skipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_parsed_cut, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tmp_attachments_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_attachments_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_start_errors, setup, teardown),
	};

	log_init(LOG_LVL_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
