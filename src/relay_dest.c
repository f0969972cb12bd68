/*
 * Relay destinations (see relay_dest.h).
 *
 * The forbidden ranges are the IANA IPv4 and IPv6 Special-Purpose Address
 * Registries (RFC 6890 and its updates) minus the few entries marked
 * globally reachable that are not mail servers either way, plus multicast,
 * the reserved 240/4 and everything outside IPv6's 2000::/3.  A mail server
 * lives at a global unicast address; a name that resolves elsewhere is
 * either a mistake or an attack on the networks around the honeypot.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "relay_dest.h"

struct rdest_v4 {
	uint32_t	 net;
	int		 bits;
	const char	*why;
};

/* IPv4, most specific first. */
static const struct rdest_v4 rdest_v4[] = {
	{ 0x00000000, 8, "\"this network\" (0.0.0.0/8)" },
	{ 0x0a000000, 8, "private (10.0.0.0/8)" },
	{ 0x64400000, 10, "shared address space, CGNAT (100.64.0.0/10)" },
	{ 0x7f000000, 8, "loopback (127.0.0.0/8)" },
	{ 0xa9fe0000, 16, "link-local (169.254.0.0/16)" },
	{ 0xac100000, 12, "private (172.16.0.0/12)" },
	{ 0xc0000000, 24, "IETF protocol assignments (192.0.0.0/24)" },
	{ 0xc0000200, 24, "documentation (192.0.2.0/24)" },
	{ 0xc0586300, 24, "6to4 relay anycast (192.88.99.0/24)" },
	{ 0xc0a80000, 16, "private (192.168.0.0/16)" },
	{ 0xc6120000, 15, "benchmarking (198.18.0.0/15)" },
	{ 0xc6336400, 24, "documentation (198.51.100.0/24)" },
	{ 0xcb007100, 24, "documentation (203.0.113.0/24)" },
	{ 0xe0000000, 4, "multicast (224.0.0.0/4)" },
	{ 0xffffffff, 32, "limited broadcast (255.255.255.255)" },
	{ 0xf0000000, 4, "reserved (240.0.0.0/4)" },
};

struct rdest_v6 {
	unsigned char	 net[16];
	int		 bits;
	const char	*why;
};

/* IPv6 ranges refused outright (the embedding ones are handled before). */
static const struct rdest_v6 rdest_v6[] = {
	{ { 0 }, 128, "unspecified (::/128)" },
	{ { [15] = 1 }, 128, "loopback (::1/128)" },
	{ { 0x00, 0x64, 0xff, 0x9b, 0x00, 0x01 }, 48, "local-use NAT64 (64:ff9b:1::/48)" },
	{ { 0x01, 0x00 }, 64, "discard-only (100::/64)" },
	{ { 0x20, 0x01, 0x00, 0x00 }, 32, "Teredo (2001::/32)" },
	{ { 0x20, 0x01, 0x00, 0x10 }, 28, "ORCHID (2001:10::/28)" },
	{ { 0x20, 0x01, 0x00, 0x20 }, 28, "ORCHIDv2 (2001:20::/28)" },
	{ { 0x20, 0x01, 0x00, 0x00 }, 23, "IETF protocol assignments (2001::/23)" },
	{ { 0x20, 0x01, 0x0d, 0xb8 }, 32, "documentation (2001:db8::/32)" },
	{ { 0x3f, 0xff, 0x00, 0x00 }, 20, "documentation (3fff::/20)" },
	{ { 0x5f, 0x00 }, 16, "SRv6 SIDs (5f00::/16)" },
	{ { 0xfc }, 7, "unique local (fc00::/7)" },
	{ { 0xfe, 0x80 }, 10, "link-local (fe80::/10)" },
	{ { 0xfe, 0xc0 }, 10, "site-local (fec0::/10)" },
	{ { 0xff }, 8, "multicast (ff00::/8)" },
};

