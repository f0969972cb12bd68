/*
 * Mail analysis: GMime 3 parses the MIME tree (RFC 2231/2047, transfer
 * encodings, charsets), gumbo tokenizes HTML for href/src, libmagic types
 * the decoded bytes, OpenSSL hashes them, libfuzzy (ssdeep) fingerprints
 * attachments and the normalised text.  What is hand-written here is only
 * what no library does: the scans of decoded text for URLs, addresses and
 * an archive password, and the caps that keep a hostile mail bounded.
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
 *    never grows base64, quoted-printable or uuencode) and cpu_ms_max of
 *    thread CPU time (checked between parts and before each HTML part).
 *  - gumbo gets at most html_max bytes and html_tags_max tags of one part
 *    (its tree free is recursive: the tag cap bounds that depth); the tree
 *    is walked with an explicit stack.
 *  - each list of indicators keeps items_max distinct values.
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

#define PCRE2_CODE_UNIT_WIDTH 8
#include <fuzzy.h>
#include <gmime/gmime.h>
#include <gumbo.h>
#include <magic.h>
#include <openssl/evp.h>
#include <pcre2.h>

#include "analysis.h"
#include "campaign.h"
#include "log.h"
#include "util.h"

#define URL_MAX		2048	/* a longer URL is cut there (and marked) */
#define ADDR_MAX	254
#define RECEIVED_MAX	64	/* Received: fields read */
#define MAGIC_BYTES	(1024 * 1024)	/* libmagic looks at the first MB */
#define TEXT_MIN	64	/* shorter normalised text: no fingerprint */
#define PW_SCAN_MAX	(256 * 1024)	/* bytes of one text scanned for a password */

struct analysis {
	struct analysis_limits	 lim;
	magic_t			 magic;
	pcre2_code		*pw_re;
	pcre2_match_data	*pw_md;
	pcre2_match_context	*pw_mctx;
	GMimeParserOptions	*popts;
};

/* A bounded set of distinct strings, in first-seen order. */
struct strset {
	char		**v;
	size_t		  n;
	size_t		  cap;
};

struct att {
	char		*name;		/* UTF-8 or NULL */
	char		*declared;	/* type/subtype */
	char		*magic;
	const char	*disposition;
	size_t		 size;
	char		 md5[33];
	char		 sha1[41];
	char		 sha256[65];
	char		 ssdeep[FUZZY_MAX_RESULT];
	unsigned	 depth;
	bool		 archive;
	bool		 zip_encrypted;
	bool		 uuencoded;
};

struct ctx {
	struct analysis		*a;
	unsigned		 limits;
	unsigned		 containers;
	unsigned		 leaves;
	unsigned		 maxdepth;
	unsigned		 warnings;
	size_t			 decoded;
	struct timespec		 cpu0;
	struct strset		 urls, domains, ips, emails, from, reply_to,
				 to, cc, return_path;
	struct att		*att;
	size_t			 natt;
	size_t			 attcap;
	struct analysis_result	*res;
	char			*text;		/* normalised text */
	size_t			 textlen;
	bool			 text_from_plain;
	char			*html_text;	/* visible HTML text, if no plain */
	size_t			 html_textlen;
	char			*password;
};

static pthread_once_t	gmime_once = PTHREAD_ONCE_INIT;

static void	gmime_init_once(void);
static bool	cpu_over(struct ctx *);
static void	set_add(struct ctx *, struct strset *, const char *, size_t);
static void	set_free(struct strset *);
static void	set_json(struct jbuf *, const char *, const struct strset *);
static void	add_ip(struct ctx *, const char *, size_t);
static bool	ip_literal(const char *, size_t, char *, size_t);
static void	add_url(struct ctx *, const char *, size_t);
static void	scan_text(struct ctx *, const char *, size_t);
static void	scan_emails(struct ctx *, const char *, size_t);
static void	scan_ipv4(struct ctx *, const char *, size_t);
static size_t	scan_urls(struct ctx *, const char *, size_t);
static void	norm_append(struct ctx *, char **, size_t *, const char *, size_t);
static void	find_password(struct ctx *, const char *, size_t);
static void	html_scan(struct ctx *, const char *, size_t);
static void	uu_scan(struct ctx *, const char *, size_t, unsigned);
static void	add_attachment(struct ctx *, const unsigned char *, size_t,
		    const char *, const char *, const char *, unsigned, bool);
