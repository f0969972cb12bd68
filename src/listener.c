/*
 * Listening sockets, accept, and the session caps.  Sockets are bound by hand
 * (IPV6_V6ONLY, clear errors for privileged ports), then handed to libevent's
 * evconnlistener.  A per-address count lives in a small chained hash table;
 * an entry exists only while its address has sessions.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "config.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "persona.h"
#include "smtp_session.h"

#define IPTAB_SIZE	4096	/* buckets; chains stay short for any sane session cap */
#define ACCEPT_PAUSE_MS	500	/* after EMFILE/ENFILE */
/* Descriptors kept from sessions (at most 1/4 of the limit); metrics.c keeps them too. */
#define FD_RESERVE	METRICS_FD_RESERVE
#define FD_BASE_SCAN	4096	/* descriptors looked at for the ones open at start */

struct ipent {
	struct ipent	*next;
	unsigned char	 addr[16];
	unsigned	 count;
};

struct lsock {
	struct listeners	*ls;
	const struct cfg_listener *cl;
	int			 port;
	struct evconnlistener	*evl;
};

struct listeners {
	struct smtp_server	*srv;
	struct lsock		 socks[CFG_LISTENERS_MAX];
	int			 n;
	struct ipent		*iptab[IPTAB_SIZE];
	struct event		*pause_ev;
	char			 desc[1024];
	long			 fd_limit;	/* RLIMIT_NOFILE; 0 = not known */
	long			 fd_reserve;
	long			 fd_base;	/* open when accepting started */
	bool			 fd_short;	/* refusing for descriptors (logged) */
	/* Conditions a flood repeats at will: logged once per series (log.h). */
	struct log_series	 accept_err;	/* accept(2) out of descriptors */
	struct log_series	 fd_refuse;	/* refused for the descriptor reserve */
	struct log_series	 perip;		/* refused for sessions_per_ip */
};

static void	 accept_cb(struct evconnlistener *, evutil_socket_t, struct sockaddr *, int, void *);
static void	 accept_error_cb(struct evconnlistener *, void *);
static void	 resume_cb(evutil_socket_t, short, void *);
static void	 session_closed_cb(void *, const struct sockaddr *);
static void	 addr_key(const struct sockaddr *, unsigned char key[16]);
static struct ipent **iptab_slot(struct listeners *, const unsigned char key[16]);

