/*
 * Own-address search (see addr_search.h): whether a text names one of the
 * honeypot's addresses, in any of the spellings a relay tester uses (dotted
 * quad with decimal, hex or octal-looking parts, one integer, hex glued to
 * words, IPv6, and each of those in base64 at any alignment).  Pure: the
 * state is the caller's.  The text searched is bounded (ADDR_SEARCH_SCAN_MAX
 * bytes of each part).
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr_search.h"
#include "mime.h"
#include "utf8.h"

#define ADDR_SEARCH_SCAN_MAX	(1024u * 1024)	/* text searched for an address */
#define B64_MIN			12	/* base64 of "1.2.3.4" */

static bool	 v4_part(const char *, size_t, int, int, uint64_t *);
static bool	 v4_token(const char *, size_t, uint32_t *);
static void	 hit_set(struct addr_hit *, const char *, size_t, size_t,
		    const char *, size_t);
static size_t	 digit_find(const char *, size_t, size_t);
static bool	 v4_url_number(const char *, size_t);
static bool	 scan_v4(const struct addr_search *, const char *, size_t,
		    struct addr_hit *);
static bool	 scan_v6(const struct addr_search *, const char *, size_t,
		    struct addr_hit *);
static unsigned	 b64_align(unsigned, size_t);
static bool	 scan_b64(const struct addr_search *, const char *, size_t,
		    struct addr_hit *);
static bool	 hex_glue(unsigned char);
static bool	 scan_hex8(const struct addr_search *, const char *, size_t,
		    struct addr_hit *);
static bool	 trace_line(const char *, size_t);
static size_t	 line_quote(const char *, size_t, int *, size_t *);
static void	 hit_what(struct addr_hit *, const char *, size_t);

/* Byte classes of the address search (ASCII only; bytes >= 0x80 are none). */
#define SC_TOK		0x01	/* IPv4 token: letter, digit, '.' */
#define SC_ALNUM	0x02	/* letter or digit */
#define SC_V6		0x04	/* IPv6 run: hex digit, ':', '.' */
#define SC_B64		0x08	/* base64 alphabet: letter, digit, '+', '/' */
#define SC_NL		0x10	/* '\r' or '\n' */
#define SC_DIGIT	0x20	/* decimal digit */

static const unsigned char sc_tab[256] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x10, 0x00, 0x00, 0x10, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x05, 0x08,
	0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f,
	0x2f, 0x2f, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0b,
	0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
	0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
	0x0b, 0x0b, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0b,
	0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
	0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
	0x0b, 0x0b, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00,
};
#define SC(c)	(sc_tab[(unsigned char)(c)])

/*
 * For the base64 search: the roles a character of the alphabet can play in a
 * pair of adjacent characters that decodes (at some alignment) to a byte in
 * '0'..':'.  Low nibble: as the first character, value a; high nibble: as the
 * second, value b; a pair (a, b) is such a pair exactly when the two nibbles
 * share a bit.  Bit 0: a is 12 or 13 (a << 2 | b >> 4, any b); bit 1: a is
 * 14 and b < 48 (same byte); bit 2: a & 15 is 3 and b < 44 ((a & 15) << 4 |
 * b >> 2); bit 3: a & 3 is 0 and b is 48..58 ((a & 3) << 6 | b).  Every
 * alphabet character has bit 4 set, every other byte is 0.
 */
static const unsigned char b64_pair[256] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x10,
	0x98, 0x90, 0x90, 0x90, 0x98, 0x90, 0x90, 0x10,
	0x18, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x78, 0x70, 0x70, 0x74, 0x78, 0x70, 0x70,
	0x70, 0x78, 0x70, 0x70, 0x70, 0x79, 0x71, 0x72,
	0x70, 0x78, 0x70, 0x70, 0x74, 0x78, 0x70, 0x70,
	0x70, 0x78, 0x70, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x70, 0x70, 0x78, 0x70, 0x70, 0x70, 0x78,
	0x70, 0x70, 0x74, 0x78, 0x70, 0x70, 0x70, 0x78,
	0x70, 0x70, 0x70, 0x38, 0x30, 0x30, 0x30, 0x98,
	0x90, 0x90, 0x94, 0x00, 0x00, 0x00, 0x00, 0x00,
};


