/* libFuzzer target: the rules file loader, then one evaluation with what loaded. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "log.h"
#include "rules.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const char msg[] =
    "Received: from x ([198.51.100.7]) by mx ([1.2.3.4])\r\n"
    "Message-ID: <a@[1.2.3.4]>\r\n"
    "From: a@example.net\r\n"
    "Subject: =?utf-8?B?cmVsYXkgMS4yLjMuNA==?=\r\n"
    "X-SpamInfo: 1.2.3.4:25\r\n"
    "Content-Type: multipart/mixed; boundary=b\r\n"
    "\r\n"
    "--b\r\n"
    "\r\n"
    "hello 0x01020304 at 101020304:25:6 o'clock, d9808afd\r\n"
    "--b\r\n"
    "Content-Type: message/rfc822\r\n"
    "\r\n"
    "Received: from y\r\n"
    " by [1.2.3.4]\r\n"
    "Subject: 01020304:25\r\n"
    "\r\n"
    "x\r\n"
    "--b--\r\n";

/* Load arbitrary bytes as a rules file; the error must be a C string. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const own[] = { "1.2.3.4", "2001:db8::1" };
	static const char *const rcpt[] = { "drop@example.com" };
	struct rules_decision d;
	struct rules_facts f;
	struct rules *rs;
	char err[256];
	int st;

	rs = rules_load_buf("fuzz.yml", (const char *)data, size, err,
	    sizeof(err));
	if (rs == NULL) {
		if (memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0')
			__builtin_trap();
		return 0;
	}
	memset(&f, 0, sizeof(f));
	f.helo = "mail.example.net";
	f.auth_user = "user";
	f.auth_pass = "pass";
	f.mail_from = "a@example.net";
	f.rcpt = rcpt;
	f.nrcpt = 1;
	f.src_ip = "198.51.100.7";
	f.dst_ip = "10.0.0.5";
	f.dst_port = 25;
	f.msg = (const unsigned char *)msg;
	f.msglen = sizeof(msg) - 1;
	f.size = f.msglen;
	f.own_addrs = own;
	f.nown = 2;
	for (st = RULES_STAGE_EHLO; st <= RULES_STAGE_DATA; st++) {
		f.stage = (enum rules_stage)st;
		if (rules_eval(rs, &f, &d) == 0 && d.evidence != NULL &&
		    (d.evidence[0] != '[' ||
		    !utf8_valid(d.evidence, strlen(d.evidence))))
			__builtin_trap();
		rules_decision_clear(&d);
	}
	rules_free(rs);
	return 0;
}
