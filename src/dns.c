/*
 * c-ares on the libevent loop (see dns.h).  c-ares tells us which sockets it
 * wants watched (sock_state_cb); we watch them with events and run its timers
 * from one evtimer.  Every answer is handed to the caller from a zero-delay
 * event of its own, so a callback never runs inside the call that started it.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include <ares.h>
#include <arpa/nameser.h>
#include <event2/event.h>

#include "dns.h"

enum dns_kind { DNS_KIND_MX, DNS_KIND_ADDR, DNS_KIND_PEER };

struct dns_sock {
	struct dns_sock	*next;
	struct dns	*d;
	ares_socket_t	 fd;
	struct event	*ev;
};

struct dns_req {
	struct dns_req	*next, *prev;
	struct dns	*d;
	enum dns_kind	 kind;
	void		*cb;
	void		*arg;
	struct event	*done_ev;
	int		 outstanding;	/* c-ares queries not answered yet */
	enum dns_status	 status;
	bool		 tempfail;	/* one of the address queries failed softly */
	char		 name[DNS_HOST_MAX];
	/* DNS_KIND_PEER */
	bool		 cancelled;	/* dns_cancel(): the callback does not run */
	int		 af;
	unsigned char	 bin[16];	/* the client's address */
	struct dns_peer	 peer;
	/*
	 * DNS_KIND_MX and DNS_KIND_ADDR only, last: a client lookup is
	 * allocated without them (DNS_REQ_PEER_SIZE, 1.2 KB instead of 8.9 KB:
	 * a lookup outlives a client that left, up to DNS_PEER_PENDING_MAX).
	 */
	char		 err[320];
	int		 n;
	struct dns_mx	 mx[DNS_MX_MAX];
	struct dns_addr	 addr[DNS_ADDR_MAX];
};

#define DNS_REQ_PEER_SIZE	offsetof(struct dns_req, err)

struct dns {
	struct event_base	*base;
	ares_channel		 ch;
	struct event		*timer;
	struct dns_sock		*socks;
	struct dns_req		*reqs;
	int			 npeer;		/* client lookups pending */
	bool			 freeing;
};

static void	 dns_sock_state_cb(void *, ares_socket_t, int, int);
static void	 dns_sock_cb(evutil_socket_t, short, void *);
static void	 dns_timer_cb(evutil_socket_t, short, void *);
static void	 dns_reschedule(struct dns *);
static struct dns_req *dns_req_new(struct dns *, enum dns_kind, void *, void *,
		    const char *);
static void	 dns_req_finish(struct dns_req *);
static void	 dns_req_done_cb(evutil_socket_t, short, void *);
static void	 dns_req_deliver(struct dns_req *);
static enum dns_status dns_map(int);
static void	 dns_mx_query_cb(void *, int, int, unsigned char *, int);
static void	 dns_addr_answer(struct dns_req *, int, int, unsigned char *, int);
static void	 dns_a_query_cb(void *, int, int, unsigned char *, int);
static void	 dns_aaaa_query_cb(void *, int, int, unsigned char *, int);
static int	 dns_mx_cmp(const void *, const void *);
static void	 dns_add_addr(struct dns_req *, int, const void *);
static int	 dns_addr_start(struct dns *, const char *, bool, bool, dns_addr_cb,
		    void *);
static int	 dns_first_ptr(const unsigned char *, int, const char *, char *, size_t);
static void	 dns_ptr_query_cb(void *, int, int, unsigned char *, int);
static void	 dns_fwd_query_cb(void *, int, int, unsigned char *, int);

/* c-ares wants fd watched for reading and/or writing, or no longer. */
static void
dns_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns *d = data;
	struct dns_sock **pp, *s;

	for (pp = &d->socks; (s = *pp) != NULL; pp = &s->next)
		if (s->fd == fd)
			break;
	if (!readable && !writable) {
		if (s != NULL) {
			*pp = s->next;
			event_free(s->ev);
			free(s);
		}
		return;
	}
	if (s == NULL) {
		if ((s = calloc(1, sizeof(*s))) == NULL)
			return;	/* the query times out */
		s->d = d;
		s->fd = fd;
		s->next = d->socks;
		d->socks = s;
	} else {
		event_free(s->ev);
	}
	s->ev = event_new(d->base, fd, EV_PERSIST | (readable ? EV_READ : 0) |
	    (writable ? EV_WRITE : 0), dns_sock_cb, s);
	if (s->ev != NULL)
		event_add(s->ev, NULL);
}

