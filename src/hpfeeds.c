/*
 * hpfeeds publisher and subscriber tool (see hpfeeds.h).
 *
 * One connection to the broker, driven by libevent:
 *   IDLE --connect--> CONNECTING --TCP/TLS up--> INFO --INFO frame, AUTH sent--> READY
 * and back to IDLE (with a backoff timer) on any error.  In READY the pump
 * reads the journal through each channel's outbox cursor (outbox.c: the
 * files, rotations, cursor files), builds payloads and writes PUBLISH
 * frames, a bounded batch per callback.  Entries stay in the cursor's window
 * until confirmed (echo, or SIOCOUTQ drained + grace); the confirmed prefix
 * moves the channel's durable cursor.  A reconnect rewinds every window.
 */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "hpfeeds.h"
#include "hpfeeds_wire.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "spool.h"
#include "util.h"

#define HPF_WIN_ENTRIES		64		/* unconfirmed payloads per channel */
#define HPF_WIN_BYTES		(8u << 20)	/* unconfirmed bytes per channel */
#define HPF_OUT_HIGH		(4u << 20)	/* stop pumping above this much output */
#define HPF_OUT_LOW		(256u << 10)	/* resume below this */
#define HPF_READ_HIGH		(2u << 20)	/* input buffer bound (> one frame) */
#define HPF_BATCH_MSGS		32		/* payloads per pump callback */
#define HPF_BATCH_BYTES		(4u << 20)	/* payload bytes per pump callback */
#define HPF_BACKOFF_MIN_MS	1000
#define HPF_BACKOFF_MAX_MS	60000
#define HPF_STABLE_MS		5000		/* up this long = auth accepted */
#define HPF_STALL_MS		120000		/* no echo for this long: reconnect */
#define HPF_POLL_MS		20		/* SIOCOUTQ poll interval */
#define HPF_GRACE_MS		500		/* connection must outlive the ack by this */
#define HPF_JSON_DEPTH		32
#define HPF_RETRY_MIN_MS	100		/* a transient read error: retry after */
#define HPF_RETRY_MAX_MS	5000

/* hp_build_payload's answers besides 0 (outbox_message's). */
#define HPF_SKIP		OUTBOX_SKIP	/* never publishable (logged): skip */
#define HPF_RETRY		OUTBOX_RETRY	/* transient (logged): read it again later */

enum hpf_state {
	HPF_ST_IDLE,		/* waiting for the reconnect timer */
	HPF_ST_CONNECTING,	/* TCP (and TLS) handshake */
	HPF_ST_INFO,		/* waiting for the broker's INFO */
	HPF_ST_READY,		/* authenticated (as far as we know: silence) */
};

/*
 * What hpfeeds keeps with each published entry of a channel's outbox window
 * (outbox_entry.data) until it is confirmed.
 */
struct hpf_entry {
	char		 sha[65];	/* mail channels: its sha256 */
	uint64_t	 key;		/* FNV-1a of the payload: matched against echoes */
	size_t		 plen;		/* and its length */
	bool		 outstanding;	/* counts against the window */
	size_t		 bytes;		/* frame bytes */
	uint64_t	 sent_ms;
	uint64_t	 acked_ms;	/* SIOCOUTQ seen 0 after it was written; 0 = not yet */
};

/* The files published: an outbox each, with a cursor per channel. */
/* A line of the events log or of the parsed journal is published as it is. */
enum hpf_src_id { HPF_SRC_JOURNAL, HPF_SRC_EVENTS, HPF_SRC_PARSED, HPF_NSRC };

struct hpf_chan {
	char		 name[CFG_NAME_MAX];
	enum hpf_src_id	 src;
	struct outbox_cursor *cur;	/* its durable cursor (NULL: subscriber tool) */
	bool		 nosub;		/* may not subscribe: confirm by SIOCOUTQ */
	bool		 denied;	/* broker refused our publishes: stop */
	bool		 subscribed;	/* SUBSCRIBE sent on this connection */
	size_t		 limit;		/* largest payload */
	size_t		 out_n;		/* outstanding entries */
	size_t		 out_bytes;
};

struct hpf {
	struct event_base *base;
	struct cfg_feed	 feed;
	bool		 sub_mode;	/* subscriber: subscribe and hand over what comes */
	hpf_sub_fn	 sub_fn;
	void		*sub_arg;
	char		 spool_dir[PATH_MAX];
	char		 sensor[CFG_NAME_MAX];
	const struct persona *persona;	/* raw payloads: the Received header's shape */
	char		 hostname[CFG_NAME_MAX];	/* and our name in it */
	struct outbox	*obs[HPF_NSRC];	/* NULL: not published (or subscriber tool) */
	char		 ev_path[PATH_MAX];	/* the event log published ("" = none) */

	char		 parsed_path[PATH_MAX];	/* the parsed journal published ("" = none) */

	struct hpf_chan	 chans[CFG_CHANNELS_MAX + 2];	/* + events and parsed channels */
	int		 nchans;

	enum hpf_state	 state;
	struct bufferevent *bev;
	SSL_CTX		*ssl_ctx;
	struct evdns_base *dns;
	uint64_t	 gen;		/* connection generation */
	uint64_t	 state_ms;	/* when the current state began */
	uint64_t	 wr_ms;		/* READY: last time the broker took bytes */
	uint64_t	 wr_drained;	/* bytes the output buffer handed to the socket */
	uint64_t	 wr_seen;	/* wr_drained at wr_ms */
	int		 wr_outq;	/* SIOCOUTQ at the last tick */
	uint64_t	 ready_ms;
	uint64_t	 rx_ms;		/* last time bytes came from the broker */
	bool		 stable;
	int		 backoff_ms;
	char		 lastmsg[512];	/* last warning of the failure series */
	bool		 closing_logged;	/* a reason for this close was logged */

	struct event	*ev_reconnect;
	struct event	*ev_pump;
	struct event	*ev_poll;
	struct event	*ev_tick;
	struct event	*ev_retry;
	bool		 pump_pending;
	bool		 held;		/* a transient error: pump stopped until ev_retry */
	int		 retry_ms;
	char		 retrymsg[512];	/* last warning of the transient error series */

