/*
 * Numbered segments of an append-only journal of lines, read through outbox
 * cursors (outbox.h, OUTBOX_JOURNAL): <dir>/<base> is the live file; at a
 * size it is renamed <dir>/<base>.<n, 20 digits> (n one more than the last)
 * and a new live file starts.  An outbox follows the segments by number.
 *
 * A segment is deleted only once every reader is past it: beyond the newest
 * keep segments, and older than the oldest segment any cursor file in
 * cursor_dir ("<offset> ino=<n> ...", outbox_cursor.c) points into.  When
 * in doubt (a cursor or the directory cannot be read, a cursor names no
 * inode), nothing is deleted.
 *
 * Used for the analysis worker's parsed journal (parsed.jsonl); the
 * reception journal (spool.c) follows the same rules with its own code.
 */
#ifndef FOSR_JSEG_H
#define FOSR_JSEG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* <dir>/<base>.<n, 20 digits>.  0, or -1 when buf is too small. */
int		 jseg_path(char *buf, size_t len, const char *dir, const char *base,
		    unsigned long long n);
/* Whether a directory entry's name is a segment of base; its number in *n. */
bool		 jseg_name(const char *name, const char *base, unsigned long long *n);
/*
 * The highest segment number in dir (0: none) and the bytes of every
 * segment (NULL: not wanted).  0, or -1 with errno.
 */
int		 jseg_scan(const char *dir, const char *base, unsigned long long *last,
		    uint64_t *bytes);
/*
 * Delete the segments every cursor in cursor_dir is past (see above),
 * logging each with who.  The bytes deleted are added to *freed.  Returns
 * the number deleted, or -1 when nothing could be decided (logged).
 */
int		 jseg_prune(const char *dir, const char *base, const char *cursor_dir,
		    int keep, const char *who, uint64_t *freed);

#endif
