/*
 * The spool: content-addressed message files, a JSON-lines reception journal
 * and a group-commit worker thread that makes both durable before a session
 * may answer 250.  See spool.h for the contract.
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

#include "spool.h"
#include "util.h"

#define SPOOL_BUF_SIZE		(64 * 1024)
#define SPOOL_DIR_MODE		0750
#define SPOOL_FILE_MODE		0640
#define SPOOL_JOURNAL		"receptions.jsonl"
#define SPOOL_SPACE_CACHE_NS	1000000000LL

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
	char			*maildir_tmp;	/* NULL when no maildir */
	char			*maildir_new;
	char			 hostname[256];	/* sanitized for Maildir names */
	uint64_t		 min_free;
	uint64_t		 max_bytes;

	bool			 use_tmpfile;	/* O_TMPFILE + linkat work here */
	int			 journal_fd;
	off_t			 journal_len;	/* worker only after open */
	int			 msg_dir_fd;
	int			 maildir_new_fd;
	int			 efd;
	struct event		*ev;

	_Atomic uint64_t	 used_bytes;	/* sum of st_size in messages/ */

	/* Loop thread only: spool_check_space() cache. */
	long long		 space_checked_ns;
	uint64_t		 space_avail;
	int			 space_err;

	pthread_t		 thread;
	bool			 thread_started;
	pthread_mutex_t		 mu;
	pthread_cond_t		 cond;
	struct spool_msgq	 pending;	/* mu */
	struct spool_msgq	 done;		/* mu */
	bool			 stopping;	/* mu */
	struct spool_stats	 stats;		/* mu */
};

static char	*spool_path(const char *a, const char *b);
static int	 spool_repair_journal(int fd, off_t *lenp);
static void	 spool_clean_tmp(const char *dir);
static bool	 spool_probe_tmpfile(const char *tmp_dir);
static void	 spool_tmp_drop(struct spool_msg *);
static int	 spool_du(const char *dir, uint64_t *out);
static long long spool_now_ns(void);
static int	 spool_write_all(int fd, const void *buf, size_t len);
static int	 spool_flush(struct spool_msg *);
static void	 spool_msg_free(struct spool_msg *);
static void	 spool_ready_cb(evutil_socket_t fd, short what, void *arg);
static void	*spool_worker(void *arg);
static void	 spool_commit_group(struct spool *, struct spool_msgq *);
static int	 spool_store_one(struct spool *, struct spool_msg *, bool *dedup);
static int	 spool_maildir_add(struct spool *, const char *src);
static int	 spool_copy_file(const char *src, const char *dst);
static int	 spool_journal_append(struct spool *, struct spool_msgq *);

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

