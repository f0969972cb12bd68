/*
 * Outbound SMTP client state machine (see smtp_client.h).  The state changes
 * in one place, smtpc_enter(); each state arms its own timeout as the
 * bufferevent's read/write timeout.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "log.h"
#include "smtp_client.h"

#define SMTPC_LINE_MAX		2048	/* a reply line longer than this is an error */
#define SMTPC_REPLY_LINES_MAX	100

enum smtpc_state {
	SMTPC_CONNECT, SMTPC_GREETING, SMTPC_EHLO, SMTPC_HELO, SMTPC_STARTTLS,
	SMTPC_TLS, SMTPC_MAIL, SMTPC_RCPT, SMTPC_DATA, SMTPC_DOT, SMTPC_QUIT,
	SMTPC_DONE
};

static const char *const smtpc_stage_names[] = {
	"connect", "greeting", "ehlo", "helo", "starttls", "tls", "mail", "rcpt",
	"data", "dot", "quit", "done"
};

struct smtp_client {
	struct event_base	*base;
	struct bufferevent	*bev;
	struct event		*deadline;	/* the whole attempt */
	struct smtp_client_opts	 o;
	smtp_client_cb		 cb;
	void			*arg;
	enum smtpc_state	 state;
	bool			 tls_active;
	bool			 ehlo_starttls, ehlo_8bitmime, ehlo_size;
	int			 nlines;	/* lines of the reply being read */
	int			 code;
	char			 rtext[512];
	struct smtp_client_result res;
	size_t			 tlen;		/* transcript length */
};

static void	 smtpc_enter(struct smtp_client *, enum smtpc_state);
static void	 smtpc_send(struct smtp_client *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static void	 smtpc_trace(struct smtp_client *, char, const char *, size_t);
static void	 smtpc_read_cb(struct bufferevent *, void *);
static void	 smtpc_event_cb(struct bufferevent *, short, void *);
static void	 smtpc_reply(struct smtp_client *);
static void	 smtpc_finish(struct smtp_client *, enum smtp_client_status, const char *);
static void	 smtpc_start_tls(struct smtp_client *);
static void	 smtpc_tls_info(struct smtp_client *);
static void	 smtpc_send_body(struct smtp_client *);
static void	 smtpc_deadline_cb(evutil_socket_t, short, void *);
static void	 smtpc_timeouts(struct smtp_client *, int);

/* A client context: any certificate is accepted, the result is recorded. */
SSL_CTX *
smtp_client_ssl_ctx_new(void)
{
	SSL_CTX *ctx;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		return NULL;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_default_verify_paths(ctx);
	SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
	return ctx;
}

/* A word for a status. */
const char *
smtp_client_status_name(enum smtp_client_status s)
{
	switch (s) {
	case SMTPC_DELIVERED:
		return "delivered";
	case SMTPC_TEMPFAIL:
		return "tempfail";
	case SMTPC_PERMFAIL:
		return "permfail";
	}
	return "unknown";
}

/* Start one delivery. */
struct smtp_client *
smtp_client_start(struct event_base *base, const struct smtp_client_opts *o,
    smtp_client_cb cb, void *arg)
{
	struct smtp_client *c;

	/* A line break in a command argument would inject commands: never sent. */
	if (strpbrk(o->helo, "\r\n") || strpbrk(o->mail_from, "\r\n") ||
	    strpbrk(o->rcpt, "\r\n"))
		return NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->base = base;
	c->o = *o;
	c->cb = cb;
	c->arg = arg;
	c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		free(c);
		return NULL;
	}
	bufferevent_setcb(c->bev, smtpc_read_cb, NULL, smtpc_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, 64 * 1024);
	if (o->attempt_timeout > 0) {
		struct timeval tv = { o->attempt_timeout, 0 };
		if ((c->deadline = evtimer_new(base, smtpc_deadline_cb, c)) == NULL ||
		    evtimer_add(c->deadline, &tv) == -1) {
			if (c->deadline)
				event_free(c->deadline);
			bufferevent_free(c->bev);
			free(c);
			return NULL;
		}
	}
	smtpc_enter(c, SMTPC_CONNECT);
	if (bufferevent_socket_connect(c->bev, (struct sockaddr *)o->addr,
	    (int)o->addrlen) == -1) {
		/* Reported from the loop like any other failure. */
		snprintf(c->res.error, sizeof(c->res.error), "connect: %s",
		    strerror(errno ? errno : ECONNREFUSED));
		smtp_client_cancel(c);
		return NULL;
	}
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	return c;
}

