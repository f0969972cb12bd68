/*
 * The reception record (see record.h): its writer, its parser, the DATA
 * decision it keeps, the members hpfeeds copies.  The parser reads with
 * json (strict, RFC 8259; bounded: every string is cut to its field).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dns.h"
#include "log.h"
#include "persona.h"
#include "record.h"
#include "json.h"
#include "rules.h"
#include "utf8.h"

const char *const record_meta_keys[RECORD_META_NKEYS] = {
	"time", "session", "queue_id", "listener", "src_ip", "src_port", "dst_ip",
	"dst_port", "client_name", "client_name_status", "helo", "tls", "auth", "mail_from",
	"rcpt_to", "anomalies",
};

/* ------------------------------------------------------------------ writer */

/* record_rcpt_each callback: one JSON string. */
static void
record_rcpt_json(void *arg, const char *r, size_t len)
{
	jb_str(arg, r, len);
}

/* Write the record: the members and their order are the journal's format. */
void
record_write(struct jbuf *jb, const struct record_in *in)
{
	char ts[40], sid[20];

	if (in->time == NULL)
		log_timestamp(ts, sizeof(ts));
	else
		snprintf(ts, sizeof(ts), "%s", in->time);
	snprintf(sid, sizeof(sid), "%016llx", (unsigned long long)in->session);
	jb_obj_open(jb);
	jb_kcstr(jb, "time", ts);
	jb_kcstr(jb, "session", sid);
	jb_kcstr(jb, "queue_id", in->queue_id);
	jb_kcstr(jb, "sha256", in->sha256);
	jb_kuint(jb, "size", in->size);
	jb_kcstr(jb, "sensor", in->sensor);
	jb_kcstr(jb, "src_ip", in->src_ip);
	jb_kint(jb, "src_port", in->src_port);
	jb_kcstr(jb, "dst_ip", in->dst_ip);
	jb_kint(jb, "dst_port", in->dst_port);
	jb_kcstr(jb, "listener", in->listener);
	/* Postfix's name (verified, else "unknown") and the PTR name kept apart. */
	jb_kcstr(jb, "client_name", in->client_name[0] ? in->client_name : "unknown");
	jb_kcstr(jb, "reverse_client_name", in->reverse_name[0] ? in->reverse_name : "unknown");
	if (in->name_status)
		jb_kcstr(jb, "client_name_status", in->name_status);
	jb_kstr(jb, "helo", in->helo, strlen(in->helo));
	jb_kcstr(jb, "protocol", in->protocol);
	jb_key(jb, "tls");
	if (in->tls) {
		jb_obj_open(jb);
		jb_kcstr(jb, "version", in->tls_version);
		jb_kcstr(jb, "cipher", in->tls_cipher);
		jb_kint(jb, "bits", in->tls_bits);
		jb_kstr(jb, "sni", in->tls_sni, strlen(in->tls_sni));
		jb_obj_close(jb);
	} else
		jb_null(jb);
	jb_key(jb, "auth");
	if (in->auth) {
		jb_obj_open(jb);
		jb_kcstr(jb, "mechanism", in->auth_mech);
		jb_kcstr(jb, "username", in->auth_user);
		jb_kcstr(jb, "password", in->auth_pass);
		if (in->auth_challenge)
			jb_kcstr(jb, "challenge", in->auth_challenge);
		jb_obj_close(jb);
	} else
		jb_null(jb);
	jb_kstr(jb, "mail_from", in->mail_from, strlen(in->mail_from));
	jb_key(jb, "rcpt_to");
	jb_arr_open(jb);
	if (in->rcpt_each(in->rcpt_src, record_rcpt_json, jb) == -1)
		jb->oom = true;	/* no record: the session answers 451 */
	else
		jb_arr_close(jb);
	if (in->body && in->body[0])
		jb_kcstr(jb, "body", in->body);
	jb_kbool(jb, "smtputf8", in->smtputf8);
	jb_kcstr(jb, "transfer", in->transfer);
	/* Only accepted mail gets a record: its 250 is sent once this is durable. */
	jb_kcstr(jb, "outcome", "queued");
	if (in->ruled) {
		/* The publisher skips "publish": false; the relay reads "rules". */
		jb_kbool(jb, "publish", in->publish);
		if (in->tag[0])
			jb_kcstr(jb, "tag", in->tag);
		jb_kcstr(jb, "rule", in->rule);
		jb_kcstr(jb, "rule_stage", in->rule_stage);
		if (in->reply)
			jb_kcstr(jb, "reply", in->reply);
	}
	if (in->rules) {
		jb_key(jb, "rules");
		jb_raw(jb, in->rules, strlen(in->rules));
	}
	jb_key(jb, "anomalies");
	jb_arr_open(jb);
	for (size_t k = 0; k < in->nanomalies; k++)
		jb_cstr(jb, in->anomalies[k]);
	jb_arr_close(jb);
	jb_obj_close(jb);
}

