/*
 * The spool: content-addressed message files, a JSON-lines reception journal,
 * a segment log (write-ahead log of small messages) and a group-commit worker
 * thread that makes a group durable before a session may answer 250.  See
 * spool.h for the layout and the contract.
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
 * journal_write, journal_sync, journal_trunc (on a failure), acked;
 * checkpoint thread: ckpt_wait_names, ckpt_syncfs,
 * ckpt_unlink, ckpt_pass_end; replay: replay_restore, replay_unlink;
 * journal pruning at a rotation (fail= only): prune_feed_dir, prune_cursor.
 * tests/e2e/test_faults.py (CommitStepKill9) kills -9 at each of them.
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
#include <openssl/evp.h>

#include "log.h"
#include "metrics.h"
#include "spool.h"
#include "spool_seg.h"
#include "testhook.h"
#include "util.h"

#define SPOOL_BUF_SIZE		(64 * 1024)
#define SPOOL_DIR_MODE		0750
#define SPOOL_FILE_MODE		0640
#define SPOOL_SPACE_CACHE_NS	1000000000LL

#define SPOOL_SEG_SMALL		(256 * 1024)	/* bigger: per-file fsync */

TAILQ_HEAD(spool_msgq, spool_msg);

struct spool_msg {
	struct spool		*sp;
	TAILQ_ENTRY(spool_msg)	 entry;

	/* Loop thread until commit, then worker. */
	int			 fd;
	char			*tmp_path;	/* named tmp file, or /proc/self/fd/N */
	bool			 anon;		/* O_TMPFILE: no name until linked */
	unsigned char		*buf;		/* SPOOL_BUF_SIZE, lazily allocated */
	size_t			 buflen;
	uint64_t		 size;
	int			 err;		/* sticky errno, 0 = fine */
	EVP_MD_CTX		*md;
	bool			 finished;
	char			 hex[65];
	char			*record;
	size_t			 reclen;
	unsigned char		*data;		/* whole body when small, else NULL */
	bool			 in_memory;	/* no tmp file: data is the whole body */
	bool			 named;		/* a named tmp file exists (no O_TMPFILE) */
	bool			 small;		/* worker: goes through the segment */

	/* Written by the worker before the message is queued as done. */
	int			 status;
	int			 err_no;

	/* Loop thread only. */
	spool_done_cb		 cb;
	void			*arg;
	bool			 detached;
};

struct spool {
	struct event_base	*base;
	char			*dir;
	char			*tmp_dir;
	char			*msg_dir;
	char			*journal_path;
	char			*seg_dir;
	char			*maildir_tmp;	/* NULL when no maildir */
	char			*maildir_new;
	char			 hostname[256];	/* sanitized for Maildir names */
	uint64_t		 min_free;
	uint64_t		 max_bytes;

	bool			 use_tmpfile;	/* O_TMPFILE + linkat work here */
	int			 journal_fd;
	off_t			 journal_len;	/* worker only after open */
	bool			 journal_cut;	/* worker: cut back to journal_len
						   before the next append */
	uint64_t		 journal_seg;	/* rotate at this size; 0 = never */
	int			 journal_keep;	/* rotated segments kept at least */
	unsigned long long	 journal_seq;	/* last rotated segment's number */
	pthread_mutex_t		 jc_mu;		/* guards the two below */
	uint64_t		 jc_ino;	/* the current journal file and the */
	uint64_t		 jc_len;	/* length of its acknowledged lines */
	int			 msg_dir_fd;
	int			 maildir_new_fd;
	int			 efd;
	struct event		*ev;

	_Atomic uint64_t	 used_bytes;	/* sum of st_size in messages/ */
	_Atomic uint64_t	 aux_bytes;	/* spool_aux_add(): parsed journal, attachments */

	struct spool_seglog	*seg;		/* appends and seals: worker only */

	/* Loop thread only: spool_check_space() cache. */
	long long		 space_checked_ns;
	uint64_t		 space_avail;
	int			 space_err;
	uint64_t		 held_bytes;	/* spool_hold(): spilled, not in messages/ */
	uint64_t		 held_at_check;	/* held_bytes at the last statvfs */

	pthread_t		 thread;
	bool			 thread_started;
	pthread_mutex_t		 mu;
	pthread_cond_t		 cond;
	struct spool_msgq	 pending;	/* mu */
	struct spool_msgq	 done;		/* mu */
	bool			 stopping;	/* mu */
	bool			 ckpt_wanted;	/* mu: disk full, checkpoint now */
	struct spool_stats	 stats;		/* mu */
};

static char	*spool_path(const char *a, const char *b);
static void	 spool_metrics_cb(void *);
static int	 spool_repair_journal(int fd, off_t *lenp);
static void	 spool_clean_tmp(const char *dir);
static bool	 spool_probe_tmpfile(const char *tmp_dir);
static void	 spool_tmp_drop(struct spool_msg *);
static int	 spool_tmp_open(struct spool_msg *);
static int	 spool_write_tmp(struct spool *, struct spool_msg *);
static int	 spool_du(const char *dir, uint64_t *out);
static long long spool_now_ns(void);
static int	 spool_flush(struct spool_msg *);
static void	 spool_msg_free(struct spool_msg *);
static void	 spool_ready_cb(evutil_socket_t fd, short what, void *arg);
static void	*spool_worker(void *arg);
static void	 spool_commit_group(struct spool *, struct spool_msgq *);
static int	 spool_maildir_add(struct spool *, const char *src);
static int	 spool_copy_file(const char *src, const char *dst);
static int	 spool_journal_append(struct spool *, struct spool_msgq *);
static void	 spool_journal_committed_set(struct spool *);
static void	 spool_journal_rotate(struct spool *);
static void	 spool_journal_prune(struct spool *);
static int	 spool_fsync_dir(const char *path);
static int	 spool_store_big(struct spool *, struct spool_msg *, bool *dedup);
static int	 spool_store_small(struct spool *, struct spool_msg *, bool *dedup);
static bool	 spool_exists(struct spool *, const char *hex, uint64_t size);
static int	 spool_name(struct spool *, struct spool_msg *, bool *dedup);
static int	 spool_small_append(struct spool *, struct spool_msgq *);
static void	 spool_want_checkpoint(struct spool *);
static struct spool *spool_alloc(struct event_base *, const struct spool_opts *);
static int	 spool_open_dirs(struct spool *, const struct spool_opts *, const char **);
static int	 spool_open_maildir(struct spool *, const struct spool_opts *,
		    const char **);
