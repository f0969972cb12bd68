/*
 * SMTP server sessions: the RFC 5321 state machine behind every listener.
 *
 * One struct smtp_session per connection, driven by a bufferevent (a socket
 * bufferevent, replaced by an OpenSSL one for implicit TLS or after STARTTLS).
 * Commands are cut out of the input buffer one line at a time, bounded by
 * limits.line_length, and dispatched through the commands[] table; every reply
 * text comes from the persona.  The message body streams from the input
 * buffer through a dot-unstuffing scanner into the spool; the 250 is sent from
 * the spool's commit callback, once the message and its reception record are
 * durable.
 *
 * A session is never freed inside a call chain that touches it again: code
 * marks it SF_CLOSING and every top-level callback ends in smtp_maybe_free().
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/limits.h>	/* PATH_MAX: <limits.h> resolves to src/limits.h under -Isrc */
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "authdb.h"
#include "config.h"
#include "dns.h"
#include "fosr_limits.h"
#include "log.h"
#include "metrics.h"
#include "persona.h"
#include "record.h"
#include "smtp_data.h"
#include "smtp_parse.h"
#include "smtp_session.h"
#include "spool.h"
#include "tls.h"
#include "util.h"

#define SMTP_OUT_HIGHWATER	(256 * 1024)	/* stop reading while this much is unsent */
#define SMTP_STOP_GRACE		30		/* seconds a stopping session may finish */
/*
 * Recipient bytes a transaction keeps in memory; the rest go to a file (as
 * Postfix's smtpd writes them to its queue file): 1000 recipients of 2 KB
 * must not cost 2 MB of memory a session.
 */
#define SMTP_RCPT_MEM		(8 * 1024)
#define SMTP_SASL_MAX		(SMTP_AUTH_LINE_MAX / 4 * 3 + 3)

enum smtp_state {
	SMTP_STATE_INIT,	/* before the banner: client lookup, delay or implicit TLS handshake */
	SMTP_STATE_COMMAND,
	SMTP_STATE_AUTH,	/* waiting for a SASL response line */
	SMTP_STATE_DATA,	/* reading the DATA body */
	SMTP_STATE_BDAT,	/* reading a BDAT chunk */
	SMTP_STATE_COMMIT,	/* waiting for the spool to make the message durable */
	SMTP_STATE_STARTTLS,	/* "220 Ready to start TLS" is draining */
	SMTP_STATE_HANDSHAKE,	/* TLS handshake after STARTTLS */
	SMTP_STATE_RULES,	/* waiting for the DATA stage hook (before the commit) */
};

/* Session flags. */
/* What every session shares (see smtp_server_opts); internal to this file. */
struct smtp_server {
	/*
	 * The spool failing (full, unwritable): every recipient and mail of
	 * every session meets it, at the clients' pace; logged once per series.
	 */
	struct log_series	 spool_fail;
	struct event_base	*base;
	const struct cfg	*cfg;
	const struct persona	*persona;
	SSL_CTX			*ssl_ctx;	/* NULL: no TLS at all */
	struct spool		*spool;
	const char		*hostname;
	/*
	 * The client name lookup before the greeting (cfg client_lookup); NULL:
	 * none, every client is "unknown" (Postfix's smtpd_peername_lookup = no).
	 */
	struct dns		*dns;
	/* Called after a message is durable, with its journal record. */
	void			(*on_mail)(void *arg, const char *record, size_t len);
	void			*on_mail_arg;
	/*
	 * Stage hooks (all NULL: none).  stage_wanted says whether a stage has
	 * anything to decide (no request is built otherwise).  stage_cb decides
	 * EHLO/HELO, AUTH and RSET synchronously on the loop: 0 with res filled,
	 * or -1 (no decision).  data_cb starts the decision on a complete message
	 * (before it is committed) and returns a handle, or NULL to go on without
	 * one; the session waits, reading nothing, for done.  data_cancel: the
	 * session is going away, done must not run.
	 */
	bool			(*stage_wanted)(void *arg, enum smtp_stage st);
	int			(*stage_cb)(void *arg, const struct smtp_stage_req *req,
				    struct smtp_stage_result *res);
	void			*(*data_cb)(void *arg, const struct smtp_stage_req *req,
				    smtp_stage_done_cb done, void *done_arg);
	void			(*data_cancel)(void *arg, void *handle);
	void			*stage_arg;
	/* Called when a session ends (listener bookkeeping). */
	void			(*on_close)(void *arg, const struct sockaddr *peer);
	void			*on_close_arg;
	/* auth.outcome policy: the credential rules (NULL: loaded at first use). */
	struct authdb		*authdb;
	/* What each user logged in with (one password a mailbox; authdb.h). */
	struct authmem		*authmem;
	unsigned		 nsessions;
	unsigned		 nrefusing;	/* of them, smtp_session_refuse() ones */
	bool			 stopping;	/* graceful shutdown in progress */
	struct smtp_session	*sessions;	/* list of live sessions */
	/* Sessions whose replies go out at the end of this loop pass (internal). */
	struct smtp_session	*flushq;
	struct event		*flush_ev;
	/* Commits in flight: their estimated bytes, and who waits for room (internal). */
	uint64_t		 commit_bytes;
	struct smtp_session	*gateq;
	struct event		*gate_ev;
};


#define SF_HELO		0x0001	/* HELO or EHLO seen */
#define SF_EHLO		0x0002
#define SF_TLS		0x0004
#define SF_AUTHED	0x0008
#define SF_CLOSING	0x0010	/* free once the output is flushed */
#define SF_HELD		0x0020	/* replies are held back (error sleep), timer armed */
#define SF_SKIPLINE	0x0040	/* discarding the rest of an overlong line */
#define SF_PREGREET	0x0080	/* client spoke before the banner */
#define SF_WRITEBLOCK	0x0100	/* reading paused until the output drains */
#define SF_IMPLICIT	0x0200	/* implicit TLS listener */
#define SF_FLUSHQ	0x0400	/* on srv->flushq: replies go out at the end of the pass */
#define SF_PEER_EOF	0x0800	/* the client closed its side while a commit ran */

/* Anomalies of a transaction (body) and of a session (commands). */
#define AN_BARE_LF	SMTP_DATA_BARE_LF	/* the body's: smtp_data scans it */
#define AN_BARE_CR	SMTP_DATA_BARE_CR
#define AN_NUL		SMTP_DATA_NUL
#define AN_8BIT		SMTP_DATA_8BIT
#define AN_LONG_LINE	SMTP_DATA_LONG_LINE
#define AN_SMUGGLE	SMTP_DATA_SMUGGLE	/* end of data not <CRLF>.<CRLF> */
#define AN_CMD_BARE_LF	0x0040
#define AN_CMD_NUL	0x0080
#define AN_CMD_8BIT	0x0100
#define AN_CMD_LONG	0x0200
#define AN_PREGREET	0x0400
#define AN_PIPELINE_TLS	0x0800	/* data pipelined after STARTTLS (discarded) */
#define AN_TOO_BIG	0x1000

static const struct {
	unsigned	 bit;
	const char	*name;
} anomaly_names[] = {
	{ AN_BARE_LF, "bare_lf" }, { AN_BARE_CR, "bare_cr" }, { AN_NUL, "nul" },
	{ AN_8BIT, "8bit" }, { AN_LONG_LINE, "long_line" }, { AN_SMUGGLE, "smuggling" },
	{ AN_CMD_BARE_LF, "command_bare_lf" }, { AN_CMD_NUL, "command_nul" },
	{ AN_CMD_8BIT, "command_8bit" }, { AN_CMD_LONG, "command_too_long" },
	{ AN_PREGREET, "pregreet" }, { AN_PIPELINE_TLS, "starttls_pipelined" },
	{ AN_TOO_BIG, "too_big" },
};

/* One mail transaction: MAIL FROM up to the end of DATA/BDAT or RSET. */
struct smtp_txn {
	char		*mail_from;
	char		 body[12];		/* BODY= as given */
	bool		 smtputf8;
	uint64_t	 size_param;
	/*
	 * The recipients, NUL-terminated and back to back: the first
	 * SMTP_RCPT_MEM bytes in rmem, the rest in rfd (an unnamed file in the
	 * spool's tmp/).  rview: all of them as an array, only during a hook call.
	 */
	char		*rmem;
	size_t		 rmem_len;
	size_t		 rmem_cap;
	int		 rfd;		/* -1: none */
	bool		 rstuck;	/* rfd's offset lost after a failed write */
	uint64_t	 rfile_len;	/* held in the spool (spool_hold) until freed */
	struct spool	*rspool;
	int		 nrcpt;
	char		**rview;
	int		 overshoot;
	struct spool_msg *msg;			/* open while receiving; owned by spool once committed */
	uint64_t	 size;			/* body bytes counted (also past the limit) */
	unsigned	 anomalies;
	bool		 too_big;
	bool		 bdat_used;
	bool		 bdat_discard;		/* current chunk is read and dropped */
	bool		 bdat_last;
	bool		 bdat_failed;		/* a chunk was too big: the rest is discarded */
	bool		 bdat_nospace;		/* the spool refused the message */
	enum persona_reply bdat_fail;		/* ... with this reply */
	uint64_t	 bdat_left;
	uint64_t	 bdat_chunk;
	struct smtp_data scan;			/* the body scanner (DATA and BDAT) */
	char		 queue_id[16];
	struct timespec	 data_end;		/* end of DATA/BDAT LAST (metrics) */
	char		 sha256[65];
	char		*record;		/* the reception record, for on_mail */
	size_t		 record_len;
	void		*rules_req;		/* the DATA hook's handle while it decides */
	bool		 decided;		/* dres holds the DATA hook's answer */
	struct smtp_stage_result dres;
	bool		 gated;			/* on srv->gateq: waits for commit room */
	uint64_t	 commit_cost;		/* counted in srv->commit_bytes */
	struct smtp_server *commit_srv;
};

/* What a SASL exchange is waiting for. */
enum auth_step { AS_NONE, AS_PLAIN, AS_LOGIN_USER, AS_LOGIN_PASS, AS_CRAM };

struct smtp_auth {
	char		 mech[16];
	char		*user;		/* decoded, NUL-terminated, may be truncated */
	char		*pass;
	char		*authzid;
	char		*raw;		/* the base64 lines as sent, space separated */
	char		*challenge;	/* CRAM-MD5 challenge (plain text) */
	bool		 success;
};

struct smtp_session {
	struct smtp_server	*srv;
	struct smtp_session	*next, *prev;
	struct smtp_session	*flushq_next;	/* on srv->flushq (SF_FLUSHQ) */
	struct smtp_session	*gateq_next;	/* on srv->gateq (txn->gated) */
	const struct cfg_listener *listener;
	struct bufferevent	*bev;
	int			 fd;		/* owned while bev is a plain socket bufferevent */
	SSL			*ssl;
	enum smtp_state		 state;
	unsigned		 flags;
	unsigned		 anomalies;
	uint64_t		 id;
	int			 port;		/* effective local port */
	char			 src_ip[INET6_ADDRSTRLEN];
	int			 src_port;
	char			 dst_ip[INET6_ADDRSTRLEN];
	int			 dst_port;
	struct sockaddr_storage	 peer;
	time_t			 started;
	struct timespec		 t0;
	int			 errors;
	int			 auth_failures;
	unsigned		 nmails;
	unsigned		 ncommands;
	char			 helo[SMTP_DOMAIN_MAX + 1];
	struct tls_info		*tls;
	struct smtp_txn		*txn;
	struct smtp_auth	*auth;		/* last AUTH exchange (kept for the record) */
	enum auth_step		 auth_step;
	struct evbuffer		*heldbuf;	/* replies held back by the error sleep */
	int			 junk;		/* NOOP/VRFY/ETRN/RSET count (Postfix's junk limit) */
	unsigned		 nreplies;	/* reply lines sent */
	int			 refuse;	/* smtp_session_refuse(): the reply instead of the banner */
	const char		*refuse_why;
	char			 last_reply[128];	/* the last one's start, for events */
	bool			 size_rejected;	/* last MAIL SIZE= was over the limit */
	struct event		*timer;		/* lookup bound / banner delay / error sleep / stop grace */
	char			 close_reason[32];
	/*
	 * The client name lookup before the greeting (Postfix's smtpd_peer.c);
	 * the names are "" until it ends, then the verified name or "unknown".
	 */
	struct dns_req		*lookup;
	char			 client_name[DNS_HOST_MAX];
	char			 reverse_name[DNS_HOST_MAX];
	const char		*name_status;
	/* The last EHLO/AUTH/RSET stage match: tag and publish for later mail. */
	struct {
		bool		 set;
		bool		 publish;
		enum smtp_stage	 stage;
		char		 tag[64];
		char		 rule[64];
	} sdec;
};

static const char *const stage_names[] = { "ehlo", "auth", "rset", "data" };

static void	 smtp_read_cb(struct bufferevent *, void *);
static void	 smtp_write_cb(struct bufferevent *, void *);
static void	 smtp_event_cb(struct bufferevent *, short, void *);
static void	 smtp_timer_cb(evutil_socket_t, short, void *);
static void	 smtp_banner(struct smtp_session *);
static bool	 smtp_lookup_start(struct smtp_session *);
static void	 smtp_lookup_cb(void *, const struct dns_peer *);
static void	 smtp_lookup_end(struct smtp_session *, const struct dns_peer *);
static void	 smtp_process(struct smtp_session *);
static bool	 smtp_maybe_free(struct smtp_session *);
static bool	 smtp_output_lost(const struct smtp_session *);
static void	 smtp_flush(struct smtp_session *);
static void	 smtp_flush_later(struct smtp_session *);
static void	 smtp_flushq_cb(evutil_socket_t, short, void *);
static void	 smtp_flushq_remove(struct smtp_session *);
static bool	 smtp_commit_gate(struct smtp_session *);
static void	 smtp_gate_cb(evutil_socket_t, short, void *);
static void	 smtp_gate_remove(struct smtp_session *);
static void	 smtp_message_decide(struct smtp_session *);
static void	 smtp_commit_take(struct smtp_server *, struct smtp_txn *);
static void	 smtp_drained(struct smtp_session *);
static void	 smtp_free(struct smtp_session *);
static void	 smtp_close(struct smtp_session *, const char *reason);
static void	 smtp_reply(struct smtp_session *, enum persona_reply, const struct persona_vars *);
static void	 smtp_error(struct smtp_session *, enum persona_reply, const struct persona_vars *);
static void	 smtp_send_line(struct smtp_session *, const char *, size_t);
static void	 smtp_command(struct smtp_session *, const char *, size_t);
static void	 smtp_txn_free(struct smtp_txn *);
static void	 smtp_txn_reset(struct smtp_session *);
static void	 smtp_data_input(struct smtp_session *, struct evbuffer *);
static void	 smtp_bdat_input(struct smtp_session *, struct evbuffer *);
static void	 smtp_message_end(struct smtp_session *);
static void	 smtp_commit_cb(void *, int, int);
static void	 smtp_message_commit(struct smtp_session *);
static void	 smtp_resume(struct smtp_session *);
static bool	 smtp_waiting(const struct smtp_session *);
static int	 smtp_rcpt_spill_open(struct smtp_session *);
static int	 smtp_rcpt_add(struct smtp_session *, struct smtp_txn *, const char *);
static int	 smtp_rcpt_each(const struct smtp_txn *, void (*)(void *, const char *, size_t),
		    void *);
static void	 smtp_rcpt_view_put(void *, const char *, size_t);
static char	**smtp_rcpt_view(struct smtp_txn *);
static void	 smtp_rcpt_view_free(struct smtp_txn *);
static void	 smtp_rcpt_json(void *, const char *, size_t);
static bool	 smtp_rcpt_jarr(const struct smtp_txn *, struct jbuf *);
static void	 smtp_stage_req_fill(struct smtp_session *, enum smtp_stage,
		    struct smtp_stage_req *);
static int	 smtp_stage_hook(struct smtp_session *, enum smtp_stage, const char *,
		    struct smtp_stage_result *);
static void	 smtp_rule_reply(struct smtp_session *, const struct smtp_stage_result *,
		    bool);
static size_t	 smtp_rule_line(const struct smtp_stage_result *, char *, size_t);
static int	 smtp_helo_hook(struct smtp_session *, const struct smtp_cmdline *,
		    struct smtp_stage_result *);
static bool	 smtp_data_hook(struct smtp_session *);
static void	 smtp_data_done_cb(void *, int, struct smtp_stage_result *);
static void	 smtp_auth_input(struct smtp_session *, const char *, size_t);
static bool	 smtp_auth_fail(struct smtp_session *, enum persona_reply);
static void	 smtp_junk(struct smtp_session *);
static bool	 smtp_unknown_local(const struct smtp_session *, const char *, char *, size_t);
static void	 smtp_event_base(struct smtp_session *, struct jbuf *, const char *);
static void	 smtp_set_timer(struct smtp_session *, int ms);
static void	 smtp_hold_arm(struct smtp_session *);
static void	 smtp_hold_drop(struct smtp_session *);
static void	 smtp_tls_start(struct smtp_session *);
static void	 smtp_tls_switch(struct smtp_session *, enum smtp_state);

/* Command handlers. */
static void	 cmd_helo(struct smtp_session *, const struct smtp_cmdline *);
static void	 cmd_ehlo(struct smtp_session *, const struct smtp_cmdline *);
static void	 cmd_mail(struct smtp_session *, const struct smtp_cmdline *);
static void	 cmd_rcpt(struct smtp_session *, const struct smtp_cmdline *);
static void	 cmd_data(struct smtp_session *, const struct smtp_cmdline *);
static void	 cmd_bdat(struct smtp_session *, const struct smtp_cmdline *);
static void	 cmd_rset(struct smtp_session *, const struct smtp_cmdline *);
static void	 cmd_noop(struct smtp_session *, const struct smtp_cmdline *);
static void	 cmd_quit(struct smtp_session *, const struct smtp_cmdline *);
static void	 cmd_vrfy(struct smtp_session *, const struct smtp_cmdline *);
static void	 cmd_etrn(struct smtp_session *, const struct smtp_cmdline *);
static void	 cmd_starttls(struct smtp_session *, const struct smtp_cmdline *);
static void	 cmd_auth(struct smtp_session *, const struct smtp_cmdline *);
static void	 cmd_unknown(struct smtp_session *, const struct smtp_cmdline *);
static bool	 smtp_needs_tls(const struct smtp_session *);
static bool	 smtp_pre_tls_cmd(enum smtp_cmd);
static void	 smtp_addr_internal(const char *, char *, size_t);
static void	 smtp_unauth_event(struct smtp_session *, const struct smtp_cmdline *,
		    unsigned, bool);
