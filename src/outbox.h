/*
 * outbox: durable cursors over an append-only file of lines, one per output.
 *
 * The spool's reception journal (receptions.jsonl and its numbered segments
 * receptions.jsonl.<n>) is the one durable queue every sink reads; the JSON
 * event log is read the same way.  An outbox follows one such file across
 * rotations (a rename and a new file, copytruncate, the spool's segments
 * followed by number) and holds the cursors of every output reading it.
 *
 * A cursor is named (an hpfeeds channel, an AMQP exchange, "analysis"...)
 * and saved in <cursor_dir>/<hex of name>.cursor as
 *   "<offset> ino=<n> dev=<n> line=<fnv64 hex>:<len> head=<fnv64 hex>:<len>\n"
 * (tmp + fsync + rename + fsync of the directory): the offset up to which
 * every line is confirmed, the file it points into, the line that ends there
 * and the file's first bytes (they tell a file cut or replaced while the
 * daemon was stopped, and find its copy).  The spool deletes a journal
 * segment only once no cursor file in <spool>/feed points into it or an
 * older one: cursors over the journal belong there.
 *
 * Use, for an output with confirmations (hpfeeds echoes, AMQP publisher
 * confirms, a worker's "done"):
 *
 *	ob = outbox_new(&opts, err, errlen);
 *	cur = outbox_cursor_open(ob, "name", sizeof(struct my_entry), err, errlen);
 *	outbox_start(ob);			(once every cursor is open)
 *	loop:
 *		r = outbox_read(cur, &l);	1: a line l.line/l.len ending at l.end_off
 *		send it; d = outbox_take(cur, &l): the entry joins the cursor's window
 *		    (d: sizeof(struct my_entry) zeroed bytes for the output: tag, hash...)
 *		or outbox_skip(cur, &l): never sendable (logged): it passes in its turn
 *		or outbox_unread(cur, &l): a transient error: the same line next time
 *	on a confirmation: outbox_confirm(cur, end_off) (one entry, any order)
 *		or outbox_confirm_upto(cur, end_off) (all up to it: "multiple")
 *	on a reconnect: outbox_rewind(cur): the window is forgotten, reading
 *		starts again at the durable cursor (duplicates, never losses)
 *	once a second: outbox_check(ob) (rotations), outbox_save(ob) (cursors)
 *
 * The cursor only moves over the confirmed prefix of the window, so entries
 * confirmed out of order are safe: after a crash everything after the
 * cursor is read again.  Everything runs on the caller's thread and never
 * blocks for long: the file is read in bounded chunks with pread().  Not
 * thread-safe: a worker thread's output holds its own outbox.
 */
#ifndef FOSR_OUTBOX_H
#define FOSR_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct outbox;
struct outbox_cursor;

/* How the file's rotated copies are found. */
enum outbox_kind {
	OUTBOX_JOURNAL,		/* the spool's journal: segments <path>.<n>, by number */
	OUTBOX_LOG,		/* a log rotated by logrotate (<path>.1, <path>-date), by mtime */
};

struct outbox_opts {
	const char	*who;		/* log prefix and "output" of events ("hpfeeds") */
	const char	*path;		/* the live file (it may not exist yet) */
	enum outbox_kind kind;
	const char	*cursor_dir;	/* where the cursor files are (created) */
	const char	*spool_dir;	/* outbox_message(): <spool_dir>/messages/ */
	/*
	 * A transient error (no descriptor, no memory, an I/O error) stops
	 * reading: msg is logged by the output, which reads again after a
	 * backoff.  Nothing is skipped for a reason that may go away.
	 */
	void		(*hold)(void *arg, const char *msg);
	/*
	 * Entries in some cursor's window were read from a file the outbox
	 * had to leave (rewritten, cut, restarted): the output must give up
	 * what it sent of them (hpfeeds drops the connection).  The cursors
	 * are rewound after the call.
	 */
	void		(*lost)(void *arg);
	void		*arg;
};

/* Open an outbox (no file is opened yet).  NULL with err filled. */
struct outbox	*outbox_new(const struct outbox_opts *, char *err, size_t errlen);

/*
 * The live journal's limit: fn(arg, &ino, &len) gives the current journal
 * file's inode and the length of its acknowledged lines; no cursor reads
 * that file further (a failed append is cut back behind a reader).
 */
typedef void	(*outbox_limit_fn)(void *arg, uint64_t *ino, uint64_t *len);
void		 outbox_set_limit(struct outbox *, outbox_limit_fn, void *arg);

/*
 * Open the cursor called name (its file is read, taken back from the
 * directory's stale/ first when it was set aside, see
 * outbox_set_aside_stale(); missing = the start; an unreadable one is
 * logged and means the start, never a loss; a <file>.tmp a crashed save
 * left is removed).  data_size:
 * bytes the output keeps with each entry of the window (may be 0).  NULL
 * with err filled.  Open every cursor before outbox_start().
 */
struct outbox_cursor *outbox_cursor_open(struct outbox *, const char *name,
		    size_t data_size, char *err, size_t errlen);

/*
 * Open the file and reconcile the cursors with it: a cursor pointing into a
 * rotated file drains that file first; one whose file is gone says what was
 * lost.  Saves which file each cursor points into.  Call once, after the
 * cursors are opened (the file may not exist yet: done when it appears).
 */
void		 outbox_start(struct outbox *);

/* One line read: its bytes (without '\n'), valid until the next read. */
struct outbox_line {
	const char	*line;
	size_t		 len;
	uint64_t	 end_off;	/* offset just after its '\n': names the entry */
	bool		 overlong;	/* over the line bound: skipped (logged), no bytes */
};

