/*
 * Mail analysis, the indicators in decoded text (hand-written: no library
 * does these): URLs and their domains, IPv4/IPv6 literals, e-mail
 * addresses, HTML href/src and visible text (gumbo, capped), the normalised
 * text fingerprinted by ssdeep, an archive password near an attachment;
 * each kept in a bounded set of distinct strings (items_max).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gumbo.h>

#include "analysis.h"
#include "analysis_int.h"
#include "jbuf.h"
#include "util.h"

static void	add_ip(struct ctx *, const char *, size_t);
static void	add_url(struct ctx *, const char *, size_t);
static size_t	scan_urls(struct ctx *, const char *, size_t);
static void	scan_emails(struct ctx *, const char *, size_t);
static void	find_password(struct ctx *, const char *, size_t);

static size_t
set_hash(const char *v, size_t len)
{
	size_t h = 14695981039346656037ULL, i;	/* FNV-1a */

	for (i = 0; i < len; i++)
		h = (h ^ (unsigned char)v[i]) * 1099511628211ULL;
	return h;
}

/* Where v is in s's index, or the empty slot it would take. */
static size_t
set_slot(const struct strset *s, const char *v, size_t len, size_t h)
{
	size_t m = s->icap - 1, k = h & m, j;

	for (;;) {
		if (s->idx[k] == 0)
			return k;
		j = s->idx[k] - 1;
		if (s->len[j] == len && memcmp(s->v[j], v, len) == 0)
			return k;
		k = (k + 1) & m;
	}
}

void
analysis_set_add(struct ctx *c, struct strset *s, const char *v, size_t len)
{
	size_t i, k;
	char *p;

	if (len == 0)
		return;
	if (s->icap > 0 && s->idx[set_slot(s, v, len, set_hash(v, len))] != 0)
		return;
	if (s->n >= c->a->lim.items_max) {
		c->limits |= ANALYSIS_LIM_ITEMS;
		return;
	}
	if (s->n == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 8, *nl, *ni;
		char **nv;

		if ((nv = realloc(s->v, ncap * sizeof(*nv))) == NULL)
			return;
		s->v = nv;
		if ((nl = realloc(s->len, ncap * sizeof(*nl))) == NULL)
			return;
		s->len = nl;
		if ((ni = calloc(ncap * 2, sizeof(*ni))) == NULL)
			return;
		free(s->idx);
		s->idx = ni;
		s->icap = ncap * 2;
		s->cap = ncap;
		for (i = 0; i < s->n; i++)
			s->idx[set_slot(s, s->v[i], s->len[i],
			    set_hash(s->v[i], s->len[i]))] = i + 1;
	}
	if ((p = malloc(len + 1)) == NULL)
		return;
	memcpy(p, v, len);
	p[len] = '\0';
	k = set_slot(s, v, len, set_hash(v, len));
	s->v[s->n] = p;
	s->len[s->n] = len;
	s->idx[k] = ++s->n;
}

void
analysis_set_free(struct strset *s)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	free(s->len);
	free(s->idx);
	memset(s, 0, sizeof(*s));
}

/*
 * key: [values] (always an array, as ECS keyword fields may be), within
 * budget bytes; the values left out are counted under name.
 */
void
analysis_set_json(struct ctx *c, struct jbuf *jb, const char *key,
    const char *name, const struct strset *s, size_t budget)
{
	struct jb_mark m;
	size_t i, start;

	jb_key(jb, key);
	start = jb->len;
	jb_arr_open(jb);
	for (i = 0; i < s->n; i++) {
		analysis_jb_mark(jb, &m);
		jb_str(jb, s->v[i], s->len[i]);
		if (!analysis_jb_fits(c, jb, &m, start, budget, name, s->n - i))
			break;
	}
	jb_arr_close(jb);
}

/*
 * An IP literal (IPv4, IPv6, "IPv6:" prefixed, bracketed) into its
 * canonical text form.
 */
