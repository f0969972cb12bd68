/*
 * Unit tests for yaml_util.c: the one error context ("FILE:LINE: KEY: what"),
 * the schema walk, the typed getters and their bounds, loading and reading.
 */
#include <sys/stat.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "yaml_util.h"
#include "testutil.h"

/* A loaded document and its error context. */
struct tdoc {
	yaml_parser_t	 parser;
	yaml_document_t	 doc;
	struct yu_ctx	 x;
	char		 err[256];
	yaml_node_t	*root;
};

static void		 tload(struct tdoc *, const char *);
static void		 tfree(struct tdoc *);
static yaml_node_t	*tval(struct tdoc *, const char *);
static void		 expect_err(const struct tdoc *, const char *);

/* Load yaml (one document, which must load) into t. */
static void
tload(struct tdoc *t, const char *yaml)
{
	memset(t, 0, sizeof(*t));
	t->x.name = "t.yml";
	t->x.err = t->err;
	t->x.errlen = sizeof(t->err);
	t->x.doc = &t->doc;
	assert_true(yaml_parser_initialize(&t->parser));
	if (yu_doc_load(&t->x, &t->parser, &t->doc, yaml, strlen(yaml)) != 1)
		fail_msg("load: %s", t->err);
	t->root = yaml_document_get_root_node(&t->doc);
	assert_non_null(t->root);
}

static void
tfree(struct tdoc *t)
{
	yaml_document_delete(&t->doc);
	yaml_parser_delete(&t->parser);
}

/* The value of a top-level key (which must be there). */
static yaml_node_t *
tval(struct tdoc *t, const char *key)
{
	yaml_node_t *n = (yaml_node_t *)yu_map_value(&t->x, t->root, key);

	if (n == NULL)
		fail_msg("no key %s", key);
	return n;
}

/* The error is exactly want. */
static void
expect_err(const struct tdoc *t, const char *want)
{
	if (strcmp(t->err, want) != 0)
		fail_msg("error \"%s\", expected \"%s\"", t->err, want);
}

/* "FILE:LINE: KEY: message", the line and the key left out when there are none. */
static void
test_error_format(void **state)
{
	struct tdoc t;
	char small[16];

	(void)state;
	tload(&t, "a: 1\nb:\n  c: 2\n");
	assert_int_equal(yu_error(&t.x, tval(&t, "b"), "b.c", "bad %d", 7), -1);
	expect_err(&t, "t.yml:3: b.c: bad 7");
	assert_int_equal(yu_error(&t.x, NULL, "b.c", "bad"), -1);
	expect_err(&t, "t.yml: b.c: bad");
	assert_int_equal(yu_error(&t.x, tval(&t, "a"), "", "bad"), -1);
	expect_err(&t, "t.yml:1: bad");
	assert_int_equal(yu_error(&t.x, tval(&t, "a"), NULL, "bad"), -1);
	expect_err(&t, "t.yml:1: bad");
	assert_int_equal(yu_error_line(&t.x, 42, "k", "x"), -1);
	expect_err(&t, "t.yml:42: k: x");
	assert_int_equal(yu_error_line(&t.x, 0, "k", "x"), -1);
	expect_err(&t, "t.yml: k: x");
	/* A short err buffer is cut and stays a C string; none at all is not written. */
	t.x.err = small;
	t.x.errlen = sizeof(small);
	assert_int_equal(yu_error_line(&t.x, 1, "some.long.key", "a long message"), -1);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_int_equal(strncmp(small, "t.yml:1: some.l", sizeof(small) - 1), 0);
	memset(small, 'z', sizeof(small));
	t.x.errlen = 0;
	assert_int_equal(yu_error_line(&t.x, 1, "k", "x"), -1);
	assert_int_equal(small[0], 'z');
	tfree(&t);
}