/* Abort without a callback. */
void
smtp_client_cancel(struct smtp_client *c)
{
	if (c == NULL)
		return;
	if (c->deadline)
		event_free(c->deadline);
	if (c->bev)
		bufferevent_free(c->bev);
	free(c);
}

/*
 * The attempt's deadline: the per-state timeouts restart with every byte
 * read or written, so a server sending one byte a second would hold the
 * relay forever without this.
 */
static void
smtpc_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *c = arg;
	char err[200];

	if (c->state == SMTPC_QUIT) {
		/* The message was accepted; only the goodbye is missing. */
		smtpc_finish(c, SMTPC_DELIVERED, NULL);
	} else {
		snprintf(err, sizeof(err), "attempt deadline (%d s) reached in %s",
		    c->o.attempt_timeout, smtpc_stage_names[c->state]);
		smtpc_finish(c, SMTPC_TEMPFAIL, err);
	}
	smtp_client_cancel(c);
}

/* Set read and write timeouts to secs. */
static void
smtpc_timeouts(struct smtp_client *c, int secs)
{
	struct timeval tv = { secs > 0 ? secs : 1, 0 };

	bufferevent_set_timeouts(c->bev, &tv, &tv);
}

/* The only writer of c->state. */
static void
smtpc_enter(struct smtp_client *c, enum smtpc_state st)
{
	int t;

	c->state = st;
	c->nlines = 0;
	c->rtext[0] = '\0';
	switch (st) {
	case SMTPC_CONNECT:
		t = c->o.connect_timeout;
		break;
	case SMTPC_GREETING:
		t = c->o.greeting_timeout;
		break;
	case SMTPC_DATA:
	case SMTPC_DOT:
		t = c->o.data_timeout;
		break;
	default:
		t = c->o.command_timeout;
		break;
	}
	if (c->bev)
		smtpc_timeouts(c, t);
}

/* Append a line to the transcript (bounded, escaped). */
static void
smtpc_trace(struct smtp_client *c, char who, const char *s, size_t len)
{
	char esc[600];
	int n;

	if (c->tlen + 8 >= sizeof(c->res.transcript))
		return;
	log_escape(esc, sizeof(esc), s, len);
	n = snprintf(c->res.transcript + c->tlen, sizeof(c->res.transcript) - c->tlen,
	    "%c: %s\n", who, esc);
	if (n > 0)
		c->tlen += (size_t)n < sizeof(c->res.transcript) - c->tlen ? (size_t)n :
		    sizeof(c->res.transcript) - c->tlen - 1;
}

/* Send one command line. */
static void
smtpc_send(struct smtp_client *c, const char *fmt, ...)
{
	char line[1100];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 2)
		n = (int)sizeof(line) - 3;
	smtpc_trace(c, 'C', line, (size_t)n);
	memcpy(line + n, "\r\n", 2);
	bufferevent_write(c->bev, line, (size_t)n + 2);
}

/*
 * Deliver the result once; the state becomes DONE and the top-level callback
 * frees the client.
 */
static void
smtpc_finish(struct smtp_client *c, enum smtp_client_status st, const char *error)
{
	if (c->state == SMTPC_DONE)
		return;
	c->res.status = st;
	c->res.stage = smtpc_stage_names[c->state == SMTPC_QUIT ? SMTPC_DOT : c->state];
	if (st != SMTPC_DELIVERED) {
		c->res.code = c->code;
		snprintf(c->res.reply, sizeof(c->res.reply), "%s", c->rtext);
	}
	if (error && !c->res.error[0])
		snprintf(c->res.error, sizeof(c->res.error), "%s", error);
	c->res.transcript[c->tlen] = '\0';
	c->state = SMTPC_DONE;
	c->cb(c->arg, &c->res);
}

