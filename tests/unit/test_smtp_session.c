/*
 * Unit tests of the session's stage hooks (struct smtp_server): a real
 * smtp_session on a real spool (temporary directory) through a
 * bufferevent_pair; the test plays the client and the hooks.
 *
 *   - a synchronous EHLO hook's 554 replaces the EHLO reply;
 *   - the DATA hook sees the complete message file before the commit, the
 *     session answers nothing until the hook is done, then a 451 from the
 *     hook replaces the 250 while the message and its record are durable;
 *   - the client disconnecting while the hook decides: the session waits,
 *     the message is committed when the hook is done;
 *   - the end of a shutdown while the hook decides: the request is cancelled,
 *     the message is still committed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "persona.h"
#include "smtp_session.h"
#include "spool.h"
#include "testutil.h"

static const char body[] = "Subject: hello\r\n\r\nline one\r\n";

struct fixture {
	struct event_base	*base;
	struct cfg		 cfg;
	struct smtp_server	*srv;
	struct spool		*sp;
	char			 dir[64];
	struct bufferevent	*client;	/* our end of the pair; NULL once closed */
	struct evbuffer		*rx;		/* every reply byte received */
	/* hook calls */
	int			 nsync;
	enum smtp_stage		 last_stage;
	char			 last_helo[256];
	int			 ndata;
	char			 data_file[4096];	/* message file content seen by the DATA hook */
	size_t			 data_len;
	smtp_stage_done_cb	 done;
	void			*done_arg;
	int			 handle;		/* what data_cb returns */
	int			 ncancel;
	int			 nmail;
	char			 record[8192];
	/* the recipients the hooks saw, joined by '|' (want_nrcpt: how many expected, 0 = 1) */
	int			 want_nrcpt;
	int			 seen_nrcpt;
	char			*seen_rcpts;
};

static struct fixture *F;

/* Keep what a hook was shown of the recipients (F->seen_rcpts). */
static void
rcpts_seen(const struct smtp_stage_req *req)
{
	size_t len = 1, off = 0;

	for (int i = 0; i < req->nrcpt; i++)
		len += strlen(req->rcpt[i]) + 1;
	free(F->seen_rcpts);
	assert_non_null(F->seen_rcpts = malloc(len));
	for (int i = 0; i < req->nrcpt; i++)
		off += (size_t)sprintf(F->seen_rcpts + off, "%s|", req->rcpt[i]);
	F->seen_rcpts[off] = '\0';
	F->seen_nrcpt = req->nrcpt;
}

/* Hook: every stage has rules. */
static bool
wanted(void *arg, enum smtp_stage st)
{
	return true;
}

/* Hook: EHLO "bad.example" gets a 554; everything else has no match. */
static int
stage_cb(void *arg, const struct smtp_stage_req *req, struct smtp_stage_result *res)
{
	F->nsync++;
	F->last_stage = req->stage;
	if (req->mail_from != NULL)
		rcpts_seen(req);
	snprintf(F->last_helo, sizeof(F->last_helo), "%s", req->helo ? req->helo : "");
	if (req->stage == SMTP_STAGE_EHLO && strcmp(req->helo, "bad.example") == 0) {
		res->matched = true;
		res->reply_code = 554;
		snprintf(res->reply_text, sizeof(res->reply_text), "5.7.1 go away");
		snprintf(res->rule, sizeof(res->rule), "bad-helo");
		snprintf(res->tag, sizeof(res->tag), "bad");
		res->publish = true;
	}
	return 0;
}

/* Hook: remember the request; the test answers later through F->done. */
static void *
data_cb(void *arg, const struct smtp_stage_req *req, smtp_stage_done_cb done, void *done_arg)
{
	FILE *fp;

	F->ndata++;
	assert_int_equal(req->stage, SMTP_STAGE_DATA);
	assert_non_null(req->sha256);
	assert_int_equal(strlen(req->sha256), 64);
	assert_string_equal(req->mail_from, "a@example.org");
	assert_int_equal(req->nrcpt, F->want_nrcpt ? F->want_nrcpt : 1);
	rcpts_seen(req);
	if (req->msg_data != NULL) {
		/* A small mail: the spool holds it in memory, there is no file. */
		assert_null(req->msg_path);
		assert_true(req->msg_len <= sizeof(F->data_file));
		memcpy(F->data_file, req->msg_data, req->msg_len);
		F->data_len = req->msg_len;
	} else {
		assert_non_null(req->msg_path);
		fp = fopen(req->msg_path, "rb");
		assert_non_null(fp);
		F->data_len = fread(F->data_file, 1, sizeof(F->data_file), fp);
		fclose(fp);
	}
	F->done = done;
	F->done_arg = done_arg;
	return &F->handle;
}

