/*
 * Asynchronous DNS for the relay: c-ares driven by the libevent loop (no
 * thread, no blocking call).  MX lookup with the RFC 5321 5.1 fallback (no MX
 * records: the domain itself is the only MX, preference 0; a null MX
 * RFC 7505 means the domain takes no mail), and address lookup (A and AAAA,
 * or A only).  Never logs.
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

const char	*dns_status_name(enum dns_status);

#endif