/* Connection events: connected, TLS up, EOF, error, timeout. */
static void
smtpc_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_client *c = arg;
	char err[200];
	unsigned long e;

	if (what & BEV_EVENT_CONNECTED) {
		if (c->state == SMTPC_CONNECT) {
			smtpc_enter(c, SMTPC_GREETING);
			/* The greeting may be buffered already. */
			if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
				smtpc_read_cb(bev, c);
		} else if (c->state == SMTPC_TLS) {
			c->tls_active = true;
			smtpc_tls_info(c);
			smtpc_enter(c, SMTPC_EHLO);
			smtpc_send(c, "EHLO %s", c->o.helo);
		}
		return;
	}
	if (c->state == SMTPC_QUIT) {
		smtpc_finish(c, SMTPC_DELIVERED, NULL);
		smtp_client_cancel(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		snprintf(err, sizeof(err), "timeout in %s", smtpc_stage_names[c->state]);
	} else if (what & BEV_EVENT_EOF) {
		snprintf(err, sizeof(err), "connection closed by the server in %s",
		    smtpc_stage_names[c->state]);
	} else if (c->state == SMTPC_TLS && (e = bufferevent_get_openssl_error(bev)) != 0) {
		snprintf(err, sizeof(err), "TLS handshake: %s",
		    ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "failed");
	} else {
		int se = EVUTIL_SOCKET_ERROR();
		snprintf(err, sizeof(err), "%s: %s", smtpc_stage_names[c->state],
		    se ? evutil_socket_error_to_string(se) : "connection error");
	}
	smtpc_finish(c, SMTPC_TEMPFAIL, err);
	smtp_client_cancel(c);
}

/* Lines arrived: assemble one reply at a time. */
static void
smtpc_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len, off;
	char *line;

	/* Bytes before the connect event: the connection is up. */
	if (c->state == SMTPC_CONNECT)
		smtpc_enter(c, SMTPC_GREETING);
	while (c->state != SMTPC_DONE && c->state != SMTPC_TLS) {
		line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
		if (line == NULL) {
			if (evbuffer_get_length(in) > SMTPC_LINE_MAX)
				smtpc_finish(c, SMTPC_TEMPFAIL, "reply line too long");
			break;
		}
		smtpc_trace(c, 'S', line, len);
		if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
		    line[1] > '9' || line[2] < '0' || line[2] > '9' ||
		    (len > 3 && line[3] != ' ' && line[3] != '-') ||
		    ++c->nlines > SMTPC_REPLY_LINES_MAX) {
			free(line);
			smtpc_finish(c, SMTPC_TEMPFAIL, "malformed reply");
			break;
		}
		c->code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		off = strlen(c->rtext);
		if (off + 8 < sizeof(c->rtext)) {
			if (off > 0) {
				memcpy(c->rtext + off, " / ", 4);
				off += 3;
			}
			log_escape(c->rtext + off, sizeof(c->rtext) - off, line, len);
		}
		if (c->state == SMTPC_EHLO && len > 4) {
			const char *kw = line + 4;
			if (strncasecmp(kw, "STARTTLS", 8) == 0 && (kw[8] == '\0' || kw[8] == ' '))
				c->ehlo_starttls = true;
			else if (strncasecmp(kw, "8BITMIME", 8) == 0)
				c->ehlo_8bitmime = true;
			else if (strncasecmp(kw, "SIZE", 4) == 0)
				c->ehlo_size = true;
		}
		if (len > 3 && line[3] == '-') {
			free(line);
			continue;
		}
		free(line);
		smtpc_reply(c);
	}
	if (c->state == SMTPC_DONE)
		smtp_client_cancel(c);
}

