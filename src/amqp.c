/*
 * AMQP 0-9-1 publisher (see amqp.h).
 *
 * One thread owns the connection (librabbitmq, blocking calls bounded by the
 * configured timeout), the outbox and its cursor.  Its loop:
 *   down: connect, login, channel 1, exchange.declare (durable), confirm.select,
 *         rewind the window; on failure wait the backoff (1 s .. 60 s)
 *   up:   publish journal entries while the window has room (delivery tag =
 *         the channel's publish count), then wait for the broker's frames or
 *         a kick (poll on the socket and an eventfd): basic.ack confirms
 *         entries (the cursor moves over the confirmed prefix), basic.nack
 *         and basic.return mark them failed: once nothing is in flight the
 *         window is rewound and reading starts again at the cursor after a
 *         backoff.
 * The loop's thread only writes the eventfd and the journal limit (mutex).
 *
 * librabbitmq sends a publish with no deadline (it polls its socket with no
 * timeout): a broker that stops reading (RabbitMQ under a memory or disk
 * alarm) would hold the thread, its `stop' and the no-confirm check for
 * ever.  So every call that may wait on the broker is an "operation" the
 * thread declares (amq_op_begin/end, under mu), and a watchdog outside the
 * thread (the loop's tick; amq_free while it waits for the thread) cuts its
 * socket (shutdown: the call fails at once) when nothing was sent or
 * received for the timeout, or at once when stopping.  A cut connection is
 * dropped, its window published again later: nothing is confirmed that the
 * broker did not confirm.
 *
 * A broker given by name is looked up by the thread with c-ares (dns.c) on
 * an event base of its own, run only during the lookup: bounded by the
 * timeout, ended at once by a stop (the eventfd), and working in a chroot
 * (the channel is made before it, amq_prepare).  librabbitmq's own lookup
 * (a blocking getaddrinfo no watchdog can cut: there is no socket yet) only
 * ever sees the address.  With TLS the certificate is checked against the
 * configured name, and the name is the SNI (amq_ssl_info_cb).
 */
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/tcp.h>		/* struct tcp_info with the byte counters */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include "amqp.h"
#include "config.h"
#include "dns.h"
#include "hpfeeds_wire.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "spool.h"
#include "yaml_util.h"

#define AMQ_WIN			256		/* window entries (skipped ones included) */
#define AMQ_READ_LIMIT		(32u << 20)	/* .eml bytes read per mail */
#define AMQ_PAYLOAD_LIMIT	(64u << 20)	/* payload bound (RabbitMQ: 128 MiB) */
#define AMQ_FRAME_MAX		131072
#define AMQ_BACKOFF_MIN_MS	1000
#define AMQ_BACKOFF_MAX_MS	60000
#define AMQ_REPEAT_MS		600000		/* the same warning again after this */
#define AMQ_STALL_MS		120000		/* no confirm for this long: reconnect */
#define AMQ_CLOSE_MS		2000		/* at stop: a graceful close's bound */
#define AMQ_CHANNEL		1
#define AMQ_PCHANNEL		2		/* the parsed documents' (amq_parsed_*) */

/* What the thread keeps with each window entry until its confirm. */
struct amq_entry {
	uint64_t	 tag;		/* delivery tag; 0 = not published */
	bool		 done;		/* acked or nacked */
	bool		 returned;	/* basic.return seen: its ack is a failure */
	char		 sha[65];
};

struct amq {
	struct cfg_amqp	 cfg;
	char		 spool_dir[PATH_MAX];
	char		 sensor[CFG_NAME_MAX];
	char		 who[CFG_NAME_MAX + 16];	/* "host:port" for messages */
	char		 curname[2 * CFG_NAME_MAX + 8];	/* the cursor's: the metrics' channel */
	const struct persona *persona;	/* raw payloads: the Received header's shape */
	char		 hostname[CFG_NAME_MAX];

	pthread_t	 thr;
	bool		 started;
	atomic_bool	 stop;
	int		 evfd;		/* kicks the thread */

	/* The loop's side. */
	struct event	*ev_tick;
	amq_limit_fn	 lim_fn;
	void		*lim_arg;

	/* Shared, under mu. */
	pthread_mutex_t	 mu;
	bool		 lim_set;
	uint64_t	 lim_ino, lim_len;
	struct amq_stats stats;

	/*
	 * The operation in progress (under mu): the thread sets and clears
	 * it, the watchdog reads it and may shut the socket down (op_cut).
	 * The thread closes the socket only with no operation set.
	 */
	int		 op_fd;		/* -1: none */
	const char	*op_what;
	uint64_t	 op_bytes;	/* bytes sent and received at op_mark_ms */
	uint64_t	 op_mark_ms;	/* the last progress seen */
	bool		 op_closing;	/* the graceful close at stop: let it run */
	bool		 op_cut;
	/*
	 * The thread's: a dup of the socket while librabbitmq's open runs the
	 * TLS handshake (amq_ssl_info_cb), watched as an operation; ours, so
	 * the watchdog never shuts down a descriptor open() closed and the
	 * process reused.  -1: none.
	 */
	int		 hs_fd;
	bool		 hs_open;	/* the thread's: inside librabbitmq's open */

	/* The thread's. */
	struct outbox	*ob;
	struct outbox_cursor *cur;
	amqp_connection_state_t conn;
	bool		 up;
	uint64_t	 next_tag;
	size_t		 unacked;
	bool		 failing;	/* a nack or return: drain, then rewind */
	bool		 blocked;	/* connection.blocked: publish nothing */
	bool		 stalled;	/* a series of stalled connections */
	int		 backoff_ms;
	uint64_t	 next_try_ms;
	int		 retry_ms;
	uint64_t	 hold_until_ms;
	uint64_t	 last_confirm_ms;
	char		 lastmsg[512];
	uint64_t	 lastmsg_ms;
	unsigned	 repeats;
	struct jbuf	 pl;
	struct outbox_message msg;

	struct amq_parsed *pd;		/* parsed_routing_key: NULL = off */

	/* host a name: its resolver (amq_prepare), run by the thread only */
	struct event_base *dbase;
	struct dns	*dns;
	struct event	*ev_wake;	/* the eventfd: a stop ends the lookup */
	struct event	*ev_dns_to;	/* the lookup's deadline */

	/* tls: the CA file's bytes, read at start (before a chroot, never again) */
	char		 ca_path[PATH_MAX];
	char		*ca_pem;
	size_t		 ca_len;
};

/*
 * A lookup of the broker's name.  One the thread gave up (timeout, stop) is
 * abandoned: its callback frees it when c-ares ends it (its own tries, or
 * the dns_free() of amq_free).
 */
struct amq_lookup {
	bool		 done, abandoned;
	enum dns_status	 st;
	int		 n;
	struct dns_addr	 addr[DNS_ADDR_MAX];
	char		 err[320];
};

/* The resolver amq_prepare made (before a chroot) for amq_new to take. */
static struct event_base *amq_g_dbase;
static struct dns	*amq_g_dns;

static uint64_t	 amq_now_ms(void);
static void	*amq_main(void *);
static void	 amq_warn(struct amq *, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));
static int	 amq_connect(struct amq *);
static int	 amq_resolve(struct amq *, struct dns_addr *, int *);
static void	 amq_lookup_cb(void *, enum dns_status, const struct dns_addr *, int,
		    const char *);
static void	 amq_wake_cb(evutil_socket_t, short, void *);
static void	 amq_dns_to_cb(evutil_socket_t, short, void *);
static void	 amq_ssl_info_cb(const SSL *, int, int);
static int	 amq_op_begin_fd(struct amq *, int, const char *);
static bool	 amq_is_ip(const char *);
static int	 amq_connect_rest(struct amq *, amqp_rpc_reply_t, const char *user,
		    char *what, size_t whatlen);
static void	 amq_drop(struct amq *, bool graceful);
static int	 amq_reply_ok(struct amq *, amqp_rpc_reply_t, const char *what);
static void	 amq_pump(struct amq *);
static int	 amq_build(struct amq *, const struct outbox_line *, const char **ctype);
static void	 amq_backlog_update(struct amq *);
static void	 amq_metrics_cb(void *);
static int	 amq_frames(struct amq *, int timeout_ms);
static int	 amq_frame(struct amq *, const amqp_frame_t *);
static void	 amq_confirm(struct amq *, uint64_t tag, bool multiple, bool ok);
static void	 amq_on_return(struct amq *, const amqp_basic_return_t *);
static void	 amq_hold(void *, const char *);
static void	 amq_lost(void *);
static void	 amq_limit_cb(void *, uint64_t *, uint64_t *);
static void	 amq_tick_cb(evutil_socket_t, short, void *);
static void	 amq_limit_update(struct amq *);
static int	 amq_parsed_new(struct amq *, char *err, size_t errlen);
static void	 amq_parsed_free(struct amq *);
static void	 amq_parsed_tick(struct amq *, uint64_t now);
static int	 amq_parsed_open(struct amq *);
static void	 amq_parsed_reset(struct amq *);
static void	 amq_parsed_pump(struct amq *);
static void	 amq_parsed_after(struct amq *);
static int	 amq_parsed_frame(struct amq *, const amqp_frame_t *);
static int	 amq_op_begin(struct amq *, const char *what);
static bool	 amq_op_end(struct amq *);
static void	 amq_watch(struct amq *);
static void	 amq_stalled(struct amq *, const char *what);
static void	 amq_stalled_warn(struct amq *, const char *what);

