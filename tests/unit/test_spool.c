/* Unit tests for the spool: durability, dedupe, journal repair, quotas, ENOSPC. */
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
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
#include <event2/event.h>

#include "spool.h"
#include "testhook.h"
#include "testutil.h"

struct done {
	int	calls;
	int	status;
	int	err_no;
};

struct fixture {
	char			 dir[64];
	char			 spooldir[128];
	struct event_base	*base;
	bool			 mounted;
};

static int	 setup(void **state);
static int	 teardown(void **state);
static void	 done_cb(void *arg, int status, int err_no);
static void	 timeout_cb(evutil_socket_t fd, short what, void *arg);
static void	 wait_calls(struct event_base *base, const int *calls, int target);
static struct spool *open_spool(struct fixture *f, const char *maildir, uint64_t max_bytes);
static struct spool_msg *store(struct spool *sp, const void *data, size_t len, char hex[65]);
static int	 count_lines(const char *path);
static int	 count_entries(const char *dir);
static void	 sha256sum(const char *path, char out[65]);
static struct spool *open_spool_ckpt(struct fixture *f, bool no_checkpoint, uint32_t age_ms);
static int	 commit_wait(struct fixture *f, struct spool *sp, const void *data,
		    size_t len, char hex[65], int *err_no);
static long long seg_bytes(struct fixture *f, int *n);
static void	 assert_eml(struct fixture *f, const char *hex, const void *data, size_t len);
static long long now_ms(void);
static struct spool_stats wait_stat(struct spool *sp, size_t off, uint64_t min);

/* A fresh temp dir and event base per test. */
static int
setup(void **state)
{
	struct fixture	*f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/test_spool.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->spooldir, sizeof(f->spooldir), "%s/spool", f->dir);
	f->base = event_base_new();
	*state = f;
	return f->base == NULL ? -1 : 0;
}

/* Remove the temp dir and the event base. */
static int
teardown(void **state)
{
	struct fixture	*f = *state;

	testhook_set(NULL, NULL);	/* a failed hook test leaves none behind */
	if (f->mounted)
		umount2(f->spooldir, MNT_DETACH);
	rm_rf(f->dir);
	event_base_free(f->base);
	free(f);
	return 0;
}

/* Commit callback: count and keep the result. */
static void
done_cb(void *arg, int status, int err_no)
{
	struct done	*d = arg;

	d->calls++;
	d->status = status;
	d->err_no = err_no;
}

/* Guard timer: fails the test when a callback never comes. */
static void
timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(bool *)arg = true;
}

/* Run the loop until *calls reaches target (10 s guard). */
static void
wait_calls(struct event_base *base, const int *calls, int target)
{
	struct timeval	 tv = { 10, 0 };
	bool		 timed_out = false;
	struct event	*t = evtimer_new(base, timeout_cb, &timed_out);

	evtimer_add(t, &tv);
	while (*calls < target && !timed_out)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	assert_false(timed_out);
	assert_int_equal(*calls, target);
}

/* Open a spool in the fixture's directory. */
static struct spool *
open_spool(struct fixture *f, const char *maildir, uint64_t max_bytes)
{
	struct spool_opts	 o = { .dir = f->spooldir, .maildir = maildir,
	    .hostname = "mx.example.test", .min_free = 0, .max_bytes = max_bytes };
	char			 err[256] = "";
	struct spool		*sp = spool_open(f->base, &o, err, sizeof(err));

	if (sp == NULL)
		print_error("spool_open: %s\n", err);
	assert_non_null(sp);
	return sp;
}

/* New message with data written and finished. */
static struct spool_msg *
store(struct spool *sp, const void *data, size_t len, char hex[65])
{
	char			 err[256];
	struct spool_msg	*m = spool_msg_new(sp, err, sizeof(err));

	assert_non_null(m);
	assert_int_equal(spool_msg_write(m, data, len), 0);
	assert_int_equal(spool_msg_finish(m, hex), 0);
	assert_int_equal(strlen(hex), 64);
	return m;
}

/* Number of '\n' in a file. */
static int
count_lines(const char *path)
{
	size_t	 len;
	char	*s = slurp(path, &len);
	int	 n = 0;

	for (size_t i = 0; i < len; i++)
		n += s[i] == '\n';
	free(s);
	return n;
}

/* Number of entries in a directory, dot files excluded. */
static int
count_entries(const char *dir)
{
	DIR		*d = opendir(dir);
	struct dirent	*de;
	int		 n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* sha256sum(1) of a file. */
static void
sha256sum(const char *path, char out[65])
{
	char	 cmd[512];
	FILE	*p;

	snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(out, 65, p));
	pclose(p);
}

/* A committed message is at messages/<sha>.eml, byte-exact, with a journal line. */
static void
test_commit_basic(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp = open_spool(f, NULL, 0);
	const char	 body[] = "From: a@b\r\nSubject: hi\r\n\r\nbody\r\n";
	const char	*rec = "{\"eventid\":\"fosr.mail.received\",\"n\":1}";
	char		 hex[65], path[512], sum[65], *got, *j;
	size_t		 len;
	struct done	 d = { 0 };
	struct spool_msg *m = store(sp, body, sizeof(body) - 1, hex);

	assert_int_equal(spool_msg_size(m), sizeof(body) - 1);
	assert_int_equal(spool_msg_error(m), 0);
	spool_msg_commit(m, rec, strlen(rec), done_cb, &d);
	assert_int_equal(d.calls, 0);	/* never synchronous */
	wait_calls(f->base, &d.calls, 1);
	assert_int_equal(d.status, 0);
	assert_int_equal(d.err_no, 0);

	snprintf(path, sizeof(path), "%s/messages/%s.eml", f->spooldir, hex);
	got = slurp(path, &len);
	assert_int_equal(len, sizeof(body) - 1);
	assert_memory_equal(got, body, len);
	free(got);
	sha256sum(path, sum);
	assert_string_equal(sum, hex);

	j = slurp(spool_journal_path(sp), NULL);
	assert_non_null(strstr(j, rec));
	assert_int_equal(count_lines(spool_journal_path(sp)), 1);
	assert_int_equal(j[strlen(j) - 1], '\n');
	free(j);
	snprintf(path, sizeof(path), "%s/tmp", f->spooldir);
	assert_int_equal(count_entries(path), 0);
	assert_string_equal(spool_dir(sp), f->spooldir);
	spool_free(sp);
}

/* Large bodies written in odd-sized pieces cross the 64 KiB buffer correctly. */
static void
test_large_chunks(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp = open_spool(f, NULL, 0);
	size_t		 total = 300000, off = 0, step = 1;
	unsigned char	*data = malloc(total);
	char		 err[256], hex[65], path[512], sum[65], *got;
	size_t		 len;
	struct done	 d = { 0 };
	struct spool_msg *m = spool_msg_new(sp, err, sizeof(err));

	for (size_t i = 0; i < total; i++)
		data[i] = (unsigned char)(i * 7 + i / 251);
	while (off < total) {
		size_t	n = step > total - off ? total - off : step;

		assert_int_equal(spool_msg_write(m, data + off, n), 0);
		off += n;
		step = step * 3 + 1;	/* 1, 4, 13, ..., 88573: below and above 64 KiB */
	}
	assert_int_equal(spool_msg_finish(m, hex), 0);
	spool_msg_commit(m, "{}", 2, done_cb, &d);
	wait_calls(f->base, &d.calls, 1);
	assert_int_equal(d.status, 0);
	snprintf(path, sizeof(path), "%s/messages/%s.eml", f->spooldir, hex);
	got = slurp(path, &len);
	assert_int_equal(len, total);
	assert_memory_equal(got, data, total);
	sha256sum(path, sum);
	assert_string_equal(sum, hex);
	free(got);
	free(data);
	spool_free(sp);
}

/* The same content twice is stored once, recorded twice, and linked twice in a Maildir. */
static void
test_duplicate(void **state)
{
	struct fixture	*f = *state;
	char		 maildir[256], path[512], hex1[65], hex2[65];
	struct spool	*sp;
	struct done	 d1 = { 0 }, d2 = { 0 };
	struct spool_stats st;
	struct stat	 sb;
	const char	 body[] = "same bytes\r\n";

	snprintf(maildir, sizeof(maildir), "%s/Maildir", f->dir);
	sp = open_spool(f, maildir, 0);
	spool_msg_commit(store(sp, body, sizeof(body) - 1, hex1), "{\"r\":1}", 7,
	    done_cb, &d1);
	wait_calls(f->base, &d1.calls, 1);
	spool_msg_commit(store(sp, body, sizeof(body) - 1, hex2), "{\"r\":2}", 7,
	    done_cb, &d2);
	wait_calls(f->base, &d2.calls, 1);
	assert_int_equal(d1.status, 0);
	assert_int_equal(d2.status, 0);
	assert_string_equal(hex1, hex2);

	snprintf(path, sizeof(path), "%s/messages", f->spooldir);
	assert_int_equal(count_entries(path), 1);
	assert_int_equal(count_lines(spool_journal_path(sp)), 2);
	snprintf(path, sizeof(path), "%s/new", maildir);
	assert_int_equal(count_entries(path), 2);
	snprintf(path, sizeof(path), "%s/cur", maildir);
	assert_int_equal(count_entries(path), 0);
	snprintf(path, sizeof(path), "%s/messages/%s.eml", f->spooldir, hex1);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_nlink, 3);	/* messages/ + two Maildir links */
	spool_get_stats(sp, &st);
	assert_int_equal(st.commits, 2);
	assert_int_equal(st.dedup, 1);
	assert_int_equal(st.failures, 0);
	spool_free(sp);
}

