/* The built-in rules are the shipped etc/rules.yml, and they load. */

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rules.h"
#include "rules_default.h"
#include "testutil.h"

/* Built from etc/rules.yml at build time: byte for byte the same text. */
static void
test_same_as_shipped_file(void **state)
{
	char *file = slurp("etc/rules.yml", NULL);

	assert_non_null(file);
	assert_string_equal(rules_default_yaml, file);
	free(file);
}

/* The built-in rules load, and a small mail mentioning our address is a probe. */
static void
test_loads_and_finds_a_probe(void **state)
{
	static const char mail[] =
	    "From: a@example.org\r\nTo: b@example.net\r\n"
	    "Subject: relay test 192.0.2.7:25\r\n\r\nhello\r\n";
	const char *own[] = { "192.0.2.7" };
	const char *rcpt[] = { "b@example.net" };
	struct rules_facts f;
	struct rules_decision d;
	char err[256];
	struct rules *r = rules_load_buf(RULES_DEFAULT_NAME, rules_default_yaml,
	    strlen(rules_default_yaml), err, sizeof(err));

	if (r == NULL)
		print_error("%s\n", err);
	assert_non_null(r);
	memset(&f, 0, sizeof(f));
	f.stage = RULES_STAGE_DATA;
	f.mail_from = "a@example.org";
	f.rcpt = rcpt;
	f.nrcpt = 1;
	f.src_ip = "198.51.100.1";
	f.dst_ip = "10.0.0.1";
	f.msg = (const unsigned char *)mail;
	f.msglen = sizeof(mail) - 1;
	f.own_addrs = own;
	f.nown = 1;
	assert_int_equal(rules_eval(r, &f, &d), 0);
	assert_true(d.matched);
	assert_true(d.relay);
	assert_string_equal(d.rule, "probe");
	/*
	 * The cheap matchers run first (size, rcpt_count before the address
	 * search that needs the MIME decoding): the evidence is in that order.
	 */
	assert_non_null(d.evidence);
	{
		const char *sz = strstr(d.evidence, "\"matcher\":\"size\"");
		const char *mine = strstr(d.evidence, "\"matcher\":\"mentions_own_address\"");
		assert_non_null(sz);
		assert_non_null(mine);
		assert_true(sz < mine);
	}
	rules_decision_clear(&d);

	/* Not mentioning it: no rule matches. */
	f.own_addrs = (const char *[]){ "192.0.2.8" };
	assert_int_equal(rules_eval(r, &f, &d), 0);
	assert_false(d.matched);
	assert_false(d.relay);
	rules_decision_clear(&d);
	rules_free(r);
}

/* Evaluate the built-in rules on msg (own address own1, one recipient). */
static bool
shipped_eval(const char *own1, const char *rcpt1, const char *msg,
    struct rules_decision *d)
{
	const char *own[1] = { own1 };
	const char *rcpt[1] = { rcpt1 };
	struct rules_facts f;
	char err[256];
	struct rules *r = rules_load_buf(RULES_DEFAULT_NAME, rules_default_yaml,
	    strlen(rules_default_yaml), err, sizeof(err));

	assert_non_null(r);
	memset(&f, 0, sizeof(f));
	f.stage = RULES_STAGE_DATA;
	f.mail_from = "a@example.org";
	f.rcpt = rcpt;
	f.nrcpt = 1;
	f.src_ip = "198.51.100.9";
	f.dst_ip = own1;
	f.msg = (const unsigned char *)msg;
	f.msglen = strlen(msg);
	f.own_addrs = own;
	f.nown = 1;
	assert_int_equal(rules_eval(r, &f, d), 0);
	rules_free(r);
	return d->matched && d->relay;
}

/*
 * Ordinary botnet spam to a victim at another domain forges trace and
 * identification fields naming the target server: not a probe.
 */
