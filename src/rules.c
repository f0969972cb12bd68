/*
 * Probe rules, evaluation (see rules.h).  rules_eval() keeps all its state on
 * the caller's stack, so any number of threads may evaluate one set at once.
 *
 * Bounds on hostile mail: MIME decoding is capped by mime.c; the address
 * search (addr_search.c) looks at the decoded text only; every regex runs
 * with PCRE2's match, depth and heap limits plus an automatic-callout budget
 * that is global to the match (PCRE2's match limit is reset at each start
 * position, so alone it does not bound a long subject).  A regex that runs out
 * of budget does not match.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr_search.h"
#include "log.h"
#include "rules_int.h"
#include "utf8.h"

/* own_collect() adds every own address the facts may carry, and dst_ip. */
_Static_assert(ADDR_SEARCH_MAX >= RULES_OWN_MAX + 1, "addr_search set too small");

/* One piece of evidence. */
struct ev_item {
	const char	*matcher;
	char		 where[MIME_NAME_MAX + 16];
	char		 what[RULES_WHAT_MAX + 1];
	size_t		 whatlen;
};

/* Evaluation state, on rules_eval()'s stack. */
struct ectx {
	const struct rules_facts *f;
	bool			 mime_tried;
	struct mime_msg		 mm;
	char			*body_lc;
	bool			 body_lc_tried;
	struct addr_search	 as;		/* mentions_own_address */
	pcre2_match_context	*mctx;
	pcre2_match_data	*md;
	unsigned long		 re_left;	/* this eval */
	unsigned long		 re_match_left;	/* this match */
	int			 nev;
	struct ev_item		 ev[RULES_EV_MAX];	/* last: not cleared */
};

static void	 what_set(char *, size_t *, const void *, size_t);
static void	 ev_add(struct ectx *, const char *, const char *, const char *,
		    const void *, size_t);
static int	 re_callout_cb(pcre2_callout_block *, void *);
static bool	 str_test(struct ectx *, const struct strtest *, const char *,
		    size_t, const char *, char *, size_t *);
static const struct mime_msg *ectx_mime(struct ectx *);
static char	*lc_dup(const char *, size_t);
static bool	 m_string(struct ectx *, const struct matcher *);
static bool	 m_numeric(struct ectx *, const struct matcher *);
static bool	 m_client(struct ectx *, const struct matcher *);
static void	 own_collect(struct ectx *);
static bool	 m_mentions(struct ectx *, const struct matcher *);
static bool	 matcher_eval(struct ectx *, const struct matcher *);

/* mentions_own_address: true searches these, in this order. */
static const struct place place_default[] = {
	{ .kind = PL_SUBJECT }, { .kind = PL_HEADERS }, { .kind = PL_BODY },
};


/* Copy at most RULES_WHAT_MAX bytes, not cutting a UTF-8 sequence in two. */
static void
what_set(char *dst, size_t *dlen, const void *src, size_t n)
{
	const unsigned char *s = src;

	n = utf8_prefix(s, n, RULES_WHAT_MAX);
	memcpy(dst, s, n);
	dst[n] = '\0';
	*dlen = n;
}

/* Record one piece of evidence for the condition being evaluated. */
static void
ev_add(struct ectx *e, const char *matcher, const char *where,
    const char *where_arg, const void *what, size_t whatlen)
{
	struct ev_item *it;
	size_t n, a;

	if (e->nev >= RULES_EV_MAX)
		return;
	it = &e->ev[e->nev++];
	it->matcher = matcher;
	/* where[:where_arg], cut to fit (no snprintf: this runs per condition). */
	n = strnlen(where, sizeof(it->where) - 1);
	memcpy(it->where, where, n);
	if (where_arg != NULL && n < sizeof(it->where) - 1) {
		it->where[n++] = ':';
		a = strnlen(where_arg, sizeof(it->where) - 1 - n);
		memcpy(it->where + n, where_arg, a);
		n += a;
	}
	it->where[n] = '\0';
	what_set(it->what, &it->whatlen, what, whatlen);
}