/*
 * A small body makes no tmp file at all (it stays in memory); one that
 * outgrows the buffer gets one, readable by its path; abort removes it.
 */
static void
test_abort(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp = open_spool(f, NULL, 0);
	char		 err[256], path[512];
	struct spool_msg *m = spool_msg_new(sp, err, sizeof(err));
	static char	 big[70 * 1024];

	snprintf(path, sizeof(path), "%s/tmp", f->spooldir);
	assert_non_null(m);
	assert_int_equal(spool_msg_write(m, "abc", 3), 0);
	assert_null(spool_msg_path(m));
	assert_int_equal(count_entries(path), 0);
	memset(big, 'b', sizeof(big));
	assert_int_equal(spool_msg_write(m, big, sizeof(big)), 0);
	assert_non_null(spool_msg_path(m));
	/*
	 * Where the filesystem has O_TMPFILE the file has no name at all (its
	 * path is /proc/self/fd/N); otherwise it is a named file in tmp/.
	 */
	if (strncmp(spool_msg_path(m), "/proc/self/fd/", 14) == 0)
		assert_int_equal(count_entries(path), 0);
	else
		assert_int_equal(count_entries(path), 1);
	{
		/* The tmp file is readable by its path while it is open (the DATA rules read it). */
		int	fd = open(spool_msg_path(m), O_RDONLY);
		char	b[4] = "";
		assert_true(fd >= 0);
		assert_int_equal(spool_msg_finish(m, (char[65]){0}), 0);
		assert_int_equal(pread(fd, b, 3, 0), 3);
		assert_memory_equal(b, "abc", 3);
		close(fd);
	}
	spool_msg_abort(m);
	assert_int_equal(count_entries(path), 0);
	snprintf(path, sizeof(path), "%s/messages", f->spooldir);
	assert_int_equal(count_entries(path), 0);

	/* A small message aborted leaves nothing either. */
	m = spool_msg_new(sp, err, sizeof(err));
	assert_int_equal(spool_msg_write(m, "xyz", 3), 0);
	assert_int_equal(spool_msg_finish(m, (char[65]){0}), 0);
	spool_msg_abort(m);
	assert_int_equal(count_entries(path), 0);
	snprintf(path, sizeof(path), "%s/tmp", f->spooldir);
	assert_int_equal(count_entries(path), 0);
	spool_free(sp);
}

/* A torn last journal line and stale tmp files are removed at open. */
static void
test_torn_tail(void **state)
{
	struct fixture	*f = *state;
	char		 path[512], *j;
	FILE		 *fp;
	struct spool	*sp;
	struct done	 d = { 0 };
	char		 hex[65];

	snprintf(path, sizeof(path), "%s/tmp", f->spooldir);
	assert_int_equal(mkdir(f->spooldir, 0750), 0);
	assert_int_equal(mkdir(path, 0750), 0);
	snprintf(path, sizeof(path), "%s/tmp/stale.tmp", f->spooldir);
	fp = fopen(path, "w");
	fputs("half a message", fp);
	fclose(fp);
	snprintf(path, sizeof(path), "%s/receptions.jsonl", f->spooldir);
	fp = fopen(path, "w");
	fputs("{\"a\":1}\n{\"b\":2}\n{\"c\":", fp);
	fclose(fp);

	sp = open_spool(f, NULL, 0);
	j = slurp(path, NULL);
	assert_string_equal(j, "{\"a\":1}\n{\"b\":2}\n");
	free(j);
	snprintf(path, sizeof(path), "%s/tmp", f->spooldir);
	assert_int_equal(count_entries(path), 0);

	/* New records follow the repaired tail. */
	spool_msg_commit(store(sp, "x", 1, hex), "{\"d\":4}", 7, done_cb, &d);
	wait_calls(f->base, &d.calls, 1);
	j = slurp(spool_journal_path(sp), NULL);
	assert_string_equal(j, "{\"a\":1}\n{\"b\":2}\n{\"d\":4}\n");
	free(j);
	spool_free(sp);

	/* A journal without any newline is cut to nothing. */
	snprintf(path, sizeof(path), "%s/receptions.jsonl", f->spooldir);
	fp = fopen(path, "w");
	fputs("{\"torn", fp);
	fclose(fp);
	sp = open_spool(f, NULL, 0);
	j = slurp(path, NULL);
	assert_string_equal(j, "");
	free(j);
	spool_free(sp);
}

/* A detached commit completes but its callback is not run. */
static void
test_detach(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp = open_spool(f, NULL, 0);
	struct done	 d1 = { 0 }, d2 = { 0 };
	char		 hex[65];
	struct spool_msg *m = store(sp, "first", 5, hex);

	spool_msg_commit(m, "{\"n\":1}", 7, done_cb, &d1);
	spool_msg_detach(m);
	spool_msg_commit(store(sp, "second", 6, hex), "{\"n\":2}", 7, done_cb, &d2);
	/* Completions are delivered in order: when the second has run, the first was handled. */
	wait_calls(f->base, &d2.calls, 1);
	assert_int_equal(d1.calls, 0);
	assert_int_equal(d2.status, 0);
	assert_int_equal(count_lines(spool_journal_path(sp)), 2);
	spool_free(sp);
}

/* spool_free finishes queued commits (durably) without running callbacks. */
static void
test_free_pending(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp = open_spool(f, NULL, 0);
	struct done	 d = { 0 };
	char		 hex[65], path[512], jpath[512];
	struct stat	 sb;

	spool_msg_commit(store(sp, "pending", 7, hex), "{\"p\":1}", 7, done_cb, &d);
	snprintf(jpath, sizeof(jpath), "%s", spool_journal_path(sp));
	spool_free(sp);
	assert_int_equal(d.calls, 0);
	snprintf(path, sizeof(path), "%s/messages/%s.eml", f->spooldir, hex);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(count_lines(jpath), 1);
	/* Nothing is left for the loop to deliver. */
	event_base_loop(f->base, EVLOOP_NONBLOCK);
	assert_int_equal(d.calls, 0);
}

/* max_bytes: a write past the quota fails with EDQUOT, stickily. */
static void
test_quota(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp = open_spool(f, NULL, 100);
	char		 err[256], hex[65], buf[60];
	struct done	 d = { 0 };
	struct spool_msg *m;

	memset(buf, 'q', sizeof(buf));
	assert_int_equal(spool_check_space(sp, 50), 0);
	assert_int_equal(spool_check_space(sp, 101), -1);
	m = spool_msg_new(sp, err, sizeof(err));
	assert_int_equal(spool_msg_write(m, buf, 60), 0);
	assert_int_equal(spool_msg_write(m, buf, 60), -1);
	assert_int_equal(errno, EDQUOT);
	assert_int_equal(spool_msg_error(m), EDQUOT);
	assert_int_equal(spool_msg_write(m, buf, 1), -1);	/* sticky */
	assert_int_equal(spool_msg_finish(m, hex), -1);
	spool_msg_abort(m);

	/* 60 bytes stored: another 60 no longer fit. */
	spool_msg_commit(store(sp, buf, 60, hex), "{}", 2, done_cb, &d);
	wait_calls(f->base, &d.calls, 1);
	assert_int_equal(d.status, 0);
	assert_int_equal(spool_check_space(sp, 41), -1);
	assert_int_equal(spool_check_space(sp, 40), 0);
	m = spool_msg_new(sp, err, sizeof(err));
	assert_int_equal(spool_msg_write(m, buf, 30), 0);
	assert_int_equal(spool_msg_write(m, buf, 30), -1);
	assert_int_equal(spool_msg_error(m), EDQUOT);
	spool_msg_abort(m);
	spool_free(sp);

	/* The usage is measured again at open. */
	sp = open_spool(f, NULL, 100);
	assert_int_equal(spool_check_space(sp, 41), -1);
	assert_int_equal(spool_check_space(sp, 40), 0);
	spool_free(sp);
}

/* min_free larger than any filesystem: no room. */
static void
test_min_free(void **state)
{
	struct fixture		*f = *state;
	struct spool_opts	 o = { .dir = f->spooldir, .min_free = UINT64_MAX / 2 };
	char			 err[256];
	struct spool		*sp = spool_open(f->base, &o, err, sizeof(err));

	assert_non_null(sp);
	assert_int_equal(spool_check_space(sp, 1), -1);
	spool_free(sp);
	o.min_free = 1;
	sp = spool_open(f->base, &o, err, sizeof(err));
	assert_int_equal(spool_check_space(sp, 1), 0);
	spool_free(sp);
}

/* 100 commits queued at once all complete, in fewer group commits than messages. */
static void
test_many_concurrent(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp = open_spool(f, NULL, 0);
	struct done	 d[100];
	int		 calls = 0;
	char		 hex[100][65], body[64], rec[64], path[512];
	struct spool_stats st;
	struct stat	 sb;

	memset(d, 0, sizeof(d));
	for (int i = 0; i < 100; i++) {
		int	n = snprintf(body, sizeof(body), "message number %d\r\n", i);
		int	r = snprintf(rec, sizeof(rec), "{\"i\":%d}", i);

		spool_msg_commit(store(sp, body, (size_t)n, hex[i]), rec, (size_t)r,
		    done_cb, &d[i]);
	}
	for (;;) {
		calls = 0;
		for (int i = 0; i < 100; i++)
			calls += d[i].calls;
		if (calls == 100)
			break;
		event_base_loop(f->base, EVLOOP_ONCE);
	}
	for (int i = 0; i < 100; i++) {
		assert_int_equal(d[i].calls, 1);
		assert_int_equal(d[i].status, 0);
		snprintf(path, sizeof(path), "%s/messages/%.64s.eml", f->spooldir, hex[i]);
		assert_int_equal(stat(path, &sb), 0);
	}
	assert_int_equal(count_lines(spool_journal_path(sp)), 100);
	spool_get_stats(sp, &st);
	assert_int_equal(st.commits, 100);
	assert_true(st.groups < 100);
	spool_free(sp);
}

