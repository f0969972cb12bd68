/*
 * The spool's segment log: record format, append and seal (commit worker),
 * checkpoints (their own thread), replay at open.  See spool_seg.h.
 *
 * A record is "FOSRSEG1 <sha256 hex> <length, 16 hex digits>\n" followed by
 * the bytes; the sha256 checks both.  The commit worker appends a group's
 * records in one writev and one fdatasync; on a write error the segment is
 * cut back to its length before the group and sealed, so no record of a
 * failed group can look valid later.
 *
 * The active segment belongs to the worker.  It is sealed (closed) after
 * SPOOL_SEG_ROTATE_BYTES or SPOOL_SEG_ROTATE_NS and handed to the checkpoint
 * thread through the mutex-protected sealed list.  A segment may be deleted
 * only when every .eml it covers was written before the syncfs that
 * precedes the delete (spool.c, I3): the segment of the group being named
 * is marked (naming) from its append until spool_seg_names_done(), and the
 * checkpoint thread takes no segment from a marked one on, even when asked
 * (a disk full seals the active segment in the middle of a group).  So
 * when a sealed segment is SPOOL_SEG_AGE_NS old (the kernel writes dirty
 * pages back after 30 s, so little is left to write) one syncfs(2) makes
 * them all durable (data, names: one journal commit and one cache flush,
 * where an fsync per file costs a flush each) and the segment is unlinked
 * (not fsync'ed: a segment back after a crash is replayed, harmlessly).
 * syncfs flushes the whole filesystem and may take long on a busy disk:
 * that is why it runs on its own thread, and commits (hence 250 replies)
 * never wait for it, except when the disk is full: then the worker asks
 * for a pass over every sealed segment and waits SPOOL_SEG_FULL_WAIT_NS at
 * most before its one retry.  Where the kernel has no syncfs, each covered
 * .eml is fsync'ed, then messages/.  A segment whose checkpoint fails
 * stays on disk for the replay.
 *
 * At open, every complete record of every segment left (crash, a stop
 * whose last pass ran out of time, or a failed checkpoint) makes its .eml
 * whole and durable (an intact one's bytes are written again, in place:
 * after a writeback error its clean pages may never have reached the disk;
 * a wrong or missing one is written under tmp/ and renamed over: a reader,
 * or a kill -9 during the replay, never finds a torn file under the name);
 * a torn last record was never acknowledged.
 *
 * Threads: active, naming, seq and the segment being written are the
 * worker's; the sealed list, its byte count, a sealed segment's naming
 * flag, the request generations and stopping are under mu; the failed
 * list and no_syncfs are the checkpoint thread's once it runs; the
 * counters are atomic.
 */
#include <sys/queue.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "spool.h"
#include "spool_seg.h"
#include "testhook.h"
#include "util.h"

#define SPOOL_SEG_MAGIC		"FOSRSEG1 "
#define SPOOL_SEG_MODE		0640
#define SPOOL_SEG_ROTATE_BYTES	(8 * 1024 * 1024)
#define SPOOL_SEG_ROTATE_NS	(5 * 1000000000LL)
#define SPOOL_SEG_AGE_NS	(35 * 1000000000LL)
#define SPOOL_SEG_BACKLOG	(64 * 1024 * 1024) /* sealed bytes: checkpoint now */
#define SPOOL_SEG_FULL_WAIT_NS	(5 * 1000000000LL) /* disk full: wait for a pass */
#define SPOOL_SEG_STOP_NS	(2 * 1000000000LL) /* last pass at stop */
#define SPOOL_SEG_REC_MAX	(1024 * 1024 * 1024) /* sanity bound at replay */

/* A segment file and the messages its records cover. */
struct spool_seg {
	TAILQ_ENTRY(spool_seg)	 entry;
	uint64_t		 seq;
	int			 fd;		/* -1 once sealed */
	off_t			 len;
	long long		 created_ns;
	long long		 sealed_ns;
	char			(*hex)[64];	/* covered messages/<hex>.eml */
	size_t			 n, cap;
	size_t			 synced;	/* fallback progress: files fsync'ed */
	bool			 naming;	/* its last group's .eml are being
						   written: not checkpointed (mu
						   once sealed) */
};
TAILQ_HEAD(spool_segq, spool_seg);

struct spool_seglog {
	char			*seg_dir;
	char			*tmp_dir;
	int			 seg_dir_fd;
	int			 msg_dir_fd;	/* borrowed */
	long long		 age_ns;
	long long		 rotate_ns;
	long long		 hold_ns;
	bool			 no_checkpoint;
	bool			 no_syncfs;	/* checkpoint thread (replay before) */

	/* Worker only. */
	struct spool_seg	*active;	/* open for appends, or NULL */
	struct spool_seg	*naming;	/* the group being named went there */
	uint64_t		 seq;		/* last sequence number used */

