/*
 * The relayed copy's way out (see relay.h): its Received header, then for
 * each recipient the route (test server, smarthost, MX), the addresses
 * (public unicast only, never our own: relay_dest.h), the SMTP attempts
 * and their record.  Runs on the loop; relay.c decides and finishes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "persona.h"
#include "record.h"
#include "relay_int.h"
#include "util.h"

static void	 relay_route(struct relay_job *);
static void	 relay_mx_cb(void *, enum dns_status, const struct dns_mx *, int, const char *);
static void	 relay_next_mx(struct relay_job *);
static void	 relay_addr_cb(void *, enum dns_status, const struct dns_addr *, int,
		    const char *);
static void	 relay_next_addr(struct relay_job *);
static const char *relay_dest_refused(const struct relay_job *, const struct sockaddr *,
		    int, bool);
static void	 relay_client_cb(void *, const struct smtp_client_result *);
static void	 relay_rcpt_done(struct relay_job *, bool, const char *);
static void	 relay_attempt_json(struct relay_job *, const char *, const char *, int,
		    const struct smtp_client_result *, const char *);
static bool	 relay_domain_listed(const struct relay *, const char *);

/* ------------------------------------------------------------------ delivery */

/* Deliver to the next recipient, or finish. */
void
relay_next_rcpt(struct relay_job *j)
{
	char hdr[2048];
	size_t n;

	if (++j->rcpt_idx >= j->rec->nrcpt) {
		relay_finish(j, j->any_failed ? "failed" : "delivered",
		    j->any_failed ? "not every recipient was delivered" : "delivered");
		return;
	}
	j->target_rcpt = j->r->test_mode ? j->r->cfg->relay.test_recipient :
	    j->rec->rcpt[j->rcpt_idx];
	n = record_received_header(hdr, sizeof(hdr), j->r->persona, j->rec,
	    j->r->hostname, j->qid, j->rec->rcpt[j->rcpt_idx], time(NULL));
	free(j->received);
	if ((j->received = malloc(n + 1)) == NULL) {
		relay_rcpt_done(j, false, "out of memory");
		return;
	}
	memcpy(j->received, hdr, n + 1);
	j->receivedlen = n;
	j->attempts = 0;
	if (j->r->hook) {
		int rc = j->r->hook(j->r->hook_arg, j->rec->sha256, j->target_rcpt);
		relay_attempt_json(j, "hook", "", 0, NULL, rc == 0 ? "delivered" : "failed");
		relay_rcpt_done(j, rc == 0, rc == 0 ? "delivered (hook)" : "failed (hook)");
		return;
	}
	relay_route(j);
}

/* Whether the domain (or a parent) is in ipv4_only_domains. */
static bool
relay_domain_listed(const struct relay *r, const char *domain)
{
	const char *w;

	return relay_domain_in_list(r->cfg->relay.ipv4_only_domains,
	    r->cfg->relay.nipv4_only, domain, &w);
}

/* Decide where the current recipient's copy goes: test server, smarthost or MX. */
static void
relay_route(struct relay_job *j)
{
	const struct cfg_relay *rc = &j->r->cfg->relay;
	const char *dom = relay_addr_domain(j->target_rcpt);
	const char *hp = j->r->test_mode ? rc->test_server : rc->smarthost;
	size_t dl = strlen(dom);

	const char *bad;

	j->ipv4_only = relay_domain_listed(j->r, dom);
	j->nmx = j->mx_idx = 0;
	j->named = hp[0] != '\0';
	if (hp[0]) {
		if (cfg_hostport(hp, j->mx[0].host, sizeof(j->mx[0].host), &j->port, 25) == -1) {
			/* Every way a recipient fails is in its outcome, as an attempt. */
			relay_attempt_json(j, hp, "", 0, NULL, "bad smarthost/test server");
			relay_rcpt_done(j, false, "bad smarthost/test server");
			return;
		}
		j->mx[0].pref = 0;
		j->nmx = 1;
		relay_next_mx(j);
		return;
	}
	j->port = rc->mx_port;
	/*
	 * relay_decided refused these already; checked again where the route
	 * is chosen: an address literal or a percent hack never picks a host.
	 */
	if ((bad = rdest_rcpt_refused(j->target_rcpt)) != NULL) {
		char why[200];
		snprintf(why, sizeof(why), "refused: %s", bad);
		relay_attempt_json(j, dom, "", 0, NULL, why);
		relay_rcpt_done(j, false, why);
		return;
	}
	if (dl == 0 || dns_mx_lookup(j->r->dns, dom, relay_mx_cb, j) == -1) {
		relay_attempt_json(j, dom, "", 0, NULL, "bad recipient domain");
		relay_rcpt_done(j, false, "bad recipient domain");
	}
}

