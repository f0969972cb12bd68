/*
 * The analysis worker (see analysis_worker.h): one thread, its own outbox
 * over the reception journal (an outbox is not thread-safe), its own
 * analysis context (libmagic is not thread-safe).  The event loop only kicks
 * it; nothing here runs on the loop, so a slow or hostile mail costs the SMTP
 * side nothing (analysis.c caps every mail's CPU, memory and parts).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "analysis.h"
#include "analysis_worker.h"
#include "campaign.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "spool.h"
#include "util.h"

#define AW_IDLE_MS	1000	/* a tick when nothing kicks: rotations, the gauge */
#define AW_HOLD_MS	1000	/* after a transient error (no memory, I/O) */
/*
 * Mails analysed between two commits (parsed journal synced, campaigns and
 * cursor saved), and the time a batch may take: one fdatasync and two atomic
 * file replacements per batch, not per mail (per mail they cost more system
 * time than the capture itself, bench/run.sh).  A crash analyses the batch
 * in progress again: each of its mails at most once more.
 */
#define AW_BATCH	64
#define AW_BATCH_MS	250
/* The worker's nice value: the SMTP threads win the CPU when it is short. */
#define AW_NICE		10

struct aw {
	struct cfg_analysis	 cfg;
	struct analysis		*an;
	struct campaigns	*cp;
	struct outbox		*ob;
	struct outbox_cursor	*cur;
	struct outbox_message	 msg;
	struct jbuf		 jb;
	char			 spool[PATH_MAX];
	char			 attdir[PATH_MAX + 16];
	int			 parsed_fd;
	int			 attdir_fd;
	size_t			 raw_max;	/* bytes of a mail read (analysis.c's cap) */
	bool			 held;		/* a transient error: back off */
	bool			 hold_logged;	/* its series logged, until a try gets through */
	unsigned		 batch;		/* mails analysed since the last commit */
	uint64_t		 batch_t0;	/* when the first of them was (ms) */
	bool			 blobs;		/* attachments written since then */

	pthread_t		 thread;
	bool			 started;
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;
	bool			 kicked, stop, ready;	/* under mu */
	_Atomic uint64_t	 backlog;	/* for the scrape callback */
};

static void	*aw_main(void *);
static int	 aw_one(struct aw *);
static void	 aw_commit(struct aw *);
static uint64_t	 aw_now_ms(void);
static int	 aw_parsed_repair(int, const char *, char *, size_t);
static int	 aw_store_blob(struct aw *, const struct analysis_blob *);
static void	 aw_hold(void *, const char *);
static void	 aw_metrics_cb(void *);

struct aw *
aw_new(const struct cfg_analysis *cfg, char *err, size_t errlen)
{
	struct analysis_limits lim;
	struct aw *w;

	if ((w = calloc(1, sizeof(*w))) == NULL) {
		snprintf(err, errlen, "analysis: out of memory");
		return NULL;
	}
	w->cfg = *cfg;
	w->parsed_fd = w->attdir_fd = -1;
	jb_init(&w->jb);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	analysis_limits_default(&lim);
	/* Not stored: no blob kept (the hashes are still computed). */
	lim.blob_max = cfg->store_attachments ? (size_t)cfg->attachment_max : 0;
	w->raw_max = lim.raw_max;
	if ((w->an = analysis_new(&lim, err, errlen)) == NULL) {
		aw_free(w);
		return NULL;
	}
	return w;
}

