/*
 * Unit tests for relay_dest.c: every forbidden range at both ends and its
 * global neighbours just outside, networks, recipients and MX host names.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "relay_dest.h"

/* A numeric address as a sockaddr. */
static void
sa_of(const char *s, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, s, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		ss->ss_family = AF_INET;
		return;
	}
	assert_int_equal(inet_pton(AF_INET6, s, &((struct sockaddr_in6 *)ss)->sin6_addr), 1);
	ss->ss_family = AF_INET6;
}

/* The reason for s, or NULL. */
static const char *
why(const char *s)
{
	struct sockaddr_storage ss;

	sa_of(s, &ss);
	return rdest_addr_forbidden((struct sockaddr *)&ss);
}

/* Forbidden: both ends of every range; the text names the range. */
static const struct {
	const char	*addr;
	const char	*range;
} forbidden[] = {
	{ "0.0.0.0", "0.0.0.0/8" }, { "0.255.255.255", "0.0.0.0/8" },
	{ "10.0.0.0", "10.0.0.0/8" }, { "10.255.255.255", "10.0.0.0/8" },
	{ "100.64.0.0", "100.64.0.0/10" }, { "100.127.255.255", "100.64.0.0/10" },
	{ "127.0.0.0", "127.0.0.0/8" }, { "127.0.0.1", "127.0.0.0/8" },
	{ "127.255.255.255", "127.0.0.0/8" },
	{ "169.254.0.0", "169.254.0.0/16" }, { "169.254.255.255", "169.254.0.0/16" },
	{ "172.16.0.0", "172.16.0.0/12" }, { "172.31.255.255", "172.16.0.0/12" },
	{ "192.0.0.0", "192.0.0.0/24" }, { "192.0.0.255", "192.0.0.0/24" },
	{ "192.0.2.0", "192.0.2.0/24" }, { "192.0.2.255", "192.0.2.0/24" },
	{ "192.88.99.0", "192.88.99.0/24" }, { "192.88.99.255", "192.88.99.0/24" },
	{ "192.168.0.0", "192.168.0.0/16" }, { "192.168.255.255", "192.168.0.0/16" },
	{ "198.18.0.0", "198.18.0.0/15" }, { "198.19.255.255", "198.18.0.0/15" },
	{ "198.51.100.0", "198.51.100.0/24" }, { "198.51.100.255", "198.51.100.0/24" },
	{ "203.0.113.0", "203.0.113.0/24" }, { "203.0.113.255", "203.0.113.0/24" },
	{ "224.0.0.0", "224.0.0.0/4" }, { "239.255.255.255", "224.0.0.0/4" },
	{ "240.0.0.0", "240.0.0.0/4" }, { "255.255.255.254", "240.0.0.0/4" },
	{ "255.255.255.255", "255.255.255.255" },
	{ "::", "::/128" }, { "::1", "::1/128" },
	/* IPv4-mapped, NAT64 and 6to4: the embedded IPv4 address decides. */
	{ "::ffff:127.0.0.1", "127.0.0.0/8" }, { "::ffff:10.1.2.3", "10.0.0.0/8" },
	{ "::ffff:0.0.0.0", "0.0.0.0/8" }, { "::ffff:255.255.255.255", "255.255.255.255" },
	{ "64:ff9b::127.0.0.1", "127.0.0.0/8" }, { "64:ff9b::192.168.1.1", "192.168.0.0/16" },
	{ "2002:7f00:1::1", "127.0.0.0/8" }, { "2002:c0a8:101::", "192.168.0.0/16" },
	{ "2002:e000::1", "224.0.0.0/4" },
	{ "64:ff9b:1::", "64:ff9b:1::/48" }, { "64:ff9b:1:ffff:ffff:ffff:ffff:ffff", "64:ff9b:1::/48" },
	{ "100::", "100::/64" }, { "100::ffff:ffff:ffff:ffff", "100::/64" },
	{ "2001::", "2001::/32" }, { "2001:0:ffff:ffff:ffff:ffff:ffff:ffff", "2001::/32" },
	{ "2001:10::", "2001:10::/28" }, { "2001:1f:ffff::1", "2001:10::/28" },
	{ "2001:20::", "2001:20::/28" }, { "2001:2f:ffff::1", "2001:20::/28" },
	{ "2001:1::1", "2001::/23" }, { "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", "2001::/23" },
	{ "2001:db8::", "2001:db8::/32" }, { "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::/32" },
	{ "3fff::", "3fff::/20" }, { "3fff:fff:ffff::1", "3fff::/20" },
	{ "5f00::", "5f00::/16" }, { "5f00:ffff::1", "5f00::/16" },
	{ "fc00::", "fc00::/7" }, { "fdff:ffff::1", "fc00::/7" },
	{ "fe80::", "fe80::/10" }, { "febf:ffff::1", "fe80::/10" },
	{ "fec0::", "fec0::/10" }, { "feff:ffff::1", "fec0::/10" },
	{ "ff00::", "ff00::/8" }, { "ff02::1", "ff00::/8" }, { "ffff:ffff::1", "ff00::/8" },
	/* Outside 2000::/3: IPv4-compatible, 1::, 4000::... */
	{ "::2", "2000::/3" }, { "::a00:1", "2000::/3" }, { "1::1", "2000::/3" },
	{ "1fff:ffff::1", "2000::/3" }, { "4000::", "2000::/3" }, { "e000::1", "2000::/3" },
	{ "64:ff9a::1", "2000::/3" }, { "64:ff9b:2::1", "2000::/3" },
	{ "5eff:ffff::1", "2000::/3" }, { "5f01::", "2000::/3" },
};