	struct jbuf	 pl;		/* last payload built */
	uint64_t	 pl_off;	/* its journal end offset (UINT64_MAX = none) */
	uint64_t	 pl_gen;	/* and the outbox's generation */
	enum hpf_src_id	 pl_src;
	size_t		 pl_limit;
	char		 pl_sha[65];
	struct outbox_message msg;	/* the .eml bytes read */

	struct hpf_stats stats;
};

static uint64_t	 hp_now_ms(void);
static void	 hp_series_warn(struct hpf *, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));
static struct hpf *hp_create(struct event_base *, const struct cfg_feed *,
		    const char *spool_dir, bool sub_mode, char *err, size_t errlen);
static int	 hp_tls_ctx_setup(struct hpf *, char *err, size_t errlen);
static void	 hp_conn_start(struct hpf *);
static void	 hp_conn_drop(struct hpf *, bool retry);
static void	 hp_reconnect_schedule(struct hpf *);
static void	 hp_reconnect_cb(evutil_socket_t, short, void *);
static void	 hp_event_cb(struct bufferevent *, short, void *);
static void	 hp_read_cb(struct bufferevent *, void *);
static void	 hp_write_cb(struct bufferevent *, void *);
static int	 hp_frame_handle(struct hpf *, const struct hpf_frame *);
static int	 hp_on_info(struct hpf *, const struct hpf_frame *);
static void	 hp_on_error_frame(struct hpf *, const struct hpf_frame *);
static void	 hp_on_publish(struct hpf *, const struct hpf_frame *);
static void	 hp_sock_tune(int fd);
static void	 hp_tick_cb(evutil_socket_t, short, void *);
static void	 hpf_metrics_cb(void *);
static int	 hp_deadline_check(struct hpf *, uint64_t now);
static void	 hp_out_drained_cb(struct evbuffer *, const struct evbuffer_cb_info *,
		    void *);
static void	 hp_pump_schedule(struct hpf *);
static void	 hp_pump_cb(evutil_socket_t, short, void *);
static void	 hp_retry_cb(evutil_socket_t, short, void *);
static void	 hp_pump_hold(struct hpf *, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));
static void	 hp_pump_ok(struct hpf *);
static int	 hp_publish_next(struct hpf *, struct hpf_chan *, size_t *bytes);
static int	 hp_build_payload(struct hpf *, struct hpf_chan *, const struct outbox_line *,
		    struct hpf_entry *);
static int	 hp_build_event(struct hpf *, struct hpf_chan *, const struct outbox_line *,
		    struct hpf_entry *);
static int	 hp_build_mail(struct hpf *, struct hpf_chan *, const char *line, size_t len,
		    const struct outbox_message *);
static int	 hp_build_raw(struct hpf *, struct hpf_chan *, const char *line, size_t len,
		    const struct outbox_message *);
static void	 hp_poll_cb(evutil_socket_t, short, void *);
static void	 hp_poll_arm(struct hpf *);
static bool	 hp_chan_window_ok(const struct hpf_chan *);
static void	 hp_chan_confirm_upto(struct hpf *, struct hpf_chan *, size_t k);
static void	 hp_chan_reset(struct hpf_chan *);
static struct hpf_chan *hp_chan_find(struct hpf *, const uint8_t *name, size_t len);
static int	 hp_chan_setup(struct hpf *, const char *name, enum hpf_src_id,
		    char *err, size_t errlen);
static int	 hp_src_setup(struct hpf *, enum hpf_src_id, const char *path, char *err,
		    size_t errlen);
static void	 hp_src_hold(void *, const char *);
static void	 hp_src_lost(void *);
static void	 hp_cursors_save(struct hpf *);

/* Monotonic clock in milliseconds. */
static uint64_t
hp_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Log a warning about the connection, once per failure series: the same text
 * again before the connection has been up for a while goes to debug.
 */
static void
hp_series_warn(struct hpf *h, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	h->closing_logged = true;
	if (strcmp(buf, h->lastmsg) == 0) {
		log_debug("%s", buf);
		return;
	}
	snprintf(h->lastmsg, sizeof(h->lastmsg), "%s", buf);
	log_warn("%s", buf);
}

/* --------------------------------------------------------- channel queue */

/* Whether channel c may send another payload now. */
static bool
hp_chan_window_ok(const struct hpf_chan *c)
{
	return !c->denied && c->out_n < HPF_WIN_ENTRIES &&
	    c->out_bytes < HPF_WIN_BYTES && !outbox_full(c->cur);
}

/* Mark entries 0..k (window order) confirmed: the cursor moves past them. */
static void
hp_chan_confirm_upto(struct hpf *h, struct hpf_chan *c, size_t k)
{
	struct outbox_entry *oe;
	size_t i;

	for (i = 0; i <= k && (oe = outbox_entry(c->cur, i)) != NULL; i++) {
		struct hpf_entry *e = oe->data;

		if (!oe->skip && e->outstanding) {
			e->outstanding = false;
			c->out_n--;
			c->out_bytes -= e->bytes;
		}
	}
	if ((oe = outbox_entry(c->cur, k)) != NULL &&
	    outbox_confirm_upto(c->cur, oe->end_off) > 0)
		hp_pump_schedule(h);
}

/* Forget everything in flight: the reader goes back to the cursor. */
static void
hp_chan_reset(struct hpf_chan *c)
{
	c->out_n = 0;
	c->out_bytes = 0;
	c->subscribed = false;
	if (c->cur != NULL)
		outbox_rewind(c->cur);
}

/* Save every channel's cursor that moved (the subscriber tool has none). */
static void
hp_cursors_save(struct hpf *h)
{
	int i;

	for (i = 0; i < HPF_NSRC && !h->sub_mode; i++)
		outbox_save(h->obs[i]);
}

