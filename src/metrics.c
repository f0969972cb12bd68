/*
 * Prometheus metrics (see metrics.h): the registry, the text exposition
 * format 0.0.4, the daemon's families and the evhttp endpoint.
 *
 * Names follow postfix_exporter (postfix_smtpd_connects_total,
 * postfix_smtpd_sasl_authentication_failures_total, postfix_smtpd_tls_*) and
 * Cowrie's exporter (cowrie_sessions_total, cowrie_sessions_active), with the
 * fosr_ prefix: counters end in _total, units are seconds and bytes.
 */

#include <sys/resource.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "log.h"
#include "metrics.h"

struct metric_series {
	char		 vals[METRICS_LABELS_MAX][METRICS_LABEL_MAX + 1];
	double		 value;		/* counter, gauge; histogram: sum */
	uint64_t	 count;		/* histogram */
	uint64_t	 bucket[METRICS_BUCKETS_MAX];	/* histogram, not cumulative */
};

struct metric_family {
	struct metrics	*m;
	const char	*name;
	const char	*help;
	enum metric_type type;
	char		 labels[METRICS_LABELS_MAX][32];
	int		 nlabels;
	double		 buckets[METRICS_BUCKETS_MAX];
	int		 nbuckets;
	int		 max_series;	/* + 1 for the overflow series */
	struct metric_series *s;
	int		 ns, cap;
};

struct metrics_watch {
	metrics_scrape_fn fn;
	void		*arg;
};

struct metrics {
	pthread_mutex_t	 mu;
	struct metric_family **fams;
	int		 nfams;
	struct metrics_watch *w;
	int		 nw;
};

static struct metric_series *series_get(struct metric_family *, const char *const *);
static void	 label_copy(char *, const char *);
static void	 fmt_double(char *, size_t, double);
static void	 put_value(struct evbuffer *, double);
static void	 put_escaped(struct evbuffer *, const char *, bool);
static void	 put_labels(struct evbuffer *, const struct metric_family *,
		    const struct metric_series *, const char *le);
static void	 render_family(struct evbuffer *, const struct metric_family *);
static void	 http_cb(struct evhttp_request *, void *);
static void	 adopt_cb(evutil_socket_t, short, void *);
static void	 conn_forget(int);
static bool	 conn_alive(int);
static void	 conn_asked(struct evhttp_connection *);
static int	 conn_victim(void);

/* The daemon's families, in enum metric_id order. */
static const double latency_buckets[] = {
	0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};
