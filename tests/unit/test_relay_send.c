/*
 * Unit tests for relay_send.c: the delivery of a relayed probe, through
 * relay.h with a named route (smarthost, or -t's test server) to an SMTP
 * stand-in on loopback: one copy per recipient, each with its own Received
 * header; never to this daemon's own listener; every attempt in the outcome
 * record.  (The MX route needs DNS: tests/e2e/test_relay.py.)
 */
#include <sys/socket.h>
#include <sys/stat.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "relay.h"
#include "testutil.h"

#define OWN_IP	"203.0.113.5"
#define MAXCONN	4

static const char rules_text[] =
    "rules:\n"
    "  - name: probe\n"
    "    stage: data\n"
    "    conditions: [{mentions_own_address: true}]\n"
    "    actions: {relay: true}\n";

/* The SMTP stand-in: one thread, connections one after the other. */
struct smtpd {
	int		 fd;
	int		 port;
	pthread_t	 thread;
	int		 nconn;			/* connections served */
	char		 rcpt[MAXCONN][128];	/* the RCPT TO of each */
	char		*data[MAXCONN];		/* the DATA of each */
};

static char		 dir[64];
static struct cfg	*cfg;
static struct smtpd	 srv;

/* Serve SMTP connections until the listening socket is shut down. */
static void *
smtpd_main(void *arg)
{
	struct smtpd *s = arg;
	char line[1024];
	int c;

	while ((c = accept(s->fd, NULL, NULL)) != -1) {
		FILE *in = fdopen(dup(c), "r");
		size_t cap = 0, len = 0;
		char *data = NULL;
		int k = s->nconn;

		dprintf(c, "220 stand-in ESMTP\r\n");
		while (in != NULL && fgets(line, sizeof(line), in) != NULL) {
			if (strncasecmp(line, "EHLO", 4) == 0 || strncasecmp(line, "HELO", 4) == 0)
				dprintf(c, "250-stand-in\r\n250 8BITMIME\r\n");
			else if (strncasecmp(line, "RCPT TO:", 8) == 0) {
				if (k < MAXCONN)
					snprintf(s->rcpt[k], sizeof(s->rcpt[k]), "%.*s",
					    (int)strcspn(line + 8, "\r\n"), line + 8);
				dprintf(c, "250 ok\r\n");
			} else if (strncasecmp(line, "DATA", 4) == 0) {
				dprintf(c, "354 go\r\n");
				while (fgets(line, sizeof(line), in) != NULL &&
				    strcmp(line, ".\r\n") != 0) {
					size_t n = strlen(line);

					if (len + n + 1 > cap) {
						cap = (len + n + 1) * 2;
						data = realloc(data, cap);
						assert_non_null(data);
					}
					memcpy(data + len, line, n + 1);
					len += n;
				}
				dprintf(c, "250 2.0.0 queued as X%d\r\n", k);
			} else if (strncasecmp(line, "QUIT", 4) == 0) {
				dprintf(c, "221 bye\r\n");
				break;
			} else
				dprintf(c, "250 ok\r\n");
		}
		if (in != NULL)
			fclose(in);
		close(c);
		if (k < MAXCONN)
			s->data[k] = data;
		else
			free(data);
		s->nconn++;
	}
	return NULL;
}

/* A listening loopback port (its number in *port), or the stand-in started on it. */
static int
listen_any(int *port)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 8), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

static int
setup(void **state)
{
	char path[128], err[256];
	FILE *fp;

	snprintf(dir, sizeof(dir), "/tmp/test_relay_send.XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/spool", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/spool/messages", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/rules.yml", dir);
	assert_non_null(fp = fopen(path, "w"));
	fputs(rules_text, fp);
	fclose(fp);
	cfg = calloc(1, sizeof(*cfg));
	assert_non_null(cfg);
	cfg_defaults(cfg);
	snprintf(cfg->path, sizeof(cfg->path), "%s/fosr.yml", dir);
	snprintf(cfg->spool_dir, sizeof(cfg->spool_dir), "%s/spool", dir);
	snprintf(cfg->relay.own_addresses[0], sizeof(cfg->relay.own_addresses[0]), OWN_IP);
	cfg->relay.nown = 1;
	cfg->relay.mode = RELAY_MODE_LIVE;
	cfg->relay.caps.max_recipients = 2;
	cfg->nlisteners = 0;
	snprintf(path, sizeof(path), "%s/events.json", dir);
	assert_int_equal(log_event_open(path, "test", err, sizeof(err)), 0);
	memset(&srv, 0, sizeof(srv));
	srv.fd = listen_any(&srv.port);
	assert_int_equal(pthread_create(&srv.thread, NULL, smtpd_main, &srv), 0);
	return 0;
}