/* ----------------------------------------------------------- pure helpers */

int
amq_backoff_next(int ms)
{
	if (ms < AMQ_BACKOFF_MIN_MS)
		return AMQ_BACKOFF_MIN_MS;
	return ms >= AMQ_BACKOFF_MAX_MS / 2 ? AMQ_BACKOFF_MAX_MS : ms * 2;
}

int
amq_cursor_name(char *out, size_t outlen, const char *exchange, const char *routing_key)
{
	int n = snprintf(out, outlen, "amqp:%s/%s", exchange, routing_key);

	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

static uint64_t
amq_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * A warning of a failure series: the same text again is logged once per
 * AMQ_REPEAT_MS with the count of repeats in between (wrong credentials
 * retried for hours stay a handful of lines), debug otherwise.
 */
static void
amq_warn(struct amq *a, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	uint64_t now = amq_now_ms();

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (strcmp(buf, a->lastmsg) == 0 && now - a->lastmsg_ms < AMQ_REPEAT_MS) {
		a->repeats++;
		log_debug("%s", buf);
		return;
	}
	if (strcmp(buf, a->lastmsg) == 0 && a->repeats > 0)
		log_warn("%s (%u times more since it was last logged)", buf, a->repeats);
	else
		log_warn("%s", buf);
	snprintf(a->lastmsg, sizeof(a->lastmsg), "%s", buf);
	a->lastmsg_ms = now;
	a->repeats = 0;
}

/* ------------------------------------------------------------ the loop's side */

/*
 * The broker name's resolver, before the chroot: c-ares reads resolv.conf
 * and keys its query IDs from /dev/urandom when its channel is made (in a
 * chroot: neither).  A try waits a quarter of the timeout, 5 s at most, so
 * that c-ares' two tries end before the lookup's bound (its answer, not
 * the bound, says why).  Nothing for an address.
 */
int
amq_prepare(const struct cfg_amqp *cfg, char *err, size_t errlen)
{
	int try_ms;

	if (!cfg->enabled || amq_is_ip(cfg->host) || amq_g_dns != NULL)
		return 0;
	try_ms = cfg->timeout * 1000 / 4;
	if (try_ms > 5000)
		try_ms = 5000;
	if ((amq_g_dbase = event_base_new()) == NULL) {
		snprintf(err, errlen, "cannot create the resolver's event base");
		return -1;
	}
	if ((amq_g_dns = dns_new(amq_g_dbase, cfg->dns_server, try_ms, err,
	    errlen)) == NULL) {
		event_base_free(amq_g_dbase);
		amq_g_dbase = NULL;
		return -1;
	}
	return 0;
}

struct amq *
amq_new(struct event_base *base, const struct cfg_amqp *cfg, const char *spool_dir,
    const char *sensor, const struct persona *persona, const char *hostname,
    amq_limit_fn fn, void *fn_arg, char *err, size_t errlen)
{
	struct amq *a;
	struct outbox_opts o;
	char dir[PATH_MAX + 8], path[PATH_MAX + 32];
	struct timeval tv = { 1, 0 };

	if (cfg->payload == CFG_PAYLOAD_RAW && cfg->received_header &&
	    (persona == NULL || hostname == NULL || hostname[0] == '\0')) {
		snprintf(err, errlen, "amqp: payload raw with received_header needs "
		    "the persona and host name");
		return NULL;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		snprintf(err, errlen, "amqp: out of memory");
		return NULL;
	}
	a->cfg = *cfg;
	a->evfd = -1;
	a->op_fd = -1;
	a->hs_fd = -1;
	pthread_mutex_init(&a->mu, NULL);
	atomic_init(&a->stop, false);
	snprintf(a->spool_dir, sizeof(a->spool_dir), "%s", spool_dir);
	snprintf(a->sensor, sizeof(a->sensor), "%s", sensor != NULL ? sensor : "");
	snprintf(a->who, sizeof(a->who), "%s:%d", cfg->host, cfg->port);
	a->persona = persona;
	snprintf(a->hostname, sizeof(a->hostname), "%s", hostname != NULL ? hostname : "");
	a->backoff_ms = AMQ_BACKOFF_MIN_MS;
	a->retry_ms = AMQ_BACKOFF_MIN_MS;
	jb_init(&a->pl);

	(void)spool_path_dir(dir, sizeof(dir), spool_dir, SPOOL_DIR_FEED);
	(void)spool_path_journal(path, sizeof(path), spool_dir);
	memset(&o, 0, sizeof(o));
	o.who = "amqp";
	o.path = path;
	o.kind = OUTBOX_JOURNAL;
	o.cursor_dir = dir;
	o.spool_dir = a->spool_dir;
	o.hold = amq_hold;
	o.lost = amq_lost;
	o.arg = a;
	if ((a->ob = outbox_new(&o, err, errlen)) == NULL)
		goto fail;
	if (amq_cursor_name(a->curname, sizeof(a->curname), cfg->exchange,
	    cfg->routing_key) == -1) {
		snprintf(err, errlen, "amqp: exchange and routing key too long");
		goto fail;
	}
	if ((a->cur = outbox_cursor_open(a->ob, a->curname, sizeof(struct amq_entry), err,
	    errlen)) == NULL)
		goto fail;
	outbox_start(a->ob);
	if (cfg->parsed && amq_parsed_new(a, err, errlen) == -1)
		goto fail;
	if (cfg->tls) {
		/*
		 * The CAs are read now, as the daemon's other files: later the
		 * process may be chrooted and without the right to read them.
		 */
		snprintf(a->ca_path, sizeof(a->ca_path), "%s", cfg->ca_file[0] != '\0' ?
		    cfg->ca_file : X509_get_default_cert_file());
		if (yu_read_file(a->ca_path, &a->ca_pem, &a->ca_len, err, errlen) == -1) {
			if (cfg->ca_file[0] != '\0')
				goto fail;
			/*
			 * No system bundle (a minimal root has no ca-certificates):
			 * capture goes on, the broker cannot be verified, so every
			 * connection is refused (and logged) until ca_file names one.
			 */
			log_warn("amqp: %s; TLS to the broker cannot be verified: set "
			    "amqp.ca_file", err);
			err[0] = '\0';
		}
	}
	a->lim_fn = fn;
	a->lim_arg = fn_arg;
	if (fn != NULL) {
		amq_limit_update(a);
		outbox_set_limit(a->ob, amq_limit_cb, a);
	}
	if ((a->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		snprintf(err, errlen, "amqp: eventfd: %s", strerror(errno));
		goto fail;
	}
	if (!amq_is_ip(cfg->host)) {
		/* Made before a chroot by amq_prepare(); now when it was not called. */
		if (amq_prepare(cfg, err, errlen) == -1)
			goto fail;
		a->dbase = amq_g_dbase;
		a->dns = amq_g_dns;
		amq_g_dbase = NULL;
		amq_g_dns = NULL;
		if ((a->ev_wake = event_new(a->dbase, a->evfd, EV_READ | EV_PERSIST,
		    amq_wake_cb, a)) == NULL || event_add(a->ev_wake, NULL) == -1 ||
		    (a->ev_dns_to = evtimer_new(a->dbase, amq_dns_to_cb, a)) == NULL) {
			snprintf(err, errlen, "amqp: cannot create events");
			goto fail;
		}
	}
	if ((a->ev_tick = event_new(base, -1, EV_PERSIST, amq_tick_cb, a)) == NULL ||
	    event_add(a->ev_tick, &tv) == -1) {
		snprintf(err, errlen, "amqp: cannot create events");
		goto fail;
	}
	amq_backlog_update(a);	/* before the thread: the scrape's first answer */
	if (pthread_create(&a->thr, NULL, amq_main, a) != 0) {
		snprintf(err, errlen, "amqp: cannot start the publisher thread");
		goto fail;
	}
	a->started = true;
	(void)metrics_on_scrape(amq_metrics_cb, a);
	return a;
fail:
	amq_free(a);
	return NULL;
}

/* Hand the thread the journal's committed length (the loop's thread). */
static void
amq_limit_update(struct amq *a)
{
	uint64_t ino, len;

	if (a->lim_fn == NULL)
		return;
	a->lim_fn(a->lim_arg, &ino, &len);
	pthread_mutex_lock(&a->mu);
	a->lim_ino = ino;
	a->lim_len = len;
	a->lim_set = true;
	pthread_mutex_unlock(&a->mu);
}

/* The outbox asks (the thread): the last length the loop handed over. */
static void
amq_limit_cb(void *arg, uint64_t *ino, uint64_t *len)
{
	struct amq *a = arg;

	pthread_mutex_lock(&a->mu);
	*ino = a->lim_ino;
	*len = a->lim_set ? a->lim_len : 0;
	pthread_mutex_unlock(&a->mu);
}

void
amq_kick(struct amq *a)
{
	uint64_t one = 1;

	if (a == NULL)
		return;
	amq_limit_update(a);
	if (write(a->evfd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		log_debug("amqp: kick: %s", strerror(errno));
}

/* Once a second: a rotation or a cut moves the limit without a mail. */
static void
amq_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	amq_watch(arg);
	amq_kick(arg);
}

/* Bytes sent (acknowledged by the peer) and received on fd: its progress. */
static uint64_t
amq_sock_bytes(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1)
		return 0;	/* no counters: the deadline runs from the start */
	return ti.tcpi_bytes_acked + ti.tcpi_bytes_received;
}

/*
 * The thread is about to call librabbitmq on the connection.  -1 when
 * stopping (and not the graceful close): the call must not start, as the
 * watchdog could be past its last look.
 */
static int
amq_op_begin(struct amq *a, const char *what)
{
	return amq_op_begin_fd(a, amqp_get_sockfd(a->conn), what);
}

/* The same on the socket fd (the TLS handshake's: a dup). */
static int
amq_op_begin_fd(struct amq *a, int fd, const char *what)
{
	pthread_mutex_lock(&a->mu);
	if (atomic_load(&a->stop) && !a->op_closing) {
		pthread_mutex_unlock(&a->mu);
		return -1;
	}
	a->op_fd = fd;
	a->op_what = what;
	a->op_bytes = fd >= 0 ? amq_sock_bytes(fd) : 0;
	a->op_mark_ms = amq_now_ms();
	a->op_cut = false;
	pthread_mutex_unlock(&a->mu);
	return 0;
}

/* The call returned.  Whether the watchdog cut it. */
static bool
amq_op_end(struct amq *a)
{
	bool cut;

	pthread_mutex_lock(&a->mu);
	a->op_fd = -1;
	cut = a->op_cut;
	a->op_cut = false;
	pthread_mutex_unlock(&a->mu);
	return cut;
}

/*
 * The watchdog (not the thread): an operation with no byte sent or received
 * for the timeout (AMQ_CLOSE_MS for the close at stop; at once for anything
 * else at stop) has its socket shut down, so the call returns an error.
 */
static void
amq_watch(struct amq *a)
{
	uint64_t now = amq_now_ms(), b, limit;

	pthread_mutex_lock(&a->mu);
	if (a->op_fd >= 0 && !a->op_cut) {
		if ((b = amq_sock_bytes(a->op_fd)) != a->op_bytes) {
			a->op_bytes = b;
			a->op_mark_ms = now;
		}
		if (atomic_load(&a->stop))
			limit = a->op_closing ? AMQ_CLOSE_MS : 0;
		else
			limit = (uint64_t)a->cfg.timeout * 1000;
		if (now - a->op_mark_ms >= limit) {
			(void)shutdown(a->op_fd, SHUT_RDWR);
			a->op_cut = true;
		}
	}
	pthread_mutex_unlock(&a->mu);
}

void
amq_free(struct amq *a)
{
	uint64_t one = 1;

	if (a == NULL)
		return;
	metrics_off_scrape(amq_metrics_cb, a);
	if (a->started) {
		struct timespec ts;

		pthread_mutex_lock(&a->mu);
		atomic_store(&a->stop, true);
		pthread_mutex_unlock(&a->mu);
		if (write(a->evfd, &one, sizeof(one)) == -1)
			log_debug("amqp: stop: %s", strerror(errno));
		/* A call blocked on the broker is cut: the thread ends promptly. */
		for (;;) {
			amq_watch(a);
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 100 * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			if (pthread_timedjoin_np(a->thr, NULL, &ts) != ETIMEDOUT)
				break;
		}
	}
	if (a->ev_tick != NULL)
		event_free(a->ev_tick);
	dns_free(a->dns);	/* the abandoned lookups' callbacks free them */
	if (a->ev_wake != NULL)
		event_free(a->ev_wake);
	if (a->ev_dns_to != NULL)
		event_free(a->ev_dns_to);
	if (a->dbase != NULL)
		event_base_free(a->dbase);
	if (a->evfd != -1)
		close(a->evfd);
	outbox_free(a->ob);	/* saves the cursor */
	amq_parsed_free(a);
	jb_free(&a->pl);
	outbox_message_free(&a->msg);
	free(a->ca_pem);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

void
amq_get_stats(struct amq *a, struct amq_stats *out)
{
	pthread_mutex_lock(&a->mu);
	*out = a->stats;
	pthread_mutex_unlock(&a->mu);
}

/*
 * At a scrape (the loop's thread): connected or not and the backlog, as the
 * thread last set them (the counters are counted where they happen).
 */
static void
amq_metrics_cb(void *arg)
{
	struct amq *a = arg;
	struct amq_stats st;

	amq_get_stats(a, &st);
	metrics_set(M_FEED_CONNECTED, "amqp", NULL, st.connected);
	metrics_set(M_FEED_BACKLOG, "amqp", a->curname, (double)st.backlog);
}

/*
 * The thread's backlog for the loop (outbox_backlog is the thread's: it
 * reads the cursor), at each tick and confirm.  Not under mu: the outbox
 * asks amq_limit_cb, which takes it.
 */
static void
amq_backlog_update(struct amq *a)
{
	uint64_t b = outbox_backlog(a->cur);

	pthread_mutex_lock(&a->mu);
	a->stats.backlog = b;
	pthread_mutex_unlock(&a->mu);
}

/* --------------------------------------------------------------- the thread */

static void *
amq_main(void *arg)
{
	struct amq *a = arg;
	struct pollfd pfd;
	uint64_t now, last_tick = 0, v;
	int wait_ms;

	while (!atomic_load(&a->stop)) {
		now = amq_now_ms();
		if (now - last_tick >= 1000) {
			outbox_check(a->ob);
			outbox_save(a->ob);
			amq_backlog_update(a);
			amq_parsed_tick(a, now);
			last_tick = now;
			/* Blocked, it confirms nothing new: a new connection would not help. */
			if (a->up && !a->blocked && a->unacked > 0 &&
			    now - a->last_confirm_ms > AMQ_STALL_MS) {
				a->stalled = true;
				amq_warn(a, "amqp: broker %s: no confirm for %d s; reconnecting",
				    a->who, AMQ_STALL_MS / 1000);
				amq_drop(a, false);
			}
		}
		if (!a->up) {
			if (now >= a->next_try_ms) {
				if (amq_connect(a) == -1)
					amq_drop(a, false);
				continue;
			}
			wait_ms = (int)(a->next_try_ms - now);
			pfd.fd = a->evfd;
			pfd.events = POLLIN;
			(void)poll(&pfd, 1, wait_ms > 1000 ? 1000 : wait_ms);
			if (read(a->evfd, &v, sizeof(v)) == -1 && errno != EAGAIN)
				log_debug("amqp: eventfd: %s", strerror(errno));
			continue;
		}
		amq_pump(a);
		amq_parsed_pump(a);
		if (a->up)
			(void)amq_frames(a, 1000);
		amq_parsed_after(a);
		if (a->up && a->failing && a->unacked == 0) {
			/* Every entry in flight answered: publish again from the cursor. */
			outbox_rewind(a->cur);
			a->failing = false;
			a->hold_until_ms = amq_now_ms() + (uint64_t)a->retry_ms;
			a->retry_ms = amq_backoff_next(a->retry_ms);
		}
	}
	if (a->up)
		amq_drop(a, true);
	return NULL;
}

/* Publish journal entries while the window has room. */
static void
amq_pump(struct amq *a)
{
	struct outbox_line l;
	struct amq_entry *d;
	amqp_basic_properties_t p;
	amqp_bytes_t body;
	const char *ctype;
	int rc;

	while (a->up && !a->failing && !a->blocked && !atomic_load(&a->stop) &&
	    amq_now_ms() >= a->hold_until_ms && outbox_pending(a->cur) < AMQ_WIN &&
	    !outbox_full(a->cur)) {
		if (outbox_read(a->cur, &l) <= 0)
			return;
		if (l.overlong || hpf_record_private(l.line, l.len)) {
			/* A private one is a rule's choice, not a loss: not counted. */
			if (outbox_skip(a->cur, &l) == 0 && l.overlong)
				metrics_inc(M_FEED_SKIPPED, "amqp", a->curname);
			continue;
		}
		if ((rc = outbox_message(a->cur, &l, AMQ_READ_LIMIT, &a->msg)) == OUTBOX_SKIP) {
			if (outbox_skip(a->cur, &l) == 0)
				metrics_inc(M_FEED_SKIPPED, "amqp", a->curname);
			continue;
		}
		if (rc == OUTBOX_RETRY) {
			outbox_unread(a->cur, &l);
			return;		/* amq_hold set the backoff */
		}
		rc = amq_build(a, &l, &ctype);
		outbox_message_trim(&a->msg);
		if (rc == -1 || (d = outbox_take(a->cur, &l)) == NULL) {
			outbox_unread(a->cur, &l);
			amq_hold(a, "amqp: out of memory building a payload");
			return;
		}
		memset(&p, 0, sizeof(p));
		p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
		    AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
		p.content_type = amqp_cstring_bytes(ctype);
		p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
		p.message_id = amqp_cstring_bytes(a->msg.sha);
		p.timestamp = (uint64_t)time(NULL);
		body.bytes = a->pl.buf;
		body.len = a->pl.len;
		memcpy(d->sha, a->msg.sha, sizeof(d->sha));
		if (amq_op_begin(a, "publishing") == -1)
			return;		/* stopping: taken, not published (tag 0) */
		rc = amqp_basic_publish(a->conn, AMQ_CHANNEL,
		    amqp_cstring_bytes(a->cfg.exchange), amqp_cstring_bytes(a->cfg.routing_key),
		    1 /* mandatory */, 0, &p, body);
		if (amq_op_end(a)) {
			amq_stalled(a, "publishing");
			return;
		}
		if (rc != AMQP_STATUS_OK) {
			amq_warn(a, "amqp: broker %s: publish failed: %s", a->who,
			    amqp_error_string2(rc));
			amq_drop(a, false);
			return;
		}
		d->tag = ++a->next_tag;
		a->unacked++;
		if (a->unacked == 1)
			a->last_confirm_ms = amq_now_ms();
		pthread_mutex_lock(&a->mu);
		a->stats.published++;
		pthread_mutex_unlock(&a->mu);
		metrics_inc(M_FEED_PUBLISHED, "amqp", NULL);
		/* Read what the broker already answered: acks free the window early. */
		if (amqp_frames_enqueued(a->conn) || amqp_data_in_buffer(a->conn))
			(void)amq_frames(a, 0);
	}
}

/*
 * Build the payload of the mail whose record is l (its bytes in a->msg)
 * into a->pl, in the configured format, built as hpfeeds builds it (one
 * owner of each format: hpfeeds_wire.c): raw is the .eml's bytes behind our
 * Received header (message/rfc822), json the seed's object with the
 * record's metadata.  *ctype: the content type.  0, or -1 out of memory.
 */
static int
amq_build(struct amq *a, const struct outbox_line *l, const char **ctype)
{
	char note[256];
	bool cut = false, dropped = false;

	if (a->cfg.payload == CFG_PAYLOAD_RAW) {
		*ctype = "message/rfc822";
		if (hpf_payload_raw(&a->pl, l->line, l->len, a->cfg.received_header ?
		    a->persona : NULL, a->hostname, a->msg.body, a->msg.len, a->msg.size,
		    AMQ_PAYLOAD_LIMIT, &cut, note, sizeof(note)) == -1)
			return -1;
		if (note[0] != '\0')
			log_warn("amqp: message=%s %s", a->msg.sha, note);
	} else {
		*ctype = "application/json";
		if (hpf_payload_mail(&a->pl, l->line, l->len, a->cfg.metadata, a->sensor,
		    a->msg.sha, a->msg.body, a->msg.len, a->msg.size, AMQ_PAYLOAD_LIMIT,
		    &cut, &dropped) == -1)
			return -1;
		if (dropped)
			log_warn("amqp: message=%s metadata too large; published without it",
			    a->msg.sha);
	}
	if (cut) {
		log_warn("amqp: message=%s size=%llu published truncated to %zu bytes "
		    "(the spool keeps it whole)", a->msg.sha, (unsigned long long)a->msg.size,
		    a->pl.len);
		metrics_inc(M_FEED_TRUNCATED, "amqp", a->curname);
	}
	return 0;
}

/*
 * Handle the broker's frames: those buffered, then wait up to timeout_ms
 * for the socket or a kick (not when the window can take more).  0, or -1
 * when the connection was dropped.
 */
static int
amq_frames(struct amq *a, int timeout_ms)
{
	struct pollfd pfd[2];
	struct timeval tv = { 0, 0 };
	amqp_frame_t f;
	uint64_t v, now;
	int r, n = 0, wait_ms;

	for (;;) {
		if (!amqp_frames_enqueued(a->conn) && !amqp_data_in_buffer(a->conn)) {
			/* New lines come with a kick; a hold ends by itself. */
			now = amq_now_ms();
			wait_ms = timeout_ms;
			if (a->hold_until_ms > now && a->hold_until_ms - now < (uint64_t)wait_ms)
				wait_ms = (int)(a->hold_until_ms - now);
			pfd[0].fd = amqp_get_sockfd(a->conn);
			pfd[0].events = POLLIN;
			pfd[1].fd = a->evfd;
			pfd[1].events = POLLIN;
			/* Frames handled: back to publishing at once. */
			r = poll(pfd, 2, n > 0 ? 0 : wait_ms);
			if (r <= 0)
				return 0;
			if (pfd[1].revents & POLLIN) {
				if (read(a->evfd, &v, sizeof(v)) == -1 && errno != EAGAIN)
					log_debug("amqp: eventfd: %s", strerror(errno));
			}
			if (!(pfd[0].revents & (POLLIN | POLLERR | POLLHUP)))
				return 0;
			tv.tv_sec = a->cfg.timeout;
		} else
			tv.tv_sec = 0;
		if (amq_op_begin(a, "reading") == -1)
			return 0;
		r = amqp_simple_wait_frame_noblock(a->conn, &f, &tv);
		if (amq_op_end(a)) {
			amq_stalled(a, "reading");
			return -1;
		}
		if (r == AMQP_STATUS_TIMEOUT)
			return 0;
		if (r != AMQP_STATUS_OK) {
			amq_warn(a, "amqp: broker %s: connection lost: %s", a->who,
			    amqp_error_string2(r));
			amq_drop(a, false);
			return -1;
		}
		n++;
		if (amq_frame(a, &f) == -1)
			return -1;
		amqp_maybe_release_buffers(a->conn);
	}
}

/* One frame from the broker.  0, or -1 when the connection was dropped. */
static int
amq_frame(struct amq *a, const amqp_frame_t *f)
{
	char text[256];
	const amqp_basic_ack_t *ack;
	const amqp_basic_nack_t *nack;
	const amqp_channel_close_t *cc;
	const amqp_connection_close_t *xc;
	const amqp_connection_blocked_t *bl;

	if (f->frame_type != AMQP_FRAME_METHOD)
		return 0;	/* a stray content frame */
	if (f->channel == AMQ_PCHANNEL)
		return amq_parsed_frame(a, f);
	switch (f->payload.method.id) {
	case AMQP_BASIC_ACK_METHOD:
		ack = f->payload.method.decoded;
		amq_confirm(a, ack->delivery_tag, ack->multiple, true);
		return 0;
	case AMQP_BASIC_NACK_METHOD:
		nack = f->payload.method.decoded;
		amq_confirm(a, nack->delivery_tag, nack->multiple, false);
		return 0;
	case AMQP_BASIC_RETURN_METHOD:
		amq_on_return(a, f->payload.method.decoded);
		return a->up ? 0 : -1;
	case AMQP_CONNECTION_BLOCKED_METHOD:
		/*
		 * A resource alarm (memory, disk): the broker reads no more of
		 * our publishes until unblocked.  Publish nothing meanwhile
		 * (a send would only wait, then be cut); the mail is kept.
		 */
		bl = f->payload.method.decoded;
		log_escape(text, sizeof(text), bl->reason.bytes, bl->reason.len);
		a->blocked = true;
		amq_warn(a, "amqp: broker %s blocked publishing: \"%s\" (a resource "
		    "alarm); publishing paused, the mail is kept", a->who, text);
		return 0;
	case AMQP_CONNECTION_UNBLOCKED_METHOD:
		if (a->blocked)
			log_info("amqp: broker %s unblocked publishing; resuming", a->who);
		a->blocked = false;
		a->last_confirm_ms = amq_now_ms();	/* the wait was the alarm's */
		return 0;
	case AMQP_CHANNEL_CLOSE_METHOD:
		cc = f->payload.method.decoded;
		log_escape(text, sizeof(text), cc->reply_text.bytes, cc->reply_text.len);
		amq_warn(a, "amqp: broker %s closed the channel: %u \"%s\"", a->who,
		    (unsigned)cc->reply_code, text);
		amq_drop(a, false);
		return -1;
	case AMQP_CONNECTION_CLOSE_METHOD:
		xc = f->payload.method.decoded;
		log_escape(text, sizeof(text), xc->reply_text.bytes, xc->reply_text.len);
		amq_warn(a, "amqp: broker %s closed the connection: %u \"%s\"", a->who,
		    (unsigned)xc->reply_code, text);
		amq_drop(a, false);
		return -1;
	default:
		return 0;
	}
}

/*
 * basic.ack / basic.nack for tag (and every earlier one when multiple) in the
 * window of one channel's cursor (the mails' or the parsed documents'): an
 * ack confirms the entry, unless it was returned: then, as a nack, the entry
 * stays (*failing: it is published again once nothing else is in flight).
 * nacked() is told of each nacked entry.  Returns how many entries the
 * cursor moved past.
 */
static size_t
amq_answer(struct amq *a, struct outbox_cursor *cur, size_t *unacked, bool *failing,
    uint64_t tag, bool multiple, bool ok,
    void (*nacked)(struct amq *, const struct amq_entry *))
{
	uint64_t offs[AMQ_WIN];
	struct outbox_entry *e;
	struct amq_entry *d;
	size_t k, n = 0, pending = outbox_pending(cur), moved = 0;

	a->last_confirm_ms = amq_now_ms();
	for (k = 0; k < pending && n < AMQ_WIN; k++) {
		e = outbox_entry(cur, k);
		d = e->data;
		if (e->skip || d->tag == 0 || d->done)
			continue;
		if (d->tag != tag && !(multiple && d->tag < tag))
			continue;
		d->done = true;
		(*unacked)--;
		if (ok && !d->returned) {
			offs[n++] = e->end_off;
			continue;
		}
		*failing = true;
		if (!ok)	/* a returned one was counted at its basic.return */
			nacked(a, d);
	}
	for (k = 0; k < n; k++)
		moved += outbox_confirm(cur, offs[k]);
	return moved;
}

static void
amq_mail_nacked(struct amq *a, const struct amq_entry *d)
{
	pthread_mutex_lock(&a->mu);
	a->stats.nacked++;
	pthread_mutex_unlock(&a->mu);
	metrics_inc(M_FEED_NACKED, "amqp", NULL);
	amq_warn(a, "amqp: message=%s nacked by broker %s; it will be published again",
	    d->sha, a->who);
}

/* An answer on the mails' channel. */
static void
amq_confirm(struct amq *a, uint64_t tag, bool multiple, bool ok)
{
	size_t moved;

	moved = amq_answer(a, a->cur, &a->unacked, &a->failing, tag, multiple, ok,
	    amq_mail_nacked);
	a->stalled = false;	/* the broker reads and answers again */
	if (moved > 0) {
		a->retry_ms = AMQ_BACKOFF_MIN_MS;	/* the cursor moves: no failure series */
		amq_backlog_update(a);
	}
	pthread_mutex_lock(&a->mu);
	a->stats.confirmed = outbox_cursor_confirmed(a->cur);
	pthread_mutex_unlock(&a->mu);
}

/*
 * basic.return (mandatory, no queue took it), before the message's ack: its
 * header and body follow.  Returns come in publish order, so the entry is
 * the oldest unanswered one with this message_id (the sha256).
 */
static void
amq_on_return(struct amq *a, const amqp_basic_return_t *ret)
{
	amqp_message_t m;
	amqp_rpc_reply_t rr;
	char text[256], sha[65] = "";
	struct outbox_entry *e;
	struct amq_entry *d;
	size_t k, pending;
	unsigned code = ret->reply_code;

	log_escape(text, sizeof(text), ret->reply_text.bytes, ret->reply_text.len);
	/* Its body: librabbitmq waits for it with no deadline. */
	if (amq_op_begin(a, "reading a returned message") == -1) {
		amq_drop(a, false);
		return;
	}
	rr = amqp_read_message(a->conn, AMQ_CHANNEL, &m, 0);
	if (amq_op_end(a)) {
		if (rr.reply_type == AMQP_RESPONSE_NORMAL)
			amqp_destroy_message(&m);
		amq_stalled(a, "reading a returned message");
		return;
	}
	if (amq_reply_ok(a, rr, "reading a returned message") == -1) {
		amq_drop(a, false);
		return;
	}
	if ((m.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) &&
	    m.properties.message_id.len == 64)
		memcpy(sha, m.properties.message_id.bytes, 64);
	amqp_destroy_message(&m);
	pending = outbox_pending(a->cur);
	for (k = 0; k < pending; k++) {
		e = outbox_entry(a->cur, k);
		d = e->data;
		if (e->skip || d->tag == 0 || d->done || d->returned ||
		    strcmp(d->sha, sha) != 0)
			continue;
		d->returned = true;
		break;
	}
	pthread_mutex_lock(&a->mu);
	a->stats.returned++;
	pthread_mutex_unlock(&a->mu);
	metrics_inc(M_FEED_RETURNED, "amqp", NULL);
	amq_warn(a, "amqp: message=%s returned by broker %s: %u \"%s\" (exchange \"%s\" "
	    "routing key \"%s\" reaches no queue); it will be published again", sha[0] ?
	    sha : "?", a->who, code, text, a->cfg.exchange, a->cfg.routing_key);
}

/* A reply's meaning, logged when it is a failure.  0 or -1. */
static int
amq_reply_ok(struct amq *a, amqp_rpc_reply_t r, const char *what)
{
	char text[256];
	const amqp_connection_close_t *xc;
	const amqp_channel_close_t *cc;

	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		return 0;
	case AMQP_RESPONSE_NONE:
		amq_warn(a, "amqp: broker %s: %s: no reply", a->who, what);
		return -1;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		amq_warn(a, "amqp: broker %s: %s: %s", a->who, what,
		    amqp_error_string2(r.library_error));
		return -1;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
			xc = r.reply.decoded;
			log_escape(text, sizeof(text), xc->reply_text.bytes, xc->reply_text.len);
			amq_warn(a, "amqp: broker %s: %s: connection closed: %u \"%s\"",
			    a->who, what, (unsigned)xc->reply_code, text);
		} else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
			cc = r.reply.decoded;
			log_escape(text, sizeof(text), cc->reply_text.bytes, cc->reply_text.len);
			amq_warn(a, "amqp: broker %s: %s: channel closed: %u \"%s\"",
			    a->who, what, (unsigned)cc->reply_code, text);
		} else
			amq_warn(a, "amqp: broker %s: %s: unexpected method 0x%08x",
			    a->who, what, (unsigned)r.reply.id);
		return -1;
	}
	return -1;
}