/* The configured channel with this name, or NULL. */
static struct hpf_chan *
hp_chan_find(struct hpf *h, const uint8_t *name, size_t len)
{
	int i;

	for (i = 0; i < h->nchans; i++)
		if (strlen(h->chans[i].name) == len &&
		    memcmp(h->chans[i].name, name, len) == 0)
			return &h->chans[i];
	return NULL;
}

/* ------------------------------------------------------------ pump */

/* Run the pump soon (from a zero timer, so I/O is served in between). */
static void
hp_pump_schedule(struct hpf *h)
{
	struct timeval tv = { 0, 0 };

	if (h->sub_mode || h->state != HPF_ST_READY || h->pump_pending || h->held)
		return;
	h->pump_pending = true;
	evtimer_add(h->ev_pump, &tv);
}

/*
 * A transient error (no descriptor, no memory, an I/O error) stopped the
 * pump: the entry stays where it is, the cursor does not move, and the pump
 * runs again after a backoff.  Logged once per series of the same text.
 */
static void
hp_pump_hold(struct hpf *h, const char *fmt, ...)
{
	char buf[512];
	struct timeval tv;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (strcmp(buf, h->retrymsg) != 0) {
		snprintf(h->retrymsg, sizeof(h->retrymsg), "%s", buf);
		log_warn("%s; retrying (the entry stays in the spool)", buf);
	} else
		log_debug("%s; retrying", buf);
	h->held = true;
	h->pump_pending = false;
	evtimer_del(h->ev_pump);
	if (h->retry_ms < HPF_RETRY_MIN_MS)
		h->retry_ms = HPF_RETRY_MIN_MS;
	tv.tv_sec = h->retry_ms / 1000;
	tv.tv_usec = (h->retry_ms % 1000) * 1000;
	evtimer_add(h->ev_retry, &tv);
	h->retry_ms = h->retry_ms * 2 > HPF_RETRY_MAX_MS ? HPF_RETRY_MAX_MS : h->retry_ms * 2;
}

/* An entry was read and built: end a transient error series. */
static void
hp_pump_ok(struct hpf *h)
{
	if (h->retrymsg[0] != '\0')
		log_info("hpfeeds: reading the spool again after: %s", h->retrymsg);
	h->retrymsg[0] = '\0';
	h->retry_ms = HPF_RETRY_MIN_MS;
}

/* The retry backoff expired: pump again. */
static void
hp_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hpf *h = arg;

	h->held = false;
	hp_pump_schedule(h);
}

/* Publish a bounded batch of journal entries, then yield. */
static void
hp_pump_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hpf *h = arg;
	size_t msgs = 0, bytes = 0, b;
	bool progress = true, any_nosub = false;
	int i, r;

	h->pump_pending = false;
	/* A file cut or rotated since the last tick is noticed before it is read. */
	for (i = 0; i < HPF_NSRC; i++) {
		if (h->obs[i] != NULL)
			outbox_check(h->obs[i]);
		if (h->state != HPF_ST_READY)
			return;
	}
	while (progress && msgs < HPF_BATCH_MSGS && bytes < HPF_BATCH_BYTES) {
		progress = false;
		for (i = 0; i < h->nchans; i++) {
			struct hpf_chan *c = &h->chans[i];

			if (h->state != HPF_ST_READY || h->held)
				return;
			if (evbuffer_get_length(bufferevent_get_output(h->bev)) > HPF_OUT_HIGH)
				goto out;	/* hp_write_cb resumes */
			if (!hp_chan_window_ok(c))
				continue;
			b = 0;
			r = hp_publish_next(h, c, &b);
			if (r > 0) {
				progress = true;
				msgs++;
				bytes += b;
				if (c->nosub)
					any_nosub = true;
			}
		}
	}
	if (progress)
		hp_pump_schedule(h);	/* more may be waiting: yield, then go on */
out:
	if (any_nosub)
		hp_poll_arm(h);
}

/*
 * Publish the next journal entry of channel c.  Returns 1 when an entry was
 * queued (published or skipped), 0 when there is nothing to do.
 */
static int
hp_publish_next(struct hpf *h, struct hpf_chan *c, size_t *bytes)
{
	struct hpf_entry e, *ne;
	struct outbox_line l;
	uint8_t hdr[HPF_HDR_LEN + 2 + 2 * HPF_STR8_MAX];
	size_t hl = 0;
	bool private;
	int b = 0;

	if (outbox_read(c->cur, &l) <= 0)
		return 0;
	memset(&e, 0, sizeof(e));
	/*
	 * A rule's "publish": false keeps the mail off hpfeeds: its record, its
	 * parsed document, and on the events channel every event that carries
	 * the flag (its fosr.mail.received, fosr.rule.match, fosr.mail.parsed).
	 */
	private = !l.overlong && hpf_record_private(l.line, l.len);
	if (!l.overlong && !private &&
	    (b = hp_build_payload(h, c, &l, &e)) == HPF_RETRY) {
		/* Read this line again after the backoff; the cursor stays. */
		outbox_unread(c->cur, &l);
		return 0;
	}
	if (l.overlong || private || b == HPF_SKIP ||
	    (hl = hpf_wire_publish_header(hdr, sizeof(hdr), h->feed.identity, c->name,
	    h->pl.len)) == 0) {
		/* Not publishable (logged): it leaves the window in its turn. */
		if (outbox_skip(c->cur, &l) == -1)
			return 0;	/* out of memory: read again next time */
		h->stats.skipped++;
		hp_pump_schedule(h);
		return 1;
	}
	hp_pump_ok(h);
	e.bytes = hl + h->pl.len;
	e.outstanding = true;
	e.sent_ms = hp_now_ms();
	if ((ne = outbox_take(c->cur, &l)) == NULL)
		return 0;	/* out of memory: read again next time */
	*ne = e;
	c->out_n++;
	c->out_bytes += e.bytes;
	bufferevent_write(h->bev, hdr, hl);
	bufferevent_write(h->bev, h->pl.buf, h->pl.len);
	h->stats.published++;
	metrics_inc(M_FEED_PUBLISHED, "hpfeeds", NULL);
	*bytes = e.bytes;
	return 1;
}