/* Hook: the session went away while deciding. */
static void
data_cancel(void *arg, void *handle)
{
	assert_ptr_equal(handle, &F->handle);
	F->ncancel++;
	F->done = NULL;
}

/* A message is durable. */
static void
on_mail(void *arg, const char *record, size_t len)
{
	F->nmail++;
	snprintf(F->record, sizeof(F->record), "%.*s", (int)len, record);
}

/* Collect replies. */
static void
client_read_cb(struct bufferevent *bev, void *arg)
{
	evbuffer_add_buffer(F->rx, bufferevent_get_input(bev));
}

/* Run the loop until nothing is left to do right now (bounded). */
static void
pump(void)
{
	for (int i = 0; i < 200; i++) {
		struct timeval tv = { 0, 2000 };
		event_base_loopexit(F->base, &tv);
		event_base_dispatch(F->base);
	}
}

/* Pump until cond() holds or about two seconds pass. */
static bool
pump_until(bool (*cond)(void))
{
	for (int i = 0; i < 1000; i++) {
		if (cond())
			return true;
		struct timeval tv = { 0, 2000 };
		event_base_loopexit(F->base, &tv);
		event_base_dispatch(F->base);
	}
	return cond();
}

/* The replies so far as a C string (consumed). */
static char *
replies(void)
{
	size_t n = evbuffer_get_length(F->rx);
	char *s = malloc(n + 1);

	assert_non_null(s);
	evbuffer_remove(F->rx, s, n);
	s[n] = '\0';
	return s;
}

/* Send a line (CRLF added). */
static void
say(const char *line)
{
	bufferevent_write(F->client, line, strlen(line));
	bufferevent_write(F->client, "\r\n", 2);
}

