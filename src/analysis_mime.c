/*
 * Mail analysis, the MIME side: the raw bytes cut before GMime sees them
 * (containers_max, headers_max), the walk of GMime's tree under the depth,
 * leaf and CPU caps, each leaf part (text to analysis_scan.c, the rest an
 * attachment), and the attachments themselves: decoded within decoded_max,
 * hashed (MD5, SHA-1, SHA-256, ssdeep), typed by libmagic, ZIP encryption,
 * uuencoded files found in text.  The bounds are at the top of analysis.c.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fuzzy.h>
#include <gmime/gmime.h>
#include <magic.h>
#include <openssl/evp.h>

#include "analysis.h"
#include "analysis_int.h"
#include "jbuf.h"
#include "util.h"

static void	uu_scan(struct ctx *, const char *, size_t, unsigned);
static void	zip_check(const unsigned char *, size_t, struct att *);
static void	add_attachment(struct ctx *, const unsigned char *, size_t,
		    const char *, const char *, const char *, unsigned, bool);
static void	leaf(struct ctx *, GMimePart *, unsigned);
static size_t	decoded_left(const struct ctx *);

/*
 * What is left of decoded_max.  The count can pass the cap: a text part is
 * counted after its charset conversion, which grows it (Latin-1 to UTF-8:
 * up to twice), so "decoded_max - decoded" would wrap and let every later
 * part through.
 */
static size_t
decoded_left(const struct ctx *c)
{
	return c->decoded >= c->a->lim.decoded_max ? 0 :
	    c->a->lim.decoded_max - c->decoded;
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
		/* each file is a leaf: the same caps as MIME leaves */
		if (analysis_cpu_over(c))
			return;
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
		if (decoded_left(c) < (size_t)(stop - body)) {
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
	if ((size_t)enclen > decoded_left(c)) {
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
			if (!analysis_cpu_over(c))
				analysis_html_scan(c, t, tl);
		} else if (t != NULL) {
			analysis_scan_text(c, t, tl);
			uu_scan(c, t, tl, depth);
			analysis_norm_append(c, &c->text, &c->textlen, t, tl);
			c->text_from_plain = true;
		}
		g_free(t);
	}
	g_free(mt);
}

void
analysis_walk(struct ctx *c, GMimeObject *obj, unsigned depth)
{
	int i, n;

	if (obj == NULL || analysis_cpu_over(c))
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
			analysis_walk(c, g_mime_multipart_get_part(GMIME_MULTIPART(obj), i),
			    depth + 1);
	} else if (GMIME_IS_MESSAGE_PART(obj)) {
		GMimeMessage *m = g_mime_message_part_get_message(
		    GMIME_MESSAGE_PART(obj));

		if (depth >= c->a->lim.depth_max) {
			c->limits |= ANALYSIS_LIM_DEPTH;
			return;
		}
		if (m != NULL)
			analysis_walk(c, g_mime_message_get_mime_part(m), depth + 1);
	} else if (GMIME_IS_PART(obj))
		leaf(c, GMIME_PART(obj), depth);
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
size_t
analysis_raw_cut(const unsigned char *d, size_t len, const struct analysis_limits *l,
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
 * bytes, a Content-* field cut before its (PARAMS_MAX+1)th ';' and address
 * fields before their ADDRS_TOTAL_MAXth ',' over the mail.  GMime's
 * parameter list is quadratic (each parameter's name is compared with
 * every one before it: 340 Content-Types of 4,600 parameters each, 32 KB,
 * cost 12.5 s, 65% in g_ascii_strcasecmp) and it keeps an object per
 * parameter and per address (300 To: fields of 32 KB, 1.2 M addresses:
 * 2.1 s and 388 MB, parsed before any CPU check).  A body line that looks
 * like a field is cut the same way: rare, and named ("headers").
 */
#define FIELD_MAX	(32 * 1024)
#define PARAMS_MAX	64	/* RFC 2231 continuations of a long name: ~20 */
/*
 * and all Content-* fields together: 9,000 parts of two 63-parameter
 * fields (7 MB) took 1.85 s and 380 MB in GMime (an object per parameter);
 * 1,000 parts of 5 parameters are 5,000.
 */
#define PARAMS_TOTAL_MAX	20000
#define ADDRS_TOTAL_MAX		20000	/* ',' in address fields, over the mail */

/* Whether the field at d[i..] is one GMime parses as an address list. */
static bool
addr_field(const unsigned char *d, size_t len, size_t i)
{
	static const char *const names[] = { "to", "cc", "bcc", "from",
	    "reply-to", "sender", "resent-to", "resent-cc", "resent-bcc",
	    "resent-from", "resent-sender", "resent-reply-to" };
	const unsigned char *c = memchr(d + i, ':', len - i < 80 ? len - i : 80);
	size_t k, n;

	if (c == NULL)
		return false;
	n = (size_t)(c - (d + i));
	for (k = 0; k < sizeof(names) / sizeof(names[0]); k++)
		if (strlen(names[k]) == n && g_ascii_strncasecmp(
		    (const char *)d + i, names[k], n) == 0)
			return true;
	return false;
}
GByteArray *
analysis_raw_prepare(const unsigned char *d, size_t len, unsigned *lim)
{
	GByteArray *ba = g_byte_array_sized_new((guint)len);
	size_t i = 0, e, field = 0, j;
	unsigned params = 0, total = 0, pmax = PARAMS_MAX, atotal = 0;
	bool in_field = false, content = false, addrs = false;
	unsigned char sep = ';';

	while (i < len) {
		const unsigned char *nl = memchr(d + i, '\n', len - i);

		e = nl ? (size_t)(nl - d) + 1 : len;
		if (field_at(d, len, i)) {
			in_field = true;
			field = 0;
			if (addrs)
				atotal += params;
			else
				total += params;
			params = 0;
			content = len - i > 8 && g_ascii_strncasecmp(
			    (const char *)d + i, "content-", 8) == 0;
			addrs = !content && addr_field(d, len, i);
			sep = addrs ? ',' : ';';
			/* (a cut field counted one more than it kept) */
			if (addrs)
				pmax = atotal >= ADDRS_TOTAL_MAX ? 0 :
				    ADDRS_TOTAL_MAX - atotal;
			else
				pmax = total >= PARAMS_TOTAL_MAX ? 0 :
				    PARAMS_TOTAL_MAX - total < PARAMS_MAX ?
				    PARAMS_TOTAL_MAX - total : PARAMS_MAX;
		} else if (!(in_field && (d[i] == ' ' || d[i] == '\t')))
			in_field = false;
		if (in_field && field < FIELD_MAX && (content || addrs)) {
			for (j = i; j < e && params <= pmax; j++)
				if (d[j] == sep)
					params++;
			if (params > pmax) {
				/* up to the separator that made one too many */
				*lim |= ANALYSIS_LIM_HEADERS;
				g_byte_array_append(ba, d + i, (guint)(j - 1 - i));
				g_byte_array_append(ba, (const guint8 *)"\n", 1);
				field = FIELD_MAX;
				i = e;
				continue;
			}
		}
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