/* Whether the first bits of a and b are equal. */
static bool
rdest_prefix_eq(const unsigned char *a, const unsigned char *b, int bits)
{
	int whole = bits / 8, rest = bits % 8;

	if (memcmp(a, b, (size_t)whole) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[whole] ^ b[whole]) & (0xff << (8 - rest)) & 0xff) == 0;
}

/* The reason an IPv4 address (host order) is refused, or NULL. */
static const char *
rdest_v4_forbidden(uint32_t a)
{
	for (size_t i = 0; i < sizeof(rdest_v4) / sizeof(rdest_v4[0]); i++) {
		uint32_t mask = rdest_v4[i].bits == 0 ? 0 :
		    0xffffffffu << (32 - rdest_v4[i].bits);
		if ((a & mask) == rdest_v4[i].net)
			return rdest_v4[i].why;
	}
	return NULL;
}

/* Four bytes in network order as a host-order IPv4 address. */
static uint32_t
rdest_v4_at(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Why an address may not be a destination. */
const char *
rdest_addr_forbidden(const struct sockaddr *sa)
{
	static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
	static const unsigned char nat64[12] = { 0x00, 0x64, 0xff, 0x9b };
	const unsigned char *b;

	if (sa->sa_family == AF_INET)
		return rdest_v4_forbidden(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
	if (sa->sa_family != AF_INET6)
		return "not an IPv4 or IPv6 address";
	b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	/* Addresses that carry an IPv4 address: the IPv4 address decides. */
	if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0)
		return rdest_v4_forbidden(rdest_v4_at(b + 12));
	if (b[0] == 0x20 && b[1] == 0x02)
		return rdest_v4_forbidden(rdest_v4_at(b + 2));
	for (size_t i = 0; i < sizeof(rdest_v6) / sizeof(rdest_v6[0]); i++)
		if (rdest_prefix_eq(b, rdest_v6[i].net, rdest_v6[i].bits))
			return rdest_v6[i].why;
	if ((b[0] & 0xe0) != 0x20)
		return "not global unicast (outside 2000::/3)";
	return NULL;
}

/* Whether s is a wildcard address. */
bool
rdest_addr_unspecified(const char *s)
{
	static const unsigned char zero[16];
	struct rdest_net n;

	return rdest_net_parse(s, &n) == 0 && strchr(s, '/') == NULL &&
	    memcmp(n.addr, zero, sizeof(zero)) == 0;
}

/* The IPv4 address inside a mapped, NAT64 or 6to4 IPv6 address. */
bool
rdest_embedded_v4(const struct sockaddr *sa, struct sockaddr_in *out)
{
	static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
	static const unsigned char nat64[12] = { 0x00, 0x64, 0xff, 0x9b };
	const unsigned char *b, *v4;

	if (sa->sa_family != AF_INET6)
		return false;
	b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0)
		v4 = b + 12;
	else if (b[0] == 0x20 && b[1] == 0x02)
		v4 = b + 2;
	else
		return false;
	memset(out, 0, sizeof(*out));
	out->sin_family = AF_INET;
	memcpy(&out->sin_addr, v4, 4);
	return true;
}

/* Parse a network. */
int
rdest_net_parse(const char *s, struct rdest_net *n)
{
	char buf[80], *slash, *end;
	long bits;

	if (strlen(s) >= sizeof(buf))
		return -1;
	memset(n, 0, sizeof(*n));
	snprintf(buf, sizeof(buf), "%s", s);
	if ((slash = strchr(buf, '/')) != NULL)
		*slash++ = '\0';
	if (inet_pton(AF_INET, buf, n->addr) == 1) {
		n->af = AF_INET;
		n->bits = 32;
	} else if (inet_pton(AF_INET6, buf, n->addr) == 1) {
		n->af = AF_INET6;
		n->bits = 128;
	} else {
		return -1;
	}
	if (slash != NULL) {
		if (*slash < '0' || *slash > '9')
			return -1;
		bits = strtol(slash, &end, 10);
		if (*end != '\0' || bits > n->bits)
			return -1;
		n->bits = (int)bits;
	}
	/* Host bits set ("10.1.2.3/8") are a typo for a wider net: refused. */
	for (int i = n->bits; i < (n->af == AF_INET ? 32 : 128); i++)
		if (n->addr[i / 8] & (0x80 >> (i % 8)))
			return -1;
	return 0;
}