/* Commit without finish, or after a write error, reports failure (never success). */
static void
test_commit_errors(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp = open_spool(f, NULL, 0);
	char		 err[256], path[512];
	struct done	 d = { 0 };
	struct spool_msg *m = spool_msg_new(sp, err, sizeof(err));

	assert_int_equal(spool_msg_write(m, "abc", 3), 0);
	spool_msg_commit(m, "{}", 2, done_cb, &d);
	wait_calls(f->base, &d.calls, 1);
	assert_int_equal(d.status, -1);
	assert_int_equal(d.err_no, EINVAL);
	snprintf(path, sizeof(path), "%s/tmp", f->spooldir);
	assert_int_equal(count_entries(path), 0);
	assert_int_equal(count_lines(spool_journal_path(sp)), 0);
	spool_free(sp);
}

/* spool_open on a path that cannot be created fails with a message. */
static void
test_open_unwritable(void **state)
{
	struct fixture		*f = *state;
	char			 file[256], bad[300], err[256] = "";
	struct spool_opts	 o = { 0 };
	FILE			*fp;

	snprintf(file, sizeof(file), "%s/plainfile", f->dir);
	fp = fopen(file, "w");
	fclose(fp);
	snprintf(bad, sizeof(bad), "%s/sub", file);	/* a file as a parent: even root fails */
	o.dir = bad;
	assert_null(spool_open(f->base, &o, err, sizeof(err)));
	assert_true(strlen(err) > 0);
	assert_non_null(strstr(err, "spool"));
	err[0] = '\0';
	o.dir = "";
	assert_null(spool_open(f->base, &o, err, sizeof(err)));
	assert_true(strlen(err) > 0);
}

/* Disk full (1 MiB tmpfs): a write or commit fails with ENOSPC, never succeeds. */
static void
test_enospc(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp;
	struct spool_msg *m;
	char		 err[256], hex[65], path[512], filler[512], *rec, *buf;
	struct done	 d = { 0 };
	struct stat	 sb;
	off_t		 jlen;
	int		 fd, r = 0;
	size_t		 big = 2 * 1024 * 1024;

	assert_int_equal(mkdir(f->spooldir, 0750), 0);
	if (mount("tmpfs", f->spooldir, "tmpfs", 0, "size=1m") == -1) {
		print_message("mount tmpfs failed (%s): skipped\n", strerror(errno));
		skip();
	}
	f->mounted = true;
	sp = open_spool(f, NULL, 0);

	/* 1) a message larger than the filesystem. */
	buf = calloc(1, big);
	m = spool_msg_new(sp, err, sizeof(err));
	assert_non_null(m);
	for (size_t off = 0; off < big && r == 0; off += 4096)
		r = spool_msg_write(m, buf + off, 4096);
	if (r == 0)
		r = spool_msg_finish(m, hex);
	assert_int_equal(r, -1);
	assert_int_equal(spool_msg_error(m), ENOSPC);
	spool_msg_commit(m, "{}", 2, done_cb, &d);
	wait_calls(f->base, &d.calls, 1);
	assert_int_equal(d.status, -1);
	assert_int_equal(d.err_no, ENOSPC);
	snprintf(path, sizeof(path), "%s/messages", f->spooldir);
	assert_int_equal(count_entries(path), 0);
	assert_int_equal(count_lines(spool_journal_path(sp)), 0);

	/* 2) the journal append runs out of space: the commit fails, no torn line. */
	d.calls = 0;
	spool_msg_commit(store(sp, "small", 5, hex), "{\"ok\":1}", 8, done_cb, &d);
	wait_calls(f->base, &d.calls, 1);
	assert_int_equal(d.status, 0);
	snprintf(filler, sizeof(filler), "%s/filler", f->spooldir);
	fd = open(filler, O_CREAT | O_WRONLY, 0600);
	while (write(fd, buf, 4096) > 0)
		;
	assert_int_equal(errno, ENOSPC);
	assert_int_equal(fstat(fd, &sb), 0);
	assert_int_equal(ftruncate(fd, sb.st_size - 8192), 0);	/* two pages free */
	close(fd);
	assert_int_equal(stat(spool_journal_path(sp), &sb), 0);
	jlen = sb.st_size;
	rec = malloc(65536);
	memset(rec, 'x', 65536);
	rec[0] = '{';
	rec[65535] = '}';
	d.calls = 0;
	m = store(sp, "fits", 4, hex);
	spool_msg_commit(m, rec, 65536, done_cb, &d);
	wait_calls(f->base, &d.calls, 1);
	assert_int_equal(d.status, -1);
	assert_int_equal(d.err_no, ENOSPC);
	assert_int_equal(stat(spool_journal_path(sp), &sb), 0);
	assert_int_equal(sb.st_size, jlen);
	assert_int_equal(count_lines(spool_journal_path(sp)), 1);
	free(rec);
	free(buf);
	spool_free(sp);
}

/* Open a spool with the test knobs (checkpoints off, or a short age). */
static struct spool *
open_spool_ckpt(struct fixture *f, bool no_checkpoint, uint32_t age_ms)
{
	struct spool_opts	 o = { .dir = f->spooldir, .hostname = "mx.example.test",
	    .no_checkpoint = no_checkpoint, .checkpoint_age_ms = age_ms };
	char			 err[256] = "";
	struct spool		*sp = spool_open(f->base, &o, err, sizeof(err));

	if (sp == NULL)
		print_error("spool_open: %s\n", err);
	assert_non_null(sp);
	return sp;
}

/* Commit one message and wait for its callback; returns the status. */
static int
commit_wait(struct fixture *f, struct spool *sp, const void *data, size_t len,
    char hex[65], int *err_no)
{
	struct done	d = { 0 };

	spool_msg_commit(store(sp, data, len, hex), "{}", 2, done_cb, &d);
	wait_calls(f->base, &d.calls, 1);
	if (err_no != NULL)
		*err_no = d.err_no;
	return d.status;
}

/* Total size of the segment files (-1 entries counted in *n). */
static long long
seg_bytes(struct fixture *f, int *n)
{
	char		 path[512];
	DIR		*d;
	struct dirent	*de;
	struct stat	 sb;
	long long	 sum = 0;

	snprintf(path, sizeof(path), "%s/segments", f->spooldir);
	assert_non_null(d = opendir(path));
	*n = 0;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		assert_int_equal(fstatat(dirfd(d), de->d_name, &sb, 0), 0);
		sum += sb.st_size;
		(*n)++;
	}
	closedir(d);
	return sum;
}

/* The .eml of hex holds exactly data. */
static void
assert_eml(struct fixture *f, const char *hex, const void *data, size_t len)
{
	char	 path[512], *got;
	size_t	 glen;

	snprintf(path, sizeof(path), "%s/messages/%s.eml", f->spooldir, hex);
	got = slurp(path, &glen);
	assert_int_equal(glen, len);
	assert_memory_equal(got, data, len);
	free(got);
}

/*
 * A crash after the 250 (spool freed without checkpoint: the segments stay):
 * at the next open, a deleted, a truncated and a corrupted .eml are all
 * rewritten from the segment, an intact one is left alone, the segments go.
 */
static void
test_segment_recover(void **state)
{
	struct fixture		*f = *state;
	const char		*bodies[4] = { "first message\r\n", "second, a bit longer\r\n",
	    "third\r\n", "fourth stays intact\r\n" };
	char			 hex[4][65], path[512];
	struct spool		*sp = open_spool_ckpt(f, true, 0);
	struct spool_stats	 st;
	int			 nseg, fd;

	for (int i = 0; i < 4; i++)
		assert_int_equal(commit_wait(f, sp, bodies[i], strlen(bodies[i]), hex[i],
		    NULL), 0);
	spool_get_stats(sp, &st);
	assert_int_equal(st.segment_bytes, 4 * 91 + strlen(bodies[0]) + strlen(bodies[1]) +
	    strlen(bodies[2]) + strlen(bodies[3]));
	spool_free(sp);
	assert_true(seg_bytes(f, &nseg) > 0);
	assert_int_equal(nseg, 1);

	snprintf(path, sizeof(path), "%s/messages/%s.eml", f->spooldir, hex[0]);
	assert_int_equal(unlink(path), 0);
	snprintf(path, sizeof(path), "%s/messages/%s.eml", f->spooldir, hex[1]);
	assert_int_equal(truncate(path, 3), 0);
	snprintf(path, sizeof(path), "%s/messages/%s.eml", f->spooldir, hex[2]);
	assert_true((fd = open(path, O_WRONLY)) >= 0);
	assert_int_equal(pwrite(fd, "XX", 2, 1), 2);	/* same size, wrong bytes */
	close(fd);

	sp = open_spool(f, NULL, 0);
	spool_get_stats(sp, &st);
	assert_int_equal(st.recovered, 3);
	for (int i = 0; i < 4; i++)
		assert_eml(f, hex[i], bodies[i], strlen(bodies[i]));
	assert_int_equal(seg_bytes(f, &nseg), 0);
	assert_int_equal(nseg, 0);
	snprintf(path, sizeof(path), "%s/tmp", f->spooldir);
	assert_int_equal(count_entries(path), 0);
	/* New commits after a replay go on working. */
	assert_int_equal(commit_wait(f, sp, "after", 5, hex[0], NULL), 0);
	assert_eml(f, hex[0], "after", 5);
	assert_int_equal(count_lines(spool_journal_path(sp)), 5);
	spool_free(sp);
}

