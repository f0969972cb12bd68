/*
 * Mail analysis: GMime 3 parses the MIME tree (RFC 2231/2047, transfer
 * encodings, charsets), gumbo tokenizes HTML for href/src, libmagic types
 * the decoded bytes, OpenSSL hashes them, libfuzzy (ssdeep) fingerprints
 * attachments and the normalised text.  What is hand-written here is only
 * what no library does: the scans of decoded text for URLs, addresses and
 * an archive password, and the caps that keep a hostile mail bounded.
 * This file holds the context, the run and the document builder; the MIME
 * walk and the attachments are analysis_mime.c, the indicators in text
 * analysis_scan.c (analysis_int.h is the inside the three share).
 *
 * Bounds, and why each is enough:
 *  - raw_max bytes of the mail are given to GMime (its parse is linear in
 *    them; the copy it makes is the largest allocation).
 *  - GMime recurses once per multipart / message entity and checks every
 *    line against each open boundary: the raw bytes are cut before the
 *    (containers_max+1)th multipart or message type (comments and folding
 *    whitespace before the '/' included, as GMime takes them), so a deeply
 *    nested bomb costs at most containers_max frames and boundary checks;
 *    and before the (headers_max+1)th header-like line (an object each).
 *  - the walk stops at depth_max, leaves_max leaves, decoded_max decoded
 *    bytes (checked against the encoded size before decoding: decoding
 *    never grows base64, quoted-printable or uuencode; a text part's
 *    charset conversion may grow it, so what is left is never negative)
 *    and cpu_ms_max of thread CPU time (checked between parts, before each
 *    HTML part and uuencoded file, every 64 KB of a text scan and every
 *    4,096 of gumbo's allocations).
 *  - gumbo gets at most html_max bytes and html_tags_max tags of one part
 *    (its tree free is recursive: the tag cap bounds that depth); the tree
 *    is walked with an explicit stack.  Its memory is counted through its
 *    allocator and capped at GUMBO_MEM_FACTOR (16) x html_max: a 700 KB
 *    table-heavy newsletter peaks at 2.5 MB, while re-cloned formatting
 *    elements (<b title="970 KB"> then "<p>x" x 4990) took 4.4 GB and 8 s
 *    before; a parse over the cap is abandoned (analysis_scan.c) and the
 *    part scanned as text.
 *  - a Content-* field is cut at 64 parameters, all of them at 20,000,
 *    address fields at 20,000 addresses (analysis_raw_prepare()).
 *  - each list of indicators keeps items_max distinct values (a hashed set).
 *  - the document stays under DOC_MAX (1 MiB): strings cut, each list
 *    within its byte budget (analysis_int.h), the rest counted.
 * GLib aborts on allocation failure; the bounds above keep the largest
 * allocation to a small multiple of raw_max.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <fuzzy.h>
#include <gmime/gmime.h>
#include <magic.h>
#include <openssl/evp.h>

#include "analysis.h"
#include "analysis_int.h"
#include "campaign.h"
#include "jbuf.h"
#include "log.h"
#include "util.h"

static pthread_once_t	gmime_once = PTHREAD_ONCE_INIT;

static void	gmime_init_once(void);
static void	addrs(struct ctx *, struct strset *, InternetAddressList *, int);
static void	header_addrs(struct ctx *, struct strset *, GMimeObject *,
		    const char *);
static void	received(struct ctx *, GMimeMessage *, struct jbuf *);
static void	warn_cb(gint64, GMimeParserWarning, const gchar *, gpointer);

void
analysis_limits_default(struct analysis_limits *l)
{
	memset(l, 0, sizeof(*l));
	l->raw_max = 32u * 1024 * 1024;
	l->containers_max = 256;
	l->depth_max = 32;
	l->leaves_max = 1000;
	l->decoded_max = 64u * 1024 * 1024;
	l->blob_max = 16u * 1024 * 1024;
	l->html_max = 1024 * 1024;
	/*
	 * gumbo is quadratic in the nesting depth: 5,000 nested tags cost
	 * ~50 ms, 10,000 ~200 ms, 60,000 5 s (test_analysis.test_html_nesting).
	 * 5,000 tags is several times a 30 KB HTML spam (~700).
	 */
	l->html_tags_max = 5000;
	l->items_max = 500;
	l->text_max = 256 * 1024;
	l->cpu_ms_max = 2000;
	/* ~10 fields a part times the 1,000 leaves, twice: ~13 MB in GMime */
	l->headers_max = 20000;
}