/* A watched socket is ready. */
static void
dns_sock_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_sock *s = arg;
	struct dns *d = s->d;

	/* s may be freed inside ares_process_fd (sock_state_cb). */
	ares_process_fd(d->ch, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
	    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	dns_reschedule(d);
}

/* c-ares timers. */
static void
dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns *d = arg;

	ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_reschedule(d);
}

/* Arm the timer for c-ares' next timeout. */
static void
dns_reschedule(struct dns *d)
{
	struct timeval tv, *tvp;

	if (d->freeing)
		return;
	tvp = ares_timeout(d->ch, NULL, &tv);
	if (tvp != NULL)
		evtimer_add(d->timer, tvp);
	else
		evtimer_del(d->timer);
}

/* Create a resolver. */
struct dns *
dns_new(struct event_base *base, const char *server, int timeout_ms, char *err,
    size_t errlen)
{
	struct ares_options o;
	struct dns *d;
	int r, mask;

	if ((r = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: %s", ares_strerror(r));
		return NULL;
	}
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	d->base = base;
	memset(&o, 0, sizeof(o));
	o.sock_state_cb = dns_sock_state_cb;
	o.sock_state_cb_data = d;
	o.timeout = timeout_ms > 0 ? timeout_ms : 5000;
	o.tries = 2;
	mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
	if ((r = ares_init_options(&d->ch, &o, mask)) != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: %s", ares_strerror(r));
		free(d);
		return NULL;
	}
	if (server != NULL && server[0] != '\0' &&
	    (r = ares_set_servers_ports_csv(d->ch, server)) != ARES_SUCCESS) {
		snprintf(err, errlen, "dns server \"%s\": %s", server, ares_strerror(r));
		ares_destroy(d->ch);
		free(d);
		return NULL;
	}
	if ((d->timer = evtimer_new(base, dns_timer_cb, d)) == NULL) {
		snprintf(err, errlen, "out of memory");
		ares_destroy(d->ch);
		free(d);
		return NULL;
	}
	return d;
}

/* Cancel every query and free the resolver. */
void
dns_free(struct dns *d)
{
	struct dns_sock *s;

	if (d == NULL)
		return;
	d->freeing = true;
	ares_cancel(d->ch);	/* every query callback runs with ARES_ECANCELLED */
	while (d->reqs != NULL) {
		struct dns_req *q = d->reqs;
		q->status = DNS_CANCELLED;
		if (q->kind != DNS_KIND_PEER)
			snprintf(q->err, sizeof(q->err), "cancelled");
		else if (q->peer.status == DNS_PEER_OK) {
			q->peer.status = DNS_PEER_TEMP;
			snprintf(q->peer.name, sizeof(q->peer.name), "unknown");
			snprintf(q->peer.err, sizeof(q->peer.err), "cancelled");
		}
		dns_req_deliver(q);
	}
	ares_destroy(d->ch);
	while ((s = d->socks) != NULL) {
		d->socks = s->next;
		event_free(s->ev);
		free(s);
	}
	event_free(d->timer);
	free(d);
}

/* A request in the list. */
static struct dns_req *
dns_req_new(struct dns *d, enum dns_kind kind, void *cb, void *arg,
    const char *name)
{
	struct dns_req *q;

	if (strlen(name) >= DNS_HOST_MAX || name[0] == '\0')
		return NULL;
	if ((q = calloc(1, kind == DNS_KIND_PEER ? DNS_REQ_PEER_SIZE : sizeof(*q))) == NULL)
		return NULL;
	if ((q->done_ev = event_new(d->base, -1, 0, dns_req_done_cb, q)) == NULL) {
		free(q);
		return NULL;
	}
	q->d = d;
	q->kind = kind;
	q->cb = cb;
	q->arg = arg;
	snprintf(q->name, sizeof(q->name), "%s", name);
	q->next = d->reqs;
	if (d->reqs)
		d->reqs->prev = q;
	d->reqs = q;
	return q;
}

/* Every query of q answered: deliver from a fresh event. */
static void
dns_req_finish(struct dns_req *q)
{
	if (q->d->freeing)
		return;	/* dns_free delivers */
	event_active(q->done_ev, EV_TIMEOUT, 1);
}

/* The zero-delay delivery event. */
static void
dns_req_done_cb(evutil_socket_t fd, short what, void *arg)
{
	dns_req_deliver(arg);
}

/* Unlink q, run its callback, free it. */
static void
dns_req_deliver(struct dns_req *q)
{
	struct dns *d = q->d;

	if (q->prev)
		q->prev->next = q->next;
	else
		d->reqs = q->next;
	if (q->next)
		q->next->prev = q->prev;
	if (q->kind == DNS_KIND_PEER) {
		d->npeer--;
		if (!q->cancelled)
			((dns_peer_cb)q->cb)(q->arg, &q->peer);
	} else if (q->kind == DNS_KIND_MX)
		((dns_mx_cb)q->cb)(q->arg, q->status, q->mx, q->status == DNS_OK ? q->n : 0,
		    q->err);
	else
		((dns_addr_cb)q->cb)(q->arg, q->status, q->addr,
		    q->status == DNS_OK ? q->n : 0, q->err);
	event_free(q->done_ev);
	free(q);
}

/* A c-ares status as ours. */
static enum dns_status
dns_map(int st)
{
	switch (st) {
	case ARES_SUCCESS:
		return DNS_OK;
	case ARES_ENOTFOUND:
	case ARES_ENODATA:
	case ARES_EBADNAME:
		return DNS_NOTFOUND;
	case ARES_ECANCELLED:
	case ARES_EDESTRUCTION:
		return DNS_CANCELLED;
	default:
		return DNS_TEMPFAIL;
	}
}

/* Sort MX records by preference. */
static int
dns_mx_cmp(const void *a, const void *b)
{
	const struct dns_mx *x = a, *y = b;

	return (x->pref > y->pref) - (x->pref < y->pref);
}

/* The MX answer arrived. */
static void
dns_mx_query_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_req *q = arg;
	struct ares_mx_reply *mx = NULL, *m;
	int r = status;

	if (status == ARES_SUCCESS)
		r = ares_parse_mx_reply(abuf, alen, &mx);
	/*
	 * c-ares 1.18 parses an answer holding only a CNAME (the domain is an
	 * alias whose target has no MX) as success with no record: that is
	 * "no MX", the implicit MX below, not "no such domain".
	 */
	if (r == ARES_SUCCESS && mx == NULL)
		r = ARES_ENODATA;
	if (r == ARES_SUCCESS) {
		for (m = mx; m != NULL && q->n < DNS_MX_MAX; m = m->next) {
			snprintf(q->mx[q->n].host, DNS_HOST_MAX, "%s", m->host);
			q->mx[q->n].pref = m->priority;
			q->n++;
		}
		ares_free_data(mx);
		qsort(q->mx, (size_t)q->n, sizeof(q->mx[0]), dns_mx_cmp);
		if (q->n == 1 && (q->mx[0].host[0] == '\0' ||
		    strcmp(q->mx[0].host, ".") == 0)) {
			q->status = DNS_NULLMX;
			snprintf(q->err, sizeof(q->err), "null MX (RFC 7505)");
		} else {
			q->status = q->n > 0 ? DNS_OK : DNS_NOTFOUND;
		}
	} else if (r == ARES_ENODATA) {
		/* RFC 5321 5.1: no MX, the domain is its own mail exchanger. */
		snprintf(q->mx[0].host, DNS_HOST_MAX, "%s", q->name);
		q->mx[0].pref = 0;
		q->mx[0].implicit = true;
		q->n = 1;
		q->status = DNS_OK;
	} else {
		q->status = dns_map(r);
		snprintf(q->err, sizeof(q->err), "MX %s: %s", q->name, ares_strerror(r));
	}
	dns_req_finish(q);
}

