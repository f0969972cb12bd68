/*
 * hpfeeds 3 frame codec and the payload format (see hpfeeds_wire.h).  Pure:
 * never logs; frames never allocate; a peer's bytes are only read within the
 * length it announced and the buffer the caller holds.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "hpfeeds_wire.h"
#include "log.h"
#include "util.h"

#define HPF_JSON_DEPTH		32

static void	 wire_err(char *err, size_t errlen, const char *fmt, ...)
		    __attribute__((format(printf, 3, 4)));
static uint32_t	 get_be32(const uint8_t *p);
static void	 put_hdr(uint8_t *out, uint32_t total, uint8_t op);
static int	 get_str8(const uint8_t **p, const uint8_t *end, const uint8_t **s,
		    size_t *slen);
static const char *json_ws(const char *p, const char *e);
static const char *json_str_end(const char *p, const char *e);
static const char *json_value_end(const char *p, const char *e, int depth);
static size_t	 utf8_put(unsigned char *out, uint32_t cp);
static uint32_t	 hex4(const char *p);
static size_t	 json_str_decode(const char *val, size_t vallen, unsigned char *out);
static int	 payload_try(struct jbuf *, const char *sha, const unsigned char *body,
		    size_t n, bool truncated, uint64_t size, const char *b64, size_t b64len,
		    const char *meta, size_t metalen);

/* Fill the caller's error buffer, if any. */
static void
wire_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Read a big-endian u32. */
static uint32_t
get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	    ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Write the 5-byte frame header. */
static void
put_hdr(uint8_t *out, uint32_t total, uint8_t op)
{
	out[0] = (uint8_t)(total >> 24);
	out[1] = (uint8_t)(total >> 16);
	out[2] = (uint8_t)(total >> 8);
	out[3] = (uint8_t)total;
	out[4] = op;
}

/* Take one str8 from [*p, end); -1 when its length overruns end. */
static int
get_str8(const uint8_t **p, const uint8_t *end, const uint8_t **s, size_t *slen)
{
	size_t n;

	if (*p >= end)
		return -1;
	n = **p;
	if ((size_t)(end - *p - 1) < n)
		return -1;
	*s = *p + 1;
	*slen = n;
	*p += 1 + n;
	return 0;
}

/* Largest frame the reference broker accepts for op. */
uint32_t
hpf_wire_max_frame(uint8_t op)
{
	switch (op) {
	case HPF_OP_ERROR:
	case HPF_OP_PUBLISH:
		return HPF_MAX_FRAME;
	case HPF_OP_INFO:
	case HPF_OP_AUTH:
		return HPF_MAX_FRAME_SMALL;
	case HPF_OP_SUBSCRIBE:
	case HPF_OP_UNSUBSCRIBE:
		return HPF_MAX_FRAME_SUB;
	default:
		return 0;
	}
}

/* Check the header at buf: 1 complete and plausible, 0 short, -1 bad. */
int
hpf_wire_header(const void *buf, size_t len, uint32_t *total, uint8_t *op,
    char *err, size_t errlen)
{
	const uint8_t *p = buf;
	uint32_t n, max;

	if (len < HPF_HDR_LEN)
		return 0;
	n = get_be32(p);
	max = hpf_wire_max_frame(p[4]);
	if (max == 0) {
		wire_err(err, errlen, "unknown opcode %u", (unsigned)p[4]);
		return -1;
	}
	if (n < HPF_HDR_LEN) {
		wire_err(err, errlen, "frame length %u shorter than its header",
		    (unsigned)n);
		return -1;
	}
	if (n > max) {
		wire_err(err, errlen, "frame length %u over the limit %u for opcode %u",
		    (unsigned)n, (unsigned)max, (unsigned)p[4]);
		return -1;
	}
	*total = n;
	*op = p[4];
	return 1;
}