static void
test_trace_headers_are_no_probe(void **state)
{
	static const char *const decoys[] = {
		"Received: from pc-12.dsl.example ([198.51.100.9]) by "
		    "mx.corp.example ([192.0.2.7]) with SMTP; Sun, 6 Dec 2026 "
		    "04:00:00 +0000",
		"Received: from pc-12.dsl.example (HELO 192.0.2.7)\r\n"
		    "\tby mx.corp.example with SMTP id C0000207",
		"X-Originating-IP: [192.0.2.7]",
		"X-Forwarded-For: 192.0.2.7",
		"Message-ID: <20261206040000.12345@[192.0.2.7]>",
		"References: <1234.192.0.2.7@mx.corp.example>",
		"In-Reply-To: <a@[192.0.2.7]>",
		"Return-Path: <postmaster@[192.0.2.7]>",
		"Authentication-Results: mx.corp.example; spf=none "
		    "smtp.client-ip=192.0.2.7",
		"Received-SPF: none (192.0.2.7)",
		"DKIM-Signature: v=1; a=rsa-sha256; d=corp.example; s=192.0.2.7",
		"ARC-Seal: i=1; a=rsa-sha256; d=192.0.2.7; cv=none",
		"Message-ID: <C0000207.1234@mx.corp.example>",	/* hex form */
		/* Not trace fields, yet no place a probe writes to either. */
		"Cc: <admin@[192.0.2.7]>",
		"X-Mailer-Host: 192.0.2.7",
	};
	char msg[1024];
	struct rules_decision d;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(decoys) / sizeof(decoys[0]); i++) {
		snprintf(msg, sizeof(msg), "%s\r\nFrom: \"Shop\" <sales@shop.example>"
		    "\r\nTo: victim@other.example\r\nSubject: 80%% off today\r\n"
		    "\r\nBuy now.\r\n", decoys[i]);
		if (shipped_eval("192.0.2.7", "victim@other.example", msg, &d))
			fail_msg("spam taken for a probe (%s): %s",
			    d.evidence ? d.evidence : "", msg);
		assert_false(d.matched);
		rules_decision_clear(&d);
	}
}

/*
 * A copy of a message's header quoted, indented or written in the obsolete
 * "Name :" syntax in the text (a bounce that copies the header inline, a
 * reply quoting a forwarded mail, an attached message whose first field has
 * a blank before the colon) still carries trace fields, not a probe.
 */
static void
test_inline_trace_lines_are_no_probe(void **state)
{
	static const char *const bodies[] = {
		/* An Exchange-style bounce: the header copied, indented. */
		"Delivery has failed.\r\n\r\n"
		    "   Received: from pc ([198.51.100.9]) by mx ([192.0.2.7])\r\n"
		    "   From: shop@shop.example\r\n",
		/* The same, folded. */
		"Delivery has failed.\r\n\r\n"
		    "   Received: from pc ([198.51.100.9])\r\n"
		    "    \tby mx ([192.0.2.7])\r\n",
		/* Quoted in a reply, folded lines too. */
		"See below.\r\n"
		    "> Received: from pc ([198.51.100.9])\r\n"
		    ">\tby mx ([192.0.2.7]) with SMTP\r\n"
		    "> X-Originating-IP: [192.0.2.7]\r\n"
		    ">> Message-ID: <1234@[192.0.2.7]>\r\n"
		    "> > Received: by 192.0.2.7\r\n",
		/* Obsolete syntax: blanks before the colon. */
		"Received : from pc by mx ([192.0.2.7])\r\n"
		    "X-Forwarded-For\t: 192.0.2.7\r\n",
		/* A trace field (by its prefix) with a name too long to keep. */
		"X-Forwarded-For-Some-Very-Long-Vendor-Specific-Field-Name-Here-"
		    "And-More: 192.0.2.7\r\n",
	};
	static const char *const attached[] = {
		/* An attached message whose first field reads "Received :". */
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
		    "Content-Type: message/rfc822\r\n\r\n"
		    "Received : from pc by mx ([192.0.2.7])\r\nSubject: x\r\n"
		    "\r\nhi\r\n--b--\r\n",
		/* One whose trace field decodes to two lines (an encoded word). */
		"Content-Type: message/rfc822\r\n\r\n"
		    "Received: =?us-ascii?q?from_pc=0Aby_mx_192.0.2.7?=\r\n"
		    "Subject: x\r\n\r\nhi\r\n",
	};
	char msg[2048];
	struct rules_decision d;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]) +
	    sizeof(attached) / sizeof(attached[0]); i++) {
		if (i < sizeof(bodies) / sizeof(bodies[0]))
			snprintf(msg, sizeof(msg), "From: <sales@shop.example>\r\n"
			    "To: victim@other.example\r\nSubject: Re: offer\r\n"
			    "\r\n%s", bodies[i]);
		else
			snprintf(msg, sizeof(msg), "From: <sales@shop.example>\r\n"
			    "To: victim@other.example\r\nSubject: Fwd: offer\r\n"
			    "%s", attached[i - sizeof(bodies) / sizeof(bodies[0])]);
		if (shipped_eval("192.0.2.7", "victim@other.example", msg, &d))
			fail_msg("spam taken for a probe (%s): %s",
			    d.evidence ? d.evidence : "", msg);
		rules_decision_clear(&d);
	}
	/* The text after a quoted trace field is still searched. */
	assert_true(shipped_eval("192.0.2.7", "drop@example.com",
	    "Subject: hi\r\n\r\n> Received: from pc\r\n> relay 192.0.2.7:25\r\n",
	    &d));
	assert_non_null(strstr(d.evidence, "\"what\":\"192.0.2.7:25\""));
	rules_decision_clear(&d);
	assert_true(shipped_eval("192.0.2.7", "drop@example.com",
	    "Subject: hi\r\n\r\n   Received: from pc\r\n\tthe relay 192.0.2.7\r\n",
	    &d));
	rules_decision_clear(&d);
}

