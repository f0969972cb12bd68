/* Unit tests for the hpfeeds frame codec, with the vectors of hpfeeds-vectors.md. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "hpfeeds_wire.h"

static const uint8_t nonce[4] = { 0xde, 0xad, 0xbe, 0xef };

static const char v_info[] =
    "00 00 00 11 01 07 68 70 66 65 65 64 73 de ad be ef";
static const char v_sha1[] =
    "88 13 ea 67 fd a0 0c 0e de ff 92 c6 5b d8 7d 1b 07 78 42 dd";
static const char v_auth_writer[] =
    "00 00 00 20 02 06 77 72 69 74 65 72 88 13 ea 67 fd a0 0c 0e de ff 92 c6 5b "
    "d8 7d 1b 07 78 42 dd";
static const char v_publish[] =
    "00 00 00 32 03 06 77 72 69 74 65 72 0a 73 70 61 6d 2e 6d 61 69 6c 73 "
    "7b 22 73 68 61 32 35 36 22 3a 22 61 62 63 22 2c 22 6d 73 67 22 3a 22 68 69 22 7d";
static const char v_subscribe[] =
    "00 00 00 16 04 06 72 65 61 64 65 72 73 70 61 6d 2e 6d 61 69 6c 73";
static const char v_unsubscribe[] =
    "00 00 00 16 05 06 72 65 61 64 65 72 73 70 61 6d 2e 6d 61 69 6c 73";
static const char v_error[] =
    "00 00 00 25 00 41 75 74 68 65 6e 74 69 63 61 74 69 6f 6e 20 66 61 69 6c 65 64 "
    "20 66 6f 72 20 77 72 69 74 65 72";
static const char v_auth_reader[] =
    "00 00 00 20 02 06 72 65 61 64 65 72 9e af d4 69 e7 a4 eb ac 0e c8 07 1f b6 b8 "
    "a9 c2 25 81 f3 1e";
static const char v_real_info[] = "00 00 00 11 01 07 68 70 66 65 65 64 73 b9 db ad 70";
static const char v_real_auth[] =
    "00 00 00 20 02 06 77 72 69 74 65 72 91 1c 6d 1a 06 44 3f 47 49 8a 17 5d c8 26 "
    "c9 32 b0 e9 37 46";

static size_t	hex(const char *s, uint8_t *out);

/* Parse space-separated hex bytes into out; returns the count. */
static size_t
hex(const char *s, uint8_t *out)
{
	size_t n = 0;
	unsigned v;
	int used;

	while (sscanf(s, " %2x%n", &v, &used) == 1) {
		out[n++] = (uint8_t)v;
		s += used;
	}
	return n;
}

static void
test_info_encode_decode(void **state)
{
	uint8_t want[64], got[64];
	size_t wl = hex(v_info, want), gl, used = 0;
	struct hpf_frame f;

	gl = hpf_wire_info(got, sizeof(got), "hpfeeds", nonce, 4);
	assert_int_equal(gl, wl);
	assert_memory_equal(got, want, wl);
	assert_int_equal(hpf_wire_decode(want, wl, &f, &used, NULL, 0), 1);
	assert_int_equal(used, wl);
	assert_int_equal(f.op, HPF_OP_INFO);
	assert_int_equal(f.namelen, 7);
	assert_memory_equal(f.name, "hpfeeds", 7);
	assert_int_equal(f.datalen, 4);
	assert_memory_equal(f.data, nonce, 4);
}

static void
test_auth_hash(void **state)
{
	uint8_t want[32], got[20];

	assert_int_equal(hex(v_sha1, want), 20);
	hpf_wire_auth_hash(nonce, 4, "secret", 6, got);
	assert_memory_equal(got, want, 20);
}

