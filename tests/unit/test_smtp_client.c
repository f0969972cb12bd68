/*
 * Unit tests for smtp_client.c's DATA writer: every line end goes out as
 * CRLF (bare CR and bare LF included: no smuggling sequence is relayed),
 * dots are stuffed at every line start, and the terminator follows a line end.
 * Then whole deliveries against a scripted server on the test's own loop.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "smtp_client.h"

/* smtp_client_body(hdr, msg) as a NUL-terminated string (caller frees). */
static char *
body(const char *hdr, const char *msg, size_t msglen)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	char *s;

	assert_non_null(b);
	smtp_client_body(b, (const unsigned char *)hdr, strlen(hdr),
	    (const unsigned char *)msg, msglen);
	n = evbuffer_get_length(b);
	s = malloc(n + 1);
	assert_non_null(s);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	evbuffer_free(b);
	return s;
}

/*
 * The payload is want; SIZE= declares its length less the terminator and
 * the stuffing dots (a line start "..": one of them).
 */
static void
check(const char *hdr, const char *msg, const char *want)
{
	char *got = body(hdr, msg, strlen(msg));
	size_t n = strlen(want) - 3, bol = 1;

	assert_string_equal(got, want);
	for (size_t i = 0; i + 3 < strlen(want); i++) {
		if (bol && want[i] == '.')
			n--, i++;
		bol = want[i] == '\n';
	}
	assert_int_equal(smtp_client_body_size((const unsigned char *)hdr, strlen(hdr),
	    (const unsigned char *)msg, strlen(msg)), n);
	free(got);
}

static void
test_crlf_untouched_dots_stuffed(void **state)
{
	check("H: 1\r\n", "a\r\n.b\r\n..c\r\n.\r\nend\r\n",
	    "H: 1\r\na\r\n..b\r\n...c\r\n..\r\nend\r\n.\r\n");
	check("", ".first\r\n", "..first\r\n.\r\n");
	check("", "", ".\r\n");
}

static void
test_bare_line_ends_made_crlf(void **state)
{
	/* Bare LF, bare CR, LF.LF and CR.CR: each a line end, dots stuffed. */
	check("", "a\nb\r\n", "a\r\nb\r\n.\r\n");
	check("", "a\rb\r\n", "a\r\nb\r\n.\r\n");
	check("", "x\n.\nMAIL FROM:<a@b>\r\n", "x\r\n..\r\nMAIL FROM:<a@b>\r\n.\r\n");
	check("", "x\r.\rRCPT TO:<c@d>\r\n", "x\r\n..\r\nRCPT TO:<c@d>\r\n.\r\n");
	check("", "x\r\r\n.\r\n", "x\r\n\r\n..\r\n.\r\n");
	check("", "x\n\r.\r\n", "x\r\n\r\n..\r\n.\r\n");
}

static void
test_final_line_end(void **state)
{
	check("", "no end", "no end\r\n.\r\n");
	check("", "cr end\r", "cr end\r\n.\r\n");
	check("", "lf end\n", "lf end\r\n.\r\n");
	/* Header and message are one byte stream: a dot mid-line is content. */
	check("H: x", ".m\r\n", "H: x.m\r\n.\r\n");
}

static void
test_large_and_binary(void **state)
{
	size_t n = 100000, i;
	char *msg = malloc(n), *got;

	assert_non_null(msg);
	for (i = 0; i < n; i++)
		msg[i] = (i % 50 == 49) ? '\n' : (i % 50 == 0) ? '.' : (char)('A' + i % 26);
	msg[7] = '\0';
	got = body("", msg, n);
	/* Every line: stuffed dot, 48 bytes, CRLF; NUL kept as content. */
	for (i = 0; i < n / 50; i++) {
		const char *line = got + i * 52;
		assert_true(line[0] == '.' && line[1] == '.');
		assert_true(line[50] == '\r' && line[51] == '\n');
	}
	assert_memory_equal(got + n / 50 * 52, ".\r\n", 3);
	free(got);
	free(msg);
}

/* ---- a scripted SMTP server: one connection, a reply per command ---- */

struct fakesrv {
	struct evconnlistener	*l;
	struct bufferevent	*bev;
	struct sockaddr_in	 sin;
	const char		*greeting;	/* NULL: never greets */
	const char		*rcpt_reply;
	bool			 in_data;
	char			 cmds[1024];	/* the commands, each ending "\n" */
	struct evbuffer		*data;		/* the DATA payload as received */
};

/* Write a NUL-terminated reply. */
static void
say(struct bufferevent *bev, const char *s)
{
	bufferevent_write(bev, s, strlen(s));
}