/* Global: the neighbours just outside each range, and ordinary addresses. */
static const char *const global[] = {
	"1.0.0.0", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0",
	"126.255.255.255", "128.0.0.0", "169.253.255.255", "169.255.0.0",
	"172.15.255.255", "172.32.0.0", "191.255.255.255", "192.0.1.0", "192.0.3.0",
	"192.88.98.255", "192.88.100.0", "192.167.255.255", "192.169.0.0",
	"198.17.255.255", "198.20.0.0", "198.51.99.255", "198.51.101.0",
	"203.0.112.255", "203.0.114.0", "223.255.255.255", "8.8.8.8", "192.31.196.1",
	"::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1",
	"2000::", "2001:200::", "2001:db7:ffff::1", "2001:db9::", "2003::",
	"2a00:1450:4001::1b", "3ffe:ffff::1", "3fff:1000::", "3ffe::",
	"2001:4860:4860::8888",
};

static void
test_forbidden_ranges(void **state)
{
	char msg[200];

	for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++) {
		const char *w = why(forbidden[i].addr);
		snprintf(msg, sizeof(msg), "%s: %s", forbidden[i].addr, w ? w : "(allowed)");
		if (w == NULL || strstr(w, forbidden[i].range) == NULL)
			fail_msg("%s, expected %s", msg, forbidden[i].range);
	}
}

static void
test_global_neighbours(void **state)
{
	for (size_t i = 0; i < sizeof(global) / sizeof(global[0]); i++) {
		const char *w = why(global[i]);
		if (w != NULL)
			fail_msg("%s refused: %s", global[i], w);
	}
}

static void
test_other_family(void **state)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_UNIX;
	assert_non_null(rdest_addr_forbidden((struct sockaddr *)&ss));
}

