/*
 * libFuzzer target: a whole SMTP session, as tmux fuzzes its input parser,
 * through a libevent bufferevent_pair.  One end is a real smtp_session on the
 * real spool (a temporary directory, on tmpfs when /dev/shm exists); the
 * other end plays the client: it writes the input in a few chunks (split at
 * positions derived from the input, to exercise partial lines), runs the loop
 * until nothing moves, waits for pending spool commits, reads and discards
 * the replies, then sends EOF and runs the loop until the session is gone.
 *
 * Nothing sleeps a fixed time.  The loop blocks only while a spool commit is
 * in flight (the spool's counters say so: queued > commits), and then wakes
 * on the worker's eventfd, so commits are always seen in the same order
 * (runs are reproducible).  Timers run on a virtual clock: when nothing else
 * can move, the earliest pending timer of the session (banner delay, error
 * sleep, stop grace) is fired at once, so the error sleep (three of the
 * configurations) and a banner delay (one) cost no time.  Between two
 * chunks only timers due within FUZZ_VT_CHUNK_MS fire (a client that waits
 * for its replies a few seconds); after EOF every timer does.  An impatient
 * client (one in four) sends its EOF without that wait.
 *
 * The pair uses BEV_OPT_DEFER_CALLBACKS: a socket bufferevent never calls the
 * session back from inside its own bufferevent_write(), and without deferral
 * a pair would, which is a re-entrancy the daemon never sees.
 *
 * One of a few configurations is picked from a hash of the input (AUTH
 * outcome, a tiny message size, a low error limit), so one corpus reaches all
 * of them; one input in four is a slow reader that reads no reply before it
 * has sent everything, so the session's output piles up; one in eight gets a
 * graceful stop (smtp_server_stop) part-way through.  Every reply line is
 * checked (code, printable ASCII, CRLF, 512 octets): attacker bytes echoed in
 * a reply must never break the reply syntax.
 *
 * FUZZ_SMTP_STRICT=1 aborts when a session outlives its EOF (a hang);
 * FUZZ_SMTP_VERBOSE=1 prints one line per input (replies, mails, waits).
 */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "persona.h"
#include "smtp_session.h"
#include "spool.h"

#define FUZZ_NCFG		4
#define FUZZ_PUMP_MAX		10000	/* non-blocking loop turns per pump */
#define FUZZ_SETTLE_MAX		1000	/* commit waits and timer firings per settle */
#define FUZZ_COMMIT_WAIT_S	10	/* one commit taking longer is a hang */
#define FUZZ_VT_CHUNK_MS	5000	/* between chunks, timers due within this fire */
#define FUZZ_CLEAN_EVERY	5000	/* inputs between cleanups of messages/ */

int	LLVMFuzzerInitialize(int *, char ***);
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void	 fuzz_init(void);
static void	 fuzz_atexit(void);
static int	 fuzz_rm_cb(const char *, const struct stat *, int, struct FTW *);
static void	 fuzz_clean_messages(void);
static void	 reply_byte(unsigned char);
static void	 client_read_cb(struct bufferevent *, void *);
static void	 wake_cb(evutil_socket_t, short, void *);
static void	 on_mail_cb(void *, const char *, size_t);
static void	 pump(void);
static bool	 wait_event(long sec);
static bool	 commit_in_flight(void);
static int	 vt_find_cb(const struct event_base *, const struct event *, void *);
static bool	 vt_fire(long max_ms);
static void	 settle(bool final);
static uint32_t	 fuzz_hash(const uint8_t *, size_t);

static struct event_base	*base;
static struct event		*wake;
static struct cfg		 cfgs[FUZZ_NCFG];
static struct smtp_server	*srv;
static struct spool		*sp;
static char			 spool_path[64];
static char			 msg_path[96];
static uint64_t			 rx_bytes;	/* reply bytes the client has read */
static size_t			 rx_pos;	/* column in the current reply line */
static bool			 rx_cr;		/* the reply line's CR was seen */
static bool			 strict;
static unsigned long		 runs;
static bool			 ready;
static bool			 wake_fired;
static bool			 verbose;	/* FUZZ_SMTP_VERBOSE=1: one line per input */
static unsigned long		 nmails;	/* messages made durable (on_mail) */
static unsigned long		 nwaits;	/* blocking waits (verbose output) */
static unsigned long		 nfired;	/* timers fired on the virtual clock */

/* What vt_find_cb looks for: the pending timer that expires first. */
struct vt_find {
	struct event	*ev;
	struct timeval	 when;
};

/*
 * Check one byte of the reply stream: every reply line is three digits
 * (2xx..5xx), a space or a dash, printable ASCII, CRLF, at most 512 octets
 * (RFC 5321 4.5.3.1.5).  Attacker bytes echoed into a reply ({arg}) must
 * never break this.
 */