static void
gmime_init_once(void)
{
	g_mime_init();
}

struct analysis *
analysis_new(const struct analysis_limits *lim, char *err, size_t errlen)
{
	/*
	 * What spam says about an archive's password (the spamtrap-system
	 * backend's patterns, widened): a keyword, a separator, a token.
	 */
	static const char pw_pat[] =
	    "(?i)\\b(?:password|passwort|passwd|archive pass|zip pass|pass ?code|"
	    "pwd|pw)\\b\\s*(?:is\\s*)?[:=\\-]?\\s*[\"'(\\[]?"
	    "([A-Za-z0-9!#$%&*+.@_\\-]{3,40})";
	struct analysis *a;
	int ec;
	PCRE2_SIZE eo;

	pthread_once(&gmime_once, gmime_init_once);
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		snprintf(err, errlen, "analysis: out of memory");
		return NULL;
	}
	if (lim != NULL)
		a->lim = *lim;
	else
		analysis_limits_default(&a->lim);
	if ((a->magic = magic_open(MAGIC_MIME_TYPE | MAGIC_ERROR |
	    MAGIC_NO_CHECK_COMPRESS | MAGIC_NO_CHECK_TAR)) == NULL ||
	    magic_load(a->magic, NULL) == -1) {
		snprintf(err, errlen, "analysis: libmagic: %s", a->magic ?
		    magic_error(a->magic) : strerror(errno));
		analysis_free(a);
		return NULL;
	}
	/* libmagic's own caps on hostile files (recursion, name lookups). */
	{
		size_t v = 32;

		(void)magic_setparam(a->magic, MAGIC_PARAM_INDIR_MAX, &v);
		v = 50;
		(void)magic_setparam(a->magic, MAGIC_PARAM_NAME_MAX, &v);
	}
	if ((a->pw_re = pcre2_compile((PCRE2_SPTR)pw_pat, PCRE2_ZERO_TERMINATED,
	    0, &ec, &eo, NULL)) == NULL ||
	    (a->pw_md = pcre2_match_data_create_from_pattern(a->pw_re,
	    NULL)) == NULL || (a->pw_mctx = pcre2_match_context_create(NULL)) ==
	    NULL) {
		snprintf(err, errlen, "analysis: password pattern");
		analysis_free(a);
		return NULL;
	}
	pcre2_set_match_limit(a->pw_mctx, 1000000);
	a->popts = g_mime_parser_options_new();
	return a;
}

void
analysis_free(struct analysis *a)
{
	if (a == NULL)
		return;
	if (a->magic)
		magic_close(a->magic);
	pcre2_match_context_free(a->pw_mctx);
	pcre2_match_data_free(a->pw_md);
	pcre2_code_free(a->pw_re);
	if (a->popts)
		g_mime_parser_options_free(a->popts);
	free(a);
}

void
analysis_result_free(struct analysis_result *r)
{
	size_t i;

	free(r->json);
	for (i = 0; i < r->nblobs; i++)
		free(r->blobs[i].data);
	free(r->blobs);
	memset(r, 0, sizeof(*r));
}

/* Whether the mail's CPU budget is spent (then the cap is recorded). */
bool
analysis_cpu_over(struct ctx *c)
{
	struct timespec now;
	long long ms;

	if (c->limits & ANALYSIS_LIM_CPU)
		return true;
	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now) == -1)
		return false;
	ms = (now.tv_sec - c->cpu0.tv_sec) * 1000LL +
	    (now.tv_nsec - c->cpu0.tv_nsec) / 1000000;
	if (ms < (long long)c->a->lim.cpu_ms_max)
		return false;
	c->limits |= ANALYSIS_LIM_CPU;
	return true;
}

/*
 * The CPU cap inside a scan: looked at when position i passes *next, every
 * CPU_STEP bytes (a clock_gettime of the thread's CPU clock is a system
 * call: ~0.3 us per 64 KB scanned costs nothing).
 */
