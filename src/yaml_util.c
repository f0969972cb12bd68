/*
 * YAML reading with one error context (see yaml_util.h).  The walk is as deep
 * as the caller's schema whatever the document holds, so aliases cannot make
 * it loop; a key that is not in the schema is an error, never ignored.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "yaml_util.h"

static void	 yu_verror(struct yu_ctx *, size_t, const char *, const char *,
		    va_list) __attribute__((format(printf, 4, 0)));
static void	 name_list(char *, size_t, const char *const *, int);

/* Fill err with "FILE:LINE: KEY: message" (line 0 or empty key omitted). */
static void
yu_verror(struct yu_ctx *x, size_t line, const char *path, const char *fmt,
    va_list ap)
{
	char msg[256], where[32] = "";

	if (x->errlen == 0)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (line > 0)
		snprintf(where, sizeof(where), ":%zu", line);
	if (path != NULL && *path != '\0')
		snprintf(x->err, x->errlen, "%s%s: %s: %s", x->name, where, path,
		    msg);
	else
		snprintf(x->err, x->errlen, "%s%s: %s", x->name, where, msg);
}

int
yu_error(struct yu_ctx *x, const yaml_node_t *n, const char *path,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	yu_verror(x, n != NULL ? (size_t)n->start_mark.line + 1 : 0, path, fmt,
	    ap);
	va_end(ap);
	return -1;
}

int
yu_error_line(struct yu_ctx *x, size_t line, const char *path,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	yu_verror(x, line, path, fmt, ap);
	va_end(ap);
	return -1;
}

void
yu_path(char *out, size_t outlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(out, outlen, fmt, ap);
	va_end(ap);
}

void
yu_keypath(char *out, size_t outlen, const char *prefix, const char *key)
{
	if (*prefix == '\0')
		snprintf(out, outlen, "%s", key);
	else
		snprintf(out, outlen, "%s.%s", prefix, key);
}

/* "a, b, c": the names a key or value may take, for an error message. */
static void
name_list(char *out, size_t outlen, const char *const *names, int count)
{
	size_t off = 0;
	int i;

	out[0] = '\0';
	for (i = 0; i < count && off < outlen; i++)
		off += (size_t)snprintf(out + off, outlen - off, "%s%s",
		    i ? ", " : "", names[i]);
}

int
yu_map_walk(struct yu_ctx *x, yaml_node_t *n, const char *prefix,
    const char *const *keys, int nkeys, yu_key_cb cb, void *arg,
    uint32_t *seen)
{
	yaml_node_pair_t *p;
	yaml_node_t *k, *v;
	char path[YU_PATH_MAX], esc[64], list[320];
	size_t klen;
	int i;

	*seen = 0;
	if (n->type != YAML_MAPPING_NODE)
		return yu_error(x, n, prefix, "expected a mapping of keys");
	for (p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	    p++) {
		k = yaml_document_get_node(x->doc, p->key);
		v = yaml_document_get_node(x->doc, p->value);
		if (k == NULL || v == NULL)
			return yu_error(x, n, prefix, "malformed mapping");
		if (k->type != YAML_SCALAR_NODE)
			return yu_error(x, k, prefix, "a key must be a string");
		klen = k->data.scalar.length;
		for (i = 0; i < nkeys; i++)
			if (strlen(keys[i]) == klen &&
			    memcmp(keys[i], k->data.scalar.value, klen) == 0)
				break;
		if (i == nkeys) {
			log_escape(esc, sizeof(esc), k->data.scalar.value, klen);
			yu_keypath(path, sizeof(path), prefix, esc);
			name_list(list, sizeof(list), keys, nkeys);
			return yu_error(x, k, path,
			    "unknown key (expected one of: %s)", list);
		}
		yu_keypath(path, sizeof(path), prefix, keys[i]);
		if (*seen & (1u << i))
			return yu_error(x, k, path, "duplicate key");
		*seen |= 1u << i;
		if (cb(x, i, path, v, arg) == -1)
			return -1;
	}
	return 0;
}

int
yu_missing(struct yu_ctx *x, yaml_node_t *map, const char *prefix,
    const char *const *keys, uint32_t required, uint32_t seen)
{
	char path[YU_PATH_MAX];
	int i;

	for (i = 0; i < 32; i++) {
		if ((required & (1u << i)) && !(seen & (1u << i))) {
			yu_keypath(path, sizeof(path), prefix, keys[i]);
			return yu_error(x, map, path, "missing");
		}
	}
	return 0;
}

