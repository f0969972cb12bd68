/*
 * The JSON reader (RFC 8259, strict): every JSON text this daemon reads (the
 * reception journal, the relay caps journal, hpfeeds payloads) goes through
 * it, so a line is valid or not the same way everywhere.  Pure functions over
 * (const char *, size_t) that nothing is allocated for: a value is its raw
 * text, read with the walkers and decoders below.  Bounded: nesting deeper
 * than JSON_DEPTH is refused, every walk is linear in the input.
 *
 * Strict means: the RFC's grammar exactly (numbers -?(0|[1-9][0-9]*)(.[0-9]+)?
 * ([eE][+-]?[0-9]+)?, the literals true/false/null spelled out, the eight
 * short escapes and \uXXXX only, no control byte in a string), the text valid
 * UTF-8, and no lone surrogate: a \uD800-\uDBFF escape must be followed by a
 * \uDC00-\uDFFF one.  RFC 8259 (8.2) leaves lone surrogates to the reader; we
 * refuse them, so a text that the reader accepts always decodes to UTF-8.
 * Writing is log.h's jb_ builder.
 */
#ifndef FOSR_JSON_H
#define FOSR_JSON_H

#include <stdbool.h>
#include <stddef.h>

#define JSON_DEPTH	32	/* nesting levels accepted */

/* Whether len bytes of s are exactly one JSON object (whitespace around allowed). */
bool	json_is_object(const char *s, size_t len);

/*
 * Walk the members of the object s[0..len) in order, in one pass: *pos is 0
 * before the first call and is the walk's state after that.  Each call sets
 * the next member's key (raw, without its quotes) and value (raw text).
 * Returns 1 for a member, 0 after the last one (the whole of s was then
 * exactly one object, as json_is_object() says), -1 malformed.
 */
int	json_member(const char *s, size_t len, size_t *pos, const char **key,
	    size_t *klen, const char **val, size_t *vlen);
/* The same for the elements of the array val: 1, 0 after the last, -1. */
int	json_element(const char *val, size_t vlen, size_t *pos,
	    const char **elem, size_t *elen);

/*
 * Find key among the members of the object obj (not nested; the key compared
 * with the raw key bytes, escapes not decoded); *val and *vlen get the raw
 * value text.  0 found, -1 absent or malformed.
 */
int	json_get(const char *obj, size_t len, const char *key,
	    const char **val, size_t *vlen);
/* The idx-th element of the array val.  0 found, -1 past the end or malformed. */
int	json_index(const char *val, size_t vlen, int idx, const char **elem,
	    size_t *elen);

/*
 * Decode the string value val (with its quotes) into out[0..outlen): the
 * UTF-8 bytes, NUL bytes (\u0000) included.  The byte count, or -1 when val
 * is not a valid string or out is too small (a decoded string is never longer
 * than vlen - 2 bytes).
 */
long	json_bytes(const char *val, size_t vlen, void *out, size_t outlen);
/* The same as a C string: NUL-terminated, -1 if it would hold a NUL.  0 or -1. */
int	json_str(const char *val, size_t vlen, char *out, size_t outlen);
/* json_get() then json_str(). */
int	json_get_str(const char *obj, size_t len, const char *key, char *out,
	    size_t outlen);
/* An integer value (no fraction, no exponent) within long long.  0 or -1. */
int	json_int(const char *val, size_t vlen, long long *out);
/* true or false.  0 or -1. */
int	json_bool(const char *val, size_t vlen, bool *out);
bool	json_is_null(const char *val, size_t vlen);

#endif
