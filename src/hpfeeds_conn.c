/*
 * The hpfeeds broker connection (see hpfeeds.c for the state machine):
 * connect (DNS, TCP, TLS), drop and reconnect with a backoff, reading and
 * decoding frames, INFO answered with AUTH and SUBSCRIBE, ERROR frames,
 * the deadline of every state and the once-a-second tick (cursors saved,
 * stalls noticed).
 */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "hpfeeds.h"
#include "hpfeeds_int.h"
#include "hpfeeds_wire.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "spool.h"
#include "util.h"

static void	 hp_reconnect_schedule(struct hpf *);
static void	 hp_event_cb(struct bufferevent *, short, void *);
static void	 hp_read_cb(struct bufferevent *, void *);
static void	 hp_write_cb(struct bufferevent *, void *);
static int	 hp_frame_handle(struct hpf *, const struct hpf_frame *);
static int	 hp_on_info(struct hpf *, const struct hpf_frame *);
static void	 hp_on_error_frame(struct hpf *, const struct hpf_frame *);
static void	 hp_sock_tune(int fd);
static int	 hp_deadline_check(struct hpf *, uint64_t now);
static void	 hp_out_drained_cb(struct evbuffer *, const struct evbuffer_cb_info *,
		    void *);

/* ----------------------------------------------------------- connection */

/* Whether s is a numeric IPv4 or IPv6 address. */
static bool
hp_is_ip_literal(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* Begin a connection attempt (non-blocking). */
void
hpf_conn_start(struct hpf *h)
{
	const char *name;
	SSL *ssl = NULL;
	bool literal = hp_is_ip_literal(h->feed.broker);
	uint64_t gen;

	h->stats.connects++;
	metrics_inc(M_FEED_CONNECTS, "hpfeeds", NULL);
	h->closing_logged = false;
	if (!literal && h->dns == NULL &&
	    (h->dns = evdns_base_new(h->base, EVDNS_BASE_INITIALIZE_NAMESERVERS)) == NULL) {
		hpf_series_warn(h, "hpfeeds: broker=%s:%d cannot set up DNS resolution",
		    h->feed.broker, h->feed.port);
		hp_reconnect_schedule(h);
		return;
	}
	if (h->feed.tls) {
		name = h->feed.server_name[0] != '\0' ? h->feed.server_name : h->feed.broker;
		if ((ssl = SSL_new(h->ssl_ctx)) == NULL)
			goto fail;
		if (hp_is_ip_literal(name)) {
			if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) != 1)
				goto fail;
		} else if (SSL_set_tlsext_host_name(ssl, name) != 1 ||
		    SSL_set1_host(ssl, name) != 1)
			goto fail;
		h->bev = bufferevent_openssl_socket_new(h->base, -1, ssl,
		    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (h->bev == NULL)
			goto fail;
		ssl = NULL;	/* owned by the bufferevent */
		bufferevent_openssl_set_allow_dirty_shutdown(h->bev, 1);
	} else if ((h->bev = bufferevent_socket_new(h->base, -1,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS)) == NULL)
		goto fail;
	bufferevent_setcb(h->bev, hp_read_cb, hp_write_cb, hp_event_cb, h);
	if (evbuffer_add_cb(bufferevent_get_output(h->bev), hp_out_drained_cb, h) == NULL)
		goto fail;
	bufferevent_setwatermark(h->bev, EV_READ, 0, HPF_READ_HIGH);
	bufferevent_setwatermark(h->bev, EV_WRITE, HPF_OUT_LOW, 0);
	h->state = HPF_ST_CONNECTING;
	h->state_ms = hpf_now_ms();
	gen = ++h->gen;
	if (bufferevent_enable(h->bev, EV_READ | EV_WRITE) == -1)
		goto fail;
	/* Callbacks are deferred, but a failure may already have dropped it. */
	if (bufferevent_socket_connect_hostname(h->bev, literal ? NULL : h->dns,
	    AF_UNSPEC, h->feed.broker, h->feed.port) == -1 && h->gen == gen) {
		hpf_series_warn(h, "hpfeeds: broker=%s:%d connect failed: %s", h->feed.broker,
		    h->feed.port, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		hpf_conn_drop(h, true);
	}
	return;
fail:
	SSL_free(ssl);
	hpf_series_warn(h, "hpfeeds: broker=%s:%d cannot create the connection",
	    h->feed.broker, h->feed.port);
	hpf_conn_drop(h, true);
}

/*
 * Close the connection (if any) and forget what is in flight; with retry,
 * schedule the next attempt after the backoff.
 */
void
hpf_conn_drop(struct hpf *h, bool retry)
{
	int i;

	if (h->bev != NULL) {
		bufferevent_free(h->bev);
		h->bev = NULL;
	}
	h->state = HPF_ST_IDLE;
	h->gen++;
	h->pump_pending = false;
	evtimer_del(h->ev_pump);
	evtimer_del(h->ev_poll);
	for (i = 0; i < h->nchans; i++)
		hpf_chan_reset(&h->chans[i]);
	if (h->stable) {
		h->stable = false;
	}
	if (retry)
		hp_reconnect_schedule(h);
}

/* Arm the reconnect timer: backoff doubling from 1 s to 60 s, +-25 % jitter. */
static void
hp_reconnect_schedule(struct hpf *h)
{
	struct timeval tv;
	uint64_t d = (uint64_t)h->backoff_ms, j = d / 2;

	d = d - d / 4 + (j > 0 ? util_random_u64() % (j + 1) : 0);
	tv.tv_sec = (time_t)(d / 1000);
	tv.tv_usec = (suseconds_t)((d % 1000) * 1000);
	log_debug("hpfeeds: broker=%s:%d reconnect in %llu ms", h->feed.broker,
	    h->feed.port, (unsigned long long)d);
	h->backoff_ms = h->backoff_ms * 2 > HPF_BACKOFF_MAX_MS ?
	    HPF_BACKOFF_MAX_MS : h->backoff_ms * 2;
	h->state = HPF_ST_IDLE;
	evtimer_add(h->ev_reconnect, &tv);
}

/* The backoff timer expired: try again. */
void
hpf_reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
	hpf_conn_start(arg);
}