/*
 * Header fields that mail software writes about a message's transport and
 * identity, not the sender about its content: trace fields (RFC 5321 4.4,
 * RFC 5322 3.6.6-7) and their non-standard kin (the client address webmail
 * and proxies add, delivery stamps), identification fields (RFC 5322 3.6.4),
 * authentication results and signatures (RFC 8601, 6376, 8617, 7208) and the
 * stamps of mail services and filters.  Botnets forge them naming the very
 * server they send to, and a forwarded or bounced mail carries them: they
 * say nothing of a sender testing us, so mentions_own_address: true and the
 * place "headers" skip them.  A trailing '*' makes a name a prefix.
 */
static const char *const trace_fields[] = {
	/* trace */
	"Received", "Return-Path", "Resent-*", "X-Received", "Delivered-To",
	"X-Delivered-To", "Envelope-To", "X-Envelope-*", "X-Original-To",
	"X-Originating-*", "X-Forwarded-*", "X-Real-IP", "X-Client-IP",
	"X-Sender-IP", "X-Source-IP", "X-Remote-IP", "X-Remote-Addr",
	"X-Source", "X-Source-*", "X-AntiAbuse", "X-Authenticated-Sender",
	/* identification */
	"Message-ID", "In-Reply-To", "References", "Content-ID",
	/* authentication */
	"Authentication-Results", "ARC-*", "DKIM-Signature",
	"DomainKey-Signature", "Received-SPF",
	/* services and filters */
	"X-Google-*", "X-Gm-*", "X-MS-*", "X-Microsoft-*", "X-Forefront-*",
	"X-Spam-*", "X-Virus-*", "X-Barracuda-*", "X-Proofpoint-*",
	"X-Mimecast-*", "X-IronPort-*", "X-YMail-*",
};


/* Set the hit text to n bytes of s, not cutting a UTF-8 sequence in two. */
static void
hit_what(struct addr_hit *h, const char *s, size_t n)
{
	h->whatlen = utf8_prefix(s, n, ADDR_SEARCH_WHAT_MAX);
	memcpy(h->what, s, h->whatlen);
	h->what[h->whatlen] = '\0';
}

/* Parse an address string into a (v4-mapped IPv6 becomes IPv4); 0 or -1. */
int
addr_search_parse(const char *s, struct addr_bin *a)
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0,
	    0, 0xff, 0xff };
	char buf[INET6_ADDRSTRLEN + 1];
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n >= sizeof(buf))
		return -1;
	/* Tolerate "[addr]" as some callers print IPv6 that way. */
	if (s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, buf, a->a) == 1) {
		a->af = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, a->a) == 1) {
		a->af = AF_INET6;
		if (memcmp(a->a, mapped, 12) == 0) {
			memmove(a->a, a->a + 12, 4);
			memset(a->a + 4, 0, 12);
			a->af = AF_INET;
		}
		return 0;
	}
	return -1;
}

/* Add one own address (skipping duplicates and what does not parse). */
void
addr_search_add(struct addr_search *e, const char *s)
{
	struct addr_bin a;
	int i;

	if (e->nown >= ADDR_SEARCH_MAX || addr_search_parse(s, &a) == -1)
		return;
	for (i = 0; i < e->nown; i++)
		if (e->own[i].af == a.af && memcmp(e->own[i].a, a.a, 16) == 0)
			return;
	e->own[e->nown++] = a;
	if (a.af == AF_INET6)
		e->own_v6 = true;
	else
		e->own4[e->nown4++] = (uint32_t)a.a[0] << 24 |
		    (uint32_t)a.a[1] << 16 | (uint32_t)a.a[2] << 8 | a.a[3];
}

/* Parse one part: decimal (<= maxdec digits) or 0x hex (<= maxhex digits). */
static bool
v4_part(const char *s, size_t n, int maxdec, int maxhex, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;
	int d;

	if (n >= 3 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		if (n - 2 > (size_t)maxhex)
			return false;
		for (i = 2; i < n; i++) {
			if ((d = (s[i] >= '0' && s[i] <= '9') ? s[i] - '0' :
			    (s[i] >= 'a' && s[i] <= 'f') ? s[i] - 'a' + 10 :
			    (s[i] >= 'A' && s[i] <= 'F') ? s[i] - 'A' + 10 :
			    -1) < 0)
				return false;
			v = v * 16 + (uint64_t)d;
		}
	} else {
		if (n == 0 || n > (size_t)maxdec)
			return false;
		for (i = 0; i < n; i++) {
			if (s[i] < '0' || s[i] > '9')
				return false;
			v = v * 10 + (uint64_t)(s[i] - '0');
		}
	}
	*out = v;
	return true;
}

