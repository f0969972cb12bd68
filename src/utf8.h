/*
 * UTF-8 (RFC 3629): the one decoder and encoder every module uses.  Strict:
 * no overlong forms, no surrogates (U+D800..DFFF), nothing above U+10FFFF, no
 * 5- or 6-byte forms, no truncated sequence.  Pure; never logs.
 */
#ifndef FOSR_UTF8_H
#define FOSR_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UTF8_MAX	4	/* bytes of the longest sequence */

/*
 * Length (1..4) of the valid sequence at the start of s[0..len), with its
 * code point in *cp; 0 when s does not start with one (len 0 included).
 */
size_t	utf8_decode(const void *s, size_t len, uint32_t *cp);
/* Whether all len bytes of s are valid UTF-8. */
bool	utf8_valid(const void *s, size_t len);
/*
 * Write the encoding of cp to out (UTF8_MAX bytes); returns its length, or 0
 * for a surrogate or a code point above U+10FFFF (nothing written).
 */
size_t	utf8_encode(uint32_t cp, unsigned char *out);
/*
 * The length to cut s[0..len) to so that it is at most max bytes without
 * splitting a sequence in two: len itself when it fits.
 */
size_t	utf8_prefix(const void *s, size_t len, size_t max);

#endif
