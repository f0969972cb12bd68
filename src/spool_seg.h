/*
 * The spool's segment log (internal to spool.c): a write-ahead log of the
 * small messages' bytes, so one fdatasync makes a whole group durable.
 *
 *   <spool>/segments/<seq>.seg     records "FOSRSEG1 <sha256 hex> <len, 16 hex>\n"
 *                                  followed by the bytes
 *
 * The commit worker appends to the active segment and seals it (5 s or
 * 8 MiB).  A checkpoint thread owns the sealed segments: about 35 s after a
 * seal one syncfs(2) makes every .eml they cover durable and they are
 * unlinked.  Commits never wait for a checkpoint, except on disk full, where
 * spool_seg_append() asks for one, waits for it (bounded) and retries once.
 */
#ifndef FOSR_SPOOL_SEG_H
#define FOSR_SPOOL_SEG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPOOL_SEG_HDR		91	/* magic, 64 hex, ' ', 16 hex, '\n' */

struct spool_seglog;

struct spool_seg_opts {
	const char	*seg_dir;	/* <spool>/segments, existing */
	const char	*tmp_dir;	/* <spool>/tmp: replay writes there first */
	int		 msg_dir_fd;	/* <spool>/messages; borrowed */
	uint32_t	 age_ms;	/* 0 = default: checkpoint 35 s after the seal */
	uint32_t	 hold_ms;	/* tests: sleep inside each checkpoint pass */
	bool		 no_checkpoint;	/* tests: never delete a segment */
	bool		 no_syncfs;	/* tests: fsync each covered file instead */
};

/* One record to append: the message's digest (64 hex digits) and bytes. */
struct spool_seg_rec {
	const char		*hex;
	const unsigned char	*data;
	size_t			 len;
};

/*
 * Open the segment log and replay the segments a crash (or a bounded stop)
 * left: every complete record makes messages/<hex>.eml whole and durable,
 * then the segments are deleted.  No thread yet.  NULL with errno set on
 * failure (segments are kept then).  The strings in opts are copied; the
 * descriptor must outlive the log.
 */
struct spool_seglog *spool_seg_open(const struct spool_seg_opts *opts);

/* Start the checkpoint thread (signals blocked by the caller).  0 or -1 (errno). */
int		 spool_seg_start(struct spool_seglog *);

/*
 * Worker thread: append the records in one writev and fdatasync the active
 * segment (sealed first when full or old).  Disk full: a checkpoint is asked
 * for and waited for (5 s at most), then one retry.  0 or -1 (errno); on
 * failure no part of the group stays in the segment.
 */
int		 spool_seg_append(struct spool_seglog *, const struct spool_seg_rec *,
		    size_t n);

/*
 * Worker thread, after a successful spool_seg_append(): every .eml of that
 * group is written (or failed).  Until then the segment the group went to
 * is not checkpointed, even when sealed (disk full) and asked for.
 */
void		 spool_seg_names_done(struct spool_seglog *);

/*
 * Worker thread: when the active segment is due for its seal (monotonic ns),
 * 0 when there is none (or checkpoints are off).
 */
long long	 spool_seg_seal_due(struct spool_seglog *);

/* Worker thread: seal the active segment if due (or always when force). */
void		 spool_seg_seal_active(struct spool_seglog *, bool force);

/*
 * Worker thread, disk full elsewhere: seal the active segment and ask the
 * checkpoint thread for a pass over every sealed segment now (not waited for).
 */
void		 spool_seg_want_checkpoint(struct spool_seglog *);

/* Counters (any thread): segments deleted by checkpoints, passes started, .eml replayed. */
void		 spool_seg_get_stats(struct spool_seglog *, uint64_t *checkpoints,
		    uint64_t *passes, uint64_t *recovered);

/*
 * After the worker has stopped: seal, stop the checkpoint thread after one
 * last pass over every segment (2 s at most for the per-file fallback; what
 * is left is replayed at the next open), free.  NULL is a no-op.
 */
void		 spool_seg_free(struct spool_seglog *);

#endif