/* Key paths: "prefix.key", key alone at the top, cut to fit. */
static void
test_key_paths(void **state)
{
	char p[8];
	char big[64];

	(void)state;
	yu_keypath(big, sizeof(big), "", "rules");
	assert_string_equal(big, "rules");
	yu_keypath(big, sizeof(big), "rules[0]", "name");
	assert_string_equal(big, "rules[0].name");
	yu_keypath(p, sizeof(p), "abcdef", "ghij");
	assert_string_equal(p, "abcdef.");
	yu_path(big, sizeof(big), "%s[%d]", "rules", 3);
	assert_string_equal(big, "rules[3]");
	yu_path(p, sizeof(p), "%s[%d]", "listeners", 12);
	assert_string_equal(p, "listene");
}

struct walk {
	int	 calls;
	int	 keys[8];
	char	 paths[8][YU_PATH_MAX];
	int	 fail_at;	/* key index whose callback fails, -1: none */
};

/* yu_map_walk callback: records the key index and path. */
static int
walk_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v, void *arg)
{
	struct walk *w = arg;

	if (w->calls < 8) {
		w->keys[w->calls] = key;
		snprintf(w->paths[w->calls], sizeof(w->paths[0]), "%s", path);
	}
	w->calls++;
	if (key == w->fail_at)
		return yu_error(x, v, path, "callback says no");
	return 0;
}

/* The walk: every key in the schema, each once, in document order; anything else is an error. */
static void
test_map_walk(void **state)
{
	static const char *const keys[] = { "alpha", "beta", "gamma" };
	struct tdoc t;
	struct walk w;
	uint32_t seen;

	(void)state;
	tload(&t, "top:\n  gamma: 1\n  alpha: 2\n");
	memset(&w, 0, sizeof(w));
	w.fail_at = -1;
	assert_int_equal(yu_map_walk(&t.x, tval(&t, "top"), "top", keys, 3, walk_cb,
	    &w, &seen), 0);
	assert_int_equal(w.calls, 2);
	assert_int_equal(w.keys[0], 2);
	assert_string_equal(w.paths[0], "top.gamma");
	assert_int_equal(w.keys[1], 0);
	assert_string_equal(w.paths[1], "top.alpha");
	assert_int_equal(seen, 0x5);
	/* A required key missing: named with its path, at the mapping's line. */
	assert_int_equal(yu_missing(&t.x, tval(&t, "top"), "top", keys, 0x7, seen), -1);
	expect_err(&t, "t.yml:2: top.beta: missing");
	assert_int_equal(yu_missing(&t.x, tval(&t, "top"), "top", keys, 0x5, seen), 0);
	/* The callback's error stops the walk. */
	memset(&w, 0, sizeof(w));
	w.fail_at = 2;
	assert_int_equal(yu_map_walk(&t.x, tval(&t, "top"), "top", keys, 3, walk_cb,
	    &w, &seen), -1);
	assert_int_equal(w.calls, 1);
	expect_err(&t, "t.yml:2: top.gamma: callback says no");
	tfree(&t);

	/* An unknown key: escaped in the message, the expected ones listed. */
	tload(&t, "top:\n  alpha: 1\n  \"be\\e[31mta\": 2\n");
	memset(&w, 0, sizeof(w));
	w.fail_at = -1;
	assert_int_equal(yu_map_walk(&t.x, tval(&t, "top"), "top", keys, 3, walk_cb,
	    &w, &seen), -1);
	expect_err(&t, "t.yml:3: top.be\\x1b[31mta: unknown key "
	    "(expected one of: alpha, beta, gamma)");
	assert_null(strchr(t.err, '\x1b'));
	tfree(&t);

	/* A key that is a prefix of a known one, or has it as a prefix, is unknown. */
	tload(&t, "a: {alph: 1}\nb: {alphas: 1}\n");
	assert_int_equal(yu_map_walk(&t.x, tval(&t, "a"), "a", keys, 3, walk_cb,
	    &w, &seen), -1);
	expect_err(&t, "t.yml:1: a.alph: unknown key (expected one of: alpha, beta, gamma)");
	assert_int_equal(yu_map_walk(&t.x, tval(&t, "b"), "b", keys, 3, walk_cb,
	    &w, &seen), -1);
	expect_err(&t, "t.yml:2: b.alphas: unknown key (expected one of: alpha, beta, gamma)");
	tfree(&t);

	/* Twice the same key. */
	tload(&t, "top:\n  beta: 1\n  beta: 2\n");
	assert_int_equal(yu_map_walk(&t.x, tval(&t, "top"), "top", keys, 3, walk_cb,
	    &w, &seen), -1);
	expect_err(&t, "t.yml:3: top.beta: duplicate key");
	tfree(&t);

	/* Not a mapping; a key that is not a string. */
	tload(&t, "top: [1]\nmap: {[a]: 1}\n");
	assert_int_equal(yu_map_walk(&t.x, tval(&t, "top"), "top", keys, 3, walk_cb,
	    &w, &seen), -1);
	expect_err(&t, "t.yml:1: top: expected a mapping of keys");
	assert_int_equal(yu_map_walk(&t.x, tval(&t, "map"), "map", keys, 3, walk_cb,
	    &w, &seen), -1);
	expect_err(&t, "t.yml:2: map: a key must be a string");
	tfree(&t);
}

