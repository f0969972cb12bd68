/*
 * Unit tests for relay.c: record parsing, the Received header, the JSON
 * reader, and the whole decision path with the network replaced by a hook
 * (caps durable before the send, same content once, never-relay, dry-run).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "config.h"
#include "log.h"
#include "persona.h"
#include "record.h"
#include "relay.h"
#include "relay_caps.h"
#include "json.h"

/*
 * The rules file of these tests: one DATA rule that relays a mail that
 * mentions the honeypot's own address (the shipped probe rule, minimal).
 */
static const char rules_text[] =
    "rules:\n"
    "  - name: probe\n"
    "    priority: 10\n"
    "    stage: DATA\n"
    "    conditions:\n"
    "      - mentions_own_address: true\n"
    "    actions:\n"
    "      relay: true\n";

#define OWN_IP	"203.0.113.5"

static char	 dir[256];
static struct cfg *cfg;
static int	 hook_calls;
static int	 hook_seen_durable;	/* the caps journal held this send when the hook ran */
static char	 hook_rcpt[256];

static void	 write_file(const char *, const char *, size_t);
static void	 store(const char *, char *);
static void	 record(char *, size_t, const char *, const char *, const char *);
static int	 hook(void *, const char *, const char *);
static void	 run_until_idle(struct event_base *, struct relay *);
static void	 tick_cb(evutil_socket_t, short, void *);
static int	 count_lines(const char *);

/* Write a whole file. */
static void
write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
}

/* Store msg in the spool as <sha256>.eml (sha computed with sha256sum). */
static void
store(const char *msg, char *sha)
{
	char path[512], cmd[600], final[512];
	FILE *p;

	snprintf(path, sizeof(path), "%s/spool/messages/tmp.eml", dir);
	write_file(path, msg, strlen(msg));
	snprintf(cmd, sizeof(cmd), "sha256sum %s", path);
	assert_non_null(p = popen(cmd, "r"));
	assert_int_equal(fscanf(p, "%64s", sha), 1);
	pclose(p);
	snprintf(final, sizeof(final), "%s/spool/messages/%s.eml", dir, sha);
	assert_int_equal(rename(path, final), 0);
}

/* A reception record like smtp_session.c writes. */
static void
record(char *out, size_t len, const char *sha, const char *rcpt, const char *src)
{
	snprintf(out, len,
	    "{\"time\":\"2026-11-27T04:35:30.123456Z\",\"session\":\"00000000000000ab\","
	    "\"queue_id\":\"4ABCDEF0123\",\"sha256\":\"%s\",\"size\":60,"
	    "\"sensor\":\"s\",\"src_ip\":\"%s\",\"src_port\":40000,"
	    "\"dst_ip\":\"127.0.0.1\",\"dst_port\":25,\"listener\":\"smtp\","
	    "\"helo\":\"spam\\u00e9r.example\",\"protocol\":\"ESMTP\",\"tls\":null,"
	    "\"auth\":{\"mechanism\":\"PLAIN\",\"username\":\"u\",\"password\":\"p\"},"
	    "\"mail_from\":\"drop@spammer.example\",\"rcpt_to\":[\"%s\"],"
	    "\"smtputf8\":false,\"transfer\":\"DATA\",\"anomalies\":[]}", sha, src, rcpt);
}

/* The network stand-in: was the caps line on disk before this send? */
static int
hook(void *arg, const char *sha, const char *rcpt)
{
	char err[256], rd[600];
	struct relay_caps *c;
	const char *rc[1] = { rcpt };
	struct relay_caps_req q = { sha, "198.51.100.7", rc, 1, 10 };
	struct relay_caps_usage u;

	hook_calls++;
	snprintf(hook_rcpt, sizeof(hook_rcpt), "%s", rcpt);
	snprintf(rd, sizeof(rd), "%s/spool/relay", dir);
	c = relay_caps_open(rd, "caps", &cfg->relay.caps, true, err, sizeof(err));
	assert_non_null(c);
	relay_caps_usage(c, &q, time(NULL), &u);
	if (u.seen_sha256)
		hook_seen_durable++;
	relay_caps_free(c);
	return 0;
}