static const struct {
	const char	*name, *help;
	enum metric_type type;
	const char	*labels;
	int		 max_series;
} fam_defs[M_COUNT] = {
	[M_CONNECTS] = { "fosr_smtpd_connects_total",
	    "Connections accepted by each listener (refused ones included).",
	    METRIC_COUNTER, "listener", 0 },
	[M_SESSIONS_ACTIVE] = { "fosr_sessions_active",
	    "SMTP sessions open now, by listener.", METRIC_GAUGE, "listener", 0 },
	[M_MESSAGES] = { "fosr_messages_received_total",
	    "Messages committed to the spool (a 250 was allowed), by listener.",
	    METRIC_COUNTER, "listener", 0 },
	[M_MESSAGE_BYTES] = { "fosr_messages_received_bytes_total",
	    "Bytes of the messages committed to the spool, by listener.",
	    METRIC_COUNTER, "listener", 0 },
	[M_REPLIES] = { "fosr_smtpd_replies_total",
	    "SMTP replies sent, by code class (2xx, 3xx, 4xx, 5xx).",
	    METRIC_COUNTER, "class", 8 },
	[M_AUTH] = { "fosr_smtpd_auth_attempts_total",
	    "AUTH exchanges, by mechanism (unknown names count as other) and outcome.",
	    METRIC_COUNTER, "mechanism,outcome", 0 },
	[M_TLS] = { "fosr_smtpd_tls_handshakes_total",
	    "TLS handshakes completed, by protocol version.", METRIC_COUNTER, "version", 16 },
	[M_RULE_MATCHES] = { "fosr_rule_matches_total",
	    "Rule decisions, by the rule that matched (from the rules file) and stage.",
	    METRIC_COUNTER, "rule,stage", 256 },
	[M_RELAY_DECISIONS] = { "fosr_relay_decisions_total",
	    "Relay decisions on committed mail, by verdict.", METRIC_COUNTER, "verdict", 16 },
	[M_CAPS_USED] = { "fosr_relay_caps_used",
	    "Relays counted against each global cap in its window.",
	    METRIC_GAUGE, "mode,cap", 8 },
	[M_CAPS_REMAINING] = { "fosr_relay_caps_remaining",
	    "Relays each global cap still allows in its window.",
	    METRIC_GAUGE, "mode,cap", 8 },
	[M_SPOOL_BYTES] = { "fosr_spool_bytes",
	    "Bytes of the stored messages (spool messages/).", METRIC_GAUGE, "", 0 },
	[M_SPOOL_FREE] = { "fosr_spool_free_bytes",
	    "Bytes available to the daemon on the spool's filesystem.", METRIC_GAUGE, "", 0 },
	[M_FEED_BACKLOG] = { "fosr_feed_backlog_bytes",
	    "Bytes of the journal or event log not yet confirmed, by output and channel.",
	    METRIC_GAUGE, "output,channel", 32 },
	[M_FEED_CONNECTED] = { "fosr_feed_connected",
	    "1 when the output is connected and authenticated, else 0.",
	    METRIC_GAUGE, "output", 8 },
	[M_FEED_CONFIRMED] = { "fosr_feed_confirmed_total",
	    "Entries the output confirmed delivered, by output and channel.",
	    METRIC_COUNTER, "output,channel", 32 },
	[M_FEED_PUBLISHED] = { "fosr_feed_published_total",
	    "Payloads sent to the broker, by output (a retried one counts again).",
	    METRIC_COUNTER, "output", 8 },
	[M_FEED_NACKED] = { "fosr_feed_nacked_total",
	    "Payloads the broker refused (AMQP basic.nack), published again, by output.",
	    METRIC_COUNTER, "output", 8 },
	[M_FEED_RETURNED] = { "fosr_feed_returned_total",
	    "Payloads the broker returned as unroutable (AMQP basic.return), published "
	    "again, by output.", METRIC_COUNTER, "output", 8 },
	[M_FEED_CONNECTS] = { "fosr_feed_connects_total",
	    "Connection attempts to the broker, by output (the first one included).",
	    METRIC_COUNTER, "output", 8 },
	[M_FEED_SKIPPED] = { "fosr_feed_skipped_total",
	    "Entries passed unpublished, lost to the output (logged: a line too long, not "
	    "a record or document, the mail gone, too large), by output and channel; "
	    "those a rule keeps private are not counted.",
	    METRIC_COUNTER, "output,channel", 32 },
	[M_FEED_TRUNCATED] = { "fosr_feed_truncated_total",
	    "Mails published cut to the output's payload limit (the spool keeps them "
	    "whole), by output and channel.", METRIC_COUNTER, "output,channel", 32 },
	[M_COMMIT_LATENCY] = { "fosr_commit_latency_seconds",
	    "Time from the end of DATA to the durable commit that allows the 250.",
	    METRIC_HISTOGRAM, "", 0 },
	[M_ANALYSIS_BACKLOG] = { "fosr_analysis_backlog_bytes",
	    "Bytes of the reception journal the analysis worker has not finished.",
	    METRIC_GAUGE, "", 0 },
	[M_ANALYSIS_MAILS] = { "fosr_analysis_mails_total",
	    "Mails analysed (a fosr.mail.parsed event and a parsed journal line each).",
	    METRIC_COUNTER, "", 0 },
};

const char *const metrics_auth_mechs[] = {
	"PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "NTLM", "GSSAPI", "XOAUTH2",
	"OAUTHBEARER", "SCRAM-SHA-1", "SCRAM-SHA-256", "ANONYMOUS", "EXTERNAL", NULL,
};
const char *const metrics_tls_versions[] = {
	"SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", NULL,
};

static struct metrics		*g_metrics;
static struct metric_family	*g_fam[M_COUNT];
static struct evhttp		*g_http;

/*
 * The endpoint's connections.  libevent 2.1's evhttp has no cap on them, no
 * whole-request deadline (its timeout is an idle one a client resets with a
 * byte) and no hook between accept and the connection: bev_cb() hands evhttp
 * each connection's bufferevent, holding a reference, and adopt_cb() right
 * after finds the evhttp_connection through it, refuses it when descriptors
 * are short, else counts it until its close callback.  At the cap, a new
 * connection takes the place of the oldest one that has not yet sent a whole
 * request, from the address holding the most: idle connections (16 from one
 * client, re-opened as they expire) cannot lock a scraper out, and a client
 * hogging from one address evicts its own first.
 */