static void	 cmd_forbidden(struct smtp_session *, const struct smtp_cmdline *);

static const struct {
	enum smtp_cmd	 cmd;
	void		(*fn)(struct smtp_session *, const struct smtp_cmdline *);
} commands[] = {
	{ SMTP_CMD_HELO, cmd_helo },
	{ SMTP_CMD_EHLO, cmd_ehlo },
	{ SMTP_CMD_MAIL, cmd_mail },
	{ SMTP_CMD_RCPT, cmd_rcpt },
	{ SMTP_CMD_DATA, cmd_data },
	{ SMTP_CMD_BDAT, cmd_bdat },
	{ SMTP_CMD_RSET, cmd_rset },
	{ SMTP_CMD_NOOP, cmd_noop },
	{ SMTP_CMD_QUIT, cmd_quit },
	{ SMTP_CMD_VRFY, cmd_vrfy },
	{ SMTP_CMD_ETRN, cmd_etrn },
	{ SMTP_CMD_STARTTLS, cmd_starttls },
	{ SMTP_CMD_AUTH, cmd_auth },
	{ SMTP_CMD_HEADERLIKE, cmd_forbidden },
};

static const char *const state_names[] = {
	"init", "command", "auth", "data", "bdat", "commit", "starttls", "handshake", "rules",
};

/* The only writer of s->state; traces the change with -d. */
static void
smtp_enter_state(struct smtp_session *s, enum smtp_state st)
{
	if (log_debug_enabled())
		log_debug("%016llx smtp state %s -> %s", (unsigned long long)s->id,
		    state_names[s->state], state_names[st]);
	s->state = st;
}

/* Fill the connection facts for an event. */
static void
smtp_event_base(struct smtp_session *s, struct jbuf *jb, const char *eventid)
{
	struct event_conn c = {
		.session = s->id, .src_ip = s->src_ip, .src_port = s->src_port,
		.dst_ip = s->dst_ip, .dst_port = s->dst_port, .protocol = "smtp",
	};

	log_event_begin(jb, eventid, &c);
	if (s->client_name[0] != '\0')
		jb_kcstr(jb, "client_name", s->client_name);
}

/* Render an address as text and port. */
static void
sockaddr_text(const struct sockaddr *sa, char *ip, size_t iplen, int *port)
{
	ip[0] = '\0';
	*port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, ip, iplen);
		*port = ntohs(in->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], ip, iplen);
		else
			inet_ntop(AF_INET6, &in6->sin6_addr, ip, iplen);
		*port = ntohs(in6->sin6_port);
	}
}

/* Allocate a session and fill its addresses; NULL when out of memory. */
static struct smtp_session *
smtp_session_alloc(struct smtp_server *srv, const struct cfg_listener *listener,
    int port, const struct sockaddr *peer, socklen_t peerlen)
{
	struct smtp_session *s;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->srv = srv;
	s->listener = listener;
	s->port = port;
	s->fd = -1;
	s->id = util_random_u64();
	s->started = time(NULL);
	clock_gettime(CLOCK_MONOTONIC, &s->t0);
	if (peerlen > sizeof(s->peer))
		peerlen = sizeof(s->peer);
	memcpy(&s->peer, peer, peerlen);
	sockaddr_text(peer, s->src_ip, sizeof(s->src_ip), &s->src_port);
	return s;
}

/* Common start once s->bev exists: callbacks, limits, list, event, banner. */
static struct smtp_session *
smtp_session_start(struct smtp_session *s)
{
	struct smtp_server *srv = s->srv;
	const struct cfg_limits *lim = &srv->cfg->limits;
	struct jbuf jb;

	bufferevent_setcb(s->bev, smtp_read_cb, smtp_write_cb, smtp_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SMTP_READ_HIGHWATER);
	if (lim->idle_timeout > 0) {
		struct timeval tv = { lim->idle_timeout, 0 };
		bufferevent_set_timeouts(s->bev, &tv, &tv);
	}

	s->next = srv->sessions;
	if (srv->sessions)
		srv->sessions->prev = s;
	srv->sessions = s;
	srv->nsessions++;
	metrics_add(M_SESSIONS_ACTIVE, s->listener->name, NULL, 1);
	if (s->refuse)
		srv->nrefusing++;	/* smtp_free() counts it down */

	jb_init(&jb);
	smtp_event_base(s, &jb, "fosr.session.connect");
	jb_kcstr(&jb, "listener", s->listener->name);
	jb_kcstr(&jb, "tls_mode", cfg_tls_mode_name(s->listener->tls));
	log_event_message(&jb, "New connection: %s:%d (%s:%d) [session: %016llx]", s->src_ip,
	    s->src_port, s->dst_ip, s->dst_port, (unsigned long long)s->id);
	log_event_emit(&jb);
	jb_free(&jb);
	log_info("%016llx smtp connected address=%s port=%d listener=%s",
	    (unsigned long long)s->id, s->src_ip, s->src_port, s->listener->name);

	/* A deferred implicit TLS session reads nothing before its handshake. */
	if (!((s->flags & SF_IMPLICIT) && s->ssl == NULL))
		bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	/* Postfix greets once it knows the client's name: the banner follows the lookup. */
	if (smtp_lookup_start(s))
		return s;
	if ((s->flags & SF_IMPLICIT) && s->ssl == NULL) {
		/* No lookup after all: the handshake now; a failure ends the session soon. */
		smtp_tls_switch(s, SMTP_STATE_INIT);
		if (s->flags & SF_CLOSING)
			smtp_set_timer(s, 0);
	}
	/* With implicit TLS the banner follows the handshake (smtp_event_cb). */
	if (!(s->flags & SF_IMPLICIT)) {
		smtp_banner(s);
		smtp_flush_later(s);
	}
	return s;
}

static struct smtp_session *smtp_session_open(struct smtp_server *,
		    const struct cfg_listener *, int, int, const struct sockaddr *,
		    socklen_t, int, const char *);

struct smtp_session *
smtp_session_new(struct smtp_server *srv, const struct cfg_listener *listener,
    int port, int fd, const struct sockaddr *peer, socklen_t peerlen)
{
	return smtp_session_open(srv, listener, port, fd, peer, peerlen, 0, NULL);
}

struct smtp_session *
smtp_session_refuse(struct smtp_server *srv, const struct cfg_listener *listener,
    int port, int fd, const struct sockaddr *peer, socklen_t peerlen, int reply,
    const char *why)
{
	return smtp_session_open(srv, listener, port, fd, peer, peerlen, reply, why);
}

static struct smtp_session *
smtp_session_open(struct smtp_server *srv, const struct cfg_listener *listener,
    int port, int fd, const struct sockaddr *peer, socklen_t peerlen, int refuse,
    const char *why)
{
	struct smtp_session *s;
	struct sockaddr_storage local;
	socklen_t locallen = sizeof(local);

	if ((s = smtp_session_alloc(srv, listener, port, peer, peerlen)) == NULL) {
		close(fd);
		return NULL;
	}
	s->fd = fd;
	s->refuse = refuse;
	s->refuse_why = why;
	if (getsockname(fd, (struct sockaddr *)&local, &locallen) == 0)
		sockaddr_text((struct sockaddr *)&local, s->dst_ip, sizeof(s->dst_ip),
		    &s->dst_port);

	if (listener->tls == TLS_MODE_IMPLICIT && srv->dns != NULL && srv->ssl_ctx != NULL) {
		/*
		 * Postfix's smtpd looks the client up before its TLS handshake
		 * (smtpd_tls_wrappermode): the ClientHello waits in the kernel,
		 * unread, and the TLS bufferevent replaces this one after the
		 * lookup (smtp_lookup_cb).
		 */
		s->flags |= SF_IMPLICIT;
		if ((s->bev = bufferevent_socket_new(srv->base, fd, 0)) == NULL)
			goto fail;
	} else if (listener->tls == TLS_MODE_IMPLICIT) {
		if (srv->ssl_ctx == NULL || (s->ssl = SSL_new(srv->ssl_ctx)) == NULL)
			goto fail;
		s->flags |= SF_IMPLICIT;
		s->bev = bufferevent_openssl_socket_new(srv->base, fd, s->ssl,
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
		if (s->bev == NULL) {
			SSL_free(s->ssl);
			s->ssl = NULL;
			goto fail;
		}
		s->fd = -1;	/* the TLS bufferevent owns fd and SSL now */
	} else {
		/* Not CLOSE_ON_FREE: STARTTLS replaces this bufferevent on the same fd. */
		s->bev = bufferevent_socket_new(srv->base, fd, 0);
		if (s->bev == NULL)
			goto fail;
	}
	return smtp_session_start(s);
fail:
	if (s->bev)
		bufferevent_free(s->bev);
	if (s->fd != -1)
		close(s->fd);
	free(s);
	return NULL;
}

struct smtp_session *
smtp_session_new_bev(struct smtp_server *srv, const struct cfg_listener *listener,
    struct bufferevent *bev, const struct sockaddr *peer, socklen_t peerlen)
{
	struct smtp_session *s;

	if ((s = smtp_session_alloc(srv, listener, listener->port, peer, peerlen)) == NULL) {
		bufferevent_free(bev);
		return NULL;
	}
	snprintf(s->dst_ip, sizeof(s->dst_ip), "%.45s", listener->address);
	s->dst_port = listener->port;
	s->bev = bev;
	return smtp_session_start(s);
}

/*
 * Start the client name lookup (Postfix's smtpd_peer_init(): PTR, then the
 * name's address must be the client's), bounded by client_lookup.timeout_ms.
 * False when there is none to wait for: the name is "unknown" at once.
 */
static bool
smtp_lookup_start(struct smtp_session *s)
{
	struct dns_peer none;

	if (s->srv->dns != NULL && (s->lookup = dns_peer_lookup(s->srv->dns, s->src_ip,
	    smtp_lookup_cb, s)) != NULL) {
		smtp_enter_state(s, SMTP_STATE_INIT);
		smtp_set_timer(s, s->srv->cfg->client_lookup.timeout_ms);
		return true;
	}
	memset(&none, 0, sizeof(none));
	none.status = DNS_PEER_PERM;
	if (s->srv->dns != NULL && dns_peer_pending(s->srv->dns) >= DNS_PEER_PENDING_MAX) {
		/* a storm of clients that leave: their lookups are still pending */
		none.status = DNS_PEER_TEMP;
		snprintf(none.err, sizeof(none.err), "%d client lookups pending",
		    DNS_PEER_PENDING_MAX);
	}
	snprintf(none.name, sizeof(none.name), "unknown");
	snprintf(none.reverse_name, sizeof(none.reverse_name), "unknown");
	smtp_lookup_end(s, &none);
	return false;
}

/* The lookup's answer. */
static void
smtp_lookup_cb(void *arg, const struct dns_peer *p)
{
	struct smtp_session *s = arg;

	s->lookup = NULL;
	if (s->timer)
		evtimer_del(s->timer);
	smtp_lookup_end(s, p);
	if ((s->flags & SF_IMPLICIT) && s->ssl == NULL && !(s->flags & SF_CLOSING))
		smtp_tls_switch(s, SMTP_STATE_INIT);	/* the banner follows the handshake */
	/* The banner: now, or after the handshake (implicit TLS) or the delay. */
	if (!(s->flags & SF_CLOSING) && (!(s->flags & SF_IMPLICIT) || (s->flags & SF_TLS))) {
		smtp_banner(s);
		if (s->state == SMTP_STATE_COMMAND) {
			smtp_process(s);
			smtp_hold_arm(s);
		}
	}
	smtp_maybe_free(s);
}

/* Keep the names the lookup found (p->name is "unknown" unless verified). */
static void
smtp_lookup_end(struct smtp_session *s, const struct dns_peer *p)
{
	static const char *const status_names[] = { "ok", "perm", "temp", "forged" };
	char esc[400];

	snprintf(s->client_name, sizeof(s->client_name), "%s", p->name);
	snprintf(s->reverse_name, sizeof(s->reverse_name), "%s", p->reverse_name);
	s->name_status = status_names[p->status];
	if (s->srv->dns == NULL)
		return;
	/* The names are valid host names; the reason may quote DNS bytes. */
	log_info("%016llx smtp client name=%s reverse_name=%s status=%s%s%s%s",
	    (unsigned long long)s->id, s->client_name, s->reverse_name, s->name_status,
	    p->err[0] ? " reason=\"" : "",
	    p->err[0] ? log_escape(esc, sizeof(esc), p->err, strlen(p->err)) : "",
	    p->err[0] ? "\"" : "");
}

/* Send the banner now, or after the configured delay with jitter. */
static void
smtp_banner(struct smtp_session *s)
{
	const struct cfg_limits *lim = &s->srv->cfg->limits;
	int ms = lim->banner_delay_ms;

	if (s->lookup != NULL)
		return;	/* implicit TLS: the handshake ended first, the lookup greets */
	if (s->refuse) {
		struct jbuf jb;

		smtp_reply(s, (enum persona_reply)s->refuse, NULL);
		jb_init(&jb);
		smtp_event_base(s, &jb, "fosr.session.refused");
		jb_kcstr(&jb, "reason", s->refuse_why);
		log_event_message(&jb, "Connection refused: %s (%s)", s->src_ip, s->refuse_why);
		log_event_emit(&jb);
		jb_free(&jb);
		smtp_close(s, "refused");
		return;
	}

	if (lim->banner_jitter_ms > 0)
		ms += (int)(util_random_u64() % (uint64_t)(lim->banner_jitter_ms + 1));
	if (ms > 0 && !(s->flags & SF_CLOSING)) {
		smtp_enter_state(s, SMTP_STATE_INIT);
		smtp_set_timer(s, ms);
		return;
	}
	if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
		/* Talking before the greeting is what spam bots do. */
		s->flags |= SF_PREGREET;
		s->anomalies |= AN_PREGREET;
	}
	smtp_reply(s, PR_BANNER, NULL);
	smtp_enter_state(s, SMTP_STATE_COMMAND);
}

/* Arm the session's single timer (allocated on first use). */
static void
smtp_set_timer(struct smtp_session *s, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	if (s->timer == NULL)
		s->timer = evtimer_new(s->srv->base, smtp_timer_cb, s);
	if (s->timer == NULL) {
		smtp_close(s, "oom");
		return;
	}
	evtimer_add(s->timer, &tv);
}

/* Banner delay over, error sleep over, or stop grace over. */
static void
smtp_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;

	if (s->flags & SF_HELD) {
		/* Error sleep over: release what was held, go on reading commands. */
		s->flags &= ~SF_HELD;
		if (s->heldbuf && s->bev)
			evbuffer_add_buffer(bufferevent_get_output(s->bev), s->heldbuf);
		smtp_process(s);
		smtp_hold_arm(s);
	} else if (s->lookup != NULL) {
		/* The lookup took too long: the name is "unknown", greet anyway. */
		struct dns_peer p;

		dns_cancel(s->lookup);
		memset(&p, 0, sizeof(p));
		p.status = DNS_PEER_TEMP;
		snprintf(p.name, sizeof(p.name), "unknown");
		snprintf(p.reverse_name, sizeof(p.reverse_name), "unknown");
		snprintf(p.err, sizeof(p.err), "lookup timed out after %d ms",
		    s->srv->cfg->client_lookup.timeout_ms);
		smtp_lookup_cb(s, &p);
		return;	/* smtp_lookup_cb ended in smtp_maybe_free */
	} else if (s->srv->stopping && s->state != SMTP_STATE_INIT) {
		smtp_close(s, "shutdown");
	} else if (s->state == SMTP_STATE_INIT && !(s->flags & SF_CLOSING)) {
		/* Banner delay over: greet. */
		if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
			s->flags |= SF_PREGREET;
			s->anomalies |= AN_PREGREET;
		}
		smtp_reply(s, PR_BANNER, NULL);
		smtp_enter_state(s, SMTP_STATE_COMMAND);
		smtp_process(s);
		smtp_hold_arm(s);
	}
	smtp_maybe_free(s);
}

/*
 * Postfix sleeps error_sleep seconds before every reply once the session has
 * made soft_errors errors.  Here the replies of such a command go to heldbuf
 * and input processing stops until the timer releases them.
 */
static void
smtp_hold_arm(struct smtp_session *s)
{
	const struct cfg_limits *lim = &s->srv->cfg->limits;

	if ((s->flags & SF_HELD) || s->heldbuf == NULL ||
	    evbuffer_get_length(s->heldbuf) == 0)
		return;
	s->flags |= SF_HELD;
	smtp_set_timer(s, lim->error_sleep * 1000);
}

/* Drop held replies (timeout, shutdown). */
static void
smtp_hold_drop(struct smtp_session *s)
{
	if (s->heldbuf)
		evbuffer_drain(s->heldbuf, evbuffer_get_length(s->heldbuf));
	if ((s->flags & SF_HELD) && s->timer)
		evtimer_del(s->timer);
	s->flags &= ~SF_HELD;
}