struct loop {
	struct event_base	*base;
	struct relay		*relay;
	int			 ticks;
};

/* Loop tick: leave once the relay has no job left (or after 10 s). */
static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loop *l = arg;

	if (relay_pending(l->relay) == 0 || ++l->ticks > 1000)
		event_base_loopbreak(l->base);
}

/* Run the loop until every relay job is finished. */
static void
run_until_idle(struct event_base *base, struct relay *r)
{
	struct loop l = { base, r, 0 };
	struct timeval tv = { 0, 10000 };
	struct event *t = event_new(base, -1, EV_PERSIST, tick_cb, &l);

	event_add(t, &tv);
	event_base_dispatch(base);
	event_free(t);
	assert_int_equal(relay_pending(r), 0);
}

/* Lines of a file (0 if missing). */
static int
count_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	int n = 0, ch;

	if (f == NULL)
		return 0;
	while ((ch = fgetc(f)) != EOF)
		if (ch == '\n')
			n++;
	fclose(f);
	return n;
}

/* A spool, a rules file and a config per test. */
static int
setup(void **state)
{
	char path[512], err[256];

	snprintf(dir, sizeof(dir), "/tmp/test_relay.XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/spool", dir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/spool/messages", dir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/rules.yml", dir);
	write_file(path, rules_text, strlen(rules_text));
	cfg = calloc(1, sizeof(*cfg));
	assert_non_null(cfg);
	cfg_defaults(cfg);
	snprintf(cfg->path, sizeof(cfg->path), "%s/fosr.yml", dir);
	snprintf(cfg->spool_dir, sizeof(cfg->spool_dir), "%s/spool", dir);
	snprintf(cfg->relay.own_addresses[0], sizeof(cfg->relay.own_addresses[0]), OWN_IP);
	cfg->relay.nown = 1;
	cfg->relay.mode = RELAY_MODE_LIVE;
	snprintf(path, sizeof(path), "%s/events.json", dir);
	assert_int_equal(log_event_open(path, "test", err, sizeof(err)), 0);
	hook_calls = hook_seen_durable = 0;
	return 0;
}