/* TCP keepalive (no protocol keepalive exists) and a bound on unacked data. */
static void
hp_sock_tune(int fd)
{
	int on = 1, idle = 60, intvl = 15, cnt = 4;
	unsigned int uto = 120000;

	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
}

/* Connected, closed or failed. */
static void
hp_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct hpf *h = arg;
	char reason[256];
	unsigned long e;
	int dnserr;

	if (what & BEV_EVENT_CONNECTED) {
		hp_sock_tune((int)bufferevent_getfd(bev));
		h->state = HPF_ST_INFO;
		h->state_ms = hpf_now_ms();
		log_debug("hpfeeds: broker=%s:%d connected, waiting for INFO",
		    h->feed.broker, h->feed.port);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)))
		return;
	if (h->closing_logged) {
		/* The reason (an ERROR frame) was already logged. */
	} else if (h->state == HPF_ST_CONNECTING) {
		reason[0] = '\0';
		dnserr = bufferevent_socket_get_dns_error(bev);
		if (dnserr != 0)
			snprintf(reason, sizeof(reason), "DNS: %s", evutil_gai_strerror(dnserr));
		else if (h->feed.tls && (e = bufferevent_get_openssl_error(bev)) != 0) {
			SSL *ssl = bufferevent_openssl_get_ssl(bev);
			long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;

			snprintf(reason, sizeof(reason), "TLS: %s%s%s",
			    ERR_reason_error_string(e) != NULL ?
			    ERR_reason_error_string(e) : "handshake failed",
			    vr != X509_V_OK ? ": " : "",
			    vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
		}
		else
			snprintf(reason, sizeof(reason), "%s",
			    EVUTIL_SOCKET_ERROR() != 0 ?
			    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()) :
			    "connection closed");
		hpf_series_warn(h, "hpfeeds: broker=%s:%d connect failed: %s",
		    h->feed.broker, h->feed.port, reason);
	} else if (what & BEV_EVENT_EOF) {
		hpf_series_warn(h, "hpfeeds: broker=%s:%d closed the connection",
		    h->feed.broker, h->feed.port);
	} else {
		hpf_series_warn(h, "hpfeeds: broker=%s:%d connection lost: %s",
		    h->feed.broker, h->feed.port,
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	}
	while (ERR_get_error() != 0)
		;
	hpf_conn_drop(h, true);
}