/* Append one address of family af to q. */
static void
dns_add_addr(struct dns_req *q, int af, const void *bin)
{
	struct dns_addr *a;

	if (q->n >= DNS_ADDR_MAX)
		return;
	a = &q->addr[q->n++];
	memset(a, 0, sizeof(*a));
	if (af == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, bin, sizeof(sin->sin_addr));
		a->len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, bin, sizeof(sin6->sin6_addr));
		a->len = sizeof(*sin6);
	}
	inet_ntop(af, bin, a->text, sizeof(a->text));
}

/* The A answer arrived. */
static void
dns_a_query_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	dns_addr_answer(arg, AF_INET, status, abuf, alen);
}

/* The AAAA answer arrived. */
static void
dns_aaaa_query_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	dns_addr_answer(arg, AF_INET6, status, abuf, alen);
}

/*
 * An A (af AF_INET) or AAAA answer.  Each is parsed by the parser of the
 * type asked: c-ares 1.18's ares_parse_a_reply() succeeds on an AAAA answer
 * with no address, which once made every AAAA answer look empty.
 */
static void
dns_addr_answer(struct dns_req *q, int af, int status, unsigned char *abuf, int alen)
{
	struct ares_addrttl a4[DNS_ADDR_MAX];
	struct ares_addr6ttl a6[DNS_ADDR_MAX];
	int n = DNS_ADDR_MAX, r = status, i;

	if (status == ARES_SUCCESS && af == AF_INET) {
		if ((r = ares_parse_a_reply(abuf, alen, NULL, a4, &n)) == ARES_SUCCESS)
			for (i = 0; i < n; i++)
				dns_add_addr(q, AF_INET, &a4[i].ipaddr);
	} else if (status == ARES_SUCCESS) {
		if ((r = ares_parse_aaaa_reply(abuf, alen, NULL, a6, &n)) == ARES_SUCCESS)
			for (i = 0; i < n; i++)
				dns_add_addr(q, AF_INET6, &a6[i].ip6addr);
	}
	if (r != ARES_SUCCESS && dns_map(r) == DNS_TEMPFAIL) {
		q->tempfail = true;
		snprintf(q->err, sizeof(q->err), "%s: %s", q->name, ares_strerror(r));
	} else if (r != ARES_SUCCESS && dns_map(r) == DNS_CANCELLED) {
		q->status = DNS_CANCELLED;
	}
	if (--q->outstanding > 0)
		return;
	if (q->status == DNS_CANCELLED) {
		snprintf(q->err, sizeof(q->err), "cancelled");
	} else if (q->n > 0) {
		/* IPv4 first: sort is stable enough for two families. */
		struct dns_addr tmp;
		for (i = 1; i < q->n; i++)
			for (int j = i; j > 0 && q->addr[j].ss.ss_family == AF_INET &&
			    q->addr[j - 1].ss.ss_family == AF_INET6; j--) {
				tmp = q->addr[j];
				q->addr[j] = q->addr[j - 1];
				q->addr[j - 1] = tmp;
			}
		q->status = DNS_OK;
	} else if (q->tempfail) {
		q->status = DNS_TEMPFAIL;
	} else {
		q->status = DNS_NOTFOUND;
		snprintf(q->err, sizeof(q->err), "%s: no address", q->name);
	}
	dns_req_finish(q);
}

