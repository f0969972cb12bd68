/*
 * dns.c: the PTR name validation (attacker-controlled bytes: the client owns
 * its reverse zone) and the PTR query names; then the lookups against a fake
 * DNS server on 127.0.0.1, answered from a table on the test's own loop.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "dns.h"

static void
test_valid_hostname(void **state)
{
	static const char *const good[] = {
		"mail.example.com", "a", "a-b.c", "x1", "1a.example", "123.example",
		"MAIL.Example.COM", "0-0.example",
		/* Postfix's valid_hostname() takes "_" as a letter ("grr..") */
		"under_score.example", "_dmarc.example", "_", "a._b", "1_2.example",
	};
	static const char *const bad[] = {
		"", ".", "a.", ".a", "a..b", "-a.example", "a-.example", "a.-b",
		"127.0.0.1", "123", "1.2.3", "sp ace.example", "_-.example", "a.b_-",
		"evil\\.dot.example", "evil\\001.example", "[127.0.0.1]", "a[b].example",
		"a\r\nb.example", "a(b).example", "uni\xc3\xa9.example", "a:b", "a/b",
		"a@b.example", "*.example",
	};
	char name[400];
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (!dns_valid_hostname(good[i]))
			fail_msg("refused \"%s\"", good[i]);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (dns_valid_hostname(bad[i]))
			fail_msg("accepted \"%s\"", bad[i]);

	/* Labels of 63 bytes, not 64. */
	memset(name, 'a', 63);
	snprintf(name + 63, sizeof(name) - 63, ".example");
	assert_true(dns_valid_hostname(name));
	memset(name, 'a', 64);
	snprintf(name + 64, sizeof(name) - 64, ".example");
	assert_false(dns_valid_hostname(name));
	/* 253 bytes of text (255 on the wire), not 254. */
	memset(name, 0, sizeof(name));
	for (i = 0; i < 4; i++) {
		memset(name + i * 64, 'a', 63);
		name[i * 64 + 63] = '.';
	}
	name[253] = '\0';	/* 3 x 63 + 3 dots + 61 */
	assert_int_equal(strlen(name), 253);
	assert_true(dns_valid_hostname(name));
	name[253] = 'a';
	name[254] = '\0';
	assert_false(dns_valid_hostname(name));
	memset(name, 'a', 399);
	name[399] = '\0';
	assert_false(dns_valid_hostname(name));
}

static void
test_reverse_name(void **state)
{
	char out[100];

	assert_int_equal(dns_reverse_name("192.0.2.10", out, sizeof(out)), 0);
	assert_string_equal(out, "10.2.0.192.in-addr.arpa");
	assert_int_equal(dns_reverse_name("2001:db8::567:89ab", out, sizeof(out)), 0);
	assert_string_equal(out, "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
	    "8.b.d.0.1.0.0.2.ip6.arpa");
	assert_int_equal(dns_reverse_name("example.com", out, sizeof(out)), -1);
	assert_int_equal(dns_reverse_name("1.2.3.4", out, 10), -1);
	assert_int_equal(dns_reverse_name("::1", out, 40), -1);
}

/* ---- a fake DNS server: one UDP socket on the test's loop ---- */

#define T_A	1
#define T_PTR	12
#define T_MX	15
#define T_AAAA	28

/* One answer of the table; rcode instead when rcode != 0 (no answers). */
struct rr {
	const char	*name;
	int		 type;
	int		 pref;		/* MX */
	const char	*data;		/* host name, or address text */
	int		 rcode;
};

static const struct rr zone[] = {
	{ "mx.test", T_MX, 20, "b.mx.test", 0 },
	{ "mx.test", T_MX, 10, "a.mx.test", 0 },
	{ "nullmx.test", T_MX, 0, "", 0 },
	{ "nomx.test", T_A, 0, "192.0.2.3", 0 },
	{ "fail.test", 0, 0, NULL, 2 },			/* SERVFAIL */
	{ "a.mx.test", T_A, 0, "192.0.2.1", 0 },
	{ "a.mx.test", T_AAAA, 0, "2001:db8::1", 0 },
	{ "1.2.0.192.in-addr.arpa", T_PTR, 0, "a.mx.test", 0 },
	{ "9.2.0.192.in-addr.arpa", T_PTR, 0, "a.mx.test", 0 },	/* forged */
};

struct fakedns {
	int		 fd;
	int		 port;
	struct event	*ev;
	int		 queries;
};

/* Append name as DNS labels ("" is the root). */
static size_t
put_name(unsigned char *p, const char *name)
{
	size_t	o = 0;

	while (*name != '\0') {
		const char	*dot = strchr(name, '.');
		size_t		 l = dot ? (size_t)(dot - name) : strlen(name);

		p[o++] = (unsigned char)l;
		memcpy(p + o, name, l);
		o += l;
		name += l + (dot ? 1 : 0);
	}
	p[o++] = 0;
	return o;
}

