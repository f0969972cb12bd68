/* Unit tests for the spool: durability, dedupe, journal repair, quotas, ENOSPC. */
#include <sys/mount.h>
#include <sys/stat.h>

#include <dirent.h>
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
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "spool.h"

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

static int	 rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw);
static void	 rm_rf(const char *path);
static int	 setup(void **state);
static int	 teardown(void **state);
static void	 done_cb(void *arg, int status, int err_no);
static void	 timeout_cb(evutil_socket_t fd, short what, void *arg);
static void	 wait_calls(struct event_base *base, const int *calls, int target);
static struct spool *open_spool(struct fixture *f, const char *maildir, uint64_t max_bytes);
static struct spool_msg *store(struct spool *sp, const void *data, size_t len, char hex[65]);
static char	*slurp(const char *path, size_t *lenp);
static int	 count_lines(const char *path);
static int	 count_entries(const char *dir);
static void	 sha256sum(const char *path, char out[65]);

/* nftw callback: remove one entry. */
static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* rm -rf. */
static void
rm_rf(const char *path)
{
	nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

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

/* Whole file into memory (NUL-terminated). */
static char *
slurp(const char *path, size_t *lenp)
{
	FILE	*fp = fopen(path, "rb");
	char	*buf;
	long	 n;

	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	buf[n] = '\0';
	fclose(fp);
	if (lenp != NULL)
		*lenp = (size_t)n;
	return buf;
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

/* Abort removes the tmp file. */
static void
test_abort(void **state)
{
	struct fixture	*f = *state;
	struct spool	*sp = open_spool(f, NULL, 0);
	char		 err[256], path[512];
	struct spool_msg *m = spool_msg_new(sp, err, sizeof(err));

	snprintf(path, sizeof(path), "%s/tmp", f->spooldir);
	assert_non_null(m);
	assert_int_equal(spool_msg_write(m, "abc", 3), 0);
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_commit_basic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_chunks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_detach, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_pending, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quota, setup, teardown),
		cmocka_unit_test_setup_teardown(test_min_free, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_unwritable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enospc, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