/*
 * Build the payload for the journal line into h->pl (reused when the previous
 * channel built the same one).  Returns 0 with ent's sha and key set;
 * HPF_SKIP when the entry can never be published (logged: not a record, the
 * .eml is gone, an event too large); HPF_RETRY on a transient error (no
 * descriptor, no memory, an I/O error; the pump is held and retries: a mail
 * is never skipped for a reason that may go away).
 */
static int
hp_build_payload(struct hpf *h, struct hpf_chan *c, const struct outbox_line *l,
    struct hpf_entry *ent)
{
	struct outbox *ob = h->obs[c->src];
	int rc;

	if (h->pl_off == l->end_off && h->pl_gen == outbox_generation(ob) &&
	    h->pl_src == c->src && h->pl_limit == c->limit) {
		memcpy(ent->sha, h->pl_sha, 65);
		ent->key = outbox_fnv64(h->pl.buf, h->pl.len);
		ent->plen = h->pl.len;
		return 0;
	}
	h->pl_off = UINT64_MAX;
	if (c->src != HPF_SRC_JOURNAL)
		return hp_build_event(h, c, l, ent);
	/* Reading: the record's sha256 and .eml (the skip and retry rules). */
	if ((rc = outbox_message(c->cur, l, c->limit, &h->msg)) != 0)
		return rc;
	/* Building: the payload from those bytes and the record's metadata. */
	if (h->feed.payload == CFG_PAYLOAD_RAW)
		rc = hp_build_raw(h, c, l->line, l->len, &h->msg);
	else
		rc = hp_build_mail(h, c, l->line, l->len, &h->msg);
	outbox_message_trim(&h->msg);
	if (rc != 0)
		return rc;
	h->pl_off = l->end_off;
	h->pl_gen = outbox_generation(ob);
	h->pl_src = c->src;
	h->pl_limit = c->limit;
	memcpy(h->pl_sha, h->msg.sha, 65);
	memcpy(ent->sha, h->msg.sha, 65);
	ent->key = outbox_fnv64(h->pl.buf, h->pl.len);
	ent->plen = h->pl.len;
	return 0;
}

/*
 * An event (or a parsed document) is published as it was logged: one JSON
 * object.  As hp_build_payload.
 */
static int
hp_build_event(struct hpf *h, struct hpf_chan *c, const struct outbox_line *l,
    struct hpf_entry *ent)
{
	const char *line = l->line;
	size_t len = l->len;

	if (!json_is_object(line, len) || len > c->limit) {
		log_warn("hpfeeds: %s at offset %llu of %s is %s; not published",
		    c->src == HPF_SRC_PARSED ? "document" : "event",
		    (unsigned long long)(l->end_off - len - 1),
		    c->src == HPF_SRC_PARSED ? h->parsed_path : h->ev_path,
		    len > c->limit ? "too large" : "not a JSON object");
		return HPF_SKIP;
	}
	jb_reset(&h->pl);
	jb_raw(&h->pl, line, len);
	if (h->pl.oom) {
		jb_free(&h->pl);
		jb_init(&h->pl);
		hp_pump_hold(h, "hpfeeds: event at offset %llu: out of memory",
		    (unsigned long long)(l->end_off - len - 1));
		return HPF_RETRY;
	}
	ent->key = outbox_fnv64(line, len);
	ent->plen = len;
	return 0;
}

/*
 * Build a mail's payload into h->pl from its bytes (m) and, with metadata
 * on, the reception record's keys (line).  0, or HPF_RETRY (out of memory,
 * the pump is held).
 */
static int
hp_build_mail(struct hpf *h, struct hpf_chan *c, const char *line, size_t len,
    const struct outbox_message *m)
{
	bool cut = false, dropped = false;

	if (hpf_payload_mail(&h->pl, line, len, h->feed.metadata, h->sensor, m->sha,
	    m->body, m->len, m->size, c->limit, &cut, &dropped) == -1) {
		/* Out of memory (the limit is never below one byte per byte). */
		hp_pump_hold(h, "hpfeeds: message=%s payload could not be built", m->sha);
		return HPF_RETRY;
	}
	if (dropped)
		log_warn("hpfeeds: message=%s metadata too large; published without it",
		    m->sha);
	if (cut) {
		log_info("hpfeeds: message=%s size=%lld published truncated to %zu bytes",
		    m->sha, (long long)m->size, h->pl.len);
		h->stats.truncated++;
	}
	return 0;
}

/*
 * Build a mail's raw payload into h->pl (feed.payload: raw; the bytes are
 * hpf_payload_raw's, shared with AMQP): with feed.received_header, our
 * Received header first.  A mail over the broker's frame limit is published
 * cut to it, with a warning and a count (a skipped one would be lost to the
 * consumer; the spool keeps it whole).  0, or HPF_RETRY (out of memory, the
 * pump is held).
 */
static int
hp_build_raw(struct hpf *h, struct hpf_chan *c, const char *line, size_t len,
    const struct outbox_message *m)
{
	char note[256];
	bool cut;

	if (hpf_payload_raw(&h->pl, line, len, h->feed.received_header ? h->persona : NULL,
	    h->hostname, m->body, m->len, m->size, c->limit, &cut, note, sizeof(note)) == -1) {
		hp_pump_hold(h, "hpfeeds: message=%s payload could not be built", m->sha);
		return HPF_RETRY;
	}
	if (note[0] != '\0')
		log_warn("hpfeeds: message=%s %s", m->sha, note);
	if (cut) {
		log_warn("hpfeeds: message=%s size=%llu published truncated to %zu bytes "
		    "(the broker's frame limit; the spool keeps it whole)", m->sha,
		    (unsigned long long)m->size, h->pl.len);
		h->stats.truncated++;
	}
	return 0;
}

/* ------------------------------------------------------ SIOCOUTQ confirm */

/* Start the SIOCOUTQ poll if it is not running. */
static void
hp_poll_arm(struct hpf *h)
{
	struct timeval tv = { 0, HPF_POLL_MS * 1000 };

	if (!evtimer_pending(h->ev_poll, NULL))
		evtimer_add(h->ev_poll, &tv);
}