/* Bind one socket for cl; -1 with err filled and errno kept. */
static int
bind_one(const struct cfg_listener *cl, int port, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	int fd, on = 1;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, cl->address, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		((struct sockaddr_in *)&ss)->sin_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
		sslen = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, cl->address,
	    &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
		sslen = sizeof(struct sockaddr_in6);
	} else {
		snprintf(err, errlen, "listener %s: \"%s\" is not a numeric IPv4 or IPv6 address",
		    cl->name, cl->address);
		return -1;
	}
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1) {
		int e = errno;

		snprintf(err, errlen, "listener %s: socket: %s", cl->name, strerror(e));
		errno = e;
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, (struct sockaddr *)&ss, sslen) == -1) {
		int e = errno;
		if (e == EACCES && port < 1024)
			snprintf(err, errlen, "cannot bind %s port %d (listener %s): %s: "
			    "ports below 1024 need root or CAP_NET_BIND_SERVICE "
			    "(run as root, or `setcap cap_net_bind_service=+ep fosr-collector`, "
			    "or set port_offset / listener ports >= 1024 in the config)",
			    cl->address, port, cl->name, strerror(e));
		else
			snprintf(err, errlen, "cannot bind %s port %d (listener %s): %s",
			    cl->address, port, cl->name, strerror(e));
		close(fd);
		errno = e;
		return -1;
	}
	/*
	 * A deep accept queue: a bot farm opens thousands of connections at
	 * once, and a SYN dropped by a full queue costs the client a 1 s (then
	 * 3 s, ...) retransmission.  The kernel caps it at net.core.somaxconn.
	 */
	if (listen(fd, 65535) == -1) {
		snprintf(err, errlen, "listener %s: listen: %s", cl->name, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

struct listeners *
listener_bind(struct smtp_server *srv, char *err, size_t errlen)
{
	const struct cfg *cfg = smtp_server_cfg(srv);
	struct listeners *ls;
	size_t off = 0;
	int i;

	if ((ls = calloc(1, sizeof(*ls))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ls->srv = srv;
	smtp_server_set_on_close(srv, session_closed_cb, ls);
	for (i = 0; i < cfg->nlisteners; i++) {
		const struct cfg_listener *cl = &cfg->listeners[i];
		struct lsock *l = &ls->socks[ls->n];
		int port = cl->port + cfg->port_offset, fd;

		if ((fd = bind_one(cl, port, err, errlen)) == -1) {
			/*
			 * A default [::] listener on a host without IPv6 (no
			 * IPv6 in the kernel, or disabled): IPv4 only, as
			 * Postfix with inet_protocols = all does.
			 */
			if (cl->if_available && (errno == EAFNOSUPPORT ||
			    errno == EADDRNOTAVAIL || errno == EPROTONOSUPPORT)) {
				log_info("%s; no IPv6 on this host: IPv4 only", err);
				continue;
			}
			goto fail;
		}
		l->ls = ls;
		l->cl = cl;
		l->port = port;
		/* backlog 0: already listening (-1 would listen() again with 128) */
		l->evl = evconnlistener_new(smtp_server_base(srv), accept_cb, l,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_DISABLED, 0, fd);
		if (l->evl == NULL) {
			close(fd);
			snprintf(err, errlen, "listener %s: evconnlistener_new failed", cl->name);
			goto fail;
		}
		evconnlistener_set_error_cb(l->evl, accept_error_cb);
		ls->n++;
		off += (size_t)snprintf(ls->desc + off, off < sizeof(ls->desc) ? sizeof(ls->desc) - off : 0,
		    "%s%s %s%s%s:%d %s", ls->n > 1 ? ", " : "", cl->name,
		    strchr(cl->address, ':') ? "[" : "", cl->address,
		    strchr(cl->address, ':') ? "]" : "", port, cfg_tls_mode_name(cl->tls));
		if (off >= sizeof(ls->desc))
			off = sizeof(ls->desc) - 1;
	}
	if ((ls->pause_ev = evtimer_new(smtp_server_base(srv), resume_cb, ls)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	return ls;
fail:
	listener_free(ls);
	return NULL;
}

/*
 * The descriptor budget: RLIMIT_NOFILE, what was open when accepting started
 * (listeners, logs, the spool, the event loop) and the reserve kept for the
 * daemon's own work (see accept_cb).
 */
static void
fd_budget(struct listeners *ls)
{
	struct rlimit rl;
	long fd, scan;

	if (ls->fd_limit != 0 || getrlimit(RLIMIT_NOFILE, &rl) == -1 ||
	    rl.rlim_cur == RLIM_INFINITY)
		return;
	ls->fd_limit = rl.rlim_cur > (rlim_t)LONG_MAX / 2 ? LONG_MAX / 2 : (long)rl.rlim_cur;
	ls->fd_reserve = ls->fd_limit / 4 < FD_RESERVE ? ls->fd_limit / 4 : FD_RESERVE;
	scan = ls->fd_limit < FD_BASE_SCAN ? ls->fd_limit : FD_BASE_SCAN;
	for (fd = 0; fd < scan; fd++)
		if (fcntl((int)fd, F_GETFD) != -1)
			ls->fd_base++;
}

void
listener_enable(struct listeners *ls)
{
	fd_budget(ls);
	for (int i = 0; i < ls->n; i++)
		evconnlistener_enable(ls->socks[i].evl);
}

void
listener_disable(struct listeners *ls)
{
	for (int i = 0; i < ls->n; i++)
		evconnlistener_disable(ls->socks[i].evl);
	if (ls->pause_ev)
		evtimer_del(ls->pause_ev);
}

void
listener_free(struct listeners *ls)
{
	if (ls == NULL)
		return;
	for (int i = 0; i < ls->n; i++)
		evconnlistener_free(ls->socks[i].evl);
	for (int i = 0; i < IPTAB_SIZE; i++) {
		struct ipent *e = ls->iptab[i], *n;
		for (; e; e = n) {
			n = e->next;
			free(e);
		}
	}
	if (ls->pause_ev)
		event_free(ls->pause_ev);
	if (smtp_server_on_close_is(ls->srv, ls)) {
		smtp_server_set_on_close(ls->srv, NULL, NULL);
	}
	free(ls);
}

const char *
listener_describe(const struct listeners *ls)
{
	return ls->desc;
}

/* The 16-byte table key of a peer: IPv6, or IPv4 mapped into IPv6. */
static void
addr_key(const struct sockaddr *sa, unsigned char key[16])
{
	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6)
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
}

/* The chain slot where key is, or where it would be inserted. */
static struct ipent **
iptab_slot(struct listeners *ls, const unsigned char key[16])
{
	uint32_t h = 2166136261u;
	struct ipent **pp;

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;
	for (pp = &ls->iptab[h % IPTAB_SIZE]; *pp; pp = &(*pp)->next)
		if (memcmp((*pp)->addr, key, 16) == 0)
			break;
	return pp;
}

/*
 * Refuse a connection with the persona's 421 and close it, at once (the
 * daemon is at its cap: no lookup, no handshake).  On an implicit TLS
 * listener nothing is sent: a reply in clear there is like no server
 * (Postfix leaves such a client waiting in the listen queue).
 */
static void
refuse(struct listeners *ls, const struct lsock *l, int fd, enum persona_reply id,
    const char *ip, const char *why)
{
	struct smtp_server *srv = ls->srv;
	struct persona_vars v;
	char line[512];
	size_t n;
	struct jbuf jb;

	memset(&v, 0, sizeof(v));
	v.host = smtp_server_hostname(srv);
	v.addr = ip;
	n = persona_format(line, sizeof(line) - 2, smtp_server_persona(srv)->replies[id], &v);
	memcpy(line + n, "\r\n", 2);
	/* Best effort on a fresh socket: the send buffer is empty. */
	if (l->cl->tls != TLS_MODE_IMPLICIT)
		(void)!send(fd, line, n + 2, MSG_DONTWAIT | MSG_NOSIGNAL);
	close(fd);
	jb_init(&jb);
	log_event_begin(&jb, "fosr.session.refused", NULL);
	jb_kcstr(&jb, "src_ip", ip);
	jb_kcstr(&jb, "reason", why);
	log_event_message(&jb, "Connection refused: %s (%s)", ip, why);
	log_event_emit(&jb);
	jb_free(&jb);
}

/* A new connection: check the caps, then start a session. */
static void
accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct lsock *l = arg;
	struct listeners *ls = l->ls;
	struct smtp_server *srv = ls->srv;
	const struct cfg_limits *lim = &smtp_server_cfg(srv)->limits;
	unsigned char key[16];
	struct ipent **pp, *e;
	char ip[INET6_ADDRSTRLEN] = "?";

	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
	else if (sa->sa_family == AF_INET6 &&
	    IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)sa)->sin6_addr))
		/* as the session writes it: 192.0.2.1, not ::ffff:192.0.2.1 */
		inet_ntop(AF_INET, &((struct sockaddr_in6 *)sa)->sin6_addr.s6_addr[12], ip,
		    sizeof(ip));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof(ip));

	if (smtp_server_stopping(srv)) {
		close(fd);
		return;
	}
	log_series_end(&ls->accept_err, LOG_LVL_INFO, "smtp accepting again");
	metrics_inc(M_CONNECTS, l->cl->name, NULL);
	if (lim->sessions > 0 && smtp_server_sessions(srv) - smtp_server_refusing(srv) >=
	    (unsigned)lim->sessions) {
		refuse(ls, l, fd, PR_TOO_MANY_SESSIONS, ip, "sessions");
		return;
	}
	/*
	 * Keep descriptors for the daemon's own work: the feed reading a backlog
	 * of .eml files, the spool's commits, the relay, DNS.  A session is
	 * refused before the outputs starve (Postfix and Redis keep such a
	 * margin).  fd is the lowest free descriptor, so every one below it is
	 * in use; sessions opened since start are counted too (a closed
	 * session's hole hides the ones above it).
	 */
	if (ls->fd_limit > 0 && ((long)fd >= ls->fd_limit - ls->fd_reserve ||
	    (long)smtp_server_sessions(srv) + ls->fd_base >= ls->fd_limit - ls->fd_reserve)) {
		/* Every refusal counts; a flapping cap stays a few lines a minute. */
		log_series(&ls->fd_refuse, LOG_LVL_WARN, "smtp refusing sessions: %u open, "
		    "%ld descriptors allowed, %ld kept for the spool and the outputs "
		    "(raise LimitNOFILE)", smtp_server_sessions(srv), ls->fd_limit,
		    ls->fd_reserve);
		ls->fd_short = true;
		refuse(ls, l, fd, PR_TOO_MANY_SESSIONS, ip, "descriptors");
		return;
	}
	if (ls->fd_short && (long)smtp_server_sessions(srv) + ls->fd_base <
	    ls->fd_limit - 2 * ls->fd_reserve) {
		log_series_end(&ls->fd_refuse, LOG_LVL_INFO, "smtp accepting sessions again: "
		    "%u open", smtp_server_sessions(srv));
		ls->fd_short = false;
	}
	addr_key(sa, key);
	pp = iptab_slot(ls, key);
	if (*pp && lim->sessions_per_ip > 0 && (*pp)->count >= (unsigned)lim->sessions_per_ip) {
		/* Each refused session has its own lines and event; this one is the condition's. */
		log_series(&ls->perip, LOG_LVL_INFO, "smtp refused address=%s: %u sessions "
		    "from it", ip, (*pp)->count);
		/*
		 * Postfix's anvil check comes after the client lookup and the
		 * wrapper-mode handshake: a session that only says the 421
		 * (not counted per address nor in limits.sessions: a flood
		 * from one address must not take the others' places), at
		 * most SMTP_REFUSING_MAX at once, else at once as above.
		 */
		if (smtp_server_refusing(srv) >= SMTP_REFUSING_MAX) {
			refuse(ls, l, fd, PR_TOO_MANY_CONN, ip, "sessions_per_ip");
			return;
		}
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
		(void)smtp_session_refuse(srv, l->cl, l->port, fd, sa, (socklen_t)salen,
		    PR_TOO_MANY_CONN, "sessions_per_ip");
		return;
	}
	if (*pp == NULL) {
		if ((e = calloc(1, sizeof(*e))) == NULL) {
			close(fd);
			return;
		}
		memcpy(e->addr, key, 16);
		*pp = e;
	}
	(*pp)->count++;
	/*
	 * Replies are written whole: Nagle would hold the banner behind a TLS 1.3
	 * session ticket until the client's delayed ACK (40 ms a handshake).
	 */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	if (smtp_session_new(srv, l->cl, l->port, fd, sa, (socklen_t)salen) == NULL)
		session_closed_cb(ls, sa);	/* fd already closed */
}