/* Write one reply line (no CRLF in line), or hold it during an error sleep. */
static void
smtp_send_line(struct smtp_session *s, const char *line, size_t len)
{
	const struct cfg_limits *lim = &s->srv->cfg->limits;
	struct evbuffer *out = bufferevent_get_output(s->bev);

	if (log_debug_enabled()) {
		char esc[600];
		log_debug("%016llx > %s", (unsigned long long)s->id,
		    log_escape(esc, sizeof(esc), line, len));
	}
	if (s->errors >= lim->soft_errors && lim->error_sleep > 0 && !s->srv->stopping) {
		if (s->heldbuf == NULL)
			s->heldbuf = evbuffer_new();
		if (s->heldbuf)
			out = s->heldbuf;
	}
	evbuffer_add(out, line, len);
	evbuffer_add(out, "\r\n", 2);
	metrics_reply(line, len);
	s->nreplies++;
	snprintf(s->last_reply, sizeof(s->last_reply), "%.*s", (int)len, line);
	if (out == s->heldbuf)
		smtp_hold_arm(s);	/* every path: commands, end of DATA, BDAT, commit */
}

/* Send the persona's reply id, expanding its placeholders. */
static void
smtp_reply(struct smtp_session *s, enum persona_reply id, const struct persona_vars *v)
{
	struct persona_vars vars;
	char line[1100];
	const char *tmpl = s->srv->persona->replies[id];
	size_t n;

	if (v)
		vars = *v;
	else
		memset(&vars, 0, sizeof(vars));
	vars.host = s->srv->hostname;
	if (vars.addr == NULL)
		vars.addr = s->src_ip;
	vars.size = s->srv->cfg->limits.message_size;
	if (tmpl == NULL)
		tmpl = s->srv->persona->replies[PR_UNKNOWN];
	n = persona_format(line, sizeof(line), tmpl, &vars);
	smtp_send_line(s, line, n);
}

/* A reply that counts as a client error (Postfix's error_count). */
static void
smtp_error(struct smtp_session *s, enum persona_reply id, const struct persona_vars *v)
{
	smtp_reply(s, id, v);
	s->errors++;
}

/* Mark the session for closing once its output is flushed. */
static void
smtp_close(struct smtp_session *s, const char *reason)
{
	if (s->flags & SF_CLOSING)
		return;
	s->flags |= SF_CLOSING;
	snprintf(s->close_reason, sizeof(s->close_reason), "%s", reason);
	if (s->bev)
		bufferevent_disable(s->bev, EV_READ);
}

/*
 * Plain sessions write their replies here, at the end of each callback,
 * straight to the socket: through the bufferevent each reply costs a write
 * event switched on and off again (two epoll_ctl and a loop pass, measured
 * ~8 epoll_ctl per mail).  Only what the kernel does not take at once, or
 * a write error, goes the bufferevent way (EV_WRITE on, smtp_write_cb when
 * drained, smtp_event_cb on an error).  TLS
 * sessions and bufferevent pairs (no fd) always use the bufferevent.
 */
static void
smtp_flush(struct smtp_session *s)
{
	struct evbuffer *out;
	int n;

	while (s->bev != NULL && s->fd >= 0 && s->ssl == NULL) {
		out = bufferevent_get_output(s->bev);
		if (evbuffer_get_length(out) == 0)
			return;
		do {
			/* A socket bufferevent keeps its output's start frozen but for its own writes. */
			evbuffer_unfreeze(out, 1);
			n = evbuffer_write(out, s->fd);
			evbuffer_freeze(out, 1);
			/*
			 * EAGAIN: the write event finishes the job.  An error (EPIPE,
			 * ECONNRESET): the bufferevent's own write meets it again
			 * and reports it to smtp_event_cb, where errors are handled.
			 */
		} while (evbuffer_get_length(out) > 0 && (n > 0 || (n == -1 && errno == EINTR)));
		if (evbuffer_get_length(out) > 0) {
			bufferevent_enable(s->bev, EV_WRITE);
			return;
		}
		/* Drained: the write interest adding the replies switched on is not needed. */
		bufferevent_disable(s->bev, EV_WRITE);
		/* A TLS switch or reading resumed may bring new replies: go round. */
		smtp_drained(s);
	}
}

/*
 * Queue a plain session's replies for the end of this loop pass.  Then the
 * event lines the pass produced are written first (log_flush: one write for
 * the whole pass, and no reply ever overtakes the event it follows), and the
 * replies of every session after them.  A session whose output already waits
 * for the write event (EV_WRITE on) is left to the bufferevent.
 */
static void
smtp_flush_later(struct smtp_session *s)
{
	struct smtp_server *srv = s->srv;

	if (s->bev == NULL || s->fd < 0 || s->ssl != NULL || (s->flags & SF_FLUSHQ) ||
	    evbuffer_get_length(bufferevent_get_output(s->bev)) == 0 ||
	    (bufferevent_get_enabled(s->bev) & EV_WRITE))
		return;
	if (srv->flush_ev == NULL &&
	    (srv->flush_ev = event_new(srv->base, -1, 0, smtp_flushq_cb, srv)) == NULL) {
		smtp_flush(s);	/* out of memory: write now */
		return;
	}
	if (srv->flushq == NULL)
		event_active(srv->flush_ev, EV_TIMEOUT, 0);
	s->flags |= SF_FLUSHQ;
	s->flushq_next = srv->flushq;
	srv->flushq = s;
}

/* End of the loop pass: the pass's log lines, then every queued session's replies. */
static void
smtp_flushq_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_server *srv = arg;
	struct smtp_session *s;

	log_flush();
	while ((s = srv->flushq) != NULL) {
		srv->flushq = s->flushq_next;
		s->flushq_next = NULL;
		s->flags &= ~SF_FLUSHQ;
		smtp_flush(s);
		smtp_maybe_free(s);
	}
}

/* Take a session off the flush queue (it is being freed). */
static void
smtp_flushq_remove(struct smtp_session *s)
{
	struct smtp_session **pp;

	if (!(s->flags & SF_FLUSHQ))
		return;
	for (pp = &s->srv->flushq; *pp != NULL; pp = &(*pp)->flushq_next)
		if (*pp == s) {
			*pp = s->flushq_next;
			break;
		}
	s->flags &= ~SF_FLUSHQ;
}

/*
 * Whether unsent output can never reach the client: the connection failed or
 * ended.  After a half-close (SF_PEER_EOF) the client may still read, unless
 * it is the other end of a bufferevent pair (tests, fuzzing) that is gone.
 */
static bool
smtp_output_lost(const struct smtp_session *s)
{
	if (s->flags & SF_PEER_EOF)
		return s->fd < 0 && s->ssl == NULL &&
		    bufferevent_pair_get_partner(s->bev) == NULL;
	return strcmp(s->close_reason, "error") == 0 || strcmp(s->close_reason, "eof") == 0;
}

/* Free the session if it is closing and nothing is left to send.  True if freed. */
static bool
smtp_maybe_free(struct smtp_session *s)
{
	smtp_flush_later(s);
	if (!(s->flags & SF_CLOSING))
		return false;
	smtp_hold_arm(s);
	if (s->flags & SF_HELD)
		return false;
	if (smtp_waiting(s))
		return false;	/* the commit or rules callback answers first */
	if (s->bev && evbuffer_get_length(bufferevent_get_output(s->bev)) > 0 &&
	    !smtp_output_lost(s))
		return false;	/* smtp_write_cb or the flush queue comes back when it is flushed */
	smtp_free(s);
	return true;
}

/* Free everything the session owns and log its end. */
static void
smtp_free(struct smtp_session *s)
{
	struct smtp_server *srv = s->srv;
	struct timespec t1;
	double dur;
	struct jbuf jb;

	smtp_flushq_remove(s);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	dur = (double)(t1.tv_sec - s->t0.tv_sec) + (t1.tv_nsec - s->t0.tv_nsec) / 1e9;
	jb_init(&jb);
	smtp_event_base(s, &jb, "fosr.session.closed");
	/* Milliseconds, an integer: one type for Elasticsearch (the text log keeps seconds). */
	jb_kint(&jb, "duration_ms", (long long)(dur * 1000.0));
	jb_kcstr(&jb, "reason", s->close_reason[0] ? s->close_reason : "quit");
	jb_kuint(&jb, "commands", s->ncommands);
	jb_kuint(&jb, "mails", s->nmails);
	jb_kint(&jb, "errors", s->errors);
	if (s->anomalies) {
		jb_key(&jb, "anomalies");
		jb_arr_open(&jb);
		for (size_t i = 0; i < sizeof(anomaly_names) / sizeof(anomaly_names[0]); i++)
			if (s->anomalies & anomaly_names[i].bit)
				jb_cstr(&jb, anomaly_names[i].name);
		jb_arr_close(&jb);
	}
	log_event_message(&jb, "Connection lost after %lld ms (%s), %u mail%s",
	    (long long)(dur * 1000.0), s->close_reason[0] ? s->close_reason : "quit",
	    s->nmails, s->nmails == 1 ? "" : "s");
	log_event_emit(&jb);
	jb_free(&jb);
	log_info("%016llx smtp disconnected reason=%s mails=%u duration=%.3f",
	    (unsigned long long)s->id, s->close_reason[0] ? s->close_reason : "quit",
	    s->nmails, dur);

	if (s->state == SMTP_STATE_RULES && s->txn && s->txn->gated) {
		/* The end of a shutdown: the waiting message is committed now. */
		smtp_gate_remove(s);
		smtp_enter_state(s, SMTP_STATE_COMMAND);
		smtp_commit_take(srv, s->txn);
		smtp_message_commit(s);
	}
	if (s->state == SMTP_STATE_RULES && s->txn && s->txn->rules_req) {
		/*
		 * The end of a shutdown: nobody will wait for the rules any more,
		 * but the message is kept; it is committed without a decision.
		 */
		if (srv->data_cancel)
			srv->data_cancel(srv->stage_arg, s->txn->rules_req);
		s->txn->rules_req = NULL;
		smtp_enter_state(s, SMTP_STATE_COMMAND);
		smtp_message_commit(s);
	}
	if (s->state == SMTP_STATE_COMMIT && s->txn && s->txn->msg) {
		/* The spool owns the message now; it completes without us. */
		spool_msg_detach(s->txn->msg);
		s->txn->msg = NULL;
	}
	if (s->txn)
		smtp_txn_free(s->txn);
	if (s->auth) {
		free(s->auth->user);
		free(s->auth->pass);
		free(s->auth->authzid);
		free(s->auth->raw);
		free(s->auth->challenge);
		free(s->auth);
	}
	if (s->lookup)
		dns_cancel(s->lookup);
	if (s->timer)
		event_free(s->timer);
	if (s->heldbuf)
		evbuffer_free(s->heldbuf);
	free(s->tls);
	if (s->bev)
		bufferevent_free(s->bev);	/* a TLS bufferevent also frees SSL and fd */
	if (s->fd != -1)
		close(s->fd);

	if (s->prev)
		s->prev->next = s->next;
	else
		srv->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	srv->nsessions--;
	metrics_add(M_SESSIONS_ACTIVE, s->listener->name, NULL, -1);
	if (s->refuse)
		srv->nrefusing--;
	if (srv->on_close && !s->refuse)
		srv->on_close(srv->on_close_arg, (struct sockaddr *)&s->peer);
	free(s);
}

/* Input arrived: process as much as the state allows. */
static void
smtp_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;
	const struct cfg_limits *lim = &s->srv->cfg->limits;

	if (lim->session_lifetime > 0 && time(NULL) - s->started > lim->session_lifetime &&
	    !(s->flags & SF_CLOSING) && !smtp_waiting(s)) {
		smtp_reply(s, PR_TIMEOUT, NULL);
		smtp_close(s, "lifetime");
	} else
		smtp_process(s);
	smtp_maybe_free(s);
}

/* Output drained to the low watermark (empty). */
static void
smtp_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;

	/* The bufferevent wrote what the kernel did not take at once: direct writes again. */
	if (s->fd >= 0 && s->ssl == NULL)
		bufferevent_disable(s->bev, EV_WRITE);
	smtp_drained(s);
	smtp_maybe_free(s);
}

/*
 * Everything written: switch to TLS after "220 Ready to start TLS", or read
 * commands again after the client caught up with its replies.
 */
static void
smtp_drained(struct smtp_session *s)
{
	if (s->state == SMTP_STATE_STARTTLS && !(s->flags & SF_CLOSING)) {
		smtp_tls_start(s);
		return;
	}
	if (s->flags & SF_WRITEBLOCK) {
		s->flags &= ~SF_WRITEBLOCK;
		if (!(s->flags & (SF_CLOSING | SF_PEER_EOF)))
			bufferevent_enable(s->bev, EV_READ);
		smtp_process(s);
	}
}

/* Switch the connection to TLS after "220 Ready to start TLS" went out. */
static void
smtp_tls_start(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);

	/*
	 * Whatever the client pipelined after STARTTLS was read in plaintext and
	 * must not be executed inside TLS (CVE-2011-0411): drop it, as Postfix.
	 */
	if (evbuffer_get_length(in) > 0) {
		s->anomalies |= AN_PIPELINE_TLS;
		evbuffer_drain(in, evbuffer_get_length(in));
	}
	smtp_tls_switch(s, SMTP_STATE_HANDSHAKE);
}

/*
 * Replace the plain socket bufferevent by a TLS one accepting a handshake
 * (after STARTTLS, or on an implicit TLS port once the client lookup ended),
 * entering state st.  On failure the session is closing.
 */
