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
struct cfg;
struct cfg_listener;
struct persona;
struct spool;
struct smtp_session;

/* What every session shares; owned by main, outlives every session. */
struct smtp_server {
	struct event_base	*base;
	const struct cfg	*cfg;
	const struct persona	*persona;
	SSL_CTX			*ssl_ctx;	/* NULL: no TLS at all */
	struct spool		*spool;
	const char		*hostname;
	/* Called after a message is durable, with its journal record. */
	void			(*on_mail)(void *arg, const char *record, size_t len);
	void			*on_mail_arg;
	/* Called when a session ends (listener bookkeeping). */
	void			(*on_close)(void *arg, const struct sockaddr *peer);
	void			*on_close_arg;
	unsigned		 nsessions;
	bool			 stopping;	/* graceful shutdown in progress */
	struct smtp_session	*sessions;	/* list of live sessions */
};

/*
 * Start a session on an accepted, non-blocking socket.  Takes ownership of fd
 * (closed on failure too).  listener and peer/local addresses are copied.
 * Returns NULL when out of memory.
 */
struct smtp_session *smtp_session_new(struct smtp_server *srv,
		    const struct cfg_listener *listener, int port, int fd,
		    const struct sockaddr *peer, socklen_t peerlen);

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

/* Close every remaining session at once (end of the grace period). */
void		 smtp_server_close_all(struct smtp_server *srv);

#endif
