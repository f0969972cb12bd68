/*
 * The SMTP server side: one struct smtp_session per client connection, all on
 * one event_base.  The session knows nothing of hpfeeds, rules or relaying: it
 * stores a message durably through the spool, then tells the server's
 * on_mail hook.
 */
#ifndef FOSR_SMTP_SESSION_H
#define FOSR_SMTP_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <openssl/ssl.h>

struct event_base;
struct dns;
struct cfg;
struct cfg_listener;
struct persona;
struct spool;
struct smtp_session;

/* The points of a session where a stage hook may decide (see smtp_server). */
enum smtp_stage { SMTP_STAGE_EHLO, SMTP_STAGE_AUTH, SMTP_STAGE_RSET, SMTP_STAGE_DATA };

/*
 * What the session knows at a stage.  Every pointer is borrowed for the call
 * of the hook only (copy what an asynchronous hook needs later), except
 * msg_path: that file stays in place until the DATA hook's done callback has
 * run or the request was cancelled.
 */
struct smtp_stage_req {
	enum smtp_stage		 stage;
	uint64_t		 session;
	const char		*helo;		/* HELO/EHLO argument ("" before any) */
	const char		*auth_user;	/* NULL: no AUTH (yet) */
	const char		*auth_pass;
	const char		*mail_from;	/* NULL: no transaction */
	const char *const	*rcpt;
	int			 nrcpt;
	const char		*src_ip;
	int			 src_port;
	const char		*client_name;	/* verified name or "unknown" (Postfix's) */
	const char		*dst_ip;
	int			 dst_port;
	bool			 tls;
	/* SMTP_STAGE_DATA only. */
	const char		*msg_path;	/* the complete message (exact DATA bytes), or NULL: */
	/* the bytes when the spool holds them in memory (small mails), else NULL; valid during data_cb only. */
	const unsigned char	*msg_data;
	size_t			 msg_len;
	uint64_t		 size;
	const char		*sha256;
	const char		*queue_id;
};

/* A hook's answer.  Without a match the session goes on as if there was no hook. */
struct smtp_stage_result {
	bool			 matched;
	int			 reply_code;	/* 0: the normal reply; else 200..599 */
	char			 reply_text[256];	/* printable ASCII; "" = a default text */
	bool			 publish;	/* false: keep the mail off the feeds */
	char			 tag[64];
	char			 rule[64];
	/*
	 * DATA: a JSON object (malloc'd, ownership passes to the session) kept
	 * in the reception record under "rules"; NULL when there is none.
	 */
	char			*record;
};

/*
 * The DATA hook's completion: runs on the event loop thread, never inside the
 * data hook itself, exactly once unless the request was cancelled.  status
 * -1: no decision (the message is kept and answered as usual).  res->record
 * passes to the session; the rest of res is borrowed for the call.
 */
typedef void	(*smtp_stage_done_cb)(void *done_arg, int status, struct smtp_stage_result *res);

/*
 * The stage hooks (all NULL: none).  wanted says whether a stage has
 * anything to decide (no request is built otherwise).  stage_cb decides
 * EHLO/HELO, AUTH and RSET synchronously on the loop: 0 with res filled, or
 * -1 (no decision).  data_cb starts the decision on a complete message
 * (before it is committed) and returns a handle, or NULL to go on without
 * one; the session waits, reading nothing, for done.  data_cancel: the
 * session is going away, done must not run.
 */
struct smtp_stage_hooks {
	bool			(*wanted)(void *arg, enum smtp_stage st);
	int			(*stage_cb)(void *arg, const struct smtp_stage_req *req,
				    struct smtp_stage_result *res);
	void			*(*data_cb)(void *arg, const struct smtp_stage_req *req,
				    smtp_stage_done_cb done, void *done_arg);
	void			(*data_cancel)(void *arg, void *handle);
	void			*arg;
};

/*
 * What every session shares (struct smtp_server, opaque): owned by main,
 * outlives every session.  Every pointer is borrowed and must outlive it.
 */
struct smtp_server_opts {
	struct event_base	*base;
	const struct cfg	*cfg;
	const struct persona	*persona;
	SSL_CTX			*ssl_ctx;	/* NULL: no TLS at all */
	const char		*hostname;
	/* These may be set later with the setters below (they are made after binding). */
	struct spool		*spool;
	/*
	 * The client name lookup before the greeting (cfg client_lookup); NULL:
	 * none, every client is "unknown" (Postfix's smtpd_peername_lookup = no).
	 */
	struct dns		*dns;
	/* Called after a message is durable, with its journal record. */
	void			(*on_mail)(void *arg, const char *record, size_t len);
	void			*on_mail_arg;
	struct smtp_stage_hooks	 hooks;
};
struct smtp_server;

