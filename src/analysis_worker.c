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
#include "hpfeeds_wire.h"
#include "jseg.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "spool.h"
#include "testhook.h"
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
/* How often the parsed journal's segments are pruned besides rotations. */
#define AW_PRUNE_MS	5000

/*
 * The poison-mail guard (aw_guard_*): <spool>/analysis.inflight names the
 * mail being analysed and how many times its analysis was begun without
 * being finished.  A mail that was in progress at AW_GUARD_CRASHES crashes
 * (the daemon died in it: a library bug, a memory limit) is not analysed a
 * third time: it is passed with a fosr.mail.parsed event saying so, or each
 * restart would analyse it again and die again.  A pwrite without a sync: a
 * process's crash keeps what it wrote (the page cache); a power cut loses
 * it, and then the mail did not crash anything.
 */
#define AW_GUARD_NAME		"analysis.inflight"
#define AW_GUARD_CRASHES	2

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
	char			 parsed_path[PATH_MAX + 32];
	char			 feed[PATH_MAX + 8];	/* the cursors of its readers */
	uint64_t		 parsed_len;	/* bytes of whole lines in it */
	bool			 parsed_dirsync; /* its name maybe not on disk (created,
						   or its rotation's fsync failed):
						   fsync the spool dir before a
						   batch in it is confirmed */
	uint64_t		 seg_size;	/* rotate at this size; 0 = never */
	int			 seg_keep;	/* rotated segments kept at least */
	unsigned long long	 seg_seq;	/* last segment's number */
	uint64_t		 prune_ms;	/* last prune */
	struct spool		*sp;		/* the disk budget (NULL: none) */
	bool			 full_logged;	/* attachments skipped: said once */
	pthread_mutex_t		 pc_mu;		/* guards the two below */
	uint64_t		 pc_ino;	/* the live parsed journal and the */
	uint64_t		 pc_len;	/* length of its durable lines */
	size_t			 raw_max;	/* bytes of a mail read (analysis.c's cap) */
	bool			 held;		/* a transient error: back off */
	bool			 hold_series;	/* its warning logged, not yet resumed */
	unsigned		 batch;		/* mails analysed since the last commit */
	uint64_t		 batch_t0;	/* when the first of them was (ms) */
	bool			 blobs;		/* attachments written since then */

	pthread_t		 thread;
	bool			 started;
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;
	bool			 kicked, stop, ready;	/* under mu */
	_Atomic uint64_t	 backlog;	/* for the scrape callback */

	int			 guard_fd;	/* AW_GUARD_NAME, -1: no guard */
	char			 guard_sha[65];	/* what it said at the start */
	unsigned		 guard_n;
};

/* The analysis disk failing (parsed.json, attachments, the campaign table): every mail meets it. */
static struct log_series	 aw_disk_series;

