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
#include <time.h>

#include <openssl/evp.h>

#include "hpfeeds_wire.h"
#include "json.h"
#include "log.h"
#include "record.h"
#include "utf8.h"
#include "util.h"

static void	 wire_err(char *err, size_t errlen, const char *fmt, ...)
		    __attribute__((format(printf, 3, 4)));
static uint32_t	 get_be32(const uint8_t *p);
static void	 put_hdr(uint8_t *out, uint32_t total, uint8_t op);
static int	 get_str8(const uint8_t **p, const uint8_t *end,
		    const uint8_t **s, size_t *slen);
static int	 payload_try(struct jbuf *, const char *sha,
		    const unsigned char *body, size_t n, bool truncated,
		    uint64_t size, const char *b64, size_t b64len,
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
	size_t b64len = 0, n, iter, lo, hi, lo_len, hi_len, g;
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
		n = utf8_prefix(b, bodylen, lo);
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
	long dl, sl;
	int ok;

	if (!json_is_object(p, len) || json_get(p, len, "sha256", &v, &vl) == -1 ||
	    vl != 66 || *v != '"' || !hpf_is_sha256_hex(v + 1, 64))
		return -1;
	if (json_get(p, len, "raw_b64", &m, &ml) == 0 && *m == '"') {
		/* The JSON string first (a producer may write "\/"), then base64. */
		if ((txt = malloc(ml)) == NULL)
			return 0;
		if ((sl = json_bytes(m, ml, txt, ml)) < 0) {
			free(txt);
			return 0;
		}
		n = (size_t)sl;
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
	} else if (json_get(p, len, "msg", &m, &ml) == 0 && *m == '"') {
		if ((buf = malloc(ml)) == NULL)
			return 0;
		if ((sl = json_bytes(m, ml, buf, ml)) < 0) {
			free(buf);
			return 0;
		}
		n = (size_t)sl;
	} else
		return 0;
	ok = EVP_Digest(buf, n, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32;
	free(buf);
	if (!ok)
		return 0;
	util_hex(md, 32, hex);
	return strncasecmp(hex, v + 1, 64) == 0 ? 1 : 0;
}

/* A mail's payload with the record's metadata (see hpfeeds_wire.h). */
int
hpf_payload_mail(struct jbuf *jb, const char *record, size_t reclen, bool metadata,
    const char *sensor, const char *sha256hex, const void *body, size_t bodylen,
    uint64_t size, size_t limit, bool *truncated, bool *meta_dropped)
{
	const char *v;
	size_t vl, i;
	struct jbuf meta;
	int rc;

	if (meta_dropped != NULL)
		*meta_dropped = false;
	jb_init(&meta);
	if (metadata) {
		jb_obj_open(&meta);
		for (i = 0; i < RECORD_META_NKEYS; i++) {
			if (json_get(record, reclen, record_meta_keys[i], &v, &vl) == 0) {
				jb_key(&meta, record_meta_keys[i]);
				jb_raw(&meta, v, vl);
			}
		}
		if (sensor != NULL && sensor[0] != '\0')
			jb_kcstr(&meta, "sensor", sensor);
		jb_obj_close(&meta);
		if (meta.oom || meta.len > limit / 2) {
			if (meta_dropped != NULL)
				*meta_dropped = true;
			jb_reset(&meta);
			jb_obj_open(&meta);
			jb_obj_close(&meta);
		}
	}
	rc = hpf_payload_build(jb, sha256hex, body, bodylen, size, limit,
	    meta.len > 2 ? meta.buf + 1 : NULL, meta.len > 2 ? meta.len - 2 : 0,
	    truncated);
	jb_free(&meta);
	return rc;
}

/*
 * A mail's raw payload (see hpfeeds_wire.h): the one place its bytes are
 * put together, for hpfeeds and AMQP alike.
 */
int
hpf_payload_raw(struct jbuf *jb, const char *record, size_t reclen,
    const struct persona *p, const char *hostname, const void *body, size_t bodylen,
    uint64_t size, size_t limit, bool *truncated, char *note, size_t notelen)
{
	char hdr[2048], err[128];
	struct record *rec;
	size_t hl = 0, n;
	time_t when;

	*truncated = false;
	if (notelen > 0)
		note[0] = '\0';
	if (p != NULL) {
		if ((rec = record_parse(record, reclen, err, sizeof(err))) == NULL) {
			if (strcmp(err, "out of memory") == 0)
				return -1;
			snprintf(note, notelen, "%s: published without a Received header", err);
		} else {
			if (record_when(rec, &when) == -1) {
				snprintf(note, notelen, "record time unreadable: the Received "
				    "header has the time of publishing");
				when = time(NULL);
			}
			hl = record_received_header(hdr, sizeof(hdr), p, rec, hostname,
			    rec->queue_id, rec->nrcpt == 1 ? rec->rcpt[0] : NULL, when);
			if (hl == 0 || hl >= limit) {
				snprintf(note, notelen, "Received header too long: published "
				    "without it");
				hl = 0;
			}
			record_free(rec);
		}
	}
	n = bodylen > limit - hl ? limit - hl : bodylen;
	jb_reset(jb);
	jb_put(jb, hdr, hl);
	jb_put(jb, body, n);
	if (jb->oom) {
		jb_free(jb);
		jb_init(jb);
		return -1;
	}
	*truncated = n < size;
	return 0;
}

/* A reception record a rule keeps off the outputs ("publish": false). */
bool
hpf_record_private(const char *line, size_t len)
{
	const char *v;
	size_t vl;

	return json_is_object(line, len) && json_get(line, len, "publish", &v, &vl) == 0 &&
	    vl == 5 && memcmp(v, "false", 5) == 0;
}