static void
smtp_tls_switch(struct smtp_session *s, enum smtp_state st)
{
	struct bufferevent *tbev;

	if ((s->ssl = SSL_new(s->srv->ssl_ctx)) == NULL) {
		smtp_close(s, "tls-error");
		return;
	}
	bufferevent_free(s->bev);
	s->bev = NULL;
	tbev = bufferevent_openssl_socket_new(s->srv->base, s->fd, s->ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (tbev == NULL) {
		SSL_free(s->ssl);
		s->ssl = NULL;
		s->flags |= SF_CLOSING;
		snprintf(s->close_reason, sizeof(s->close_reason), "error");
		return;
	}
	s->fd = -1;
	s->bev = tbev;
	bufferevent_setcb(s->bev, smtp_read_cb, smtp_write_cb, smtp_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SMTP_READ_HIGHWATER);
	if (s->srv->cfg->limits.idle_timeout > 0) {
		struct timeval tv = { s->srv->cfg->limits.idle_timeout, 0 };
		bufferevent_set_timeouts(s->bev, &tv, &tv);
	}
	smtp_enter_state(s, st);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

/* Record the facts of a finished handshake. */
static void
smtp_tls_done(struct smtp_session *s)
{
	struct jbuf jb;
	char esc[300];

	s->flags |= SF_TLS;
	if (s->tls == NULL)
		s->tls = calloc(1, sizeof(*s->tls));
	if (s->tls)
		tls_get_info(s->ssl, s->tls);
	jb_init(&jb);
	smtp_event_base(s, &jb, "fosr.session.tls");
	if (s->tls) {
		jb_kcstr(&jb, "version", s->tls->version);
		jb_kcstr(&jb, "cipher", s->tls->cipher);
		jb_kint(&jb, "bits", s->tls->bits);
		jb_kstr(&jb, "sni", s->tls->sni, strlen(s->tls->sni));
	}
	jb_kcstr(&jb, "mode", (s->flags & SF_IMPLICIT) ? "implicit" : "starttls");
	metrics_inc(M_TLS, s->tls ? metrics_pick(s->tls->version, strlen(s->tls->version),
	    metrics_tls_versions) : "other", NULL);
	log_event_message(&jb, "TLS established (%s): %s %s", (s->flags & SF_IMPLICIT) ?
	    "implicit" : "STARTTLS", s->tls ? s->tls->version : "?", s->tls ? s->tls->cipher : "?");
	log_event_emit(&jb);
	jb_free(&jb);
	log_info("%016llx smtp tls version=%s cipher=%s sni=\"%s\"",
	    (unsigned long long)s->id, s->tls ? s->tls->version : "?",
	    s->tls ? s->tls->cipher : "?",
	    s->tls ? log_escape(esc, sizeof(esc), s->tls->sni, strlen(s->tls->sni)) : "");
}

/* Connection events: TLS handshake done, EOF, errors, timeouts. */
static void
smtp_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_session *s = arg;

	if (what & BEV_EVENT_CONNECTED) {
		smtp_tls_done(s);
		if (s->state == SMTP_STATE_HANDSHAKE) {
			/* RFC 3207 4.2: forget everything learned before TLS. */
			s->flags &= ~(SF_HELO | SF_EHLO | SF_AUTHED);
			s->helo[0] = '\0';
			smtp_txn_reset(s);
			smtp_enter_state(s, SMTP_STATE_COMMAND);
			smtp_process(s);
		} else
			smtp_banner(s);
		smtp_maybe_free(s);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (!smtp_waiting(s) && !(s->flags & SF_CLOSING)) {
			if (s->state != SMTP_STATE_HANDSHAKE &&
			    !(s->state == SMTP_STATE_INIT && s->ssl != NULL)) {
				/* Nothing may wait any longer: no error sleep now. */
				smtp_hold_drop(s);
				s->errors = 0;
				smtp_reply(s, PR_TIMEOUT, NULL);
			}
			smtp_close(s, "timeout");
			bufferevent_enable(s->bev, EV_WRITE);
		} else if (s->flags & SF_CLOSING) {
			snprintf(s->close_reason, sizeof(s->close_reason), "timeout");
			smtp_hold_drop(s);
			evbuffer_drain(bufferevent_get_output(s->bev),
			    evbuffer_get_length(bufferevent_get_output(s->bev)));
		}
		smtp_maybe_free(s);
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		const char *reason = (what & BEV_EVENT_EOF) ? "eof" : "error";
		unsigned long e;

		if (s->ssl && (e = bufferevent_get_openssl_error(bev)) != 0) {
			char buf[256];
			ERR_error_string_n(e, buf, sizeof(buf));
			log_info("%016llx smtp tls error: %s", (unsigned long long)s->id, buf);
			reason = "tls-error";
		}
		if (smtp_waiting(s)) {
			/* The message is being decided on or made durable: let it finish. */
			if ((what & BEV_EVENT_EOF) && strcmp(reason, "eof") == 0) {
				/*
				 * Reading stays on during the wait, so a client that
				 * sent ".", perhaps QUIT, and shut its side is seen
				 * now: it still gets its replies (smtp_resume).
				 */
				s->flags |= SF_PEER_EOF;
				return;
			}
			s->flags |= SF_CLOSING;
			snprintf(s->close_reason, sizeof(s->close_reason), "%s", reason);
			return;
		}
		if (s->state == SMTP_STATE_DATA || s->state == SMTP_STATE_BDAT)
			reason = (what & BEV_EVENT_EOF) ? "eof-in-data" : reason;
		s->flags |= SF_CLOSING;
		smtp_hold_drop(s);
		snprintf(s->close_reason, sizeof(s->close_reason), "%s",
		    strcmp(reason, "eof-in-data") == 0 ? "eof" : reason);
		smtp_free(s);
	}
}

/*
 * Process buffered input in order (PIPELINING) until it runs out or the
 * session must wait: a commit, a held reply, a TLS switch, or closing.
 */
static void
smtp_process(struct smtp_session *s)
{
	const struct cfg_limits *lim = &s->srv->cfg->limits;
	struct evbuffer *in, *out;

	if (s->bev == NULL)
		return;
	in = bufferevent_get_input(s->bev);
	out = bufferevent_get_output(s->bev);
	for (;;) {
		if (s->flags & (SF_CLOSING | SF_HELD | SF_WRITEBLOCK))
			return;
		switch (s->state) {
		case SMTP_STATE_COMMAND:
		case SMTP_STATE_AUTH:
			break;
		case SMTP_STATE_DATA:
			if (evbuffer_get_length(in) == 0)
				return;
			smtp_data_input(s, in);
			continue;
		case SMTP_STATE_BDAT:
			if (evbuffer_get_length(in) == 0 && s->txn && s->txn->bdat_left > 0)
				return;
			smtp_bdat_input(s, in);
			continue;
		default:
			return;
		}

		if (evbuffer_get_length(out) > SMTP_OUT_HIGHWATER) {
			/* The client does not read its replies: stop reading its commands. */
			s->flags |= SF_WRITEBLOCK;
			bufferevent_disable(s->bev, EV_READ);
			return;
		}

		size_t eol_len = 0;
		struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
		size_t maxline = s->state == SMTP_STATE_AUTH ? SMTP_AUTH_LINE_MAX : lim->line_length;
		char stackbuf[4096];
		char *line;
		size_t len;

		if (p.pos < 0) {
			size_t avail = evbuffer_get_length(in);
			if (avail <= maxline || (s->flags & SF_SKIPLINE)) {
				if (s->flags & SF_SKIPLINE)
					evbuffer_drain(in, avail);
				return;
			}
			/*
			 * Overlong line, no LF yet: like Postfix, run its first
			 * line_length bytes as the command and silently drop the
			 * rest of the line.
			 */
			s->anomalies |= AN_CMD_LONG;
			s->flags |= SF_SKIPLINE;
			len = maxline;
			eol_len = 0;
		} else {
			len = (size_t)p.pos;
			if (s->flags & SF_SKIPLINE) {
				evbuffer_drain(in, len + eol_len);
				s->flags &= ~SF_SKIPLINE;
				continue;
			}
			if (len > maxline) {
				/* Run the first maxline bytes; drop the rest of the line. */
				s->anomalies |= AN_CMD_LONG;
				eol_len += len - maxline;
				len = maxline;
			}
		}
		line = len < sizeof(stackbuf) ? stackbuf : malloc(len + 1);
		if (line == NULL) {
			smtp_close(s, "oom");
			return;
		}
		evbuffer_remove(in, line, len);
		evbuffer_drain(in, eol_len);
		if (len > 0 && line[len - 1] == '\r') {
			/* Postfix drops every CR before the LF. */
			while (len > 0 && line[len - 1] == '\r')
				len--;
		} else if (eol_len == 1)
			s->anomalies |= AN_CMD_BARE_LF;
		line[len] = '\0';
		{
			/* Postfix sees a C string: whatever follows a NUL is ignored. */
			char *nul = memchr(line, '\0', len);
			if (nul) {
				s->anomalies |= AN_CMD_NUL;
				len = (size_t)(nul - line);
			}
		}
		if (s->errors >= lim->hard_errors) {
			/* Postfix checks its hard limit when the next command comes. */
			if (line != stackbuf)
				free(line);
			smtp_reply(s, PR_TOO_MANY_ERRORS, NULL);
			smtp_close(s, "too-many-errors");
			return;
		}
		if (s->state == SMTP_STATE_AUTH)
			smtp_auth_input(s, line, len);
		else
			smtp_command(s, line, len);
		if (line != stackbuf)
			free(line);
		if (s->heldbuf && evbuffer_get_length(s->heldbuf) > 0) {
			smtp_hold_arm(s);
			return;
		}
	}
}

/* Dispatch one command line. */
static void
smtp_command(struct smtp_session *s, const char *line, size_t len)
{
	struct smtp_cmdline cl;
	size_t i;

	s->ncommands++;
	if (log_debug_enabled()) {
		char esc[600];
		log_debug("%016llx < %s", (unsigned long long)s->id,
		    log_escape(esc, sizeof(esc), line, len));
	}
	for (i = 0; i < len; i++)
		if ((unsigned char)line[i] >= 0x80) {
			s->anomalies |= AN_CMD_8BIT;
			break;
		}
	if (!utf8_valid(line, len)) {
		smtp_error(s, PR_BAD_UTF8, NULL);
		return;
	}
	smtp_parse_command(line, len, &cl);
	if (cl.cmd == SMTP_CMD_NONE) {
		smtp_error(s, PR_EMPTY, NULL);
		return;
	}
	/* Postfix flags XCLIENT, not XFORWARD, as allowed before STARTTLS. */
	if (cl.cmd == SMTP_CMD_XFORWARD && smtp_needs_tls(s)) {
		smtp_error(s, PR_NEED_STARTTLS, NULL);
		return;
	}
	if (cl.cmd == SMTP_CMD_XCLIENT || cl.cmd == SMTP_CMD_XFORWARD) {
		smtp_error(s, PR_XCLIENT_DENIED, NULL);
		return;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (commands[i].cmd == cl.cmd) {
			unsigned nr = s->nreplies;

			bool need_tls = smtp_needs_tls(s) && !smtp_pre_tls_cmd(cl.cmd);

			if (need_tls)
				smtp_error(s, PR_NEED_STARTTLS, NULL);
			else
				commands[i].fn(s, &cl);
			smtp_unauth_event(s, &cl, nr, need_tls);
			return;
		}
	cmd_unknown(s, &cl);
}

/*
 * On a submission listener, what a client tries without logging in (MAIL,
 * RCPT, VRFY, DATA, BDAT, ETRN: refused, or MAIL's 250; AUTH refused before
 * TLS) leaves no mail or login record: each is an event with the reply given
 * (if it was sent at once; nr: the reply count before the command).  Spam sent before or instead of
 * AUTH is evidence too.
 */
static void
smtp_unauth_event(struct smtp_session *s, const struct smtp_cmdline *cl, unsigned nr,
    bool need_tls)
{
	struct jbuf jb;
	size_t full;

	if (s->listener->policy != LISTENER_POLICY_SUBMISSION || (s->flags & SF_AUTHED))
		return;
	switch (cl->cmd) {
	case SMTP_CMD_AUTH:
		/* refused before TLS: its credentials make no fosr.login.attempt */
		if (!need_tls)
			return;
		break;
	case SMTP_CMD_MAIL:
	case SMTP_CMD_RCPT:
	case SMTP_CMD_VRFY:
	case SMTP_CMD_DATA:
	case SMTP_CMD_BDAT:
	case SMTP_CMD_ETRN:
		break;
	default:
		return;
	}
	jb_init(&jb);
	smtp_event_base(s, &jb, "fosr.command.unauthenticated");
	full = cl->arglen ? (size_t)(cl->arg + cl->arglen - cl->verb) : cl->verblen;
	jb_kstr(&jb, "input", cl->verb, full > 512 ? 512 : full);
	/* "tls" is an object in other events: one type a field name (events.schema.json). */
	jb_kbool(&jb, "tls_active", s->tls != NULL);
	if (s->nreplies != nr)
		jb_kcstr(&jb, "reply", s->last_reply);
	if (s->txn && s->txn->mail_from && cl->cmd != SMTP_CMD_MAIL)
		jb_kstr(&jb, "mail_from", s->txn->mail_from, strlen(s->txn->mail_from));
	log_event_message(&jb, "Command before AUTH: %.*s -> %s", (int)(full > 512 ? 512 : full),
	    cl->verb, s->nreplies != nr ? s->last_reply : "(no reply yet)");
	log_event_emit(&jb);
	jb_free(&jb);
}

/*
 * Debian's submission template (smtpd_tls_security_level=encrypt) on a
 * STARTTLS listener: until TLS, Postfix takes only the commands it flags
 * SMTPD_CMD_FLAG_PRE_TLS and answers "530 5.7.0" (an error) to the others.
 */
static bool
smtp_needs_tls(const struct smtp_session *s)
{
	return s->listener->policy == LISTENER_POLICY_SUBMISSION && !(s->flags & SF_TLS);
}

static bool
smtp_pre_tls_cmd(enum smtp_cmd c)
{
	return c == SMTP_CMD_HELO || c == SMTP_CMD_EHLO || c == SMTP_CMD_STARTTLS ||
	    c == SMTP_CMD_NOOP || c == SMTP_CMD_QUIT || c == SMTP_CMD_HEADERLIKE;
}

/*
 * An address in Postfix's internal form (tok822_internalize()): the quotes
 * of quoted strings and the backslashes of quoted pairs removed, so that
 * <"postmaster">, <post\master> and <postmaster> are one address, and
 * <"a@b"> has the domain b.
 */
static void
smtp_addr_internal(const char *addr, char *out, size_t outlen)
{
	size_t n = 0;

	for (; *addr && n + 1 < outlen; addr++) {
		if (*addr == '"')
			continue;
		if (*addr == '\\' && addr[1] != '\0')
			addr++;
		out[n++] = *addr;
	}
	out[n] = '\0';
}

/*
 * Submission (smtpd_recipient_restrictions = permit_sasl_authenticated,
 * reject): a client that has not logged in gets "554 5.7.1 <addr>: ...
 * Access denied" for RCPT and VRFY.  True if it was answered so.
 */
static bool
smtp_submission_denied(struct smtp_session *s, const char *addr)
{
	struct persona_vars v;
	char shown[SMTP_PATH_MAX + 1];
	size_t n = 0;

	if (s->listener->policy != LISTENER_POLICY_SUBMISSION || (s->flags & SF_AUTHED))
		return false;
	/*
	 * smtpd_check_rcpt(): the bare "postmaster" is always allowed (RFC 5321
	 * 4.5.1), in its internal form: <"postmaster">, <post\master> too.
	 */
	smtp_addr_internal(addr, shown, sizeof(shown));
	if (strcasecmp(shown, "postmaster") == 0)
		return false;
	/* Shown as Postfix's reply does: quotes removed (<"a b"@c> -> <a b@c>). */
	for (; *addr && n + 1 < sizeof(shown); addr++)
		if (*addr != '"')
			shown[n++] = *addr;
	shown[n] = '\0';
	memset(&v, 0, sizeof(v));
	v.arg = shown;
	v.arglen = n;
	smtp_error(s, PR_RCPT_ACCESS_DENIED, &v);
	return true;
}

/* An unknown or unimplemented command, recorded for the researchers. */
static void
cmd_unknown(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	struct jbuf jb;
	size_t full;

	/*
	 * HTTP through an open proxy, or a verb that does not start with a letter
	 * (a TLS ClientHello on the plain port, binary junk): Postfix's
	 * smtpd_forbidden_commands, answered and hung up on.
	 */
	if (cl->verblen == 0 || !((cl->verb[0] >= 'A' && cl->verb[0] <= 'Z') ||
	    (cl->verb[0] >= 'a' && cl->verb[0] <= 'z')) ||
	    (cl->verblen == 7 && strncasecmp(cl->verb, "CONNECT", 7) == 0) ||
	    (cl->verblen == 3 && strncasecmp(cl->verb, "GET", 3) == 0) ||
	    (cl->verblen == 4 && strncasecmp(cl->verb, "POST", 4) == 0)) {
		cmd_forbidden(s, cl);
		return;
	}
	jb_init(&jb);
	smtp_event_base(s, &jb, "fosr.command.unknown");
	full = cl->arglen ? (size_t)(cl->arg + cl->arglen - cl->verb) : cl->verblen;
	jb_kstr(&jb, "input", cl->verb, full > 512 ? 512 : full);
	log_event_message(&jb, "Unknown command: %.*s", (int)(full > 512 ? 512 : full), cl->verb);
	log_event_emit(&jb);
	jb_free(&jb);
	smtp_error(s, PR_UNKNOWN, NULL);
}

/* CONNECT/GET/POST or a header line: Postfix's "I can break rules, too" and hang up. */
static void
cmd_forbidden(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	if (s->srv->persona->replies[PR_FORBIDDEN] == NULL) {
		smtp_error(s, PR_UNKNOWN, NULL);
		return;
	}
	smtp_reply(s, PR_FORBIDDEN, NULL);
	smtp_close(s, "forbidden-command");
}

/* Copy a HELO/EHLO argument into the session. */
static void
smtp_set_helo(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	size_t n = cl->arglen < SMTP_DOMAIN_MAX ? cl->arglen : SMTP_DOMAIN_MAX;

	memcpy(s->helo, cl->arg, n);
	s->helo[n] = '\0';
}

/* HELO: reply with the hostname, end any transaction. */
static void
cmd_helo(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	struct smtp_stage_result res;
	int code;

	if (cl->arglen == 0) {
		smtp_error(s, PR_HELO_SYNTAX, NULL);
		smtp_junk(s);
		return;
	}
	if ((code = smtp_helo_hook(s, cl, &res)) >= 400) {
		/* A rule refuses this HELO: nothing of it is kept. */
		smtp_rule_reply(s, &res, true);
		smtp_junk(s);
		return;
	}
	smtp_txn_reset(s);
	s->size_rejected = false;
	smtp_set_helo(s, cl);
	s->flags |= SF_HELO;
	s->flags &= ~SF_EHLO;
	if (code)
		smtp_rule_reply(s, &res, false);
	else
		smtp_reply(s, PR_HELO_OK, NULL);
	smtp_junk(s);
}

/* The EHLO stage hook for a HELO/EHLO argument; its reply code or 0. */
static int
smtp_helo_hook(struct smtp_session *s, const struct smtp_cmdline *cl,
    struct smtp_stage_result *res)
{
	char helo[SMTP_DOMAIN_MAX + 1];
	size_t n = cl->arglen < SMTP_DOMAIN_MAX ? cl->arglen : SMTP_DOMAIN_MAX;

	memcpy(helo, cl->arg, n);
	helo[n] = '\0';
	return smtp_stage_hook(s, SMTP_STAGE_EHLO, helo, res);
}

/* EHLO: the persona's keyword list, without STARTTLS where it cannot work. */
static void
cmd_ehlo(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	const struct persona *p = s->srv->persona;
	const char *kw[PERSONA_EHLO_MAX];
	int n = 0, i;
	char line[600], first[300];
	struct persona_vars v;
	struct smtp_stage_result res;
	int code;

	if (cl->arglen == 0) {
		smtp_error(s, PR_EHLO_SYNTAX, NULL);
		smtp_junk(s);
		return;
	}
	if ((code = smtp_helo_hook(s, cl, &res)) >= 400) {
		smtp_rule_reply(s, &res, true);
		smtp_junk(s);
		return;
	}
	smtp_txn_reset(s);
	s->size_rejected = false;
	smtp_set_helo(s, cl);
	s->flags |= SF_HELO | SF_EHLO;
	if (code) {
		/* A rule's own 2xx replaces the keyword list. */
		smtp_rule_reply(s, &res, false);
		smtp_junk(s);
		return;
	}

	for (i = 0; i < PERSONA_EHLO_MAX && p->ehlo[i]; i++) {
		if (strcmp(p->ehlo[i], "STARTTLS") == 0 &&
		    ((s->flags & SF_TLS) || s->srv->ssl_ctx == NULL ||
		    s->listener->tls != TLS_MODE_STARTTLS))
			continue;
		/* smtpd_tls_auth_only = yes in the submission template */
		if (strncmp(p->ehlo[i], "AUTH", 4) == 0 && smtp_needs_tls(s))
			continue;
		kw[n++] = p->ehlo[i];
	}
	memset(&v, 0, sizeof(v));
	v.host = s->srv->hostname;
	v.size = s->srv->cfg->limits.message_size;
	persona_format(first, sizeof(first), p->replies[PR_EHLO_FIRST], &v);
	/* PR_EHLO_FIRST is "250 {host}": turn it into "250-{host}" unless alone. */
	if (n > 0 && strlen(first) > 3)
		first[3] = '-';
	smtp_send_line(s, first, strlen(first));
	for (i = 0; i < n; i++) {
		char kwbuf[300];
		size_t k = persona_format(kwbuf, sizeof(kwbuf), kw[i], &v);
		int m = snprintf(line, sizeof(line), "250%c%.*s", i == n - 1 ? ' ' : '-',
		    (int)k, kwbuf);
		smtp_send_line(s, line, (size_t)m);
	}
	smtp_junk(s);
}

/* Start a transaction if the session has none. */
static struct smtp_txn *
smtp_txn_new(struct smtp_session *s)
{
	if (s->txn == NULL && (s->txn = calloc(1, sizeof(*s->txn))) != NULL)
		s->txn->rfd = -1;
	return s->txn;
}

/* Free a transaction; an open spool message is aborted. */
static void
smtp_txn_free(struct smtp_txn *t)
{
	if (t == NULL)
		return;
	if (t->msg)
		spool_msg_abort(t->msg);
	free(t->mail_from);
	free(t->record);
	free(t->dres.record);
	free(t->rmem);
	free(t->rview);
	if (t->rfd != -1)
		close(t->rfd);
	if (t->rspool != NULL)
		spool_hold(t->rspool, -(int64_t)t->rfile_len);
	if (t->commit_srv != NULL) {
		t->commit_srv->commit_bytes -= t->commit_cost;
		if (t->commit_srv->gateq != NULL && t->commit_srv->gate_ev != NULL)
			event_active(t->commit_srv->gate_ev, EV_TIMEOUT, 0);
	}
	free(t);
}

/* End the current transaction (RSET, HELO, after the message). */
static void
smtp_txn_reset(struct smtp_session *s)
{
	smtp_txn_free(s->txn);
	s->txn = NULL;
}

/* Does the parameter p (as sent) start with the keyword kw (e.g. "RET=")? */
static bool
param_is(const char *p, size_t len, const char *kw)
{
	size_t n = strlen(kw);

	return len >= n && strncasecmp(p, kw, n) == 0;
}

/* Answer a MAIL/RCPT parameter error with Postfix's reply for that parameter. */
static void
smtp_param_error(struct smtp_session *s, const struct smtp_path *path, bool mail)
{
	struct persona_vars v;
	const char *p = path->errparam;
	size_t len = path->errparamlen;

	memset(&v, 0, sizeof(v));
	if (p && mail && param_is(p, len, "RET="))
		smtp_error(s, PR_MAIL_BAD_RET, NULL);
	else if (p && mail && param_is(p, len, "ENVID="))
		smtp_error(s, PR_MAIL_BAD_ENVID, NULL);
	else if (p && !mail && param_is(p, len, "NOTIFY="))
		smtp_error(s, PR_RCPT_BAD_NOTIFY, NULL);
	else if (p && !mail && param_is(p, len, "ORCPT="))
		smtp_error(s, PR_RCPT_BAD_ORCPT, NULL);
	else {
		v.arg = p ? p : "";
		v.arglen = p ? len : 0;
		smtp_error(s, mail ? PR_MAIL_BAD_PARAM : PR_RCPT_BAD_PARAM, &v);
	}
}

/* Find the parameter starting with kw in a MAIL argument, for an echo. */
static void
find_param(const char *arg, size_t len, const char *kw, struct persona_vars *v)
{
	size_t n = strlen(kw), i, j;

	for (i = 0; i + n <= len; i++) {
		if ((i == 0 || arg[i - 1] == ' ') && strncasecmp(arg + i, kw, n) == 0) {
			for (j = i; j < len && arg[j] != ' '; j++)
				;
			v->arg = arg + i;
			v->arglen = j - i;
			return;
		}
	}
}

/* MAIL FROM: start a transaction; any sender is fine. */
static void
cmd_mail(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	struct smtp_path path;
	struct persona_vars v;
	struct smtp_txn *t;
	enum smtp_path_err e;

	if (s->txn && s->txn->mail_from) {
		smtp_error(s, PR_MAIL_NESTED, NULL);
		return;
	}
	e = smtp_parse_mail(cl->arg, cl->arglen, &path);
	memset(&v, 0, sizeof(v));
	switch (e) {
	case SMTP_PATH_OK:
		break;
	case SMTP_PATH_ERR_SYNTAX:
		smtp_error(s, PR_MAIL_SYNTAX, NULL);
		return;
	case SMTP_PATH_ERR_ADDR:
		smtp_error(s, PR_MAIL_BAD_ADDR, NULL);
		return;
	case SMTP_PATH_ERR_SIZE:
		smtp_error(s, PR_MAIL_BAD_SIZE, NULL);
		return;
	case SMTP_PATH_ERR_BODY:
		v.arg = path.errparam ? path.errparam : "";
		v.arglen = path.errparam ? path.errparamlen : 0;
		smtp_error(s, PR_MAIL_BAD_BODY, &v);
		return;
	case SMTP_PATH_ERR_PARAM:
		smtp_param_error(s, &path, true);
		return;
	}
	if (path.body == SMTP_BODY_BINARYMIME) {
		/* Postfix 3.7 does not offer BINARYMIME. */
		find_param(cl->arg, cl->arglen, "BODY=", &v);
		smtp_error(s, PR_MAIL_BAD_BODY, &v);
		return;
	}
	/* Postfix keeps a rejected SIZE for later MAILs until RSET/HELO or a new SIZE. */
	if (path.has_size)
		s->size_rejected = path.size > s->srv->cfg->limits.message_size;
	if (s->size_rejected) {
		smtp_error(s, PR_SIZE_EXCEEDED, NULL);
		return;
	}
	if (spool_check_space(s->srv->spool, path.has_size ? path.size : 0) == -1) {
		smtp_error(s, PR_STORAGE_FULL, NULL);
		return;
	}
	if ((t = smtp_txn_new(s)) == NULL || (t->mail_from = strdup(path.addr)) == NULL) {
		smtp_reply(s, PR_WRITE_ERROR, NULL);
		return;
	}
	t->smtputf8 = path.smtputf8;
	t->size_param = path.has_size ? path.size : 0;
	snprintf(t->body, sizeof(t->body), "%s",
	    path.body == SMTP_BODY_8BITMIME ? "8BITMIME" :
	    path.body == SMTP_BODY_BINARYMIME ? "BINARYMIME" :
	    path.body == SMTP_BODY_7BIT ? "7BIT" : "");
	smtp_reply(s, PR_MAIL_OK, NULL);
}

/* RCPT TO: any recipient is accepted, up to the recipient limit. */
static void
cmd_rcpt(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	struct smtp_path path;
	struct persona_vars v;
	struct smtp_txn *t = s->txn;
	enum smtp_path_err e;

	if (t == NULL || t->mail_from == NULL) {
		smtp_error(s, PR_NEED_MAIL, NULL);
		return;
	}
	e = smtp_parse_rcpt(cl->arg, cl->arglen, &path);
	memset(&v, 0, sizeof(v));
	switch (e) {
	case SMTP_PATH_OK:
		break;
	case SMTP_PATH_ERR_SYNTAX:
		smtp_error(s, PR_RCPT_SYNTAX, NULL);
		return;
	case SMTP_PATH_ERR_ADDR:
	case SMTP_PATH_ERR_SIZE:
	case SMTP_PATH_ERR_BODY:
		smtp_error(s, PR_RCPT_BAD_ADDR, NULL);
		return;
	case SMTP_PATH_ERR_PARAM:
		smtp_param_error(s, &path, false);
		return;
	}
	if (path.null_path) {
		smtp_error(s, PR_RCPT_BAD_ADDR, NULL);
		return;
	}
	if (smtp_submission_denied(s, path.addr))
		return;
	/* Submission templates: smtpd_reject_unlisted_recipient = no. */
	if (s->listener->policy != LISTENER_POLICY_SUBMISSION) {
		char shown[SMTP_PATH_MAX + 1];
		if (smtp_unknown_local(s, path.addr, shown, sizeof(shown))) {
			v.arg = shown;
			v.arglen = strlen(shown);
			smtp_error(s, PR_RCPT_UNKNOWN_LOCAL, &v);
			return;
		}
	}
	if (t->nrcpt >= s->srv->cfg->limits.recipients) {
		/* Postfix's recipient overshoot: the first 1000 do not count as errors. */
		if (++t->overshoot > SMTP_RCPT_OVERSHOOT)
			smtp_error(s, PR_RCPT_TOO_MANY, NULL);
		else
			smtp_reply(s, PR_RCPT_TOO_MANY, NULL);
		return;
	}
	if (smtp_rcpt_add(s, t, path.addr) == -1) {
		/* Postfix's answer when its queue file cannot take the recipient. */
		smtp_reply(s, PR_WRITE_ERROR, NULL);
		return;
	}
	smtp_reply(s, PR_RCPT_OK, NULL);
}

/* Open the transaction's recipient file: unnamed, in the spool's tmp/. */
static int
smtp_rcpt_spill_open(struct smtp_session *s)
{
	char dir[PATH_MAX], path[PATH_MAX + 48], hex[33];
	unsigned char rnd[16];
	int fd;

	if (snprintf(dir, sizeof(dir), "%s/tmp",
	    spool_dir(s->srv->spool)) >= (int)sizeof(dir)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) != -1)
		return fd;
	/* No O_TMPFILE here: a named file, unlinked at once (a crash leaves it to spool_open's cleanup). */
	util_random(rnd, sizeof(rnd));
	util_hex(rnd, sizeof(rnd), hex);
	snprintf(path, sizeof(path), "%s/%s.rcpt", dir, hex);
	if ((fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0600)) == -1)
		return -1;
	(void)unlink(path);
	return fd;
}