/* write(2) all of buf, retrying on EINTR and short writes; 0 or -1 (errno). */
static int
spool_write_all(int fd, const void *buf, size_t len)
{
	const char	*p = buf;
	ssize_t		 n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Create the directories, repair the journal, start the commit worker. */
struct spool *
spool_open(struct event_base *base, const struct spool_opts *opts, char *err,
    size_t errlen)
{
	struct spool	*sp;
	const char	*what = "";
	sigset_t	 all, old;
	int		 r;

	if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0') {
		snprintf(err, errlen, "spool: no directory configured");
		return NULL;
	}
	if ((sp = calloc(1, sizeof(*sp))) == NULL) {
		snprintf(err, errlen, "spool: out of memory");
		return NULL;
	}
	sp->base = base;
	sp->journal_fd = sp->msg_dir_fd = sp->maildir_new_fd = sp->efd = -1;
	sp->min_free = opts->min_free;
	sp->max_bytes = opts->max_bytes;
	TAILQ_INIT(&sp->pending);
	TAILQ_INIT(&sp->done);
	pthread_mutex_init(&sp->mu, NULL);
	pthread_cond_init(&sp->cond, NULL);
	snprintf(sp->hostname, sizeof(sp->hostname), "%s",
	    opts->hostname != NULL && opts->hostname[0] != '\0' ?
	    opts->hostname : "localhost");
	/* Maildir names may not hold '/' and ':' (the info separator). */
	for (char *p = sp->hostname; *p != '\0'; p++)
		if (*p == '/' || *p == ':' || (unsigned char)*p < 0x21 ||
		    (unsigned char)*p > 0x7e)
			*p = '_';

	if ((sp->dir = strdup(opts->dir)) == NULL ||
	    (sp->tmp_dir = spool_path(opts->dir, "tmp")) == NULL ||
	    (sp->msg_dir = spool_path(opts->dir, "messages")) == NULL ||
	    (sp->journal_path = spool_path(opts->dir, SPOOL_JOURNAL)) == NULL) {
		errno = ENOMEM;
		what = "allocating paths";
		goto fail;
	}
	what = sp->tmp_dir;
	if (util_mkdirs(sp->tmp_dir, SPOOL_DIR_MODE) == -1)
		goto fail;
	what = sp->msg_dir;
	if (util_mkdirs(sp->msg_dir, SPOOL_DIR_MODE) == -1)
		goto fail;
	if ((sp->msg_dir_fd = open(sp->msg_dir, O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) == -1)
		goto fail;

	if (opts->maildir != NULL && opts->maildir[0] != '\0') {
		char	*cur;

		if ((sp->maildir_tmp = spool_path(opts->maildir, "tmp")) == NULL ||
		    (sp->maildir_new = spool_path(opts->maildir, "new")) == NULL ||
		    (cur = spool_path(opts->maildir, "cur")) == NULL) {
			errno = ENOMEM;
			what = "allocating paths";
			goto fail;
		}
		r = util_mkdirs(cur, SPOOL_DIR_MODE);
		free(cur);
		what = opts->maildir;
		if (r == -1 || util_mkdirs(sp->maildir_tmp, SPOOL_DIR_MODE) == -1 ||
		    util_mkdirs(sp->maildir_new, SPOOL_DIR_MODE) == -1)
			goto fail;
		what = sp->maildir_new;
		if ((sp->maildir_new_fd = open(sp->maildir_new, O_RDONLY |
		    O_DIRECTORY | O_CLOEXEC)) == -1)
			goto fail;
	}

	what = sp->journal_path;
	if ((sp->journal_fd = open(sp->journal_path, O_RDWR | O_APPEND |
	    O_CREAT | O_CLOEXEC, SPOOL_FILE_MODE)) == -1)
		goto fail;
	if (spool_repair_journal(sp->journal_fd, &sp->journal_len) == -1)
		goto fail;
	/* The journal's and the subdirectories' names must be durable too. */
	what = sp->dir;
	if ((r = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		goto fail;
	if (fsync(r) == -1) {
		int	e = errno;

		close(r);
		errno = e;
		goto fail;
	}
	close(r);

	spool_clean_tmp(sp->tmp_dir);
	sp->use_tmpfile = spool_probe_tmpfile(sp->tmp_dir);
	if (sp->maildir_tmp != NULL)
		spool_clean_tmp(sp->maildir_tmp);

	if (sp->max_bytes != 0) {
		uint64_t	used;

		what = sp->msg_dir;
		if (spool_du(sp->msg_dir, &used) == -1)
			goto fail;
		atomic_store(&sp->used_bytes, used);
	}

	what = "eventfd";
	if ((sp->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1)
		goto fail;
	if ((sp->ev = event_new(base, sp->efd, EV_READ | EV_PERSIST,
	    spool_ready_cb, sp)) == NULL || event_add(sp->ev, NULL) == -1) {
		errno = ENOMEM;
		what = "event";
		goto fail;
	}

	/* The worker takes no signals: they belong to the event loop. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&sp->thread, NULL, spool_worker, sp);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		errno = r;
		what = "worker thread";
		goto fail;
	}
	sp->thread_started = true;
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
	pthread_cond_destroy(&sp->cond);
	free(sp->dir);
	free(sp->tmp_dir);
	free(sp->msg_dir);
	free(sp->journal_path);
	free(sp->maildir_tmp);
	free(sp->maildir_new);
	free(sp);
}

/* Quota and free-space check; statvfs is cached for a second. */
int
spool_check_space(struct spool *sp, uint64_t expected)
{
	struct statvfs	vfs;
	long long	now;

	if (sp->max_bytes != 0) {
		uint64_t	used = atomic_load(&sp->used_bytes);

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
	}
	if (sp->space_err != 0)
		return -1;
	if (sp->space_avail < sp->min_free ||
	    expected > sp->space_avail - sp->min_free)
		return -1;
	return 0;
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
	 * An unnamed file (O_TMPFILE) costs one directory operation less than a
	 * named tmp file and a rename, and a crash leaves nothing behind; it is
	 * given its name by linkat() at commit.
	 */
	if (sp->use_tmpfile &&
	    (m->fd = open(sp->tmp_dir, O_TMPFILE | O_WRONLY | O_CLOEXEC,
	    SPOOL_FILE_MODE)) != -1) {
		char	proc[64];

		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", m->fd);
		free(m->tmp_path);
		if ((m->tmp_path = strdup(proc)) == NULL) {
			snprintf(err, errlen, "spool: out of memory");
			goto fail;
		}
		m->anon = true;
		return m;
	}
	m->fd = open(m->tmp_path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC,
	    SPOOL_FILE_MODE);
	if (m->fd == -1) {
		snprintf(err, errlen, "spool: %s: %s", m->tmp_path,
		    strerror(errno));
		goto fail;
	}
	return m;

fail:
	free(m->tmp_path);
	m->tmp_path = NULL;
	spool_msg_free(m);
	return NULL;
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
	if (spool_write_all(m->fd, m->buf, m->buflen) == -1) {
		m->err = errno;
		return -1;
	}
	m->buflen = 0;
	return 0;
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
		uint64_t	used = atomic_load(&sp->used_bytes);

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
		if (spool_write_all(m->fd, buf, len) == -1) {
			m->err = errno;
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

	if (m->finished) {
		if (m->err != 0) {
			errno = m->err;
			return -1;
		}
		memcpy(hex, m->hex, sizeof(m->hex));
		return 0;
	}
	m->finished = true;
	if (spool_flush(m) == -1)
		goto out;
	if (EVP_DigestFinal_ex(m->md, digest, &dlen) != 1 || dlen != 32) {
		m->err = EIO;
		goto out;
	}
	util_hex(digest, dlen, m->hex);
	memcpy(hex, m->hex, sizeof(m->hex));
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

/* The tmp file of a message (see spool.h). */
const char *
spool_msg_path(const struct spool_msg *m)
{
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
	if (m->tmp_path != NULL && !m->anon)
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

/* The commit worker: takes every queued message as one group. */
static void *
spool_worker(void *arg)
{
	struct spool		*sp = arg;
	struct spool_msgq	 q;
	uint64_t		 one = 1;

	for (;;) {
		TAILQ_INIT(&q);
		pthread_mutex_lock(&sp->mu);
		while (TAILQ_EMPTY(&sp->pending) && !sp->stopping)
			pthread_cond_wait(&sp->cond, &sp->mu);
		if (TAILQ_EMPTY(&sp->pending)) {
			pthread_mutex_unlock(&sp->mu);
			break;
		}
		TAILQ_CONCAT(&q, &sp->pending, entry);
		pthread_mutex_unlock(&sp->mu);

		spool_commit_group(sp, &q);

		pthread_mutex_lock(&sp->mu);
		TAILQ_CONCAT(&sp->done, &q, entry);
		pthread_mutex_unlock(&sp->mu);
		while (write(sp->efd, &one, sizeof(one)) == -1 && errno == EINTR)
			;
	}
	return NULL;
}

/*
 * Make one group durable: each file fsync'ed and renamed (or deduplicated),
 * one fsync of the directories, then one journal append and one fsync.
 */
static void
spool_commit_group(struct spool *sp, struct spool_msgq *q)
{
	struct spool_msg	*m;
	uint64_t		 ncommits = 0, nfail = 0, ndedup = 0, nmdfail = 0;
	bool			 any_ok = false, any_maildir = false;

	TAILQ_FOREACH(m, q, entry) {
		bool	dedup = false;
		int	r;

		ncommits++;
		m->status = -1;
		m->err_no = m->err;
		if (m->err != 0) {
			if (m->fd != -1) {
				close(m->fd);
				m->fd = -1;
			}
			if (!m->anon)
				(void)unlink(m->tmp_path);
			continue;
		}
		if (spool_store_one(sp, m, &dedup) == -1) {
			m->err_no = errno;
			continue;
		}
		if (dedup)
			ndedup++;
		if (sp->maildir_new != NULL) {
			char	*final = spool_path(sp->msg_dir, m->hex);
			char	*eml = NULL;

			if (final != NULL && asprintf(&eml, "%s.eml", final) != -1) {
				r = spool_maildir_add(sp, eml);
				free(eml);
			} else
				r = -1;
			free(final);
			/* The Maildir is a view: it never fails a capture. */
			if (r == -1)
				nmdfail++;
			else
				any_maildir = true;
		}
		m->status = 0;
		m->err_no = 0;
		any_ok = true;
	}

	if (any_ok && fsync(sp->msg_dir_fd) == -1) {
		int	e = errno;

		TAILQ_FOREACH(m, q, entry)
			if (m->status == 0) {
				m->status = -1;
				m->err_no = e;
			}
		any_ok = false;
	}
	if (any_maildir && fsync(sp->maildir_new_fd) == -1)
		nmdfail++;
	if (any_ok && spool_journal_append(sp, q) == -1) {
		int	e = errno;

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
	if (!m->anon)
		(void)unlink(m->tmp_path);
}

/* fsync one tmp file and give it its name messages/<sha>.eml; 0 or -1. */
static int
spool_store_one(struct spool *sp, struct spool_msg *m, bool *dedup)
{
	char		 name[80];
	struct stat	 st;
	int		 e;

	if (fsync(m->fd) == -1) {
		e = errno;
		spool_tmp_drop(m);
		errno = e;
		return -1;
	}
	snprintf(name, sizeof(name), "%s.eml", m->hex);
	/* Content-addressed: an existing complete copy is the same bytes. */
	if (fstatat(sp->msg_dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISREG(st.st_mode) && (uint64_t)st.st_size == m->size) {
		spool_tmp_drop(m);
		*dedup = true;
		return 0;
	}
	if (m->anon) {
		/* A shorter copy of the same name (torn by a crash) is replaced. */
		(void)unlinkat(sp->msg_dir_fd, name, 0);
		if (linkat(AT_FDCWD, m->tmp_path, sp->msg_dir_fd, name,
		    AT_SYMLINK_FOLLOW) == -1) {
			e = errno;
			spool_tmp_drop(m);
			errno = e;
			return -1;
		}
		spool_tmp_drop(m);
	} else {
		if (close(m->fd) == -1) {
			m->fd = -1;
			e = errno;
			(void)unlink(m->tmp_path);
			errno = e;
			return -1;
		}
		m->fd = -1;
		if (renameat(AT_FDCWD, m->tmp_path, sp->msg_dir_fd, name) == -1) {
			e = errno;
			(void)unlink(m->tmp_path);
			errno = e;
			return -1;
		}
	}
	atomic_fetch_add(&sp->used_bytes, m->size);
	return 0;
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
		if (spool_write_all(out, buf, (size_t)n) == -1)
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
 * before, so no torn or unacknowledged line stays.  0 or -1 (errno).
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
	if (spool_write_all(sp->journal_fd, buf, total) == -1 ||
	    fdatasync(sp->journal_fd) == -1) {
		e = errno;
		free(buf);
		if (ftruncate(sp->journal_fd, sp->journal_len) == 0)
			(void)fsync(sp->journal_fd);
		errno = e;
		return -1;
	}
	free(buf);
	sp->journal_len += (off_t)total;
	return 0;
}
