/* jansson on the same lines: parse to a tree, walk it, free it. */
#include <string.h>

#include <jansson.h>

long long	jansson_walk(const char *, size_t);
static long long	walk(json_t *);

static long long
walk(json_t *v)
{
	const char *k;
	json_t *e;
	size_t i;
	long long sum = 0;

	switch (json_typeof(v)) {
	case JSON_STRING:
		return (long long)json_string_length(v);
	case JSON_OBJECT:
		json_object_foreach(v, k, e)
			sum += (long long)strlen(k) + walk(e);
		return sum;
	case JSON_ARRAY:
		json_array_foreach(v, i, e)
			sum += walk(e);
		return sum;
	case JSON_INTEGER:
		return json_integer_value(v) & 0xff;
	case JSON_TRUE:
		return 1;
	default:
		return 0;
	}
}

long long
jansson_walk(const char *line, size_t len)
{
	json_error_t err;
	json_t *root;
	long long r;

	/* JSON_ALLOW_NUL: a mail's \u0000 is data, as json_bytes() keeps it. */
	if ((root = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
	    &err)) == NULL)
		return -1;
	r = walk(root);
	json_decref(root);
	return r;
}
