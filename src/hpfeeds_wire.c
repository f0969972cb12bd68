/*
 * hpfeeds 3 frame codec (see hpfeeds_wire.h).  Pure: never logs, never
 * allocates; a peer's bytes are only read within the length it announced and
 * the buffer the caller holds.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "hpfeeds_wire.h"

static void	 wire_err(char *err, size_t errlen, const char *fmt, ...)
		    __attribute__((format(printf, 3, 4)));
static uint32_t	 get_be32(const uint8_t *p);
static void	 put_hdr(uint8_t *out, uint32_t total, uint8_t op);
static int	 get_str8(const uint8_t **p, const uint8_t *end, const uint8_t **s,
		    size_t *slen);

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