/* The MX answer. */
static void
relay_mx_cb(void *arg, enum dns_status st, const struct dns_mx *mx, int n,
    const char *err)
{
	struct relay_job *j = arg;
	char why[400];

	if (st == DNS_CANCELLED)
		return;	/* relay_free is freeing the job */
	if (st != DNS_OK) {
		snprintf(why, sizeof(why), "MX lookup %s: %s", dns_status_name(st), err);
		relay_attempt_json(j, relay_addr_domain(j->target_rcpt), "", 0, NULL, why);
		relay_rcpt_done(j, false, why);
		return;
	}
	memcpy(j->mx, mx, (size_t)n * sizeof(*mx));
	j->nmx = n;
	j->mx_idx = 0;
	relay_next_mx(j);
}

/* Resolve the next MX host (mx_idx), or give up on this recipient. */
static void
relay_next_mx(struct relay_job *j)
{
	const char *bad;
	char why[200];

	for (;;) {
		if (j->mx_idx >= j->nmx || j->attempts >= RELAY_ATTEMPTS_MAX) {
			relay_rcpt_done(j, false, "every MX failed");
			return;
		}
		/* An MX name from DNS must be a host name, not an address or localhost. */
		if (j->named || (bad = rdest_host_refused(j->mx[j->mx_idx].host)) == NULL)
			break;
		snprintf(why, sizeof(why), "refused: %s", bad);
		relay_attempt_json(j, j->mx[j->mx_idx].host, "", j->port, NULL, why);
		j->mx_idx++;
	}
	if (dns_addr_lookup(j->r->dns, j->mx[j->mx_idx].host, j->ipv4_only, relay_addr_cb,
	    j) == -1) {
		relay_attempt_json(j, j->mx[j->mx_idx].host, "", j->port, NULL,
		    "address lookup not started");
		j->mx_idx++;
		relay_next_mx(j);
	}
}

/* The addresses of one MX host. */
static void
relay_addr_cb(void *arg, enum dns_status st, const struct dns_addr *a, int n,
    const char *err)
{
	struct relay_job *j = arg;
	char why[400];

	if (st == DNS_CANCELLED)
		return;
	if (st != DNS_OK || n == 0) {
		snprintf(why, sizeof(why), "address lookup %s: %s", dns_status_name(st), err);
		relay_attempt_json(j, j->mx[j->mx_idx].host, "", j->port, NULL, why);
		j->mx_idx++;
		relay_next_mx(j);
		return;
	}
	memcpy(j->addr, a, (size_t)n * sizeof(*a));
	j->naddr = n;
	j->addr_idx = 0;
	relay_next_addr(j);
}

