/*
 * The JSON writer (jbuf.h): a growable buffer with the separators and the
 * escaping of JSON; values are always valid UTF-8 whatever the input bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jbuf.h"
#include "utf8.h"
#include "util.h"

#define JB_MIN_CAP	256

static bool	 jb_grow(struct jbuf *, size_t);
static bool	 jb_escape_cp(uint32_t);
static void	 jb_sep(struct jbuf *);

/* Zero a JSON builder. */
void
jb_init(struct jbuf *jb)
{
	memset(jb, 0, sizeof(*jb));
	jb->first[0] = true;
}

/* Release a JSON builder's memory; it may be reused after jb_init(). */
void
jb_free(struct jbuf *jb)
{
	if (jb == NULL)
		return;
	free(jb->buf);
	jb_init(jb);
}

/* Empty a JSON builder, keeping its memory. */
void
jb_reset(struct jbuf *jb)
{
	jb->len = 0;
	jb->depth = 0;
	jb->oom = false;
	memset(jb->first, 0, sizeof(jb->first));
	jb->first[0] = true;
	if (jb->buf != NULL)
		jb->buf[0] = '\0';
}

/* Make room for more bytes plus a NUL; false (and oom set) on failure. */
static bool
jb_grow(struct jbuf *jb, size_t more)
{
	size_t need;

	if (jb->oom)
		return false;
	if (more > SIZE_MAX - jb->len - 1) {
		jb->oom = true;
		return false;
	}
	need = jb->len + more + 1;
	if (util_grow(&jb->buf, &jb->cap, need, JB_MIN_CAP, 0) == -1) {
		jb->oom = true;
		return false;
	}
	return true;
}

/* Append raw bytes, keeping the buffer NUL-terminated. */
void
jb_put(struct jbuf *jb, const void *p, size_t n)
{
	if (!jb_grow(jb, n))
		return;
	memcpy(jb->buf + jb->len, p, n);
	jb->len += n;
	jb->buf[jb->len] = '\0';
}

/* Write the comma that separates this value or key from the previous one. */
static void
jb_sep(struct jbuf *jb)
{
	int d = jb->depth < 16 ? jb->depth : 15;

	if (!jb->first[d])
		jb_put(jb, ",", 1);
	jb->first[d] = false;
}

/* Open a container ("{" or "["). Nesting deeper than 15 marks the result unusable. */
static void
jb_open(struct jbuf *jb, const char *bracket)
{
	jb_sep(jb);
	jb_put(jb, bracket, 1);
	jb->depth++;
	if (jb->depth >= 16)
		jb->oom = true;
	else
		jb->first[jb->depth] = true;
}

/* Close a container ("}" or "]"). */
static void
jb_close(struct jbuf *jb, const char *bracket)
{
	jb_put(jb, bracket, 1);
	if (jb->depth > 0)
		jb->depth--;
}

void
jb_obj_open(struct jbuf *jb)
{
	jb_open(jb, "{");
}

void
jb_obj_close(struct jbuf *jb)
{
	jb_close(jb, "}");
}

void
jb_arr_open(struct jbuf *jb)
{
	jb_open(jb, "[");
}

void
jb_arr_close(struct jbuf *jb)
{
	jb_close(jb, "]");
}

/* Write an object key (a trusted C string, escaped anyway) and the colon. */
void
jb_key(struct jbuf *jb, const char *key)
{
	int d;

	jb_str(jb, key, strlen(key));
	jb_put(jb, ":", 1);
	/* The value that follows must not be preceded by a comma. */
	d = jb->depth < 16 ? jb->depth : 15;
	jb->first[d] = true;
}

/*
 * Write len bytes of s as a JSON string: valid UTF-8 is copied, '"' '\\',
 * controls, DEL and U+2028/U+2029 are escaped, each byte of an invalid
 * sequence becomes U+FFFD.
 */
