/* Unit tests for util.c: number parsing, randomness, queue ids, hex, base64, mkdirs. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "util.h"

static int	pu(const char *, uint64_t, uint64_t, bool, uint64_t *);
static void	test_parse_u64_ok(void **);
static void	test_parse_u64_bad(void **);
static void	test_parse_u64_underscore(void **);
static void	test_parse_u64_range(void **);
static void	test_random(void **);
static void	test_random_pool(void **);
static void	test_random_fork(void **);
static void	test_queue_id(void **);
static void	test_hex(void **);
static void	test_b64_roundtrip(void **);
static void	test_b64_vectors(void **);
static void	test_b64_bad(void **);
static void	test_mkdirs(void **);

/* Parse a C string with util_parse_u64. */
static int
pu(const char *s, uint64_t min, uint64_t max, bool us, uint64_t *out)
{
	return util_parse_u64(s, strlen(s), min, max, us, out);
}

/* Plain decimals parse, including the extremes. */
static void
test_parse_u64_ok(void **state)
{
	uint64_t v = 99;

	assert_int_equal(pu("0", 0, UINT64_MAX, false, &v), 0);
	assert_true(v == 0);
	assert_int_equal(pu("12345", 0, UINT64_MAX, false, &v), 0);
	assert_true(v == 12345);
	assert_int_equal(pu("18446744073709551615", 0, UINT64_MAX, false, &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(pu("000042", 0, UINT64_MAX, false, &v), 0);
	assert_true(v == 42);
	/* len is authoritative: only "12" of "123" is parsed. */
	assert_int_equal(util_parse_u64("123", 2, 0, 100, false, &v), 0);
	assert_true(v == 12);
}

/* Anything but digits, empty input and overflow fail and leave out alone. */
static void
test_parse_u64_bad(void **state)
{
	uint64_t v = 7;
	const char nul[] = "12\0003";

	assert_int_equal(pu("", 0, UINT64_MAX, false, &v), -1);
	assert_int_equal(pu("-1", 0, UINT64_MAX, false, &v), -1);
	assert_int_equal(pu("+1", 0, UINT64_MAX, false, &v), -1);
	assert_int_equal(pu(" 1", 0, UINT64_MAX, false, &v), -1);
	assert_int_equal(pu("1 ", 0, UINT64_MAX, false, &v), -1);
	assert_int_equal(pu("0x10", 0, UINT64_MAX, false, &v), -1);
	assert_int_equal(pu("1e3", 0, UINT64_MAX, false, &v), -1);
	assert_int_equal(pu("18446744073709551616", 0, UINT64_MAX, false, &v), -1);
	assert_int_equal(pu("99999999999999999999999", 0, UINT64_MAX, false, &v), -1);
	assert_int_equal(util_parse_u64(nul, sizeof(nul) - 1, 0, UINT64_MAX, false, &v), -1);
	assert_int_equal(util_parse_u64(NULL, 0, 0, UINT64_MAX, false, &v), -1);
	assert_true(v == 7);
}

/* Underscores only between digits, and only when allowed. */
static void
test_parse_u64_underscore(void **state)
{
	uint64_t v = 0;

	assert_int_equal(pu("10_000", 0, UINT64_MAX, true, &v), 0);
	assert_true(v == 10000);
	assert_int_equal(pu("1_2_3", 0, UINT64_MAX, true, &v), 0);
	assert_true(v == 123);
	assert_int_equal(pu("10_000", 0, UINT64_MAX, false, &v), -1);
	assert_int_equal(pu("_10", 0, UINT64_MAX, true, &v), -1);
	assert_int_equal(pu("10_", 0, UINT64_MAX, true, &v), -1);
	assert_int_equal(pu("1__0", 0, UINT64_MAX, true, &v), -1);
	assert_int_equal(pu("_", 0, UINT64_MAX, true, &v), -1);
}

/* min and max are inclusive bounds. */
static void
test_parse_u64_range(void **state)
{
	uint64_t v = 0;

	assert_int_equal(pu("1", 1, 65535, false, &v), 0);
	assert_int_equal(pu("65535", 1, 65535, false, &v), 0);
	assert_int_equal(pu("0", 1, 65535, false, &v), -1);
	assert_int_equal(pu("65536", 1, 65535, false, &v), -1);
}

/* Random bytes change between calls and cover the buffer. */
static void
test_random(void **state)
{
	unsigned char a[64], b[64], zero[64];
	uint64_t x, y;

	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	memset(zero, 0, sizeof(zero));
	util_random(a, sizeof(a));
	util_random(b, sizeof(b));
	assert_memory_not_equal(a, b, sizeof(a));
	assert_memory_not_equal(a, zero, sizeof(a));
	util_random(a, 0);
	x = util_random_u64();
	y = util_random_u64();
	assert_true(x != y);
}

/*
 * Small draws come from a per-thread pool: across several refills no 64-bit
 * value repeats and the bytes are not all alike (a pool handed out twice, or
 * never refilled, would repeat).
 */
static void
test_random_pool(void **state)
{
	enum { N = 4096 };
	uint64_t *v = calloc(N, sizeof(*v));
	unsigned char c[3];
	int i, j;

	assert_non_null(v);
	for (i = 0; i < N; i++) {
		v[i] = util_random_u64();
		for (j = 0; j < i; j++)
			assert_true(v[j] != v[i]);
	}
	/* Odd sizes across the pool's edge. */
	for (i = 0; i < 200; i++)
		util_random(c, sizeof(c));
	free(v);
}

/* A forked child does not get the bytes its parent draws next. */
static void
test_random_fork(void **state)
{
	uint64_t mine, child;
	int fds[2], st;
	pid_t pid;

	(void)util_random_u64();	/* the pool now holds unused bytes */
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		uint64_t x = util_random_u64();

		_exit(write(fds[1], &x, sizeof(x)) == sizeof(x) ? 0 : 1);
	}
	mine = util_random_u64();
	assert_int_equal(read(fds[0], &child, sizeof(child)), sizeof(child));
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_true(mine != child);
	close(fds[0]);
	close(fds[1]);
}

/* Queue ids: 10-12 upper-case hex digits, not starting with '0', varying. */
static void
test_queue_id(void **state)
{
	char id[16], prev[16] = "", small[6];
	int i, lens[13] = { 0 };

	for (i = 0; i < 300; i++) {
		size_t n, k;

		memset(id, 'x', sizeof(id));
		util_queue_id(id, sizeof(id));
		n = strlen(id);
		assert_in_range(n, 10, 12);
		lens[n]++;
		assert_true(id[0] != '0');
		for (k = 0; k < n; k++)
			assert_non_null(strchr("0123456789ABCDEF", id[k]));
		assert_string_not_equal(id, prev);
		memcpy(prev, id, sizeof(id));
	}
	assert_true(lens[10] > 0 && lens[11] > 0 && lens[12] > 0);
	/* A short buffer gets a shorter id, never an overflow. */
	memset(small, 'x', sizeof(small));
	util_queue_id(small, sizeof(small));
	assert_int_equal(strlen(small), 5);
}

/* Hex is lower case and NUL-terminated. */
static void
test_hex(void **state)
{
	const unsigned char in[] = { 0x00, 0x0f, 0xa5, 0xff };
	char out[9];

	memset(out, 'x', sizeof(out));
	util_hex(in, sizeof(in), out);
	assert_string_equal(out, "000fa5ff");
	util_hex(in, 0, out);
	assert_string_equal(out, "");
}

/* Hex back to bytes: either case; odd length, a non-digit or no room refused. */
static void
test_unhex(void **state)
{
	unsigned char out[4];

	assert_int_equal(util_unhex("000fA5ff", 8, out, sizeof(out)), 4);
	assert_memory_equal(out, "\x00\x0f\xa5\xff", 4);
	assert_int_equal(util_unhex("", 0, out, sizeof(out)), 0);
	assert_int_equal(util_unhex("abc", 3, out, sizeof(out)), -1);
	assert_int_equal(util_unhex("zz", 2, out, sizeof(out)), -1);
	assert_int_equal(util_unhex("0g", 2, out, sizeof(out)), -1);
	assert_int_equal(util_unhex("0011223344", 10, out, sizeof(out)), -1);
}

/* RFC 4648 section 10 test vectors, both directions. */
static void
test_b64_vectors(void **state)
{
	static const char *plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *enc[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	char ebuf[16];
	unsigned char dbuf[16];
	size_t i;

	for (i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		assert_int_equal(util_b64_encode(plain[i], strlen(plain[i]), ebuf), strlen(enc[i]));
		assert_string_equal(ebuf, enc[i]);
		assert_int_equal(util_b64_decode(enc[i], strlen(enc[i]), dbuf, sizeof(dbuf)),
		    (long)strlen(plain[i]));
		assert_memory_equal(dbuf, plain[i], strlen(plain[i]));
	}
}

/* Random binary data survives encode then decode. */
static void
test_b64_roundtrip(void **state)
{
	unsigned char in[300], out[300];
	char enc[4 * ((300 + 2) / 3) + 1];
	size_t len, n;

	for (len = 0; len < sizeof(in); len += 7) {
		util_random(in, len);
		n = util_b64_encode(in, len, enc);
		assert_int_equal(n, 4 * ((len + 2) / 3));
		assert_int_equal(strlen(enc), n);
		assert_int_equal(util_b64_decode(enc, n, out, sizeof(out)), (long)len);
		assert_memory_equal(in, out, len);
	}
}

/* Strictness: length, padding, alphabet, whitespace, NUL, output room. */
static void
test_b64_bad(void **state)
{
	unsigned char out[32];
	const char nul[] = "Zm\0v";

	assert_int_equal(util_b64_decode("Zg", 2, out, sizeof(out)), -1);	/* no padding */
	assert_int_equal(util_b64_decode("Zg=", 3, out, sizeof(out)), -1);
	assert_int_equal(util_b64_decode("Zm9v ", 5, out, sizeof(out)), -1);
	assert_int_equal(util_b64_decode("Zm 9v", 5, out, sizeof(out)), -1);
	assert_int_equal(util_b64_decode("Zm9\n", 4, out, sizeof(out)), -1);
	assert_int_equal(util_b64_decode("Z===", 4, out, sizeof(out)), -1);	/* 3 pads */
	assert_int_equal(util_b64_decode("====", 4, out, sizeof(out)), -1);
	assert_int_equal(util_b64_decode("Zg==Zg==", 8, out, sizeof(out)), -1);	/* pad mid */
	assert_int_equal(util_b64_decode("Z=g=", 4, out, sizeof(out)), -1);	/* data after pad */
	assert_int_equal(util_b64_decode("Zm9-", 4, out, sizeof(out)), -1);	/* url alphabet */
	assert_int_equal(util_b64_decode("Zm9_", 4, out, sizeof(out)), -1);
	assert_int_equal(util_b64_decode(nul, 4, out, sizeof(out)), -1);
	assert_int_equal(util_b64_decode("Zm9vYmFy", 8, out, 5), -1);	/* out too small */
	assert_int_equal(util_b64_decode("Zm9vYmFy", 8, out, 6), 6);
	assert_int_equal(util_b64_decode("Zm9vYg==", 8, out, 4), 4);	/* exact room */
	/* Non-zero trailing bits are tolerated (as Postfix's decoder). */
	assert_int_equal(util_b64_decode("Zh==", 4, out, sizeof(out)), 1);
	assert_int_equal(out[0], 'f');
}

/* mkdir -p creates parents, accepts existing dirs, refuses files in the way. */
static void
test_mkdirs(void **state)
{
	char base[] = "/tmp/fosr_test_util_XXXXXX";
	char path[256], file[256];
	struct stat st;
	FILE *f;

	assert_non_null(mkdtemp(base));
	snprintf(path, sizeof(path), "%s/a/b//c/", base);
	assert_int_equal(util_mkdirs(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/a/b/c", base);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(util_mkdirs(path, 0700), 0);	/* exists: fine */

	snprintf(file, sizeof(file), "%s/file", base);
	f = fopen(file, "w");
	assert_non_null(f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/file/sub", base);
	errno = 0;
	assert_int_equal(util_mkdirs(path, 0700), -1);
	assert_int_equal(errno, ENOTDIR);
	errno = 0;
	assert_int_equal(util_mkdirs(file, 0700), -1);
	assert_int_equal(errno, ENOTDIR);
	assert_int_equal(util_mkdirs("", 0700), -1);

	unlink(file);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/a/b/c", base);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/a/b", base);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/a", base);
	rmdir(path);
	rmdir(base);
}

/* util_grow: doubling from min, bounded by max, NULL to start, never shrinks. */
static void
test_grow(void **state)
{
	char *p = NULL;
	size_t cap = 0;

	(void)state;
	assert_int_equal(util_grow(&p, &cap, 10, 256, 0), 0);
	assert_non_null(p);
	assert_int_equal(cap, 256);
	assert_int_equal(util_grow(&p, &cap, 100, 256, 0), 0);	/* fits: unchanged */
	assert_int_equal(cap, 256);
	assert_int_equal(util_grow(&p, &cap, 257, 256, 0), 0);
	assert_int_equal(cap, 512);
	assert_int_equal(util_grow(&p, &cap, 1500, 256, 0), 0);
	assert_int_equal(cap, 2048);
	memset(p, 'x', cap);
	/* max: never past it, and a need over it is refused with the buffer kept */
	assert_int_equal(util_grow(&p, &cap, 2400, 256, 2500), 0);
	assert_int_equal(cap, 2500);
	assert_int_equal(util_grow(&p, &cap, 2501, 256, 2500), -1);
	assert_int_equal(cap, 2500);
	assert_int_equal(p[2047], 'x');
	/* an impossible size fails cleanly */
	assert_int_equal(util_grow(&p, &cap, SIZE_MAX, 256, 0), -1);
	assert_int_equal(cap, 2500);
	free(p);
}

/* A client's network: IPv4 /24 (mapped too), IPv6 /64; anything else none. */
static void
test_net_scope(void **state)
{
	char out[UTIL_NET_SCOPE_MAX];

	assert_int_equal(util_net_scope_str("198.51.100.77", out, sizeof(out)), 0);
	assert_string_equal(out, "198.51.100.0/24");
	assert_int_equal(util_net_scope_str("::ffff:198.51.100.201", out, sizeof(out)), 0);
	assert_string_equal(out, "198.51.100.0/24");
	assert_int_equal(util_net_scope_str("2001:db8:0:1:ffff::2", out, sizeof(out)), 0);
	assert_string_equal(out, "2001:db8:0:1::/64");
	assert_int_equal(util_net_scope_str("", out, sizeof(out)), -1);
	assert_string_equal(out, "");
	assert_int_equal(util_net_scope_str("198.51.100", out, sizeof(out)), -1);
	assert_int_equal(util_net_scope_str("example.org", out, sizeof(out)), -1);
}

/* A directory is synced; a missing path or a file is an error with its errno. */
static void
test_fsync_dir(void **state)
{
	char dir[] = "/tmp/test_util_dir.XXXXXX", file[PATH_MAX];
	FILE *f;

	assert_non_null(mkdtemp(dir));
	assert_int_equal(util_fsync_dir(dir), 0);
	snprintf(file, sizeof(file), "%s/f", dir);
	assert_non_null(f = fopen(file, "w"));
	fclose(f);
	errno = 0;
	assert_int_equal(util_fsync_dir(file), -1);
	assert_int_equal(errno, ENOTDIR);
	unlink(file);
	rmdir(dir);
	errno = 0;
	assert_int_equal(util_fsync_dir(dir), -1);
	assert_int_equal(errno, ENOENT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_u64_ok),
		cmocka_unit_test(test_parse_u64_bad),
		cmocka_unit_test(test_parse_u64_underscore),
		cmocka_unit_test(test_parse_u64_range),
		cmocka_unit_test(test_random),
		cmocka_unit_test(test_random_pool),
		cmocka_unit_test(test_random_fork),
		cmocka_unit_test(test_queue_id),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_unhex),
		cmocka_unit_test(test_b64_vectors),
		cmocka_unit_test(test_b64_roundtrip),
		cmocka_unit_test(test_b64_bad),
		cmocka_unit_test(test_mkdirs),
		cmocka_unit_test(test_grow),
		cmocka_unit_test(test_net_scope),
		cmocka_unit_test(test_fsync_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