struct mconn {
	struct evhttp_connection *evcon;
	struct bufferevent	*bev;	/* referenced: valid after evhttp frees evcon */
	struct timespec		 start;
	char			 addr[64];	/* the peer's numeric address */
	bool			 asked;		/* a whole request came */
};
static struct event_base	*g_base;
static struct evconnlistener	*g_lev;
static struct event		*g_tick_ev;	/* deadlines, once a second */
static struct event		*g_resume_ev;	/* after an accept pause */
static struct mconn		 g_conn[METRICS_CONN_MAX];
static int			 g_nconn;
static long			 g_fd_limit;	/* RLIMIT_NOFILE - the SMTP reserve */
/* A flood can make these flap at will: logged once per series (log.h). */
static struct log_series	 g_accept_series;	/* accept(2) out of descriptors */
static uint64_t			 g_refused;	/* since the last log line */
static uint64_t			 g_evicted;	/* idle ones closed for new, since */
static time_t			 g_press_t;	/* the last refusal or eviction (s) */
#define METRICS_QUIET_S		60	/* without either: the series ended */

struct metrics *
metrics_new(void)
{
	struct metrics *m;

	if ((m = calloc(1, sizeof(*m))) == NULL)
		return NULL;
	pthread_mutex_init(&m->mu, NULL);
	return m;
}

void
metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	for (int i = 0; i < m->nfams; i++) {
		free(m->fams[i]->s);
		free(m->fams[i]);
	}
	free(m->fams);
	free(m->w);
	pthread_mutex_destroy(&m->mu);
	free(m);
}

struct metric_family *
metrics_family(struct metrics *m, const char *name, const char *help,
    enum metric_type type, const char *labels, const double *buckets, int nbuckets,
    int max_series)
{
	struct metric_family *f, **nf;
	const char *p, *e;
	size_t len;

	if (nbuckets < 0 || nbuckets > METRICS_BUCKETS_MAX ||
	    (type == METRIC_HISTOGRAM) != (nbuckets > 0))
		return NULL;
	if ((f = calloc(1, sizeof(*f))) == NULL)
		return NULL;
	f->m = m;
	f->name = name;
	f->help = help;
	f->type = type;
	for (p = labels; p && *p; p = *e ? e + 1 : e) {
		e = p + strcspn(p, ",");
		len = (size_t)(e - p);
		if (f->nlabels == METRICS_LABELS_MAX || len == 0 ||
		    len >= sizeof(f->labels[0]))
			goto fail;
		memcpy(f->labels[f->nlabels++], p, len);
	}
	for (int i = 0; i < nbuckets; i++)
		f->buckets[i] = buckets[i];
	f->nbuckets = nbuckets;
	f->max_series = max_series > 0 ? max_series : METRICS_SERIES_DEFAULT;
	pthread_mutex_lock(&m->mu);
	nf = reallocarray(m->fams, (size_t)m->nfams + 1, sizeof(*nf));
	if (nf != NULL) {
		m->fams = nf;
		m->fams[m->nfams++] = f;
	}
	pthread_mutex_unlock(&m->mu);
	if (nf == NULL)
		goto fail;
	return f;
fail:
	free(f);
	return NULL;
}

/*
 * Copy a label value, cut to METRICS_LABEL_MAX bytes at a UTF-8 character
 * boundary (the format wants UTF-8; a cut character would not be).
 */
static void
label_copy(char *dst, const char *src)
{
	size_t len = src ? strlen(src) : 0;

	if (len > METRICS_LABEL_MAX) {
		len = METRICS_LABEL_MAX;
		while (len > 0 && ((unsigned char)src[len] & 0xc0) == 0x80)
			len--;
	}
	if (len)
		memcpy(dst, src, len);
	dst[len] = '\0';
}

/*
 * The series of f for values (mutex held), created when new; past the cap,
 * the overflow series.  NULL out of memory.
 */
static struct metric_series *
series_get(struct metric_family *f, const char *const *values)
{
	char key[METRICS_LABELS_MAX][METRICS_LABEL_MAX + 1];
	struct metric_series *ns;
	int i, j, ncap;

	for (j = 0; j < f->nlabels; j++)
		label_copy(key[j], values ? values[j] : NULL);
	for (i = 0; i < f->ns; i++) {
		for (j = 0; j < f->nlabels; j++)
			if (strcmp(f->s[i].vals[j], key[j]) != 0)
				break;
		if (j == f->nlabels)
			return &f->s[i];
	}
	if (f->ns >= f->max_series) {
		/* Full: everything new counts under the overflow label set. */
		for (j = 0; j < f->nlabels; j++)
			snprintf(key[j], sizeof(key[j]), "%s", METRICS_OVERFLOW);
		if (f->ns > f->max_series)
			return &f->s[f->max_series];
	}
	if (f->ns == f->cap) {
		ncap = f->cap ? f->cap * 2 : 4;
		if (ncap > f->max_series + 1)
			ncap = f->max_series + 1;
		if ((ns = reallocarray(f->s, (size_t)ncap, sizeof(*ns))) == NULL)
			return NULL;
		f->s = ns;
		f->cap = ncap;
	}
	ns = &f->s[f->ns++];
	memset(ns, 0, sizeof(*ns));
	memcpy(ns->vals, key, sizeof(key));
	return ns;
}

