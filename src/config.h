/*
 * Configuration: the main YAML file (-c), the seed's feed_config.yml (-f, YAML
 * or JSON), both read into plain structs that the rest of the daemon treats as
 * read-only.  Parsing never logs: errors are written to the caller's buffer as
 * "FILE:LINE: KEY: what is wrong".
 */
#ifndef FOSR_CONFIG_H
#define FOSR_CONFIG_H

#include <linux/limits.h>	/* PATH_MAX; <limits.h> would find src/limits.h under -Isrc */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fosr_limits.h"

enum tls_mode { TLS_MODE_PLAIN, TLS_MODE_STARTTLS, TLS_MODE_IMPLICIT };

enum auth_outcome {
	AUTH_OUTCOME_ACCEPT,		/* every credential works (the original's behaviour) */
	AUTH_OUTCOME_REJECT,		/* every attempt fails like a real server; still recorded */
	AUTH_OUTCOME_ACCEPT_AFTER,	/* fail the first auth_accept_after attempts of a session */
	AUTH_OUTCOME_POLICY,		/* the credential policy (authdb.h) decides */
};

/* What a listener lets a client do (Debian's master.cf templates). */
enum listener_policy {
	LISTENER_POLICY_RELAY,		/* port 25 of an open relay: anyone may relay */
	LISTENER_POLICY_SUBMISSION,	/* submission(s): TLS first (587), AUTH to relay */
};

struct cfg_listener {
	char		 address[64];	/* numeric IPv4 or IPv6 ("0.0.0.0", "::") */
	int		 port;		/* before port_offset is added */
	enum tls_mode	 tls;
	char		 name[32];	/* "smtp", "submissions", "submission" unless set */
	bool		 if_available;	/* default [::] listener: skipped when the host has no IPv6 */
	enum listener_policy policy;	/* submission on 465/587 unless set */
};

/* A mail's hpfeeds payload (feed.payload). */
enum cfg_payload {
	CFG_PAYLOAD_JSON,	/* {"sha256","msg"} (the seed's; the default) */
	CFG_PAYLOAD_RAW,	/* the .eml's bytes (RFC 5322), for spamtrap-system */
};

struct cfg_feed {
	bool		 enabled;	/* a feed is configured */
	char		 source[PATH_MAX];	/* file it came from (for messages) */
	char		 broker[CFG_NAME_MAX];
	int		 port;
	char		 identity[CFG_NAME_MAX];
	char		 secret[CFG_NAME_MAX];
	char		 channels[CFG_CHANNELS_MAX][CFG_NAME_MAX];
	int		 nchannels;
	char		 events_channel[CFG_NAME_MAX];	/* "" = no events channel */
	char		 parsed_channel[CFG_NAME_MAX];	/* "" = no fosr.mail.parsed channel */
	bool		 tls;
	char		 ca_file[PATH_MAX];
	char		 server_name[CFG_NAME_MAX];	/* "" = broker */
	bool		 metadata;	/* add envelope/peer/... keys to each payload */
	int		 timeout;	/* s: deadline of each connection state */
	enum cfg_payload payload;	/* a mail's payload: the seed's JSON or the .eml's bytes */
	bool		 received_header;	/* raw: our Received header first (default) */
};

/* The AMQP 0-9-1 output (amqp.c): absent = off. */
struct cfg_amqp {
	bool		 enabled;
	char		 host[CFG_NAME_MAX];
	int		 port;		/* 5672, 5671 with tls, unless set */
	char		 vhost[CFG_NAME_MAX];	/* "/" */
	char		 user[CFG_NAME_MAX];
	char		 password[CFG_NAME_MAX];
	char		 exchange[CFG_NAME_MAX];
	char		 exchange_type[32];	/* "topic" */
	char		 routing_key[CFG_NAME_MAX];	/* "" allowed */
	bool		 tls;
	char		 ca_file[PATH_MAX];	/* "" = the system's CAs */
	char		 server_name[CFG_NAME_MAX];	/* "" = host */
	enum cfg_payload payload;	/* a mail's payload: as the feed's (json, raw) */
	bool		 received_header;	/* raw: our Received header first (default) */
	bool		 metadata;	/* the record's keys in a JSON payload (true) */
	int		 timeout;	/* s: connect, login, each RPC */
	bool		 parsed;	/* parsed_routing_key set: */
	char		 parsed_routing_key[CFG_NAME_MAX];	/* fosr.mail.parsed documents */
	char		 dns_server[64];	/* host a name: "addr:port", "" = /etc/resolv.conf */
};

#define CFG_LOCAL_DOMAINS_MAX	16
#define CFG_LOCAL_USERS_MAX	128
#define CFG_LOCAL_USER_LEN	64

/*
 * The local recipient table of the persona: RCPT/VRFY to an unknown user at
 * one of these domains get the real MTA's "User unknown" answer.
 */
