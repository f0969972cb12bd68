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
#include "probe.h"
#include "record.h"
#include "relay.h"
#include "relay_caps.h"
#include "relay_dest.h"
#include "json.h"
#include "relay_int.h"
#include "rules_default.h"
#include "smtp_client.h"
#include "smtp_session.h"
#include "spool.h"
#include "util.h"

static void	*relay_worker(void *);
static void	 relay_post(struct relay_job *, enum relay_work);
static void	 relay_done_push(struct relay_job *);
static void	 relay_done_ev_cb(evutil_socket_t, short, void *);
static void	 relay_job_free(struct relay_job *);
static struct relay_job *relay_job_new(struct relay *, const char *, size_t, const char *,
		    bool, relay_done_cb, void *);
static struct relay_job *relay_job_alloc(struct relay *, struct record *, const char *,
		    bool, relay_done_cb, void *);
static void	 relay_do_eval(struct relay_job *);
static void	 relay_do_persist(struct relay_job *);
static void	 relay_do_record(struct relay_job *);
static void	 relay_decided(struct relay_job *);
static void	 relay_persisted(struct relay_job *);
static void	 relay_decision_event(struct relay_job *, const char *, const char *,
		    const struct relay_caps_usage *);
static void	 relay_rules_unref(struct relay_rules_ref *);
static struct relay_caps_req relay_req(const struct relay_job *);
static int	 relay_read_path(const char *, uint64_t, unsigned char **, size_t *, char *,
		    size_t);
static void	 relay_pre_done(struct relay_job *);
static void	 relay_metrics_cb(void *);

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
relay_record_refused(const struct record *r, char *why, size_t whylen)
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

	if (spool_path_message(path, sizeof(path), spool_dir, sha256) == -1) {
		snprintf(err, errlen, "bad sha256");
		return -1;
	}
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

/* What relay_prepare() made for the next relay_new() (one relay a process). */
static struct dns	*relay_prep_dns;
static SSL_CTX		*relay_prep_ctx;

/* The resolver with the relay's settings. */
static struct dns *
relay_dns_new(struct event_base *base, const struct cfg *cfg, char *err, size_t errlen)
{
	return dns_new(base, cfg->relay.dns_server, cfg->relay.timeouts.command * 1000 / 4,
	    err, errlen);
}

/* Before a chroot: the resolver and the TLS client context (see relay.h). */
int
relay_prepare(struct event_base *base, const struct cfg *cfg, char *err, size_t errlen)
{
	if (relay_prep_dns == NULL &&
	    (relay_prep_dns = relay_dns_new(base, cfg, err, errlen)) == NULL)
		return -1;
	if (relay_prep_ctx == NULL &&
	    (relay_prep_ctx = smtp_client_ssl_ctx_new()) == NULL) {
		snprintf(err, errlen, "TLS client context: out of memory");
		return -1;
	}
	return 0;
}

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
	if ((r->persona = persona_find(cfg->persona)) == NULL)
		r->persona = persona_default();
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	(void)spool_path_dir(r->dir, sizeof(r->dir), cfg->spool_dir, SPOOL_DIR_RELAY);
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
	/* Made before the chroot when relay_prepare() ran. */
	r->dns = relay_prep_dns;
	r->ssl_ctx = relay_prep_ctx;
	relay_prep_dns = NULL;
	relay_prep_ctx = NULL;
	if (r->dns == NULL && (r->dns = relay_dns_new(base, cfg, err, errlen)) == NULL)
		goto fail;
	if (r->ssl_ctx == NULL && (r->ssl_ctx = smtp_client_ssl_ctx_new()) == NULL) {
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
	const char *own[PROBE_OWN_MAX];
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
		else if (spool_path_message(path, sizeof(path), cfg->spool_dir,
		    j->rec->sha256) == -1) {
			snprintf(j->err, sizeof(j->err), "bad sha256");
			return;
		}
		if (relay_read_head(path, MIME_RAW_MAX, false, &j->msg, &j->msglen, &total, j->err,
		    sizeof(j->err)) == -1)
			return;
	}
	for (int i = 0; i < j->nown; i++)
		own[i] = j->own[i];
	j->eval_rc = probe_decide(j->rules->rules, j->rec, RULES_STAGE_DATA, own, j->nown,
	    j->msg, j->msglen, total, &j->dec);
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
	int fd;

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
	if (util_fsync_dir(j->r->dir) == 0)
		j->io_rc = 0;
	if (j->io_rc == -1)
		snprintf(j->err, sizeof(j->err), "%.300s: fsync: %s", j->r->dir, strerror(errno));
}

/* ------------------------------------------------------------------ jobs */

