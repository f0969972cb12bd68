/*
 * Unit tests for the hpfeeds publisher: payload building and verification,
 * and one publisher run against an in-process broker thread (INFO, AUTH
 * check, SUBSCRIBE once, echo of each publish, cursor written).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "config.h"
#include "hpfeeds.h"
#include "hpfeeds_wire.h"
#include "log.h"
#include "persona.h"
#include "util.h"

#define SHA_X "0000000000000000000000000000000000000000000000000000000000000000"

static void	sha_hex(const void *buf, size_t len, char out[65]);
static bool	has(const struct jbuf *jb, const char *needle);

/* Lower-case hex SHA-256 of buf. */
static void
sha_hex(const void *buf, size_t len, char out[65])
{
	unsigned char md[32];
	unsigned int n = 0;

	EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL);
	util_hex(md, 32, out);
}

/* Whether the built payload contains needle. */
static bool
has(const struct jbuf *jb, const char *needle)
{
	return strstr(jb->buf, needle) != NULL;
}

static void
test_payload_plain(void **state)
{
	static const char body[] = "Subject: hi\r\n\r\nhello\r\n";
	struct jbuf jb;
	char sha[65];
	bool cut = true;

	sha_hex(body, strlen(body), sha);
	jb_init(&jb);
	assert_int_equal(hpf_payload_build(&jb, sha, body, strlen(body), strlen(body),
	    1048558, NULL, 0, &cut), 0);
	assert_false(cut);
	/* Exactly the seed's two keys, sha256 first. */
	assert_true(strncmp(jb.buf, "{\"sha256\":\"", 11) == 0);
	assert_memory_equal(jb.buf + 11, sha, 64);
	assert_true(strncmp(jb.buf + 75, "\",\"msg\":\"Subject: hi", 20) == 0);
	assert_int_equal(jb.buf[jb.len - 1], '}');
	assert_false(has(&jb, "raw_b64"));
	assert_false(has(&jb, "truncated"));
	assert_int_equal(hpf_payload_verify(jb.buf, jb.len), 1);
	jb_free(&jb);
}

static void
test_payload_not_utf8(void **state)
{
	static const char body[] = "Subject: x\r\n\r\n\xff\xfe caf\xe9 \xc3";
	struct jbuf jb;
	char sha[65];

	sha_hex(body, strlen(body), sha);
	jb_init(&jb);
	assert_int_equal(hpf_payload_build(&jb, sha, body, strlen(body), strlen(body),
	    1048558, NULL, 0, NULL), 0);
	assert_true(utf8_valid(jb.buf, jb.len));
	assert_true(has(&jb, "\xef\xbf\xbd"));	/* U+FFFD in msg */
	assert_true(has(&jb, "\"raw_b64\":\""));
	assert_false(has(&jb, "truncated"));
	/* The exact bytes come back from raw_b64. */
	assert_int_equal(hpf_payload_verify(jb.buf, jb.len), 1);
	jb_free(&jb);
}

static void
test_payload_truncated(void **state)
{
	char body[4000], sha[65], *m;
	struct jbuf jb;
	size_t i;
	bool cut = false;

	/* Two-byte characters everywhere: a cut must not split one. */
	for (i = 0; i + 1 < sizeof(body); i += 2) {
		body[i] = '\xc3';
		body[i + 1] = '\xa9';
	}
	sha_hex(body, sizeof(body), sha);
	jb_init(&jb);
	assert_int_equal(hpf_payload_build(&jb, sha, body, sizeof(body), sizeof(body),
	    1001, NULL, 0, &cut), 0);
	assert_true(cut);
	assert_true(jb.len <= 1001);
	assert_true(jb.len > 900);	/* not cut more than needed */
	assert_true(has(&jb, "\"truncated\":true"));
	assert_true(has(&jb, "\"size\":4000"));
	assert_false(has(&jb, "\xef\xbf\xbd"));	/* no split sequence */
	m = strstr(jb.buf, "\"msg\":\"");
	assert_non_null(m);
	assert_true(utf8_valid(jb.buf, jb.len));
	assert_int_equal(hpf_payload_verify(jb.buf, jb.len), 0);
	jb_free(&jb);
}