/* Remove everything. */
static int
teardown(void **state)
{
	char cmd[300];

	log_event_close();
	free(cfg);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* Records parse into the fields the rules and the header need. */
static void
test_record_parse(void **state)
{
	char rec[2048], err[256];
	struct record *r;
	const char *sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

	record(rec, sizeof(rec), sha, "a@b.example", "198.51.100.7");
	r = record_parse(rec, strlen(rec), err, sizeof(err));
	assert_non_null(r);
	assert_string_equal(r->sha256, sha);
	assert_string_equal(r->helo, "spam\xc3\xa9r.example");
	assert_string_equal(r->mail_from, "drop@spammer.example");
	assert_int_equal(r->nrcpt, 1);
	assert_string_equal(r->rcpt[0], "a@b.example");
	assert_true(r->auth);
	assert_string_equal(r->auth_user, "u");
	assert_false(r->tls);
	assert_int_equal(r->dst_port, 25);
	record_free(r);
	/* A path-traversal sha256 or a broken record is refused. */
	record(rec, sizeof(rec), "../../etc/passwd", "a@b.example", "198.51.100.7");
	assert_null(record_parse(rec, strlen(rec), err, sizeof(err)));
	assert_null(record_parse("{\"sha256\":", 11, err, sizeof(err)));
	assert_null(record_parse("", 0, err, sizeof(err)));
	/* One walk: the first of a duplicated key counts, order does not matter. */
	snprintf(rec, sizeof(rec), "{\"rcpt_to\":[\"x@y\",\"z@w\"],\"mail_from\":\"m@f\","
	    "\"src_port\":7,\"sha256\":\"%s\",\"mail_from\":\"other\",\"sha256\":\"bad\","
	    "\"tls\":{\"v\":1},\"auth\":null,\"src_port\":8}", sha);
	r = record_parse(rec, strlen(rec), err, sizeof(err));
	assert_non_null(r);
	assert_string_equal(r->mail_from, "m@f");
	assert_int_equal(r->src_port, 7);
	assert_true(r->tls);
	assert_false(r->auth);
	assert_int_equal(r->nrcpt, 2);
	assert_string_equal(r->rcpt[1], "z@w");
	record_free(r);
	/*
	 * Anomalies: absent (an old record) is none; smuggling and bare_cr
	 * refuse the capture; bare_lf and others do not.  Recipients that
	 * route (literal, % hack) refuse it too.
	 */
	snprintf(rec, sizeof(rec), "{\"sha256\":\"%s\",\"mail_from\":\"\",\"rcpt_to\":[\"a@b.example\"]}",
	    sha);
	r = record_parse(rec, strlen(rec), err, sizeof(err));
	assert_non_null(r);
	assert_false(r->smuggling || r->bare_cr);
	assert_int_equal(relay_record_refused(r, err, sizeof(err)), 0);
	record_free(r);
	snprintf(rec, sizeof(rec), "{\"sha256\":\"%s\",\"mail_from\":\"\",\"rcpt_to\":[\"a@b.example\"],"
	    "\"anomalies\":[\"bare_lf\",\"8bit\",7,\"nul\"]}", sha);
	r = record_parse(rec, strlen(rec), err, sizeof(err));
	assert_non_null(r);
	assert_int_equal(relay_record_refused(r, err, sizeof(err)), 0);
	record_free(r);
	snprintf(rec, sizeof(rec), "{\"sha256\":\"%s\",\"mail_from\":\"\",\"rcpt_to\":[\"a@b.example\"],"
	    "\"anomalies\":[\"8bit\",\"bare_cr\"]}", sha);
	r = record_parse(rec, strlen(rec), err, sizeof(err));
	assert_non_null(r);
	assert_int_equal(relay_record_refused(r, err, sizeof(err)), -1);
	assert_string_equal(err, "smuggling anomaly: bare_cr");
	record_free(r);
	snprintf(rec, sizeof(rec), "{\"sha256\":\"%s\",\"mail_from\":\"\",\"anomalies\":[\"smuggling\"],"
	    "\"rcpt_to\":[\"a@b.example\"]}", sha);
	r = record_parse(rec, strlen(rec), err, sizeof(err));
	assert_non_null(r);
	assert_int_equal(relay_record_refused(r, err, sizeof(err)), -1);
	assert_string_equal(err, "smuggling anomaly: smuggling");
	record_free(r);
	snprintf(rec, sizeof(rec), "{\"sha256\":\"%s\",\"mail_from\":\"\",\"rcpt_to\":[\"ok@b.example\","
	    "\"v%%t.example@[127.0.0.2]\"]}", sha);
	r = record_parse(rec, strlen(rec), err, sizeof(err));
	assert_non_null(r);
	assert_int_equal(relay_record_refused(r, err, sizeof(err)), -1);
	assert_string_equal(err, "recipient <v%t.example@[127.0.0.2]>: address literal: not relayed");
	record_free(r);
	/* rcpt_to that is no array counts as missing, one that is no string: both refused. */
	snprintf(rec, sizeof(rec), "{\"sha256\":\"%s\",\"mail_from\":\"\",\"rcpt_to\":\"a\"}",
	    sha);
	assert_null(record_parse(rec, strlen(rec), err, sizeof(err)));
	snprintf(rec, sizeof(rec), "{\"sha256\":\"%s\",\"mail_from\":\"\",\"rcpt_to\":[\"a\",1]}",
	    sha);
	assert_null(record_parse(rec, strlen(rec), err, sizeof(err)));
	assert_string_equal(err, "record: bad rcpt_to[1]");
	/* Missing members and a malformed tail (after every member we read). */
	snprintf(rec, sizeof(rec), "{\"sha256\":\"%s\",\"rcpt_to\":[]}", sha);
	assert_null(record_parse(rec, strlen(rec), err, sizeof(err)));
	assert_string_equal(err, "record: no mail_from");
	snprintf(rec, sizeof(rec), "{\"sha256\":\"%s\",\"mail_from\":\"\"}", sha);
	assert_null(record_parse(rec, strlen(rec), err, sizeof(err)));
	assert_string_equal(err, "record: no rcpt_to");
	snprintf(rec, sizeof(rec), "{\"sha256\":\"%s\",\"mail_from\":\"\",\"rcpt_to\":[],}",
	    sha);
	assert_null(record_parse(rec, strlen(rec), err, sizeof(err)));
	assert_string_equal(err, "record: not a JSON object");
}

/* The one-pass walks over an object's members and an array's elements. */
static void
test_json_walk(void **state)
{
	static const char *const bad[] = { "", "[]", "{", "{\"a\"}", "{\"a\":}",
	    "{\"a\":1,}", "{,\"a\":1}", "{\"a\":1 \"b\":2}", "{\"a\":1}x", "{} {}",
	    "{\"a\":[1,]}", "{1:2}" };
	const char *j = " { \"a\" : \"x\" , \"\":[1, {\"k\":2}] ,\"a\":null } ";
	const char *k, *v;
	size_t kl, vl, pos = 0, i;
	int n;

	(void)state;
	assert_int_equal(json_member(j, strlen(j), &pos, &k, &kl, &v, &vl), 1);
	assert_int_equal(kl, 1);
	assert_memory_equal(k, "a", 1);
	assert_int_equal(vl, 3);
	assert_memory_equal(v, "\"x\"", 3);
	assert_int_equal(json_member(j, strlen(j), &pos, &k, &kl, &v, &vl), 1);
	assert_int_equal(kl, 0);
	assert_int_equal(vl, 12);
	{
		const char *arr = v, *el;
		size_t al = vl, ep = 0, ell;

		assert_int_equal(json_element(arr, al, &ep, &el, &ell), 1);
		assert_int_equal(ell, 1);
		assert_int_equal(json_element(arr, al, &ep, &el, &ell), 1);
		assert_memory_equal(el, "{\"k\":2}", ell);
		assert_int_equal(json_element(arr, al, &ep, &el, &ell), 0);
		ep = 0;
		assert_int_equal(json_element("[ ]", 3, &ep, &el, &ell), 0);
		ep = 0;
		assert_int_equal(json_element("{}", 2, &ep, &el, &ell), -1);
	}
	assert_int_equal(json_member(j, strlen(j), &pos, &k, &kl, &v, &vl), 1);
	assert_memory_equal(v, "null", 4);
	assert_int_equal(json_member(j, strlen(j), &pos, &k, &kl, &v, &vl), 0);
	pos = 0;
	assert_int_equal(json_member("{ }", 3, &pos, &k, &kl, &v, &vl), 0);
	/* Malformed input ends the walk with -1, whatever came before. */
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		pos = 0;
		while ((n = json_member(bad[i], strlen(bad[i]), &pos, &k, &kl,
		    &v, &vl)) == 1)
			;
		if (n != -1)
			fail_msg("\"%s\" walked as an object", bad[i]);
		assert_false(json_is_object(bad[i], strlen(bad[i])));
	}
}

