/*
 * The spool: durable, content-addressed storage of captured mail.
 *
 *   <dir>/tmp/                     a message over 64 KiB while it is being
 *                                  received (an unnamed O_TMPFILE where the
 *                                  filesystem has it); smaller ones stay in memory
 *   <dir>/messages/<sha256>.eml    the exact DATA bytes (dot-unstuffed, CRLF kept)
 *   <dir>/segments/<seq>.seg       write-ahead log of small messages' bytes
 *   <dir>/receptions.jsonl         one JSON object per line per reception (journal)
 *
 * A message body is buffered in memory; past 64 KiB it streams to a tmp file on
 * the event loop thread (write(2) to the page cache).  The slow part runs on one worker thread that commits every
 * queued message as a group; the caller's callback then runs back on the event
 * loop.  When it reports success the message and its reception record are on
 * disk: only then may the session answer 250.
 *
 * Per group: a small message (<= SPOOL_SEG_SMALL) is appended as a framed
 * record (header with its sha256 and length, then the bytes) to the current
 * segment; one fdatasync of the segment makes the whole group's bytes durable;
 * only then is each .eml written to a tmp file (a body held in memory) and
 * linked into messages/, not fsync'ed: a name always holds all its bytes.
 * A big message keeps the per-file path: fsync of the file, link, one fsync
 * of messages/.  Then the group's journal lines are appended and
 * fdatasync'ed.  A segment is sealed after 5 s or 8 MiB and deleted by a
 * checkpoint thread about 35 s later, only after one syncfs(2), begun once
 * every .eml it covers was written, made them durable (by then the kernel
 * has usually written them back).  Commits never wait for a checkpoint,
 * except when the disk is full (then 5 s at most, for the space the segments
 * hold).  Both threads start in spool_open().  At spool_open() the records
 * of any remaining segment (a crash) replace the .eml that is missing, short
 * or wrong (written under tmp/, renamed over); a torn last record was never
 * acknowledged and is ignored.  The invariants are listed in spool.c.
 *
 * The journal is also the hpfeeds outbox: a publisher reads it from a saved
 * offset.  A torn last line (crash mid-append) is cut off at spool_open().
 */
#ifndef FOSR_SPOOL_H
#define FOSR_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct spool;
struct spool_msg;

struct spool_opts {
	const char	*dir;
	const char	*maildir;	/* NULL or "" = none; else <maildir>/{tmp,new,cur} */
	const char	*hostname;	/* for Maildir file names */
	uint64_t	 min_free;	/* refuse mail when the filesystem has less free */
	uint64_t	 max_bytes;	/* 0 = no quota on messages/ */
	uint64_t	 journal_segment; /* rotate the journal at this size; 0 = never */
	int		 journal_keep;	/* rotated segments kept at least */
	/* Tests only: 0 = the defaults. */
	uint32_t	 checkpoint_age_ms; /* checkpoint a sealed segment after this */
	uint32_t	 checkpoint_hold_ms; /* each checkpoint pass sleeps this long */
	bool		 no_checkpoint;	/* never delete a segment (as if crashed) */
	bool		 no_syncfs;	/* as without syncfs(2): fsync each file */
};

/*
 * Create the directories if needed, repair a torn journal tail, replay the
 * segments left by a crash, start the commit worker.  Returns NULL with err
 * filled on failure (also when a segment cannot be replayed: the segment is
 * kept, nothing acknowledged is dropped).
 */
struct spool	*spool_open(struct event_base *base, const struct spool_opts *opts,
		    char *err, size_t errlen);

/*
 * Finish every queued commit (callbacks are not run), stop the worker, then
 * the checkpoint thread after one last checkpoint of every segment (one
 * syncfs; where each file is fsync'ed instead, 2 s at most: the next
 * spool_open() replays the rest), free.
 */
void		 spool_free(struct spool *);

/* Is there room for about expected more bytes?  0 yes, -1 no (quota or min_free). */
int		 spool_check_space(struct spool *, uint64_t expected);

/*
 * Bytes the spool holds outside messages/ (a transaction's spilled
 * recipients in tmp/): spool_check_space counts them until they are given
 * back (delta < 0).  Loop thread only.
 */
void		 spool_hold(struct spool *, int64_t delta);

/*
 * Bytes held by the spool's other writers (the analysis worker's parsed
 * journal and attachments, delta < 0 when deleted): counted against
 * max_bytes with messages/.  spool_aux_room(): whether expected more fit,
 * in max_bytes and above twice min_free on the filesystem (attachments
 * never take the mails' reserve).
 * Any thread.
 */
void		 spool_aux_add(struct spool *, int64_t delta);
bool		 spool_aux_room(struct spool *, uint64_t expected);

/* Counters since spool_open (for logs and tests). */
struct spool_stats {
	uint64_t	groups;		/* group commits run by the worker */
	uint64_t	commits;	/* messages handed to spool_msg_commit */
	uint64_t	failures;	/* commits reported with status -1 */
	uint64_t	dedup;		/* content already stored: not written again */
	uint64_t	maildir_failures; /* Maildir links/copies that failed (not fatal) */
	uint64_t	used_bytes;	/* size of messages/ (tracked only with max_bytes) */
	uint64_t	segment_bytes;	/* bytes appended to segments */
	uint64_t	checkpoints;	/* segments deleted after their .eml were made durable */
	uint64_t	checkpoint_passes; /* checkpoint passes started */
	uint64_t	recovered;	/* .eml rewritten from segments at spool_open */
	uint64_t	queued;		/* spool_msg_commit calls (queued > commits: one in flight) */
};
void		 spool_get_stats(struct spool *, struct spool_stats *);