/* The address bytes of sa as af (IPv4-mapped IPv6 seen as IPv4); NULL if none. */
static const unsigned char *
rdest_bytes(const struct sockaddr *sa, int *af)
{
	static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
	const unsigned char *b;

	if (sa->sa_family == AF_INET) {
		*af = AF_INET;
		return (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
	}
	if (sa->sa_family != AF_INET6)
		return NULL;
	b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	if (memcmp(b, mapped, 12) == 0) {
		*af = AF_INET;
		return b + 12;
	}
	*af = AF_INET6;
	return b;
}

/* Whether sa is in n. */
bool
rdest_net_match(const struct rdest_net *n, const struct sockaddr *sa)
{
	const unsigned char *b;
	int af;

	if ((b = rdest_bytes(sa, &af)) == NULL || af != n->af)
		return false;
	return rdest_prefix_eq(b, n->addr, n->bits);
}

/* Whether sa is the numeric address s. */
bool
rdest_addr_is(const struct sockaddr *sa, const char *s)
{
	struct rdest_net n;
	struct sockaddr_in v4;

	if (rdest_net_parse(s, &n) == -1 || strchr(s, '/') != NULL)
		return false;
	if (n.af == AF_INET6) {
		/* An own address given as ::ffff:a.b.c.d matches a.b.c.d too. */
		static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
		if (memcmp(n.addr, mapped, 12) == 0) {
			memmove(n.addr, n.addr + 12, 4);
			memset(n.addr + 4, 0, 12);
			n.af = AF_INET;
			n.bits = 32;
		}
	}
	/*
	 * Our IPv4 address inside NAT64 (64:ff9b::/96) or 6to4 (2002:V4::/48):
	 * rdest_addr_forbidden() judges these by the IPv4 address, which is
	 * global; a NAT64 gateway or 6to4 relay would carry the connection
	 * back to us.
	 */
	if (n.af == AF_INET && rdest_embedded_v4(sa, &v4))
		return rdest_net_match(&n, (const struct sockaddr *)&v4);
	return rdest_net_match(&n, sa);
}

/* Whether s is a DNS host name. */
bool
rdest_hostname_valid(const char *s)
{
	size_t len = strlen(s), lab = 0, nlabels = 0;
	bool alldigit = true;
	const char *last = s;

	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i <= len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '.' || ch == '\0') {
			if (lab == 0 || lab > 63 || s[i - 1] == '-')
				return false;
			nlabels++;
			lab = 0;
			if (ch == '.')
				last = s + i + 1;
			continue;
		}
		if (lab == 0 && ch == '-')
			return false;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-'))
			return false;
		lab++;
	}
	for (const char *p = last; *p; p++)
		if (*p < '0' || *p > '9')
			alldigit = false;
	return nlabels >= 2 && !alldigit;
}

/* Whether host is localhost or under it (RFC 6761 6.3). */
static bool
rdest_is_localhost(const char *host)
{
	size_t n = strlen(host);

	return strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0 ||
	    (n > 10 && strcasecmp(host + n - 10, ".localhost") == 0) ||
	    (n > 11 && strcasecmp(host + n - 11, ".localhost.") == 0);
}

/*
 * Names that the local resolver, not the DNS, answers: special-use and
 * private-use names (RFC 6761 .invalid .test, RFC 6762 .local mDNS,
 * RFC 7686 .onion, RFC 8375 .home.arpa, RFC 9476 .alt, ICANN's .internal),
 * the reverse trees, and the suffixes LAN resolvers (a router's dnsmasq,
 * split horizon) commonly serve.  Their hosts are the honeypot's neighbours,
 * often with global IPv6 addresses the range check cannot tell from the
 * Internet's.  localhost is refused on its own (rdest_is_localhost).
 */