/* Trust the CAs read at start in ctx (a connection's own context).  0 or -1. */
static int
amq_add_cas(struct amq *a, SSL_CTX *ctx)
{
	X509_STORE *st = SSL_CTX_get_cert_store(ctx);
	BIO *b;
	X509 *x;
	int n = 0;

	if (st == NULL || (b = BIO_new_mem_buf(a->ca_pem, (int)a->ca_len)) == NULL)
		return -1;
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
		if (X509_STORE_add_cert(st, x) == 1)
			n++;
		X509_free(x);
	}
	ERR_clear_error();	/* the end of the PEM data */
	BIO_free(b);
	return n > 0 ? 0 : -1;
}

/* Whether s is a numeric IPv4 or IPv6 address. */
static bool
amq_is_ip(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/*
 * Look the broker's name up (the thread): run the resolver's base until the
 * answer, the timeout or a stop.  0 with the addresses (IPv4 first) in
 * addr, *naddr of them; -1 when there are none (logged, once per series:
 * the caller drops the attempt, the backoff grows).
 */
static int
amq_resolve(struct amq *a, struct dns_addr *addr, int *naddr)
{
	struct amq_lookup *l;
	uint64_t deadline = amq_now_ms() + (uint64_t)a->cfg.timeout * 1000, now;
	struct timeval tv;
	char why[sizeof(l->err) * 4];

	if ((l = calloc(1, sizeof(*l))) == NULL) {
		amq_warn(a, "amqp: broker %s: out of memory", a->who);
		return -1;
	}
	if (dns_name_lookup(a->dns, a->cfg.host, amq_lookup_cb, l) == -1) {
		free(l);
		amq_warn(a, "amqp: cannot resolve broker %s: the lookup could not start",
		    a->who);
		return -1;
	}
	while (!l->done && !atomic_load(&a->stop) && (now = amq_now_ms()) < deadline) {
		tv.tv_sec = (time_t)((deadline - now) / 1000);
		tv.tv_usec = (suseconds_t)((deadline - now) % 1000 * 1000);
		evtimer_add(a->ev_dns_to, &tv);
		(void)event_base_loop(a->dbase, EVLOOP_ONCE);
	}
	evtimer_del(a->ev_dns_to);
	if (!l->done) {
		l->abandoned = true;
		if (!atomic_load(&a->stop))
			amq_warn(a, "amqp: cannot resolve broker %s: no answer within %d s; "
			    "retrying with backoff, the mail is kept", a->who, a->cfg.timeout);
		return -1;
	}
	if (l->st != DNS_OK || l->n == 0) {
		log_escape(why, sizeof(why), l->err, strlen(l->err));
		amq_warn(a, "amqp: cannot resolve broker %s (%s): %s; retrying with "
		    "backoff, the mail is kept", a->who, dns_status_name(l->st), why);
		free(l);
		return -1;
	}
	*naddr = l->n;
	memcpy(addr, l->addr, (size_t)l->n * sizeof(*addr));
	free(l);
	return 0;
}

/* The lookup's answer (on the resolver's base, the thread). */
static void
amq_lookup_cb(void *arg, enum dns_status st, const struct dns_addr *addr, int n,
    const char *err)
{
	struct amq_lookup *l = arg;

	if (l->abandoned) {
		free(l);
		return;
	}
	l->done = true;
	l->st = st;
	l->n = n < DNS_ADDR_MAX ? n : DNS_ADDR_MAX;
	if (l->n > 0)
		memcpy(l->addr, addr, (size_t)l->n * sizeof(*addr));
	snprintf(l->err, sizeof(l->err), "%s", err != NULL ? err : "");
}

/* A kick or the stop during a lookup: consumed (the loop checks stop). */
static void
amq_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t v;

	if (read(fd, &v, sizeof(v)) == -1 && errno != EAGAIN)
		log_debug("amqp: eventfd: %s", strerror(errno));
}

