/*
 * The operator tool (--feed-subscribe, see hpfeeds_sub.h): an hpfeeds
 * subscriber printing every publish as one JSON line, with the payload's
 * sha256 verified.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config.h"
#include "hpfeeds.h"
#include "hpfeeds_sub.h"
#include "hpfeeds_wire.h"
#include "json.h"
#include "log.h"
#include "util.h"

/* The tool's state. */
struct sub {
	struct event_base *base;
	long		 count;		/* exit after this many (0 = never) */
	long		 seen;
	bool		 failed;	/* stdout went away */
};

static void	 sub_print(void *, const struct hpf_frame *);

/* Print a received publish as one JSON line with the verification result. */
static void
sub_print(void *arg, const struct hpf_frame *f)
{
	struct sub *st = arg;
	struct jbuf jb;
	const char *p = (const char *)f->data, *e = p + f->datalen, *q;
	bool obj = json_is_object(p, f->datalen);

	jb_init(&jb);
	jb_obj_open(&jb);
	jb_kstr(&jb, "channel", f->chan, f->chanlen);
	jb_kstr(&jb, "ident", f->name, f->namelen);
	jb_kbool(&jb, "verified", obj && hpf_payload_verify(p, f->datalen) == 1);
	if (!obj)
		jb_kstr(&jb, "payload_raw", p, f->datalen);
	jb_obj_close(&jb);
	if (jb.oom) {
		jb_free(&jb);
		return;
	}
	if (obj) {
		/*
		 * Splice the payload's members in after ours.  In valid JSON a raw
		 * CR or LF can only be whitespace: make it a space (one line each).
		 */
		for (q = p; *q != '{'; q++)
			;	/* a valid object: only whitespace before its brace */
		for (q++; q < e && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'); q++)
			;
		while (e > q && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' ||
		    e[-1] == '\r'))
			e--;
		fwrite(jb.buf, 1, jb.len - 1, stdout);
		if (*q != '}')
			fputc(',', stdout);
		for (; q < e; q++)
			fputc(*q == '\n' || *q == '\r' ? ' ' : *q, stdout);
	} else
		fwrite(jb.buf, 1, jb.len, stdout);
	fputc('\n', stdout);
	jb_free(&jb);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "hpfeeds: cannot write to stdout: %s\n", strerror(errno));
		st->failed = true;
		event_base_loopbreak(st->base);
		return;
	}
	if (st->count > 0 && ++st->seen >= st->count)
		event_base_loopbreak(st->base);
}

/* The operator tool (see hpfeeds.h). */
int
hpf_subscribe_main(const struct cfg_feed *feed, int argc, char **argv)
{
	struct event_base *base;
	struct sub st;
	struct hpf *h;
	char err[256];
	long count = 0;
	int i, rc;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
			uint64_t v;

			if (util_parse_u64(argv[i + 1], strlen(argv[i + 1]), 1, LONG_MAX,
			    false, &v) == -1) {
				fprintf(stderr, "--count: not a positive number\n");
				return 2;
			}
			count = (long)v;
			i++;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	if ((base = event_base_new()) == NULL) {
		fprintf(stderr, "hpfeeds: cannot create an event loop\n");
		return 1;
	}
	memset(&st, 0, sizeof(st));
	st.base = base;
	st.count = count;
	if ((h = hpf_subscribe(base, feed, sub_print, &st, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		event_base_free(base);
		return 1;
	}
	event_base_dispatch(base);
	rc = st.failed ? 1 : 0;
	hpf_free(h);
	event_base_free(base);
	return rc;
}
