/* The replaced reader (relay_json.c at ff561ef~1), walked like json_bench.c's. */
#include <stdbool.h>
#include <string.h>

#include "relay_json.h"

long long	old_walk(const char *, size_t);
static long long	walk(const char *, size_t, int);

static long long
walk(const char *v, size_t vl, int depth)
{
	char buf[1024];
	const char *k, *e;
	size_t pos = 0, kl, el;
	long long n, sum = 0;
	bool b;

	if (depth > 8)
		return -1;
	if (*v == '"')
		return relay_json_str(v, vl, buf, sizeof(buf)) == 0 ? (long long)strlen(buf) : -1;
	if (*v == '{') {
		while (relay_json_member(v, vl, &pos, &k, &kl, &e, &el) == 1)
			sum += (long long)kl + walk(e, el, depth + 1);
		return sum;
	}
	if (*v == '[') {
		while (relay_json_element(v, vl, &pos, &e, &el) == 1)
			sum += walk(e, el, depth + 1);
		return sum;
	}
	if (relay_json_int(v, vl, &n) == 0)
		return n & 0xff;
	if (relay_json_bool(v, vl, &b) == 0)
		return b;
	return relay_json_is_null(v, vl) ? 0 : -1;
}

long long
old_walk(const char *line, size_t len)
{
	return walk(line, len, 0);
}
