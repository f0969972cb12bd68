/*
 * Rules decisions from a session's or a record's facts (see probe.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "record.h"

/* The rules look for every own address probe_own() lists. */
_Static_assert(PROBE_OWN_MAX <= RULES_OWN_MAX, "own addresses the rules would drop");

static void	 probe_facts(struct rules_facts *, const struct record *, enum rules_stage);
static void	 probe_rule_event_conn(const struct event_conn *, const char *, const char *,
		    enum rules_stage, const struct rules_decision *, const char *);

/* Rules facts from a parsed record (own addresses are the caller's). */
static void
probe_facts(struct rules_facts *f, const struct record *rec, enum rules_stage st)
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
void
probe_rule_event(const struct record *rec, enum rules_stage st,
    const struct rules_decision *d, const char *source)
{
	struct event_conn c;

	record_conn(rec, &c);
	probe_rule_event_conn(&c, rec->sha256, rec->queue_id, st, d, source);
}

/* fosr.rule.match: one event per decision, naming the rule, stage and evidence. */
static void
probe_rule_event_conn(const struct event_conn *c, const char *sha256, const char *queue_id,
    enum rules_stage st, const struct rules_decision *d, const char *source)
{
	struct jbuf jb;

	metrics_inc(M_RULE_MATCHES, d->rule, rules_stage_name(st));
	jb_init(&jb);
	log_event_begin(&jb, "fosr.rule.match", c);
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
	log_event_message(&jb, "Rule %s matched at %s%s%s", d->rule, rules_stage_name(st),
	    d->relay ? ": relay" : "", d->publish ? "" : ", not published");
	log_event_emit(&jb);
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

/* A rules decision as the session's stage result (record not set). */
void
probe_result_fill(struct smtp_stage_result *res, const struct rules_decision *d)
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
int
probe_own(const struct cfg *cfg, const char *dst_ip, char (*buf)[64], const char **own)
{
	int n = 0;

	for (int i = 0; i < cfg->relay.nown && n < PROBE_OWN_MAX - 1; i++)
		snprintf(buf[n++], 64, "%s", cfg->relay.own_addresses[i]);
	if (dst_ip && dst_ip[0])
		snprintf(buf[n++], 64, "%s", dst_ip);
	for (int i = 0; own != NULL && i < n; i++)
		own[i] = buf[i];
	return n;
}

/* Map a session stage to a rules stage. */
enum rules_stage
probe_stage(enum smtp_stage st)
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

/* A record with the facts of a session's DATA request. */
struct record *
probe_record(const struct smtp_stage_req *req)
{
	struct record *rec;

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
	if ((rec->mail_from = strdup(req->mail_from ? req->mail_from : "")) == NULL)
		goto fail;
	if ((rec->rcpt = calloc((size_t)req->nrcpt + 1, sizeof(*rec->rcpt))) == NULL)
		goto fail;
	for (rec->nrcpt = 0; rec->nrcpt < req->nrcpt; rec->nrcpt++)
		if ((rec->rcpt[rec->nrcpt] = strdup(req->rcpt[rec->nrcpt])) == NULL)
			goto fail;
	return rec;
fail:
	record_free(rec);
	return NULL;
}

/* Any enabled rule at this stage, with relaying not off? */
bool
probe_stage_wanted(const struct cfg *cfg, const struct rules *rules, enum smtp_stage st)
{
	return cfg->relay.mode != RELAY_MODE_OFF && rules != NULL &&
	    rules_has_stage(rules, probe_stage(st));
}

/* Decide EHLO/HELO, AUTH or RSET now, on the loop. */
int
probe_stage_decide(const struct cfg *cfg, const struct rules *rules,
    const struct smtp_stage_req *req, struct smtp_stage_result *res)
{
	struct rules_decision d;
	struct rules_facts f;
	struct event_conn c;
	char ownbuf[PROBE_OWN_MAX][64];
	const char *own[PROBE_OWN_MAX];
	int rc;

	if (!probe_stage_wanted(cfg, rules, req->stage))
		return -1;
	memset(&f, 0, sizeof(f));
	f.stage = probe_stage(req->stage);
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
	f.nown = probe_own(cfg, req->dst_ip, ownbuf, own);
	rc = rules_eval(rules, &f, &d);
	if (rc == -1) {
		/* Out of memory for every mail alike: once per series. */
		static struct log_series evalfail;

		log_series(&evalfail, LOG_LVL_WARN, "%016llx rules: evaluation failed at stage %s",
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
		c.client_name = req->client_name;
		probe_rule_event_conn(&c, NULL, NULL, f.stage, &d, "daemon");
	}
	probe_result_fill(res, &d);
	rules_decision_clear(&d);
	return 0;
}

/* Run the rules on a record's facts. */
int
probe_decide(const struct rules *rules, const struct record *rec, enum rules_stage st,
    const char *const *own, int nown, const unsigned char *msg, size_t msglen,
    uint64_t size, struct rules_decision *d)
{
	struct rules_facts f;

	probe_facts(&f, rec, st);
	f.size = size;
	f.msg = msg;
	f.msglen = msglen;
	f.own_addrs = own;
	f.nown = nown;
	return rules_eval(rules, &f, d);
}

