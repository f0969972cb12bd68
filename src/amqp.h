/*
 * AMQP 0-9-1 publisher (RabbitMQ): publishes every mail recorded in the
 * spool's journal to one exchange, at least once, in journal order, with
 * publisher confirms.
 *
 * The journal is the durable outbox (outbox.h), as for hpfeeds: one cursor,
 * in <spool>/feed/<hex of "amqp:" exchange "/" routing_key>.cursor, that
 * moves only over entries the broker confirmed with basic.ack.  A nack, or
 * a return (mandatory, unroutable), keeps the entry: it and what follows are
 * published again after a backoff.  After a reconnect or a restart
 * everything after the cursor is published again: duplicates are possible,
 * losses are not.
 *
 * librabbitmq's API blocks, so the connection runs on its own thread, with
 * its own outbox; the event loop only wakes it (amq_kick) and hands it the
 * journal's committed length.
 */
#ifndef FOSR_AMQP_H
#define FOSR_AMQP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct cfg_amqp;
struct amq;

/*
 * The live journal's limit (as hpf_set_journal_limit): fn(arg, &ino, &len)
 * gives the journal file's inode and its acknowledged length.  It is called
 * on the loop's thread only (at each kick and once a second) and its answer
 * handed to the publisher thread.
 */
typedef void	(*amq_limit_fn)(void *arg, uint64_t *ino, uint64_t *len);

/*
 * Open the cursor and start the thread (it connects with backoff).  a is
 * copied; sensor names the sensor in JSON payloads (NULL = none); persona
 * (kept, read by the thread: a static table) and hostname (copied) shape
 * the Received header of raw payloads (a->payload raw with
 * received_header), NULL otherwise; fn may be NULL (no limit).  NULL with
 * err filled.  Start it before the sandbox is entered (its filter covers
 * every thread).
 */
/*
 * With a host name (not an address): make its resolver (c-ares, on an
 * event base the publisher thread runs during a lookup) before a chroot,
 * where resolv.conf and /dev/urandom are still there; amq_new() takes it
 * (and makes it when this was not called).  0, or -1 with err filled.
 */
int		 amq_prepare(const struct cfg_amqp *a, char *err, size_t errlen);

struct persona;
struct amq	*amq_new(struct event_base *base, const struct cfg_amqp *a,
		    const char *spool_dir, const char *sensor, const struct persona *persona,
		    const char *hostname, amq_limit_fn fn, void *fn_arg, char *err,
		    size_t errlen);

/* New journal lines: publish them soon (the loop's thread; cheap). */
void		 amq_kick(struct amq *);

/* Stop the thread, save the cursor, free.  amq_free(NULL) is a no-op. */
void		 amq_free(struct amq *);

struct amq_stats {
	uint64_t	 published;	/* basic.publish sent */
	uint64_t	 confirmed;	/* entries acknowledged (the cursor passed them) */
	uint64_t	 nacked;	/* basic.nack: published again */
	uint64_t	 returned;	/* basic.return (unroutable): published again */
	uint64_t	 connects;	/* connection attempts */
	uint64_t	 backlog;	/* journal bytes not confirmed (outbox_backlog) */
	bool		 connected;
};
void		 amq_get_stats(struct amq *, struct amq_stats *out);

/*
 * With cfg->parsed_routing_key: the analysis worker's limit on the live
 * parsed journal (aw_parsed_committed, arg the worker; fn NULL when analysis
 * is off).  The parsed documents are published to the exchange with that
 * key (channel 2, confirmed, cursor "amqp-parsed:<exchange>/<key>") once
 * this was called.  The loop's thread, right after amq_new().
 */
void		 amq_set_parsed_limit(struct amq *, amq_limit_fn fn, void *arg);
/* Parsed documents published and confirmed since the start. */
void		 amq_get_parsed_stats(struct amq *, uint64_t *published,
		    uint64_t *confirmed);

/*
 * Pure helpers (unit-tested).  The exponential backoff after a failure:
 * 1 s, 2 s, 4 s ... 60 s.
 */
int		 amq_backoff_next(int ms);
/* The cursor's name for an exchange and routing key: "amqp:<exchange>/<key>". */
int		 amq_cursor_name(char *out, size_t outlen, const char *exchange,
		    const char *routing_key);

#endif