bool
analysis_cpu_at(struct ctx *c, size_t i, size_t *next)
{
	if (i < *next)
		return false;
	*next = i + CPU_STEP;
	return analysis_cpu_over(c);
}

/* Where the list item about to be written starts. */
void
analysis_jb_mark(const struct jbuf *jb, struct jb_mark *m)
{
	m->len = jb->len;
	m->first = jb->first[jb->depth < 16 ? jb->depth : 15];
}

/*
 * Whether the item written since m keeps its list (begun at start) within
 * budget bytes; if not it is taken back, and it and the left-1 after it are
 * counted as omitted under name.
 */
bool
analysis_jb_fits(struct ctx *c, struct jbuf *jb, const struct jb_mark *m,
    size_t start, size_t budget, const char *name, size_t left)
{
	size_t i;

	if (jb->len - start <= budget)
		return true;
	jb->len = m->len;
	jb->first[jb->depth < 16 ? jb->depth : 15] = m->first;
	c->limits |= ANALYSIS_LIM_DOCUMENT;
	for (i = 0; i < c->nomitted; i++)
		if (strcmp(c->omitted[i].name, name) == 0)
			break;
	if (i == c->nomitted) {
		if (i == DOC_OMIT_MAX)
			return false;
		c->omitted[c->nomitted++].name = name;
		c->omitted[i].n = 0;
	}
	c->omitted[i].n += left;
	return false;
}

/* key: s cut at max bytes (at a character's start), counted if cut. */
static void
doc_str(struct ctx *c, struct jbuf *jb, const char *key, const char *s,
    size_t max)
{
	size_t l;

	if (s == NULL) {
		jb_kcstr(jb, key, NULL);
		return;
	}
	if ((l = strlen(s)) > max) {
		l = max;
		while (l > 0 && ((unsigned char)s[l] & 0xc0) == 0x80)
			l--;
		c->truncated++;
		c->limits |= ANALYSIS_LIM_DOCUMENT;
	}
	jb_kstr(jb, key, s, l);
}

/* Mailbox addresses of a list (groups' members too), lowercased domain. */
static void
addrs(struct ctx *c, struct strset *s, InternetAddressList *l, int depth)
{
	int i, n;

	if (l == NULL || depth > 2)
		return;
	n = internet_address_list_length(l);
	for (i = 0; i < n; i++) {
		InternetAddress *ia = internet_address_list_get_address(l, i);

		if (INTERNET_ADDRESS_IS_MAILBOX(ia)) {
			const char *ad = internet_address_mailbox_get_addr(
			    INTERNET_ADDRESS_MAILBOX(ia));

			if (ad != NULL && *ad)
				analysis_set_add(c, s, ad, strlen(ad));
		} else if (INTERNET_ADDRESS_IS_GROUP(ia))
			addrs(c, s, internet_address_group_get_members(
			    INTERNET_ADDRESS_GROUP(ia)), depth + 1);
	}
}

static void
header_addrs(struct ctx *c, struct strset *s, GMimeObject *obj,
    const char *name)
{
	const char *v = g_mime_object_get_header(obj, name);
	InternetAddressList *l;

	if (v == NULL)
		return;
	if ((l = internet_address_list_parse(c->a->popts, v)) != NULL) {
		addrs(c, s, l, 0);
		g_object_unref(l);
	}
}

/*
 * The Received: chain, newest first: each hop's IP literals (in brackets,
 * parentheses or after helo=), which are also indicators.
 */