/*
 * A replay does not trust an intact-looking .eml: after a writeback error
 * (the checkpoint's syncfs failed, so the segment was kept) Linux marks the
 * pages clean, their bytes still in the page cache but not on disk, and the
 * next process's syncfs neither writes them nor reports the error again
 * (it was seen).  So the replay writes the bytes again (same bytes, same
 * inode) before its syncfs.  Seen from here: the file's mtime moves.
 */
static void
test_segment_recover_rewrites_intact(void **state)
{
	struct fixture		*f = *state;
	const char		*body = "intact in the page cache\r\n";
	struct timespec		 old[2] = { { 946684800, 0 }, { 946684800, 0 } };
	char			 hex[65], path[512];
	struct spool		*sp = open_spool_ckpt(f, true, 0);
	struct stat		 sb;
	int			 nseg;

	assert_int_equal(commit_wait(f, sp, body, strlen(body), hex, NULL), 0);
	spool_free(sp);
	assert_true(seg_bytes(f, &nseg) > 0);
	snprintf(path, sizeof(path), "%s/messages/%s.eml", f->spooldir, hex);
	assert_int_equal(utimensat(AT_FDCWD, path, old, 0), 0);

	sp = open_spool(f, NULL, 0);
	assert_int_equal(seg_bytes(f, &nseg), 0);
	assert_int_equal(stat(path, &sb), 0);
	if (sb.st_mtim.tv_sec == old[1].tv_sec)
		fail_msg("replay trusted the intact .eml's cached bytes and "
		    "deleted its segment without writing them again");
	assert_eml(f, hex, body, strlen(body));
	spool_free(sp);
}

/* A replay rewrites a torn .eml in place: its Maildir links are mended too. */
static void
test_segment_recover_maildir(void **state)
{
	struct fixture		*f = *state;
	struct spool_opts	 o = { .dir = f->spooldir, .hostname = "mx.example.test",
	    .no_checkpoint = true };
	char			 maildir[256], path[512], err[256], hex[65], *got;
	const char		 body[] = "maildir copy\r\n";
	struct spool		*sp;
	struct dirent		*de;
	DIR			*d;
	size_t			 len;

	snprintf(maildir, sizeof(maildir), "%s/Maildir", f->dir);
	o.maildir = maildir;
	assert_non_null(sp = spool_open(f->base, &o, err, sizeof(err)));
	assert_int_equal(commit_wait(f, sp, body, sizeof(body) - 1, hex, NULL), 0);
	spool_free(sp);
	snprintf(path, sizeof(path), "%s/messages/%s.eml", f->spooldir, hex);
	assert_int_equal(truncate(path, 0), 0);	/* written back never: crash */

	sp = open_spool(f, maildir, 0);
	assert_eml(f, hex, body, sizeof(body) - 1);
	snprintf(path, sizeof(path), "%s/new", maildir);
	assert_non_null(d = opendir(path));
	while ((de = readdir(d)) != NULL) {
		char	p2[1024];

		if (de->d_name[0] == '.')
			continue;
		snprintf(p2, sizeof(p2), "%s/%s", path, de->d_name);
		got = slurp(p2, &len);
		assert_int_equal(len, sizeof(body) - 1);
		assert_memory_equal(got, body, len);
		free(got);
	}
	closedir(d);
	spool_free(sp);
}

/* A torn last record (crash mid-append, never acknowledged) is ignored. */
static void
test_segment_torn_tail(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp = open_spool_ckpt(f, true, 0);
	char		 hex[65], path[512], name[1024], rec[200];
	const char	 body[] = "acknowledged\r\n";
	const char	 zeros[64] = { 0 };
	DIR		*d;
	struct dirent	*de;
	int		 fd, nseg, n;

	assert_int_equal(commit_wait(f, sp, body, sizeof(body) - 1, hex, NULL), 0);
	spool_free(sp);
	snprintf(path, sizeof(path), "%s/segments", f->spooldir);
	assert_non_null(d = opendir(path));
	name[0] = '\0';
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			snprintf(name, sizeof(name), "%s/%s", path, de->d_name);
	closedir(d);
	assert_true(name[0] != '\0');
	/*
	 * Two torn records after the good one: a header whose payload is cut
	 * short, which the replay must not take for a record.
	 */
	assert_true((fd = open(name, O_WRONLY | O_APPEND)) >= 0);
	n = snprintf(rec, sizeof(rec), "FOSRSEG1 %064x %016x\n", 0, 1000);
	assert_int_equal(n, 91);
	assert_int_equal(write(fd, rec, (size_t)n), n);
	assert_int_equal(write(fd, "only a few bytes", 16), 16);
	close(fd);
	snprintf(path, sizeof(path), "%s/messages/%s.eml", f->spooldir, hex);
	assert_int_equal(unlink(path), 0);

	sp = open_spool(f, NULL, 0);
	assert_eml(f, hex, body, sizeof(body) - 1);
	snprintf(path, sizeof(path), "%s/messages", f->spooldir);
	assert_int_equal(count_entries(path), 1);
	assert_int_equal(seg_bytes(f, &nseg), 0);
	spool_free(sp);

	/* A complete header whose payload does not hash to it: also torn. */
	sp = open_spool_ckpt(f, true, 0);
	assert_int_equal(commit_wait(f, sp, "x", 1, hex, NULL), 0);
	spool_free(sp);
	snprintf(path, sizeof(path), "%s/segments", f->spooldir);
	assert_non_null(d = opendir(path));
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			snprintf(name, sizeof(name), "%s/%s", path, de->d_name);
	closedir(d);
	assert_true((fd = open(name, O_WRONLY | O_APPEND)) >= 0);
	n = snprintf(rec, sizeof(rec), "FOSRSEG1 %s %016x\n",
	    "0000000000000000000000000000000000000000000000000000000000000000", 64);
	assert_int_equal(write(fd, rec, (size_t)n), n);
	assert_int_equal(write(fd, zeros, sizeof(zeros)), (ssize_t)sizeof(zeros));
	close(fd);
	sp = open_spool(f, NULL, 0);
	snprintf(path, sizeof(path), "%s/messages", f->spooldir);
	assert_int_equal(count_entries(path), 2);	/* no 0000….eml */
	assert_int_equal(seg_bytes(f, &nseg), 0);
	spool_free(sp);
}

/*
 * Checkpoints delete the segments and keep the .eml: on their own after
 * the age (short here), and at a clean spool_free().
 */
static void
test_checkpoint(void **state)
{
	struct fixture		*f = *state;
	struct spool		*sp = open_spool_ckpt(f, false, 50);
	struct spool_stats	 st;
	char			 hex[65], hex2[65];
	int			 nseg, tries = 0;

	assert_int_equal(commit_wait(f, sp, "checkpointed", 12, hex, NULL), 0);
	assert_true(seg_bytes(f, &nseg) > 0);
	do {
		usleep(20000);
		spool_get_stats(sp, &st);
	} while (st.checkpoints == 0 && ++tries < 250);
	assert_int_equal(st.checkpoints, 1);
	assert_int_equal(seg_bytes(f, &nseg), 0);
	assert_int_equal(nseg, 0);
	assert_eml(f, hex, "checkpointed", 12);
	spool_free(sp);

	sp = open_spool(f, NULL, 0);
	assert_int_equal(commit_wait(f, sp, "at stop", 7, hex2, NULL), 0);
	assert_true(seg_bytes(f, &nseg) > 0);
	spool_free(sp);
	assert_int_equal(seg_bytes(f, &nseg), 0);
	assert_int_equal(nseg, 0);
	assert_eml(f, hex, "checkpointed", 12);
	assert_eml(f, hex2, "at stop", 7);
	/* Nothing to replay at the next open. */
	sp = open_spool(f, NULL, 0);
	spool_get_stats(sp, &st);
	assert_int_equal(st.recovered, 0);
	spool_free(sp);
}

/* A message above the segment threshold keeps the per-file path. */
static void
test_big_message(void **state)
{
	struct fixture		*f = *state;
	struct spool		*sp = open_spool_ckpt(f, true, 0);
	size_t			 len = 256 * 1024 + 1;
	unsigned char		*data = malloc(len);
	char			 hex[65], hex2[65], sum[65], path[512];
	struct spool_stats	 st;
	int			 nseg;

	for (size_t i = 0; i < len; i++)
		data[i] = (unsigned char)(i * 13 + i / 7);
	assert_int_equal(commit_wait(f, sp, data, len, hex, NULL), 0);
	/* The biggest small one goes through the segment. */
	assert_int_equal(commit_wait(f, sp, data, len - 1, hex2, NULL), 0);
	spool_get_stats(sp, &st);
	assert_int_equal(st.segment_bytes, 91 + len - 1);
	assert_int_equal(commit_wait(f, sp, data, len, hex, NULL), 0);	/* dedup */
	spool_get_stats(sp, &st);
	assert_int_equal(st.dedup, 1);
	assert_int_equal(count_lines(spool_journal_path(sp)), 3);
	spool_free(sp);
	/* Only the small one has a record (no checkpoint here: it stays). */
	assert_int_equal(seg_bytes(f, &nseg), 91 + (long long)len - 1);
	assert_eml(f, hex, data, len);
	assert_eml(f, hex2, data, len - 1);
	snprintf(path, sizeof(path), "%s/messages/%s.eml", f->spooldir, hex);
	sha256sum(path, sum);
	assert_string_equal(sum, hex);
	free(data);
}