static void
test_auth_frames(void **state)
{
	uint8_t want[64], got[64], info[64];
	size_t wl, gl, il, used;
	struct hpf_frame f;

	wl = hex(v_auth_writer, want);
	gl = hpf_wire_auth(got, sizeof(got), "writer", nonce, 4, "secret", 6);
	assert_int_equal(gl, wl);
	assert_memory_equal(got, want, wl);

	wl = hex(v_auth_reader, want);
	gl = hpf_wire_auth(got, sizeof(got), "reader", nonce, 4, "readersecret", 12);
	assert_int_equal(gl, wl);
	assert_memory_equal(got, want, wl);

	/* The real exchange: nonce taken from the decoded INFO. */
	il = hex(v_real_info, info);
	assert_int_equal(hpf_wire_decode(info, il, &f, &used, NULL, 0), 1);
	wl = hex(v_real_auth, want);
	gl = hpf_wire_auth(got, sizeof(got), "writer", f.data, f.datalen, "secret", 6);
	assert_int_equal(gl, wl);
	assert_memory_equal(got, want, wl);

	assert_int_equal(hpf_wire_decode(want, wl, &f, &used, NULL, 0), 1);
	assert_int_equal(f.op, HPF_OP_AUTH);
	assert_memory_equal(f.name, "writer", 6);
	assert_int_equal(f.datalen, 20);
	/* A too-small buffer is refused. */
	assert_int_equal(hpf_wire_auth(got, 31, "writer", nonce, 4, "secret", 6), 0);
}

static void
test_publish(void **state)
{
	static const char payload[] = "{\"sha256\":\"abc\",\"msg\":\"hi\"}";
	uint8_t want[128], got[128];
	size_t wl = hex(v_publish, want), gl, hl, used;
	struct hpf_frame f;

	gl = hpf_wire_publish(got, sizeof(got), "writer", "spam.mails", payload,
	    strlen(payload));
	assert_int_equal(gl, wl);
	assert_memory_equal(got, want, wl);
	hl = hpf_wire_publish_header(got, sizeof(got), "writer", "spam.mails",
	    strlen(payload));
	assert_int_equal(hl, wl - strlen(payload));
	assert_memory_equal(got, want, hl);

	assert_int_equal(hpf_wire_decode(want, wl, &f, &used, NULL, 0), 1);
	assert_int_equal(f.op, HPF_OP_PUBLISH);
	assert_memory_equal(f.name, "writer", 6);
	assert_int_equal(f.chanlen, 10);
	assert_memory_equal(f.chan, "spam.mails", 10);
	assert_int_equal(f.datalen, strlen(payload));
	assert_memory_equal(f.data, payload, f.datalen);
}

static void
test_publish_limit(void **state)
{
	uint8_t hdr[600];

	assert_int_equal(hpf_wire_max_payload(6, 10), 1048558);
	assert_int_not_equal(hpf_wire_publish_header(hdr, sizeof(hdr), "writer",
	    "spam.mails", 1048558), 0);
	assert_int_equal(hpf_wire_publish_header(hdr, sizeof(hdr), "writer",
	    "spam.mails", 1048559), 0);
	/* The largest publish frame is exactly the broker's limit. */
	hpf_wire_publish_header(hdr, sizeof(hdr), "writer", "spam.mails", 1048558);
	assert_int_equal(((uint32_t)hdr[0] << 24 | hdr[1] << 16 | hdr[2] << 8 | hdr[3]),
	    HPF_MAX_FRAME);
}

static void
test_subscribe_unsubscribe(void **state)
{
	uint8_t want[64], got[64];
	size_t wl, gl, used;
	struct hpf_frame f;

	wl = hex(v_subscribe, want);
	gl = hpf_wire_subscribe(got, sizeof(got), HPF_OP_SUBSCRIBE, "reader", "spam.mails");
	assert_int_equal(gl, wl);
	assert_memory_equal(got, want, wl);
	assert_int_equal(hpf_wire_decode(want, wl, &f, &used, NULL, 0), 1);
	assert_int_equal(f.op, HPF_OP_SUBSCRIBE);
	assert_memory_equal(f.name, "reader", 6);
	assert_int_equal(f.chanlen, 10);
	assert_memory_equal(f.chan, "spam.mails", 10);

	wl = hex(v_unsubscribe, want);
	gl = hpf_wire_subscribe(got, sizeof(got), HPF_OP_UNSUBSCRIBE, "reader", "spam.mails");
	assert_int_equal(gl, wl);
	assert_memory_equal(got, want, wl);
	assert_int_equal(hpf_wire_decode(want, wl, &f, &used, NULL, 0), 1);
	assert_int_equal(f.op, HPF_OP_UNSUBSCRIBE);
	assert_int_equal(hpf_wire_subscribe(got, sizeof(got), HPF_OP_PUBLISH, "a", "b"), 0);
}