static int
teardown(void **state)
{
	shutdown(srv.fd, SHUT_RDWR);
	pthread_join(srv.thread, NULL);
	close(srv.fd);
	for (int i = 0; i < MAXCONN; i++)
		free(srv.data[i]);
	log_event_close();
	free(cfg);
	rm_rf(dir);
	return 0;
}

struct loop {
	struct event_base	*base;
	struct relay		*relay;
	int			 ticks;
};

/* Leave the loop once the relay has no job left (or after 20 s). */
static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loop *l = arg;

	if (relay_pending(l->relay) == 0 || ++l->ticks > 2000)
		event_base_loopbreak(l->base);
}

/*
 * Store msg, hand its record (rcpts: n recipients) to a relay over the
 * config as set, run until the job is done; the outcome record, malloc'd.
 */
static char *
relay_one(const char *msg, const char *const *rcpts, int n, bool test_mode)
{
	char path[256], cmd[300], sha[65], rec[2048], list[512] = "", err[512];
	struct event_base *base = event_base_new();
	struct timeval tv = { 0, 10000 };
	struct relay *r;
	struct event *t;
	struct loop l;
	char *out;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/spool/messages/tmp.eml", dir);
	assert_non_null(fp = fopen(path, "w"));
	fputs(msg, fp);
	fclose(fp);
	snprintf(cmd, sizeof(cmd), "sha256sum %s", path);
	assert_non_null(fp = popen(cmd, "r"));
	assert_int_equal(fscanf(fp, "%64s", sha), 1);
	pclose(fp);
	snprintf(cmd, sizeof(cmd), "%s/spool/messages/%s.eml", dir, sha);
	assert_int_equal(rename(path, cmd), 0);
	for (int i = 0; i < n; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s\"%s\"",
		    i ? "," : "", rcpts[i]);
	snprintf(rec, sizeof(rec),
	    "{\"time\":\"2026-11-27T04:35:30.123456Z\",\"session\":\"00000000000000ab\","
	    "\"queue_id\":\"4ABCDEF0123\",\"sha256\":\"%s\",\"size\":%zu,"
	    "\"src_ip\":\"198.51.100.7\",\"src_port\":40000,\"dst_ip\":\"127.0.0.1\","
	    "\"dst_port\":25,\"helo\":\"spammer.example\",\"protocol\":\"ESMTP\","
	    "\"mail_from\":\"drop@spammer.example\",\"rcpt_to\":[%s]}", sha, strlen(msg), list);
	assert_non_null(base);
	r = relay_new(base, cfg, "mx.example.test", err, sizeof(err));
	if (r == NULL)
		fail_msg("relay_new: %s", err);
	if (test_mode && relay_set_test_mode(r, true, err, sizeof(err)) == -1)
		fail_msg("test mode: %s", err);
	relay_consider(r, rec, strlen(rec));
	l.base = base;
	l.relay = r;
	l.ticks = 0;
	t = event_new(base, -1, EV_PERSIST, tick_cb, &l);
	event_add(t, &tv);
	event_base_dispatch(base);
	event_free(t);
	assert_int_equal(relay_pending(r), 0);
	relay_free(r);
	event_base_free(base);
	snprintf(path, sizeof(path), "%s/spool/relay/%s.json", dir, sha);
	out = slurp(path, NULL);
	return out;
}

