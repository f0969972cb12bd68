/*
 * Unit tests for testhook.c: a unit test's callback, and FOSR_TEST_HOOKS's
 * rules (read once per process: the tests run in order, the callback ones
 * before the environment is read).
 */
#include <sys/wait.h>

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testhook.h"

struct seen {
	int	 calls;
	char	 step[32];
	char	 detail[32];
	int	 ret;
};

/* The callback: records its last call, returns what the test asked. */
static int
hook_cb(void *arg, const char *step, const char *detail)
{
	struct seen *s = arg;

	s->calls++;
	snprintf(s->step, sizeof(s->step), "%s", step);
	snprintf(s->detail, sizeof(s->detail), "%s", detail);
	return s->ret;
}

/* Off until a callback is set; the callback sees every point and decides its errno. */
static void
test_callback(void **state)
{
	struct seen s = { 0 };

	(void)state;
	unsetenv("FOSR_TEST_HOOKS");
	assert_false(atomic_load(&testhook_on));
	assert_int_equal(TESTHOOK("eml_write", "x"), 0);
	testhook_set(hook_cb, &s);
	assert_true(atomic_load(&testhook_on));
	assert_int_equal(TESTHOOK("eml_write", "abc"), 0);
	assert_int_equal(s.calls, 1);
	assert_string_equal(s.step, "eml_write");
	assert_string_equal(s.detail, "abc");
	/* A NULL detail reaches the callback as "". */
	strcpy(s.detail, "stale");
	assert_int_equal(TESTHOOK("journal_sync", NULL), 0);
	assert_string_equal(s.detail, "");
	s.ret = ENOSPC;
	assert_int_equal(TESTHOOK("journal_sync", ""), ENOSPC);
	testhook_set(NULL, NULL);
	assert_false(atomic_load(&testhook_on));
	assert_int_equal(TESTHOOK("journal_sync", ""), 0);
	assert_int_equal(s.calls, 3);
}

/*
 * The environment's rules: fail=STEP:N:E fails the Nth time only, with one of
 * ENOSPC, EDQUOT, EIO; anything else is ignored; at most 8 rules; read once.
 */
static void
test_env_rules(void **state)
{
	struct seen s = { 0 };

	(void)state;
	assert_int_equal(setenv("FOSR_TEST_HOOKS",
	    "fail=a:2:EIO,fail=b:1:EPERM,junk,fail=c:1:ENOSPC,fail=d:1:EDQUOT,"
	    "stop=s:1,fail=e:1:EIO,fail=F:1:EIO,fail=f:1:EIO,fail=g:1:EIO,"
	    "fail=h:1:EIO,fail=i:1:EIO", 1), 0);
	testhook_env();
	assert_true(atomic_load(&testhook_on));
	assert_int_equal(TESTHOOK("a", ""), 0);
	assert_int_equal(TESTHOOK("a", ""), EIO);
	assert_int_equal(TESTHOOK("a", ""), 0);
	assert_int_equal(TESTHOOK("b", ""), 0);		/* EPERM: not an injectable errno */
	assert_int_equal(TESTHOOK("c", ""), ENOSPC);
	assert_int_equal(TESTHOOK("d", ""), EDQUOT);
	assert_int_equal(TESTHOOK("e", ""), EIO);
	assert_int_equal(TESTHOOK("F", ""), 0);		/* steps are lower case */
	assert_int_equal(TESTHOOK("f", ""), EIO);
	assert_int_equal(TESTHOOK("g", ""), EIO);
	assert_int_equal(TESTHOOK("h", ""), EIO);	/* the 8th rule */
	assert_int_equal(TESTHOOK("i", ""), 0);		/* the 9th: dropped */
	assert_int_equal(TESTHOOK("unknown", ""), 0);
	/* Read once: a new value changes nothing. */
	assert_int_equal(setenv("FOSR_TEST_HOOKS", "fail=z:1:EIO", 1), 0);
	testhook_env();
	assert_int_equal(TESTHOOK("z", ""), 0);
	/* Removing the callback keeps the rules on; a callback's errno comes first. */
	testhook_set(hook_cb, &s);
	s.ret = EIO;
	assert_int_equal(TESTHOOK("c", ""), EIO);
	testhook_set(NULL, NULL);
	assert_true(atomic_load(&testhook_on));
	assert_int_equal(TESTHOOK("c", ""), 0);
}

/* stop=STEP:N: the Nth time, a line on stderr and the process stops itself. */
static void
test_env_stop(void **state)
{
	char buf[128];
	ssize_t n;
	pid_t pid;
	int p[2], st;

	(void)state;
	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(p[1], STDERR_FILENO);
		(void)TESTHOOK("s", "");	/* the rule of test_env_rules: the 1st time */
		_exit(3);
	}
	close(p[1]);
	assert_int_equal(waitpid(pid, &st, WUNTRACED), pid);
	if (!WIFSTOPPED(st))
		fail_msg("the child did not stop (status %#x)", st);
	assert_int_equal(WSTOPSIG(st), SIGSTOP);
	n = read(p[0], buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "testhook: stop at s\n");
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	close(p[0]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_callback),
		cmocka_unit_test(test_env_rules),
		cmocka_unit_test(test_env_stop),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