/* Path of the journal (for the publisher); valid while the spool lives. */
const char	*spool_journal_path(const struct spool *);
const char	*spool_dir(const struct spool *);
/* The current journal file's inode and the length of its acknowledged
 * lines: a reader of the live journal reads no further (any thread). */
void		 spool_journal_committed(struct spool *, uint64_t *ino, uint64_t *len);

/* Begin a message: opens a tmp file.  NULL with err filled on failure. */
struct spool_msg *spool_msg_new(struct spool *, char *err, size_t errlen);

/*
 * Append body bytes (buffered; the SHA-256 is updated as they pass).  After a
 * failure every later call fails too and spool_msg_error() tells the errno;
 * the caller keeps reading the client's data and answers with an error.
 */
int		 spool_msg_write(struct spool_msg *, const void *buf, size_t len);
int		 spool_msg_error(const struct spool_msg *);
uint64_t	 spool_msg_size(const struct spool_msg *);

/* Flush and compute the digest (lower-case hex, 65 bytes with NUL).  0 or -1. */
int		 spool_msg_finish(struct spool_msg *, char hex[65]);

/*
 * The whole body, when it is held in memory: after a successful
 * spool_msg_finish() of a body under 64 KiB (it never left the write
 * buffer; an empty body gives a valid pointer and *len 0).  NULL (and *len
 * 0) otherwise: bigger bodies, or before finish, or after an error; read
 * spool_msg_path() then.  The bytes are the message's: read-only, valid
 * until spool_msg_commit() or spool_msg_abort(), also for a reader on
 * another thread that is done before either is called.
 */
const unsigned char *spool_msg_data(const struct spool_msg *m, size_t *len);

/*
 * The path of the message's tmp file: complete after spool_msg_finish(), for
 * a reader on another thread (rules); valid until spool_msg_commit() or
 * spool_msg_abort().  NULL when the body never left memory (no tmp file is
 * made for it; spool_msg_data() has it).
 */
const char	*spool_msg_path(const struct spool_msg *);

/* Drop the message: tmp file unlinked, memory freed. */
void		 spool_msg_abort(struct spool_msg *);

/*
 * status 0: the message file, its name and the reception record are durable.
 * status -1: they are not (errno in err_no); nothing acknowledged may be lost:
 * the caller answers 451/452.
 */
typedef void	(*spool_done_cb)(void *arg, int status, int err_no);

/*
 * Queue m for the group commit, with its reception record (one JSON object,
 * no newline; copied).  spool_msg_finish() must have been called.  Ownership
 * of m passes to the spool: the pointer stays valid for spool_msg_detach()
 * until cb has run.  cb runs on the event loop thread.
 */
void		 spool_msg_commit(struct spool_msg *m, const char *record, size_t len,
		    spool_done_cb cb, void *arg);

/* The caller of a pending commit is going away: it completes, cb is not run. */
void		 spool_msg_detach(struct spool_msg *m);

/*
 * The spool's layout, for every reader and writer, with or without an open
 * spool: the one place its names are spelled.  Each fills buf (len bytes)
 * and returns 0, or -1 when buf is too small (or, for a message, sha256 is
 * not 64 lower-case hex digits: never a path outside messages/).
 */
#define SPOOL_JOURNAL_NAME	"receptions.jsonl"	/* the journal, in the spool dir */
#define SPOOL_DIR_TMP		"tmp"
#define SPOOL_DIR_MESSAGES	"messages"
#define SPOOL_DIR_SEGMENTS	"segments"
#define SPOOL_DIR_FEED		"feed"		/* the outputs' cursors */
#define SPOOL_DIR_RELAY		"relay"		/* caps journals, outcome records */
#define SPOOL_PARSED_NAME	"parsed.jsonl"	/* the analysis worker's journal */
#define SPOOL_CAMPAIGNS_NAME	"campaigns"	/* its campaign table (campaign.c) */
#define SPOOL_DIR_ATTACHMENTS	"attachments"	/* <sha256>: decoded attachments */
#define SPOOL_CURSOR_SUFFIX	".cursor"	/* <hex of the channel name>.cursor in feed/ */
#define SPOOL_CURSOR_STALE	"stale"		/* feed/stale/: cursors of outputs no longer
						   configured (they keep no segment) */

/* <sha256>.eml: a message's name in messages/ */
int		 spool_name_message(char *buf, size_t len, const char *sha256);
/* <spool_dir>/messages/<sha256>.eml */
int		 spool_path_message(char *buf, size_t len, const char *spool_dir,
		    const char *sha256);
/* <spool_dir>/receptions.jsonl */
int		 spool_path_journal(char *buf, size_t len, const char *spool_dir);
/* <spool_dir>/receptions.jsonl.<n, 20 digits>: a rotated journal segment */
int		 spool_path_segment(char *buf, size_t len, const char *spool_dir,
		    unsigned long long n);
/* Whether a directory entry's name is a rotated journal segment; its number in *n. */
bool		 spool_segment_name(const char *name, unsigned long long *n);
/* <spool_dir>/<sub> (sub: one of SPOOL_DIR_*) */
int		 spool_path_dir(char *buf, size_t len, const char *spool_dir, const char *sub);
/* <spool_dir>/feed/<channel_hex>.cursor: an output channel's durable cursor */
int		 spool_path_cursor(char *buf, size_t len, const char *spool_dir,
		    const char *channel_hex);
/* <spool_dir>/attachments/<sha256> (sha256: 64 lower-case hex digits) */
int		 spool_path_attachment(char *buf, size_t len, const char *spool_dir,
		    const char *sha256);
/* Whether a directory entry of feed/ is a cursor file. */
bool		 spool_cursor_name(const char *name);

#endif