bool
analysis_ip_literal(const char *s, size_t len, char *out, size_t outlen)
{
	char buf[64];
	unsigned char bin[16];

	if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
		s++;
		len -= 2;
	}
	if (len > 5 && strncasecmp(s, "IPv6:", 5) == 0) {
		s += 5;
		len -= 5;
	}
	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, bin) == 1)
		return inet_ntop(AF_INET, bin, out, (socklen_t)outlen) != NULL;
	if (memchr(buf, ':', len) && inet_pton(AF_INET6, buf, bin) == 1)
		return inet_ntop(AF_INET6, bin, out, (socklen_t)outlen) != NULL;
	return false;
}

static void
add_ip(struct ctx *c, const char *s, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (analysis_ip_literal(s, len, ip, sizeof(ip)))
		analysis_set_add(c, &c->ips, ip, strlen(ip));
}

/*
 * Normalise an absolute http(s)/ftp URL and keep it with its domain (or its
 * IP): scheme and host lowercased, a trailing dot and the default port
 * dropped, an empty path made "/", the fragment dropped.  Anything else
 * (relative, javascript:, data:) is not an indicator.  mailto: gives an
 * address.
 */
static void
add_url(struct ctx *c, const char *u, size_t len)
{
	static const struct { const char *s; const char *port; } schemes[] = {
		{ "http", "80" }, { "https", "443" }, { "ftp", "21" },
	};
	char out[URL_MAX + 16], host[256];
	size_t i, sl = 0, h0, h1, hl, ol = 0, pstart, pend;
	const char *dport = NULL;

	while (len > 0 && (unsigned char)u[0] <= ' ') {
		u++;
		len--;
	}
	while (len > 0 && (unsigned char)u[len - 1] <= ' ')
		len--;
	if (len > 7 && strncasecmp(u, "mailto:", 7) == 0) {
		const char *q = memchr(u, '?', len);

		scan_emails(c, u + 7, (q ? (size_t)(q - u) : len) - 7);
		return;
	}
	for (i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		sl = strlen(schemes[i].s);
		if (len > sl + 3 && strncasecmp(u, schemes[i].s, sl) == 0 &&
		    memcmp(u + sl, "://", 3) == 0) {
			dport = schemes[i].port;
			break;
		}
	}
	if (dport == NULL)
		return;
	if (len > URL_MAX)
		len = URL_MAX;
	/* authority: [userinfo@]host[:port] up to / ? # */
	h0 = sl + 3;
	for (h1 = h0; h1 < len && u[h1] != '/' && u[h1] != '?' &&
	    u[h1] != '#' && u[h1] != '\\'; h1++)
		;
	for (i = h1; i > h0; i--)
		if (u[i - 1] == '@') {
			h0 = i;
			break;
		}
	pstart = h1;
	/* port: after the last ':' unless inside an IPv6 literal */
	pend = h1;
	for (i = h1; i > h0; i--) {
		if (u[i - 1] == ']')
			break;
		if (u[i - 1] == ':') {
			pend = i - 1;
			break;
		}
	}
	hl = pend - h0;
	if (hl == 0 || hl >= sizeof(host))
		return;
	for (i = 0; i < hl; i++)
		host[i] = (char)tolower((unsigned char)u[h0 + i]);
	host[hl] = '\0';
	while (hl > 0 && host[hl - 1] == '.')
		host[--hl] = '\0';
	if (hl == 0)
		return;
	for (i = 0; i < hl; i++)
		if ((unsigned char)host[i] <= ' ' || strchr("<>\"'`{}|^%", host[i]))
			return;
	for (ol = 0; ol < sl; ol++)
		out[ol] = (char)tolower((unsigned char)u[ol]);
	memcpy(out + ol, "://", 3);
	ol += 3;
	if (h0 > sl + 3) {		/* userinfo kept: it is evidence */
		memcpy(out + ol, u + sl + 3, h0 - (sl + 3));
		ol += h0 - (sl + 3);
	}
	memcpy(out + ol, host, hl);
	ol += hl;
	if (pend < h1 && !(h1 - pend - 1 == strlen(dport) &&
	    memcmp(u + pend + 1, dport, strlen(dport)) == 0) && h1 - pend > 1) {
		memcpy(out + ol, u + pend, h1 - pend);
		ol += h1 - pend;
	}
	{
		const char *f = memchr(u + pstart, '#', len - pstart);
		size_t rest = (f ? (size_t)(f - u) : len) - pstart;

		if (rest == 0 || u[pstart] != '/')
			out[ol++] = '/';
		memcpy(out + ol, u + pstart, rest);
		ol += rest;
	}
	analysis_set_add(c, &c->urls, out, ol);
	if (analysis_ip_literal(host, hl, out, sizeof(out)))
		analysis_set_add(c, &c->ips, out, strlen(out));
	else
		analysis_set_add(c, &c->domains, host, hl);
}