/*
 * An mbox "From " line before the header (RFC 4155; bots that write their
 * queue files as mail) must not turn the header into text: a field that
 * is no probe evidence in the header is none after such a line either.
 */
static void
test_mbox_from_line(void **state)
{
	struct rules_decision d;

	(void)state;
	if (shipped_eval("192.0.2.7", "victim@other.example",
	    "From spammer@x.example Sun Dec  6 04:00:00 2026\r\n"
	    "Received: from pc ([198.51.100.9]) by mx ([192.0.2.7])\r\n"
	    "Cc: <admin@[192.0.2.7]>\r\nX-Mailer-Host: 192.0.2.7\r\n"
	    "From: <sales@shop.example>\r\nSubject: 80% off\r\n\r\nBuy now.\r\n",
	    &d))
		fail_msg("spam taken for a probe: %s", d.evidence);
	rules_decision_clear(&d);
	/* Its Subject is still the Subject. */
	assert_true(shipped_eval("192.0.2.7", "drop@example.com",
	    "From spammer@x.example Sun Dec  6 04:00:00 2026\r\n"
	    "Subject: 192.0.2.7:25\r\n\r\nhi\r\n", &d));
	assert_non_null(strstr(d.evidence, "\"where\":\"header:Subject\""));
	rules_decision_clear(&d);
}

/*
 * The obsolete header syntax (RFC 5322 4.5: blanks before the colon), which
 * Postfix takes as a header field too: the field is a header field, the
 * header after it is a header, wherever the field stands.
 */
static void
test_obsolete_field_syntax(void **state)
{
	struct rules_decision d;

	(void)state;
	if (shipped_eval("192.0.2.7", "victim@other.example",
	    "Received : from pc ([198.51.100.9]) by mx ([192.0.2.7])\r\n"
	    "Cc: <admin@[192.0.2.7]>\r\nFrom: <sales@shop.example>\r\n"
	    "Subject: 80% off\r\n\r\nBuy now.\r\n", &d))
		fail_msg("spam taken for a probe: %s", d.evidence);
	rules_decision_clear(&d);
	assert_true(shipped_eval("192.0.2.7", "drop@example.com",
	    "From: a@example.org\r\nSubject\t: test 192.0.2.7:25\r\n\r\nhi\r\n",
	    &d));
	assert_non_null(strstr(d.evidence, "\"where\":\"header:Subject\""));
	rules_decision_clear(&d);
	assert_true(shipped_eval("192.0.2.7", "drop@example.com",
	    "From: a@example.org\r\nSubject: hi\r\nX-SpamInfo : 192.0.2.7:25\r\n"
	    "\r\nhi\r\n", &d));
	assert_non_null(strstr(d.evidence, "\"where\":\"header:X-SpamInfo\""));
	rules_decision_clear(&d);
}

/*
 * A recipient at a domain literal is delivered to that address, no MX: the
 * relay would connect wherever the sender says -- to us (an open-relay
 * notice to postmaster@[our address] names our address in its text, and
 * each pass through us would relay it again), or into our own network.
 * No probe relays there.
 */