/* Hook of test_big_dirsync_dedup: every fsync of messages/ fails (EIO). */
static int	big_dirsyncs;

static int
dirsync_fail_cb(void *arg, const char *step, const char *detail)
{
	(void)arg;
	(void)detail;
	if (strcmp(step, "big_dirsync") != 0)
		return 0;
	big_dirsyncs++;
	return EIO;
}

/*
 * A big message's name is durable only once messages/ is fsync'ed.  When
 * that fsync fails the commit fails, but the name stays; a later copy of
 * the same body must not be acknowledged on the strength of that name (it
 * may be gone after a power loss): its group fsyncs messages/ too, and
 * fails while that fails.  Same after a kill -9 between the link and the
 * fsync (stop=names_done): the name is there, nothing made it durable.
 */
static void
test_big_dirsync_dedup(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp = open_spool_ckpt(f, true, 0);
	size_t		 len = 256 * 1024 + 1;
	unsigned char	*data = malloc(len);
	char		 hex[65];
	int		 e = 0;

	for (size_t i = 0; i < len; i++)
		data[i] = (unsigned char)(i * 29 + i / 5);
	big_dirsyncs = 0;
	testhook_set(dirsync_fail_cb, NULL);
	assert_int_equal(commit_wait(f, sp, data, len, hex, &e), -1);
	assert_int_equal(e, EIO);
	assert_int_equal(big_dirsyncs, 1);
	/* The same body again while messages/ cannot be synced: no 250. */
	e = 0;
	if (commit_wait(f, sp, data, len, hex, &e) == 0)
		fail_msg("duplicate of a big mail acknowledged with no fsync of "
		    "messages/ since its name was made (%d fsyncs tried)",
		    big_dirsyncs);
	assert_int_equal(e, EIO);
	assert_int_equal(big_dirsyncs, 2);
	testhook_set(NULL, NULL);
	assert_int_equal(commit_wait(f, sp, data, len, hex, NULL), 0);
	assert_int_equal(count_lines(spool_journal_path(sp)), 1);
	spool_free(sp);
	assert_eml(f, hex, data, len);
	free(data);
}

/* Hook of test_journal_cut_fails: fails the journal steps asked for, once. */
static int	jfail_sync, jfail_trunc;

static int
journal_fail_cb(void *arg, const char *step, const char *detail)
{
	(void)arg;
	(void)detail;
	if (strcmp(step, "journal_sync") == 0 && jfail_sync > 0) {
		jfail_sync--;
		return EIO;
	}
	if (strcmp(step, "journal_trunc") == 0 && jfail_trunc > 0) {
		jfail_trunc--;
		return EIO;
	}
	return 0;
}

/*
 * A journal append fails and so does cutting it back: the failed group's
 * line stays.  A later failure's cut must never reach into a line that was
 * acknowledged since (the length to cut back to must be the file's, not
 * the sum of the acknowledged appends).
 */
static void
test_journal_cut_fails(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp = open_spool_ckpt(f, true, 0);
	struct done	 d;
	char		 hex[65], path[512], want[128], *j;
	const char	*rec[3] = { "{\"n\":\"first, not acknowledged\"}",
	    "{\"n\":\"second, acknowledged\"}", "{\"n\":\"third\"}" };

	testhook_set(journal_fail_cb, NULL);
	for (int i = 0; i < 3; i++) {
		jfail_sync = i != 1;	/* the 1st and 3rd groups fail */
		jfail_trunc = i == 0;	/* the 1st one's cut too */
		memset(&d, 0, sizeof(d));
		spool_msg_commit(store(sp, rec[i], strlen(rec[i]), hex), rec[i],
		    strlen(rec[i]), done_cb, &d);
		wait_calls(f->base, &d.calls, 1);
		assert_int_equal(d.status, i == 1 ? 0 : -1);
		if (i != 1)
			assert_int_equal(d.err_no, EIO);
	}
	testhook_set(NULL, NULL);
	spool_free(sp);
	snprintf(path, sizeof(path), "%s/receptions.jsonl", f->spooldir);
	j = slurp(path, NULL);
	snprintf(want, sizeof(want), "%s\n", rec[1]);
	if (strstr(j, want) == NULL)
		fail_msg("acknowledged journal line cut by a later failure; "
		    "journal: \"%s\"", j);
	assert_null(strstr(j, rec[2]));
	assert_null(strstr(j, "first"));	/* cut at the next append */
	assert_true(j[0] == '\0' || j[strlen(j) - 1] == '\n');
	free(j);
}

/*
 * Disk full on the segment: the forced checkpoint gives the segments' space
 * back and the commit goes through; when even that is not enough the group
 * fails with ENOSPC, nothing is announced, no partial record stays.
 */
static void
test_segment_enospc(void **state)
{
	struct fixture		*f = *state;
	struct spool		*sp;
	struct spool_stats	 st;
	/* Bigger than the write buffer: the body is in a tmp file before the disk fills. */
	size_t			 len = 100 * 1024;
	unsigned char		*data = malloc(len);
	char			 hex[40][65], err[256];
	int			 ok = 0, e = 0, nseg, status = 0, fd;
	uint64_t		 ck;
	struct spool_msg	*m;
	struct done		 d0 = { 0 };
	struct stat		 sb;
	char			 filler[512], path[512];

	assert_int_equal(mkdir(f->spooldir, 0750), 0);
	if (mount("tmpfs", f->spooldir, "tmpfs", 0, "size=1m") == -1) {
		print_message("mount tmpfs failed (%s): skipped\n", strerror(errno));
		skip();
	}
	f->mounted = true;
	sp = open_spool(f, NULL, 0);

	/* 1) The tmp file fits, its segment record does not: the group fails. */
	memset(data, 'z', len);
	m = store(sp, data, len, hex[0]);
	snprintf(filler, sizeof(filler), "%s/filler", f->spooldir);
	assert_true((fd = open(filler, O_CREAT | O_WRONLY, 0600)) >= 0);
	while (write(fd, data, 4096) > 0)
		;
	assert_int_equal(errno, ENOSPC);
	assert_int_equal(fstat(fd, &sb), 0);
	assert_int_equal(ftruncate(fd, sb.st_size - 8192), 0);
	close(fd);
	spool_msg_commit(m, "{}", 2, done_cb, &d0);
	wait_calls(f->base, &d0.calls, 1);
	assert_int_equal(d0.status, -1);
	assert_int_equal(d0.err_no, ENOSPC);
	assert_int_equal(count_lines(spool_journal_path(sp)), 0);
	snprintf(path, sizeof(path), "%s/messages", f->spooldir);
	assert_int_equal(count_entries(path), 0);
	assert_int_equal(seg_bytes(f, &nseg), 0);	/* cut back, nothing partial */
	assert_int_equal(unlink(filler), 0);

	/*
	 * 2) The record does not fit either, but a checkpoint of the segment
	 * before (forced by the ENOSPC) makes room: the commit goes through.
	 */
	memset(data, 'y', len);
	assert_int_equal(commit_wait(f, sp, data, len, hex[0], NULL), 0);
	spool_get_stats(sp, &st);
	ck = st.checkpoints;
	memset(data, 'w', len);
	m = store(sp, data, len, hex[1]);
	assert_true((fd = open(filler, O_CREAT | O_WRONLY, 0600)) >= 0);
	while (write(fd, data, 4096) > 0)
		;
	assert_int_equal(errno, ENOSPC);
	assert_int_equal(fstat(fd, &sb), 0);
	assert_int_equal(ftruncate(fd, sb.st_size - 8192), 0);
	close(fd);
	d0.calls = 0;
	spool_msg_commit(m, "{}", 2, done_cb, &d0);
	wait_calls(f->base, &d0.calls, 1);
	assert_int_equal(d0.status, 0);
	spool_get_stats(sp, &st);
	assert_true(st.checkpoints > ck);
	assert_eml(f, hex[0], (memset(data, 'y', len), data), len);
	assert_eml(f, hex[1], (memset(data, 'w', len), data), len);
	assert_int_equal(unlink(filler), 0);
	ok = 2;

	/* 3) Filling up: checkpoints give the segments' space back. */
	for (int i = 2; i < 40 && status == 0; i++) {
		struct done		 d = { 0 };

		spool_get_stats(sp, &st);
		ck = st.checkpoints;	/* before: the worker may be quick */
		m = spool_msg_new(sp, err, sizeof(err));
		assert_non_null(m);
		memset(data, 'a' + i % 26, len);
		data[0] = (unsigned char)i;
		if (spool_msg_write(m, data, len) == -1 ||
		    spool_msg_finish(m, hex[i]) == -1) {
			/* The tmp file no longer fits: a checkpoint was asked for. */
			assert_int_equal(spool_msg_error(m), ENOSPC);
			spool_msg_abort(m);
			spool_get_stats(sp, &st);
			for (int t = 0; t < 100 && st.checkpoints == ck; t++) {
				usleep(10000);
				spool_get_stats(sp, &st);
			}
			if (st.checkpoints == ck)
				break;	/* nothing left to give back: full */
			i--;
			continue;
		}
		spool_msg_commit(m, "{}", 2, done_cb, &d);
		wait_calls(f->base, &d.calls, 1);
		status = d.status;
		e = d.err_no;
		if (status == 0)
			ok++;
	}
	/* 1 MiB: 5 without checkpoints (each costs 2 × 100 KiB), 9 or so with. */
	spool_get_stats(sp, &st);
	assert_true(st.checkpoints >= 1);
	print_message("%d committed on 1 MiB\n", ok);
	assert_true(ok >= 7);	/* more than the 5 without checkpoints */
	if (status != 0) {
		assert_int_equal(e, ENOSPC);
		assert_int_equal(seg_bytes(f, &nseg) % (91 + (long long)len), 0);
	}
	assert_int_equal(count_lines(spool_journal_path(sp)), ok);
	for (int i = 2; i < ok; i++) {
		memset(data, 'a' + i % 26, len);
		data[0] = (unsigned char)i;
		assert_eml(f, hex[i], data, len);
	}
	spool_free(sp);
	free(data);
}