/* A server from opts (copied); NULL when out of memory. */
struct smtp_server *smtp_server_new(const struct smtp_server_opts *opts);
/* Free it: call smtp_server_close_all() first.  NULL is a no-op. */
void		 smtp_server_free(struct smtp_server *);

/* The parts made after the server (main binds the listeners first). */
void		 smtp_server_set_spool(struct smtp_server *, struct spool *);
void		 smtp_server_set_dns(struct smtp_server *, struct dns *);
void		 smtp_server_set_on_mail(struct smtp_server *,
		    void (*)(void *arg, const char *record, size_t len), void *arg);
void		 smtp_server_set_hooks(struct smtp_server *, const struct smtp_stage_hooks *);
/* Called when a session ends (the listener's bookkeeping); fn NULL: none. */
void		 smtp_server_set_on_close(struct smtp_server *,
		    void (*fn)(void *arg, const struct sockaddr *peer), void *arg);
/* Whether arg is the on_close argument set now. */
bool		 smtp_server_on_close_is(const struct smtp_server *, const void *arg);
/* Another configuration for the sessions started from now (tests, fuzzing). */
void		 smtp_server_set_cfg(struct smtp_server *, const struct cfg *);

struct event_base *smtp_server_base(const struct smtp_server *);
const struct cfg *smtp_server_cfg(const struct smtp_server *);
const struct persona *smtp_server_persona(const struct smtp_server *);
const char	*smtp_server_hostname(const struct smtp_server *);
SSL_CTX		*smtp_server_ssl_ctx(const struct smtp_server *);
struct spool	*smtp_server_spool(const struct smtp_server *);
struct dns	*smtp_server_dns(const struct smtp_server *);
/* Live sessions. */
unsigned	 smtp_server_sessions(const struct smtp_server *);
/* Of them, the short sessions that only say a refusal (smtp_session_refuse). */
unsigned	 smtp_server_refusing(const struct smtp_server *);
/* Whether a graceful stop is in progress. */
bool		 smtp_server_stopping(const struct smtp_server *);

/*
 * Start a session on an accepted, non-blocking socket.  Takes ownership of fd
 * (closed on failure too).  listener and peer/local addresses are copied.
 * Returns NULL when out of memory.
 */
struct smtp_session *smtp_session_new(struct smtp_server *srv,
		    const struct cfg_listener *listener, int port, int fd,
		    const struct sockaddr *peer, socklen_t peerlen);
/*
 * The same for a connection refused with reply (a 421) where Postfix's
 * smtpd sends it: after the client lookup and, on an implicit TLS
 * listener, the handshake; then closed, a fosr.session.refused event
 * (reason why, a static string) and no on_close (the listener did not
 * count it).  Counted in nsessions and nrefusing: the caller keeps
 * nrefusing under SMTP_REFUSING_MAX and out of its sessions cap.
 */
#define SMTP_REFUSING_MAX	64	/* smtp_session_refuse() sessions at once */
struct smtp_session *smtp_session_refuse(struct smtp_server *srv,
		    const struct cfg_listener *listener, int port, int fd,
		    const struct sockaddr *peer, socklen_t peerlen, int reply,
		    const char *why);

/*
 * Start a session on an existing bufferevent (a bufferevent_pair in the fuzz
 * target and tests).  Plain SMTP only: STARTTLS is not offered.  Takes
 * ownership of bev.  Returns NULL when out of memory.
 */
struct bufferevent;
struct smtp_session *smtp_session_new_bev(struct smtp_server *srv,
		    const struct cfg_listener *listener, struct bufferevent *bev,
		    const struct sockaddr *peer, socklen_t peerlen);

/*
 * Graceful stop: idle sessions are closed now; sessions inside DATA, BDAT or a
 * commit may finish their message and are closed after their reply.
 */
void		 smtp_server_stop(struct smtp_server *srv);

/*
 * (Re)load the credential policy (auth.credentials, or the built-in list):
 * at start and on SIGHUP.  On failure -1 with err set, the previous rules kept.
 */
int		 smtp_server_load_auth(struct smtp_server *srv, char *err, size_t errlen);
void		 smtp_server_free_auth(struct smtp_server *srv);

/* Close every remaining session at once (end of the grace period). */
void		 smtp_server_close_all(struct smtp_server *srv);
/* Serve again after smtp_server_stop() (a test or fuzz run reusing the server). */
void		 smtp_server_resume(struct smtp_server *srv);

#endif