/* A session ended: drop its address's count. */
static void
session_closed_cb(void *arg, const struct sockaddr *sa)
{
	struct listeners *ls = arg;
	unsigned char key[16];
	struct ipent **pp, *e;

	addr_key(sa, key);
	pp = iptab_slot(ls, key);
	if ((e = *pp) == NULL)
		return;
	if (--e->count == 0) {
		*pp = e->next;
		free(e);
	}
}

/* accept(2) failed: out of descriptors.  Pause accepting instead of spinning. */
static void
accept_error_cb(struct evconnlistener *evl, void *arg)
{
	struct lsock *l = arg;
	struct timeval tv = { 0, ACCEPT_PAUSE_MS * 1000 };
	int e = EVUTIL_SOCKET_ERROR();

	if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
		/* Again every pause while a flood lasts: once per series, with a count. */
		log_series(&l->ls->accept_err, LOG_LVL_WARN, "smtp accept on %s: %s: pausing "
		    "listeners for %d ms", l->cl->name, strerror(e), ACCEPT_PAUSE_MS);
		for (int i = 0; i < l->ls->n; i++)
			evconnlistener_disable(l->ls->socks[i].evl);
		evtimer_add(l->ls->pause_ev, &tv);
	}
}

/* Resume accepting after a pause. */
static void
resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listeners *ls = arg;

	if (!smtp_server_stopping(ls->srv))
		listener_enable(ls);
}