static void
received(struct ctx *c, GMimeMessage *m, struct jbuf *jb)
{
	GMimeHeaderList *hl = g_mime_object_get_header_list(GMIME_OBJECT(m));
	int i, n = hl ? g_mime_header_list_get_count(hl) : 0, hops = 0;
	struct jb_mark mark;
	size_t start;

	jb_key(jb, "received");
	start = jb->len;
	jb_arr_open(jb);
	for (i = 0; i < n && hops < RECEIVED_MAX; i++) {
		GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
		const char *v, *p, *e;
		struct strset hop = { 0 };

		if (g_ascii_strcasecmp(g_mime_header_get_name(h), "Received") != 0)
			continue;
		hops++;
		if ((v = g_mime_header_get_raw_value(h)) == NULL)
			continue;
		for (p = v; *p; p = e) {
			char ip[INET6_ADDRSTRLEN];

			while (*p && strchr(" \t\r\n()[]<>;,=\"", *p))
				p++;
			for (e = p; *e && !strchr(" \t\r\n()[]<>;,=\"", *e); e++)
				;
			if (e > p && analysis_ip_literal(p, (size_t)(e - p), ip, sizeof(ip))) {
				analysis_set_add(c, &hop, ip, strlen(ip));
				analysis_set_add(c, &c->ips, ip, strlen(ip));
			}
		}
		analysis_jb_mark(jb, &mark);
		jb_obj_open(jb);
		analysis_set_json(c, jb, "ip", "fosr.received.ip", &hop,
		    DOC_RECEIVED_BUDGET);
		jb_obj_close(jb);
		analysis_set_free(&hop);
		/* the hops after this one are not counted: a cut is named */
		if (!analysis_jb_fits(c, jb, &mark, start, DOC_RECEIVED_BUDGET,
		    "fosr.received", 1))
			break;
	}
	jb_arr_close(jb);
}

static void
warn_cb(gint64 off, GMimeParserWarning code, const gchar *item, gpointer arg)
{
	struct ctx *c = arg;

	c->warnings++;
}

static const char *const limit_names[] = { "raw", "containers", "depth",
    "leaves", "decoded", "blob", "html", "items", "text", "cpu", "headers",
    "document" };

int
analysis_fields(struct analysis *a, const unsigned char *eml, size_t len,
    const char *sha256, struct campaigns *cp, struct jbuf *jb,
    struct analysis_result *res)
{
	struct ctx c;
	GMimeStream *st;
	GMimeParser *pr;
	GMimeMessage *m = NULL;
	GMimeObject *mo;
	struct campaign_match cm;
	struct jb_mark mark;
	size_t start;
	char hex[65], *fp = NULL;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	size_t i, plen;
	const char *v;

