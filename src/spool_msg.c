/*
 * The spool, writing a message (loop thread): the body in memory while it
 * fits SPOOL_BUF_SIZE, a tmp file beyond; its SHA-256 as it comes; the hand
 * over to the worker (spool_msg_commit) and the completion callbacks.
 * The durability steps are described at the top of spool.c.
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
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "log.h"
#include "spool.h"
#include "spool_int.h"
#include "spool_seg.h"
#include "testhook.h"
#include "util.h"

static int	 spool_flush(struct spool_msg *);

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
int
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
void
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
void
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
