/*
 * listener.h on loopback: what it binds and says it bound, a clear error for
 * an address in use, and the session caps (all listeners together and per
 * client address), whose refusal is the persona's 421 before any session.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "config.h"
#include "listener.h"
#include "log.h"
#include "persona.h"
#include "smtp_session.h"
#include "spool.h"
#include "testutil.h"

struct fixture {
	char			 dir[64];
	struct event_base	*base;
	struct cfg		 cfg;
	struct spool		*sp;
	struct smtp_server	*srv;
	struct listeners	*ls;
	int			 port;
};

/*
 * A port free on 127.0.0.1 now, below the kernel's ephemeral range: a
 * bind(0) pick, once released, may be given to any outgoing connection
 * before the listener under test binds it.
 */
static int
free_port(void)
{
	struct sockaddr_in	sin;
	FILE			*f;
	static int		 seeded;
	int			 low = 32768, port, fd;

	if (!seeded) {
		srandom((unsigned)getpid() ^ (unsigned)time(NULL));
		seeded = 1;
	}
	if ((f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) != NULL) {
		if (fscanf(f, "%d", &low) != 1)
			low = 32768;
		fclose(f);
	}
	for (;;) {
		port = low > 11024 ? 10000 + (int)(random() % (low - 10000)) : 0;
		fd = socket(AF_INET, SOCK_STREAM, 0);
		assert_true(fd >= 0);
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sin.sin_port = htons(port);
		if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0)
			break;
		close(fd);
	}
	if (port == 0) {
		socklen_t sl = sizeof(sin);

		assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
		port = ntohs(sin.sin_port);
	}
	close(fd);
	return port;
}

/* The server of the fixture's config and spool. */
static struct smtp_server *
new_server(struct fixture *f)
{
	struct smtp_server_opts o;
	struct smtp_server *srv;

	memset(&o, 0, sizeof(o));
	o.base = f->base;
	o.cfg = &f->cfg;
	assert_non_null(o.persona = persona_default());
	o.spool = f->sp;
	o.hostname = "mail.example.com";
	assert_non_null(srv = smtp_server_new(&o));
	return srv;
}

/* A server on a spool with one plain listener on 127.0.0.1 (not bound yet). */
static int
setup(void **state)
{
	struct fixture	*f = calloc(1, sizeof(*f));
	struct spool_opts so;
	char		 err[256];

	assert_non_null(f);
	log_init(LOG_LVL_ERR);
	assert_non_null(f->base = event_base_new());
	cfg_defaults(&f->cfg);
	f->cfg.event_log[0] = '\0';
	f->cfg.spool_min_free = 0;
	f->cfg.limits.error_sleep = 0;
	f->cfg.limits.banner_delay_ms = 0;
	f->cfg.limits.banner_jitter_ms = 0;
	f->cfg.port_offset = 0;
	f->cfg.nlisteners = 1;
	f->port = free_port();
	snprintf(f->cfg.listeners[0].address, sizeof(f->cfg.listeners[0].address), "127.0.0.1");
	f->cfg.listeners[0].port = f->port;
	f->cfg.listeners[0].tls = TLS_MODE_PLAIN;
	f->cfg.listeners[0].if_available = false;
	snprintf(f->cfg.listeners[0].name, sizeof(f->cfg.listeners[0].name), "smtp");
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_listener.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	memset(&so, 0, sizeof(so));
	so.dir = f->dir;
	so.hostname = "mail.example.com";
	assert_non_null(f->sp = spool_open(f->base, &so, err, sizeof(err)));
	f->srv = new_server(f);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture	*f = *state;

	smtp_server_close_all(f->srv);
	listener_free(f->ls);
	smtp_server_free(f->srv);
	spool_free(f->sp);
	event_base_free(f->base);
	rm_rf(f->dir);
	free(f);
	return 0;
}

/* A client connected to the listener. */
static int
client(struct fixture *f)
{
	struct sockaddr_in	sin;
	int			fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)f->port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

/*
 * Run the loop until fd has a first line (or EOF) for it, 5 s at most;
 * returns the line without CRLF, "" at EOF before any byte.
 */
static const char *
first_line(struct fixture *f, int fd)
{
	static char	 line[512];
	size_t		 n = 0;
	struct pollfd	 p = { .fd = fd, .events = POLLIN };

	for (int i = 0; i < 500; i++) {
		ssize_t	r;

		event_base_loop(f->base, EVLOOP_NONBLOCK);
		if (poll(&p, 1, 10) != 1)
			continue;
		if ((r = read(fd, line + n, sizeof(line) - 1 - n)) <= 0)
			break;
		n += (size_t)r;
		line[n] = '\0';
		if (strstr(line, "\r\n") != NULL) {
			*strstr(line, "\r\n") = '\0';
			return line;
		}
	}
	line[n] = '\0';
	if (n == 0)
		return "";
	fail_msg("no line within 5 s: \"%s\"", line);
	return NULL;
}