static void
test_payload_prefix_of_big_mail(void **state)
{
	char body[600], sha[65];
	struct jbuf jb;

	/* The publisher passes only a prefix of a mail larger than the limit. */
	memset(body, 'a', sizeof(body));
	memcpy(sha, SHA_X, 65);
	jb_init(&jb);
	assert_int_equal(hpf_payload_build(&jb, sha, body, sizeof(body), 5u << 20, 500,
	    NULL, 0, NULL), 0);
	assert_true(jb.len <= 500);
	assert_true(has(&jb, "\"truncated\":true"));
	assert_true(has(&jb, "\"size\":5242880"));
	jb_free(&jb);
}

static void
test_payload_escapes_fit(void **state)
{
	char body[3000], sha[65];
	struct jbuf jb;

	/* Control bytes escape to six bytes each: the cut must still fit. */
	memset(body, 1, sizeof(body));
	sha_hex(body, sizeof(body), sha);
	jb_init(&jb);
	assert_int_equal(hpf_payload_build(&jb, sha, body, sizeof(body), sizeof(body),
	    2000, NULL, 0, NULL), 0);
	assert_true(jb.len <= 2000);
	assert_true(jb.len > 1900);
	assert_true(has(&jb, "\"truncated\":true"));
	jb_free(&jb);
	/* A limit too small for even the keys fails cleanly. */
	jb_init(&jb);
	assert_int_equal(hpf_payload_build(&jb, sha, body, sizeof(body), sizeof(body),
	    50, NULL, 0, NULL), -1);
	jb_free(&jb);
}

static void
test_payload_raw_kept_msg_cut(void **state)
{
	char body[1200], sha[65];
	struct jbuf jb;

	/* Invalid bytes: raw_b64 (1600 bytes) fits in 3000, the full msg besides does not. */
	memset(body, 0xff, sizeof(body));
	sha_hex(body, sizeof(body), sha);
	jb_init(&jb);
	assert_int_equal(hpf_payload_build(&jb, sha, body, sizeof(body), sizeof(body),
	    3000, NULL, 0, NULL), 0);
	assert_true(jb.len <= 3000);
	assert_true(has(&jb, "\"raw_b64\":\""));
	assert_true(has(&jb, "\"truncated\":true"));
	assert_int_equal(hpf_payload_verify(jb.buf, jb.len), 1);
	jb_free(&jb);
}

static void
test_payload_meta(void **state)
{
	static const char meta[] = "\"src_ip\":\"192.0.2.1\",\"rcpt_to\":[\"a@b\"]";
	struct jbuf jb;
	char sha[65];

	sha_hex("x", 1, sha);
	jb_init(&jb);
	assert_int_equal(hpf_payload_build(&jb, sha, "x", 1, 1, 1048558, meta,
	    strlen(meta), NULL), 0);
	assert_true(has(&jb, ",\"msg\":\"x\",\"src_ip\":\"192.0.2.1\",\"rcpt_to\":[\"a@b\"]}"));
	assert_int_equal(hpf_payload_verify(jb.buf, jb.len), 1);
	jb_free(&jb);
}