/* A line (or the payload up to its dot) from the client; answer it. */
static void
fakesrv_read_cb(struct bufferevent *bev, void *arg)
{
	struct fakesrv	*f = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	char		*line;
	size_t		 n;

	for (;;) {
		if (f->in_data) {
			struct evbuffer_ptr	p = evbuffer_search(in, "\r\n.\r\n", 5, NULL);

			if (p.pos == -1)
				return;
			evbuffer_remove_buffer(in, f->data, (size_t)p.pos + 5);
			f->in_data = false;
			say(bev, "250 2.0.0 Ok: queued as 1234\r\n");
			continue;
		}
		if ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF_STRICT)) == NULL)
			return;
		strncat(f->cmds, line, sizeof(f->cmds) - strlen(f->cmds) - 2);
		strcat(f->cmds, "\n");
		if (strncmp(line, "EHLO", 4) == 0)
			say(bev, "250-mx.test\r\n250 HELP\r\n");
		else if (strncmp(line, "RCPT", 4) == 0)
			say(bev, f->rcpt_reply);
		else if (strcmp(line, "DATA") == 0) {
			say(bev, "354 go ahead\r\n");
			f->in_data = true;
		} else if (strcmp(line, "QUIT") == 0)
			say(bev, "221 2.0.0 Bye\r\n");
		else
			say(bev, "250 2.1.0 Ok\r\n");
		free(line);
	}
}

static void
fakesrv_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct fakesrv	*f = arg;

	f->bev = bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(f->bev, fakesrv_read_cb, NULL, NULL, f);
	bufferevent_enable(f->bev, EV_READ | EV_WRITE);
	if (f->greeting != NULL)
		bufferevent_write(f->bev, f->greeting, strlen(f->greeting));
}

static void
fakesrv_start(struct fakesrv *f, struct event_base *base)
{
	socklen_t	sl = sizeof(f->sin);

	f->sin.sin_family = AF_INET;
	f->sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_non_null(f->l = evconnlistener_new_bind(base, fakesrv_accept_cb, f,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 8, (struct sockaddr *)&f->sin,
	    sizeof(f->sin)));
	assert_int_equal(getsockname(evconnlistener_get_fd(f->l), (struct sockaddr *)&f->sin,
	    &sl), 0);
	assert_non_null(f->data = evbuffer_new());
}

static void
fakesrv_stop(struct fakesrv *f)
{
	if (f->bev != NULL)
		bufferevent_free(f->bev);
	evconnlistener_free(f->l);
	evbuffer_free(f->data);
}

struct outcome {
	bool				done;
	struct smtp_client_result	res;
};

static void
result_cb(void *arg, const struct smtp_client_result *r)
{
	struct outcome	*o = arg;

	o->done = true;
	o->res = *r;
}

/* One delivery of "Subject: x" + msg to f; runs the loop until the callback (10 s). */
static void
deliver(struct event_base *base, struct fakesrv *f, const char *msg, int greeting_timeout,
    struct outcome *o)
{
	static const char		hdr[] = "Subject: x\r\n";
	struct smtp_client_opts		opts;
	struct timeval			tv = { 0, 10000 };