/*
 * Disk full under a small message (its body only in memory): the commit
 * fails with ENOSPC, nothing is announced or left behind, and it works
 * again once there is room.
 */
static void
test_small_enospc(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp;
	char		 hex[65], filler[512], path[512];
	unsigned char	 data[1000], blk[4096];
	int		 fd;

	assert_int_equal(mkdir(f->spooldir, 0750), 0);
	if (mount("tmpfs", f->spooldir, "tmpfs", 0, "size=1m") == -1) {
		print_message("mount tmpfs failed (%s): skipped\n", strerror(errno));
		skip();
	}
	f->mounted = true;
	sp = open_spool(f, NULL, 0);
	memset(data, 's', sizeof(data));
	memset(blk, 'f', sizeof(blk));
	snprintf(filler, sizeof(filler), "%s/filler", f->spooldir);
	assert_true((fd = open(filler, O_CREAT | O_WRONLY, 0600)) >= 0);
	while (write(fd, blk, sizeof(blk)) > 0)
		;
	assert_int_equal(errno, ENOSPC);
	close(fd);
	assert_int_equal(commit_wait(f, sp, data, sizeof(data), hex, NULL), -1);
	assert_int_equal(count_lines(spool_journal_path(sp)), 0);
	snprintf(path, sizeof(path), "%s/messages", f->spooldir);
	assert_int_equal(count_entries(path), 0);
	assert_int_equal(unlink(filler), 0);
	assert_int_equal(commit_wait(f, sp, data, sizeof(data), hex, NULL), 0);
	assert_eml(f, hex, data, sizeof(data));
	assert_int_equal(count_lines(spool_journal_path(sp)), 1);
	spool_free(sp);
}

/* Monotonic milliseconds. */
static long long
now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Poll the stats until the counter at byte offset off reaches min (10 s guard). */
static struct spool_stats
wait_stat(struct spool *sp, size_t off, uint64_t min)
{
	struct spool_stats	st;
	uint64_t		v;

	for (int tries = 0; tries < 1000; tries++) {
		spool_get_stats(sp, &st);
		memcpy(&v, (const char *)&st + off, sizeof(v));
		if (v >= min)
			return st;
		usleep(10000);
	}
	fail_msg("counter at %zu stayed below %llu", off, (unsigned long long)min);
	return st;
}

/*
 * spool_msg_data: a body under 64 KiB is held in memory (the same bytes),
 * a bigger one or an unfinished message is not.
 */
static void
test_msg_data(void **state)
{
	struct fixture		*f = *state;
	struct spool		*sp = open_spool(f, NULL, 0);
	size_t			 big = 64 * 1024, len;
	unsigned char		*data = malloc(big + 1000);
	const unsigned char	*p;
	char			 err[256], hex[65];
	struct spool_msg	*m;
	struct done		 d = { 0 };

	for (size_t i = 0; i < big + 1000; i++)
		data[i] = (unsigned char)(i * 31 + i / 97);

	/* Small, written in pieces: the bytes as written, until commit. */
	m = spool_msg_new(sp, err, sizeof(err));
	assert_non_null(m);
	assert_int_equal(spool_msg_write(m, data, 100), 0);
	assert_null(spool_msg_data(m, &len));	/* not finished yet */
	assert_int_equal(len, 0);
	assert_int_equal(spool_msg_write(m, data + 100, 4000), 0);
	assert_int_equal(spool_msg_finish(m, hex), 0);
	p = spool_msg_data(m, &len);
	assert_non_null(p);
	assert_int_equal(len, 4100);
	assert_memory_equal(p, data, 4100);
	spool_msg_commit(m, "{}", 2, done_cb, &d);
	wait_calls(f->base, &d.calls, 1);
	assert_int_equal(d.status, 0);
	assert_eml(f, hex, data, 4100);

	/* The largest body kept in memory: one byte under the buffer. */
	m = store(sp, data, big - 1, hex);
	p = spool_msg_data(m, &len);
	assert_non_null(p);
	assert_int_equal(len, big - 1);
	assert_memory_equal(p, data, big - 1);
	spool_msg_abort(m);

	/* 64 KiB and more went to the tmp file: NULL, read the path. */
	m = store(sp, data, big, hex);
	len = 1;
	assert_null(spool_msg_data(m, &len));
	assert_int_equal(len, 0);
	spool_msg_abort(m);
	m = store(sp, data, big + 1000, hex);
	assert_null(spool_msg_data(m, &len));
	spool_msg_abort(m);

	/* Empty: a valid pointer, no bytes. */
	m = spool_msg_new(sp, err, sizeof(err));
	assert_int_equal(spool_msg_finish(m, hex), 0);
	assert_non_null(spool_msg_data(m, &len));
	assert_int_equal(len, 0);
	spool_msg_abort(m);

	/* After a write error: NULL. */
	spool_free(sp);
	sp = open_spool(f, NULL, 10);
	m = spool_msg_new(sp, err, sizeof(err));
	assert_int_equal(spool_msg_write(m, data, 20), -1);
	assert_int_equal(spool_msg_finish(m, hex), -1);
	assert_null(spool_msg_data(m, &len));
	spool_msg_abort(m);
	spool_free(sp);
	free(data);
}

/*
 * A checkpoint in progress (held 3 s inside its pass, as a syncfs on a busy
 * disk would) does not delay commits: they all complete while it is still
 * inside.  A spool_free() during a pass cuts it short, and its last pass
 * still deletes every segment.
 */
static void
test_checkpoint_nonblocking(void **state)
{
	struct fixture		*f = *state;
	struct spool_opts	 o = { .dir = f->spooldir, .hostname = "mx.example.test",
	    .checkpoint_age_ms = 10, .checkpoint_hold_ms = 3000 };
	char			 err[256], hex[22][65], body[64];
	struct spool		*sp = spool_open(f->base, &o, err, sizeof(err));
	struct spool_stats	 st;
	long long		 t0, dt;
	int			 nseg, n;

	assert_non_null(sp);
	assert_int_equal(commit_wait(f, sp, "first", 5, hex[0], NULL), 0);
	/* Sealed after 10 ms, checkpointed 10 ms later: the pass starts, and holds. */
	st = wait_stat(sp, offsetof(struct spool_stats, checkpoint_passes), 1);
	assert_int_equal(st.checkpoints, 0);

	t0 = now_ms();
	for (int i = 1; i <= 20; i++) {
		n = snprintf(body, sizeof(body), "during the checkpoint %d\r\n", i);
		assert_int_equal(commit_wait(f, sp, body, (size_t)n, hex[i], NULL), 0);
	}
	dt = now_ms() - t0;
	spool_get_stats(sp, &st);
	print_message("20 commits in %lld ms during a checkpoint\n", dt);
	/* Every commit completed while the pass was still inside its hold. */
	assert_int_equal(st.checkpoints, 0);
	assert_true(dt < 3000);

	/* The held pass ends and deletes its segment. */
	st = wait_stat(sp, offsetof(struct spool_stats, checkpoints), 1);
	assert_int_equal(seg_bytes(f, &nseg) > 0, true);	/* the later ones */

	/* Stop during a pass: fast, and nothing left to replay. */
	spool_get_stats(sp, &st);
	assert_int_equal(commit_wait(f, sp, "last", 4, hex[21], NULL), 0);
	wait_stat(sp, offsetof(struct spool_stats, checkpoint_passes),
	    st.checkpoint_passes + 1);
	t0 = now_ms();
	spool_free(sp);
	dt = now_ms() - t0;
	print_message("spool_free during a checkpoint: %lld ms\n", dt);
	assert_true(dt < 2000);
	assert_int_equal(seg_bytes(f, &nseg), 0);
	assert_int_equal(nseg, 0);
	assert_eml(f, hex[0], "first", 5);
	assert_eml(f, hex[21], "last", 4);
	sp = open_spool(f, NULL, 0);
	spool_get_stats(sp, &st);
	assert_int_equal(st.recovered, 0);
	assert_int_equal(count_lines(spool_journal_path(sp)), 22);
	spool_free(sp);
}

/*
 * Without syncfs (as on a kernel that lacks it) a checkpoint fsyncs each
 * covered file: the segments still go, the messages stay whole.
 */