/*
 * Parse a whole token as an IPv4 address: dotted quad (each part decimal or
 * 0x hex), one decimal integer, or one 0x hex integer.  Trailing dots (end of
 * a sentence) are ignored.
 */
static bool
v4_token(const char *s, size_t n, uint32_t *out)
{
	uint64_t p[4], v;
	size_t i, start;
	int np = 0;

	while (n > 0 && s[n - 1] == '.')
		n--;
	if (n == 0 || s[0] == '.')
		return false;
	if (memchr(s, '.', n) == NULL) {
		if (!v4_part(s, n, 10, 8, &v) || v > 0xffffffffu)
			return false;
		*out = (uint32_t)v;
		return true;
	}
	for (i = 0, start = 0; i <= n; i++) {
		if (i < n && s[i] != '.')
			continue;
		if (np == 4 || !v4_part(s + start, i - start, 3, 2, &p[np]) ||
		    p[np] > 255)
			return false;
		np++;
		start = i + 1;
	}
	if (np != 4)
		return false;
	*out = (uint32_t)(p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]);
	return true;
}

/* Set the hit text: the token, with a ":port" that follows it. */
static void
hit_set(struct addr_hit *h, const char *s, size_t n, size_t tokend,
    const char *tok, size_t toklen)
{
	size_t e = tokend;

	if (e < n && s[e] == ':') {
		for (e++; e < n && e - tokend <= 6 && s[e] >= '0' && s[e] <= '9';
		    e++)
			;
		if (e == tokend + 1)
			e = tokend;
	}
	hit_what(h, tok, toklen + (e - tokend));
}

/* The first decimal digit in s[i..n), or n (eight bytes a step). */
static size_t
digit_find(const char *s, size_t i, size_t n)
{
	const uint64_t ones = 0x0101010101010101ull;
	uint64_t w, x;

	for (; i + 8 <= n; i += 8) {
		memcpy(&w, s + i, 8);
		/* A byte in '0'..'9' (exact per byte: "hasbetween", Bit Twiddling Hacks). */
		x = w & (ones * 127);
		if (((ones * (127 + '9' + 1) - x) & ~w & (x + ones * (127 -
		    ('0' - 1))) & (ones * 0x80)) != 0)
			break;
	}
	for (; i < n; i++)
		if (SC(s[i]) & SC_DIGIT)
			return i;
	return n;
}

/*
 * Whether the token s[0..n) is a bare decimal number (the integer form).  An
 * own address in 100.0.0.0/6-ish is a Unix time of this decade in decimal
 * (107.20.243.254 is 1796535294, 2026-12-06T05:34:54Z) that mail written at
 * that second carries in its links; it counts only as a token of its own,
 * not glued to a joiner such as '=', '/', '#', '-', '_' (hex_glue).
 */
