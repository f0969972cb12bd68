/*
 * libFuzzer target: the JSON reader (json.c) that reads the reception
 * journal, the relay caps journal and hpfeeds payloads.  The input is walked
 * as relay.c walks a record, every value decoded, and the ways of reading
 * must agree: json_is_object() holds exactly when the member walk ends in 0;
 * json_get() finds what the walk found first; a decoded string is valid UTF-8
 * no longer than its text; what jb_str() writes of it reads back the same.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "utf8.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static void	value(const char *, size_t, int);

/* Read one value every way it can be read. */
static void
value(const char *v, size_t vl, int depth)
{
	static char buf[65536], back[65536];
	const char *k, *e, *g;
	size_t pos = 0, kl, el, gl, n = 0;
	struct jbuf jb;
	long long ll;
	long r, r2;
	bool b;
	int w;

	if (depth > JSON_DEPTH + 2)
		abort();	/* the reader refuses deeper nesting */
	if (vl > 0 && *v == '"' && vl - 2 <= sizeof(buf)) {
		if ((r = json_bytes(v, vl, buf, sizeof(buf))) < 0)
			abort();	/* the walk accepted it: it decodes */
		if ((size_t)r > vl - 2 || !utf8_valid(buf, (size_t)r))
			abort();
		if (r > 8192)
			return;
		jb_init(&jb);
		jb_str(&jb, buf, (size_t)r);
		if (!jb.oom) {
			r2 = json_bytes(jb.buf, jb.len, back, sizeof(back));
			if (r2 != r || memcmp(buf, back, (size_t)r) != 0)
				abort();
		}
		jb_free(&jb);
		return;
	}
	if (vl > 0 && *v == '{') {
		while ((w = json_member(v, vl, &pos, &k, &kl, &e, &el)) == 1) {
			value(e, el, depth + 1);
			/* The first member of that key is the one json_get() gives. */
			if (n++ == 0 && kl < 64 && memchr(k, '\0', kl) == NULL) {
				memcpy(buf, k, kl);
				buf[kl] = '\0';
				if (json_get(v, vl, buf, &g, &gl) != 0 || g != e ||
				    gl != el)
					abort();
			}
		}
		if (w != 0)
			abort();	/* inside a valid value, so valid */
		return;
	}
	if (vl > 0 && *v == '[') {
		while ((w = json_element(v, vl, &pos, &e, &el)) == 1) {
			value(e, el, depth + 1);
			if (n == 0 && (json_index(v, vl, 0, &g, &gl) != 0 || g != e))
				abort();
			n++;
		}
		if (w != 0)
			abort();
		return;
	}
	(void)json_int(v, vl, &ll);
	(void)json_bool(v, vl, &b);
	(void)json_is_null(v, vl);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data, *k, *v;
	size_t pos = 0, kl, vl;
	bool whole = json_is_object(s, size);
	int w;

	while ((w = json_member(s, size, &pos, &k, &kl, &v, &vl)) == 1)
		;
	if ((w == 0) != whole)
		abort();
	if (whole) {
		while (*s != '{')
			s++, size--;	/* leading white space */
		value(s, size, 0);
	}
	/* The decoders on the raw input, valid or not: bounded, no crash. */
	{
		static char out[4096];
		long long ll;

		(void)json_bytes(s, size, out, sizeof(out));
		(void)json_int(s, size, &ll);
	}
	return 0;
}