void
metric_add(struct metric_family *f, const char *const *values, double v)
{
	struct metric_series *s;

	if (f == NULL || (f->type == METRIC_COUNTER && !(v >= 0)) ||
	    f->type == METRIC_HISTOGRAM)
		return;
	pthread_mutex_lock(&f->m->mu);
	if ((s = series_get(f, values)) != NULL)
		s->value += v;
	pthread_mutex_unlock(&f->m->mu);
}

void
metric_set(struct metric_family *f, const char *const *values, double v)
{
	struct metric_series *s;

	if (f == NULL || f->type != METRIC_GAUGE)
		return;
	pthread_mutex_lock(&f->m->mu);
	if ((s = series_get(f, values)) != NULL)
		s->value = v;
	pthread_mutex_unlock(&f->m->mu);
}

void
metric_observe(struct metric_family *f, const char *const *values, double v)
{
	struct metric_series *s;

	if (f == NULL || f->type != METRIC_HISTOGRAM || isnan(v))
		return;
	pthread_mutex_lock(&f->m->mu);
	if ((s = series_get(f, values)) != NULL) {
		s->value += v;
		s->count++;
		for (int i = 0; i < f->nbuckets; i++)
			if (v <= f->buckets[i]) {
				s->bucket[i]++;
				break;
			}
	}
	pthread_mutex_unlock(&f->m->mu);
}

void
metric_reset(struct metric_family *f)
{
	if (f == NULL)
		return;
	pthread_mutex_lock(&f->m->mu);
	f->ns = 0;
	pthread_mutex_unlock(&f->m->mu);
}

int
metrics_watch(struct metrics *m, metrics_scrape_fn fn, void *arg)
{
	struct metrics_watch *nw;
	int rc = 0;

	pthread_mutex_lock(&m->mu);
	for (int i = 0; i < m->nw; i++)
		if (m->w[i].fn == fn && m->w[i].arg == arg)
			goto out;
	if ((nw = reallocarray(m->w, (size_t)m->nw + 1, sizeof(*nw))) == NULL) {
		rc = -1;
		goto out;
	}
	m->w = nw;
	m->w[m->nw].fn = fn;
	m->w[m->nw++].arg = arg;
out:
	pthread_mutex_unlock(&m->mu);
	return rc;
}

void
metrics_unwatch(struct metrics *m, metrics_scrape_fn fn, void *arg)
{
	pthread_mutex_lock(&m->mu);
	for (int i = 0; i < m->nw; i++)
		if (m->w[i].fn == fn && m->w[i].arg == arg) {
			memmove(&m->w[i], &m->w[i + 1], (size_t)(m->nw - i - 1) * sizeof(*m->w));
			m->nw--;
			break;
		}
	pthread_mutex_unlock(&m->mu);
}

/*
 * The shortest of %.15g..%.17g that reads back as v, as Prometheus's own
 * clients write it (0.1, not 0.10000000000000001).
 */
static void
fmt_double(char *buf, size_t len, double v)
{
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(buf, len, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			return;
	}
}

/* A sample value: integers exactly, the rest as fmt_double(). */
static void
put_value(struct evbuffer *out, double v)
{
	char buf[40];

	if (isnan(v))
		evbuffer_add(out, "NaN", 3);
	else if (isinf(v))
		evbuffer_add_printf(out, "%sInf", v > 0 ? "+" : "-");
	else if (v == floor(v) && fabs(v) < 9007199254740992.0)
		evbuffer_add_printf(out, "%.0f", v);
	else {
		fmt_double(buf, sizeof(buf), v);
		evbuffer_add_printf(out, "%s", buf);
	}
}

/*
 * Text escaped as the format wants: backslash and newline always (HELP),
 * the double quote too inside a label value.
 */
static void
put_escaped(struct evbuffer *out, const char *s, bool quote)
{
	size_t run;

	while (*s) {
		run = strcspn(s, quote ? "\\\n\"" : "\\\n");
		evbuffer_add(out, s, run);
		s += run;
		if (*s == '\0')
			break;
		evbuffer_add(out, *s == '\n' ? "\\n" : *s == '\\' ? "\\\\" : "\\\"", 2);
		s++;
	}
}

