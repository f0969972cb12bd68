/*
 * The strict JSON reader (see json.h).  Every walk is iterative over the
 * input, or recursive only up to JSON_DEPTH levels.
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "json.h"
#include "utf8.h"

static const char	*jr_ws(const char *, const char *);
static int		 jr_hex4(const char *, const char *, uint32_t *);
static const char	*jr_esc_u(const char *, const char *, uint32_t *);
static const char	*jr_str_end(const char *, const char *);
static const char	*jr_num_end(const char *, const char *);
static const char	*jr_value_end(const char *, const char *, int);
static int		 jr_next(const char *, size_t, size_t *, char, char,
			    const char **, size_t *, const char **, size_t *);

/* Bytes that stand for themselves in a string: printable ASCII but '"' and '\\'. */
static const unsigned char jr_plain[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* Skip JSON whitespace. */
static const char *
jr_ws(const char *p, const char *e)
{
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
}

/* Four hex digits at p (before e) into *u; 0 or -1. */
static int
jr_hex4(const char *p, const char *e, uint32_t *u)
{
	int i;
	char c;

	if (e - p < 4)
		return -1;
	*u = 0;
	for (i = 0; i < 4; i++) {
		c = p[i];
		*u <<= 4;
		if (c >= '0' && c <= '9')
			*u |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			*u |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*u |= (uint32_t)(c - 'A' + 10);
		else
			return -1;
	}
	return 0;
}

/*
 * p at the 'u' of a \u escape: its code point in *cp (a surrogate pair
 * joined), and the byte after it; NULL for bad hex or a lone surrogate.
 */
static const char *
jr_esc_u(const char *p, const char *e, uint32_t *cp)
{
	uint32_t u, lo;

	if (jr_hex4(p + 1, e, &u) == -1)
		return NULL;
	p += 5;
	if (u >= 0xdc00 && u <= 0xdfff)
		return NULL;		/* a low surrogate first */
	if (u >= 0xd800 && u <= 0xdbff) {
		if (e - p < 6 || p[0] != '\\' || p[1] != 'u' ||
		    jr_hex4(p + 2, e, &lo) == -1 || lo < 0xdc00 || lo > 0xdfff)
			return NULL;	/* a high surrogate alone */
		u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
		p += 6;
	}
	*cp = u;
	return p;
}

/* p at an opening quote: the byte after the closing quote, or NULL. */
static const char *
jr_str_end(const char *p, const char *e)
{
	unsigned char c;
	uint32_t cp;
	size_t n;

	if (p >= e || *p != '"')
		return NULL;
	for (p++; p < e;) {
		while (p < e && jr_plain[(unsigned char)*p])
			p++;
		if (p >= e)
			return NULL;
		c = (unsigned char)*p;
		if (c == '"')
			return p + 1;
		if (c < 0x20)
			return NULL;
		if (c >= 0x80) {
			if ((n = utf8_decode(p, (size_t)(e - p), &cp)) == 0)
				return NULL;
			p += n;
			continue;
		}
		if (++p >= e)
			return NULL;
		switch (*p) {
		case '"': case '\\': case '/': case 'b': case 'f':
		case 'n': case 'r': case 't':
			p++;
			break;
		case 'u':
			if ((p = jr_esc_u(p, e, &cp)) == NULL)
				return NULL;
			break;
		default:
			return NULL;
		}
	}
	return NULL;
}

/* A number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; its end or NULL. */
static const char *
jr_num_end(const char *q, const char *e)
{
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

/* The end of the value at p (whitespace skipped first), or NULL. */
static const char *
jr_value_end(const char *p, const char *e, int depth)
{
	char close;

	p = jr_ws(p, e);
	if (p >= e || depth > JSON_DEPTH)
		return NULL;
	switch (*p) {
	case '"':
		return jr_str_end(p, e);
	case 't':
		return (e - p >= 4 && memcmp(p, "true", 4) == 0) ? p + 4 : NULL;
	case 'f':
		return (e - p >= 5 && memcmp(p, "false", 5) == 0) ? p + 5 : NULL;
	case 'n':
		return (e - p >= 4 && memcmp(p, "null", 4) == 0) ? p + 4 : NULL;
	case '{':
	case '[':
		break;
	default:
		return jr_num_end(p, e);
	}
	close = *p == '{' ? '}' : ']';
	p = jr_ws(p + 1, e);
	if (p < e && *p == close)
		return p + 1;
	for (;;) {
		if (close == '}') {
			if ((p = jr_str_end(p, e)) == NULL)
				return NULL;
			p = jr_ws(p, e);
			if (p >= e || *p != ':')
				return NULL;
			p++;
		}
		if ((p = jr_value_end(p, e, depth + 1)) == NULL)
			return NULL;
		p = jr_ws(p, e);
		if (p >= e)
			return NULL;
		if (*p == close)
			return p + 1;
		if (*p != ',')
			return NULL;
		p = jr_ws(p + 1, e);
	}
}

bool
json_is_object(const char *s, size_t len)
{
	const char *e = s + len, *p = jr_ws(s, e), *q;

	if (p >= e || *p != '{')
		return false;
	q = jr_value_end(p, e, 0);
	return q != NULL && jr_ws(q, e) == e;
}

/*
 * One step of a walk over the object (open '{') or array ('[') s: see
 * json_member().  *pos is 0 at the start, then the offset of the ',' or
 * closing character after the last item given.
 */
static int
jr_next(const char *s, size_t len, size_t *pos, char open, char close,
    const char **key, size_t *klen, const char **val, size_t *vlen)
{
	const char *e = s + len, *p, *ke = NULL, *ve;

	if (*pos == 0) {
		p = jr_ws(s, e);
		if (p >= e || *p != open)
			return -1;
		p = jr_ws(p + 1, e);
		if (p < e && *p == close)
			return jr_ws(p + 1, e) == e ? 0 : -1;
	} else {
		if (*pos >= len)
			return -1;
		p = s + *pos;
		if (*p == close)
			return jr_ws(p + 1, e) == e ? 0 : -1;
		if (*p != ',')
			return -1;
		p = jr_ws(p + 1, e);
	}
	if (open == '{') {
		if ((ke = jr_str_end(p, e)) == NULL)
			return -1;
		*key = p + 1;
		*klen = (size_t)(ke - p - 2);
		p = jr_ws(ke, e);
		if (p >= e || *p != ':')
			return -1;
		p = jr_ws(p + 1, e);
	}
	if ((ve = jr_value_end(p, e, 1)) == NULL)
		return -1;
	*val = p;
	*vlen = (size_t)(ve - p);
	p = jr_ws(ve, e);
	if (p >= e || (*p != ',' && *p != close))
		return -1;
	*pos = (size_t)(p - s);
	return 1;
}

int
json_member(const char *s, size_t len, size_t *pos, const char **key,
    size_t *klen, const char **val, size_t *vlen)
{
	return jr_next(s, len, pos, '{', '}', key, klen, val, vlen);
}

int
json_element(const char *val, size_t vlen, size_t *pos, const char **elem,
    size_t *elen)
{
	return jr_next(val, vlen, pos, '[', ']', NULL, NULL, elem, elen);
}

int
json_get(const char *obj, size_t len, const char *key, const char **val,
    size_t *vlen)
{
	const char *k, *v;
	size_t pos = 0, kl, vl, want = strlen(key);

	while (json_member(obj, len, &pos, &k, &kl, &v, &vl) == 1) {
		if (kl == want && memcmp(k, key, kl) == 0) {
			*val = v;
			*vlen = vl;
			return 0;
		}
	}
	return -1;
}

int
json_index(const char *val, size_t vlen, int idx, const char **elem,
    size_t *elen)
{
	const char *v;
	size_t pos = 0, vl;
	int i = 0;

	if (idx < 0)
		return -1;
	while (json_element(val, vlen, &pos, &v, &vl) == 1) {
		if (i++ == idx) {
			*elem = v;
			*elen = vl;
			return 0;
		}
	}
	return -1;
}

long
json_bytes(const char *val, size_t vlen, void *outv, size_t outlen)
{
	const char *p = val, *e = val + vlen, *run;
	unsigned char *out = outv, tmp[UTF8_MAX];
	size_t o = 0, n;
	uint32_t cp;

	/* One pass that validates as it decodes (as jr_str_end() would). */
	if (vlen < 2 || vlen - 2 > LONG_MAX || *p != '"' || e[-1] != '"')
		return -1;
	for (p++, e--; p < e;) {
		/* A run of bytes that stand for themselves, UTF-8 included. */
		for (run = p;;) {
			while (p < e && jr_plain[(unsigned char)*p])
				p++;
			if (p >= e || (unsigned char)*p < 0x80)
				break;
			if ((n = utf8_decode(p, (size_t)(e - p), &cp)) == 0)
				return -1;
			p += n;
		}
		if (p > run) {
			if ((size_t)(p - run) > outlen - o)
				return -1;
			memcpy(out + o, run, (size_t)(p - run));
			o += (size_t)(p - run);
			continue;
		}
		/* A '"' inside, a control byte, or bad UTF-8 (above). */
		if (*p != '\\' || ++p >= e)
			return -1;
		if (*p == 'u') {
			if ((p = jr_esc_u(p, e, &cp)) == NULL ||
			    (n = utf8_encode(cp, tmp)) == 0)
				return -1;
		} else {
			switch (*p) {
			case '"': case '\\': case '/': tmp[0] = (unsigned char)*p; break;
			case 'b': tmp[0] = '\b'; break;
			case 'f': tmp[0] = '\f'; break;
			case 'n': tmp[0] = '\n'; break;
			case 'r': tmp[0] = '\r'; break;
			case 't': tmp[0] = '\t'; break;
			default: return -1;
			}
			n = 1;
			p++;
		}
		if (n > outlen - o)
			return -1;
		memcpy(out + o, tmp, n);
		o += n;
	}
	return (long)o;
}

int
json_str(const char *val, size_t vlen, char *out, size_t outlen)
{
	long n;

	if (outlen == 0 || (n = json_bytes(val, vlen, out, outlen - 1)) < 0 ||
	    memchr(out, '\0', (size_t)n) != NULL)
		return -1;
	out[n] = '\0';
	return 0;
}

int
json_get_str(const char *obj, size_t len, const char *key, char *out,
    size_t outlen)
{
	const char *v;
	size_t vl;

	if (json_get(obj, len, key, &v, &vl) == -1)
		return -1;
	return json_str(v, vl, out, outlen);
}

int
json_int(const char *val, size_t vlen, long long *out)
{
	const char *p = val, *e = val + vlen;
	unsigned long long v = 0, lim;
	bool neg = false;
	unsigned d;

	if (p < e && *p == '-') {
		neg = true;
		p++;
	}
	/* -?(0|[1-9][0-9]*): the whole value, nothing after it. */
	if (p >= e || *p < '0' || *p > '9' || (*p == '0' && e - p > 1))
		return -1;
	lim = neg ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)LLONG_MAX;
	for (; p < e; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		d = (unsigned)(*p - '0');
		if (v > (lim - d) / 10)
			return -1;	/* out of range */
		v = v * 10 + d;
	}
	if (neg)
		*out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN :
		    -(long long)v;
	else
		*out = (long long)v;
	return 0;
}

int
json_bool(const char *val, size_t vlen, bool *out)
{
	if (vlen == 4 && memcmp(val, "true", 4) == 0)
		*out = true;
	else if (vlen == 5 && memcmp(val, "false", 5) == 0)
		*out = false;
	else
		return -1;
	return 0;
}

bool
json_is_null(const char *val, size_t vlen)
{
	return vlen == 4 && memcmp(val, "null", 4) == 0;
}