/* The JSON reader: escapes, nesting, arrays, malformed input. */
static void
test_json(void **state)
{
	const char *j = "{\"a\":\"x\\n\\u00e9\\ud83d\\ude00\",\"n\":-12,\"o\":{\"k\":[1,\"two\",{}]},"
	    "\"b\":true}";
	const char *v, *e;
	size_t vl, el;
	char out[64];
	long long n;
	bool b;

	assert_true(json_is_object(j, strlen(j)));
	assert_int_equal(json_get_str(j, strlen(j), "a", out, sizeof(out)), 0);
	assert_string_equal(out, "x\n\xc3\xa9\xf0\x9f\x98\x80");
	assert_int_equal(json_get(j, strlen(j), "n", &v, &vl), 0);
	assert_int_equal(json_int(v, vl, &n), 0);
	assert_int_equal(n, -12);
	assert_int_equal(json_get(j, strlen(j), "o", &v, &vl), 0);
	assert_int_equal(json_get(v, vl, "k", &v, &vl), 0);
	assert_int_equal(json_index(v, vl, 1, &e, &el), 0);
	assert_int_equal(json_str(e, el, out, sizeof(out)), 0);
	assert_string_equal(out, "two");
	assert_int_equal(json_index(v, vl, 3, &e, &el), -1);
	assert_int_equal(json_get(j, strlen(j), "b", &v, &vl), 0);
	assert_int_equal(json_bool(v, vl, &b), 0);
	assert_true(b);
	assert_int_equal(json_get(j, strlen(j), "missing", &v, &vl), -1);
	assert_false(json_is_object("{\"a\":1", 6));
	assert_false(json_is_object("{\"a\":1}x", 8));
	assert_int_equal(json_str("\"\\u0000\"", 8, out, sizeof(out)), -1);
	assert_int_equal(json_str("\"abcdef\"", 8, out, 4), -1);
	{
		/* Deep nesting is refused, not recursed into. */
		char deep[200];
		memset(deep, '[', 100);
		memset(deep + 100, ']', 100);
		assert_false(json_is_object(deep, 200));
		char obj[300];
		snprintf(obj, sizeof(obj), "{\"a\":%.200s}", deep);
		assert_false(json_is_object(obj, strlen(obj)));
	}
}