static void	*aw_main(void *);
static int	 aw_one(struct aw *);
static void	 aw_commit(struct aw *);
static void	 aw_unsynced(struct aw *);
static int	 aw_spool_dirsync(struct aw *);
static uint64_t	 aw_now_ms(void);
static int	 aw_parsed_repair(int, const char *, char *, size_t);
static int	 aw_store_blob(struct aw *, const struct analysis_blob *);
static void	 aw_hold(void *, const char *);
static void	 aw_metrics_cb(void *);
static int	 aw_parsed_open(struct aw *, char *err, size_t errlen);
static int	 aw_parsed_append(struct aw *);
static void	 aw_parsed_durable(struct aw *);
static void	 aw_parsed_rotate(struct aw *);
static void	 aw_parsed_prune(struct aw *);
static void	 aw_account(struct aw *, int64_t);
static void	 aw_guard_open(struct aw *);
static bool	 aw_guard_enter(struct aw *);
static void	 aw_guard_leave(struct aw *);
static void	 aw_guard_abandon(struct aw *);

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
	w->parsed_fd = w->attdir_fd = w->guard_fd = -1;
	jb_init(&w->jb);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	pthread_mutex_init(&w->pc_mu, NULL);
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
	if (aw_parsed_open(w, err, errlen) == -1)
		return -1;
	(void)spool_path_dir(w->attdir, sizeof(w->attdir), spool_dir,
	    SPOOL_DIR_ATTACHMENTS);
	/* Not stored now: those stored before still count in the budget. */
	if (!w->cfg.store_attachments && w->sp != NULL &&
	    (w->attdir_fd = open(w->attdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 &&
	    errno != ENOENT) {
		snprintf(err, errlen, "analysis: %s: %s", w->attdir, strerror(errno));
		return -1;
	}
	aw_guard_open(w);
	if (w->cfg.store_attachments || w->attdir_fd != -1) {
		if (w->cfg.store_attachments &&
		    ((mkdir(w->attdir, 0750) == -1 && errno != EEXIST) ||
		    (w->attdir_fd = open(w->attdir, O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC)) == -1)) {
			snprintf(err, errlen, "analysis: %s: %s", w->attdir,
			    strerror(errno));
			return -1;
		}
		/* What a crash left half written; what is kept counts in the budget. */
		if ((d = fdopendir(dup(w->attdir_fd))) != NULL) {
			struct stat st;

			while ((de = readdir(d)) != NULL)
				if (strncmp(de->d_name, ".tmp.", 5) == 0)
					(void)unlinkat(w->attdir_fd, de->d_name, 0);
				else if (de->d_name[0] != '.' &&
				    fstatat(w->attdir_fd, de->d_name, &st, 0) == 0 &&
				    S_ISREG(st.st_mode))
					aw_account(w, (int64_t)st.st_size);
			closedir(d);
		}
		if (!w->cfg.store_attachments) {
			/* Counted only: none is written. */
			close(w->attdir_fd);
			w->attdir_fd = -1;
		}
	}
	aw_parsed_prune(w);
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
	pthread_mutex_destroy(&w->pc_mu);
	if (w->guard_fd != -1)
		close(w->guard_fd);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}

/*
 * The outbox met a transient error: back off.  msg (it names the outbox,
 * "analysis: ...") is logged once per series: held is cleared before each
 * try, hold_series only when a try gets through ("resumed").
 */
static void
aw_hold(void *arg, const char *msg)
{
	struct aw *w = arg;

	/* Once per series (held is cleared before each try, hold_series on success). */
	if (!w->hold_series)
		log_warn("%s; retrying", msg);	/* msg names "analysis:" (the outbox's who) */
	else
		log_debug("%s; retrying", msg);
	w->held = w->hold_series = true;
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
	bool stop;

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
		if (aw_now_ms() - w->prune_ms >= AW_PRUNE_MS)
			aw_parsed_prune(w);	/* its readers moved on */
		w->held = false;
		while (aw_one(w) == 1) {
			if (w->batch >= AW_BATCH || outbox_full(w->cur) ||
			    aw_now_ms() - w->batch_t0 >= AW_BATCH_MS)
				aw_commit(w);
			pthread_mutex_lock(&w->mu);
			stop = w->stop;
			pthread_mutex_unlock(&w->mu);
			if (stop || w->held)	/* held: again after the backoff */
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
		if (w->hold_series && !w->held) {
			log_info("analysis: resumed");
			w->hold_series = false;
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
 * A failed sync of the first two confirms nothing (aw_unsynced(): the batch
 * is analysed again); a campaign table not saved is logged and the cursor
 * still moves (the event is out: analysing again would count the mails
 * twice in their campaigns).
 */
static void
aw_commit(struct aw *w)
{
	struct outbox_entry *e;
	size_t n;
	char err[256];
	int he = 0;

	if ((n = outbox_pending(w->cur)) == 0) {
		atomic_store(&w->backlog, outbox_backlog(w->cur));
		return;
	}
	/* A failing disk fails every batch alike, at the mail rate: once per series. */
	if (w->batch > 0 && ((he = TESTHOOK("parsed_sync", "")) != 0 ||
	    fdatasync(w->parsed_fd) == -1)) {
		log_series(&aw_disk_series, LOG_LVL_WARN, "analysis: %s: fdatasync: %s",
		    SPOOL_PARSED_NAME, strerror(he != 0 ? he : errno));
		aw_unsynced(w);
		return;
	}
	if (w->blobs && fsync(w->attdir_fd) == -1) {
		log_series(&aw_disk_series, LOG_LVL_WARN, "analysis: %s: fsync: %s", w->attdir,
		    strerror(errno));
		aw_unsynced(w);
		return;
	}
	if (w->batch > 0 && w->parsed_dirsync) {
		if (aw_spool_dirsync(w) == -1) {
			log_series(&aw_disk_series, LOG_LVL_WARN, "analysis: %s: fsync: %s",
			    w->spool, strerror(errno));
			aw_unsynced(w);
			return;
		}
		w->parsed_dirsync = false;
	}
	if (w->batch > 0)
		aw_parsed_durable(w);	/* its readers may publish the batch */
	if (campaigns_save(w->cp, err, sizeof(err)) == -1)
		log_series(&aw_disk_series, LOG_LVL_WARN, "analysis: campaigns: %s", err);
	if ((e = outbox_entry(w->cur, n - 1)) != NULL)
		(void)outbox_confirm_upto(w->cur, e->end_off);
	outbox_save(w->ob);
	metrics_add(M_ANALYSIS_MAILS, NULL, NULL, (double)w->batch);
	w->batch = 0;
	w->blobs = false;
	atomic_store(&w->backlog, outbox_backlog(w->cur));
	/* Only a durable file: a rotated segment is read whole, with no limit. */
	if (w->seg_size > 0 && w->parsed_len >= w->seg_size && w->pc_len == w->parsed_len)
		aw_parsed_rotate(w);
}

/*
 * The batch's documents (or its attachments' names) were not synced.  After
 * an fsync error Linux marks the dirty pages clean: they may never reach the
 * disk, and a second fdatasync that succeeds proves nothing about them.  So
 * nothing is confirmed: parsed.jsonl is cut back to its durable length (its
 * readers never read past it, aw_parsed_committed), the window is forgotten
 * and the mails are analysed and appended again after the backoff (their
 * campaigns may count them twice: a duplicate, never a loss).  If the cut
 * fails, the unsynced lines stay and the new copies follow them.
 */
static void
aw_unsynced(struct aw *w)
{
	uint64_t durable;

	pthread_mutex_lock(&w->pc_mu);
	durable = w->pc_len;
	pthread_mutex_unlock(&w->pc_mu);
	if (w->parsed_len > durable) {
		if (ftruncate(w->parsed_fd, (off_t)durable) == 0) {
			aw_account(w, -(int64_t)(w->parsed_len - durable));
			w->parsed_len = durable;
		} else
			log_warn("analysis: %s: cannot cut the unsynced documents: %s; "
			    "they are written again after them", SPOOL_PARSED_NAME,
			    strerror(errno));
	}
	outbox_rewind(w->cur);
	w->batch = 0;
	w->blobs = false;
	atomic_store(&w->backlog, outbox_backlog(w->cur));
	aw_hold(w, "analysis: " SPOOL_PARSED_NAME " or attachments not synced: the "
	    "batch is analysed again");
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

	if (!aw_guard_enter(w)) {
		aw_guard_abandon(w);
		outbox_message_trim(&w->msg);
		if (aw_parsed_append(w) == -1)
			goto hold;
		jb_reset(&w->jb);
		aw_guard_leave(w);
		goto written;
	}
	memset(&res, 0, sizeof(res));
	log_event_begin(&w->jb, "fosr.mail.parsed", NULL);
	jb_kcstr(&w->jb, "sha256", w->msg.sha);
	jb_kuint(&w->jb, "size", w->msg.size);
	/* A rule kept the mail off the outputs: its document too (hpfeeds, AMQP). */
	if (hpf_record_private(l.line, l.len))
		jb_kbool(&w->jb, "publish", false);
	if (analysis_fields(w->an, w->msg.body, w->msg.len, w->msg.sha, w->cp,
	    &w->jb, &res) == -1) {
		analysis_result_free(&res);
		outbox_message_trim(&w->msg);
		outbox_unread(w->cur, &l);
		aw_guard_leave(w);
		aw_hold(w, "analysis: out of memory analysing a mail");
		return 0;
	}
	aw_guard_leave(w);
	outbox_message_trim(&w->msg);
	for (i = 0; w->attdir_fd != -1 && i < res.nblobs; i++) {
		if (aw_store_blob(w, &res.blobs[i]) == -1)
			stored = false;
		w->blobs = true;
	}
	if (!stored)
		log_series(&aw_disk_series, LOG_LVL_WARN, "analysis: mail %s: attachments not "
		    "all stored: %s", w->msg.sha, strerror(errno));
	log_event_message(&w->jb, "Mail %s analysed: %u attachments, %u URLs, campaign %llu",
	    w->msg.sha, res.nattachments, res.nurls, (unsigned long long)res.campaign);
	/* Closes the object and ends the line: the same bytes go to both. */
	log_event_emit(&w->jb);
	analysis_result_free(&res);
	if (aw_parsed_append(w) == -1)
		goto hold;
	jb_reset(&w->jb);
written:
	/* Confirmed by aw_commit(), after the table is saved. */
	if (outbox_take(w->cur, &l) == NULL) {
		/* out of memory: analysed again after the backoff */
		outbox_unread(w->cur, &l);
		aw_hold(w, "analysis: out of memory");
		return 0;
	}
	if (w->batch++ == 0)
		w->batch_t0 = aw_now_ms();
	return 1;

hold:
	/*
	 * The document is not in parsed.jsonl (a full disk, an I/O error): the
	 * mail is analysed again after the backoff, never passed without its
	 * document (its campaign may count it twice; a duplicate, not a loss).
	 */
	jb_reset(&w->jb);
	outbox_unread(w->cur, &l);
	aw_hold(w, "analysis: " SPOOL_PARSED_NAME " not written");
	return 0;
}

/*
 * Append the document in w->jb to the parsed journal.  0, or -1 (logged
 * once per series) with the file cut back to its last whole line.
 */
static int
aw_parsed_append(struct aw *w)
{
	int e;

	if ((e = TESTHOOK("parsed_write", w->msg.sha)) != 0)
		errno = e;
	else if (!w->jb.oom && util_write_all(w->parsed_fd, w->jb.buf, w->jb.len) == 0) {
		w->parsed_len += w->jb.len;
		aw_account(w, (int64_t)w->jb.len);
		return 0;
	}
	log_series(&aw_disk_series, LOG_LVL_WARN, "analysis: %s: %s", SPOOL_PARSED_NAME,
	    w->jb.oom && e == 0 ? "out of memory" : strerror(errno));
	/* A part written would glue the next line to it: cut it back. */
	if (!w->jb.oom && ftruncate(w->parsed_fd, (off_t)w->parsed_len) == -1) {
		struct stat st;

		log_warn("analysis: %s: cannot cut a failed append: %s",
		    SPOOL_PARSED_NAME, strerror(errno));
		/* Its readers skip the torn line; the length is the file's. */
		if (fstat(w->parsed_fd, &st) == 0 && (uint64_t)st.st_size > w->parsed_len) {
			aw_account(w, (int64_t)((uint64_t)st.st_size - w->parsed_len));
			w->parsed_len = (uint64_t)st.st_size;
		}
	}
	return -1;
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
	const char *what = "fstat";
	struct stat st;
	off_t end, off;
	ssize_t n = 0, i;

	if (fstat(fd, &st) == -1)
		goto fail;
	for (end = st.st_size; end > 0; end = off) {
		off = end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0;
		what = "read";
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
	what = "ftruncate";
	if (ftruncate(fd, end) == -1)
		goto fail;
	what = "fdatasync";
	if (fdatasync(fd) == -1)
		goto fail;
	return 0;
fail:
	/* Only a pread that returned too few bytes leaves errno unset. */
	if (strcmp(what, "read") == 0 && n >= 0)
		snprintf(err, errlen, "analysis: %s: short read", path);
	else
		snprintf(err, errlen, "analysis: %s: %s: %s", path, what, strerror(errno));
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
	if (w->sp != NULL && !spool_aux_room(w->sp, b->len)) {
		/* The spool's budget or its free space is short: mails come first. */
		if (!w->full_logged)
			log_warn("analysis: spool.max_bytes reached or free space under "
			    "twice spool.min_free: attachments are no longer stored "
			    "(their hashes still are in %s; each mail keeps its own)",
			    SPOOL_PARSED_NAME);
		w->full_logged = true;
		return 0;
	}
	w->full_logged = false;
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
	aw_account(w, (int64_t)b->len);
	return 0;
}

/* ------------------------------------------------ the parsed journal's file */

/*
 * The spool's budget and the parsed journal's segments (spool.journal_segment
 * and journal_keep, as the reception journal).  Before aw_start().
 */
void
aw_set_journal(struct aw *w, struct spool *sp, uint64_t seg_size, int seg_keep)
{
	w->sp = sp;
	w->seg_size = seg_size;
	w->seg_keep = seg_keep;
}

/* The bytes the worker holds in the spool changed. */
static void
aw_account(struct aw *w, int64_t delta)
{
	if (w->sp != NULL && delta != 0)
		spool_aux_add(w->sp, delta);
}

/*
 * Open the live parsed journal (its torn last line cut), find the last
 * segment's number, count them all in the budget.  0, or -1 with err.
 */
static int
aw_parsed_open(struct aw *w, char *err, size_t errlen)
{
	struct stat st;
	uint64_t segbytes = 0;

	(void)spool_path_dir(w->feed, sizeof(w->feed), w->spool, SPOOL_DIR_FEED);
	if (spool_path_dir(w->parsed_path, sizeof(w->parsed_path), w->spool,
	    SPOOL_PARSED_NAME) == -1 ||
	    (w->parsed_fd = open(w->parsed_path, O_RDWR | O_APPEND | O_CREAT |
	    O_CLOEXEC, 0640)) == -1) {
		snprintf(err, errlen, "analysis: %s: %s", w->parsed_path, strerror(errno));
		return -1;
	}
	if (aw_parsed_repair(w->parsed_fd, w->parsed_path, err, errlen) == -1)
		return -1;
	if (fstat(w->parsed_fd, &st) == -1 ||
	    jseg_scan(w->spool, SPOOL_PARSED_NAME, &w->seg_seq, &segbytes) == -1) {
		snprintf(err, errlen, "analysis: %s: %s", w->parsed_path, strerror(errno));
		return -1;
	}
	w->parsed_len = (uint64_t)st.st_size;
	aw_account(w, (int64_t)(w->parsed_len + segbytes));
	aw_parsed_durable(w);
	w->parsed_dirsync = true;	/* maybe just created: once, at the first batch */
	return 0;
}

/* fsync the spool directory (parsed.jsonl's name); 0 or -1 (errno). */
static int
aw_spool_dirsync(struct aw *w)
{
	int e;

	if ((e = TESTHOOK("parsed_dirsync", "")) != 0) {
		errno = e;
		return -1;
	}
	return util_fsync_dir(w->spool);
}

/* The live file's lines up to parsed_len are durable: readers may take them. */
static void
aw_parsed_durable(struct aw *w)
{
	struct stat st;

	if (fstat(w->parsed_fd, &st) == -1)
		return;
	pthread_mutex_lock(&w->pc_mu);
	w->pc_ino = (uint64_t)st.st_ino;
	w->pc_len = w->parsed_len;
	pthread_mutex_unlock(&w->pc_mu);
}

/* The readers' limit (outbox_limit_fn, any thread; see analysis_worker.h). */
void
aw_parsed_committed(void *arg, uint64_t *ino, uint64_t *len)
{
	struct aw *w = arg;

	pthread_mutex_lock(&w->pc_mu);
	*ino = w->pc_ino;
	*len = w->pc_len;
	pthread_mutex_unlock(&w->pc_mu);
}

/*
 * parsed.jsonl reached its segment size: rename it parsed.jsonl.<n> (its
 * readers follow it by inode to its end, then take the next segment) and
 * start a new one.  After a commit: the file is durable and whole.  On any
 * failure the current file keeps growing.
 */
static void
aw_parsed_rotate(struct aw *w)
{
	char name[PATH_MAX + 64];
	int fd;

	if (jseg_path(name, sizeof(name), w->spool, SPOOL_PARSED_NAME, w->seg_seq + 1) == -1)
		return;
	if (rename(w->parsed_path, name) == -1) {
		log_warn("analysis: rotation: rename %s: %s", w->parsed_path, strerror(errno));
		return;
	}
	if ((fd = open(w->parsed_path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC,
	    0640)) == -1) {
		log_warn("analysis: rotation: %s: %s; keeping one file", w->parsed_path,
		    strerror(errno));
		(void)rename(name, w->parsed_path);
		return;
	}
	/* Its name on disk: else the next commit does it first. */
	if ((w->parsed_dirsync = aw_spool_dirsync(w) == -1))
		log_warn("analysis: rotation: fsync %s: %s; again before the next batch "
		    "is confirmed", w->spool, strerror(errno));
	w->seg_seq++;
	close(w->parsed_fd);
	w->parsed_fd = fd;
	w->parsed_len = 0;
	aw_parsed_durable(w);
	log_info("analysis: %s rotated to %s", SPOOL_PARSED_NAME, name);
	aw_parsed_prune(w);
}

/* Delete the segments every reader of the parsed journal is past. */
static void
aw_parsed_prune(struct aw *w)
{
	uint64_t freed = 0;

	w->prune_ms = aw_now_ms();
	(void)jseg_prune(w->spool, SPOOL_PARSED_NAME, w->feed, w->seg_keep,
	    "analysis", &freed);
	aw_account(w, -(int64_t)freed);
}

/*
 * The guard's file, and what it said: the mail in progress at the last
 * stop, if the stop was a crash.  Without the file (a read-only spool) the
 * analysis runs unguarded, said once.
 */
static void
aw_guard_open(struct aw *w)
{
	char path[PATH_MAX + 32], buf[96];
	ssize_t n;
	unsigned cnt;

	w->guard_sha[0] = '\0';
	w->guard_n = 0;
	if (spool_path_dir(path, sizeof(path), w->spool, AW_GUARD_NAME) == -1 ||
	    (w->guard_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640)) == -1) {
		log_warn("analysis: %s: %s; a mail that crashes the analysis will "
		    "crash it again at each start", path, strerror(errno));
		return;
	}
	if ((n = pread(w->guard_fd, buf, sizeof(buf) - 1, 0)) <= 0)
		return;
	buf[n] = '\0';
	if (sscanf(buf, "%64[0-9a-f] %u", w->guard_sha, &cnt) == 2 &&
	    strlen(w->guard_sha) == 64)
		w->guard_n = cnt;
	else
		w->guard_sha[0] = '\0';
	if (w->guard_n > 0)
		log_warn("analysis: mail %s was being analysed when the daemon "
		    "stopped (%u time%s)", w->guard_sha, w->guard_n,
		    w->guard_n == 1 ? "" : "s");
}

/*
 * Before analysing w->msg: false if it is the mail that was in progress at
 * AW_GUARD_CRASHES crashes (pass it), else true with the file saying that
 * its analysis has begun once more.
 */
static bool
aw_guard_enter(struct aw *w)
{
	char buf[96];
	unsigned n = 1;
	int len;

	if (w->guard_n > 0 && strcmp(w->msg.sha, w->guard_sha) == 0) {
		if (w->guard_n >= AW_GUARD_CRASHES)
			return false;
		n = w->guard_n + 1;
	}
	if (w->guard_fd == -1)
		return true;
	len = snprintf(buf, sizeof(buf), "%s %u\n", w->msg.sha, n);
	if (pwrite(w->guard_fd, buf, (size_t)len, 0) != len ||
	    ftruncate(w->guard_fd, len) == -1)
		log_warn("analysis: %s: %s", AW_GUARD_NAME, strerror(errno));
	return true;
}

/* The analysis of w->msg ended (a crash now is not its). */
static void
aw_guard_leave(struct aw *w)
{
	w->guard_n = 0;
	w->guard_sha[0] = '\0';
	if (w->guard_fd != -1 && ftruncate(w->guard_fd, 0) == -1)
		log_warn("analysis: %s: %s", AW_GUARD_NAME, strerror(errno));
}

/*
 * w->msg crashed the analysis AW_GUARD_CRASHES times: a fosr.mail.parsed
 * event (and parsed.jsonl line) that says it was abandoned, no analysis.
 */
static void
aw_guard_abandon(struct aw *w)
{
	log_warn("analysis: mail %s abandoned: the daemon stopped %u times while "
	    "analysing it", w->msg.sha, w->guard_n);
	log_event_begin(&w->jb, "fosr.mail.parsed", NULL);
	jb_kcstr(&w->jb, "sha256", w->msg.sha);
	jb_kuint(&w->jb, "size", w->msg.size);
	/* the objects every fosr.mail.parsed has (etc/events.schema.json), empty */
	jb_key(&w->jb, "email");
	jb_obj_open(&w->jb);
	jb_key(&w->jb, "attachments");
	jb_arr_open(&w->jb);
	jb_arr_close(&w->jb);
	jb_obj_close(&w->jb);
	jb_key(&w->jb, "url");
	jb_obj_open(&w->jb);
	jb_key(&w->jb, "full");
	jb_arr_open(&w->jb);
	jb_arr_close(&w->jb);
	jb_obj_close(&w->jb);
	jb_key(&w->jb, "related");
	jb_obj_open(&w->jb);
	jb_key(&w->jb, "hash");
	jb_arr_open(&w->jb);
	jb_cstr(&w->jb, w->msg.sha);
	jb_arr_close(&w->jb);
	jb_obj_close(&w->jb);
	jb_key(&w->jb, "fosr");
	jb_obj_open(&w->jb);
	jb_kcstr(&w->jb, "sha256", w->msg.sha);
	jb_kuint(&w->jb, "size", w->msg.size);
	jb_key(&w->jb, "analysis");
	jb_obj_open(&w->jb);
	jb_kbool(&w->jb, "parsed", false);
	jb_kcstr(&w->jb, "abandoned", "crashed");
	jb_kuint(&w->jb, "crashes", w->guard_n);
	jb_key(&w->jb, "limits");
	jb_arr_open(&w->jb);
	jb_cstr(&w->jb, "abandoned");
	jb_arr_close(&w->jb);
	jb_obj_close(&w->jb);
	jb_obj_close(&w->jb);
	log_event_message(&w->jb, "Mail %s not analysed: the daemon stopped %u times "
	    "while analysing it", w->msg.sha, w->guard_n);
	log_event_emit(&w->jb);
}