	pthread_t		 thread;
	bool			 started;
	pthread_mutex_t		 mu;
	pthread_cond_t		 cond;		/* the checkpoint thread waits */
	pthread_cond_t		 done_cond;	/* requesters wait */
	struct spool_segq	 sealed;	/* mu: oldest first */
	uint64_t		 sealed_bytes;	/* mu */
	uint64_t		 req_gen;	/* mu: passes asked for */
	uint64_t		 done_gen;	/* mu: requests served */
	bool			 stopping;	/* mu */
	atomic_bool		 abort_pass;	/* stop: leave a running pass */

	struct spool_segq	 failed;	/* checkpoint thread: kept for replay */

	_Atomic uint64_t	 checkpoints;
	_Atomic uint64_t	 passes;
	_Atomic uint64_t	 recovered;
};

static long long spool_seg_now_ns(void);
static void	 spool_seg_deadline(struct timespec *, long long ns);
static int	 spool_seg_writev_all(int fd, struct iovec *iov, int cnt);
static int	 spool_seg_write(struct spool_seglog *, const struct spool_seg_rec *,
		    size_t n);
static int	 spool_seg_cover(struct spool_seg *, const char *hex);
static struct spool_seg *spool_seg_create(struct spool_seglog *);
static void	 spool_seg_seal(struct spool_seglog *, struct spool_seg *, long long now);
static void	 spool_seg_destroy(struct spool_seg *);
static void	 spool_seg_checkpoint_wait(struct spool_seglog *);
static void	*spool_seg_main(void *arg);
static void	 spool_seg_take(struct spool_seglog *, struct spool_segq *, bool all,
		    long long now);
static void	 spool_seg_requeue(struct spool_seglog *, struct spool_segq *);
static void	 spool_seg_checkpoint(struct spool_seglog *, struct spool_segq *,
		    long long deadline);
static bool	 spool_seg_interrupted(struct spool_seglog *, long long deadline);
static void	 spool_seg_hold(struct spool_seglog *);
static void	 spool_seg_fail(struct spool_seglog *, struct spool_segq *,
		    struct spool_seg *);
static int	 spool_seg_recover(struct spool_seglog *);
static int	 spool_seg_replay(struct spool_seglog *, int fd);
static int	 spool_seg_restore(struct spool_seglog *, const char *hex,
		    const unsigned char *data, size_t len);
static int	 spool_seg_parse(const char *hdr, char hex[65], uint64_t *len);

