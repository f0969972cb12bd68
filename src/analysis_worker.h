/*
 * The analysis worker (issue 15): every received mail analysed after its 250
 * and off the SMTP path, on a thread of its own, driven by the reception
 * journal through its own durable cursor ("analysis" in <spool>/feed, so the
 * spool keeps the segments it still reads).  Per mail:
 *
 *	analysis_fields() of <spool>/messages/<sha256>.eml
 *	attachments/<sha256> written (tmp + fdatasync + rename), if stored
 *	a fosr.mail.parsed event, the same line appended to <spool>/parsed.jsonl
 *
 * and per batch (at most 64 mails or 250 ms), in this order: parsed.jsonl
 * fdatasync'ed, the campaign table saved (<spool>/campaigns), the cursor
 * confirmed past the batch and saved.  A crash before the cursor is saved
 * analyses that batch again at the restart (a second event and line, the
 * campaign counted twice): each mail at most once more; none is skipped.
 * A failed sync of parsed.jsonl or attachments/ (or of the spool directory
 * while a parsed.jsonl just created or rotated may lack its name on disk)
 * confirms nothing: the unsynced lines are cut off and the batch is
 * analysed again after the backoff (FOSR_TEST_HOOKS steps "parsed_sync",
 * "parsed_dirsync").
 * A torn last line of parsed.jsonl is cut at the start.
 *
 * aw_new() loads libmagic (before the chroot and the sandbox); aw_start()
 * opens the files and starts the thread (after dropping to the user, before
 * sandbox_enter()); aw_kick() after each commit; aw_free() stops it.
 */
#ifndef FOSR_ANALYSIS_WORKER_H
#define FOSR_ANALYSIS_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "outbox.h"

struct cfg_analysis;
struct aw;

struct aw	*aw_new(const struct cfg_analysis *, char *err, size_t errlen);
/*
 * Before aw_start(): count parsed.jsonl, its segments and attachments/ in
 * sp's max_bytes (sp NULL: no budget; attachments are then not stored once
 * it is reached), and rotate parsed.jsonl at seg_size bytes (0: never) to
 * parsed.jsonl.<n>; a segment is deleted beyond the newest seg_keep once
 * every cursor in <spool>/feed is past it (jseg.h).
 */
struct spool;
void		 aw_set_journal(struct aw *, struct spool *sp, uint64_t seg_size,
		    int seg_keep);
/* fn gives the live journal's acknowledged length (any thread). */
int		 aw_start(struct aw *, const char *spool_dir, outbox_limit_fn fn,
		    void *fnarg, char *err, size_t errlen);
void		 aw_kick(struct aw *);
/*
 * The live parsed journal's inode and the length of its durable lines (an
 * outbox_limit_fn, arg = the worker; any thread): its readers (the hpfeeds
 * parsed_channel, the AMQP parsed_routing_key) read no further, so nothing
 * is published that a crash could take back.
 */
void		 aw_parsed_committed(void *arg, uint64_t *ino, uint64_t *len);
void		 aw_free(struct aw *);

#endif
