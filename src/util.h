/* Small helpers shared by the modules: checked number parsing, randomness, ids. */
#ifndef FOSR_UTIL_H
#define FOSR_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parse all of s[0..len) as a decimal in [min, max]; underscores between digits allowed
 * when allow_underscore (YAML "10_000").  Returns 0 or -1. */
int	util_parse_u64(const char *s, size_t len, uint64_t min, uint64_t max,
	    bool allow_underscore, uint64_t *out);

/* Cryptographically random bytes (getrandom); never fails (falls back to fatalx). */
void	util_random(void *buf, size_t len);
uint64_t util_random_u64(void);

/* A Postfix-like short queue id: 10 to 12 upper-case hex digits.  buf >= 16. */
void	util_queue_id(char *buf, size_t len);

/* Lower-case hex of len bytes into out (2*len+1 bytes). */
void	util_hex(const void *in, size_t len, char *out);
/*
 * The bytes of the hex digits in[0..len) (either case) into out: their
 * count, or -1 when len is odd, a character is not a hex digit or out
 * (outlen bytes) is too small.
 */
long	util_unhex(const char *in, size_t len, void *out, size_t outlen);
/* The value of the hex digit c (either case), or -1. */
int	util_hexval(int c);

/* Strict RFC 4648 base64.  decode: returns decoded length or -1 on bad input
 * (whitespace not allowed, padding required); out must hold len/4*3 bytes.
 * encode: returns output length; out must hold 4*((len+2)/3)+1 bytes. */
long	util_b64_decode(const char *in, size_t len, unsigned char *out, size_t outlen);
size_t	util_b64_encode(const void *in, size_t len, char *out);

/* mkdir -p with mode; 0 or -1 (errno set). */
int	util_mkdirs(const char *path, unsigned mode);

/* write(2) all of buf, retrying on EINTR and short writes; 0 or -1 (errno, EIO for 0). */
int	util_write_all(int fd, const void *buf, size_t len);
int	util_fsync_dir(const char *path);
/*
 * Make *buf (of *cap bytes, malloc'ed or NULL) hold at least need bytes:
 * doubling from min, never past max (0: no bound), overflow-safe.  0, or
 * -1 with *buf and *cap unchanged (no memory, or need > max).
 */
int	util_grow(void *buf, size_t *cap, size_t need, size_t min, size_t max);

/*
 * The network a client address is counted under, as one operator would
 * block it: "a.b.c.0/24" for IPv4 (IPv4-mapped IPv6 too) and
 * "x:x:x:x::/64" for IPv6.  The auth memory and the relay caps use the
 * same.  out gets "" for anything else; from text, -1 then.
 */
#define UTIL_NET_SCOPE_MAX	64	/* INET6_ADDRSTRLEN + "/64" */
struct sockaddr;
void	util_net_scope(const struct sockaddr *sa, char *out, size_t outlen);
int	util_net_scope_str(const char *ip, char *out, size_t outlen);

#endif
