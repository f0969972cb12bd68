/*
 * Test-only hooks: named points of the spool's commit path (see the list at
 * the top of spool.c) where a test can stop the process, to kill -9 it
 * exactly there, or make the step fail with an errno (ENOSPC, EIO...).
 *
 * Off in production: a point costs one relaxed load and a branch, and does
 * nothing unless FOSR_TEST_HOOKS is set in the daemon's environment (read
 * once, at spool_open) or a unit test installs a callback.  FOSR_TEST_HOOKS
 * is for the tests only; never set it on a real sensor.
 *
 *   FOSR_TEST_HOOKS="stop=STEP:N,fail=STEP:N:ERRNO,..."   (8 rules at most)
 *     stop=STEP:N     the Nth time (from 1) STEP is reached, a line
 *                     "testhook: stop at STEP" goes to stderr and the
 *                     process stops itself (raise(SIGSTOP)); the test then kills it
 *     fail=STEP:N:E   the Nth time STEP is reached it fails with errno E,
 *                     one of ENOSPC, EDQUOT, EIO
 */
#ifndef FOSR_TESTHOOK_H
#define FOSR_TESTHOOK_H

#include <stdatomic.h>
#include <stdbool.h>

extern atomic_bool	testhook_on;

/*
 * A unit test's callback: runs at every point (any thread) with the step's
 * name and a detail (a digest, a segment name, or ""); returns 0 or the
 * errno the step fails with.
 */
typedef int	(*testhook_fn)(void *arg, const char *step, const char *detail);

/* Read FOSR_TEST_HOOKS once (later calls do nothing). */
void		testhook_env(void);

/* Install (fn) or remove (NULL) a unit test's callback. */
void		testhook_set(testhook_fn fn, void *arg);

/* The slow path of TESTHOOK(). */
int		testhook_hit(const char *step, const char *detail);

/* 0, or the errno the step must fail with. */
#define TESTHOOK(step, detail)						\
	(__builtin_expect(atomic_load_explicit(&testhook_on,		\
	    memory_order_relaxed), 0) ? testhook_hit((step), (detail)) : 0)

#endif