/* The 32nd key of a schema has its bit like the first. */
static void
test_map_walk_32_keys(void **state)
{
	static char names[32][16];
	const char *keys[32];
	struct tdoc t;
	struct walk w;
	uint32_t seen;

	(void)state;
	for (int i = 0; i < 32; i++) {
		snprintf(names[i], sizeof(names[i]), "k%d", i);
		keys[i] = names[i];
	}
	tload(&t, "top: {k31: 1, k0: 2}\n");
	memset(&w, 0, sizeof(w));
	w.fail_at = -1;
	assert_int_equal(yu_map_walk(&t.x, tval(&t, "top"), "", keys, 32, walk_cb,
	    &w, &seen), 0);
	assert_int_equal(seen, 0x80000001u);
	assert_string_equal(w.paths[0], "k31");
	assert_int_equal(yu_missing(&t.x, tval(&t, "top"), "", keys, 0x80000003u, seen), -1);
	expect_err(&t, "t.yml:1: k1: missing");
	tfree(&t);
}

/* Lists: a list, not empty, at most max items. */
static void
test_seq_items(void **state)
{
	struct tdoc t;
	yaml_node_item_t *items;
	int count = -1;

	(void)state;
	tload(&t, "ok: [a, b, c]\nnone: []\nscalar: a\nmap: {a: 1}\n");
	assert_int_equal(yu_seq_items(&t.x, tval(&t, "ok"), "ok", 3, &items, &count), 0);
	assert_int_equal(count, 3);
	assert_string_equal(yaml_document_get_node(&t.doc, items[2])->data.scalar.value, "c");
	assert_int_equal(yu_seq_items(&t.x, tval(&t, "ok"), "ok", 2, &items, &count), -1);
	expect_err(&t, "t.yml:1: ok: more than 2 items");
	assert_int_equal(yu_seq_items(&t.x, tval(&t, "none"), "none", 2, &items, &count), -1);
	expect_err(&t, "t.yml:2: none: the list is empty");
	assert_int_equal(yu_seq_items(&t.x, tval(&t, "scalar"), "scalar", 2, &items, &count), -1);
	expect_err(&t, "t.yml:3: scalar: expected a list");
	assert_int_equal(yu_seq_items(&t.x, tval(&t, "map"), "map", 2, &items, &count), -1);
	expect_err(&t, "t.yml:4: map: expected a list");
	tfree(&t);
}

/* A plain null is "", "~" or null in any case; a quoted one is a string. */
static void
test_is_null(void **state)
{
	struct tdoc t;

	(void)state;
	tload(&t, "a:\nb: ~\nc: null\nd: NULL\ne: Null\nf: \"null\"\ng: ''\n"
	    "h: nul\ni: nulls\nj: [x]\nk: '~'\n");
	assert_true(yu_is_null(tval(&t, "a")));
	assert_true(yu_is_null(tval(&t, "b")));
	assert_true(yu_is_null(tval(&t, "c")));
	assert_true(yu_is_null(tval(&t, "d")));
	assert_true(yu_is_null(tval(&t, "e")));
	assert_false(yu_is_null(tval(&t, "f")));
	assert_false(yu_is_null(tval(&t, "g")));
	assert_false(yu_is_null(tval(&t, "h")));
	assert_false(yu_is_null(tval(&t, "i")));
	assert_false(yu_is_null(tval(&t, "j")));
	assert_false(yu_is_null(tval(&t, "k")));
	tfree(&t);
}