/* {a="x",b="y"[,le="..."]}, or nothing without labels. */
static void
put_labels(struct evbuffer *out, const struct metric_family *f,
    const struct metric_series *s, const char *le)
{
	if (f->nlabels == 0 && le == NULL)
		return;
	evbuffer_add(out, "{", 1);
	for (int j = 0; j < f->nlabels; j++) {
		evbuffer_add_printf(out, "%s%s=\"", j ? "," : "", f->labels[j]);
		put_escaped(out, s->vals[j], true);
		evbuffer_add(out, "\"", 1);
	}
	if (le)
		evbuffer_add_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
	evbuffer_add(out, "}", 1);
}

/* One family: HELP, TYPE, its samples (a label-less family always has one). */
static void
render_family(struct evbuffer *out, const struct metric_family *f)
{
	static const char *const tnames[] = { "counter", "gauge", "histogram" };
	struct metric_series zero;
	const struct metric_series *s;
	char le[64];
	uint64_t cum;
	int n = f->ns;

	evbuffer_add_printf(out, "# HELP %s ", f->name);
	put_escaped(out, f->help, false);
	evbuffer_add_printf(out, "\n# TYPE %s %s\n", f->name, tnames[f->type]);
	memset(&zero, 0, sizeof(zero));
	if (n == 0 && f->nlabels == 0)
		n = 1;
	for (int i = 0; i < n; i++) {
		s = f->ns ? &f->s[i] : &zero;
		if (f->type != METRIC_HISTOGRAM) {
			evbuffer_add_printf(out, "%s", f->name);
			put_labels(out, f, s, NULL);
			evbuffer_add(out, " ", 1);
			put_value(out, s->value);
			evbuffer_add(out, "\n", 1);
			continue;
		}
		cum = 0;
		for (int b = 0; b <= f->nbuckets; b++) {
			if (b < f->nbuckets) {
				cum += s->bucket[b];
				fmt_double(le, sizeof(le), f->buckets[b]);
			} else {
				cum = s->count;
				snprintf(le, sizeof(le), "+Inf");
			}
			evbuffer_add_printf(out, "%s_bucket", f->name);
			put_labels(out, f, s, le);
			evbuffer_add_printf(out, " %llu\n", (unsigned long long)cum);
		}
		evbuffer_add_printf(out, "%s_sum", f->name);
		put_labels(out, f, s, NULL);
		evbuffer_add(out, " ", 1);
		put_value(out, s->value);
		evbuffer_add_printf(out, "\n%s_count", f->name);
		put_labels(out, f, s, NULL);
		evbuffer_add_printf(out, " %llu\n", (unsigned long long)s->count);
	}
}

int
metrics_render(struct metrics *m, struct evbuffer *out)
{
	struct metrics_watch *w = NULL;
	int nw;

	/* The callbacks set gauges (taking the mutex): run them on a copy, unlocked. */
	pthread_mutex_lock(&m->mu);
	nw = m->nw;
	if (nw > 0 && (w = reallocarray(NULL, (size_t)nw, sizeof(*w))) != NULL)
		memcpy(w, m->w, (size_t)nw * sizeof(*w));
	pthread_mutex_unlock(&m->mu);
	if (nw > 0 && w == NULL)
		return -1;
	for (int i = 0; i < nw; i++)
		w[i].fn(w[i].arg);
	free(w);
	pthread_mutex_lock(&m->mu);
	for (int i = 0; i < m->nfams; i++)
		render_family(out, m->fams[i]);
	pthread_mutex_unlock(&m->mu);
	return 0;
}

const char *
metrics_pick(const char *v, size_t len, const char *const *known)
{
	for (int i = 0; known[i]; i++)
		if (strlen(known[i]) == len && strncasecmp(known[i], v, len) == 0)
			return known[i];
	return "other";
}

int
metrics_init(void)
{
	if (g_metrics != NULL)
		return 0;
	if ((g_metrics = metrics_new()) == NULL)
		return -1;
	for (int i = 0; i < M_COUNT; i++) {
		bool hist = fam_defs[i].type == METRIC_HISTOGRAM;

		g_fam[i] = metrics_family(g_metrics, fam_defs[i].name, fam_defs[i].help,
		    fam_defs[i].type, fam_defs[i].labels, hist ? latency_buckets : NULL,
		    hist ? (int)(sizeof(latency_buckets) / sizeof(latency_buckets[0])) : 0,
		    fam_defs[i].max_series);
		if (g_fam[i] == NULL) {
			metrics_shutdown();
			return -1;
		}
	}
	return 0;
}