/* Connect to the next address of the current MX, or move to the next MX. */
static void
relay_next_addr(struct relay_job *j)
{
	const struct cfg_relay *rc = &j->r->cfg->relay;
	struct smtp_client_opts o;
	struct dns_addr *a;

	if (j->addr_idx >= j->naddr || j->attempts >= RELAY_ATTEMPTS_MAX) {
		j->mx_idx++;
		relay_next_mx(j);
		return;
	}
	a = &j->addr[j->addr_idx];
	if (a->ss.ss_family == AF_INET)
		((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)j->port);
	else
		((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)j->port);
	{
		/* The one gate before every outbound connection of the relay. */
		const char *bad = relay_dest_refused(j, (struct sockaddr *)&a->ss, j->port,
		    j->named);
		if (bad != NULL) {
			char why[200];
			snprintf(why, sizeof(why), "refused: %s", bad);
			relay_attempt_json(j, j->mx[j->mx_idx].host, a->text, j->port, NULL, why);
			j->addr_idx++;
			relay_next_addr(j);
			return;
		}
	}
	j->attempts++;
	memset(&o, 0, sizeof(o));
	o.helo = j->r->hostname;
	o.peer_name = j->mx[j->mx_idx].host;
	o.addr = (struct sockaddr *)&a->ss;
	o.addrlen = a->len;
	o.connect_timeout = rc->timeouts.connect;
	o.greeting_timeout = rc->timeouts.greeting;
	o.command_timeout = rc->timeouts.command;
	o.data_timeout = rc->timeouts.data;
	o.attempt_timeout = rc->timeouts.attempt;
	o.ssl_ctx = j->r->ssl_ctx;
	o.mail_from = j->rec->mail_from;
	o.rcpt = j->target_rcpt;
	o.header = (const unsigned char *)j->received;
	o.headerlen = j->receivedlen;
	o.msg = j->msg;
	o.msglen = j->msglen;
	if ((j->client = smtp_client_start(j->r->base, &o, relay_client_cb, j)) == NULL) {
		relay_attempt_json(j, o.peer_name, a->text, j->port, NULL, "cannot connect");
		j->addr_idx++;
		relay_next_addr(j);
	}
}

/*
 * Whether sa is an address of this host now: 1, 0, or -1 when it cannot be
 * told.  A UDP socket "connected" to sa (no packet is sent) gets sa itself
 * as its source address when the kernel would deliver to sa locally.  The
 * interface list read at start misses addresses gained since (DHCP, IPv6
 * temporary addresses, a new interface), and the sandbox allows no netlink
 * socket to read it again.
 */
