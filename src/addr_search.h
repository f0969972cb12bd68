/*
 * Own-address search, for the rules' mentions_own_address matcher: does a
 * text (a header value, a body) name one of the honeypot's own addresses, in
 * whatever spelling a relay tester uses to find out which server relayed
 * (dotted quad with decimal or 0x parts, one integer, eight hex digits glued
 * to words, IPv6, base64 of any of them)?  Pure and thread-safe: the set of
 * addresses looked for is the caller's.  Never logs.
 */
#ifndef FOSR_ADDR_SEARCH_H
#define FOSR_ADDR_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ADDR_SEARCH_MAX		66	/* addresses in one set: RULES_OWN_MAX and dst_ip */
#define ADDR_SEARCH_WHAT_MAX	200	/* bytes of a hit's text */

/* An address in binary: AF_INET (a[0..4)) or AF_INET6 (a[0..16)). */
struct addr_bin {
	int		 af;
	unsigned char	 a[16];
};

/* The addresses looked for; zero it, then addr_search_add() each. */
struct addr_search {
	struct addr_bin	 own[ADDR_SEARCH_MAX];
	int		 nown;
	uint32_t	 own4[ADDR_SEARCH_MAX];	/* the IPv4 ones */
	int		 nown4;
	bool		 own_v6;
};

/* Where an address was found: the text that names it (UTF-8 kept whole). */
struct addr_hit {
	char		 what[ADDR_SEARCH_WHAT_MAX + 1];
	size_t		 whatlen;
};

/* Parse an address string (a v4-mapped IPv6 becomes IPv4); 0 or -1. */
int	addr_search_parse(const char *s, struct addr_bin *a);
/* Add one address to the set (skipping duplicates, what does not parse, a full set). */
void	addr_search_add(struct addr_search *, const char *s);
/*
 * Whether n bytes of s name an address of the set; b64 also looks for the
 * base64 spellings.  _lines reads s as a mail body: quoted replies and
 * forwarded trace lines are skipped.  The first hit goes to *h.
 */
bool	addr_search_text(const struct addr_search *, const char *s, size_t n,
	    bool b64, struct addr_hit *h);
bool	addr_search_lines(const struct addr_search *, const char *s, size_t n,
	    bool b64, struct addr_hit *h);
/* A header field name matches pat[0..plen) (case-insensitive; prefix: pat*). */
bool	addr_search_name_match(const char *pat, size_t plen, bool prefix,
	    const char *name);
/* Whether a header field is a trace or identification field, which the search skips. */
bool	addr_search_trace_field(const char *name);

#endif