int
aw_start(struct aw *w, const char *spool_dir, outbox_limit_fn fn, void *fnarg,
    char *err, size_t errlen)
{
	struct outbox_opts o;
	char feed[PATH_MAX + 8], path[PATH_MAX + 32];
	DIR *d;
	struct dirent *de;

	snprintf(w->spool, sizeof(w->spool), "%s", spool_dir);
	(void)spool_path_dir(path, sizeof(path), spool_dir, SPOOL_CAMPAIGNS_NAME);
	if ((w->cp = campaigns_open(path, (size_t)w->cfg.campaigns_max, 0, err,
	    errlen)) == NULL)
		return -1;
	if (spool_path_dir(path, sizeof(path), spool_dir, SPOOL_PARSED_NAME) == -1 ||
	    (w->parsed_fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC,
	    0640)) == -1) {
		snprintf(err, errlen, "analysis: %s: %s", path, strerror(errno));
		return -1;
	}
	if (aw_parsed_repair(w->parsed_fd, path, err, errlen) == -1)
		return -1;
	if (w->cfg.store_attachments) {
		(void)spool_path_dir(w->attdir, sizeof(w->attdir), spool_dir,
		    SPOOL_DIR_ATTACHMENTS);
		if ((mkdir(w->attdir, 0750) == -1 && errno != EEXIST) ||
		    (w->attdir_fd = open(w->attdir, O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC)) == -1) {
			snprintf(err, errlen, "analysis: %s: %s", w->attdir,
			    strerror(errno));
			return -1;
		}
		/* What a crash left half written. */
		if ((d = fdopendir(dup(w->attdir_fd))) != NULL) {
			while ((de = readdir(d)) != NULL)
				if (strncmp(de->d_name, ".tmp.", 5) == 0)
					(void)unlinkat(w->attdir_fd, de->d_name, 0);
			closedir(d);
		}
	}
	(void)spool_path_dir(feed, sizeof(feed), spool_dir, SPOOL_DIR_FEED);
	(void)spool_path_journal(path, sizeof(path), spool_dir);
	memset(&o, 0, sizeof(o));
	o.who = "analysis";
	o.path = path;
	o.kind = OUTBOX_JOURNAL;
	o.cursor_dir = feed;
	o.spool_dir = w->spool;
	o.hold = aw_hold;
	o.arg = w;
	if ((w->ob = outbox_new(&o, err, errlen)) == NULL ||
	    (w->cur = outbox_cursor_open(w->ob, "analysis", 0, err, errlen)) == NULL)
		return -1;
	if (fn != NULL)
		outbox_set_limit(w->ob, fn, fnarg);
	/* Which journal file the cursor points into, before anything rotates. */
	outbox_start(w->ob);
	atomic_store(&w->backlog, outbox_backlog(w->cur));
	(void)metrics_on_scrape(aw_metrics_cb, w);
	if (pthread_create(&w->thread, NULL, aw_main, w) != 0) {
		snprintf(err, errlen, "analysis: cannot start the worker thread");
		return -1;
	}
	w->started = true;
	/* It lowers its priority itself: before the sandbox forbids it. */
	pthread_mutex_lock(&w->mu);
	while (!w->ready)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

/* A mail was committed: look at the journal now. */
void
aw_kick(struct aw *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	w->kicked = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void
aw_free(struct aw *w)
{
	if (w == NULL)
		return;
	metrics_off_scrape(aw_metrics_cb, w);
	if (w->started) {
		pthread_mutex_lock(&w->mu);
		w->stop = true;
		pthread_cond_signal(&w->cv);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->thread, NULL);
	}
	outbox_free(w->ob);	/* saves the cursor */
	outbox_message_free(&w->msg);
	campaigns_free(w->cp);
	analysis_free(w->an);
	jb_free(&w->jb);
	if (w->parsed_fd != -1)
		close(w->parsed_fd);
	if (w->attdir_fd != -1)
		close(w->attdir_fd);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}

/*
 * The outbox met a transient error: back off.  msg (it names the outbox,
 * "analysis: ...") is logged once per series: held is cleared before each
 * try, hold_logged only when a try gets through ("resumed").
 */
static void
aw_hold(void *arg, const char *msg)
{
	struct aw *w = arg;

	if (!w->hold_logged)
		log_warn("%s; retrying", msg);
	else
		log_debug("%s; retrying", msg);
	w->hold_logged = true;
	w->held = true;
}

/* At a scrape (the loop thread): the lag as the worker last saw it. */
static void
aw_metrics_cb(void *arg)
{
	struct aw *w = arg;

	metrics_set(M_ANALYSIS_BACKLOG, NULL, NULL, (double)atomic_load(&w->backlog));
}

