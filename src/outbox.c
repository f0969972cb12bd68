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
 *
 * This file owns the outbox and its cursors (opening, teardown), the window
 * (read, take, skip, confirm, rewind, backlog) and a record's message read;
 * following the file is outbox_follow.c, the cursor files outbox_cursor.c
 * (outbox_int.h is what they share).
 */
#include <sys/stat.h>
#include <sys/types.h>

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
#include "outbox_int.h"
#include "spool.h"
#include "testhook.h"
#include "util.h"

static int	 cur_push(struct outbox_cursor *, const struct outbox_line *, bool skip,
		    struct outbox_entry **);
static size_t	 cur_advance(struct outbox_cursor *);

/* Monotonic clock in milliseconds. */
uint64_t
outbox_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A transient error: the output holds reading and retries after a backoff. */
void
outbox_hold(struct outbox *ob, const char *fmt, ...)
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
void
outbox_cur_reset(struct outbox_cursor *c)
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
	outbox_cursor_restore(c);
	if (outbox_cursor_load(c, err, errlen) == -1) {
		free(c);
		return NULL;
	}
	outbox_cur_reset(c);
	ob->curs[ob->ncurs++] = c;
	pthread_mutex_lock(&outbox_open_mu);
	c->open_next = outbox_open_list;
	outbox_open_list = c;
	pthread_mutex_unlock(&outbox_open_mu);
	return c;
}

/* Reconcile the cursors with the file and record which file (see outbox.h). */
void
outbox_start(struct outbox *ob)
{
	(void)outbox_open(ob);
	outbox_save(ob);
}

/* The next line for c (see outbox.h). */
int
outbox_read(struct outbox_cursor *c, struct outbox_line *l)
{
	int r;

	memset(l, 0, sizeof(*l));
	r = outbox_reader_next(c, &l->line, &l->len, &l->end_off);
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
	outbox_cur_reset(c);
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
	pthread_mutex_lock(&outbox_open_mu);
	for (i = 0; i < ob->ncurs; i++) {
		struct outbox_cursor **pp;

		for (pp = &outbox_open_list; *pp != NULL; pp = &(*pp)->open_next)
			if (*pp == ob->curs[i]) {
				*pp = ob->curs[i]->open_next;
				break;
			}
	}
	pthread_mutex_unlock(&outbox_open_mu);
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
	log_event_begin(&jb, "fosr.output.skipped", NULL);
	jb_kcstr(&jb, "output", c->ob->who);
	jb_kcstr(&jb, "channel", c->name);
	jb_kcstr(&jb, "sha256", sha);
	jb_kcstr(&jb, "reason", "message file missing");
	log_event_message(&jb, "%s channel %s skips %s: message file missing", c->ob->who, c->name,
	    sha);
	log_event_emit(&jb);
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
		outbox_hold(ob, "%s: message=%s unreadable: %s", ob->who, path, strerror(e));
		return OUTBOX_RETRY;
	}
	want = (uint64_t)st.st_size > limit ? limit : (size_t)st.st_size;
	if (want + 1 > m->cap) {
		unsigned char *nb = realloc(m->body, want + 1);

		if (nb == NULL) {
			close(fd);
			outbox_hold(ob, "%s: message=%s: out of memory for %zu bytes", ob->who,
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
		outbox_hold(ob, "%s: message=%s %s", ob->who, path, n < 0 ?
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