/* A complete reply for the current state. */
static void
smtpc_reply(struct smtp_client *c)
{
	int cls = c->code / 100;

	switch (c->state) {
	case SMTPC_GREETING:
		if (cls != 2) {
			smtpc_finish(c, SMTPC_TEMPFAIL, "greeting refused");
			return;
		}
		smtpc_enter(c, SMTPC_EHLO);
		smtpc_send(c, "EHLO %s", c->o.helo);
		return;
	case SMTPC_EHLO:
		if (cls != 2) {
			smtpc_enter(c, SMTPC_HELO);
			smtpc_send(c, "HELO %s", c->o.helo);
			return;
		}
		if (c->ehlo_starttls && !c->tls_active)
			c->res.starttls_offered = true;
		if (c->ehlo_starttls && !c->tls_active && c->o.ssl_ctx != NULL) {
			smtpc_enter(c, SMTPC_STARTTLS);
			smtpc_send(c, "STARTTLS");
			return;
		}
		goto mail;
	case SMTPC_HELO:
		if (cls != 2) {
			smtpc_finish(c, SMTPC_TEMPFAIL, "HELO refused");
			return;
		}
		c->ehlo_size = c->ehlo_8bitmime = false;
		goto mail;
	case SMTPC_STARTTLS:
		if (c->code != 220) {
			/* Opportunistic: carry on in plain text, as Postfix does. */
			goto mail;
		}
		smtpc_start_tls(c);
		return;
	case SMTPC_MAIL:
		if (cls != 2) {
			smtpc_finish(c, cls == 5 ? SMTPC_PERMFAIL : SMTPC_TEMPFAIL,
			    "MAIL refused");
			return;
		}
		smtpc_enter(c, SMTPC_RCPT);
		smtpc_send(c, "RCPT TO:<%s>", c->o.rcpt);
		return;
	case SMTPC_RCPT:
		if (cls != 2) {
			smtpc_finish(c, cls == 5 ? SMTPC_PERMFAIL : SMTPC_TEMPFAIL,
			    "RCPT refused");
			return;
		}
		smtpc_enter(c, SMTPC_DATA);
		smtpc_send(c, "DATA");
		return;
	case SMTPC_DATA:
		if (c->code != 354) {
			smtpc_finish(c, cls == 5 ? SMTPC_PERMFAIL : SMTPC_TEMPFAIL,
			    "DATA refused");
			return;
		}
		smtpc_enter(c, SMTPC_DOT);
		smtpc_send_body(c);
		return;
	case SMTPC_DOT:
		if (cls != 2) {
			smtpc_finish(c, cls == 5 ? SMTPC_PERMFAIL : SMTPC_TEMPFAIL,
			    "message refused");
			return;
		}
		/* Delivered: keep the final reply, then say goodbye. */
		c->res.code = c->code;
		snprintf(c->res.reply, sizeof(c->res.reply), "%s", c->rtext);
		smtpc_enter(c, SMTPC_QUIT);
		smtpc_send(c, "QUIT");
		return;
	case SMTPC_QUIT:
		/* The QUIT reply does not change the outcome. */
		smtpc_finish(c, SMTPC_DELIVERED, NULL);
		return;
	default:
		return;
	}
mail:
	smtpc_enter(c, SMTPC_MAIL);
	if (c->ehlo_size)
		smtpc_send(c, "MAIL FROM:<%s> SIZE=%zu%s", c->o.mail_from,
		    smtp_client_body_size(c->o.header, c->o.headerlen, c->o.msg, c->o.msglen),
		    c->ehlo_8bitmime ? " BODY=8BITMIME" : "");
	else
		smtpc_send(c, "MAIL FROM:<%s>%s", c->o.mail_from,
		    c->ehlo_8bitmime ? " BODY=8BITMIME" : "");
}