	memset(res, 0, sizeof(*res));
	memset(&c, 0, sizeof(c));
	c.a = a;
	c.res = res;
	(void)clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c.cpu0);
	if (sha256 == NULL || strlen(sha256) != 64) {
		if (EVP_Digest(eml, len, md, &mdlen, EVP_sha256(), NULL) == 1)
			util_hex(md, mdlen, hex);
		else
			hex[0] = '\0';
		sha256 = hex;
	}
	plen = len;
	if (plen > a->lim.raw_max) {
		plen = a->lim.raw_max;
		c.limits |= ANALYSIS_LIM_RAW;
	}
	plen = analysis_raw_cut(eml, plen, &a->lim, &c.limits);
	g_mime_parser_options_set_warning_callback(a->popts, warn_cb, &c);
	st = g_mime_stream_mem_new_with_byte_array(analysis_raw_prepare(eml, plen,
	    &c.limits));
	pr = g_mime_parser_new_with_stream(st);
	g_mime_parser_set_format(pr, GMIME_FORMAT_MESSAGE);
	g_mime_parser_set_respect_content_length(pr, FALSE);
	m = g_mime_parser_construct_message(pr, a->popts);
	g_object_unref(pr);
	g_object_unref(st);

	mo = m ? GMIME_OBJECT(m) : NULL;
	jb_key(jb, "email");
	jb_obj_open(jb);
	if (m != NULL) {
		GDateTime *dt;

		doc_str(&c, jb, "subject", g_mime_message_get_subject(m),
		    DOC_STR_MAX);
		doc_str(&c, jb, "message_id", g_mime_message_get_message_id(m),
		    DOC_STR_MAX);
		if ((dt = g_mime_message_get_date(m)) != NULL) {
			GDateTime *u = g_date_time_to_utc(dt);
			char *iso = u ? g_date_time_format(u,
			    "%Y-%m-%dT%H:%M:%SZ") : NULL;

			jb_kcstr(jb, "origination_timestamp", iso);
			g_free(iso);
			if (u)
				g_date_time_unref(u);
		}
		addrs(&c, &c.from, g_mime_message_get_from(m), 0);
		addrs(&c, &c.reply_to, g_mime_message_get_reply_to(m), 0);
		addrs(&c, &c.to, g_mime_message_get_to(m), 0);
		addrs(&c, &c.cc, g_mime_message_get_cc(m), 0);
		header_addrs(&c, &c.return_path, mo, "Return-Path");
		jb_key(jb, "from");
		jb_obj_open(jb);
		analysis_set_json(&c, jb, "address", "email.from.address",
		    &c.from, DOC_ADDRS_BUDGET);
		jb_obj_close(jb);
		jb_key(jb, "reply_to");
		jb_obj_open(jb);
		analysis_set_json(&c, jb, "address", "email.reply_to.address",
		    &c.reply_to, DOC_ADDRS_BUDGET);
		jb_obj_close(jb);
		jb_key(jb, "to");
		jb_obj_open(jb);
		analysis_set_json(&c, jb, "address", "email.to.address", &c.to,
		    DOC_ADDRS_BUDGET);
		jb_obj_close(jb);
		if (c.cc.n) {
			jb_key(jb, "cc");
			jb_obj_open(jb);
			analysis_set_json(&c, jb, "address", "email.cc.address",
			    &c.cc, DOC_ADDRS_BUDGET);
			jb_obj_close(jb);
		}
		if ((v = g_mime_object_get_header(mo, "X-Mailer")) != NULL)
			doc_str(&c, jb, "x_mailer", v, DOC_STR_MAX);
		if (g_mime_message_get_mime_part(m) != NULL) {
			GMimeContentType *ct = g_mime_object_get_content_type(
			    g_mime_message_get_mime_part(m));
			char *t = ct ? g_mime_content_type_get_mime_type(ct) : NULL;

			doc_str(&c, jb, "content_type", t, DOC_NAME_MAX);
			g_free(t);
		}
		analysis_walk(&c, g_mime_message_get_mime_part(m), 0);
	}
	jb_key(jb, "attachments");
	start = jb->len;
	jb_arr_open(jb);
	for (i = 0; i < c.natt; i++) {
		struct att *t = &c.att[i];
		const char *dot = t->name ? strrchr(t->name, '.') : NULL;

		analysis_jb_mark(jb, &mark);
		jb_obj_open(jb);
		jb_key(jb, "file");
		jb_obj_open(jb);
		doc_str(&c, jb, "name", t->name, DOC_NAME_MAX);
		if (dot && dot[1] && strlen(dot + 1) <= 16)
			jb_kcstr(jb, "extension", dot + 1);
		doc_str(&c, jb, "mime_type", t->declared, DOC_NAME_MAX);
		jb_kuint(jb, "size", t->size);
		jb_key(jb, "hash");
		jb_obj_open(jb);
		jb_kcstr(jb, "md5", t->md5);
		jb_kcstr(jb, "sha1", t->sha1);
		jb_kcstr(jb, "sha256", t->sha256);
		if (t->ssdeep[0])
			jb_kcstr(jb, "ssdeep", t->ssdeep);
		jb_obj_close(jb);
		jb_obj_close(jb);
		jb_key(jb, "fosr");
		jb_obj_open(jb);
		doc_str(&c, jb, "magic_type", t->magic, DOC_NAME_MAX);
		jb_kcstr(jb, "disposition", t->disposition);
		jb_kuint(jb, "depth", t->depth);
		if (t->archive)
			jb_kbool(jb, "archive", true);
		if (t->zip_encrypted)
			jb_kbool(jb, "encrypted", true);
		jb_obj_close(jb);
		jb_obj_close(jb);
		if (!analysis_jb_fits(&c, jb, &mark, start, DOC_ATT_BUDGET,
		    "email.attachments", c.natt - i))
			break;
	}
	jb_arr_close(jb);
	jb_obj_close(jb);	/* email */

	if (m != NULL && (v = g_mime_object_get_header(mo, "User-Agent")) != NULL) {
		jb_key(jb, "user_agent");
		jb_obj_open(jb);
		doc_str(&c, jb, "original", v, DOC_STR_MAX);
		jb_obj_close(jb);
	}
	jb_key(jb, "url");
	jb_obj_open(jb);
	analysis_set_json(&c, jb, "full", "url.full", &c.urls, DOC_URL_BUDGET);
	analysis_set_json(&c, jb, "domain", "url.domain", &c.domains,
	    DOC_LIST_BUDGET);
	jb_obj_close(jb);
	res->nurls = (unsigned)c.urls.n;

	/* The fingerprint: plain text if any, else HTML's visible text. */
	{
		const char *t = c.text_from_plain ? c.text : c.html_text;
		size_t tl = c.text_from_plain ? c.textlen : c.html_textlen;

		if (t != NULL && tl >= TEXT_MIN && fuzzy_hash_buf(
		    (const unsigned char *)t, (uint32_t)tl, res->fingerprint) != 0)
			res->fingerprint[0] = '\0';
		fp = res->fingerprint[0] ? res->fingerprint : NULL;
	}

	jb_key(jb, "related");
	jb_obj_open(jb);
	analysis_set_json(&c, jb, "ip", "related.ip", &c.ips, DOC_LIST_BUDGET);
	analysis_set_json(&c, jb, "hosts", "related.hosts", &c.domains,
	    DOC_LIST_BUDGET);
	jb_key(jb, "hash");
	start = jb->len;
	jb_arr_open(jb);
	jb_cstr(jb, sha256);
	for (i = 0; i < res->nblobs; i++) {
		analysis_jb_mark(jb, &mark);
		jb_cstr(jb, res->blobs[i].sha256);
		if (!analysis_jb_fits(&c, jb, &mark, start, DOC_LIST_BUDGET,
		    "related.hash", res->nblobs - i))
			break;
	}
	jb_arr_close(jb);
	jb_obj_close(jb);

	jb_key(jb, "fosr");
	jb_obj_open(jb);
	jb_kcstr(jb, "sha256", sha256);
	jb_kuint(jb, "size", len);
	if (m != NULL) {
		analysis_set_json(&c, jb, "return_path", "fosr.return_path",
		    &c.return_path, DOC_ADDRS_BUDGET);
		received(&c, m, jb);
	}
	analysis_set_json(&c, jb, "body_addresses", "fosr.body_addresses",
	    &c.emails, DOC_LIST_BUDGET);
	{
		bool arch = false, enc = false;

		for (i = 0; i < c.natt; i++) {
			arch |= c.att[i].archive;
			enc |= c.att[i].zip_encrypted;
		}
		if (enc)
			jb_kbool(jb, "encrypted_archive", true);
		if (arch && c.password != NULL)
			jb_kcstr(jb, "archive_password", c.password);
	}
	jb_kcstr(jb, "text_ssdeep", fp);
	jb_key(jb, "campaign");
	if (cp != NULL && fp != NULL &&
	    campaigns_assign(cp, fp, time(NULL), &cm) == 0) {
		res->campaign = cm.id;
		jb_obj_open(jb);
		jb_kuint(jb, "id", cm.id);
		jb_kuint(jb, "count", cm.count);
		jb_kbool(jb, "new", cm.created);
		if (!cm.created)
			jb_kint(jb, "score", cm.score);
		jb_obj_close(jb);
	} else
		jb_null(jb);
	jb_key(jb, "analysis");
	jb_obj_open(jb);
	jb_kbool(jb, "parsed", m != NULL);
	jb_kuint(jb, "parts", c.leaves);
	jb_kuint(jb, "depth", c.maxdepth);
	jb_kuint(jb, "mime_warnings", c.warnings);
	(void)analysis_cpu_over(&c);
	res->limits = c.limits;
	jb_key(jb, "limits");
	jb_arr_open(jb);
	for (i = 0; i < sizeof(limit_names) / sizeof(limit_names[0]); i++)
		if (c.limits & (1u << i))
			jb_cstr(jb, limit_names[i]);
	jb_arr_close(jb);
	if (c.limits & ANALYSIS_LIM_DOCUMENT) {
		/* what the document's caps left out: strings cut, list items */
		jb_kuint(jb, "truncated", c.truncated);
		jb_key(jb, "omitted");
		jb_obj_open(jb);
		for (i = 0; i < c.nomitted; i++)
			jb_kuint(jb, c.omitted[i].name, c.omitted[i].n);
		jb_obj_close(jb);
	}
	jb_obj_close(jb);	/* analysis */
	jb_obj_close(jb);	/* fosr */

	g_mime_parser_options_set_warning_callback(a->popts, NULL, NULL);
	if (m != NULL)
		g_object_unref(m);
	for (i = 0; i < c.natt; i++) {
		free(c.att[i].name);
		free(c.att[i].declared);
		free(c.att[i].magic);
	}
	free(c.att);
	analysis_set_free(&c.urls);
	analysis_set_free(&c.domains);
	analysis_set_free(&c.ips);
	analysis_set_free(&c.emails);
	analysis_set_free(&c.from);
	analysis_set_free(&c.reply_to);
	analysis_set_free(&c.to);
	analysis_set_free(&c.cc);
	analysis_set_free(&c.return_path);
	free(c.text);
	free(c.html_text);
	free(c.password);
	return jb->oom ? -1 : 0;
}