/* A spool, a server with hooks, one session with the client end connected. */
static int
setup(void **state)
{
	struct spool_opts so;
	struct smtp_server_opts sopts;
	struct bufferevent *pair[2];
	struct sockaddr_in sin;
	char err[256];
	char *s;

	F = calloc(1, sizeof(*F));
	assert_non_null(F);
	log_init(LOG_LVL_ERR);
	assert_non_null(F->base = event_base_new());
	cfg_defaults(&F->cfg);
	F->cfg.event_log[0] = '\0';
	F->cfg.spool_min_free = 0;
	F->cfg.limits.error_sleep = 0;
	F->cfg.limits.banner_delay_ms = 0;
	F->cfg.limits.banner_jitter_ms = 0;
	snprintf(F->dir, sizeof(F->dir), "/tmp/fosr-test-session-XXXXXX");
	assert_non_null(mkdtemp(F->dir));
	memset(&so, 0, sizeof(so));
	so.dir = F->dir;
	so.hostname = "mail.example.com";
	F->sp = spool_open(F->base, &so, err, sizeof(err));
	assert_non_null(F->sp);

	memset(&sopts, 0, sizeof(sopts));
	sopts.base = F->base;
	sopts.cfg = &F->cfg;
	assert_non_null(sopts.persona = persona_default());
	sopts.spool = F->sp;
	sopts.hostname = "mail.example.com";
	sopts.on_mail = on_mail;
	sopts.hooks.wanted = wanted;
	sopts.hooks.stage_cb = stage_cb;
	sopts.hooks.data_cb = data_cb;
	sopts.hooks.data_cancel = data_cancel;
	assert_non_null(F->srv = smtp_server_new(&sopts));
	assert_non_null(F->rx = evbuffer_new());

	assert_int_equal(bufferevent_pair_new(F->base, BEV_OPT_CLOSE_ON_FREE |
	    BEV_OPT_DEFER_CALLBACKS, pair), 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(40000);
	sin.sin_addr.s_addr = htonl(0x7f000001);
	F->client = pair[1];
	bufferevent_setcb(F->client, client_read_cb, NULL, NULL, NULL);
	bufferevent_enable(F->client, EV_READ | EV_WRITE);
	assert_non_null(smtp_session_new_bev(F->srv, &F->cfg.listeners[0], pair[0],
	    (struct sockaddr *)&sin, sizeof(sin)));
	pump();
	s = replies();
	assert_true(strncmp(s, "220 ", 4) == 0);
	free(s);
	*state = F;
	return 0;
}

/* Close everything, remove the spool. */
static int
teardown(void **state)
{
	smtp_server_free(F->srv);
	if (F->client)
		bufferevent_free(F->client);
	spool_free(F->sp);
	evbuffer_free(F->rx);
	event_base_free(F->base);
	rm_rf(F->dir);
	free(F->seen_rcpts);
	free(F);
	F = NULL;
	return 0;
}

/* Does messages/<sha>.eml of the (single) recorded mail hold the body? */
static void
assert_message_stored(const char *sha)
{
	char path[256], buf[4096];
	FILE *fp;
	size_t n;

	snprintf(path, sizeof(path), "%s/messages/%s.eml", F->dir, sha);
	fp = fopen(path, "rb");
	assert_non_null(fp);
	n = fread(buf, 1, sizeof(buf), fp);
	fclose(fp);
	assert_int_equal(n, strlen(body));
	assert_memory_equal(buf, body, n);
}

/*
 * F->record with the values that differ between runs (time, session id,
 * queue id) replaced by "T", "S", "Q", into out.
 */
static void
record_masked(char *out, size_t outlen)
{
	static const char *const keys[] = { "\"time\":\"", "\"session\":\"",
	    "\"queue_id\":\"" };
	static const char *const subst[] = { "T", "S", "Q" };
	const char *p = F->record, *q, *best;
	size_t off = 0, bi = 0;

	for (;;) {
		best = NULL;
		for (size_t i = 0; i < 3; i++)
			if ((q = strstr(p, keys[i])) != NULL && (best == NULL || q < best)) {
				best = q;
				bi = i;
			}
		if (best == NULL)
			break;
		q = best + strlen(keys[bi]);
		off += (size_t)snprintf(out + off, outlen - off, "%.*s%s", (int)(q - p), p,
		    subst[bi]);
		assert_true(off < outlen);
		p = strchr(q, '"');
		assert_non_null(p);
	}
	snprintf(out + off, outlen - off, "%s", p);
}

/* Whether the DATA hook has been asked. */
static bool
data_asked(void)
{
	return F->ndata > 0;
}

/* Whether a mail was made durable. */
static bool
mail_done(void)
{
	return F->nmail > 0;
}

/* Whether every session is gone. */
static bool
no_sessions(void)
{
	return smtp_server_sessions(F->srv) == 0;
}

/* Send the envelope and the body up to the final dot. */
static void
send_mail(void)
{
	char *s;

	say("EHLO client.example");
	say("MAIL FROM:<a@example.org>");
	say("RCPT TO:<b@example.net>");
	say("DATA");
	pump();
	s = replies();
	assert_non_null(strstr(s, "354 "));
	free(s);
	bufferevent_write(F->client, body, strlen(body));
	say(".");
}

/* The sha256 of the body as the record says it. */
static void
record_sha(char sha[65])
{
	const char *p = strstr(F->record, "\"sha256\":\"");

	assert_non_null(p);
	memcpy(sha, p + 10, 64);
	sha[64] = '\0';
}

/*
 * Recipients past the in-memory budget go to a file and come back whole and
 * in order: for the RSET and DATA hooks and in the reception record.
 */
static void
test_rcpts_spilled(void **state)
{
	enum { N = 40, LEN = 1000 };
	char line[LEN + 32], addr[LEN + 1], *want, *s;
	size_t off = 0;
	struct smtp_stage_result res;

	assert_non_null(want = malloc((size_t)N * (LEN + 1) + 1));
	say("EHLO client.example");
	say("MAIL FROM:<a@example.org>");
	for (int i = 0; i < N; i++) {
		/* 40 x 1 KB: five times the 8 KiB kept in memory. */
		int n = snprintf(addr, sizeof(addr), "r%02d-", i);
		memset(addr + n, 'a' + i % 26, LEN - n - 12);
		memcpy(addr + LEN - 12, "@example.net", 13);
		snprintf(line, sizeof(line), "RCPT TO:<%s>", addr);
		say(line);
		off += (size_t)sprintf(want + off, "%s|", addr);
		if (i % 8 == 7)
			pump();	/* the input buffer stays small */
	}
	say("RSET");
	pump();
	s = replies();
	assert_non_null(strstr(s, "250 2.0.0 Ok\r\n"));
	assert_null(strstr(s, "451"));
	free(s);
	/* The RSET hook was asked before the transaction went: all 40. */
	assert_int_equal(F->last_stage, SMTP_STAGE_RSET);
	assert_int_equal(F->seen_nrcpt, N);
	assert_string_equal(F->seen_rcpts, want);

	/* Again, through DATA to the record. */
	F->want_nrcpt = N;
	say("MAIL FROM:<a@example.org>");
	for (int i = 0; i < N; i++) {
		int n = snprintf(addr, sizeof(addr), "r%02d-", i);
		memset(addr + n, 'a' + i % 26, LEN - n - 12);
		memcpy(addr + LEN - 12, "@example.net", 13);
		snprintf(line, sizeof(line), "RCPT TO:<%s>", addr);
		say(line);
		if (i % 8 == 7)
			pump();
	}
	say("DATA");
	pump();
	s = replies();
	assert_non_null(strstr(s, "354 "));
	free(s);
	F->seen_nrcpt = 0;
	bufferevent_write(F->client, body, strlen(body));
	say(".");
	assert_true(pump_until(data_asked));
	assert_int_equal(F->seen_nrcpt, N);
	assert_string_equal(F->seen_rcpts, want);
	memset(&res, 0, sizeof(res));
	F->done(F->done_arg, 0, &res);
	assert_true(pump_until(mail_done));
	/* The record (cut at 8 KB here) lists them in order. */
	assert_non_null(strstr(F->record, "\"rcpt_to\":[\"r00-"));
	free(want);
}

/*
 * A recipient only half written to the spill file (disk full, EFBIG) gets
 * 451; the ones after it must still read back whole and in order.
 */
static void
test_rcpts_spill_short_write(void **state)
{
	enum { N = 16, LEN = 1000 };
	char line[LEN + 32], addr[LEN + 1], *want, *s;
	size_t off = 0;
	struct rlimit rl, small;

	assert_non_null(want = malloc((size_t)N * (LEN + 1) + 1));
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &rl), 0);
	signal(SIGXFSZ, SIG_IGN);
	say("EHLO client.example");
	say("MAIL FROM:<a@example.org>");
	pump();
	free(replies());
	for (int i = 0; i < N; i++) {
		int n = snprintf(addr, sizeof(addr), "r%02d-", i);
		memset(addr + n, 'a' + i % 26, LEN - n - 12);
		memcpy(addr + LEN - 12, "@example.net", 13);
		snprintf(line, sizeof(line), "RCPT TO:<%s>", addr);
		/* 8 in memory, 2 in the file, the 11th cut at 2,500 bytes. */
		if (i == 10) {
			small = rl;
			small.rlim_cur = 2500;
			assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
		}
		say(line);
		pump();
		s = replies();
		if (i == 10) {
			assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
			assert_non_null(strstr(s, "451 4.3.0"));
		} else {
			assert_non_null(strstr(s, "250 2.1.5 Ok"));
			off += (size_t)sprintf(want + off, "%s|", addr);
		}
		free(s);
	}
	say("RSET");
	pump();
	free(replies());
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(F->last_stage, SMTP_STAGE_RSET);
	assert_int_equal(F->seen_nrcpt, N - 1);
	assert_string_equal(F->seen_rcpts, want);
	free(want);
}