/* ------------------------------------------------------------------ parser */

/* The members of a reception record that record_parse() reads. */
enum record_key {
	RK_SHA256, RK_QUEUE_ID, RK_SESSION, RK_TIME, RK_SRC_IP, RK_DST_IP, RK_HELO,
	RK_PROTOCOL, RK_SIZE, RK_SRC_PORT, RK_DST_PORT, RK_TLS, RK_AUTH, RK_MAIL_FROM,
	RK_RCPT_TO, RK_ANOMALIES, RK_CLIENT_NAME, RK_COUNT
};
static const char *const record_keys[RK_COUNT] = {
	"sha256", "queue_id", "session", "time", "src_ip", "dst_ip", "helo",
	"protocol", "size", "src_port", "dst_port", "tls", "auth", "mail_from",
	"rcpt_to", "anomalies", "client_name",
};

/*
 * A JSON string value decoded into a buffer of its own: the decoded bytes
 * are never more than the encoded ones, so any address the session took
 * (SMTP_PATH_MAX, each invalid byte written as a 3-byte U+FFFD) fits.
 * NULL when it is not a string (or out of memory).
 */
static char *
record_str_dup(const char *v, size_t vl)
{
	char *s;

	if ((s = malloc(vl + 1)) == NULL)
		return NULL;
	if (json_str(v, vl, s, vl + 1) == -1) {
		free(s);
		return NULL;
	}
	return s;
}

/*
 * A JSON string value into a field of its own size: cut (at a UTF-8
 * boundary) when longer, as record.h says, never blanked.  0, or -1 (dst "")
 * when it is not a string or holds a NUL (or out of memory).
 */
static int
record_str_cut(const char *v, size_t vl, char *dst, size_t dstlen)
{
	char *s;
	size_t n;

	dst[0] = '\0';
	if (v == NULL || (s = record_str_dup(v, vl)) == NULL)
		return -1;
	n = utf8_prefix(s, strlen(s), dstlen - 1);
	memcpy(dst, s, n);
	dst[n] = '\0';
	free(s);
	return 0;
}

/* A port member: 0..65535, else none (0) rather than a wrapped number. */
static int
record_port(const char *v, size_t vl)
{
	long long n;

	if (v == NULL || json_int(v, vl, &n) == -1 || n < 0 || n > 65535)
		return 0;
	return (int)n;
}

/*
 * Parse a reception record: one walk over its members (the first of a
 * duplicated key counts, as with json_get), then the values.
 */
