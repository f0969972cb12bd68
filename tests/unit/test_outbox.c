/*
 * Unit tests for the outbox: durable cursors over the reception journal.
 * Cursor saved and reloaded across a "restart" (outbox_free, outbox_new),
 * the journal's segments read in order before the live file, a rotated log
 * followed, a torn last line waited for, confirmations out of order, and the
 * message reading's skip rule (ENOENT only), the cursors of outputs no
 * longer configured set aside.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "outbox.h"
#include "testhook.h"
#include "util.h"

struct fix {
	char		 dir[64];
	char		 journal[PATH_MAX];
	char		 feed[PATH_MAX];
	int		 holds;
	int		 losts;
};

static void	append(const char *path, const char *s);
static struct outbox *ob_make(struct fix *, const char *path, enum outbox_kind);
static void	read_line(struct outbox_cursor *, const char *want, struct outbox_line *);
static void	read_confirm(struct outbox_cursor *, const char *want,
		    struct outbox_line *);
static struct outbox *ob_start_ev(struct fix *, const char *path, enum outbox_kind,
		    struct outbox_cursor **);
static void	wait_line(struct outbox *, struct outbox_cursor *, const char *want,
		    struct outbox_line *);
static void	fix_hold(void *, const char *);
static void	fix_lost(void *);

static void
append(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);

	assert_true(fd != -1);
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
	close(fd);
}

static void
fix_hold(void *arg, const char *msg)
{
	((struct fix *)arg)->holds++;
}

static void
fix_lost(void *arg)
{
	((struct fix *)arg)->losts++;
}

static int
setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_outbox.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->journal, sizeof(f->journal), "%s/receptions.jsonl", f->dir);
	snprintf(f->feed, sizeof(f->feed), "%s/feed", f->dir);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fix *f = *state;
	char cmd[200];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static struct outbox *
ob_make(struct fix *f, const char *path, enum outbox_kind kind)
{
	struct outbox_opts o;
	struct outbox *ob;
	char err[256];

	memset(&o, 0, sizeof(o));
	o.who = "test";
	o.path = path;
	o.kind = kind;
	o.cursor_dir = f->feed;
	o.spool_dir = f->dir;
	o.hold = fix_hold;
	o.lost = fix_lost;
	o.arg = f;
	ob = outbox_new(&o, err, sizeof(err));
	assert_non_null(ob);
	return ob;
}

/* The next line must be want (NULL: none yet). */
static void
read_line(struct outbox_cursor *c, const char *want, struct outbox_line *l)
{
	struct outbox_line tmp;

	if (l == NULL)
		l = &tmp;
	if (want == NULL) {
		assert_int_equal(outbox_read(c, l), 0);
		return;
	}
	assert_int_equal(outbox_read(c, l), 1);
	assert_false(l->overlong);
	assert_int_equal(l->len, strlen(want));
	assert_memory_equal(l->line, want, l->len);
}

/* The next line must be want; taken and confirmed at once. */
static void
read_confirm(struct outbox_cursor *c, const char *want, struct outbox_line *l)
{
	read_line(c, want, l);
	assert_non_null(outbox_take(c, l));
	outbox_confirm(c, l->end_off);
}

/* An outbox over path with one cursor, "ev" (in *c), started. */
static struct outbox *
ob_start_ev(struct fix *f, const char *path, enum outbox_kind kind,
    struct outbox_cursor **c)
{
	struct outbox *ob;
	char err[256];

	ob = ob_make(f, path, kind);
	assert_non_null(*c = outbox_cursor_open(ob, "ev", 0, err, sizeof(err)));
	outbox_start(ob);
	return ob;
}

/*
 * Wait (bounded: 5 s) for the next line, checking the outbox's file between
 * tries as its timer would; it must be want.
 */
static void
wait_line(struct outbox *ob, struct outbox_cursor *c, const char *want,
    struct outbox_line *l)
{
	time_t t0 = time(NULL);

