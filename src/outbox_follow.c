/*
 * The outbox following its file: opening it (by the spool's segment number,
 * or the live file), noticing a rotation (rename and new file, copytruncate,
 * a file cut or replaced while stopped, found again by its first bytes or a
 * copy by its last confirmed line), draining a rotated-away file before
 * moving on, and the reader that cuts the file into lines per cursor.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fosr_limits.h"
#include "hpfeeds_wire.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "outbox_int.h"
#include "spool.h"
#include "testhook.h"
#include "util.h"

static void	 ob_restart(struct outbox *);
static void	 ob_cut_follow(struct outbox *, struct outbox_cursor *);

/* ------------------------------------------------------------- journal */

/* Point every cursor at the start of the file fd reads now. */
static void
ob_restart(struct outbox *ob)
{
	bool inflight = false;
	int i;

	for (i = 0; i < ob->ncurs; i++) {
		struct outbox_cursor *c = ob->curs[i];

		c->cursor = 0;
		c->cino = (uint64_t)ob->ino;
		c->cdev = (uint64_t)ob->dev;
		c->lkey = c->hkey = 0;
		c->llen = c->hlen = 0;
		c->dirty = true;
		if (c->qlen > 0)
			inflight = true;
	}
	ob->gen++;
	if (inflight && ob->lost != NULL)
		ob->lost(ob->arg);	/* entries in flight refer to the other file */
	for (i = 0; i < ob->ncurs; i++)
		outbox_cur_reset(ob->curs[i]);
}

/*
 * Whether fd holds, at off, the line c's cursor ends with (llen bytes then
 * '\n'); true when that line is not known.
 */
static bool
ob_line_matches(int fd, const struct outbox_cursor *c, uint64_t off)
{
	char *b;
	bool ok;

	if (c->llen == 0 || c->llen > OB_CHUNK)
		return true;	/* not known, or too long to read each tick */
	if (off < (uint64_t)c->llen + 1 || (b = malloc((size_t)c->llen + 1)) == NULL)
		return false;
	ok = pread(fd, b, (size_t)c->llen + 1, (off_t)(off - c->llen - 1)) ==
	    (ssize_t)c->llen + 1 && b[c->llen] == '\n' && outbox_fnv64(b, c->llen) == c->lkey;
	free(b);
	return ok;
}

/* Whether fd starts with the head c recorded (true when none is). */
static bool
ob_head_matches(int fd, const struct outbox_cursor *c)
{
	char b[OB_HEAD_LEN];

	if (c->hlen == 0)
		return true;
	return pread(fd, b, c->hlen, 0) == (ssize_t)c->hlen && outbox_fnv64(b, c->hlen) == c->hkey;
}

/*
 * Whether the file fd reads (size bytes) is still the one c's cursor was
 * made in, or was cut (copytruncate) or rewritten in place.
 */
static bool
ob_cut(int fd, uint64_t size, const struct outbox_cursor *c)
{
	return size < c->cursor || size < c->hlen || !ob_head_matches(fd, c) ||
	    (c->cursor > 0 && !ob_line_matches(fd, c, c->cursor));
}

/*
 * Record more of the first bytes of the file fd reads (size bytes) in c;
 * never over a head that no longer matches (ob_cut tells that).
 */
void
outbox_head_update(int fd, uint64_t size, struct outbox_cursor *c)
{
	char b[OB_HEAD_LEN];
	size_t n = size < OB_HEAD_LEN ? (size_t)size : OB_HEAD_LEN;

	if (n <= c->hlen || pread(fd, b, n, 0) != (ssize_t)n ||
	    (c->hlen > 0 && outbox_fnv64(b, c->hlen) != c->hkey))
		return;
	c->hkey = outbox_fnv64(b, n);
	c->hlen = (uint32_t)n;
	c->dirty = true;
}

