/*
 * outbox: durable cursors over the reception journal (and the event log),
 * shared by every output (see outbox.h).
 *
 * One outbox follows one file across rotations.  Its cursors each read the
 * file from their own position into their own buffer; the entries read and
 * not yet confirmed form the cursor's window, in file order.  The confirmed
 * prefix of the window moves the durable cursor.  A rotated-away file is
 * read to its end (every cursor reading and confirming it) before the
 * outbox follows the next one.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
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
#include "spool.h"
#include "testhook.h"
#include "util.h"

#define OB_CURSORS_MAX		32		/* cursors per outbox */
#define OB_NAME_MAX		128
#define OB_QUEUE_MAX		65536		/* entries held per cursor (incl. confirmed) */
#define OB_CHUNK		(64u << 10)	/* file read size */
#define OB_LINE_MAX		JOURNAL_LINE_MAX	/* longer lines are skipped */
#define OB_HEAD_LEN		256		/* bytes of a file's start that identify it */
#define OB_BODY_KEEP		(2u << 20)	/* message buffer kept between reads */

struct outbox {
	char		 who[32];
	char		 path[PATH_MAX];	/* "" = none */
	enum outbox_kind kind;
	char		 cursor_dir[PATH_MAX];
	dev_t		 cdir_dev;	/* cursor_dir's identity: the stale sweep's key */
	ino_t		 cdir_ino;
	char		 spool_dir[PATH_MAX];
	void		(*hold)(void *, const char *);
	void		(*lost)(void *);
	void		*arg;
	outbox_limit_fn	 jlimit;	/* the live journal's acknowledged length */
	void		*jlimit_arg;
	uint64_t	 gen;		/* bumped when the cursors move to another file */

	/*
	 * fd is normally path; after a rotation it is the old file (draining)
	 * until every cursor has read and confirmed it to its end.
	 */
	int		 fd;
	ino_t		 ino;		/* of the file fd reads */
	dev_t		 dev;
	bool		 started;	/* the cursors' files were reconciled */
	bool		 draining;	/* fd is a rotated-away file */
	bool		 settled;	/* nobody writes it any more (a newer file
					   followed it, or found at start) */
	uint64_t	 dsize;		/* its size when last looked at */
	uint64_t	 dsize_ms;	/* when it got that size */

	struct outbox_cursor *curs[OB_CURSORS_MAX];
	int		 ncurs;
};

struct outbox_cursor {
	struct outbox	*ob;
	struct outbox_cursor *open_next;	/* the process's open cursors (ob_open_mu) */
	char		 name[OB_NAME_MAX];
	char		 file[2 * OB_NAME_MAX + 16];	/* <hex of name>.cursor */
	char		 cursor_path[PATH_MAX];
	uint64_t	 cursor;	/* everything before is confirmed */
	uint64_t	 cino, cdev;	/* the file the cursor points into (0 = not known) */
	uint64_t	 lkey;		/* the confirmed line ending at cursor: FNV-1a, */
	uint32_t	 llen;		/* length (0 = not known): finds a copy of the file */
	uint64_t	 hkey;		/* FNV-1a of the file's first hlen bytes: tells */
	uint32_t	 hlen;		/* a truncated file, finds its copy */
	bool		 dirty;		/* cursor changed since saved */
	bool		 lost;		/* the cursor file was there but unreadable */
	uint64_t	 nconfirmed;

	struct outbox_entry *q;		/* ring of entries in file order */
	unsigned char	*qdata;		/* their data, dsize bytes each, same index */
	size_t		 dsize;
	size_t		 qcap, qhead, qlen;

	char		*rbuf;		/* reader: bytes at rbase.. */
	size_t		 rcap, rstart, rlen;
	uint64_t	 rbase;
	bool		 rskip;		/* discarding an overlong line */
};

static uint64_t	 now_ms(void);
static void	 ob_hold(struct outbox *, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));
static int	 ob_open(struct outbox *);
static void	 ob_restart(struct outbox *);
static void	 ob_head_update(int, uint64_t, struct outbox_cursor *);
static void	 ob_cut_follow(struct outbox *, struct outbox_cursor *);
static int	 reader_next(struct outbox_cursor *, const char **line, size_t *len,
		    uint64_t *end_off);