/*
 * For channels the identity may not subscribe to: entries whose bytes the
 * broker's TCP stack acknowledged (nothing left in our output buffer and
 * SIOCOUTQ = 0) are confirmed once the connection has stayed up for a grace
 * period after that (an ERROR and close would have come by then).
 */
static void
hp_poll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hpf *h = arg;
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	uint64_t now = hp_now_ms(), grace = HPF_GRACE_MS;
	bool drained = false, waiting = false;
	int sfd, outq = -1, i;
	size_t k;

	if (h->state != HPF_ST_READY)
		return;
	sfd = (int)bufferevent_getfd(h->bev);
	if (evbuffer_get_length(bufferevent_get_output(h->bev)) == 0 && sfd != -1 &&
	    ioctl(sfd, SIOCOUTQ, &outq) == 0 && outq == 0)
		drained = true;
	if (sfd != -1 && getsockopt(sfd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0)
		grace += 2 * (uint64_t)ti.tcpi_rtt / 1000;
	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];
		size_t last = SIZE_MAX;

		if (!c->nosub)
			continue;
		for (k = 0; k < outbox_pending(c->cur); k++) {
			struct outbox_entry *oe = outbox_entry(c->cur, k);
			struct hpf_entry *e = oe->data;

			if (oe->skip || oe->confirmed)
				continue;
			if (e->acked_ms == 0 && drained) {
				e->acked_ms = now;
				if (e->outstanding) {
					e->outstanding = false;
					c->out_n--;
					c->out_bytes -= e->bytes;
				}
				hp_pump_schedule(h);
			}
			if (e->acked_ms != 0 && now - e->acked_ms >= grace)
				last = k;
			else
				waiting = true;
		}
		if (last != SIZE_MAX)
			hp_chan_confirm_upto(h, c, last);
	}
	if (waiting)
		hp_poll_arm(h);
}

/* ----------------------------------------------------------- connection */

