/*
 * A small, bounded JSON reader for the relay: reads values out of the
 * reception records and the caps journal that this daemon wrote itself, but
 * treats them as untrusted (a torn line, a hand-edited file).  Pure functions
 * over (const char *, size_t); nothing is allocated, nesting is capped.
 */
#ifndef FOSR_RELAY_JSON_H
#define FOSR_RELAY_JSON_H

#include <stdbool.h>
#include <stddef.h>

/* Whether len bytes of s are exactly one JSON object (whitespace around allowed). */
bool	relay_json_is_object(const char *s, size_t len);

/*
 * Find key among the members of the object obj (not nested); *val and *vlen
 * get the raw value text.  0 found, -1 absent or malformed.
 */
int	relay_json_get(const char *obj, size_t len, const char *key,
	    const char **val, size_t *vlen);

/* Decode a JSON string value into out (NUL-terminated; no NUL inside).  0 or -1. */
int	relay_json_str(const char *val, size_t vlen, char *out, size_t outlen);

/* A JSON integer value.  0 or -1. */
int	relay_json_int(const char *val, size_t vlen, long long *out);

/* A JSON true/false value.  0 or -1. */
int	relay_json_bool(const char *val, size_t vlen, bool *out);

bool	relay_json_is_null(const char *val, size_t vlen);

/* The idx-th element of the array val.  0 found, -1 past the end or malformed. */
int	relay_json_index(const char *val, size_t vlen, int idx,
	    const char **elem, size_t *elen);

/*
 * Walk the members of the object s[0..len) in order, in one pass: *pos is 0
 * before the first call and is the walk's state after that.  Each call sets
 * the next member's key (raw, without its quotes) and value (raw text).
 * Returns 1 for a member, 0 after the last one (the whole of s was then
 * exactly one object, as relay_json_is_object() says), -1 malformed.
 */
int	relay_json_member(const char *s, size_t len, size_t *pos,
	    const char **key, size_t *klen, const char **val, size_t *vlen);

/* The same for the elements of the array val: 1, 0 after the last, -1. */
int	relay_json_element(const char *val, size_t vlen, size_t *pos,
	    const char **elem, size_t *elen);

/* Find key then decode it as a string (relay_json_get + relay_json_str). */
int	relay_json_get_str(const char *obj, size_t len, const char *key,
	    char *out, size_t outlen);

#endif