/* Open a rotated file beside the outbox's (test hook "outbox_open_rotated"). */
static int
ob_open_rotated(const char *path)
{
	int e;

	if ((e = TESTHOOK("outbox_open_rotated", path)) != 0) {
		errno = e;
		return -1;
	}
	return open(path, O_RDONLY | O_CLOEXEC);
}

/*
 * The directory of the outbox's file, opened, where its rotated files are
 * (its path in dir, the file's name in *base, *bl long); NULL (errno) when
 * it cannot be read.
 */
static DIR *
ob_opendir(const struct outbox *ob, char *dir, size_t dirlen, const char **base,
    size_t *bl)
{
	const char *slash;

	if ((slash = strrchr(ob->path, '/')) != NULL) {
		snprintf(dir, dirlen, "%.*s", (int)(slash - ob->path), ob->path);
		if (dir[0] == '\0')
			snprintf(dir, dirlen, "/");
		*base = slash + 1;
	} else {
		snprintf(dir, dirlen, ".");
		*base = ob->path;
	}
	*bl = strlen(*base);
	return opendir(dir);
}

/*
 * The rotated file chosen at path opened, its name copied to found; -1 with
 * errno 0 when none was chosen (path NULL), else as ob_open_rotated().
 */
static int
ob_open_chosen(const char *path, char *found, size_t foundlen)
{
	int fd;

	if (path == NULL) {
		errno = 0;
		return -1;
	}
	if ((fd = ob_open_rotated(path)) == -1)
		return -1;
	snprintf(found, foundlen, "%s", path);
	return fd;
}

/*
 * Find, beside the outbox's file, the file cursor c's cursor points into: by
 * inode (a rotation: mv and a new file), or, with by_copy, another file at
 * least as long as the cursor holding the cursor's last line at the cursor
 * (copytruncate's copy).  Rotated names start with the file's name
 * (name.1, name-20260101).  Returns an open descriptor, or -1: with errno
 * 0 when there is none, else when a file cannot be opened or the directory
 * read (EMFILE, EACCES...: not "gone", the caller holds and retries).
 */
static int
ob_find(struct outbox *ob, const struct outbox_cursor *c, bool by_copy,
    char *found, size_t foundlen)
{
	char dir[PATH_MAX], path[PATH_MAX];
	const char *base;
	struct dirent *de;
	struct stat st;
	size_t bl;
	DIR *d;
	int fd = -1, e;

	if ((d = ob_opendir(ob, dir, sizeof(dir), &base, &bl)) == NULL)
		return -1;
	while (fd == -1 && (de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, base, bl) != 0 || de->d_name[bl] == '\0')
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
		    sizeof(path) || stat(path, &st) == -1 || !S_ISREG(st.st_mode))
			continue;
		if (by_copy ? ((uint64_t)st.st_size < c->cursor ||
		    (uint64_t)st.st_size < c->hlen || (c->llen == 0 && c->hlen == 0) ||
		    (st.st_ino == ob->ino && st.st_dev == ob->dev)) :
		    ((uint64_t)st.st_ino != c->cino || (uint64_t)st.st_dev != c->cdev))
			continue;
		if ((fd = ob_open_rotated(path)) == -1) {
			if (errno == ENOENT)
				continue;	/* removed since readdir */
			break;	/* EMFILE, EACCES: it may be the one, errno says */
		}
		if (!ob_line_matches(fd, c, c->cursor) || !ob_head_matches(fd, c)) {
			close(fd);
			fd = -1;
			continue;
		}
		snprintf(found, foundlen, "%s", path);
	}
	e = errno;
	closedir(d);
	errno = fd == -1 && de == NULL ? 0 : e;
	return fd;
}