/* Create the client TLS context: verify the broker's certificate and name. */
static int
hp_tls_ctx_setup(struct hpf *h, char *err, size_t errlen)
{
	unsigned long e;

	if ((h->ssl_ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		goto fail;
	SSL_CTX_set_min_proto_version(h->ssl_ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(h->ssl_ctx, SSL_VERIFY_PEER, NULL);
	if (h->feed.ca_file[0] != '\0') {
		if (SSL_CTX_load_verify_locations(h->ssl_ctx, h->feed.ca_file, NULL) != 1)
			goto fail;
	} else if (SSL_CTX_set_default_verify_paths(h->ssl_ctx) != 1)
		goto fail;
	return 0;
fail:
	e = ERR_get_error();
	snprintf(err, errlen, "hpfeeds TLS setup%s%s: %s",
	    h->feed.ca_file[0] != '\0' ? " ca_file=" : "", h->feed.ca_file,
	    e != 0 ? ERR_reason_error_string(e) : "failed");
	ERR_clear_error();
	return -1;
}

/* Create the connection structures used by both the publisher and the tool. */
static struct hpf *
hp_create(struct event_base *base, const struct cfg_feed *feed,
    const char *spool_dir, bool sub_mode, char *err, size_t errlen)
{
	struct hpf *h;
	char path[PATH_MAX];
	int i, n;

	if (feed->nchannels <= 0) {
		snprintf(err, errlen, "hpfeeds: no channel configured");
		return NULL;
	}
	if (feed->broker[0] == '\0' || feed->port <= 0 || feed->port > 65535) {
		snprintf(err, errlen, "hpfeeds: broker address or port missing");
		return NULL;
	}
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		snprintf(err, errlen, "hpfeeds: out of memory");
		return NULL;
	}
	h->base = base;
	h->feed = *feed;
	h->sub_mode = sub_mode;
	h->backoff_ms = HPF_BACKOFF_MIN_MS;
	h->pl_off = UINT64_MAX;
	jb_init(&h->pl);
	n = feed->nchannels > CFG_CHANNELS_MAX ? CFG_CHANNELS_MAX : feed->nchannels;
	if (!sub_mode) {
		snprintf(h->spool_dir, sizeof(h->spool_dir), "%s", spool_dir);
		(void)spool_path_journal(path, sizeof(path), spool_dir);
		if (hp_src_setup(h, HPF_SRC_JOURNAL, path, err, errlen) == -1)
			goto fail;
	}
	h->nchans = 0;
	for (i = 0; i < n; i++)
		if (hp_chan_setup(h, feed->channels[i], HPF_SRC_JOURNAL, err, errlen) == -1)
			goto fail;
	if (sub_mode && feed->events_channel[0] != '\0' &&
	    hp_chan_setup(h, feed->events_channel, HPF_SRC_EVENTS, err, errlen) == -1)
		goto fail;
	if (sub_mode && feed->parsed_channel[0] != '\0' &&
	    hp_chan_setup(h, feed->parsed_channel, HPF_SRC_PARSED, err, errlen) == -1)
		goto fail;
	if (feed->tls && hp_tls_ctx_setup(h, err, errlen) == -1)
		goto fail;
	if (!sub_mode) {
		/*
		 * Record now which journal file each cursor points into: the
		 * spool deletes a rotated segment only once no cursor file
		 * points into it or an older one.
		 */
		outbox_start(h->obs[HPF_SRC_JOURNAL]);
		(void)metrics_on_scrape(hpf_metrics_cb, h);
	}
	h->ev_reconnect = evtimer_new(base, hp_reconnect_cb, h);
	h->ev_pump = evtimer_new(base, hp_pump_cb, h);
	h->ev_poll = evtimer_new(base, hp_poll_cb, h);
	h->ev_tick = event_new(base, -1, EV_PERSIST, hp_tick_cb, h);
	h->ev_retry = evtimer_new(base, hp_retry_cb, h);
	h->retry_ms = HPF_RETRY_MIN_MS;
	if (h->ev_reconnect == NULL || h->ev_pump == NULL || h->ev_poll == NULL ||
	    h->ev_tick == NULL || h->ev_retry == NULL) {
		snprintf(err, errlen, "hpfeeds: cannot create events");
		goto fail;
	}
	{
		struct timeval tv = { 1, 0 };

		evtimer_add(h->ev_tick, &tv);
	}
	hp_conn_start(h);
	return h;
fail:
	hpf_free(h);
	return NULL;
}

/*
 * Add channel name fed from source k: its payload limit and, for the
 * publisher, its cursor.  A name already there is skipped (subscribing twice
 * breaks the reference broker).  0 or -1 with err filled.
 */
static int
hp_chan_setup(struct hpf *h, const char *name, enum hpf_src_id k, char *err, size_t errlen)
{
	struct hpf_chan *c;
	size_t nl;

	if (hp_chan_find(h, (const uint8_t *)name, strlen(name)) != NULL)
		return 0;
	if (h->nchans >= (int)(sizeof(h->chans) / sizeof(h->chans[0]))) {
		snprintf(err, errlen, "hpfeeds: too many channels");
		return -1;
	}
	c = &h->chans[h->nchans];
	memset(c, 0, sizeof(*c));
	nl = strnlen(name, sizeof(c->name) - 1);
	memcpy(c->name, name, nl);
	c->name[nl] = '\0';
	c->src = k;
	c->limit = hpf_wire_max_payload(strlen(h->feed.identity), strlen(c->name));
	if (!h->sub_mode && (c->cur = outbox_cursor_open(h->obs[k], c->name,
	    sizeof(struct hpf_entry), err, errlen)) == NULL)
		return -1;
	h->nchans++;
	return 0;
}

/*
 * The outbox publishing source k's file at path: cursors in <spool>/feed
 * (the spool keeps a journal segment a cursor there points into).
 */
static int
hp_src_setup(struct hpf *h, enum hpf_src_id k, const char *path, char *err, size_t errlen)
{
	struct outbox_opts o;
	char dir[PATH_MAX + 8];

	(void)spool_path_dir(dir, sizeof(dir), h->spool_dir, SPOOL_DIR_FEED);
	memset(&o, 0, sizeof(o));
	o.who = "hpfeeds";
	o.path = path;
	/* The parsed journal rotates to numbered segments as the reception journal. */
	o.kind = k == HPF_SRC_EVENTS ? OUTBOX_LOG : OUTBOX_JOURNAL;
	o.cursor_dir = dir;
	o.spool_dir = h->spool_dir;
	o.hold = hp_src_hold;
	o.lost = hp_src_lost;
	o.arg = h;
	return (h->obs[k] = outbox_new(&o, err, errlen)) == NULL ? -1 : 0;
}

/* The outbox met a transient error: hold the pump (see hp_pump_hold). */
static void
hp_src_hold(void *arg, const char *msg)
{
	hp_pump_hold(arg, "%s", msg);
}

/* Entries in flight were read from a file the outbox left: publish them again. */
static void
hp_src_lost(void *arg)
{
	struct hpf *h = arg;

	if (h->state != HPF_ST_IDLE)
		hp_conn_drop(h, true);
}

/* Also publish the JSON event log (see hpfeeds.h). */
int
hpf_set_event_log(struct hpf *h, const char *path, char *err, size_t errlen)
{
	if (h->feed.events_channel[0] == '\0' || path == NULL || path[0] == '\0')
		return 0;
	if (hp_chan_find(h, (const uint8_t *)h->feed.events_channel,
	    strlen(h->feed.events_channel)) != NULL) {
		snprintf(err, errlen, "hpfeeds: events_channel %s is also a mail channel",
		    h->feed.events_channel);
		return -1;
	}
	if (h->state == HPF_ST_READY) {
		snprintf(err, errlen, "hpfeeds: hpf_set_event_log() after the connection is up");
		return -1;
	}
	if (h->obs[HPF_SRC_EVENTS] != NULL) {
		snprintf(err, errlen, "hpfeeds: hpf_set_event_log() called twice");
		return -1;
	}
	snprintf(h->ev_path, sizeof(h->ev_path), "%s", path);
	if (hp_src_setup(h, HPF_SRC_EVENTS, path, err, errlen) == -1 ||
	    hp_chan_setup(h, h->feed.events_channel, HPF_SRC_EVENTS, err, errlen) == -1)
		return -1;
	/* Now: which file the cursor points into, before anything rotates it. */
	outbox_start(h->obs[HPF_SRC_EVENTS]);
	hp_cursors_save(h);
	return 0;
}

/*
 * Also publish the analysis worker's parsed journal (see hpfeeds.h): its own
 * outbox over <spool>/parsed.jsonl and its segments, a cursor named by the
 * channel in <spool>/feed (the worker keeps the segments it points into).
 */
int
hpf_set_parsed(struct hpf *h, hpf_limit_fn fn, void *arg, char *err, size_t errlen)
{
	const char *name = h->feed.parsed_channel;

	if (name[0] == '\0' || h->sub_mode)
		return 0;
	if (hp_chan_find(h, (const uint8_t *)name, strlen(name)) != NULL) {
		snprintf(err, errlen, "hpfeeds: parsed_channel %s is also another channel",
		    name);
		return -1;
	}
	if (h->state == HPF_ST_READY || h->obs[HPF_SRC_PARSED] != NULL) {
		snprintf(err, errlen, "hpfeeds: hpf_set_parsed() called late or twice");
		return -1;
	}
	if (spool_path_dir(h->parsed_path, sizeof(h->parsed_path), h->spool_dir,
	    SPOOL_PARSED_NAME) == -1) {
		snprintf(err, errlen, "hpfeeds: spool path too long");
		return -1;
	}
	if (hp_src_setup(h, HPF_SRC_PARSED, h->parsed_path, err, errlen) == -1 ||
	    hp_chan_setup(h, name, HPF_SRC_PARSED, err, errlen) == -1)
		return -1;
	if (fn != NULL)
		outbox_set_limit(h->obs[HPF_SRC_PARSED], fn, arg);
	/* Now: which file the cursor points into, before the worker rotates it. */
	outbox_start(h->obs[HPF_SRC_PARSED]);
	hp_cursors_save(h);
	return 0;
}

/* Start the publisher (see hpfeeds.h). */
struct hpf *
hpf_new(struct event_base *base, const struct cfg_feed *feed,
    const char *spool_dir, const struct persona *persona, const char *hostname,
    char *err, size_t errlen)
{
	struct hpf *h;

	if (feed->payload == CFG_PAYLOAD_RAW && feed->received_header &&
	    (persona == NULL || hostname == NULL || hostname[0] == '\0')) {
		snprintf(err, errlen, "hpfeeds: payload raw with received_header needs "
		    "the persona and host name");
		return NULL;
	}
	if ((h = hp_create(base, feed, spool_dir, false, err, errlen)) == NULL)
		return NULL;
	h->persona = persona;
	snprintf(h->hostname, sizeof(h->hostname), "%s", hostname != NULL ? hostname : "");
	return h;
}

/* At a scrape: connected or not, and each channel's backlog (outbox_backlog). */
static void
hpf_metrics_cb(void *arg)
{
	struct hpf *h = arg;

	metrics_set(M_FEED_CONNECTED, "hpfeeds", NULL, h->state == HPF_ST_READY);
	for (int i = 0; i < h->nchans; i++) {
		const struct hpf_chan *c = &h->chans[i];

		if (c->cur != NULL)
			metrics_set(M_FEED_BACKLOG, "hpfeeds", c->name,
			    (double)outbox_backlog(c->cur));
	}
}

/* Set the sensor name added to payloads with metadata. */
void
hpf_set_sensor(struct hpf *h, const char *sensor)
{
	snprintf(h->sensor, sizeof(h->sensor), "%s", sensor != NULL ? sensor : "");
	h->pl_off = UINT64_MAX;
}

/* New journal lines: publish soon. */
void
hpf_kick(struct hpf *h)
{
	if (h != NULL)
		hp_pump_schedule(h);
}

/* The live journal's limit (see hpfeeds.h). */
void
hpf_set_journal_limit(struct hpf *h, hpf_limit_fn fn, void *arg)
{
	if (h->obs[HPF_SRC_JOURNAL] != NULL)
		outbox_set_limit(h->obs[HPF_SRC_JOURNAL], fn, arg);
}

/* A mail was committed (smtp_server's on_mail hook): publish soon. */
void
hpf_on_mail(void *arg, const char *record, size_t len)
{
	hpf_kick(arg);
}

/* Copy the counters. */
void
hpf_get_stats(const struct hpf *h, struct hpf_stats *out)
{
	int i;

	*out = h->stats;
	out->confirmed = 0;
	for (i = 0; i < h->nchans; i++)
		if (h->chans[i].cur != NULL)
			out->confirmed += outbox_cursor_confirmed(h->chans[i].cur);
}

/* Save cursors, close, free. */
void
hpf_free(struct hpf *h)
{
	int i;

	if (h == NULL)
		return;
	metrics_off_scrape(hpf_metrics_cb, h);
	if (h->bev != NULL)
		bufferevent_free(h->bev);
	if (h->ev_reconnect != NULL)
		event_free(h->ev_reconnect);
	if (h->ev_pump != NULL)
		event_free(h->ev_pump);
	if (h->ev_poll != NULL)
		event_free(h->ev_poll);
	if (h->ev_tick != NULL)
		event_free(h->ev_tick);
	if (h->ev_retry != NULL)
		event_free(h->ev_retry);
	if (h->dns != NULL)
		evdns_base_free(h->dns, 0);
	if (h->ssl_ctx != NULL)
		SSL_CTX_free(h->ssl_ctx);
	for (i = 0; i < HPF_NSRC; i++)
		outbox_free(h->obs[i]);	/* saves the cursors */
	jb_free(&h->pl);
	outbox_message_free(&h->msg);
	free(h);
}

/* Whether s is a numeric IPv4 or IPv6 address. */
static bool
hp_is_ip_literal(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* Begin a connection attempt (non-blocking). */
static void
hp_conn_start(struct hpf *h)
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
		hp_series_warn(h, "hpfeeds: broker=%s:%d cannot set up DNS resolution",
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
	h->state_ms = hp_now_ms();
	gen = ++h->gen;
	if (bufferevent_enable(h->bev, EV_READ | EV_WRITE) == -1)
		goto fail;
	/* Callbacks are deferred, but a failure may already have dropped it. */
	if (bufferevent_socket_connect_hostname(h->bev, literal ? NULL : h->dns,
	    AF_UNSPEC, h->feed.broker, h->feed.port) == -1 && h->gen == gen) {
		hp_series_warn(h, "hpfeeds: broker=%s:%d connect failed: %s", h->feed.broker,
		    h->feed.port, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		hp_conn_drop(h, true);
	}
	return;
fail:
	SSL_free(ssl);
	hp_series_warn(h, "hpfeeds: broker=%s:%d cannot create the connection",
	    h->feed.broker, h->feed.port);
	hp_conn_drop(h, true);
}

/*
 * Close the connection (if any) and forget what is in flight; with retry,
 * schedule the next attempt after the backoff.
 */
static void
hp_conn_drop(struct hpf *h, bool retry)
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
		hp_chan_reset(&h->chans[i]);
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
static void
hp_reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
	hp_conn_start(arg);
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
		h->state_ms = hp_now_ms();
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
		hp_series_warn(h, "hpfeeds: broker=%s:%d connect failed: %s",
		    h->feed.broker, h->feed.port, reason);
	} else if (what & BEV_EVENT_EOF) {
		hp_series_warn(h, "hpfeeds: broker=%s:%d closed the connection",
		    h->feed.broker, h->feed.port);
	} else {
		hp_series_warn(h, "hpfeeds: broker=%s:%d connection lost: %s",
		    h->feed.broker, h->feed.port,
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	}
	while (ERR_get_error() != 0)
		;
	hp_conn_drop(h, true);
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
	hp_pump_schedule(arg);
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

	h->rx_ms = hp_now_ms();
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
	hp_series_warn(h, "hpfeeds: broker=%s:%d protocol error: %s", h->feed.broker,
	    h->feed.port, err);
	hp_conn_drop(h, true);
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
			hp_on_publish(h, f);
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
		hp_series_warn(h, "hpfeeds: identity too long for the protocol");
		hp_conn_drop(h, true);
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
	h->ready_ms = h->rx_ms = h->state_ms = h->wr_ms = hp_now_ms();
	h->wr_seen = h->wr_drained;
	h->wr_outq = 0;
	log_debug("hpfeeds: broker=%s:%d ident=%s authenticating", h->feed.broker,
	    h->feed.port, h->feed.identity);
	if (h->sub_mode)
		fprintf(stderr, "hpfeeds: connected to %s:%d, subscribed to %d channel(s)\n",
		    h->feed.broker, h->feed.port, h->nchans);
	hp_pump_schedule(h);
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
			return hp_chan_find(h, p + i + 5, (size_t)(e - (p + i + 5)));
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
		hp_series_warn(h, "hpfeeds: broker=%s:%d ident=%s authentication failed "
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
	hp_series_warn(h, "hpfeeds: broker=%s:%d error: \"%s\"", h->feed.broker,
	    h->feed.port, text);
}

/* A publish came back: confirm our own (echo), or print it (tool). */
static void
hp_on_publish(struct hpf *h, const struct hpf_frame *f)
{
	struct hpf_chan *c;
	const char *sha = NULL;
	uint64_t key = 0;
	size_t k;

	if (h->sub_mode) {
		if (h->sub_fn != NULL)
			h->sub_fn(h->sub_arg, f);
		return;
	}
	if (f->namelen != strlen(h->feed.identity) ||
	    memcmp(f->name, h->feed.identity, f->namelen) != 0)
		return;
	if ((c = hp_chan_find(h, f->chan, f->chanlen)) == NULL || c->nosub)
		return;
	/*
	 * Our own publish, not one of the same mail by another sensor sharing
	 * the identity (a spam run sends the same bytes to many): the whole
	 * payload matches, its metadata (session, queue id, time) included; a
	 * raw one's Received header holds our host name, queue id and time.
	 */
	if (c->src == HPF_SRC_JOURNAL && h->feed.payload == CFG_PAYLOAD_JSON) {
		if (f->datalen < 11 + 64 || memcmp(f->data, "{\"sha256\":\"", 11) != 0)
			return;	/* our JSON payloads start with {"sha256":"<64 hex>" */
		sha = (const char *)f->data + 11;
	}
	key = outbox_fnv64(f->data, f->datalen);
	for (k = 0; k < outbox_pending(c->cur); k++) {
		struct outbox_entry *oe = outbox_entry(c->cur, k);
		struct hpf_entry *e = oe->data;

		if (oe->skip || oe->confirmed)
			continue;
		if (e->key == key && e->plen == f->datalen &&
		    (sha == NULL || memcmp(e->sha, sha, 64) == 0)) {
			/* In order on one connection: everything before it got through too. */
			hp_chan_confirm_upto(h, c, k);
			if (!h->stable) {
				h->stable = true;
				h->backoff_ms = HPF_BACKOFF_MIN_MS;
				if (h->lastmsg[0] != '\0')
					log_info("hpfeeds: broker=%s:%d publishing again",
					    h->feed.broker, h->feed.port);
				h->lastmsg[0] = '\0';
			}
			return;
		}
	}
}

/*
 * Every connection state has a deadline (feed.timeout): the TCP connect and
 * TLS handshake, the broker's INFO, and in READY a write the broker stops
 * taking (our output buffer plus the socket's unacknowledged bytes neither
 * empty nor shrinking).  A missed one drops the connection and reconnects
 * with the backoff; the warning's text is the same for every attempt, so
 * hp_series_warn logs it once per series.  -1 when the connection was dropped.
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
		hp_series_warn(h, "hpfeeds: broker=%s:%d connect%s not complete within %d s; "
		    "reconnecting", h->feed.broker, h->feed.port,
		    h->feed.tls ? " and TLS handshake" : "", (int)(limit / 1000));
		break;
	case HPF_ST_INFO:
		if (now - h->state_ms < limit)
			return 0;
		hp_series_warn(h, "hpfeeds: broker=%s:%d connected but sent no INFO within "
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
		hp_series_warn(h, "hpfeeds: broker=%s:%d stopped reading (nothing taken "
		    "for %d s); reconnecting", h->feed.broker, h->feed.port,
		    (int)(limit / 1000));
		break;
	}
	hp_conn_drop(h, true);
	return -1;
}

/* Once a second: save cursors, notice stable connections, stalls, new lines. */
static void
hp_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hpf *h = arg;
	uint64_t now = hp_now_ms();
	int i;

	if (!h->sub_mode) {
		hp_cursors_save(h);
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
			hp_poll_arm(h);
		if (outbox_pending(c->cur) == 0 || c->nosub)
			continue;
		oe = outbox_entry(c->cur, 0);
		e = oe->data;
		/* A slow link still brings echoes back: only silence is a stall. */
		if (!oe->skip && !oe->confirmed && now - e->sent_ms > HPF_STALL_MS &&
		    now - h->rx_ms > HPF_STALL_MS / 2) {
			hp_series_warn(h, "hpfeeds: broker=%s:%d channel %s: no echo for %d s; "
			    "reconnecting to publish again", h->feed.broker, h->feed.port,
			    c->name, HPF_STALL_MS / 1000);
			hp_conn_drop(h, true);
			return;
		}
	}
	hp_pump_schedule(h);
}

/* ------------------------------------------------------------ subscriber */

/* A subscriber connection (see hpfeeds.h). */
struct hpf *
hpf_subscribe(struct event_base *base, const struct cfg_feed *feed, hpf_sub_fn fn,
    void *arg, char *err, size_t errlen)
{
	struct hpf *h;

	if ((h = hp_create(base, feed, NULL, true, err, errlen)) == NULL)
		return NULL;
	h->sub_fn = fn;		/* frames are read from the loop only */
	h->sub_arg = arg;
	return h;
}
