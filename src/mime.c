/*
 * Bounded MIME decoding for the rules engine.  Our own small reader rather than
 * GMime: the whole job is "give me the decoded text", and owning the loop lets
 * every cap (raw bytes examined, decoded bytes kept, depth, parts) sit where a
 * byte is produced.  Charsets go through iconv(3), with U+FFFD for bytes that
 * do not convert; text declared (or defaulted to) UTF-8/ASCII that is not
 * valid UTF-8 has each stray byte read as Latin-1, so the output is valid UTF-8.
 */
#include <errno.h>
#include <iconv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mime.h"
#include "util.h"
#include "utf8.h"

#define MIME_CT_MAX		96	/* "type/subtype" kept */
#define MIME_BOUNDARY_MAX	200	/* RFC 2046 says 70; be generous */
#define MIME_CHARSET_MAX	48
#define MIME_MSG_DECODED_MAX	(1024u * 1024)	/* encoded attached messages */

enum mime_cte { CTE_IDENTITY, CTE_BASE64, CTE_QP };

/* A growing output buffer with a hard cap. */
struct mbuf {
	char	*p;
	size_t	 len;
	size_t	 cap;
	size_t	 max;
	bool	 full;		/* something was cut at max */
	bool	 oom;
};

/* What one entity's header says about its content. */
struct entity {
	char		 ctype[MIME_CT_MAX];	/* lower case, "" = none */
	char		 boundary[MIME_BOUNDARY_MAX + 1];
	char		 charset[MIME_CHARSET_MAX];
	enum mime_cte	 cte;
};

/* The state of one mime_parse() walk. */
struct walk {
	struct mime_msg	*m;
	struct mbuf	 body;
	size_t		 hdr_total;
	int		 hdr_cap;
	int		 parts;
	size_t		 msg_decoded;	/* attached messages' decoded bytes */
	bool		 oom;
};

static void	 mbuf_put(struct mbuf *, const void *, size_t);
static void	 mbuf_putc(struct mbuf *, char);
static void	 put_sanitized(struct mbuf *, const unsigned char *, size_t);
static bool	 charset_clean(const char *, size_t, char *, size_t);
static bool	 charset_is_utf8(const char *);
static void	 conv_append(struct mbuf *, const char *,
		    const unsigned char *, size_t);
static void	 lower_copy(char *, size_t, const char *, size_t);
static const char *skip_ws(const char *, const char *);
static void	 parse_ctype(struct entity *, const char *, size_t);
static void	 parse_cte(struct entity *, const char *, size_t);
static size_t	 parse_headers(struct walk *, const char *, size_t,
		    struct entity *, bool, bool);
static void	 header_done(struct walk *, struct entity *, const char *,
		    size_t, const char *, size_t, bool, bool);
static bool	 delim_end(const char *, const char *);
static bool	 find_delim(const char *, size_t, size_t, const char *, size_t,
		    size_t *);
static bool	 walk_multipart(struct walk *, const char *, size_t,
		    const struct entity *, int);
static void	 walk_text(struct walk *, const char *, size_t,
		    const struct entity *);
static void	 walk_message(struct walk *, const char *, size_t,
		    const struct entity *, int);
static void	 walk_entity(struct walk *, const char *, size_t, int, bool,
		    bool);