static void
test_error(void **state)
{
	static const char text[] = "Authentication failed for writer";
	uint8_t want[64], got[64];
	size_t wl = hex(v_error, want), gl, used;
	struct hpf_frame f;

	gl = hpf_wire_error(got, sizeof(got), text, strlen(text));
	assert_int_equal(gl, wl);
	assert_memory_equal(got, want, wl);
	assert_int_equal(hpf_wire_decode(want, wl, &f, &used, NULL, 0), 1);
	assert_int_equal(f.op, HPF_OP_ERROR);
	assert_int_equal(f.datalen, strlen(text));
	assert_memory_equal(f.data, text, f.datalen);
}

static void
test_partial_frames(void **state)
{
	uint8_t buf[128];
	size_t n = hex(v_publish, buf), i, used;
	struct hpf_frame f;

	/* Every strict prefix asks for more bytes; none is an error. */
	for (i = 0; i < n; i++)
		assert_int_equal(hpf_wire_decode(buf, i, &f, &used, NULL, 0), 0);
	assert_int_equal(hpf_wire_decode(buf, n, &f, &used, NULL, 0), 1);
	/* Two frames back to back: the first is decoded, consumed says where the next starts. */
	memcpy(buf + n, buf, n);
	assert_int_equal(hpf_wire_decode(buf, 2 * n, &f, &used, NULL, 0), 1);
	assert_int_equal(used, n);
	assert_int_equal(hpf_wire_decode(buf + used, n, &f, &used, NULL, 0), 1);
}

static void
test_bad_lengths(void **state)
{
	uint8_t b[16];
	char err[128];
	uint32_t total;
	uint8_t op;
	size_t used;
	struct hpf_frame f;

	/* Length below the header: an error, not a wait for more bytes. */
	memcpy(b, "\x00\x00\x00\x04\x03", 5);
	err[0] = '\0';
	assert_int_equal(hpf_wire_decode(b, 5, &f, &used, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "shorter"));
	memcpy(b, "\x00\x00\x00\x00\x00", 5);
	assert_int_equal(hpf_wire_decode(b, 5, &f, &used, NULL, 0), -1);
	/* Zero-body ERROR frame (length 5) is fine. */
	memcpy(b, "\x00\x00\x00\x05\x00", 5);
	assert_int_equal(hpf_wire_decode(b, 5, &f, &used, NULL, 0), 1);
	assert_int_equal(f.datalen, 0);
	/* Oversized: one more than the limit per opcode. */
	memcpy(b, "\x00\x10\x00\x06\x03", 5);	/* 1048582 publish */
	assert_int_equal(hpf_wire_header(b, 5, &total, &op, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "limit"));
	memcpy(b, "\x00\x10\x00\x05\x03", 5);	/* 1048581 publish: allowed */
	assert_int_equal(hpf_wire_header(b, 5, &total, &op, NULL, 0), 1);
	assert_int_equal(total, 1048581);
	memcpy(b, "\x00\x00\x01\x1a\x01", 5);	/* 282 info */
	assert_int_equal(hpf_wire_header(b, 5, &total, &op, NULL, 0), -1);
	memcpy(b, "\x00\x00\x01\x19\x01", 5);	/* 281 info */
	assert_int_equal(hpf_wire_header(b, 5, &total, &op, NULL, 0), 1);
	memcpy(b, "\x00\x10\x00\x01\x04", 5);	/* 1048577 subscribe */
	assert_int_equal(hpf_wire_header(b, 5, &total, &op, NULL, 0), -1);
	memcpy(b, "\xff\xff\xff\xff\x00", 5);
	assert_int_equal(hpf_wire_header(b, 5, &total, &op, NULL, 0), -1);
	/* Unknown opcode. */
	memcpy(b, "\x00\x00\x00\x05\x06", 5);
	assert_int_equal(hpf_wire_decode(b, 5, &f, &used, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "opcode"));
	/* Short header: wait. */
	assert_int_equal(hpf_wire_header(b, 4, &total, &op, NULL, 0), 0);
}