int
analysis_run(struct analysis *a, const unsigned char *eml, size_t len,
    const char *sha256, struct campaigns *cp, struct analysis_result *res)
{
	struct jbuf jb;

	jb_init(&jb);
	jb_obj_open(&jb);
	jb_kcstr(&jb, "eventid", "fosr.mail.parsed");
	if (analysis_fields(a, eml, len, sha256, cp, &jb, res) == -1) {
		jb_free(&jb);
		analysis_result_free(res);
		return -1;
	}
	jb_obj_close(&jb);
	if (jb.oom) {
		jb_free(&jb);
		analysis_result_free(res);
		return -1;
	}
	res->json = jb.buf;
	res->jsonlen = jb.len;
	return 0;
}

/* Read a whole file, at most max bytes (the rest is not looked at). */
static unsigned char *
read_file(const char *path, size_t max, size_t *lenp)
{
	unsigned char *buf = NULL, *nb;
	size_t len = 0, cap = 0;
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return NULL;
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 65536;
			if ((nb = realloc(buf, cap + 1)) == NULL)
				goto fail;
			buf = nb;
		}
		n = read(fd, buf + len, cap - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto fail;
		if (n == 0)
			break;
		len += (size_t)n < max - len ? (size_t)n : max - len;
		if (len == max)
			break;
	}
	close(fd);
	*lenp = len;
	return buf;