static void
test_checkpoint_no_syncfs(void **state)
{
	struct fixture		*f = *state;
	struct spool_opts	 o = { .dir = f->spooldir, .hostname = "mx.example.test",
	    .checkpoint_age_ms = 20, .no_syncfs = true };
	char			 err[256], hex[5][65], body[64];
	struct spool		*sp = spool_open(f->base, &o, err, sizeof(err));
	int			 nseg, n;

	assert_non_null(sp);
	for (int i = 0; i < 3; i++) {
		n = snprintf(body, sizeof(body), "fsync'ed one by one %d\r\n", i);
		assert_int_equal(commit_wait(f, sp, body, (size_t)n, hex[i], NULL), 0);
	}
	wait_stat(sp, offsetof(struct spool_stats, checkpoints), 1);
	/* And at stop. */
	o.checkpoint_age_ms = 0;
	spool_free(sp);
	sp = spool_open(f->base, &o, err, sizeof(err));
	assert_non_null(sp);
	assert_int_equal(commit_wait(f, sp, "at stop", 7, hex[3], NULL), 0);
	assert_true(seg_bytes(f, &nseg) > 0);
	spool_free(sp);
	assert_int_equal(seg_bytes(f, &nseg), 0);
	assert_int_equal(nseg, 0);
	for (int i = 0; i < 3; i++) {
		n = snprintf(body, sizeof(body), "fsync'ed one by one %d\r\n", i);
		assert_eml(f, hex[i], body, (size_t)n);
	}
	assert_eml(f, hex[3], "at stop", 7);
}


/*
 * The test hook (testhook.h) of the two ordering tests below: a trace of the
 * commit path's steps, an injected ENOSPC, the worker held at one point, and
 * checks of what a reader of messages/ sees at each point.
 */
#define HOOK_TRACE	256

struct hook_state {
	pthread_mutex_t	 mu;
	pthread_cond_t	 cond;
	char		 dir[256];		/* messages/ */
	char		 trace[HOOK_TRACE][80];	/* "step detail" */
	int		 ntrace;
	int		 eml_writes;		/* eml_write hits so far */
	int		 fail_at;		/* this eml_write fails (ENOSPC); 0 none */
	int		 hold_at;		/* this eml_write waits for the checkpoint */
	int		 hold_seg_at;		/* this seg_write waits for release */
	int		 seg_writes;
	bool		 held;			/* the worker is waiting at hold_seg_at */
	bool		 released;
	bool		 ckpt_ran;		/* a pass ended or waits for the names */
	bool		 hold_timeout;
	char		 expect[8][65];		/* acknowledged digests, for ckpt_unlink */
	const char	*expect_body[8];
	int		 nexpect;
	int		 missing_at_unlink;	/* covered .eml not whole at a segment delete */
	int		 torn_seen;		/* a name whose bytes were not whole */
};

static struct hook_state	hk;

static void	 hook_init(struct fixture *f);
static int	 hook_cb(void *arg, const char *step, const char *detail);
static bool	 eml_whole(const char *dir, const char *hex, const char *body);
static int	 trace_find(const char *step, const char *detail, int from);
static void	 hook_wait(bool *flag, bool *timeout);

static void
hook_init(struct fixture *f)
{
	memset(&hk, 0, sizeof(hk));
	pthread_mutex_init(&hk.mu, NULL);
	pthread_cond_init(&hk.cond, NULL);
	snprintf(hk.dir, sizeof(hk.dir), "%s/messages", f->spooldir);
}

/* Wait (under hk.mu) until *flag, 10 s at most (then *timeout). */
static void
hook_wait(bool *flag, bool *timeout)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	while (!*flag)
		if (pthread_cond_timedwait(&hk.cond, &hk.mu, &ts) != 0) {
			*timeout = true;
			break;
		}
}

/* messages/<hex>.eml absent (false) or holding exactly body (true); torn counted. */
static bool
eml_whole(const char *dir, const char *hex, const char *body)
{
	char		 path[512], buf[256];
	ssize_t		 n;
	int		 fd;

	snprintf(path, sizeof(path), "%s/%s.eml", dir, hex);
	if ((fd = open(path, O_RDONLY)) == -1)
		return false;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n != (ssize_t)strlen(body) || memcmp(buf, body, (size_t)n) != 0) {
		hk.torn_seen++;
		return false;
	}
	return true;
}

static int
hook_cb(void *arg, const char *step, const char *detail)
{
	int	r = 0;

	(void)arg;
	pthread_mutex_lock(&hk.mu);
	if (hk.ntrace < HOOK_TRACE)
		snprintf(hk.trace[hk.ntrace++], sizeof(hk.trace[0]), "%s %.64s",
		    step, detail);
	if (strcmp(step, "seg_write") == 0 && ++hk.seg_writes == hk.hold_seg_at) {
		hk.held = true;
		pthread_cond_broadcast(&hk.cond);
		hook_wait(&hk.released, &hk.hold_timeout);
	} else if (strcmp(step, "eml_write") == 0 || strcmp(step, "eml_link") == 0) {
		/* A reader never finds a name whose bytes are not all there. */
		for (int i = 0; i < hk.nexpect; i++)
			if (strcmp(hk.expect[i], detail) == 0)
				(void)eml_whole(hk.dir, detail, hk.expect_body[i]);
		if (strcmp(step, "eml_write") == 0) {
			hk.eml_writes++;
			if (hk.eml_writes == hk.fail_at)
				r = ENOSPC;
			else if (hk.eml_writes == hk.hold_at)
				hook_wait(&hk.ckpt_ran, &hk.hold_timeout);
		}
	} else if (strcmp(step, "ckpt_pass_end") == 0 ||
	    strcmp(step, "ckpt_wait_names") == 0) {
		hk.ckpt_ran = true;
		pthread_cond_broadcast(&hk.cond);
	} else if (strcmp(step, "ckpt_unlink") == 0) {
		/* Every acknowledged mail the segment covers: whole already. */
		for (int i = 0; i < hk.nexpect; i++)
			if (!eml_whole(hk.dir, hk.expect[i], hk.expect_body[i]))
				hk.missing_at_unlink++;
	}
	pthread_mutex_unlock(&hk.mu);
	return r;
}

/* Index of the first trace entry from index from that starts with step (and detail). */
static int
trace_find(const char *step, const char *detail, int from)
{
	char	want[80];

	snprintf(want, sizeof(want), "%s %s", step, detail != NULL ? detail : "");
	for (int i = from; i < hk.ntrace; i++)
		if (detail != NULL ? strcmp(hk.trace[i], want) == 0 :
		    strncmp(hk.trace[i], want, strlen(want)) == 0)
			return i;
	return -1;
}

/*
 * Issue item 5: one .eml write of a group fails (ENOSPC) and asks for a
 * checkpoint.  The segment that covers the group may be deleted only after
 * every .eml it covers was written before the syncfs that precedes the
 * delete.  The worker is held before the next .eml until the checkpoint
 * thread has run (or waits for the names), so the old order (segment gone
 * between B1 and B2, then B2-B4 acknowledged unsynced) shows every time.
 */
static void
test_ckpt_waits_for_names(void **state)
{
	struct fixture	*f = *state;
	static const char *bodies[6] = { "gate\r\n", "B0\r\n", "B1 fails\r\n",
	    "B2\r\n", "B3\r\n", "B4\r\n" };
	struct done	 d[6];
	char		 hex[6][65];
	struct spool	*sp;
	int		 nseg, sync, unl;

	hook_init(f);
	hk.hold_seg_at = 1;	/* gate's group: B0-B4 queue meanwhile */
	hk.fail_at = 3;		/* gate, B0, B1 */
	hk.hold_at = 4;		/* B2 */
	testhook_set(hook_cb, NULL);
	sp = open_spool(f, NULL, 0);
	memset(d, 0, sizeof(d));
	spool_msg_commit(store(sp, bodies[0], strlen(bodies[0]), hex[0]), "{}", 2,
	    done_cb, &d[0]);
	pthread_mutex_lock(&hk.mu);
	hook_wait(&hk.held, &hk.hold_timeout);
	pthread_mutex_unlock(&hk.mu);
	assert_false(hk.hold_timeout);
	for (int i = 1; i < 6; i++)
		spool_msg_commit(store(sp, bodies[i], strlen(bodies[i]), hex[i]),
		    "{}", 2, done_cb, &d[i]);
	pthread_mutex_lock(&hk.mu);
	for (int i = 0; i < 6; i++)
		if (i != 2) {
			memcpy(hk.expect[hk.nexpect], hex[i], 65);
			hk.expect_body[hk.nexpect++] = bodies[i];
		}
	hk.released = true;
	pthread_cond_broadcast(&hk.cond);
	pthread_mutex_unlock(&hk.mu);
	for (int i = 0; i < 6; i++)
		wait_calls(f->base, &d[i].calls, 1);
	/* The pass asked for by the failure runs: the segment goes. */
	wait_stat(sp, offsetof(struct spool_stats, checkpoints), 1);
	spool_free(sp);
	testhook_set(NULL, NULL);
	assert_false(hk.hold_timeout);
	assert_int_equal(d[2].status, -1);
	assert_int_equal(d[2].err_no, ENOSPC);
	for (int i = 0; i < 6; i++)
		if (i != 2) {
			assert_int_equal(d[i].status, 0);
			assert_eml(f, hex[i], bodies[i], strlen(bodies[i]));
		}
	for (int i = 0; i < hk.ntrace; i++)
		print_message("  %s\n", hk.trace[i]);
	/* Nothing covered was missing or torn when the segment was deleted... */
	assert_int_equal(hk.missing_at_unlink, 0);
	/* ...and every acknowledged .eml was named before the syncfs before it. */
	unl = trace_find("ckpt_unlink", NULL, 0);
	assert_true(unl >= 0);
	for (sync = unl; sync >= 0; sync--)
		if (strncmp(hk.trace[sync], "ckpt_syncfs", 11) == 0)
			break;
	assert_true(sync >= 0);
	for (int i = 0; i < 6; i++) {
		int	at = trace_find("eml_link", hex[i], 0);

		if (i == 2) {
			assert_int_equal(at, -1);
			continue;
		}
		assert_true(at >= 0);
		if (at > sync)
			fail_msg("%s named at trace %d, after the syncfs at %d that "
			    "preceded its segment's delete", bodies[i], at, sync);
	}
	assert_int_equal(hk.torn_seen, 0);
	assert_int_equal(seg_bytes(f, &nseg), 0);
	assert_int_equal(nseg, 0);
}