/* Decode one whole frame at the start of buf. */
int
hpf_wire_decode(const void *buf, size_t len, struct hpf_frame *f,
    size_t *consumed, char *err, size_t errlen)
{
	const uint8_t *p, *end;
	uint32_t total;
	uint8_t op;
	int r;

	r = hpf_wire_header(buf, len, &total, &op, err, errlen);
	if (r <= 0)
		return r;
	if (len < total)
		return 0;
	memset(f, 0, sizeof(*f));
	f->op = op;
	f->len = total;
	p = (const uint8_t *)buf + HPF_HDR_LEN;
	end = (const uint8_t *)buf + total;
	switch (op) {
	case HPF_OP_ERROR:
		break;
	case HPF_OP_INFO:
	case HPF_OP_AUTH:
	case HPF_OP_SUBSCRIBE:
	case HPF_OP_UNSUBSCRIBE:
		if (get_str8(&p, end, &f->name, &f->namelen) == -1) {
			wire_err(err, errlen, "opcode %u: name overruns the frame",
			    (unsigned)op);
			return -1;
		}
		break;
	case HPF_OP_PUBLISH:
		if (get_str8(&p, end, &f->name, &f->namelen) == -1 ||
		    get_str8(&p, end, &f->chan, &f->chanlen) == -1) {
			wire_err(err, errlen, "publish: ident or channel overruns the frame");
			return -1;
		}
		break;
	default:
		wire_err(err, errlen, "unknown opcode %u", (unsigned)op);
		return -1;
	}
	if (op == HPF_OP_SUBSCRIBE || op == HPF_OP_UNSUBSCRIBE) {
		/* The channel of (UN)SUBSCRIBE is the rest, without a length. */
		f->chan = p;
		f->chanlen = (size_t)(end - p);
	} else {
		f->data = p;
		f->datalen = (size_t)(end - p);
	}
	if (op == HPF_OP_AUTH && f->datalen != HPF_SHA1_LEN) {
		wire_err(err, errlen, "auth: hash is %zu bytes, not 20", f->datalen);
		return -1;
	}
	*consumed = total;
	return 1;
}

/* SHA1(nonce || secret). */
void
hpf_wire_auth_hash(const uint8_t *nonce, size_t noncelen, const char *secret,
    size_t secretlen, uint8_t out[HPF_SHA1_LEN])
{
	EVP_MD_CTX *ctx;
	unsigned int n = 0;

	ctx = EVP_MD_CTX_new();
	if (ctx == NULL ||
	    EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, nonce, noncelen) != 1 ||
	    EVP_DigestUpdate(ctx, secret, secretlen) != 1 ||
	    EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != HPF_SHA1_LEN)
		memset(out, 0, HPF_SHA1_LEN);	/* the broker will refuse the auth */
	EVP_MD_CTX_free(ctx);
}

/* Encode INFO: str8 name, nonce. */
size_t
hpf_wire_info(uint8_t *out, size_t outlen, const char *name,
    const uint8_t *nonce, size_t noncelen)
{
	size_t nl = strlen(name), total = HPF_HDR_LEN + 1 + nl + noncelen;

	if (nl > HPF_STR8_MAX || total > HPF_MAX_FRAME_SMALL || total > outlen)
		return 0;
	put_hdr(out, (uint32_t)total, HPF_OP_INFO);
	out[5] = (uint8_t)nl;
	memcpy(out + 6, name, nl);
	if (noncelen > 0)
		memcpy(out + 6 + nl, nonce, noncelen);
	return total;
}

/* Encode AUTH: str8 ident, SHA1(nonce || secret). */
size_t
hpf_wire_auth(uint8_t *out, size_t outlen, const char *ident,
    const uint8_t *nonce, size_t noncelen, const char *secret, size_t secretlen)
{
	size_t il = strlen(ident), total = HPF_HDR_LEN + 1 + il + HPF_SHA1_LEN;

	if (il > HPF_STR8_MAX || total > outlen)
		return 0;
	put_hdr(out, (uint32_t)total, HPF_OP_AUTH);
	out[5] = (uint8_t)il;
	memcpy(out + 6, ident, il);
	hpf_wire_auth_hash(nonce, noncelen, secret, secretlen, out + 6 + il);
	return total;
}

