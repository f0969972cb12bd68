/*
 * libFuzzer target: the reception record's parser (record.c), as the relay
 * and the console read every journal line.  The input is one line: parsed,
 * the DATA decision under "rules" read; a parsed record is written again
 * with record_write and parsed back, and what it holds must survive (the
 * sender and the recipients exactly when they are valid UTF-8: the writer
 * turns each invalid byte into U+FFFD).  The raw payload both outputs
 * publish for the line (hpf_payload_raw) is built too: whatever the record
 * holds (HELO, recipients, client name are the client's bytes), its
 * Received header is one header, CRLF-ended lines of printable ASCII whose
 * continuations start with a tab (no header injection), then the mail's
 * bytes, the whole within the limit.  Seeds: real journal lines.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hpfeeds_wire.h"
#include "log.h"
#include "persona.h"
#include "record.h"
#include "rules.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);
static void	check_raw(const char *, size_t);

/* The raw payload of the line: one well-formed Received header, then the body. */
static void
check_raw(const char *line, size_t len)
{
	static const char body[] = "Subject: x\r\n\r\nbody\r\n";
	size_t bl = sizeof(body) - 1, hl, i, limit = 64 + len % 2048;
	char note[256];
	struct jbuf jb;
	bool cut;

	jb_init(&jb);
	if (hpf_payload_raw(&jb, line, len, persona_default(), "mx.example.test", body, bl,
	    bl, limit, &cut, note, sizeof(note)) == -1) {
		jb_free(&jb);
		return;		/* out of memory */
	}
	if (jb.len > limit)
		abort();
	/* The header: "Received: " then lines of printable ASCII (tabs allowed)
	 * ending in CRLF, each continuation starting with a tab. */
	hl = 0;
	if (jb.len >= 10 && memcmp(jb.buf, "Received: ", 10) == 0) {
		for (i = 0; i < jb.len; i++) {
			unsigned char c = (unsigned char)jb.buf[i];

			if (c == '\r') {
				if (i + 1 >= jb.len || jb.buf[i + 1] != '\n')
					abort();
				i++;
				if (i + 1 >= jb.len || jb.buf[i + 1] != '\t') {
					hl = i + 1;
					break;
				}
			} else if (c == '\n' || (c < 0x20 && c != '\t') || c >= 0x7f)
				abort();
		}
		if (hl == 0)
			abort();
	} else if (note[0] == '\0')
		abort();	/* a header left out is always said */
	/* Then the mail's bytes, cut to the limit and said so. */
	if (jb.len - hl != (bl < limit - hl ? bl : limit - hl) ||
	    memcmp(jb.buf + hl, body, jb.len - hl) != 0 || cut != (jb.len - hl < bl))
		abort();
	jb_free(&jb);
}

struct rv {
	char	**v;
	int	  n;
};

static int
each(const void *src, void (*put)(void *, const char *, size_t), void *arg)
{
	const struct rv *r = src;

	for (int i = 0; i < r->n; i++)
		put(arg, r->v[i], strlen(r->v[i]));
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rules_decision d;
	struct record_in in;
	struct record *r, *back;
	struct jbuf jb;
	struct rv rv;
	char *copy, err[256];

	/* An exact-size copy: any read past the line is caught. */
	if ((copy = malloc(size ? size : 1)) == NULL)
		return 0;
	memcpy(copy, data, size);
	memset(&d, 0, sizeof(d));
	(void)record_decision(copy, size, &d);
	rules_decision_clear(&d);
	check_raw(copy, size);
	if ((r = record_parse(copy, size, err, sizeof(err))) == NULL) {
		free(copy);
		return 0;
	}
	if (strlen(r->sha256) != 64 || r->mail_from == NULL || r->nrcpt < 0 ||
	    r->nrcpt > RECORD_RCPT_MAX)
		abort();
	for (int i = 0; i < r->nrcpt; i++)
		if (r->rcpt[i] == NULL)
			abort();

	memset(&in, 0, sizeof(in));
	in.time = r->time;
	in.queue_id = r->queue_id;
	in.sha256 = r->sha256;
	in.size = r->size;
	in.sensor = "s";
	in.src_ip = r->src_ip;
	in.src_port = r->src_port;
	in.dst_ip = r->dst_ip;
	in.dst_port = r->dst_port;
	in.listener = "l";
	in.client_name = r->client_name;
	in.reverse_name = "";
	in.helo = r->helo;
	in.protocol = r->protocol;
	in.mail_from = r->mail_from;
	rv.v = r->rcpt;
	rv.n = r->nrcpt;
	in.rcpt_each = each;
	in.rcpt_src = &rv;
	in.transfer = "DATA";
	jb_init(&jb);
	record_write(&jb, &in);
	if (jb.oom)
		abort();
	if (!utf8_valid(jb.buf, jb.len) || memchr(jb.buf, '\n', jb.len) != NULL)
		abort();
	if ((back = record_parse(jb.buf, jb.len, err, sizeof(err))) == NULL)
		abort();
	if (strcmp(back->sha256, r->sha256) != 0 || back->nrcpt != r->nrcpt ||
	    back->size != r->size || back->src_port != r->src_port)
		abort();
	if (utf8_valid(r->mail_from, strlen(r->mail_from)) &&
	    strcmp(back->mail_from, r->mail_from) != 0)
		abort();
	for (int i = 0; i < r->nrcpt; i++)
		if (utf8_valid(r->rcpt[i], strlen(r->rcpt[i])) &&
		    strcmp(back->rcpt[i], r->rcpt[i]) != 0)
			abort();
	record_free(back);
	jb_free(&jb);
	record_free(r);
	free(copy);
	return 0;
}