static bool
url_char(unsigned char ch)
{
	return ch > ' ' && ch != 0x7f && !strchr("<>\"'`{}|\\^", ch);
}

/*
 * URLs in text: http://, https://, ftp:// and www. (taken as http://).
 * Trailing punctuation that closes a sentence is not part of the URL.
 * Returns the count found.
 */
static size_t
scan_urls(struct ctx *c, const char *s, size_t len)
{
	static const char *const pfx[] = { "http://", "https://", "ftp://",
	    "www." };
	size_t i, k, e, n = 0, next = 0;
	char buf[URL_MAX + 8];

	for (i = 0; i < len; i++) {
		char ch = (char)tolower((unsigned char)s[i]);

		if (analysis_cpu_at(c, i, &next))
			break;
		if (ch != 'h' && ch != 'f' && ch != 'w')
			continue;
		if (i > 0 && (isalnum((unsigned char)s[i - 1]) || s[i - 1] == '/' ||
		    s[i - 1] == '.'))
			continue;
		for (k = 0; k < 4; k++)
			if (len - i > strlen(pfx[k]) &&
			    strncasecmp(s + i, pfx[k], strlen(pfx[k])) == 0)
				break;
		if (k == 4)
			continue;
		for (e = i; e < len && url_char((unsigned char)s[e]); e++)
			;
		while (e > i && strchr(".,;:!?)]}*", s[e - 1]))
			e--;
		if (e - i <= strlen(pfx[k]))
			continue;
		if (k == 3) {
			size_t l = e - i < URL_MAX ? e - i : URL_MAX;

			memcpy(buf, "http://", 7);
			memcpy(buf + 7, s + i, l);
			add_url(c, buf, l + 7);
		} else
			add_url(c, s + i, e - i);
		n++;
		i = e;
	}
	return n;
}

static bool
local_char(unsigned char ch)
{
	return isalnum(ch) || strchr("._%+-=!#$&'*/?^`{|}~", ch);
}

/* addr@domain.tld in text; the domain lowercased. */
static void
scan_emails(struct ctx *c, const char *s, size_t len)
{
	char buf[ADDR_MAX + 1];
	size_t i, b, e, dots, l, next = 0;

	for (i = 1; i + 3 < len; i++) {
		if (analysis_cpu_at(c, i, &next))
			return;
		if (s[i] != '@')
			continue;
		for (b = i; b > 0 && local_char((unsigned char)s[b - 1]) &&
		    i - b < 64; b--)
			;
		while (b < i && s[b] == '.')
			b++;
		for (e = i + 1, dots = 0; e < len && (isalnum((unsigned char)s[e]) ||
		    s[e] == '-' || s[e] == '.'); e++)
			if (s[e] == '.')
				dots++;
		while (e > i + 1 && (s[e - 1] == '.' || s[e - 1] == '-')) {
			if (s[e - 1] == '.')
				dots--;
			e--;
		}
		if (b == i || dots == 0 || e - b > ADDR_MAX ||
		    !isalpha((unsigned char)s[e - 1]))
			continue;
		l = e - b;
		memcpy(buf, s + b, l);
		for (size_t j = i - b; j < l; j++)
			buf[j] = (char)tolower((unsigned char)buf[j]);
		analysis_set_add(c, &c->emails, buf, l);
		i = e;
	}
}