/* A probe is sent once, after its caps line is durable; the same content never again. */
static void
test_probe_once_caps_first(void **state)
{
	struct event_base *base = event_base_new();
	struct relay *r;
	char err[512], sha[65], rec[2048], path[600];

	store("Subject: test " OWN_IP "\r\n\r\nhello\r\n", sha);
	r = relay_new(base, cfg, "mx.example.test", err, sizeof(err));
	if (r == NULL)
		fail_msg("relay_new: %s", err);
	relay_set_deliver_hook(r, hook, NULL);
	record(rec, sizeof(rec), sha, "drop@spammer.example", "198.51.100.7");
	relay_consider(r, rec, strlen(rec));
	relay_consider(r, rec, strlen(rec));	/* the same probe again, at once */
	run_until_idle(base, r);
	assert_int_equal(hook_calls, 1);
	assert_int_equal(hook_seen_durable, 1);
	assert_string_equal(hook_rcpt, "drop@spammer.example");
	snprintf(path, sizeof(path), "%s/spool/relay/%s.json", dir, sha);
	assert_int_equal(access(path, R_OK), 0);
	snprintf(path, sizeof(path), "%s/spool/relay/caps.log", dir);
	assert_int_equal(count_lines(path), 1);
	relay_free(r);
	/* After a restart too. */
	r = relay_new(base, cfg, "mx.example.test", err, sizeof(err));
	assert_non_null(r);
	relay_set_deliver_hook(r, hook, NULL);
	relay_consider(r, rec, strlen(rec));
	run_until_idle(base, r);
	assert_int_equal(hook_calls, 1);
	relay_free(r);
	event_base_free(base);
}