static void
test_nets(void **state)
{
	struct rdest_net n;
	struct sockaddr_storage ss;

	assert_int_equal(rdest_net_parse("127.0.0.0/8", &n), 0);
	sa_of("127.255.0.1", &ss);
	assert_true(rdest_net_match(&n, (struct sockaddr *)&ss));
	sa_of("::ffff:127.0.0.2", &ss);
	assert_true(rdest_net_match(&n, (struct sockaddr *)&ss));
	sa_of("128.0.0.0", &ss);
	assert_false(rdest_net_match(&n, (struct sockaddr *)&ss));
	sa_of("::1", &ss);
	assert_false(rdest_net_match(&n, (struct sockaddr *)&ss));

	assert_int_equal(rdest_net_parse("127.0.0.1", &n), 0);
	assert_int_equal(n.bits, 32);
	sa_of("127.0.0.2", &ss);
	assert_false(rdest_net_match(&n, (struct sockaddr *)&ss));

	assert_int_equal(rdest_net_parse("fd00::/8", &n), 0);
	sa_of("fdab::1", &ss);
	assert_true(rdest_net_match(&n, (struct sockaddr *)&ss));
	sa_of("fe00::1", &ss);
	assert_false(rdest_net_match(&n, (struct sockaddr *)&ss));
	assert_int_equal(rdest_net_parse("0.0.0.0/0", &n), 0);
	sa_of("8.8.8.8", &ss);
	assert_true(rdest_net_match(&n, (struct sockaddr *)&ss));

	/* Not networks. */
	assert_int_equal(rdest_net_parse("10.1.2.3/8", &n), -1);	/* host bits */
	assert_int_equal(rdest_net_parse("10.0.0.0/33", &n), -1);
	assert_int_equal(rdest_net_parse("10.0.0.0/", &n), -1);
	assert_int_equal(rdest_net_parse("10.0.0.0/-1", &n), -1);
	assert_int_equal(rdest_net_parse("10.0.0.0/8x", &n), -1);
	assert_int_equal(rdest_net_parse("::/129", &n), -1);
	assert_int_equal(rdest_net_parse("localhost", &n), -1);
	assert_int_equal(rdest_net_parse("", &n), -1);

	sa_of("::ffff:198.51.100.7", &ss);
	assert_true(rdest_addr_is((struct sockaddr *)&ss, "198.51.100.7"));
	sa_of("198.51.100.7", &ss);
	assert_true(rdest_addr_is((struct sockaddr *)&ss, "::ffff:198.51.100.7"));
	assert_false(rdest_addr_is((struct sockaddr *)&ss, "198.51.100.8"));
	assert_false(rdest_addr_is((struct sockaddr *)&ss, "198.51.100.0/24"));

	/*
	 * Our IPv4 address inside NAT64 (64:ff9b::/96) or 6to4 (2002:V4::/48):
	 * through a NAT64 gateway or a 6to4 relay that is us again.
	 */
	sa_of("64:ff9b::198.51.100.7", &ss);
	assert_true(rdest_addr_is((struct sockaddr *)&ss, "198.51.100.7"));
	assert_true(rdest_addr_is((struct sockaddr *)&ss, "::ffff:198.51.100.7"));
	assert_false(rdest_addr_is((struct sockaddr *)&ss, "198.51.100.8"));
	sa_of("2002:c633:6407:1::25", &ss);
	assert_true(rdest_addr_is((struct sockaddr *)&ss, "198.51.100.7"));
	assert_false(rdest_addr_is((struct sockaddr *)&ss, "198.51.100.8"));
	sa_of("64:ff9b:0:0:1::c633:6407", &ss);	/* not the /96 */
	assert_false(rdest_addr_is((struct sockaddr *)&ss, "198.51.100.7"));
	{
		struct sockaddr_in v4;
		sa_of("64:ff9b::198.51.100.7", &ss);
		assert_true(rdest_embedded_v4((struct sockaddr *)&ss, &v4));
		assert_int_equal(ntohl(v4.sin_addr.s_addr), 0xc6336407);
		sa_of("::ffff:10.0.0.1", &ss);
		assert_true(rdest_embedded_v4((struct sockaddr *)&ss, &v4));
		assert_int_equal(ntohl(v4.sin_addr.s_addr), 0x0a000001);
		sa_of("2002:7f00:1::1", &ss);
		assert_true(rdest_embedded_v4((struct sockaddr *)&ss, &v4));
		assert_int_equal(ntohl(v4.sin_addr.s_addr), 0x7f000001);
		sa_of("2001:4860::1", &ss);
		assert_false(rdest_embedded_v4((struct sockaddr *)&ss, &v4));
		sa_of("198.51.100.7", &ss);
		assert_false(rdest_embedded_v4((struct sockaddr *)&ss, &v4));
	}
	/* Wildcard listener addresses, however spelt. */
	assert_true(rdest_addr_unspecified("0.0.0.0"));
	assert_true(rdest_addr_unspecified("::"));
	assert_true(rdest_addr_unspecified("0::0"));
	assert_true(rdest_addr_unspecified("0:0:0:0:0:0:0:0"));
	assert_true(rdest_addr_unspecified("::0"));
	assert_false(rdest_addr_unspecified("::1"));
	assert_false(rdest_addr_unspecified("127.0.0.1"));
	assert_false(rdest_addr_unspecified("0.0.0.0/0"));
	assert_false(rdest_addr_unspecified(""));
	/* An IPv6 own address is still compared whole. */
	sa_of("2001:4860::1", &ss);
	assert_true(rdest_addr_is((struct sockaddr *)&ss, "2001:4860::1"));
	assert_false(rdest_addr_is((struct sockaddr *)&ss, "2001:4860::2"));
}