/*
 * Issue item 5b: at no step of the commit path does messages/ hold a name
 * whose bytes are not all there (a kill -9 there would leave it so, and a
 * reader or the dedup would trust it).  Checked at eml_write (before the
 * bytes) and eml_link (bytes written, before the name) of each message,
 * small in memory, spilled and a duplicate.
 */
static void
test_no_torn_name(void **state)
{
	struct fixture	*f = *state;
	static const char *bodies[3] = { "one\r\n", "two\r\n", "one\r\n" };
	char		 hex[3][65];
	struct spool	*sp;

	hook_init(f);
	testhook_set(hook_cb, NULL);
	sp = open_spool(f, NULL, 0);
	for (int i = 0; i < 3; i++) {
		struct spool_msg	*m = store(sp, bodies[i], strlen(bodies[i]), hex[i]);
		struct done		 d = { 0 };

		pthread_mutex_lock(&hk.mu);
		memcpy(hk.expect[hk.nexpect], hex[i], 65);
		hk.expect_body[hk.nexpect++] = bodies[i];
		pthread_mutex_unlock(&hk.mu);
		spool_msg_commit(m, "{}", 2, done_cb, &d);
		wait_calls(f->base, &d.calls, 1);
		assert_int_equal(d.status, 0);
	}
	spool_free(sp);
	testhook_set(NULL, NULL);
	assert_true(trace_find("eml_write", hex[0], 0) >= 0);
	assert_true(trace_find("eml_link", hex[1], 0) >= 0);
	assert_int_equal(hk.torn_seen, 0);
	for (int i = 0; i < 3; i++)
		assert_eml(f, hex[i], bodies[i], strlen(bodies[i]));
}

/* Free bytes on the fixture's filesystem now (statvfs, not the spool's cache). */
static uint64_t
fs_free(struct fixture *f)
{
	struct statvfs	vfs;

	assert_int_equal(statvfs(f->spooldir, &vfs), 0);
	return (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
}

/* An 8 MiB tmpfs on the fixture's spool directory (skip where none can be mounted). */
static void
mount_small(struct fixture *f)
{
	assert_int_equal(mkdir(f->spooldir, 0750), 0);
	if (mount("tmpfs", f->spooldir, "tmpfs", 0, "size=8m") == -1) {
		print_message("mount tmpfs failed (%s): skipped\n", strerror(errno));
		skip();
	}
	f->mounted = true;
}

/*
 * min_free holds within the statvfs cache: mails committed one after the
 * other within a second (small ones: a segment record and an .eml each; big
 * ones: an .eml; each a journal line), each let in by spool_check_space()
 * with its size, never take the filesystem under min_free.
 */
static void
test_min_free_cached_mails(void **state)
{
	struct fixture		*f = *state;
	struct spool_opts	 o = { .dir = f->spooldir, .hostname = "mx.example.test",
	    .min_free = 4 * 1024 * 1024 };
	size_t			 sizes[2] = { 100 * 1024, 300 * 1024 };
	char			 err[256], hex[65], *buf;
	uint64_t		 lowest = UINT64_MAX, fr;
	long long		 t0;
	struct spool		*sp;
	struct spool_msg	*m;
	struct done		 d;
	int			 i, e = 0, failed = 0;

	mount_small(f);
	assert_non_null(sp = spool_open(f->base, &o, err, sizeof(err)));
	assert_non_null(buf = malloc(sizes[1]));
	memset(buf, 'm', sizes[1]);
	t0 = now_ms();
	for (i = 0; i < 64; i++) {
		size_t	len = sizes[i % 2];

		if (spool_check_space(sp, len) == -1)
			break;
		memcpy(buf, &i, sizeof(i));	/* no dedup */
		/* Not store(): under the old cache the disk fills (ENOSPC). */
		assert_non_null(m = spool_msg_new(sp, err, sizeof(err)));
		d.calls = 0;
		if (spool_msg_write(m, buf, len) == -1 || spool_msg_finish(m, hex) == -1)
			failed++;
		spool_msg_commit(m, "{}", 2, done_cb, &d);
		wait_calls(f->base, &d.calls, 1);
		if (d.status != 0 && (e = d.err_no) != 0)
			failed++;
		if ((fr = fs_free(f)) < lowest)
			lowest = fr;
	}
	print_message("%d mails let in within %lld ms (%d failed, %s), lowest free "
	    "%llu bytes, min_free %llu\n", i, now_ms() - t0, failed, strerror(e),
	    (unsigned long long)lowest, (unsigned long long)o.min_free);
	spool_free(sp);
	free(buf);
	assert_true(i < 64);
	assert_int_equal(failed, 0);
	assert_true(lowest >= o.min_free);
}

/*
 * The analysis worker's writes (spool_aux_add: parsed documents,
 * attachments) count too between two statvfs calls.
 */
static void
test_min_free_cached_aux(void **state)
{
	struct fixture		*f = *state;
	struct spool_opts	 o = { .dir = f->spooldir, .hostname = "mx.example.test",
	    .min_free = 4 * 1024 * 1024 };
	char			 err[256], path[512], *buf;
	uint64_t		 n;
	struct spool		*sp;
	int			 fd;

	mount_small(f);
	assert_non_null(sp = spool_open(f->base, &o, err, sizeof(err)));
	assert_int_equal(spool_check_space(sp, 0), 0);	/* statvfs now */
	/* Leave 256 KiB above min_free, written as the worker writes. */
	n = (fs_free(f) - o.min_free - 256 * 1024) & ~(uint64_t)4095;
	snprintf(path, sizeof(path), "%s/parsed.jsonl", f->spooldir);
	assert_true((fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0640)) != -1);
	assert_non_null(buf = calloc(1, n));
	assert_int_equal(write(fd, buf, n), (ssize_t)n);
	close(fd);
	free(buf);
	spool_aux_add(sp, (int64_t)n);
	print_message("free %llu, min_free %llu: 512 KiB asked for\n",
	    (unsigned long long)fs_free(f), (unsigned long long)o.min_free);
	assert_int_equal(spool_check_space(sp, 512 * 1024), -1);
	assert_int_equal(spool_check_space(sp, 128 * 1024), 0);
	spool_free(sp);
}

/* The hook: the first two fsyncs of the spool directory for the journal fail. */
static int jdir_hits;

static int
jdir_cb(void *arg, const char *step, const char *detail)
{
	(void)arg;
	(void)detail;
	if (strcmp(step, "journal_dirsync") != 0)
		return 0;
	return ++jdir_hits <= 2 ? EIO : 0;
}

/*
 * A rotation whose fsync of the spool directory fails: the new journal
 * file's name may not be on disk, so no line in it is acknowledged (no 250)
 * before that fsync is done again and succeeds.
 */
static void
test_journal_rotation_dirsync_fails(void **state)
{
	struct fixture		*f = *state;
	struct spool_opts	 o = { .dir = f->spooldir, .hostname = "mx.example.test",
	    .journal_segment = 1 };
	char			 err[256], hex[65];
	struct spool		*sp;
	int			 e;

	assert_non_null(sp = spool_open(f->base, &o, err, sizeof(err)));
	jdir_hits = 0;
	testhook_set(jdir_cb, NULL);
	/* acknowledged in the first file; its rotation's fsync fails */
	assert_int_equal(commit_wait(f, sp, "one\r\n", 5, hex, &e), 0);
	assert_int_equal(jdir_hits, 1);
	/* the fsync again, failing: no 250 */
	assert_int_equal(commit_wait(f, sp, "two\r\n", 5, hex, &e), -1);
	assert_int_equal(e, EIO);
	assert_int_equal(jdir_hits, 2);
	/* again, done */
	assert_int_equal(commit_wait(f, sp, "three\r\n", 7, hex, &e), 0);
	assert_true(jdir_hits >= 3);
	testhook_set(NULL, NULL);
	spool_free(sp);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ckpt_waits_for_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_torn_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_basic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_chunks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_detach, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_pending, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quota, setup, teardown),
		cmocka_unit_test_setup_teardown(test_min_free, setup, teardown),
		cmocka_unit_test_setup_teardown(test_min_free_cached_mails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_min_free_cached_aux, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_unwritable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enospc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_recover, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_recover_rewrites_intact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_recover_maildir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_torn_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_big_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_big_dirsync_dedup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_cut_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_rotation_dirsync_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_enospc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_enospc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msg_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint_nonblocking, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint_no_syncfs, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