static const char *const rdest_local_suffixes[] = {
	"local", "home.arpa", "internal", "onion", "alt", "invalid", "test",
	"in-addr.arpa", "ip6.arpa", "localdomain", "lan", "home", "corp",
	"intranet", "private",
};

/* The special-use or LAN suffix host ends with, or NULL. */
static const char *
rdest_local_suffix(const char *host)
{
	size_t n = strlen(host), sl;

	for (size_t i = 0; i < sizeof(rdest_local_suffixes) / sizeof(rdest_local_suffixes[0]); i++) {
		const char *suf = rdest_local_suffixes[i];
		sl = strlen(suf);
		if ((n == sl && strcasecmp(host, suf) == 0) ||
		    (n > sl && host[n - sl - 1] == '.' && strcasecmp(host + n - sl, suf) == 0))
			return suf;
	}
	return NULL;
}

/* Why an MX host may not be used. */
const char *
rdest_host_refused(const char *host)
{
	unsigned char bin[sizeof(struct in6_addr)];

	if (host[0] == '\0' || strcmp(host, ".") == 0)
		return "null MX (RFC 7505): the domain accepts no mail";
	if (host[0] == '[' || inet_pton(AF_INET, host, bin) == 1 ||
	    inet_pton(AF_INET6, host, bin) == 1)
		return "an IP address as MX host name";
	if (rdest_is_localhost(host))
		return "localhost as MX host";
	if (rdest_local_suffix(host) != NULL)
		return "special-use or local network name as MX host";
	if (!rdest_hostname_valid(host))
		return "not a valid host name";
	return NULL;
}

/*
 * Whether the n bytes at s are an RFC 5322 dot-atom: atext runs joined by
 * single dots.  A quoted local part names the same mailbox as its unquoted
 * spelling ("postmaster"@x is postmaster@x, RFC 5321 4.1.2), so allowing
 * one would let never_relay and the per-recipient cap compare a spelling
 * rather than the mailbox; quotes also carry blanks and '>' into the
 * outbound RCPT.  Relay probes use plain addresses.
 */
static bool
rdest_dot_atom(const char *s, size_t n)
{
	static const char atext[] = "!#$%&'*+-/=?^_`{|}~";

	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '.' && s[i + 1] == '.')
			return false;
		if (ch != '.' && !(ch >= 'a' && ch <= 'z') && !(ch >= 'A' && ch <= 'Z') &&
		    !(ch >= '0' && ch <= '9') && (ch == '\0' || strchr(atext, ch) == NULL))
			return false;
	}
	return true;
}

/* Why a recipient may not be relayed to. */
const char *
rdest_rcpt_refused(const char *addr)
{
	const char *at = strrchr(addr, '@'), *dom;
	size_t llen;

	for (const char *p = addr; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return "control character";
	if (addr[0] == '@')
		return "source route";
	if (at == NULL || at == addr)
		return "no local part or no domain";
	dom = at + 1;
	llen = (size_t)(at - addr);
	if (dom[0] == '[')
		return "address literal";
	if (memchr(addr, '%', llen) != NULL)
		return "'%' in the local part (percent hack)";
	if (memchr(addr, '!', llen) != NULL)
		return "'!' in the local part (bang path)";
	if (memchr(addr, '@', llen) != NULL)
		return "'@' in the local part";
	if (memchr(addr, ':', llen) != NULL)
		return "':' in the local part (source route)";
	if (!rdest_dot_atom(addr, llen))
		return "local part is not a dot-atom (quoted, escaped, 8-bit or stray dot)";
	if (rdest_is_localhost(dom))
		return "localhost domain";
	if (rdest_local_suffix(dom) != NULL)
		return "special-use or local network domain";
	if (!rdest_hostname_valid(dom))
		return "domain is not a valid host name";
	return NULL;
}