	while (outbox_read(c, l) == 0) {
		assert_true(time(NULL) - t0 < 5);
		outbox_check(ob);
		usleep(20000);
	}
	assert_int_equal(l->len, strlen(want));
	assert_memory_equal(l->line, want, l->len);
}

/* The cursor file survives a restart; the window does not (read again). */
static void
test_cursor_restart(void **state)
{
	struct fix *f = *state;
	struct outbox_line l1, l2, l3;
	struct outbox_cursor *c;
	struct outbox *ob;
	char err[256];
	uint64_t *d;

	append(f->journal, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
	ob = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(c = outbox_cursor_open(ob, "chan.a", sizeof(uint64_t), err,
	    sizeof(err)));
	outbox_start(ob);
	read_line(c, "{\"n\":1}", &l1);
	assert_non_null(d = outbox_take(c, &l1));
	assert_int_equal(*d, 0);	/* the output's data starts zeroed */
	*d = 41;
	read_line(c, "{\"n\":2}", &l2);
	assert_non_null(d = outbox_take(c, &l2));
	*d = 42;
	read_line(c, "{\"n\":3}", &l3);
	assert_non_null(outbox_take(c, &l3));
	read_line(c, NULL, NULL);
	assert_int_equal(outbox_pending(c), 3);
	assert_int_equal(*(uint64_t *)outbox_entry(c, 1)->data, 42);
	assert_int_equal(outbox_confirm_upto(c, l2.end_off), 2);
	assert_int_equal(outbox_cursor_offset(c), l2.end_off);
	assert_int_equal(outbox_cursor_confirmed(c), 2);
	assert_int_equal(outbox_pending(c), 1);
	outbox_free(ob);	/* "restart": saved here */

	ob = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(c = outbox_cursor_open(ob, "chan.a", 0, err, sizeof(err)));
	outbox_start(ob);
	assert_int_equal(outbox_cursor_offset(c), l2.end_off);
	/* The unconfirmed third line comes again, not the first two. */
	read_line(c, "{\"n\":3}", &l3);
	assert_non_null(outbox_take(c, &l3));
	/* A rewind (a reconnect) reads it once more. */
	outbox_rewind(c);
	assert_int_equal(outbox_pending(c), 0);
	read_line(c, "{\"n\":3}", &l3);
	/* Another cursor name starts at the beginning. */
	outbox_free(ob);
	ob = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(c = outbox_cursor_open(ob, "chan.b", 0, err, sizeof(err)));
	outbox_start(ob);
	read_line(c, "{\"n\":1}", NULL);
	outbox_free(ob);
	assert_int_equal(f->holds, 0);
	assert_int_equal(f->losts, 0);
}

/*
 * The spool's journal segments (<journal>.<n>) are read in number order,
 * each to its end, before the live file.  The mtimes say the opposite order.
 */
static void
test_segment_rotation(void **state)
{
	struct fix *f = *state;
	char s1[PATH_MAX + 32], s2[PATH_MAX + 32], err[256];
	struct timespec ts[2];
	struct outbox_line l;
	struct outbox_cursor *c;
	struct outbox *ob;
	const char *want[] = { "{\"n\":1}", "{\"n\":2}", "{\"n\":3}", "{\"n\":4}", NULL };
	int i, tries;

	snprintf(s1, sizeof(s1), "%s.%020d", f->journal, 9);
	snprintf(s2, sizeof(s2), "%s.%020d", f->journal, 10);
	append(s1, "{\"n\":1}\n{\"n\":2}\n");
	append(s2, "{\"n\":3}\n");
	append(f->journal, "{\"n\":4}\n");
	ts[0].tv_sec = ts[1].tv_sec = 2000000000;
	ts[0].tv_nsec = ts[1].tv_nsec = 0;
	assert_int_equal(utimensat(AT_FDCWD, s1, ts, 0), 0);
	ts[0].tv_sec = ts[1].tv_sec = 1000000000;
	assert_int_equal(utimensat(AT_FDCWD, s2, ts, 0), 0);

	ob = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(c = outbox_cursor_open(ob, "chan", 0, err, sizeof(err)));
	outbox_start(ob);
	for (i = 0; want[i] != NULL; i++) {
		/* A file is left once every line of it is confirmed. */
		for (tries = 0; tries < 3 && outbox_read(c, &l) == 0; tries++)
			outbox_check(ob);
		assert_true(tries < 3);
		assert_int_equal(l.len, strlen(want[i]));
		assert_memory_equal(l.line, want[i], l.len);
		assert_non_null(outbox_take(c, &l));
		outbox_confirm(c, l.end_off);
	}
	outbox_check(ob);
	read_line(c, NULL, NULL);
	outbox_free(ob);
	assert_int_equal(f->holds, 0);
}

/*
 * A log rotated by a rename and a new file: the old file is read to its end
 * (once nobody has written it for a second), then the new one from its start.
 */
static void
test_log_rotation(void **state)
{
	struct fix *f = *state;
	char path[PATH_MAX], old[PATH_MAX + 8];
	struct outbox_line l;
	struct outbox_cursor *c;
	struct outbox *ob;
	uint64_t gen;

	snprintf(path, sizeof(path), "%s/events.jsonl", f->dir);
	snprintf(old, sizeof(old), "%s.1", path);
	append(path, "{\"e\":1}\n");
	ob = ob_start_ev(f, path, OUTBOX_LOG, &c);
	read_confirm(c, "{\"e\":1}", &l);
	assert_int_equal(rename(path, old), 0);
	append(old, "{\"e\":2}\n");	/* the writer had not reopened yet */
	append(path, "{\"e\":3}\n");
	outbox_check(ob);
	gen = outbox_generation(ob);
	read_confirm(c, "{\"e\":2}", &l);
	/* Wait (bounded) for the old file to settle and the new one to be followed. */
	wait_line(ob, c, "{\"e\":3}", &l);
	assert_true(outbox_generation(ob) != gen);
	outbox_free(ob);
	assert_int_equal(f->holds, 0);
}

/* The test hook: opening a rotated file fails with EMFILE while set. */
static int
emfile_cb(void *arg, const char *step, const char *detail)
{
	return strcmp(step, "outbox_open_rotated") == 0 ? EMFILE : 0;
}

/*
 * Rotated while stopped, and the rotated file cannot be opened at start
 * (EMFILE): that is not "gone".  The outbox holds (nothing read from the
 * new file, nothing said lost) and, once the open works, drains the
 * rotated file from the cursor before the new one.  Both the event log
 * (found by inode) and the journal (segments) way.
 */
static void
test_rotated_open_fails_at_start(void **state)
{
	struct fix *f = *state;
	char path[PATH_MAX], old[PATH_MAX + 32];
	struct outbox_line l;
	struct outbox_cursor *c;
	struct outbox *ob;
	int k;

	for (k = 0; k < 2; k++) {
		if (k == 0) {
			snprintf(path, sizeof(path), "%s/events.jsonl", f->dir);
			snprintf(old, sizeof(old), "%s.1", path);
		} else {
			snprintf(path, sizeof(path), "%s", f->journal);
			snprintf(old, sizeof(old), "%s.%020d", path, 1);
		}
		f->holds = f->losts = 0;
		append(path, "{\"e\":1}\n{\"e\":2}\n");
		ob = ob_start_ev(f, path, k == 0 ? OUTBOX_LOG : OUTBOX_JOURNAL, &c);
		read_confirm(c, "{\"e\":1}", &l);
		outbox_free(ob);	/* stopped: the cursor saved after e1 */
		assert_int_equal(rename(path, old), 0);
		append(path, "{\"e\":3}\n");

		testhook_set(emfile_cb, NULL);
		ob = ob_start_ev(f, path, k == 0 ? OUTBOX_LOG : OUTBOX_JOURNAL, &c);
		/* Held: e3 (the new file) is not read, e2 not given up. */
		read_line(c, NULL, NULL);
		outbox_check(ob);
		read_line(c, NULL, NULL);
		assert_true(f->holds > 0);
		assert_int_equal(f->losts, 0);
		testhook_set(NULL, NULL);
		wait_line(ob, c, "{\"e\":2}", &l);
		outbox_free(ob);
	}
}

/*
 * Cut below the cursor (copytruncate) and the copy cannot be opened
 * (EMFILE): held, not "no copy found, lost"; then the copy is drained.
 */
static void
test_cut_copy_open_fails(void **state)
{
	struct fix *f = *state;
	char path[PATH_MAX], copy[PATH_MAX + 8];
	struct outbox_line l;
	struct outbox_cursor *c;
	struct outbox *ob;

	snprintf(path, sizeof(path), "%s/events.jsonl", f->dir);
	snprintf(copy, sizeof(copy), "%s.1", path);
	append(path, "{\"e\":1}\n");
	ob = ob_start_ev(f, path, OUTBOX_LOG, &c);
	read_confirm(c, "{\"e\":1}", &l);
	/* copytruncate: the copy has e1 and e2 (written before the cut). */
	append(copy, "{\"e\":1}\n{\"e\":2}\n");
	assert_int_equal(truncate(path, 0), 0);
	append(path, "{\"e\":3}\n");
	testhook_set(emfile_cb, NULL);
	outbox_check(ob);
	read_line(c, NULL, NULL);
	assert_true(f->holds > 0);
	testhook_set(NULL, NULL);
	wait_line(ob, c, "{\"e\":2}", &l);
	outbox_free(ob);
}

/* A torn last line (no '\n' yet) is not read until it is complete. */
static void
test_torn_line(void **state)
{
	struct fix *f = *state;
	struct outbox_line l;
	struct outbox_cursor *c;
	struct outbox *ob;
	char err[256];

	append(f->journal, "{\"n\":1}\n{\"n\":");
	ob = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(c = outbox_cursor_open(ob, "chan", 0, err, sizeof(err)));
	outbox_start(ob);
	read_line(c, "{\"n\":1}", &l);
	assert_non_null(outbox_take(c, &l));
	read_line(c, NULL, NULL);
	read_line(c, NULL, NULL);
	append(f->journal, "2}");
	read_line(c, NULL, NULL);
	append(f->journal, "\n");
	read_line(c, "{\"n\":2}", &l);
	assert_int_equal(l.end_off, 16);
	/* A transient error for it: the same line again. */
	outbox_unread(c, &l);
	read_line(c, "{\"n\":2}", &l);
	assert_int_equal(outbox_skip(c, &l), 0);
	/* The skipped entry waits for the first one's confirmation. */
	assert_int_equal(outbox_cursor_offset(c), 0);
	assert_int_equal(outbox_confirm(c, 8), 2);
	assert_int_equal(outbox_cursor_offset(c), 16);
	assert_int_equal(outbox_cursor_confirmed(c), 1);
	outbox_free(ob);
}

/* Confirmations out of order: the cursor moves only over the confirmed prefix. */
static void
test_confirm_out_of_order(void **state)
{
	struct fix *f = *state;
	struct outbox_line l[4];
	struct outbox_cursor *c;
	struct outbox *ob;
	char err[256];
	int i;

	append(f->journal, "a\nb\nc\nd\n");
	ob = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(c = outbox_cursor_open(ob, "amqp", 0, err, sizeof(err)));
	outbox_start(ob);
	for (i = 0; i < 4; i++) {
		assert_int_equal(outbox_read(c, &l[i]), 1);
		assert_non_null(outbox_take(c, &l[i]));
	}
	assert_int_equal(outbox_confirm(c, l[2].end_off), 0);
	assert_int_equal(outbox_confirm(c, l[1].end_off), 0);
	assert_int_equal(outbox_cursor_offset(c), 0);
	assert_true(outbox_entry(c, 2)->confirmed);
	assert_false(outbox_entry(c, 3)->confirmed);
	/* Confirming a name not in the window changes nothing. */
	assert_int_equal(outbox_confirm(c, 3), 0);
	assert_int_equal(outbox_confirm(c, l[0].end_off), 3);
	assert_int_equal(outbox_cursor_offset(c), l[2].end_off);
	assert_int_equal(outbox_pending(c), 1);
	outbox_free(ob);
	/* Reloaded: only d is read again. */
	ob = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(c = outbox_cursor_open(ob, "amqp", 0, err, sizeof(err)));
	outbox_start(ob);
	read_line(c, "d", NULL);
	outbox_free(ob);
}

/* A record's message: read; its file gone (ENOENT) skips; not a record skips. */
static void
test_message(void **state)
{
	struct fix *f = *state;
	static const char sha[] =
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	char path[PATH_MAX], line[200], err[256];
	struct outbox_message m;
	struct outbox_line l;
	struct outbox_cursor *c;
	struct outbox *ob;

	snprintf(path, sizeof(path), "%s/messages", f->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/messages/%s.eml", f->dir, sha);
	append(path, "Subject: x\r\n\r\nbody\r\n");
	snprintf(line, sizeof(line), "{\"sha256\":\"%s\"}\n{\"sha256\":\"%.63sb\"}\n"
	    "not json\n", sha, sha);
	append(f->journal, line);
	ob = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(c = outbox_cursor_open(ob, "chan", 0, err, sizeof(err)));
	outbox_start(ob);
	memset(&m, 0, sizeof(m));
	assert_int_equal(outbox_read(c, &l), 1);
	assert_int_equal(outbox_message(c, &l, 10, &m), 0);
	assert_string_equal(m.sha, sha);
	assert_int_equal(m.size, 20);
	assert_int_equal(m.len, 10);	/* cut at the limit */
	assert_memory_equal(m.body, "Subject: x", 10);
	assert_int_equal(outbox_read(c, &l), 1);
	assert_int_equal(outbox_message(c, &l, 10, &m), OUTBOX_SKIP);
	assert_int_equal(outbox_read(c, &l), 1);
	assert_int_equal(outbox_message(c, &l, 10, &m), OUTBOX_SKIP);
	assert_int_equal(f->holds, 0);
	outbox_message_free(&m);
	outbox_free(ob);
}

/* Whether <feed>/<sub>/<hex of name>.cursor exists (sub "" = feed/ itself). */
static bool
cursor_there(const struct fix *f, const char *sub, const char *name)
{
	char hex[256], path[PATH_MAX + 300];
	struct stat st;

	util_hex(name, strlen(name), hex);
	snprintf(path, sizeof(path), "%s/%s%s%s.cursor", f->feed, sub, *sub ? "/" : "", hex);
	return stat(path, &st) == 0;
}

/*
 * A cursor no outbox of this process opened (its output removed from the
 * configuration) is set aside to feed/stale/; open ones, of any outbox,
 * stay; a closed outbox's cursor is no longer protected; opened again, a
 * set-aside cursor comes back with its offset.
 */
static void
test_set_aside_stale(void **state)
{
	struct fix *f = *state;
	struct outbox_cursor *a, *b, *e;
	struct outbox *ob, *ob2;
	struct outbox_line l;
	char err[256], odd[PATH_MAX + 32];
	uint64_t at;

	append(f->journal, "{\"n\":1}\n{\"n\":2}\n");
	/* two outputs' cursors, b confirmed past the first line */
	ob = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(a = outbox_cursor_open(ob, "chan.a", 0, err, sizeof(err)));
	assert_non_null(b = outbox_cursor_open(ob, "chan.b", 0, err, sizeof(err)));
	outbox_start(ob);
	read_line(b, "{\"n\":1}", &l);
	assert_non_null(outbox_take(b, &l));
	assert_int_equal(outbox_confirm(b, l.end_off), 1);
	at = l.end_off;
	outbox_free(ob);
	/* a file that is no cursor's hex name is set aside too, named as it is */
	snprintf(odd, sizeof(odd), "%s/zz.cursor", f->feed);
	append(odd, "0\n");

	/* now only chan.a (and another outbox's "events") are configured */
	ob = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(a = outbox_cursor_open(ob, "chan.a", 0, err, sizeof(err)));
	outbox_start(ob);
	ob2 = ob_make(f, f->journal, OUTBOX_LOG);
	assert_non_null(e = outbox_cursor_open(ob2, "events", 0, err, sizeof(err)));
	outbox_start(ob2);
	assert_int_equal(outbox_set_aside_stale(f->feed), 2);
	assert_true(cursor_there(f, "", "chan.a"));
	assert_true(cursor_there(f, "", "events"));
	assert_false(cursor_there(f, "", "chan.b"));
	assert_true(cursor_there(f, "stale", "chan.b"));
	snprintf(odd, sizeof(odd), "%s/stale/zz.cursor", f->feed);
	assert_int_equal(access(odd, F_OK), 0);
	/* again: nothing left to move */
	assert_int_equal(outbox_set_aside_stale(f->feed), 0);
	/* a closed outbox protects nothing any more */
	outbox_free(ob2);
	assert_int_equal(outbox_set_aside_stale(f->feed), 1);
	assert_true(cursor_there(f, "stale", "events"));
	assert_true(cursor_there(f, "", "chan.a"));

	/* chan.b configured again: its cursor back, where it stopped */
	ob2 = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(b = outbox_cursor_open(ob2, "chan.b", 0, err, sizeof(err)));
	assert_true(cursor_there(f, "", "chan.b"));
	assert_false(cursor_there(f, "stale", "chan.b"));
	outbox_start(ob2);
	assert_int_equal(outbox_cursor_offset(b), at);
	read_line(b, "{\"n\":2}", NULL);
	outbox_free(ob2);
	outbox_free(ob);
	/* no cursor directory: nothing to do */
	assert_int_equal(outbox_set_aside_stale("/nonexistent/feed"), 0);
	assert_int_equal(f->holds, 0);
}

/* <feed>/<hex of name>.cursor.tmp: a cursor's temporary. */
static void
cursor_tmp_path(const struct fix *f, const char *name, char *path, size_t len)
{
	char hex[200];

	util_hex(name, strlen(name), hex);
	snprintf(path, len, "%s/%s.cursor.tmp", f->feed, hex);
}

/*
 * A crash in a cursor save leaves <hex>.cursor.tmp (the rename is the
 * save: the cursor itself is whole).  Its cursor opened: the temporary is
 * removed; an output no longer configured: removed at the start's set-aside;
 * a temporary made after its cursor opened (a save in progress on another
 * thread) is never touched.
 */
static void
test_cursor_tmp_removed(void **state)
{
	struct fix *f = *state;
	struct outbox_cursor *a;
	struct outbox *ob;
	char err[256], ta[PATH_MAX + 256], tg[PATH_MAX + 256];

	append(f->journal, "{\"n\":1}\n");
	assert_int_equal(mkdir(f->feed, 0750), 0);
	cursor_tmp_path(f, "chan.a", ta, sizeof(ta));
	cursor_tmp_path(f, "chan.gone", tg, sizeof(tg));
	append(ta, "12 ino=");	/* torn */
	append(tg, "7\n");
	ob = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(a = outbox_cursor_open(ob, "chan.a", 0, err, sizeof(err)));
	assert_int_not_equal(access(ta, F_OK), 0);
	outbox_start(ob);
	assert_int_equal(outbox_cursor_offset(a), 0);
	append(ta, "8\n");	/* a save in progress */
	assert_int_equal(outbox_set_aside_stale(f->feed), 0);
	assert_int_not_equal(access(tg, F_OK), 0);
	assert_int_equal(access(ta, F_OK), 0);
	outbox_free(ob);
}

/* The hook: the first fsync of feed/ in a cursor save fails (EIO); counts them. */
static int dirsync_hits;

static int
dirsync_cb(void *arg, const char *step, const char *detail)
{
	if (strcmp(step, "cursor_dirsync") != 0)
		return 0;
	return ++dirsync_hits == 1 ? EIO : 0;
}

/*
 * The fsync of feed/ after a cursor's rename fails: the save is not taken
 * as done (the rename may not be on disk, while the journal's pruning reads
 * the new cursor): the next outbox_save() saves it again.
 */
static void
test_cursor_dirsync_fails(void **state)
{
	struct fix *f = *state;
	struct outbox_cursor *c;
	struct outbox_line l;
	struct outbox *ob;
	char err[256];

	append(f->journal, "{\"n\":1}\n{\"n\":2}\n");
	ob = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(c = outbox_cursor_open(ob, "chan.a", 0, err, sizeof(err)));
	outbox_start(ob);
	outbox_save(ob);
	read_confirm(c, "{\"n\":1}", &l);
	dirsync_hits = 0;
	testhook_set(dirsync_cb, NULL);
	outbox_save(ob);	/* its fsync of feed/ fails */
	assert_int_equal(dirsync_hits, 1);
	outbox_save(ob);	/* saved again */
	testhook_set(NULL, NULL);
	assert_int_equal(dirsync_hits, 2);
	outbox_free(ob);
}

static int
dirsync_always_cb(void *arg, const char *step, const char *detail)
{
	return strcmp(step, "cursor_dirsync") == 0 ? (++dirsync_hits, EIO) : 0;
}

/*
 * A feed/ whose fsync keeps failing (a dying disk): the cursor is saved again
 * every second, but said once per series (it was a warning a second), with
 * the series' end when a save succeeds.
 */
static void
test_cursor_save_failures_logged_once_per_series(void **state)
{
	struct fix *f = *state;
	struct outbox_cursor *c;
	struct outbox_line l;
	struct outbox *ob;
	char err[256], path[] = "/tmp/test_outbox_log.XXXXXX";
	char buf[8192];
	ssize_t n;
	int fd, saved, warned = 0;
	const char *p;

	append(f->journal, "{\"n\":1}\n{\"n\":2}\n");
	ob = ob_make(f, f->journal, OUTBOX_JOURNAL);
	assert_non_null(c = outbox_cursor_open(ob, "chan.a", 0, err, sizeof(err)));
	outbox_start(ob);
	outbox_save(ob);
	read_confirm(c, "{\"n\":1}", &l);
	assert_true((fd = mkstemp(path)) >= 0);
	saved = dup(2);
	dup2(fd, 2);
	log_init(LOG_LVL_INFO);
	dirsync_hits = 0;
	testhook_set(dirsync_always_cb, NULL);
	for (int i = 0; i < 5; i++)
		outbox_save(ob);	/* every fsync of feed/ fails */
	testhook_set(NULL, NULL);
	outbox_save(ob);		/* and then it is saved */
	log_init(LOG_LVL_ERR);
	dup2(saved, 2);
	close(saved);
	assert_int_equal(dirsync_hits, 5);
	assert_true((n = pread(fd, buf, sizeof(buf) - 1, 0)) > 0);
	buf[n] = '\0';
	close(fd);
	unlink(path);
	for (p = buf; (p = strstr(p, "saved again next time")) != NULL; p++)
		warned++;
	assert_int_equal(warned, 1);
	assert_non_null(strstr(buf, "saved again"));
	outbox_free(ob);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cursor_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_confirm_out_of_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotated_open_fails_at_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cut_copy_open_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_aside_stale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cursor_tmp_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cursor_dirsync_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cursor_save_failures_logged_once_per_series,
		    setup, teardown),
	};

	log_init(LOG_LVL_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