/* Occurrences of needle in s. */
static int
count(const char *s, const char *needle)
{
	int n = 0;

	for (const char *p = s; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

static const char probe_msg[] =
    "From: drop@spammer.example\r\n"
    "Subject: relay test " OWN_IP "\r\n"
    "\r\n"
    "hello\r\n";

/*
 * Through the smarthost: one copy per recipient, each with a Received
 * header naming its recipient before the mail's own bytes; each attempt in
 * the outcome record with the address and port it went to.
 */
static void
test_smarthost_each_rcpt(void **state)
{
	const char *rcpts[] = { "a@rcpt.example", "b@rcpt.example" };
	char *out, want[64];

	(void)state;
	snprintf(cfg->relay.smarthost, sizeof(cfg->relay.smarthost), "127.0.0.1:%d", srv.port);
	out = relay_one(probe_msg, rcpts, 2, false);
	assert_int_equal(srv.nconn, 2);
	for (int i = 0; i < 2; i++) {
		snprintf(want, sizeof(want), "<%s>", rcpts[i]);
		assert_string_equal(srv.rcpt[i], want);
		assert_non_null(srv.data[i]);
		assert_int_equal(strncmp(srv.data[i], "Received: ", 10), 0);
		snprintf(want, sizeof(want), "for <%s>", rcpts[i]);
		if (strstr(srv.data[i], want) == NULL)
			fail_msg("copy %d: no \"%s\" in \"%s\"", i, want, srv.data[i]);
		assert_non_null(strstr(srv.data[i], "\r\n" "From: drop@spammer.example\r\n"
		    "Subject: relay test " OWN_IP "\r\n\r\nhello\r\n"));
		assert_int_equal(count(srv.data[i], "Received: "), 1);
	}
	assert_non_null(strstr(out, "\"status\":\"delivered\""));
	assert_int_equal(count(out, "\"ip\":\"127.0.0.1\""), 2);
	snprintf(want, sizeof(want), "\"port\":%d", srv.port);
	assert_int_equal(count(out, want), 2);
	free(out);
}

/* -t: every copy goes to the test recipient through the test server, not the smarthost. */
static void
test_test_mode_route(void **state)
{
	const char *rcpts[] = { "a@rcpt.example" };
	char *out;

	(void)state;
	snprintf(cfg->relay.smarthost, sizeof(cfg->relay.smarthost), "127.0.0.1:1");
	snprintf(cfg->relay.test_server, sizeof(cfg->relay.test_server), "127.0.0.1:%d", srv.port);
	snprintf(cfg->relay.test_recipient, sizeof(cfg->relay.test_recipient), "tester@lab.example");
	out = relay_one(probe_msg, rcpts, 1, true);
	assert_int_equal(srv.nconn, 1);
	assert_string_equal(srv.rcpt[0], "<tester@lab.example>");
	assert_non_null(strstr(out, "\"target_rcpt\":\"tester@lab.example\""));
	assert_non_null(strstr(out, "\"rcpt\":\"a@rcpt.example\""));
	assert_non_null(strstr(out, "\"test_mode\":true"));
	free(out);
}

/*
 * Never to this daemon's own listener, even the operator's smarthost: a
 * listener on that address and port, or on every address (0.0.0.0) with the
 * smarthost on loopback.  Nothing connects; the attempt says why.
 */
static void
test_own_listener_refused(void **state)
{
	const char *rcpts[] = { "a@rcpt.example" };
	const char *addrs[] = { "127.0.0.1", "0.0.0.0" };
	char *out;

	(void)state;
	snprintf(cfg->relay.smarthost, sizeof(cfg->relay.smarthost), "127.0.0.1:%d", srv.port);
	for (int i = 0; i < 2; i++) {
		memset(&cfg->listeners[0], 0, sizeof(cfg->listeners[0]));
		snprintf(cfg->listeners[0].address, sizeof(cfg->listeners[0].address), "%s",
		    addrs[i]);
		cfg->listeners[0].port = srv.port;
		cfg->nlisteners = 1;
		out = relay_one(i == 0 ? probe_msg : "Subject: again " OWN_IP "\r\n\r\nx\r\n",
		    rcpts, 1, false);
		assert_int_equal(srv.nconn, 0);
		if (strstr(out, "this daemon's own listener") == NULL)
			fail_msg("listener %s: outcome %s", addrs[i], out);
		assert_non_null(strstr(out, "\"status\":\"failed\""));
		free(out);
	}
	/* The same port on another address is not ours. */
	snprintf(cfg->listeners[0].address, sizeof(cfg->listeners[0].address), "192.0.2.1");
	out = relay_one("Subject: third " OWN_IP "\r\n\r\nx\r\n", rcpts, 1, false);
	assert_int_equal(srv.nconn, 1);
	assert_non_null(strstr(out, "\"status\":\"delivered\""));
	free(out);
}

/* A route that cannot be reached or parsed: the recipient fails, the attempt says so. */
static void
test_unreachable_and_bad_route(void **state)
{
	const char *rcpts[] = { "a@rcpt.example" };
	char *out, want[32];
	int port, fd;

	(void)state;
	fd = listen_any(&port);
	close(fd);		/* nothing listens there now */
	snprintf(cfg->relay.smarthost, sizeof(cfg->relay.smarthost), "127.0.0.1:%d", port);
	out = relay_one(probe_msg, rcpts, 1, false);
	assert_non_null(strstr(out, "\"status\":\"failed\""));
	snprintf(want, sizeof(want), "\"port\":%d", port);
	assert_non_null(strstr(out, want));
	free(out);
	snprintf(cfg->relay.smarthost, sizeof(cfg->relay.smarthost), "127.0.0.1:99999");
	out = relay_one("Subject: other " OWN_IP "\r\n\r\nx\r\n", rcpts, 1, false);
	/* The reason is in the outcome, as an attempt like the others. */
	assert_non_null(strstr(out, "\"status_text\":\"bad smarthost/test server\""));
	assert_non_null(strstr(out, "\"status\":\"failed\""));
	free(out);
	assert_int_equal(srv.nconn, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_smarthost_each_rcpt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_test_mode_route, setup, teardown),
		cmocka_unit_test_setup_teardown(test_own_listener_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreachable_and_bad_route, setup, teardown),
	};

	log_init(LOG_LVL_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