static bool
v4_url_number(const char *s, size_t n)
{
	while (n > 0 && s[n - 1] == '.')
		n--;
	return n > 0 && memchr(s, '.', n) == NULL &&
	    !(n > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'));
}

/*
 * The IPv4 forms: a token (letters, digits, dots) that starts with a digit,
 * is at most 64 bytes long and parses to an own address (the decimal
 * integer not glued to a joiner: v4_url_number).
 */
static bool
scan_v4(const struct addr_search *e, const char *s, size_t n,
    struct addr_hit *h)
{
	size_t i, j, lim;
	uint32_t v;
	int o;

	for (i = digit_find(s, 0, n); i < n; i = digit_find(s, i, n)) {
		if (i > 0 && (SC(s[i - 1]) & SC_TOK)) {
			/* Inside a token that does not start with a digit. */
			while (i < n && (SC(s[i]) & SC_TOK))
				i++;
			continue;
		}
		lim = n - i > 65 ? i + 65 : n;
		for (j = i + 1; j < lim && (SC(s[j]) & SC_TOK); j++)
			;
		if (j - i <= 64 && v4_token(s + i, j - i, &v) &&
		    !(v4_url_number(s + i, j - i) && ((i > 0 &&
		    hex_glue((unsigned char)s[i - 1])) || (j < n &&
		    hex_glue((unsigned char)s[j])))))
			for (o = 0; o < e->nown4; o++)
				if (e->own4[o] == v) {
					hit_set(h, s, n, j, s + i, j - i);
					return true;
				}
		i = j;
	}
	return false;
}

/*
 * The IPv6 forms: a run of hex digits, colons and dots (not starting with a
 * dot) with two colons or more, not glued to a letter or digit.  Only the
 * runs around a colon are looked at.
 */
static bool
scan_v6(const struct addr_search *e, const char *s, size_t n,
    struct addr_hit *h)
{
	unsigned char a6[16];
	char buf[INET6_ADDRSTRLEN + 1];
	const char *p;
	size_t i, j, c, k;
	int o;

	for (c = 0; c < n && (p = memchr(s + c, ':', n - c)) != NULL; c = j) {
		/* No colon between the last run and p: the run around p has them all. */
		c = (size_t)(p - s);
		for (i = c; i > 0 && (SC(s[i - 1]) & SC_V6); i--)
			;
		while (s[i] == '.')
			i++;
		for (j = c, k = 0; j < n && (SC(s[j]) & SC_V6); j++)
			k += s[j] == ':';
		if (k < 2 || j - i >= sizeof(buf) || (i > 0 &&
		    (SC(s[i - 1]) & SC_ALNUM)) || (j < n && (SC(s[j]) & SC_ALNUM)))
			continue;
		memcpy(buf, s + i, j - i);
		buf[j - i] = '\0';
		if (inet_pton(AF_INET6, buf, a6) != 1)
			continue;
		for (o = 0; o < e->nown; o++)
			if (e->own[o].af == AF_INET6 &&
			    memcmp(e->own[o].a, a6, 16) == 0) {
				hit_what(h, s + i, j - i);
				return true;
			}
	}
	return false;
}

/*
 * The decoding alignments (a bit each) in which the pair of roles m (see
 * b64_pair) whose first character is at alphabet index q of its run makes a
 * decoded byte: a decoded byte is made of the characters at quad positions
 * 0-1 (roles 0, 1), 1-2 (role 2) or 2-3 (role 3).
 */
static unsigned
b64_align(unsigned m, size_t q)
{
	unsigned need = 0;

	if (m & 3)
		need |= 1u << (q & 3);
	if (m & 4)
		need |= 1u << ((q - 1) & 3);
	if (m & 8)
		need |= 1u << ((q - 2) & 3);
	return need;
}

/*
 * Base64-looking runs (alphabet characters, line breaks allowed inside),
 * decoded at each of the 4 alignments and searched (not recursively).  An
 * alignment whose decoded bytes cannot hold a digit or a colon cannot hold an
 * address either: it is not decoded.
 */
static bool
scan_b64(const struct addr_search *e, const char *s, size_t n,
    struct addr_hit *h)
{
	unsigned char *dec;
	char buf[INET6_ADDRSTRLEN + 1], enc[ADDR_SEARCH_WHAT_MAX + 1];
	size_t i, j, k, alpha, declen, enclen;
	unsigned t, m, first, need;
	int off, skipped;
	bool joins;

	for (i = 0; i < n; ) {
		if (!(SC(s[i]) & SC_B64)) {
			i++;
			continue;
		}
		/*
		 * A run goes on over line breaks only when it starts a line:
		 * base64 that starts after a word ("see attached" and the
		 * base64 of a mail on the next line) would decode out of line,
		 * the mail's first field glued to garbage, no longer a field.
		 */
		joins = i == 0 || (SC(s[i - 1]) & SC_NL);
		/* A cheap look first: most runs (words) are too short. */
		for (j = i, alpha = 0; j < n && alpha < B64_MIN; j++) {
			if (SC(s[j]) & SC_B64)
				alpha++;
			else if (!(joins && (SC(s[j]) & SC_NL) && j + 1 < n &&
			    (SC(s[j + 1]) & (SC_ALNUM | SC_NL))))
				break;
		}
		if (alpha < B64_MIN) {
			i = j;
			continue;
		}
		/* The whole run; which alignments can decode to '0'..':'. */
		for (j = i, alpha = 0, need = 0, first = 0; j < n; j++) {
			if ((t = b64_pair[(unsigned char)s[j]]) != 0) {
				if ((m = first & (t >> 4)) != 0)
					need |= b64_align(m, alpha - 1);
				first = t & 15;
				alpha++;
			} else if (!(joins && (SC(s[j]) & SC_NL) && j + 1 < n &&
			    (SC(s[j + 1]) & (SC_ALNUM | SC_NL))))
				break;
		}
		if (need != 0 && (dec = malloc(alpha)) != NULL) {
			for (off = 0; off < 4; off++) {
				if (!(need & (1u << off)))
					continue;
				/* Skip off alphabet characters, then decode. */
				for (k = i, skipped = 0; k < j && skipped < off;
				    k++)
					if (s[k] != '\r' && s[k] != '\n')
						skipped++;
				declen = mime_b64_decode(s + k, j - k, dec,
				    alpha);
				if (declen < 7 || !addr_search_lines(e, (char *)dec,
				    declen, false, h))
					continue;
				for (enclen = j - k; k + enclen < n && enclen <
				    j - k + 2 && s[k + enclen] == '='; enclen++)
					;
				if (enclen > 120)
					enclen = 120;
				memcpy(enc, s + k, enclen);
				enc[enclen] = '\0';
				snprintf(buf, sizeof(buf), "%.*s",
				    (int)(sizeof(buf) - 1), h->what);
				snprintf(enc + enclen, sizeof(enc) - enclen,
				    " (base64: %s)", buf);
				hit_what(h, enc, strlen(enc));
				free(dec);
				return true;
			}
			free(dec);
		}
		i = j;
	}
	return false;
}

/* Bytes that glue a token to its neighbour: word characters and joiners. */
static bool
hex_glue(unsigned char c)
{
	return (SC(c) & SC_ALNUM) || (c != '\0' &&
	    strchr("_-.+/=%@&#$~\\", c) != NULL);
}

/*
 * The address as 8 bare hex digits, all upper or all lower case, optionally
 * with ":port" (a published open-relay test format: D9808AFD:8080), as a
 * whole token: not glued to a word character or a joiner (a hash, a UUID, a
 * CSS colour, a Message-ID or URL part), a '.' only at a sentence end.  Also
 * the framing of the published sample, one digit before and ":N" after the
 * port ("at 1D9808AFD:8080:6 o'clock"); a 9-digit hex run alone is no match.
 * Hex without a letter a-f reads as a decimal number (a date, an order
 * number): it counts only with a port.  The own addresses' hex forms are
 * looked for with memmem(), the edges checked where one is found.
 */
static bool
scan_hex8(const struct addr_search *e, const char *s, size_t n,
    struct addr_hit *h)
{
	static const char hexu[] = "0123456789ABCDEF", hexl[] = "0123456789abcdef";
	char pat[2][8];
	const char *q;
	size_t t, st, en, d;
	int o, c, k, p;
	bool letter, framed, port, tail;

	for (o = 0; o < e->nown4; o++) {
		for (k = 0, letter = false; k < 8; k++) {
			pat[0][k] = hexu[e->own4[o] >> (28 - 4 * k) & 15];
			pat[1][k] = hexl[e->own4[o] >> (28 - 4 * k) & 15];
			letter |= pat[0][k] >= 'A';
		}
		for (c = 0; c < (letter ? 2 : 1); c++) {
			for (t = 0; t + 8 <= n && (q = memmem(s + t, n - t,
			    pat[c], 8)) != NULL; t++) {
				t = (size_t)(q - s);
				/* The start: a token edge, or one digit at one. */
				st = t;
				framed = false;
				if (t > 0 && hex_glue((unsigned char)s[t - 1])) {
					if (!(SC(s[t - 1]) & SC_DIGIT) || (t > 1 &&
					    hex_glue((unsigned char)s[t - 2])))
						continue;
					framed = true;
					st = t - 1;
				}
				en = t + 8;
				if (en < n && (SC(s[en]) & SC_ALNUM))
					continue;
				/* ":port" (1..5 digits), maybe ":N" (framing). */
				port = tail = false;
				for (p = 0; p < 2 && en < n && s[en] == ':'; p++) {
					for (d = 0; en + 1 + d < n && d < 6 &&
					    (SC(s[en + 1 + d]) & SC_DIGIT); d++)
						;
					if (d == 0 || d > 5)
						break;
					en += 1 + d;
					if (p == 0)
						port = true;
					else
						tail = true;
				}
				if ((framed && !tail) || (!port && !letter))
					continue;
				/* What follows ends the token; '.' a sentence. */
				if (en < n && (s[en] == '.' ? en + 1 < n &&
				    hex_glue((unsigned char)s[en + 1]) :
				    hex_glue((unsigned char)s[en]) ||
				    (s[en] == ':' && en + 1 < n &&
				    (SC(s[en + 1]) & SC_DIGIT))))
					continue;
				hit_what(h, s + st, en - st);
				return true;
			}
		}
	}
	return false;
}

/*
 * Search s[0..n) for an own address as a whole token; with
 * b64, also inside base64-looking runs.  Linear in n.
 */
bool
addr_search_text(const struct addr_search *e, const char *s, size_t n, bool b64,
    struct addr_hit *h)
{
	if (n > ADDR_SEARCH_SCAN_MAX)
		n = ADDR_SEARCH_SCAN_MAX;
	if (e->nown4 > 0 && (scan_v4(e, s, n, h) || scan_hex8(e, s, n, h)))
		return true;
	if (e->own_v6 && scan_v6(e, s, n, h))
		return true;
	return b64 && scan_b64(e, s, n, h);
}

/* Whether the field name matches pat[0..plen) (a prefix when prefix). */
bool
addr_search_name_match(const char *pat, size_t plen, bool prefix,
    const char *name)
{
	if (strncasecmp(name, pat, plen) != 0)
		return false;
	return prefix || name[plen] == '\0';
}

/* Whether a header field is a trace or identification field (trace_fields). */
bool
addr_search_trace_field(const char *name)
{
	size_t i, len;

	for (i = 0; i < sizeof(trace_fields) / sizeof(trace_fields[0]); i++) {
		len = strlen(trace_fields[i]);
		if (trace_fields[i][len - 1] == '*' ?
		    addr_search_name_match(trace_fields[i], len - 1, true, name) :
		    addr_search_name_match(trace_fields[i], len, false, name))
			return true;
	}
	return false;
}

/*
 * Whether the text line s[0..n) starts with a trace field ("Received: ";
 * "Received :" too, the obsolete syntax of RFC 5322 4.5).  A name too long
 * to keep is cut, as mime.c cuts it: a prefix ("X-Forwarded-*") still tells.
 */
static bool
trace_line(const char *s, size_t n)
{
	char name[MIME_NAME_MAX];
	size_t i, k;

	for (i = 0, k = 0; i < n && s[i] != ':' && (unsigned char)s[i] > ' ' &&
	    (unsigned char)s[i] < 0x7f; i++)
		if (k < sizeof(name) - 1)
			name[k++] = s[i];
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if (k == 0 || i >= n || s[i] != ':')
		return false;
	name[k] = '\0';
	return addr_search_trace_field(name);
}

/*
 * The quoting of a text line: the '>' marks it starts with (each maybe after
 * blanks, and with one space after it: "> > "), their count in *depth, the
 * blanks after them in *indent.  Returns the offset of the rest.
 */
static size_t
line_quote(const char *s, size_t n, int *depth, size_t *indent)
{
	size_t i = 0, b;
	int d = 0;

	for (;;) {
		for (b = i; b < n && (s[b] == ' ' || s[b] == '\t'); b++)
			;
		if (b >= n || s[b] != '>')
			break;
		d++;
		i = b + 1;
		if (i < n && s[i] == ' ')
			i++;
	}
	*depth = d;
	*indent = b - i;
	return b;
}

/*
 * The body text, less the trace fields of a message header that the text
 * carries: an attached message's header that the decoding put there
 * (message/rfc822, text/rfc822-headers of a bounce), a header copied inline
 * (a bounce that indents it, a reply that quotes it with "> ").  Such a field
 * is a line that starts, after its quote marks and indentation, with a trace
 * field's name and ':', with its folded lines: the lines after it with the
 * same quote marks and a deeper indentation.  The rest is searched in runs
 * between such lines (with b64, base64 runs too).  The text a base64 run
 * decodes to is searched so, without b64: a header may be sent base64.
 */
bool
addr_search_lines(const struct addr_search *e, const char *s, size_t n, bool b64,
    struct addr_hit *h)
{
	const char *nl;
	size_t run, i, eol, off, indent, skip_indent = 0;
	int depth, skip_depth = 0;
	bool skip = false;

	if (n > ADDR_SEARCH_SCAN_MAX)
		n = ADDR_SEARCH_SCAN_MAX;
	for (run = 0, i = 0; i < n; i = eol) {
		nl = memchr(s + i, '\n', n - i);
		eol = nl != NULL ? (size_t)(nl - s) + 1 : n;
		off = line_quote(s + i, eol - i, &depth, &indent);
		if (trace_line(s + i + off, eol - i - off)) {
			skip = true;
			skip_depth = depth;
			skip_indent = indent;
		} else if (skip && depth == skip_depth && indent > skip_indent)
			;	/* a folded line of the skipped field */
		else {
			skip = false;
			continue;
		}
		if (i > run && addr_search_text(e, s + run, i - run, b64, h))
			return true;
		run = eol;
	}
	return run < n && addr_search_text(e, s + run, n - run, b64, h);
}