static int	 cur_push(struct outbox_cursor *, const struct outbox_line *, bool skip,
		    struct outbox_entry **);
static size_t	 cur_advance(struct outbox_cursor *);
static void	 cur_reset(struct outbox_cursor *);
static int	 cursor_load(struct outbox_cursor *, char *err, size_t errlen);
static void	 cursor_save(struct outbox_cursor *);
static void	 cursor_restore(struct outbox_cursor *);
static bool	 cursor_is_open(dev_t, ino_t, const char *file);
static void	 ob_fsync_dir(const char *);

/*
 * Every cursor opened in this process, whichever outbox and thread holds
 * it: what outbox_set_aside_stale() leaves in place.
 */
static pthread_mutex_t		 ob_open_mu = PTHREAD_MUTEX_INITIALIZER;
static struct outbox_cursor	*ob_open_list;

/* Monotonic clock in milliseconds. */
static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A transient error: the output holds reading and retries after a backoff. */
static void
ob_hold(struct outbox *ob, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (ob->hold != NULL)
		ob->hold(ob->arg, buf);
	else
		log_warn("%s", buf);
}

/* FNV-1a, 64 bits. */
uint64_t
outbox_fnv64(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint64_t v = 14695981039346656037ull;
	size_t i;

	for (i = 0; i < len; i++) {
		v ^= p[i];
		v *= 1099511628211ull;
	}
	return v;
}

/* ------------------------------------------------------------- cursors */

/*
 * Read a channel's cursor file (missing = 0): "<offset>", then (optional,
 * older cursors lack them) " ino=<n> dev=<n> line=<fnv64 hex>:<length>": the
 * file the offset points into and the line that ends there.
 */
static int
cursor_load(struct outbox_cursor *c, char *err, size_t errlen)
{
	char buf[200], *sp, *tok, *save = NULL;
	ssize_t n;
	size_t len;
	uint64_t v;
	int fd;

	c->cursor = 0;
	c->cino = c->cdev = c->lkey = c->hkey = 0;
	c->llen = c->hlen = 0;
	if ((fd = open(c->cursor_path, O_RDONLY | O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", c->cursor_path, strerror(errno));
		return -1;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0) {
		snprintf(err, errlen, "%s: %s", c->cursor_path, strerror(errno));
		return -1;
	}
	len = (size_t)n;
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	buf[len] = '\0';
	if ((sp = memchr(buf, ' ', len)) != NULL) {
		len = (size_t)(sp - buf);
		for (tok = strtok_r(sp + 1, " ", &save); tok != NULL;
		    tok = strtok_r(NULL, " ", &save)) {
			unsigned long long a, b;

			if (sscanf(tok, "ino=%llu", &a) == 1)
				c->cino = a;
			else if (sscanf(tok, "dev=%llu", &a) == 1)
				c->cdev = a;
			else if (sscanf(tok, "line=%llx:%llu", &a, &b) == 2 && b < UINT32_MAX) {
				c->lkey = a;
				c->llen = (uint32_t)b;
			} else if (sscanf(tok, "head=%llx:%llu", &a, &b) == 2 &&
			    b <= OB_HEAD_LEN) {
				c->hkey = a;
				c->hlen = (uint32_t)b;
			}
		}
	}
	if (util_parse_u64(buf, len, 0, (uint64_t)INT64_MAX, false, &v) == -1) {
		/* A bad cursor means duplicates from the start, never a loss. */
		log_warn("%s: cursor=%s unreadable, publishing channel %s from "
		    "the start of the journal", c->ob->who, c->cursor_path, c->name);
		c->cino = c->cdev = c->lkey = c->hkey = 0;
		c->llen = c->hlen = 0;
		c->lost = true;
		return 0;
	}
	c->cursor = v;
	return 0;
}

/* Write a channel's cursor durably: tmp file, fsync, rename, fsync dir. */
static void
cursor_save(struct outbox_cursor *c)
{
	char tmp[PATH_MAX + 8], buf[200], dir[PATH_MAX], *slash;
	int fd, len;

	if (!c->dirty)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", c->cursor_path);
	len = snprintf(buf, sizeof(buf), "%llu ino=%llu dev=%llu line=%016llx:%u "
	    "head=%016llx:%u\n", (unsigned long long)c->cursor,
	    (unsigned long long)c->cino, (unsigned long long)c->cdev,
	    (unsigned long long)c->lkey, c->llen, (unsigned long long)c->hkey, c->hlen);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd == -1 || write(fd, buf, (size_t)len) != len || fsync(fd) == -1) {
		log_warn("%s: cursor=%s write failed: %s", c->ob->who, tmp, strerror(errno));
		if (fd != -1)
			close(fd);
		return;
	}
	close(fd);
	if (rename(tmp, c->cursor_path) == -1) {
		log_warn("%s: cursor=%s rename failed: %s", c->ob->who, c->cursor_path,
		    strerror(errno));
		return;
	}
	snprintf(dir, sizeof(dir), "%s", c->cursor_path);
	if ((slash = strrchr(dir, '/')) != NULL) {
		*slash = '\0';
		ob_fsync_dir(dir);
	}
	c->dirty = false;
}

/* fsync a directory (a rename in it is durable); errors are not fatal here. */
static void
ob_fsync_dir(const char *dir)
{
	int fd;

	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		(void)fsync(fd);
		close(fd);
	}
}