/* Bytes left our output buffer for the socket (the write deadline's progress). */
static void
hp_out_drained_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct hpf *h = arg;

	h->wr_drained += info->n_deleted;
}

/* Output drained below the low watermark: keep pumping. */
static void
hp_write_cb(struct bufferevent *bev, void *arg)
{
	hpf_pump_schedule(arg);
}

/* Decode and handle every complete frame in the input buffer. */
static void
hp_read_cb(struct bufferevent *bev, void *arg)
{
	struct hpf *h = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct hpf_frame f;
	unsigned char *p;
	char err[256];
	size_t len, used;
	uint32_t total;
	uint8_t op;
	int r;

	h->rx_ms = hpf_now_ms();
	for (;;) {
		len = evbuffer_get_length(in);
		if (len < HPF_HDR_LEN)
			return;
		p = evbuffer_pullup(in, HPF_HDR_LEN);
		r = hpf_wire_header(p, len, &total, &op, err, sizeof(err));
		if (r == 1 && op != HPF_OP_ERROR && op != HPF_OP_INFO && op != HPF_OP_PUBLISH) {
			snprintf(err, sizeof(err), "unexpected opcode %u from a broker",
			    (unsigned)op);
			r = -1;
		}
		if (r == -1)
			goto bad;
		if (len < total)
			return;
		p = evbuffer_pullup(in, (ev_ssize_t)total);
		if (p == NULL)
			return;
		if (hpf_wire_decode(p, total, &f, &used, err, sizeof(err)) != 1)
			goto bad;
		if (hp_frame_handle(h, &f) == -1)
			return;	/* connection dropped: bev and in are gone */
		evbuffer_drain(in, used);
	}
bad:
	hpf_series_warn(h, "hpfeeds: broker=%s:%d protocol error: %s", h->feed.broker,
	    h->feed.port, err);
	hpf_conn_drop(h, true);
}

/* Handle one frame from the broker; -1 when the connection was dropped. */
static int
hp_frame_handle(struct hpf *h, const struct hpf_frame *f)
{
	switch (f->op) {
	case HPF_OP_INFO:
		if (h->state != HPF_ST_INFO)
			return 0;	/* a second INFO: ignore */
		return hp_on_info(h, f);
	case HPF_OP_ERROR:
		hp_on_error_frame(h, f);
		return 0;	/* the broker closes; EOF follows */
	case HPF_OP_PUBLISH:
		if (h->state == HPF_ST_READY)
			hpf_on_publish(h, f);
		return 0;
	default:
		return 0;
	}
}

