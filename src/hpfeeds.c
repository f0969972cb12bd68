/*
 * hpfeeds publisher and subscriber tool (see hpfeeds.h).
 *
 * One connection to the broker, driven by libevent:
 *   IDLE --connect--> CONNECTING --TCP/TLS up--> INFO --INFO frame, AUTH sent--> READY
 * and back to IDLE (with a backoff timer) on any error.  In READY the pump
 * reads the journal through each channel's outbox cursor (outbox.c and its
 * outbox_follow.c, outbox_cursor.c: the files, rotations, cursor files),
 * builds payloads and writes PUBLISH frames, a bounded batch per callback.
 * Entries stay in the cursor's window until confirmed (echo, or SIOCOUTQ
 * drained + grace); the confirmed prefix moves the channel's durable
 * cursor.  A reconnect rewinds every window.
 *
 * This file owns creating the publisher and the subscriber tool, the public
 * API, the metrics and teardown; the connection and its framing are
 * hpfeeds_conn.c, publishing the sources hpfeeds_pub.c (hpfeeds_int.h is
 * what they share).
 */
#include <sys/types.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config.h"
#include "hpfeeds.h"
#include "hpfeeds_int.h"
#include "hpfeeds_wire.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "spool.h"
#include "util.h"

static struct hpf *hp_create(struct event_base *, const struct cfg_feed *,
		    const char *spool_dir, bool sub_mode, char *err, size_t errlen);
static int	 hp_tls_ctx_setup(struct hpf *, char *err, size_t errlen);
static void	 hpf_metrics_cb(void *);
static int	 hp_chan_setup(struct hpf *, const char *name, enum hpf_src_id,
		    char *err, size_t errlen);
static int	 hp_src_setup(struct hpf *, enum hpf_src_id, const char *path, char *err,
		    size_t errlen);
static void	 hp_src_hold(void *, const char *);
static void	 hp_src_lost(void *);

/* Monotonic clock in milliseconds. */
uint64_t
hpf_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Log a warning about the connection, once per failure series: the same text
 * again before the connection has been up for a while goes to debug.
 */
void
hpf_series_warn(struct hpf *h, const char *fmt, ...)
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

/* ---------------------------------------------------------------- setup */

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

/* The broker name's resolver hpf_prepare made (before a chroot) for hpf_new. */
static struct evdns_base *hpf_g_dns;

/* Make the broker name's resolver before a chroot (see hpfeeds.h). */
int
hpf_prepare(struct event_base *base, const struct cfg_feed *feed, char *err,
    size_t errlen)
{
	unsigned char bin[sizeof(struct in6_addr)];

	if (!feed->enabled || hpf_g_dns != NULL || feed->broker[0] == '\0' ||
	    inet_pton(AF_INET, feed->broker, bin) == 1 ||
	    inet_pton(AF_INET6, feed->broker, bin) == 1)
		return 0;
	if ((hpf_g_dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS)) == NULL) {
		snprintf(err, errlen, "hpfeeds: cannot set up DNS resolution for broker %s",
		    feed->broker);
		return -1;
	}
	return 0;
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
	h->ev_reconnect = evtimer_new(base, hpf_reconnect_cb, h);
	h->ev_pump = evtimer_new(base, hpf_pump_cb, h);
	h->ev_poll = evtimer_new(base, hpf_poll_cb, h);
	h->ev_tick = event_new(base, -1, EV_PERSIST, hpf_tick_cb, h);
	h->ev_retry = evtimer_new(base, hpf_retry_cb, h);
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
	hpf_conn_start(h);
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

	if (hpf_chan_find(h, (const uint8_t *)name, strlen(name)) != NULL)
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

/* The outbox met a transient error: hold the pump (see hpf_pump_hold). */
static void
hp_src_hold(void *arg, const char *msg)
{
	hpf_pump_hold(arg, "%s", msg);
}

/* Entries in flight were read from a file the outbox left: publish them again. */
static void
hp_src_lost(void *arg)
{
	struct hpf *h = arg;

	if (h->state != HPF_ST_IDLE)
		hpf_conn_drop(h, true);
}

/* Also publish the JSON event log (see hpfeeds.h). */
int
hpf_set_event_log(struct hpf *h, const char *path, char *err, size_t errlen)
{
	if (h->feed.events_channel[0] == '\0' || path == NULL || path[0] == '\0')
		return 0;
	if (hpf_chan_find(h, (const uint8_t *)h->feed.events_channel,
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
	hpf_cursors_save(h);
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
	if (hpf_chan_find(h, (const uint8_t *)name, strlen(name)) != NULL) {
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
	hpf_cursors_save(h);
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
	h->dns = hpf_g_dns;	/* NULL unless hpf_prepare() made it (on base) */
	hpf_g_dns = NULL;
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
		hpf_pump_schedule(h);
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