/* PCRE2 automatic callout: spend the budget, abort the match when it is gone. */
static int
re_callout_cb(pcre2_callout_block *cb, void *arg)
{
	struct ectx *e = arg;

	(void)cb;
	if (e->re_left == 0 || e->re_match_left == 0)
		return PCRE2_ERROR_MATCHLIMIT;
	e->re_left--;
	e->re_match_left--;
	return 0;
}

/*
 * Run the string test t (negation not applied) on s[0..n); s NULL = absent.
 * lc is s lower-cased (or NULL) for fast case-insensitive search.  On a
 * match the matched text goes to what.
 */
static bool
str_test(struct ectx *e, const struct strtest *t, const char *s, size_t n,
    const char *lc, char *what, size_t *whatlen)
{
	PCRE2_SIZE *ov;
	const char *hit;
	char *tmp;
	long off;
	int i, rc;

	*whatlen = 0;
	what[0] = '\0';
	if (s == NULL)
		return false;
	switch (t->op) {
	case SOP_EXISTS:
		what_set(what, whatlen, s, n);
		return true;
	case SOP_EQUALS:
		for (i = 0; i < t->nvals; i++) {
			if (t->lens[i] != n)
				continue;
			if (t->nocase ? strncasecmp(s, t->vals[i], n) == 0 :
			    memcmp(s, t->vals[i], n) == 0) {
				what_set(what, whatlen, s, n);
				return true;
			}
		}
		return false;
	case SOP_CONTAINS:
		/* Case-insensitive: search a lower-cased copy (memmem is linear). */
		tmp = NULL;
		if (t->nocase && lc == NULL) {
			if ((tmp = lc_dup(s, n)) == NULL)
				return false;
			lc = tmp;
		}
		for (i = 0, off = -1; i < t->nvals && off < 0; i++) {
			hit = memmem(t->nocase ? lc : s, n, t->vals[i],
			    t->lens[i]);
			if (hit != NULL) {
				off = hit - (t->nocase ? lc : s);
				what_set(what, whatlen, s + off, t->lens[i]);
			}
		}
		free(tmp);
		return off >= 0;
	case SOP_REGEX:
		if (e->md == NULL || e->mctx == NULL)
			return false;
		e->re_match_left = RE_CALLOUTS_MATCH;
		rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, 0, 0, e->md, e->mctx);
		if (rc < 0)
			return false;	/* no match, or a limit was reached */
		ov = pcre2_get_ovector_pointer(e->md);
		if (ov[1] >= ov[0] && ov[1] <= n)
			what_set(what, whatlen, s + ov[0], ov[1] - ov[0]);
		return true;
	}
	return false;
}

/* The decoded message, parsed on first use (empty when there is none). */
static const struct mime_msg *
ectx_mime(struct ectx *e)
{
	if (!e->mime_tried) {
		e->mime_tried = true;
		if (e->f->msg != NULL && mime_parse(e->f->msg, e->f->msglen,
		    &e->mm) == -1)
			memset(&e->mm, 0, sizeof(e->mm));
	}
	return &e->mm;
}