/* Read until EOF (5 s at most): the refused connection is closed. */
static void
assert_closed(struct fixture *f, int fd)
{
	struct pollfd	p = { .fd = fd, .events = POLLIN };
	char		buf[256];

	for (int i = 0; i < 500; i++) {
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		if (poll(&p, 1, 10) == 1 && read(fd, buf, sizeof(buf)) <= 0)
			return;
	}
	fail_msg("connection still open");
}

/* Run the loop until the server counts n sessions (5 s at most). */
static void
wait_sessions(struct fixture *f, unsigned n)
{
	struct timespec	ts = { 0, 10 * 1000 * 1000 };

	for (int i = 0; i < 500 && smtp_server_sessions(f->srv) != n; i++) {
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		if (smtp_server_sessions(f->srv) != n)
			nanosleep(&ts, NULL);
	}
	assert_int_equal(smtp_server_sessions(f->srv), n);
}

static void
bind_enable(struct fixture *f)
{
	char	err[256] = "";

	f->ls = listener_bind(f->srv, err, sizeof(err));
	if (f->ls == NULL)
		fail_msg("listener_bind: %s", err);
	listener_enable(f->ls);
}

/* The ready line's description; a second bind of the same port names it. */
static void
test_bind_describe(void **state)
{
	struct fixture	*f = *state;
	char		 want[128], err[256] = "", port[16];
	struct smtp_server *srv2;

	bind_enable(f);
	snprintf(want, sizeof(want), "smtp 127.0.0.1:%d ", f->port);
	if (strncmp(listener_describe(f->ls), want, strlen(want)) != 0)
		fail_msg("describe \"%s\", wanted \"%s...\"", listener_describe(f->ls), want);

	srv2 = new_server(f);
	assert_null(listener_bind(srv2, err, sizeof(err)));
	smtp_server_free(srv2);
	snprintf(port, sizeof(port), "%d", f->port);
	if (strstr(err, "127.0.0.1") == NULL || strstr(err, port) == NULL)
		fail_msg("error \"%s\" names neither the address nor the port", err);
	/* The failed bind left the first listener's close hook alone. */
	assert_true(smtp_server_on_close_is(f->srv, f->ls));
}

/* A client gets the banner; with accepting disabled it waits, then gets it. */
static void
test_accept_and_disable(void **state)
{
	struct fixture	*f = *state;
	int		 c1, c2;

	bind_enable(f);
	c1 = client(f);
	assert_true(strncmp(first_line(f, c1), "220 mail.example.com ", 21) == 0);
	wait_sessions(f, 1);

	listener_disable(f->ls);
	c2 = client(f);		/* queued by the kernel, not accepted */
	for (int i = 0; i < 10; i++) {
		struct timespec	ts = { 0, 10 * 1000 * 1000 };

		event_base_loop(f->base, EVLOOP_NONBLOCK);
		nanosleep(&ts, NULL);
	}
	assert_int_equal(smtp_server_sessions(f->srv), 1);
	listener_enable(f->ls);
	assert_true(strncmp(first_line(f, c2), "220 ", 4) == 0);
	wait_sessions(f, 2);
	close(c1);
	close(c2);
	wait_sessions(f, 0);
}

/* sessions_per_ip: the next session from that address gets 421; a closed one frees its slot. */
static void
test_per_ip_cap(void **state)
{
	struct fixture	*f = *state;
	int		 c1, c2, c3;

	f->cfg.limits.sessions_per_ip = 1;
	f->cfg.limits.sessions = 0;
	bind_enable(f);
	c1 = client(f);
	assert_true(strncmp(first_line(f, c1), "220 ", 4) == 0);
	c2 = client(f);
	assert_string_equal(first_line(f, c2),
	    "421 4.7.0 mail.example.com Error: too many connections from 127.0.0.1");
	assert_closed(f, c2);
	assert_int_equal(smtp_server_sessions(f->srv), 1);
	close(c1);
	wait_sessions(f, 0);
	c3 = client(f);
	assert_true(strncmp(first_line(f, c3), "220 ", 4) == 0);
	close(c2);
	close(c3);
}

/* sessions: over the cap for all listeners, any address gets 421. */
static void
test_sessions_cap(void **state)
{
	struct fixture	*f = *state;
	int		 c1, c2;

	f->cfg.limits.sessions_per_ip = 0;
	f->cfg.limits.sessions = 1;
	bind_enable(f);
	c1 = client(f);
	assert_true(strncmp(first_line(f, c1), "220 ", 4) == 0);
	c2 = client(f);
	assert_string_equal(first_line(f, c2), "421 4.3.2 All server ports are busy");
	assert_closed(f, c2);
	assert_int_equal(smtp_server_sessions(f->srv), 1);
	close(c1);
	close(c2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bind_describe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_accept_and_disable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_per_ip_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sessions_cap, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