struct metrics *
metrics_global(void)
{
	return g_metrics;
}

/* GET/HEAD /metrics: the exposition; any other path: 404. */
static void
http_cb(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	struct evbuffer *body;

	if (path == NULL || strcmp(path, "/metrics") != 0) {
		evhttp_send_error(req, HTTP_NOTFOUND, NULL);
		return;
	}
	conn_asked(evhttp_request_get_connection(req));
	if ((body = evbuffer_new()) == NULL || g_metrics == NULL ||
	    metrics_render(g_metrics, body) == -1) {
		if (body)
			evbuffer_free(body);
		evhttp_send_error(req, HTTP_SERVUNAVAIL, NULL);
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, "OK", body);
	evbuffer_free(body);
}

/* A whole request came on evcon: no longer one to evict for a newcomer. */
static void
conn_asked(struct evhttp_connection *evcon)
{
	for (int i = 0; i < g_nconn; i++)
		if (g_conn[i].evcon == evcon) {
			g_conn[i].asked = true;
			break;
		}
}

/* How many counted connections come from addr. */
static int
conn_count_addr(const char *addr)
{
	int n = 0;

	for (int i = 0; i < g_nconn; i++)
		n += strcmp(g_conn[i].addr, addr) == 0;
	return n;
}

/*
 * The cap is reached: the connection to close for a newcomer, the oldest
 * not asked one of the address with the most; -1 when every one asked.
 */
static int
conn_victim(void)
{
	int best = -1, bestn = 0, n;

	for (int i = 0; i < g_nconn; i++) {
		if (g_conn[i].asked || !conn_alive(i))
			continue;
		n = conn_count_addr(g_conn[i].addr);
		if (best == -1 || n > bestn || (n == bestn &&
		    (g_conn[i].start.tv_sec < g_conn[best].start.tv_sec ||
		    (g_conn[i].start.tv_sec == g_conn[best].start.tv_sec &&
		    g_conn[i].start.tv_nsec < g_conn[best].start.tv_nsec)))) {
			best = i;
			bestn = n;
		}
	}
	return best;
}

/* A connection ended (evhttp frees it): forget it. */
static void
conn_close_cb(struct evhttp_connection *evcon, void *arg)
{
	for (int i = 0; i < g_nconn; i++)
		if (g_conn[i].evcon == evcon) {
			conn_forget(i);
			break;
		}
}

/* Drop entry i and our reference to its bufferevent. */
static void
conn_forget(int i)
{
	struct bufferevent *bev = g_conn[i].bev;

	g_conn[i] = g_conn[--g_nconn];
	bufferevent_decref(bev);
}

/* Whether evhttp still owns entry i's connection (its error callback is set). */
static bool
conn_alive(int i)
{
	bufferevent_event_cb ecb = NULL;
	void *cbarg = NULL;

	bufferevent_getcb(g_conn[i].bev, NULL, NULL, &ecb, &cbarg);
	return ecb != NULL && cbarg == g_conn[i].evcon;
}

/* evhttp wants a bufferevent for a connection it just accepted. */
static struct bufferevent *
bev_cb(struct event_base *base, void *arg)
{
	struct bufferevent *bev;
	struct timeval tv = { 0, 0 };

	/* As evhttp makes its own: closes the descriptor when freed. */
	if ((bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE)) == NULL)
		return NULL;
	/* Kept alive for adopt_cb() even if evhttp frees the connection first. */
	bufferevent_incref(bev);
	if (event_base_once(base, -1, EV_TIMEOUT, adopt_cb, bev, &tv) == -1)
		bufferevent_decref(bev);
	return bev;
}

/*
 * Just after the accept: count the connection, or close it past the cap or
 * when its descriptor is one the SMTP listener keeps for the spool and the
 * outputs (accept(2) gives the lowest free one, so all below are in use).
 */