/* Encode the PUBLISH header for a payload the caller appends. */
size_t
hpf_wire_publish_header(uint8_t *out, size_t outlen, const char *ident,
    const char *chan, size_t payloadlen)
{
	size_t il = strlen(ident), cl = strlen(chan), hl, total;

	if (il > HPF_STR8_MAX || cl > HPF_STR8_MAX ||
	    payloadlen > hpf_wire_max_payload(il, cl))
		return 0;
	hl = HPF_HDR_LEN + 1 + il + 1 + cl;
	total = hl + payloadlen;
	if (hl > outlen)
		return 0;
	put_hdr(out, (uint32_t)total, HPF_OP_PUBLISH);
	out[5] = (uint8_t)il;
	memcpy(out + 6, ident, il);
	out[6 + il] = (uint8_t)cl;
	memcpy(out + 7 + il, chan, cl);
	return hl;
}

/* Encode a whole PUBLISH frame. */
size_t
hpf_wire_publish(uint8_t *out, size_t outlen, const char *ident,
    const char *chan, const void *payload, size_t payloadlen)
{
	size_t hl;

	hl = hpf_wire_publish_header(out, outlen, ident, chan, payloadlen);
	if (hl == 0 || outlen - hl < payloadlen)
		return 0;
	if (payloadlen > 0)
		memcpy(out + hl, payload, payloadlen);
	return hl + payloadlen;
}

/* Encode SUBSCRIBE or UNSUBSCRIBE: str8 ident, channel as the rest. */
size_t
hpf_wire_subscribe(uint8_t *out, size_t outlen, uint8_t op,
    const char *ident, const char *chan)
{
	size_t il = strlen(ident), cl = strlen(chan), total;

	if (op != HPF_OP_SUBSCRIBE && op != HPF_OP_UNSUBSCRIBE)
		return 0;
	total = HPF_HDR_LEN + 1 + il + cl;
	if (il > HPF_STR8_MAX || total > HPF_MAX_FRAME_SUB || total > outlen)
		return 0;
	put_hdr(out, (uint32_t)total, op);
	out[5] = (uint8_t)il;
	memcpy(out + 6, ident, il);
	memcpy(out + 6 + il, chan, cl);
	return total;
}

/* Encode ERROR: the text as the rest. */
size_t
hpf_wire_error(uint8_t *out, size_t outlen, const char *text, size_t textlen)
{
	size_t total = HPF_HDR_LEN + textlen;

	if (total > HPF_MAX_FRAME || total > outlen)
		return 0;
	put_hdr(out, (uint32_t)total, HPF_OP_ERROR);
	if (textlen > 0)
		memcpy(out + HPF_HDR_LEN, text, textlen);
	return total;
}

/* Largest publish payload for this ident and channel. */
size_t
hpf_wire_max_payload(size_t identlen, size_t chanlen)
{
	size_t used = 2 + identlen + chanlen;

	return used >= HPF_MAX_FRAME_SUB ? 0 : HPF_MAX_FRAME_SUB - used;
}

/* ------------------------------------------------- JSON (payload format) */