static void
test_verify(void **state)
{
	char sha[65], buf[512];
	/* U+1F600 as a surrogate pair, U+00E9 as \u00e9, plus short escapes. */
	static const char bytes[] = "\xf0\x9f\x98\x80 caf\xc3\xa9\r\n\t\"/\\";

	sha_hex(bytes, strlen(bytes), sha);
	snprintf(buf, sizeof(buf), "{\"msg\":\"\\ud83d\\ude00 caf\\u00e9\\r\\n\\t\\\"\\/\\\\\","
	    " \"sha256\" : \"%s\"}", sha);
	assert_int_equal(hpf_payload_verify(buf, strlen(buf)), 1);
	/* Upper-case hex is accepted. */
	for (char *p = strstr(buf, sha); *p != '"'; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 32);
	assert_int_equal(hpf_payload_verify(buf, strlen(buf)), 1);
	/* A changed byte fails. */
	snprintf(buf, sizeof(buf), "{\"sha256\":\"%s\",\"msg\":\"x\"}", sha);
	assert_int_equal(hpf_payload_verify(buf, strlen(buf)), 0);
	/* Bad raw_b64 fails. */
	snprintf(buf, sizeof(buf), "{\"sha256\":\"%s\",\"msg\":\"x\",\"raw_b64\":\"!!\"}", sha);
	assert_int_equal(hpf_payload_verify(buf, strlen(buf)), 0);
	/* Not verifiable at all. */
	assert_int_equal(hpf_payload_verify("[1,2]", 5), -1);
	assert_int_equal(hpf_payload_verify("{\"msg\":\"x\"}", 11), -1);
	assert_int_equal(hpf_payload_verify("{\"sha256\":\"abc\",\"msg\":\"x\"}", 26), -1);
	assert_int_equal(hpf_payload_verify("{\"sha256\":", 10), -1);
	assert_int_equal(hpf_payload_verify("{\"a\":1} x", 9), -1);
	assert_int_equal(hpf_payload_verify("{\"a\":01}", 8), -1);
	assert_int_equal(hpf_payload_verify("{\"a\":\"\x01\"}", 9), -1);
	assert_int_equal(hpf_payload_verify("{\"a\":\"\xff\"}", 9), -1);
}

/* ---------------------------------------------------- in-process broker */

struct fake_broker {
	int		 lfd;
	int		 port;
	int		 published;	/* PUBLISH frames received */
	int		 subscribes;	/* SUBSCRIBE frames received */
	int		 auth_ok;
	int		 want;		/* stop after this many publishes */
	int		 hold_at;	/* this publish's echo waits for released (0: none) */
	int		 released;
	char		 first[256];	/* the first publish's payload, cut, NUL-terminated */
	size_t		 first_len;	/* and its whole length */
};