void
jb_str(struct jbuf *jb, const void *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = s;
	size_t i = 0, n, run;
	uint32_t cp;
	char esc[6];

	jb_sep(jb);
	/* Worst case per input byte is 6 output bytes; reserve once. */
	if (len > (SIZE_MAX - 3) / 6 || !jb_grow(jb, len * 6 + 2)) {
		jb->oom = true;
		return;
	}
	jb_put(jb, "\"", 1);
	while (i < len) {
		/* Copy a run of plain printable ASCII at once. */
		run = i;
		while (run < len && p[run] >= 0x20 && p[run] < 0x7f &&
		    p[run] != '"' && p[run] != '\\')
			run++;
		if (run > i) {
			jb_put(jb, p + i, run - i);
			i = run;
			continue;
		}
		n = utf8_decode(p + i, len - i, &cp);
		if (n == 0) {
			jb_put(jb, "\xef\xbf\xbd", 3);
			i++;
		} else if (cp == '"') {
			jb_put(jb, "\\\"", 2);
			i++;
		} else if (cp == '\\') {
			jb_put(jb, "\\\\", 2);
			i++;
		} else if (cp == '\n' || cp == '\r' || cp == '\t') {
			/* The short escapes: mail bodies are full of CRLF. */
			jb_put(jb, cp == '\n' ? "\\n" : cp == '\r' ? "\\r" : "\\t", 2);
			i++;
		} else if (cp < 0x20 || cp == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[cp >> 4];
			esc[5] = hex[cp & 0xf];
			jb_put(jb, esc, 6);
			i++;
		} else if (jb_escape_cp(cp)) {
			/* At most 3 bytes in, 6 out: within the reservation. */
			esc[0] = '\\';
			esc[1] = 'u';
			esc[2] = hex[(cp >> 12) & 0xf];
			esc[3] = hex[(cp >> 8) & 0xf];
			esc[4] = hex[(cp >> 4) & 0xf];
			esc[5] = hex[cp & 0xf];
			jb_put(jb, esc, 6);
			i += n;
		} else {
			jb_put(jb, p + i, n);
			i += n;
		}
	}
	jb_put(jb, "\"", 1);
}

/*
 * Code points written as \\uXXXX although JSON allows them raw: the C1
 * controls (a terminal acts on U+009B CSI), the bidi controls (they reorder
 * what a viewer shows: U+061C, U+200E/F, U+202A..E, U+2066..9) and
 * U+2028/2029 (line breaks to JavaScript).
 */
static bool
jb_escape_cp(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f) || cp == 0x061c || cp == 0x200e ||
	    cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) || cp == 0x2028 ||
	    cp == 0x2029 || (cp >= 0x2066 && cp <= 0x2069);
}

/* Write a C string value; NULL writes null. */
void
jb_cstr(struct jbuf *jb, const char *s)
{
	if (s == NULL)
		jb_null(jb);
	else
		jb_str(jb, s, strlen(s));
}

/* Write a signed integer value. */
void
jb_int(struct jbuf *jb, long long v)
{
	char num[32];
	int n;

	n = snprintf(num, sizeof(num), "%lld", v);
	jb_sep(jb);
	jb_put(jb, num, (size_t)n);
}

/* Write an unsigned integer value. */
void
jb_uint(struct jbuf *jb, unsigned long long v)
{
	char num[32];
	int n;

	n = snprintf(num, sizeof(num), "%llu", v);
	jb_sep(jb);
	jb_put(jb, num, (size_t)n);
}

/* Write true or false. */
void
jb_bool(struct jbuf *jb, bool v)
{
	jb_sep(jb);
	if (v)
		jb_put(jb, "true", 4);
	else
		jb_put(jb, "false", 5);
}

/* Write null. */
void
jb_null(struct jbuf *jb)
{
	jb_sep(jb);
	jb_put(jb, "null", 4);
}

/* Write an already-valid JSON value verbatim. */
void
jb_raw(struct jbuf *jb, const char *json, size_t len)
{
	jb_sep(jb);
	jb_put(jb, json, len);
}

/* Key and string value. */
void
jb_kstr(struct jbuf *jb, const char *key, const void *s, size_t len)
{
	jb_key(jb, key);
	jb_str(jb, s, len);
}

/* Key and C string value (NULL writes null). */
void
jb_kcstr(struct jbuf *jb, const char *key, const char *s)
{
	jb_key(jb, key);
	jb_cstr(jb, s);
}

/* Key and signed integer value. */
void
jb_kint(struct jbuf *jb, const char *key, long long v)
{
	jb_key(jb, key);
	jb_int(jb, v);
}

/* Key and unsigned integer value. */
void
jb_kuint(struct jbuf *jb, const char *key, unsigned long long v)
{
	jb_key(jb, key);
	jb_uint(jb, v);
}

/* Key and boolean value. */
void
jb_kbool(struct jbuf *jb, const char *key, bool v)
{
	jb_key(jb, key);
	jb_bool(jb, v);
}
