/*
 * Outbound SMTP client: one delivery of one message to one recipient over one
 * connection, as a state machine on the libevent loop (connect, greeting,
 * EHLO (HELO fallback), STARTTLS when offered, MAIL, RCPT, DATA, QUIT).
 * Opportunistic TLS: the certificate is not required to be valid; what was
 * negotiated is reported.  Every wait has a timeout, and the whole attempt a
 * deadline (a server that drips a byte at a time restarts the per-wait
 * timeouts but not the deadline).  Never logs.
 */
#ifndef FOSR_SMTP_CLIENT_H
#define FOSR_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <openssl/ssl.h>

struct event_base;
struct evbuffer;
struct smtp_client;

#define SMTPC_TRANSCRIPT_MAX	4096

struct smtp_client_opts {
	const char		*helo;		/* our EHLO name */
	const char		*peer_name;	/* MX host name: SNI, reports */
	const struct sockaddr	*addr;		/* with its port */
	socklen_t		 addrlen;
	int			 connect_timeout;	/* seconds */
	int			 greeting_timeout;
	int			 command_timeout;
	int			 data_timeout;
	int			 attempt_timeout;	/* connect through QUIT; 0 = none */
	SSL_CTX			*ssl_ctx;	/* client context; NULL: never STARTTLS */
	const char		*mail_from;	/* reverse path without <> ("" = null) */
	const char		*rcpt;		/* one forward path without <> */
	/*
	 * The message: header bytes then msg bytes, sent as they are but for
	 * line ends (a bare CR or LF becomes CRLF) and dot-stuffing.
	 */
	const unsigned char	*header;
	size_t			 headerlen;
	const unsigned char	*msg;
	size_t			 msglen;
};

enum smtp_client_status {
	SMTPC_DELIVERED,	/* 250 after the final dot */
	SMTPC_TEMPFAIL,		/* network, timeout, TLS, 4xx: another MX may work */
	SMTPC_PERMFAIL,		/* 5xx to MAIL, RCPT, DATA or the dot */
};

struct smtp_client_result {
	enum smtp_client_status	 status;
	const char		*stage;		/* where it ended: "connect", "greeting", ... */
	int			 code;		/* last reply code, 0 = none */
	char			 reply[512];	/* last reply (escaped, lines joined by " / ") */
	char			 error[256];	/* local reason: "timeout", "connection refused" */
	bool			 starttls_offered;
	bool			 tls;
	char			 tls_version[32];
	char			 tls_cipher[64];
	int			 tls_bits;
	bool			 tls_verified;	/* the chain verified (not required) */
	char			 tls_peer[128];	/* certificate subject CN, "" = none */
	char			 transcript[SMTPC_TRANSCRIPT_MAX];	/* "C: ...\nS: ...\n" */
};

/* Runs once on the loop; the client frees itself right after. */
typedef void	(*smtp_client_cb)(void *arg, const struct smtp_client_result *);

/*
 * Start a delivery.  The buffers of opts are borrowed until cb has run (or
 * smtp_client_cancel).  NULL when it cannot even start (out of memory, the
 * connect failed at once, or a CR or LF in helo, mail_from or rcpt).
 */
struct smtp_client *smtp_client_start(struct event_base *, const struct smtp_client_opts *,
		    smtp_client_cb cb, void *arg);

/* Abort a delivery: the connection is closed, cb is not run. */
void		 smtp_client_cancel(struct smtp_client *);

const char	*smtp_client_status_name(enum smtp_client_status);

/*
 * The DATA payload: hdr then msg with every line end made CRLF (bare CR and
 * bare LF included: no SMTP smuggling passes through the relay), dots
 * stuffed, a final CRLF when missing, and the terminating ".".
 */
void		 smtp_client_body(struct evbuffer *out, const unsigned char *hdr, size_t hdrlen,
		    const unsigned char *msg, size_t msglen);

/* What SIZE= declares: the octets of that payload without stuffing dots and ".". */
size_t		 smtp_client_body_size(const unsigned char *hdr, size_t hdrlen,
		    const unsigned char *msg, size_t msglen);

/* A client SSL_CTX for opportunistic STARTTLS (no verification required). */
SSL_CTX		*smtp_client_ssl_ctx_new(void);

#endif
