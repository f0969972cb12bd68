/*
 * The spool: content-addressed message files, a JSON-lines reception journal,
 * a segment log (write-ahead log of small messages) and a group-commit worker
 * thread that makes a group durable before a session may answer 250.  See
 * spool.h for the layout and the contract.  This file opens the spool
 * (directories, journal repair, segment replay, the worker), frees it and
 * keeps the space budget; writing a message is spool_msg.c, the worker's
 * group commit spool_commit.c, the journal spool_journal.c (spool_int.h is
 * the inside they share).
 *
 * Durability, per group (worker):
 *   1. small messages: framed records appended to segments/<seq>.seg in one
 *      writev, one fdatasync; then each .eml: a body in memory is written to
 *      a tmp file of its own (O_TMPFILE where it works), a spilled one has
 *      its tmp file already, and the tmp file is linked (or renamed) to
 *      messages/<sha>.eml, without any fsync (its bytes are in the segment);
 *   2. big messages: fsync of the tmp file, link, one fsync of messages/;
 *   3. the group's journal lines: one write, one fdatasync.
 * (The record format is in spool_seg.c.)  On a write error the segment is
 * cut back to its length before the group and the whole group fails.
 *
 * The invariants each step relies on (a 250 means the mail is on disk and
 * stays there through any crash, kill -9 or power loss):
 *   I1 a small message's record is durable in a segment before its .eml
 *      has a name; a big one's bytes are fsync'ed before.
 *   I2 a name in messages/ appears with all its bytes: an .eml is only ever
 *      made by link(2)/rename(2) of a whole tmp file, never created empty
 *      under its name and filled, never rewritten in place (the replay too
 *      renames over).  After a kill -9 (the page cache survives) every name
 *      holds its bytes, whatever the step; any reader of messages/ (hpfeeds,
 *      relay, the Maildir, a human) never sees a torn mail.
 *   I3 a segment is deleted only after a syncfs (or an fsync of each file)
 *      that began after every .eml it covers was written: the segment of
 *      the group being named is not checkpointed before the worker calls
 *      spool_seg_names_done(), even when sealed mid-group (disk full) and a
 *      pass is asked for.  So after a power loss an .eml not yet durable is
 *      covered by a segment on disk, and spool_open() replays it whole
 *      before anything reads or dedups.
 *   I4 dedup trusts a name of the right size as the same bytes: true by I2
 *      and I3 once the replay has run; a name of the wrong size is replaced
 *      atomically, never trusted.  A big one's name may not be durable yet
 *      (its fsync of messages/ failed, or a kill -9 came first): a big
 *      duplicate's group fsyncs messages/ before its 250.
 *   I5 the journal line goes last: a line (hence a 250) never announces a
 *      mail whose bytes or name could be lost.
 * The test hooks (testhook.h; FOSR_TEST_HOOKS in tests only) name the
 * steps, in order: seg_write, seg_sync, eml_write, eml_link (per small
 * message), names_done, big_fsync, big_link (per big one), big_dirsync,
 * journal_write, journal_sync, journal_trunc (on a failure), acked,
 * journal_dirsync (at a rotation, and before the next append if it failed);
 * checkpoint thread: ckpt_wait_names, ckpt_syncfs,
 * ckpt_unlink, ckpt_pass_end; replay: replay_restore, replay_unlink;
 * journal pruning at a rotation (fail= only): prune_feed_dir, prune_cursor.
 * tests/e2e/test_faults.py (CommitStepKill9) kills -9 at each of them.
 * Outside the commit path: outbox_open_rotated (outbox_follow.c),
 * parsed_write (the analysis worker's append to parsed.jsonl, fail= only),
 * parsed_sync (its fdatasync of parsed.jsonl per batch), parsed_dirsync
 * (its fsync of the spool directory for a new parsed.jsonl's name).
 *
 * Segments (spool_seg.c): the worker appends and seals; a checkpoint
 * thread of their own makes the covered .eml durable with one syncfs(2)
 * about 35 s after the seal and deletes them, so no commit ever waits for
 * it, except on disk full (spool_seg_append() waits for a pass, bounded,
 * and retries once).  Disk full under a tmp file or an .eml, or a failing
 * spool_check_space(), asks the worker to seal and request a pass (not
 * waited for).  spool_free() stops the worker, then the checkpoint thread
 * after one last bounded pass; spool_open() replays whatever segments are
 * left: each complete record makes its .eml whole (written under tmp/ and
 * renamed over when missing or wrong) and durable.
 *
 * Dedup: messages/<sha>.eml of the right size is the same bytes and is
 * durable or covered by a segment not yet deleted (I4), so a duplicate
 * costs neither segment bytes nor a link, only its journal line (and, a
 * big one, the group's fsync of messages/: its name may not be durable).
 *
 * Threads: the event loop thread owns every spool_msg until spool_msg_commit();
 * from then on the worker owns its file and path fields until it pushes the
 * message to the completed queue.  The cb/arg/detached fields are only ever
 * touched by the loop thread.  The two queues are protected by one mutex.
 */
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "metrics.h"
#include "spool.h"
#include "spool_int.h"
#include "spool_seg.h"
#include "testhook.h"
#include "util.h"