/* Start an MX lookup. */
int
dns_mx_lookup(struct dns *d, const char *domain, dns_mx_cb cb, void *arg)
{
	struct dns_req *q;

	if ((q = dns_req_new(d, DNS_KIND_MX, (void *)cb, arg, domain)) == NULL)
		return -1;
	q->outstanding = 1;
	ares_query(d->ch, domain, ns_c_in, ns_t_mx, dns_mx_query_cb, q);
	dns_reschedule(d);
	return 0;
}

/* Start an address lookup. */
int
dns_addr_lookup(struct dns *d, const char *host, bool ipv4_only, dns_addr_cb cb,
    void *arg)
{
	return dns_addr_start(d, host, ipv4_only, false, cb, arg);
}

/* Start a service's host name lookup (see dns.h). */
int
dns_name_lookup(struct dns *d, const char *host, dns_addr_cb cb, void *arg)
{
	return dns_addr_start(d, host, false, true, cb, arg);
}

/*
 * An address lookup: a numeric address at once; with search, the hosts
 * file, then DNS with the search list (ares_search); else the name as given
 * (ares_query: the relay's MX hosts are fully qualified).
 */
static int
dns_addr_start(struct dns *d, const char *host, bool ipv4_only, bool search,
    dns_addr_cb cb, void *arg)
{
	static const int fams[] = { AF_INET, AF_INET6 };
	struct dns_req *q;
	struct hostent *he;
	unsigned char bin[sizeof(struct in6_addr)];
	void (*query)(ares_channel, const char *, int, int, ares_callback, void *);

	if ((q = dns_req_new(d, DNS_KIND_ADDR, (void *)cb, arg, host)) == NULL)
		return -1;
	if (inet_pton(AF_INET, host, bin) == 1 ||
	    (!ipv4_only && inet_pton(AF_INET6, host, bin) == 1)) {
		dns_add_addr(q, strchr(host, ':') ? AF_INET6 : AF_INET, bin);
		q->status = DNS_OK;
		dns_req_finish(q);
		return 0;
	}
	for (size_t i = 0; search && i < sizeof(fams) / sizeof(fams[0]); i++) {
		if (ares_gethostbyname_file(d->ch, host, fams[i], &he) != ARES_SUCCESS)
			continue;
		for (char **p = he->h_addr_list; *p != NULL; p++)
			dns_add_addr(q, fams[i], *p);
		ares_free_hostent(he);
	}
	if (q->n > 0) {
		q->status = DNS_OK;
		dns_req_finish(q);
		return 0;
	}
	query = search ? ares_search : ares_query;
	q->outstanding = ipv4_only ? 1 : 2;
	query(d->ch, host, ns_c_in, ns_t_a, dns_a_query_cb, q);
	if (!ipv4_only && q->outstanding > 0)
		query(d->ch, host, ns_c_in, ns_t_aaaa, dns_aaaa_query_cb, q);
	dns_reschedule(d);
	return 0;
}