/* Keep one recipient: in memory up to SMTP_RCPT_MEM bytes, then in the file; 0 or -1. */
static int
smtp_rcpt_add(struct smtp_session *s, struct smtp_txn *t, const char *addr)
{
	size_t len = strlen(addr) + 1, cap;
	char *p;

	if (t->rfd == -1 && t->rmem_len + len <= SMTP_RCPT_MEM) {
		if (t->rmem_len + len > t->rmem_cap) {
			cap = t->rmem_cap ? t->rmem_cap : 256;
			while (cap < t->rmem_len + len)
				cap *= 2;
			if (cap > SMTP_RCPT_MEM)
				cap = SMTP_RCPT_MEM;
			if ((p = realloc(t->rmem, cap)) == NULL)
				return -1;
			t->rmem = p;
			t->rmem_cap = cap;
		}
		memcpy(t->rmem + t->rmem_len, addr, len);
		t->rmem_len += len;
		t->nrcpt++;
		return 0;
	}
	/* The spool's space limits hold for spilled recipients too. */
	if (spool_check_space(s->srv->spool, len) == -1) {
		log_series(&s->srv->spool_fail, LOG_LVL_WARN,
		    "%016llx smtp recipients: spool full, recipient refused",
		    (unsigned long long)s->id);
		return -1;
	}
	if (t->rstuck) {
		errno = EIO;
		return -1;
	}
	if (t->rfd == -1 && (t->rfd = smtp_rcpt_spill_open(s)) == -1) {
		log_series(&s->srv->spool_fail, LOG_LVL_WARN,
		    "%016llx smtp recipients: cannot open a file in the spool: %s",
		    (unsigned long long)s->id, strerror(errno));
		return -1;
	}
	if (util_write_all(t->rfd, addr, len) == -1) {
		log_series(&s->srv->spool_fail, LOG_LVL_WARN, "%016llx smtp recipients: write failed: %s",
		    (unsigned long long)s->id, strerror(errno));
		/*
		 * Drop a partial recipient: the next one goes where it began
		 * (bytes past rfile_len are never read).  If the offset cannot
		 * be set back, no recipient is spilled any more.
		 */
		if (lseek(t->rfd, (off_t)t->rfile_len, SEEK_SET) == -1)
			t->rstuck = true;
		return -1;
	}
	t->rfile_len += len;
	t->rspool = s->srv->spool;
	spool_hold(t->rspool, (int64_t)len);
	t->nrcpt++;
	return 0;
}

/*
 * Call fn for every recipient, in order (the spilled ones are read back in
 * small pieces).  0, or -1 when the file cannot be read.
 */
static int
smtp_rcpt_each(const struct smtp_txn *t, void (*fn)(void *, const char *, size_t), void *arg)
{
	char buf[SMTP_PATH_MAX + 1 + 4096];
	size_t have = 0, off, l;
	uint64_t pos = 0;
	ssize_t n;
	char *nul;

	for (off = 0; off < t->rmem_len; off += l + 1) {
		l = strlen(t->rmem + off);
		fn(arg, t->rmem + off, l);
	}
	while (pos < t->rfile_len) {
		/* Never past rfile_len: the callers sized their buffers by it. */
		l = sizeof(buf) - have;
		if (l > t->rfile_len - pos)
			l = (size_t)(t->rfile_len - pos);
		n = pread(t->rfd, buf + have, l, (off_t)pos);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		pos += (uint64_t)n;
		have += (size_t)n;
		for (off = 0; (nul = memchr(buf + off, '\0', have - off)) != NULL;
		    off = (size_t)(nul - buf) + 1)
			fn(arg, buf + off, (size_t)(nul - (buf + off)));
		/* A recipient is at most SMTP_PATH_MAX bytes: a partial one always fits. */
		memmove(buf, buf + off, have - off);
		have -= off;
	}
	return have == 0 ? 0 : -1;
}

struct rcpt_view_fill {
	char	**v;
	char	 *p;
	int	  i;
};

static void
smtp_rcpt_view_put(void *arg, const char *r, size_t len)
{
	struct rcpt_view_fill *f = arg;

	memcpy(f->p, r, len);
	f->p[len] = '\0';
	f->v[f->i++] = f->p;
	f->p += len + 1;
}

/*
 * All recipients as an array in one allocation (t->rview), for a hook that
 * wants them; freed by smtp_rcpt_view_free() right after the call.  NULL when
 * memory or the file fails (the hook then sees no recipients).
 */
static char **
smtp_rcpt_view(struct smtp_txn *t)
{
	struct rcpt_view_fill f;
	size_t ptrs = ((size_t)t->nrcpt + 1) * sizeof(char *);

	free(t->rview);
	t->rview = NULL;
	if (t->rfile_len > SIZE_MAX / 2 ||
	    (t->rview = malloc(ptrs + t->rmem_len + (size_t)t->rfile_len)) == NULL)
		return NULL;
	f.v = t->rview;
	f.p = (char *)t->rview + ptrs;
	f.i = 0;
	if (smtp_rcpt_each(t, smtp_rcpt_view_put, &f) == -1 || f.i != t->nrcpt) {
		free(t->rview);
		t->rview = NULL;
		return NULL;
	}
	t->rview[f.i] = NULL;
	return t->rview;
}

static void
smtp_rcpt_view_free(struct smtp_txn *t)
{
	if (t != NULL) {
		free(t->rview);
		t->rview = NULL;
	}
}

/* smtp_rcpt_each callback: one JSON string. */
static void
smtp_rcpt_json(void *arg, const char *r, size_t len)
{
	jb_str(arg, r, len);
}

/* The recipients as a JSON array value; false (jb unusable) when the file fails. */
static bool
smtp_rcpt_jarr(const struct smtp_txn *t, struct jbuf *jb)
{
	jb_arr_open(jb);
	if (smtp_rcpt_each(t, smtp_rcpt_json, jb) == -1) {
		jb->oom = true;
		return false;
	}
	jb_arr_close(jb);
	return true;
}

/*
 * The local parts a Debian 12 Postfix knows out of the box: the passwd
 * accounts and /etc/aliases (postmaster, mailer-daemon).
 */
static const char *const debian_users[] = {
	"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail",
	"news", "uucp", "proxy", "www-data", "backup", "list", "irc", "_apt",
	"nobody", "postfix", "postmaster", "mailer-daemon",
};

int
smtp_server_load_auth(struct smtp_server *srv, char *err, size_t errlen)
{
	const struct cfg *cfg = srv->cfg;
	const char *domains[CFG_LOCAL_DOMAINS_MAX + 2], *users[CFG_LOCAL_USERS_MAX + 2];
	struct authdb_ctx ctx;
	struct authdb *db;
	char path[PATH_MAX];
	int i;

	memset(&ctx, 0, sizeof(ctx));
	if (cfg->local.ndomains < 0) {
		domains[ctx.ndomains++] = srv->hostname;
		domains[ctx.ndomains++] = "localhost";
	} else
		for (i = 0; i < cfg->local.ndomains; i++)
			domains[ctx.ndomains++] = cfg->local.domains[i];
	if (cfg->local.nusers < 0)
		for (size_t k = 0; k < sizeof(debian_users) / sizeof(debian_users[0]); k++)
			users[ctx.nusers++] = debian_users[k];
	else
		for (i = 0; i < cfg->local.nusers; i++)
			users[ctx.nusers++] = cfg->local.users[i];
	ctx.domains = domains;
	ctx.users = users;
	cfg_auth_credentials_path(cfg, path, sizeof(path));
	if (path[0])
		db = authdb_load(path, &ctx, err, errlen);
	else if ((db = authdb_parse(authdb_default, strlen(authdb_default), &ctx, err,
	    errlen)) == NULL)
		snprintf(err, errlen, "built-in credential policy: %s", "parse error");
	if (db == NULL)
		return -1;
	authdb_free(srv->authdb);
	srv->authdb = db;
	snprintf(err, errlen, "%s: %d rules", path[0] ? path : "built-in", authdb_nrules(db));
	return 0;
}

void
smtp_server_free_auth(struct smtp_server *srv)
{
	authdb_free(srv->authdb);
	srv->authdb = NULL;
	authmem_free(srv->authmem);
	srv->authmem = NULL;
}

/* Is domain[0..len) one of ours (local_recipients.domains, or a [literal] we listen on)? */
static bool
smtp_local_domain(const struct smtp_session *s, const char *d, size_t len)
{
	const struct cfg_local *l = &s->srv->cfg->local;
	size_t iplen = strlen(s->dst_ip);

	if (len >= 2 && d[0] == '[' && d[len - 1] == ']')
		return len - 2 == iplen && strncmp(d + 1, s->dst_ip, iplen) == 0;
	if (l->ndomains < 0)
		return (len == strlen(s->srv->hostname) &&
		    strncasecmp(d, s->srv->hostname, len) == 0) ||
		    (len == 9 && strncasecmp(d, "localhost", 9) == 0);
	for (int i = 0; i < l->ndomains; i++)
		if (strlen(l->domains[i]) == len && strncasecmp(d, l->domains[i], len) == 0)
			return true;
	return false;
}

/*
 * Is addr a local address whose user is unknown?  Then Postfix says "User
 * unknown in local recipient table".  The address's quotes are removed into
 * shown (for the reply); "+ext" is ignored.  A domainless address is local.
 */