/* 220 to STARTTLS: put a TLS filter over the connection. */
static void
smtpc_start_tls(struct smtp_client *c)
{
	struct bufferevent *tls;
	SSL *ssl;

	if ((ssl = SSL_new(c->o.ssl_ctx)) == NULL) {
		smtpc_finish(c, SMTPC_TEMPFAIL, "TLS: out of memory");
		return;
	}
	if (c->o.peer_name && c->o.peer_name[0])
		SSL_set_tlsext_host_name(ssl, c->o.peer_name);
	/* Bytes after the 220 would be a STARTTLS injection: drop them. */
	evbuffer_drain(bufferevent_get_input(c->bev),
	    evbuffer_get_length(bufferevent_get_input(c->bev)));
	tls = bufferevent_openssl_filter_new(c->base, c->bev, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (tls == NULL) {
		SSL_free(ssl);
		smtpc_finish(c, SMTPC_TEMPFAIL, "TLS: cannot start");
		return;
	}
	c->bev = tls;
	c->ehlo_starttls = c->ehlo_8bitmime = c->ehlo_size = false;
	bufferevent_setcb(c->bev, smtpc_read_cb, NULL, smtpc_event_cb, c);
	smtpc_enter(c, SMTPC_TLS);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* Record the negotiated TLS parameters. */
static void
smtpc_tls_info(struct smtp_client *c)
{
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	X509 *cert;
	int bits = 0;

	if (ssl == NULL)
		return;
	c->res.tls = true;
	snprintf(c->res.tls_version, sizeof(c->res.tls_version), "%s", SSL_get_version(ssl));
	snprintf(c->res.tls_cipher, sizeof(c->res.tls_cipher), "%s",
	    SSL_get_cipher_name(ssl) ? SSL_get_cipher_name(ssl) : "");
	SSL_get_cipher_bits(ssl, &bits);
	c->res.tls_bits = bits;
	if ((cert = SSL_get1_peer_certificate(ssl)) != NULL) {
		X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName,
		    c->res.tls_peer, sizeof(c->res.tls_peer));
		X509_free(cert);
		c->res.tls_verified = SSL_get_verify_result(ssl) == X509_V_OK;
	}
}

/* Output of smtp_client_body, staged to add to the evbuffer in runs. */
struct smtpc_wr {
	struct evbuffer	*out;		/* NULL: only count (smtp_client_body_size) */
	size_t		 count;
	unsigned char	 buf[4096];
	size_t		 len;
	bool		 bol;		/* at the beginning of a line */
	bool		 cr;		/* a CR was read, its line end not written yet */
};

static void
smtpc_wr_put(struct smtpc_wr *w, const char *p, size_t n)
{
	if (w->out == NULL) {
		w->count += n;
		return;
	}
	if (w->len + n > sizeof(w->buf)) {
		evbuffer_add(w->out, w->buf, w->len);
		w->len = 0;
	}
	memcpy(w->buf + w->len, p, n);
	w->len += n;
}

/*
 * Copy bytes with CRLF line ends and dots stuffed.  A CR followed by LF is
 * one line end; a CR alone and an LF alone are each made one (RFC 5321
 * 2.3.8: they must not be sent bare).
 */
static void
smtpc_wr_bytes(struct smtpc_wr *w, const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = p[i];

		if (w->cr) {
			w->cr = false;
			smtpc_wr_put(w, "\r\n", 2);
			w->bol = true;
			if (ch == '\n')
				continue;
		}
		if (ch == '\r') {
			w->cr = true;
			continue;
		}
		if (ch == '\n') {
			smtpc_wr_put(w, "\r\n", 2);
			w->bol = true;
			continue;
		}
		/* RFC 1870: the SIZE counts no stuffing dot. */
		if (w->bol && ch == '.' && w->out != NULL)
			smtpc_wr_put(w, ".", 1);
		smtpc_wr_put(w, (const char *)&ch, 1);
		w->bol = false;
	}
}

/* The message's size as sent: line ends made CRLF, no stuffing, no terminator. */
size_t
smtp_client_body_size(const unsigned char *hdr, size_t hdrlen, const unsigned char *msg,
    size_t msglen)
{
	struct smtpc_wr w;

	memset(&w, 0, sizeof(w));
	w.bol = true;
	smtpc_wr_bytes(&w, hdr, hdrlen);
	smtpc_wr_bytes(&w, msg, msglen);
	if (w.cr) {
		w.count += 2;
		w.bol = true;
	}
	if (!w.bol)
		w.count += 2;
	return w.count;
}

/* The DATA payload. */
void
smtp_client_body(struct evbuffer *out, const unsigned char *hdr, size_t hdrlen,
    const unsigned char *msg, size_t msglen)
{
	struct smtpc_wr w;

	memset(&w, 0, sizeof(w));
	w.out = out;
	w.bol = true;
	smtpc_wr_bytes(&w, hdr, hdrlen);
	smtpc_wr_bytes(&w, msg, msglen);
	if (w.cr) {
		smtpc_wr_put(&w, "\r\n", 2);
		w.bol = true;
	}
	/* The terminator needs a line start; a message without a final line end gets one. */
	if (!w.bol)
		smtpc_wr_put(&w, "\r\n", 2);
	smtpc_wr_put(&w, ".\r\n", 3);
	evbuffer_add(out, w.buf, w.len);
}

/* 354: the header, the message (line ends made CRLF, dots stuffed), the dot. */
static void
smtpc_send_body(struct smtp_client *c)
{
	smtp_client_body(bufferevent_get_output(c->bev), c->o.header, c->o.headerlen,
	    c->o.msg, c->o.msglen);
	smtpc_trace(c, 'C', "<message>", 9);
}
