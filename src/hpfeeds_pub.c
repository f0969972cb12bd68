/*
 * hpfeeds publishing: the sources (mail journal, event log, parsed journal)
 * read through each channel's outbox cursor, the pump (a bounded batch per
 * callback, held after a transient error), payload building (a mail as JSON
 * or raw, a line of the event log or parsed journal as it is), and the
 * confirmation that moves the cursor: the broker's echo of our own publish,
 * or, for channels we may not subscribe to, SIOCOUTQ drained plus a grace.
 */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "config.h"
#include "hpfeeds.h"
#include "hpfeeds_int.h"
#include "hpfeeds_wire.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "spool.h"
#include "util.h"

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
static bool	 hp_chan_window_ok(const struct hpf_chan *);
static void	 hp_chan_confirm_upto(struct hpf *, struct hpf_chan *, size_t k);

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
		hpf_pump_schedule(h);
}

/* Forget everything in flight: the reader goes back to the cursor. */
void
hpf_chan_reset(struct hpf_chan *c)
{
	c->out_n = 0;
	c->out_bytes = 0;
	c->subscribed = false;
	if (c->cur != NULL)
		outbox_rewind(c->cur);
}

/* Save every channel's cursor that moved (the subscriber tool has none). */
void
hpf_cursors_save(struct hpf *h)
{
	int i;

	for (i = 0; i < HPF_NSRC && !h->sub_mode; i++)
		outbox_save(h->obs[i]);
}

/* The configured channel with this name, or NULL. */
struct hpf_chan *
hpf_chan_find(struct hpf *h, const uint8_t *name, size_t len)
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
void
hpf_pump_schedule(struct hpf *h)
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
void
hpf_pump_hold(struct hpf *h, const char *fmt, ...)
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
void
hpf_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hpf *h = arg;

	h->held = false;
	hpf_pump_schedule(h);
}

/* Publish a bounded batch of journal entries, then yield. */
void
hpf_pump_cb(evutil_socket_t fd, short what, void *arg)
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
		hpf_pump_schedule(h);	/* more may be waiting: yield, then go on */
out:
	if (any_nosub)
		hpf_poll_arm(h);
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
		/* A private one is a rule's choice, not a loss: not counted. */
		if (!private) {
			h->stats.skipped++;
			metrics_inc(M_FEED_SKIPPED, "hpfeeds", c->name);
		}
		hpf_pump_schedule(h);
		return 1;
	}
	hp_pump_ok(h);
	e.bytes = hl + h->pl.len;
	e.outstanding = true;
	e.sent_ms = hpf_now_ms();
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
		hpf_pump_hold(h, "hpfeeds: event at offset %llu: out of memory",
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
		hpf_pump_hold(h, "hpfeeds: message=%s payload could not be built", m->sha);
		return HPF_RETRY;
	}
	if (dropped)
		log_warn("hpfeeds: message=%s metadata too large; published without it",
		    m->sha);
	if (cut) {
		log_info("hpfeeds: message=%s size=%lld published truncated to %zu bytes",
		    m->sha, (long long)m->size, h->pl.len);
		h->stats.truncated++;
		metrics_inc(M_FEED_TRUNCATED, "hpfeeds", c->name);
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
		hpf_pump_hold(h, "hpfeeds: message=%s payload could not be built", m->sha);
		return HPF_RETRY;
	}
	if (note[0] != '\0')
		log_warn("hpfeeds: message=%s %s", m->sha, note);
	if (cut) {
		log_warn("hpfeeds: message=%s size=%llu published truncated to %zu bytes "
		    "(the broker's frame limit; the spool keeps it whole)", m->sha,
		    (unsigned long long)m->size, h->pl.len);
		h->stats.truncated++;
		metrics_inc(M_FEED_TRUNCATED, "hpfeeds", c->name);
	}
	return 0;
}

/* ------------------------------------------------------ SIOCOUTQ confirm */

/* Start the SIOCOUTQ poll if it is not running. */
void
hpf_poll_arm(struct hpf *h)
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
void
hpf_poll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hpf *h = arg;
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	uint64_t now = hpf_now_ms(), grace = HPF_GRACE_MS;
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
				hpf_pump_schedule(h);
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
		hpf_poll_arm(h);
}

/* --------------------------------------------------------- echo confirm */

/* A publish came back: confirm our own (echo), or print it (tool). */
void
hpf_on_publish(struct hpf *h, const struct hpf_frame *f)
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
	if ((c = hpf_chan_find(h, f->chan, f->chanlen)) == NULL || c->nosub)
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