static int
relay_addr_local(const struct sockaddr *sa)
{
	struct sockaddr_storage src;
	socklen_t len = sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) :
	    sizeof(struct sockaddr_in6), sl = sizeof(src);
	int fd, local = 0;

	if ((fd = socket(sa->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (connect(fd, sa, len) == 0 &&
	    getsockname(fd, (struct sockaddr *)&src, &sl) == 0 &&
	    src.ss_family == sa->sa_family) {
		if (sa->sa_family == AF_INET)
			local = memcmp(&((struct sockaddr_in *)&src)->sin_addr,
			    &((const struct sockaddr_in *)sa)->sin_addr, 4) == 0;
		else
			local = memcmp(&((struct sockaddr_in6 *)&src)->sin6_addr,
			    &((const struct sockaddr_in6 *)sa)->sin6_addr, 16) == 0;
	}
	close(fd);
	return local;
}

/* Whether sa is 0.0.0.0, :: or ::ffff:0.0.0.0. */
static bool
relay_addr_zero(const struct sockaddr *sa)
{
	static const unsigned char zero[16];
	struct sockaddr_in v4;

	if (rdest_embedded_v4(sa, &v4))
		sa = (const struct sockaddr *)&v4;
	if (sa->sa_family == AF_INET)
		return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == 0;
	return sa->sa_family == AF_INET6 &&
	    memcmp(&((const struct sockaddr_in6 *)sa)->sin6_addr, zero, 16) == 0;
}

/* Whether sa is a loopback address (127.0.0.0/8, ::1, mapped or NAT64 127/8). */
static bool
relay_addr_loopback(const struct sockaddr *sa)
{
	static const struct in6_addr lo6 = IN6ADDR_LOOPBACK_INIT;
	struct sockaddr_in v4;

	if (sa->sa_family == AF_INET6 && memcmp(&((const struct sockaddr_in6 *)sa)->sin6_addr,
	    &lo6, sizeof(lo6)) == 0)
		return true;
	if (rdest_embedded_v4(sa, &v4))
		sa = (const struct sockaddr *)&v4;
	return sa->sa_family == AF_INET &&
	    (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
}

/*
 * Why the relay may not connect to sa:port, or NULL.  Never the daemon's
 * own listening socket (a loop), whatever the config, also for the
 * operator's smarthost and test server (named); for an MX delivery, then
 * relay.allow_destinations (tests only) lets its networks through; then
 * only global unicast addresses (relay_dest.c) that are not ours:
 * relay.own_addresses, the address the probe came in on, the listeners'
 * addresses, this host's interface addresses at start and, asked at each
 * connection, whatever the kernel would deliver locally now.
 */
static const char *
relay_dest_refused(const struct relay_job *j, const struct sockaddr *sa, int port,
    bool named)
{
	const struct cfg *cfg = j->r->cfg;
	const char *why;
	struct sockaddr_in v4;
	bool own = false;
	int local;

	for (int i = 0; i < j->nown && !own; i++)
		own = rdest_addr_is(sa, j->own[i]);
	for (int i = 0; i < j->r->nifaddr && !own; i++) {
		char t[64];
		const struct sockaddr *ia = (const struct sockaddr *)&j->r->ifaddr[i];
		if (inet_ntop(ia->sa_family, ia->sa_family == AF_INET ?
		    (const void *)&((const struct sockaddr_in *)ia)->sin_addr :
		    (const void *)&((const struct sockaddr_in6 *)ia)->sin6_addr, t, sizeof(t)))
			own = rdest_addr_is(sa, t);
	}
	/* Asked now: an address this host gained after the start is ours too. */
	if ((local = relay_addr_local(sa)) == 0 && rdest_embedded_v4(sa, &v4))
		local = relay_addr_local((const struct sockaddr *)&v4);
	if (local == 1)
		own = true;
	for (int i = 0; i < cfg->nlisteners; i++) {
		const struct cfg_listener *l = &cfg->listeners[i];
		bool any = rdest_addr_unspecified(l->address);	/* "0::0" too */
		/* connect() to 0.0.0.0 or :: reaches this host: any listener. */
		bool here = relay_addr_zero(sa) || (any ? own || relay_addr_loopback(sa) :
		    rdest_addr_is(sa, l->address));
		if (here && port == l->port + cfg->port_offset)
			return "this daemon's own listener";
		if (here)
			own = true;
	}
	if (named)
		return NULL;	/* the operator's: no other check */
	for (int i = 0; i < j->r->nallow; i++)
		if (rdest_net_match(&j->r->allow[i], sa))
			return NULL;
	if ((why = rdest_addr_forbidden(sa)) != NULL)
		return why;
	if (own)
		return "an address of this honeypot";
	if (local == -1)
		return "cannot tell whether it is an address of this honeypot";
	return NULL;
}

/* One SMTP attempt ended. */
static void
relay_client_cb(void *arg, const struct smtp_client_result *res)
{
	struct relay_job *j = arg;
	struct dns_addr *a = &j->addr[j->addr_idx];

	j->client = NULL;
	relay_attempt_json(j, j->mx[j->mx_idx].host, a->text, j->port, res,
	    smtp_client_status_name(res->status));
	if (res->status == SMTPC_DELIVERED) {
		relay_rcpt_done(j, true, res->reply);
		return;
	}
	if (res->status == SMTPC_PERMFAIL) {
		relay_rcpt_done(j, false, res->reply);
		return;
	}
	j->addr_idx++;
	relay_next_addr(j);
}

/* Record one attempt: an event and an entry of the outcome. */
static void
relay_attempt_json(struct relay_job *j, const char *host, const char *ip, int port,
    const struct smtp_client_result *res, const char *status)
{
	struct jbuf ev;
	struct jbuf *targets[2] = { &ev, &j->outcome };
	const char *kw = status;

	/*
	 * status is a keyword (delivered, tempfail, permfail, failed, refused,
	 * error); the explanation, when there is one, goes to status_text, so
	 * the field keeps one small set of values for indexing.
	 */
	if (res == NULL && strcmp(status, "delivered") != 0 && strcmp(status, "failed") != 0)
		kw = strncmp(status, "refused", 7) == 0 ? "refused" : "error";
	jb_init(&ev);
	relay_event_begin(j, &ev, "fosr.relay.attempt");
	jb_obj_open(&j->outcome);
	for (int k = 0; k < 2; k++) {
		struct jbuf *b = targets[k];
		jb_kcstr(b, "rcpt", j->rec->rcpt[j->rcpt_idx]);
		jb_kcstr(b, "target_rcpt", j->target_rcpt);
		jb_kcstr(b, "relay_queue_id", j->qid);
		jb_kcstr(b, "mx", host);
		if (j->mx_idx < j->nmx)
			jb_kint(b, "preference", j->mx[j->mx_idx].pref);
		jb_kcstr(b, "ip", ip);
		jb_kint(b, "port", port);
		jb_kcstr(b, "status", kw);
		if (kw != status)
			jb_kcstr(b, "status_text", status);
		if (res) {
			jb_kcstr(b, "stage", res->stage);
			jb_kint(b, "code", res->code);
			jb_kcstr(b, "reply", res->reply);
			if (res->error[0])
				jb_kcstr(b, "error", res->error);
			jb_kbool(b, "starttls_offered", res->starttls_offered);
			if (res->tls) {
				/* Absent without TLS: an object or nothing, never null. */
				jb_key(b, "tls");
				jb_obj_open(b);
				jb_kcstr(b, "version", res->tls_version);
				jb_kcstr(b, "cipher", res->tls_cipher);
				jb_kint(b, "bits", res->tls_bits);
				jb_kbool(b, "verified", res->tls_verified);
				jb_kcstr(b, "peer", res->tls_peer);
				jb_obj_close(b);
			}
			if (k == 1)
				jb_kcstr(b, "transcript", res->transcript);
		}
	}
	jb_obj_close(&j->outcome);
	if (res && res->reply[0])
		log_event_message(&ev, "Relay attempt for %s to %s [%s]: %s: %s",
		    j->target_rcpt, host, ip, status, res->reply);
	else
		log_event_message(&ev, "Relay attempt for %s to %s%s%s%s: %s",
		    j->target_rcpt, host, ip[0] ? " [" : "", ip, ip[0] ? "]" : "", status);
	log_event_emit(&ev);
	jb_free(&ev);
	{
		/* The recipient, the MX name and its reply all come from the outside. */
		char erc[300], eho[300], erp[600];

		/* Quoted: a reply is words, a quoted local part may hold blanks. */
		log_info("relay %s attempt rcpt=\"%s\" mx=\"%s\" ip=%s port=%d status=%s%s%s%s",
		    j->rec->sha256,
		    log_escape(erc, sizeof(erc), j->target_rcpt, strlen(j->target_rcpt)),
		    log_escape(eho, sizeof(eho), host, strlen(host)), ip, port, status,
		    res && res->reply[0] ? " reply=\"" : "",
		    res ? log_escape(erp, sizeof(erp), res->reply, strlen(res->reply)) : "",
		    res && res->reply[0] ? "\"" : "");
	}
}

/* The current recipient is done (delivered or given up). */
static void
relay_rcpt_done(struct relay_job *j, bool ok, const char *why)
{
	if (!ok) {
		j->any_failed = true;
		j->delivered_all = false;
	}
	snprintf(j->summary, sizeof(j->summary), "%s", why);
	relay_next_rcpt(j);
}