/* Whether a is later than b. */
static bool
ts_after(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

/*
 * The spool's journal segments, receptions.jsonl.<n>: among those beside
 * the outbox's file, the one numbered next after done (done NULL: the oldest).
 * Their number, not their mtime, is their order: segments filled within one
 * tick of a coarse clock share an mtime, and a clock stepped back reverses
 * it.  Returns an open descriptor (name in found), or -1: none follows (the
 * file itself is next), or (*known false) done is not a segment.
 */
static int
ob_seg_next(struct outbox *ob, const struct stat *done, char *found,
    size_t foundlen, bool *known)
{
	char dir[PATH_MAX], path[PATH_MAX], bestpath[PATH_MAX];
	const char *base, *p;
	unsigned long long n, after = 0, best = ULLONG_MAX;
	struct dirent *de;
	struct stat st;
	size_t bl;
	DIR *d;
	int pass;

	*known = done == NULL;
	if ((d = ob_opendir(ob, dir, sizeof(dir), &base, &bl)) == NULL)
		return -1;
	/* Pass 0 finds done's number, pass 1 the smallest one after it. */
	for (pass = done == NULL ? 1 : 0; pass < 2; pass++) {
		rewinddir(d);
		while ((de = readdir(d)) != NULL) {
			if (strncmp(de->d_name, base, bl) != 0 || de->d_name[bl] != '.' ||
			    de->d_name[bl + 1] == '\0')
				continue;
			for (p = de->d_name + bl + 1; *p >= '0' && *p <= '9'; p++)
				;
			errno = 0;
			if (*p != '\0' || (n = strtoull(de->d_name + bl + 1, NULL, 10)) ==
			    ULLONG_MAX || errno != 0)
				continue;
			if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
			    sizeof(path) || stat(path, &st) == -1 || !S_ISREG(st.st_mode))
				continue;
			if (pass == 0) {
				if (st.st_ino == done->st_ino && st.st_dev == done->st_dev) {
					after = n;
					*known = true;
				}
			} else if ((done == NULL || n > after) && n < best) {
				best = n;
				snprintf(bestpath, sizeof(bestpath), "%s", path);
			}
		}
		if (!*known)
			break;
	}
	closedir(d);
	return ob_open_chosen(*known && best != ULLONG_MAX ? bestpath : NULL,
	    found, foundlen);
}

/*
 * The rotated file that follows the one just drained (done: its stat):
 * among the files beside the outbox's whose names start with its name (not
 * the file itself, not compressed ones), the one last written soonest after
 * done was.  Rotation by rename (name.1 .. name.N, or the spool's numbered
 * journal segments) keeps each file's last write before the next one's.
 * Returns an open descriptor (name in found), or -1: the file itself is next.
 */
static int
ob_next(struct outbox *ob, const struct stat *done, char *found,
    size_t foundlen)
{
	static const char *const packed[] = { ".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z" };
		char dir[PATH_MAX], path[PATH_MAX], best[PATH_MAX] = "";
	const char *base;
	struct timespec bt = { 0, 0 };
	struct dirent *de;
	struct stat st;
	size_t bl, nl, i;
	DIR *d;
	bool known;
	int fd;

	if (ob->kind == OUTBOX_JOURNAL &&
	    ((fd = ob_seg_next(ob, done, found, foundlen, &known)) != -1 || known))
		return fd;
	if ((d = ob_opendir(ob, dir, sizeof(dir), &base, &bl)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		nl = strlen(de->d_name);
		if (strncmp(de->d_name, base, bl) != 0 || nl == bl)
			continue;
		for (i = 0; i < sizeof(packed) / sizeof(packed[0]); i++)
			if (nl >= strlen(packed[i]) &&
			    strcmp(de->d_name + nl - strlen(packed[i]), packed[i]) == 0)
				break;
		if (i < sizeof(packed) / sizeof(packed[0]))
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
		    sizeof(path) || stat(path, &st) == -1 || !S_ISREG(st.st_mode) ||
		    (st.st_ino == done->st_ino && st.st_dev == done->st_dev) ||
		    !ts_after(&st.st_mtim, &done->st_mtim))
			continue;
		if (best[0] == '\0' || ts_after(&bt, &st.st_mtim)) {
			snprintf(best, sizeof(best), "%s", path);
			bt = st.st_mtim;
		}
	}
	closedir(d);
	return ob_open_chosen(best[0] != '\0' ? best : NULL, found, foundlen);
}