/* The lookup's deadline: event_base_loop() returns. */
static void
amq_dns_to_cb(evutil_socket_t fd, short what, void *arg)
{
}

/*
 * At the start of a TLS handshake, before the ClientHello is written:
 * librabbitmq set the SNI to the host string it was given (the address we
 * resolved), the configured name replaces it (server_name, else host); an
 * address sends none (RFC 6066 allows no IP literal).  The certificate is
 * checked against the same name (X509_VERIFY_PARAM on the context).
 * The handshake runs inside open(), bounded only by its timeout: from here
 * it is an operation on a dup of the socket, so a stop cuts it at once
 * (and a stop already set, now).
 */
static void
amq_ssl_info_cb(const SSL *ssl, int where, int ret)
{
	struct amq *a;
	const char *name, *sni;
	int fd;

	if ((where & SSL_CB_HANDSHAKE_START) == 0)
		return;
	a = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	name = a->cfg.server_name[0] != '\0' ? a->cfg.server_name : a->cfg.host;
	sni = amq_is_ip(name) ? NULL : name;
	/* OpenSSL hands the callback a const SSL; the SNI is set on it. */
	(void)SSL_set_tlsext_host_name((SSL *)ssl, sni);
	/*
	 * Only the open's handshake: a renegotiation the broker starts later
	 * runs inside an operation already watched, and a dup made then would
	 * outlive the connection (holding it open) and, left in hs_fd, keep the
	 * next open's handshake from being watched.
	 */
	if (a->hs_open && a->hs_fd == -1 && (fd = SSL_get_fd(ssl)) >= 0 &&
	    (a->hs_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) >= 0 &&
	    amq_op_begin_fd(a, a->hs_fd, "the TLS handshake") == -1)
		(void)shutdown(a->hs_fd, SHUT_RDWR);
}

