/*
 * libFuzzer target: the relay caps journal loader and the canonical address
 * form.  The first byte picks: even, the rest is a caps.log, loaded read-only
 * and writable (torn tail cut, compaction) and reloaded after one more
 * reservation, with the counts compared; odd, the rest is an address put in
 * canonical form, which must be valid UTF-8, a fixed point, and match the
 * never-relay list exactly as the original does.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "config.h"
#include "log.h"
#include "relay_caps.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);
int	LLVMFuzzerInitialize(int *, char ***);

static char		 dir[64];
static char		 path[96];
static struct cfg	*cfg;

/* Remove the scratch directory at exit. */
static void
cleanup(void)
{
	char tmp[112];

	unlink(path);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	unlink(tmp);
	rmdir(dir);
}

/* One scratch directory for the whole run (tmpfs when there is one). */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	snprintf(dir, sizeof(dir), "%s/fuzz_caps.XXXXXX",
	    access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(path, sizeof(path), "%s/caps.log", dir);
	atexit(cleanup);
	if ((cfg = malloc(sizeof(*cfg))) == NULL)
		abort();
	cfg_defaults(cfg);
	log_init(LOG_LVL_ERR);
	return 0;
}

/* The err of a failed open must be a non-empty C string. */
static void
check_err(const char *err, size_t len)
{
	if (memchr(err, '\0', len) == NULL || err[0] == '\0')
		__builtin_trap();
}

/* Load, compact, reserve, reload: nothing counted may be lost. */
static void
fuzz_journal(const uint8_t *data, size_t size)
{
	static unsigned long long seq;
	struct cfg_relay_caps lim = cfg->relay.caps;
	struct relay_caps *ro, *rw, *again;
	const char *rc[2] = { "\"Drop\"@Example.COM.", "x@b\xc3\xbc" "cher.example" };
	char err[512], why[512], sha[65], *line;
	struct relay_caps_req q = { sha, "192.0.2.1", rc, 2, 10 };
	time_t later;
	size_t len;
	int fd, nro, nrw, allowed;

	lim.per_day = lim.per_hour = lim.per_recipient = lim.per_domain =
	    lim.per_client_ip = 1000000;
	lim.max_recipients = 2;
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) == -1)
		abort();
	if (size > 0 && write(fd, data, size) != (ssize_t)size)
		abort();
	close(fd);
	later = time(NULL) + 10;	/* after every open below: no window edge in between */
	if ((ro = relay_caps_open(dir, "caps", &lim, true, err, sizeof(err))) == NULL) {
		check_err(err, sizeof(err));
		return;
	}
	if ((rw = relay_caps_open(dir, "caps", &lim, false, err, sizeof(err))) == NULL) {
		check_err(err, sizeof(err));
		relay_caps_free(ro);
		return;
	}
	nro = relay_caps_count_day(ro, later);
	nrw = relay_caps_count_day(rw, later);
	/* Read-only and writable read the same lines (torn tail ignored vs cut). */
	if (nro != nrw || (relay_caps_broken(ro) == NULL) != (relay_caps_broken(rw) == NULL))
		__builtin_trap();
	relay_caps_free(ro);
	snprintf(sha, sizeof(sha), "%064llx", ++seq);
	allowed = relay_caps_check(rw, &q, time(NULL), why, sizeof(why)) == 0;
	if (relay_caps_broken(rw) != NULL) {
		/* Fails closed: nothing is allowed, nothing is written. */
		if (allowed || memchr(why, '\0', sizeof(why)) == NULL)
			__builtin_trap();
		relay_caps_free(rw);
		return;
	}
	if (allowed) {
		if (relay_caps_reserve(rw, &q, time(NULL), "fuzz", &line, &len) == -1)
			__builtin_trap();
		if (relay_caps_persist(rw, line, len, err, sizeof(err)) == -1)
			__builtin_trap();
		free(line);
	}
	relay_caps_free(rw);
	/* Compacted, plus the new line: everything still counts, and still reads. */
	if ((again = relay_caps_open(dir, "caps", &lim, false, err, sizeof(err))) == NULL)
		__builtin_trap();
	if (relay_caps_broken(again) != NULL ||
	    relay_caps_count_day(again, later) != nrw + allowed)
		__builtin_trap();
	if (allowed && relay_caps_check(again, &q, time(NULL), why, sizeof(why)) == 0)
		__builtin_trap();	/* the same sha256 was just relayed */
	relay_caps_free(again);
}

/* The canonical form: bounded, UTF-8, a fixed point, same never-relay verdict. */
static void
fuzz_addr(const uint8_t *data, size_t size)
{
	char *in, out[ADDR_CANON_MAX], again[ADDR_CANON_MAX], key[ADDR_CANON_MAX];
	const char *w1, *w2;
	bool m1, m2;

	if ((in = malloc(size + 1)) == NULL)
		return;
	memcpy(in, data, size);
	in[size] = '\0';
	m1 = relay_caps_never_relay(cfg->relay.never_relay, cfg->relay.nnever, in, &w1);
	(void)relay_domain_in_list(cfg->relay.never_relay, cfg->relay.nnever, in, &w2);
	if (addr_canonical(in, out, sizeof(out)) == 0) {
		size_t n = strlen(out);
		if (!utf8_valid(out, n) || addr_canonical(out, again, sizeof(again)) != 0 ||
		    strcmp(out, again) != 0)
			__builtin_trap();
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
				__builtin_trap();
		m2 = relay_caps_never_relay(cfg->relay.never_relay, cfg->relay.nnever, out, &w2);
		if (m1 != m2 || (m1 && strcmp(w1, w2) != 0))
			__builtin_trap();
		if (addr_key(in, key, sizeof(key)) != 0 ||
		    addr_key(key, again, sizeof(again)) != 0 || strcmp(key, again) != 0)
			__builtin_trap();
	} else if (!m1)
		__builtin_trap();	/* no canonical form: never relayed */
	free(in);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		fuzz_addr(data + 1, size - 1);
	else
		fuzz_journal(data + 1, size - 1);
	return 0;
}