/* Strings: never cut, no NUL, empty only when allowed; a plain null is "". */
static void
test_str(void **state)
{
	struct tdoc t;
	char dst[6];
	const char *s;
	size_t len;

	(void)state;
	tload(&t, "fit: abcde\nlong: abcdef\nnul: \"a\\0b\"\nnull: ~\nempty: ''\n"
	    "list: [a]\nmap: {a: b}\nquoted: \"~\"\n");
	assert_int_equal(yu_str(&t.x, tval(&t, "fit"), "fit", dst, sizeof(dst), false), 0);
	assert_string_equal(dst, "abcde");
	strcpy(dst, "keep");
	assert_int_equal(yu_str(&t.x, tval(&t, "long"), "long", dst, sizeof(dst), false), -1);
	expect_err(&t, "t.yml:2: long: longer than 5 bytes");
	assert_string_equal(dst, "keep");
	assert_int_equal(yu_str(&t.x, tval(&t, "nul"), "nul", dst, sizeof(dst), true), -1);
	expect_err(&t, "t.yml:3: nul: contains a NUL byte");
	assert_int_equal(yu_str(&t.x, tval(&t, "null"), "null", dst, sizeof(dst), true), 0);
	assert_string_equal(dst, "");
	assert_int_equal(yu_str(&t.x, tval(&t, "null"), "null", dst, sizeof(dst), false), -1);
	expect_err(&t, "t.yml:4: null: must not be empty");
	assert_int_equal(yu_str(&t.x, tval(&t, "empty"), "empty", dst, sizeof(dst), false), -1);
	expect_err(&t, "t.yml:5: empty: must not be empty");
	assert_int_equal(yu_str(&t.x, tval(&t, "quoted"), "quoted", dst, sizeof(dst), false), 0);
	assert_string_equal(dst, "~");
	assert_int_equal(yu_str(&t.x, tval(&t, "list"), "list", dst, sizeof(dst), true), -1);
	expect_err(&t, "t.yml:6: list: expected a single value, not a list");
	assert_int_equal(yu_scalar(&t.x, tval(&t, "map"), "map", &s, &len), -1);
	expect_err(&t, "t.yml:7: map: expected a single value, not a mapping");
	assert_int_equal(yu_scalar(&t.x, tval(&t, "fit"), "fit", &s, &len), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(s, "abcde", 5);
	tfree(&t);
}

/* yu_dup: a copy of at most max bytes, its length out; NUL bytes refused. */
static void
test_dup(void **state)
{
	struct tdoc t;
	size_t len = 99;
	char *d;

	(void)state;
	tload(&t, "a: abcd\nb: \"x\\0y\"\nc: [1]\nd: ''\n");
	d = yu_dup(&t.x, tval(&t, "a"), "a", 4, &len);
	assert_non_null(d);
	assert_string_equal(d, "abcd");
	assert_int_equal(len, 4);
	free(d);
	assert_null(yu_dup(&t.x, tval(&t, "a"), "a", 3, &len));
	expect_err(&t, "t.yml:1: a: longer than 3 bytes");
	assert_null(yu_dup(&t.x, tval(&t, "b"), "b", 10, &len));
	expect_err(&t, "t.yml:2: b: contains a NUL byte");
	assert_null(yu_dup(&t.x, tval(&t, "c"), "c", 10, &len));
	expect_err(&t, "t.yml:3: c: expected a single value, not a list");
	d = yu_dup(&t.x, tval(&t, "d"), "d", 0, &len);
	assert_non_null(d);
	assert_int_equal(len, 0);
	free(d);
	tfree(&t);
}

/* Numbers: decimal, underscores between digits, K/M/G when asked, bounds, no overflow. */
static void
test_num(void **state)
{
	struct tdoc t;
	uint64_t v;
	int iv;

	(void)state;
	tload(&t, "a: 1_000\nb: 64K\nc: 2m\nd: 3G\ne: 1.5\nf: -1\ng: 18446744073709551615\n"
	    "h: 18446744073709551616\ni: 17179869184G\nj: K\nk: _1\nl: 1_\nm: 10\n"
	    "n: \"\\e[2J\"\no: 5k\np: ''\nq: 0x10\n");
	assert_int_equal(yu_num(&t.x, tval(&t, "a"), "a", 0, UINT64_MAX, 0, &v), 0);
	assert_true(v == 1000);
	assert_int_equal(yu_num(&t.x, tval(&t, "b"), "b", 0, UINT64_MAX, YU_KMG, &v), 0);
	assert_true(v == 65536);
	assert_int_equal(yu_num(&t.x, tval(&t, "c"), "c", 0, UINT64_MAX, YU_KMG, &v), 0);
	assert_true(v == 2u << 20);
	assert_int_equal(yu_num(&t.x, tval(&t, "d"), "d", 0, UINT64_MAX, YU_KMG, &v), 0);
	assert_true(v == 3ull << 30);
	/* No suffix without YU_KMG. */
	assert_int_equal(yu_num(&t.x, tval(&t, "b"), "b", 0, UINT64_MAX, 0, &v), -1);
	expect_err(&t, "t.yml:2: b: expected a number, got \"64K\"");
	assert_int_equal(yu_num(&t.x, tval(&t, "e"), "e", 0, 10, YU_KMG, &v), -1);
	expect_err(&t, "t.yml:5: e: expected a number (optional K, M or G suffix), got \"1.5\"");
	assert_int_equal(yu_num(&t.x, tval(&t, "f"), "f", 0, 10, YU_KMG | YU_BYTES, &v), -1);
	expect_err(&t, "t.yml:6: f: expected a size (number with optional K, M or G), got \"-1\"");
	assert_int_equal(yu_num(&t.x, tval(&t, "g"), "g", 0, UINT64_MAX, 0, &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(yu_num(&t.x, tval(&t, "h"), "h", 0, UINT64_MAX, 0, &v), -1);
	expect_err(&t, "t.yml:8: h: expected a number, got \"18446744073709551616\"");
	/* 2^34 G is 2^64: refused, not wrapped to 0. */
	assert_int_equal(yu_num(&t.x, tval(&t, "i"), "i", 0, UINT64_MAX, YU_KMG, &v), -1);
	assert_int_equal(yu_num(&t.x, tval(&t, "j"), "j", 0, UINT64_MAX, YU_KMG, &v), -1);
	assert_int_equal(yu_num(&t.x, tval(&t, "k"), "k", 0, UINT64_MAX, 0, &v), -1);
	assert_int_equal(yu_num(&t.x, tval(&t, "l"), "l", 0, UINT64_MAX, 0, &v), -1);
	assert_int_equal(yu_num(&t.x, tval(&t, "p"), "p", 0, UINT64_MAX, 0, &v), -1);
	assert_int_equal(yu_num(&t.x, tval(&t, "q"), "q", 0, UINT64_MAX, 0, &v), -1);
	/* Bounds, inclusive; the value after the suffix is what is bounded. */
	assert_int_equal(yu_num(&t.x, tval(&t, "m"), "m", 10, 10, 0, &v), 0);
	assert_int_equal(yu_num(&t.x, tval(&t, "m"), "m", 11, 20, 0, &v), -1);
	expect_err(&t, "t.yml:13: m: 10 is out of range (11..20)");
	assert_int_equal(yu_num(&t.x, tval(&t, "o"), "o", 0, 4096, YU_KMG | YU_BYTES, &v), -1);
	expect_err(&t, "t.yml:15: o: 5120 bytes is out of range (0..4096)");
	/* The value is escaped in the message. */
	assert_int_equal(yu_num(&t.x, tval(&t, "n"), "n", 0, 10, 0, &v), -1);
	expect_err(&t, "t.yml:14: n: expected a number, got \"\\x1b[2J\"");
	/* yu_int: the same within an int's bounds. */
	iv = -5;
	assert_int_equal(yu_int(&t.x, tval(&t, "m"), "m", 0, 10, &iv), 0);
	assert_int_equal(iv, 10);
	iv = -5;
	assert_int_equal(yu_int(&t.x, tval(&t, "a"), "a", 1, 999, &iv), -1);
	assert_int_equal(iv, -5);
	expect_err(&t, "t.yml:1: a: 1000 is out of range (1..999)");
	tfree(&t);
}

/* Booleans: true/false, yes/no, on/off, any case, quoted or not; nothing else. */
static void
test_bool(void **state)
{
	static const char *const yes[] = { "a", "b", "c", "d", "e" };
	static const char *const no[] = { "f", "g", "h", "i" };
	struct tdoc t;
	bool b;

	(void)state;
	tload(&t, "a: true\nb: \"True\"\nc: YES\nd: on\ne: 'On'\n"
	    "f: false\ng: No\nh: OFF\ni: \"false\"\n"
	    "j: maybe\nk: 1\nl: truee\nm: [true]\nn: \"\\ttrue\"\n");
	for (size_t i = 0; i < 5; i++) {
		b = false;
		assert_int_equal(yu_bool(&t.x, tval(&t, yes[i]), yes[i], &b), 0);
		assert_true(b);
	}
	for (size_t i = 0; i < 4; i++) {
		b = true;
		assert_int_equal(yu_bool(&t.x, tval(&t, no[i]), no[i], &b), 0);
		assert_false(b);
	}
	assert_int_equal(yu_bool(&t.x, tval(&t, "j"), "j", &b), -1);
	expect_err(&t, "t.yml:10: j: expected true or false, got \"maybe\"");
	assert_int_equal(yu_bool(&t.x, tval(&t, "k"), "k", &b), -1);
	assert_int_equal(yu_bool(&t.x, tval(&t, "l"), "l", &b), -1);
	assert_int_equal(yu_bool(&t.x, tval(&t, "m"), "m", &b), -1);
	expect_err(&t, "t.yml:13: m: expected a single value, not a list");
	assert_int_equal(yu_bool(&t.x, tval(&t, "n"), "n", &b), -1);
	expect_err(&t, "t.yml:14: n: expected true or false, got \"\\ttrue\"");
	tfree(&t);
}

/* Enums: exact lower-case names; the message lists them. */
static void
test_enum(void **state)
{
	static const char *const names[] = { "ehlo", "auth", "data" };
	struct tdoc t;
	int v = -1;

	(void)state;
	tload(&t, "a: data\nb: Data\nc: dat\nd: datas\n");
	assert_int_equal(yu_enum(&t.x, tval(&t, "a"), "a", names, 3, &v), 0);
	assert_int_equal(v, 2);
	v = -1;
	assert_int_equal(yu_enum(&t.x, tval(&t, "b"), "b", names, 3, &v), -1);
	assert_int_equal(v, -1);
	expect_err(&t, "t.yml:2: b: expected one of ehlo, auth, data, got \"Data\"");
	assert_int_equal(yu_enum(&t.x, tval(&t, "c"), "c", names, 3, &v), -1);
	assert_int_equal(yu_enum(&t.x, tval(&t, "d"), "d", names, 3, &v), -1);
	tfree(&t);
}

/* Loading: one document or none; a syntax error and a second document name their line. */
static void
test_doc_load(void **state)
{
	static const struct {
		const char	*yaml;
		int		 rc;
		const char	*err;
	} cases[] = {
		{ "", 0, "" },
		{ "# only a comment\n", 0, "" },
		{ "a: 1\n", 1, "" },
		{ "a: [1\n", -1, "t.yml:2: yaml: did not find expected ',' or ']' "
		    "while parsing a flow sequence" },
		{ "a: 1\n---\nb: 2\n", -1, "t.yml:3: more than one YAML document" },
		{ "a: 1\n---\nb: [\n", -1, "t.yml:4: yaml: " },
		{ "a: *nope\n", -1, "t.yml:1: yaml: found undefined alias" },
	};
	yaml_parser_t parser;
	yaml_document_t doc;
	struct yu_ctx x;
	char err[256];
	int rc;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&x, 0, sizeof(x));
		x.name = "t.yml";
		x.err = err;
		x.errlen = sizeof(err);
		x.doc = &doc;
		err[0] = '\0';
		assert_true(yaml_parser_initialize(&parser));
		rc = yu_doc_load(&x, &parser, &doc, cases[i].yaml, strlen(cases[i].yaml));
		if (rc != cases[i].rc || strncmp(err, cases[i].err, strlen(cases[i].err)) != 0)
			fail_msg("case %zu: rc %d err \"%s\", expected %d \"%s...\"", i, rc,
			    err, cases[i].rc, cases[i].err);
		if (rc == 1)
			yaml_document_delete(&doc);
		yaml_parser_delete(&parser);
	}
}

/* yu_map_value: a direct key's value, or NULL (absent, nested, not a mapping). */
static void
test_map_value(void **state)
{
	struct tdoc t;

	(void)state;
	tload(&t, "a: 1\nb: {c: 2}\n");
	assert_string_equal(tval(&t, "a")->data.scalar.value, "1");
	assert_null(yu_map_value(&t.x, t.root, "c"));
	assert_null(yu_map_value(&t.x, t.root, ""));
	assert_null(yu_map_value(&t.x, tval(&t, "a"), "a"));
	assert_non_null(yu_map_value(&t.x, tval(&t, "b"), "c"));
	tfree(&t);
}

/* Write n bytes of c to path. */
static void
write_file(const char *path, size_t n, char c)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	for (size_t i = 0; i < n; i++)
		assert_int_not_equal(fputc(c, fp), EOF);
	assert_int_equal(fclose(fp), 0);
}