/* Dotted quads standing alone (not part of a longer dotted number). */
static void
scan_ipv4(struct ctx *c, const char *s, size_t len)
{
	size_t i, e, dots, next = 0;

	for (i = 0; i < len; i++) {
		if (analysis_cpu_at(c, i, &next))
			return;
		if (!isdigit((unsigned char)s[i]) || (i > 0 &&
		    (isalnum((unsigned char)s[i - 1]) || s[i - 1] == '.')))
			continue;
		for (e = i, dots = 0; e < len && (isdigit((unsigned char)s[e]) ||
		    s[e] == '.') && e - i < 16; e++)
			if (s[e] == '.')
				dots++;
		if (e < len && isalnum((unsigned char)s[e]))
			continue;
		while (e > i && s[e - 1] == '.') {
			e--;
			dots--;
		}
		if (dots == 3)
			add_ip(c, s + i, e - i);
		i = e;
	}
}

/*
 * Normalised text for the fingerprint: words holding a URL or an address
 * dropped (they are what varies between copies of one spam), ASCII
 * lowercased, digits dropped, runs of anything else one space.
 */
void
analysis_norm_append(struct ctx *c, char **buf, size_t *blen, const char *s, size_t len)
{
	size_t i = 0, w, cap = c->a->lim.text_max, j, next = 0;
	char *b = *buf;

	if (b == NULL) {
		if ((b = malloc(cap + 1)) == NULL)
			return;
		*buf = b;
		*blen = 0;
	}
	while (i < len) {
		if (analysis_cpu_at(c, i, &next))
			break;
		while (i < len && isspace((unsigned char)s[i]))
			i++;
		for (w = i; w < len && !isspace((unsigned char)s[w]); w++)
			;
		if (w == i)
			break;
		if (memchr(s + i, '@', w - i) == NULL &&
		    memmem(s + i, w - i, "://", 3) == NULL &&
		    !(w - i > 4 && strncasecmp(s + i, "www.", 4) == 0)) {
			bool sp = *blen == 0 || b[*blen - 1] == ' ';

			for (j = i; j < w; j++) {
				unsigned char ch = (unsigned char)s[j];

				if (*blen + 2 > cap) {
					c->limits |= ANALYSIS_LIM_TEXT;
					b[*blen] = '\0';
					return;
				}
				if (isdigit(ch))
					continue;
				if (ch >= 0x80 || isalpha(ch)) {
					b[(*blen)++] = (char)tolower(ch);
					sp = false;
				} else if (!sp) {
					b[(*blen)++] = ' ';
					sp = true;
				}
			}
			if (*blen > 0 && b[*blen - 1] != ' ' && *blen + 1 < cap)
				b[(*blen)++] = ' ';
		}
		i = w;
	}
	b[*blen] = '\0';
}

/* The first password-looking string after a password keyword. */
static void
find_password(struct ctx *c, const char *s, size_t len)
{
	struct analysis *a = c->a;
	PCRE2_SIZE *ov;
	int rc;

	size_t i;

	if (c->password != NULL)
		return;
	if (len > PW_SCAN_MAX)
		len = PW_SCAN_MAX;
	/*
	 * Every keyword starts "pa" or "pw" (or is "archive pass"/"zip pass"):
	 * without one, no regex run (it was most of a 30 KB HTML mail's CPU,
	 * run on each text node).
	 */
	for (i = 0; i + 1 < len; i++)
		if ((s[i] | 0x20) == 'p' && ((s[i + 1] | 0x20) == 'a' ||
		    (s[i + 1] | 0x20) == 'w'))
			break;
	if (i + 1 >= len)
		return;
	rc = pcre2_match(a->pw_re, (PCRE2_SPTR)s, len, 0, 0, a->pw_md,
	    a->pw_mctx);
	if (rc < 2)
		return;
	ov = pcre2_get_ovector_pointer(a->pw_md);
	if (ov[3] > ov[2] && ov[3] <= len)
		c->password = strndup(s + ov[2], ov[3] - ov[2]);
}