static void
reply_byte(unsigned char c)
{
	bool ok;

	if (rx_pos == 0)
		ok = c >= '2' && c <= '5';
	else if (rx_pos < 3)
		ok = c >= '0' && c <= '9';
	else if (rx_pos == 3)
		ok = c == ' ' || c == '-';
	else if (rx_cr)
		ok = c == '\n';
	else
		ok = c == '\r' || (c >= 0x20 && c <= 0x7e);
	if (!ok || rx_pos >= 512) {
		fprintf(stderr, "fuzz_smtp_session: malformed reply: byte 0x%02x at "
		    "column %zu\n", c, rx_pos);
		abort();
	}
	if (rx_cr) {
		rx_pos = 0;
		rx_cr = false;
	} else {
		rx_cr = c == '\r' && rx_pos > 3;
		rx_pos++;
	}
}

/* Check, count and discard whatever the session sent. */
static void
client_read_cb(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_iovec vec[4];
	int nv;

	while ((nv = evbuffer_peek(in, -1, NULL, vec, 4)) > 0) {
		size_t n = 0;

		for (int i = 0; i < nv && i < 4; i++) {
			const unsigned char *p = vec[i].iov_base;

			for (size_t k = 0; k < vec[i].iov_len; k++)
				reply_byte(p[k]);
			n += vec[i].iov_len;
		}
		rx_bytes += n;
		evbuffer_drain(in, n);
	}
}

/* A message is durable: count it. */
static void
on_mail_cb(void *arg, const char *record, size_t len)
{
	nmails++;
}

/* The wake-up timer of a blocking wait: nothing to do. */
static void
wake_cb(evutil_socket_t fd, short what, void *arg)
{
	*(bool *)arg = true;
}

/* Run the loop without blocking until no callback is active and nothing moves. */
static void
pump(void)
{
	int idle = 0;

	for (int i = 0; i < FUZZ_PUMP_MAX && idle < 2; i++) {
		uint64_t rx = rx_bytes;
		unsigned ns = smtp_server_sessions(srv);

		event_base_loop(base, EVLOOP_NONBLOCK);
		if (rx != rx_bytes || ns != smtp_server_sessions(srv) ||
		    event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE) > 0)
			idle = 0;
		else
			idle++;
	}
}

/* Block until some event fires or sec pass; true if it was not the timeout. */
static bool
wait_event(long sec)
{
	struct timeval tv = { sec, 0 };

	wake_fired = false;
	nwaits++;
	evtimer_add(wake, &tv);
	event_base_loop(base, EVLOOP_ONCE);
	evtimer_del(wake);
	return !wake_fired;
}

/*
 * Has the spool worker a message it has not finished?  Then it will write
 * its eventfd, and a blocking wait ends as soon as it does.  (A finished
 * group whose eventfd is not read yet is pump()'s: epoll sees it.)
 */
static bool
commit_in_flight(void)
{
	struct spool_stats st;

	spool_get_stats(sp, &st);
	return st.queued > st.commits;
}

/* event_base_foreach_event callback: note the pending timer due first. */
static int
vt_find_cb(const struct event_base *b, const struct event *ev, void *arg)
{
	struct vt_find *f = arg;
	struct timeval tv;

	if (ev == wake || event_get_fd(ev) != -1 ||
	    !event_pending(ev, EV_TIMEOUT, &tv))
		return 0;
	if (f->ev == NULL || evutil_timercmp(&tv, &f->when, <)) {
		f->ev = (struct event *)ev;
		f->when = tv;
	}
	return 0;
}

/*
 * The virtual clock: fire the pending timer due first now, if it is due
 * within max_ms (< 0: any).  The timers are the session's (banner delay,
 * error sleep, stop grace): no bufferevent timeout is set.  True if one fired.
 */
static bool
vt_fire(long max_ms)
{
	struct vt_find f = { NULL, { 0, 0 } };
	struct timeval now, left;

	event_base_foreach_event(base, vt_find_cb, &f);
	if (f.ev == NULL)
		return false;
	if (max_ms >= 0) {
		event_base_gettimeofday_cached(base, &now);
		evutil_timersub(&f.when, &now, &left);
		if (left.tv_sec >= 0 &&
		    (long long)left.tv_sec * 1000 + left.tv_usec / 1000 > max_ms)
			return false;
	}
	/* A non-persistent event is deleted (timeout too) when its callback runs. */
	event_active(f.ev, EV_TIMEOUT, 1);
	nfired++;
	return true;
}

/*
 * Run the loop until nothing can move: wait for each commit in flight (a
 * real wait, ended by the worker's eventfd), fire due timers (virtual).
 * final: after EOF, every timer is due.
 */