static void	 spool_clean_tmp(const char *dir);
static int	 spool_du(const char *dir, uint64_t *out);
static long long spool_now_ns(void);
static struct spool *spool_alloc(struct event_base *, const struct spool_opts *);
static int	 spool_open_dirs(struct spool *, const struct spool_opts *, const char **);
static int	 spool_open_maildir(struct spool *, const struct spool_opts *,
		    const char **);
static int	 spool_open_journal(struct spool *, const char **);
static int	 spool_recover(struct spool *, const struct spool_opts *, const char **);
static int	 spool_start(struct spool *, struct event_base *, const char **);
static void	 spool_metrics_cb(void *);
static bool	 spool_probe_tmpfile(const char *tmp_dir);

/* Join a directory and a name into a new string. */
char *
spool_path(const char *a, const char *b)
{
	char	*p;

	if (asprintf(&p, "%s/%s", a, b) == -1)
		return NULL;
	return p;
}

/* Remove what a crash left in tmp/: never acknowledged, so never promised. */
static void
spool_clean_tmp(const char *dir)
{
	DIR		*d;
	struct dirent	*de;

	if ((d = opendir(dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		(void)unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

/* Sum the sizes of the regular files in dir. */
static int
spool_du(const char *dir, uint64_t *out)
{
	DIR		*d;
	struct dirent	*de;
	struct stat	 st;
	uint64_t	 sum = 0;

	if ((d = opendir(dir)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode))
			sum += (uint64_t)st.st_size;
	}
	closedir(d);
	*out = sum;
	return 0;
}

/* Monotonic clock in nanoseconds. */
static long long
spool_now_ns(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A new spool from opts, nothing opened yet; NULL when out of memory. */
static struct spool *
spool_alloc(struct event_base *base, const struct spool_opts *opts)
{
	struct spool		*sp;
	pthread_condattr_t	 ca;

	if ((sp = calloc(1, sizeof(*sp))) == NULL)
		return NULL;
	sp->base = base;
	sp->journal_fd = sp->msg_dir_fd = sp->maildir_new_fd = sp->efd = -1;
	sp->min_free = opts->min_free;
	sp->max_bytes = opts->max_bytes;
	sp->journal_seg = opts->journal_segment;
	sp->journal_keep = opts->journal_keep;
	TAILQ_INIT(&sp->pending);
	TAILQ_INIT(&sp->done);
	pthread_mutex_init(&sp->mu, NULL);
	pthread_mutex_init(&sp->jc_mu, NULL);
	/* The worker's timed waits (segment seals) use the monotonic clock. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sp->cond, &ca);
	pthread_condattr_destroy(&ca);
	snprintf(sp->hostname, sizeof(sp->hostname), "%s",
	    opts->hostname != NULL && opts->hostname[0] != '\0' ?
	    opts->hostname : "localhost");
	/* Maildir names may not hold '/' and ':' (the info separator). */
	for (char *p = sp->hostname; *p != '\0'; p++)
		if (*p == '/' || *p == ':' || (unsigned char)*p < 0x21 ||
		    (unsigned char)*p > 0x7e)
			*p = '_';
	return sp;
}

/* The spool's directories (tmp, messages, segments); 0, or -1 with *what and errno. */
static int
spool_open_dirs(struct spool *sp, const struct spool_opts *opts, const char **what)
{
	if ((sp->dir = strdup(opts->dir)) == NULL ||
	    (sp->tmp_dir = spool_path(opts->dir, SPOOL_DIR_TMP)) == NULL ||
	    (sp->msg_dir = spool_path(opts->dir, SPOOL_DIR_MESSAGES)) == NULL ||
	    (sp->journal_path = spool_path(opts->dir, SPOOL_JOURNAL_NAME)) == NULL ||
	    (sp->seg_dir = spool_path(opts->dir, SPOOL_DIR_SEGMENTS)) == NULL) {
		errno = ENOMEM;
		*what = "allocating paths";
		return -1;
	}
	*what = sp->tmp_dir;
	if (util_mkdirs(sp->tmp_dir, SPOOL_DIR_MODE) == -1)
		return -1;
	*what = sp->msg_dir;
	if (util_mkdirs(sp->msg_dir, SPOOL_DIR_MODE) == -1)
		return -1;
	if ((sp->msg_dir_fd = open(sp->msg_dir, O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) == -1)
		return -1;
	*what = sp->seg_dir;
	if (util_mkdirs(sp->seg_dir, SPOOL_DIR_MODE) == -1)
		return -1;
	return 0;
}

/* The optional Maildir copy (tmp, new, cur); 0, or -1 with *what and errno. */
static int
spool_open_maildir(struct spool *sp, const struct spool_opts *opts, const char **what)
{
	char	*cur;
	int	 r;

	if (opts->maildir == NULL || opts->maildir[0] == '\0')
		return 0;
	if ((sp->maildir_tmp = spool_path(opts->maildir, "tmp")) == NULL ||
	    (sp->maildir_new = spool_path(opts->maildir, "new")) == NULL ||
	    (cur = spool_path(opts->maildir, "cur")) == NULL) {
		errno = ENOMEM;
		*what = "allocating paths";
		return -1;
	}
	r = util_mkdirs(cur, SPOOL_DIR_MODE);
	free(cur);
	*what = opts->maildir;
	if (r == -1 || util_mkdirs(sp->maildir_tmp, SPOOL_DIR_MODE) == -1 ||
	    util_mkdirs(sp->maildir_new, SPOOL_DIR_MODE) == -1)
		return -1;
	*what = sp->maildir_new;
	if ((sp->maildir_new_fd = open(sp->maildir_new, O_RDONLY |
	    O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	return 0;
}

/*
 * The journal: open, cut a torn last line, number the next segment after
 * the last one, make the names durable.  0, or -1 with *what and errno.
 */
static int
spool_open_journal(struct spool *sp, const char **what)
{
	DIR			*d;
	struct dirent		*de;
	unsigned long long	 n;

	*what = sp->journal_path;
	if ((sp->journal_fd = open(sp->journal_path, O_RDWR | O_APPEND |
	    O_CREAT | O_CLOEXEC, SPOOL_FILE_MODE)) == -1)
		return -1;
	if (spool_repair_journal(sp->journal_fd, &sp->journal_len) == -1)
		return -1;
	spool_journal_committed_set(sp);
	/* Rotated segments: number the next one after the last. */
	d = opendir(sp->dir);
	while (d != NULL && (de = readdir(d)) != NULL)
		if (spool_segment_name(de->d_name, &n) && n > sp->journal_seq)
			sp->journal_seq = n;
	if (d != NULL)
		closedir(d);
	/* The journal's and the subdirectories' names must be durable too. */
	*what = sp->dir;
	if (util_fsync_dir(sp->dir) == -1)
		return -1;
	return 0;
}

/*
 * What a crash left: temporary files, segments whose records make the .eml
 * whole again; then the quota's count.  0, or -1 with *what and errno.
 */
static int
spool_recover(struct spool *sp, const struct spool_opts *opts, const char **what)
{
	struct spool_seg_opts	 seg_opts;

	spool_clean_tmp(sp->tmp_dir);
	sp->use_tmpfile = spool_probe_tmpfile(sp->tmp_dir);
	if (sp->maildir_tmp != NULL)
		spool_clean_tmp(sp->maildir_tmp);
	/* A crash left segments: their records make the .eml whole again. */
	*what = "replaying segments";
	memset(&seg_opts, 0, sizeof(seg_opts));
	seg_opts.seg_dir = sp->seg_dir;
	seg_opts.tmp_dir = sp->tmp_dir;
	seg_opts.msg_dir_fd = sp->msg_dir_fd;
	seg_opts.age_ms = opts->checkpoint_age_ms;
	seg_opts.hold_ms = opts->checkpoint_hold_ms;
	seg_opts.no_checkpoint = opts->no_checkpoint;
	seg_opts.no_syncfs = opts->no_syncfs;
	if ((sp->seg = spool_seg_open(&seg_opts)) == NULL)
		return -1;

	if (sp->max_bytes != 0) {
		uint64_t	used;

		*what = sp->msg_dir;
		if (spool_du(sp->msg_dir, &used) == -1)
			return -1;
		atomic_store(&sp->used_bytes, used);
	}
	return 0;
}

/*
 * The loop's side (eventfd and event) and the threads: the commit worker
 * and the checkpoint thread.  0, or -1 with *what and errno.
 */
static int
spool_start(struct spool *sp, struct event_base *base, const char **what)
{
	sigset_t	 all, old;
	int		 r;

	*what = "eventfd";
	if ((sp->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1)
		return -1;
	if ((sp->ev = event_new(base, sp->efd, EV_READ | EV_PERSIST,
	    spool_ready_cb, sp)) == NULL || event_add(sp->ev, NULL) == -1) {
		errno = ENOMEM;
		*what = "event";
		return -1;
	}

	/*
	 * The worker and the checkpoint thread take no signals: they belong to
	 * the event loop.  Both start here, before the sandbox is entered.
	 */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	*what = "checkpoint thread";
	if ((r = spool_seg_start(sp->seg)) == 0) {
		*what = "worker thread";
		if ((r = pthread_create(&sp->thread, NULL, spool_worker, sp)) != 0)
			errno = r;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0)
		return -1;
	sp->thread_started = true;
	(void)metrics_on_scrape(spool_metrics_cb, sp);
	return 0;
}

/* Create the directories, repair the journal, start the commit worker. */
struct spool *
spool_open(struct event_base *base, const struct spool_opts *opts, char *err,
    size_t errlen)
{
	struct spool	*sp;
	const char	*what = "";

	testhook_env();
	if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0') {
		snprintf(err, errlen, "spool: no directory configured");
		return NULL;
	}
	if ((sp = spool_alloc(base, opts)) == NULL) {
		snprintf(err, errlen, "spool: out of memory");
		return NULL;
	}
	if (spool_open_dirs(sp, opts, &what) == -1 ||
	    spool_open_maildir(sp, opts, &what) == -1 ||
	    spool_open_journal(sp, &what) == -1 ||
	    spool_recover(sp, opts, &what) == -1 ||
	    spool_start(sp, base, &what) == -1)
		goto fail;
	return sp;

fail:
	snprintf(err, errlen, "spool: %s: %s", what, strerror(errno));
	spool_free(sp);
	return NULL;
}

/* Finish queued commits without callbacks, stop the worker, free everything. */
void
spool_free(struct spool *sp)
{
	struct spool_msg	*m;

	if (sp == NULL)
		return;
	metrics_off_scrape(spool_metrics_cb, sp);
	if (sp->thread_started) {
		pthread_mutex_lock(&sp->mu);
		sp->stopping = true;
		pthread_cond_signal(&sp->cond);
		pthread_mutex_unlock(&sp->mu);
		pthread_join(sp->thread, NULL);
	}
	while ((m = TAILQ_FIRST(&sp->done)) != NULL) {
		TAILQ_REMOVE(&sp->done, m, entry);
		spool_msg_free(m);
	}
	/* Its last checkpoint pass needs messages/ open: closed below. */
	spool_seg_free(sp->seg);
	if (sp->ev != NULL)
		event_free(sp->ev);
	if (sp->efd != -1)
		close(sp->efd);
	if (sp->journal_fd != -1)
		close(sp->journal_fd);
	if (sp->msg_dir_fd != -1)
		close(sp->msg_dir_fd);
	if (sp->maildir_new_fd != -1)
		close(sp->maildir_new_fd);
	pthread_mutex_destroy(&sp->mu);
	pthread_mutex_destroy(&sp->jc_mu);
	pthread_cond_destroy(&sp->cond);
	free(sp->dir);
	free(sp->tmp_dir);
	free(sp->msg_dir);
	free(sp->journal_path);
	free(sp->seg_dir);
	free(sp->maildir_tmp);
	free(sp->maildir_new);
	free(sp);
}

/* At a scrape: the bytes in messages/ and the space left (statvfs now, not the cache). */
static void
spool_metrics_cb(void *arg)
{
	struct spool	*sp = arg;
	struct statvfs	 vfs;

	metrics_set(M_SPOOL_BYTES, NULL, NULL, (double)atomic_load(&sp->used_bytes));
	if (statvfs(sp->dir, &vfs) == 0)
		metrics_set(M_SPOOL_FREE, NULL, NULL,
		    (double)vfs.f_bavail * (double)vfs.f_frsize);
}

/*
 * Quota and free-space check.  statvfs is cached for a second (a syscall
 * per RCPT under a flood otherwise); within the second, every byte the
 * daemon wrote since (spool_wrote(): mails, segments, journal lines,
 * spilled recipients, the analysis worker's files) is taken off the cached
 * free space, so its own writes never take the filesystem under min_free.
 */
int
spool_check_space(struct spool *sp, uint64_t expected)
{
	struct statvfs	vfs;
	long long	now;
	uint64_t	avail, since, wrote;

	if (sp->max_bytes != 0) {
		uint64_t	used = atomic_load(&sp->used_bytes) + sp->held_bytes +
				    atomic_load(&sp->aux_bytes);

		if (used > sp->max_bytes || expected > sp->max_bytes - used)
			return -1;
	}
	if (sp->min_free == 0)
		return 0;
	now = spool_now_ns();
	if (sp->space_checked_ns == 0 ||
	    now - sp->space_checked_ns >= SPOOL_SPACE_CACHE_NS) {
		/* Before the statvfs: a write in between counts twice, never zero times. */
		sp->wrote_at_check = atomic_load(&sp->wrote);
		if (statvfs(sp->dir, &vfs) == -1) {
			sp->space_err = errno;
			sp->space_avail = 0;
		} else {
			sp->space_err = 0;
			sp->space_avail = (uint64_t)vfs.f_bavail *
			    (uint64_t)vfs.f_frsize;
		}
		sp->space_checked_ns = now;
	}
	if (sp->space_err != 0)
		return -1;
	/* Between two statvfs calls, what the daemon wrote since is gone too. */
	wrote = atomic_load(&sp->wrote);
	since = wrote - sp->wrote_at_check;
	avail = since < sp->space_avail ? sp->space_avail - since : 0;
	if (avail < sp->min_free || expected > avail - sp->min_free) {
		/* Once per statvfs: segments waiting for a checkpoint hold space. */
		if (sp->space_checked_ns == now) {
			errno = ENOSPC;
			spool_want_checkpoint(sp);
		}
		return -1;
	}
	return 0;
}

/* Count (delta > 0) or give back (delta < 0) bytes spilled into tmp/. */
void
spool_hold(struct spool *sp, int64_t delta)
{
	if (delta >= 0) {
		sp->held_bytes += (uint64_t)delta;
		spool_wrote(sp, (uint64_t)delta);
	} else if ((uint64_t)-delta <= sp->held_bytes)
		sp->held_bytes -= (uint64_t)-delta;
	else
		sp->held_bytes = 0;
}

/*
 * bytes more were written to the spool's filesystem (any thread): counted
 * until the next statvfs sees them.  What is deleted is not given back
 * before it (a second at most).
 */
void
spool_wrote(struct spool *sp, uint64_t bytes)
{
	atomic_fetch_add(&sp->wrote, bytes);
}

/* Path of receptions.jsonl, owned by the spool. */
const char *
spool_journal_path(const struct spool *sp)
{
	return sp->journal_path;
}

/* The spool directory, owned by the spool. */
const char *
spool_dir(const struct spool *sp)
{
	return sp->dir;
}

/* Copy the counters (any thread). */
void
spool_get_stats(struct spool *sp, struct spool_stats *out)
{
	pthread_mutex_lock(&sp->mu);
	*out = sp->stats;
	pthread_mutex_unlock(&sp->mu);
	out->used_bytes = atomic_load(&sp->used_bytes);
	spool_seg_get_stats(sp->seg, &out->checkpoints, &out->checkpoint_passes,
	    &out->recovered);
}

/*
 * Can this filesystem make unnamed tmp files that linkat() names later (needs
 * O_TMPFILE and /proc)?  Tried once at open; otherwise named tmp files are used.
 */
static bool
spool_probe_tmpfile(const char *tmp_dir)
{
	char	 proc[64], name[80];
	int	 fd, dfd;
	bool	 ok;

	if ((fd = open(tmp_dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, SPOOL_FILE_MODE)) == -1)
		return false;
	if ((dfd = open(tmp_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		close(fd);
		return false;
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	snprintf(name, sizeof(name), "probe-%d-%llx.tmp", (int)getpid(),
	    (unsigned long long)util_random_u64());
	ok = linkat(AT_FDCWD, proc, dfd, name, AT_SYMLINK_FOLLOW) == 0;
	if (ok)
		(void)unlinkat(dfd, name, 0);
	close(dfd);
	close(fd);
	return ok;
}

/*
 * Bytes the spool's other writers hold (the analysis worker's parsed
 * journal and attachments): counted in max_bytes with messages/ (any thread).
 */
void
spool_aux_add(struct spool *sp, int64_t delta)
{
	uint64_t old, nv;

	if (delta > 0)
		spool_wrote(sp, (uint64_t)delta);
	old = atomic_load(&sp->aux_bytes);
	do {
		if (delta >= 0)
			nv = old + (uint64_t)delta;
		else
			nv = old > (uint64_t)-delta ? old - (uint64_t)-delta : 0;
	} while (!atomic_compare_exchange_weak(&sp->aux_bytes, &old, nv));
}

/*
 * Whether expected more bytes of derived data (attachments) fit: in
 * max_bytes, and on the filesystem above twice min_free, so that what is
 * derived from the mails never eats the reserve the mails themselves keep
 * (a mail is refused below min_free).  Any thread: one statvfs.
 */
bool
spool_aux_room(struct spool *sp, uint64_t expected)
{
	struct statvfs	vfs;
	uint64_t	used, avail, floor;

	if (sp->max_bytes != 0) {
		used = atomic_load(&sp->used_bytes) + atomic_load(&sp->aux_bytes);
		if (used > sp->max_bytes || expected > sp->max_bytes - used)
			return false;
	}
	if (sp->min_free == 0)
		return true;
	if (statvfs(sp->dir, &vfs) == -1)
		return false;
	avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
	floor = sp->min_free > UINT64_MAX / 2 ? UINT64_MAX : 2 * sp->min_free;
	return avail >= floor && expected <= avail - floor;
}