/* Everything a text (plain or HTML's visible text) is scanned for. */
void
analysis_scan_text(struct ctx *c, const char *s, size_t len)
{
	scan_urls(c, s, len);
	scan_emails(c, s, len);
	scan_ipv4(c, s, len);
	find_password(c, s, len);
}

/*
 * gumbo's memory, counted: every allocation it makes goes through
 * galloc_alloc() (GumboOptions.allocator), linked in a list so that a parse
 * past its budget (GUMBO_MEM_FACTOR x html_max) or past the CPU cap is
 * abandoned by a longjmp out of the allocator and all it held freed.  gumbo
 * has no other bound on its tree: "reconstruct the active formatting
 * elements" clones every open formatting element, attributes included,
 * before each text node (one <b> with a 970 KB title then "<p>x" x 4990:
 * 4.4 GB from 1 MB of markup).  gumbo is plain C with no state outside its
 * allocations, so leaving it by longjmp loses nothing.
 */
union galloc_blk {
	struct {
		union galloc_blk	*prev, *next;
		size_t			 size;
	} h;
	max_align_t	align;
};

struct galloc {
	struct ctx		*c;
	union galloc_blk	*head;
	size_t			 live;		/* bytes held, headers included */
	size_t			 max;
	unsigned		 calls;
	jmp_buf			 env;
};

static void *
galloc_alloc(void *arg, size_t n)
{
	struct galloc *g = arg;
	union galloc_blk *b;
	size_t sz = sizeof(*b) + n;

	if (n > g->max || sz > g->max - g->live) {
		g->c->limits |= ANALYSIS_LIM_HTML;
		longjmp(g->env, 1);
	}
	/* the CPU cap inside the parse, every 4096 allocations */
	if ((++g->calls & 4095) == 0 && analysis_cpu_over(g->c))
		longjmp(g->env, 1);
	if ((b = malloc(sz)) == NULL)
		longjmp(g->env, 1);
	b->h.size = sz;
	b->h.prev = NULL;
	b->h.next = g->head;
	if (g->head != NULL)
		g->head->h.prev = b;
	g->head = b;
	g->live += sz;
	return b + 1;
}

static void
galloc_free(void *arg, void *p)
{
	struct galloc *g = arg;
	union galloc_blk *b;

	if (p == NULL)
		return;
	b = (union galloc_blk *)p - 1;
	if (b->h.prev != NULL)
		b->h.prev->h.next = b->h.next;
	else
		g->head = b->h.next;
	if (b->h.next != NULL)
		b->h.next->h.prev = b->h.prev;
	g->live -= b->h.size;
	free(b);
}

/* Whatever a parse left allocated (all of it, after a longjmp). */
static void
galloc_release(struct galloc *g)
{
	union galloc_blk *b, *nb;

	for (b = g->head; b != NULL; b = nb) {
		nb = b->h.next;
		free(b);
	}
	g->head = NULL;
	g->live = 0;
}

/* The parse, or NULL if it went past its memory or CPU budget. */
static GumboOutput *
html_parse(struct galloc *g, const GumboOptions *opts, const char *html,
    size_t len)
{
	if (setjmp(g->env) != 0) {
		galloc_release(g);
		return NULL;
	}
	return gumbo_parse_with_options(opts, html, len);
}

/*
 * HTML through gumbo: href, src, action (and background, the tracking
 * image's other home) as URLs, the visible text (not script or style) kept
 * for the fingerprint and scanned like plain text.  A part gumbo cannot
 * parse within its budget is scanned as plain text (absolute URLs,
 * addresses), "html" named.
 */
