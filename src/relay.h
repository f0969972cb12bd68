/*
 * Relaying of relay probes under durable caps.
 *
 * After a capture is durable, main hands its reception record (record.h) to
 * relay_consider().  The message is read and the
 * rules run on a worker thread; the decision, the caps and every send are
 * made on the event loop thread:
 *
 *   rules say relay?  -> smuggling anomalies, recipients that route
 *   (relay_dest.h), never-relay list -> caps (reserved in memory at once,
 *   then written and fsync'ed on the worker) -> dry-run: recorded only;
 *   live: MX lookup (c-ares), only global unicast addresses that are not
 *   our own (relay_dest.h; the smarthost and test server are exempt), SMTP
 *   with STARTTLS under a deadline per attempt, next MX on failure.
 *
 * Events: fosr.relay.decision, fosr.relay.attempt, fosr.relay.result.  The
 * outcome is kept in <spool>/relay/<sha256>.json; the caps journals are
 * <spool>/relay/caps.log (live sends, the console's too) and
 * <spool>/relay/caps-dry-run.log (what dry-run would have sent).
 */
#ifndef FOSR_RELAY_H
#define FOSR_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config.h"
#include "rules.h"
#include "smtp_session.h"

struct event_base;
struct relay;

struct record;

/*
 * Why a parsed record may not be relayed whatever the rules say (smuggling
 * anomalies; recipients with address literals, source routes, '%' '!' '@'
 * in the local part, bad domains): 0, or -1 with why filled.  The daemon's
 * decision and the console's verify both ask this.
 */
int		 relay_record_refused(const struct record *, char *why, size_t whylen);

/*
 * Read a stored message (spool_path_message) into a malloc'ed buffer (at most
 * max bytes).  0, or -1 with err filled.
 */
int		 relay_read_message(const char *spool_dir, const char *sha256, uint64_t max,
		    unsigned char **msg, size_t *len, char *err, size_t errlen);

/* The loaded rules file ("" when none is configured or the file is absent). */
struct rules	*relay_rules_load(const struct cfg *, char *path, size_t pathlen,
		    char *err, size_t errlen, bool *absent);

/*
 * Before a chroot: make the relay's resolver and TLS client context, which
 * the next relay_new() takes instead of making its own.  c-ares reads
 * /etc/resolv.conf and keys its query IDs from /dev/urandom when a channel is
 * created (without it, from rand(): the same IDs in every daemon started in
 * one second), and OpenSSL loads the CA bundle into the context: neither is
 * inside a chroot.  0, or -1 with err filled.
 */
int		 relay_prepare(struct event_base *, const struct cfg *, char *err,
		    size_t errlen);

/*
 * Create the relay: opens the caps journals (locking them), loads the rules,
 * starts the worker thread.  hostname is borrowed for the relay's lifetime.
 * NULL with err filled.
 */
struct relay	*relay_new(struct event_base *, const struct cfg *, const char *hostname,
		    char *err, size_t errlen);
void		 relay_free(struct relay *);

/* -t: every relay goes to cfg relay.test_mode.recipient via .server. */
int		 relay_set_test_mode(struct relay *, bool on, char *err, size_t errlen);

/* Consider one durable capture (record = its reception record).  Never blocks. */
void		 relay_consider(struct relay *, const char *record, size_t len);

/* SIGHUP: reload the rules file; a bad file keeps the old rules (logged).  0 or -1. */
int		 relay_reload_rules(struct relay *);

/*
 * The console's send: the same path as relay_consider() (rules, never-relay
 * list, live caps), live: the console calls it only when relay.mode is live
 * or the operator said "send N --live"; -1 when mode is off.  cb gets a
 * one-line summary when everything is finished.  0, or -1 when it could not
 * start.
 */
typedef void	(*relay_done_cb)(void *arg, bool sent, const char *summary);
int		 relay_send_now(struct relay *, const char *record, size_t len,
		    relay_done_cb cb, void *arg);

/*
 * The session's stage hooks (struct smtp_server; arg = the relay, which holds
 * the loaded rules).  The rules of a stage run only when relaying is not off
 * and the stage has rules; the decision itself is probe.h's.
 * EHLO/AUTH/RSET are decided on the loop; DATA on the worker, before the
 * commit: the decision goes into the reception record ("rules", "publish",
 * "tag", "rule"), and relay_consider() takes it from there instead of
 * evaluating again.  Each match is one fosr.rule.match event.
 */
bool		 relay_stage_wanted(void *arg, enum smtp_stage st);
int		 relay_stage_cb(void *arg, const struct smtp_stage_req *req,
		    struct smtp_stage_result *res);
void		*relay_data_cb(void *arg, const struct smtp_stage_req *req,
		    smtp_stage_done_cb done, void *done_arg);
void		 relay_data_cancel(void *arg, void *handle);

/* Jobs not finished yet (tests, shutdown). */
int		 relay_pending(const struct relay *);

/*
 * Tests: replace the network delivery.  hook runs on the loop when a send
 * would start (after the caps are durable); its return is the outcome
 * (0 delivered, -1 failed).
 */
typedef int	(*relay_deliver_hook)(void *arg, const char *sha256, const char *rcpt);
void		 relay_set_deliver_hook(struct relay *, relay_deliver_hook, void *arg);

#endif