static bool
smtp_unknown_local(const struct smtp_session *s, const char *addr, char *shown,
    size_t shownlen)
{
	const struct cfg_local *l = &s->srv->cfg->local;
	const char *at, *p;
	char user[CFG_LOCAL_USER_LEN], internal[SMTP_PATH_MAX + 1];
	size_t n = 0, ulen;

	if (l->ndomains == 0)
		return false;
	for (p = addr; *p && n + 1 < shownlen; p++)
		if (*p != '"')
			shown[n++] = *p;
	shown[n] = '\0';
	/*
	 * Postfix resolves the internal form: its last "@" starts the domain
	 * (<"user@example.net"> is not local), and <ro\ot> is root.
	 */
	smtp_addr_internal(addr, internal, sizeof(internal));
	at = strrchr(internal, '@');
	if (at != NULL && !smtp_local_domain(s, at + 1, strlen(at + 1)))
		return false;
	ulen = at ? (size_t)(at - internal) : strlen(internal);
	if ((p = memchr(internal, '+', ulen)) != NULL)
		ulen = (size_t)(p - internal);
	if (ulen == 0 || ulen >= sizeof(user))
		return ulen != 0;
	memcpy(user, internal, ulen);
	user[ulen] = '\0';
	if (l->nusers < 0) {
		for (size_t i = 0; i < sizeof(debian_users) / sizeof(debian_users[0]); i++)
			if (strcasecmp(user, debian_users[i]) == 0)
				return false;
		return true;
	}
	for (int i = 0; i < l->nusers; i++)
		if (strcasecmp(user, l->users[i]) == 0)
			return false;
	return true;
}

/*
 * Open the spool file for a message body.  On failure returns false and sets
 * *fail to the reply: 452 for a full disk or quota, 451 for anything else
 * (out of descriptors, I/O errors).
 */
static bool
smtp_open_message(struct smtp_session *s, enum persona_reply *fail)
{
	char err[256];
	int e;

	if (s->txn->msg)
		return true;
	if ((s->txn->msg = spool_msg_new(s->srv->spool, err, sizeof(err))) == NULL) {
		e = errno;
		log_series(&s->srv->spool_fail, LOG_LVL_WARN, "%016llx smtp spool: %s",
		    (unsigned long long)s->id, err);
		*fail = (e == ENOSPC || e == EDQUOT) ? PR_STORAGE_FULL : PR_WRITE_ERROR;
		return false;
	}
	return true;
}

/* DATA: "354", then the body goes through smtp_data_input(). */
static void
cmd_data(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	struct smtp_txn *t = s->txn;
	enum persona_reply fail;

	/* Postfix's data_cmd() order: the state first, then the argument. */
	if (t == NULL || t->mail_from == NULL) {
		smtp_error(s, PR_NEED_RCPT, NULL);
		return;
	}
	if (t->bdat_used) {
		smtp_error(s, PR_DATA_AFTER_BDAT, NULL);
		return;
	}
	if (t->nrcpt == 0) {
		smtp_error(s, PR_NO_VALID_RCPT, NULL);
		return;
	}
	if (cl->arglen > 0) {
		smtp_error(s, PR_DATA_SYNTAX, NULL);
		return;
	}
	if (!smtp_open_message(s, &fail)) {
		smtp_error(s, fail, NULL);
		return;
	}
	smtp_data_init(&t->scan);
	smtp_reply(s, PR_DATA_GO, NULL);
	smtp_enter_state(s, SMTP_STATE_DATA);
}

/* Store body bytes, unless the message is already too big or failed. */
static void
smtp_body_put(struct smtp_session *s, const unsigned char *buf, size_t len)
{
	struct smtp_txn *t = s->txn;

	if (len == 0)
		return;
	t->size += len;
	if (t->too_big)
		return;
	if (t->size > s->srv->cfg->limits.message_size) {
		t->too_big = true;
		t->anomalies |= AN_TOO_BIG;
		return;
	}
	if (spool_msg_error(t->msg) == 0)
		spool_msg_write(t->msg, buf, len);
}

/*
 * DATA body bytes: the scanner (smtp_data) unstuffs them and notes their
 * anomalies; the content goes to the spool; the end marker ends the message.
 */
static void
smtp_data_input(struct smtp_session *s, struct evbuffer *in)
{
	struct smtp_txn *t = s->txn;
	struct evbuffer_iovec vec;
	unsigned char out[8192];
	size_t olen, off = 0;
	bool done = false;

	if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1)
		return;
	while (off < vec.iov_len && !done) {
		off += smtp_data_scan(&t->scan, (const unsigned char *)vec.iov_base + off,
		    vec.iov_len - off, out, sizeof(out), &olen, &done);
		t->anomalies |= t->scan.anomalies;
		smtp_body_put(s, out, olen);
	}
	evbuffer_drain(in, off);
	if (done)
		smtp_message_end(s);
}

/* BDAT: read exactly the announced number of bytes into the message. */
static void
cmd_bdat(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	struct smtp_txn *t = s->txn;
	uint64_t size;
	bool last;

	if (smtp_parse_bdat(cl->arg, cl->arglen, &size, &last) == -1) {
		/* Without a valid size the chunk cannot be skipped: 521 and hang up. */
		smtp_reply(s, PR_BDAT_SYNTAX, NULL);
		s->errors++;
		smtp_close(s, "bdat-syntax");
		return;
	}
	if (t == NULL || t->mail_from == NULL) {
		/* Read the chunk and drop it, then answer (smtp_bdat_done). */
		if (smtp_txn_new(s) == NULL) {
			smtp_close(s, "oom");
			return;
		}
		t = s->txn;
		t->bdat_discard = true;
	} else if (size == 0 && !last) {
		smtp_error(s, PR_BDAT_NULL, NULL);
		return;
	} else if (t->bdat_failed || t->nrcpt == 0) {
		/* No valid recipient (submission without AUTH): answered when read. */
		t->bdat_discard = true;
	} else {
		t->bdat_discard = false;
		if (!t->bdat_used && !smtp_open_message(s, &t->bdat_fail)) {
			t->bdat_discard = true;
			t->bdat_failed = true;
			t->bdat_nospace = true;
		} else if (t->size + size > s->srv->cfg->limits.message_size) {
			/* This chunk is dropped; the message is over. */
			t->bdat_discard = true;
			t->too_big = true;
			t->anomalies |= AN_TOO_BIG;
		}
	}
	t->bdat_left = size;
	t->bdat_chunk = size;
	t->bdat_last = last;
	smtp_enter_state(s, SMTP_STATE_BDAT);
}

/* A whole BDAT chunk is in: answer it, or end the message. */
static void
smtp_bdat_done(struct smtp_session *s)
{
	struct smtp_txn *t = s->txn;
	struct persona_vars v;

	memset(&v, 0, sizeof(v));
	v.n = t->bdat_chunk;
	smtp_enter_state(s, SMTP_STATE_COMMAND);
	if (t->mail_from == NULL) {
		smtp_txn_reset(s);
		smtp_error(s, PR_NEED_RCPT, NULL);
		return;
	}
	if (t->nrcpt == 0 && !t->bdat_failed) {
		/*
		 * Postfix: the last chunk ends the transaction; any other leaves it
		 * in BDAT's error state (later chunks "Discarded", DATA "after BDAT").
		 */
		if (t->bdat_last)
			smtp_txn_reset(s);
		else
			t->bdat_failed = t->bdat_used = true;
		smtp_error(s, PR_NO_VALID_RCPT, NULL);
		return;
	}
	if (t->bdat_nospace) {
		enum persona_reply fail = t->bdat_fail;
		smtp_txn_reset(s);
		smtp_error(s, fail, NULL);
		return;
	}
	if (t->too_big && !t->bdat_failed) {
		t->bdat_failed = true;
		if (t->bdat_last)
			smtp_txn_reset(s);
		smtp_error(s, PR_BDAT_TOO_BIG, NULL);
		return;
	}
	if (t->bdat_failed) {
		if (t->bdat_last)
			smtp_txn_reset(s);
		smtp_error(s, PR_BDAT_DISCARDED, &v);
		return;
	}
	t->bdat_used = true;
	if (t->bdat_last) {
		smtp_message_end(s);
		return;
	}
	smtp_reply(s, PR_BDAT_OK, &v);
}

/* Consume BDAT chunk bytes; answer when the chunk is complete. */
static void
smtp_bdat_input(struct smtp_session *s, struct evbuffer *in)
{
	struct smtp_txn *t = s->txn;
	struct evbuffer_iovec vec;

	while (t->bdat_left > 0 && evbuffer_peek(in, -1, NULL, &vec, 1) >= 1) {
		size_t n = vec.iov_len;
		if (n > t->bdat_left)
			n = (size_t)t->bdat_left;
		if (!t->bdat_discard) {
			smtp_data_bdat(&t->scan, vec.iov_base, n);
			t->anomalies |= t->scan.anomalies;
			smtp_body_put(s, vec.iov_base, n);
		}
		evbuffer_drain(in, n);
		t->bdat_left -= n;
	}
	if (t->bdat_left == 0)
		smtp_bdat_done(s);
}

/* record_rcpt_each over a transaction's recipients. */
static int
smtp_record_rcpts(const void *t, void (*put)(void *, const char *, size_t), void *arg)
{
	return smtp_rcpt_each(t, put, arg);
}

/* Build the durable reception record of the current transaction (record.h). */
static void
smtp_reception_record(struct smtp_session *s, struct jbuf *jb)
{
	struct smtp_txn *t = s->txn;
	struct record_in in;
	const char *an[sizeof(anomaly_names) / sizeof(anomaly_names[0])];
	char line[300];

	memset(&in, 0, sizeof(in));
	in.session = s->id;
	in.queue_id = t->queue_id;
	in.sha256 = t->sha256;
	in.size = t->size;
	in.sensor = s->srv->cfg->sensor[0] ? s->srv->cfg->sensor : s->srv->hostname;
	in.src_ip = s->src_ip;
	in.src_port = s->src_port;
	in.dst_ip = s->dst_ip;
	in.dst_port = s->dst_port;
	in.listener = s->listener->name;
	in.client_name = s->client_name;
	in.reverse_name = s->reverse_name;
	in.name_status = s->name_status;
	in.helo = s->helo;
	in.protocol = (s->flags & SF_EHLO) ? "ESMTP" : (s->flags & SF_HELO) ? "SMTP" : "none";
	if ((s->flags & SF_TLS) && s->tls) {
		in.tls = true;
		in.tls_version = s->tls->version;
		in.tls_cipher = s->tls->cipher;
		in.tls_bits = s->tls->bits;
		in.tls_sni = s->tls->sni;
	}
	if (s->auth && (s->flags & SF_AUTHED)) {
		in.auth = true;
		in.auth_mech = s->auth->mech;
		in.auth_user = s->auth->user;
		in.auth_pass = s->auth->pass;
		in.auth_challenge = s->auth->challenge;
	}
	in.mail_from = t->mail_from;
	in.rcpt_each = smtp_record_rcpts;
	in.rcpt_src = t;
	in.body = t->body;
	in.smtputf8 = t->smtputf8;
	in.transfer = t->bdat_used ? "BDAT" : "DATA";
	if (t->decided && t->dres.matched) {
		in.ruled = true;
		in.publish = t->dres.publish;
		in.tag = t->dres.tag;
		in.rule = t->dres.rule;
		in.rule_stage = stage_names[SMTP_STAGE_DATA];
		if (t->dres.reply_code) {
			smtp_rule_line(&t->dres, line, sizeof(line));
			in.reply = line;
		}
	} else if (s->sdec.set) {
		in.ruled = true;
		in.publish = s->sdec.publish;
		in.tag = s->sdec.tag;
		in.rule = s->sdec.rule;
		in.rule_stage = stage_names[s->sdec.stage];
	}
	if (t->decided && t->dres.record)
		in.rules = t->dres.record;
	for (size_t k = 0; k < sizeof(anomaly_names) / sizeof(anomaly_names[0]); k++)
		if ((t->anomalies | s->anomalies) & anomaly_names[k].bit)
			an[in.nanomalies++] = anomaly_names[k].name;
	in.anomalies = an;
	record_write(jb, &in);
}

/* The body is complete: reject it, or let the rules look at it, then commit. */
static void
smtp_message_end(struct smtp_session *s)
{
	struct smtp_txn *t = s->txn;

	clock_gettime(CLOCK_MONOTONIC, &t->data_end);	/* the commit latency starts */
	smtp_enter_state(s, SMTP_STATE_COMMAND);
	if (t->too_big) {
		log_info("%016llx smtp message rejected: size %llu over the limit",
		    (unsigned long long)s->id, (unsigned long long)t->size);
		smtp_txn_reset(s);
		smtp_error(s, PR_MSG_TOO_BIG, NULL);
		return;
	}
	if (spool_msg_error(t->msg) != 0 || spool_msg_finish(t->msg, t->sha256) == -1) {
		int e = spool_msg_error(t->msg);
		log_series(&s->srv->spool_fail, LOG_LVL_WARN,
		    "%016llx smtp spool write failed: %s", (unsigned long long)s->id,
		    strerror(e ? e : EIO));
		smtp_txn_reset(s);
		smtp_error(s, (e == ENOSPC || e == EDQUOT) ? PR_STORAGE_FULL : PR_WRITE_ERROR, NULL);
		return;
	}
	util_queue_id(t->queue_id, sizeof(t->queue_id));
	if (smtp_commit_gate(s))
		return;	/* smtp_gate_cb goes on */
	smtp_message_decide(s);
}

/* Ask the DATA hook, or commit at once. */
static void
smtp_message_decide(struct smtp_session *s)
{
	if (smtp_data_hook(s))
		return;	/* smtp_data_done_cb commits */
	smtp_message_commit(s);
}

/*
 * What a message's end holds in memory, in the recipients' bytes: the
 * reception record (a jbuf grown by doubling), the rules' copy, the received
 * event; measured 3.7 MB for 2 MB of recipients.
 */
static uint64_t
smtp_commit_cost(const struct smtp_txn *t)
{
	return 4 * ((uint64_t)t->rmem_len + t->rfile_len) + 16384;
}

static void
smtp_commit_take(struct smtp_server *srv, struct smtp_txn *t)
{
	t->commit_cost = smtp_commit_cost(t);
	t->commit_srv = srv;
	srv->commit_bytes += t->commit_cost;
}

/*
 * Clients that end their messages together would hold all their records at
 * once (the commits queue behind one spool worker): past SMTP_COMMIT_BUDGET
 * a message's end waits, reading nothing, until others are done.  True when
 * the session now waits on srv->gateq.
 */
static bool
smtp_commit_gate(struct smtp_session *s)
{
	struct smtp_server *srv = s->srv;
	struct smtp_txn *t = s->txn;
	struct smtp_session **pp;

	if (srv->gateq == NULL && (srv->commit_bytes == 0 ||
	    srv->commit_bytes + smtp_commit_cost(t) <= SMTP_COMMIT_BUDGET)) {
		smtp_commit_take(srv, t);
		return false;
	}
	if (srv->gate_ev == NULL &&
	    (srv->gate_ev = event_new(srv->base, -1, 0, smtp_gate_cb, srv)) == NULL) {
		smtp_commit_take(srv, t);
		return false;
	}
	for (pp = &srv->gateq; *pp != NULL; pp = &(*pp)->gateq_next)
		;
	*pp = s;
	s->gateq_next = NULL;
	t->gated = true;
	smtp_enter_state(s, SMTP_STATE_RULES);	/* reading stays on, as for a commit */
	return true;
}

/* Commits are done: let the waiting messages go on, first come first. */
static void
smtp_gate_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_server *srv = arg;
	struct smtp_session *s;

	while ((s = srv->gateq) != NULL) {
		if (srv->commit_bytes != 0 && srv->commit_bytes +
		    smtp_commit_cost(s->txn) > SMTP_COMMIT_BUDGET)
			break;
		srv->gateq = s->gateq_next;
		s->gateq_next = NULL;
		s->txn->gated = false;
		smtp_commit_take(srv, s->txn);
		smtp_enter_state(s, SMTP_STATE_COMMAND);
		smtp_message_decide(s);
		if (s->state != SMTP_STATE_COMMIT && s->state != SMTP_STATE_RULES)
			smtp_resume(s);
	}
}

/* Take a session off the gate queue (it is being freed). */
static void
smtp_gate_remove(struct smtp_session *s)
{
	struct smtp_session **pp;

	if (s->txn == NULL || !s->txn->gated)
		return;
	for (pp = &s->srv->gateq; *pp != NULL; pp = &(*pp)->gateq_next)
		if (*pp == s) {
			*pp = s->gateq_next;
			break;
		}
	s->txn->gated = false;
}

/* Hand the finished message and its reception record to the spool and wait. */
static void
smtp_message_commit(struct smtp_session *s)
{
	struct smtp_txn *t = s->txn;
	struct jbuf jb;

	jb_init(&jb);
	smtp_reception_record(s, &jb);
	if (jb.oom) {
		jb_free(&jb);
		smtp_txn_reset(s);
		smtp_reply(s, PR_WRITE_ERROR, NULL);
		return;
	}
	/*
	 * Reading stays on while the commit runs (no epoll_ctl pair per mail):
	 * smtp_process() does nothing in this state, input waits in the buffer
	 * (its high watermark bounds it) and an EOF waits in SF_PEER_EOF.
	 */
	smtp_enter_state(s, SMTP_STATE_COMMIT);
	spool_msg_commit(t->msg, jb.buf, jb.len, smtp_commit_cb, s);
	t->record = jb.buf;	/* kept for the on_mail hook */
	t->record_len = jb.len;
	jb.buf = NULL;
	jb_free(&jb);
}

/*
 * Ask the DATA stage hook about the complete message, before it is committed
 * (its decision goes into the reception record).  True when the session now
 * waits for smtp_data_done_cb.
 */