/* A word for a status. */
const char *
dns_status_name(enum dns_status s)
{
	static const char *const names[] = { "ok", "notfound", "nullmx", "tempfail",
	    "cancelled" };

	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

/* ------------------------------------------------------------ client name */

/* The PTR query name of a numeric address. */
int
dns_reverse_name(const char *ip, char *out, size_t outlen)
{
	unsigned char b[16];
	size_t off = 0;
	int i, n;

	if (inet_pton(AF_INET, ip, b) == 1) {
		n = snprintf(out, outlen, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
		return n < 0 || (size_t)n >= outlen ? -1 : 0;
	}
	if (inet_pton(AF_INET6, ip, b) != 1 || outlen < 16 * 4 + sizeof("ip6.arpa"))
		return -1;
	for (i = 15; i >= 0; i--) {
		out[off++] = "0123456789abcdef"[b[i] & 0xf];
		out[off++] = '.';
		out[off++] = "0123456789abcdef"[b[i] >> 4];
		out[off++] = '.';
	}
	memcpy(out + off, "ip6.arpa", sizeof("ip6.arpa"));
	return 0;
}

/*
 * Postfix's valid_hostname(): letters, digits, "_" and inner hyphens,
 * labels of 63 bytes at most, not all digits (numeric names refused).
 */
bool
dns_valid_hostname(const char *name)
{
	size_t label = 0, len = 0;
	bool non_numeric = false;
	const char *p;

	for (p = name; *p != '\0'; p++, len++) {
		unsigned char c = (unsigned char)*p;

		if (len >= 253)
			return false;	/* 255 bytes on the wire at most (RFC 1035 2.3.4) */
		/* "_" is a letter to Postfix ("grr..": names like dsl_1.example exist) */
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '_') {
			if (++label > 63)
				return false;
			if (c > '9')
				non_numeric = true;
		} else if (c == '-') {
			/* no hyphen at either end of a label */
			if (label == 0 || p[1] == '\0' || p[1] == '.' || ++label > 63)
				return false;
			non_numeric = true;
		} else if (c == '.') {
			/* no empty label, no trailing dot (c-ares never writes one) */
			if (label == 0 || p[1] == '\0')
				return false;
			label = 0;
		} else
			return false;
	}
	return len > 0 && non_numeric;
}

/*
 * The first PTR of an answer whose owner is the question's name (or the
 * target of a CNAME before it: classless reverse delegation, RFC 2317), as
 * glibc's getanswer_ptr() takes it.  1 with out filled, 0 when there is
 * none, -1 when the answer is malformed or the name does not fit out.
 */
static int
dns_first_ptr(const unsigned char *abuf, int alen, const char *qname, char *out,
    size_t outlen)
{
	const unsigned char *p = abuf + 12, *end = abuf + alen;
	char expected[DNS_HOST_MAX], *n, *t;
	long enclen;
	int qd, an, i, type, class, rdlen, r = 0;
	bool match;

	if (alen < 12)
		return -1;
	qd = abuf[4] << 8 | abuf[5];
	an = abuf[6] << 8 | abuf[7];
	snprintf(expected, sizeof(expected), "%s", qname);
	for (i = 0; i < qd; i++) {
		if (ares_expand_name(p, abuf, alen, &n, &enclen) != ARES_SUCCESS)
			return -1;
		ares_free_string(n);
		p += enclen;
		if (end - p < 4)
			return -1;
		p += 4;
	}
	for (i = 0; i < an && r == 0; i++) {
		if (ares_expand_name(p, abuf, alen, &n, &enclen) != ARES_SUCCESS)
			return -1;
		p += enclen;
		match = strcasecmp(n, expected) == 0;
		ares_free_string(n);
		if (end - p < 10)
			return -1;
		type = p[0] << 8 | p[1];
		class = p[2] << 8 | p[3];
		rdlen = p[8] << 8 | p[9];
		p += 10;
		if (end - p < rdlen)
			return -1;
		if (class == ns_c_in && (type == ns_t_cname || (type == ns_t_ptr && match))) {
			if (ares_expand_name(p, abuf, alen, &t, &enclen) != ARES_SUCCESS)
				return -1;
			if (strlen(t) >= (type == ns_t_cname ? sizeof(expected) : outlen))
				r = -1;
			else if (type == ns_t_cname)
				snprintf(expected, sizeof(expected), "%s", t);
			else {
				snprintf(out, outlen, "%s", t);
				r = 1;
			}
			ares_free_string(t);
		}
		p += rdlen;
	}
	return r;
}

/* The name is not verified: "unknown" with status st. */
static void
dns_peer_reject(struct dns_req *q, enum dns_peer_status st)
{
	q->peer.status = st;
	snprintf(q->peer.name, sizeof(q->peer.name), "unknown");
	dns_req_finish(q);
}

/* The PTR answer arrived: validate the name, then look it up forward. */
static void
dns_ptr_query_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_req *q = arg;
	char name[DNS_HOST_MAX];
	int r;

	if (status != ARES_SUCCESS) {
		snprintf(q->peer.err, sizeof(q->peer.err), "PTR %s: %s", q->name,
		    ares_strerror(status));
		dns_peer_reject(q, dns_map(status) == DNS_NOTFOUND ? DNS_PEER_PERM :
		    DNS_PEER_TEMP);
		return;
	}
	if ((r = dns_first_ptr(abuf, alen, q->name, name, sizeof(name))) != 1) {
		snprintf(q->peer.err, sizeof(q->peer.err), "PTR %s: %s", q->name,
		    r == 0 ? "no PTR record" : "malformed answer or name too long");
		dns_peer_reject(q, DNS_PEER_PERM);
		return;
	}
	if (!dns_valid_hostname(name)) {
		snprintf(q->peer.err, sizeof(q->peer.err), "PTR %.80s: not a valid host "
		    "name: %.200s", q->name, name);
		dns_peer_reject(q, DNS_PEER_PERM);
		return;
	}
	snprintf(q->peer.reverse_name, sizeof(q->peer.reverse_name), "%s", name);
	if (q->cancelled || q->d->freeing) {
		dns_peer_reject(q, DNS_PEER_TEMP);
		return;
	}
	/* Postfix asks for the client's address family only. */
	ares_query(q->d->ch, name, ns_c_in, q->af == AF_INET ? ns_t_a : ns_t_aaaa,
	    dns_fwd_query_cb, q);
	dns_reschedule(q->d);
}

