/*
 * Relay decisions, durable caps and delivery (see relay.h).
 *
 * Threads: the event loop owns every job and every decision; one worker
 * thread does the slow, blocking parts in FIFO order (read the message and
 * run the rules, append+fsync a caps line, write the outcome record) and
 * posts the job back with event_active().  A job is on exactly one of: the
 * worker queue, the done queue, the loop (DNS or SMTP in flight).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <ifaddrs.h>

#include "dns.h"
#include "log.h"
#include "metrics.h"
#include "metrics.h"
#include "mime.h"
#include "relay.h"
#include "relay_caps.h"
#include "relay_dest.h"
#include "relay_json.h"
#include "rules_default.h"
#include "smtp_client.h"
#include "smtp_session.h"
#include "util.h"

#define RELAY_RCPT_MAX		1000	/* recipients read from one record */
#define RELAY_ATTEMPTS_MAX	10	/* connections per recipient */
#define RELAY_OWN_MAX		(CFG_RELAY_LIST_MAX + 1)
#define RELAY_IFADDR_MAX	64	/* interface addresses kept as our own */

enum relay_work { RW_EVAL, RW_PERSIST, RW_RECORD };

/* Refcounted rules: a job keeps the rules it started with across a reload. */
struct relay_rules_ref {
	struct rules	*rules;
	int		 refs;
};

struct relay_job {
	struct relay		*r;
	struct relay_job	*qnext;		/* worker or done queue */
	struct relay_job	*lnext, *lprev;	/* all live jobs */
	enum relay_work		 work;
	const char		*source;	/* "daemon" or "console" */
	bool			 live;		/* send for real (else dry-run) */
	relay_done_cb		 done_cb;
	void			*done_arg;

	/* A DATA stage request of a session (before its commit); see relay_data_cb. */
	bool			 pre;
	char			*msg_path;
	smtp_stage_done_cb	 pre_done;	/* NULL once cancelled */
	void			*pre_arg;
	bool			 have_dec;	/* dec came with the reception record */

	struct relay_record	*rec;
	struct relay_rules_ref	*rules;
	char			 own[RELAY_OWN_MAX][64];
	int			 nown;
	unsigned char		*msg;
	size_t			 msglen;
	int			 eval_rc;
	struct rules_decision	 dec;
	char			 err[512];

	char			*caps_line;
	size_t			 caps_len;
	int			 io_rc;
	char			*record_json;	/* RW_RECORD */
	size_t			 record_len;

	/* delivery */
	char			 qid[16];
	int			 rcpt_idx;
	const char		*target_rcpt;
	char			 host[DNS_HOST_MAX];
	int			 port;
	bool			 ipv4_only;
	bool			 named;		/* smarthost or test server: the operator's */
	struct dns_mx		 mx[DNS_MX_MAX];
	int			 nmx, mx_idx;
	struct dns_addr		 addr[DNS_ADDR_MAX];
	int			 naddr, addr_idx;
	int			 attempts;
	char			*received;
	size_t			 receivedlen;
	struct smtp_client	*client;
	bool			 delivered_all, any_failed;
	struct jbuf		 outcome;	/* JSON array of attempts */
	char			 summary[512];
};

struct relay {
	struct event_base	*base;
	const struct cfg	*cfg;
	const char		*hostname;
	char			 rules_path[PATH_MAX];
	struct relay_rules_ref	*rules;
	struct relay_caps	*caps_live, *caps_dry;
	struct dns		*dns;
	SSL_CTX			*ssl_ctx;
	bool			 test_mode;
	struct rdest_net	 allow[CFG_RELAY_LIST_MAX];	/* relay.allow_destinations */
	int			 nallow;
	struct sockaddr_storage	 ifaddr[RELAY_IFADDR_MAX];	/* this host's addresses */
	int			 nifaddr;
	char			 dir[PATH_MAX + 16];	/* <spool>/relay */
	relay_deliver_hook	 hook;
	void			*hook_arg;

	pthread_t		 worker;
	bool			 worker_started;
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;
	bool			 stop;
	struct relay_job	*todo_head, *todo_tail;
	struct relay_job	*done_head, *done_tail;
	struct event		*done_ev;
	struct relay_job	*jobs;
	int			 njobs;
};

static void	*relay_worker(void *);
static void	 relay_post(struct relay_job *, enum relay_work);
static void	 relay_done_push(struct relay_job *);
static void	 relay_done_ev_cb(evutil_socket_t, short, void *);
static void	 relay_job_free(struct relay_job *);
static struct relay_job *relay_job_new(struct relay *, const char *, size_t, const char *,
		    bool, relay_done_cb, void *);
static struct relay_job *relay_job_alloc(struct relay *, struct relay_record *, const char *,
		    bool, relay_done_cb, void *);
static struct relay_record *relay_record_from_req(const struct smtp_stage_req *);
static void	 relay_do_eval(struct relay_job *);
static void	 relay_do_persist(struct relay_job *);
static void	 relay_do_record(struct relay_job *);
static void	 relay_decided(struct relay_job *);
static void	 relay_persisted(struct relay_job *);
static void	 relay_finish(struct relay_job *, const char *, const char *);
static void	 relay_event_begin(struct relay_job *, struct jbuf *, const char *);
static void	 relay_metrics_cb(void *);
static void	 relay_decision_event(struct relay_job *, const char *, const char *,
		    const struct relay_caps_usage *);
static void	 relay_next_rcpt(struct relay_job *);
static void	 relay_route(struct relay_job *);
static void	 relay_mx_cb(void *, enum dns_status, const struct dns_mx *, int, const char *);
static void	 relay_next_mx(struct relay_job *);
static void	 relay_addr_cb(void *, enum dns_status, const struct dns_addr *, int,
		    const char *);
static void	 relay_next_addr(struct relay_job *);
static const char *relay_dest_refused(const struct relay_job *, const struct sockaddr *,
		    int, bool);
static void	 relay_client_cb(void *, const struct smtp_client_result *);
static void	 relay_rcpt_done(struct relay_job *, bool, const char *);
static void	 relay_attempt_json(struct relay_job *, const char *, const char *, int,
		    const struct smtp_client_result *, const char *);
static void	 relay_rules_unref(struct relay_rules_ref *);
static struct relay_caps_req relay_req(const struct relay_job *);
static bool	 relay_domain_listed(const struct relay *, const char *);
static void	 relay_sanitize(char *, size_t, const char *);
static int	 relay_read_path(const char *, uint64_t, unsigned char **, size_t *, char *,
		    size_t);
static bool	 relay_record_decision(const char *, size_t, struct rules_decision *);
static void	 relay_facts(struct rules_facts *, const struct relay_record *, enum rules_stage);
static void	 relay_rule_event(const struct relay_record *, enum rules_stage,
		    const struct rules_decision *, const char *);
static void	 relay_rule_event_conn(const struct event_conn *, const char *, const char *,
		    enum rules_stage, const struct rules_decision *, const char *);
static int	 relay_own(const struct relay *, const char *, char (*)[64], const char **);
static void	 relay_pre_done(struct relay_job *);
static char	*relay_decision_json(const struct rules_decision *);
static void	 relay_result_fill(struct smtp_stage_result *, const struct rules_decision *);

/* ------------------------------------------------------------------ records */

/* The members of a reception record that relay_record_parse() reads. */
enum relay_rk {
	RK_SHA256, RK_QUEUE_ID, RK_SESSION, RK_TIME, RK_SRC_IP, RK_DST_IP, RK_HELO,
	RK_PROTOCOL, RK_SIZE, RK_SRC_PORT, RK_DST_PORT, RK_TLS, RK_AUTH, RK_MAIL_FROM,
	RK_RCPT_TO, RK_ANOMALIES, RK_CLIENT_NAME, RK_COUNT
};
static const char *const relay_rk_names[RK_COUNT] = {
	"sha256", "queue_id", "session", "time", "src_ip", "dst_ip", "helo",
	"protocol", "size", "src_port", "dst_port", "tls", "auth", "mail_from",
	"rcpt_to", "anomalies", "client_name",
};

/*
 * Parse a reception record: one walk over its members (the first of a
 * duplicated key counts, as with relay_json_get), then the values.
 */