/* Lower-case an ASCII copy of n bytes; NULL when out of memory. */
static char *
lc_dup(const char *s, size_t n)
{
	char *d;
	size_t i;

	if ((d = malloc(n + 1)) == NULL)
		return NULL;
	for (i = 0; i < n; i++)
		d[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
	d[n] = '\0';
	return d;
}

/* A string matcher: every test must hold (header and rcpt: on any value). */
static bool
m_string(struct ectx *e, const struct matcher *m)
{
	const struct rules_facts *f = e->f;
	const struct mime_msg *mm;
	const struct strtest *t;
	const char *name = rules_mkind_names[m->kind], *s = NULL, *hname = NULL;
	char what[RULES_WHAT_MAX + 1];
	size_t whatlen = 0, n = 0;
	bool ok;
	int i, j;

	for (i = 0; i < m->nst; i++) {
		t = &m->st[i];
		ok = false;
		switch (m->kind) {
		case MK_HEADER:
			mm = ectx_mime(e);
			for (j = 0; j < mm->nhdrs && !ok; j++) {
				if (strcasecmp(mm->hdrs[j].name, t->hname) != 0)
					continue;
				ok = str_test(e, t, mm->hdrs[j].value,
				    mm->hdrs[j].valuelen, NULL, what, &whatlen);
				hname = mm->hdrs[j].name;
			}
			if (!ok)
				hname = t->hname;
			if (ok != t->neg)
				ev_add(e, name, "header", hname, t->neg ?
				    "not matched" : what, t->neg ? 11 : whatlen);
			break;
		case MK_RCPT:
			for (j = 0; j < f->nrcpt && f->rcpt != NULL && !ok; j++)
				if (f->rcpt[j] != NULL)
					ok = str_test(e, t, f->rcpt[j],
					    strlen(f->rcpt[j]), NULL, what,
					    &whatlen);
			if (ok != t->neg)
				ev_add(e, name, name, NULL, t->neg ?
				    "not matched" : what, t->neg ? 11 : whatlen);
			break;
		case MK_SUBJECT: {
			const struct mime_header *h;

			mm = ectx_mime(e);
			if ((h = mime_header_get(mm, "Subject")) != NULL)
				ok = str_test(e, t, h->value, h->valuelen, NULL,
				    what, &whatlen);
			if (ok != t->neg)
				ev_add(e, name, "header", "Subject", t->neg ?
				    "not matched" : what, t->neg ? 11 : whatlen);
			break;
		}
		case MK_BODY:
			mm = ectx_mime(e);
			if (mm->body != NULL && t->nocase && t->op ==
			    SOP_CONTAINS && !e->body_lc_tried) {
				e->body_lc_tried = true;
				e->body_lc = lc_dup(mm->body, mm->bodylen);
			}
			ok = str_test(e, t, mm->body, mm->bodylen,
			    t->nocase ? e->body_lc : NULL, what, &whatlen);
			if (ok != t->neg)
				ev_add(e, name, name, NULL, t->neg ?
				    "not matched" : what, t->neg ? 11 : whatlen);
			break;
		default:
			s = m->kind == MK_MAIL_FROM ? f->mail_from :
			    m->kind == MK_HELO ? f->helo :
			    m->kind == MK_AUTH_USER ? f->auth_user : f->auth_pass;
			n = s != NULL ? strlen(s) : 0;
			ok = str_test(e, t, s, n, NULL, what, &whatlen);
			if (ok != t->neg)
				ev_add(e, name, name, NULL, t->neg ?
				    "not matched" : what, t->neg ? 11 : whatlen);
			break;
		}
		if (ok == t->neg)
			return false;
	}
	return true;
}

/* rcpt_count or size against every comparison given. */
static bool
m_numeric(struct ectx *e, const struct matcher *m)
{
	uint64_t v, x;
	char buf[32];
	size_t len;

	if (m->kind == MK_RCPT_COUNT)
		v = e->f->nrcpt > 0 ? (uint64_t)e->f->nrcpt : 0;
	else
		v = e->f->size != 0 ? e->f->size : e->f->msglen;
	if (((m->nhas & (1u << NOP_LT)) && !(v < m->nv[NOP_LT])) ||
	    ((m->nhas & (1u << NOP_LE)) && !(v <= m->nv[NOP_LE])) ||
	    ((m->nhas & (1u << NOP_GT)) && !(v > m->nv[NOP_GT])) ||
	    ((m->nhas & (1u << NOP_GE)) && !(v >= m->nv[NOP_GE])) ||
	    ((m->nhas & (1u << NOP_EQ)) && !(v == m->nv[NOP_EQ])))
		return false;
	/* v in decimal, written backwards from the end of buf. */
	len = 0;
	x = v;
	do {
		buf[sizeof(buf) - 1 - len++] = (char)('0' + x % 10);
		x /= 10;
	} while (x != 0);
	ev_add(e, rules_mkind_names[m->kind], rules_mkind_names[m->kind], NULL,
	    buf + sizeof(buf) - len, len);
	return true;
}

/* Whether the client address is in any of the CIDRs. */
static bool
m_client(struct ectx *e, const struct matcher *m)
{
	struct addr_bin a;
	int i, full, rest;

	if (addr_search_parse(e->f->src_ip, &a) == -1)
		return false;
	for (i = 0; i < m->ncidrs; i++) {
		if (m->cidrs[i].af != a.af)
			continue;
		full = m->cidrs[i].bits / 8;
		rest = m->cidrs[i].bits % 8;
		if (memcmp(m->cidrs[i].a, a.a, (size_t)full) != 0)
			continue;
		if (rest != 0 && ((m->cidrs[i].a[full] ^ a.a[full]) &
		    (0xff << (8 - rest)) & 0xff) != 0)
			continue;
		ev_add(e, "client", "client", NULL, e->f->src_ip,
		    strlen(e->f->src_ip));
		return true;
	}
	return false;
}

/* The addresses mentions_own_address looks for: configured ones + dst_ip. */
static void
own_collect(struct ectx *e)
{
	int i;

	for (i = 0; i < e->f->nown && e->f->own_addrs != NULL &&
	    i < RULES_OWN_MAX; i++)
		addr_search_add(&e->as, e->f->own_addrs[i]);
	addr_search_add(&e->as, e->f->dst_ip);
}

/*
 * Whether an own address is mentioned in the places of m (by default the
 * Subject, every header field but the trace ones, the body), in order.
 */
static bool
m_mentions(struct ectx *e, const struct matcher *m)
{
	const struct mime_msg *mm = ectx_mime(e);
	const struct mime_header *hd;
	const struct place *pl = m->places != NULL ? m->places : place_default;
	int npl = m->places != NULL ? m->nplaces :
	    (int)(sizeof(place_default) / sizeof(place_default[0]));
	struct addr_hit h;
	const struct mime_header *subj = NULL;	/* searched already */
	int i, p;

	if (e->as.nown == 0)
		own_collect(e);
	memset(&h, 0, sizeof(h));
	for (p = 0; p < npl && e->as.nown > 0; p++) {
		switch (pl[p].kind) {
		case PL_SUBJECT:
			hd = mime_header_get(mm, "Subject");
			if (hd != NULL && addr_search_text(&e->as, hd->value,
			    hd->valuelen, true, &h))
				goto found;
			subj = hd;
			break;
		case PL_HEADER:
		case PL_HEADERS:
			for (i = 0; i < mm->nhdrs; i++) {
				hd = &mm->hdrs[i];
				if (pl[p].kind == PL_HEADER ?
				    !addr_search_name_match(pl[p].name, pl[p].namelen,
				    pl[p].prefix, hd->name) :
				    addr_search_trace_field(hd->name) || hd == subj)
					continue;
				if (addr_search_text(&e->as, hd->value,
				    hd->valuelen, true, &h))
					goto found;
			}
			break;
		case PL_BODY:
			if (mm->body != NULL && addr_search_lines(&e->as, mm->body,
			    mm->bodylen, true, &h)) {
				hd = NULL;
				goto found;
			}
			break;
		}
	}
	if (!m->b)
		ev_add(e, "mentions_own_address", "message", NULL,
		    "no own address", 14);
	return !m->b;
found:
	if (m->b)
		ev_add(e, "mentions_own_address", hd != NULL ? "header" : "body",
		    hd != NULL ? hd->name : NULL, h.what, h.whatlen);
	return m->b;
}

/* Evaluate one matcher. */
static bool
matcher_eval(struct ectx *e, const struct matcher *m)
{
	switch (m->kind) {
	case MK_RCPT_COUNT:
	case MK_SIZE:
		return m_numeric(e, m);
	case MK_CLIENT:
		return m_client(e, m);
	case MK_TLS:
		if (e->f->tls != m->b)
			return false;
		ev_add(e, "tls", "tls", NULL, m->b ? "true" : "false",
		    m->b ? 4 : 5);
		return true;
	case MK_MENTIONS:
		return m_mentions(e, m);
	default:
		return m_string(e, m);
	}
}

/* Evaluate the rules for f->stage; first match wins (see rules.h). */
int
rules_eval(const struct rules *rs, const struct rules_facts *f,
    struct rules_decision *out)
{
	struct ectx e;
	struct jbuf jb;
	const struct rule *r;
	int i, j, k, rc = 0;
	bool ok;

	memset(out, 0, sizeof(*out));
	out->publish = true;
	if (rs == NULL || f == NULL)
		return 0;
	/* The evidence items (most of e) are written before they are read. */
	memset(&e, 0, offsetof(struct ectx, ev));
	e.f = f;
	e.re_left = RE_CALLOUTS_EVAL;
	if ((e.mctx = pcre2_match_context_create(NULL)) != NULL) {
		pcre2_set_match_limit(e.mctx, RE_MATCH_LIMIT);
		pcre2_set_depth_limit(e.mctx, RE_DEPTH_LIMIT);
		pcre2_set_heap_limit(e.mctx, RE_HEAP_LIMIT);
		pcre2_set_callout(e.mctx, re_callout_cb, &e);
	}
	e.md = pcre2_match_data_create(1, NULL);
	if (e.mctx == NULL || e.md == NULL) {
		pcre2_match_data_free(e.md);
		pcre2_match_context_free(e.mctx);
		return -1;
	}
	for (i = 0; i < rs->n && !out->matched; i++) {
		r = &rs->r[i];
		if (!r->enabled || r->stage != f->stage)
			continue;
		for (j = 0; j < r->nc && !out->matched; j++) {
			e.nev = 0;
			ok = true;
			for (k = 0; k < r->c[j].nm && ok; k++)
				ok = matcher_eval(&e, &r->c[j].m[k]);
			if (!ok)
				continue;
			out->matched = true;
			snprintf(out->rule, sizeof(out->rule), "%s", r->name);
			out->relay = r->relay;
			out->publish = r->publish;
			out->reply_code = r->reply_code;
			snprintf(out->reply_text, sizeof(out->reply_text), "%s",
			    r->reply_text);
			snprintf(out->tag, sizeof(out->tag), "%s", r->tag);
		}
	}
	if (out->matched) {
		jb_init(&jb);
		jb_arr_open(&jb);
		for (k = 0; k < e.nev; k++) {
			jb_obj_open(&jb);
			jb_kcstr(&jb, "matcher", e.ev[k].matcher);
			jb_kcstr(&jb, "where", e.ev[k].where);
			jb_kstr(&jb, "what", e.ev[k].what, e.ev[k].whatlen);
			jb_obj_close(&jb);
		}
		jb_arr_close(&jb);
		if (jb.oom || jb.buf == NULL) {
			jb_free(&jb);
			rc = -1;
		} else
			out->evidence = jb.buf;	/* ownership to the caller */
	}
	pcre2_match_data_free(e.md);
	pcre2_match_context_free(e.mctx);
	free(e.body_lc);
	mime_msg_free(&e.mm);
	return rc;
}

/* Free the evidence of a decision and reset it. */
void
rules_decision_clear(struct rules_decision *d)
{
	if (d == NULL)
		return;
	free(d->evidence);
	memset(d, 0, sizeof(*d));
	d->publish = true;
}