struct cfg_local {
	char		 domains[CFG_LOCAL_DOMAINS_MAX][CFG_NAME_MAX];
	int		 ndomains;	/* -1 = not configured: hostname and localhost */
	char		 users[CFG_LOCAL_USERS_MAX][CFG_LOCAL_USER_LEN];
	int		 nusers;	/* -1 = not configured: Debian's default users */
};

struct cfg_limits {
	size_t		 line_length;	/* command line, bytes without CRLF */
	uint64_t	 message_size;	/* SIZE advertised and enforced */
	int		 recipients;	/* per transaction */
	int		 soft_errors;
	int		 hard_errors;
	int		 error_sleep;	/* seconds, after soft_errors */
	int		 idle_timeout;	/* seconds */
	int		 session_lifetime;	/* seconds */
	int		 sessions;	/* all listeners */
	int		 sessions_per_ip;
	int		 banner_delay_ms;	/* 0 = none */
	int		 banner_jitter_ms;
};

enum relay_mode { RELAY_MODE_OFF, RELAY_MODE_DRY_RUN, RELAY_MODE_LIVE };

#define CFG_RELAY_LIST_MAX	64	/* entries of each relay list */
#define CFG_RELAY_ENTRY_MAX	128	/* bytes of one entry */

/* Relay caps; every count is per rolling window (hour or day), 0 = relay nothing. */
struct cfg_relay_caps {
	int		 per_day;	/* relayed mails, all together (default 20) */
	int		 per_hour;
	int		 per_recipient;	/* per recipient address, per day */
	int		 per_domain;	/* per recipient domain, per day */
	int		 per_client_ip;	/* per client address, per day */
	/*
	 * Per client network (its /24, or /64 for IPv6), per day: no one
	 * network takes the whole day (-1: cfg_relay_caps_per_network()).
	 */
	int		 per_client_network;
	int		 max_recipients;	/* recipients of one relayed mail (default 1) */
	uint64_t	 max_size;	/* bytes of one relayed mail */
};

/*
 * The per_client_network cap in force: as configured, or by default a
 * quarter of per_day (at least 1), so the day is shared by 4 networks at
 * least whatever per_day an operator sets.
 */
static inline int
cfg_relay_caps_per_network(const struct cfg_relay_caps *c)
{
	if (c->per_client_network >= 0)
		return c->per_client_network;
	return c->per_day / 4 > 1 ? c->per_day / 4 : 1;
}

/* Outbound SMTP timeouts in seconds (RFC 5321 4.5.3.2, shortened). */
struct cfg_relay_timeouts {
	int		 connect;
	int		 greeting;
	int		 command;	/* EHLO, STARTTLS, MAIL, RCPT, QUIT replies */
	int		 data;		/* DATA block and its final reply */
	int		 attempt;	/* one whole attempt, connect through QUIT */
};

struct cfg_relay {
	enum relay_mode	 mode;		/* default dry-run */
	char		 rules[PATH_MAX];	/* rules file; relative = beside the config; "" = built in */
	char		 own_addresses[CFG_RELAY_LIST_MAX][64];	/* numeric IPs */
	int		 nown;
	struct cfg_relay_caps caps;
	char		 never_relay[CFG_RELAY_LIST_MAX][CFG_RELAY_ENTRY_MAX];
	int		 nnever;
	char		 smarthost[CFG_NAME_MAX];	/* "host:port", "" = MX delivery */
	char		 ipv4_only_domains[CFG_RELAY_LIST_MAX][CFG_RELAY_ENTRY_MAX];
	int		 nipv4_only;
	char		 dns_server[64];	/* "addr:port", "" = the system resolver */
	int		 mx_port;	/* port of MX hosts (25; tests change it) */
	struct cfg_relay_timeouts timeouts;
	char		 test_recipient[CFG_NAME_MAX];	/* -t: every relay goes here */
	char		 test_server[CFG_NAME_MAX];	/* -t: through this host:port */
	/*
	 * Tests only, dangerous: networks ("127.0.0.0/8") a relayed copy may go
	 * to although they are not global unicast (relay_dest.h).  Empty in
	 * production; logged loudly at start when set.
	 */
	char		 allow_destinations[CFG_RELAY_LIST_MAX][CFG_RELAY_ENTRY_MAX];
	int		 nallow;
};

/* The sandbox entered after start (sandbox.h). */
struct cfg_sandbox {
	bool		 seccomp;	/* syscall filter (default true) */
	char		 chroot[PATH_MAX];	/* "" = none (default); absolute */
};

/*
 * The client's name, looked up before the greeting as Postfix's smtpd does
 * (smtpd_peername_lookup): PTR, then the name's A/AAAA must list the address.
 */
struct cfg_client_lookup {
	bool		 enabled;	/* default true */
	char		 dns_server[64];	/* "addr:port", "" = /etc/resolv.conf */
	int		 timeout_ms;	/* the whole lookup, PTR and forward (10000) */
};