/*
 * The next complete ('\n'-terminated) line after the window.  1 with l
 * filled; 0 when there is none yet (a torn last line waits for its '\n'),
 * or on a transient error (hold was called).  The line must be passed to
 * outbox_take, outbox_skip or outbox_unread before the next read.
 */
int		 outbox_read(struct outbox_cursor *, struct outbox_line *l);

/* A window entry: read, sent, waiting for its confirmation. */
struct outbox_entry {
	uint64_t	 end_off;	/* names it (outbox_line.end_off) */
	bool		 skip;		/* not sendable: passes the cursor in its turn */
	bool		 confirmed;
	void		*data;		/* data_size bytes for the output (zeroed) */
	uint64_t	 lkey;		/* private: the line's FNV-1a and length */
	uint32_t	 llen;
};

/*
 * The line joins the window, unconfirmed: returns its data, or NULL when
 * out of memory (the line is read again next time).
 */
void		*outbox_take(struct outbox_cursor *, const struct outbox_line *);
/* The line is never sendable (the caller logged why): 0, or -1 as above. */
int		 outbox_skip(struct outbox_cursor *, const struct outbox_line *);
/* A transient error for this line: it is read again (after the caller's backoff). */
void		 outbox_unread(struct outbox_cursor *, const struct outbox_line *);

/*
 * Confirm the entry named end_off (any order), or every entry up to it.
 * The durable cursor moves over the confirmed prefix (saved by
 * outbox_save).  Return how many entries the cursor moved past (skipped
 * ones included; 0 when the confirmation only filled a gap).
 */
size_t		 outbox_confirm(struct outbox_cursor *, uint64_t end_off);
size_t		 outbox_confirm_upto(struct outbox_cursor *, uint64_t end_off);

/* Forget the window: reading starts again at the durable cursor. */
void		 outbox_rewind(struct outbox_cursor *);

/* The window, oldest first: its length, entry k (0 <= k < pending). */
size_t		 outbox_pending(const struct outbox_cursor *);
struct outbox_entry *outbox_entry(struct outbox_cursor *, size_t k);
/* Whether the window may not grow (its bound reached). */
bool		 outbox_full(const struct outbox_cursor *);

const char	*outbox_cursor_name(const struct outbox_cursor *);
/* The durable position: every line before it is confirmed. */
uint64_t	 outbox_cursor_offset(const struct outbox_cursor *);
/* Entries (not skipped) confirmed through this cursor since it was opened. */
uint64_t	 outbox_cursor_confirmed(const struct outbox_cursor *);
/*
 * Bytes not yet confirmed: after the cursor in the file it reads (the live
 * journal up to its acknowledged length) plus, while an older file drains,
 * the current file's size (a segment between the two, rare, is not counted).
 */
uint64_t	 outbox_backlog(const struct outbox_cursor *);

/*
 * Changes whenever the cursors move to another file: an end_off names an
 * entry only within one generation (for caches keyed by it).
 */
uint64_t	 outbox_generation(const struct outbox *);

/* Once a tick (and before reading): notice a rotation, a cut, a new file. */
void		 outbox_check(struct outbox *);
/* Save every cursor that moved, durably.  Also done by outbox_free. */
void		 outbox_save(struct outbox *);
/* Save, close, free (cursors included).  outbox_free(NULL) is a no-op. */
void		 outbox_free(struct outbox *);

/*
 * An output removed from the configuration leaves its cursor in the cursor
 * directory, and the spool keeps every journal segment from the one a
 * cursor there points into: the disk would fill.  Call once at start, after
 * every output opened its cursors: each cursor file in dir that no outbox of
 * this process opened (compared by directory and name) is moved to
 * dir/stale/ (logged with its name and offset), where it keeps nothing.  An
 * output configured again later gets it back at outbox_cursor_open() and
 * resumes from it.  A <cursor>.tmp a crashed save left, of a cursor no
 * outbox opened, is removed (logged; not counted).  Returns how many were
 * moved, -1 when dir cannot be read (logged; nothing moved).
 */
int		 outbox_set_aside_stale(const char *dir);

/*
 * A reception record's message, read for sending: the record's sha256 and
 * at most limit bytes of <spool_dir>/messages/<sha256>.eml.  Returns 0;
 * OUTBOX_SKIP when it can never be sent (logged: not a reception record,
 * the file is gone: ENOENT, and only that, skips a mail, with a
 * "fosr.output.skipped" event); OUTBOX_RETRY on a transient error (hold
 * was called: no descriptor, no memory, an I/O error).  m's buffer is
 * reused from call to call; outbox_message_free releases it.
 */
#define OUTBOX_SKIP	-1
#define OUTBOX_RETRY	-2
struct outbox_message {
	char		 sha[65];	/* lower-case hex */
	unsigned char	*body;		/* the first len bytes of the file */
	size_t		 len;
	uint64_t	 size;		/* the file's size (len < size: cut at limit) */
	size_t		 cap;
};
int		 outbox_message(struct outbox_cursor *, const struct outbox_line *,
		    size_t limit, struct outbox_message *m);
/* Release m's buffer when it grew large (call after each use) or when done. */
void		 outbox_message_trim(struct outbox_message *m);
void		 outbox_message_free(struct outbox_message *m);

/* FNV-1a, 64 bits (matches a confirmation with the entry that sent it). */
uint64_t	 outbox_fnv64(const void *, size_t);

#endif