fail:
	close(fd);
	free(buf);
	return NULL;
}

int
analysis_cli(char **files, int nfiles, const char *campaigns_path)
{
	struct analysis *a;
	struct campaigns *cp = NULL;
	struct analysis_result res;
	char err[512];
	int i, rc = 0;

	if ((a = analysis_new(NULL, err, sizeof(err))) == NULL) {
		fprintf(stderr, "fosr-collector: %s\n", err);
		return 1;
	}
	if (campaigns_path != NULL && (cp = campaigns_open(campaigns_path, 0, 0,
	    err, sizeof(err))) == NULL) {
		fprintf(stderr, "fosr-collector: %s\n", err);
		analysis_free(a);
		return 1;
	}
	for (i = 0; i < nfiles; i++) {
		unsigned char *d;
		size_t len = 0;

		if ((d = read_file(files[i], a->lim.raw_max + 1, &len)) == NULL) {
			log_escape(err, sizeof(err), files[i], strlen(files[i]));
			fprintf(stderr, "fosr-collector: %s: %s\n", err,
			    strerror(errno));
			rc = 1;
			continue;
		}
		if (analysis_run(a, d, len, NULL, cp, &res) == -1) {
			fprintf(stderr, "fosr-collector: out of memory\n");
			rc = 1;
		} else {
			fwrite(res.json, 1, res.jsonlen, stdout);
			fputc('\n', stdout);
			analysis_result_free(&res);
		}
		free(d);
	}
	if (cp != NULL && campaigns_save(cp, err, sizeof(err)) == -1) {
		fprintf(stderr, "fosr-collector: %s\n", err);
		rc = 1;
	}
	campaigns_free(cp);
	analysis_free(a);
	if (fflush(stdout) == EOF)
		rc = 1;
	return rc;
}