/* Read exactly n bytes; 0 or -1. */
static int
read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	ssize_t r;

	while (got < n) {
		r = read(fd, (char *)buf + got, n - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* The broker thread: one connection, INFO, AUTH check, echo publishes. */
static void *
broker_main(void *arg)
{
	struct fake_broker *b = arg;
	static const uint8_t nonce[4] = { 1, 2, 3, 4 };
	uint8_t *buf, hdr[5], want_auth[64];
	struct hpf_frame f;
	size_t used, n, al;
	uint32_t total;
	int fd;

	buf = malloc(HPF_MAX_FRAME);
	fd = accept(b->lfd, NULL, NULL);
	if (fd == -1 || buf == NULL)
		goto out;
	n = hpf_wire_info(buf, 64, "hpfeeds", nonce, 4);
	if (write(fd, buf, n) != (ssize_t)n)
		goto out;
	al = hpf_wire_auth(want_auth, sizeof(want_auth), "writer", nonce, 4, "secret", 6);
	while (b->published < b->want) {
		if (read_full(fd, hdr, 5) == -1)
			break;
		total = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
		    (uint32_t)hdr[2] << 8 | hdr[3];
		if (total < 5 || total > HPF_MAX_FRAME)
			break;
		memcpy(buf, hdr, 5);
		if (read_full(fd, buf + 5, total - 5) == -1)
			break;
		if (hpf_wire_decode(buf, total, &f, &used, NULL, 0) != 1)
			break;
		if (f.op == HPF_OP_AUTH)
			b->auth_ok = total == al && memcmp(buf, want_auth, al) == 0;
		else if (f.op == HPF_OP_SUBSCRIBE)
			b->subscribes++;
		else if (f.op == HPF_OP_PUBLISH) {
			if (b->published == 0) {
				size_t k = f.datalen < sizeof(b->first) - 1 ?
				    f.datalen : sizeof(b->first) - 1;

				memcpy(b->first, f.data, k);
				b->first[k] = '\0';
				b->first_len = f.datalen;
			}
			__atomic_add_fetch(&b->published, 1, __ATOMIC_SEQ_CST);
			while (b->published == b->hold_at &&
			    !__atomic_load_n(&b->released, __ATOMIC_SEQ_CST))
				usleep(1000);
			if (write(fd, buf, total) != (ssize_t)total)	/* echo */
				break;
		}
	}
	/* Let the client read the echoes before the connection goes. */
	sleep(1);
out:
	if (fd != -1)
		close(fd);
	free(buf);
	return NULL;
}

static struct hpf *test_hpf;

/* Stop the loop once every entry is confirmed. */
static void
check_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hpf_stats st;

	hpf_get_stats(test_hpf, &st);
	if (st.confirmed >= 3)
		event_base_loopbreak(arg);
}

/* Give up after a while. */
static void
timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

/*
 * Publish three journal entries to the fake broker, confirmed by its echo.
 * raw: payload raw (the Received header, then the .eml), the first mail
 * larger than the frame limit: cut, counted, and still confirmed.
 */
static void
publisher_echo(bool raw)
{
	char dir[] = "/tmp/test_hpfeeds.XXXXXX", path[512], sha[65], line[512], err[256];
	struct fake_broker b = { .want = 3 };
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	struct cfg_feed feed;
	struct event_base *base;
	struct event *chk, *to;
	struct timeval tv_chk = { 0, 20000 }, tv_to = { 10, 0 };
	struct hpf_stats st;
	pthread_t th;
	FILE *fp;
	int i, fd;
	ssize_t n;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/messages", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/receptions.jsonl", dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	for (i = 0; i < 3; i++) {
		static char body[(3u << 19) + 64];	/* 1.5 MiB: over the frame limit */
		char mp[512];
		size_t bl;
		FILE *m;

		snprintf(body, sizeof(body), "Subject: %d\r\n\r\nbody %d\r\n", i, i);
		bl = strlen(body);
		if (raw && i == 0) {
			memset(body + bl, 'x', sizeof(body) - 1 - bl);
			bl = sizeof(body) - 1;
		}
		sha_hex(body, bl, sha);
		snprintf(mp, sizeof(mp), "%s/messages/%s.eml", dir, sha);
		m = fopen(mp, "w");
		assert_non_null(m);
		assert_int_equal(fwrite(body, 1, bl, m), bl);
		fclose(m);
		if (raw)
			fprintf(fp, "{\"time\":\"2025-11-27T04:35:30.000001Z\",\"queue_id\":"
			    "\"4ABCDEF012%d\",\"sha256\":\"%s\",\"size\":%zu,\"src_ip\":"
			    "\"192.0.2.1\",\"helo\":\"helo.example\",\"protocol\":\"ESMTP\","
			    "\"mail_from\":\"a@b\",\"rcpt_to\":[\"c@d\"]}\n", i, sha, bl);
		else
			fprintf(fp, "{\"sha256\":\"%s\",\"size\":%zu}\n", sha, bl);
	}
	/* A torn last line must not be published. */
	fputs("{\"sha256\":\"", fp);
	fclose(fp);

	b.lfd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(b.lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(b.lfd, 4), 0);
	getsockname(b.lfd, (struct sockaddr *)&sin, &sl);
	assert_int_equal(pthread_create(&th, NULL, broker_main, &b), 0);

	memset(&feed, 0, sizeof(feed));
	feed.enabled = true;
	snprintf(feed.broker, sizeof(feed.broker), "127.0.0.1");
	feed.port = ntohs(sin.sin_port);
	snprintf(feed.identity, sizeof(feed.identity), "writer");
	snprintf(feed.secret, sizeof(feed.secret), "secret");
	snprintf(feed.channels[0], sizeof(feed.channels[0]), "spam.mails");
	feed.nchannels = 1;
	if (raw) {
		feed.payload = CFG_PAYLOAD_RAW;
		feed.received_header = true;
		/* The header needs the persona and our name. */
		assert_null(hpf_new(NULL, &feed, dir, NULL, NULL, err, sizeof(err)));
	}

	base = event_base_new();
	test_hpf = hpf_new(base, &feed, dir, persona_default(), "mx.example.test", err,
	    sizeof(err));
	assert_non_null(test_hpf);
	chk = event_new(base, -1, EV_PERSIST, check_cb, base);
	to = evtimer_new(base, timeout_cb, base);
	event_add(chk, &tv_chk);
	evtimer_add(to, &tv_to);
	hpf_kick(test_hpf);
	event_base_dispatch(base);
	hpf_get_stats(test_hpf, &st);
	assert_int_equal(st.confirmed, 3);
	assert_int_equal(st.skipped, 0);
	assert_int_equal(st.truncated, raw ? 1 : 0);
	hpf_free(test_hpf);	/* saves the cursor */
	event_free(chk);
	event_free(to);
	event_base_free(base);
	pthread_join(th, NULL);
	close(b.lfd);

	assert_true(b.auth_ok);
	assert_int_equal(b.subscribes, 1);
	assert_int_equal(b.published, 3);
	if (raw) {
		static const char want[] =
		    "Received: from helo.example (unknown [192.0.2.1])\r\n"
		    "\tby mx.example.test (Postfix) with ESMTP id 4ABCDEF0120\r\n"
		    "\tfor <c@d>; Thu, 27 Nov 2025 04:35:30 +0000 (UTC)\r\n"
		    "Subject: 0\r\n\r\nbody 0\r\nxxxxxxxxxx";

		assert_int_equal(strncmp(b.first, want, strlen(want)), 0);
		assert_int_equal(b.first_len, hpf_wire_max_payload(6, 10));
	} else
		assert_true(b.first_len == strlen(b.first) && strncmp(b.first,
		    "{\"sha256\":\"", 11) == 0);
	/* The cursor is at the end of the third line, before the torn one. */
	snprintf(path, sizeof(path), "%s/feed/7370616d2e6d61696c73.cursor", dir);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	n = read(fd, line, sizeof(line) - 1);
	close(fd);
	assert_true(n > 0);
	line[n] = '\0';
	{
		struct stat jst;

		snprintf(path, sizeof(path), "%s/receptions.jsonl", dir);
		assert_int_equal(stat(path, &jst), 0);
		assert_int_equal(strtoull(line, NULL, 10),
		    (unsigned long long)jst.st_size - strlen("{\"sha256\":\""));
	}
	{
		char cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		assert_int_equal(system(cmd), 0);
	}
}

static void
test_publisher_echo(void **state)
{
	publisher_echo(false);
}

/* payload: raw: the header, the cut, the count, the echo still confirms. */
static void
test_publisher_echo_raw(void **state)
{
	publisher_echo(true);
}

/* Stop the loop once seg_broker got seg_pub publishes and seg_want are confirmed. */
static size_t seg_want;
static int seg_pub;
static struct fake_broker *seg_broker;

static void
seg_check_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hpf_stats st;

	hpf_get_stats(test_hpf, &st);
	if (st.confirmed >= seg_want &&
	    __atomic_load_n(&seg_broker->published, __ATOMIC_SEQ_CST) >= seg_pub)
		event_base_loopbreak(arg);
}