static void
test_recipients(void **state)
{
	static const char *const bad[] = {
		"victim%target.example@[127.0.0.2]", "\"abuse\"@[127.0.0.2]",
		"user@[IPv6:::1]", "user@[8.8.8.8]", "@a.example,@b.example:user@c.example",
		"@a.example:user@c.example", "victim%target.example@spammer.example",
		"victim!target.example@spammer.example", "\"victim@target.example\"@spammer.example",
		"\"victim%t\"@spammer.example", "a:b@spammer.example", "user@localhost",
		"user@mx.localhost", "user@example", "user@127.0.0.2", "user@bad_domain.example",
		"user@-bad.example", "user@bad-.example", "user@a..example", "user@.example",
		"user@example.", "user@", "@example.org", "user", "",
		"user@123.456", "user@exa mple.org", "us\rer@example.org", "user\n@example.org",
		"us\x7f" "er@example.org",
		/*
		 * Not a dot-atom: a quoted local part is the same mailbox as its
		 * unquoted spelling ("postmaster"@x is postmaster@x), which
		 * slipped past never_relay and the per-recipient cap; escapes,
		 * blanks, angle brackets, 8-bit and stray dots likewise.
		 */
		"\"postmaster\"@example.org", "\"abuse\"@example.org", "\"quoted x\"@example.org",
		"\"a> NOTIFY=SUCCESS\"@example.org", "post\\master@example.org",
		"us er@example.org", "us>er@example.org", "us<er@example.org", "us,er@example.org",
		"us;er@example.org", "(c)user@example.org", "us[er@example.org",
		"\xc3\xbcser@example.org", ".user@example.org", "user.@example.org",
		"us..er@example.org",
		/*
		 * Special-use and private-use names (RFC 6761, 6762, 7686, 8375,
		 * 9476, ICANN's .internal) and the usual LAN suffixes: the local
		 * resolver (mDNS, a router's dnsmasq, split horizon) answers them
		 * with hosts of the honeypot's own network, often with global
		 * IPv6 addresses the range check cannot tell from the Internet.
		 */
		"u@printer.local", "u@NAS.LOCAL", "u@gw.home.arpa", "u@db.internal",
		"u@x.onion", "u@x.alt", "u@x.invalid", "u@x.test", "u@nas.lan", "u@dc.corp",
		"u@pc.home", "u@wiki.intranet", "u@srv.private", "u@host.localdomain",
		"u@1.0.0.127.in-addr.arpa", "u@x.ip6.arpa",
	};
	static const char *const good[] = {
		"drop@spammer.example", "first.last+tag@mail.example.org",
		"a#$&'*+/=?^_`{|}~-z@example.org", "o'brien@example.org",
		"u@xn--bcher-kva.example", "u@a1.b2.example", "u@1.2.3.example",
		"u@local.example", "u@mail.localnet.example", "u@lan.example.org", "u@testing.example",
	};
	char longlab[128], longdom[300];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (rdest_rcpt_refused(bad[i]) == NULL)
			fail_msg("<%s> accepted", bad[i]);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (rdest_rcpt_refused(good[i]) != NULL)
			fail_msg("<%s> refused: %s", good[i], rdest_rcpt_refused(good[i]));
	assert_string_equal(rdest_rcpt_refused("x@[127.0.0.1]"), "address literal");
	assert_string_equal(rdest_rcpt_refused("@a,@b:x@c.example"), "source route");

	/* Label 63 ok, 64 not; name 253 ok, 254 not. */
	memset(longlab, 'a', 63);
	snprintf(longlab + 63, sizeof(longlab) - 63, ".example");
	assert_true(rdest_hostname_valid(longlab));
	memset(longlab, 'a', 64);
	snprintf(longlab + 64, sizeof(longlab) - 64, ".example");
	assert_false(rdest_hostname_valid(longlab));
	for (int i = 0; i < 63; i++)
		memcpy(longdom + i * 4, "abc.", 4);
	memcpy(longdom + 252, "x", 2);	/* 253 bytes */
	assert_int_equal(strlen(longdom), 253);
	assert_true(rdest_hostname_valid(longdom));
	memcpy(longdom + 252, "xy", 3);
	assert_false(rdest_hostname_valid(longdom));
}

static void
test_mx_names(void **state)
{
	static const char *const bad[] = {
		".", "", "127.0.0.1", "::1", "[127.0.0.1]", "2001:db8::1", "localhost",
		"LOCALHOST", "mx.localhost", "bad_name.example", "single", "a..b.example",
		"10.0.0.1.", "1.2.3.4", "mx.local", "mx.home.arpa", "mx.internal", "mx.lan",
		"mx.test", "mx.invalid", "mx.onion",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (rdest_host_refused(bad[i]) == NULL)
			fail_msg("MX \"%s\" accepted", bad[i]);
	assert_null(rdest_host_refused("mx1.spammer.example"));
	assert_null(rdest_host_refused("aspmx.l.google.com"));
	assert_non_null(strstr(rdest_host_refused("."), "null MX"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forbidden_ranges),
		cmocka_unit_test(test_global_neighbours),
		cmocka_unit_test(test_other_family),
		cmocka_unit_test(test_nets),
		cmocka_unit_test(test_recipients),
		cmocka_unit_test(test_mx_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