static const signed char b64_tab[256] = {
	['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6,
	['G'] = 7, ['H'] = 8, ['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12,
	['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18,
	['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
	['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30,
	['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36,
	['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
	['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
	['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54,
	['2'] = 55, ['3'] = 56, ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60,
	['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
};

/* Append n bytes, cutting at b->max (and remembering the cut). */
static void
mbuf_put(struct mbuf *b, const void *s, size_t n)
{
	if (b->oom || n == 0)
		return;
	if (n > b->max - b->len) {
		n = b->max - b->len;
		b->full = true;
		if (n == 0)
			return;
	}
	if (util_grow(&b->p, &b->cap, b->len + n + 1, 256, b->max + 1) == -1) {
		b->oom = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

/* Append one byte. */
static void
mbuf_putc(struct mbuf *b, char c)
{
	mbuf_put(b, &c, 1);
}

/* Append s as UTF-8: valid sequences as they are, stray bytes as Latin-1. */
static void
put_sanitized(struct mbuf *b, const unsigned char *s, size_t n)
{
	size_t i = 0, run = 0, k;
	uint64_t w;
	uint32_t cp;
	unsigned char l1[UTF8_MAX];

	while (i < n && !b->full) {
		if (s[i] < 0x80) {
			/* ASCII, the common case: eight bytes a step. */
			for (i++; i + 8 <= n; i += 8) {
				memcpy(&w, s + i, 8);
				if ((w & 0x8080808080808080ull) != 0)
					break;
			}
			continue;
		}
		if ((k = utf8_decode(s + i, n - i, &cp)) > 0) {
			i += k;
			continue;
		}
		mbuf_put(b, s + run, i - run);
		mbuf_put(b, l1, utf8_encode(s[i], l1));
		run = ++i;
	}
	mbuf_put(b, s + run, i - run);
}

/*
 * Copy a charset name into out if it looks like one (letters, digits and
 * "-_.:+", an RFC 2231 "*lang" suffix dropped); false otherwise.  The check
 * keeps "//TRANSLIT"-style suffixes and odd bytes away from iconv_open().
 */
static bool
charset_clean(const char *s, size_t n, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; i < n && s[i] != '*'; i++) {
		if (i + 1 >= outlen)
			return false;
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' &&
		    s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		    strchr("-_.:+", s[i]) != NULL) || s[i] == '\0')
			return false;
		out[i] = s[i];
	}
	out[i] = '\0';
	return i > 0;
}

/* Whether cs names UTF-8 or a subset of it (ASCII). */
static bool
charset_is_utf8(const char *cs)
{
	return *cs == '\0' || strcasecmp(cs, "utf-8") == 0 ||
	    strcasecmp(cs, "utf8") == 0 || strcasecmp(cs, "us-ascii") == 0 ||
	    strcasecmp(cs, "ascii") == 0;
}

/* Convert n bytes in charset cs to UTF-8 and append them to out. */
static void
conv_append(struct mbuf *out, const char *cs, const unsigned char *in,
    size_t n)
{
	static const char repl[] = "\xef\xbf\xbd";
	char tmp[4096], *ip, *op;
	size_t il, ol, r;
	iconv_t cd;

	if (charset_is_utf8(cs) ||
	    (cd = iconv_open("UTF-8", cs)) == (iconv_t)-1) {
		put_sanitized(out, in, n);
		return;
	}
	ip = (char *)(uintptr_t)in;
	il = n;
	while (il > 0 && !out->full && !out->oom) {
		op = tmp;
		ol = sizeof(tmp);
		r = iconv(cd, &ip, &il, &op, &ol);
		mbuf_put(out, tmp, sizeof(tmp) - ol);
		if (r != (size_t)-1)
			break;
		if (errno == E2BIG && ol < sizeof(tmp))
			continue;
		if (errno == EILSEQ || errno == EINVAL) {
			mbuf_put(out, repl, 3);
			if (il > 0) {
				ip++;
				il--;
			}
			continue;
		}
		break;	/* E2BIG without progress, or anything unexpected */
	}
	op = tmp;
	ol = sizeof(tmp);
	if (iconv(cd, NULL, NULL, &op, &ol) != (size_t)-1)
		mbuf_put(out, tmp, sizeof(tmp) - ol);
	iconv_close(cd);
}

/* Lenient base64 decode (see mime.h). */
size_t
mime_b64_decode(const char *in, size_t len, unsigned char *out, size_t outmax)
{
	uint32_t acc = 0;
	size_t i, o = 0;
	int bits = 0, v;

	for (i = 0; i < len && o < outmax; i++) {
		if ((v = b64_tab[(unsigned char)in[i]]) == 0)
			continue;
		acc = (acc << 6) | (uint32_t)(v - 1);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	return o;
}

/* Quoted-printable decode (see mime.h); header mode reads '_' as a space. */
size_t
mime_qp_decode(const char *in, size_t len, bool header, unsigned char *out,
    size_t outmax)
{
	size_t i = 0, o = 0, j;
	int h, l;

	while (i < len && o < outmax) {
		if (in[i] == '=') {
			if (i + 2 < len && (h = util_hexval((unsigned char)in[i + 1])) >= 0 &&
			    (l = util_hexval((unsigned char)in[i + 2])) >= 0) {
				out[o++] = (unsigned char)(h << 4 | l);
				i += 3;
				continue;
			}
			/* Soft line break, possibly after stray blanks. */
			for (j = i + 1; j < len && (in[j] == ' ' || in[j] == '\t');
			    j++)
				;
			if (j < len && in[j] == '\n') {
				i = j + 1;
				continue;
			}
			if (j + 1 < len && in[j] == '\r' && in[j + 1] == '\n') {
				i = j + 2;
				continue;
			}
			if (j == len && !header) {
				i = len;
				continue;
			}
			out[o++] = '=';
			i++;
			continue;
		}
		out[o++] = header && in[i] == '_' ? ' ' : (unsigned char)in[i];
		i++;
	}
	return o;
}

/* Unfold and RFC 2047-decode a header value (see mime.h). */
char *
mime_decode_header(const char *s, size_t len, size_t max, size_t *outlen)
{
	struct mbuf out = { .max = max };
	char *u, cs[MIME_CHARSET_MAX];
	const char *q, *e, *t, *end;
	unsigned char *dec;
	size_t n = 0, i, lit, declen, lit_max;
	bool prev_ew = false, ws_only;
	int enc;

	if (len > max * 4 + 64)
		len = max * 4 + 64;
	if ((u = malloc(len + 1)) == NULL)
		return NULL;
	/* Unfold: drop the line breaks, keep the blanks (RFC 5322 2.2.3). */
	for (i = 0; i < len; i++)
		if (s[i] != '\r' && s[i] != '\n')
			u[n++] = s[i];
	while (n > 0 && (u[n - 1] == ' ' || u[n - 1] == '\t'))
		n--;
	for (i = 0; i < n && (u[i] == ' ' || u[i] == '\t'); i++)
		;
	end = u + n;
	lit = i;
	dec = NULL;	/* allocated at the first encoded word */
	while (i + 1 < n && !out.full) {
		if (u[i] != '=' || u[i + 1] != '?') {
			i++;
			continue;
		}
		/* =?charset?X?text?= */
		lit_max = (size_t)(end - (u + i + 2));
		if (lit_max > MIME_CHARSET_MAX)
			lit_max = MIME_CHARSET_MAX;
		q = memchr(u + i + 2, '?', lit_max);
		if (q == NULL || q + 3 > end || q[2] != '?' ||
		    !charset_clean(u + i + 2, (size_t)(q - (u + i + 2)), cs,
		    sizeof(cs))) {
			i++;
			continue;
		}
		enc = q[1];
		if (enc != 'B' && enc != 'b' && enc != 'Q' && enc != 'q') {
			i++;
			continue;
		}
		t = q + 3;
		for (e = t; e + 1 < end && !(e[0] == '?' && e[1] == '='); e++)
			;
		if (e + 1 >= end)
			break;	/* no "?=" after here: no later word can end */
		/* Blanks between two encoded words are not text (RFC 2047 6.2). */
		for (ws_only = true, q = u + lit; q < u + i; q++)
			if (*q != ' ' && *q != '\t')
				ws_only = false;
		if (dec == NULL && (dec = malloc(n + 1)) == NULL) {
			free(out.p);
			free(u);
			return NULL;
		}
		if (!(prev_ew && ws_only))
			put_sanitized(&out, (unsigned char *)u + lit, i - lit);
		if (enc == 'B' || enc == 'b')
			declen = mime_b64_decode(t, (size_t)(e - t), dec, n);
		else
			declen = mime_qp_decode(t, (size_t)(e - t), true, dec, n);
		conv_append(&out, cs, dec, declen);
		prev_ew = true;
		i = (size_t)(e + 2 - u);
		lit = i;
	}
	if (lit < n)
		put_sanitized(&out, (unsigned char *)u + lit, n - lit);
	free(dec);
	free(u);
	if (out.oom) {
		free(out.p);
		return NULL;
	}
	if (out.p == NULL && (out.p = calloc(1, 1)) == NULL)
		return NULL;
	*outlen = out.len;
	return out.p;
}

/* Copy n bytes of s, lower-cased and NUL-terminated, into out (truncating). */
static void
lower_copy(char *out, size_t outlen, const char *s, size_t n)
{
	size_t i;

	if (n >= outlen)
		n = outlen - 1;
	for (i = 0; i < n; i++)
		out[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
	out[n] = '\0';
}

/* Skip blanks and line breaks. */
static const char *
skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
}

/* Parse a Content-Type value: the type and the boundary and charset params. */
static void
parse_ctype(struct entity *e, const char *s, size_t n)
{
	const char *p = s, *end = s + n, *k, *v;
	char val[MIME_BOUNDARY_MAX + 1];
	size_t klen, vlen;

	p = skip_ws(p, end);
	for (k = p; p < end && *p != ';' && *p != ' ' && *p != '\t' &&
	    *p != '\r' && *p != '\n' && *p != '('; p++)
		;
	lower_copy(e->ctype, sizeof(e->ctype), k, (size_t)(p - k));
	while (p < end) {
		while (p < end && *p != ';')
			p++;
		if (p >= end)
			break;
		p = skip_ws(p + 1, end);
		for (k = p; p < end && *p != '=' && *p != ';'; p++)
			;
		klen = (size_t)(p - k);
		while (klen > 0 && (k[klen - 1] == ' ' || k[klen - 1] == '\t'))
			klen--;
		if (p >= end || *p != '=')
			continue;
		p = skip_ws(p + 1, end);
		vlen = 0;
		if (p < end && *p == '"') {
			for (p++; p < end && *p != '"'; p++) {
				if (*p == '\\' && p + 1 < end)
					p++;
				if (*p == '\r' || *p == '\n')
					continue;
				if (vlen < sizeof(val) - 1)
					val[vlen++] = *p;
			}
			if (p < end)
				p++;
		} else {
			for (v = p; p < end && *p != ';' && *p != ' ' &&
			    *p != '\t' && *p != '\r' && *p != '\n'; p++)
				;
			vlen = (size_t)(p - v);
			if (vlen > sizeof(val) - 1)
				vlen = sizeof(val) - 1;
			memcpy(val, v, vlen);
		}
		val[vlen] = '\0';
		if (klen == 8 && strncasecmp(k, "boundary", 8) == 0 && vlen > 0)
			memcpy(e->boundary, val, vlen + 1);
		else if (klen == 7 && strncasecmp(k, "charset", 7) == 0 &&
		    !charset_clean(val, vlen, e->charset, sizeof(e->charset)))
			e->charset[0] = '\0';
	}
}

/* Parse a Content-Transfer-Encoding value. */
static void
parse_cte(struct entity *e, const char *s, size_t n)
{
	const char *p = skip_ws(s, s + n), *end = s + n;
	size_t l;

	while (end > p && (end[-1] == ' ' || end[-1] == '\t' ||
	    end[-1] == '\r' || end[-1] == '\n'))
		end--;
	l = (size_t)(end - p);
	if (l == 6 && strncasecmp(p, "base64", 6) == 0)
		e->cte = CTE_BASE64;
	else if (l == 16 && strncasecmp(p, "quoted-printable", 16) == 0)
		e->cte = CTE_QP;
	else
		e->cte = CTE_IDENTITY;
}

/*
 * One complete header field: note Content-Type and -Encoding in e; keep the
 * decoded field when top (top-level message) or write it into the body text
 * when nested (the header of an attached message/rfc822).
 */
static void
header_done(struct walk *w, struct entity *e, const char *name, size_t nlen,
    const char *val, size_t vlen, bool top, bool nested)
{
	struct mime_msg *m = w->m;
	struct mime_header *h;
	size_t dlen = 0, max;
	char *d;
	int ncap;

	if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0)
		parse_ctype(e, val, vlen);
	else if (nlen == 25 &&
	    strncasecmp(name, "content-transfer-encoding", 25) == 0)
		parse_cte(e, val, vlen);
	if (top) {
		if (m->nhdrs >= MIME_HDR_MAX ||
		    w->hdr_total >= MIME_HDR_TOTAL_MAX) {
			m->truncated = true;
			return;
		}
		max = MIME_HDR_TOTAL_MAX - w->hdr_total;
		if (max > MIME_HDR_VALUE_MAX)
			max = MIME_HDR_VALUE_MAX;
		if ((d = mime_decode_header(val, vlen, max, &dlen)) == NULL) {
			w->oom = true;
			return;
		}
		if (m->nhdrs == w->hdr_cap) {
			ncap = w->hdr_cap ? w->hdr_cap * 2 : 32;
			if ((h = realloc(m->hdrs, (size_t)ncap * sizeof(*h))) ==
			    NULL) {
				free(d);
				w->oom = true;
				return;
			}
			m->hdrs = h;
			w->hdr_cap = ncap;
		}
		h = &m->hdrs[m->nhdrs++];
		if (nlen >= sizeof(h->name))
			nlen = sizeof(h->name) - 1;
		memcpy(h->name, name, nlen);
		h->name[nlen] = '\0';
		h->value = d;
		h->valuelen = dlen;
		w->hdr_total += dlen;
	} else if (nested) {
		if ((d = mime_decode_header(val, vlen, MIME_HDR_VALUE_MAX,
		    &dlen)) == NULL) {
			w->oom = true;
			return;
		}
		/*
		 * One field, one line: a line break an encoded word decoded
		 * to would start a line that is no field (rules.c skips
		 * trace fields by their lines).
		 */
		for (size_t i = 0; i < dlen; i++)
			if (d[i] == '\r' || d[i] == '\n')
				d[i] = ' ';
		mbuf_put(&w->body, name, nlen);
		mbuf_put(&w->body, ": ", 2);
		mbuf_put(&w->body, d, dlen);
		mbuf_putc(&w->body, '\n');
		free(d);
	}
}

/*
 * Read the header section of the entity p[0..len) into e (and the message's
 * header list when top).  Returns the offset of the body.  An entity whose
 * first line is not a header field (an mbox "From " line aside) has no
 * header section.
 */
static size_t
parse_headers(struct walk *w, const char *p, size_t len, struct entity *e,
    bool top, bool nested)
{
	const char *ls = p, *le, *nl, *end = p + len, *name = NULL, *val = NULL;
	const char *colon, *c, *ne;
	size_t nlen = 0;
	bool first = true;

	memset(e, 0, sizeof(*e));
	/*
	 * An mbox "From " line (RFC 4155) before a message's header is no
	 * part of it: the header follows.  "From :" is the From field.
	 */
	if (top && len >= 5 && memcmp(p, "From ", 5) == 0 &&
	    (nl = memchr(p, '\n', len)) != NULL) {
		for (c = p + 5; c < nl && (*c == ' ' || *c == '\t'); c++)
			;
		if (c < nl && *c != ':')
			ls = nl + 1;
	}
	while (ls < end) {
		nl = memchr(ls, '\n', (size_t)(end - ls));
		le = nl != NULL ? nl : end;
		if (le > ls && le[-1] == '\r')
			le--;
		if (le == ls) {		/* blank line: end of the header */
			if (name != NULL)
				header_done(w, e, name, nlen, val,
				    (size_t)(ls - val), top, nested);
			return nl != NULL ? (size_t)(nl + 1 - p) : len;
		}
		if (*ls == ' ' || *ls == '\t') {
			if (first)
				return 0;
		} else {
			if (name != NULL)
				header_done(w, e, name, nlen, val,
				    (size_t)(ls - val), top, nested);
			name = NULL;
			colon = memchr(ls, ':', (size_t)(le - ls));
			for (c = ls; colon != NULL && c < colon &&
			    (unsigned char)*c > ' ' && (unsigned char)*c < 0x7f;
			    c++)
				;
			ne = c;
			/*
			 * Blanks before the colon: the obsolete syntax (RFC
			 * 5322 4.5), a header field for Postfix too.
			 */
			while (colon != NULL && c < colon && (*c == ' ' ||
			    *c == '\t'))
				c++;
			if (colon == NULL || c < colon || ne == ls) {
				if (first)
					return 0;	/* no header section */
				/* A malformed line inside the header: skip it. */
			} else {
				name = ls;
				nlen = (size_t)(ne - ls);
				val = colon + 1;
			}
		}
		first = false;
		if (nl == NULL)
			break;
		ls = nl + 1;
	}
	if (name != NULL)
		header_done(w, e, name, nlen, val, (size_t)(end - val), top,
		    nested);
	return len;
}

/*
 * Whether a delimiter ends at q as RFC 2046 5.1.1 wants: "--" (the close
 * delimiter) or blanks up to the end of the line.  So boundary "b1" does not
 * match the line "--b10".
 */
static bool
delim_end(const char *q, const char *end)
{
	if (q + 2 <= end && q[0] == '-' && q[1] == '-')
		return true;
	while (q < end && (*q == ' ' || *q == '\t'))
		q++;
	return q == end || *q == '\r' || *q == '\n';
}

/* Find the delimiter d at the start of a line in p[from..len); its offset in *at. */
static bool
find_delim(const char *p, size_t len, size_t from, const char *d, size_t dlen,
    size_t *at)
{
	const char *q;

	while (from < len) {
		q = memmem(p + from, len - from, d, dlen);
		if (q == NULL)
			return false;
		if ((q == p || q[-1] == '\n') && delim_end(q + dlen, p + len)) {
			*at = (size_t)(q - p);
			return true;
		}
		from = (size_t)(q - p) + 1;
	}
	return false;
}

/*
 * Walk the body parts of a multipart entity.  Returns false when no
 * delimiter is found (the caller then reads the body as text).
 */
static bool
walk_multipart(struct walk *w, const char *p, size_t len,
    const struct entity *e, int depth)
{
	char delim[MIME_BOUNDARY_MAX + 3];
	size_t dlen, at, start, next;
	const char *nl;

	dlen = (size_t)snprintf(delim, sizeof(delim), "--%s", e->boundary);
	if (!find_delim(p, len, 0, delim, dlen, &at))
		return false;
	for (;;) {
		at += dlen;
		if (at + 2 <= len && p[at] == '-' && p[at + 1] == '-')
			return true;	/* close delimiter */
		if ((nl = memchr(p + at, '\n', len - at)) == NULL)
			return true;
		start = (size_t)(nl + 1 - p);
		if (!find_delim(p, len, start, delim, dlen, &next)) {
			walk_entity(w, p + start, len - start, depth + 1, false,
			    false);
			return true;
		}
		/* The line break before a delimiter belongs to it. */
		at = next;
		if (next > start && p[next - 1] == '\n')
			next--;
		if (next > start && p[next - 1] == '\r')
			next--;
		walk_entity(w, p + start, next - start, depth + 1, false,
		    false);
		if (w->body.full || w->oom || w->parts >= MIME_PARTS_MAX)
			return true;
	}
}

/* Decode a text leaf and append it, as UTF-8, to the body text. */
static void
walk_text(struct walk *w, const char *p, size_t len, const struct entity *e)
{
	unsigned char *dec;
	size_t room, n;

	/* Enough decoded bytes to fill what is left (UTF-16 needs 2 per char). */
	room = (w->body.max - w->body.len) * 2 + 16;
	if (e->cte == CTE_IDENTITY) {
		conv_append(&w->body, e->charset, (const unsigned char *)p,
		    len < room ? len : room);
	} else {
		if (len < room)
			room = len;
		if ((dec = malloc(room + 1)) == NULL) {
			w->oom = true;
			return;
		}
		if (e->cte == CTE_BASE64)
			n = mime_b64_decode(p, len, dec, room);
		else
			n = mime_qp_decode(p, len, false, dec, room);
		conv_append(&w->body, e->charset, dec, n);
		free(dec);
	}
	if (w->body.len > 0 && w->body.p[w->body.len - 1] != '\n')
		mbuf_putc(&w->body, '\n');
}

/*
 * Walk an attached message.  RFC 2046 5.2.1 allows it no base64 or
 * quoted-printable encoding, yet mail clients send it so: decode it first
 * (at most MIME_MSG_DECODED_MAX bytes for the whole walk), so that its
 * header is read as a header and its text as text.
 */
static void
walk_message(struct walk *w, const char *p, size_t len,
    const struct entity *e, int depth)
{
	unsigned char *dec;
	size_t n, room;

	if (e->cte == CTE_IDENTITY) {
		walk_entity(w, p, len, depth + 1, false, true);
		return;
	}
	room = MIME_MSG_DECODED_MAX - w->msg_decoded;
	if (room > len)
		room = len;
	if (room == 0) {
		w->m->truncated = true;
		return;
	}
	if ((dec = malloc(room)) == NULL) {
		w->oom = true;
		return;
	}
	if (e->cte == CTE_BASE64)
		n = mime_b64_decode(p, len, dec, room);
	else
		n = mime_qp_decode(p, len, false, dec, room);
	w->msg_decoded += n;
	walk_entity(w, (const char *)dec, n, depth + 1, false, true);
	free(dec);
}

/*
 * Walk one entity: its header, then by type its parts (multipart), the
 * enclosed message (message/rfc822), or its text (any text type, or no type).
 */
static void
walk_entity(struct walk *w, const char *p, size_t len, int depth, bool top,
    bool nested)
{
	struct entity e;
	size_t off;

	if (w->oom || w->body.full)
		return;
	if (depth > MIME_DEPTH_MAX || w->parts >= MIME_PARTS_MAX) {
		w->m->truncated = true;
		return;
	}
	w->parts++;
	off = parse_headers(w, p, len, &e, top, nested);
	p += off;
	len -= off;
	if (strncmp(e.ctype, "multipart/", 10) == 0 && e.boundary[0] != '\0') {
		if (walk_multipart(w, p, len, &e, depth))
			return;
		walk_text(w, p, len, &e);
	} else if (strcmp(e.ctype, "message/rfc822") == 0 ||
	    strcmp(e.ctype, "message/global") == 0) {
		walk_message(w, p, len, &e, depth);
	} else if (e.ctype[0] == '\0' || strncmp(e.ctype, "text/", 5) == 0) {
		walk_text(w, p, len, &e);
	}
}

/* Decode a raw message into m (see mime.h). */
int
mime_parse(const unsigned char *msg, size_t len, struct mime_msg *m)
{
	struct walk w;

	memset(m, 0, sizeof(*m));
	memset(&w, 0, sizeof(w));
	w.m = m;
	w.body.max = MIME_BODY_MAX;
	if (len > MIME_RAW_MAX) {
		len = MIME_RAW_MAX;
		m->truncated = true;
	}
	if (msg != NULL)
		walk_entity(&w, (const char *)msg, len, 0, true, false);
	if (w.oom || w.body.oom) {
		free(w.body.p);
		mime_msg_free(m);
		return -1;
	}
	if (w.body.p == NULL && (w.body.p = calloc(1, 1)) == NULL) {
		mime_msg_free(m);
		return -1;
	}
	m->body = w.body.p;
	m->bodylen = w.body.len;
	if (w.body.full)
		m->truncated = true;
	return 0;
}

/* Free what mime_parse() allocated; m is left empty. */
void
mime_msg_free(struct mime_msg *m)
{
	int i;

	if (m == NULL)
		return;
	for (i = 0; i < m->nhdrs; i++)
		free(m->hdrs[i].value);
	free(m->hdrs);
	free(m->body);
	memset(m, 0, sizeof(*m));
}

/* The first header named name (case-insensitive), or NULL. */
const struct mime_header *
mime_header_get(const struct mime_msg *m, const char *name)
{
	int i;

	for (i = 0; i < m->nhdrs; i++)
		if (strcasecmp(m->hdrs[i].name, name) == 0)
			return &m->hdrs[i];
	return NULL;
}