/* INFO: answer with AUTH, subscribe, start publishing. */
static int
hp_on_info(struct hpf *h, const struct hpf_frame *f)
{
	uint8_t buf[HPF_HDR_LEN + 1 + HPF_STR8_MAX + HPF_SHA1_LEN + HPF_STR8_MAX];
	size_t n;
	int i;

	n = hpf_wire_auth(buf, sizeof(buf), h->feed.identity, f->data, f->datalen,
	    h->feed.secret, strlen(h->feed.secret));
	if (n == 0) {
		hpf_series_warn(h, "hpfeeds: identity too long for the protocol");
		hpf_conn_drop(h, true);
		return -1;
	}
	bufferevent_write(h->bev, buf, n);
	/* Subscribe once per channel per connection (twice breaks the reference broker). */
	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];

		if (c->subscribed || (c->nosub && !h->sub_mode) || c->denied)
			continue;
		n = hpf_wire_subscribe(buf, sizeof(buf), HPF_OP_SUBSCRIBE,
		    h->feed.identity, c->name);
		if (n == 0)
			continue;
		bufferevent_write(h->bev, buf, n);
		c->subscribed = true;
	}
	h->state = HPF_ST_READY;
	h->ready_ms = h->rx_ms = h->state_ms = h->wr_ms = hpf_now_ms();
	h->wr_seen = h->wr_drained;
	h->wr_outq = 0;
	log_debug("hpfeeds: broker=%s:%d ident=%s authenticating", h->feed.broker,
	    h->feed.port, h->feed.identity);
	if (h->sub_mode)
		fprintf(stderr, "hpfeeds: connected to %s:%d, subscribed to %d channel(s)\n",
		    h->feed.broker, h->feed.port, h->nchans);
	hpf_pump_schedule(h);
	return 0;
}

/* Find "chan=<name>" at the end of an ERROR text. */
static struct hpf_chan *
hp_error_chan(struct hpf *h, const struct hpf_frame *f)
{
	const uint8_t *p = f->data, *e = f->data + f->datalen;
	size_t i;

	for (i = 0; i + 5 <= f->datalen; i++) {
		if (memcmp(p + i, "chan=", 5) == 0)
			return hpf_chan_find(h, p + i + 5, (size_t)(e - (p + i + 5)));
	}
	return NULL;
}

/* ERROR from the broker: log it (once per series) and react. */
static void
hp_on_error_frame(struct hpf *h, const struct hpf_frame *f)
{
	char text[300];
	struct hpf_chan *c;

	log_escape(text, sizeof(text), f->data, f->datalen);
	if (f->datalen >= 21 && memmem(f->data, f->datalen, "Authentication failed", 21)) {
		hpf_series_warn(h, "hpfeeds: broker=%s:%d ident=%s authentication failed "
		    "(wrong identity or secret): \"%s\"; retrying with backoff",
		    h->feed.broker, h->feed.port, h->feed.identity, text);
		return;
	}
	if (memmem(f->data, f->datalen, "to sub", 6) != NULL &&
	    (c = hp_error_chan(h, f)) != NULL && !h->sub_mode) {
		/* Confirm this channel by TCP acknowledgement from now on. */
		if (!c->nosub)
			log_info("hpfeeds: broker=%s:%d ident=%s may not subscribe to "
			    "channel %s: confirming its publishes by TCP acknowledgement",
			    h->feed.broker, h->feed.port, h->feed.identity, c->name);
		c->nosub = true;
		h->closing_logged = true;
		h->backoff_ms = HPF_BACKOFF_MIN_MS;
		return;
	}
	if (memmem(f->data, f->datalen, "to pub", 6) != NULL &&
	    (c = hp_error_chan(h, f)) != NULL && !h->sub_mode) {
		if (!c->denied)
			log_warn("hpfeeds: broker=%s:%d refused publishing: \"%s\"; channel "
			    "%s is held in the spool until restart", h->feed.broker,
			    h->feed.port, text, c->name);
		c->denied = true;
		h->closing_logged = true;
		return;
	}
	hpf_series_warn(h, "hpfeeds: broker=%s:%d error: \"%s\"", h->feed.broker,
	    h->feed.port, text);
}

/*
 * Every connection state has a deadline (feed.timeout): the TCP connect and
 * TLS handshake, the broker's INFO, and in READY a write the broker stops
 * taking (our output buffer plus the socket's unacknowledged bytes neither
 * empty nor shrinking).  A missed one drops the connection and reconnects
 * with the backoff; the warning's text is the same for every attempt, so
 * hpf_series_warn logs it once per series.  -1 when the connection was dropped.
 */
