/*
 * One canonical form for mail addresses, so that equivalent spellings of a
 * recipient ("abuse"@example.com, ab\use@EXAMPLE.com.) compare equal wherever
 * recipients are compared or counted: the never-relay list, the relay caps.
 */
#ifndef FOSR_ADDR_H
#define FOSR_ADDR_H

#include <stddef.h>

#include "fosr_limits.h"

/*
 * Room for the canonical form of any mailbox the SMTP side accepts: the
 * local part may grow by its two quotes and a backslash, an IDN domain is
 * at most 255 bytes once in A-label form.
 */
#define ADDR_CANON_MAX	(SMTP_PATH_MAX + 512)

/*
 * The canonical form of the mailbox addr (no <>; a bare local part, as
 * Postfix takes "postmaster", stays without a domain):
 *   - local part: quotes and quoted-pairs removed; written bare when that is
 *     a dot-atom (RFC 5321 atext, plus UTF-8 for SMTPUTF8), else as one
 *     quoted string escaping only '"' and '\'.  Its case is kept.
 *   - domain: trailing dots removed, ASCII lower-cased, a non-ASCII domain
 *     in A-label form (IDNA2008, libidn2); a [literal] is only lower-cased.
 *   - bytes that are not UTF-8 become U+FFFD, as in the JSON logs, so a form
 *     read back from a journal is the form that was written.
 * The result is its own canonical form.  0, or -1 when addr is not a
 * mailbox (control bytes, unbalanced quotes, an empty or invalid IDN
 * domain) or does not fit in outlen.
 */
int	addr_canonical(const char *addr, char *out, size_t outlen);

/* addr_canonical() with ASCII lower-cased in the local part too: a counting key. */
int	addr_key(const char *addr, char *out, size_t outlen);

/* The domain of a canonical address (after its last '@'), or "" when none. */
const char *addr_domain(const char *canon);

/* Lower-case ASCII of s in place; returns s. */
char	*addr_lower(char *s);

#endif