/* The thread: analyse journal lines as they come, sleep when there are none. */
static void *
aw_main(void *arg)
{
	struct aw *w = arg;
	struct timespec ts;
	uint64_t now, left;
	bool was_held, stop;

	/* Linux: the nice value is the thread's (PRIO_PROCESS of a tid). */
	(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), AW_NICE);
	pthread_mutex_lock(&w->mu);
	w->ready = true;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	for (;;) {
		pthread_mutex_lock(&w->mu);
		stop = w->stop;
		w->kicked = false;
		pthread_mutex_unlock(&w->mu);
		if (stop)
			break;

		outbox_check(w->ob);
		outbox_save(w->ob);	/* a cursor moved to the next file: say so */
		was_held = w->held;
		w->held = false;
		while (aw_one(w) == 1) {
			if (w->batch >= AW_BATCH || outbox_full(w->cur) ||
			    aw_now_ms() - w->batch_t0 >= AW_BATCH_MS)
				aw_commit(w);
			pthread_mutex_lock(&w->mu);
			stop = w->stop;
			pthread_mutex_unlock(&w->mu);
			if (stop)
				break;
		}
		/*
		 * Caught up: the batch still waits for its time (mails come one
		 * by one at a low rate: one commit per batch, not per mail).
		 */
		left = AW_IDLE_MS;
		if (outbox_pending(w->cur) > 0) {
			now = aw_now_ms();
			if (w->batch == 0 || w->held || now - w->batch_t0 >= AW_BATCH_MS) {
				aw_commit(w);
				/* at once: a drained segment's cursor moves on */
				left = 0;
			} else
				left = AW_BATCH_MS - (now - w->batch_t0);
		} else
			atomic_store(&w->backlog, outbox_backlog(w->cur));
		if (was_held && !w->held && w->hold_logged) {
			log_info("analysis: resumed");
			w->hold_logged = false;
		}
		if (w->held)
			left = AW_HOLD_MS;	/* after the commit: the same line later */

		pthread_mutex_lock(&w->mu);
		if (!w->stop && !w->kicked && left > 0) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += (time_t)(left / 1000);
			ts.tv_nsec += (long)(left % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			(void)pthread_cond_timedwait(&w->cv, &w->mu, &ts);
		}
		pthread_mutex_unlock(&w->mu);
	}
	aw_commit(w);	/* stopping: what was analysed is confirmed */
	return NULL;
}

static uint64_t
aw_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Make the batch durable, in this order: the parsed journal and the
 * attachments' names, the campaign table, then the cursor past the batch.
 * A failure is logged; the cursor still moves (the event is out: analysing
 * again would count the mails twice in their campaigns).
 */
static void
aw_commit(struct aw *w)
{
	struct outbox_entry *e;
	size_t n;
	char err[256];

	if ((n = outbox_pending(w->cur)) == 0) {
		atomic_store(&w->backlog, outbox_backlog(w->cur));
		return;
	}
	if (w->batch > 0 && fdatasync(w->parsed_fd) == -1)
		log_warn("analysis: %s: fdatasync: %s", SPOOL_PARSED_NAME, strerror(errno));
	if (w->blobs && fsync(w->attdir_fd) == -1)
		log_warn("analysis: %s: fsync: %s", w->attdir, strerror(errno));
	if (campaigns_save(w->cp, err, sizeof(err)) == -1)
		log_warn("analysis: campaigns: %s", err);
	if ((e = outbox_entry(w->cur, n - 1)) != NULL)
		(void)outbox_confirm_upto(w->cur, e->end_off);
	outbox_save(w->ob);
	metrics_add(M_ANALYSIS_MAILS, NULL, NULL, (double)w->batch);
	w->batch = 0;
	w->blobs = false;
	atomic_store(&w->backlog, outbox_backlog(w->cur));
}

/*
 * The next journal line: analysed, written out, confirmed.  1 when a line
 * was passed (analysed or skipped), 0 when there is none or on a transient
 * error (w->held: the same line after the backoff).
 */
