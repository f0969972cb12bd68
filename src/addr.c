/*
 * Canonical mail addresses (see addr.h).  The local part's value is what is
 * left once quoting is removed (RFC 5321 4.1.2: "a"@x, \a@x and a@x are one
 * mailbox); it is then written back in the one form RFC 5321 prefers.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <idn2.h>

#include "addr.h"
#include "log.h"

static const char	*addr_split(const char *, size_t);
static bool		 addr_atext(unsigned char);
static bool		 addr_dot_atom(const char *, size_t);
static size_t		 addr_utf8_len(const unsigned char *, size_t);
static int		 addr_domain_canon(const char *, size_t, char *, size_t);

/* The '@' that separates local part and domain: the last one outside quotes. */
static const char *
addr_split(const char *s, size_t len)
{
	const char *at = NULL;
	bool quoted = false;

	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\\') {
			i++;
			continue;
		}
		if (s[i] == '"')
			quoted = !quoted;
		else if (s[i] == '@' && !quoted)
			at = s + i;
	}
	return at;
}

/* RFC 5322 atext, with every 8-bit byte taken as UTF-8 (RFC 6531). */
static bool
addr_atext(unsigned char c)
{
	if (c >= 0x80)
		return true;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* Whether s[0..len) is a dot-atom: atoms of atext joined by single dots. */
static bool
addr_dot_atom(const char *s, size_t len)
{
	if (len == 0 || s[0] == '.' || s[len - 1] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '.') {
			if (s[i + 1] == '.')
				return false;
		} else if (!addr_atext((unsigned char)s[i]))
			return false;
	}
	return true;
}

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0 when it is not one. */
static size_t
addr_utf8_len(const unsigned char *s, size_t len)
{
	for (size_t n = 1; n <= 4 && n <= len; n++)
		if (utf8_valid(s, n))
			return n;
	return 0;
}

/*
 * The canonical domain of d[0..len) into out: trailing dots off, lower case,
 * A-labels for a non-ASCII name.  0 or -1.
 */
static int
addr_domain_canon(const char *d, size_t len, char *out, size_t outlen)
{
	char *tmp, *ace = NULL;
	size_t i, n;
	bool ascii = true;

	if (len > 0 && d[0] == '[') {
		/* A literal: [192.0.2.1] or [IPv6:...]; only the case varies. */
		if (len + 1 > outlen)
			return -1;
		for (i = 0; i < len; i++) {
			unsigned char c = (unsigned char)d[i];
			if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\')
				return -1;
			out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : (char)c;
		}
		out[len] = '\0';
		return 0;
	}
	while (len > 0 && d[len - 1] == '.')
		len--;
	if (len == 0)
		return -1;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)d[i];
		if (c <= 0x20 || c == 0x7f || c == '"' || c == '\\' || c == '@')
			return -1;
		if (c >= 0x80)
			ascii = false;
	}
	if (ascii) {
		if (len + 1 > outlen)
			return -1;
		memcpy(out, d, len);
		out[len] = '\0';
		addr_lower(out);
		return 0;
	}
	/*
	 * IDNA2008 with the UTS 46 mapping (case, width, the ideographic full
	 * stop) and the STD3 rules: without them U+3000 maps to a space.
	 */
	if ((tmp = strndup(d, len)) == NULL)
		return -1;
	if (idn2_to_ascii_8z(tmp, &ace, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL |
	    IDN2_USE_STD3_ASCII_RULES) != IDN2_OK) {
		free(tmp);
		return -1;
	}
	free(tmp);
	n = strlen(ace);
	while (n > 0 && ace[n - 1] == '.')
		n--;
	/* What came out must pass as an ASCII domain above: a fixed point. */
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)ace[i];
		if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '@')
			n = 0;
	}
	if (n == 0 || n + 1 > outlen) {
		idn2_free(ace);
		return -1;
	}
	memcpy(out, ace, n);
	out[n] = '\0';
	idn2_free(ace);
	addr_lower(out);
	return 0;
}

/* The canonical form of a mailbox. */
int
addr_canonical(const char *addr, char *out, size_t outlen)
{
	size_t len = strlen(addr), llen, i, o = 0, rlen = 0, vlen = 0, n;
	const char *at;
	char *raw = NULL, *val = NULL;
	bool quoted = false, dotatom;

	if (len == 0 || len > ADDR_CANON_MAX || outlen == 0)
		return -1;
	at = addr_split(addr, len);
	llen = at ? (size_t)(at - addr) : len;
	/* The local part's value: quotes and backslashes off... */
	if ((raw = malloc(llen + 1)) == NULL || (val = malloc(llen * 3 + 1)) == NULL)
		goto bad;
	for (i = 0; i < llen; i++) {
		unsigned char c = (unsigned char)addr[i];

		if (c == '"') {
			quoted = !quoted;
			continue;
		}
		if (c == '\\') {
			if (++i >= llen)
				goto bad;
			c = (unsigned char)addr[i];
		}
		if (c < 0x20 || c == 0x7f)
			goto bad;
		raw[rlen++] = (char)c;
	}
	/* ...and each byte of what is not UTF-8 as U+FFFD, as jb_str() writes it. */
	for (i = 0; i < rlen; i += n) {
		if ((n = addr_utf8_len((const unsigned char *)raw + i, rlen - i)) == 0) {
			memcpy(val + vlen, "\xef\xbf\xbd", 3);
			vlen += 3;
			n = 1;
			continue;	/* the for's i += n */
		}
		memcpy(val + vlen, raw + i, n);
		vlen += n;
	}
	if (quoted)
		goto bad;
	dotatom = addr_dot_atom(val, vlen);
	if (dotatom) {
		if (vlen + 1 > outlen)
			goto bad;
		memcpy(out, val, vlen);
		o = vlen;
	} else {
		if (outlen < 3)
			goto bad;
		out[o++] = '"';
		for (i = 0; i < vlen; i++) {
			if (val[i] == '"' || val[i] == '\\') {
				if (o + 1 >= outlen)
					goto bad;
				out[o++] = '\\';
			}
			if (o + 1 >= outlen)
				goto bad;
			out[o++] = val[i];
		}
		if (o + 2 > outlen)
			goto bad;
		out[o++] = '"';
	}
	free(raw);
	free(val);
	out[o] = '\0';
	if (at == NULL)
		return 0;
	if (o + 2 > outlen)
		return -1;
	out[o++] = '@';
	return addr_domain_canon(at + 1, len - llen - 1, out + o, outlen - o);
bad:
	free(raw);
	free(val);
	return -1;
}

/* The canonical form with the local part lower-cased too. */
int
addr_key(const char *addr, char *out, size_t outlen)
{
	if (addr_canonical(addr, out, outlen) == -1)
		return -1;
	addr_lower(out);
	return 0;
}

/* The domain of a canonical address. */
const char *
addr_domain(const char *canon)
{
	const char *at = addr_split(canon, strlen(canon));

	return at ? at + 1 : "";
}

/* ASCII lower case in place. */
char *
addr_lower(char *s)
{
	for (char *p = s; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	return s;
}