static void
adopt_cb(evutil_socket_t unused, short what, void *arg)
{
	struct bufferevent *bev = arg;
	bufferevent_event_cb ecb = NULL;
	void *cbarg = NULL;
	struct evhttp_connection *evcon;
	evutil_socket_t fd = bufferevent_getfd(bev);
	char *peer = NULL;
	ev_uint16_t pport = 0;
	struct timespec now;
	int v;

	/* evhttp's error callback is set while it owns the connection. */
	bufferevent_getcb(bev, NULL, NULL, &ecb, &cbarg);
	if (ecb == NULL || (evcon = cbarg) == NULL) {
		bufferevent_decref(bev);
		return;
	}
	log_series_end(&g_accept_series, LOG_LVL_INFO, "metrics accepting connections again");
	evhttp_connection_get_peer(evcon, &peer, &pport);
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (g_nconn >= METRICS_CONN_MAX && (g_fd_limit <= 0 || (long)fd < g_fd_limit) &&
	    (v = conn_victim()) != -1) {
		g_press_t = now.tv_sec;
		if (g_evicted++ == 0)
			log_warn("metrics: %d connections open (at most %d): closing the "
			    "oldest idle one, from %s, for one from %s", g_nconn,
			    METRICS_CONN_MAX, g_conn[v].addr, peer != NULL ? peer : "?");
		evhttp_connection_set_closecb(g_conn[v].evcon, NULL, NULL);
		evhttp_connection_free(g_conn[v].evcon);
		conn_forget(v);
	}
	if (g_nconn >= METRICS_CONN_MAX || (g_fd_limit > 0 && (long)fd >= g_fd_limit)) {
		g_press_t = now.tv_sec;
		if (g_refused++ == 0)
			log_warn("metrics refusing connections: %d open (at most %d), "
			    "descriptor %ld of %ld usable", g_nconn, METRICS_CONN_MAX,
			    (long)fd, g_fd_limit);
		evhttp_connection_free(evcon);
		bufferevent_decref(bev);
		return;
	}
	/* A client re-opening its hog as it expires is one series, not one a minute. */
	if ((g_refused > 0 || g_evicted > 0) && g_nconn < METRICS_CONN_MAX / 2 &&
	    now.tv_sec - g_press_t >= METRICS_QUIET_S) {
		log_info("metrics accepting connections: %llu refused, %llu idle ones "
		    "closed for new ones", (unsigned long long)g_refused,
		    (unsigned long long)g_evicted);
		g_refused = 0;
		g_evicted = 0;
	}
	/* Our reference is kept until the close callback (or tick_cb sees it gone). */
	g_conn[g_nconn].evcon = evcon;
	g_conn[g_nconn].bev = bev;
	clock_gettime(CLOCK_MONOTONIC, &g_conn[g_nconn].start);
	snprintf(g_conn[g_nconn].addr, sizeof(g_conn[g_nconn].addr), "%s",
	    peer != NULL ? peer : "");
	g_conn[g_nconn].asked = false;
	g_nconn++;
	evhttp_connection_set_closecb(evcon, conn_close_cb, NULL);
}

/* Once a second: close the connections past the whole-request deadline. */
static void
tick_cb(evutil_socket_t unused, short what, void *arg)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	for (int i = 0; i < g_nconn; ) {
		if (!conn_alive(i))
			conn_forget(i);		/* freed without the close callback */
		else if (now.tv_sec - g_conn[i].start.tv_sec >= METRICS_TIMEOUT_S) {
			evhttp_connection_set_closecb(g_conn[i].evcon, NULL, NULL);
			evhttp_connection_free(g_conn[i].evcon);
			conn_forget(i);
		} else
			i++;
	}
}

/* accept(2) failed: out of descriptors.  Pause accepting instead of spinning. */
static void
accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct timeval tv = { METRICS_ACCEPT_PAUSE_S, 0 };
	int e = EVUTIL_SOCKET_ERROR();

	if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM)
		return;
	log_series(&g_accept_series, LOG_LVL_WARN, "metrics accept: %s: pausing for %d s",
	    strerror(e), METRICS_ACCEPT_PAUSE_S);
	evconnlistener_disable(lev);
	evtimer_add(g_resume_ev, &tv);
}

static void
resume_cb(evutil_socket_t unused, short what, void *arg)
{
	if (g_lev != NULL)
		evconnlistener_enable(g_lev);
}