/* Connect, log in, open the channel, declare the exchange, confirm.select. */
static int
amq_connect(struct amq *a)
{
	struct timeval tv = { a->cfg.timeout, 0 };
	amqp_socket_t *s;
	amqp_rpc_reply_t r;
	X509_VERIFY_PARAM *vp;
	const char *name;
	char user[CFG_NAME_MAX * 4], what[sizeof(user) + 2 * CFG_NAME_MAX + 128];
	amqp_table_entry_t cap_e, prop_e;
	amqp_table_t caps, props;
	struct dns_addr addr[DNS_ADDR_MAX];
	const char *hosts[DNS_ADDR_MAX];
	struct timeval left;
	uint64_t deadline, now;
	int rc, naddr, i, tried = 0;

	pthread_mutex_lock(&a->mu);
	a->stats.connects++;
	pthread_mutex_unlock(&a->mu);
	metrics_inc(M_FEED_CONNECTS, "amqp", NULL);
	if (a->dns == NULL) {
		/* An address: librabbitmq's getaddrinfo() parses it, no lookup. */
		naddr = 1;
		hosts[0] = a->cfg.host;
	} else if (amq_resolve(a, addr, &naddr) == -1)
		return -1;
	else
		for (i = 0; i < naddr; i++)
			hosts[i] = addr[i].text;
	if ((a->conn = amqp_new_connection()) == NULL) {
		amq_warn(a, "amqp: broker %s: out of memory", a->who);
		return -1;
	}
	s = a->cfg.tls ? amqp_ssl_socket_new(a->conn) : amqp_tcp_socket_new(a->conn);
	if (s == NULL) {
		amq_warn(a, "amqp: broker %s: cannot create a socket", a->who);
		return -1;
	}
	if (a->cfg.tls) {
		amqp_ssl_socket_set_verify_peer(s, 1);
		/*
		 * The name is OpenSSL's check, set on the context every
		 * connection's SSL inherits: librabbitmq's own check knows
		 * neither server_name nor IP addresses in subjectAltName.
		 */
		name = a->cfg.server_name[0] != '\0' ? a->cfg.server_name : a->cfg.host;
		vp = SSL_CTX_get0_param(amqp_ssl_socket_get_context(s));
		amqp_ssl_socket_set_verify_hostname(s, 0);
		if ((amq_is_ip(name) ? X509_VERIFY_PARAM_set1_ip_asc(vp, name) :
		    X509_VERIFY_PARAM_set1_host(vp, name, 0)) != 1) {
			amq_warn(a, "amqp: broker %s: cannot check the certificate for %s",
			    a->who, name);
			return -1;
		}
		if (amq_add_cas(a, amqp_ssl_socket_get_context(s)) == -1) {
			amq_warn(a, "amqp: cannot connect to broker %s (TLS): no usable CA "
			    "certificate in %s", a->who, a->ca_path);
			return -1;
		}
		/* The SNI: the name, not the address open() is given. */
		SSL_CTX_set_app_data((SSL_CTX *)amqp_ssl_socket_get_context(s), a);
		SSL_CTX_set_info_callback(amqp_ssl_socket_get_context(s), amq_ssl_info_cb);
	}
	(void)amqp_set_handshake_timeout(a->conn, &tv);
	(void)amqp_set_rpc_timeout(a->conn, &tv);
	/*
	 * Each address in turn (IPv4 first), as getaddrinfo()'s caller would,
	 * all within one timeout as librabbitmq's own loop over them: one
	 * each, a name with DNS_ADDR_MAX addresses that hang held the thread
	 * (and the backoff, and a stop) for 16 times the timeout.
	 */
	rc = AMQP_STATUS_HOSTNAME_RESOLUTION_FAILED;
	deadline = amq_now_ms() + (uint64_t)a->cfg.timeout * 1000;
	for (i = 0; i < naddr && !atomic_load(&a->stop); i++) {
		if ((now = amq_now_ms()) >= deadline) {
			rc = AMQP_STATUS_TIMEOUT;
			break;
		}
		left.tv_sec = (time_t)((deadline - now) / 1000);
		left.tv_usec = (suseconds_t)((deadline - now) % 1000 * 1000);
		tried = i;
		a->hs_open = true;
		rc = amqp_socket_open_noblock(s, hosts[i], a->cfg.port, &left);
		a->hs_open = false;
		if (a->hs_fd != -1) {
			/* The TLS handshake was watched (amq_ssl_info_cb). */
			(void)amq_op_end(a);
			close(a->hs_fd);
			a->hs_fd = -1;
		}
		if (rc == AMQP_STATUS_OK)
			break;
	}
	if (rc != AMQP_STATUS_OK && atomic_load(&a->stop))
		return -1;	/* the stop: nothing wrong */
	if (rc != AMQP_STATUS_OK) {
		if (a->dns != NULL)
			amq_warn(a, "amqp: cannot connect to broker %s%s at %s%s: %s", a->who,
			    a->cfg.tls ? " (TLS)" : "", hosts[tried],
			    naddr > 1 ? " (the last of its addresses tried)" : "",
			    amqp_error_string2(rc));
		else
			amq_warn(a, "amqp: cannot connect to broker %s%s: %s", a->who,
			    a->cfg.tls ? " (TLS)" : "", amqp_error_string2(rc));
		return -1;
	}
	log_escape(user, sizeof(user), a->cfg.user, strlen(a->cfg.user));
	/*
	 * The handshake's calls are bounded by the rpc timeout; the watchdog
	 * only makes a stop cut them at once.  The capability: the broker
	 * says when an alarm blocks us (connection.blocked) rather than
	 * silently not reading (librabbitmq adds its own capabilities).
	 */
	if (amq_op_begin(a, "the handshake") == -1)
		return -1;
	cap_e.key = amqp_cstring_bytes("connection.blocked");
	cap_e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
	cap_e.value.value.boolean = 1;
	caps.num_entries = 1;
	caps.entries = &cap_e;
	prop_e.key = amqp_cstring_bytes("capabilities");
	prop_e.value.kind = AMQP_FIELD_KIND_TABLE;
	prop_e.value.value.table = caps;
	props.num_entries = 1;
	props.entries = &prop_e;
	r = amqp_login_with_properties(a->conn, a->cfg.vhost, 0, AMQ_FRAME_MAX, 0,
	    &props, AMQP_SASL_METHOD_PLAIN, a->cfg.user, a->cfg.password);
	rc = amq_connect_rest(a, r, user, what, sizeof(what));
	if (amq_op_end(a) && !atomic_load(&a->stop)) {
		amq_stalled_warn(a, "the handshake");
		return -1;	/* the caller drops it */
	}
	if (rc == -1)
		return -1;
	a->up = true;
	a->next_tag = 0;
	a->unacked = 0;
	a->failing = false;
	a->blocked = false;
	if (!a->stalled) {
		/* Up again: a new failure is a new series, logged. */
		a->backoff_ms = AMQ_BACKOFF_MIN_MS;
		a->lastmsg[0] = '\0';
		a->repeats = 0;
	}
	outbox_rewind(a->cur);
	pthread_mutex_lock(&a->mu);
	a->stats.connected = true;
	pthread_mutex_unlock(&a->mu);
	/* In a series of stalled connections: one line for the series. */
	(a->stalled ? log_debug : log_info)("amqp: connected to broker %s%s vhost=\"%s\" "
	    "user=\"%s\" exchange=\"%s\" routing_key=\"%s\" (publisher confirms)", a->who,
	    a->cfg.tls ? " (TLS)" : "", a->cfg.vhost, user, a->cfg.exchange,
	    a->cfg.routing_key);
	return 0;
}