static void
test_domain_literal_recipient(void **state)
{
	static const char *const rcpts[] = {
		"postmaster@[192.0.2.7]", "drop@[10.0.0.1]", "drop@[127.0.0.1]",
		"drop@[IPv6:::1]",
	};
	struct rules_decision d;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(rcpts) / sizeof(rcpts[0]); i++) {
		if (shipped_eval("192.0.2.7", rcpts[i],
		    "From: Postmaster@isp.example\r\nSubject: Open relay notice\r\n"
		    "\r\nYour server 192.0.2.7 relays mail for third parties.\r\n",
		    &d))
			fail_msg("relayed to %s: %s", rcpts[i], d.evidence);
		rules_decision_clear(&d);
	}
	/* The same to a mailbox at a domain is a probe. */
	assert_true(shipped_eval("192.0.2.7", "drop@example.com",
	    "Subject: relay 192.0.2.7\r\n\r\nhi\r\n", &d));
	rules_decision_clear(&d);
}

/*
 * A header in base64: an attached message sent base64-encoded (some mail
 * clients do, whatever RFC 2046 says), or a text that is the base64 of a
 * mail.  Its trace fields are still trace fields once decoded.
 */
static void
test_base64_header_copy_is_no_probe(void **state)
{
	/* "Received: from pc ([198.51.100.9]) by mx ([192.0.2.7])\r\n
	 * From: a@b\r\nSubject: hello\r\n\r\nhi there\r\n" */
	static const char b64[] =
	    "UmVjZWl2ZWQ6IGZyb20gcGMgKFsxOTguNTEuMTAwLjldKSBieSBteCAoWzE5Mi4w"
	    "LjIuN10pDQpG\r\ncm9tOiBhQGINClN1YmplY3Q6IGhlbGxvDQoNCmhpIHRoZXJl"
	    "DQo=\r\n";
	static const char *const parts[] = {
		"Content-Type: message/rfc822\r\n"
		    "Content-Transfer-Encoding: base64\r\n\r\n",
		"Content-Type: message/rfc822\r\n"
		    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
		    "Received: from pc =\r\n([198.51.100.9]) by mx ([192.0.2=\r\n"
		    ".7])\r\nSubject: hello\r\n\r\nhi\r\n",
		"Content-Type: text/plain; name=original.eml\r\n\r\n",
	};
	char msg[2048];
	struct rules_decision d;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		snprintf(msg, sizeof(msg), "From: <sales@shop.example>\r\n"
		    "To: victim@other.example\r\nSubject: Fwd: hello\r\n"
		    "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
		    "Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
		    "%s%s--b--\r\n", parts[i], i == 1 ? "" : b64);
		if (shipped_eval("192.0.2.7", "victim@other.example", msg, &d))
			fail_msg("spam taken for a probe (%s): %s",
			    d.evidence ? d.evidence : "", msg);
		rules_decision_clear(&d);
	}
	/* The attached message's text is decoded and searched. */
	assert_true(shipped_eval("192.0.2.7", "drop@example.com",
	    "Subject: fwd\r\nContent-Type: message/rfc822\r\n"
	    "Content-Transfer-Encoding: base64\r\n\r\n"
	    "U3ViamVjdDogaGkNCg0KcmVsYXkgMTkyLjAuMi43OjI1DQo=\r\n", &d));
	assert_non_null(strstr(d.evidence, "\"what\":\"192.0.2.7:25\""));
	rules_decision_clear(&d);
}

/*
 * The decimal form of an address in 100.0.0.0-127.255.255.255 is a Unix time
 * of 2023-2038: 107.20.243.254 (a cloud provider's range) is 1796535294, the
 * second of 2026-12-06T05:34:54Z, which a mail written then carries in its
 * links and tracking parameters.  As a URL part, a parameter value, or
 * glued to '-', '_' and the like, a bare number is no probe's writing.
 */
