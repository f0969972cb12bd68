/*
 * The spool's commit worker (its own thread): takes every queued message as
 * one group and makes it durable in the order of spool.c's invariants I1-I5:
 * segment append and fdatasync, the small messages' names, the big ones'
 * fsync and names, then the journal lines (spool_journal.c).  Dedup by name
 * and size, the Maildir copy, the checkpoint request on disk full.
 */
#include <sys/queue.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "spool.h"
#include "spool_int.h"
#include "spool_seg.h"
#include "testhook.h"
#include "util.h"

static void	 spool_commit_group(struct spool *, struct spool_msgq *);
static void	 spool_tmp_drop(struct spool_msg *);
static bool	 spool_exists(struct spool *, const char *hex, uint64_t size);
static int	 spool_name(struct spool *, struct spool_msg *, bool *dedup);
static int	 spool_store_big(struct spool *, struct spool_msg *, bool *dedup);
static int	 spool_store_small(struct spool *, struct spool_msg *, bool *dedup);
static int	 spool_small_append(struct spool *, struct spool_msgq *);
static int	 spool_maildir_add(struct spool *, const char *src);
static int	 spool_copy_file(const char *src, const char *dst);

/*
 * Disk full (or a quota) under a message: have the worker seal its segment
 * and ask for a checkpoint of every segment now, their space comes back.
 * Any thread but the worker.
 */
void
spool_want_checkpoint(struct spool *sp)
{
	if (errno != ENOSPC && errno != EDQUOT)
		return;
	pthread_mutex_lock(&sp->mu);
	sp->ckpt_wanted = true;
	pthread_cond_signal(&sp->cond);
	pthread_mutex_unlock(&sp->mu);
}

/*
 * The commit worker: takes every queued message as one group.  Idle, it
 * seals the active segment when due; checkpoints run on their own thread.
 */
void *
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
	spool_wrote(sp, nseg);	/* the segment's records */
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
	spool_wrote(sp, (m->size + SPOOL_BLOCK - 1) / SPOOL_BLOCK * SPOOL_BLOCK);
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
int
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