/*
 * Out of descriptors when a journal segment is done: the next segment is
 * looked for again later, never skipped for the current file (which the
 * spool would then prune the skipped one behind).
 */
static void
test_segment_transition_out_of_descriptors(void **state)
{
	char dir[] = "/tmp/test_hpfeeds.XXXXXX", path[512], sha[65], err[256];
	static const char *const files[] = { "receptions.jsonl.00000000000000000001",
	    "receptions.jsonl.00000000000000000002", "receptions.jsonl" };
	struct fake_broker b = { .want = 5, .hold_at = 2 };
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	struct cfg_feed feed;
	struct event_base *base;
	struct event *chk, *to;
	struct timeval tv_chk = { 0, 20000 }, tv_to = { 10, 0 }, tv_hold = { 2, 500000 };
	struct hpf_stats st;
	pthread_t th;
	int i, j, k = 0, held[65536], nheld = 0;
	FILE *fp;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/messages", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	for (j = 0; j < 3; j++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[j]);
		fp = fopen(path, "w");
		assert_non_null(fp);
		for (i = 0; i < (j < 2 ? 2 : 1); i++, k++) {
			char body[64], mp[512];
			FILE *m;

			snprintf(body, sizeof(body), "Subject: %d\r\n\r\nbody %d\r\n", k, k);
			sha_hex(body, strlen(body), sha);
			snprintf(mp, sizeof(mp), "%s/messages/%s.eml", dir, sha);
			m = fopen(mp, "w");
			assert_non_null(m);
			fputs(body, m);
			fclose(m);
			fprintf(fp, "{\"sha256\":\"%s\",\"size\":%zu}\n", sha, strlen(body));
		}
		fclose(fp);
	}

	b.lfd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(b.lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(b.lfd, 4), 0);
	getsockname(b.lfd, (struct sockaddr *)&sin, &sl);
	assert_int_equal(pthread_create(&th, NULL, broker_main, &b), 0);

	memset(&feed, 0, sizeof(feed));
	feed.enabled = true;
	snprintf(feed.broker, sizeof(feed.broker), "127.0.0.1");
	feed.port = ntohs(sin.sin_port);
	snprintf(feed.identity, sizeof(feed.identity), "writer");
	snprintf(feed.secret, sizeof(feed.secret), "secret");
	snprintf(feed.channels[0], sizeof(feed.channels[0]), "spam.mails");
	feed.nchannels = 1;

	/* No cursor: the oldest segment first; run until it is all sent. */
	base = event_base_new();
	test_hpf = hpf_new(base, &feed, dir, NULL, NULL, err, sizeof(err));
	assert_non_null(test_hpf);
	chk = event_new(base, -1, EV_PERSIST, seg_check_cb, base);
	to = evtimer_new(base, timeout_cb, base);
	seg_broker = &b;
	seg_want = 0;
	seg_pub = 2;
	event_add(chk, &tv_chk);
	evtimer_add(to, &tv_to);
	hpf_kick(test_hpf);
	event_base_dispatch(base);
	assert_int_equal(b.published, 2);
	/* Every descriptor taken when its last echo comes and it is done. */
	while (nheld < (int)(sizeof(held) / sizeof(held[0])) &&
	    (held[nheld] = dup(0)) != -1)
		nheld++;
	__atomic_store_n(&b.released, 1, __ATOMIC_SEQ_CST);
	event_del(chk);
	evtimer_add(to, &tv_hold);
	event_base_dispatch(base);
	for (i = 0; i < nheld; i++)
		close(held[i]);
	seg_want = 5;
	seg_pub = 5;
	event_add(chk, &tv_chk);
	evtimer_add(to, &tv_to);
	event_base_dispatch(base);
	hpf_get_stats(test_hpf, &st);
	assert_int_equal(st.confirmed, 5);	/* segment 2 too, not only the current file */
	hpf_free(test_hpf);
	event_free(chk);
	event_free(to);
	event_base_free(base);
	pthread_join(th, NULL);
	close(b.lfd);
	assert_int_equal(b.published, 5);
	{
		char cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		assert_int_equal(system(cmd), 0);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_payload_plain),
		cmocka_unit_test(test_payload_not_utf8),
		cmocka_unit_test(test_payload_truncated),
		cmocka_unit_test(test_payload_prefix_of_big_mail),
		cmocka_unit_test(test_payload_escapes_fit),
		cmocka_unit_test(test_payload_raw_kept_msg_cut),
		cmocka_unit_test(test_payload_meta),
		cmocka_unit_test(test_verify),
		cmocka_unit_test(test_publisher_echo),
		cmocka_unit_test(test_publisher_echo_raw),
		cmocka_unit_test(test_segment_transition_out_of_descriptors),
	};

	log_init(LOG_LVL_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