static void
test_decimal_in_url_is_no_probe(void **state)
{
	static const char *const texts[] = {
		"<a href=\"https://shop.example/c?u=81723&t=1796535294\">Shop</a>",
		"https://cdn.example/img/1796535294/banner.png",
		"https://shop.example/c#1796535294",
		"unsubscribe: https://shop.example/u/1796535294",
		"ref: order-1796535294_x",
	};
	char msg[1024];
	struct rules_decision d;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		snprintf(msg, sizeof(msg), "From: <news@shop.example>\r\n"
		    "Subject: Weekly deals\r\n\r\n%s\r\n", texts[i]);
		if (shipped_eval("107.20.243.254", "victim@other.example", msg,
		    &d))
			fail_msg("spam taken for a probe (%s): %s",
			    d.evidence ? d.evidence : "", msg);
		rules_decision_clear(&d);
	}
	/* Written as an address, it is one. */
	assert_true(shipped_eval("107.20.243.254", "drop@example.com",
	    "Subject: 1796535294:25\r\n\r\nhi\r\n", &d));
	rules_decision_clear(&d);
	assert_true(shipped_eval("107.20.243.254", "drop@example.com",
	    "Subject: hi\r\n\r\nrelay (1796535294) ok\r\n", &d));
	rules_decision_clear(&d);
	/* Other forms in a URL still count (they are no times). */
	assert_true(shipped_eval("107.20.243.254", "drop@example.com",
	    "Subject: hi\r\n\r\nhttp://107.20.243.254:25/\r\n", &d));
	rules_decision_clear(&d);
}

/* The shipped rules on a sample mail of tests/data: relayed or not. */
static void
check_sample(const char *path, const char *own, bool want)
{
	struct rules_decision d;
	char *m = slurp(path, NULL);

	assert_non_null(m);
	if (shipped_eval(own, "drop@example.com", m, &d) != want)
		fail_msg("%s: relay %d, wanted %d", path, d.relay, want);
	rules_decision_clear(&d);
	free(m);
}

/* The probe forms seen in the wild still are probes; the evidence says where. */
static void
test_probe_forms(void **state)
{
	struct rules_decision d;

	(void)state;
	check_sample("tests/data/probe-subject.eml", "1.2.3.4", true);
	check_sample("tests/data/probe-b64-subject.eml", "1.2.3.4", true);
	check_sample("tests/data/probe-spaminfo.eml", "1.2.3.4", true);
	check_sample("tests/data/probe-lastline.eml", "1.2.3.4", true);
	check_sample("tests/data/probe-hex.eml", "217.128.138.253", true);
	check_sample("tests/data/negative.eml", "1.2.3.4", false);
	check_sample("tests/data/spam-trace.eml", "1.2.3.4", false);
	assert_true(shipped_eval("217.128.138.253", "drop@example.com",
	    "Subject: D9808AFD:8080\r\n\r\nhi\r\n", &d));
	assert_non_null(strstr(d.evidence, "{\"matcher\":\"mentions_own_address\","
	    "\"where\":\"header:Subject\",\"what\":\"D9808AFD:8080\"}"));
	rules_decision_clear(&d);
	assert_true(shipped_eval("217.128.138.253", "drop@example.com",
	    "Subject: hi\r\n\r\nmeeting at d9808afd:8080\r\n", &d));
	assert_non_null(strstr(d.evidence, "\"where\":\"body\","
	    "\"what\":\"d9808afd:8080\""));
	rules_decision_clear(&d);
	assert_true(shipped_eval("1.2.3.4", "drop@example.com",
	    "Subject: hi\r\nX-SpamInfo: 1.2.3.4:25 u p\r\n\r\nhi\r\n", &d));
	assert_non_null(strstr(d.evidence, "\"where\":\"header:X-SpamInfo\""));
	rules_decision_clear(&d);
	/* Mixed case and hex inside a hash are not the address. */
	assert_false(shipped_eval("217.128.138.253", "drop@example.com",
	    "Subject: D9808aFD:8080\r\n\r\nsha1 e3b0c442d9808afd98fc1c14\r\n", &d));
	rules_decision_clear(&d);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_as_shipped_file),
		cmocka_unit_test(test_loads_and_finds_a_probe),
		cmocka_unit_test(test_trace_headers_are_no_probe),
		cmocka_unit_test(test_probe_forms),
		cmocka_unit_test(test_inline_trace_lines_are_no_probe),
		cmocka_unit_test(test_mbox_from_line),
		cmocka_unit_test(test_obsolete_field_syntax),
		cmocka_unit_test(test_domain_literal_recipient),
		cmocka_unit_test(test_base64_header_copy_is_no_probe),
		cmocka_unit_test(test_decimal_in_url_is_no_probe),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