/* Answer one query from zone: NXDOMAIN for a name it does not hold. */
static void
fakedns_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fakedns		*d = arg;
	unsigned char		 q[512], r[1024];
	struct sockaddr_storage	 ss;
	socklen_t		 sl = sizeof(ss);
	char			 name[256];
	size_t			 qend, o, no = 0, an = 0;
	ssize_t			 n;
	int			 qtype, rcode = 3;
	bool			 known = false;

	if ((n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&ss, &sl)) < 17)
		return;
	d->queries++;
	for (o = 12; o < (size_t)n && q[o] != 0; o += q[o] + 1) {
		if (no > 0)
			name[no++] = '.';
		memcpy(name + no, q + o + 1, q[o]);
		no += q[o];
	}
	name[no] = '\0';
	qend = o + 5;
	qtype = q[o + 1] << 8 | q[o + 2];
	memcpy(r, q, qend);
	o = qend;
	for (size_t i = 0; i < sizeof(zone) / sizeof(zone[0]); i++) {
		const struct rr	*z = &zone[i];
		size_t		 rd;

		if (strcasecmp(z->name, name) != 0)
			continue;
		known = true;
		if (z->rcode != 0) {
			rcode = z->rcode;
			break;
		}
		rcode = 0;
		if (z->type != qtype)
			continue;
		r[o++] = 0xc0;
		r[o++] = 12;
		r[o++] = 0;
		r[o++] = (unsigned char)qtype;
		r[o++] = 0;
		r[o++] = 1;
		memcpy(r + o, "\0\0\0\x3c", 4);
		o += 4;
		rd = o;
		o += 2;
		if (qtype == T_MX) {
			r[o++] = (unsigned char)(z->pref >> 8);
			r[o++] = (unsigned char)z->pref;
			o += put_name(r + o, z->data);
		} else if (qtype == T_PTR) {
			o += put_name(r + o, z->data);
		} else if (qtype == T_A) {
			assert_int_equal(inet_pton(AF_INET, z->data, r + o), 1);
			o += 4;
		} else {
			assert_int_equal(inet_pton(AF_INET6, z->data, r + o), 1);
			o += 16;
		}
		r[rd] = (unsigned char)((o - rd - 2) >> 8);
		r[rd + 1] = (unsigned char)(o - rd - 2);
		an++;
	}
	if (!known)
		rcode = 3;
	r[2] = 0x84 | (q[2] & 0x01);	/* QR, AA, RD as asked */
	r[3] = 0x80 | (unsigned char)rcode;
	r[4] = 0;
	r[5] = 1;
	r[6] = 0;
	r[7] = (unsigned char)an;
	memset(r + 8, 0, 4);		/* no authority, no additional (EDNS dropped) */
	(void)sendto(fd, r, o, 0, (struct sockaddr *)&ss, sl);
}

static void
fakedns_start(struct fakedns *d, struct event_base *base)
{
	struct sockaddr_in	sin;
	socklen_t		sl = sizeof(sin);

	memset(d, 0, sizeof(*d));
	assert_true((d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0)) >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(d->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(d->fd, (struct sockaddr *)&sin, &sl), 0);
	d->port = ntohs(sin.sin_port);
	assert_non_null(d->ev = event_new(base, d->fd, EV_READ | EV_PERSIST, fakedns_cb, d));
	event_add(d->ev, NULL);
}

static void
fakedns_stop(struct fakedns *d)
{
	event_free(d->ev);
	close(d->fd);
}

/* What a callback got. */
struct got {
	bool		 done;
	enum dns_status	 st;
	int		 n;
	struct dns_mx	 mx[DNS_MX_MAX];
	char		 addr[DNS_ADDR_MAX][64];
	struct dns_peer	 peer;
};

static void
mx_cb(void *arg, enum dns_status st, const struct dns_mx *mx, int n, const char *err)
{
	struct got	*g = arg;

	g->done = true;
	g->st = st;
	g->n = n;
	for (int i = 0; i < n && i < DNS_MX_MAX; i++)
		g->mx[i] = mx[i];
}

static void
addr_cb(void *arg, enum dns_status st, const struct dns_addr *a, int n, const char *err)
{
	struct got	*g = arg;

	g->done = true;
	g->st = st;
	g->n = n;
	for (int i = 0; i < n && i < DNS_ADDR_MAX; i++)
		snprintf(g->addr[i], sizeof(g->addr[i]), "%s", a[i].text);
}

static void
peer_cb(void *arg, const struct dns_peer *p)
{
	struct got	*g = arg;

	g->done = true;
	g->peer = *p;
}

