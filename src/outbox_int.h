/*
 * The outbox's inside, shared by its three files and by nothing else:
 *   outbox.c         an outbox and its cursors: opening, the window of
 *                    entries read and not yet confirmed (read, take, skip,
 *                    confirm, rewind), the backlog, a record's message read
 *                    (skip on ENOENT only, retry otherwise), teardown;
 *   outbox_follow.c  following the file: opening it, by segment number and
 *                    across rotations (rename, copytruncate, a copy found by
 *                    its lines), draining a rotated-away file, and the
 *                    reader that cuts it into lines for each cursor;
 *   outbox_cursor.c  the cursor files: load, save (tmp + fsync + rename),
 *                    restore, and setting aside the stale ones.
 * The file format and the use are described in outbox.h.
 */
#ifndef OUTBOX_INT_H
#define OUTBOX_INT_H

#include <sys/types.h>

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "fosr_limits.h"
#include "log.h"
#include "outbox.h"
#include "spool.h"

#define OB_CURSORS_MAX		32		/* cursors per outbox */
#define OB_NAME_MAX		128
#define OB_QUEUE_MAX		65536		/* entries held per cursor (incl. confirmed) */
#define OB_CHUNK		(64u << 10)	/* file read size */
#define OB_LINE_MAX		JOURNAL_LINE_MAX	/* longer lines are skipped */
#define OB_HEAD_LEN		256		/* bytes of a file's start that identify it */
#define OB_BODY_KEEP		(2u << 20)	/* message buffer kept between reads */

struct outbox {
	char		 who[32];
	char		 path[PATH_MAX];	/* "" = none */
	enum outbox_kind kind;
	char		 cursor_dir[PATH_MAX];
	dev_t		 cdir_dev;	/* cursor_dir's identity: the stale sweep's key */
	ino_t		 cdir_ino;
	char		 spool_dir[PATH_MAX];
	void		(*hold)(void *, const char *);
	void		(*lost)(void *);
	void		*arg;
	outbox_limit_fn	 jlimit;	/* the live journal's acknowledged length */
	void		*jlimit_arg;
	uint64_t	 gen;		/* bumped when the cursors move to another file */

	/*
	 * fd is normally path; after a rotation it is the old file (draining)
	 * until every cursor has read and confirmed it to its end.
	 */
	int		 fd;
	ino_t		 ino;		/* of the file fd reads */
	dev_t		 dev;
	bool		 started;	/* the cursors' files were reconciled */
	bool		 draining;	/* fd is a rotated-away file */
	bool		 settled;	/* nobody writes it any more (a newer file
					   followed it, or found at start) */
	uint64_t	 dsize;		/* its size when last looked at */
	uint64_t	 dsize_ms;	/* when it got that size */

	struct outbox_cursor *curs[OB_CURSORS_MAX];
	int		 ncurs;
};

struct outbox_cursor {
	struct outbox	*ob;
	struct outbox_cursor *open_next;	/* the process's open cursors (outbox_open_mu) */
	char		 name[OB_NAME_MAX];
	char		 file[2 * OB_NAME_MAX + 16];	/* <hex of name>.cursor */
	char		 cursor_path[PATH_MAX];
	uint64_t	 cursor;	/* everything before is confirmed */
	uint64_t	 cino, cdev;	/* the file the cursor points into (0 = not known) */
	uint64_t	 lkey;		/* the confirmed line ending at cursor: FNV-1a, */
	uint32_t	 llen;		/* length (0 = not known): finds a copy of the file */
	uint64_t	 hkey;		/* FNV-1a of the file's first hlen bytes: tells */
	uint32_t	 hlen;		/* a truncated file, finds its copy */
	bool		 dirty;		/* cursor changed since saved */
	struct log_series save_fail;	/* saves failing (a dying disk): said once */
	bool		 lost;		/* the cursor file was there but unreadable */
	uint64_t	 nconfirmed;

	struct outbox_entry *q;		/* ring of entries in file order */
	unsigned char	*qdata;		/* their data, dsize bytes each, same index */
	size_t		 dsize;
	size_t		 qcap, qhead, qlen;

	char		*rbuf;		/* reader: bytes at rbase.. */
	size_t		 rcap, rstart, rlen;
	uint64_t	 rbase;
	bool		 rskip;		/* discarding an overlong line */
};

/*
 * Every cursor opened in this process, whichever outbox and thread holds
 * it: what outbox_set_aside_stale() leaves in place (outbox_cursor.c).
 */
extern pthread_mutex_t		 outbox_open_mu;
extern struct outbox_cursor	*outbox_open_list;

/* outbox.c */
uint64_t	 outbox_now_ms(void);
void	 outbox_hold(struct outbox *, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));
void	 outbox_cur_reset(struct outbox_cursor *);

/* outbox_follow.c */
int	 outbox_open(struct outbox *);
void	 outbox_head_update(int, uint64_t, struct outbox_cursor *);
int	 outbox_reader_next(struct outbox_cursor *, const char **line, size_t *len,
		    uint64_t *end_off);

/* outbox_cursor.c */
int	 outbox_cursor_load(struct outbox_cursor *, char *err, size_t errlen);
void	 outbox_cursor_restore(struct outbox_cursor *);

#endif
