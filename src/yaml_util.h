/*
 * YAML reading for the schema-walked files (the main config, the feed config,
 * the rules): one error context, so every error reads "FILE:LINE: KEY: what is
 * wrong" whichever file it comes from.  The document is loaded with libyaml's
 * document API and walked against a fixed schema by the caller, through
 * yu_map_walk() and the typed getters below.  All return 0, or -1 with the
 * context's err filled.  Never logs.
 */
#ifndef FOSR_YAML_UTIL_H
#define FOSR_YAML_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

#define YU_FILE_MAX	(1024 * 1024)	/* a config or rules file larger than this is a mistake */
#define YU_PATH_MAX	160		/* a dotted key path (it only labels errors) */
/*
 * Bounds on the document's shape, checked on libyaml's event stream before
 * the document is built (yu_doc_load()): libyaml's scanner takes time
 * quadratic in the nesting (100,000 levels: about a minute), and aliases
 * could make a walk visit one node many times.  No schema here is deeper
 * than 8 levels, and an operator's file uses a handful of anchors.
 */
#define YU_DEPTH_MAX		64	/* nested collections */
#define YU_ANCHORS_MAX		256	/* anchors in one document */
#define YU_ALIAS_NODES_MAX	10000	/* nodes all aliases stand for, together */

/* Where errors go: the file's name (for messages), the document, err[errlen]. */
struct yu_ctx {
	yaml_document_t	*doc;
	const char	*name;
	char		*err;
	size_t		 errlen;
};

/* Per-key callback of yu_map_walk(): (ctx, key index, dotted path, value, arg). */
typedef int	(*yu_key_cb)(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);

/* Report an error at node n (NULL: no line) or at a line (0: none); return -1. */
int	yu_error(struct yu_ctx *, const yaml_node_t *n, const char *path,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
int	yu_error_line(struct yu_ctx *, size_t line, const char *path,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Format a key path (truncated if it must be). */
void	yu_path(char *out, size_t outlen, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* "prefix.key", or key at the top (prefix ""). */
void	yu_keypath(char *out, size_t outlen, const char *prefix, const char *key);

/*
 * Walk the mapping n, whose keys must be among keys[0..nkeys) (nkeys <= 32) and
 * appear once, calling cb for each; the keys seen come back as a bit mask.
 */
int	yu_map_walk(struct yu_ctx *, yaml_node_t *n, const char *prefix,
	    const char *const *keys, int nkeys, yu_key_cb cb, void *arg,
	    uint32_t *seen);
/* Report the first key of required (a bit mask over keys) missing from seen. */
int	yu_missing(struct yu_ctx *, yaml_node_t *map, const char *prefix,
	    const char *const *keys, uint32_t required, uint32_t seen);
/* Require n to be a non-empty list of at most max items. */
int	yu_seq_items(struct yu_ctx *, yaml_node_t *n, const char *path, int max,
	    yaml_node_item_t **items, int *count);
/*
 * Item i of the list yu_seq_items() gave (items NULL: n itself, a single
 * value where a list may stand), with its path ("path[i]", or path) in
 * ipath; NULL after an error.
 */
yaml_node_t *yu_seq_item(struct yu_ctx *, yaml_node_t *n, const char *path,
	    const yaml_node_item_t *items, int i, char *ipath, size_t ipathlen);
/* Whether n is a plain null scalar ("", "~", "null"). */
bool	yu_is_null(const yaml_node_t *n);
/* The value node of key in mapping n (not nested), or NULL. */
const yaml_node_t *yu_map_value(struct yu_ctx *, yaml_node_t *n, const char *key);

/* Require n to be a scalar; its bytes go to *s and *len. */
int	yu_scalar(struct yu_ctx *, yaml_node_t *n, const char *path,
	    const char **s, size_t *len);
/*
 * Copy a string value into dst (dstlen bytes, NUL included).  A plain null is
 * the empty string; too long, NUL bytes, or empty when !allow_empty are errors
 * (a value is never silently truncated).
 */
int	yu_str(struct yu_ctx *, yaml_node_t *n, const char *path, char *dst,
	    size_t dstlen, bool allow_empty);
/* A malloc'd NUL-terminated copy of a scalar value of at most max bytes. */
char	*yu_dup(struct yu_ctx *, yaml_node_t *n, const char *path, size_t max,
	    size_t *lenp);

/* yu_num() flags. */
#define YU_KMG		0x01	/* optional K, M or G suffix (powers of 1024) */
#define YU_BYTES	0x02	/* the value is a size: errors say so */
/* A decimal (underscores between digits allowed) within [min, max]. */
int	yu_num(struct yu_ctx *, yaml_node_t *n, const char *path, uint64_t min,
	    uint64_t max, int flags, uint64_t *out);
/* yu_num() without flags, for an int. */
int	yu_int(struct yu_ctx *, yaml_node_t *n, const char *path, int min,
	    int max, int *out);
/* true/false, yes/no, on/off in any case, quoted or not (tls: "True"). */
int	yu_bool(struct yu_ctx *, yaml_node_t *n, const char *path, bool *out);
/* One of names[0..count) (exact, lower case) into *out. */
int	yu_enum(struct yu_ctx *, yaml_node_t *n, const char *path,
	    const char *const *names, int count, int *out);

/*
 * Parse buf with parser (initialised by the caller) into doc.  Returns 1 with
 * a document (the caller deletes it), 0 for an empty stream, -1 on a syntax
 * error or a second document.
 */
int	yu_doc_load(struct yu_ctx *, yaml_parser_t *parser, yaml_document_t *doc,
	    const char *buf, size_t len);
/* Read a whole regular file of at most YU_FILE_MAX bytes into a malloc'd buffer. */
int	yu_read_file(const char *path, char **bufp, size_t *lenp, char *err,
	    size_t errlen);

#endif
