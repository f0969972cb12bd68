/*
 * Asynchronous DNS for the relay and the client lookup: c-ares driven by the
 * libevent loop (no thread, no blocking call).  MX lookup with the RFC 5321
 * 5.1 fallback (no MX records: the domain itself is the only MX, preference
 * 0; a null MX RFC 7505 means the domain takes no mail), address lookup (A
 * and AAAA, or A only), and the client name lookup of Postfix's smtpd
 * (smtpd_peer.c: PTR, then the name's A or AAAA must list the address).
 * Never logs.
 */
#ifndef FOSR_DNS_H
#define FOSR_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct event_base;
struct dns;

#define DNS_MX_MAX	16
#define DNS_ADDR_MAX	16
#define DNS_HOST_MAX	256

enum dns_status {
	DNS_OK,
	DNS_NOTFOUND,	/* NXDOMAIN, or no address */
	DNS_NULLMX,	/* RFC 7505: the domain accepts no mail */
	DNS_TEMPFAIL,	/* timeout, SERVFAIL, refused...: try again later */
	DNS_CANCELLED,	/* dns_free() while the query was pending */
};

struct dns_mx {
	char	 host[DNS_HOST_MAX];
	int	 pref;
	bool	 implicit;	/* no MX record: the domain itself (RFC 5321 5.1) */
};

struct dns_addr {
	struct sockaddr_storage	 ss;	/* port 0 */
	socklen_t		 len;
	char			 text[64];
};

/* MX hosts sorted by preference; err is a short reason when status != DNS_OK. */
typedef void	(*dns_mx_cb)(void *arg, enum dns_status, const struct dns_mx *,
		    int n, const char *err);
/* Addresses: IPv4 first, then IPv6 (none with ipv4_only). */
typedef void	(*dns_addr_cb)(void *arg, enum dns_status, const struct dns_addr *,
		    int n, const char *err);

/*
 * A resolver on base.  server: "addr:port" or "" for /etc/resolv.conf;
 * timeout_ms per try.  NULL with err filled on failure.
 */
struct dns	*dns_new(struct event_base *base, const char *server, int timeout_ms,
		    char *err, size_t errlen);
/* Cancel everything (each pending callback runs with DNS_CANCELLED), free. */
void		 dns_free(struct dns *);

/* Start an MX lookup; cb runs later on the loop (never from inside this call). */
int		 dns_mx_lookup(struct dns *, const char *domain, dns_mx_cb cb, void *arg);
/* Start an address lookup of host (a numeric address answers at once, later). */
int		 dns_addr_lookup(struct dns *, const char *host, bool ipv4_only,
		    dns_addr_cb cb, void *arg);

/*
 * Start the lookup of a service's host name (the AMQP broker), as the C
 * library's getaddrinfo() would do it but on the loop: the hosts file, read
 * now (inside a chroot: the chroot's, if any), then A and AAAA in DNS with
 * the search list and ndots of the resolv.conf read by dns_new().  A numeric
 * address answers at once.  cb runs later on the loop.
 */
int		 dns_name_lookup(struct dns *, const char *host, dns_addr_cb cb, void *arg);

const char	*dns_status_name(enum dns_status);

/*
 * The client name, as Postfix's smtpd_peer.c finds it (name_status codes):
 * OK the PTR name forward-confirms; PERM no PTR, or not a valid host name;
 * TEMP the PTR or forward query failed softly (timeout, SERVFAIL); FORGED
 * the name does not resolve to the address.  name is the verified name or
 * "unknown"; reverse_name is the (valid) PTR name even when it did not
 * verify, or "unknown".
 */
enum dns_peer_status { DNS_PEER_OK, DNS_PEER_PERM, DNS_PEER_TEMP, DNS_PEER_FORGED };

struct dns_peer {
	enum dns_peer_status	 status;
	char			 name[DNS_HOST_MAX];
	char			 reverse_name[DNS_HOST_MAX];
	char			 err[320];	/* why not OK: may hold DNS bytes, escape to log */
};

typedef void	(*dns_peer_cb)(void *arg, const struct dns_peer *);
struct dns_req;

/*
 * Look up the name of the client at numeric address ip (DNS only: no hosts
 * file, no search list).  Only the first PTR record counts, as with glibc's
 * getnameinfo().  Returns a handle for dns_cancel(), or NULL (bad address,
 * DNS_PEER_PENDING_MAX lookups pending,
 * out of memory).  cb runs later on the loop, once, unless cancelled; a
 * dns_free() with the lookup pending runs it with DNS_PEER_TEMP.
 */
struct dns_req	*dns_peer_lookup(struct dns *, const char *ip, dns_peer_cb cb, void *arg);
/* The callback of req will not run (its queries end on their own timeouts). */
void		 dns_cancel(struct dns_req *);
/*
 * Client lookups pending at most, cancelled ones included (c-ares cannot
 * cancel one query: a lookup outlives a client that left until its
 * queries end).  Past it dns_peer_lookup() returns NULL: the name is
 * "unknown" at once.  Postfix has one lookup per smtpd process, 100 a
 * service by default.
 */
#define DNS_PEER_PENDING_MAX	256
int		 dns_peer_pending(const struct dns *);

/*
 * Whether a PTR answer may be used as a host name: labels of 1..63 letters,
 * digits, "_" and hyphens (Postfix takes "_" as a letter), no hyphen at
 * either end of a label, at most 253 bytes (255 on the wire), no empty
 * label, not all digits (Postfix's valid_hostname(), numeric names refused).
 */
bool		 dns_valid_hostname(const char *);

/* The PTR query name of a numeric address ("4.3.2.1.in-addr.arpa"); 0 or -1. */
int		 dns_reverse_name(const char *ip, char *out, size_t outlen);

#endif