/* EHLO: a matching rule's 554 replaces the keyword list; others are untouched. */
static void
test_ehlo_hook_reply(void **state)
{
	char *s;

	say("EHLO bad.example");
	pump();
	s = replies();
	assert_string_equal(s, "554 5.7.1 go away\r\n");
	free(s);
	assert_int_equal(F->nsync, 1);
	assert_int_equal(F->last_stage, SMTP_STAGE_EHLO);
	assert_string_equal(F->last_helo, "bad.example");
	/* Another name is answered normally. */
	say("EHLO good.example");
	pump();
	s = replies();
	assert_true(strncmp(s, "250-mail.example.com\r\n", 22) == 0);
	free(s);
	say("RSET");
	pump();
	s = replies();
	assert_string_equal(s, "250 2.0.0 Ok\r\n");
	free(s);
	assert_int_equal(F->last_stage, SMTP_STAGE_RSET);
}

/* DATA: nothing is answered while the hook decides; its 451 replaces the 250. */
static void
test_data_hook_reply(void **state)
{
	struct smtp_stage_result res;
	char *s, sha[65];

	send_mail();
	assert_true(pump_until(data_asked));
	/* The hook saw the complete message before any commit. */
	assert_int_equal(F->data_len, strlen(body));
	assert_memory_equal(F->data_file, body, F->data_len);
	pump();
	assert_int_equal(F->nmail, 0);
	assert_int_equal(evbuffer_get_length(F->rx), 0);
	/* Pipelined commands wait too. */
	say("NOOP");
	pump();
	assert_int_equal(evbuffer_get_length(F->rx), 0);

	memset(&res, 0, sizeof(res));
	res.matched = true;
	res.reply_code = 451;
	snprintf(res.reply_text, sizeof(res.reply_text), "4.7.1 Try again later");
	snprintf(res.rule, sizeof(res.rule), "greylist");
	snprintf(res.tag, sizeof(res.tag), "bulk");
	res.publish = false;
	res.record = strdup("{\"stage\":\"data\",\"matched\":true}");
	F->done(F->done_arg, 0, &res);
	assert_null(res.record);	/* the session took it */
	assert_true(pump_until(mail_done));
	pump();
	s = replies();
	assert_string_equal(s, "451 4.7.1 Try again later\r\n250 2.0.0 Ok\r\n");
	free(s);
	assert_non_null(strstr(F->record, "\"publish\":false"));
	assert_non_null(strstr(F->record, "\"tag\":\"bulk\""));
	assert_non_null(strstr(F->record, "\"rule\":\"greylist\""));
	assert_non_null(strstr(F->record, "\"reply\":\"451 4.7.1 Try again later\""));
	assert_non_null(strstr(F->record, "\"rules\":{\"stage\":\"data\",\"matched\":true}"));
	record_sha(sha);
	assert_message_stored(sha);
}