/*
 * Does the A/AAAA answer list the client's address?  1 yes, 0 no, -1
 * malformed.  Every record is read (getaddrinfo() in Postfix returns them
 * all), for the question's name or the target of a CNAME before it.
 */
static int
dns_fwd_lists(const struct dns_req *q, const unsigned char *abuf, int alen)
{
	const unsigned char *p = abuf + 12, *end = abuf + alen;
	char expected[DNS_HOST_MAX], *n, *t;
	long enclen;
	int qd, an, i, type, class, rdlen, want = q->af == AF_INET ? ns_t_a : ns_t_aaaa;
	size_t blen = q->af == AF_INET ? 4 : 16;
	bool match;

	if (alen < 12)
		return -1;
	qd = abuf[4] << 8 | abuf[5];
	an = abuf[6] << 8 | abuf[7];
	snprintf(expected, sizeof(expected), "%s", q->peer.reverse_name);
	for (i = 0; i < qd; i++) {
		if (ares_expand_name(p, abuf, alen, &n, &enclen) != ARES_SUCCESS)
			return -1;
		ares_free_string(n);
		p += enclen;
		if (end - p < 4)
			return -1;
		p += 4;
	}
	for (i = 0; i < an; i++) {
		if (ares_expand_name(p, abuf, alen, &n, &enclen) != ARES_SUCCESS)
			return -1;
		p += enclen;
		match = strcasecmp(n, expected) == 0;
		ares_free_string(n);
		if (end - p < 10)
			return -1;
		type = p[0] << 8 | p[1];
		class = p[2] << 8 | p[3];
		rdlen = p[8] << 8 | p[9];
		p += 10;
		if (end - p < rdlen)
			return -1;
		if (class == ns_c_in && match && type == ns_t_cname) {
			if (ares_expand_name(p, abuf, alen, &t, &enclen) != ARES_SUCCESS)
				return -1;
			snprintf(expected, sizeof(expected), "%s", t);
			ares_free_string(t);
		} else if (class == ns_c_in && match && type == want && (size_t)rdlen == blen &&
		    memcmp(p, q->bin, blen) == 0)
			return 1;
		p += rdlen;
	}
	return 0;
}