static bool
smtp_data_hook(struct smtp_session *s)
{
	struct smtp_server *srv = s->srv;
	struct smtp_txn *t = s->txn;
	struct smtp_stage_req req;

	if (srv->data_cb == NULL || srv->stage_wanted == NULL ||
	    !srv->stage_wanted(srv->stage_arg, SMTP_STAGE_DATA))
		return false;
	if (spool_msg_path(t->msg) == NULL && spool_msg_data(t->msg, &req.msg_len) == NULL)
		return false;
	smtp_stage_req_fill(s, SMTP_STAGE_DATA, &req);
	req.msg_path = spool_msg_path(t->msg);
	req.msg_data = spool_msg_data(t->msg, &req.msg_len);
	req.size = t->size;
	req.sha256 = t->sha256;
	req.queue_id = t->queue_id;
	t->rules_req = srv->data_cb(srv->stage_arg, &req, smtp_data_done_cb, s);
	smtp_rcpt_view_free(t);	/* the hook copied what it keeps */
	if (t->rules_req == NULL)
		return false;
	smtp_enter_state(s, SMTP_STATE_RULES);	/* reading stays on, as for a commit */
	return true;
}

/* The DATA stage hook answered (or could not): commit the message now. */
static void
smtp_data_done_cb(void *arg, int status, struct smtp_stage_result *res)
{
	struct smtp_session *s = arg;
	struct smtp_txn *t = s->txn;

	t->rules_req = NULL;
	smtp_enter_state(s, SMTP_STATE_COMMAND);
	if (status == 0 && res != NULL) {
		t->dres = *res;
		res->record = NULL;	/* ours now */
		t->decided = true;
		if (!t->dres.matched) {
			t->dres.reply_code = 0;
			t->dres.publish = true;
		}
	}
	/* The client may be gone: the message is kept all the same. */
	smtp_message_commit(s);
	if (s->state == SMTP_STATE_COMMIT)
		return;	/* smtp_commit_cb answers */
	smtp_resume(s);
}

/* The spool answered: the message is durable (250) or not (451/452). */
static void
smtp_commit_cb(void *arg, int status, int err_no)
{
	struct smtp_session *s = arg;
	struct smtp_txn *t = s->txn;
	struct persona_vars v;
	struct jbuf jb;
	bool rule_reply;

	t->msg = NULL;	/* owned and freed by the spool */
	smtp_enter_state(s, SMTP_STATE_COMMAND);
	if (status != 0) {
		log_series(&s->srv->spool_fail, LOG_LVL_WARN,
		    "%016llx smtp spool commit failed: %s", (unsigned long long)s->id,
		    strerror(err_no));
		smtp_txn_reset(s);
		if (!(s->flags & SF_CLOSING))
			smtp_error(s, (err_no == ENOSPC || err_no == EDQUOT) ?
			    PR_STORAGE_FULL : PR_WRITE_ERROR, NULL);
		smtp_resume(s);
		return;
	}
	s->nmails++;
	metrics_inc(M_MESSAGES, s->listener->name, NULL);
	metrics_add(M_MESSAGE_BYTES, s->listener->name, NULL, (double)t->size);
	metrics_observe_since(M_COMMIT_LATENCY, &t->data_end);
	rule_reply = t->decided && t->dres.matched && t->dres.reply_code != 0;
	jb_init(&jb);
	log_series_end(&s->srv->spool_fail, LOG_LVL_INFO, "smtp spool: storing mail again");
	smtp_event_base(s, &jb, "fosr.mail.received");
	jb_kcstr(&jb, "queue_id", t->queue_id);
	jb_kcstr(&jb, "sha256", t->sha256);
	jb_kuint(&jb, "size", t->size);
	jb_kstr(&jb, "helo", s->helo, strlen(s->helo));
	jb_kstr(&jb, "mail_from", t->mail_from, strlen(t->mail_from));
	jb_key(&jb, "rcpt_to");
	(void)smtp_rcpt_jarr(t, &jb);
	jb_kcstr(&jb, "transfer", t->bdat_used ? "BDAT" : "DATA");
	if (t->decided && t->dres.matched) {
		jb_kcstr(&jb, "rule", t->dres.rule);
		if (t->dres.tag[0])
			jb_kcstr(&jb, "tag", t->dres.tag);
		jb_kbool(&jb, "publish", t->dres.publish);
		if (rule_reply)
			jb_kint(&jb, "reply_code", t->dres.reply_code);
	}
	log_event_message(&jb, "Mail received: queue_id %s, %llu bytes, from <%s>, %d recipient%s",
	    t->queue_id, (unsigned long long)t->size, t->mail_from, t->nrcpt,
	    t->nrcpt == 1 ? "" : "s");
	log_event_emit(&jb);
	jb_free(&jb);
	{
		char esc[300];
		/* Quoted: a quoted local part may hold blanks ("a b=c"@x). */
		log_info("%016llx smtp message queue_id=%s sha256=%s size=%llu from=\"<%s>\" nrcpt=%d",
		    (unsigned long long)s->id, t->queue_id, t->sha256,
		    (unsigned long long)t->size,
		    log_escape(esc, sizeof(esc), t->mail_from, strlen(t->mail_from)), t->nrcpt);
	}
	if (s->srv->on_mail)
		s->srv->on_mail(s->srv->on_mail_arg, t->record, t->record_len);
	memset(&v, 0, sizeof(v));
	v.qid = t->queue_id;
	/*
	 * Postfix reports BDAT's total as its own queue file size: a message not
	 * ending in CRLF gets one added.
	 */
	v.n = t->size + (smtp_data_ends_crlf(&t->scan, t->size) ? 0 : 2);
	/* A delivered message forgives earlier errors (Postfix resets its counters). */
	s->errors = 0;
	s->junk = 0;
	if (!(s->flags & SF_CLOSING) || strcmp(s->close_reason, "shutdown") == 0) {
		/* A rule's reply (e.g. 451 to make a bot retry) replaces the 250. */
		if (rule_reply)
			smtp_rule_reply(s, &t->dres, false);
		else
			smtp_reply(s, t->bdat_used ? PR_BDAT_QUEUED : PR_QUEUED, &v);
	}
	smtp_txn_reset(s);
	smtp_resume(s);
}

/* Whether the session waits for a callback (rules or commit) before it may go. */
static bool
smtp_waiting(const struct smtp_session *s)
{
	return s->state == SMTP_STATE_COMMIT || s->state == SMTP_STATE_RULES;
}

/* After a wait: close as asked, or read the next commands. */
static void
smtp_resume(struct smtp_session *s)
{
	if (s->srv->stopping)
		smtp_close(s, "shutdown");
	if (s->flags & SF_CLOSING) {
		if (strcmp(s->close_reason, "eof") == 0 || strcmp(s->close_reason, "error") == 0 ||
		    strcmp(s->close_reason, "tls-error") == 0)
			smtp_free(s);
		else
			smtp_maybe_free(s);
		return;
	}
	if (s->flags & SF_PEER_EOF) {
		/* What the client sent before it shut its side is answered, then the end. */
		smtp_process(s);
		smtp_close(s, "eof");
		smtp_maybe_free(s);
		return;
	}
	bufferevent_enable(s->bev, EV_READ);
	smtp_process(s);
	smtp_maybe_free(s);
}

/* The facts every stage request carries. */
static void
smtp_stage_req_fill(struct smtp_session *s, enum smtp_stage st, struct smtp_stage_req *req)
{
	memset(req, 0, sizeof(*req));
	req->stage = st;
	req->session = s->id;
	req->helo = s->helo;
	req->client_name = s->client_name[0] ? s->client_name : "unknown";
	if (s->auth && (s->flags & SF_AUTHED)) {
		req->auth_user = s->auth->user ? s->auth->user : "";
		req->auth_pass = s->auth->pass ? s->auth->pass : "";
	}
	if (s->txn && s->txn->mail_from) {
		req->mail_from = s->txn->mail_from;
		/* Borrowed for the call: the caller frees it (smtp_rcpt_view_free). */
		if ((req->rcpt = (const char *const *)smtp_rcpt_view(s->txn)) != NULL)
			req->nrcpt = s->txn->nrcpt;
		else if (s->txn->nrcpt > 0)
			log_series(&s->srv->spool_fail, LOG_LVL_WARN,
			    "%016llx smtp recipients: cannot read them back for the rules: %s",
			    (unsigned long long)s->id, strerror(errno));
	}
	req->src_ip = s->src_ip;
	req->src_port = s->src_port;
	req->dst_ip = s->dst_ip;
	req->dst_port = s->dst_port;
	req->tls = (s->flags & SF_TLS) != 0;
}

/*
 * Ask the synchronous stage hook (EHLO/HELO with helo the new argument, AUTH,
 * RSET).  Returns the reply code a matching rule wants (0: the normal reply);
 * a match is remembered for the session's later mail (tag, publish).
 */
static int
smtp_stage_hook(struct smtp_session *s, enum smtp_stage st, const char *helo,
    struct smtp_stage_result *res)
{
	struct smtp_server *srv = s->srv;
	struct smtp_stage_req req;
	int rc;

	memset(res, 0, sizeof(*res));
	if (srv->stage_cb == NULL || srv->stage_wanted == NULL ||
	    !srv->stage_wanted(srv->stage_arg, st))
		return 0;
	smtp_stage_req_fill(s, st, &req);
	if (helo)
		req.helo = helo;
	if (st == SMTP_STAGE_AUTH && s->auth) {
		/* The credentials just captured, accepted or not. */
		req.auth_user = s->auth->user ? s->auth->user : "";
		req.auth_pass = s->auth->pass ? s->auth->pass : "";
	}
	res->publish = true;
	rc = srv->stage_cb(srv->stage_arg, &req, res);
	smtp_rcpt_view_free(s->txn);
	if (rc == -1 || !res->matched) {
		free(res->record);
		memset(res, 0, sizeof(*res));
		return 0;
	}
	free(res->record);
	res->record = NULL;
	s->sdec.set = true;
	s->sdec.publish = res->publish;
	s->sdec.stage = st;
	snprintf(s->sdec.tag, sizeof(s->sdec.tag), "%s", res->tag);
	snprintf(s->sdec.rule, sizeof(s->sdec.rule), "%s", res->rule);
	if (res->reply_code < 200 || res->reply_code > 599)
		res->reply_code = 0;
	return res->reply_code;
}

/* A rule's reply line: its code and text, or a plain text for the code's class. */
static size_t
smtp_rule_line(const struct smtp_stage_result *res, char *buf, size_t len)
{
	const char *text = res->reply_text;
	int n;

	if (text[0] == '\0') {
		if (res->reply_code >= 500)
			text = "5.7.1 Service unavailable";
		else if (res->reply_code >= 400)
			text = "4.7.1 Try again later";
		else
			text = "Ok";
	}
	n = snprintf(buf, len, "%d %s", res->reply_code, text);
	if (n < 0)
		return 0;
	return (size_t)n < len ? (size_t)n : len - 1;
}

/* Send a rule's reply; 421 also ends the session, as it says. */
static void
smtp_rule_reply(struct smtp_session *s, const struct smtp_stage_result *res, bool counts)
{
	char line[300];
	size_t n = smtp_rule_line(res, line, sizeof(line));

	smtp_send_line(s, line, n);
	if (counts)
		s->errors++;
	if (res->reply_code == 421)
		smtp_close(s, "rule");
}

/*
 * NOOP, VRFY, ETRN and RSET are "junk" to Postfix: past 100 of them every one
 * counts as an error too, whatever its reply.
 */
static void
smtp_junk(struct smtp_session *s)
{
	if (s->junk++ > SMTP_JUNK_LIMIT)
		s->errors++;
}

/* RSET: drop the transaction. */
static void
cmd_rset(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	struct smtp_stage_result res;
	int code;

	if (cl->arglen > 0) {
		smtp_error(s, PR_RSET_SYNTAX, NULL);
		smtp_junk(s);
		return;
	}
	if ((code = smtp_stage_hook(s, SMTP_STAGE_RSET, NULL, &res)) >= 400) {
		/* A rule refuses the RSET: the transaction stays. */
		smtp_rule_reply(s, &res, true);
		smtp_junk(s);
		return;
	}
	smtp_txn_reset(s);
	s->size_rejected = false;
	if (code)
		smtp_rule_reply(s, &res, false);
	else
		smtp_reply(s, PR_RSET_OK, NULL);
	smtp_junk(s);
}

/* NOOP: Postfix ignores any argument. */
static void
cmd_noop(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	smtp_reply(s, PR_NOOP_OK, NULL);
	smtp_junk(s);
}

/* QUIT: say goodbye, close once it is sent. */
static void
cmd_quit(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	smtp_reply(s, PR_QUIT, NULL);
	smtp_close(s, "quit");
}

/*
 * Two words are no address (Postfix: 501 5.1.3), but a quoted local part may
 * hold blanks: VRFY <"a b"@c> is one address.
 */
static bool
smtp_unquoted_space(const char *p, size_t len)
{
	bool quoted = false;

	for (size_t i = 0; i < len; i++) {
		if (quoted && p[i] == '\\' && i + 1 < len)
			i++;
		else if (p[i] == '"')
			quoted = !quoted;
		else if (!quoted && (p[i] == ' ' || p[i] == '\t'))
			return true;
	}
	return false;
}

/* VRFY: "252" with the argument as given, as Postfix for a remote address. */
static void
cmd_vrfy(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	struct persona_vars v;

	memset(&v, 0, sizeof(v));
	if (cl->arglen == 0)
		smtp_error(s, PR_VRFY_SYNTAX, NULL);
	else if (smtp_unquoted_space(cl->arg, cl->arglen))
		smtp_error(s, PR_RCPT_BAD_ADDR, NULL);
	else {
		struct smtp_path path;
		char arg[SMTP_PATH_MAX + 8], shown[SMTP_PATH_MAX + 1];
		int m = snprintf(arg, sizeof(arg), "TO:%.*s",
		    (int)(cl->arglen < SMTP_PATH_MAX ? cl->arglen : SMTP_PATH_MAX), cl->arg);

		enum smtp_path_err e = smtp_parse_rcpt(arg, (size_t)m, &path);
		bool parsed = e == SMTP_PATH_OK && !path.null_path;

		/* extract_addr() + smtpd_check_addr(): <postmaster@> is no address */
		if (e == SMTP_PATH_ERR_ADDR)
			smtp_error(s, PR_RCPT_BAD_ADDR, NULL);
		else if (parsed && smtp_submission_denied(s, path.addr))
			;	/* answered */
		else if (parsed && s->listener->policy != LISTENER_POLICY_SUBMISSION &&
		    smtp_unknown_local(s, path.addr, shown, sizeof(shown))) {
			v.arg = shown;
			v.arglen = strlen(shown);
			smtp_error(s, PR_RCPT_UNKNOWN_LOCAL, &v);
		} else {
			v.arg = cl->arg;
			v.arglen = cl->arglen;
			smtp_reply(s, PR_VRFY_OK, &v);
		}
	}
	smtp_junk(s);
}

/* ETRN: nothing is ever queued for anyone ("459 ... service unavailable"). */
static void
cmd_etrn(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	struct persona_vars v;

	memset(&v, 0, sizeof(v));
	if (s->txn && s->txn->mail_from)
		smtp_error(s, PR_ETRN_IN_MAIL, NULL);
	else if (cl->arglen == 0)
		smtp_error(s, PR_ETRN_SYNTAX, NULL);
	else {
		v.arg = cl->arg;
		v.arglen = cl->arglen;
		if (v.arglen > 1 && (v.arg[0] == '@' || v.arg[0] == '#')) {
			v.arg++;
			v.arglen--;
		}
		smtp_error(s, PR_ETRN_REPLY, &v);
	}
	smtp_junk(s);
}

/*
 * STARTTLS: "220", then the switch once the reply is on the wire.  The
 * argument is checked first, as Postfix's starttls_cmd() does: "STARTTLS foo"
 * is a 501 inside TLS and where TLS is not offered too.
 */
static void
cmd_starttls(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	if (cl->arglen > 0) {
		smtp_error(s, PR_STARTTLS_SYNTAX, NULL);
		return;
	}
	if (s->flags & SF_TLS) {
		smtp_error(s, PR_STARTTLS_ACTIVE, NULL);
		return;
	}
	if (s->listener->tls != TLS_MODE_STARTTLS || s->srv->ssl_ctx == NULL || s->fd == -1) {
		smtp_error(s, PR_STARTTLS_UNAVAILABLE, NULL);
		return;
	}
	smtp_reply(s, PR_STARTTLS_GO, NULL);
	smtp_enter_state(s, SMTP_STATE_STARTTLS);
	bufferevent_disable(s->bev, EV_READ);
	/* Pipelined input is dropped in smtp_tls_start(). */
}

/* Free the AUTH record of the session. */
static void
smtp_auth_clear(struct smtp_session *s)
{
	if (s->auth == NULL)
		return;
	free(s->auth->user);
	free(s->auth->pass);
	free(s->auth->authzid);
	free(s->auth->raw);
	free(s->auth->challenge);
	memset(s->auth, 0, sizeof(*s->auth));
}

/* Duplicate len bytes as a C string, NUL bytes kept inside (printed escaped). */
static char *
dup_bytes(const void *p, size_t len)
{
	char *r = malloc(len + 1);

	if (r) {
		memcpy(r, p, len);
		r[len] = '\0';
	}
	return r;
}

/* Append a raw SASL line to the record. */
static void
smtp_auth_raw(struct smtp_session *s, const char *line, size_t len)
{
	size_t old = s->auth->raw ? strlen(s->auth->raw) : 0;
	char *r;

	if (len > SMTP_AUTH_LINE_MAX)
		len = SMTP_AUTH_LINE_MAX;
	if (old + len + 2 > 4 * SMTP_AUTH_LINE_MAX)
		return;
	if ((r = realloc(s->auth->raw, old + len + 2)) == NULL)
		return;
	if (old)
		r[old++] = ' ';
	memcpy(r + old, line, len);
	r[old + len] = '\0';
	s->auth->raw = r;
}

/*
 * auth.outcome policy: a user who logged in before from the same source (the
 * client's /24 or /64, within auth.memory_ttl) has that one password there:
 * another is refused; then the rules judge, and a user they accept is
 * remembered with the password for that source.  Scoped so that a detector
 * sees a consistent mailbox while no client can lock the mailboxes for the
 * others.  CRAM-MD5 sends a digest, not the password: checked against a
 * remembered password, else judged by the rules that do not look at the
 * password (authdb_check_nopass).
 */