struct relay_record *
relay_record_parse(const char *j, size_t len, char *err, size_t errlen)
{
	struct relay_record *r;
	const char *val[RK_COUNT], *k, *v, *el, *a;
	size_t vlen[RK_COUNT], kl, vl, ell, al, pos = 0;
	long long n;
	int i, rc;

	memset(val, 0, sizeof(val));
	while ((rc = relay_json_member(j, len, &pos, &k, &kl, &v, &vl)) == 1) {
		for (i = 0; i < RK_COUNT; i++) {
			/* strncmp() == 0 implies kl <= the name's length: no NUL in k. */
			if (val[i] == NULL && k[0] == relay_rk_names[i][0] &&
			    strncmp(k, relay_rk_names[i], kl) == 0 &&
			    relay_rk_names[i][kl] == '\0') {
				val[i] = v;
				vlen[i] = vl;
				break;
			}
		}
	}
	if (rc == -1) {
		snprintf(err, errlen, "record: not a JSON object");
		return NULL;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
#define RK_STR(key, dst) (val[key] != NULL ? \
	relay_json_str(val[key], vlen[key], (dst), sizeof(dst)) : -1)
	if (RK_STR(RK_SHA256, r->sha256) == -1 ||
	    strlen(r->sha256) != 64 || strspn(r->sha256, "0123456789abcdef") != 64) {
		snprintf(err, errlen, "record: no valid sha256");
		goto fail;
	}
	RK_STR(RK_QUEUE_ID, r->queue_id);
	RK_STR(RK_SESSION, r->session);
	RK_STR(RK_TIME, r->time);
	RK_STR(RK_SRC_IP, r->src_ip);
	RK_STR(RK_DST_IP, r->dst_ip);
	RK_STR(RK_HELO, r->helo);
	RK_STR(RK_CLIENT_NAME, r->client_name);
	RK_STR(RK_PROTOCOL, r->protocol);
	if (val[RK_SIZE] && relay_json_int(val[RK_SIZE], vlen[RK_SIZE], &n) == 0 && n >= 0)
		r->size = (uint64_t)n;
	if (val[RK_SRC_PORT] && relay_json_int(val[RK_SRC_PORT], vlen[RK_SRC_PORT], &n) == 0)
		r->src_port = (int)n;
	if (val[RK_DST_PORT] && relay_json_int(val[RK_DST_PORT], vlen[RK_DST_PORT], &n) == 0)
		r->dst_port = (int)n;
	if (val[RK_TLS] && !relay_json_is_null(val[RK_TLS], vlen[RK_TLS]))
		r->tls = true;
	v = val[RK_AUTH];
	vl = vlen[RK_AUTH];
	if (v != NULL && !relay_json_is_null(v, vl) &&
	    relay_json_get(v, vl, "username", &a, &al) == 0) {
		r->auth = true;
		relay_json_str(a, al, r->auth_user, sizeof(r->auth_user));
		relay_json_get_str(v, vl, "password", r->auth_pass, sizeof(r->auth_pass));
	}
	if (RK_STR(RK_MAIL_FROM, r->mail_from) == -1) {
		snprintf(err, errlen, "record: no mail_from");
		goto fail;
	}
#undef RK_STR
	if ((v = val[RK_RCPT_TO]) == NULL) {
		snprintf(err, errlen, "record: no rcpt_to");
		goto fail;
	}
	if (val[RK_ANOMALIES] != NULL) {
		char an[32];
		for (pos = 0; relay_json_element(val[RK_ANOMALIES], vlen[RK_ANOMALIES], &pos,
		    &el, &ell) == 1;) {
			if (relay_json_str(el, ell, an, sizeof(an)) == -1)
				continue;
			if (strcmp(an, "smuggling") == 0)
				r->smuggling = true;
			else if (strcmp(an, "bare_cr") == 0)
				r->bare_cr = true;
		}
	}
	vl = vlen[RK_RCPT_TO];
	for (i = 0, pos = 0; i < RELAY_RCPT_MAX &&
	    relay_json_element(v, vl, &pos, &el, &ell) == 1; i++)
		;
	if ((r->rcpt = calloc((size_t)i + 1, sizeof(*r->rcpt))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (r->nrcpt = 0, pos = 0; r->nrcpt < i; r->nrcpt++) {
		char buf[520];
		relay_json_element(v, vl, &pos, &el, &ell);
		if (relay_json_str(el, ell, buf, sizeof(buf)) == -1 ||
		    (r->rcpt[r->nrcpt] = strdup(buf)) == NULL) {
			snprintf(err, errlen, "record: bad rcpt_to[%d]", r->nrcpt);
			goto fail;
		}
	}
	return r;
fail:
	relay_record_free(r);
	return NULL;
}

/* Free a parsed record. */
void
relay_record_free(struct relay_record *r)
{
	if (r == NULL)
		return;
	for (int i = 0; r->rcpt && i < r->nrcpt; i++)
		free(r->rcpt[i]);
	free(r->rcpt);
	free(r);
}

/*
 * Why a record may not be relayed whatever the rules say.  Smuggling: the
 * capture holds <LF>.<LF>, <CR>.<CR> or bare CRs, sequences some servers
 * take for the end of DATA; relaying them would carry the attacker's
 * smuggled commands to the next server (smtp_client_body also normalises
 * every line end, as a second line of defence).  A bare LF alone is not
 * refused: Postfix accepts it, and the copy goes out with CRLF.
 * Recipients: see rdest_rcpt_refused().
 */
int
relay_record_refused(const struct relay_record *r, char *why, size_t whylen)
{
	const char *w;

	if (r->smuggling || r->bare_cr) {
		snprintf(why, whylen, "smuggling anomaly: %s", r->smuggling ? "smuggling" :
		    "bare_cr");
		return -1;
	}
	for (const char *p = r->mail_from; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			snprintf(why, whylen, "control character in the sender: not relayed");
			return -1;
		}
	}
	for (int i = 0; i < r->nrcpt; i++) {
		if ((w = rdest_rcpt_refused(r->rcpt[i])) != NULL) {
			/* Raw, like never_relay's: each output escapes it (log_escape on
			   stderr, jb_str in the events); escaping here too doubled it. */
			snprintf(why, whylen, "recipient <%.200s>: %s: not relayed", r->rcpt[i], w);
			return -1;
		}
	}
	return 0;
}

/* Read a stored message. */
int
relay_read_message(const char *spool_dir, const char *sha256, uint64_t max,
    unsigned char **msg, size_t *len, char *err, size_t errlen)
{
	char path[PATH_MAX + 96];

	if (strlen(sha256) != 64 || strspn(sha256, "0123456789abcdef") != 64) {
		snprintf(err, errlen, "bad sha256");
		return -1;
	}
	snprintf(path, sizeof(path), "%s/messages/%s.eml", spool_dir, sha256);
	return relay_read_path(path, max, msg, len, err, errlen);
}

/*
 * Read the first head bytes of a regular file (the rules never examine more
 * than MIME_RAW_MAX: a 30 MiB mail must not be read whole for them); *total
 * gets the file's size.  With whole, a file larger than head is an error
 * (found before anything is read).
 */
static int
relay_read_head(const char *path, uint64_t head, bool whole, unsigned char **msg,
    size_t *len, uint64_t *total, char *err, size_t errlen)
{
	struct stat st;
	unsigned char *buf;
	size_t off = 0, want;
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "%.256s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%.256s: not a regular file", path);
		close(fd);
		return -1;
	}
	*total = (uint64_t)st.st_size;
	if (whole && *total > head) {
		snprintf(err, errlen, "%.256s: larger than %llu bytes", path,
		    (unsigned long long)head);
		close(fd);
		return -1;
	}
	want = *total < head ? (size_t)*total : (size_t)head;
	if ((buf = malloc(want + 1)) == NULL) {
		snprintf(err, errlen, "out of memory");
		close(fd);
		return -1;
	}
	while (off < want) {
		n = pread(fd, buf + off, want - off, (off_t)off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	close(fd);
	if (off != want) {
		snprintf(err, errlen, "%.256s: short read", path);
		free(buf);
		return -1;
	}
	*msg = buf;
	*len = off;
	return 0;
}

/* Read a whole regular file of at most max bytes into a malloc'ed buffer. */
static int
relay_read_path(const char *path, uint64_t max, unsigned char **msg, size_t *len,
    char *err, size_t errlen)
{
	uint64_t total;

	return relay_read_head(path, max, true, msg, len, &total, err, errlen);
}

/* Copy s into dst keeping only printable ASCII (others as '?'), like Postfix. */
static void
relay_sanitize(char *dst, size_t dstlen, const char *s)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < dstlen; i++)
		dst[i] = ((unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f) ? s[i] : '?';
	dst[i] = '\0';
}

