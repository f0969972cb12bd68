/*
 * dns.c without a network: the PTR name validation (attacker-controlled
 * bytes: the client owns its reverse zone) and the PTR query names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_hostname),
		cmocka_unit_test(test_reverse_name),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