int
yu_seq_items(struct yu_ctx *x, yaml_node_t *n, const char *path, int max,
    yaml_node_item_t **items, int *count)
{
	ptrdiff_t c;

	if (n->type != YAML_SEQUENCE_NODE)
		return yu_error(x, n, path, "expected a list");
	c = n->data.sequence.items.top - n->data.sequence.items.start;
	if (c == 0)
		return yu_error(x, n, path, "the list is empty");
	if (c > max)
		return yu_error(x, n, path, "more than %d items", max);
	*items = n->data.sequence.items.start;
	*count = (int)c;
	return 0;
}

yaml_node_t *
yu_seq_item(struct yu_ctx *x, yaml_node_t *n, const char *path,
    const yaml_node_item_t *items, int i, char *ipath, size_t ipathlen)
{
	yaml_node_t *v;

	if (items == NULL) {
		yu_path(ipath, ipathlen, "%s", path);
		return n;
	}
	yu_path(ipath, ipathlen, "%s[%d]", path, i);
	if ((v = yaml_document_get_node(x->doc, items[i])) == NULL)
		(void)yu_error(x, n, path, "malformed list");
	return v;
}

bool
yu_is_null(const yaml_node_t *n)
{
	const char *s = (const char *)n->data.scalar.value;
	size_t len = n->data.scalar.length;

	if (n->type != YAML_SCALAR_NODE ||
	    n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	return len == 0 || (len == 1 && s[0] == '~') ||
	    (len == 4 && strncasecmp(s, "null", 4) == 0);
}

int
yu_scalar(struct yu_ctx *x, yaml_node_t *n, const char *path, const char **s,
    size_t *len)
{
	if (n->type == YAML_SEQUENCE_NODE)
		return yu_error(x, n, path, "expected a single value, not a list");
	if (n->type != YAML_SCALAR_NODE)
		return yu_error(x, n, path,
		    "expected a single value, not a mapping");
	*s = (const char *)n->data.scalar.value;
	*len = n->data.scalar.length;
	return 0;
}

int
yu_str(struct yu_ctx *x, yaml_node_t *n, const char *path, char *dst,
    size_t dstlen, bool allow_empty)
{
	const char *s = NULL;
	size_t len = 0;

	if (yu_scalar(x, n, path, &s, &len) == -1)
		return -1;
	if (yu_is_null(n))
		len = 0;
	if (memchr(s, '\0', len) != NULL)
		return yu_error(x, n, path, "contains a NUL byte");
	if (len >= dstlen)
		return yu_error(x, n, path, "longer than %zu bytes", dstlen - 1);
	if (len == 0 && !allow_empty)
		return yu_error(x, n, path, "must not be empty");
	memcpy(dst, s, len);
	dst[len] = '\0';
	return 0;
}

char *
yu_dup(struct yu_ctx *x, yaml_node_t *n, const char *path, size_t max,
    size_t *lenp)
{
	const char *s = NULL;
	size_t len = 0;
	char *d;

	if (yu_scalar(x, n, path, &s, &len) == -1)
		return NULL;
	if (memchr(s, '\0', len) != NULL) {
		yu_error(x, n, path, "contains a NUL byte");
		return NULL;
	}
	if (len > max) {
		yu_error(x, n, path, "longer than %zu bytes", max);
		return NULL;
	}
	if ((d = malloc(len + 1)) == NULL) {
		yu_error(x, n, path, "out of memory");
		return NULL;
	}
	memcpy(d, s, len);
	d[len] = '\0';
	*lenp = len;
	return d;
}

int
yu_num(struct yu_ctx *x, yaml_node_t *n, const char *path, uint64_t min,
    uint64_t max, int flags, uint64_t *out)
{
	const char *s = NULL;
	size_t len = 0, l;
	uint64_t v, mul = 1;
	char esc[48];

	if (yu_scalar(x, n, path, &s, &len) == -1)
		return -1;
	l = len;
	if ((flags & YU_KMG) && l > 0) {
		switch (s[l - 1]) {
		case 'k': case 'K': mul = 1024ull; break;
		case 'm': case 'M': mul = 1024ull * 1024; break;
		case 'g': case 'G': mul = 1024ull * 1024 * 1024; break;
		default: break;
		}
	}
	if (mul != 1)
		l--;
	if (util_parse_u64(s, l, 0, UINT64_MAX / mul, true, &v) == -1)
		return yu_error(x, n, path, "expected %s, got \"%s\"",
		    (flags & YU_BYTES) ?
		    "a size (number with optional K, M or G)" :
		    (flags & YU_KMG) ? "a number (optional K, M or G suffix)" :
		    "a number", log_escape(esc, sizeof(esc), s, len));
	v *= mul;
	if (v < min || v > max)
		return yu_error(x, n, path, "%llu%s is out of range (%llu..%llu)",
		    (unsigned long long)v, (flags & YU_BYTES) ? " bytes" : "",
		    (unsigned long long)min, (unsigned long long)max);
	*out = v;
	return 0;
}

int
yu_int(struct yu_ctx *x, yaml_node_t *n, const char *path, int min, int max,
    int *out)
{
	uint64_t v = 0;

	if (yu_num(x, n, path, (uint64_t)min, (uint64_t)max, 0, &v) == -1)
		return -1;
	*out = (int)v;
	return 0;
}

int
yu_bool(struct yu_ctx *x, yaml_node_t *n, const char *path, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on" };
	static const char *const no[] = { "false", "no", "off" };
	const char *s = NULL;
	size_t len = 0, i;
	char esc[48];

	if (yu_scalar(x, n, path, &s, &len) == -1)
		return -1;
	for (i = 0; i < 3; i++) {
		if (len == strlen(yes[i]) && strncasecmp(s, yes[i], len) == 0) {
			*out = true;
			return 0;
		}
		if (len == strlen(no[i]) && strncasecmp(s, no[i], len) == 0) {
			*out = false;
			return 0;
		}
	}
	return yu_error(x, n, path, "expected true or false, got \"%s\"",
	    log_escape(esc, sizeof(esc), s, len));
}

int
yu_enum(struct yu_ctx *x, yaml_node_t *n, const char *path,
    const char *const *names, int count, int *out)
{
	const char *s = NULL;
	size_t len = 0;
	char esc[48], list[128];
	int i;

	if (yu_scalar(x, n, path, &s, &len) == -1)
		return -1;
	for (i = 0; i < count; i++) {
		if (len == strlen(names[i]) && memcmp(s, names[i], len) == 0) {
			*out = i;
			return 0;
		}
	}
	name_list(list, sizeof(list), names, count);
	return yu_error(x, n, path, "expected one of %s, got \"%s\"", list,
	    log_escape(esc, sizeof(esc), s, len));
}

/* One open collection of the shape check. */
struct yu_level {
	bool		 map;		/* else a sequence */
	bool		 want_key;	/* a mapping: the next node is a key */
	int		 idx;		/* a sequence: index of the next item */
	char		 key[40];	/* a mapping: the current key, escaped */
	char		*anchor;	/* this collection's anchor, or NULL */
	unsigned long	 start;		/* nodes counted when it began */
};

/* An anchor whose node is complete: how many nodes an alias of it stands for. */
struct yu_anchor {
	char		*name;
	unsigned long	 size;
};

/* The key path of the open levels: "relay.caps.a", "rules[0].conditions[2]". */
static void
yu_shape_path(const struct yu_level *lv, int depth, char *out, size_t outlen)
{
	size_t off = 0;
	int n;

	out[0] = '\0';
	for (int i = 0; i < depth; i++) {
		if (lv[i].map && !lv[i].want_key)
			n = snprintf(out + off, outlen - off, "%s%s", off ? "." : "", lv[i].key);
		else if (!lv[i].map)
			n = snprintf(out + off, outlen - off, "[%d]", lv[i].idx);
		else
			continue;
		if (n < 0 || (size_t)n >= outlen - off - 4) {
			snprintf(out + off, outlen - off, "...");
			return;
		}
		off += (size_t)n;
	}
}

/*
 * Check the document's shape on libyaml's events, before it is built:
 * nesting at most YU_DEPTH_MAX, at most YU_ANCHORS_MAX anchors, aliases
 * standing for at most YU_ALIAS_NODES_MAX nodes together (the expansion a
 * walk could meet, "billion laughs"), and no alias inside its own anchor.
 * Stops at the first excess, so its cost is bounded whatever the input.
 * 0; -1 with the error (file, line, key path); 1 for a YAML syntax error,
 * left to yaml_parser_load() to report as it always has.
 */
static int
yu_shape_check(struct yu_ctx *x, const char *buf, size_t len)
{
	yaml_parser_t p;
	yaml_event_t ev;
	struct yu_level lv[YU_DEPTH_MAX + 1];
	struct yu_anchor *an = NULL;
	char path[YU_PATH_MAX];
	const char *anchor = NULL, *alias;
	unsigned long nodes = 0, aliased = 0, size;
	size_t line;
	int depth = 0, nan = 0, rc = 1, i;
	bool done = false, node;

	if (!yaml_parser_initialize(&p)) {
		snprintf(x->err, x->errlen, "%s: out of memory", x->name);
		return -1;
	}
	if ((an = calloc(YU_ANCHORS_MAX, sizeof(*an))) == NULL) {
		yaml_parser_delete(&p);
		snprintf(x->err, x->errlen, "%s: out of memory", x->name);
		return -1;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
	while (!done) {
		if (!yaml_parser_parse(&p, &ev))
			goto out;	/* rc 1: the load reports it */
		line = (size_t)ev.start_mark.line + 1;
		node = true;
		anchor = NULL;
		alias = NULL;
		size = 1;
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			node = false;
			break;
		case YAML_STREAM_START_EVENT:
		case YAML_DOCUMENT_START_EVENT:
		case YAML_DOCUMENT_END_EVENT:
		case YAML_NO_EVENT:
			node = false;
			break;
		case YAML_SCALAR_EVENT:
			anchor = (const char *)ev.data.scalar.anchor;
			break;
		case YAML_ALIAS_EVENT:
			alias = (const char *)ev.data.alias.anchor;
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			anchor = ev.type == YAML_SEQUENCE_START_EVENT ?
			    (const char *)ev.data.sequence_start.anchor :
			    (const char *)ev.data.mapping_start.anchor;
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			/* The collection is whole: its anchor may now be aliased. */
			depth--;
			if (lv[depth].anchor != NULL) {
				if (nan == YU_ANCHORS_MAX) {
					yu_shape_path(lv, depth, path, sizeof(path));
					yu_error_line(x, line, path, "more than %d anchors",
					    YU_ANCHORS_MAX);
					rc = -1;
					goto out;
				}
				an[nan].name = lv[depth].anchor;
				an[nan++].size = nodes - lv[depth].start;
				lv[depth].anchor = NULL;
			}
			node = false;
			break;
		}
		if (node && depth > 0) {
			/* Where this node is: a key, a value, an item. */
			struct yu_level *l = &lv[depth - 1];

			if (l->map && l->want_key) {
				if (ev.type == YAML_SCALAR_EVENT)
					log_escape(l->key, sizeof(l->key), ev.data.scalar.value,
					    ev.data.scalar.length);
				else
					snprintf(l->key, sizeof(l->key), "?");
			}
			if (!l->map)
				l->idx++;
		}
		if (alias != NULL) {
			/* The latest definition of a name counts (YAML allows redefining). */
			for (i = depth - 1; i >= 0; i--)
				if (lv[i].anchor && strcmp(lv[i].anchor, alias) == 0)
					break;
			if (i >= 0) {
				yu_shape_path(lv, depth, path, sizeof(path));
				yu_error_line(x, line, path, "alias *%.32s inside its own anchor "
				    "(a cycle)", alias);
				rc = -1;
				goto out;
			}
			for (i = nan - 1; i >= 0; i--)
				if (strcmp(an[i].name, alias) == 0)
					break;
			size = i >= 0 ? an[i].size : 1;	/* undefined: the load says so */
			aliased += size;
			if (aliased > YU_ALIAS_NODES_MAX) {
				yu_shape_path(lv, depth, path, sizeof(path));
				yu_error_line(x, line, path, "aliases expand to more than %d nodes",
				    YU_ALIAS_NODES_MAX);
				rc = -1;
				goto out;
			}
		}
		if (node)
			nodes += size;
		if (ev.type == YAML_SCALAR_EVENT && anchor != NULL) {
			if (nan == YU_ANCHORS_MAX) {
				yu_shape_path(lv, depth, path, sizeof(path));
				yu_error_line(x, line, path, "more than %d anchors", YU_ANCHORS_MAX);
				rc = -1;
				goto out;
			}
			if ((an[nan].name = strdup(anchor)) == NULL)
				goto oom;
			an[nan++].size = 1;
		}
		if (ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_MAPPING_START_EVENT) {
			if (depth == YU_DEPTH_MAX) {
				yu_shape_path(lv, depth, path, sizeof(path));
				yu_error_line(x, line, path, "nested deeper than %d levels",
				    YU_DEPTH_MAX);
				rc = -1;
				goto out;
			}
			memset(&lv[depth], 0, sizeof(lv[depth]));
			lv[depth].map = ev.type == YAML_MAPPING_START_EVENT;
			lv[depth].want_key = true;
			lv[depth].idx = -1;
			lv[depth].start = nodes;
			if (anchor != NULL && (lv[depth].anchor = strdup(anchor)) == NULL)
				goto oom;
			depth++;
		}
		/* A mapping's next node is a key again after each value. */
		if (ev.type != YAML_SEQUENCE_START_EVENT && ev.type != YAML_MAPPING_START_EVENT &&
		    node && depth > 0 && lv[depth - 1].map)
			lv[depth - 1].want_key = !lv[depth - 1].want_key;
		if ((ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT) &&
		    depth > 0 && lv[depth - 1].map)
			lv[depth - 1].want_key = !lv[depth - 1].want_key;
		yaml_event_delete(&ev);
	}
	rc = 0;
	goto end;
oom:
	snprintf(x->err, x->errlen, "%s: out of memory", x->name);
	rc = -1;
out:
	yaml_event_delete(&ev);
end:
	for (i = 0; i < depth; i++)
		free(lv[i].anchor);
	for (i = 0; i < nan; i++)
		free(an[i].name);
	free(an);
	yaml_parser_delete(&p);
	return rc;
}

int
yu_doc_load(struct yu_ctx *x, yaml_parser_t *parser, yaml_document_t *doc,
    const char *buf, size_t len)
{
	yaml_document_t extra;
	yaml_node_t *root;

	if (yu_shape_check(x, buf, len) == -1)
		return -1;
	yaml_parser_set_input_string(parser, (const unsigned char *)buf, len);
	if (!yaml_parser_load(parser, doc)) {
		if (parser->error == YAML_MEMORY_ERROR)
			snprintf(x->err, x->errlen, "%s: out of memory",
			    x->name);
		else
			snprintf(x->err, x->errlen, "%s:%zu: yaml: %s%s%s",
			    x->name, (size_t)parser->problem_mark.line + 1,
			    parser->problem ? parser->problem : "syntax error",
			    parser->context ? " " : "",
			    parser->context ? parser->context : "");
		return -1;
	}
	if ((root = yaml_document_get_root_node(doc)) == NULL) {
		yaml_document_delete(doc);
		return 0;
	}
	/* A second document would be silently ignored: refuse it. */
	if (!yaml_parser_load(parser, &extra)) {
		snprintf(x->err, x->errlen, "%s:%zu: yaml: %s", x->name,
		    (size_t)parser->problem_mark.line + 1,
		    parser->problem ? parser->problem : "syntax error");
		yaml_document_delete(doc);
		return -1;
	}
	if ((root = yaml_document_get_root_node(&extra)) != NULL) {
		yu_error(x, root, NULL, "more than one YAML document");
		yaml_document_delete(&extra);
		yaml_document_delete(doc);
		return -1;
	}
	yaml_document_delete(&extra);
	return 1;
}

int
yu_read_file(const char *path, char **bufp, size_t *lenp, char *err,
    size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd;

	/* O_NONBLOCK: a FIFO in the file's place is refused below, not waited on. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) == -1) {
		snprintf(err, errlen, "%s: cannot open: %s", path,
		    strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		snprintf(err, errlen, "%s: cannot stat: %s", path,
		    strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		goto fail;
	}
	if (st.st_size > YU_FILE_MAX) {
		snprintf(err, errlen, "%s: larger than %d bytes", path,
		    YU_FILE_MAX);
		goto fail;
	}
	if ((buf = malloc(YU_FILE_MAX + 1)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		goto fail;
	}
	for (;;) {
		n = read(fd, buf + len, YU_FILE_MAX + 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			snprintf(err, errlen, "%s: cannot read: %s", path,
			    strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > YU_FILE_MAX) {
			snprintf(err, errlen, "%s: larger than %d bytes", path,
			    YU_FILE_MAX);
			goto fail;
		}
	}
	close(fd);
	*bufp = buf;
	*lenp = len;
	return 0;
fail:
	free(buf);
	close(fd);
	return -1;
}

/* The value node of key in mapping n, or NULL. */
const yaml_node_t *
yu_map_value(struct yu_ctx *x, yaml_node_t *n, const char *key)
{
	yaml_node_pair_t *p;
	yaml_node_t *k;

	if (n->type != YAML_MAPPING_NODE)
		return NULL;
	for (p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		k = yaml_document_get_node(x->doc, p->key);
		if (k != NULL && k->type == YAML_SCALAR_NODE &&
		    strcmp((const char *)k->data.scalar.value, key) == 0)
			return yaml_document_get_node(x->doc, p->value);
	}
	return NULL;
}