/* Not a probe, a never-relay recipient: nothing is sent; -t redirects the recipient. */
static void
test_refusals_and_test_mode(void **state)
{
	struct event_base *base = event_base_new();
	struct relay *r;
	char err[512], sha[65], sha2[65], sha3[65], rec[2048];

	store("Subject: buy now\r\n\r\ncheap pills\r\n", sha);
	store("Subject: " OWN_IP "\r\n\r\nx\r\n", sha2);
	store("Subject: " OWN_IP "\r\n\r\ny\r\n", sha3);
	snprintf(cfg->relay.test_recipient, sizeof(cfg->relay.test_recipient), "t@test.example");
	snprintf(cfg->relay.test_server, sizeof(cfg->relay.test_server), "127.0.0.1:2525");
	r = relay_new(base, cfg, "mx.example.test", err, sizeof(err));
	assert_non_null(r);
	relay_set_deliver_hook(r, hook, NULL);
	record(rec, sizeof(rec), sha, "drop@spammer.example", "198.51.100.7");
	relay_consider(r, rec, strlen(rec));
	record(rec, sizeof(rec), sha2, "postmaster@spammer.example", "198.51.100.7");
	relay_consider(r, rec, strlen(rec));
	run_until_idle(base, r);
	assert_int_equal(hook_calls, 0);
	assert_int_equal(relay_set_test_mode(r, true, err, sizeof(err)), 0);
	record(rec, sizeof(rec), sha3, "drop@spammer.example", "198.51.100.7");
	relay_consider(r, rec, strlen(rec));
	run_until_idle(base, r);
	assert_int_equal(hook_calls, 1);
	assert_string_equal(hook_rcpt, "t@test.example");
	relay_free(r);
	event_base_free(base);
}

/* 21 probes with per_day 20: exactly 20 sends. */
static void
test_daily_cap_twenty(void **state)
{
	struct event_base *base = event_base_new();
	struct relay *r;
	char err[512], sha[65], rec[2048], msg[128];

	cfg->relay.caps.per_hour = 100;
	cfg->relay.caps.per_client_ip = 100;
	cfg->relay.caps.per_client_network = 100;
	cfg->relay.caps.per_recipient = 100;
	cfg->relay.caps.per_domain = 100;
	r = relay_new(base, cfg, "mx.example.test", err, sizeof(err));
	assert_non_null(r);
	relay_set_deliver_hook(r, hook, NULL);
	for (int i = 0; i < 21; i++) {
		snprintf(msg, sizeof(msg), "Subject: probe %d " OWN_IP "\r\n\r\nx\r\n", i);
		store(msg, sha);
		record(rec, sizeof(rec), sha, "drop@spammer.example", "198.51.100.7");
		relay_consider(r, rec, strlen(rec));
	}
	run_until_idle(base, r);
	assert_int_equal(hook_calls, 20);
	assert_int_equal(hook_seen_durable, 20);
	relay_free(r);
	event_base_free(base);
}

/* Dry-run decides and records, never sends, and leaves the live caps alone. */
static void
test_dry_run(void **state)
{
	struct event_base *base = event_base_new();
	struct relay *r;
	char err[512], sha[65], rec[2048], path[600];

	cfg->relay.mode = RELAY_MODE_DRY_RUN;
	store("Subject: " OWN_IP "\r\n\r\nx\r\n", sha);
	r = relay_new(base, cfg, "mx.example.test", err, sizeof(err));
	assert_non_null(r);
	relay_set_deliver_hook(r, hook, NULL);
	record(rec, sizeof(rec), sha, "drop@spammer.example", "198.51.100.7");
	relay_consider(r, rec, strlen(rec));
	run_until_idle(base, r);
	assert_int_equal(hook_calls, 0);
	snprintf(path, sizeof(path), "%s/spool/relay/caps-dry-run.log", dir);
	assert_int_equal(count_lines(path), 1);
	snprintf(path, sizeof(path), "%s/spool/relay/caps.log", dir);
	assert_int_equal(count_lines(path), 0);
	snprintf(path, sizeof(path), "%s/spool/relay/%s.json", dir, sha);
	assert_int_equal(access(path, R_OK), 0);
	relay_free(r);
	event_base_free(base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record_parse),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_json_walk),
		cmocka_unit_test_setup_teardown(test_probe_once_caps_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals_and_test_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_daily_cap_twenty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dry_run, setup, teardown),
	};

	evthread_use_pthreads();
	log_init(LOG_LVL_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