/* The Received header, Postfix style. */
size_t
relay_received_header(char *out, size_t outlen, const struct relay_record *rec,
    const char *hostname, const char *qid, const char *rcpt, time_t when)
{
	char helo[256], name[256], to[520], date[64], ip[80];
	const char *with;
	struct tm tm;
	int n;

	/*
	 * Postfix's smtpd: "from HELO (NAME [ADDR])", NAME the verified client
	 * name or "unknown", and NAME again when the client sent no HELO.
	 */
	relay_sanitize(name, sizeof(name), dns_valid_hostname(rec->client_name) ?
	    rec->client_name : "unknown");
	relay_sanitize(helo, sizeof(helo), rec->helo[0] ? rec->helo : name);
	relay_sanitize(to, sizeof(to), rcpt);
	if (strchr(rec->src_ip, ':') != NULL)
		snprintf(ip, sizeof(ip), "IPv6:%s", rec->src_ip);
	else
		snprintf(ip, sizeof(ip), "%s", rec->src_ip);
	gmtime_r(&when, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000 (UTC)", &tm);
	/* RFC 3848 protocol names, as Postfix writes them. */
	if (strcmp(rec->protocol, "SMTP") == 0)
		with = "SMTP";
	else if (rec->tls && rec->auth)
		with = "ESMTPSA";
	else if (rec->tls)
		with = "ESMTPS";
	else if (rec->auth)
		with = "ESMTPA";
	else
		with = "ESMTP";
	n = snprintf(out, outlen,
	    "Received: from %s (%s [%s])\r\n"
	    "\tby %s (Postfix) with %s id %s\r\n"
	    "\tfor <%s>; %s\r\n", helo, name, ip, hostname, with, qid, to, date);
	if (n < 0 || (size_t)n >= outlen)
		return 0;
	return (size_t)n;
}

/* ------------------------------------------------------------------ rules */

/* Load the configured rules file. */
struct rules *
relay_rules_load(const struct cfg *cfg, char *path, size_t pathlen, char *err,
    size_t errlen, bool *absent)
{
	struct stat st;

	*absent = false;
	cfg_relay_rules_path(cfg, path, pathlen);
	if (path[0] == '\0') {
		/* No rules file named: the shipped rules, built into the binary. */
		snprintf(path, pathlen, "%s", RULES_DEFAULT_NAME);
		return rules_load_buf(RULES_DEFAULT_NAME, rules_default_yaml,
		    strlen(rules_default_yaml), err, errlen);
	}
	if (stat(path, &st) == -1 && errno == ENOENT) {
		*absent = true;
		snprintf(err, errlen, "%s: no rules file: nothing will be relayed",
		    path[0] ? path : "relay.rules");
		return NULL;
	}
	return rules_load(path, err, errlen);
}

/* Drop a reference to a rules set. */
static void
relay_rules_unref(struct relay_rules_ref *ref)
{
	if (ref == NULL || --ref->refs > 0)
		return;
	rules_free(ref->rules);
	free(ref);
}

/* Reload the rules (SIGHUP). */
int
relay_reload_rules(struct relay *r)
{
	struct relay_rules_ref *ref;
	struct rules *ru;
	char err[512], path[PATH_MAX];
	bool absent;

	ru = relay_rules_load(r->cfg, path, sizeof(path), err, sizeof(err), &absent);
	if (ru == NULL && !absent) {
		log_warn("relay rules: %s (keeping the previous rules)", err);
		return -1;
	}
	if ((ref = calloc(1, sizeof(*ref))) == NULL) {
		rules_free(ru);
		log_warn("relay rules: out of memory (keeping the previous rules)");
		return -1;
	}
	ref->rules = ru;
	ref->refs = 1;
	relay_rules_unref(r->rules);
	r->rules = ref;
	if (absent)
		log_warn("relay rules: %s", err);
	else
		log_info("relay rules: loaded %s", path);
	return 0;
}

/* ------------------------------------------------------------------ lifecycle */

/* Create the relay. */
struct relay *
relay_new(struct event_base *base, const struct cfg *cfg, const char *hostname,
    char *err, size_t errlen)
{
	struct relay *r;
	char e2[512];

	if ((r = calloc(1, sizeof(*r))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r->base = base;
	r->cfg = cfg;
	r->hostname = hostname;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	snprintf(r->dir, sizeof(r->dir), "%s/relay", cfg->spool_dir);
	if ((r->caps_live = relay_caps_open(r->dir, "caps", &cfg->relay.caps, false,
	    err, errlen)) == NULL)
		goto fail;
	if ((r->caps_dry = relay_caps_open(r->dir, "caps-dry-run", &cfg->relay.caps,
	    false, err, errlen)) == NULL)
		goto fail;
	if (relay_reload_rules(r) == -1) {
		bool absent;
		char path[PATH_MAX];
		rules_free(relay_rules_load(cfg, path, sizeof(path), e2, sizeof(e2), &absent));
		snprintf(err, errlen, "%s", e2);
		goto fail;
	}
	for (int i = 0; i < cfg->relay.nallow; i++) {
		if (rdest_net_parse(cfg->relay.allow_destinations[i], &r->allow[i]) == -1) {
			snprintf(err, errlen, "relay.allow_destinations: bad network \"%s\"",
			    cfg->relay.allow_destinations[i]);
			goto fail;
		}
		r->nallow++;
		log_warn("relay: DANGER: relay.allow_destinations lets relayed mail go to %s "
		    "(a test setting: never in production)", cfg->relay.allow_destinations[i]);
	}
	{
		/* This host's addresses: a relayed copy never comes back to us. */
		struct ifaddrs *ifs, *ifa;
		if (getifaddrs(&ifs) == 0) {
			for (ifa = ifs; ifa && r->nifaddr < RELAY_IFADDR_MAX; ifa = ifa->ifa_next) {
				if (ifa->ifa_addr == NULL || (ifa->ifa_addr->sa_family != AF_INET &&
				    ifa->ifa_addr->sa_family != AF_INET6))
					continue;
				memcpy(&r->ifaddr[r->nifaddr++], ifa->ifa_addr,
				    ifa->ifa_addr->sa_family == AF_INET ?
				    sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
			}
			freeifaddrs(ifs);
		}
	}
	if ((r->dns = dns_new(base, cfg->relay.dns_server,
	    cfg->relay.timeouts.command * 1000 / 4, err, errlen)) == NULL)
		goto fail;
	if ((r->ssl_ctx = smtp_client_ssl_ctx_new()) == NULL) {
		snprintf(err, errlen, "TLS client context: out of memory");
		goto fail;
	}
	if ((r->done_ev = event_new(base, -1, 0, relay_done_ev_cb, r)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (pthread_create(&r->worker, NULL, relay_worker, r) != 0) {
		snprintf(err, errlen, "cannot start the relay worker thread");
		goto fail;
	}
	r->worker_started = true;
	(void)metrics_on_scrape(relay_metrics_cb, r);
	return r;
fail:
	relay_free(r);
	return NULL;
}

/*
 * At a scrape: the global caps (per_day, per_hour) used and remaining, for
 * the live and the dry-run counts.  Loop thread, as every reservation.
 */
static void
relay_metrics_cb(void *arg)
{
	struct relay *r = arg;
	const struct cfg_relay_caps *cl = &r->cfg->relay.caps;
	struct relay_caps_req q;
	struct relay_caps_usage u;
	struct relay_caps *c;
	time_t now = time(NULL);

	memset(&q, 0, sizeof(q));
	for (int live = 0; live < 2; live++) {
		const char *mode = live ? "live" : "dry-run";

		if ((c = live ? r->caps_live : r->caps_dry) == NULL)
			continue;
		relay_caps_usage(c, &q, now, &u);
		metrics_set(M_CAPS_USED, mode, "per_day", u.day);
		metrics_set(M_CAPS_REMAINING, mode, "per_day", u.day < cl->per_day ?
		    cl->per_day - u.day : 0);
		metrics_set(M_CAPS_USED, mode, "per_hour", u.hour);
		metrics_set(M_CAPS_REMAINING, mode, "per_hour", u.hour < cl->per_hour ?
		    cl->per_hour - u.hour : 0);
	}
}

/* Stop the worker, cancel every job, free. */
void
relay_free(struct relay *r)
{
	if (r == NULL)
		return;
	metrics_off_scrape(relay_metrics_cb, r);
	if (r->worker_started) {
		pthread_mutex_lock(&r->mu);
		r->stop = true;
		pthread_cond_signal(&r->cv);
		pthread_mutex_unlock(&r->mu);
		pthread_join(r->worker, NULL);
	}
	while (r->jobs != NULL) {
		struct relay_job *j = r->jobs;
		if (j->client) {
			smtp_client_cancel(j->client);
			j->client = NULL;
		}
		relay_job_free(j);
	}
	dns_free(r->dns);	/* no job is left to call back */
	if (r->done_ev)
		event_free(r->done_ev);
	if (r->ssl_ctx)
		SSL_CTX_free(r->ssl_ctx);
	relay_rules_unref(r->rules);
	relay_caps_free(r->caps_live);
	relay_caps_free(r->caps_dry);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	free(r);
}

/* -t: route every relay to the test recipient and server. */
int
relay_set_test_mode(struct relay *r, bool on, char *err, size_t errlen)
{
	if (on && (!r->cfg->relay.test_recipient[0] || !r->cfg->relay.test_server[0])) {
		snprintf(err, errlen, "-t/--testMode needs relay.test_mode.recipient and "
		    "relay.test_mode.server in the config");
		return -1;
	}
	r->test_mode = on;
	return 0;
}

/* Install the test delivery hook. */
void
relay_set_deliver_hook(struct relay *r, relay_deliver_hook hook, void *arg)
{
	r->hook = hook;
	r->hook_arg = arg;
}

/* Jobs alive. */
int
relay_pending(const struct relay *r)
{
	return r->njobs;
}

/* ------------------------------------------------------------------ worker */

/* The worker thread: run queued jobs in order, post them back. */
static void *
relay_worker(void *arg)
{
	struct relay *r = arg;
	struct relay_job *j;

	for (;;) {
		pthread_mutex_lock(&r->mu);
		while (!r->stop && r->todo_head == NULL)
			pthread_cond_wait(&r->cv, &r->mu);
		if (r->stop) {
			pthread_mutex_unlock(&r->mu);
			return NULL;
		}
		j = r->todo_head;
		r->todo_head = j->qnext;
		if (r->todo_head == NULL)
			r->todo_tail = NULL;
		j->qnext = NULL;
		pthread_mutex_unlock(&r->mu);

		switch (j->work) {
		case RW_EVAL:
			relay_do_eval(j);
			break;
		case RW_PERSIST:
			relay_do_persist(j);
			break;
		case RW_RECORD:
			relay_do_record(j);
			break;
		}

		relay_done_push(j);
	}
}

/* A job is done (worker, or inline on the loop): queue it for relay_done_ev_cb. */
static void
relay_done_push(struct relay_job *j)
{
	struct relay *r = j->r;

	pthread_mutex_lock(&r->mu);
	if (r->done_tail)
		r->done_tail->qnext = j;
	else
		r->done_head = j;
	r->done_tail = j;
	pthread_mutex_unlock(&r->mu);
	event_active(r->done_ev, EV_TIMEOUT, 1);
}

/* Queue a job for the worker. */
static void
relay_post(struct relay_job *j, enum relay_work w)
{
	struct relay *r = j->r;

	j->work = w;
	pthread_mutex_lock(&r->mu);
	if (r->todo_tail)
		r->todo_tail->qnext = j;
	else
		r->todo_head = j;
	r->todo_tail = j;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* On the loop: take the finished jobs and carry on with each. */
static void
relay_done_ev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = arg;
	struct relay_job *j, *next;

	pthread_mutex_lock(&r->mu);
	j = r->done_head;
	r->done_head = r->done_tail = NULL;
	pthread_mutex_unlock(&r->mu);
	for (; j != NULL; j = next) {
		next = j->qnext;
		j->qnext = NULL;
		switch (j->work) {
		case RW_EVAL:
			if (j->pre)
				relay_pre_done(j);
			else
				relay_decided(j);
			break;
		case RW_PERSIST:
			relay_persisted(j);
			break;
		case RW_RECORD:
			if (j->io_rc == -1)
				log_warn("relay %s: cannot write the outcome record: %s",
				    j->rec->sha256, j->err);
			if (j->done_cb)
				j->done_cb(j->done_arg, j->delivered_all && !j->any_failed,
				    j->summary);
			relay_job_free(j);
			break;
		}
	}
}

/* Worker: read the message, run the rules. */
static void
relay_do_eval(struct relay_job *j)
{
	const struct cfg *cfg = j->r->cfg;
	struct rules_facts f;
	const char *own[RELAY_OWN_MAX];
	char path[PATH_MAX + 96];
	uint64_t total = 0;

	j->eval_rc = -1;
	if (j->have_dec) {
		/* Decided before the commit: only a mail to relay is read. */
		if (j->dec.relay && relay_read_message(cfg->spool_dir, j->rec->sha256,
		    cfg->limits.message_size + 65536, &j->msg, &j->msglen, j->err,
		    sizeof(j->err)) == -1)
			return;
		j->eval_rc = 0;
		return;
	}
	if (j->rules == NULL || j->rules->rules == NULL) {
		snprintf(j->err, sizeof(j->err), "no rules loaded");
		return;
	}
	if (j->msg != NULL)
		total = j->msglen;	/* a small mail the session handed over whole */
	else {
		if (j->pre)
			snprintf(path, sizeof(path), "%s", j->msg_path);
		else if (strlen(j->rec->sha256) == 64 &&
		    strspn(j->rec->sha256, "0123456789abcdef") == 64)
			snprintf(path, sizeof(path), "%s/messages/%s.eml", cfg->spool_dir,
			    j->rec->sha256);
		else {
			snprintf(j->err, sizeof(j->err), "bad sha256");
			return;
		}
		if (relay_read_head(path, MIME_RAW_MAX, false, &j->msg, &j->msglen, &total, j->err,
		    sizeof(j->err)) == -1)
			return;
	}
	for (int i = 0; i < j->nown; i++)
		own[i] = j->own[i];
	relay_facts(&f, j->rec, RULES_STAGE_DATA);
	f.size = total;
	f.msg = j->msg;
	f.msglen = j->msglen;
	f.own_addrs = own;
	f.nown = j->nown;
	j->eval_rc = rules_eval(j->rules->rules, &f, &j->dec);
	if (j->eval_rc == -1)
		snprintf(j->err, sizeof(j->err), "rules evaluation failed");
	if (j->eval_rc == -1 || !j->dec.relay || j->pre) {
		free(j->msg);	/* only a mail to relay is kept in memory */
		j->msg = NULL;
		j->msglen = 0;
	} else if (total > j->msglen) {
		/* To be relayed and longer than what the rules saw: read it whole. */
		free(j->msg);
		j->msg = NULL;
		j->msglen = 0;
		if (relay_read_message(cfg->spool_dir, j->rec->sha256,
		    cfg->limits.message_size + 65536, &j->msg, &j->msglen, j->err,
		    sizeof(j->err)) == -1)
			j->eval_rc = -1;
	}
}

/* Worker: make the caps reservation durable. */
static void
relay_do_persist(struct relay_job *j)
{
	struct relay_caps *c = j->live ? j->r->caps_live : j->r->caps_dry;

	j->io_rc = relay_caps_persist(c, j->caps_line, j->caps_len, j->err, sizeof(j->err));
}

/* Worker: write <dir>/<sha256>.json durably (tmp, fsync, rename, fsync dir). */
static void
relay_do_record(struct relay_job *j)
{
	char path[PATH_MAX + 96], tmp[PATH_MAX + 128];
	int fd, dfd;

	j->io_rc = -1;
	snprintf(path, sizeof(path), "%s/%s.json", j->r->dir, j->rec->sha256);
	snprintf(tmp, sizeof(tmp), "%s/.%s.%llx.tmp", j->r->dir, j->rec->sha256,
	    (unsigned long long)util_random_u64());
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640)) == -1) {
		snprintf(j->err, sizeof(j->err), "%.300s: %s", tmp, strerror(errno));
		return;
	}
	if (util_write_all(fd, j->record_json, j->record_len) == -1 || fsync(fd) == -1) {
		snprintf(j->err, sizeof(j->err), "%.300s: %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		return;
	}
	close(fd);
	if (rename(tmp, path) == -1) {
		snprintf(j->err, sizeof(j->err), "%.300s: %s", path, strerror(errno));
		unlink(tmp);
		return;
	}
	if ((dfd = open(j->r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		if (fsync(dfd) == 0)
			j->io_rc = 0;
		close(dfd);
	}
	if (j->io_rc == -1)
		snprintf(j->err, sizeof(j->err), "%.300s: fsync: %s", j->r->dir, strerror(errno));
}

/* ------------------------------------------------------------------ jobs */

/* A new job for a record; NULL (logged) when the record is unusable. */
static struct relay_job *
relay_job_new(struct relay *r, const char *record, size_t len, const char *source,
    bool live, relay_done_cb cb, void *arg)
{
	struct relay_record *rec;
	char err[256];

	if ((rec = relay_record_parse(record, len, err, sizeof(err))) == NULL) {
		log_warn("relay: %s", err);
		return NULL;
	}
	return relay_job_alloc(r, rec, source, live, cb, arg);
}

/* A new job for a parsed record (owned by the job from now on); NULL when out of memory. */
static struct relay_job *
relay_job_alloc(struct relay *r, struct relay_record *rec, const char *source, bool live,
    relay_done_cb cb, void *arg)
{
	struct relay_job *j;
	int i;

	if ((j = calloc(1, sizeof(*j))) == NULL) {
		log_warn("relay: out of memory");
		relay_record_free(rec);
		return NULL;
	}
	j->rec = rec;
	j->r = r;
	j->source = source;
	j->live = live;
	j->done_cb = cb;
	j->done_arg = arg;
	j->rules = r->rules;
	if (j->rules)
		j->rules->refs++;
	for (i = 0; i < r->cfg->relay.nown; i++)
		snprintf(j->own[j->nown++], sizeof(j->own[0]), "%s", r->cfg->relay.own_addresses[i]);
	if (j->rec->dst_ip[0])
		snprintf(j->own[j->nown++], sizeof(j->own[0]), "%s", j->rec->dst_ip);
	jb_init(&j->outcome);
	jb_arr_open(&j->outcome);
	j->lnext = r->jobs;
	if (r->jobs)
		r->jobs->lprev = j;
	r->jobs = j;
	r->njobs++;
	return j;
}

/* Unlink and free a job. */
static void
relay_job_free(struct relay_job *j)
{
	struct relay *r = j->r;

	if (j->lprev)
		j->lprev->lnext = j->lnext;
	else
		r->jobs = j->lnext;
	if (j->lnext)
		j->lnext->lprev = j->lprev;
	r->njobs--;
	relay_rules_unref(j->rules);
	rules_decision_clear(&j->dec);
	relay_record_free(j->rec);
	free(j->msg);
	free(j->caps_line);
	free(j->record_json);
	free(j->msg_path);
	free(j->received);
	jb_free(&j->outcome);
	free(j);
}

/* Consider a durable capture. */
void
relay_consider(struct relay *r, const char *record, size_t len)
{
	struct relay_job *j;

	if (r == NULL || r->cfg->relay.mode == RELAY_MODE_OFF)
		return;
	if ((j = relay_job_new(r, record, len, "daemon",
	    r->cfg->relay.mode == RELAY_MODE_LIVE, NULL, NULL)) == NULL)
		return;
	/* The DATA rules ran before the commit: their decision is in the record. */
	j->have_dec = relay_record_decision(record, len, &j->dec);
	if (j->have_dec && !j->dec.relay) {
		j->eval_rc = 0;
		relay_decided(j);	/* nothing to read, nothing slow */
		return;
	}
	relay_post(j, RW_EVAL);
}

/* The console's send. */
int
relay_send_now(struct relay *r, const char *record, size_t len, relay_done_cb cb,
    void *arg)
{
	struct relay_job *j;

	if (r->cfg->relay.mode == RELAY_MODE_OFF)
		return -1;
	if ((j = relay_job_new(r, record, len, "console", true, cb, arg)) == NULL)
		return -1;
	relay_post(j, RW_EVAL);
	return 0;
}

/* What the job would consume. */
static struct relay_caps_req
relay_req(const struct relay_job *j)
{
	struct relay_caps_req q;

	q.sha256 = j->rec->sha256;
	q.client_ip = j->rec->src_ip;
	q.rcpt = (const char *const *)j->rec->rcpt;
	q.nrcpt = j->rec->nrcpt;
	q.size = j->rec->size ? j->rec->size : j->msglen;
	return q;
}

/* Start an event with the capture's connection facts. */
static void
relay_event_begin(struct relay_job *j, struct jbuf *jb, const char *id)
{
	struct event_conn c;

	memset(&c, 0, sizeof(c));
	c.session = strtoull(j->rec->session, NULL, 16);
	c.src_ip = j->rec->src_ip;
	c.src_port = j->rec->src_port;
	c.dst_ip = j->rec->dst_ip;
	c.dst_port = j->rec->dst_port;
	c.protocol = "smtp";
	evlog_begin(jb, id, &c);
	jb_kcstr(jb, "sha256", j->rec->sha256);
	jb_kcstr(jb, "queue_id", j->rec->queue_id);
	jb_kcstr(jb, "source", j->source);
	jb_kcstr(jb, "mode", j->live ? "live" : "dry-run");
	jb_kbool(jb, "test_mode", j->r->test_mode);
}

/* fosr.relay.decision. */
static void
relay_decision_event(struct relay_job *j, const char *verdict, const char *reason,
    const struct relay_caps_usage *u)
{
	const struct cfg_relay_caps *cl = &j->r->cfg->relay.caps;
	struct jbuf jb;

	metrics_inc(M_RELAY_DECISIONS, verdict, NULL);
	jb_init(&jb);
	relay_event_begin(j, &jb, "fosr.relay.decision");
	jb_kcstr(&jb, "verdict", verdict);
	jb_kcstr(&jb, "reason", reason);
	jb_kcstr(&jb, "rule", j->dec.rule);
	jb_kbool(&jb, "matched", j->dec.matched);
	jb_kbool(&jb, "relay", j->dec.relay);
	if (j->dec.tag[0])
		jb_kcstr(&jb, "tag", j->dec.tag);
	if (j->dec.evidence) {
		jb_key(&jb, "evidence");
		jb_raw(&jb, j->dec.evidence, strlen(j->dec.evidence));
	}
	if (u) {
		jb_key(&jb, "caps");
		jb_obj_open(&jb);
		jb_kint(&jb, "day", u->day);
		jb_kint(&jb, "per_day", cl->per_day);
		jb_kint(&jb, "hour", u->hour);
		jb_kint(&jb, "per_hour", cl->per_hour);
		jb_kint(&jb, "client_ip", u->client_ip);
		jb_kint(&jb, "per_client_ip", cl->per_client_ip);
		jb_kint(&jb, "recipient", u->recipient);
		jb_kint(&jb, "per_recipient", cl->per_recipient);
		jb_kint(&jb, "domain", u->domain);
		jb_kint(&jb, "per_domain", cl->per_domain);
		jb_kbool(&jb, "seen_sha256", u->seen_sha256);
		jb_obj_close(&jb);
	}
	evlog_emit(&jb);
	jb_free(&jb);
	{
		/* The reason may quote a recipient (never_relay): escaped like any attacker byte. */
		char erule[256], ereason[1024];

		log_info("relay %s queue_id=%s verdict=%s rule=\"%s\" reason=\"%s\"",
		    j->rec->sha256, j->rec->queue_id, verdict,
		    log_escape(erule, sizeof(erule), j->dec.rule, strlen(j->dec.rule)),
		    log_escape(ereason, sizeof(ereason), reason, strlen(reason)));
	}
}

/* On the loop: the rules have spoken; check the lists and the caps. */
static void
relay_decided(struct relay_job *j)
{
	struct relay *r = j->r;
	struct relay_caps *caps = j->live ? r->caps_live : r->caps_dry;
	struct relay_caps_req q = relay_req(j);
	struct relay_caps_usage u;
	const char *which = NULL;
	char why[300];
	time_t now = time(NULL);

	if (j->eval_rc == -1) {
		relay_decision_event(j, "error", j->err, NULL);
		relay_finish(j, "error", j->err);
		return;
	}
	/* Decided here, not before the commit: this is the decision's event. */
	if (!j->have_dec && j->dec.matched)
		relay_rule_event(j->rec, RULES_STAGE_DATA, &j->dec, j->source);
	if (!j->dec.relay) {
		relay_decision_event(j, "not-relayed", j->dec.matched ?
		    "the matching rule does not relay" : "no rule matched", NULL);
		relay_finish(j, "not-relayed", "not a probe");
		return;
	}
	if (relay_record_refused(j->rec, why, sizeof(why)) == -1) {
		relay_decision_event(j, "refused", why, NULL);
		relay_finish(j, "refused", why);
		return;
	}
	for (int i = 0; i < j->rec->nrcpt; i++) {
		if (relay_never_relay(r->cfg->relay.never_relay, r->cfg->relay.nnever,
		    j->rec->rcpt[i], &which)) {
			char erc[204];	/* the recipient is the client's: escaped for the text log */
			snprintf(why, sizeof(why), "never_relay: %s matches \"%s\"",
			    log_escape(erc, sizeof(erc), j->rec->rcpt[i],
			    strlen(j->rec->rcpt[i])), which);
			relay_decision_event(j, "refused", why, NULL);
			relay_finish(j, "refused", why);
			return;
		}
	}
	relay_caps_usage(caps, &q, now, &u);
	if (relay_caps_check(caps, &q, now, why, sizeof(why)) == -1) {
		relay_decision_event(j, "refused", why, &u);
		relay_finish(j, "refused", why);
		return;
	}
	/* Counted now, on the loop: the next probe already sees this one. */
	if (relay_caps_reserve(caps, &q, now, j->source, &j->caps_line, &j->caps_len) == -1) {
		relay_decision_event(j, "error", "out of memory", &u);
		relay_finish(j, "error", "out of memory");
		return;
	}
	relay_decision_event(j, j->live ? "relay" : "dry-run", "probe within the caps", &u);
	relay_post(j, RW_PERSIST);
}

/* On the loop: the caps line is durable (or not); send. */
static void
relay_persisted(struct relay_job *j)
{
	if (j->io_rc == -1) {
		log_warn("relay %s: caps not durable, not sending: %s", j->rec->sha256, j->err);
		relay_finish(j, "failed", "caps journal write failed");
		return;
	}
	if (!j->live) {
		relay_finish(j, "dry-run", "would relay (dry-run)");
		return;
	}
	util_queue_id(j->qid, sizeof(j->qid));
	j->rcpt_idx = -1;
	j->delivered_all = true;
	relay_next_rcpt(j);
}

/* Deliver to the next recipient, or finish. */
static void
relay_next_rcpt(struct relay_job *j)
{
	char hdr[2048];
	size_t n;

	if (++j->rcpt_idx >= j->rec->nrcpt) {
		relay_finish(j, j->any_failed ? "failed" : "delivered",
		    j->any_failed ? "not every recipient was delivered" : "delivered");
		return;
	}
	j->target_rcpt = j->r->test_mode ? j->r->cfg->relay.test_recipient :
	    j->rec->rcpt[j->rcpt_idx];
	n = relay_received_header(hdr, sizeof(hdr), j->rec, j->r->hostname, j->qid,
	    j->rec->rcpt[j->rcpt_idx], time(NULL));
	free(j->received);
	if ((j->received = malloc(n + 1)) == NULL) {
		relay_rcpt_done(j, false, "out of memory");
		return;
	}
	memcpy(j->received, hdr, n + 1);
	j->receivedlen = n;
	j->attempts = 0;
	if (j->r->hook) {
		int rc = j->r->hook(j->r->hook_arg, j->rec->sha256, j->target_rcpt);
		relay_attempt_json(j, "hook", "", 0, NULL, rc == 0 ? "delivered" : "failed");
		relay_rcpt_done(j, rc == 0, rc == 0 ? "delivered (hook)" : "failed (hook)");
		return;
	}
	relay_route(j);
}

/* Whether the domain (or a parent) is in ipv4_only_domains. */
static bool
relay_domain_listed(const struct relay *r, const char *domain)
{
	const char *w;

	return relay_domain_in_list(r->cfg->relay.ipv4_only_domains,
	    r->cfg->relay.nipv4_only, domain, &w);
}

/* Decide where the current recipient's copy goes: test server, smarthost or MX. */
static void
relay_route(struct relay_job *j)
{
	const struct cfg_relay *rc = &j->r->cfg->relay;
	const char *dom = relay_addr_domain(j->target_rcpt);
	const char *hp = j->r->test_mode ? rc->test_server : rc->smarthost;
	size_t dl = strlen(dom);

	const char *bad;

	j->ipv4_only = relay_domain_listed(j->r, dom);
	j->nmx = j->mx_idx = 0;
	j->named = hp[0] != '\0';
	if (hp[0]) {
		if (cfg_hostport(hp, j->mx[0].host, sizeof(j->mx[0].host), &j->port, 25) == -1) {
			relay_rcpt_done(j, false, "bad smarthost/test server");
			return;
		}
		j->mx[0].pref = 0;
		j->nmx = 1;
		relay_next_mx(j);
		return;
	}
	j->port = rc->mx_port;
	/*
	 * relay_decided refused these already; checked again where the route
	 * is chosen: an address literal or a percent hack never picks a host.
	 */
	if ((bad = rdest_rcpt_refused(j->target_rcpt)) != NULL) {
		char why[200];
		snprintf(why, sizeof(why), "refused: %s", bad);
		relay_attempt_json(j, dom, "", 0, NULL, why);
		relay_rcpt_done(j, false, why);
		return;
	}
	if (dl == 0 || dns_mx_lookup(j->r->dns, dom, relay_mx_cb, j) == -1)
		relay_rcpt_done(j, false, "bad recipient domain");
}

/* The MX answer. */
static void
relay_mx_cb(void *arg, enum dns_status st, const struct dns_mx *mx, int n,
    const char *err)
{
	struct relay_job *j = arg;
	char why[400];

	if (st == DNS_CANCELLED)
		return;	/* relay_free is freeing the job */
	if (st != DNS_OK) {
		snprintf(why, sizeof(why), "MX lookup %s: %s", dns_status_name(st), err);
		relay_attempt_json(j, relay_addr_domain(j->target_rcpt), "", 0, NULL, why);
		relay_rcpt_done(j, false, why);
		return;
	}
	memcpy(j->mx, mx, (size_t)n * sizeof(*mx));
	j->nmx = n;
	j->mx_idx = 0;
	relay_next_mx(j);
}

/* Resolve the next MX host (mx_idx), or give up on this recipient. */
static void
relay_next_mx(struct relay_job *j)
{
	const char *bad;
	char why[200];

	for (;;) {
		if (j->mx_idx >= j->nmx || j->attempts >= RELAY_ATTEMPTS_MAX) {
			relay_rcpt_done(j, false, "every MX failed");
			return;
		}
		/* An MX name from DNS must be a host name, not an address or localhost. */
		if (j->named || (bad = rdest_host_refused(j->mx[j->mx_idx].host)) == NULL)
			break;
		snprintf(why, sizeof(why), "refused: %s", bad);
		relay_attempt_json(j, j->mx[j->mx_idx].host, "", j->port, NULL, why);
		j->mx_idx++;
	}
	if (dns_addr_lookup(j->r->dns, j->mx[j->mx_idx].host, j->ipv4_only, relay_addr_cb,
	    j) == -1) {
		j->mx_idx++;
		relay_next_mx(j);
	}
}

/* The addresses of one MX host. */
static void
relay_addr_cb(void *arg, enum dns_status st, const struct dns_addr *a, int n,
    const char *err)
{
	struct relay_job *j = arg;
	char why[400];

	if (st == DNS_CANCELLED)
		return;
	if (st != DNS_OK || n == 0) {
		snprintf(why, sizeof(why), "address lookup %s: %s", dns_status_name(st), err);
		relay_attempt_json(j, j->mx[j->mx_idx].host, "", j->port, NULL, why);
		j->mx_idx++;
		relay_next_mx(j);
		return;
	}
	memcpy(j->addr, a, (size_t)n * sizeof(*a));
	j->naddr = n;
	j->addr_idx = 0;
	relay_next_addr(j);
}

/* Connect to the next address of the current MX, or move to the next MX. */
static void
relay_next_addr(struct relay_job *j)
{
	const struct cfg_relay *rc = &j->r->cfg->relay;
	struct smtp_client_opts o;
	struct dns_addr *a;

	if (j->addr_idx >= j->naddr || j->attempts >= RELAY_ATTEMPTS_MAX) {
		j->mx_idx++;
		relay_next_mx(j);
		return;
	}
	a = &j->addr[j->addr_idx];
	if (a->ss.ss_family == AF_INET)
		((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)j->port);
	else
		((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)j->port);
	{
		/* The one gate before every outbound connection of the relay. */
		const char *bad = relay_dest_refused(j, (struct sockaddr *)&a->ss, j->port,
		    j->named);
		if (bad != NULL) {
			char why[200];
			snprintf(why, sizeof(why), "refused: %s", bad);
			relay_attempt_json(j, j->mx[j->mx_idx].host, a->text, j->port, NULL, why);
			j->addr_idx++;
			relay_next_addr(j);
			return;
		}
	}
	j->attempts++;
	memset(&o, 0, sizeof(o));
	o.helo = j->r->hostname;
	o.peer_name = j->mx[j->mx_idx].host;
	o.addr = (struct sockaddr *)&a->ss;
	o.addrlen = a->len;
	o.connect_timeout = rc->timeouts.connect;
	o.greeting_timeout = rc->timeouts.greeting;
	o.command_timeout = rc->timeouts.command;
	o.data_timeout = rc->timeouts.data;
	o.attempt_timeout = rc->timeouts.attempt;
	o.ssl_ctx = j->r->ssl_ctx;
	o.mail_from = j->rec->mail_from;
	o.rcpt = j->target_rcpt;
	o.header = (const unsigned char *)j->received;
	o.headerlen = j->receivedlen;
	o.msg = j->msg;
	o.msglen = j->msglen;
	if ((j->client = smtp_client_start(j->r->base, &o, relay_client_cb, j)) == NULL) {
		relay_attempt_json(j, o.peer_name, a->text, j->port, NULL, "cannot connect");
		j->addr_idx++;
		relay_next_addr(j);
	}
}

/*
 * Whether sa is an address of this host now: 1, 0, or -1 when it cannot be
 * told.  A UDP socket "connected" to sa (no packet is sent) gets sa itself
 * as its source address when the kernel would deliver to sa locally.  The
 * interface list read at start misses addresses gained since (DHCP, IPv6
 * temporary addresses, a new interface), and the sandbox allows no netlink
 * socket to read it again.
 */
static int
relay_addr_local(const struct sockaddr *sa)
{
	struct sockaddr_storage src;
	socklen_t len = sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) :
	    sizeof(struct sockaddr_in6), sl = sizeof(src);
	int fd, local = 0;

	if ((fd = socket(sa->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (connect(fd, sa, len) == 0 &&
	    getsockname(fd, (struct sockaddr *)&src, &sl) == 0 &&
	    src.ss_family == sa->sa_family) {
		if (sa->sa_family == AF_INET)
			local = memcmp(&((struct sockaddr_in *)&src)->sin_addr,
			    &((const struct sockaddr_in *)sa)->sin_addr, 4) == 0;
		else
			local = memcmp(&((struct sockaddr_in6 *)&src)->sin6_addr,
			    &((const struct sockaddr_in6 *)sa)->sin6_addr, 16) == 0;
	}
	close(fd);
	return local;
}

/* Whether sa is 0.0.0.0, :: or ::ffff:0.0.0.0. */
static bool
relay_addr_zero(const struct sockaddr *sa)
{
	static const unsigned char zero[16];
	struct sockaddr_in v4;

	if (rdest_embedded_v4(sa, &v4))
		sa = (const struct sockaddr *)&v4;
	if (sa->sa_family == AF_INET)
		return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == 0;
	return sa->sa_family == AF_INET6 &&
	    memcmp(&((const struct sockaddr_in6 *)sa)->sin6_addr, zero, 16) == 0;
}

/* Whether sa is a loopback address (127.0.0.0/8, ::1, mapped or NAT64 127/8). */
static bool
relay_addr_loopback(const struct sockaddr *sa)
{
	static const struct in6_addr lo6 = IN6ADDR_LOOPBACK_INIT;
	struct sockaddr_in v4;

	if (sa->sa_family == AF_INET6 && memcmp(&((const struct sockaddr_in6 *)sa)->sin6_addr,
	    &lo6, sizeof(lo6)) == 0)
		return true;
	if (rdest_embedded_v4(sa, &v4))
		sa = (const struct sockaddr *)&v4;
	return sa->sa_family == AF_INET &&
	    (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
}

/*
 * Why the relay may not connect to sa:port, or NULL.  Never the daemon's
 * own listening socket (a loop), whatever the config, also for the
 * operator's smarthost and test server (named); for an MX delivery, then
 * relay.allow_destinations (tests only) lets its networks through; then
 * only global unicast addresses (relay_dest.c) that are not ours:
 * relay.own_addresses, the address the probe came in on, the listeners'
 * addresses, this host's interface addresses at start and, asked at each
 * connection, whatever the kernel would deliver locally now.
 */
static const char *
relay_dest_refused(const struct relay_job *j, const struct sockaddr *sa, int port,
    bool named)
{
	const struct cfg *cfg = j->r->cfg;
	const char *why;
	struct sockaddr_in v4;
	bool own = false;
	int local;

	for (int i = 0; i < j->nown && !own; i++)
		own = rdest_addr_is(sa, j->own[i]);
	for (int i = 0; i < j->r->nifaddr && !own; i++) {
		char t[64];
		const struct sockaddr *ia = (const struct sockaddr *)&j->r->ifaddr[i];
		if (inet_ntop(ia->sa_family, ia->sa_family == AF_INET ?
		    (const void *)&((const struct sockaddr_in *)ia)->sin_addr :
		    (const void *)&((const struct sockaddr_in6 *)ia)->sin6_addr, t, sizeof(t)))
			own = rdest_addr_is(sa, t);
	}
	/* Asked now: an address this host gained after the start is ours too. */
	if ((local = relay_addr_local(sa)) == 0 && rdest_embedded_v4(sa, &v4))
		local = relay_addr_local((const struct sockaddr *)&v4);
	if (local == 1)
		own = true;
	for (int i = 0; i < cfg->nlisteners; i++) {
		const struct cfg_listener *l = &cfg->listeners[i];
		bool any = rdest_addr_unspecified(l->address);	/* "0::0" too */
		/* connect() to 0.0.0.0 or :: reaches this host: any listener. */
		bool here = relay_addr_zero(sa) || (any ? own || relay_addr_loopback(sa) :
		    rdest_addr_is(sa, l->address));
		if (here && port == l->port + cfg->port_offset)
			return "this daemon's own listener";
		if (here)
			own = true;
	}
	if (named)
		return NULL;	/* the operator's: no other check */
	for (int i = 0; i < j->r->nallow; i++)
		if (rdest_net_match(&j->r->allow[i], sa))
			return NULL;
	if ((why = rdest_addr_forbidden(sa)) != NULL)
		return why;
	if (own)
		return "an address of this honeypot";
	if (local == -1)
		return "cannot tell whether it is an address of this honeypot";
	return NULL;
}

/* One SMTP attempt ended. */
static void
relay_client_cb(void *arg, const struct smtp_client_result *res)
{
	struct relay_job *j = arg;
	struct dns_addr *a = &j->addr[j->addr_idx];

	j->client = NULL;
	relay_attempt_json(j, j->mx[j->mx_idx].host, a->text, j->port, res,
	    smtp_client_status_name(res->status));
	if (res->status == SMTPC_DELIVERED) {
		relay_rcpt_done(j, true, res->reply);
		return;
	}
	if (res->status == SMTPC_PERMFAIL) {
		relay_rcpt_done(j, false, res->reply);
		return;
	}
	j->addr_idx++;
	relay_next_addr(j);
}

/* Record one attempt: an event and an entry of the outcome. */
static void
relay_attempt_json(struct relay_job *j, const char *host, const char *ip, int port,
    const struct smtp_client_result *res, const char *status)
{
	struct jbuf ev;
	struct jbuf *targets[2] = { &ev, &j->outcome };

	jb_init(&ev);
	relay_event_begin(j, &ev, "fosr.relay.attempt");
	jb_obj_open(&j->outcome);
	for (int k = 0; k < 2; k++) {
		struct jbuf *b = targets[k];
		jb_kcstr(b, "rcpt", j->rec->rcpt[j->rcpt_idx]);
		jb_kcstr(b, "target_rcpt", j->target_rcpt);
		jb_kcstr(b, "relay_queue_id", j->qid);
		jb_kcstr(b, "mx", host);
		if (j->mx_idx < j->nmx)
			jb_kint(b, "preference", j->mx[j->mx_idx].pref);
		jb_kcstr(b, "ip", ip);
		jb_kint(b, "port", port);
		jb_kcstr(b, "status", status);
		if (res) {
			jb_kcstr(b, "stage", res->stage);
			jb_kint(b, "code", res->code);
			jb_kcstr(b, "reply", res->reply);
			if (res->error[0])
				jb_kcstr(b, "error", res->error);
			jb_kbool(b, "starttls_offered", res->starttls_offered);
			jb_key(b, "tls");
			if (res->tls) {
				jb_obj_open(b);
				jb_kcstr(b, "version", res->tls_version);
				jb_kcstr(b, "cipher", res->tls_cipher);
				jb_kint(b, "bits", res->tls_bits);
				jb_kbool(b, "verified", res->tls_verified);
				jb_kcstr(b, "peer", res->tls_peer);
				jb_obj_close(b);
			} else {
				jb_null(b);
			}
			if (k == 1)
				jb_kcstr(b, "transcript", res->transcript);
		}
	}
	jb_obj_close(&j->outcome);
	evlog_emit(&ev);
	jb_free(&ev);
	{
		/* The recipient, the MX name and its reply all come from the outside. */
		char erc[300], eho[300], erp[600];

		/* Quoted: a reply is words, a quoted local part may hold blanks. */
		log_info("relay %s attempt rcpt=\"%s\" mx=\"%s\" ip=%s port=%d status=%s%s%s%s",
		    j->rec->sha256,
		    log_escape(erc, sizeof(erc), j->target_rcpt, strlen(j->target_rcpt)),
		    log_escape(eho, sizeof(eho), host, strlen(host)), ip, port, status,
		    res && res->reply[0] ? " reply=\"" : "",
		    res ? log_escape(erp, sizeof(erp), res->reply, strlen(res->reply)) : "",
		    res && res->reply[0] ? "\"" : "");
	}
}

/* The current recipient is done (delivered or given up). */
static void
relay_rcpt_done(struct relay_job *j, bool ok, const char *why)
{
	if (!ok) {
		j->any_failed = true;
		j->delivered_all = false;
	}
	snprintf(j->summary, sizeof(j->summary), "%s", why);
	relay_next_rcpt(j);
}

/* The job is over: result event, durable record for relayed ones, free. */
static void
relay_finish(struct relay_job *j, const char *status, const char *why)
{
	struct jbuf ev, rec;
	bool keep = strcmp(status, "delivered") == 0 || strcmp(status, "failed") == 0 ||
	    strcmp(status, "dry-run") == 0;
	char ts[40];

	if (strcmp(status, "delivered") == 0 || strcmp(status, "failed") == 0)
		snprintf(j->summary, sizeof(j->summary), "%s: %s", status, why);
	else
		snprintf(j->summary, sizeof(j->summary), "%s: %s", status, why);
	if (!keep) {
		if (j->done_cb)
			j->done_cb(j->done_arg, false, j->summary);
		relay_job_free(j);
		return;
	}
	jb_arr_close(&j->outcome);
	jb_init(&ev);
	relay_event_begin(j, &ev, "fosr.relay.result");
	jb_kcstr(&ev, "status", status);
	jb_kcstr(&ev, "reason", why);
	jb_kcstr(&ev, "rule", j->dec.rule);
	jb_kcstr(&ev, "relay_queue_id", j->qid);
	evlog_emit(&ev);
	jb_free(&ev);
	{
		/* why may hold a recipient's domain (DNS errors) or an MX's words. */
		char ewhy[1024];

		log_info("relay %s result status=%s reason=\"%s\"", j->rec->sha256, status,
		    log_escape(ewhy, sizeof(ewhy), why, strlen(why)));
	}

	log_timestamp(ts, sizeof(ts));
	jb_init(&rec);
	jb_obj_open(&rec);
	jb_kcstr(&rec, "sha256", j->rec->sha256);
	jb_kcstr(&rec, "queue_id", j->rec->queue_id);
	jb_kcstr(&rec, "time", ts);
	jb_kcstr(&rec, "source", j->source);
	jb_kcstr(&rec, "mode", j->live ? "live" : "dry-run");
	jb_kbool(&rec, "test_mode", j->r->test_mode);
	jb_kcstr(&rec, "status", status);
	jb_kcstr(&rec, "reason", why);
	jb_kcstr(&rec, "rule", j->dec.rule);
	if (j->dec.evidence) {
		jb_key(&rec, "evidence");
		jb_raw(&rec, j->dec.evidence, strlen(j->dec.evidence));
	}
	jb_kcstr(&rec, "relay_queue_id", j->qid);
	if (j->received)
		jb_kstr(&rec, "received", j->received, j->receivedlen);
	jb_key(&rec, "attempts");
	jb_raw(&rec, j->outcome.buf ? j->outcome.buf : "[]",
	    j->outcome.buf ? j->outcome.len : 2);
	jb_obj_close(&rec);
	if (rec.oom) {
		jb_free(&rec);
		log_warn("relay %s: out of memory for the outcome record", j->rec->sha256);
		if (j->done_cb)
			j->done_cb(j->done_arg, false, j->summary);
		relay_job_free(j);
		return;
	}
	j->record_json = rec.buf;	/* ownership moves to the job */
	j->record_len = rec.len;
	free(j->msg);
	j->msg = NULL;
	relay_post(j, RW_RECORD);
}

/* ------------------------------------------------------------------ stage hooks */

/* Rules facts from a parsed record (own addresses are the caller's). */
static void
relay_facts(struct rules_facts *f, const struct relay_record *rec, enum rules_stage st)
{
	memset(f, 0, sizeof(*f));
	f->stage = st;
	f->helo = rec->helo;
	f->auth_user = rec->auth ? rec->auth_user : NULL;
	f->auth_pass = rec->auth ? rec->auth_pass : NULL;
	f->mail_from = rec->mail_from;
	f->rcpt = (const char *const *)rec->rcpt;
	f->nrcpt = rec->nrcpt;
	f->src_ip = rec->src_ip;
	f->dst_ip = rec->dst_ip;
	f->dst_port = rec->dst_port;
	f->tls = rec->tls;
	f->size = rec->size;
}

/* fosr.rule.match for a capture (record facts). */
static void
relay_rule_event(const struct relay_record *rec, enum rules_stage st,
    const struct rules_decision *d, const char *source)
{
	struct event_conn c;

	memset(&c, 0, sizeof(c));
	c.session = strtoull(rec->session, NULL, 16);
	c.src_ip = rec->src_ip;
	c.src_port = rec->src_port;
	c.dst_ip = rec->dst_ip;
	c.dst_port = rec->dst_port;
	c.protocol = "smtp";
	relay_rule_event_conn(&c, rec->sha256, rec->queue_id, st, d, source);
}

/* fosr.rule.match: one event per decision, naming the rule, stage and evidence. */
static void
relay_rule_event_conn(const struct event_conn *c, const char *sha256, const char *queue_id,
    enum rules_stage st, const struct rules_decision *d, const char *source)
{
	struct jbuf jb;

	metrics_inc(M_RULE_MATCHES, d->rule, rules_stage_name(st));
	jb_init(&jb);
	evlog_begin(&jb, "fosr.rule.match", c);
	jb_kcstr(&jb, "stage", rules_stage_name(st));
	jb_kcstr(&jb, "rule", d->rule);
	if (d->tag[0])
		jb_kcstr(&jb, "tag", d->tag);
	jb_kbool(&jb, "relay", d->relay);
	jb_kbool(&jb, "publish", d->publish);
	if (d->reply_code) {
		jb_kint(&jb, "reply_code", d->reply_code);
		jb_kcstr(&jb, "reply_text", d->reply_text);
	}
	if (sha256 && sha256[0])
		jb_kcstr(&jb, "sha256", sha256);
	if (queue_id && queue_id[0])
		jb_kcstr(&jb, "queue_id", queue_id);
	jb_kcstr(&jb, "source", source);
	jb_key(&jb, "evidence");
	if (d->evidence)
		jb_raw(&jb, d->evidence, strlen(d->evidence));
	else
		jb_raw(&jb, "[]", 2);
	evlog_emit(&jb);
	jb_free(&jb);
	{
		char erule[256], etag[256];

		log_info("%016llx rules match stage=%s rule=\"%s\" tag=\"%s\" relay=%s "
		    "publish=%s reply=%d", (unsigned long long)c->session, rules_stage_name(st),
		    log_escape(erule, sizeof(erule), d->rule, strlen(d->rule)),
		    log_escape(etag, sizeof(etag), d->tag, strlen(d->tag)),
		    d->relay ? "yes" : "no", d->publish ? "yes" : "no", d->reply_code);
	}
}

/* The decision as the JSON object the session keeps in the reception record. */
static char *
relay_decision_json(const struct rules_decision *d)
{
	struct jbuf jb;

	jb_init(&jb);
	jb_obj_open(&jb);
	jb_kcstr(&jb, "stage", "data");
	jb_kbool(&jb, "matched", d->matched);
	if (d->matched) {
		jb_kcstr(&jb, "rule", d->rule);
		jb_kbool(&jb, "relay", d->relay);
		jb_kbool(&jb, "publish", d->publish);
		jb_kcstr(&jb, "tag", d->tag);
		if (d->reply_code) {
			jb_kint(&jb, "reply_code", d->reply_code);
			jb_kcstr(&jb, "reply_text", d->reply_text);
		}
		if (d->evidence) {
			jb_key(&jb, "evidence");
			jb_raw(&jb, d->evidence, strlen(d->evidence));
		}
	}
	jb_obj_close(&jb);
	if (jb.oom) {
		jb_free(&jb);
		return NULL;
	}
	return jb.buf;
}

/* The members of the "rules" decision that relay_record_decision() reads. */
enum relay_dk {
	DK_STAGE, DK_MATCHED, DK_RULE, DK_TAG, DK_REPLY_TEXT, DK_RELAY, DK_PUBLISH,
	DK_REPLY_CODE, DK_EVIDENCE, DK_COUNT
};

/*
 * Read the DATA decision made before the commit back from a reception record
 * ("rules", written by relay_decision_json).  False when there is none.
 */
static bool
relay_record_decision(const char *record, size_t len, struct rules_decision *d)
{
	static const char *const names[DK_COUNT] = {
		"stage", "matched", "rule", "tag", "reply_text", "relay", "publish",
		"reply_code", "evidence",
	};
	const char *v, *k, *x, *dv[DK_COUNT];
	size_t vl, kl, xl, dl[DK_COUNT], pos = 0;
	char stage[8];
	long long n;
	int i, rc;

	rules_decision_clear(d);
	if (relay_json_get(record, len, "rules", &v, &vl) == -1)
		return false;
	/* One walk over the decision's members; the first of a duplicate counts. */
	memset(dv, 0, sizeof(dv));
	while ((rc = relay_json_member(v, vl, &pos, &k, &kl, &x, &xl)) == 1) {
		for (i = 0; i < DK_COUNT; i++) {
			/* strncmp() == 0 implies kl <= strlen(names[i]): no NUL in k. */
			if (dv[i] == NULL && strncmp(k, names[i], kl) == 0 &&
			    names[i][kl] == '\0') {
				dv[i] = x;
				dl[i] = xl;
				break;
			}
		}
	}
	if (rc == -1 || dv[DK_STAGE] == NULL ||
	    relay_json_str(dv[DK_STAGE], dl[DK_STAGE], stage, sizeof(stage)) == -1 ||
	    strcmp(stage, "data") != 0 || dv[DK_MATCHED] == NULL ||
	    relay_json_bool(dv[DK_MATCHED], dl[DK_MATCHED], &d->matched) == -1)
		return false;
	if (!d->matched)
		return true;
	if (dv[DK_RULE])
		relay_json_str(dv[DK_RULE], dl[DK_RULE], d->rule, sizeof(d->rule));
	if (dv[DK_TAG])
		relay_json_str(dv[DK_TAG], dl[DK_TAG], d->tag, sizeof(d->tag));
	if (dv[DK_REPLY_TEXT])
		relay_json_str(dv[DK_REPLY_TEXT], dl[DK_REPLY_TEXT], d->reply_text,
		    sizeof(d->reply_text));
	if (dv[DK_RELAY])
		relay_json_bool(dv[DK_RELAY], dl[DK_RELAY], &d->relay);
	if (dv[DK_PUBLISH])
		relay_json_bool(dv[DK_PUBLISH], dl[DK_PUBLISH], &d->publish);
	if (dv[DK_REPLY_CODE] && relay_json_int(dv[DK_REPLY_CODE], dl[DK_REPLY_CODE],
	    &n) == 0 && n >= 200 && n <= 599)
		d->reply_code = (int)n;
	if ((x = dv[DK_EVIDENCE]) != NULL && (d->evidence = malloc(dl[DK_EVIDENCE] + 1))) {
		memcpy(d->evidence, x, dl[DK_EVIDENCE]);
		d->evidence[dl[DK_EVIDENCE]] = '\0';
	}
	return true;
}

/* A rules decision as the session's stage result (record not set). */
static void
relay_result_fill(struct smtp_stage_result *res, const struct rules_decision *d)
{
	memset(res, 0, sizeof(*res));
	res->matched = d->matched;
	res->publish = d->matched ? d->publish : true;
	if (!d->matched)
		return;
	res->reply_code = d->reply_code;
	snprintf(res->reply_text, sizeof(res->reply_text), "%s", d->reply_text);
	snprintf(res->tag, sizeof(res->tag), "%s", d->tag);
	snprintf(res->rule, sizeof(res->rule), "%s", d->rule);
}

/* The honeypot's own addresses for one capture: configured ones plus dst. */
static int
relay_own(const struct relay *r, const char *dst_ip, char (*buf)[64], const char **own)
{
	int n = 0;

	for (int i = 0; i < r->cfg->relay.nown && n < RELAY_OWN_MAX - 1; i++)
		snprintf(buf[n++], 64, "%s", r->cfg->relay.own_addresses[i]);
	if (dst_ip && dst_ip[0])
		snprintf(buf[n++], 64, "%s", dst_ip);
	for (int i = 0; i < n; i++)
		own[i] = buf[i];
	return n;
}

/* Map a session stage to a rules stage. */
static enum rules_stage
relay_stage_map(enum smtp_stage st)
{
	switch (st) {
	case SMTP_STAGE_EHLO:
		return RULES_STAGE_EHLO;
	case SMTP_STAGE_AUTH:
		return RULES_STAGE_AUTH;
	case SMTP_STAGE_RSET:
		return RULES_STAGE_RSET;
	case SMTP_STAGE_DATA:
		break;
	}
	return RULES_STAGE_DATA;
}

/* Session hook: any enabled rule at this stage, with relaying not off? */
bool
relay_stage_wanted(void *arg, enum smtp_stage st)
{
	struct relay *r = arg;

	return r != NULL && r->cfg->relay.mode != RELAY_MODE_OFF && r->rules != NULL &&
	    r->rules->rules != NULL && rules_has_stage(r->rules->rules, relay_stage_map(st));
}

/* Session hook: decide EHLO/HELO, AUTH or RSET now, on the loop. */
int
relay_stage_cb(void *arg, const struct smtp_stage_req *req, struct smtp_stage_result *res)
{
	struct relay *r = arg;
	struct rules_decision d;
	struct rules_facts f;
	struct event_conn c;
	char ownbuf[RELAY_OWN_MAX][64];
	const char *own[RELAY_OWN_MAX];
	int rc;

	if (!relay_stage_wanted(r, req->stage))
		return -1;
	memset(&f, 0, sizeof(f));
	f.stage = relay_stage_map(req->stage);
	f.helo = req->helo;
	f.auth_user = req->auth_user;
	f.auth_pass = req->auth_pass;
	f.mail_from = req->mail_from;
	f.rcpt = req->rcpt;
	f.nrcpt = req->nrcpt;
	f.src_ip = req->src_ip;
	f.dst_ip = req->dst_ip;
	f.dst_port = req->dst_port;
	f.tls = req->tls;
	f.own_addrs = own;
	f.nown = relay_own(r, req->dst_ip, ownbuf, own);
	rc = rules_eval(r->rules->rules, &f, &d);
	if (rc == -1) {
		log_warn("%016llx rules: evaluation failed at stage %s",
		    (unsigned long long)req->session, rules_stage_name(f.stage));
		rules_decision_clear(&d);
		return -1;
	}
	if (d.matched) {
		memset(&c, 0, sizeof(c));
		c.session = req->session;
		c.src_ip = req->src_ip;
		c.src_port = req->src_port;
		c.dst_ip = req->dst_ip;
		c.dst_port = req->dst_port;
		c.protocol = "smtp";
		relay_rule_event_conn(&c, NULL, NULL, f.stage, &d, "daemon");
	}
	relay_result_fill(res, &d);
	rules_decision_clear(&d);
	return 0;
}

/* A relay record with the facts of a session's DATA request. */
static struct relay_record *
relay_record_from_req(const struct smtp_stage_req *req)
{
	struct relay_record *rec;

	if ((rec = calloc(1, sizeof(*rec))) == NULL)
		return NULL;
	snprintf(rec->sha256, sizeof(rec->sha256), "%s", req->sha256 ? req->sha256 : "");
	snprintf(rec->queue_id, sizeof(rec->queue_id), "%s", req->queue_id ? req->queue_id : "");
	snprintf(rec->session, sizeof(rec->session), "%016llx", (unsigned long long)req->session);
	rec->size = req->size;
	snprintf(rec->src_ip, sizeof(rec->src_ip), "%s", req->src_ip ? req->src_ip : "");
	rec->src_port = req->src_port;
	snprintf(rec->dst_ip, sizeof(rec->dst_ip), "%s", req->dst_ip ? req->dst_ip : "");
	rec->dst_port = req->dst_port;
	snprintf(rec->helo, sizeof(rec->helo), "%s", req->helo ? req->helo : "");
	snprintf(rec->client_name, sizeof(rec->client_name), "%s",
	    req->client_name ? req->client_name : "");
	rec->tls = req->tls;
	if (req->auth_user) {
		rec->auth = true;
		snprintf(rec->auth_user, sizeof(rec->auth_user), "%s", req->auth_user);
		snprintf(rec->auth_pass, sizeof(rec->auth_pass), "%s",
		    req->auth_pass ? req->auth_pass : "");
	}
	snprintf(rec->mail_from, sizeof(rec->mail_from), "%s",
	    req->mail_from ? req->mail_from : "");
	if ((rec->rcpt = calloc((size_t)req->nrcpt + 1, sizeof(*rec->rcpt))) == NULL)
		goto fail;
	for (rec->nrcpt = 0; rec->nrcpt < req->nrcpt; rec->nrcpt++)
		if ((rec->rcpt[rec->nrcpt] = strdup(req->rcpt[rec->nrcpt])) == NULL)
			goto fail;
	return rec;
fail:
	relay_record_free(rec);
	return NULL;
}

/* Session hook: evaluate the DATA rules on a complete message, on the worker. */
void *
relay_data_cb(void *arg, const struct smtp_stage_req *req, smtp_stage_done_cb done,
    void *done_arg)
{
	struct relay *r = arg;
	struct relay_record *rec;
	struct relay_job *j;

	if (!relay_stage_wanted(r, SMTP_STAGE_DATA) ||
	    (req->msg_path == NULL && req->msg_data == NULL))
		return NULL;
	if ((rec = relay_record_from_req(req)) == NULL) {
		log_warn("relay: out of memory");
		return NULL;
	}
	if ((j = relay_job_alloc(r, rec, "daemon", false, NULL, NULL)) == NULL)
		return NULL;
	if (req->msg_path != NULL && (j->msg_path = strdup(req->msg_path)) == NULL) {
		relay_job_free(j);
		return NULL;
	}
	j->pre = true;
	j->pre_done = done;
	j->pre_arg = done_arg;
	if (req->msg_data != NULL) {
		if ((j->msg = malloc(req->msg_len + 1)) == NULL) {
			relay_job_free(j);
			return NULL;
		}
		/*
		 * A small mail in memory (the spool keeps bodies under 64 KiB):
		 * the rules take tens of microseconds on it, less than the round
		 * trip to the worker and back; nothing is read from disk.  The
		 * answer still comes from relay_done_ev_cb, as from the worker.
		 */
		memcpy(j->msg, req->msg_data, req->msg_len);
		j->msglen = req->msg_len;
		j->work = RW_EVAL;
		relay_do_eval(j);
		relay_done_push(j);
		return j;
	}
	relay_post(j, RW_EVAL);
	return j;
}

/* Session hook: the session is going away; its request completes unheard. */
void
relay_data_cancel(void *arg, void *handle)
{
	struct relay_job *j = handle;

	(void)arg;
	j->pre_done = NULL;
	j->pre_arg = NULL;
}

/* On the loop: a DATA request was evaluated; tell the session. */
static void
relay_pre_done(struct relay_job *j)
{
	smtp_stage_done_cb cb = j->pre_done;
	void *arg = j->pre_arg;
	struct smtp_stage_result res;
	int status = 0;

	if (cb == NULL) {
		/* Cancelled: the capture is committed undecided; relay_consider decides. */
		relay_job_free(j);
		return;
	}
	memset(&res, 0, sizeof(res));
	res.publish = true;
	if (j->eval_rc == -1) {
		char eerr[1024];

		log_warn("%s rules: no decision before the commit: \"%s\"", j->rec->session,
		    log_escape(eerr, sizeof(eerr), j->err, strlen(j->err)));
		status = -1;
	} else {
		if (j->dec.matched)
			relay_rule_event(j->rec, RULES_STAGE_DATA, &j->dec, j->source);
		relay_result_fill(&res, &j->dec);
		res.record = relay_decision_json(&j->dec);
	}
	relay_job_free(j);
	cb(arg, status, status == 0 ? &res : NULL);
	free(res.record);	/* NULL when the session took it */
}