struct record *
record_parse(const char *j, size_t len, char *err, size_t errlen)
{
	struct record *r;
	const char *val[RK_COUNT], *k, *v, *el, *a;
	size_t vlen[RK_COUNT], kl, vl, ell, al, pos = 0;
	long long n;
	int i, rc;

	memset(val, 0, sizeof(val));
	memset(vlen, 0, sizeof(vlen));
	while ((rc = json_member(j, len, &pos, &k, &kl, &v, &vl)) == 1) {
		for (i = 0; i < RK_COUNT; i++) {
			/* strncmp() == 0 implies kl <= the name's length: no NUL in k. */
			if (val[i] == NULL && k[0] == record_keys[i][0] &&
			    strncmp(k, record_keys[i], kl) == 0 &&
			    record_keys[i][kl] == '\0') {
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
	/* Cut to the field (record.h), but the digest must be whole. */
#define RK_STR(key, dst) record_str_cut(val[key], vlen[key], (dst), sizeof(dst))
	if (val[RK_SHA256] == NULL ||
	    json_str(val[RK_SHA256], vlen[RK_SHA256], r->sha256, sizeof(r->sha256)) == -1 ||
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
	if (val[RK_SIZE] && json_int(val[RK_SIZE], vlen[RK_SIZE], &n) == 0 && n >= 0)
		r->size = (uint64_t)n;
	r->src_port = record_port(val[RK_SRC_PORT], vlen[RK_SRC_PORT]);
	r->dst_port = record_port(val[RK_DST_PORT], vlen[RK_DST_PORT]);
	if (val[RK_TLS] && !json_is_null(val[RK_TLS], vlen[RK_TLS]))
		r->tls = true;
	v = val[RK_AUTH];
	vl = vlen[RK_AUTH];
	if (v != NULL && !json_is_null(v, vl) &&
	    json_get(v, vl, "username", &a, &al) == 0) {
		r->auth = true;
		record_str_cut(a, al, r->auth_user, sizeof(r->auth_user));
		if (json_get(v, vl, "password", &a, &al) == 0)
			record_str_cut(a, al, r->auth_pass, sizeof(r->auth_pass));
	}
	if (val[RK_MAIL_FROM] == NULL ||
	    (r->mail_from = record_str_dup(val[RK_MAIL_FROM], vlen[RK_MAIL_FROM])) == NULL) {
		snprintf(err, errlen, "record: no mail_from");
		goto fail;
	}
#undef RK_STR
	/* Not an array counts as none (a string would read as 0 recipients). */
	if ((v = val[RK_RCPT_TO]) == NULL || vlen[RK_RCPT_TO] == 0 || v[0] != '[') {
		snprintf(err, errlen, "record: no rcpt_to");
		goto fail;
	}
	if (val[RK_ANOMALIES] != NULL) {
		char an[32];
		for (pos = 0; json_element(val[RK_ANOMALIES], vlen[RK_ANOMALIES], &pos,
		    &el, &ell) == 1;) {
			if (json_str(el, ell, an, sizeof(an)) == -1)
				continue;
			if (strcmp(an, "smuggling") == 0)
				r->smuggling = true;
			else if (strcmp(an, "bare_cr") == 0)
				r->bare_cr = true;
		}
	}
	vl = vlen[RK_RCPT_TO];
	for (i = 0, pos = 0; i <= RECORD_RCPT_MAX &&
	    json_element(v, vl, &pos, &el, &ell) == 1; i++)
		;
	/* More than the session ever writes: refused whole, never read in part. */
	if (i > RECORD_RCPT_MAX) {
		snprintf(err, errlen, "record: more than %d recipients", RECORD_RCPT_MAX);
		goto fail;
	}
	if ((r->rcpt = calloc((size_t)i + 1, sizeof(*r->rcpt))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (r->nrcpt = 0, pos = 0; r->nrcpt < i; r->nrcpt++) {
		json_element(v, vl, &pos, &el, &ell);
		if ((r->rcpt[r->nrcpt] = record_str_dup(el, ell)) == NULL) {
			snprintf(err, errlen, "record: bad rcpt_to[%d]", r->nrcpt);
			goto fail;
		}
	}
	return r;
fail:
	record_free(r);
	return NULL;
}

/* Free a parsed record. */
void
record_free(struct record *r)
{
	if (r == NULL)
		return;
	for (int i = 0; r->rcpt && i < r->nrcpt; i++)
		free(r->rcpt[i]);
	free(r->rcpt);
	free(r->mail_from);
	free(r);
}

/* The connection facts every event about the capture carries. */
void
record_conn(const struct record *r, struct event_conn *c)
{
	memset(c, 0, sizeof(*c));
	c->session = strtoull(r->session, NULL, 16);
	c->src_ip = r->src_ip;
	c->src_port = r->src_port;
	c->dst_ip = r->dst_ip;
	c->dst_port = r->dst_port;
	c->protocol = "smtp";
	c->client_name = r->client_name;
}

/* ------------------------------------------------------------------ the DATA decision */

/* The decision as the JSON object the session keeps in the reception record. */
char *
record_decision_json(const struct rules_decision *d)
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

/* The members of the "rules" decision that record_decision() reads. */
enum record_dk {
	DK_STAGE, DK_MATCHED, DK_RULE, DK_TAG, DK_REPLY_TEXT, DK_RELAY, DK_PUBLISH,
	DK_REPLY_CODE, DK_EVIDENCE, DK_COUNT
};

/*
 * Read the DATA decision made before the commit back from a reception record
 * ("rules", written by record_decision_json).  False when there is none.
 */
bool
record_decision(const char *record, size_t len, struct rules_decision *d)
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
	if (json_get(record, len, "rules", &v, &vl) == -1)
		return false;
	/* One walk over the decision's members; the first of a duplicate counts. */
	memset(dv, 0, sizeof(dv));
	memset(dl, 0, sizeof(dl));
	while ((rc = json_member(v, vl, &pos, &k, &kl, &x, &xl)) == 1) {
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
	    json_str(dv[DK_STAGE], dl[DK_STAGE], stage, sizeof(stage)) == -1 ||
	    strcmp(stage, "data") != 0 || dv[DK_MATCHED] == NULL ||
	    json_bool(dv[DK_MATCHED], dl[DK_MATCHED], &d->matched) == -1)
		return false;
	if (!d->matched)
		return true;
	/* Cut to their fields like the record's (record_str_cut), never blanked. */
	record_str_cut(dv[DK_RULE], dl[DK_RULE], d->rule, sizeof(d->rule));
	record_str_cut(dv[DK_TAG], dl[DK_TAG], d->tag, sizeof(d->tag));
	record_str_cut(dv[DK_REPLY_TEXT], dl[DK_REPLY_TEXT], d->reply_text,
	    sizeof(d->reply_text));
	if (dv[DK_RELAY])
		json_bool(dv[DK_RELAY], dl[DK_RELAY], &d->relay);
	if (dv[DK_PUBLISH])
		json_bool(dv[DK_PUBLISH], dl[DK_PUBLISH], &d->publish);
	if (dv[DK_REPLY_CODE] && json_int(dv[DK_REPLY_CODE], dl[DK_REPLY_CODE],
	    &n) == 0 && n >= 200 && n <= 599)
		d->reply_code = (int)n;
	if ((x = dv[DK_EVIDENCE]) != NULL && (d->evidence = malloc(dl[DK_EVIDENCE] + 1))) {
		memcpy(d->evidence, x, dl[DK_EVIDENCE]);
		d->evidence[dl[DK_EVIDENCE]] = '\0';
	}
	return true;
}

/* Copy s into dst keeping only printable ASCII (others as '?'), like Postfix. */
static void
record_sanitize(char *dst, size_t dstlen, const char *s)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < dstlen; i++)
		dst[i] = ((unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f) ? s[i] : '?';
	dst[i] = '\0';
}

/* The Received header, Postfix style (see record.h). */
size_t
record_received_header(char *out, size_t outlen, const struct persona *p,
    const struct record *rec, const char *hostname, const char *qid, const char *rcpt,
    time_t when)
{
	char helo[256], name[256], to[520], date[64], ip[80];
	const char *with, *fmt;
	struct persona_vars v;
	struct tm tm;
	size_t n;
	struct persona_kv kv[] = {
		{ "helo", helo }, { "name", name }, { "ip", ip }, { "with", NULL },
		{ "rcpt", to }, { "date", date },
	};

	fmt = rcpt != NULL ? p->received_fmt : p->received_multi_fmt;
	if (fmt == NULL) {
		if (outlen > 0)
			out[0] = '\0';
		return 0;
	}
	/*
	 * Postfix's smtpd: "from HELO (NAME [ADDR])", NAME the verified client
	 * name or "unknown", and NAME again when the client sent no HELO.
	 */
	record_sanitize(name, sizeof(name), dns_valid_hostname(rec->client_name) ?
	    rec->client_name : "unknown");
	record_sanitize(helo, sizeof(helo), rec->helo[0] ? rec->helo : name);
	record_sanitize(to, sizeof(to), rcpt != NULL ? rcpt : "");
	if (strchr(rec->src_ip, ':') != NULL)
		snprintf(ip, sizeof(ip), "IPv6:%s", rec->src_ip);
	else
		snprintf(ip, sizeof(ip), "%s", rec->src_ip);
	/* Postfix's mail_date(): "%a, %e %b %Y %H:%M:%S", a space-padded day. */
	gmtime_r(&when, &tm);
	if (strftime(date, sizeof(date), "%a, %e %b %Y %H:%M:%S +0000 (UTC)", &tm) == 0)
		date[0] = '\0';
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
	kv[3].value = with;
	memset(&v, 0, sizeof(v));
	v.host = hostname;
	v.qid = qid;
	v.kv = kv;
	v.nkv = sizeof(kv) / sizeof(kv[0]);
	n = persona_format(out, outlen, fmt, &v);
	if (n + 1 >= outlen)
		return 0;	/* (maybe) cut */
	return n;
}

/* The record's time ("2025-11-27T04:35:30.123456Z", log_timestamp's) as a time_t. */
int
record_when(const struct record *rec, time_t *when)
{
	struct tm tm;
	const char *e;

	memset(&tm, 0, sizeof(tm));
	if ((e = strptime(rec->time, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
		return -1;
	if (*e == '.')
		for (e++; *e >= '0' && *e <= '9'; e++)
			;
	if (strcmp(e, "Z") != 0)
		return -1;
	*when = timegm(&tm);
	return 0;
}