/* DATA: a hook without a match leaves the 250 and the record as they were. */
static void
test_data_hook_no_match(void **state)
{
	struct smtp_stage_result res;
	char *s;

	send_mail();
	assert_true(pump_until(data_asked));
	memset(&res, 0, sizeof(res));
	res.publish = true;
	F->done(F->done_arg, 0, &res);
	assert_true(pump_until(mail_done));
	pump();
	s = replies();
	assert_true(strncmp(s, "250 2.0.0 Ok: queued as ", 24) == 0);
	free(s);
	assert_null(strstr(F->record, "\"publish\""));
	assert_null(strstr(F->record, "\"rule\""));
}

/* The client leaves while the hook decides: the session waits, the mail is kept. */
static void
test_data_hook_disconnect(void **state)
{
	struct smtp_stage_result res;
	char sha[65];

	send_mail();
	assert_true(pump_until(data_asked));
	bufferevent_flush(F->client, EV_WRITE, BEV_FINISHED);	/* EOF */
	pump();
	bufferevent_free(F->client);
	F->client = NULL;
	pump();
	assert_int_equal(smtp_server_sessions(F->srv), 1);	/* still waiting for the hook */
	assert_int_equal(F->ncancel, 0);
	memset(&res, 0, sizeof(res));
	res.matched = true;
	res.reply_code = 451;
	res.publish = false;
	snprintf(res.rule, sizeof(res.rule), "r");
	F->done(F->done_arg, 0, &res);
	assert_true(pump_until(mail_done));
	assert_true(pump_until(no_sessions));
	record_sha(sha);
	assert_message_stored(sha);
	assert_non_null(strstr(F->record, "\"publish\":false"));
}