/*
 * The output is configured again after its cursor was set aside
 * (outbox_set_aside_stale): take the cursor back from <cursor_dir>/stale/,
 * so that the output resumes where it stopped.  If the file it points into
 * was deleted meanwhile, outbox_start says so and starts from what is
 * there (duplicates, never a silent skip).
 */
static void
cursor_restore(struct outbox_cursor *c)
{
	char stale[PATH_MAX + 8], from[PATH_MAX * 2];
	struct stat st;

	if (stat(c->cursor_path, &st) == 0 || errno != ENOENT)
		return;
	if ((size_t)snprintf(stale, sizeof(stale), "%s/" SPOOL_CURSOR_STALE,
	    c->ob->cursor_dir) >= sizeof(stale) ||
	    (size_t)snprintf(from, sizeof(from), "%s/%s", stale, c->file) >= sizeof(from))
		return;
	if (rename(from, c->cursor_path) == -1) {
		if (errno != ENOENT)
			log_warn("%s: cursor of \"%s\": cannot restore %s: %s; starting "
			    "without it", c->ob->who, c->name, from, strerror(errno));
		return;
	}
	ob_fsync_dir(c->ob->cursor_dir);
	ob_fsync_dir(stale);
	log_info("%s: cursor of \"%s\" restored from %s: the output is configured "
	    "again and resumes where it stopped", c->ob->who, c->name, stale);
}

/*
 * Save every channel's cursor that moved, with the first bytes of the file
 * it reads as they are now (a file cut or replaced under the same inode
 * while the daemon is stopped is told by them).
 */
void
outbox_save(struct outbox *ob)
{
	struct stat st;
	int i;

	if (ob == NULL)
		return;
	if (ob->fd != -1 && !ob->draining && fstat(ob->fd, &st) == 0)
		for (i = 0; i < ob->ncurs; i++)
			ob_head_update(ob->fd, (uint64_t)st.st_size, ob->curs[i]);
	for (i = 0; i < ob->ncurs; i++)
		cursor_save(ob->curs[i]);
}

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
		cur_reset(ob->curs[i]);
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
static void
ob_head_update(int fd, uint64_t size, struct outbox_cursor *c)
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
	ob->dsize_ms = now_ms();
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
static int
ob_open(struct outbox *ob)
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
			cur_reset(c);
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
			cur_reset(c);
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
		ob_hold(ob, "%s: file=%s was cut below the cursor of channel %s; "
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
		cur_reset(ob->curs[i]);
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
			ob->dsize_ms = now_ms();
			return false;
		}
		if (now_ms() - ob->dsize_ms < 1000)
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
	if (ob->fd == -1 && ob_open(ob) == -1)
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
			ob_hold(ob, "%s: file=%s: looking for the file after the "
			    "rotated one: %s", ob->who, ob->path, strerror(errno));
			return;
		}
		log_info("%s: file=%s: the rotated file is published; following "
		    "the new one", ob->who, ob->path);
		close(ob->fd);
		ob->fd = -1;
		if (ob_open(ob) == -1) {
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
		ob->dsize_ms = now_ms();
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
		ob_head_update(ob->fd, (uint64_t)st.st_size, ob->curs[i]);
}

