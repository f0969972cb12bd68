/*
 * The hpfeeds client's inside, shared by its three files and by nothing else:
 *   hpfeeds.c       creating the publisher and the subscriber tool (channels,
 *                   the outbox of each source, TLS context, events), the
 *                   public API, the metrics, teardown;
 *   hpfeeds_conn.c  the broker connection: connect (DNS, TCP, TLS), the
 *                   state machine and its backoff, framing (read, decode,
 *                   INFO -> AUTH and SUBSCRIBE, ERROR), the per-state
 *                   deadlines and the once-a-second tick;
 *   hpfeeds_pub.c   publishing the sources (mail journal, event log, parsed
 *                   journal): each channel's window over its outbox cursor,
 *                   the pump, payload building, confirmation (echo of our
 *                   own publish, or SIOCOUTQ drained plus a grace period).
 * The state machine is described at the top of hpfeeds.c.
 */
#ifndef HPFEEDS_INT_H
#define HPFEEDS_INT_H

#include <sys/types.h>

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include <openssl/ssl.h>

#include "config.h"
#include "hpfeeds.h"
#include "hpfeeds_wire.h"
#include "jbuf.h"
#include "json.h"
#include "outbox.h"

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

/* hpfeeds.c */
uint64_t	 hpf_now_ms(void);
void	 hpf_series_warn(struct hpf *, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));

/* hpfeeds_conn.c */
void	 hpf_conn_start(struct hpf *);
void	 hpf_conn_drop(struct hpf *, bool retry);
void	 hpf_reconnect_cb(evutil_socket_t, short, void *);
void	 hpf_tick_cb(evutil_socket_t, short, void *);

/* hpfeeds_pub.c */
void	 hpf_on_publish(struct hpf *, const struct hpf_frame *);
void	 hpf_pump_schedule(struct hpf *);
void	 hpf_pump_cb(evutil_socket_t, short, void *);
void	 hpf_retry_cb(evutil_socket_t, short, void *);
void	 hpf_pump_hold(struct hpf *, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));
void	 hpf_poll_cb(evutil_socket_t, short, void *);
void	 hpf_poll_arm(struct hpf *);
void	 hpf_chan_reset(struct hpf_chan *);
struct hpf_chan *hpf_chan_find(struct hpf *, const uint8_t *name, size_t len);
void	 hpf_cursors_save(struct hpf *);

#endif
