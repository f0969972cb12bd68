/*
 * Prometheus metrics: a small registry of counter, gauge and histogram
 * families, rendered in the text exposition format 0.0.4, and an HTTP
 * endpoint (libevent's evhttp, on the daemon's loop) serving it at
 * GET /metrics.
 *
 * Two layers.  The registry (struct metrics) is generic and what the unit
 * tests drive.  The daemon's own families are a fixed table (enum metric_id)
 * in one process-wide registry created by metrics_start() only when the
 * config has a metrics section: every metrics_inc()/_add()/_set()/_observe()
 * is a no-op while it does not exist, so the instrumented modules call them
 * unconditionally, one line each.
 *
 * Label values are bounded: at most METRICS_LABEL_MAX bytes are kept, and a
 * family holds at most its series cap of label sets; the value of any further
 * label set is counted under the series whose labels are all
 * METRICS_OVERFLOW.  Values an attacker chooses must be mapped to a known set
 * first (metrics_pick()).  Thread-safe (one mutex); scrape callbacks run on
 * the loop with it released.
 */
#ifndef FOSR_METRICS_H
#define FOSR_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct event_base;
struct evbuffer;
struct metrics;
struct metric_family;

#define METRICS_LABELS_MAX	3	/* label names of one family */
#define METRICS_LABEL_MAX	64	/* bytes of one label value kept */
#define METRICS_SERIES_DEFAULT	64	/* label sets of one family */
#define METRICS_OVERFLOW	"__overflow__"
#define METRICS_BUCKETS_MAX	16
#define METRICS_REQUEST_MAX	8192	/* request line and headers, bytes */
#define METRICS_TIMEOUT_S	5	/* a connection's whole life: no slow loris */
#define METRICS_CONN_MAX	16	/* connections at once; past it, an idle one or the new one closed */
#define METRICS_ACCEPT_PAUSE_S	1	/* no accepting after EMFILE/ENFILE */
#define METRICS_FD_RESERVE	64	/* the SMTP listener's reserve (listener.c FD_RESERVE) */

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

/* The generic registry.  metrics_free(NULL) is a no-op. */
struct metrics	*metrics_new(void);
void		 metrics_free(struct metrics *);

/*
 * Declare a family: name and help are borrowed (string literals), labels a
 * comma-separated list of label names ("" = none), buckets the histogram's
 * upper bounds in increasing order (NULL/0 otherwise), max_series the cap on
 * label sets (0 = METRICS_SERIES_DEFAULT).  NULL out of memory or on a bad
 * declaration (too many labels or buckets).
 */
struct metric_family *metrics_family(struct metrics *, const char *name, const char *help,
		    enum metric_type, const char *labels, const double *buckets, int nbuckets,
		    int max_series);

/*
 * Change the series of f named by values (as many as its labels; NULL for a
 * label counts as ""): add v (counter, gauge), set it (gauge), observe it
 * (histogram).  A counter only grows: a negative v is ignored.
 */
void		 metric_add(struct metric_family *, const char *const *values, double v);
void		 metric_set(struct metric_family *, const char *const *values, double v);
void		 metric_observe(struct metric_family *, const char *const *values, double v);
/* Forget every series of f (a gauge family whose label sets are rebuilt at each scrape). */
void		 metric_reset(struct metric_family *);

/*
 * Callbacks run at the start of each scrape, to set gauges computed then
 * (spool space, backlogs).  The same (fn, arg) twice is one callback.
 * metrics_unwatch() before arg goes away.  0, or -1 out of memory.
 */
typedef void	(*metrics_scrape_fn)(void *arg);
int		 metrics_watch(struct metrics *, metrics_scrape_fn, void *arg);
void		 metrics_unwatch(struct metrics *, metrics_scrape_fn, void *arg);

/* Run the callbacks, then append the exposition text to out.  0, or -1 out of memory. */
int		 metrics_render(struct metrics *, struct evbuffer *out);

/*
 * The entry of known (NULL-terminated) equal to the len bytes at v, ASCII
 * case ignored, else "other": how an attacker's word becomes a label value.
 */
const char	*metrics_pick(const char *v, size_t len, const char *const *known);

/* The daemon's families (metrics.c has their names, help and labels). */
enum metric_id {
	M_CONNECTS,		/* listener */
	M_SESSIONS_ACTIVE,	/* listener */
	M_MESSAGES,		/* listener */
	M_MESSAGE_BYTES,	/* listener */
	M_REPLIES,		/* class */
	M_AUTH,			/* mechanism, outcome */
	M_TLS,			/* version */
	M_RULE_MATCHES,		/* rule, stage */
	M_RELAY_DECISIONS,	/* verdict */
	M_CAPS_USED,		/* mode, cap */
	M_CAPS_REMAINING,	/* mode, cap */
	M_SPOOL_BYTES,
	M_SPOOL_FREE,
	M_FEED_BACKLOG,		/* output, channel */
	M_FEED_CONNECTED,	/* output */
	M_FEED_CONFIRMED,	/* output, channel */
	M_FEED_PUBLISHED,	/* output */
	M_FEED_NACKED,		/* output */
	M_FEED_RETURNED,	/* output */
	M_FEED_CONNECTS,	/* output */
	M_FEED_SKIPPED,		/* output, channel */
	M_FEED_TRUNCATED,	/* output, channel */
	M_COMMIT_LATENCY,	/* histogram */
	M_ANALYSIS_BACKLOG,
	M_ANALYSIS_MAILS,
	M_COUNT
};

/*
 * The process-wide registry: create it with every family of enum metric_id.
 * 0, or -1 out of memory.  Call once before the modules that register scrape
 * callbacks start (spool, feed, relay).
 */
int		 metrics_init(void);
/* The process-wide registry, or NULL when metrics are off (tests, the console). */
struct metrics	*metrics_global(void);

/*
 * Serve the global registry at http://address:port/metrics on base.  Bind
 * now (before privileges are dropped); NULL-safe errors in err.  0 or -1.
 */
int		 metrics_listen(struct event_base *base, const char *address, int port,
		    char *err, size_t errlen);
/* Stop serving and free the global registry (at exit; safe when never started). */
void		 metrics_shutdown(void);

/* One-line instrumentation on the global registry; no-ops when it does not exist. */
void		 metrics_inc(enum metric_id, const char *l1, const char *l2);
void		 metrics_add(enum metric_id, const char *l1, const char *l2, double v);
void		 metrics_set(enum metric_id, const char *l1, const char *l2, double v);
void		 metrics_observe(enum metric_id, double v);
/* Observe the seconds since *t0 (CLOCK_MONOTONIC); t0 all zero = not started: nothing. */
void		 metrics_observe_since(enum metric_id, const struct timespec *t0);
void		 metrics_reset(enum metric_id);
/* Count one SMTP reply line by its class, once per reply (its last line). */
void		 metrics_reply(const char *line, size_t len);
int		 metrics_on_scrape(metrics_scrape_fn, void *arg);
void		 metrics_off_scrape(metrics_scrape_fn, void *arg);

/* Known label values for attacker-chosen names. */
extern const char *const metrics_auth_mechs[];	/* PLAIN, LOGIN, CRAM-MD5, ... */
extern const char *const metrics_tls_versions[];	/* TLSv1 .. TLSv1.3 */

#endif