/*
 * Next complete line ('\n'-terminated) of the journal for channel c.  Returns
 * 1 with the line (without '\n'), 0 when there is none yet, 2 when an
 * overlong line was skipped (end_off set), -1 on a read error.
 */
static int
reader_next(struct outbox_cursor *c, const char **line, size_t *len, uint64_t *end_off)
{
	struct outbox *ob = c->ob;
	char *nl, *nb;
	ssize_t n;
	size_t ncap, want;

	if (ob_open(ob) == -1) {
		if (errno != ENOENT)
			ob_hold(ob, "%s: file=%s open failed: %s", ob->who, ob->path,
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
					ob_hold(ob, "%s: file=%s: out of memory for "
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
			ob_hold(ob, "%s: file=%s read failed: %s", ob->who, ob->path,
			    strerror(errno));
			return -1;
		}
		if (n == 0)
			return 0;	/* a torn or absent last line: wait for its '\n' */
		c->rlen += (size_t)n;
	}
}


/* ------------------------------------------------------------- window */

/* Append the line to c's window; 0 or -1 (out of memory). */
static int
cur_push(struct outbox_cursor *c, const struct outbox_line *l, bool skip,
    struct outbox_entry **out)
{
	struct outbox_entry *nq, *e;
	unsigned char *nd = NULL;
	size_t ncap, i, at;

	if (c->qlen == c->qcap) {
		ncap = c->qcap == 0 ? 128 : c->qcap * 2;
		if ((nq = calloc(ncap, sizeof(*nq))) == NULL)
			return -1;
		if (c->dsize > 0 && (nd = calloc(ncap, c->dsize)) == NULL) {
			free(nq);
			return -1;
		}
		for (i = 0; i < c->qlen; i++) {
			at = (c->qhead + i) % c->qcap;
			nq[i] = c->q[at];
			if (nd != NULL) {
				memcpy(nd + i * c->dsize, c->qdata + at * c->dsize, c->dsize);
				nq[i].data = nd + i * c->dsize;
			}
		}
		free(c->q);
		free(c->qdata);
		c->q = nq;
		c->qdata = nd;
		c->qcap = ncap;
		c->qhead = 0;
	}
	at = (c->qhead + c->qlen) % c->qcap;
	e = &c->q[at];
	memset(e, 0, sizeof(*e));
	e->end_off = l->end_off;
	e->skip = skip;
	if (!l->overlong && l->len < UINT32_MAX) {
		e->lkey = outbox_fnv64(l->line, l->len);
		e->llen = (uint32_t)l->len;
	}
	if (c->dsize > 0) {
		e->data = c->qdata + at * c->dsize;
		memset(e->data, 0, c->dsize);
	}
	c->qlen++;
	*out = e;
	return 0;
}

/*
 * Pop the confirmed (or skipped) prefix of c's window, moving the cursor
 * past it.  Returns how many entries were popped.
 */
static size_t
cur_advance(struct outbox_cursor *c)
{
	size_t n = 0;

	while (c->qlen > 0) {
		struct outbox_entry *e = &c->q[c->qhead];

		if (!e->confirmed && !e->skip)
			break;
		c->cursor = e->end_off;
		c->lkey = e->lkey;
		c->llen = e->llen;
		if (!e->skip) {
			c->nconfirmed++;
			metrics_inc(M_FEED_CONFIRMED, c->ob->who, c->name);
		}
		c->qhead = (c->qhead + 1) % c->qcap;
		c->qlen--;
		n++;
	}
	if (n > 0)
		c->dirty = true;
	return n;
}

/* Forget the window: the reader goes back to the cursor. */
static void
cur_reset(struct outbox_cursor *c)
{
	c->qhead = c->qlen = 0;
	c->rbase = c->cursor;
	c->rstart = c->rlen = 0;
	c->rskip = false;
}

/* ------------------------------------------------------------- API */

/* Open an outbox (see outbox.h). */
struct outbox *
outbox_new(const struct outbox_opts *o, char *err, size_t errlen)
{
	struct outbox *ob;
	struct stat st;

	if ((ob = calloc(1, sizeof(*ob))) == NULL) {
		snprintf(err, errlen, "%s: out of memory", o->who);
		return NULL;
	}
	ob->fd = -1;
	snprintf(ob->who, sizeof(ob->who), "%s", o->who);
	snprintf(ob->path, sizeof(ob->path), "%s", o->path != NULL ? o->path : "");
	ob->kind = o->kind;
	snprintf(ob->cursor_dir, sizeof(ob->cursor_dir), "%s", o->cursor_dir);
	snprintf(ob->spool_dir, sizeof(ob->spool_dir), "%s",
	    o->spool_dir != NULL ? o->spool_dir : "");
	ob->hold = o->hold;
	ob->lost = o->lost;
	ob->arg = o->arg;
	if (util_mkdirs(ob->cursor_dir, 0750) == -1 || stat(ob->cursor_dir, &st) == -1) {
		snprintf(err, errlen, "%s: %s: %s", o->who, ob->cursor_dir, strerror(errno));
		free(ob);
		return NULL;
	}
	ob->cdir_dev = st.st_dev;
	ob->cdir_ino = st.st_ino;
	return ob;
}

/* The live journal's limit (see outbox.h). */
void
outbox_set_limit(struct outbox *ob, outbox_limit_fn fn, void *arg)
{
	ob->jlimit = fn;
	ob->jlimit_arg = arg;
}

/* Open a named cursor (see outbox.h). */
struct outbox_cursor *
outbox_cursor_open(struct outbox *ob, const char *name, size_t data_size, char *err,
    size_t errlen)
{
	char hex[2 * OB_NAME_MAX + 1];
	struct outbox_cursor *c;
	size_t nl = strlen(name);

	if (ob->ncurs >= OB_CURSORS_MAX || nl >= OB_NAME_MAX) {
		snprintf(err, errlen, "%s: too many cursors or name too long", ob->who);
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		snprintf(err, errlen, "%s: out of memory", ob->who);
		return NULL;
	}
	c->ob = ob;
	memcpy(c->name, name, nl + 1);
	c->dsize = data_size;
	util_hex(c->name, nl, hex);
	snprintf(c->file, sizeof(c->file), "%s" SPOOL_CURSOR_SUFFIX, hex);
	if ((size_t)snprintf(c->cursor_path, sizeof(c->cursor_path), "%s/%s",
	    ob->cursor_dir, c->file) >= sizeof(c->cursor_path)) {
		snprintf(err, errlen, "%s: spool path too long", ob->who);
		free(c);
		return NULL;
	}
	cursor_restore(c);
	if (cursor_load(c, err, errlen) == -1) {
		free(c);
		return NULL;
	}
	cur_reset(c);
	ob->curs[ob->ncurs++] = c;
	pthread_mutex_lock(&ob_open_mu);
	c->open_next = ob_open_list;
	ob_open_list = c;
	pthread_mutex_unlock(&ob_open_mu);
	return c;
}

/* Reconcile the cursors with the file and record which file (see outbox.h). */
void
outbox_start(struct outbox *ob)
{
	(void)ob_open(ob);
	outbox_save(ob);
}

/* The next line for c (see outbox.h). */
int
outbox_read(struct outbox_cursor *c, struct outbox_line *l)
{
	int r;

	memset(l, 0, sizeof(*l));
	r = reader_next(c, &l->line, &l->len, &l->end_off);
	if (r <= 0)
		return 0;
	if (r == 2) {
		l->overlong = true;
		l->line = NULL;
		l->len = 0;
	}
	return 1;
}

/* The line joins the window (see outbox.h). */
void *
outbox_take(struct outbox_cursor *c, const struct outbox_line *l)
{
	struct outbox_entry *e;
	static char none;

	if (cur_push(c, l, false, &e) == -1) {
		outbox_unread(c, l);
		return NULL;
	}
	return e->data != NULL ? e->data : &none;
}

/* The line is never sendable: it passes in its turn (see outbox.h). */
int
outbox_skip(struct outbox_cursor *c, const struct outbox_line *l)
{
	struct outbox_entry *e;

	if (cur_push(c, l, true, &e) == -1) {
		outbox_unread(c, l);
		return -1;
	}
	(void)cur_advance(c);
	return 0;
}

/* Read this line again next time; an overlong line is never read again. */
void
outbox_unread(struct outbox_cursor *c, const struct outbox_line *l)
{
	if (l->overlong)
		return;
	c->rbase = l->end_off - l->len - 1;
	c->rstart = c->rlen = 0;
}

/* Confirm the entry named end_off (see outbox.h). */
size_t
outbox_confirm(struct outbox_cursor *c, uint64_t end_off)
{
	size_t i;

	for (i = 0; i < c->qlen; i++) {
		struct outbox_entry *e = &c->q[(c->qhead + i) % c->qcap];

		if (e->end_off == end_off) {
			e->confirmed = true;
			break;
		}
		if (e->end_off > end_off)
			break;
	}
	return cur_advance(c);
}

/* Confirm every entry up to end_off (see outbox.h). */
size_t
outbox_confirm_upto(struct outbox_cursor *c, uint64_t end_off)
{
	size_t i;

	for (i = 0; i < c->qlen; i++) {
		struct outbox_entry *e = &c->q[(c->qhead + i) % c->qcap];

		if (e->end_off > end_off)
			break;
		e->confirmed = true;
	}
	return cur_advance(c);
}

/* Forget the window (see outbox.h). */
void
outbox_rewind(struct outbox_cursor *c)
{
	cur_reset(c);
}

size_t
outbox_pending(const struct outbox_cursor *c)
{
	return c->qlen;
}

struct outbox_entry *
outbox_entry(struct outbox_cursor *c, size_t k)
{
	return k < c->qlen ? &c->q[(c->qhead + k) % c->qcap] : NULL;
}

bool
outbox_full(const struct outbox_cursor *c)
{
	return c->qlen >= OB_QUEUE_MAX;
}

const char *
outbox_cursor_name(const struct outbox_cursor *c)
{
	return c->name;
}

uint64_t
outbox_cursor_offset(const struct outbox_cursor *c)
{
	return c->cursor;
}

uint64_t
outbox_cursor_confirmed(const struct outbox_cursor *c)
{
	return c->nconfirmed;
}

uint64_t
outbox_backlog(const struct outbox_cursor *c)
{
	const struct outbox *ob = c->ob;
	struct stat st;
	uint64_t size = 0, ino = 0, lim = 0, backlog = 0;

	if (ob->fd != -1 && fstat(ob->fd, &st) == 0)
		size = (uint64_t)st.st_size;
	else if (ob->fd == -1 && ob->path[0] && stat(ob->path, &st) == 0)
		size = (uint64_t)st.st_size;
	if (ob->jlimit != NULL && !ob->draining) {
		ob->jlimit(ob->jlimit_arg, &ino, &lim);
		if (ob->fd == -1 || ino == (uint64_t)ob->ino)
			size = lim;
	}
	if (size > c->cursor)
		backlog = size - c->cursor;
	if (ob->draining && stat(ob->path, &st) == 0)
		backlog += (uint64_t)st.st_size;
	return backlog;
}

uint64_t
outbox_generation(const struct outbox *ob)
{
	return ob->gen;
}

/* Whether a cursor of this process is the file named file in the directory (dev, ino). */
static bool
cursor_is_open(dev_t dev, ino_t ino, const char *file)
{
	struct outbox_cursor *c;
	bool found = false;

	pthread_mutex_lock(&ob_open_mu);
	for (c = ob_open_list; c != NULL && !found; c = c->open_next)
		found = c->ob->cdir_dev == dev && c->ob->cdir_ino == ino &&
		    strcmp(c->file, file) == 0;
	pthread_mutex_unlock(&ob_open_mu);
	return found;
}

/*
 * Set aside the cursors of outputs no longer configured (see outbox.h):
 * each cursor file of dir that no outbox of this process opened is renamed
 * into dir/stale/, where the spool's pruning does not look.
 */
int
outbox_set_aside_stale(const char *dir)
{
	char stale[PATH_MAX + 8], from[PATH_MAX * 2], to[PATH_MAX * 3];
	char buf[64], name[OB_NAME_MAX], shown[4 * OB_NAME_MAX];
	struct dirent *de;
	struct stat st;
	unsigned long long off;
	ssize_t r;
	long nl;
	size_t fl, sl = sizeof(SPOOL_CURSOR_SUFFIX) - 1;
	int fd, moved = 0;
	DIR *d;

	if ((size_t)snprintf(stale, sizeof(stale), "%s/" SPOOL_CURSOR_STALE, dir) >=
	    sizeof(stale))
		return -1;
	if ((d = opendir(dir)) == NULL) {
		if (errno == ENOENT)
			return 0;
		log_warn("outbox: cannot read the cursors in %s: %s; none set aside", dir,
		    strerror(errno));
		return -1;
	}
	if (fstat(dirfd(d), &st) == -1) {
		closedir(d);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (!spool_cursor_name(de->d_name) ||
		    cursor_is_open(st.st_dev, st.st_ino, de->d_name))
			continue;
		(void)snprintf(from, sizeof(from), "%s/%s", dir, de->d_name);
		(void)snprintf(to, sizeof(to), "%s/%s", stale, de->d_name);
		/* For the log: whose it was (the name is its file name's hex) and where. */
		fl = strlen(de->d_name) - sl;
		if ((nl = util_unhex(de->d_name, fl, name, sizeof(name))) >= 0)
			log_escape(shown, sizeof(shown), name, (size_t)nl);
		else
			log_escape(shown, sizeof(shown), de->d_name, strlen(de->d_name));
		off = 0;
		if ((fd = open(from, O_RDONLY | O_CLOEXEC)) != -1) {
			if ((r = read(fd, buf, sizeof(buf) - 1)) > 0) {
				buf[r] = '\0';
				(void)sscanf(buf, "%llu", &off);
			}
			close(fd);
		}
		if ((mkdir(stale, 0750) == -1 && errno != EEXIST) || rename(from, to) == -1) {
			log_warn("outbox: cursor %s of \"%s\" belongs to no configured output "
			    "but cannot be set aside (%s): it keeps the journal segments from "
			    "the one it points into", from, shown, strerror(errno));
			continue;
		}
		moved++;
		log_warn("outbox: cursor of \"%s\" (offset %llu): its output is no longer "
		    "configured: moved to %s/; it no longer keeps journal segments (the "
		    "output configured again resumes from it, if what it points into is "
		    "still there)", shown, off, stale);
	}
	closedir(d);
	if (moved > 0) {
		ob_fsync_dir(stale);
		ob_fsync_dir(dir);
	}
	return moved;
}

/* Save the cursors, close, free. */
void
outbox_free(struct outbox *ob)
{
	int i;

	if (ob == NULL)
		return;
	outbox_save(ob);
	if (ob->fd != -1)
		close(ob->fd);
	pthread_mutex_lock(&ob_open_mu);
	for (i = 0; i < ob->ncurs; i++) {
		struct outbox_cursor **pp;

		for (pp = &ob_open_list; *pp != NULL; pp = &(*pp)->open_next)
			if (*pp == ob->curs[i]) {
				*pp = ob->curs[i]->open_next;
				break;
			}
	}
	pthread_mutex_unlock(&ob_open_mu);
	for (i = 0; i < ob->ncurs; i++) {
		free(ob->curs[i]->q);
		free(ob->curs[i]->qdata);
		free(ob->curs[i]->rbuf);
		free(ob->curs[i]);
	}
	free(ob);
}

/* ------------------------------------------------------------- messages */

/*
 * The .eml of a reception record is gone (ENOENT): the one condition that
 * skips a mail.  Said loudly: a warning, an event (the caller counts it).
 */
static void
message_missing(struct outbox_cursor *c, const char *path, const char *sha)
{
	struct jbuf jb;

	log_warn("%s: message=%s is gone (%s): channel %s skips it, it will "
	    "never be published", c->ob->who, path, strerror(ENOENT), c->name);
	jb_init(&jb);
	evlog_begin(&jb, "fosr.output.skipped", NULL);
	jb_kcstr(&jb, "output", c->ob->who);
	jb_kcstr(&jb, "channel", c->name);
	jb_kcstr(&jb, "sha256", sha);
	jb_kcstr(&jb, "reason", "message file missing");
	evlog_message(&jb, "%s channel %s skips %s: message file missing", c->ob->who, c->name,
	    sha);
	evlog_emit(&jb);
	jb_free(&jb);
}

/* Read a reception record's message (see outbox.h). */
int
outbox_message(struct outbox_cursor *c, const struct outbox_line *l, size_t limit,
    struct outbox_message *m)
{
	struct outbox *ob = c->ob;
	char path[PATH_MAX], esc[128];
	const char *v, *line = l->line;
	size_t vl, i, want, len = l->len, got = 0;
	struct stat st;
	ssize_t n;
	int fd;

	m->len = 0;
	m->size = 0;
	if (!json_is_object(line, len) || json_get(line, len, "sha256", &v, &vl) == -1 ||
	    vl != 66 || !hpf_is_sha256_hex(v + 1, 64)) {
		log_warn("%s: journal line at offset %llu is not a reception "
		    "record: \"%s\"; not published", ob->who,
		    (unsigned long long)(l->end_off - len - 1),
		    log_escape(esc, sizeof(esc), line, len));
		return OUTBOX_SKIP;
	}
	for (i = 0; i < 64; i++)
		m->sha[i] = (char)(v[1 + i] | ((v[1 + i] >= 'A' && v[1 + i] <= 'F') ? 0x20 : 0));
	m->sha[64] = '\0';
	if (spool_path_message(path, sizeof(path), ob->spool_dir, m->sha) == -1) {
		log_warn("%s: spool path too long for message=%s; not published", ob->who,
		    m->sha);
		return OUTBOX_SKIP;
	}
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 || fstat(fd, &st) == -1) {
		int e = errno;

		if (fd != -1)
			close(fd);
		if (e == ENOENT) {
			message_missing(c, path, m->sha);
			return OUTBOX_SKIP;
		}
		ob_hold(ob, "%s: message=%s unreadable: %s", ob->who, path, strerror(e));
		return OUTBOX_RETRY;
	}
	want = (uint64_t)st.st_size > limit ? limit : (size_t)st.st_size;
	if (want + 1 > m->cap) {
		unsigned char *nb = realloc(m->body, want + 1);

		if (nb == NULL) {
			close(fd);
			ob_hold(ob, "%s: message=%s: out of memory for %zu bytes", ob->who,
			    path, want + 1);
			return OUTBOX_RETRY;
		}
		m->body = nb;
		m->cap = want + 1;
	}
	n = 0;
	while (got < want) {
		n = pread(fd, m->body + got, want - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got < want) {
		/* An I/O error, or the file changed under us: read it again later. */
		ob_hold(ob, "%s: message=%s %s", ob->who, path, n < 0 ?
		    strerror(errno) : "shorter than its size");
		close(fd);
		return OUTBOX_RETRY;
	}
	close(fd);
	m->len = got;
	m->size = (uint64_t)st.st_size;
	return 0;
}

/* Keep memory bounded between big mails. */
void
outbox_message_trim(struct outbox_message *m)
{
	if (m->cap > OB_BODY_KEEP)
		outbox_message_free(m);
}

void
outbox_message_free(struct outbox_message *m)
{
	free(m->body);
	m->body = NULL;
	m->cap = 0;
}
