/*
 * Unit tests for hpfeeds_sub.c, the --feed-subscribe tool: against a broker
 * stand-in on loopback (a thread), every publish printed as one JSON line
 * with "channel", "ident", "verified" and the payload's own members (or
 * "payload_raw"), whatever bytes the payload holds; --count's parsing.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "config.h"
#include "hpfeeds_sub.h"
#include "hpfeeds_wire.h"
#include "jbuf.h"
#include "json.h"
#include "log.h"
#include "testutil.h"

#define NPUB	6

/* The broker stand-in: INFO, waits for the SUBSCRIBE, sends the publishes, waits for EOF. */
struct broker {
	int		 fd;
	int		 port;
	pthread_t	 thread;
	const char	*pub[NPUB];
	size_t		 publen[NPUB];
	int		 npub;
	char		 subscribed[64];	/* the channel asked for */
};

/* Read exactly n bytes; false at EOF or error. */
static bool
read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	ssize_t r;

	while (got < n) {
		if ((r = read(fd, (char *)buf + got, n - got)) <= 0)
			return false;
		got += (size_t)r;
	}
	return true;
}

static void *
broker_main(void *arg)
{
	struct broker *b = arg;
	static uint8_t frame[1 << 21];
	const uint8_t nonce[4] = { 1, 2, 3, 4 };
	struct hpf_frame f;
	char err[128];
	size_t n, used;
	uint32_t total;
	uint8_t op;
	int c;

	if ((c = accept(b->fd, NULL, NULL)) == -1)
		return NULL;
	n = hpf_wire_info(frame, sizeof(frame), "stand-in", nonce, sizeof(nonce));
	if (write(c, frame, n) != (ssize_t)n)
		goto out;
	/* AUTH, then SUBSCRIBE. */
	for (;;) {
		if (!read_full(c, frame, HPF_HDR_LEN) ||
		    hpf_wire_header(frame, HPF_HDR_LEN, &total, &op, err, sizeof(err)) != 1 ||
		    !read_full(c, frame + HPF_HDR_LEN, total - HPF_HDR_LEN))
			goto out;
		if (op != HPF_OP_SUBSCRIBE)
			continue;
		if (hpf_wire_decode(frame, total, &f, &used, err, sizeof(err)) == 1)
			snprintf(b->subscribed, sizeof(b->subscribed), "%.*s", (int)f.chanlen,
			    f.chan);
		break;
	}
	for (int i = 0; i < b->npub; i++) {
		n = hpf_wire_publish(frame, sizeof(frame), "pub", "fosr.mails", b->pub[i],
		    b->publen[i]);
		if (n == 0 || write(c, frame, n) != (ssize_t)n)
			goto out;
	}
	while (read(c, frame, sizeof(frame)) > 0)
		;
out:
	close(c);
	return NULL;
}

/* Start the stand-in on a loopback port. */
static void
broker_start(struct broker *b)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);

	b->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(b->fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(b->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(b->fd, 4), 0);
	assert_int_equal(getsockname(b->fd, (struct sockaddr *)&sin, &sl), 0);
	b->port = ntohs(sin.sin_port);
	assert_int_equal(pthread_create(&b->thread, NULL, broker_main, b), 0);
}

static void
broker_stop(struct broker *b)
{
	shutdown(b->fd, SHUT_RDWR);
	pthread_join(b->thread, NULL);
	close(b->fd);
}

/*
 * Run hpf_subscribe_main(argv) over feed with its stdout in a file; the exit
 * status, and what it printed (malloc'd) in *out.
 */
static int
run_sub(const struct cfg_feed *feed, int argc, char **argv, char **out)
{
	char path[] = "/tmp/test_hpfeeds_sub.XXXXXX";
	int fd, saved, rc;

	fd = mkstemp(path);
	assert_true(fd >= 0);
	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fd, STDOUT_FILENO), STDOUT_FILENO);
	rc = hpf_subscribe_main(feed, argc, argv);
	fflush(stdout);
	assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
	close(saved);
	close(fd);
	*out = slurp(path, NULL);
	unlink(path);
	return rc;
}

static void
feed_init(struct cfg_feed *feed, int port)
{
	memset(feed, 0, sizeof(*feed));
	feed->enabled = true;
	snprintf(feed->broker, sizeof(feed->broker), "127.0.0.1");
	feed->port = port;
	snprintf(feed->identity, sizeof(feed->identity), "reader");
	snprintf(feed->secret, sizeof(feed->secret), "secret");
	snprintf(feed->channels[0], sizeof(feed->channels[0]), "fosr.mails");
	feed->nchannels = 1;
	feed->timeout = 5;
}