/* The hook fails: the message is kept and answered as usual. */
static void
test_data_hook_error(void **state)
{
	char *s;

	send_mail();
	assert_true(pump_until(data_asked));
	F->done(F->done_arg, -1, NULL);
	assert_true(pump_until(mail_done));
	pump();
	s = replies();
	assert_true(strncmp(s, "250 2.0.0 Ok: queued as ", 24) == 0);
	free(s);
}

/* The end of a shutdown while the hook decides: cancelled, the mail still committed. */
static void
test_data_hook_close_all(void **state)
{
	DIR *d;
	int n = 0;
	char path[128];
	struct dirent *de;

	send_mail();
	assert_true(pump_until(data_asked));
	smtp_server_close_all(F->srv);
	assert_int_equal(F->ncancel, 1);
	assert_int_equal(smtp_server_sessions(F->srv), 0);
	spool_free(F->sp);	/* finishes the queued commit */
	F->sp = NULL;
	snprintf(path, sizeof(path), "%s/messages", F->dir);
	assert_non_null(d = opendir(path));
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	assert_int_equal(n, 1);
	assert_int_equal(F->nmail, 0);	/* nobody was told */
}

/*
 * The reception record's bytes, whole: the journal's readers (relay, the
 * console, hpfeeds, the operators' tools) see exactly this line.
 */
static void
test_record_bytes(void **state)
{
	struct smtp_stage_result res;
	char got[8192], sha[65], want[8192];

	send_mail();
	assert_true(pump_until(data_asked));
	memset(&res, 0, sizeof(res));
	res.matched = true;
	res.reply_code = 451;
	snprintf(res.reply_text, sizeof(res.reply_text), "4.7.1 Try \"again\" later");
	snprintf(res.rule, sizeof(res.rule), "grey\\list");
	snprintf(res.tag, sizeof(res.tag), "bulk");
	res.publish = false;
	res.record = strdup("{\"stage\":\"data\",\"matched\":true}");
	F->done(F->done_arg, 0, &res);
	assert_true(pump_until(mail_done));
	record_sha(sha);
	record_masked(got, sizeof(got));
	snprintf(want, sizeof(want), "{\"time\":\"T\",\"session\":\"S\",\"queue_id\":\"Q\","
	    "\"sha256\":\"%s\",\"size\":%zu,\"sensor\":\"mail.example.com\","
	    "\"src_ip\":\"127.0.0.1\",\"src_port\":40000,\"dst_ip\":\"0.0.0.0\",\"dst_port\":25,"
	    "\"listener\":\"%s\",\"client_name\":\"unknown\","
	    "\"reverse_client_name\":\"unknown\",\"client_name_status\":\"perm\",\"helo\":\"client.example\","
	    "\"protocol\":\"ESMTP\",\"tls\":null,\"auth\":null,"
	    "\"mail_from\":\"a@example.org\",\"rcpt_to\":[\"b@example.net\"],"
	    "\"smtputf8\":false,\"transfer\":\"DATA\",\"outcome\":\"queued\","
	    "\"publish\":false,\"tag\":\"bulk\",\"rule\":\"grey\\\\list\","
	    "\"rule_stage\":\"data\",\"reply\":\"451 4.7.1 Try \\\"again\\\" later\","
	    "\"rules\":{\"stage\":\"data\",\"matched\":true},\"anomalies\":[]}",
	    sha, strlen(body), F->cfg.listeners[0].name);
	assert_string_equal(got, want);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ehlo_hook_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rcpts_spilled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rcpts_spill_short_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_hook_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_hook_no_match, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_hook_disconnect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_hook_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_hook_close_all, setup, teardown),
		cmocka_unit_test_setup_teardown(test_record_bytes, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
