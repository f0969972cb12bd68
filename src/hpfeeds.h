/*
 * hpfeeds publisher: publishes every mail recorded in the spool's journal
 * (<spool>/receptions.jsonl) to each configured channel of an hpfeeds broker,
 * at least once, in journal order.
 *
 * The journal is the durable outbox.  Each channel keeps a cursor, the byte
 * offset in the journal up to which every entry is confirmed, in
 * <spool>/feed/<hex of channel name>.cursor (tmp + fsync + rename).  An entry
 * is confirmed when the broker echoes it back (the identity subscribes to the
 * channel, once per connection), or, for a channel the identity may not
 * subscribe to, when the kernel reports every byte sent so far acknowledged by
 * the broker (SIOCOUTQ = 0) and the connection is still up a moment later.
 * After a reconnect or a restart everything after the cursor is sent again:
 * duplicates are possible, losses are not.
 *
 * Everything runs on the caller's event loop and never blocks it: the work
 * per callback is bounded and the journal is read in bounded chunks.
 */
#ifndef FOSR_HPFEEDS_H
#define FOSR_HPFEEDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct cfg_feed;
struct hpf;

/*
 * Start publishing: reads the cursors, connects (asynchronously) and starts
 * sending the backlog.  feed is copied; spool_dir must hold the journal (it
 * may not exist yet).  persona and hostname (copied; the persona is kept)
 * shape the Received header of raw payloads (feed->payload raw with
 * received_header: record_received_header()); they may be NULL otherwise.
 * Returns NULL with err filled when the feed is not usable (e.g. no channel)
 * or the cursor directory cannot be created.
 */
/*
 * With feed->broker a name: make its resolver (libevent's evdns on base)
 * now, before a chroot: evdns reads resolv.conf and the hosts file, and
 * seeds its query IDs, when it is created (in a chroot: none of them).
 * hpf_new() takes it; without this call the publisher makes it at its first
 * connection (no chroot: the subscriber tool, tests).  0, or -1 with err.
 */
int		 hpf_prepare(struct event_base *base, const struct cfg_feed *feed,
		    char *err, size_t errlen);

struct persona;
struct hpf	*hpf_new(struct event_base *base, const struct cfg_feed *feed,
		    const char *spool_dir, const struct persona *persona,
		    const char *hostname, char *err, size_t errlen);

/*
 * With feed->events_channel set, also publish every line of the JSON event
 * log at path (the same durable cursor scheme; a rotated log is followed from
 * its start).  Call right after hpf_new(), before the loop runs.  0, or -1
 * with err filled (events_channel equal to a mail channel).  No-op when either
 * the channel or path is empty.
 */
int		 hpf_set_event_log(struct hpf *, const char *path, char *err, size_t errlen);

/*
 * With feed->parsed_channel set, also publish every line of the analysis
 * worker's parsed journal (<spool>/parsed.jsonl and its numbered segments:
 * one fosr.mail.parsed document each, as it is) on that channel, with the
 * same durable cursor scheme; a document of a mail a rule keeps off the
 * outputs ("publish": false) is not published.  fn (may be NULL) gives the
 * live file's inode and the length of its durable lines
 * (aw_parsed_committed).  Call right after hpf_new(), before the loop runs.
 * 0, or -1 with err filled (the name of another channel).  No-op when the
 * channel is empty.
 */
typedef void	(*hpf_limit_fn)(void *arg, uint64_t *ino, uint64_t *len);
int		 hpf_set_parsed(struct hpf *, hpf_limit_fn fn, void *arg, char *err,
		    size_t errlen);

/* Sensor name added to payloads when metadata is on (copied; NULL = none). */
void		 hpf_set_sensor(struct hpf *, const char *sensor);

/* New journal lines may be there: publish them soon (cheap; call after every commit). */
void		 hpf_kick(struct hpf *);
/* The same, with the signature of struct smtp_server's on_mail (arg = the hpf). */
void		 hpf_on_mail(void *arg, const char *record, size_t len);
/*
 * The live journal's limit: fn(arg, &ino, &len) gives the current journal
 * file's inode and the length of its acknowledged lines; the publisher reads
 * that file no further (a failed append is cut back behind a reader).
 */
void		 hpf_set_journal_limit(struct hpf *, hpf_limit_fn, void *arg);

/* Save the cursors, close the connection, free.  hpf_free(NULL) is a no-op. */
void		 hpf_free(struct hpf *);

/* Counters for status lines and tests. */
struct hpf_stats {
	uint64_t	 published;	/* PUBLISH frames written */
	uint64_t	 confirmed;	/* entries confirmed (all channels) */
	uint64_t	 connects;	/* connection attempts */
	uint64_t	 skipped;	/* journal lines that could not be published (private ones not counted) */
	uint64_t	 truncated;	/* mails published cut to the frame limit */
};
void		 hpf_get_stats(const struct hpf *, struct hpf_stats *out);

/*
 * A subscriber (the operator tool, hpfeeds_sub.c): connect with the feed's
 * identity and secret, subscribe once to each channel (and the events
 * channel), and call fn for every publish received (borrowed for the call).
 * Reconnects with backoff while the loop runs.  NULL with err filled.
 * hpf_free() ends it.
 */
struct hpf_frame;
typedef void	(*hpf_sub_fn)(void *arg, const struct hpf_frame *);
struct hpf	*hpf_subscribe(struct event_base *, const struct cfg_feed *, hpf_sub_fn fn,
		    void *arg, char *err, size_t errlen);

#endif