/* After the login (reply r): channel, exchange, confirms.  0 or -1. */
static int
amq_connect_rest(struct amq *a, amqp_rpc_reply_t r, const char *user, char *what,
    size_t whatlen)
{
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		/*
		 * RabbitMQ closes with 403 ACCESS_REFUSED (or, for clients not
		 * asking for it, just closes the socket) on a wrong user or
		 * password: either way say who was refused by whom.
		 */
		snprintf(what, whatlen, "login refused for user \"%s\" on vhost \"%s\" "
		    "(wrong user, password or vhost?)", user, a->cfg.vhost);
		(void)amq_reply_ok(a, r, what);
		return -1;
	}
	amqp_channel_open(a->conn, AMQ_CHANNEL);
	if (amq_reply_ok(a, amqp_get_rpc_reply(a->conn), "channel.open") == -1)
		return -1;
	amqp_exchange_declare(a->conn, AMQ_CHANNEL, amqp_cstring_bytes(a->cfg.exchange),
	    amqp_cstring_bytes(a->cfg.exchange_type), 0, 1 /* durable */, 0, 0,
	    amqp_empty_table);
	snprintf(what, whatlen, "exchange.declare \"%s\" (%s, durable)",
	    a->cfg.exchange, a->cfg.exchange_type);
	if (amq_reply_ok(a, amqp_get_rpc_reply(a->conn), what) == -1)
		return -1;
	amqp_confirm_select(a->conn, AMQ_CHANNEL);
	if (amq_reply_ok(a, amqp_get_rpc_reply(a->conn), "confirm.select") == -1)
		return -1;
	/* The parsed documents' channel (parsed_routing_key), confirmed too. */
	if (amq_parsed_open(a) == -1)
		return -1;
	return 0;
}