static void
test_str8_overruns(void **state)
{
	struct hpf_frame f;
	size_t used;
	/* INFO with no str8 at all. */
	static const uint8_t info0[] = { 0, 0, 0, 5, 1 };
	/* INFO whose name claims 8 bytes, 7 present. */
	static const uint8_t info1[] = { 0, 0, 0, 13, 1, 8, 'h', 'p', 'f', 'e', 'e', 'd', 's' };
	/* PUBLISH whose ident fits but channel length overruns. */
	static const uint8_t pub1[] = { 0, 0, 0, 10, 3, 1, 'w', 5, 'a', 'b' };
	/* PUBLISH with ident only, no channel byte. */
	static const uint8_t pub2[] = { 0, 0, 0, 7, 3, 1, 'w' };
	/* AUTH with a 19-byte hash. */
	uint8_t auth[64];
	size_t al = hex(v_auth_writer, auth);
	/* SUBSCRIBE ident overruns. */
	static const uint8_t sub1[] = { 0, 0, 0, 8, 4, 9, 'r', 'e' };
	/* PUBLISH with empty ident, channel and payload: valid. */
	static const uint8_t pub3[] = { 0, 0, 0, 7, 3, 0, 0 };

	assert_int_equal(hpf_wire_decode(info0, sizeof(info0), &f, &used, NULL, 0), -1);
	assert_int_equal(hpf_wire_decode(info1, sizeof(info1), &f, &used, NULL, 0), -1);
	assert_int_equal(hpf_wire_decode(pub1, sizeof(pub1), &f, &used, NULL, 0), -1);
	assert_int_equal(hpf_wire_decode(pub2, sizeof(pub2), &f, &used, NULL, 0), -1);
	auth[3] = (uint8_t)(al - 1);
	assert_int_equal(hpf_wire_decode(auth, al - 1, &f, &used, NULL, 0), -1);
	assert_int_equal(hpf_wire_decode(sub1, sizeof(sub1), &f, &used, NULL, 0), -1);
	assert_int_equal(hpf_wire_decode(pub3, sizeof(pub3), &f, &used, NULL, 0), 1);
	assert_int_equal(f.namelen, 0);
	assert_int_equal(f.chanlen, 0);
	assert_int_equal(f.datalen, 0);
}

static void
test_encoder_limits(void **state)
{
	char longname[300];
	uint8_t out[600];

	memset(longname, 'a', 256);
	longname[256] = '\0';
	assert_int_equal(hpf_wire_auth(out, sizeof(out), longname, nonce, 4, "s", 1), 0);
	assert_int_equal(hpf_wire_publish_header(out, sizeof(out), longname, "c", 1), 0);
	assert_int_equal(hpf_wire_publish_header(out, sizeof(out), "w", longname, 1), 0);
	assert_int_equal(hpf_wire_info(out, sizeof(out), longname, nonce, 4), 0);
	longname[255] = '\0';
	assert_int_not_equal(hpf_wire_auth(out, sizeof(out), longname, nonce, 4, "s", 1), 0);
	assert_int_not_equal(hpf_wire_publish_header(out, sizeof(out), longname, longname, 1), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_info_encode_decode),
		cmocka_unit_test(test_auth_hash),
		cmocka_unit_test(test_auth_frames),
		cmocka_unit_test(test_publish),
		cmocka_unit_test(test_publish_limit),
		cmocka_unit_test(test_subscribe_unsubscribe),
		cmocka_unit_test(test_error),
		cmocka_unit_test(test_partial_frames),
		cmocka_unit_test(test_bad_lengths),
		cmocka_unit_test(test_str8_overruns),
		cmocka_unit_test(test_encoder_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
