/*
 * Small helpers shared by the modules: checked number parsing, randomness,
 * Postfix-looking queue ids, hex and base64, mkdir -p.  Nothing here logs:
 * the only failure that cannot be returned (the kernel refusing random
 * bytes) is an environment failure and ends the process with a message.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>

#include "util.h"

static int	b64_value(unsigned char);
static void	util_die(const char *);

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/*
 * Parse all of s[0..len) as an unsigned decimal in [min, max].  No sign, no
 * whitespace, no empty string.  With allow_underscore, single underscores
 * may separate digits ("10_000"), never lead, trail or repeat.
 * Returns 0 with *out set, or -1 (out untouched).
 */
int
util_parse_u64(const char *s, size_t len, uint64_t min, uint64_t max,
    bool allow_underscore, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;
	bool prev_digit = false;

	if (s == NULL || len == 0)
		return -1;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '_' && allow_underscore) {
			/* Only between two digits. */
			if (!prev_digit || i + 1 >= len)
				return -1;
			prev_digit = false;
			continue;
		}
		if (c < '0' || c > '9')
			return -1;
		if (v > (UINT64_MAX - (c - '0')) / 10)
			return -1;
		v = v * 10 + (c - '0');
		prev_digit = true;
	}
	if (!prev_digit || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Write a message to stderr and leave: the environment is broken. */
static void
util_die(const char *msg)
{
	ssize_t r;

	r = write(STDERR_FILENO, msg, strlen(msg));
	(void)r;
	_exit(1);
}

/* Read len random bytes from getrandom(2), retrying EINTR and short reads. */
static void
util_getrandom(unsigned char *p, size_t len)
{
	ssize_t r;

	while (len > 0) {
		r = getrandom(p, len, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			util_die("fosr-collector: fatal: getrandom failed\n");
		}
		p += r;
		len -= (size_t)r;
	}
}

/*
 * Per-thread pool of kernel random bytes: queue ids, session ids and tmp
 * names take a few bytes per mail, and one getrandom(2) per 256 bytes instead
 * of two per mail is measurably cheaper.  A byte is handed out once and wiped.
 * A forked child starts with an empty pool (util_random_atfork), so parent
 * and child never share bytes.
 */
#define UTIL_RANDOM_POOL	256
static _Thread_local unsigned char	rnd_pool[UTIL_RANDOM_POOL];
static _Thread_local size_t		rnd_left;
static pthread_once_t			rnd_once = PTHREAD_ONCE_INIT;

/* In the child of a fork: forget the forking thread's pool. */
static void
util_random_child(void)
{
	explicit_bzero(rnd_pool, sizeof(rnd_pool));
	rnd_left = 0;
}

/* Register the fork handler (once per process). */
static void
util_random_atfork(void)
{
	(void)pthread_atfork(NULL, NULL, util_random_child);
}

/*
 * Fill buf with len cryptographically random bytes from getrandom(2).
 * Small requests come from the per-thread pool.  A kernel that refuses
 * (ENOSYS and friends) ends the process: there is no safe fallback.
 */
void
util_random(void *buf, size_t len)
{
	unsigned char *p = buf;
	size_t n;

	if (len > UTIL_RANDOM_POOL / 4) {
		util_getrandom(p, len);
		return;
	}
	(void)pthread_once(&rnd_once, util_random_atfork);
	while (len > 0) {
		if (rnd_left == 0) {
			util_getrandom(rnd_pool, sizeof(rnd_pool));
			rnd_left = sizeof(rnd_pool);
		}
		n = len < rnd_left ? len : rnd_left;
		memcpy(p, rnd_pool + sizeof(rnd_pool) - rnd_left, n);
		explicit_bzero(rnd_pool + sizeof(rnd_pool) - rnd_left, n);
		rnd_left -= n;
		p += n;
		len -= n;
	}
}

/* One random 64-bit value. */
uint64_t
util_random_u64(void)
{
	uint64_t v;

	util_random(&v, sizeof(v));
	return v;
}

/*
 * Write a Postfix-looking short queue id (10 to 12 upper-case hex digits,
 * the first not '0') into buf, NUL-terminated.  Postfix derives it from the
 * microsecond clock and an inode number; random bits look the same from
 * outside and leak nothing.  A buf shorter than 13 bytes gets a shorter id.
 */
void
util_queue_id(char *buf, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	unsigned char rnd[13];
	size_t n, i;

	if (buf == NULL || len == 0)
		return;
	util_random(rnd, sizeof(rnd));
	n = 10 + rnd[0] % 3;
	if (n > len - 1)
		n = len - 1;
	for (i = 0; i < n; i++) {
		unsigned v = rnd[i + 1] & 0x0f;

		if (i == 0)
			v = 1 + rnd[i + 1] % 15;
		buf[i] = hex[v];
	}
	buf[n] = '\0';
}

/* fsync a directory: a rename or a creation in it is then durable.  0, or -1 (errno). */
int
util_fsync_dir(const char *path)
{
	int	fd, r, e;

	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	r = fsync(fd);
	e = errno;
	close(fd);
	errno = e;
	return r;
}

/* write(2) all of buf, retrying on EINTR and short writes; 0 or -1 (errno). */
int
util_write_all(int fd, const void *buf, size_t len)
{
	const char	*p = buf;
	ssize_t		 n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Lower-case hex of len bytes into out, NUL-terminated (2*len+1 bytes). */
void
util_hex(const void *in, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = in;
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = hex[p[i] >> 4];
		out[2 * i + 1] = hex[p[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

/* The value of a hex digit, or -1 (see util.h). */
int
util_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Hex digits to bytes (see util.h). */
long
util_unhex(const char *in, size_t len, void *out, size_t outlen)
{
	unsigned char *o = out;
	size_t i;
	int h, l;

	if (len % 2 != 0 || len / 2 > outlen)
		return -1;
	for (i = 0; i < len; i += 2) {
		if ((h = util_hexval((unsigned char)in[i])) < 0 ||
		    (l = util_hexval((unsigned char)in[i + 1])) < 0)
			return -1;
		o[i / 2] = (unsigned char)(h << 4 | l);
	}
	return (long)(len / 2);
}

/* The 6-bit value of a base64 character, or -1. */
static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Strict RFC 4648 base64 decode: length a multiple of 4, '=' only as the
 * last one or two characters, no whitespace.  Non-zero bits in the last
 * character before padding are tolerated, as Postfix does, so that sloppy
 * clients' credentials are still captured.  Returns the decoded length, or
 * -1 on bad input or when outlen is too small.
 */
long
util_b64_decode(const char *in, size_t len, unsigned char *out, size_t outlen)
{
	size_t i, o = 0;

	if (len % 4 != 0)
		return -1;
	for (i = 0; i < len; i += 4) {
		int v[4], k, pad = 0;

		for (k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)in[i + k];

			if (c == '=') {
				/* Padding: only in the last quantum, positions 2-3. */
				if (i + 4 != len || k < 2)
					return -1;
				pad++;
				v[k] = 0;
				continue;
			}
			if (pad > 0)
				return -1;	/* data after '=' */
			if ((v[k] = b64_value(c)) < 0)
				return -1;
		}
		if (o + (size_t)(3 - pad) > outlen)
			return -1;
		out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			out[o++] = (unsigned char)((v[1] & 0x0f) << 4 | v[2] >> 2);
		if (pad < 1)
			out[o++] = (unsigned char)((v[2] & 0x03) << 6 | v[3]);
	}
	if (o > LONG_MAX)
		return -1;
	return (long)o;
}

/* Base64 with padding, NUL-terminated; returns the length without the NUL. */
size_t
util_b64_encode(const void *in, size_t len, char *out)
{
	const unsigned char *p = in;
	size_t i, o = 0;

	for (i = 0; i + 2 < len; i += 3) {
		out[o++] = b64_alphabet[p[i] >> 2];
		out[o++] = b64_alphabet[(p[i] & 0x03) << 4 | p[i + 1] >> 4];
		out[o++] = b64_alphabet[(p[i + 1] & 0x0f) << 2 | p[i + 2] >> 6];
		out[o++] = b64_alphabet[p[i + 2] & 0x3f];
	}
	if (len - i == 1) {
		out[o++] = b64_alphabet[p[i] >> 2];
		out[o++] = b64_alphabet[(p[i] & 0x03) << 4];
		out[o++] = '=';
		out[o++] = '=';
	} else if (len - i == 2) {
		out[o++] = b64_alphabet[p[i] >> 2];
		out[o++] = b64_alphabet[(p[i] & 0x03) << 4 | p[i + 1] >> 4];
		out[o++] = b64_alphabet[(p[i + 1] & 0x0f) << 2];
		out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

/*
 * mkdir -p: create path and its missing parents with mode.  An existing
 * directory is success; an existing non-directory fails with ENOTDIR.
 * Returns 0 or -1 with errno set.
 */
int
util_mkdirs(const char *path, unsigned mode)
{
	char buf[PATH_MAX];
	struct stat st;
	size_t len, i;

	if (path == NULL || *path == '\0') {
		errno = ENOENT;
		return -1;
	}
	len = strlen(path);
	if (len >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, len + 1);
	/* Drop trailing slashes (but keep a lone "/"). */
	while (len > 1 && buf[len - 1] == '/')
		buf[--len] = '\0';
	for (i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		if (buf[i - 1] == '/')
			continue;	/* "a//b" */
		buf[i] = '\0';
		if (mkdir(buf, (mode_t)mode) != 0) {
			int saved = errno;

			if (stat(buf, &st) != 0) {
				errno = saved;
				return -1;
			}
			if (!S_ISDIR(st.st_mode)) {
				errno = ENOTDIR;
				return -1;
			}
		}
		if (i < len)
			buf[i] = '/';
	}
	return 0;
}

/* Grow a buffer (util.h). */
int
util_grow(void *buf, size_t *cap, size_t need, size_t min, size_t max)
{
	void **bp = buf, *nb;
	size_t ncap;

	if (need <= *cap)
		return 0;
	if ((max != 0 && need > max) || need > PTRDIFF_MAX)
		return -1;	/* no object is larger than PTRDIFF_MAX */
	ncap = *cap < min ? min : *cap;
	while (ncap < need)
		ncap = ncap > PTRDIFF_MAX / 2 ? need : ncap * 2;
	if (max != 0 && ncap > max)
		ncap = max;
	if ((nb = realloc(*bp, ncap)) == NULL)
		return -1;
	*bp = nb;
	*cap = ncap;
	return 0;
}

/* A client's network: "a.b.c.0/24" or "x:x:x:x::/64" (see util.h). */
void
util_net_scope(const struct sockaddr *sa, char *out, size_t outlen)
{
	unsigned char a[16];
	char txt[INET6_ADDRSTRLEN];

	if (outlen)
		out[0] = '\0';
	if (sa->sa_family == AF_INET) {
		memcpy(a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		a[3] = 0;
		if (inet_ntop(AF_INET, a, txt, sizeof(txt)) != NULL)
			snprintf(out, outlen, "%s/24", txt);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a)) {
			a[15] = 0;
			if (inet_ntop(AF_INET, a + 12, txt, sizeof(txt)) != NULL)
				snprintf(out, outlen, "%s/24", txt);
			return;
		}
		memset(a + 8, 0, 8);
		if (inet_ntop(AF_INET6, a, txt, sizeof(txt)) != NULL)
			snprintf(out, outlen, "%s/64", txt);
	}
}

/* The same from a numeric address in text; -1 (and "") when it is none. */
int
util_net_scope_str(const char *ip, char *out, size_t outlen)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	if (outlen)
		out[0] = '\0';
	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	if (inet_pton(AF_INET, ip, &sin.sin_addr) == 1) {
		sin.sin_family = AF_INET;
		util_net_scope((const struct sockaddr *)&sin, out, outlen);
	} else if (inet_pton(AF_INET6, ip, &sin6.sin6_addr) == 1) {
		sin6.sin6_family = AF_INET6;
		util_net_scope((const struct sockaddr *)&sin6, out, outlen);
	} else
		return -1;
	return out[0] ? 0 : -1;
}