/* Skip JSON whitespace. */
static const char *
json_ws(const char *p, const char *e)
{
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* End of the JSON string starting at p ('"'), or NULL when malformed. */
static const char *
json_str_end(const char *p, const char *e)
{
	int i;

	if (p >= e || *p != '"')
		return NULL;
	for (p++; p < e; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '"')
			return p + 1;
		if (c < 0x20)
			return NULL;
		if (c != '\\')
			continue;
		if (++p >= e)
			return NULL;
		switch (*p) {
		case '"': case '\\': case '/': case 'b': case 'f':
		case 'n': case 'r': case 't':
			break;
		case 'u':
			for (i = 0; i < 4; i++) {
				if (++p >= e || !((*p >= '0' && *p <= '9') ||
				    (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F')))
					return NULL;
			}
			break;
		default:
			return NULL;
		}
	}
	return NULL;
}

/* End of the JSON value at p (strict RFC 8259 grammar), or NULL. */
static const char *
json_value_end(const char *p, const char *e, int depth)
{
	const char *q;

	if (p >= e || depth > HPF_JSON_DEPTH)
		return NULL;
	switch (*p) {
	case '{':
	case '[': {
		char close = *p == '{' ? '}' : ']';

		p = json_ws(p + 1, e);
		if (p < e && *p == close)
			return p + 1;
		for (;;) {
			if (close == '}') {
				if ((p = json_str_end(p, e)) == NULL)
					return NULL;
				p = json_ws(p, e);
				if (p >= e || *p != ':')
					return NULL;
				p = json_ws(p + 1, e);
			}
			if ((p = json_value_end(p, e, depth + 1)) == NULL)
				return NULL;
			p = json_ws(p, e);
			if (p >= e)
				return NULL;
			if (*p == close)
				return p + 1;
			if (*p != ',')
				return NULL;
			p = json_ws(p + 1, e);
		}
	}
	case '"':
		return json_str_end(p, e);
	case 't':
		return (e - p >= 4 && memcmp(p, "true", 4) == 0) ? p + 4 : NULL;
	case 'f':
		return (e - p >= 5 && memcmp(p, "false", 5) == 0) ? p + 5 : NULL;
	case 'n':
		return (e - p >= 4 && memcmp(p, "null", 4) == 0) ? p + 4 : NULL;
	default:
		break;
	}
	/* Number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
	q = p;
	if (q < e && *q == '-')
		q++;
	if (q < e && *q == '0')
		q++;
	else if (q < e && *q >= '1' && *q <= '9')
		while (q < e && *q >= '0' && *q <= '9')
			q++;
	else
		return NULL;
	if (q < e && *q == '.') {
		if (++q >= e || *q < '0' || *q > '9')
			return NULL;
		while (q < e && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < e && (*q == 'e' || *q == 'E')) {
		q++;
		if (q < e && (*q == '+' || *q == '-'))
			q++;
		if (q >= e || *q < '0' || *q > '9')
			return NULL;
		while (q < e && *q >= '0' && *q <= '9')
			q++;
	}
	return q;
}

/* Whether p[0..len) is exactly one valid JSON object (whitespace around allowed). */
bool
hpf_json_object(const char *p, size_t len)
{
	const char *e = p + len, *q;

	if (!utf8_valid(p, len))
		return false;
	q = json_ws(p, e);
	if (q >= e || *q != '{')
		return false;
	q = json_value_end(q, e, 0);
	return q != NULL && json_ws(q, e) == e;
}

/*
 * Find top-level member key (compared with the raw, unescaped key bytes) in a
 * validated object; val/vallen get the raw JSON value.
 */
bool
hpf_json_find(const char *obj, size_t len, const char *key, const char **val,
    size_t *vallen)
{
	const char *p, *e = obj + len, *k, *ke, *v, *ve;
	size_t kl = strlen(key);

	p = json_ws(obj, e);
	if (p >= e || *p != '{')
		return false;
	p = json_ws(p + 1, e);
	while (p < e && *p == '"') {
		k = p;
		if ((ke = json_str_end(p, e)) == NULL)
			return false;
		p = json_ws(ke, e);
		if (p >= e || *p != ':')
			return false;
		v = json_ws(p + 1, e);
		if ((ve = json_value_end(v, e, 1)) == NULL)
			return false;
		if ((size_t)(ke - k) == kl + 2 && memcmp(k + 1, key, kl) == 0) {
			*val = v;
			*vallen = (size_t)(ve - v);
			return true;
		}
		p = json_ws(ve, e);
		if (p < e && *p == ',')
			p = json_ws(p + 1, e);
	}
	return false;
}

/* Append the UTF-8 encoding of cp to out; returns the byte count. */
static size_t
utf8_put(unsigned char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (unsigned char)(0xc0 | cp >> 6);
		out[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (unsigned char)(0xe0 | cp >> 12);
		out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (unsigned char)(0xf0 | cp >> 18);
	out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Four hex digits at p (already validated by json_str_end). */
static uint32_t
hex4(const char *p)
{
	uint32_t v = 0;
	int i;

	for (i = 0; i < 4; i++) {
		char c = p[i];

		v = v << 4 | (uint32_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return v;
}

/*
 * Decode a validated JSON string value (with its quotes) into UTF-8 bytes in
 * out (at least vallen bytes).  A lone surrogate becomes U+FFFD.  Returns the
 * byte count.
 */
static size_t
json_str_decode(const char *val, size_t vallen, unsigned char *out)
{
	const char *p = val + 1, *e = val + vallen - 1;
	size_t o = 0;
	uint32_t cp, lo;

	while (p < e) {
		if (*p != '\\') {
			out[o++] = (unsigned char)*p++;
			continue;
		}
		p++;
		switch (*p) {
		case 'b': out[o++] = '\b'; p++; continue;
		case 'f': out[o++] = '\f'; p++; continue;
		case 'n': out[o++] = '\n'; p++; continue;
		case 'r': out[o++] = '\r'; p++; continue;
		case 't': out[o++] = '\t'; p++; continue;
		case 'u': break;
		default: out[o++] = (unsigned char)*p++; continue;
		}
		cp = hex4(p + 1);
		p += 5;
		if (cp >= 0xd800 && cp <= 0xdbff && e - p >= 6 && p[0] == '\\' &&
		    p[1] == 'u' && (lo = hex4(p + 2)) >= 0xdc00 && lo <= 0xdfff) {
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			p += 6;
		} else if (cp >= 0xd800 && cp <= 0xdfff)
			cp = 0xfffd;
		o += utf8_put(out + o, cp);
	}
	return o;
}

/* Whether s is 64 hex digits. */
bool
hpf_is_sha256_hex(const char *s, size_t len)
{
	size_t i;

	if (len != 64)
		return false;
	for (i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
		    (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return true;
}

/* ------------------------------------------------------------- payloads */

/* Build one candidate payload into jb; 0 or -1 (out of memory). */
static int
payload_try(struct jbuf *jb, const char *sha, const unsigned char *body, size_t n,
    bool truncated, uint64_t size, const char *b64, size_t b64len,
    const char *meta, size_t metalen)
{
	jb_reset(jb);
	jb_obj_open(jb);
	jb_kcstr(jb, "sha256", sha);
	jb_kstr(jb, "msg", body, n);
	if (truncated) {
		jb_kbool(jb, "truncated", true);
		jb_kuint(jb, "size", (unsigned long long)size);
	}
	if (b64 != NULL)
		jb_kstr(jb, "raw_b64", b64, b64len);
	if (meta != NULL && metalen > 0)
		jb_raw(jb, meta, metalen);
	jb_obj_close(jb);
	return jb->oom ? -1 : 0;
}

/* Build the payload for one mail (see hpfeeds_wire.h). */
int
hpf_payload_build(struct jbuf *jb, const char *sha256hex, const void *body,
    size_t bodylen, uint64_t size, size_t limit, const char *meta, size_t metalen,
    bool *cut)
{
	const unsigned char *b = body;
	char *b64 = NULL;
	size_t b64len = 0, n, iter, back, lo, hi, lo_len, hi_len, g;
	bool full = (uint64_t)bodylen == size, with_raw;
	int rc = -1;

	if (cut != NULL)
		*cut = false;
	if (payload_try(jb, sha256hex, b, bodylen, !full, size, NULL, 0, meta, metalen) == -1)
		return -1;
	with_raw = full && !utf8_valid(b, bodylen);
	if (with_raw) {
		if (bodylen > (SIZE_MAX - 4) / 4 * 3)
			return -1;
		if ((b64 = malloc(4 * ((bodylen + 2) / 3) + 1)) == NULL)
			return -1;
		b64len = util_b64_encode(b, bodylen, b64);
		if (payload_try(jb, sha256hex, b, bodylen, false, size, b64, b64len,
		    meta, metalen) == -1)
			goto out;
		if (jb->len <= limit) {
			rc = 0;
			goto out;
		}
		/* Room for the exact bytes with an empty msg?  Else drop them. */
		if (payload_try(jb, sha256hex, b, 0, true, size, b64, b64len,
		    meta, metalen) == -1)
			goto out;
		if (jb->len > limit) {
			free(b64);
			b64 = NULL;
			b64len = 0;
		}
	} else if (full && jb->len <= limit)
		return 0;

	/* The whole msg (without raw_b64) may fit. */
	n = bodylen;
	if (payload_try(jb, sha256hex, b, n, (uint64_t)n < size, size, b64, b64len,
	    meta, metalen) == -1)
		goto out;
	if (jb->len > limit) {
		/*
		 * Find the longest prefix that fits: interpolation search on the
		 * payload length (monotonic in the prefix length), a few builds.
		 */
		lo = 0;
		hi = bodylen;
		hi_len = jb->len;
		if (payload_try(jb, sha256hex, b, 0, true, size, b64, b64len,
		    meta, metalen) == -1)
			goto out;
		if ((lo_len = jb->len) > limit)
			goto out;	/* even an empty msg does not fit */
		for (iter = 0; hi - lo > 1 && lo_len + 8 < limit && iter < 48; iter++) {
			g = lo + (size_t)((double)(hi - lo) * (double)(limit - lo_len) /
			    (double)(hi_len - lo_len));
			if (g <= lo)
				g = lo + 1;
			if (g >= hi)
				g = hi - 1;
			if (payload_try(jb, sha256hex, b, g, true, size, b64, b64len,
			    meta, metalen) == -1)
				goto out;
			if (jb->len <= limit) {
				lo = g;
				lo_len = jb->len;
			} else {
				hi = g;
				hi_len = jb->len;
			}
		}
		/* Cut at a UTF-8 boundary: do not split a multi-byte sequence. */
		n = lo;
		for (back = 0; n > 0 && back < 3 && (b[n] & 0xc0) == 0x80; back++)
			n--;
		if (payload_try(jb, sha256hex, b, n, true, size, b64, b64len,
		    meta, metalen) == -1)
			goto out;
	}
	if (cut != NULL)
		*cut = (uint64_t)n < size;
	rc = 0;
out:
	free(b64);
	return rc;
}

/* Check a payload's sha256 against its exact bytes (see hpfeeds_wire.h). */
int
hpf_payload_verify(const void *payload, size_t len)
{
	const char *p = payload, *v, *m;
	size_t vl, ml, n = 0;
	unsigned char *buf, *txt, md[32];
	char hex[65];
	unsigned int mdlen = 0;
	long dl;
	int ok;

	if (!hpf_json_object(p, len) || !hpf_json_find(p, len, "sha256", &v, &vl) ||
	    vl != 66 || *v != '"' || !hpf_is_sha256_hex(v + 1, 64))
		return -1;
	if (hpf_json_find(p, len, "raw_b64", &m, &ml) && *m == '"') {
		/* The JSON string first (a producer may write "\/"), then base64. */
		if ((txt = malloc(ml)) == NULL)
			return 0;
		n = json_str_decode(m, ml, txt);
		if ((buf = malloc(n / 4 * 3 + 3)) == NULL) {
			free(txt);
			return 0;
		}
		dl = util_b64_decode((const char *)txt, n, buf, n / 4 * 3 + 3);
		free(txt);
		if (dl < 0) {
			free(buf);
			return 0;
		}
		n = (size_t)dl;
	} else if (hpf_json_find(p, len, "msg", &m, &ml) && *m == '"') {
		if ((buf = malloc(ml)) == NULL)
			return 0;
		n = json_str_decode(m, ml, buf);
	} else
		return 0;
	ok = EVP_Digest(buf, n, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32;
	free(buf);
	if (!ok)
		return 0;
	util_hex(md, 32, hex);
	return strncasecmp(hex, v + 1, 64) == 0 ? 1 : 0;
}