/* The forward answer arrived: the name is verified if it lists the address. */
static void
dns_fwd_query_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_req *q = arg;
	int r = status;

	if (r == ARES_SUCCESS) {
		switch (dns_fwd_lists(q, abuf, alen)) {
		case 1:
			q->peer.status = DNS_PEER_OK;
			snprintf(q->peer.name, sizeof(q->peer.name), "%s", q->peer.reverse_name);
			dns_req_finish(q);
			return;
		case -1:
			r = ARES_EBADRESP;
			break;
		}
	}
	if (r != ARES_SUCCESS) {
		snprintf(q->peer.err, sizeof(q->peer.err), "hostname %.200s does not resolve "
		    "to address: %s", q->peer.reverse_name, ares_strerror(r));
		dns_peer_reject(q, dns_map(r) == DNS_TEMPFAIL || dns_map(r) == DNS_CANCELLED ?
		    DNS_PEER_TEMP : DNS_PEER_FORGED);
	} else {
		snprintf(q->peer.err, sizeof(q->peer.err), "hostname %.200s does not resolve "
		    "to address", q->peer.reverse_name);
		dns_peer_reject(q, DNS_PEER_FORGED);
	}
}

/* Start the client name lookup. */
struct dns_req *
dns_peer_lookup(struct dns *d, const char *ip, dns_peer_cb cb, void *arg)
{
	struct dns_req *q;
	char rname[DNS_HOST_MAX];
	int af;
	unsigned char bin[16];

	if (inet_pton(AF_INET, ip, bin) == 1)
		af = AF_INET;
	else if (inet_pton(AF_INET6, ip, bin) == 1)
		af = AF_INET6;
	else
		return NULL;
	if (dns_reverse_name(ip, rname, sizeof(rname)) == -1)
		return NULL;
	/* Bounded: a connect/close storm leaves one pending lookup a connection. */
	if (d->npeer >= DNS_PEER_PENDING_MAX)
		return NULL;
	if ((q = dns_req_new(d, DNS_KIND_PEER, (void *)cb, arg, rname)) == NULL)
		return NULL;
	d->npeer++;
	q->af = af;
	memcpy(q->bin, bin, af == AF_INET ? 4 : 16);
	q->peer.status = DNS_PEER_OK;
	snprintf(q->peer.name, sizeof(q->peer.name), "unknown");
	snprintf(q->peer.reverse_name, sizeof(q->peer.reverse_name), "unknown");
	ares_query(d->ch, rname, ns_c_in, ns_t_ptr, dns_ptr_query_cb, q);
	dns_reschedule(d);
	return q;
}

int
dns_peer_pending(const struct dns *d)
{
	return d ? d->npeer : 0;
}

/* Forget the caller: its callback will not run. */
void
dns_cancel(struct dns_req *q)
{
	if (q == NULL)
		return;
	q->cancelled = true;
	q->arg = NULL;
}