/* Each publish is one line: a JSON object, our members first, the payload's spliced in. */
static void
test_lines(void **state)
{
	static const char body[] = "Subject: hi\r\n\r\nhello\r\n";
	unsigned char md[32];
	char hex[65], *out, *line, *save = NULL, *lines[NPUB + 1];
	char *argv[] = { "--count", "6" };
	struct cfg_feed feed;
	struct broker b;
	struct jbuf jb;
	int n = 0;

	(void)state;
	assert_int_equal(EVP_Digest(body, sizeof(body) - 1, md, NULL, EVP_sha256(), NULL), 1);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	jb_init(&jb);
	assert_int_equal(hpf_payload_build(&jb, hex, body, sizeof(body) - 1, sizeof(body) - 1,
	    1 << 20, NULL, 0, NULL), 0);
	memset(&b, 0, sizeof(b));
	b.pub[0] = jb.buf;			/* verified */
	b.publen[0] = jb.len;
	b.pub[1] = "{\"sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\","
	    "\"msg\":\"hello\"}";			/* a wrong digest */
	b.pub[2] = "not json\n\x1b[2J\xff";	/* raw bytes */
	b.pub[3] = "  {\r\n  \"a\": 1,\n\t\"b\": \"x\"\r\n}\r\n";	/* line breaks as whitespace */
	b.pub[4] = "{ }";			/* an empty object */
	b.pub[5] = "{\"a\":1} {\"b\":2}";	/* two objects: not one JSON object */
	for (int i = 1; i < NPUB; i++)
		b.publen[i] = strlen(b.pub[i]);
	b.npub = NPUB;
	broker_start(&b);
	feed_init(&feed, b.port);
	assert_int_equal(run_sub(&feed, 2, argv, &out), 0);
	broker_stop(&b);
	jb_free(&jb);
	assert_string_equal(b.subscribed, "fosr.mails");
	for (line = strtok_r(out, "\n", &save); line != NULL && n <= NPUB;
	    line = strtok_r(NULL, "\n", &save))
		lines[n++] = line;
	assert_int_equal(n, NPUB);
	for (int i = 0; i < n; i++) {
		if (!json_is_object(lines[i], strlen(lines[i])))
			fail_msg("line %d is not a JSON object: %s", i, lines[i]);
		if (strncmp(lines[i], "{\"channel\":\"fosr.mails\",\"ident\":\"pub\",\"verified\":",
		    49) != 0)
			fail_msg("line %d: %s", i, lines[i]);
		assert_null(strchr(lines[i], '\r'));
	}
	assert_non_null(strstr(lines[0], "\"verified\":true,\"sha256\":\""));
	assert_non_null(strstr(lines[0], hex));
	assert_non_null(strstr(lines[1], "\"verified\":false,\"sha256\":\"0000"));
	assert_string_equal(lines[2], "{\"channel\":\"fosr.mails\",\"ident\":\"pub\","
	    "\"verified\":false,\"payload_raw\":\"not json\\n\\u001b[2J\xef\xbf\xbd\"}");
	assert_non_null(strstr(lines[3], "\"verified\":false,\"a\": 1,"));
	assert_string_equal(lines[4], "{\"channel\":\"fosr.mails\",\"ident\":\"pub\",\"verified\":false}");
	assert_non_null(strstr(lines[5], "\"payload_raw\":\"{\\\"a\\\":1} {\\\"b\\\":2}\""));
	free(out);
}

/* --count takes a positive number; anything else exits 2 before connecting. */
static void
test_count_arg(void **state)
{
	char *bad[][2] = { { "--count", "0" }, { "--count", "x" }, { "--count", "-1" },
	    { "--count", "" }, { "--count", "99999999999999999999" } };
	struct cfg_feed feed;
	char *out;

	(void)state;
	feed_init(&feed, 1);	/* nothing to connect to: never reached */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (run_sub(&feed, 2, bad[i], &out) != 2)
			fail_msg("--count \"%s\" accepted", bad[i][1]);
		assert_string_equal(out, "");
		free(out);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines),
		cmocka_unit_test(test_count_arg),
	};

	log_init(LOG_LVL_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