	memset(&opts, 0, sizeof(opts));
	opts.helo = "relay.example";
	opts.peer_name = "mx.test";
	opts.addr = (struct sockaddr *)&f->sin;
	opts.addrlen = sizeof(f->sin);
	opts.connect_timeout = 5;
	opts.greeting_timeout = greeting_timeout;
	opts.command_timeout = 5;
	opts.data_timeout = 5;
	opts.attempt_timeout = 10;
	opts.mail_from = "from@example.org";
	opts.rcpt = "to@mx.test";
	opts.header = (const unsigned char *)hdr;
	opts.headerlen = strlen(hdr);
	opts.msg = (const unsigned char *)msg;
	opts.msglen = strlen(msg);
	memset(o, 0, sizeof(*o));
	assert_non_null(smtp_client_start(base, &opts, result_cb, o));
	for (int i = 0; i < 1000 && !o->done; i++) {
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	assert_true(o->done);
}

/* A whole delivery: the commands in order, the payload stuffed and ended. */
static void
test_delivered(void **state)
{
	struct event_base	*base = event_base_new();
	struct fakesrv		 f = { .greeting = "220 mx.test ESMTP\r\n",
				       .rcpt_reply = "250 2.1.5 Ok\r\n" };
	struct outcome		 o;
	size_t			 n;
	char			*got;

	assert_non_null(base);
	fakesrv_start(&f, base);
	deliver(base, &f, "line\n.dot\n", 5, &o);
	assert_int_equal(o.res.status, SMTPC_DELIVERED);
	assert_int_equal(o.res.code, 250);
	assert_false(o.res.starttls_offered);
	assert_false(o.res.tls);
	assert_string_equal(f.cmds, "EHLO relay.example\nMAIL FROM:<from@example.org>\n"
	    "RCPT TO:<to@mx.test>\nDATA\nQUIT\n");
	n = evbuffer_get_length(f.data);
	assert_non_null(got = malloc(n + 1));
	evbuffer_remove(f.data, got, n);
	got[n] = '\0';
	assert_string_equal(got, "Subject: x\r\nline\r\n..dot\r\n.\r\n");
	assert_non_null(strstr(o.res.transcript, "C: RCPT TO:<to@mx.test>"));
	free(got);
	fakesrv_stop(&f);
	event_base_free(base);
}

/* 5xx to RCPT is a permanent failure there; nothing is sent after it but QUIT. */
static void
test_rcpt_refused(void **state)
{
	struct event_base	*base = event_base_new();
	struct fakesrv		 f = { .greeting = "220 mx.test ESMTP\r\n",
				       .rcpt_reply = "550 5.1.1 <to@mx.test>: unknown\r\n" };
	struct outcome		 o;

	assert_non_null(base);
	fakesrv_start(&f, base);
	deliver(base, &f, "x\n", 5, &o);
	assert_int_equal(o.res.status, SMTPC_PERMFAIL);
	assert_string_equal(o.res.stage, "rcpt");
	assert_int_equal(o.res.code, 550);
	assert_non_null(strstr(o.res.reply, "unknown"));
	assert_null(strstr(f.cmds, "DATA"));
	assert_int_equal(evbuffer_get_length(f.data), 0);
	fakesrv_stop(&f);
	event_base_free(base);
}

/* 421 greeting and no greeting at all: temporary, in the greeting. */
static void
test_greeting_failures(void **state)
{
	struct event_base	*base = event_base_new();
	struct fakesrv		 f = { .greeting = "421 4.3.2 busy\r\n",
				       .rcpt_reply = "250 Ok\r\n" };
	struct fakesrv		 g = { .greeting = NULL, .rcpt_reply = "250 Ok\r\n" };
	struct outcome		 o;

	assert_non_null(base);
	fakesrv_start(&f, base);
	deliver(base, &f, "x\n", 5, &o);
	assert_int_equal(o.res.status, SMTPC_TEMPFAIL);
	assert_string_equal(o.res.stage, "greeting");
	assert_int_equal(o.res.code, 421);
	assert_null(strstr(f.cmds, "MAIL"));
	fakesrv_stop(&f);

	fakesrv_start(&g, base);
	deliver(base, &g, "x\n", 1, &o);
	assert_int_equal(o.res.status, SMTPC_TEMPFAIL);
	assert_string_equal(o.res.stage, "greeting");
	assert_non_null(strstr(o.res.error, "timeout"));
	fakesrv_stop(&g);
	event_base_free(base);
}

/* A CR or LF in an envelope field: refused before anything is sent. */
static void
test_envelope_injection(void **state)
{
	struct event_base	*base = event_base_new();
	struct sockaddr_in	 sin;
	struct smtp_client_opts	 opts;
	struct outcome		 o;

	assert_non_null(base);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(9);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	memset(&opts, 0, sizeof(opts));
	opts.helo = "relay.example";
	opts.addr = (struct sockaddr *)&sin;
	opts.addrlen = sizeof(sin);
	opts.mail_from = "a@b";
	opts.rcpt = "to@mx.test>\r\nRCPT TO:<other@mx.test";
	assert_null(smtp_client_start(base, &opts, result_cb, &o));
	opts.rcpt = "to@mx.test";
	opts.mail_from = "a@b\nx";
	assert_null(smtp_client_start(base, &opts, result_cb, &o));
	opts.mail_from = "a@b";
	opts.helo = "relay\r.example";
	assert_null(smtp_client_start(base, &opts, result_cb, &o));
	event_base_free(base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crlf_untouched_dots_stuffed),
		cmocka_unit_test(test_bare_line_ends_made_crlf),
		cmocka_unit_test(test_final_line_end),
		cmocka_unit_test(test_large_and_binary),
		cmocka_unit_test(test_delivered),
		cmocka_unit_test(test_rcpt_refused),
		cmocka_unit_test(test_greeting_failures),
		cmocka_unit_test(test_envelope_injection),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