/* Monotonic clock in nanoseconds. */
static long long
spool_seg_now_ns(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A monotonic time in ns as a timespec for pthread_cond_timedwait. */
static void
spool_seg_deadline(struct timespec *ts, long long ns)
{
	ts->tv_sec = (time_t)(ns / 1000000000LL);
	ts->tv_nsec = (long)(ns % 1000000000LL);
}

/* writev(2) all of iov, retrying on EINTR and short writes; 0 or -1 (errno). */
static int
spool_seg_writev_all(int fd, struct iovec *iov, int cnt)
{
	ssize_t	n;

	while (cnt > 0) {
		n = writev(fd, iov, cnt > IOV_MAX ? IOV_MAX : cnt);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		while (cnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* Open the log and replay what is left (see spool_seg.h). */
struct spool_seglog *
spool_seg_open(const struct spool_seg_opts *opts)
{
	struct spool_seglog	*log;
	pthread_condattr_t	 ca;
	int			 e;

	if ((log = calloc(1, sizeof(*log))) == NULL)
		return NULL;
	log->seg_dir_fd = -1;
	log->msg_dir_fd = opts->msg_dir_fd;
	log->age_ns = opts->age_ms != 0 ? (long long)opts->age_ms * 1000000LL :
	    SPOOL_SEG_AGE_NS;
	log->rotate_ns = log->age_ns < SPOOL_SEG_ROTATE_NS ? log->age_ns :
	    SPOOL_SEG_ROTATE_NS;
	log->hold_ns = (long long)opts->hold_ms * 1000000LL;
	log->no_checkpoint = opts->no_checkpoint;
	log->no_syncfs = opts->no_syncfs;
	TAILQ_INIT(&log->sealed);
	TAILQ_INIT(&log->failed);
	atomic_init(&log->abort_pass, false);
	atomic_init(&log->checkpoints, 0);
	atomic_init(&log->passes, 0);
	atomic_init(&log->recovered, 0);
	pthread_mutex_init(&log->mu, NULL);
	/* Timed waits use the monotonic clock. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&log->cond, &ca);
	pthread_cond_init(&log->done_cond, &ca);
	pthread_condattr_destroy(&ca);
	if ((log->seg_dir = strdup(opts->seg_dir)) == NULL ||
	    (log->tmp_dir = strdup(opts->tmp_dir)) == NULL) {
		errno = ENOMEM;
		goto fail;
	}
	if ((log->seg_dir_fd = open(log->seg_dir, O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) == -1)
		goto fail;
	if (spool_seg_recover(log) == -1)
		goto fail;
	return log;

fail:
	e = errno;
	spool_seg_free(log);
	errno = e;
	return NULL;
}

/* Start the checkpoint thread; none when checkpoints are off (tests). */
int
spool_seg_start(struct spool_seglog *log)
{
	int	r;

	if (log->no_checkpoint || log->started)
		return 0;
	if ((r = pthread_create(&log->thread, NULL, spool_seg_main, log)) != 0) {
		errno = r;
		return -1;
	}
	log->started = true;
	return 0;
}

/*
 * Append a group's records; disk full: a checkpoint of every sealed segment
 * (their space comes back), waited for, then one more try.  Worker only.
 */
int
spool_seg_append(struct spool_seglog *log, const struct spool_seg_rec *recs,
    size_t n)
{
	int	e;

	if (n == 0)
		return 0;
	if (spool_seg_write(log, recs, n) == 0)
		return 0;
	e = errno;
	if ((e != ENOSPC && e != EDQUOT) || !log->started) {
		errno = e;
		return -1;
	}
	spool_seg_checkpoint_wait(log);
	return spool_seg_write(log, recs, n);
}

/* One attempt at the append; 0 or -1 (errno), cut back and sealed on failure. */
static int
spool_seg_write(struct spool_seglog *log, const struct spool_seg_rec *recs,
    size_t n)
{
	struct spool_seg	*seg;
	struct iovec		*iov;
	char			*hdr;
	size_t			 n_before;
	off_t			 total = 0;
	int			 cnt = 0, e;
	long long		 now = spool_seg_now_ns();

	if (n > (size_t)INT_MAX / 2) {
		errno = E2BIG;
		return -1;
	}
	if ((seg = log->active) != NULL && (seg->len >= SPOOL_SEG_ROTATE_BYTES ||
	    now - seg->created_ns >= log->rotate_ns))
		spool_seg_seal(log, seg, now);
	if (log->active == NULL && spool_seg_create(log) == NULL)
		return -1;
	seg = log->active;
	if ((iov = calloc(n * 2, sizeof(*iov))) == NULL)
		return -1;
	if ((hdr = malloc(n * (SPOOL_SEG_HDR + 1))) == NULL) {
		free(iov);
		return -1;
	}
	n_before = seg->n;
	for (size_t i = 0; i < n; i++) {
		char	*h = hdr + i * (SPOOL_SEG_HDR + 1);

		snprintf(h, SPOOL_SEG_HDR + 1, "%s%.64s %016" PRIx64 "\n",
		    SPOOL_SEG_MAGIC, recs[i].hex, (uint64_t)recs[i].len);
		iov[cnt].iov_base = h;
		iov[cnt++].iov_len = SPOOL_SEG_HDR;
		if (recs[i].len > 0) {
			iov[cnt].iov_base = (void *)(uintptr_t)recs[i].data;
			iov[cnt++].iov_len = recs[i].len;
		}
		total += SPOOL_SEG_HDR + (off_t)recs[i].len;
		if (spool_seg_cover(seg, recs[i].hex) == -1) {
			errno = ENOMEM;
			goto fail;
		}
	}
	if ((e = TESTHOOK("seg_write", "")) != 0 ||
	    spool_seg_writev_all(seg->fd, iov, cnt) == -1 ||
	    (e = TESTHOOK("seg_sync", "")) != 0 ||
	    fdatasync(seg->fd) == -1) {
		if (e != 0)
			errno = e;
		goto fail;
	}
	free(iov);
	free(hdr);
	seg->len += total;
	/* Until spool_seg_names_done(), no checkpoint of this segment (I3). */
	seg->naming = true;
	log->naming = seg;
	return 0;

fail:
	e = errno;
	free(iov);
	free(hdr);
	seg->n = n_before;
	/*
	 * No record of a failed group may look valid later, and nothing may be
	 * appended behind a tail that could not be cut: the segment is sealed,
	 * the next group starts a new one.
	 */
	if (ftruncate(seg->fd, seg->len) == 0)
		(void)fdatasync(seg->fd);
	spool_seg_seal(log, seg, now);
	errno = e;
	return -1;
}

/* Remember that seg covers messages/<hex>.eml; 0 or -1. */
static int
spool_seg_cover(struct spool_seg *seg, const char *hex)
{
	if (seg->n == seg->cap) {
		size_t	 cap = seg->cap == 0 ? 256 : seg->cap * 2;
		char	(*p)[64] = realloc(seg->hex, cap * sizeof(*p));

		if (p == NULL)
			return -1;
		seg->hex = p;
		seg->cap = cap;
	}
	memcpy(seg->hex[seg->n++], hex, 64);
	return 0;
}

/* Start a new segment file (its name made durable); NULL (errno) on failure. */
static struct spool_seg *
spool_seg_create(struct spool_seglog *log)
{
	struct spool_seg	*seg;
	char			 name[40];
	int			 e;

	if ((seg = calloc(1, sizeof(*seg))) == NULL)
		return NULL;
	seg->seq = ++log->seq;
	snprintf(name, sizeof(name), "%016" PRIx64 ".seg", seg->seq);
	seg->fd = openat(log->seg_dir_fd, name, O_WRONLY | O_CREAT | O_EXCL |
	    O_APPEND | O_CLOEXEC, SPOOL_SEG_MODE);
	if (seg->fd == -1 || fsync(log->seg_dir_fd) == -1) {
		e = errno;
		if (seg->fd != -1) {
			close(seg->fd);
			(void)unlinkat(log->seg_dir_fd, name, 0);
		}
		free(seg);
		errno = e;
		return NULL;
	}
	seg->created_ns = spool_seg_now_ns();
	log->active = seg;
	return seg;
}

/*
 * Close a segment for appends and hand it to the checkpoint thread (or just
 * forget it when checkpoints are off: the file stays).  Worker only.
 */
static void
spool_seg_seal(struct spool_seglog *log, struct spool_seg *seg, long long now)
{
	if (log->active == seg)
		log->active = NULL;
	if (seg->fd != -1) {
		close(seg->fd);
		seg->fd = -1;
	}
	seg->sealed_ns = now;
	if (!log->started) {
		if (log->naming == seg)
			log->naming = NULL;
		spool_seg_destroy(seg);
		return;
	}
	pthread_mutex_lock(&log->mu);
	TAILQ_INSERT_TAIL(&log->sealed, seg, entry);
	log->sealed_bytes += (uint64_t)seg->len;
	pthread_cond_signal(&log->cond);
	pthread_mutex_unlock(&log->mu);
}

/* Free a segment's memory (the file stays). */
static void
spool_seg_destroy(struct spool_seg *seg)
{
	if (seg == NULL)
		return;
	if (seg->fd != -1)
		close(seg->fd);
	free(seg->hex);
	free(seg);
}

/* When the active segment is due for its seal; 0 = nothing to wait for. */
long long
spool_seg_seal_due(struct spool_seglog *log)
{
	if (log->active == NULL || !log->started)
		return 0;
	return log->active->created_ns + log->rotate_ns;
}

/* Seal the active segment when it is due, or now when force.  Worker only. */
void
spool_seg_seal_active(struct spool_seglog *log, bool force)
{
	struct spool_seg	*seg = log->active;
	long long		 now = spool_seg_now_ns();

	if (seg == NULL || !log->started)
		return;
	if (force || seg->len >= SPOOL_SEG_ROTATE_BYTES ||
	    now - seg->created_ns >= log->rotate_ns)
		spool_seg_seal(log, seg, now);
}

/* Disk full elsewhere: seal and ask for a pass over everything now.  Worker only. */
void
spool_seg_want_checkpoint(struct spool_seglog *log)
{
	if (!log->started)
		return;
	spool_seg_seal_active(log, true);
	pthread_mutex_lock(&log->mu);
	log->req_gen++;
	pthread_cond_signal(&log->cond);
	pthread_mutex_unlock(&log->mu);
}

/*
 * The group appended last has all its .eml written (or failed): its segment
 * may be checkpointed now.  Worker only.
 */
void
spool_seg_names_done(struct spool_seglog *log)
{
	struct spool_seg	*seg = log->naming;

	if (seg == NULL)
		return;
	log->naming = NULL;
	if (seg == log->active) {
		seg->naming = false;	/* not seen by the checkpoint thread yet */
		return;
	}
	pthread_mutex_lock(&log->mu);
	seg->naming = false;
	pthread_cond_signal(&log->cond);
	pthread_mutex_unlock(&log->mu);
}

/*
 * Disk full on the segment: ask for a pass over every sealed segment and
 * wait until it has run, SPOOL_SEG_FULL_WAIT_NS at most.  Worker only.
 */
static void
spool_seg_checkpoint_wait(struct spool_seglog *log)
{
	struct timespec	ts;
	uint64_t	gen;

	spool_seg_seal_active(log, true);
	spool_seg_deadline(&ts, spool_seg_now_ns() + SPOOL_SEG_FULL_WAIT_NS);
	pthread_mutex_lock(&log->mu);
	gen = ++log->req_gen;
	pthread_cond_signal(&log->cond);
	while (log->done_gen < gen && !log->stopping)
		if (pthread_cond_timedwait(&log->done_cond, &log->mu, &ts) ==
		    ETIMEDOUT)
			break;
	pthread_mutex_unlock(&log->mu);
}

/*
 * The checkpoint thread: waits for the oldest sealed segment's age (or a
 * request, or a backlog), checkpoints the due ones without holding mu, and
 * at stop makes one last bounded pass over everything.
 */
static void *
spool_seg_main(void *arg)
{
	struct spool_seglog	*log = arg;
	struct spool_segq	 q;
	struct spool_seg	*seg;
	struct timespec		 ts;
	long long		 now, due;
	uint64_t		 gen;
	bool			 force, behind;

	TAILQ_INIT(&q);
	pthread_mutex_lock(&log->mu);
	while (!log->stopping) {
		/*
		 * The oldest sealed segment still has .eml being written (sealed
		 * mid-group on disk full): nothing may be checkpointed before
		 * spool_seg_names_done() (I3); a request stays pending till then.
		 */
		if ((seg = TAILQ_FIRST(&log->sealed)) != NULL && seg->naming) {
			(void)TESTHOOK("ckpt_wait_names", "");
			pthread_cond_wait(&log->cond, &log->mu);
			continue;
		}
		now = spool_seg_now_ns();
		force = log->req_gen != log->done_gen;
		behind = log->sealed_bytes > SPOOL_SEG_BACKLOG;
		due = 0;
		if ((seg = TAILQ_FIRST(&log->sealed)) != NULL)
			due = behind ? now : seg->sealed_ns + log->age_ns;
		if (!force && (due == 0 || now < due)) {
			if (due == 0)
				pthread_cond_wait(&log->cond, &log->mu);
			else {
				spool_seg_deadline(&ts, due);
				(void)pthread_cond_timedwait(&log->cond, &log->mu, &ts);
			}
			continue;
		}
		gen = log->req_gen;
		spool_seg_take(log, &q, force || behind, now);
		pthread_mutex_unlock(&log->mu);

		spool_seg_checkpoint(log, &q, 0);

		pthread_mutex_lock(&log->mu);
		spool_seg_requeue(log, &q);
		log->done_gen = gen;
		pthread_cond_broadcast(&log->done_cond);
		(void)TESTHOOK("ckpt_pass_end", "");
	}
	/*
	 * Clean stop: every .eml made durable and the segments deleted, but for
	 * SPOOL_SEG_STOP_NS at most where each file is fsync'ed (thousands of
	 * dirty files take long); the next open replays the rest.
	 */
	spool_seg_take(log, &q, true, 0);
	pthread_mutex_unlock(&log->mu);
	spool_seg_checkpoint(log, &q, spool_seg_now_ns() + SPOOL_SEG_STOP_NS);
	while ((seg = TAILQ_FIRST(&q)) != NULL) {
		TAILQ_REMOVE(&q, seg, entry);
		spool_seg_destroy(seg);
	}
	pthread_mutex_lock(&log->mu);
	log->done_gen = log->req_gen;
	pthread_cond_broadcast(&log->done_cond);
	pthread_mutex_unlock(&log->mu);
	return NULL;
}

/*
 * Move the due sealed segments (a prefix: they are in seal order), or all of
 * them, to q.  Called with mu held.
 */
static void
spool_seg_take(struct spool_seglog *log, struct spool_segq *q, bool all,
    long long now)
{
	struct spool_seg	*seg;

	while ((seg = TAILQ_FIRST(&log->sealed)) != NULL && !seg->naming &&
	    (all || now - seg->sealed_ns >= log->age_ns)) {
		TAILQ_REMOVE(&log->sealed, seg, entry);
		log->sealed_bytes -= (uint64_t)seg->len;
		TAILQ_INSERT_TAIL(q, seg, entry);
	}
}

/* Put the segments of an interrupted pass back at the head.  Called with mu held. */
static void
spool_seg_requeue(struct spool_seglog *log, struct spool_segq *q)
{
	struct spool_seg	*seg;

	TAILQ_FOREACH(seg, q, entry)
		log->sealed_bytes += (uint64_t)seg->len;
	TAILQ_CONCAT(q, &log->sealed, entry);
	TAILQ_CONCAT(&log->sealed, q, entry);
}

/*
 * Make every .eml the segments in q cover durable (one syncfs, or an fsync
 * each) and delete the segments.  What fails goes to the failed list (kept
 * for the replay); what an interruption (stop, or the deadline: monotonic
 * ns, 0 = none) leaves stays in q.  Checkpoint thread only.
 */
static void
spool_seg_checkpoint(struct spool_seglog *log, struct spool_segq *q,
    long long deadline)
{
	struct spool_seg	*seg;
	bool			 dir_synced = false;
	char			 name[80];
	int			 fd;

	if (TAILQ_EMPTY(q))
		return;
	atomic_fetch_add(&log->passes, 1);
	if (!log->no_syncfs) {
		/*
		 * Every .eml these segments cover was linked before the seal:
		 * one syncfs(2) writes their data and names back.
		 */
		(void)TESTHOOK("ckpt_syncfs", "");
		if (syncfs(log->msg_dir_fd) == 0) {
			dir_synced = true;
			TAILQ_FOREACH(seg, q, entry)
				seg->synced = seg->n;
		} else if (errno == ENOSYS)
			log->no_syncfs = true;	/* fsync each file below */
		else {
			/* A writeback error: the segments stay for the replay. */
			while ((seg = TAILQ_FIRST(q)) != NULL)
				spool_seg_fail(log, q, seg);
			return;
		}
	}
	spool_seg_hold(log);
	while ((seg = TAILQ_FIRST(q)) != NULL) {
		/* Without syncfs: an fsync per covered file. */
		for (; seg->synced < seg->n; seg->synced++) {
			if ((seg->synced & 63) == 0 &&
			    spool_seg_interrupted(log, deadline))
				return;
			char hex[65];

			memcpy(hex, seg->hex[seg->synced], 64);
			hex[64] = '\0';
			if (spool_name_message(name, sizeof(name), hex) == -1)
				continue;	/* never: only parsed names are kept */
			fd = openat(log->msg_dir_fd, name, O_RDONLY | O_NOFOLLOW |
			    O_CLOEXEC);
			if (fd == -1 && errno == ENOENT)
				continue;	/* removed since: nothing to keep */
			if (fd == -1 || fsync(fd) == -1) {
				if (fd != -1)
					close(fd);
				break;
			}
			close(fd);
		}
		if (seg->synced < seg->n) {
			spool_seg_fail(log, q, seg);
			continue;
		}
		if (!dir_synced) {
			if (fsync(log->msg_dir_fd) == -1) {
				spool_seg_fail(log, q, seg);
				continue;
			}
			dir_synced = true;
		}
		snprintf(name, sizeof(name), "%016" PRIx64 ".seg", seg->seq);
		(void)TESTHOOK("ckpt_unlink", name);
		/* Not fsync'ed: a segment back after a crash is replayed, harmlessly. */
		if (unlinkat(log->seg_dir_fd, name, 0) == -1 && errno != ENOENT) {
			spool_seg_fail(log, q, seg);
			continue;
		}
		TAILQ_REMOVE(q, seg, entry);
		spool_seg_destroy(seg);
		atomic_fetch_add(&log->checkpoints, 1);
	}
}

/* Should a pass stop early: its deadline passed, or (no deadline) a stop? */
static bool
spool_seg_interrupted(struct spool_seglog *log, long long deadline)
{
	if (deadline != 0)
		return spool_seg_now_ns() >= deadline;
	return atomic_load(&log->abort_pass);
}

/* Tests: stay inside the pass for hold_ns (a slow syncfs), a stop cuts it short. */
static void
spool_seg_hold(struct spool_seglog *log)
{
	long long	end;

	if (log->hold_ns <= 0)
		return;
	end = spool_seg_now_ns() + log->hold_ns;
	while (spool_seg_now_ns() < end && !atomic_load(&log->abort_pass))
		(void)nanosleep(&(struct timespec){ 0, 10000000L }, NULL);
}

/* A segment's checkpoint failed: out of q, kept on disk for the replay. */
static void
spool_seg_fail(struct spool_seglog *log, struct spool_segq *q,
    struct spool_seg *seg)
{
	TAILQ_REMOVE(q, seg, entry);
	TAILQ_INSERT_TAIL(&log->failed, seg, entry);
}

/* Copy the counters (any thread). */
void
spool_seg_get_stats(struct spool_seglog *log, uint64_t *checkpoints,
    uint64_t *passes, uint64_t *recovered)
{
	*checkpoints = atomic_load(&log->checkpoints);
	*passes = atomic_load(&log->passes);
	*recovered = atomic_load(&log->recovered);
}

/* Seal, stop the checkpoint thread after its last pass, free. */
void
spool_seg_free(struct spool_seglog *log)
{
	struct spool_seg	*seg;

	if (log == NULL)
		return;
	if (log->active != NULL)
		spool_seg_seal(log, log->active, spool_seg_now_ns());
	if (log->started) {
		pthread_mutex_lock(&log->mu);
		log->stopping = true;
		atomic_store(&log->abort_pass, true);
		pthread_cond_signal(&log->cond);
		pthread_mutex_unlock(&log->mu);
		pthread_join(log->thread, NULL);
	}
	while ((seg = TAILQ_FIRST(&log->sealed)) != NULL) {
		TAILQ_REMOVE(&log->sealed, seg, entry);
		spool_seg_destroy(seg);
	}
	while ((seg = TAILQ_FIRST(&log->failed)) != NULL) {
		TAILQ_REMOVE(&log->failed, seg, entry);
		spool_seg_destroy(seg);
	}
	if (log->seg_dir_fd != -1)
		close(log->seg_dir_fd);
	pthread_mutex_destroy(&log->mu);
	pthread_cond_destroy(&log->cond);
	pthread_cond_destroy(&log->done_cond);
	free(log->seg_dir);
	free(log->tmp_dir);
	free(log);
}

/* Parse a record header; 0 or -1 when it is not one. */
static int
spool_seg_parse(const char *hdr, char hex[65], uint64_t *len)
{
	uint64_t	v = 0;
	size_t		ml = sizeof(SPOOL_SEG_MAGIC) - 1;

	if (memcmp(hdr, SPOOL_SEG_MAGIC, ml) != 0 || hdr[ml + 64] != ' ' ||
	    hdr[SPOOL_SEG_HDR - 1] != '\n')
		return -1;
	for (size_t i = 0; i < 64; i++) {
		char	c = hdr[ml + i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return -1;
		hex[i] = c;
	}
	hex[64] = '\0';
	for (size_t i = ml + 65; i < SPOOL_SEG_HDR - 1; i++) {
		char	c = hdr[i];

		if (c >= '0' && c <= '9')
			v = v * 16 + (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v * 16 + (uint64_t)(c - 'a' + 10);
		else
			return -1;
	}
	*len = v;
	return 0;
}

/*
 * Replay every segment a crash left (before any thread runs): each complete
 * record makes its .eml whole and durable, then messages/ is fsync'ed and
 * the segments are deleted.  0 or -1 (errno; segments kept).
 */
static int
spool_seg_recover(struct spool_seglog *log)
{
	DIR		*d;
	struct dirent	*de;
	char		**names = NULL, **p;
	size_t		 n = 0, cap = 0;
	int		 fd, r = 0, e = 0;

	if ((d = opendir(log->seg_dir)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		size_t		 l = strlen(de->d_name);
		uint64_t	 seq;
		char		*end;

		if (de->d_name[0] == '.' || l != 20 ||
		    strcmp(de->d_name + 16, ".seg") != 0)
			continue;
		seq = strtoull(de->d_name, &end, 16);
		if (end != de->d_name + 16)
			continue;
		if (seq > log->seq)
			log->seq = seq;
		if (n == cap) {
			cap = cap == 0 ? 8 : cap * 2;
			if ((p = realloc(names, cap * sizeof(*names))) == NULL) {
				r = -1;
				e = ENOMEM;
				break;
			}
			names = p;
		}
		if ((names[n] = strdup(de->d_name)) == NULL) {
			r = -1;
			e = ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	/*
	 * Rewrites go to the page cache, then one syncfs(2) makes them and the
	 * intact files (maybe never written back before a kill -9) durable.
	 * Without syncfs a second pass fsyncs each file.
	 */
	for (int pass = 0; pass < 2 && r == 0 && n > 0; pass++) {
		for (size_t i = 0; i < n && r == 0; i++) {
			if ((fd = openat(log->seg_dir_fd, names[i], O_RDONLY |
			    O_CLOEXEC)) == -1 || spool_seg_replay(log, fd) == -1) {
				r = -1;
				e = errno;
			}
			if (fd != -1)
				close(fd);
		}
		if (r == 0 && log->no_syncfs)
			break;
		if (r == 0 && syncfs(log->msg_dir_fd) == 0)
			break;
		if (r == 0 && errno != ENOSYS) {
			r = -1;
			e = errno;
		} else if (r == 0)
			log->no_syncfs = true;
	}
	if (r == 0 && n > 0 && fsync(log->msg_dir_fd) == -1) {
		r = -1;
		e = errno;
	}
	for (size_t i = 0; i < n; i++) {
		if (r == 0)
			(void)TESTHOOK("replay_unlink", names[i]);
		if (r == 0 && unlinkat(log->seg_dir_fd, names[i], 0) == -1 &&
		    errno != ENOENT) {
			r = -1;
			e = errno;
		}
		free(names[i]);
	}
	free(names);
	if (r == 0 && n > 0 && fsync(log->seg_dir_fd) == -1) {
		r = -1;
		e = errno;
	}
	if (r == -1)
		errno = e;
	return r;
}

/* Replay the complete records of one segment; a torn tail ends it.  0 or -1. */
static int
spool_seg_replay(struct spool_seglog *log, int fd)
{
	struct stat	 st;
	char		 hdr[SPOOL_SEG_HDR], hex[65], got[65];
	unsigned char	*buf, md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen;
	uint64_t	 len;
	off_t		 off = 0;
	ssize_t		 n;
	size_t		 done;

	if (fstat(fd, &st) == -1)
		return -1;
	for (;;) {
		if (st.st_size - off < SPOOL_SEG_HDR)
			return 0;
		if (pread(fd, hdr, SPOOL_SEG_HDR, off) != SPOOL_SEG_HDR ||
		    spool_seg_parse(hdr, hex, &len) == -1)
			return 0;	/* torn: never acknowledged */
		if (len > SPOOL_SEG_REC_MAX ||
		    (uint64_t)(st.st_size - off - SPOOL_SEG_HDR) < len)
			return 0;
		if ((buf = malloc(len > 0 ? (size_t)len : 1)) == NULL)
			return -1;
		for (done = 0; done < len; done += (size_t)n) {
			n = pread(fd, buf + done, (size_t)len - done,
			    off + SPOOL_SEG_HDR + (off_t)done);
			if (n == -1 && errno == EINTR) {
				n = 0;
				continue;
			}
			if (n <= 0) {
				free(buf);
				if (n == 0)
					errno = EIO;
				return -1;
			}
		}
		mdlen = 0;
		if (EVP_Digest(buf, (size_t)len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
		    mdlen != 32) {
			free(buf);
			errno = EIO;
			return -1;
		}
		util_hex(md, mdlen, got);
		if (strcmp(got, hex) != 0) {
			free(buf);
			return 0;	/* torn payload */
		}
		(void)TESTHOOK("replay_restore", hex);
		if (spool_seg_restore(log, hex, buf, (size_t)len) == -1) {
			free(buf);
			return -1;
		}
		free(buf);
		off += SPOOL_SEG_HDR + (off_t)len;
	}
}

/*
 * Make messages/<hex>.eml hold exactly data: an intact file has its bytes
 * written again in place (its pages dirty, see below), a wrong or missing
 * one is written whole under tmp/ and renamed over, so the name never shows
 * a torn file, not even to a reader during the replay or after a kill -9
 * in it.  A wrong file that Maildir hard links also name is then rewritten
 * in place too (the Maildir is a view: best effort).
 * Durable after the caller's syncfs(2), or fsync'ed here where the kernel
 * has no syncfs.
 */
static int
spool_seg_restore(struct spool_seglog *log, const char *hex,
    const unsigned char *data, size_t len)
{
	char		 name[80], tmp[80];
	unsigned char	*cur = NULL;
	struct stat	 st;
	size_t		 done;
	ssize_t		 n;
	int		 fd, nfd = -1, dfd = -1, e;
	bool		 same = false;

	if (spool_name_message(name, sizeof(name), hex) == -1) {
		errno = EINVAL;	/* never: spool_seg_parse checked it */
		return -1;
	}
	fd = openat(log->msg_dir_fd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1 && errno != ENOENT && errno != ELOOP)
		return -1;
	if (fd != -1) {
		if (fstat(fd, &st) == -1)
			goto fail;
		if (S_ISREG(st.st_mode) && (uint64_t)st.st_size == len) {
			if ((cur = malloc(len > 0 ? len : 1)) == NULL)
				goto fail;
			for (done = 0; done < len; done += (size_t)n)
				if ((n = pread(fd, cur + done, len - done,
				    (off_t)done)) <= 0)
					break;
			same = done == len && memcmp(cur, data, len) == 0;
			free(cur);
		}
		if (same) {
			/*
			 * Right bytes in the page cache are no proof they are on
			 * disk: a writeback error (a checkpoint's syncfs failed,
			 * so this segment was kept) leaves the pages clean, and
			 * the syncfs below neither writes them nor reports the
			 * error again (it was seen).  Write them again: the same
			 * bytes, so no reader ever sees a change.
			 */
			for (done = 0; done < len; done += (size_t)n)
				if ((n = pwrite(fd, data + done, len - done,
				    (off_t)done)) <= 0) {
					if (n == 0)
						errno = EIO;
					goto fail;
				}
			if (log->no_syncfs && fsync(fd) == -1)
				goto fail;
			close(fd);
			return 0;
		}
	}
	/* Missing, wrong, or a symlink: a new file under tmp/, renamed over. */
	snprintf(tmp, sizeof(tmp), "%.64s.replay", hex);
	if ((dfd = open(log->tmp_dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC)) == -1)
		goto fail;
	nfd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    SPOOL_SEG_MODE);
	if (nfd == -1 || util_write_all(nfd, data, len) == -1 ||
	    (log->no_syncfs && fsync(nfd) == -1) ||
	    renameat(dfd, tmp, log->msg_dir_fd, name) == -1) {
		e = errno;
		(void)unlinkat(dfd, tmp, 0);
		errno = e;
		goto fail;
	}
	/* The old inode, still named by Maildir links: mended in place. */
	if (fd != -1 && S_ISREG(st.st_mode) && st.st_nlink > 1) {
		for (done = 0; done < len; done += (size_t)n)
			if ((n = pwrite(fd, data + done, len - done,
			    (off_t)done)) <= 0)
				break;
		if (done == len && ftruncate(fd, (off_t)len) == 0 &&
		    log->no_syncfs)
			(void)fsync(fd);
	}
	close(nfd);
	close(dfd);
	if (fd != -1)
		close(fd);
	atomic_fetch_add(&log->recovered, 1);
	return 0;
fail:
	e = errno;
	if (nfd != -1)
		close(nfd);
	if (dfd != -1)
		close(dfd);
	if (fd != -1)
		close(fd);
	errno = e;
	return -1;
}