/*
 * Close the connection (graceful: channel and connection close, bounded by
 * the timeout), forget the window (the entries are published again), and
 * schedule the next attempt after the backoff.
 */
static void
amq_drop(struct amq *a, bool graceful)
{
	if (a->conn != NULL) {
		if (graceful && a->up) {
			/* At shutdown: a hung broker holds the stop 2 s per call, not timeout. */
			struct timeval tv = { AMQ_CLOSE_MS / 1000, 0 };

			(void)amqp_set_rpc_timeout(a->conn, &tv);
			pthread_mutex_lock(&a->mu);
			a->op_closing = true;
			pthread_mutex_unlock(&a->mu);
			if (amq_op_begin(a, "closing") == 0) {
				(void)amqp_channel_close(a->conn, AMQ_CHANNEL, AMQP_REPLY_SUCCESS);
				(void)amqp_connection_close(a->conn, AMQP_REPLY_SUCCESS);
				(void)amq_op_end(a);
			}
		}
		amqp_destroy_connection(a->conn);
		a->conn = NULL;
	}
	if (a->up)
		(a->stalled ? log_debug : log_info)("amqp: disconnected from broker %s",
		    a->who);
	a->up = false;
	a->blocked = false;
	a->unacked = 0;
	a->failing = false;
	outbox_rewind(a->cur);
	amq_parsed_reset(a);
	pthread_mutex_lock(&a->mu);
	a->stats.connected = false;
	pthread_mutex_unlock(&a->mu);
	a->next_try_ms = amq_now_ms() + (uint64_t)a->backoff_ms;
	a->backoff_ms = amq_backoff_next(a->backoff_ms);
}

/*
 * The watchdog cut the connection during what: nothing sent or received for
 * the timeout (or the stop).  Dropped; its window is published again on the
 * next one, after the backoff, which a series of stalls keeps growing.
 */
static void
amq_stalled(struct amq *a, const char *what)
{
	amq_stalled_warn(a, what);
	amq_drop(a, false);
}

static void
amq_stalled_warn(struct amq *a, const char *what)
{
	if (atomic_load(&a->stop))
		return;		/* the stop cut it: nothing wrong */
	a->stalled = true;
	amq_warn(a, "amqp: broker %s stalled: nothing sent or received for %d s "
	    "while %s (not reading: a memory or disk alarm?); reconnecting with "
	    "backoff, the mail is kept", a->who, a->cfg.timeout, what);
}

/* The outbox met a transient error (the thread): pause publishing. */
static void
amq_hold(void *arg, const char *msg)
{
	struct amq *a = arg;

	amq_warn(a, "%s; retrying in %d s", msg, a->retry_ms / 1000);
	a->hold_until_ms = amq_now_ms() + (uint64_t)a->retry_ms;
	a->retry_ms = amq_backoff_next(a->retry_ms);
}

/* Entries in flight came from a file the outbox left: publish them again. */
static void
amq_lost(void *arg)
{
	struct amq *a = arg;

	if (a->up)
		amq_drop(a, false);
}

/*
 * ------------------------------------------------ the parsed documents
 *
 * With parsed_routing_key, every line of the analysis worker's parsed
 * journal (<spool>/parsed.jsonl and its numbered segments: one
 * fosr.mail.parsed document each) is published as it is to the same
 * exchange with that key, at least once, on a channel of its own (2, in
 * confirm mode: its delivery tags are its own) through its own outbox and
 * cursor ("amqp-parsed:<exchange>/<key>" in <spool>/feed, which the worker
 * reads before deleting a segment).  The same rules as the mails: only
 * basic.ack moves the cursor; a nack or a return publishes again from the
 * cursor after a backoff; a reconnect rewinds.
 */
struct amq_parsed {
	struct outbox	*ob;
	struct outbox_cursor *cur;
	bool		 open;		/* channel 2 in confirm mode on this connection */
	uint64_t	 next_tag;
	size_t		 unacked;
	bool		 failing;
	int		 retry_ms;
	uint64_t	 hold_until_ms;
	char		 path[PATH_MAX];
	char		 curname[2 * CFG_NAME_MAX + 16];	/* the metrics' channel */
	/* the worker's limit: set once by amq_set_parsed_limit (under a->mu) */
	bool		 lim_set;
	amq_limit_fn	 lim_fn;
	void		*lim_arg;
	uint64_t	 published, confirmed;	/* under a->mu */
};

/* The outbox met a transient error over the parsed journal: pause it. */
static void
amq_parsed_hold(void *arg, const char *msg)
{
	struct amq *a = arg;

	amq_warn(a, "%s; retrying in %d s", msg, a->pd->retry_ms / 1000);
	a->pd->hold_until_ms = amq_now_ms() + (uint64_t)a->pd->retry_ms;
	a->pd->retry_ms = amq_backoff_next(a->pd->retry_ms);
}

/* The outbox asks (the thread): the worker's durable length, once handed over. */
static void
amq_parsed_limit_cb(void *arg, uint64_t *ino, uint64_t *len)
{
	struct amq *a = arg;
	amq_limit_fn fn;
	void *fa;

	pthread_mutex_lock(&a->mu);
	fn = a->pd->lim_fn;
	fa = a->pd->lim_arg;
	pthread_mutex_unlock(&a->mu);
	*ino = *len = 0;	/* no worker: the file is not written */
	if (fn != NULL)
		fn(fa, ino, len);
}

static int
amq_parsed_new(struct amq *a, char *err, size_t errlen)
{
	struct amq_parsed *pd;
	struct outbox_opts o;
	char dir[PATH_MAX + 8];
	int n;

	if ((pd = calloc(1, sizeof(*pd))) == NULL) {
		snprintf(err, errlen, "amqp: out of memory");
		return -1;
	}
	a->pd = pd;
	pd->retry_ms = AMQ_BACKOFF_MIN_MS;
	(void)spool_path_dir(dir, sizeof(dir), a->spool_dir, SPOOL_DIR_FEED);
	if (spool_path_dir(pd->path, sizeof(pd->path), a->spool_dir,
	    SPOOL_PARSED_NAME) == -1) {
		snprintf(err, errlen, "amqp: spool path too long");
		return -1;
	}
	memset(&o, 0, sizeof(o));
	o.who = "amqp";
	o.path = pd->path;
	o.kind = OUTBOX_JOURNAL;	/* parsed.jsonl.<n>, followed by number */
	o.cursor_dir = dir;
	o.spool_dir = a->spool_dir;
	o.hold = amq_parsed_hold;
	o.lost = amq_lost;
	o.arg = a;
	if ((pd->ob = outbox_new(&o, err, errlen)) == NULL)
		return -1;
	n = snprintf(pd->curname, sizeof(pd->curname), "amqp-parsed:%s/%s",
	    a->cfg.exchange, a->cfg.parsed_routing_key);
	if (n < 0 || (size_t)n >= sizeof(pd->curname)) {
		snprintf(err, errlen, "amqp: exchange and parsed_routing_key too long");
		return -1;
	}
	if ((pd->cur = outbox_cursor_open(pd->ob, pd->curname, sizeof(struct amq_entry), err,
	    errlen)) == NULL)
		return -1;
	outbox_set_limit(pd->ob, amq_parsed_limit_cb, a);
	outbox_start(pd->ob);
	return 0;
}

/*
 * The analysis worker's limit on the live parsed journal (aw_parsed_committed;
 * fn NULL: analysis is off, nothing writes it).  Parsed documents are
 * published only once this was called.  The loop's thread, after amq_new().
 */
void
amq_set_parsed_limit(struct amq *a, amq_limit_fn fn, void *arg)
{
	if (a == NULL || a->pd == NULL)
		return;
	pthread_mutex_lock(&a->mu);
	a->pd->lim_fn = fn;
	a->pd->lim_arg = arg;
	a->pd->lim_set = true;
	pthread_mutex_unlock(&a->mu);
}

void
amq_get_parsed_stats(struct amq *a, uint64_t *published, uint64_t *confirmed)
{
	*published = *confirmed = 0;
	if (a == NULL || a->pd == NULL)
		return;
	pthread_mutex_lock(&a->mu);
	*published = a->pd->published;
	*confirmed = a->pd->confirmed;
	pthread_mutex_unlock(&a->mu);
}

static void
amq_parsed_free(struct amq *a)
{
	if (a->pd == NULL)
		return;
	outbox_free(a->pd->ob);	/* saves the cursor */
	free(a->pd);
	a->pd = NULL;
}

/* Once a second (the thread): rotations, the cursor saved. */
static void
amq_parsed_tick(struct amq *a, uint64_t now)
{
	if (a->pd == NULL)
		return;
	outbox_check(a->pd->ob);
	outbox_save(a->pd->ob);
	if (a->up && a->pd->unacked > 0 && now - a->last_confirm_ms > AMQ_STALL_MS) {
		amq_warn(a, "amqp: broker %s: no confirm of a parsed document for %d s; "
		    "reconnecting", a->who, AMQ_STALL_MS / 1000);
		amq_drop(a, false);
	}
}

