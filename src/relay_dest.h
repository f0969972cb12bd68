/*
 * Where a relayed copy may go: the one place that says which addresses,
 * host names and recipients the relay may deliver to.  Pure functions, no
 * state, no logging (tests/unit/test_relay_dest.c covers every range and
 * its boundaries).
 *
 * A honeypot relays mail that attackers wrote, to recipients and through
 * DNS answers they chose: it must never become a way into loopback, private,
 * link-local, shared (CGNAT), documentation, multicast or reserved networks.
 * Only global unicast addresses are destinations.  The operator's smarthost
 * and test server are exempt (the relay skips these checks for them); the
 * config key relay.allow_destinations is a test-only escape hatch that the
 * relay applies before rdest_addr_forbidden().
 */
#ifndef FOSR_RELAY_DEST_H
#define FOSR_RELAY_DEST_H

#include <stdbool.h>
#include <sys/socket.h>

/* A network: address and prefix length ("10.0.0.0/8", "::1/128", "127.0.0.1"). */
struct rdest_net {
	int		 af;		/* AF_INET or AF_INET6 */
	unsigned char	 addr[16];	/* network byte order, host bits zero */
	int		 bits;
};

/*
 * Why sa (AF_INET or AF_INET6) must never be connected to for relaying: a
 * short constant text naming the range ("loopback (127.0.0.0/8)"), or NULL
 * when it is a global unicast address.  IPv4-mapped (::ffff:0:0/96), NAT64
 * (64:ff9b::/96) and 6to4 (2002::/16) addresses are judged by the IPv4
 * address they embed.  Any other family is refused.
 */
const char	*rdest_addr_forbidden(const struct sockaddr *sa);

/* Parse "addr" or "addr/bits" into n.  0, or -1 when it is not one. */
int		 rdest_net_parse(const char *s, struct rdest_net *n);

/* Whether sa is in n (an IPv4-mapped IPv6 address is compared as IPv4). */
bool		 rdest_net_match(const struct rdest_net *n, const struct sockaddr *sa);

/*
 * Whether sa is the numeric address s (port ignored; IPv4-mapped as IPv4;
 * an IPv4 s also matches its NAT64 64:ff9b::/96 and 6to4 2002::/16 forms).
 */
bool		 rdest_addr_is(const struct sockaddr *sa, const char *s);

/* Whether s is a wildcard address (0.0.0.0, ::, 0::0...). */
bool		 rdest_addr_unspecified(const char *s);

/*
 * The IPv4 address an IPv6 sa carries: IPv4-mapped (::ffff:0:0/96), NAT64
 * (64:ff9b::/96) or 6to4 (2002::/16), into out (port 0).  false for any
 * other address.
 */
bool		 rdest_embedded_v4(const struct sockaddr *sa, struct sockaddr_in *out);

/*
 * Why the recipient addr (a forward path without <>) may not be relayed to,
 * or NULL: address literals ("[...]", "[IPv6:...]"), source routes
 * ("@a,@b:user@dom"), local parts with '%', '!' or '@' (quoted or not),
 * local parts that are not a dot-atom (quoted, escaped, 8-bit), special-use
 * or local network domains (.local, .home.arpa, .internal, .lan...) and
 * domains that are not a fully qualified DNS host name.
 */
const char	*rdest_rcpt_refused(const char *addr);

/*
 * Why the MX host name (or implicit MX, the domain itself) may not be used,
 * or NULL: the null MX ".", IP addresses and address literals, localhost and
 * *.localhost (RFC 6761), special-use or local network names, invalid host
 * names.
 */
const char	*rdest_host_refused(const char *host);

/*
 * Whether s is a DNS host name: 1..253 bytes, at least two labels of 1..63
 * letters, digits and hyphens, no label starting or ending with a hyphen,
 * and a top-level label that is not all digits (so no dotted quad).
 */
bool		 rdest_hostname_valid(const char *s);

#endif