void
analysis_html_scan(struct ctx *c, const char *html, size_t len)
{
	static const char *const attrs[] = { "href", "src", "action",
	    "background", "srcset", "poster", "data" };
	GumboOutput *out;
	const GumboNode **stack = NULL;
	size_t sp = 0, scap = 0, i, tags = 0, nodes = 0, next = 0;
	GumboOptions opts = kGumboDefaultOptions;
	struct galloc g;
	size_t full = len;

	if (len > c->a->lim.html_max) {
		len = c->a->lim.html_max;
		c->limits |= ANALYSIS_LIM_HTML;
	}
	for (i = 0; i < len; i++)
		if (html[i] == '<' && ++tags > c->a->lim.html_tags_max) {
			len = i;
			c->limits |= ANALYSIS_LIM_HTML;
			break;
		}
	/*
	 * Past the cap, absolute URLs are still found as in plain text (not
	 * entity-decoded: "&amp;" stays), so a long mail hides none.
	 */
	if (len < full)
		scan_urls(c, html + len, full - len);
	memset(&g, 0, sizeof(g));
	g.c = c;
	g.max = c->a->lim.html_max > SIZE_MAX / GUMBO_MEM_FACTOR ? SIZE_MAX :
	    c->a->lim.html_max * GUMBO_MEM_FACTOR;
	opts.allocator = galloc_alloc;
	opts.deallocator = galloc_free;
	opts.userdata = &g;
	opts.max_errors = 100;
	if ((out = html_parse(&g, &opts, html, len)) == NULL) {
		if (!(c->limits & ANALYSIS_LIM_CPU)) {
			scan_urls(c, html, len);
			scan_emails(c, html, len);
		}
		return;
	}
	if ((stack = malloc(64 * sizeof(*stack))) == NULL)
		goto done;
	scap = 64;
	stack[sp++] = out->root;
	while (sp > 0) {
		const GumboNode *n = stack[--sp];
		const GumboVector *ch;

		/* a node costs about 64 bytes of scan: a look per 1,024 */
		if (analysis_cpu_at(c, ++nodes * 64, &next))
			break;
		if (n->type == GUMBO_NODE_TEXT || n->type == GUMBO_NODE_CDATA) {
			const char *t = n->v.text.text;

			analysis_scan_text(c, t, strlen(t));
			if (!c->text_from_plain)
				analysis_norm_append(c, &c->html_text, &c->html_textlen,
				    t, strlen(t));
			continue;
		}
		if (n->type != GUMBO_NODE_ELEMENT && n->type != GUMBO_NODE_TEMPLATE &&
		    n->type != GUMBO_NODE_DOCUMENT)
			continue;
		if (n->type != GUMBO_NODE_DOCUMENT) {
			const GumboElement *el = &n->v.element;

			if (el->tag == GUMBO_TAG_SCRIPT || el->tag == GUMBO_TAG_STYLE) {
				/* no visible text, but a src counts */
			}
			for (i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
				const GumboAttribute *at =
				    gumbo_get_attribute(&el->attributes, attrs[i]);

				if (at == NULL)
					continue;
				if (i == 4) {	/* srcset: "url 1x, url 2x" */
					const char *v = at->value, *e;

					while (*v) {
						while (*v == ' ' || *v == ',')
							v++;
						for (e = v; *e && *e != ' ' &&
						    *e != ','; e++)
							;
						if (e > v)
							add_url(c, v, (size_t)(e - v));
						while (*e && *e != ',')
							e++;
						v = e;
					}
				} else
					add_url(c, at->value, strlen(at->value));
			}
			if (el->tag == GUMBO_TAG_SCRIPT || el->tag == GUMBO_TAG_STYLE)
				continue;
			ch = &el->children;
		} else
			ch = &n->v.document.children;
		/* children pushed in reverse: text comes out in order */
		if (sp + ch->length > scap) {
			size_t ncap = (sp + ch->length) * 2;
			const GumboNode **ns = realloc(stack, ncap * sizeof(*ns));

			if (ns == NULL)
				break;
			stack = ns;
			scap = ncap;
		}
		for (i = ch->length; i > 0; i--)
			stack[sp++] = ch->data[i - 1];
	}
done:
	free(stack);
	gumbo_destroy_output(&opts, out);
	galloc_release(&g);
}