/* Connecting (amq_connect): channel 2 in confirm mode.  0 or -1 (logged). */
static int
amq_parsed_open(struct amq *a)
{
	if (a->pd == NULL)
		return 0;
	amqp_channel_open(a->conn, AMQ_PCHANNEL);
	if (amq_reply_ok(a, amqp_get_rpc_reply(a->conn), "channel.open (parsed)") == -1)
		return -1;
	amqp_confirm_select(a->conn, AMQ_PCHANNEL);
	if (amq_reply_ok(a, amqp_get_rpc_reply(a->conn), "confirm.select (parsed)") == -1)
		return -1;
	a->pd->open = true;
	a->pd->next_tag = 0;
	a->pd->unacked = 0;
	a->pd->failing = false;
	outbox_rewind(a->pd->cur);
	return 0;
}

/* The connection is gone (amq_drop): the window is published again. */
static void
amq_parsed_reset(struct amq *a)
{
	if (a->pd == NULL)
		return;
	a->pd->open = false;
	a->pd->unacked = 0;
	a->pd->failing = false;
	outbox_rewind(a->pd->cur);
}

/* Publish parsed documents while the window has room. */
static void
amq_parsed_pump(struct amq *a)
{
	struct amq_parsed *pd = a->pd;
	struct outbox_line l;
	struct amq_entry *d;
	amqp_basic_properties_t p;
	amqp_bytes_t body;
	bool ready;
	int rc;

	if (pd == NULL)
		return;
	pthread_mutex_lock(&a->mu);
	ready = pd->lim_set;
	pthread_mutex_unlock(&a->mu);
	while (ready && a->up && pd->open && !pd->failing && !a->blocked &&
	    !atomic_load(&a->stop) &&
	    amq_now_ms() >= pd->hold_until_ms && outbox_pending(pd->cur) < AMQ_WIN &&
	    !outbox_full(pd->cur)) {
		if (outbox_read(pd->cur, &l) <= 0)
			return;
		/* Not a document, too large, or of a mail a rule keeps private. */
		if (l.overlong || !json_is_object(l.line, l.len) ||
		    l.len > AMQ_PAYLOAD_LIMIT || hpf_record_private(l.line, l.len)) {
			bool lost = l.overlong || !hpf_record_private(l.line, l.len);

			if (!l.overlong && lost)
				log_warn("amqp: document at offset %llu of %s is not a "
				    "JSON object or too large; not published",
				    (unsigned long long)(l.end_off - l.len - 1), pd->path);
			if (outbox_skip(pd->cur, &l) == 0 && lost)
				metrics_inc(M_FEED_SKIPPED, "amqp", pd->curname);
			continue;
		}
		if ((d = outbox_take(pd->cur, &l)) == NULL) {
			outbox_unread(pd->cur, &l);
			amq_parsed_hold(a, "amqp: out of memory");
			return;
		}
		if (json_get_str(l.line, l.len, "sha256", d->sha, sizeof(d->sha)) == -1)
			d->sha[0] = '\0';
		memset(&p, 0, sizeof(p));
		p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
		    AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_TYPE_FLAG;
		p.content_type = amqp_cstring_bytes("application/json");
		p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
		p.timestamp = (uint64_t)time(NULL);
		p.type = amqp_cstring_bytes("fosr.mail.parsed");
		if (d->sha[0] != '\0') {
			p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
			p.message_id = amqp_cstring_bytes(d->sha);
		}
		body.bytes = (void *)l.line;
		body.len = l.len;
		/* Watched as the mails' publish is: a broker that stops reading is cut. */
		if (amq_op_begin(a, "publishing a document") == -1)
			return;		/* stopping: taken, not published (tag 0) */
		rc = amqp_basic_publish(a->conn, AMQ_PCHANNEL,
		    amqp_cstring_bytes(a->cfg.exchange),
		    amqp_cstring_bytes(a->cfg.parsed_routing_key), 1 /* mandatory */, 0,
		    &p, body);
		if (amq_op_end(a)) {
			amq_stalled(a, "publishing a document");
			return;
		}
		if (rc != AMQP_STATUS_OK) {
			amq_warn(a, "amqp: broker %s: publish failed: %s", a->who,
			    amqp_error_string2(rc));
			amq_drop(a, false);
			return;
		}
		d->tag = ++pd->next_tag;
		if (pd->unacked++ == 0 && a->unacked == 0)
			a->last_confirm_ms = amq_now_ms();
		pthread_mutex_lock(&a->mu);
		pd->published++;
		pthread_mutex_unlock(&a->mu);
		if (amqp_frames_enqueued(a->conn) || amqp_data_in_buffer(a->conn))
			(void)amq_frames(a, 0);
		if (!a->up)
			return;
	}
}

/* After the frames: a failure answered in full publishes again from the cursor. */
static void
amq_parsed_after(struct amq *a)
{
	struct amq_parsed *pd = a->pd;

	if (pd == NULL || !a->up || !pd->failing || pd->unacked > 0)
		return;
	outbox_rewind(pd->cur);
	pd->failing = false;
	pd->hold_until_ms = amq_now_ms() + (uint64_t)pd->retry_ms;
	pd->retry_ms = amq_backoff_next(pd->retry_ms);
}

static void
amq_doc_nacked(struct amq *a, const struct amq_entry *d)
{
	amq_warn(a, "amqp: parsed document of message=%s nacked by broker %s; it will "
	    "be published again", d->sha, a->who);
}

/* basic.ack / basic.nack on channel 2 (as amq_confirm). */
static void
amq_parsed_confirm(struct amq *a, uint64_t tag, bool multiple, bool ok)
{
	struct amq_parsed *pd = a->pd;

	if (amq_answer(a, pd->cur, &pd->unacked, &pd->failing, tag, multiple, ok,
	    amq_doc_nacked) > 0)
		pd->retry_ms = AMQ_BACKOFF_MIN_MS;
	pthread_mutex_lock(&a->mu);
	pd->confirmed = outbox_cursor_confirmed(pd->cur);
	pthread_mutex_unlock(&a->mu);
}

/* basic.return on channel 2: the oldest unanswered entry of that mail. */
static void
amq_parsed_return(struct amq *a, const amqp_basic_return_t *ret)
{
	struct amq_parsed *pd = a->pd;
	amqp_message_t m;
	amqp_rpc_reply_t rr;
	char text[256], sha[65] = "";
	struct outbox_entry *e;
	struct amq_entry *d;
	size_t k, pending;
	unsigned code = ret->reply_code;

	log_escape(text, sizeof(text), ret->reply_text.bytes, ret->reply_text.len);
	/* Its body: librabbitmq waits for it with no deadline (as amq_on_return). */
	if (amq_op_begin(a, "reading a returned parsed document") == -1) {
		amq_drop(a, false);
		return;
	}
	rr = amqp_read_message(a->conn, AMQ_PCHANNEL, &m, 0);
	if (amq_op_end(a)) {
		if (rr.reply_type == AMQP_RESPONSE_NORMAL)
			amqp_destroy_message(&m);
		amq_stalled(a, "reading a returned parsed document");
		return;
	}
	if (amq_reply_ok(a, rr, "reading a returned parsed document") == -1) {
		amq_drop(a, false);
		return;
	}
	if ((m.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) &&
	    m.properties.message_id.len == 64)
		memcpy(sha, m.properties.message_id.bytes, 64);
	amqp_destroy_message(&m);
	pending = outbox_pending(pd->cur);
	for (k = 0; k < pending; k++) {
		e = outbox_entry(pd->cur, k);
		d = e->data;
		if (e->skip || d->tag == 0 || d->done || d->returned ||
		    strcmp(d->sha, sha) != 0)
			continue;
		d->returned = true;
		break;
	}
	amq_warn(a, "amqp: parsed document of message=%s returned by broker %s: %u "
	    "\"%s\" (exchange \"%s\" routing key \"%s\" reaches no queue); it will be "
	    "published again", sha[0] ? sha : "?", a->who, code, text, a->cfg.exchange,
	    a->cfg.parsed_routing_key);
}

/* A method frame on channel 2 (amq_frame).  0, or -1 when the connection was dropped. */
static int
amq_parsed_frame(struct amq *a, const amqp_frame_t *f)
{
	char text[256];
	const amqp_basic_ack_t *ack;
	const amqp_basic_nack_t *nack;
	const amqp_channel_close_t *cc;

	if (a->pd == NULL)
		return 0;
	switch (f->payload.method.id) {
	case AMQP_BASIC_ACK_METHOD:
		ack = f->payload.method.decoded;
		amq_parsed_confirm(a, ack->delivery_tag, ack->multiple, true);
		return 0;
	case AMQP_BASIC_NACK_METHOD:
		nack = f->payload.method.decoded;
		amq_parsed_confirm(a, nack->delivery_tag, nack->multiple, false);
		return 0;
	case AMQP_BASIC_RETURN_METHOD:
		amq_parsed_return(a, f->payload.method.decoded);
		return a->up ? 0 : -1;
	case AMQP_CHANNEL_CLOSE_METHOD:
		cc = f->payload.method.decoded;
		log_escape(text, sizeof(text), cc->reply_text.bytes, cc->reply_text.len);
		amq_warn(a, "amqp: broker %s closed the parsed documents' channel: %u "
		    "\"%s\"", a->who, (unsigned)cc->reply_code, text);
		amq_drop(a, false);
		return -1;
	default:
		return 0;
	}
}
