/* libFuzzer target: a raw mail through MIME decoding and a fixed rule set. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mime.h"
#include "rules.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* Every message matcher, with the costly operators. */
static const char rules_yml[] =
    "rules:\n"
    "  - name: hdr\n"
    "    priority: 1\n"
    "    stage: data\n"
    "    conditions:\n"
    "      - header: {name: X-SpamInfo, regex: \"(\\\\d+\\\\.){3}\\\\d+\"}\n"
    "        subject: {contains: PING, nocase: true}\n"
    "      - body: {regex: \"(?:a|b)+c$\", nocase: true}\n"
    "        header: [{name: From}, {name: To, not: true}]\n"
    "  - name: body\n"
    "    priority: 2\n"
    "    stage: data\n"
    "    conditions:\n"
    "      - body: [{contains: [zz, Q], nocase: true}, {equals: x, not: true}]\n"
    "        size: {lt: 1M}\n"
    "  - name: probe\n"
    "    priority: 3\n"
    "    stage: data\n"
    "    conditions:\n"
    "      - mentions_own_address: true\n"
    "    actions: {relay: true, tag: probe}\n";

static struct rules *rs;

/* Decode the mail, decode it as a header value, evaluate the rules on it. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const own[] = { "1.2.3.4", "2001:db8::1" };
	static const char *const rcpt[] = { "drop@example.com" };
	struct rules_decision d;
	struct rules_facts f;
	struct mime_msg m;
	char err[256], *h;
	size_t hl = 0;
	int i;

	if (rs == NULL &&
	    (rs = rules_load_buf("fuzz", rules_yml, sizeof(rules_yml) - 1, err,
	    sizeof(err))) == NULL)
		__builtin_trap();
	if (mime_parse(data, size, &m) == 0) {
		if (m.body == NULL || m.body[m.bodylen] != '\0' ||
		    m.bodylen > MIME_BODY_MAX || m.nhdrs > MIME_HDR_MAX)
			__builtin_trap();
		for (i = 0; i < m.nhdrs; i++)
			if (m.hdrs[i].value[m.hdrs[i].valuelen] != '\0')
				__builtin_trap();
		mime_msg_free(&m);
	}
	if ((h = mime_decode_header((const char *)data, size, 4096, &hl)) !=
	    NULL) {
		if (hl > 4096)
			__builtin_trap();
		free(h);
	}
	memset(&f, 0, sizeof(f));
	f.stage = RULES_STAGE_DATA;
	f.helo = "mail.example.net";
	f.mail_from = "a@example.net";
	f.rcpt = rcpt;
	f.nrcpt = 1;
	f.src_ip = "198.51.100.7";
	f.dst_ip = "::ffff:10.0.0.5";
	f.dst_port = 25;
	f.msg = data;
	f.msglen = size;
	f.size = size;
	f.own_addrs = own;
	f.nown = 2;
	if (rules_eval(rs, &f, &d) == 0 && d.evidence != NULL &&
	    (d.evidence[0] != '[' || !utf8_valid(d.evidence,
	    strlen(d.evidence))))
		__builtin_trap();
	rules_decision_clear(&d);
	return 0;
}