/* Reading: a regular file of at most YU_FILE_MAX bytes; anything else a clear error. */
static void
test_read_file(void **state)
{
	char dir[] = "/tmp/test_yaml_util.XXXXXX", path[128], err[256];
	char *buf;
	size_t len;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/max.yml", dir);
	write_file(path, YU_FILE_MAX, '#');
	buf = NULL;
	assert_int_equal(yu_read_file(path, &buf, &len, err, sizeof(err)), 0);
	assert_int_equal(len, YU_FILE_MAX);
	assert_int_equal(buf[len - 1], '#');
	free(buf);
	snprintf(path, sizeof(path), "%s/big.yml", dir);
	write_file(path, YU_FILE_MAX + 1, '#');
	assert_int_equal(yu_read_file(path, &buf, &len, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "big.yml: larger than 1048576 bytes"));
	snprintf(path, sizeof(path), "%s/empty.yml", dir);
	write_file(path, 0, '#');
	assert_int_equal(yu_read_file(path, &buf, &len, err, sizeof(err)), 0);
	assert_int_equal(len, 0);
	free(buf);
	snprintf(path, sizeof(path), "%s/none.yml", dir);
	assert_int_equal(yu_read_file(path, &buf, &len, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "none.yml: cannot open: No such file"));
	assert_int_equal(yu_read_file(dir, &buf, &len, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ": not a regular file"));
	/* A FIFO (nobody writing) is refused at once, not waited on. */
	snprintf(path, sizeof(path), "%s/fifo.yml", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(yu_read_file(path, &buf, &len, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "fifo.yml: not a regular file"));
	rm_rf(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_format),
		cmocka_unit_test(test_key_paths),
		cmocka_unit_test(test_map_walk),
		cmocka_unit_test(test_map_walk_32_keys),
		cmocka_unit_test(test_seq_items),
		cmocka_unit_test(test_is_null),
		cmocka_unit_test(test_str),
		cmocka_unit_test(test_dup),
		cmocka_unit_test(test_num),
		cmocka_unit_test(test_bool),
		cmocka_unit_test(test_enum),
		cmocka_unit_test(test_doc_load),
		cmocka_unit_test(test_map_value),
		cmocka_unit_test(test_read_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