static void
settle(bool final)
{
	for (int i = 0; i < FUZZ_SETTLE_MAX; i++) {
		pump();
		if (commit_in_flight()) {
			if (!wait_event(FUZZ_COMMIT_WAIT_S) && commit_in_flight()) {
				fprintf(stderr, "fuzz_smtp_session: a commit took over %d s\n",
				    FUZZ_COMMIT_WAIT_S);
				abort();
			}
			continue;
		}
		if (smtp_server_sessions(srv) == 0 || !vt_fire(final ? -1 : FUZZ_VT_CHUNK_MS))
			return;
	}
}

/* FNV-1a over the input: picks the configuration and the chunk splits. */
static uint32_t
fuzz_hash(const uint8_t *p, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 16777619u;
	}
	return h;
}

/* nftw callback: remove one entry of the temporary spool. */
static int
fuzz_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)remove(path);
	return 0;
}

/* Keep the spool's messages/ from filling tmpfs in a long run. */
static void
fuzz_clean_messages(void)
{
	DIR *d;
	struct dirent *de;
	int dfd;

	if ((d = opendir(msg_path)) == NULL)
		return;
	dfd = dirfd(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			(void)unlinkat(dfd, de->d_name, 0);
	closedir(d);
}

/* Stop the spool worker and remove the temporary spool. */
static void
fuzz_atexit(void)
{
	if (!ready)
		return;
	ready = false;
	smtp_server_free(srv);	/* and the credential policy, loaded at the first AUTH */
	srv = NULL;
	spool_free(sp);
	sp = NULL;
	event_free(wake);
	event_base_free(base);
	(void)nftw(spool_path, fuzz_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Build the event base, configurations, persona and spool once per process. */
static void
fuzz_init(void)
{
	struct spool_opts so;
	struct smtp_server_opts sopts;
	char err[256];
	const char *env;

	if (ready)
		return;
	log_init(LOG_LVL_ERR);
	strict = (env = getenv("FUZZ_SMTP_STRICT")) != NULL && *env == '1';
	verbose = (env = getenv("FUZZ_SMTP_VERBOSE")) != NULL && *env == '1';
	if ((base = event_base_new()) == NULL)
		abort();
	if ((wake = event_new(base, -1, 0, wake_cb, &wake_fired)) == NULL)
		abort();

	for (int i = 0; i < FUZZ_NCFG; i++) {
		struct cfg *c = &cfgs[i];

		cfg_defaults(c);
		c->event_log[0] = '\0';
		c->spool_min_free = 0;
		c->limits.idle_timeout = 0;
		c->limits.session_lifetime = 0;
		c->limits.banner_delay_ms = 0;
		c->limits.banner_jitter_ms = 0;
		c->limits.message_size = 1024 * 1024;
	}
	/* 0, 1, 2: the default error sleep (virtual time). */
	/* 1: every AUTH fails, tiny messages (too-big paths), a banner delay. */
	cfgs[1].auth_outcome = AUTH_OUTCOME_REJECT;
	cfgs[1].limits.message_size = 64;
	cfgs[1].limits.banner_delay_ms = 300;
	cfgs[1].limits.banner_jitter_ms = 200;
	/* 2: AUTH works the third time, short lines, few recipients, few errors. */
	cfgs[2].auth_outcome = AUTH_OUTCOME_ACCEPT_AFTER;
	cfgs[2].auth_accept_after = 2;
	cfgs[2].limits.line_length = 512;
	cfgs[2].limits.recipients = 3;
	cfgs[2].limits.soft_errors = 2;
	cfgs[2].limits.hard_errors = 4;
	/* 3: the submission listener, a mid-sized limit, no error sleep. */
	cfgs[3].limits.message_size = 4096;
	cfgs[3].limits.error_sleep = 0;

	snprintf(spool_path, sizeof(spool_path), "%s/fosr-fuzz-smtp-XXXXXX",
	    access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (mkdtemp(spool_path) == NULL)
		abort();
	snprintf(msg_path, sizeof(msg_path), "%s/messages", spool_path);
	memset(&so, 0, sizeof(so));
	so.dir = spool_path;
	so.hostname = "mail.example.com";
	so.min_free = 0;
	if ((sp = spool_open(base, &so, err, sizeof(err))) == NULL) {
		fprintf(stderr, "fuzz_smtp_session: %s\n", err);
		abort();
	}

	memset(&sopts, 0, sizeof(sopts));
	sopts.base = base;
	sopts.cfg = &cfgs[0];
	if ((sopts.persona = persona_default()) == NULL)
		abort();
	sopts.ssl_ctx = NULL;
	sopts.spool = sp;
	sopts.hostname = "mail.example.com";
	sopts.on_mail = on_mail_cb;
	if ((srv = smtp_server_new(&sopts)) == NULL)
		abort();
	ready = true;
	atexit(fuzz_atexit);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_init();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bufferevent *pair[2];
	struct sockaddr_in peer;
	uint32_t h;
	size_t cut[4], ncut, off;
	unsigned long mails0 = nmails, waits0 = nwaits, fired0 = nfired;
	int variant;
	bool slow_reader, impatient;
	size_t stop_at;

	fuzz_init();
	if (++runs % FUZZ_CLEAN_EVERY == 0)
		fuzz_clean_messages();

	h = fuzz_hash(data, size);
	variant = (int)(h % FUZZ_NCFG);
	smtp_server_set_cfg(srv, &cfgs[variant]);

	memset(&peer, 0, sizeof(peer));
	peer.sin_family = AF_INET;
	peer.sin_port = htons(40000 + (h >> 24));
	peer.sin_addr.s_addr = htonl(0xcb007105);	/* 203.0.113.5 */

	if (bufferevent_pair_new(base, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS,
	    pair) == -1)
		abort();
	rx_bytes = 0;
	rx_pos = 0;
	rx_cr = false;
	bufferevent_setcb(pair[1], client_read_cb, NULL, NULL, NULL);
	/*
	 * A slow reader (one input in four) reads no reply until all its
	 * commands are sent, as a pipelining spam bot: the session's output
	 * piles up (write block, closing with unsent output).
	 */
	slow_reader = ((h >> 20) & 3) == 0;
	/*
	 * An impatient client (one input in four) closes right after its last
	 * bytes, without waiting for the commit of its last message or for the
	 * session's timers: EOF during a commit (SF_PEER_EOF).  Which of the EOF
	 * and the commit's end the session sees first is up to the worker thread.
	 */
	impatient = ((h >> 29) & 3) == 0;
	bufferevent_enable(pair[1], slow_reader ? EV_WRITE : EV_READ | EV_WRITE);
	if (smtp_session_new_bev(srv, &cfgs[variant].listeners[variant == 3 ? 2 : 0],
	    pair[0], (struct sockaddr *)&peer, sizeof(peer)) == NULL)
		abort();	/* only out of memory; pair[0] is freed */
	/* With a banner delay, one input in two talks before the greeting. */
	if ((h >> 28) & 1)
		settle(false);
	else
		pump();

	/* One input in eight sees a graceful stop after one of its chunks. */
	stop_at = ((h >> 16) & 7) == 0 ? (h >> 12) % 4 : SIZE_MAX;
	smtp_server_resume(srv);

	/* Up to three cuts, ascending, at input-derived positions. */
	ncut = size > 1 ? (h >> 8) % 4 : 0;
	for (size_t k = 0; k < ncut; k++)
		cut[k] = 1 + (size_t)((h >> (4 * k)) * 2654435761u % (size - 1));
	for (size_t a = 1; a < ncut; a++)
		for (size_t b = a; b > 0 && cut[b - 1] > cut[b]; b--) {
			size_t t = cut[b];
			cut[b] = cut[b - 1];
			cut[b - 1] = t;
		}
	off = 0;
	for (size_t k = 0; k <= ncut; k++) {
		size_t end = k < ncut ? cut[k] : size;

		if (end > off) {
			bufferevent_write(pair[1], data + off, end - off);
			off = end;
		}
		if (stop_at == k) {
			/* SIGTERM arrives: a graceful stop in the middle of the session. */
			smtp_server_stop(srv);
		}
		/* A message end may be waiting for the commit worker. */
		if (impatient && k == ncut && !slow_reader)
			pump();
		else
			settle(false);
	}

	if (slow_reader) {
		bufferevent_enable(pair[1], EV_READ);
		if (impatient)
			pump();
		else
			settle(false);
	}

	/* EOF from the client, then wait for the session (and its commit) to end. */
	bufferevent_flush(pair[1], EV_WRITE, BEV_FINISHED);
	settle(true);
	if (smtp_server_sessions(srv) > 0) {
		if (strict) {
			fprintf(stderr, "fuzz_smtp_session: session alive after EOF, "
			    "nothing pending\n");
			abort();
		}
		smtp_server_close_all(srv);
	}
	if (rx_pos != 0) {
		fprintf(stderr, "fuzz_smtp_session: reply cut off at column %zu\n", rx_pos);
		abort();
	}
	if (verbose)
		fprintf(stderr, "fuzz_smtp_session: size=%zu cfg=%d chunks=%zu reply_bytes=%llu "
		    "mails=%lu waits=%lu timers=%lu slow_reader=%d\n", size, variant,
		    ncut + 1, (unsigned long long)rx_bytes, nmails - mails0,
		    nwaits - waits0, nfired - fired0, (int)slow_reader);
	bufferevent_free(pair[1]);
	pump();	/* run the bufferevents' deferred finalizers */
	smtp_server_resume(srv);
	return 0;
}