/* A new job for a record; NULL (logged) when the record is unusable. */
static struct relay_job *
relay_job_new(struct relay *r, const char *record, size_t len, const char *source,
    bool live, relay_done_cb cb, void *arg)
{
	struct record *rec;
	char err[256];

	if ((rec = record_parse(record, len, err, sizeof(err))) == NULL) {
		log_warn("relay: %s", err);
		return NULL;
	}
	return relay_job_alloc(r, rec, source, live, cb, arg);
}

/* A new job for a parsed record (owned by the job from now on); NULL when out of memory. */
static struct relay_job *
relay_job_alloc(struct relay *r, struct record *rec, const char *source, bool live,
    relay_done_cb cb, void *arg)
{
	struct relay_job *j;

	if ((j = calloc(1, sizeof(*j))) == NULL) {
		log_warn("relay: out of memory");
		record_free(rec);
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
	j->nown = probe_own(r->cfg, j->rec->dst_ip, j->own, NULL);
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
	record_free(j->rec);
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
	j->have_dec = record_decision(record, len, &j->dec);
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
void
relay_event_begin(struct relay_job *j, struct jbuf *jb, const char *id)
{
	struct event_conn c;

	record_conn(j->rec, &c);
	log_event_begin(jb, id, &c);
	jb_kcstr(jb, "sha256", j->rec->sha256);
	jb_kcstr(jb, "queue_id", j->rec->queue_id);
	jb_kcstr(jb, "source", j->source);
	jb_kcstr(jb, "mode", j->live ? "live" : "dry-run");
	jb_kbool(jb, "test_mode", j->r->test_mode);
	/* A rule kept the mail off the outputs: its relay events too (events_channel). */
	if (!j->dec.publish)
		jb_kbool(jb, "publish", false);
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
		jb_kint(&jb, "client_network", u->client_network);
		jb_kint(&jb, "per_client_network", cfg_relay_caps_per_network(cl));
		jb_kint(&jb, "recipient", u->recipient);
		jb_kint(&jb, "per_recipient", cl->per_recipient);
		jb_kint(&jb, "domain", u->domain);
		jb_kint(&jb, "per_domain", cl->per_domain);
		jb_kbool(&jb, "seen_sha256", u->seen_sha256);
		jb_obj_close(&jb);
	}
	log_event_message(&jb, "Relay decision for %s: %s (%s)", j->rec->queue_id, verdict, reason);
	log_event_emit(&jb);
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
		probe_rule_event(j->rec, RULES_STAGE_DATA, &j->dec, j->source);
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
		if (relay_caps_never_relay(r->cfg->relay.never_relay, r->cfg->relay.nnever,
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

/* The job is over: result event, durable record for relayed ones, free. */
void
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
	log_event_message(&ev, "Relay of %s %s: %s", j->rec->queue_id, status, why);
	log_event_emit(&ev);
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

/* Session hook: any enabled rule at this stage, with relaying not off? (probe.h) */
bool
relay_stage_wanted(void *arg, enum smtp_stage st)
{
	struct relay *r = arg;

	return r != NULL && r->rules != NULL && probe_stage_wanted(r->cfg, r->rules->rules, st);
}

/* Session hook: decide EHLO/HELO, AUTH or RSET now, on the loop (probe.h). */
int
relay_stage_cb(void *arg, const struct smtp_stage_req *req, struct smtp_stage_result *res)
{
	struct relay *r = arg;

	if (!relay_stage_wanted(r, req->stage))
		return -1;
	return probe_stage_decide(r->cfg, r->rules->rules, req, res);
}

/* Session hook: evaluate the DATA rules on a complete message, on the worker. */
void *
relay_data_cb(void *arg, const struct smtp_stage_req *req, smtp_stage_done_cb done,
    void *done_arg)
{
	struct relay *r = arg;
	struct record *rec;
	struct relay_job *j;

	if (!relay_stage_wanted(r, SMTP_STAGE_DATA) ||
	    (req->msg_path == NULL && req->msg_data == NULL))
		return NULL;
	if ((rec = probe_record(req)) == NULL) {
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

		/* Once per series: every mail meets the same failure (no rules, a read error). */
		static struct log_series nodec;

		log_series(&nodec, LOG_LVL_WARN, "%s rules: no decision before the commit: "
		    "\"%s\"", j->rec->session,
		    log_escape(eerr, sizeof(eerr), j->err, strlen(j->err)));
		status = -1;
	} else {
		if (j->dec.matched)
			probe_rule_event(j->rec, RULES_STAGE_DATA, &j->dec, j->source);
		probe_result_fill(&res, &j->dec);
		res.record = record_decision_json(&j->dec);
	}
	relay_job_free(j);
	cb(arg, status, status == 0 ? &res : NULL);
	free(res.record);	/* NULL when the session took it */
}