int
metrics_listen(struct event_base *base, const char *address, int port, char *err,
    size_t errlen)
{
	struct evhttp_bound_socket *bound;
	struct timeval sec = { 1, 0 };
	struct rlimit rl;
	long reserve;

	if (g_metrics == NULL && metrics_init() == -1) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if ((g_http = evhttp_new(base)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	/*
	 * Bounded: a request line and headers of 8 KiB, no body worth the name,
	 * GET and HEAD only (others get 405/501 from evhttp), an idle timeout
	 * and tick_cb's whole-connection deadline for a slow client (a byte
	 * resets the idle one); the loop never waits for one.
	 */
	evhttp_set_max_headers_size(g_http, METRICS_REQUEST_MAX);
	evhttp_set_max_body_size(g_http, 1024);
	evhttp_set_allowed_methods(g_http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_timeout(g_http, METRICS_TIMEOUT_S);
	evhttp_set_gencb(g_http, http_cb, NULL);
	evhttp_set_bevcb(g_http, bev_cb, NULL);
	if ((bound = evhttp_bind_socket_with_handle(g_http, address, (ev_uint16_t)port)) == NULL) {
		snprintf(err, errlen, "cannot listen on %s port %d: %s", address, port,
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		evhttp_free(g_http);
		g_http = NULL;
		return -1;
	}
	g_base = base;
	g_lev = evhttp_bound_socket_get_listener(bound);
	evconnlistener_set_error_cb(g_lev, accept_error_cb);
	if ((g_tick_ev = event_new(base, -1, EV_PERSIST, tick_cb, NULL)) == NULL ||
	    (g_resume_ev = evtimer_new(base, resume_cb, NULL)) == NULL ||
	    event_add(g_tick_ev, &sec) == -1) {
		snprintf(err, errlen, "out of memory");
		metrics_shutdown();
		return -1;
	}
	/*
	 * The SMTP listener keeps FD_RESERVE descriptors (at most a quarter of
	 * the limit) for the spool and the outputs; a metrics connection never
	 * takes one of them.
	 */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		g_fd_limit = rl.rlim_cur > (rlim_t)LONG_MAX / 2 ? LONG_MAX / 2 : (long)rl.rlim_cur;
		reserve = g_fd_limit / 4 < METRICS_FD_RESERVE ? g_fd_limit / 4 : METRICS_FD_RESERVE;
		g_fd_limit -= reserve;
	}
	log_info("metrics: serving http://%s%s%s:%d/metrics", strchr(address, ':') ? "[" : "",
	    address, strchr(address, ':') ? "]" : "", port);
	return 0;
}

void
metrics_shutdown(void)
{
	if (g_tick_ev != NULL)
		event_free(g_tick_ev);
	if (g_resume_ev != NULL)
		event_free(g_resume_ev);
	g_tick_ev = g_resume_ev = NULL;
	g_lev = NULL;
	if (g_http != NULL)
		evhttp_free(g_http);	/* conn_close_cb for each connection */
	g_http = NULL;
	while (g_nconn > 0)
		conn_forget(0);
	metrics_free(g_metrics);
	g_metrics = NULL;
	memset(g_fam, 0, sizeof(g_fam));
}

/* Two label values as the array the registry takes. */
#define LV(l1, l2)	((const char *const[]){ (l1), (l2), NULL })

void
metrics_inc(enum metric_id id, const char *l1, const char *l2)
{
	if (g_metrics != NULL)
		metric_add(g_fam[id], LV(l1, l2), 1);
}

void
metrics_add(enum metric_id id, const char *l1, const char *l2, double v)
{
	if (g_metrics != NULL)
		metric_add(g_fam[id], LV(l1, l2), v);
}

void
metrics_set(enum metric_id id, const char *l1, const char *l2, double v)
{
	if (g_metrics != NULL)
		metric_set(g_fam[id], LV(l1, l2), v);
}

void
metrics_observe(enum metric_id id, double v)
{
	if (g_metrics != NULL)
		metric_observe(g_fam[id], NULL, v);
}

void
metrics_observe_since(enum metric_id id, const struct timespec *t0)
{
	struct timespec t1;

	if (g_metrics == NULL || (t0->tv_sec == 0 && t0->tv_nsec == 0))
		return;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	metric_observe(g_fam[id], NULL, (double)(t1.tv_sec - t0->tv_sec) +
	    (double)(t1.tv_nsec - t0->tv_nsec) / 1e9);
}

void
metrics_reset(enum metric_id id)
{
	if (g_metrics != NULL)
		metric_reset(g_fam[id]);
}

void
metrics_reply(const char *line, size_t len)
{
	static const char *const classes[] = { "2xx", "3xx", "4xx", "5xx" };

	/* "250-..." continues a reply: only its "250 ..." (or bare "250") line counts. */
	if (g_metrics == NULL || len < 3 || (len > 3 && line[3] != ' ') ||
	    line[0] < '2' || line[0] > '5')
		return;
	metric_add(g_fam[M_REPLIES], LV(classes[line[0] - '2'], NULL), 1);
}

int
metrics_on_scrape(metrics_scrape_fn fn, void *arg)
{
	return g_metrics != NULL ? metrics_watch(g_metrics, fn, arg) : 0;
}

void
metrics_off_scrape(metrics_scrape_fn fn, void *arg)
{
	if (g_metrics != NULL)
		metrics_unwatch(g_metrics, fn, arg);
}