static int	 spool_open_journal(struct spool *, const char **);
static int	 spool_recover(struct spool *, const struct spool_opts *, const char **);
static int	 spool_start(struct spool *, struct event_base *, const char **);

/* Join a directory and a name into a new string. */
static char *
spool_path(const char *a, const char *b)
{
	char	*p;

	if (asprintf(&p, "%s/%s", a, b) == -1)
		return NULL;
	return p;
}

/* Cut a torn last line off the journal (crash mid-append); 0 or -1. */
static int
spool_repair_journal(int fd, off_t *lenp)
{
	struct stat	 st;
	char		 buf[4096];
	off_t		 pos, keep = 0;
	ssize_t		 n;

	if (fstat(fd, &st) == -1)
		return -1;
	*lenp = st.st_size;
	if (st.st_size == 0)
		return 0;
	if (pread(fd, buf, 1, st.st_size - 1) != 1)
		return -1;
	if (buf[0] == '\n')
		return 0;
	/* Scan backwards for the last newline. */
	pos = st.st_size;
	while (pos > 0) {
		size_t	chunk = pos > (off_t)sizeof(buf) ? sizeof(buf) : (size_t)pos;

		pos -= (off_t)chunk;
		n = pread(fd, buf, chunk, pos);
		if (n != (ssize_t)chunk) {
			if (n >= 0)
				errno = EIO;
			return -1;
		}
		for (size_t i = chunk; i > 0; i--) {
			if (buf[i - 1] == '\n') {
				keep = pos + (off_t)i;
				goto found;
			}
		}
	}
found:
	if (ftruncate(fd, keep) == -1 || fsync(fd) == -1)
		return -1;
	*lenp = keep;
	return 0;
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
	if (spool_fsync_dir(sp->dir) == -1)
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

/* Quota and free-space check; statvfs is cached for a second. */
int
spool_check_space(struct spool *sp, uint64_t expected)
{
	struct statvfs	vfs;
	long long	now;
	uint64_t	avail;

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
		if (statvfs(sp->dir, &vfs) == -1) {
			sp->space_err = errno;
			sp->space_avail = 0;
		} else {
			sp->space_err = 0;
			sp->space_avail = (uint64_t)vfs.f_bavail *
			    (uint64_t)vfs.f_frsize;
		}
		sp->space_checked_ns = now;
		sp->held_at_check = sp->held_bytes;
	}
	if (sp->space_err != 0)
		return -1;
	/* Between two statvfs calls, what was spilled since is gone too. */
	if (sp->held_bytes > sp->held_at_check) {
		uint64_t	since = sp->held_bytes - sp->held_at_check;

		if (since >= sp->space_avail)
			return -1;
		avail = sp->space_avail - since;
	} else
		avail = sp->space_avail;
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
	if (delta >= 0)
		sp->held_bytes += (uint64_t)delta;
	else if ((uint64_t)-delta <= sp->held_bytes)
		sp->held_bytes -= (uint64_t)-delta;
	else
		sp->held_bytes = 0;
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

/* Open a fresh tmp file for one message. */
struct spool_msg *
spool_msg_new(struct spool *sp, char *err, size_t errlen)
{
	struct spool_msg	*m;
	unsigned char		 rnd[16];
	char			 name[2 * sizeof(rnd) + 8];

	if ((m = calloc(1, sizeof(*m))) == NULL) {
		snprintf(err, errlen, "spool: out of memory");
		return NULL;
	}
	m->sp = sp;
	m->fd = -1;
	util_random(rnd, sizeof(rnd));
	util_hex(rnd, sizeof(rnd), name);
	strcat(name, ".tmp");
	if ((m->tmp_path = spool_path(sp->tmp_dir, name)) == NULL ||
	    (m->md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(m->md, EVP_sha256(), NULL) != 1) {
		snprintf(err, errlen, "spool: out of memory");
		goto fail;
	}
	/*
	 * No file yet: a body under SPOOL_BUF_SIZE stays in memory and its
	 * .eml is written by the worker at commit (spool_write_tmp); only a
	 * body that outgrows the buffer gets a tmp file (spool_tmp_open).
	 */
	return m;

fail:
	free(m->tmp_path);
	m->tmp_path = NULL;
	spool_msg_free(m);
	return NULL;
}

/* Open the message's tmp file (its body outgrew the buffer); 0 or -1 (errno). */
static int
spool_tmp_open(struct spool_msg *m)
{
	struct spool	*sp = m->sp;
	char		 proc[64], *p;

	/*
	 * An unnamed file (O_TMPFILE) costs one directory operation less than a
	 * named tmp file and a rename, and a crash leaves nothing behind; it is
	 * given its name by linkat() at commit.
	 */
	if (sp->use_tmpfile &&
	    (m->fd = open(sp->tmp_dir, O_TMPFILE | O_RDWR | O_CLOEXEC,
	    SPOOL_FILE_MODE)) != -1) {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", m->fd);
		if ((p = strdup(proc)) == NULL) {
			close(m->fd);
			m->fd = -1;
			errno = ENOMEM;
			return -1;
		}
		free(m->tmp_path);
		m->tmp_path = p;
		m->anon = true;
		return 0;
	}
	/* Read-write: the worker may copy a spilled body into a segment. */
	m->fd = open(m->tmp_path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC,
	    SPOOL_FILE_MODE);
	if (m->fd == -1)
		return -1;
	m->named = true;
	return 0;
}

/* Write out the buffered bytes; 0 or -1 with the sticky error set. */
static int
spool_flush(struct spool_msg *m)
{
	if (m->err != 0) {
		errno = m->err;
		return -1;
	}
	if (m->buflen == 0)
		return 0;
	if ((m->fd == -1 && spool_tmp_open(m) == -1) ||
	    util_write_all(m->fd, m->buf, m->buflen) == -1) {
		m->err = errno;
		spool_want_checkpoint(m->sp);
		errno = m->err;
		return -1;
	}
	m->buflen = 0;
	return 0;
}

/*
 * Disk full (or a quota) under a message: have the worker seal its segment
 * and ask for a checkpoint of every segment now, their space comes back.
 * Any thread but the worker.
 */
static void
spool_want_checkpoint(struct spool *sp)
{
	if (errno != ENOSPC && errno != EDQUOT)
		return;
	pthread_mutex_lock(&sp->mu);
	sp->ckpt_wanted = true;
	pthread_cond_signal(&sp->cond);
	pthread_mutex_unlock(&sp->mu);
}

/* Buffer body bytes, hash them, and write full buffers to the tmp file. */
int
spool_msg_write(struct spool_msg *m, const void *buf, size_t len)
{
	struct spool	*sp = m->sp;

	if (m->err == 0 && m->finished)
		m->err = EINVAL;
	if (m->err != 0) {
		errno = m->err;
		return -1;
	}
	if (len == 0)
		return 0;
	if (sp->max_bytes != 0) {
		uint64_t	used = atomic_load(&sp->used_bytes) +
				    atomic_load(&sp->aux_bytes);

		if (m->size + len > sp->max_bytes ||
		    used > sp->max_bytes - (m->size + len)) {
			m->err = EDQUOT;
			errno = m->err;
			return -1;
		}
	}
	if (EVP_DigestUpdate(m->md, buf, len) != 1) {
		m->err = EIO;
		errno = m->err;
		return -1;
	}
	m->size += len;
	if (m->buf == NULL && (m->buf = malloc(SPOOL_BUF_SIZE)) == NULL) {
		m->err = ENOMEM;
		errno = m->err;
		return -1;
	}
	if (m->buflen + len <= SPOOL_BUF_SIZE) {
		memcpy(m->buf + m->buflen, buf, len);
		m->buflen += len;
		if (m->buflen == SPOOL_BUF_SIZE)
			return spool_flush(m);
		return 0;
	}
	if (spool_flush(m) == -1)
		return -1;
	if (len >= SPOOL_BUF_SIZE) {
		if ((m->fd == -1 && spool_tmp_open(m) == -1) ||
		    util_write_all(m->fd, buf, len) == -1) {
			m->err = errno;
			spool_want_checkpoint(sp);
			errno = m->err;
			return -1;
		}
		return 0;
	}
	memcpy(m->buf, buf, len);
	m->buflen = len;
	return 0;
}

/* The sticky errno of a message, 0 when fine. */
int
spool_msg_error(const struct spool_msg *m)
{
	return m->err;
}

/* Bytes accepted so far. */
uint64_t
spool_msg_size(const struct spool_msg *m)
{
	return m->size;
}

/* Flush the buffer and produce the SHA-256 hex digest. */
int
spool_msg_finish(struct spool_msg *m, char hex[65])
{
	unsigned char	digest[EVP_MAX_MD_SIZE];
	unsigned int	dlen = 0;
	bool		whole;

	if (m->finished) {
		if (m->err != 0) {
			errno = m->err;
			return -1;
		}
		memcpy(hex, m->hex, sizeof(m->hex));
		return 0;
	}
	m->finished = true;
	/* Never spilled (no tmp file): the buffer holds the whole body, kept. */
	whole = m->fd == -1 && m->buflen == m->size;
	if (!whole && spool_flush(m) == -1)
		goto out;
	if (EVP_DigestFinal_ex(m->md, digest, &dlen) != 1 || dlen != 32) {
		m->err = EIO;
		goto out;
	}
	util_hex(digest, dlen, m->hex);
	memcpy(hex, m->hex, sizeof(m->hex));
	if (whole && m->size > 0) {
		unsigned char	*p = realloc(m->buf, (size_t)m->size);

		m->data = p != NULL ? p : m->buf;
		m->buf = NULL;
	}
	m->in_memory = whole;
out:
	free(m->buf);
	m->buf = NULL;
	m->buflen = 0;
	EVP_MD_CTX_free(m->md);
	m->md = NULL;
	if (m->err != 0) {
		errno = m->err;
		return -1;
	}
	return 0;
}

/* The whole body when it is held in memory (see spool.h). */
const unsigned char *
spool_msg_data(const struct spool_msg *m, size_t *len)
{
	static const unsigned char	empty[1];

	*len = 0;
	if (!m->finished || m->err != 0 || !m->in_memory)
		return NULL;
	if (m->size == 0)
		return empty;
	*len = (size_t)m->size;
	return m->data;
}

/* The tmp file of a message (see spool.h). */
const char *
spool_msg_path(const struct spool_msg *m)
{
	if (m->fd == -1 && !m->named)
		return NULL;	/* the body is in memory only (spool_msg_data) */
	return m->tmp_path;
}

/* Release a message's memory and file descriptor (the tmp file stays). */
static void
spool_msg_free(struct spool_msg *m)
{
	if (m == NULL)
		return;
	if (m->fd != -1)
		close(m->fd);
	EVP_MD_CTX_free(m->md);
	free(m->buf);
	free(m->tmp_path);
	free(m->record);
	free(m->data);
	free(m);
}

/* Remove the tmp file and free a message that was never committed. */
void
spool_msg_abort(struct spool_msg *m)
{
	if (m == NULL)
		return;
	if (m->fd != -1) {
		close(m->fd);
		m->fd = -1;
	}
	if (m->named)
		(void)unlink(m->tmp_path);
	spool_msg_free(m);
}

/* Hand a finished message and its reception record to the commit worker. */
void
spool_msg_commit(struct spool_msg *m, const char *record, size_t len,
    spool_done_cb cb, void *arg)
{
	struct spool	*sp = m->sp;

	m->cb = cb;
	m->arg = arg;
	if (!m->finished && m->err == 0)
		m->err = EINVAL;	/* the contract asks for finish() first */
	if ((m->record = malloc(len + 1)) == NULL) {
		if (m->err == 0)
			m->err = ENOMEM;
	} else {
		memcpy(m->record, record, len);
		/* One record per line, whatever the caller handed in. */
		for (size_t i = 0; i < len; i++)
			if (m->record[i] == '\n' || m->record[i] == '\r')
				m->record[i] = ' ';
		m->record[len] = '\n';
		m->reclen = len + 1;
	}
	/* Failures go through the worker too, so cb never runs re-entrantly. */
	pthread_mutex_lock(&sp->mu);
	sp->stats.queued++;
	TAILQ_INSERT_TAIL(&sp->pending, m, entry);
	pthread_cond_signal(&sp->cond);
	pthread_mutex_unlock(&sp->mu);
}

/* Forget the callback of a pending commit (event loop thread only). */
void
spool_msg_detach(struct spool_msg *m)
{
	m->detached = true;
	m->cb = NULL;
	m->arg = NULL;
}

/* Event loop side: run the callbacks of the completed commits. */
static void
spool_ready_cb(evutil_socket_t fd, short what, void *arg)
{
	struct spool		*sp = arg;
	struct spool_msgq	 q;
	struct spool_msg	*m;
	uint64_t		 v;

	while (read(sp->efd, &v, sizeof(v)) == -1 && errno == EINTR)
		;
	TAILQ_INIT(&q);
	pthread_mutex_lock(&sp->mu);
	TAILQ_CONCAT(&q, &sp->done, entry);
	pthread_mutex_unlock(&sp->mu);
	/* Pop one at a time: a callback may detach a later message. */
	while ((m = TAILQ_FIRST(&q)) != NULL) {
		TAILQ_REMOVE(&q, m, entry);
		if (!m->detached && m->cb != NULL)
			m->cb(m->arg, m->status, m->err_no);
		spool_msg_free(m);
	}
}

/*
 * The commit worker: takes every queued message as one group.  Idle, it
 * seals the active segment when due; checkpoints run on their own thread.
 */
static void *
spool_worker(void *arg)
{
	struct spool		*sp = arg;
	struct spool_msgq	 q;
	uint64_t		 one = 1;
	long long		 due;
	struct timespec		 ts;
	bool			 force;

	for (;;) {
		TAILQ_INIT(&q);
		pthread_mutex_lock(&sp->mu);
		while (TAILQ_EMPTY(&sp->pending) && !sp->stopping &&
		    !sp->ckpt_wanted) {
			if ((due = spool_seg_seal_due(sp->seg)) == 0) {
				pthread_cond_wait(&sp->cond, &sp->mu);
				continue;
			}
			ts.tv_sec = (time_t)(due / 1000000000LL);
			ts.tv_nsec = (long)(due % 1000000000LL);
			if (pthread_cond_timedwait(&sp->cond, &sp->mu, &ts) ==
			    ETIMEDOUT && TAILQ_EMPTY(&sp->pending)) {
				pthread_mutex_unlock(&sp->mu);
				spool_seg_seal_active(sp->seg, false);
				pthread_mutex_lock(&sp->mu);
			}
		}
		force = sp->ckpt_wanted;
		sp->ckpt_wanted = false;
		if (TAILQ_EMPTY(&sp->pending) && !force) {
			pthread_mutex_unlock(&sp->mu);
			break;
		}
		TAILQ_CONCAT(&q, &sp->pending, entry);
		pthread_mutex_unlock(&sp->mu);

		if (!TAILQ_EMPTY(&q)) {
			spool_commit_group(sp, &q);
			pthread_mutex_lock(&sp->mu);
			TAILQ_CONCAT(&sp->done, &q, entry);
			pthread_mutex_unlock(&sp->mu);
			while (write(sp->efd, &one, sizeof(one)) == -1 &&
			    errno == EINTR)
				;
		}
		/* Disk full under a message: the checkpoint thread, not waited for. */
		if (force)
			spool_seg_want_checkpoint(sp->seg);
	}
	/* spool_free() seals the last segment and checkpoints it (spool_seg_free). */
	return NULL;
}

/*
 * Make one group durable: the small messages' bytes in one segment append
 * and fdatasync, then their names; the big ones fsync'ed and named, one fsync
 * of messages/; then one journal append and one fdatasync.
 */
static void
spool_commit_group(struct spool *sp, struct spool_msgq *q)
{
	struct spool_msg	*m;
	uint64_t		 ncommits = 0, nfail = 0, ndedup = 0, nmdfail = 0;
	uint64_t		 nseg = 0;
	bool			 any_small = false, any_big = false;
	bool			 any_ok = false, any_maildir = false;
	int			 e;

	/* Failed messages out; dedup known content; sort small from big. */
	TAILQ_FOREACH(m, q, entry) {
		bool	dedup = false;

		ncommits++;
		m->status = -1;
		m->err_no = m->err;
		m->small = false;
		if (m->err != 0) {
			spool_tmp_drop(m);
			continue;
		}
		/*
		 * Content-addressed: an existing copy of the right size is the same
		 * bytes, and it is durable or covered by a segment not yet deleted.
		 * A big one's name may not be durable (its fsync of messages/
		 * failed, or a kill -9 came before it): messages/ is fsync'ed
		 * below for it too, and a failure fails it.
		 */
		if (!m->in_memory && spool_exists(sp, m->hex, m->size)) {
			spool_tmp_drop(m);
			ndedup++;
			m->status = 0;
			m->err_no = 0;
			if (m->size > SPOOL_SEG_SMALL)
				any_big = true;
			continue;
		}
		if (m->size <= SPOOL_SEG_SMALL) {
			m->small = true;
			any_small = true;
			continue;
		}
		if (spool_store_big(sp, m, &dedup) == -1) {
			m->err_no = errno;
			continue;
		}
		if (dedup)
			ndedup++;
		m->status = 0;
		m->err_no = 0;
		any_big = true;
	}

	/* 1. The small messages' bytes: durable in the segment before any name. */
	if (any_small) {
		if (spool_small_append(sp, q) == -1) {
			e = errno;
			TAILQ_FOREACH(m, q, entry)
				if (m->small) {
					m->small = false;
					m->err_no = e;
					spool_tmp_drop(m);
				}
		}
	}
	TAILQ_FOREACH(m, q, entry) {
		bool	dedup = false;

		if (!m->small)
			continue;
		nseg += SPOOL_SEG_HDR + m->size;
		if (spool_store_small(sp, m, &dedup) == -1) {
			m->err_no = errno;
			continue;
		}
		if (dedup)
			ndedup++;
		m->status = 0;
		m->err_no = 0;
	}
	/* The segment may be checkpointed from now on (I3). */
	(void)TESTHOOK("names_done", "");
	spool_seg_names_done(sp->seg);

	/* 2. The big messages' names. */
	if (any_big && ((e = TESTHOOK("big_dirsync", "")) != 0 ||
	    fsync(sp->msg_dir_fd) == -1)) {
		if (e == 0)
			e = errno;
		TAILQ_FOREACH(m, q, entry)
			if (m->status == 0 && !m->small && m->size > SPOOL_SEG_SMALL) {
				m->status = -1;
				m->err_no = e;
			}
	}

	/* The Maildir is a view: it never fails a capture. */
	TAILQ_FOREACH(m, q, entry) {
		if (m->status != 0)
			continue;
		any_ok = true;
		if (sp->maildir_new != NULL) {
			char	eml[PATH_MAX];

			if (spool_path_message(eml, sizeof(eml), sp->dir, m->hex) == 0 &&
			    spool_maildir_add(sp, eml) == 0)
				any_maildir = true;
			else
				nmdfail++;
		}
	}
	if (any_maildir && fsync(sp->maildir_new_fd) == -1)
		nmdfail++;

	/* 3. The journal lines, after everything they announce. */
	if (any_ok && spool_journal_append(sp, q) == -1) {
		e = errno;
		TAILQ_FOREACH(m, q, entry)
			if (m->status == 0) {
				m->status = -1;
				m->err_no = e;
			}
	}
	TAILQ_FOREACH(m, q, entry)
		if (m->status != 0)
			nfail++;

	pthread_mutex_lock(&sp->mu);
	sp->stats.groups++;
	sp->stats.commits += ncommits;
	sp->stats.failures += nfail;
	sp->stats.dedup += ndedup;
	sp->stats.maildir_failures += nmdfail;
	sp->stats.segment_bytes += nseg;
	pthread_mutex_unlock(&sp->mu);
}

/* Drop a message's tmp file: close it, and unlink it when it has a name. */
static void
spool_tmp_drop(struct spool_msg *m)
{
	if (m->fd != -1) {
		close(m->fd);
		m->fd = -1;
	}
	if (m->named) {
		(void)unlink(m->tmp_path);
		m->named = false;
	}
}

/* Is messages/<hex>.eml a regular file of this size? */
static bool
spool_exists(struct spool *sp, const char *hex, uint64_t size)
{
	char		name[80];
	struct stat	st;

	if (spool_name_message(name, sizeof(name), hex) == -1)
		return false;
	return fstatat(sp->msg_dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISREG(st.st_mode) && (uint64_t)st.st_size == size;
}

/*
 * Name a tmp file messages/<sha>.eml (I2: the name appears with all the
 * bytes).  The name taken: the right size is the same bytes (dedup, I4),
 * a wrong one (not made by this code, see I4) is replaced atomically.
 * Closes the tmp file.  0 or -1 (errno).
 */
static int
spool_name(struct spool *sp, struct spool_msg *m, bool *dedup)
{
	char	name[80], swap[PATH_MAX];
	int	r, e;

	if (spool_name_message(name, sizeof(name), m->hex) == -1) {
		spool_tmp_drop(m);	/* never: the hex is ours */
		errno = EINVAL;
		return -1;
	}
	if (m->anon) {
		r = linkat(AT_FDCWD, m->tmp_path, sp->msg_dir_fd, name,
		    AT_SYMLINK_FOLLOW);
		if (r == -1 && errno == EEXIST) {
			if (spool_exists(sp, m->hex, m->size)) {
				spool_tmp_drop(m);
				*dedup = true;
				return 0;
			}
			/* A name in tmp/ renamed over: no moment without a name. */
			r = -1;
			if ((size_t)snprintf(swap, sizeof(swap), "%s/%s.swap",
			    sp->tmp_dir, m->hex) >= sizeof(swap))
				errno = ENAMETOOLONG;
			else if ((r = linkat(AT_FDCWD, m->tmp_path, AT_FDCWD, swap,
			    AT_SYMLINK_FOLLOW)) == 0 && (r = renameat(AT_FDCWD,
			    swap, sp->msg_dir_fd, name)) == -1) {
				e = errno;
				(void)unlink(swap);
				errno = e;
			}
		}
		e = errno;
		spool_tmp_drop(m);
		if (r == -1) {
			errno = e;
			return -1;
		}
	} else {
		if (close(m->fd) == -1) {
			m->fd = -1;
			e = errno;
			spool_tmp_drop(m);
			errno = e;
			return -1;
		}
		m->fd = -1;
		r = renameat2(AT_FDCWD, m->tmp_path, sp->msg_dir_fd, name,
		    RENAME_NOREPLACE);
		if (r == -1 && errno == EEXIST &&
		    spool_exists(sp, m->hex, m->size)) {
			spool_tmp_drop(m);
			*dedup = true;
			return 0;
		}
		/* rename(2) replaces a wrong copy atomically. */
		if (r == -1 && (errno == EEXIST || errno == EINVAL ||
		    errno == ENOSYS))
			r = renameat(AT_FDCWD, m->tmp_path, sp->msg_dir_fd, name);
		if (r == -1) {
			e = errno;
			spool_tmp_drop(m);
			errno = e;
			return -1;
		}
		m->named = false;
	}
	atomic_fetch_add(&sp->used_bytes, m->size);
	return 0;
}

/* A big message: fsync its tmp file and name it; 0 or -1 (errno). */
static int
spool_store_big(struct spool *sp, struct spool_msg *m, bool *dedup)
{
	int	e;

	if ((e = TESTHOOK("big_fsync", m->hex)) != 0 || fsync(m->fd) == -1) {
		if (e != 0)
			errno = e;
		e = errno;
		spool_tmp_drop(m);
		errno = e;
		return -1;
	}
	(void)TESTHOOK("big_link", m->hex);
	return spool_name(sp, m, dedup);
}

/*
 * A small message whose bytes are durable in a segment: its .eml, no fsync
 * (the checkpoint's syncfs makes it durable; until then the segment covers
 * it, I3).  A body held in memory is written to a tmp file of its own first
 * and named like a spilled one (I2): never a short file under the name.
 * Disk full asks for a checkpoint (not waited for); the segment of this
 * group stays until its names are all written (I3).
 */
static int
spool_store_small(struct spool *sp, struct spool_msg *m, bool *dedup)
{
	int	r = 0, e;

	if (m->in_memory)
		r = spool_write_tmp(sp, m);
	if (r == 0) {
		(void)TESTHOOK("eml_link", m->hex);
		r = spool_name(sp, m, dedup);
	}
	if (r == -1 && (errno == ENOSPC || errno == EDQUOT)) {
		e = errno;
		spool_seg_want_checkpoint(sp->seg);
		errno = e;
	}
	free(m->data);
	m->data = NULL;
	return r;
}

/* The body in memory into a tmp file of its own; 0 or -1 (errno, none left). */
static int
spool_write_tmp(struct spool *sp, struct spool_msg *m)
{
	int	e;

	if (spool_tmp_open(m) == -1)
		return -1;
	if ((e = TESTHOOK("eml_write", m->hex)) != 0 ||
	    util_write_all(m->fd, m->data, (size_t)m->size) == -1) {
		if (e == 0)
			e = errno;
		spool_tmp_drop(m);
		errno = e;
		return -1;
	}
	return 0;
}

/* fsync a directory by path; 0 or -1 (errno). */
static int
spool_fsync_dir(const char *path)
{
	int	fd, e;

	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	if (fsync(fd) == -1) {
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	close(fd);
	return 0;
}

/*
 * Append the records of the group's small messages to the segment log and
 * make them durable (disk full: see spool_seg_append()).  0 or -1 (errno),
 * no part of the group left in the segment.
 */
static int
spool_small_append(struct spool *sp, struct spool_msgq *q)
{
	struct spool_msg	*m;
	struct spool_seg_rec	*recs;
	size_t			 n = 0;
	int			 r, e;

	/* Bodies that spilled to the tmp file are read back (page cache). */
	TAILQ_FOREACH(m, q, entry) {
		ssize_t	nr = 0;
		size_t	off = 0;

		if (!m->small || m->data != NULL || m->size == 0)
			continue;
		if ((m->data = malloc((size_t)m->size)) == NULL) {
			m->small = false;
			m->err_no = ENOMEM;
			spool_tmp_drop(m);
			continue;
		}
		while (off < m->size) {
			nr = pread(m->fd, m->data + off, (size_t)m->size - off,
			    (off_t)off);
			if (nr == -1 && errno == EINTR)
				continue;
			if (nr <= 0)
				break;
			off += (size_t)nr;
		}
		if (off != m->size) {
			m->small = false;
			m->err_no = nr == -1 ? errno : EIO;
			spool_tmp_drop(m);
		}
	}
	TAILQ_FOREACH(m, q, entry)
		n += m->small;
	if (n == 0)
		return 0;
	if ((recs = calloc(n, sizeof(*recs))) == NULL)
		return -1;
	n = 0;
	TAILQ_FOREACH(m, q, entry) {
		if (!m->small)
			continue;
		recs[n].hex = m->hex;
		recs[n].data = m->data;
		recs[n++].len = (size_t)m->size;
	}
	r = spool_seg_append(sp->seg, recs, n);
	e = errno;
	free(recs);
	errno = e;
	return r;
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

/* Link (or copy, across filesystems) a stored message into maildir/new. */
static int
spool_maildir_add(struct spool *sp, const char *src)
{
	struct timespec	 ts;
	char		 rnd[17], name[400], *dst, *tmp;
	int		 r;

	clock_gettime(CLOCK_REALTIME, &ts);
	util_hex((uint64_t[]){ util_random_u64() }, sizeof(uint64_t), rnd);
	snprintf(name, sizeof(name), "%lld.M%06ldP%dR%s.%s",
	    (long long)ts.tv_sec, ts.tv_nsec / 1000, (int)getpid(), rnd,
	    sp->hostname);
	if ((dst = spool_path(sp->maildir_new, name)) == NULL)
		return -1;
	r = link(src, dst);
	if (r == -1 && errno == EXDEV) {
		/* Maildir rule: write in tmp/, then move into new/. */
		if ((tmp = spool_path(sp->maildir_tmp, name)) == NULL) {
			free(dst);
			return -1;
		}
		r = spool_copy_file(src, tmp);
		if (r == 0 && (r = rename(tmp, dst)) == -1)
			(void)unlink(tmp);
		free(tmp);
	}
	free(dst);
	return r;
}

/* Copy src to a new file dst and fsync it; 0 or -1. */
static int
spool_copy_file(const char *src, const char *dst)
{
	char	 buf[16384];
	ssize_t	 n;
	int	 in, out, e;

	if ((in = open(src, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	if ((out = open(dst, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC,
	    SPOOL_FILE_MODE)) == -1) {
		e = errno;
		close(in);
		errno = e;
		return -1;
	}
	while ((n = read(in, buf, sizeof(buf))) != 0) {
		if (n == -1) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		if (util_write_all(out, buf, (size_t)n) == -1)
			goto fail;
	}
	if (fsync(out) == -1)
		goto fail;
	close(in);
	if (close(out) == -1) {
		(void)unlink(dst);
		return -1;
	}
	return 0;
fail:
	e = errno;
	close(in);
	close(out);
	(void)unlink(dst);
	errno = e;
	return -1;
}

/*
 * Append the records of the group's successful commits in one write and
 * fsync the journal.  On any failure the journal is cut back to its length
 * before, so no torn or unacknowledged line stays (a cut that fails is
 * tried again before the next append, which fails with it).  0 or -1 (errno).
 */
static int
spool_journal_append(struct spool *sp, struct spool_msgq *q)
{
	struct spool_msg	*m;
	size_t			 total = 0, off = 0;
	char			*buf;
	int			 e;

	TAILQ_FOREACH(m, q, entry)
		if (m->status == 0)
			total += m->reclen;
	if (total == 0)
		return 0;
	if ((buf = malloc(total)) == NULL)
		return -1;
	TAILQ_FOREACH(m, q, entry)
		if (m->status == 0) {
			memcpy(buf + off, m->record, m->reclen);
			off += m->reclen;
		}
	/*
	 * A failed append whose cut failed too left bytes behind journal_len:
	 * nothing goes after them (a later cut would take acknowledged lines,
	 * and a torn line would swallow the next), the cut is tried again.
	 */
	if (sp->journal_cut) {
		if ((e = TESTHOOK("journal_trunc", "")) != 0 ||
		    ftruncate(sp->journal_fd, sp->journal_len) == -1 ||
		    fsync(sp->journal_fd) == -1) {
			if (e == 0)
				e = errno;
			free(buf);
			errno = e;
			return -1;
		}
		sp->journal_cut = false;
	}
	if ((e = TESTHOOK("journal_write", "")) != 0 ||
	    util_write_all(sp->journal_fd, buf, total) == -1 ||
	    (e = TESTHOOK("journal_sync", "")) != 0 ||
	    fdatasync(sp->journal_fd) == -1) {
		if (e != 0)
			errno = e;
		e = errno;
		free(buf);
		if (TESTHOOK("journal_trunc", "") == 0 &&
		    ftruncate(sp->journal_fd, sp->journal_len) == 0)
			(void)fsync(sp->journal_fd);
		else
			sp->journal_cut = true;
		errno = e;
		return -1;
	}
	free(buf);
	sp->journal_len += (off_t)total;
	spool_journal_committed_set(sp);
	(void)TESTHOOK("acked", "");
	if (sp->journal_seg > 0 && (uint64_t)sp->journal_len >= sp->journal_seg)
		spool_journal_rotate(sp);
	return 0;
}

/*
 * Publish the current journal file's inode and the length of its
 * acknowledged lines (worker, and spool_open).  A failed append is cut back
 * to journal_len: a reader that read beyond it would read past the cut into
 * the next append's bytes (a torn line, skipped: a lost 250'd mail).
 */
static void
spool_journal_committed_set(struct spool *sp)
{
	struct stat st;
	uint64_t ino = 0;

	if (fstat(sp->journal_fd, &st) == 0)
		ino = (uint64_t)st.st_ino;
	pthread_mutex_lock(&sp->jc_mu);
	sp->jc_ino = ino;
	sp->jc_len = (uint64_t)sp->journal_len;
	pthread_mutex_unlock(&sp->jc_mu);
}

/*
 * The current journal file's inode and how many of its bytes are
 * acknowledged lines: readers of the live journal read no further (any
 * thread).  A rotated segment is acknowledged whole.
 */
void
spool_journal_committed(struct spool *sp, uint64_t *ino, uint64_t *len)
{
	pthread_mutex_lock(&sp->jc_mu);
	*ino = sp->jc_ino;
	*len = sp->jc_len;
	pthread_mutex_unlock(&sp->jc_mu);
}

/*
 * The journal reached its segment size: rename it to receptions.jsonl.<n>
 * (the readers follow it by inode to its end, then take the next segment)
 * and start a new one.  Runs in the commit worker after an append, so no
 * line is split.  On any failure the current file simply keeps growing.
 */
static void
spool_journal_rotate(struct spool *sp)
{
	char name[PATH_MAX];
	int fd;

	if (spool_path_segment(name, sizeof(name), sp->dir, sp->journal_seq + 1) == -1)
		return;
	if (rename(sp->journal_path, name) == -1) {
		log_warn("spool: journal rotation: rename %s: %s", sp->journal_path,
		    strerror(errno));
		return;
	}
	if ((fd = open(sp->journal_path, O_RDWR | O_APPEND | O_CREAT | O_EXCL |
	    O_CLOEXEC, SPOOL_FILE_MODE)) == -1) {
		log_warn("spool: journal rotation: %s: %s; keeping one file",
		    sp->journal_path, strerror(errno));
		(void)rename(name, sp->journal_path);
		return;
	}
	(void)spool_fsync_dir(sp->dir);
	sp->journal_seq++;
	close(sp->journal_fd);
	sp->journal_fd = fd;
	sp->journal_len = 0;
	spool_journal_committed_set(sp);
	log_info("spool: journal rotated to %s", name);
	spool_journal_prune(sp);
}

/*
 * Delete rotated segments every reader is done with: beyond the newest
 * journal_keep, and older than the file each feed cursor (<dir>/feed/
 * *.cursor, "<offset> ino=<n> ...") points into.  When in doubt, keep: a
 * cursor that names no inode (an old format), that cannot be read (EMFILE,
 * EIO) or a feed/ directory that cannot be read keeps everything.
 */
static void
spool_journal_prune(struct spool *sp)
{
	char path[PATH_MAX + 256], feed[PATH_MAX], buf[200], *p;
	unsigned long long n, oldest_read = ULLONG_MAX, ino;
	unsigned long long *segs = NULL, *inos = NULL, *tmp;
	size_t nseg = 0, cap = 0, i, j;
	struct dirent *de;
	struct stat st;
	ssize_t r;
	DIR *d;
	int fd, e;

	if ((d = opendir(sp->dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (!spool_segment_name(de->d_name, &n))
			continue;
		snprintf(path, sizeof(path), "%s/%s", sp->dir, de->d_name);
		if (stat(path, &st) == -1) {
			if (errno == ENOENT)
				continue;
			goto out;	/* its inode unknown: a cursor may be in it */
		}
		if (nseg == cap) {
			cap = cap ? cap * 2 : 16;
			if ((tmp = reallocarray(segs, cap, sizeof(*segs))) == NULL)
				goto out;
			segs = tmp;
			if ((tmp = reallocarray(inos, cap, sizeof(*inos))) == NULL)
				goto out;
			inos = tmp;
		}
		segs[nseg] = n;
		inos[nseg++] = (unsigned long long)st.st_ino;
	}
	closedir(d);
	d = NULL;
	if (nseg <= (size_t)sp->journal_keep)
		goto out;
	/* The oldest segment a cursor still points into (ULLONG_MAX: none). */
	(void)spool_path_dir(feed, sizeof(feed), sp->dir, SPOOL_DIR_FEED);
	if ((e = TESTHOOK("prune_feed_dir", "")) != 0) {
		errno = e;
		d = NULL;
	} else
		d = opendir(feed);
	if (d == NULL && errno != ENOENT) {
		/* When in doubt, keep: any cursor in there may need every segment. */
		log_warn("spool: cannot read the feed cursors in %s: %s; no journal "
		    "segment deleted", feed, strerror(errno));
		goto out;
	}
	if (d != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (!spool_cursor_name(de->d_name))
				continue;
			snprintf(path, sizeof(path), "%s/%s", feed, de->d_name);
			if ((e = TESTHOOK("prune_cursor", de->d_name)) != 0) {
				errno = e;
				fd = -1;
			} else
				fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd == -1 && errno == ENOENT)
				continue;	/* removed since: it protects nothing */
			if (fd == -1 || (r = read(fd, buf, sizeof(buf) - 1)) <= 0) {
				/* EMFILE, EIO...: the cursor may point anywhere. */
				log_warn("spool: cannot read the feed cursor %s: %s; no "
				    "journal segment deleted", path, fd == -1 || r < 0 ?
				    strerror(errno) : "empty");
				if (fd != -1)
					close(fd);
				goto out;
			}
			close(fd);
			buf[r] = '\0';
			if ((p = strstr(buf, " ino=")) == NULL ||
			    sscanf(p, " ino=%llu", &ino) != 1) {
				oldest_read = 0;	/* unknown file: keep all */
				continue;
			}
			for (i = 0; i < nseg; i++)
				if (inos[i] == ino && segs[i] < oldest_read)
					oldest_read = segs[i];
		}
		closedir(d);
		d = NULL;
	}
	/* Newest first, so the first journal_keep are kept. */
	for (i = 0; i < nseg; i++)
		for (j = i + 1; j < nseg; j++)
			if (segs[j] > segs[i]) {
				n = segs[i];
				segs[i] = segs[j];
				segs[j] = n;
			}
	for (i = (size_t)sp->journal_keep; i < nseg; i++) {
		if (segs[i] >= oldest_read)
			continue;
		if (spool_path_segment(path, sizeof(path), sp->dir, segs[i]) == 0 &&
		    unlink(path) == 0)
			log_info("spool: journal segment %s deleted (published, beyond "
			    "journal_keep=%d)", path, sp->journal_keep);
	}
out:
	if (d != NULL)
		closedir(d);
	free(segs);
	free(inos);
}

/*
 * Bytes the spool's other writers hold (the analysis worker's parsed
 * journal and attachments): counted in max_bytes with messages/ (any thread).
 */
void
spool_aux_add(struct spool *sp, int64_t delta)
{
	uint64_t old, nv;

	old = atomic_load(&sp->aux_bytes);
	do {
		if (delta >= 0)
			nv = old + (uint64_t)delta;
		else
			nv = old > (uint64_t)-delta ? old - (uint64_t)-delta : 0;
	} while (!atomic_compare_exchange_weak(&sp->aux_bytes, &old, nv));
}

/* Whether expected more bytes fit in max_bytes (any thread; no statvfs). */
bool
spool_aux_room(struct spool *sp, uint64_t expected)
{
	uint64_t used;

	if (sp->max_bytes == 0)
		return true;
	used = atomic_load(&sp->used_bytes) + atomic_load(&sp->aux_bytes);
	return used <= sp->max_bytes && expected <= sp->max_bytes - used;
}