static bool
smtp_auth_policy(struct smtp_session *s, int *rule, enum authmem_res *mem)
{
	const struct smtp_auth *a = s->auth;
	const char *user = a->user ? a->user : "", *pass = a->pass ? a->pass : "";
	bool cram = strcmp(a->mech, "CRAM-MD5") == 0 && a->challenge != NULL;
	char scope[AUTHMEM_SCOPE_MAX];
	struct timespec ts;
	bool ok;

	if (s->srv->authmem == NULL)
		s->srv->authmem = authmem_new(AUTHMEM_MAX, AUTHMEM_PER_SCOPE,
		    s->srv->cfg->auth_memory_ttl);
	authmem_set_ttl(s->srv->authmem, s->srv->cfg->auth_memory_ttl);
	authmem_scope((const struct sockaddr *)&s->peer, scope, sizeof(scope));
	clock_gettime(CLOCK_MONOTONIC, &ts);	/* a clock step changes no expiry */
	*mem = cram ? authmem_check_cram(s->srv->authmem, scope, user, a->challenge, pass,
	    ts.tv_sec) : authmem_check_pass(s->srv->authmem, scope, user, pass, ts.tv_sec);
	if (*mem == AUTHMEM_MISMATCH)
		return false;
	/* the rules still decide (a SIGHUP may have changed them) */
	ok = cram ? authdb_check_nopass(s->srv->authdb, user, rule) :
	    authdb_check(s->srv->authdb, user, pass, rule);
	if (!ok || *mem == AUTHMEM_MATCH)
		return ok;
	if (cram)
		authmem_remember_cram(s->srv->authmem, scope, user, a->challenge, pass, ts.tv_sec);
	else
		authmem_remember_pass(s->srv->authmem, scope, user, pass, ts.tv_sec);
	return ok;
}

/* The exchange is complete: decide, record, answer. */
static void
smtp_auth_finish(struct smtp_session *s)
{
	const struct cfg *cfg = s->srv->cfg;
	struct smtp_auth *a = s->auth;
	struct jbuf jb;
	char eu[300], ep[300];
	struct smtp_stage_result res;
	char err[256];
	int code, rule = 0;
	enum authmem_res mem = AUTHMEM_UNKNOWN;
	bool ok;

	s->auth_step = AS_NONE;
	smtp_enter_state(s, SMTP_STATE_COMMAND);
	switch (cfg->auth_outcome) {
	case AUTH_OUTCOME_REJECT:
		ok = false;
		break;
	case AUTH_OUTCOME_ACCEPT_AFTER:
		ok = s->auth_failures >= cfg->auth_accept_after;
		break;
	case AUTH_OUTCOME_POLICY:
		if (s->srv->authdb == NULL && smtp_server_load_auth(s->srv, err, sizeof(err)) == -1)
			log_warn("auth: credential policy: %s (refusing)", err);
		ok = smtp_auth_policy(s, &rule, &mem);
		break;
	default:
		ok = true;
		break;
	}
	/* A rule's reply decides: 2xx accepts, 4xx/5xx refuses. */
	if ((code = smtp_stage_hook(s, SMTP_STAGE_AUTH, NULL, &res)) != 0)
		ok = code < 400;
	a->success = ok;
	metrics_inc(M_AUTH, a->mech, ok ? "success" : "failure");
	jb_init(&jb);
	smtp_event_base(s, &jb, "fosr.login.attempt");
	jb_kcstr(&jb, "mechanism", a->mech);
	jb_kstr(&jb, "username", a->user ? a->user : "", a->user ? strlen(a->user) : 0);
	jb_kstr(&jb, "password", a->pass ? a->pass : "", a->pass ? strlen(a->pass) : 0);
	if (a->authzid && a->authzid[0])
		jb_kstr(&jb, "authzid", a->authzid, strlen(a->authzid));
	if (a->challenge)
		jb_kcstr(&jb, "challenge", a->challenge);
	jb_kstr(&jb, "raw", a->raw ? a->raw : "", a->raw ? strlen(a->raw) : 0);
	jb_kbool(&jb, "success", ok);
	jb_kcstr(&jb, "outcome", cfg_auth_outcome_name(cfg->auth_outcome));
	if (cfg->auth_outcome == AUTH_OUTCOME_POLICY) {
		jb_kint(&jb, "policy_line", rule);
		/* decided by the user's earlier login (another password) */
		if (mem != AUTHMEM_UNKNOWN)
			jb_kcstr(&jb, "known_user", mem == AUTHMEM_MATCH ?
			    "same password" : "other password");
	}
	log_event_message(&jb, "login attempt [%s/%s] %s (%s)", a->user ? a->user : "",
	    a->pass ? a->pass : "", ok ? "succeeded" : "failed", a->mech);
	log_event_emit(&jb);
	jb_free(&jb);
	log_info("%016llx smtp auth mechanism=%s username=\"%s\" password=\"%s\" result=%s",
	    (unsigned long long)s->id, a->mech,
	    log_escape(eu, sizeof(eu), a->user ? a->user : "", a->user ? strlen(a->user) : 0),
	    log_escape(ep, sizeof(ep), a->pass ? a->pass : "", a->pass ? strlen(a->pass) : 0),
	    ok ? "ok" : "fail");
	if (ok) {
		s->flags |= SF_AUTHED;
		if (code)
			smtp_rule_reply(s, &res, false);
		else
			smtp_reply(s, PR_AUTH_OK, NULL);
	} else {
		s->auth_failures++;
		if (code)
			smtp_rule_reply(s, &res, true);
		else
			smtp_error(s, PR_AUTH_FAILED, NULL);
	}
}

/* End a SASL exchange with an error reply (counted); returns false. */
static bool
smtp_auth_fail(struct smtp_session *s, enum persona_reply id)
{
	s->auth_step = AS_NONE;
	smtp_enter_state(s, SMTP_STATE_COMMAND);
	smtp_error(s, id, NULL);
	return false;
}

/* Send a 334 challenge, base64-encoded from plain text. */
static void
smtp_auth_challenge(struct smtp_session *s, const char *plain)
{
	char b64[512];
	struct persona_vars v;

	util_b64_encode(plain, strlen(plain), b64);
	memset(&v, 0, sizeof(v));
	v.arg = b64;
	v.arglen = strlen(b64);
	smtp_reply(s, PR_AUTH_CHALLENGE, &v);
	smtp_enter_state(s, SMTP_STATE_AUTH);
}

/*
 * Take one SASL response (initial or continuation).  Returns false when the
 * exchange ended with an error reply.
 */
static bool
smtp_auth_step(struct smtp_session *s, const char *line, size_t len)
{
	unsigned char buf[SMTP_SASL_MAX];
	size_t n, nuls = 0, i;
	int r;
	struct smtp_creds cr;

	smtp_auth_raw(s, line, len);
	r = smtp_sasl_b64(line, len, buf, sizeof(buf), &n);
	if (r == 1)
		return smtp_auth_fail(s, PR_AUTH_ABORTED);
	if (r == -1)
		return smtp_auth_fail(s, PR_AUTH_BAD_B64);
	if (r == 2)	/* an incomplete base64 group: Cyrus wants more */
		return smtp_auth_fail(s, PR_AUTH_NEED_STEP);
	switch (s->auth_step) {
	case AS_PLAIN:
		/* Cyrus: exactly "authzid\0user\0pass", and a user. */
		for (i = 0; i < n; i++)
			nuls += buf[i] == '\0';
		memset(&cr, 0, sizeof(cr));
		if (nuls != 2 || smtp_sasl_plain(buf, n, &cr) == -1)
			return smtp_auth_fail(s, PR_AUTH_BAD_B64);
		s->auth->authzid = dup_bytes(cr.authzid, strnlen(cr.authzid, sizeof(cr.authzid)));
		s->auth->user = dup_bytes(cr.user, strnlen(cr.user, sizeof(cr.user)));
		s->auth->pass = dup_bytes(cr.pass, strnlen(cr.pass, sizeof(cr.pass)));
		if (cr.userlen == 0)
			return smtp_auth_fail(s, PR_AUTH_TEMPFAIL);
		smtp_auth_finish(s);
		return true;
	case AS_LOGIN_USER:
		s->auth->user = dup_bytes(buf, n > SMTP_AUTH_FIELD_MAX ? SMTP_AUTH_FIELD_MAX : n);
		s->auth_step = AS_LOGIN_PASS;
		smtp_auth_challenge(s, "Password:");
		return true;
	case AS_LOGIN_PASS:
		s->auth->pass = dup_bytes(buf, n > SMTP_AUTH_FIELD_MAX ? SMTP_AUTH_FIELD_MAX : n);
		if (s->auth->user == NULL || s->auth->user[0] == '\0')
			return smtp_auth_fail(s, PR_AUTH_TEMPFAIL);
		smtp_auth_finish(s);
		return true;
	case AS_CRAM:
		memset(&cr, 0, sizeof(cr));
		if (smtp_sasl_cram(buf, n, &cr) == -1 || cr.userlen == 0)
			return smtp_auth_fail(s, PR_AUTH_BAD_B64);
		s->auth->user = dup_bytes(cr.user, strnlen(cr.user, sizeof(cr.user)));
		s->auth->pass = dup_bytes(cr.pass, strnlen(cr.pass, sizeof(cr.pass)));
		smtp_auth_finish(s);
		return true;
	case AS_NONE:
		break;
	}
	return false;
}

/* A line while an AUTH exchange waits for the client. */
static void
smtp_auth_input(struct smtp_session *s, const char *line, size_t len)
{
	if (log_debug_enabled()) {
		char esc[600];
		log_debug("%016llx < %s", (unsigned long long)s->id,
		    log_escape(esc, sizeof(esc), line, len));
	}
	smtp_auth_step(s, line, len);
}

/* AUTH: capture credentials for PLAIN, LOGIN and CRAM-MD5. */
static void
cmd_auth(struct smtp_session *s, const struct smtp_cmdline *cl)
{
	struct smtp_auth_arg aa;
	char chal[300];
	struct persona_vars v;

	/* Postfix's auth_cmd(): the transaction first, then "already authenticated". */
	if (s->txn && s->txn->mail_from) {
		smtp_error(s, PR_AUTH_IN_MAIL, NULL);
		return;
	}
	if (s->flags & SF_AUTHED) {
		smtp_error(s, PR_AUTH_ALREADY, NULL);
		return;
	}
	if (smtp_parse_auth(cl->arg, cl->arglen, &aa) == -1) {
		smtp_error(s, PR_AUTH_SYNTAX, NULL);
		return;
	}
	if (aa.mech == SMTP_AUTH_UNKNOWN) {
		memset(&v, 0, sizeof(v));
		v.arg = aa.mechname;
		v.arglen = aa.mechlen;
		metrics_inc(M_AUTH, metrics_pick(aa.mechname, aa.mechlen, metrics_auth_mechs),
		    "unsupported");
		smtp_error(s, PR_AUTH_BAD_MECH, &v);
		return;
	}
	if (s->auth == NULL && (s->auth = calloc(1, sizeof(*s->auth))) == NULL) {
		smtp_close(s, "oom");
		return;
	}
	smtp_auth_clear(s);
	/*
	 * An initial response of "=" or "*", or one that is not whole base64
	 * groups, leaves Cyrus wanting another step, whatever the mechanism.
	 */
	if (aa.has_initial && ((aa.initiallen == 1 &&
	    (aa.initial[0] == '=' || aa.initial[0] == '*')) || aa.initiallen % 4 != 0)) {
		unsigned char tmp[SMTP_SASL_MAX];
		size_t tn;
		if (aa.initiallen > 1 && smtp_sasl_b64(aa.initial, aa.initiallen, tmp,
		    sizeof(tmp), &tn) == -1)
			smtp_error(s, PR_AUTH_BAD_B64, NULL);
		else
			smtp_error(s, PR_AUTH_NEED_STEP, NULL);
		return;
	}
	switch (aa.mech) {
	case SMTP_AUTH_PLAIN:
		snprintf(s->auth->mech, sizeof(s->auth->mech), "PLAIN");
		s->auth_step = AS_PLAIN;
		if (aa.has_initial) {
			smtp_auth_step(s, aa.initial, aa.initiallen);
			return;
		}
		memset(&v, 0, sizeof(v));
		v.arg = "";
		smtp_reply(s, PR_AUTH_CHALLENGE, &v);
		smtp_enter_state(s, SMTP_STATE_AUTH);
		return;
	case SMTP_AUTH_LOGIN:
		snprintf(s->auth->mech, sizeof(s->auth->mech), "LOGIN");
		if (aa.has_initial) {
			s->auth_step = AS_LOGIN_USER;
			smtp_auth_step(s, aa.initial, aa.initiallen);
			return;
		}
		s->auth_step = AS_LOGIN_USER;
		smtp_auth_challenge(s, "Username:");
		return;
	case SMTP_AUTH_CRAM_MD5:
		snprintf(s->auth->mech, sizeof(s->auth->mech), "CRAM-MD5");
		if (aa.has_initial) {
			/* CRAM-MD5 has no initial response. */
			smtp_error(s, PR_AUTH_BAD_B64, NULL);
			return;
		}
		/* RFC 2195: <random.timestamp@hostname>. */
		snprintf(chal, sizeof(chal), "<%llu.%llu@%s>",
		    (unsigned long long)(util_random_u64() % 4294967296ULL),
		    (unsigned long long)(util_random_u64() % 1000000ULL), s->srv->hostname);
		s->auth->challenge = strdup(chal);
		s->auth_step = AS_CRAM;
		smtp_auth_challenge(s, chal);
		return;
	case SMTP_AUTH_UNKNOWN:
		break;
	}
}

void
smtp_server_stop(struct smtp_server *srv)
{
	struct smtp_session *s, *next;

	srv->stopping = true;
	for (s = srv->sessions; s; s = next) {
		next = s->next;
		switch (s->state) {
		case SMTP_STATE_DATA:
		case SMTP_STATE_BDAT:
		case SMTP_STATE_COMMIT:
		case SMTP_STATE_RULES:
			/* Let the message finish, within the grace period. */
			smtp_set_timer(s, SMTP_STOP_GRACE * 1000);
			break;
		default:
			smtp_hold_drop(s);
			smtp_close(s, "shutdown");
			smtp_maybe_free(s);
			break;
		}
	}
}

void
smtp_server_close_all(struct smtp_server *srv)
{
	while (srv->sessions) {
		struct smtp_session *s = srv->sessions;
		snprintf(s->close_reason, sizeof(s->close_reason), "shutdown");
		smtp_free(s);
	}
	if (srv->flush_ev != NULL) {
		event_free(srv->flush_ev);
		srv->flush_ev = NULL;
	}
	if (srv->gate_ev != NULL) {
		event_free(srv->gate_ev);
		srv->gate_ev = NULL;
	}
}

/* ------------------------------------------------------------- server */

/* A server from opts (see smtp_session.h). */
struct smtp_server *
smtp_server_new(const struct smtp_server_opts *o)
{
	struct smtp_server *srv;

	if ((srv = calloc(1, sizeof(*srv))) == NULL)
		return NULL;
	srv->base = o->base;
	srv->cfg = o->cfg;
	srv->persona = o->persona;
	srv->ssl_ctx = o->ssl_ctx;
	srv->hostname = o->hostname;
	srv->spool = o->spool;
	srv->dns = o->dns;
	srv->on_mail = o->on_mail;
	srv->on_mail_arg = o->on_mail_arg;
	smtp_server_set_hooks(srv, &o->hooks);
	return srv;
}

void
smtp_server_free(struct smtp_server *srv)
{
	if (srv == NULL)
		return;
	smtp_server_close_all(srv);
	smtp_server_free_auth(srv);
	free(srv);
}

void
smtp_server_set_spool(struct smtp_server *srv, struct spool *sp)
{
	srv->spool = sp;
}

void
smtp_server_set_dns(struct smtp_server *srv, struct dns *dns)
{
	srv->dns = dns;
}

void
smtp_server_set_on_mail(struct smtp_server *srv,
    void (*fn)(void *, const char *, size_t), void *arg)
{
	srv->on_mail = fn;
	srv->on_mail_arg = arg;
}

void
smtp_server_set_hooks(struct smtp_server *srv, const struct smtp_stage_hooks *h)
{
	srv->stage_wanted = h->wanted;
	srv->stage_cb = h->stage_cb;
	srv->data_cb = h->data_cb;
	srv->data_cancel = h->data_cancel;
	srv->stage_arg = h->arg;
}

void
smtp_server_set_on_close(struct smtp_server *srv,
    void (*fn)(void *, const struct sockaddr *), void *arg)
{
	srv->on_close = fn;
	srv->on_close_arg = arg;
}

bool
smtp_server_on_close_is(const struct smtp_server *srv, const void *arg)
{
	return srv->on_close_arg == arg;
}

void
smtp_server_set_cfg(struct smtp_server *srv, const struct cfg *cfg)
{
	srv->cfg = cfg;
}

void
smtp_server_resume(struct smtp_server *srv)
{
	srv->stopping = false;
}

struct event_base *
smtp_server_base(const struct smtp_server *srv)
{
	return srv->base;
}

const struct cfg *
smtp_server_cfg(const struct smtp_server *srv)
{
	return srv->cfg;
}

const struct persona *
smtp_server_persona(const struct smtp_server *srv)
{
	return srv->persona;
}

const char *
smtp_server_hostname(const struct smtp_server *srv)
{
	return srv->hostname;
}

SSL_CTX *
smtp_server_ssl_ctx(const struct smtp_server *srv)
{
	return srv->ssl_ctx;
}

struct spool *
smtp_server_spool(const struct smtp_server *srv)
{
	return srv->spool;
}

struct dns *
smtp_server_dns(const struct smtp_server *srv)
{
	return srv->dns;
}

unsigned
smtp_server_sessions(const struct smtp_server *srv)
{
	return srv->nsessions;
}

unsigned
smtp_server_refusing(const struct smtp_server *srv)
{
	return srv->nrefusing;
}

bool
smtp_server_stopping(const struct smtp_server *srv)
{
	return srv->stopping;
}
