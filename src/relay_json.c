/*
 * A bounded JSON reader (see relay_json.h).  Every walk is iterative over the
 * input or recursive only up to RELAY_JSON_DEPTH levels.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay_json.h"

#define RELAY_JSON_DEPTH	32

static const char	*jr_ws(const char *, const char *);
static const char	*jr_str_end(const char *, const char *);
static const char	*jr_value_end(const char *, const char *, int);
static int		 jr_hex4(const char *, unsigned *);
static int		 jr_next(const char *, size_t, size_t *, char, char,
			    const char **, size_t *, const char **, size_t *);

/* Skip JSON whitespace. */
static const char *
jr_ws(const char *p, const char *e)
{
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
}

/* p at an opening quote: the byte after the closing quote, or NULL. */
static const char *
jr_str_end(const char *p, const char *e)
{
	if (p >= e || *p != '"')
		return NULL;
	for (p++; p < e; p++) {
		if (*p == '\\') {
			if (++p >= e)
				return NULL;
		} else if (*p == '"') {
			return p + 1;
		} else if ((unsigned char)*p < 0x20) {
			return NULL;
		}
	}
	return NULL;
}

/* The end of the value starting at p (whitespace skipped first), or NULL. */
static const char *
jr_value_end(const char *p, const char *e, int depth)
{
	char close;

	p = jr_ws(p, e);
	if (p >= e || depth > RELAY_JSON_DEPTH)
		return NULL;
	if (*p == '"')
		return jr_str_end(p, e);
	if (*p == '{' || *p == '[') {
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
	/* number, true, false, null */
	if (!(*p == '-' || (*p >= '0' && *p <= '9') || *p == 't' || *p == 'f' ||
	    *p == 'n'))
		return NULL;
	while (p < e && (*p == '-' || *p == '+' || *p == '.' ||
	    (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
	    (*p >= 'A' && *p <= 'Z')))
		p++;
	return p;
}

/* Whether s is exactly one JSON object. */
bool
relay_json_is_object(const char *s, size_t len)
{
	const char *e = s + len, *p = jr_ws(s, e), *q;

	if (p >= e || *p != '{')
		return false;
	q = jr_value_end(p, e, 0);
	return q != NULL && jr_ws(q, e) == e;
}

/* Find a member of an object. */
int
relay_json_get(const char *obj, size_t len, const char *key, const char **val,
    size_t *vlen)
{
	const char *e = obj + len, *p = jr_ws(obj, e), *ke, *v, *ve;
	size_t klen = strlen(key);

	if (p >= e || *p != '{')
		return -1;
	p = jr_ws(p + 1, e);
	if (p < e && *p == '}')
		return -1;
	for (;;) {
		if ((ke = jr_str_end(p, e)) == NULL)
			return -1;
		v = jr_ws(ke, e);
		if (v >= e || *v != ':')
			return -1;
		v = jr_ws(v + 1, e);
		if ((ve = jr_value_end(v, e, 1)) == NULL)
			return -1;
		/* Our writer never escapes key characters: compare raw. */
		if ((size_t)(ke - p - 2) == klen && memcmp(p + 1, key, klen) == 0) {
			*val = v;
			*vlen = (size_t)(ve - v);
			return 0;
		}
		p = jr_ws(ve, e);
		if (p >= e || *p != ',')
			return -1;
		p = jr_ws(p + 1, e);
	}
}

/*
 * One step of a walk over the object (open '{') or array ('[') s: see
 * relay_json_member().  *pos is 0 at the start, then the offset of the ','
 * or closing character after the last item given.
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

/* The next member of an object. */
int
relay_json_member(const char *s, size_t len, size_t *pos, const char **key,
    size_t *klen, const char **val, size_t *vlen)
{
	return jr_next(s, len, pos, '{', '}', key, klen, val, vlen);
}

/* The next element of an array. */
int
relay_json_element(const char *val, size_t vlen, size_t *pos,
    const char **elem, size_t *elen)
{
	return jr_next(val, vlen, pos, '[', ']', NULL, NULL, elem, elen);
}

/* Four hex digits at p into *u. */
static int
jr_hex4(const char *p, unsigned *u)
{
	*u = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		*u <<= 4;
		if (c >= '0' && c <= '9')
			*u |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			*u |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*u |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	return 0;
}

/* Decode a JSON string. */
int
relay_json_str(const char *val, size_t vlen, char *out, size_t outlen)
{
	const char *p = val, *e = val + vlen;
	size_t o = 0;
	unsigned u, lo;
	unsigned char tmp[4];
	size_t n;

	if (outlen == 0 || vlen < 2 || *p != '"' || e[-1] != '"' ||
	    jr_str_end(p, e) != e)
		return -1;
	for (p++, e--; p < e; p++) {
		if (*p != '\\') {
			if (o + 1 >= outlen)
				return -1;
			out[o++] = *p;
			continue;
		}
		p++;
		n = 1;
		switch (*p) {
		case '"': tmp[0] = '"'; break;
		case '\\': tmp[0] = '\\'; break;
		case '/': tmp[0] = '/'; break;
		case 'b': tmp[0] = '\b'; break;
		case 'f': tmp[0] = '\f'; break;
		case 'n': tmp[0] = '\n'; break;
		case 'r': tmp[0] = '\r'; break;
		case 't': tmp[0] = '\t'; break;
		case 'u':
			if (e - p < 5 || jr_hex4(p + 1, &u) == -1)
				return -1;
			p += 4;
			if (u >= 0xd800 && u <= 0xdbff) {
				if (e - p < 7 || p[1] != '\\' || p[2] != 'u' ||
				    jr_hex4(p + 3, &lo) == -1 || lo < 0xdc00 || lo > 0xdfff)
					return -1;
				p += 6;
				u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
			} else if (u >= 0xdc00 && u <= 0xdfff) {
				return -1;
			}
			if (u == 0)
				return -1;
			if (u < 0x80) {
				tmp[0] = (unsigned char)u;
			} else if (u < 0x800) {
				tmp[0] = (unsigned char)(0xc0 | (u >> 6));
				tmp[1] = (unsigned char)(0x80 | (u & 0x3f));
				n = 2;
			} else if (u < 0x10000) {
				tmp[0] = (unsigned char)(0xe0 | (u >> 12));
				tmp[1] = (unsigned char)(0x80 | ((u >> 6) & 0x3f));
				tmp[2] = (unsigned char)(0x80 | (u & 0x3f));
				n = 3;
			} else {
				tmp[0] = (unsigned char)(0xf0 | (u >> 18));
				tmp[1] = (unsigned char)(0x80 | ((u >> 12) & 0x3f));
				tmp[2] = (unsigned char)(0x80 | ((u >> 6) & 0x3f));
				tmp[3] = (unsigned char)(0x80 | (u & 0x3f));
				n = 4;
			}
			break;
		default:
			return -1;
		}
		if (o + n >= outlen)
			return -1;
		memcpy(out + o, tmp, n);
		o += n;
	}
	out[o] = '\0';
	return 0;
}

/* Parse an integer value. */
int
relay_json_int(const char *val, size_t vlen, long long *out)
{
	char buf[32], *end;

	if (vlen == 0 || vlen >= sizeof(buf))
		return -1;
	memcpy(buf, val, vlen);
	buf[vlen] = '\0';
	if (!(buf[0] == '-' || (buf[0] >= '0' && buf[0] <= '9')))
		return -1;
	*out = strtoll(buf, &end, 10);
	return *end == '\0' ? 0 : -1;
}

/* Parse true/false. */
int
relay_json_bool(const char *val, size_t vlen, bool *out)
{
	if (vlen == 4 && memcmp(val, "true", 4) == 0)
		*out = true;
	else if (vlen == 5 && memcmp(val, "false", 5) == 0)
		*out = false;
	else
		return -1;
	return 0;
}

/* Whether the value is null. */
bool
relay_json_is_null(const char *val, size_t vlen)
{
	return vlen == 4 && memcmp(val, "null", 4) == 0;
}

/* The idx-th element of an array. */
int
relay_json_index(const char *val, size_t vlen, int idx, const char **elem,
    size_t *elen)
{
	const char *e = val + vlen, *p = jr_ws(val, e), *ve;
	int i = 0;

	if (p >= e || *p != '[' || idx < 0)
		return -1;
	p = jr_ws(p + 1, e);
	if (p < e && *p == ']')
		return -1;
	for (;;) {
		if ((ve = jr_value_end(p, e, 1)) == NULL)
			return -1;
		if (i == idx) {
			*elem = p;
			*elen = (size_t)(ve - p);
			return 0;
		}
		p = jr_ws(ve, e);
		if (p >= e || *p != ',')
			return -1;
		p = jr_ws(p + 1, e);
		i++;
	}
}

/* Find and decode a string member. */
int
relay_json_get_str(const char *obj, size_t len, const char *key, char *out,
    size_t outlen)
{
	const char *v;
	size_t vl;

	if (relay_json_get(obj, len, key, &v, &vl) == -1)
		return -1;
	return relay_json_str(v, vl, out, outlen);
}