static int
hp_deadline_check(struct hpf *h, uint64_t now)
{
	uint64_t limit = (uint64_t)(h->feed.timeout > 0 ? h->feed.timeout :
	    HPF_TIMEOUT_DEFAULT) * 1000;
	int sfd, outq = 0;
	size_t buffered;

	switch (h->state) {
	case HPF_ST_IDLE:
		return 0;
	case HPF_ST_CONNECTING:
		if (now - h->state_ms < limit)
			return 0;
		hpf_series_warn(h, "hpfeeds: broker=%s:%d connect%s not complete within %d s; "
		    "reconnecting", h->feed.broker, h->feed.port,
		    h->feed.tls ? " and TLS handshake" : "", (int)(limit / 1000));
		break;
	case HPF_ST_INFO:
		if (now - h->state_ms < limit)
			return 0;
		hpf_series_warn(h, "hpfeeds: broker=%s:%d connected but sent no INFO within "
		    "%d s; reconnecting", h->feed.broker, h->feed.port, (int)(limit / 1000));
		break;
	case HPF_ST_READY:
		/*
		 * Progress: nothing waiting, the socket took more from our
		 * buffer, or the peer acknowledged some of the socket's queue.
		 */
		buffered = evbuffer_get_length(bufferevent_get_output(h->bev));
		sfd = (int)bufferevent_getfd(h->bev);
		if (sfd == -1 || ioctl(sfd, SIOCOUTQ, &outq) == -1)
			outq = 0;
		if ((buffered == 0 && outq == 0) || h->wr_drained != h->wr_seen ||
		    outq < h->wr_outq) {
			h->wr_ms = now;
			h->wr_seen = h->wr_drained;
			h->wr_outq = outq;
			return 0;
		}
		h->wr_outq = outq;
		if (now - h->wr_ms < limit)
			return 0;
		hpf_series_warn(h, "hpfeeds: broker=%s:%d stopped reading (nothing taken "
		    "for %d s); reconnecting", h->feed.broker, h->feed.port,
		    (int)(limit / 1000));
		break;
	}
	hpf_conn_drop(h, true);
	return -1;
}

/* Once a second: save cursors, notice stable connections, stalls, new lines. */
void
hpf_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hpf *h = arg;
	uint64_t now = hpf_now_ms();
	int i;

	if (!h->sub_mode) {
		hpf_cursors_save(h);
		for (i = 0; i < HPF_NSRC; i++)
			if (h->obs[i] != NULL)
				outbox_check(h->obs[i]);
	}
	if (hp_deadline_check(h, now) == -1)
		return;
	if (h->state != HPF_ST_READY)
		return;
	if (!h->stable && now - h->ready_ms >= HPF_STABLE_MS) {
		h->stable = true;
		h->backoff_ms = HPF_BACKOFF_MIN_MS;
		if (h->lastmsg[0] != '\0' || !h->sub_mode)
			log_info("hpfeeds: broker=%s:%d connected as %s%s",
			    h->feed.broker, h->feed.port, h->feed.identity,
			    h->feed.tls ? " (TLS)" : "");
		h->lastmsg[0] = '\0';
	}
	if (h->sub_mode)
		return;
	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];
		struct outbox_entry *oe;
		struct hpf_entry *e;

		if (outbox_pending(c->cur) > 0 && c->nosub)
			hpf_poll_arm(h);
		if (outbox_pending(c->cur) == 0 || c->nosub)
			continue;
		oe = outbox_entry(c->cur, 0);
		e = oe->data;
		/* A slow link still brings echoes back: only silence is a stall. */
		if (!oe->skip && !oe->confirmed && now - e->sent_ms > HPF_STALL_MS &&
		    now - h->rx_ms > HPF_STALL_MS / 2) {
			hpf_series_warn(h, "hpfeeds: broker=%s:%d channel %s: no echo for %d s; "
			    "reconnecting to publish again", h->feed.broker, h->feed.port,
			    c->name, HPF_STALL_MS / 1000);
			hpf_conn_drop(h, true);
			return;
		}
	}
	hpf_pump_schedule(h);
}