static int
aw_one(struct aw *w)
{
	struct analysis_result res;
	struct outbox_line l;
	size_t i;
	bool stored = true;
	int rc;

	if (outbox_read(w->cur, &l) <= 0)
		return 0;
	if (l.overlong) {
		(void)outbox_skip(w->cur, &l);	/* outbox logged it */
		return 1;
	}
	rc = outbox_message(w->cur, &l, w->raw_max, &w->msg);
	if (rc == OUTBOX_RETRY) {
		outbox_unread(w->cur, &l);
		return 0;
	}
	if (rc == OUTBOX_SKIP)
		return outbox_skip(w->cur, &l) == -1 ? 0 : 1;

	memset(&res, 0, sizeof(res));
	evlog_begin(&w->jb, "fosr.mail.parsed", NULL);
	jb_kcstr(&w->jb, "sha256", w->msg.sha);
	jb_kuint(&w->jb, "size", w->msg.size);
	if (analysis_fields(w->an, w->msg.body, w->msg.len, w->msg.sha, w->cp,
	    &w->jb, &res) == -1) {
		analysis_result_free(&res);
		outbox_message_trim(&w->msg);
		outbox_unread(w->cur, &l);
		aw_hold(w, "out of memory analysing a mail");
		return 0;
	}
	outbox_message_trim(&w->msg);
	for (i = 0; w->attdir_fd != -1 && i < res.nblobs; i++) {
		if (aw_store_blob(w, &res.blobs[i]) == -1)
			stored = false;
		w->blobs = true;
	}
	if (!stored)
		log_warn("analysis: mail %s: attachments not all stored: %s",
		    w->msg.sha, strerror(errno));
	evlog_message(&w->jb, "Mail %s analysed: %u attachments, %u URLs, campaign %llu",
	    w->msg.sha, res.nattachments, res.nurls, (unsigned long long)res.campaign);
	/* Closes the object and ends the line: the same bytes go to both. */
	evlog_emit(&w->jb);
	analysis_result_free(&res);
	if (w->jb.oom || util_write_all(w->parsed_fd, w->jb.buf, w->jb.len) == -1)
		log_warn("analysis: %s: %s", SPOOL_PARSED_NAME,
		    w->jb.oom ? "out of memory" : strerror(errno));
	jb_reset(&w->jb);
	/* Confirmed by aw_commit(), after the table is saved. */
	if (outbox_take(w->cur, &l) == NULL) {
		/* out of memory: analysed again after the backoff */
		outbox_unread(w->cur, &l);
		aw_hold(w, "out of memory");
		return 0;
	}
	if (w->batch++ == 0)
		w->batch_t0 = aw_now_ms();
	return 1;
}

/*
 * A crash may leave the parsed journal's last line torn: cut it (its mail
 * was in a batch not yet confirmed, so it is analysed again), or the next
 * line would be glued to it.  0, or -1 with err filled.
 */
static int
aw_parsed_repair(int fd, const char *path, char *err, size_t errlen)
{
	char buf[65536];
	struct stat st;
	off_t end, off;
	ssize_t n = 0, i;

	if (fstat(fd, &st) == -1)
		goto fail;
	for (end = st.st_size; end > 0; end = off) {
		off = end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0;
		if ((n = pread(fd, buf, (size_t)(end - off), off)) != end - off)
			goto fail;
		for (i = n; i > 0; i--)
			if (buf[i - 1] == '\n')
				break;
		if (i > 0) {
			end = off + i;
			break;
		}
	}
	if (end == st.st_size)
		return 0;
	log_warn("analysis: %s: cutting a torn last line (%lld bytes)", path,
	    (long long)(st.st_size - end));
	if (ftruncate(fd, end) == -1 || fdatasync(fd) == -1)
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "analysis: %s: %s", path, n >= 0 ? "short read" : strerror(errno));
	return -1;
}

/* attachments/<sha256>, written once: tmp, fdatasync, rename.  0 or -1. */
static int
aw_store_blob(struct aw *w, const struct analysis_blob *b)
{
	char tmp[96], path[PATH_MAX + 96];
	struct stat st;
	int fd, e;

	/* spool_path_attachment() names it: a content name, never a path */
	if (spool_path_attachment(path, sizeof(path), w->spool, b->sha256) == -1)
		return 0;
	if (fstatat(w->attdir_fd, b->sha256, &st, 0) == 0 && (uint64_t)st.st_size == b->len)
		return 0;	/* content-addressed: already there */
	snprintf(tmp, sizeof(tmp), ".tmp.%s", b->sha256);
	if ((fd = openat(w->attdir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0640)) == -1)
		return -1;
	if (util_write_all(fd, b->data, b->len) == -1 || fdatasync(fd) == -1) {
		e = errno;
		close(fd);
		(void)unlinkat(w->attdir_fd, tmp, 0);
		errno = e;
		return -1;
	}
	close(fd);
	if (renameat(w->attdir_fd, tmp, w->attdir_fd, b->sha256) == -1) {
		e = errno;
		(void)unlinkat(w->attdir_fd, tmp, 0);
		errno = e;
		return -1;
	}
	return 0;
}
