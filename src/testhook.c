/*
 * Test-only hooks (see testhook.h): stop points and injected failures for
 * the e2e tests (FOSR_TEST_HOOKS) and a callback for the unit tests.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testhook.h"

#define TESTHOOK_RULES	8

struct testhook_rule {
	char		 step[32];
	unsigned long	 nth;
	int		 err;		/* 0: stop */
	_Atomic unsigned long hits;
};

atomic_bool			testhook_on;

static pthread_once_t		testhook_once = PTHREAD_ONCE_INIT;
static struct testhook_rule	testhook_rules[TESTHOOK_RULES];
static size_t			testhook_nrules;
static _Atomic(testhook_fn)	testhook_cb;
static void *_Atomic		testhook_cb_arg;

static void	testhook_parse(void);

/* Parse FOSR_TEST_HOOKS; a malformed rule is reported and ignored. */
static void
testhook_parse(void)
{
	const char	*env = getenv("FOSR_TEST_HOOKS");
	char		*copy, *tok, *save = NULL;

	if (env == NULL || env[0] == '\0' || (copy = strdup(env)) == NULL)
		return;
	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		struct testhook_rule	*r = &testhook_rules[testhook_nrules];
		char			 kind[8], step[32], err[16] = "";
		int			 n;

		if (testhook_nrules == TESTHOOK_RULES)
			break;
		n = sscanf(tok, "%7[a-z]=%31[a-z_]:%lu:%15[A-Z]", kind, step,
		    &r->nth, err);
		if (n >= 3 && strcmp(kind, "stop") == 0)
			r->err = 0;
		else if (n == 4 && strcmp(kind, "fail") == 0 &&
		    strcmp(err, "ENOSPC") == 0)
			r->err = ENOSPC;
		else if (n == 4 && strcmp(kind, "fail") == 0 &&
		    strcmp(err, "EDQUOT") == 0)
			r->err = EDQUOT;
		else if (n == 4 && strcmp(kind, "fail") == 0 &&
		    strcmp(err, "EIO") == 0)
			r->err = EIO;
		else {
			fprintf(stderr, "testhook: ignored rule \"%.60s\"\n", tok);
			continue;
		}
		memcpy(r->step, step, sizeof(r->step));
		atomic_init(&r->hits, 0);
		testhook_nrules++;
	}
	free(copy);
	if (testhook_nrules > 0) {
		fprintf(stderr, "testhook: %zu rule(s) from FOSR_TEST_HOOKS "
		    "(test builds only)\n", testhook_nrules);
		atomic_store(&testhook_on, true);
	}
}

void
testhook_env(void)
{
	pthread_once(&testhook_once, testhook_parse);
}

void
testhook_set(testhook_fn fn, void *arg)
{
	atomic_store(&testhook_cb_arg, arg);
	atomic_store(&testhook_cb, fn);
	atomic_store(&testhook_on, fn != NULL || testhook_nrules > 0);
}

int
testhook_hit(const char *step, const char *detail)
{
	testhook_fn	fn = atomic_load(&testhook_cb);
	int		err = 0;

	if (fn != NULL && (err = fn(atomic_load(&testhook_cb_arg), step,
	    detail != NULL ? detail : "")) != 0)
		return err;
	for (size_t i = 0; i < testhook_nrules; i++) {
		struct testhook_rule	*r = &testhook_rules[i];
		char			 line[96];
		int			 len;

		if (strcmp(r->step, step) != 0 ||
		    atomic_fetch_add(&r->hits, 1) + 1 != r->nth)
			continue;
		if (r->err != 0)
			return r->err;
		len = snprintf(line, sizeof(line), "testhook: stop at %s\n", step);
		if (len > 0 && write(STDERR_FILENO, line, (size_t)len) == -1) {
			/* the stop below is what the test waits for */
		}
		(void)raise(SIGSTOP);	/* tgkill: allowed by the seccomp filter */
	}
	return 0;
}
