/*
 * The spool's inside, shared by its four files and by nothing else:
 *   spool.c          opening, recovery of what a crash left, teardown, the
 *                    space budget (quota, free space) and the counters;
 *   spool_msg.c      writing a message on the loop thread (memory, then a
 *                    tmp file), handing it to the worker, the callbacks;
 *   spool_commit.c   the worker thread: group commit (segment, names, big
 *                    fsyncs, Maildir copy), dedup, the checkpoint request;
 *   spool_journal.c  the reception journal: append, the acknowledged length,
 *                    rotation, pruning of rotated segments, repair at open.
 * The durability steps and invariants are described at the top of spool.c.
 */
#ifndef SPOOL_INT_H
#define SPOOL_INT_H

#include <sys/queue.h>
#include <sys/types.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "spool.h"
#include "spool_seg.h"

#define SPOOL_BUF_SIZE		(64 * 1024)
#define SPOOL_DIR_MODE		0750
#define SPOOL_FILE_MODE		0640
#define SPOOL_SPACE_CACHE_NS	1000000000LL
/* A file takes whole blocks (ext4, xfs, tmpfs: 4 KiB): spool_wrote() rounds. */
#define SPOOL_BLOCK		4096

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
	bool			 journal_dirsync; /* worker: the rotation's fsync of
						   dir failed: again before the next
						   append */
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
	/*
	 * Bytes the daemon put on the spool's filesystem since open, never
	 * lowered (spool_wrote(): .eml files, segment records, journal lines,
	 * spilled recipients, spool_aux_add()): between two statvfs calls
	 * spool_check_space() takes what grew since off the cached free space.
	 */
	_Atomic uint64_t	 wrote;

	struct spool_seglog	*seg;		/* appends and seals: worker only */

	/* Loop thread only: spool_check_space() cache. */
	long long		 space_checked_ns;
	uint64_t		 space_avail;
	int			 space_err;
	uint64_t		 held_bytes;	/* spool_hold(): spilled, not in messages/ */
	uint64_t		 wrote_at_check; /* wrote just before the last statvfs */

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

/* spool.c */
char	*spool_path(const char *a, const char *b);

/* spool_msg.c */
int	 spool_tmp_open(struct spool_msg *);
void	 spool_msg_free(struct spool_msg *);
void	 spool_ready_cb(evutil_socket_t fd, short what, void *arg);

/* spool.c: bytes written to the spool's filesystem (any thread). */
void	 spool_wrote(struct spool *, uint64_t bytes);

/* spool_commit.c */
void	 spool_want_checkpoint(struct spool *);
void	*spool_worker(void *arg);
int	 spool_write_tmp(struct spool *, struct spool_msg *);

/* spool_journal.c */
int	 spool_repair_journal(int fd, off_t *lenp);
int	 spool_journal_append(struct spool *, struct spool_msgq *);
void	 spool_journal_committed_set(struct spool *);

#endif /* SPOOL_INT_H */