/* Each lookup test's loop, the fake server on it and a resolver asking it. */
struct dnsfix {
	struct event_base	*base;
	struct fakedns		 d;
	struct dns		*dns;
};

static int
dnsfix_setup(void **state)
{
	struct dnsfix	*x;
	char		 srv[64], err[256];

	assert_non_null(x = calloc(1, sizeof(*x)));
	assert_non_null(x->base = event_base_new());
	fakedns_start(&x->d, x->base);
	snprintf(srv, sizeof(srv), "127.0.0.1:%d", x->d.port);
	assert_non_null(x->dns = dns_new(x->base, srv, 500, err, sizeof(err)));
	*state = x;
	return 0;
}

/* A test that freed the resolver itself set x->dns to NULL. */
static int
dnsfix_teardown(void **state)
{
	struct dnsfix	*x = *state;

	dns_free(x->dns);
	fakedns_stop(&x->d);
	event_base_free(x->base);
	free(x);
	return 0;
}

/* Run the loop until the callback ran (5 s at most). */
static void
wait_done(struct event_base *base, struct got *g)
{
	struct timeval	tv = { 0, 10000 };

	for (int i = 0; i < 500 && !g->done; i++) {
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	assert_true(g->done);
}

/* MX: sorted by preference; the null MX; the implicit MX; NXDOMAIN; SERVFAIL. */
static void
test_mx_lookup(void **state)
{
	struct dnsfix		*x = *state;
	struct event_base	*base = x->base;
	struct dns		*dns = x->dns;
	struct got		 g;

	memset(&g, 0, sizeof(g));
	assert_int_equal(dns_mx_lookup(dns, "mx.test", mx_cb, &g), 0);
	assert_false(g.done);		/* never from inside the call */
	wait_done(base, &g);
	assert_int_equal(g.st, DNS_OK);
	assert_int_equal(g.n, 2);
	assert_string_equal(g.mx[0].host, "a.mx.test");
	assert_int_equal(g.mx[0].pref, 10);
	assert_string_equal(g.mx[1].host, "b.mx.test");
	assert_int_equal(g.mx[1].pref, 20);
	assert_false(g.mx[0].implicit);
	assert_true(x->d.queries > 0);

	memset(&g, 0, sizeof(g));
	assert_int_equal(dns_mx_lookup(dns, "nullmx.test", mx_cb, &g), 0);
	wait_done(base, &g);
	assert_int_equal(g.st, DNS_NULLMX);

	memset(&g, 0, sizeof(g));
	assert_int_equal(dns_mx_lookup(dns, "nomx.test", mx_cb, &g), 0);
	wait_done(base, &g);
	assert_int_equal(g.st, DNS_OK);
	assert_int_equal(g.n, 1);
	assert_string_equal(g.mx[0].host, "nomx.test");
	assert_int_equal(g.mx[0].pref, 0);
	assert_true(g.mx[0].implicit);

	memset(&g, 0, sizeof(g));
	assert_int_equal(dns_mx_lookup(dns, "nx.test", mx_cb, &g), 0);
	wait_done(base, &g);
	assert_int_equal(g.st, DNS_NOTFOUND);

	memset(&g, 0, sizeof(g));
	assert_int_equal(dns_mx_lookup(dns, "fail.test", mx_cb, &g), 0);
	wait_done(base, &g);
	assert_int_equal(g.st, DNS_TEMPFAIL);

	/* dns_free() with a lookup pending: its callback runs, cancelled. */
	memset(&g, 0, sizeof(g));
	event_del(x->d.ev);		/* the server stops answering */
	assert_int_equal(dns_mx_lookup(dns, "mx.test", mx_cb, &g), 0);
	dns_free(dns);
	x->dns = NULL;
	assert_true(g.done);
	assert_int_equal(g.st, DNS_CANCELLED);
}

/* Addresses: IPv4 first, then IPv6, or IPv4 only; a numeric host asks nobody. */
static void
test_addr_lookup(void **state)
{
	struct dnsfix		*x = *state;
	struct event_base	*base = x->base;
	struct dns		*dns = x->dns;
	struct got		 g;
	int			 q;

	memset(&g, 0, sizeof(g));
	assert_int_equal(dns_addr_lookup(dns, "a.mx.test", false, addr_cb, &g), 0);
	wait_done(base, &g);
	assert_int_equal(g.st, DNS_OK);
	assert_int_equal(g.n, 2);
	assert_string_equal(g.addr[0], "192.0.2.1");
	assert_string_equal(g.addr[1], "2001:db8::1");

	memset(&g, 0, sizeof(g));
	assert_int_equal(dns_addr_lookup(dns, "a.mx.test", true, addr_cb, &g), 0);
	wait_done(base, &g);
	assert_int_equal(g.st, DNS_OK);
	assert_int_equal(g.n, 1);
	assert_string_equal(g.addr[0], "192.0.2.1");

	memset(&g, 0, sizeof(g));
	assert_int_equal(dns_addr_lookup(dns, "nx.test", false, addr_cb, &g), 0);
	wait_done(base, &g);
	assert_int_equal(g.st, DNS_NOTFOUND);

	memset(&g, 0, sizeof(g));
	q = x->d.queries;
	assert_int_equal(dns_addr_lookup(dns, "192.0.2.7", false, addr_cb, &g), 0);
	assert_false(g.done);
	wait_done(base, &g);
	assert_int_equal(g.st, DNS_OK);
	assert_int_equal(g.n, 1);
	assert_string_equal(g.addr[0], "192.0.2.7");
	assert_int_equal(x->d.queries, q);

}

/*
 * A service's name (the AMQP broker): the hosts file first (localhost, in
 * every /etc/hosts: no query), then DNS; a numeric host asks nobody.
 */
static void
test_name_lookup(void **state)
{
	struct dnsfix		*x = *state;
	struct event_base	*base = x->base;
	struct dns		*dns = x->dns;
	struct got		 g;
	int			 q;

	memset(&g, 0, sizeof(g));
	assert_int_equal(dns_name_lookup(dns, "a.mx.test", addr_cb, &g), 0);
	assert_false(g.done);		/* never from inside the call */
	wait_done(base, &g);
	assert_int_equal(g.st, DNS_OK);
	assert_int_equal(g.n, 2);
	assert_string_equal(g.addr[0], "192.0.2.1");
	assert_string_equal(g.addr[1], "2001:db8::1");

	memset(&g, 0, sizeof(g));
	assert_int_equal(dns_name_lookup(dns, "nx.test", addr_cb, &g), 0);
	wait_done(base, &g);
	assert_int_equal(g.st, DNS_NOTFOUND);

	memset(&g, 0, sizeof(g));
	q = x->d.queries;
	assert_int_equal(dns_name_lookup(dns, "localhost", addr_cb, &g), 0);
	assert_false(g.done);
	wait_done(base, &g);
	assert_int_equal(g.st, DNS_OK);
	assert_string_equal(g.addr[0], "127.0.0.1");
	assert_int_equal(x->d.queries, q);

	memset(&g, 0, sizeof(g));
	assert_int_equal(dns_name_lookup(dns, "2001:db8::7", addr_cb, &g), 0);
	wait_done(base, &g);
	assert_int_equal(g.st, DNS_OK);
	assert_int_equal(g.n, 1);
	assert_string_equal(g.addr[0], "2001:db8::7");
	assert_int_equal(x->d.queries, q);
}

/* The client name: a PTR that forward-confirms, one that does not, none. */
static void
test_peer_lookup(void **state)
{
	struct dnsfix		*x = *state;
	struct event_base	*base = x->base;
	struct dns		*dns = x->dns;
	struct got		 g;

	memset(&g, 0, sizeof(g));
	assert_non_null(dns_peer_lookup(dns, "192.0.2.1", peer_cb, &g));
	wait_done(base, &g);
	assert_int_equal(g.peer.status, DNS_PEER_OK);
	assert_string_equal(g.peer.name, "a.mx.test");
	assert_string_equal(g.peer.reverse_name, "a.mx.test");

	memset(&g, 0, sizeof(g));
	assert_non_null(dns_peer_lookup(dns, "192.0.2.9", peer_cb, &g));
	wait_done(base, &g);
	assert_int_equal(g.peer.status, DNS_PEER_FORGED);
	assert_string_equal(g.peer.name, "unknown");
	assert_string_equal(g.peer.reverse_name, "a.mx.test");

	memset(&g, 0, sizeof(g));
	assert_non_null(dns_peer_lookup(dns, "192.0.2.5", peer_cb, &g));
	wait_done(base, &g);
	assert_int_equal(g.peer.status, DNS_PEER_PERM);
	assert_string_equal(g.peer.name, "unknown");

	assert_null(dns_peer_lookup(dns, "not an address", peer_cb, &g));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_hostname),
		cmocka_unit_test(test_reverse_name),
		cmocka_unit_test_setup_teardown(test_mx_lookup, dnsfix_setup,
		    dnsfix_teardown),
		cmocka_unit_test_setup_teardown(test_addr_lookup, dnsfix_setup,
		    dnsfix_teardown),
		cmocka_unit_test_setup_teardown(test_peer_lookup, dnsfix_setup,
		    dnsfix_teardown),
		cmocka_unit_test_setup_teardown(test_name_lookup, dnsfix_setup,
		    dnsfix_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