static void	zip_check(const unsigned char *, size_t, struct att *);
static void	walk(struct ctx *, GMimeObject *, unsigned);
static void	leaf(struct ctx *, GMimePart *, unsigned);
static void	addrs(struct ctx *, struct strset *, InternetAddressList *, int);
static void	header_addrs(struct ctx *, struct strset *, GMimeObject *,
		    const char *);
static void	received(struct ctx *, GMimeMessage *, struct jbuf *);
static size_t	raw_cut(const unsigned char *, size_t,
		    const struct analysis_limits *, unsigned *);
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
static bool
cpu_over(struct ctx *c)
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

static void
set_add(struct ctx *c, struct strset *s, const char *v, size_t len)
{
	size_t i;
	char *p;

	if (len == 0)
		return;
	for (i = 0; i < s->n; i++)
		if (strlen(s->v[i]) == len && memcmp(s->v[i], v, len) == 0)
			return;
	if (s->n >= c->a->lim.items_max) {
		c->limits |= ANALYSIS_LIM_ITEMS;
		return;
	}
	if (s->n == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 8;
		char **nv = realloc(s->v, ncap * sizeof(*nv));

		if (nv == NULL)
			return;
		s->v = nv;
		s->cap = ncap;
	}
	if ((p = malloc(len + 1)) == NULL)
		return;
	memcpy(p, v, len);
	p[len] = '\0';
	s->v[s->n++] = p;
}

static void
set_free(struct strset *s)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* key: [values] (always an array, as ECS keyword fields may be). */
static void
set_json(struct jbuf *jb, const char *key, const struct strset *s)
{
	size_t i;

	jb_key(jb, key);
	jb_arr_open(jb);
	for (i = 0; i < s->n; i++)
		jb_cstr(jb, s->v[i]);
	jb_arr_close(jb);
}

/*
 * An IP literal (IPv4, IPv6, "IPv6:" prefixed, bracketed) into its
 * canonical text form.
 */
static bool
ip_literal(const char *s, size_t len, char *out, size_t outlen)
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

	if (ip_literal(s, len, ip, sizeof(ip)))
		set_add(c, &c->ips, ip, strlen(ip));
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
	set_add(c, &c->urls, out, ol);
	if (ip_literal(host, hl, out, sizeof(out)))
		set_add(c, &c->ips, out, strlen(out));
	else
		set_add(c, &c->domains, host, hl);
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
	size_t i, k, e, n = 0;
	char buf[URL_MAX + 8];

	for (i = 0; i < len; i++) {
		char ch = (char)tolower((unsigned char)s[i]);

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
	size_t i, b, e, dots, l;

	for (i = 1; i + 3 < len; i++) {
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
		set_add(c, &c->emails, buf, l);
		i = e;
	}
}

