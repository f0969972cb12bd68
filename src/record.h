/*
 * The reception record: the JSON line of <spool>/receptions.jsonl that says
 * one mail was accepted (spool.h: it is durable before the 250).  This module
 * owns its shape: the writer (the session fills a struct record_in), the
 * parser (relay, console), the DATA decision kept in it ("rules"), and the
 * members the hpfeeds publisher copies into a payload's metadata.  No other
 * file spells a record's keys.
 *
 * One line, members in this order (the bytes are checked whole by
 * test_smtp_session.test_record_bytes and test_record):
 *   time session queue_id sha256 size sensor src_ip src_port dst_ip dst_port
 *   listener client_name reverse_client_name [client_name_status] helo
 *   protocol tls auth mail_from rcpt_to [body] smtputf8 transfer outcome
 *   [publish [tag] rule rule_stage [reply]] [rules] anomalies
 */
#ifndef FOSR_RECORD_H
#define FOSR_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct event_conn;
struct jbuf;
struct persona;
struct rules_decision;

#include "fosr_limits.h"

/* Recipients a record may hold: all the session takes (more: refused). */
#define RECORD_RCPT_MAX		SMTP_RCPT_MAX
_Static_assert(RECORD_RCPT_MAX >= SMTP_RCPT_MAX, "the parser must read every recipient");

/* A reception record, parsed (what its readers use of it). */
struct record {
	char		 sha256[65];
	char		 queue_id[32];
	char		 session[20];
	char		 time[40];
	uint64_t	 size;
	char		 src_ip[64];
	int		 src_port;
	char		 dst_ip[64];
	int		 dst_port;
	char		 helo[256];
	char		 client_name[256];	/* verified name; "" or "unknown": none */
	char		 protocol[8];
	bool		 tls;
	bool		 auth;
	char		 auth_user[256];
	char		 auth_pass[256];
	char		*mail_from;	/* whole, whatever its length (never NULL once parsed) */
	char		**rcpt;		/* nrcpt addresses, whole */
	int		 nrcpt;
	/* Anomalies of the capture that make it unfit to relay (relay_record_refused). */
	bool		 smuggling;	/* "smuggling": <LF>.<LF>, <CR>.<CR>... */
	bool		 bare_cr;	/* "bare_cr" */
};

/*
 * Parse a record (the first of a duplicated key counts); NULL with err
 * filled when it is not a usable record: not a JSON object, no valid
 * sha256, no mail_from or rcpt_to (or not a string, not an array), a
 * recipient that is not a string, more than RECORD_RCPT_MAX recipients.
 * Unknown members are ignored; an optional one of the wrong type or out
 * of range (a port past 65535) is as if absent.  mail_from and the
 * recipients come back whole; a string longer than another field is cut
 * to it at a UTF-8 boundary.
 */
struct record	*record_parse(const char *json, size_t len, char *err, size_t errlen);
void		 record_free(struct record *);

/* The connection facts of a record's events (pointers into the record). */
void		 record_conn(const struct record *, struct event_conn *);

/* Calls put(arg, address, len) for each recipient in order; 0, or -1 when they cannot be read. */
typedef int	(*record_rcpt_each)(const void *src, void (*put)(void *, const char *, size_t),
		    void *arg);

/* What the session knows of an accepted mail: the writer's input (strings NUL-terminated). */
struct record_in {
	const char	*time;		/* NULL: now (log_timestamp) */
	uint64_t	 session;
	const char	*queue_id;
	const char	*sha256;
	uint64_t	 size;
	const char	*sensor;
	const char	*src_ip;
	int		 src_port;
	const char	*dst_ip;
	int		 dst_port;
	const char	*listener;
	const char	*client_name;	/* verified; "": "unknown" */
	const char	*reverse_name;	/* PTR; "": "unknown" */
	const char	*name_status;	/* NULL: not written */
	const char	*helo;		/* raw client bytes (escaped) */
	const char	*protocol;	/* "ESMTP", "SMTP", "none" */
	bool		 tls;		/* then: */
	const char	*tls_version, *tls_cipher, *tls_sni;
	int		 tls_bits;
	bool		 auth;		/* then: */
	const char	*auth_mech, *auth_user, *auth_pass;
	const char	*auth_challenge;	/* NULL: none */
	const char	*mail_from;
	record_rcpt_each rcpt_each;	/* the recipients, from rcpt_src */
	const void	*rcpt_src;
	const char	*body;		/* "" or NULL: not written */
	bool		 smtputf8;
	const char	*transfer;	/* "DATA", "BDAT" */
	/* The rule that decided the mail (DATA's, or an earlier stage's). */
	bool		 ruled;		/* then: */
	bool		 publish;
	const char	*tag;		/* "": not written */
	const char	*rule;
	const char	*rule_stage;
	const char	*reply;		/* NULL: not written */
	const char	*rules;		/* the DATA decision (record_decision_json), or NULL */
	const char *const *anomalies;	/* names */
	size_t		 nanomalies;
};

/*
 * Append the record (one JSON object, no newline) to jb.  When the
 * recipients cannot be read jb is marked oom: no record.
 */
void		 record_write(struct jbuf *, const struct record_in *);

/* The DATA decision as the JSON object a record keeps under "rules" (malloc'd; NULL: oom). */
char		*record_decision_json(const struct rules_decision *);

/*
 * Read that decision back from a whole record line: true with d filled
 * (cleared first), false when the record holds none.
 */
bool		 record_decision(const char *json, size_t len, struct rules_decision *d);

/*
 * The Received header our MTA adds on reception, the persona's (persona.h,
 * the one place that defines its shape: for postfix-3.7 Postfix's smtpd,
 * CRLF line ends, folded on three lines).  With rcpt (one recipient):
 *
 *   Received: from HELO (NAME [ADDR])
 *   	by HOSTNAME (Postfix) with ESMTP[S][A] id QID
 *   	for <RCPT>; Thu, 27 Nov 2025 04:35:30 +0000 (UTC)
 *
 * With rcpt NULL (several recipients) no "for" clause, as smtpd writes it:
 *
 *   	by HOSTNAME (Postfix) with ESMTP[S][A] id QID;
 *   	Thu, 27 Nov 2025 04:35:30 +0000 (UTC)
 *
 * HELO, NAME and RCPT keep only printable ASCII (others as '?': no header
 * injection); NAME is the verified client name or "unknown", HELO is NAME
 * when none was sent; an IPv6 ADDR gets Postfix's "IPv6:" prefix.  Used for
 * a relayed copy (relay_send.c) and a raw hpfeeds or AMQP payload
 * (hpf_payload_raw, hpfeeds_wire.c).
 * Returns its length (0 if out is too small).
 */
size_t		 record_received_header(char *out, size_t outlen, const struct persona *,
		    const struct record *, const char *hostname, const char *qid,
		    const char *rcpt, time_t when);

/* The record's time as a time_t: 0, or -1 when it is not an ISO UTC time. */
int		 record_when(const struct record *, time_t *);

/*
 * The members the hpfeeds publisher copies, raw, into a payload's metadata,
 * in this order (record_meta_keys[0 .. RECORD_META_NKEYS-1]).
 */
#define RECORD_META_NKEYS	16
extern const char *const record_meta_keys[RECORD_META_NKEYS];

#endif