/* The Prometheus endpoint (metrics.h): off unless the file has a metrics section. */
struct cfg_metrics {
	bool		 enabled;
	char		 address[64];	/* numeric; default 127.0.0.1 */
	int		 port;		/* required (no port_offset) */
};

/*
 * The analysis worker (issue 15): every received mail, off the SMTP path,
 * driven by the reception journal (analysis_worker.h).
 */
#define ANALYSIS_ATTACHMENT_MAX_DEFAULT	(16ULL * 1024 * 1024)	/* analysis.c's blob_max */
#define ANALYSIS_ATTACHMENT_MAX_CAP	(64ULL * 1024 * 1024)	/* its decoded_max */
struct cfg_analysis {
	bool		 enabled;	/* default true */
	bool		 store_attachments;	/* attachments/<sha256> (default true) */
	uint64_t	 attachment_max;	/* bytes of one attachment stored */
	uint64_t	 campaigns_max;	/* campaigns kept (CAMPAIGN_MAX_DEFAULT) */
};

struct cfg {
	char		 path[PATH_MAX];	/* "" = embedded defaults */
	char		 hostname[CFG_NAME_MAX];	/* "" = gethostname() at start */
	char		 sensor[CFG_NAME_MAX];	/* "" = hostname */
	char		 persona[32];	/* "postfix-3.7" */
	char		 user[64];	/* drop to this user when started as root; "" = stay */
	int		 port_offset;	/* added to every listener port (the original's 6000) */
	struct cfg_listener listeners[CFG_LISTENERS_MAX];
	int		 nlisteners;

	char		 tls_cert[PATH_MAX];	/* generated (self-signed) when missing */
	char		 tls_key[PATH_MAX];
	bool		 tls_configured;	/* a tls: key was given (else the seed's pair may apply) */

	char		 spool_dir[PATH_MAX];
	char		 maildir[PATH_MAX];	/* "" = no Maildir copy */
	uint64_t	 spool_min_free;	/* bytes free on the spool's filesystem */
	uint64_t	 spool_max_bytes;	/* 0 = unlimited */
	uint64_t	 journal_segment;	/* rotate the journal at this size; 0 = never */
	int		 journal_keep;		/* rotated segments kept at least */

	char		 event_log[PATH_MAX];	/* "" = none */

	enum auth_outcome auth_outcome;
	int		 auth_accept_after;
	int		 auth_memory_ttl;	/* seconds a policy login is remembered for its source */
	char		 auth_credentials[PATH_MAX];	/* policy file; relative = beside the config; "" = built in */

	struct cfg_limits limits;
	struct cfg_local local;
	struct cfg_feed	 feed;
	struct cfg_amqp	 amqp;
	struct cfg_relay relay;
	struct cfg_sandbox sandbox;
	struct cfg_client_lookup client_lookup;
	struct cfg_metrics metrics;
	struct cfg_analysis analysis;
};

/* Fill c with the embedded defaults (25/465/587, ./spool, ./fosr-events.json). */
void	cfg_defaults(struct cfg *c);

/*
 * Load the main config at path over c (which holds the defaults).  Unknown
 * keys, wrong types and out-of-range values are errors.  A "listeners" list in
 * the file replaces the default listeners.  Returns 0, or -1 with err filled.
 */
int	cfg_load(struct cfg *c, const char *path, char *err, size_t errlen);

/*
 * Load the seed's feed config (YAML or JSON, "port: 10_000" accepted) into
 * f.  Returns 0, or -1 with err filled.
 */
int	cfg_load_feed(struct cfg_feed *f, const char *path, char *err, size_t errlen);

/*
 * The same two loaders over an in-memory buffer (tests, fuzzing); name is the
 * file name used in error messages and stored as the source/path.
 */
int	cfg_load_buf(struct cfg *c, const char *name, const char *buf,
	    size_t len, char *err, size_t errlen);
int	cfg_load_feed_buf(struct cfg_feed *f, const char *name, const char *buf,
	    size_t len, char *err, size_t errlen);

const char *cfg_tls_mode_name(enum tls_mode);
const char *cfg_auth_outcome_name(enum auth_outcome);
const char *cfg_listener_policy_name(enum listener_policy);
const char *cfg_relay_mode_name(enum relay_mode);

/*
 * The relay rules file as a path usable from the working directory: a
 * relative relay.rules is taken beside the config file (c->path).  "" when
 * no rules file is configured.
 */
void	cfg_relay_rules_path(const struct cfg *c, char *out, size_t outlen);
/* auth.credentials the same way ("" = the built-in default list). */
void	cfg_auth_credentials_path(const struct cfg *c, char *out, size_t outlen);

/*
 * Split "host:port", "[v6]:port" or "host" into host (hostlen bytes) and
 * port; a missing port is defport, or an error when defport is 0.  0 or -1.
 */
int	cfg_hostport(const char *s, char *host, size_t hostlen, int *port,
	    int defport);

#endif