/* Dotted quads standing alone (not part of a longer dotted number). */
static void
scan_ipv4(struct ctx *c, const char *s, size_t len)
{
	size_t i, e, dots;

	for (i = 0; i < len; i++) {
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
static void
norm_append(struct ctx *c, char **buf, size_t *blen, const char *s, size_t len)
{
	size_t i = 0, w, cap = c->a->lim.text_max, j;
	char *b = *buf;

	if (b == NULL) {
		if ((b = malloc(cap + 1)) == NULL)
			return;
		*buf = b;
		*blen = 0;
	}
	while (i < len) {
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
static void
scan_text(struct ctx *c, const char *s, size_t len)
{
	scan_urls(c, s, len);
	scan_emails(c, s, len);
	scan_ipv4(c, s, len);
	find_password(c, s, len);
}

/*
 * HTML through gumbo: href, src, action (and background, the tracking
 * image's other home) as URLs, the visible text (not script or style) kept
 * for the fingerprint and scanned like plain text.
 */
static void
html_scan(struct ctx *c, const char *html, size_t len)
{
	static const char *const attrs[] = { "href", "src", "action",
	    "background", "srcset", "poster", "data" };
	GumboOutput *out;
	const GumboNode **stack = NULL;
	size_t sp = 0, scap = 0, i, tags = 0;
	GumboOptions opts = kGumboDefaultOptions;

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
	opts.max_errors = 100;
	if ((out = gumbo_parse_with_options(&opts, html, len)) == NULL)
		return;
	if ((stack = malloc(64 * sizeof(*stack))) == NULL)
		goto done;
	scap = 64;
	stack[sp++] = out->root;
	while (sp > 0) {
		const GumboNode *n = stack[--sp];
		const GumboVector *ch;

		if (n->type == GUMBO_NODE_TEXT || n->type == GUMBO_NODE_CDATA) {
			const char *t = n->v.text.text;

			scan_text(c, t, strlen(t));
			if (!c->text_from_plain)
				norm_append(c, &c->html_text, &c->html_textlen,
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
}

/*
 * uuencoded files inside a text part ("begin 644 name" ... "end"), the old
 * way spam still uses to carry an attachment.
 */
static void
uu_scan(struct ctx *c, const char *s, size_t len, unsigned depth)
{
	const char *p = s, *end = s + len, *nl, *body, *stop;
	unsigned char *out;
	char name[256];
	int state;
	guint32 save;
	size_t n, nl_len;

	while (p < end && (p = memmem(p, (size_t)(end - p), "begin ", 6)) != NULL) {
		if (p != s && p[-1] != '\n') {
			p += 6;
			continue;
		}
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			return;
		/* "begin" mode name: mode is octal digits */
		{
			const char *q = p + 6;

			while (q < nl && *q >= '0' && *q <= '7')
				q++;
			if (q == p + 6 || q >= nl || *q != ' ') {
				p = nl;
				continue;
			}
			q++;
			nl_len = (size_t)(nl - q);
			while (nl_len > 0 && (q[nl_len - 1] == '\r' ||
			    q[nl_len - 1] == ' '))
				nl_len--;
			if (nl_len >= sizeof(name))
				nl_len = sizeof(name) - 1;
			memcpy(name, q, nl_len);
			name[nl_len] = '\0';
		}
		/* each file is a leaf: the same cap as MIME leaves */
		if (++c->leaves > c->a->lim.leaves_max) {
			c->limits |= ANALYSIS_LIM_LEAVES;
			return;
		}
		body = nl + 1;
		stop = body;
		while (stop < end) {
			const char *e2 = memchr(stop, '\n', (size_t)(end - stop));

			if ((size_t)(end - stop) >= 3 && memcmp(stop, "end", 3) == 0 &&
			    (stop + 3 == end || stop[3] == '\n' || stop[3] == '\r'))
				break;
			stop = e2 ? e2 + 1 : end;
		}
		if (c->a->lim.decoded_max - c->decoded < (size_t)(stop - body)) {
			c->limits |= ANALYSIS_LIM_DECODED;
			return;
		}
		if ((out = malloc((size_t)(stop - body) + 16)) == NULL)
			return;
		state = GMIME_UUDECODE_STATE_BEGIN;
		save = 0;
		n = g_mime_encoding_uudecode_step((const unsigned char *)body,
		    (size_t)(stop - body), out, &state, &save);
		c->decoded += n;
		add_attachment(c, out, n, name[0] ? name : NULL,
		    "application/octet-stream", "uuencode", depth, true);
		free(out);
		p = stop;
	}
}

/*
 * A ZIP's local headers and central directory: bit 0 of the general
 * purpose flags is "encrypted" (traditional PKWARE or AES).
 */
static void
zip_check(const unsigned char *d, size_t len, struct att *t)
{
	size_t i;

	if (len < 4 || memcmp(d, "PK\003\004", 4) != 0)
		return;
	t->archive = true;
	for (i = 0; i + 30 <= len; i++) {
		if (d[i] != 'P' || d[i + 1] != 'K')
			continue;
		if (d[i + 2] == 3 && d[i + 3] == 4 && (d[i + 6] & 1))
			t->zip_encrypted = true;
		else if (d[i + 2] == 1 && d[i + 3] == 2 && (d[i + 8] & 1))
			t->zip_encrypted = true;
		if (t->zip_encrypted)
			return;
	}
}

static void
add_attachment(struct ctx *c, const unsigned char *data, size_t len,
    const char *name, const char *declared, const char *disposition,
    unsigned depth, bool uu)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	const char *mg;
	static const unsigned char empty[1];
	struct att *t;
	size_t i;

	/* An empty part's GByteArray has no data: never NULL to memcpy & co. */
	if (data == NULL || len == 0) {
		data = empty;
		len = 0;
	}
	if (c->natt == c->attcap) {
		size_t ncap = c->attcap ? c->attcap * 2 : 8;
		struct att *na = realloc(c->att, ncap * sizeof(*na));

		if (na == NULL)
			return;
		c->att = na;
		c->attcap = ncap;
	}
	t = &c->att[c->natt];
	memset(t, 0, sizeof(*t));
	t->name = name ? strdup(name) : NULL;
	t->declared = strdup(declared);
	t->disposition = disposition;
	t->depth = depth;
	t->size = len;
	t->uuencoded = uu;
	if (EVP_Digest(data, len, md, &mdlen, EVP_md5(), NULL) == 1)
		util_hex(md, mdlen, t->md5);
	if (EVP_Digest(data, len, md, &mdlen, EVP_sha1(), NULL) == 1)
		util_hex(md, mdlen, t->sha1);
	if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) == 1)
		util_hex(md, mdlen, t->sha256);
	if (fuzzy_hash_buf(data, (uint32_t)(len > UINT32_MAX ? UINT32_MAX : len),
	    t->ssdeep) != 0)
		t->ssdeep[0] = '\0';
	mg = magic_buffer(c->a->magic, data, len > MAGIC_BYTES ? MAGIC_BYTES : len);
	t->magic = strdup(mg ? mg : "application/octet-stream");
	zip_check(data, len, t);
	if (!t->archive && t->magic && (strstr(t->magic, "zip") ||
	    strstr(t->magic, "rar") || strstr(t->magic, "7z") ||
	    strstr(t->magic, "x-tar") || strstr(t->magic, "gzip")))
		t->archive = true;
	c->natt++;
	c->res->nattachments++;

	/* The blob, once per distinct content. */
	if (c->a->lim.blob_max == 0)
		return;
	if (len > c->a->lim.blob_max) {
		c->limits |= ANALYSIS_LIM_BLOB;
		return;
	}
	for (i = 0; i < c->res->nblobs; i++)
		if (strcmp(c->res->blobs[i].sha256, t->sha256) == 0)
			return;
	{
		struct analysis_blob *nb = realloc(c->res->blobs,
		    (c->res->nblobs + 1) * sizeof(*nb));

		if (nb == NULL)
			return;
		c->res->blobs = nb;
		if ((nb[c->res->nblobs].data = malloc(len ? len : 1)) == NULL)
			return;
		memcpy(nb[c->res->nblobs].data, data, len);
		nb[c->res->nblobs].len = len;
		memcpy(nb[c->res->nblobs].sha256, t->sha256, 65);
		c->res->nblobs++;
	}
}

static void
leaf(struct ctx *c, GMimePart *part, unsigned depth)
{
	GMimeObject *obj = GMIME_OBJECT(part);
	GMimeContentType *ct = g_mime_object_get_content_type(obj);
	GMimeDataWrapper *dw = g_mime_part_get_content(part);
	const char *disp = g_mime_object_get_disposition(obj);
	char *mt = ct ? g_mime_content_type_get_mime_type(ct) : NULL;
	bool is_text, attach;
	gint64 enclen = 0;

	if (++c->leaves > c->a->lim.leaves_max) {
		c->limits |= ANALYSIS_LIM_LEAVES;
		g_free(mt);
		return;
	}
	if (mt != NULL)
		for (char *q = mt; *q; q++)
			*q = (char)tolower((unsigned char)*q);
	is_text = mt != NULL && strncmp(mt, "text/", 5) == 0;
	attach = g_mime_part_is_attachment(part) ||
	    (disp != NULL && g_ascii_strcasecmp(disp, "attachment") == 0) ||
	    !is_text;
	if (dw != NULL && g_mime_data_wrapper_get_stream(dw) != NULL)
		enclen = g_mime_stream_length(g_mime_data_wrapper_get_stream(dw));
	if (enclen < 0)
		enclen = 0;
	/* Decoding never grows the content: the encoded size is the bound. */
	if ((size_t)enclen > c->a->lim.decoded_max - c->decoded) {
		c->limits |= ANALYSIS_LIM_DECODED;
		g_free(mt);
		return;
	}
	if (attach) {
		GMimeStream *ms = g_mime_stream_mem_new();
		GByteArray *ba;

		if (dw != NULL)
			(void)g_mime_data_wrapper_write_to_stream(dw, ms);
		ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(ms));
		c->decoded += ba->len;
		add_attachment(c, ba->data, ba->len, g_mime_part_get_filename(part),
		    mt ? mt : "application/octet-stream",
		    disp ? (g_ascii_strcasecmp(disp, "inline") == 0 ? "inline" :
		    "attachment") : "inline", depth, false);
		g_object_unref(ms);
	} else if (GMIME_IS_TEXT_PART(part)) {
		char *t = g_mime_text_part_get_text(GMIME_TEXT_PART(part));
		size_t tl = t ? strlen(t) : 0;

		c->decoded += tl;
		if (t != NULL && strcmp(mt, "text/html") == 0) {
			if (!cpu_over(c))
				html_scan(c, t, tl);
		} else if (t != NULL) {
			scan_text(c, t, tl);
			uu_scan(c, t, tl, depth);
			norm_append(c, &c->text, &c->textlen, t, tl);
			c->text_from_plain = true;
		}
		g_free(t);
	}
	g_free(mt);
}

static void
walk(struct ctx *c, GMimeObject *obj, unsigned depth)
{
	int i, n;

	if (obj == NULL || cpu_over(c))
		return;
	if (depth > c->maxdepth)
		c->maxdepth = depth;
	if (GMIME_IS_MULTIPART(obj)) {
		if (depth >= c->a->lim.depth_max) {
			c->limits |= ANALYSIS_LIM_DEPTH;
			return;
		}
		n = g_mime_multipart_get_count(GMIME_MULTIPART(obj));
		for (i = 0; i < n && !(c->limits & (ANALYSIS_LIM_LEAVES |
		    ANALYSIS_LIM_CPU)); i++)
			walk(c, g_mime_multipart_get_part(GMIME_MULTIPART(obj), i),
			    depth + 1);
	} else if (GMIME_IS_MESSAGE_PART(obj)) {
		GMimeMessage *m = g_mime_message_part_get_message(
		    GMIME_MESSAGE_PART(obj));

		if (depth >= c->a->lim.depth_max) {
			c->limits |= ANALYSIS_LIM_DEPTH;
			return;
		}
		if (m != NULL)
			walk(c, g_mime_message_get_mime_part(m), depth + 1);
	} else if (GMIME_IS_PART(obj))
		leaf(c, GMIME_PART(obj), depth);
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
				set_add(c, s, ad, strlen(ad));
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

	jb_key(jb, "received");
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
			if (e > p && ip_literal(p, (size_t)(e - p), ip, sizeof(ip))) {
				set_add(c, &hop, ip, strlen(ip));
				set_add(c, &c->ips, ip, strlen(ip));
			}
		}
		jb_obj_open(jb);
		set_json(jb, "ip", &hop);
		jb_obj_close(jb);
		set_free(&hop);
	}
	jb_arr_close(jb);
}

/*
 * Whether d[i..] is a MIME type GMime would nest: "multipart" anywhere (it
 * is rare in text; with or without a subtype), or "message" followed by
 * comments and folding whitespace, then '/'.  GMime takes "multipart (x)
 * /mixed" and "message\n /rfc822" as containers, so the separators are
 * skipped as its parser would; more than CFWS_MAX bytes of them count as a
 * container (a safe over-count: it only cuts earlier).
 */
#define CFWS_MAX	4096
static bool
container_at(const unsigned char *d, size_t len, size_t i)
{
	size_t j, end;
	int nest = 0;

	if (len - i >= 9 && g_ascii_strncasecmp((const char *)d + i,
	    "multipart", 9) == 0)
		return true;
	if (len - i < 7 || g_ascii_strncasecmp((const char *)d + i, "message",
	    7) != 0)
		return false;
	end = len - i - 7 > CFWS_MAX ? i + 7 + CFWS_MAX : len;
	for (j = i + 7; j < end; j++) {
		if (nest > 0) {
			if (d[j] == '\\')
				j++;
			else if (d[j] == '(')
				nest++;
			else if (d[j] == ')')
				nest--;
		} else if (d[j] == '(')
			nest++;
		else if (d[j] == '/')
			return true;
		else if (d[j] != ' ' && d[j] != '\t' && d[j] != '\r' &&
		    d[j] != '\n')
			return false;
	}
	return j < len;		/* separators beyond CFWS_MAX: count it */
}

/*
 * Whether the line at d[i..] looks like a header field ("name:"), which GMime
 * would make an object of, wherever it is (a part's header or not: a safe
 * over-count).
 */
static bool
field_at(const unsigned char *d, size_t len, size_t i)
{
	size_t j;

	for (j = i; j < len && j - i <= 76 && d[j] > ' ' && d[j] < 0x7f &&
	    d[j] != ':'; j++)
		;
	return j > i && j < len && d[j] == ':';
}

/*
 * Where GMime must stop: before the (containers_max+1)th multipart or
 * message type (container_at()), so a nested bomb costs at most that many
 * entities, and before the (headers_max+1)th header-like line, since GMime
 * keeps an object per field (800,000 "a: b" lines: 2.5 s and 520 MB).
 * Returns the length to parse; *lim gets the cap that cut.
 */
static size_t
raw_cut(const unsigned char *d, size_t len, const struct analysis_limits *l,
    unsigned *lim)
{
	unsigned n = 0, fields = 0;
	size_t i;

	for (i = 0; i < len; i++) {
		if ((i == 0 || d[i - 1] == '\n') && field_at(d, len, i) &&
		    ++fields > l->headers_max) {
			*lim |= ANALYSIS_LIM_HEADERS;
			return i;
		}
		if ((d[i] | 0x20) != 'm' || len - i < 7 || !container_at(d, len, i))
			continue;
		if (++n > l->containers_max) {
			while (i > 0 && d[i - 1] != '\n')
				i--;
			*lim |= ANALYSIS_LIM_CONTAINERS;
			return i;
		}
	}
	return len;
}

/*
 * The bytes given to GMime: d[0..len) with every header-like field (a
 * field_at() line and the continuation lines after it) cut at FIELD_MAX
 * bytes.  GMime's parameter list is quadratic (8,000 parameters on one
 * Content-Type: 0.24 s; 500,000: minutes) and an address list costs an
 * object per address (600,000: 1.9 s, 275 MB).  A body line that looks like
 * a field is cut the same way past FIELD_MAX: rare, and named ("headers").
 */
#define FIELD_MAX	(32 * 1024)
static GByteArray *
raw_prepare(const unsigned char *d, size_t len, unsigned *lim)
{
	GByteArray *ba = g_byte_array_sized_new((guint)len);
	size_t i = 0, e, field = 0;
	bool in_field = false;

	while (i < len) {
		const unsigned char *nl = memchr(d + i, '\n', len - i);

		e = nl ? (size_t)(nl - d) + 1 : len;
		if (field_at(d, len, i)) {
			in_field = true;
			field = 0;
		} else if (!(in_field && (d[i] == ' ' || d[i] == '\t')))
			in_field = false;
		if (in_field && field + (e - i) > FIELD_MAX) {
			*lim |= ANALYSIS_LIM_HEADERS;
			if (field < FIELD_MAX) {
				g_byte_array_append(ba, d + i,
				    (guint)(FIELD_MAX - field));
				g_byte_array_append(ba, (const guint8 *)"\n", 1);
				field = FIELD_MAX;
			}
			i = e;
			continue;
		}
		if (in_field)
			field += e - i;
		g_byte_array_append(ba, d + i, (guint)(e - i));
		i = e;
	}
	return ba;
}

static void
warn_cb(gint64 off, GMimeParserWarning code, const gchar *item, gpointer arg)
{
	struct ctx *c = arg;

	c->warnings++;
}

static const char *const limit_names[] = { "raw", "containers", "depth",
    "leaves", "decoded", "blob", "html", "items", "text", "cpu", "headers" };

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
	plen = raw_cut(eml, plen, &a->lim, &c.limits);
	g_mime_parser_options_set_warning_callback(a->popts, warn_cb, &c);
	st = g_mime_stream_mem_new_with_byte_array(raw_prepare(eml, plen,
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

		jb_kcstr(jb, "subject", g_mime_message_get_subject(m));
		jb_kcstr(jb, "message_id", g_mime_message_get_message_id(m));
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
		set_json(jb, "address", &c.from);
		jb_obj_close(jb);
		jb_key(jb, "reply_to");
		jb_obj_open(jb);
		set_json(jb, "address", &c.reply_to);
		jb_obj_close(jb);
		jb_key(jb, "to");
		jb_obj_open(jb);
		set_json(jb, "address", &c.to);
		jb_obj_close(jb);
		if (c.cc.n) {
			jb_key(jb, "cc");
			jb_obj_open(jb);
			set_json(jb, "address", &c.cc);
			jb_obj_close(jb);
		}
		if ((v = g_mime_object_get_header(mo, "X-Mailer")) != NULL)
			jb_kcstr(jb, "x_mailer", v);
		if (g_mime_message_get_mime_part(m) != NULL) {
			GMimeContentType *ct = g_mime_object_get_content_type(
			    g_mime_message_get_mime_part(m));
			char *t = ct ? g_mime_content_type_get_mime_type(ct) : NULL;

			jb_kcstr(jb, "content_type", t);
			g_free(t);
		}
		walk(&c, g_mime_message_get_mime_part(m), 0);
	}
	jb_key(jb, "attachments");
	jb_arr_open(jb);
	for (i = 0; i < c.natt; i++) {
		struct att *t = &c.att[i];
		const char *dot = t->name ? strrchr(t->name, '.') : NULL;

		jb_obj_open(jb);
		jb_key(jb, "file");
		jb_obj_open(jb);
		jb_kcstr(jb, "name", t->name);
		if (dot && dot[1] && strlen(dot + 1) <= 16)
			jb_kcstr(jb, "extension", dot + 1);
		jb_kcstr(jb, "mime_type", t->declared);
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
		jb_kcstr(jb, "magic_type", t->magic);
		jb_kcstr(jb, "disposition", t->disposition);
		jb_kuint(jb, "depth", t->depth);
		if (t->archive)
			jb_kbool(jb, "archive", true);
		if (t->zip_encrypted)
			jb_kbool(jb, "encrypted", true);
		jb_obj_close(jb);
		jb_obj_close(jb);
	}
	jb_arr_close(jb);
	jb_obj_close(jb);	/* email */

	if (m != NULL && (v = g_mime_object_get_header(mo, "User-Agent")) != NULL) {
		jb_key(jb, "user_agent");
		jb_obj_open(jb);
		jb_kcstr(jb, "original", v);
		jb_obj_close(jb);
	}
	jb_key(jb, "url");
	jb_obj_open(jb);
	set_json(jb, "full", &c.urls);
	set_json(jb, "domain", &c.domains);
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

	jb_key(jb, "fosr");
	jb_obj_open(jb);
	jb_kcstr(jb, "sha256", sha256);
	jb_kuint(jb, "size", len);
	if (m != NULL) {
		set_json(jb, "return_path", &c.return_path);
		received(&c, m, jb);
	}
	set_json(jb, "body_addresses", &c.emails);
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
	(void)cpu_over(&c);
	res->limits = c.limits;
	jb_key(jb, "limits");
	jb_arr_open(jb);
	for (i = 0; i < sizeof(limit_names) / sizeof(limit_names[0]); i++)
		if (c.limits & (1u << i))
			jb_cstr(jb, limit_names[i]);
	jb_arr_close(jb);
	jb_obj_close(jb);	/* analysis */
	jb_obj_close(jb);	/* fosr */

	jb_key(jb, "related");
	jb_obj_open(jb);
	set_json(jb, "ip", &c.ips);
	set_json(jb, "hosts", &c.domains);
	jb_key(jb, "hash");
	jb_arr_open(jb);
	jb_cstr(jb, sha256);
	for (i = 0; i < res->nblobs; i++)
		jb_cstr(jb, res->blobs[i].sha256);
	jb_arr_close(jb);
	jb_obj_close(jb);

	g_mime_parser_options_set_warning_callback(a->popts, NULL, NULL);
	if (m != NULL)
		g_object_unref(m);
	for (i = 0; i < c.natt; i++) {
		free(c.att[i].name);
		free(c.att[i].declared);
		free(c.att[i].magic);
	}
	free(c.att);
	set_free(&c.urls);
	set_free(&c.domains);
	set_free(&c.ips);
	set_free(&c.emails);
	set_free(&c.from);
	set_free(&c.reply_to);
	set_free(&c.to);
	set_free(&c.cc);
	set_free(&c.return_path);
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