/* Read the outbox's rotated-away file (fd2, found at name) before its file. */
static void
ob_drain_from(struct outbox *ob, int fd2, const char *name)
{
	struct stat st;
	int i;

	if (ob->fd != -1)
		close(ob->fd);
	ob->fd = fd2;
	if (fstat(fd2, &st) == 0) {
		ob->ino = st.st_ino;
		ob->dev = st.st_dev;
		ob->dsize = (uint64_t)st.st_size;
	}
	ob->draining = true;
	ob->settled = true;
	ob->dsize_ms = outbox_now_ms();
	for (i = 0; i < ob->ncurs; i++) {
		struct outbox_cursor *c = ob->curs[i];

		c->cino = (uint64_t)ob->ino;
		c->cdev = (uint64_t)ob->dev;
		c->dirty = true;
	}
	log_info("%s: file=%s was rotated: publishing the rest of %s first", ob->who, ob->path,
	    name);
	ob->gen++;
}

/*
 * Open the file if it exists now; 0 when open, -1 (errno set) when not (yet).
 * The first time, reconcile the channels' cursors with the file: a cursor
 * that points into another file (the log was rotated while the daemon was
 * stopped) drains that file first when it is found beside it, and says what
 * was lost when it is not.
 */
int
outbox_open(struct outbox *ob)
{
	struct outbox_cursor *rc = NULL;
	char found[PATH_MAX];
	struct stat st, zero;
	bool current = false, known, lost = false;
	int i, fd2, e;

	if (ob->fd != -1)
		return 0;
	if (ob->path[0] == '\0') {
		errno = ENOENT;
		return -1;
	}
	if ((ob->fd = open(ob->path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	if (fstat(ob->fd, &st) == -1) {
		close(ob->fd);
		ob->fd = -1;
		return -1;
	}
	ob->ino = st.st_ino;
	ob->dev = st.st_dev;
	ob->draining = false;
	if (ob->started)
		return 0;
	ob->started = true;
	memset(&zero, 0, sizeof(zero));	/* ob_next: older than any file */
	for (i = 0; i < ob->ncurs; i++) {
		struct outbox_cursor *c = ob->curs[i];

		if (c->cino == (uint64_t)ob->ino && c->cdev == (uint64_t)ob->dev)
			current = true;
		else if (c->cino != 0 && rc == NULL)
			rc = c;
	}
	/* A channel already on this file: the others finished the old one. */
	for (i = 0; i < ob->ncurs; i++) {
		struct outbox_cursor *c = ob->curs[i];

		if (c->cino == 0 || (current && (c->cino != (uint64_t)ob->ino ||
		    c->cdev != (uint64_t)ob->dev))) {
			/*
			 * One reader for every cursor: a cursor left behind (an
			 * output configured again, its cursor restored from
			 * stale/) starts with the others.  Said, never silent.
			 */
			if (c->cino != 0)
				log_warn("%s: file=%s: channel %s's cursor points into an "
				    "older file (inode %llu, offset %llu) than the other "
				    "channels': it starts with them at the start of the "
				    "current file; what lies between is not published to it",
				    ob->who, ob->path, c->name, (unsigned long long)c->cino,
				    (unsigned long long)c->cursor);
			if (c->cino != 0)
				c->cursor = 0;
			c->cino = (uint64_t)ob->ino;
			c->cdev = (uint64_t)ob->dev;
			c->dirty = true;	/* record which file */
			outbox_cur_reset(c);
		}
	}
	if (!current && rc != NULL) {
		if ((fd2 = ob_find(ob, rc, false, found, sizeof(found))) != -1) {
			ob_drain_from(ob, fd2, found);
			return 0;
		}
		if (errno != 0 && errno != ENOENT)
			goto hold;
	}
	/*
	 * No cursor knows its file (none yet, unreadable) or the one it knows
	 * is gone: duplicates from the start, never a loss, and the start is
	 * the oldest journal segment still there, not the current file.  For
	 * the event log, the oldest rotated file beside it when a cursor was
	 * there but is unreadable or its file gone (a channel new to an old
	 * event log starts with the current file).
	 */
	for (i = 0; i < ob->ncurs; i++)
		if (ob->curs[i]->lost)
			lost = true;
	errno = 0;
	if (!current && (ob->kind == OUTBOX_JOURNAL ?
	    (fd2 = ob_seg_next(ob, NULL, found, sizeof(found), &known)) != -1 :
	    (rc != NULL || lost) && (fd2 = ob_next(ob, &zero, found, sizeof(found))) != -1)) {
		log_warn("%s: file=%s: no cursor points into a file still there: "
		    "publishing from the oldest rotated file %s", ob->who, ob->path, found);
		for (i = 0; i < ob->ncurs; i++) {
			struct outbox_cursor *c = ob->curs[i];

			c->cursor = 0;
			c->lkey = c->hkey = 0;
			c->llen = c->hlen = 0;
			outbox_cur_reset(c);
		}
		ob_drain_from(ob, fd2, found);
		return 0;
	}
	/* Only ENOENT means gone: EMFILE, EACCES... hold and retry. */
	if (!current && errno != 0 && errno != ENOENT)
		goto hold;
	if (rc != NULL && !current) {
		log_warn("%s: file=%s: the file channel %s's cursor points into "
		    "(inode %llu, offset %llu) is gone: what it held after that offset is "
		    "lost; publishing %s from the start", ob->who, ob->path, rc->name,
		    (unsigned long long)rc->cino, (unsigned long long)rc->cursor, ob->path);
		ob_restart(ob);
		return 0;
	}
	/* The same file: was it cut (copytruncate) while we were stopped? */
	for (i = 0; i < ob->ncurs; i++) {
		struct outbox_cursor *c = ob->curs[i];

		if (ob_cut(ob->fd, (uint64_t)st.st_size, c)) {
			ob_cut_follow(ob, c);
			return 0;
		}
	}
	return 0;
hold:
	/*
	 * The file a cursor points into may be there but not openable now:
	 * reconcile again at the next try, as if not started (the channels
	 * new to this file forget it: nothing was read).
	 */
	e = errno;
	for (i = 0; i < ob->ncurs; i++) {
		struct outbox_cursor *c = ob->curs[i];

		if (c->cino == (uint64_t)ob->ino && c->cdev == (uint64_t)ob->dev)
			c->cino = c->cdev = 0;
	}
	close(ob->fd);
	ob->fd = -1;
	ob->started = false;
	errno = e;
	return -1;
}

/*
 * Source k's file was cut below cursor c's cursor or rewritten
 * (copytruncate): publish the rest from its copy when one is found beside
 * it, else say what is lost; then the file from its start.
 */
static void
ob_cut_follow(struct outbox *ob, struct outbox_cursor *c)
{
	char found[PATH_MAX];
	int i, fd2;

	if ((fd2 = ob_find(ob, c, true, found, sizeof(found))) == -1 &&
	    errno != 0 && errno != ENOENT) {
		/* Not looked at (EMFILE...): the next check tries again. */
		outbox_hold(ob, "%s: file=%s was cut below the cursor of channel %s; "
		    "looking for its copy: %s", ob->who, ob->path, c->name, strerror(errno));
		return;
	}
	if (fd2 == -1) {
		log_warn("%s: file=%s was cut or rewritten below the cursor of "
		    "channel %s and no copy of it was found: what it held after offset "
		    "%llu is lost; publishing it from the start", ob->who, ob->path, c->name,
		    (unsigned long long)c->cursor);
		ob_restart(ob);
		return;
	}
	log_warn("%s: file=%s was cut (copytruncate): channel %s publishes the "
	    "rest from its copy %s first", ob->who, ob->path, c->name, found);
	ob_drain_from(ob, fd2, found);
	for (i = 0; i < ob->ncurs; i++)
		if (ob->curs[i]->qlen > 0 && ob->lost != NULL) {
			/* Entries in flight were read from the cut file: again. */
			ob->lost(ob->arg);
			break;
		}
	for (i = 0; i < ob->ncurs; i++)
		outbox_cur_reset(ob->curs[i]);
}

/*
 * Whether the outbox's rotated-away file is done: its size unchanged for a
 * second (a writer may append until it reopens) and every channel's cursor
 * at its end with nothing in flight.  A torn last line (no '\n') left at
 * the end of a file nobody writes any more is reported and given up.
 */
static bool
ob_drained(struct outbox *ob, const struct stat *st)
{
	uint64_t size = (uint64_t)st->st_size;
	int i;

	if (!ob->settled) {
		if (size != ob->dsize) {
			ob->dsize = size;
			ob->dsize_ms = outbox_now_ms();
			return false;
		}
		if (outbox_now_ms() - ob->dsize_ms < 1000)
			return false;
	}
	for (i = 0; i < ob->ncurs; i++) {
		struct outbox_cursor *c = ob->curs[i];

		if ((c->qlen == 0 && c->cursor >= size))
			continue;
		if (c->qlen > 0 || c->rbase + c->rstart != c->cursor ||
		    c->rbase + c->rlen != size || c->rskip)
			return false;	/* not all read, or not all confirmed */
	}
	for (i = 0; i < ob->ncurs; i++) {
		struct outbox_cursor *c = ob->curs[i];

		if (c->cursor < size)
			log_warn("%s: file=%s: the rotated file ends with a partial "
			    "line of %llu bytes: not published (channel %s)", ob->who, ob->path,
			    (unsigned long long)(size - c->cursor), c->name);
	}
	return true;
}

/*
 * Once a tick: notice a rotation of the file.  Rotated by a rename and a new
 * file (logrotate's create): keep reading the old file to its end, publish
 * and confirm it, then follow the new one.  Cut below a cursor
 * (copytruncate): publish the rest from the copy when it is found (the lines
 * written between the copy and the cut are lost, logrotate's own limit), and
 * say so loudly when it is not; then the file from its start.
 */
void
outbox_check(struct outbox *ob)
{
	struct stat st, pst;
	char found[PATH_MAX];
	int i, fd2;

	/* Open (and reconcile) now, not when the broker is back: a rotation
	 * while it is away must be noticed. */
	if (ob->fd == -1 && outbox_open(ob) == -1)
		return;
	if (fstat(ob->fd, &st) == -1)
		return;
	if (ob->draining) {
		if (!ob_drained(ob, &st))
			return;
		if ((fd2 = ob_next(ob, &st, found, sizeof(found))) != -1) {
			/* Rotated more than once: the next one, from its start. */
			ob_drain_from(ob, fd2, found);
			ob_restart(ob);
			return;
		}
		if (errno != 0) {
			/* Not looked for (no descriptor...): again, never skipped. */
			outbox_hold(ob, "%s: file=%s: looking for the file after the "
			    "rotated one: %s", ob->who, ob->path, strerror(errno));
			return;
		}
		log_info("%s: file=%s: the rotated file is published; following "
		    "the new one", ob->who, ob->path);
		close(ob->fd);
		ob->fd = -1;
		if (outbox_open(ob) == -1) {
			/* Not there (yet): read from its start once it is. */
			ob->ino = 0;
			ob->dev = 0;
		}
		ob_restart(ob);
		return;
	}
	if (stat(ob->path, &pst) == 0 && (pst.st_ino != ob->ino || pst.st_dev != ob->dev)) {
		ob->draining = true;
		ob->settled = false;	/* a writer may append until it reopens */
		ob->dsize = (uint64_t)st.st_size;
		ob->dsize_ms = outbox_now_ms();
		log_info("%s: file=%s was rotated: publishing the rest of the old file "
		    "(inode %llu) first", ob->who, ob->path, (unsigned long long)ob->ino);
		return;
	}
	for (i = 0; i < ob->ncurs; i++) {
		struct outbox_cursor *c = ob->curs[i];

		if (ob_cut(ob->fd, (uint64_t)st.st_size, c)) {
			ob_cut_follow(ob, c);
			return;
		}
	}
	for (i = 0; i < ob->ncurs; i++)
		outbox_head_update(ob->fd, (uint64_t)st.st_size, ob->curs[i]);
}

/*
 * Next complete line ('\n'-terminated) of the journal for channel c.  Returns
 * 1 with the line (without '\n'), 0 when there is none yet, 2 when an
 * overlong line was skipped (end_off set), -1 on a read error.
 */
int
outbox_reader_next(struct outbox_cursor *c, const char **line, size_t *len, uint64_t *end_off)
{
	struct outbox *ob = c->ob;
	char *nl, *nb;
	ssize_t n;
	size_t ncap, want;

	if (outbox_open(ob) == -1) {
		if (errno != ENOENT)
			outbox_hold(ob, "%s: file=%s open failed: %s", ob->who, ob->path,
			    strerror(errno));
		return 0;
	}
	for (;;) {
		nl = c->rlen > c->rstart ?
		    memchr(c->rbuf + c->rstart, '\n', c->rlen - c->rstart) : NULL;
		if (nl != NULL) {
			size_t at = (size_t)(nl - c->rbuf);

			*line = c->rbuf + c->rstart;
			*len = at - c->rstart;
			*end_off = c->rbase + at + 1;
			c->rstart = at + 1;
			if (c->rskip) {
				c->rskip = false;
				return 2;
			}
			return 1;
		}
		/* No newline buffered: compact, grow or give up on the line, read. */
		if (c->rstart > 0) {
			memmove(c->rbuf, c->rbuf + c->rstart, c->rlen - c->rstart);
			c->rbase += c->rstart;
			c->rlen -= c->rstart;
			c->rstart = 0;
		}
		if (c->rlen == c->rcap) {
			if (c->rskip || c->rcap >= OB_LINE_MAX) {
				if (!c->rskip)
					log_warn("%s: file=%s line at offset %llu longer "
					    "than %u bytes: not published", ob->who, ob->path,
					    (unsigned long long)c->rbase, OB_LINE_MAX);
				c->rskip = true;
				c->rbase += c->rlen;
				c->rlen = 0;
			} else {
				ncap = c->rcap == 0 ? OB_CHUNK : c->rcap * 2;
				if ((nb = realloc(c->rbuf, ncap)) == NULL) {
					outbox_hold(ob, "%s: file=%s: out of memory for "
					    "a line", ob->who, ob->path);
					return 0;
				}
				c->rbuf = nb;
				c->rcap = ncap;
			}
		}
		want = c->rcap - c->rlen;
		if (ob->jlimit != NULL) {
			/* The live file only up to its acknowledged lines. */
			uint64_t ino, lim, at = c->rbase + c->rlen;

			ob->jlimit(ob->jlimit_arg, &ino, &lim);
			if (ino == (uint64_t)ob->ino) {
				if (lim <= at)
					return 0;
				if (lim - at < want)
					want = (size_t)(lim - at);
			}
		}
		n = pread(ob->fd, c->rbuf + c->rlen, want,
		    (off_t)(c->rbase + c->rlen));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			outbox_hold(ob, "%s: file=%s read failed: %s", ob->who, ob->path,
			    strerror(errno));
			return -1;
		}
		if (n == 0)
			return 0;	/* a torn or absent last line: wait for its '\n' */
		c->rlen += (size_t)n;
	}
}

