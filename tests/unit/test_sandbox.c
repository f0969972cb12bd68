/*
 * Unit tests for sandbox.c.  Every check that enters the sandbox does it in a
 * forked child (a filter cannot be removed); the parent looks at how the
 * child ended: SIGSYS for a forbidden call, exit status 0 for allowed work.
 */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include <linux/capability.h>

#include "sandbox.h"

/* Same test as sandbox.c: sanitizer builds allow fork-like clone and ptrace. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_SANITIZER	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(leak_sanitizer)
#define TEST_SANITIZER	1
#endif
#endif
#ifndef TEST_SANITIZER
#define TEST_SANITIZER	0
#endif

/* Exit codes of a child that did not die as expected. */
#define CHILD_ENTER_FAILED	90
#define CHILD_SURVIVED		91

typedef int (*child_fn)(void *);

static int	 run_child(child_fn, void *);
static void	 assert_killed_by_sigsys(int);
static void	 enter_or_exit(bool);
static int	 child_socket_packet(void *);
static int	 child_execve(void *);
static int	 child_unshare(void *);
static int	 child_fork(void *);
static int	 child_ioctl_other(void *);
static int	 child_allowed_work(void *);
static int	 child_late_thread_forbidden(void *);
static int	 child_caps_cleared(void *);
static int	 child_thread_with_caps(void *);
static int	 child_chroot(void *);
static void	*thread_idle(void *);
static void	*thread_packet_socket(void *);

/* Fork, run fn in the child, return the raw wait status. */
static int
run_child(child_fn fn, void *arg)
{
	pid_t pid;
	int status = 0;

	fflush(NULL);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0)
		_exit(fn(arg));	/* _exit: no atexit handlers, no leak check */
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

/* The child must have been killed by the filter, not have exited. */
static void
assert_killed_by_sigsys(int status)
{
	if (WIFEXITED(status))
		fail_msg("child exited with %d instead of dying by SIGSYS",
		    WEXITSTATUS(status));
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSYS);
}

/* In a child: enter the sandbox or exit with CHILD_ENTER_FAILED. */
static void
enter_or_exit(bool seccomp)
{
	struct sandbox_opts o = { .seccomp = seccomp, .chroot_dir = "" };
	char err[256];

	if (sandbox_enter(&o, err, sizeof(err)) == -1) {
		fprintf(stderr, "sandbox_enter: %s\n", err);
		_exit(CHILD_ENTER_FAILED);
	}
}

/* A raw packet socket: a family the filter does not allow. */
static int
child_socket_packet(void *arg)
{
	enter_or_exit(true);
	(void)socket(AF_PACKET, SOCK_RAW, 0);
	return CHILD_SURVIVED;
}

/* execve is never allowed. */
static int
child_execve(void *arg)
{
	char *const argv[] = { "true", NULL };
	char *const envp[] = { NULL };

	enter_or_exit(true);
	(void)syscall(SYS_execve, "/bin/true", argv, envp);
	return CHILD_SURVIVED;
}

/* unshare is never allowed. */
static int
child_unshare(void *arg)
{
	enter_or_exit(true);
	(void)syscall(SYS_unshare, 0);
	return CHILD_SURVIVED;
}

/* A new process (clone without CLONE_THREAD) is refused in release builds. */
static int
child_fork(void *arg)
{
	enter_or_exit(true);
	(void)syscall(SYS_clone, (unsigned long)SIGCHLD, 0UL, 0UL, 0UL, 0UL);
	return CHILD_SURVIVED;
}

/* An ioctl request outside FIONREAD/SIOCOUTQ/FIONBIO (TIOCSTI here). */
static int
child_ioctl_other(void *arg)
{
	enter_or_exit(true);
	(void)syscall(SYS_ioctl, 0, 0x5412UL /* TIOCSTI */, "x");
	return CHILD_SURVIVED;
}

/* An idle thread: nothing to do. */
static void *
thread_idle(void *arg)
{
	return arg;
}

/* What the daemon does after the sandbox is entered still works. */
static int
child_allowed_work(void *arg)
{
	const char *dir = arg;
	char tmp[512], dst[512], buf[64];
	struct sandbox_state st;
	struct timespec ts;
	struct stat sb;
	pthread_t t;
	uint64_t one = 1;
	int fd, s, efd;
	void *ret;

	enter_or_exit(true);
	/* a spool commit: write, fsync, rename, directory fsync, unlink */
	snprintf(tmp, sizeof(tmp), "%s/tmp.eml", dir);
	snprintf(dst, sizeof(dst), "%s/final.eml", dir);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640)) == -1)
		return 1;
	if (write(fd, "hello\r\n", 7) != 7 || fsync(fd) == -1 || fdatasync(fd) == -1 ||
	    fstat(fd, &sb) == -1 || sb.st_size != 7 || close(fd) == -1)
		return 2;
	if (rename(tmp, dst) == -1 || stat(dst, &sb) == -1)
		return 3;
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 || fsync(fd) == -1 ||
	    close(fd) == -1)
		return 4;
	if (mkdirat(AT_FDCWD, tmp, 0750) == -1 || unlinkat(AT_FDCWD, tmp, AT_REMOVEDIR) == -1 ||
	    unlink(dst) == -1)
		return 5;
	/* outbound sockets of the allowed families */
	if ((s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1)
		return 6;
	close(s);
	if ((s = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1 && errno != EAFNOSUPPORT)
		return 7;
	if (s != -1)
		close(s);
	if ((s = socket(AF_UNIX, SOCK_STREAM, 0)) == -1)
		return 8;
	close(s);
	/* worker hand-off, randomness, time */
	if ((efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1 ||
	    write(efd, &one, sizeof(one)) != sizeof(one) ||
	    read(efd, &one, sizeof(one)) != sizeof(one))
		return 9;
	close(efd);
	if (getrandom(buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
		return 10;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		return 11;
	ts.tv_sec = 0;
	ts.tv_nsec = 1000;
	if (nanosleep(&ts, NULL) == -1)
		return 12;
	/* a new thread (clone3 gets ENOSYS, glibc falls back to clone) */
	if (pthread_create(&t, NULL, thread_idle, buf) != 0 || pthread_join(t, &ret) != 0 ||
	    ret != buf)
		return 13;
	/* and what is left of our privileges */
	if (sandbox_state_read(0, &st) == -1)
		return 14;
	if (st.seccomp != 2 || st.no_new_privs != 1 || st.cap_eff || st.cap_prm ||
	    st.cap_amb || st.cap_inh)
		return 15;
	return 0;
}

static pthread_mutex_t	go_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	go_cv = PTHREAD_COND_INITIALIZER;
static int		go;

/* Started before the filter: waits, then makes a forbidden call. */
static void *
thread_packet_socket(void *arg)
{
	pthread_mutex_lock(&go_mu);
	while (!go)
		pthread_cond_wait(&go_cv, &go_mu);
	pthread_mutex_unlock(&go_mu);
	(void)socket(AF_PACKET, SOCK_RAW, 0);
	return NULL;
}

/* TSYNC: a thread that existed before sandbox_enter is under the filter. */
static int
child_late_thread_forbidden(void *arg)
{
	char err[256];
	pthread_t t;

	/* the worker threads of the daemon start after the capability drop */
	if (sandbox_drop_caps(err, sizeof(err)) == -1)
		return CHILD_ENTER_FAILED;
	if (pthread_create(&t, NULL, thread_packet_socket, NULL) != 0)
		return 1;
	enter_or_exit(true);
	pthread_mutex_lock(&go_mu);
	go = 1;
	pthread_cond_signal(&go_cv);
	pthread_mutex_unlock(&go_mu);
	pthread_join(t, NULL);
	return CHILD_SURVIVED;
}

/* Without the filter: no capability is left, no_new_privs is set. */
static int
child_caps_cleared(void *arg)
{
	struct sandbox_state st;
	char err[256];
	bool root_caps;

	if (sandbox_state_read(0, &st) == -1)
		return 1;
	root_caps = st.cap_eff != 0;
	if (sandbox_drop_bounding(err, sizeof(err)) == -1)
		return 2;
	enter_or_exit(false);
	if (sandbox_state_read(0, &st) == -1)
		return 3;
	if (st.cap_eff || st.cap_prm || st.cap_inh || st.cap_amb || st.no_new_privs != 1)
		return 4;
	/* with CAP_SETPCAP at the start, the bounding set is empty too */
	if (root_caps && st.cap_bnd != 0)
		return 5;
	/* and a capability cannot come back */
	{
		struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
		struct __user_cap_data_struct data[2];

		memset(data, 0, sizeof(data));
		data[0].effective = data[0].permitted = 1U << CAP_NET_BIND_SERVICE;
		if (syscall(SYS_capset, &hdr, data) != -1)
			return 6;
	}
	return 0;
}

/* A thread started with capabilities is found by the verification. */
static int
child_thread_with_caps(void *arg)
{
	struct sandbox_opts o = { .seccomp = false, .chroot_dir = NULL };
	char err[256];
	pthread_t t;

	/* go stays 0 in this child: the thread only waits */
	if (pthread_create(&t, NULL, thread_packet_socket, NULL) != 0)
		return 1;
	if (sandbox_enter(&o, err, sizeof(err)) == 0)
		return 2;
	if (strstr(err, "still holds capabilities") == NULL)
		return 3;
	return 0;
}

/* chroot: the directory becomes "/". */
static int
child_chroot(void *arg)
{
	struct sandbox_opts o = { .seccomp = false, .chroot_dir = arg };
	char err[256], cwd[64];
	struct stat sb;

	if (sandbox_chroot(&o, err, sizeof(err)) == -1)
		return 1;
	if (stat("/inside", &sb) == -1 || getcwd(cwd, sizeof(cwd)) == NULL ||
	    strcmp(cwd, "/") != 0)
		return 2;
	if (stat("/etc/passwd", &sb) == 0)
		return 3;
	return 0;
}

static void
test_forbidden_socket_family_kills(void **state)
{
	assert_killed_by_sigsys(run_child(child_socket_packet, NULL));
}

static void
test_execve_kills(void **state)
{
	assert_killed_by_sigsys(run_child(child_execve, NULL));
}

static void
test_unshare_kills(void **state)
{
	assert_killed_by_sigsys(run_child(child_unshare, NULL));
}

static void
test_new_process_kills(void **state)
{
	if (TEST_SANITIZER)
		skip();	/* LeakSanitizer's tracer needs clone: allowed there */
	assert_killed_by_sigsys(run_child(child_fork, NULL));
}

static void
test_other_ioctl_kills(void **state)
{
	assert_killed_by_sigsys(run_child(child_ioctl_other, NULL));
}

static void
test_filter_covers_existing_threads(void **state)
{
	assert_killed_by_sigsys(run_child(child_late_thread_forbidden, NULL));
}

static void
test_allowed_calls_work(void **state)
{
	char dir[] = "/tmp/fosr-sandbox-XXXXXX";
	int status;

	assert_non_null(mkdtemp(dir));
	status = run_child(child_allowed_work, dir);
	rmdir(dir);
	if (WIFSIGNALED(status))
		fail_msg("allowed work killed by signal %d", WTERMSIG(status));
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void
test_caps_cleared(void **state)
{
	int status = run_child(child_caps_cleared, NULL);

	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void
test_thread_with_caps_detected(void **state)
{
	struct sandbox_state st;
	int status;

	assert_int_equal(sandbox_state_read(0, &st), 0);
	if (st.cap_eff == 0)
		skip();	/* nothing to hold: needs capabilities to start with */
	status = run_child(child_thread_with_caps, NULL);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void
test_chroot(void **state)
{
	char dir[] = "/tmp/fosr-chroot-XXXXXX", file[64];
	int fd, status;

	if (geteuid() != 0)
		skip();
	assert_non_null(mkdtemp(dir));
	snprintf(file, sizeof(file), "%s/inside", dir);
	assert_true((fd = open(file, O_WRONLY | O_CREAT, 0600)) != -1);
	close(fd);
	status = run_child(child_chroot, dir);
	unlink(file);
	rmdir(dir);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void
test_chroot_options(void **state)
{
	struct sandbox_opts o = { .seccomp = true, .chroot_dir = NULL };
	char err[256] = "";

	assert_int_equal(sandbox_chroot(&o, err, sizeof(err)), 0);
	o.chroot_dir = "";
	assert_int_equal(sandbox_chroot(&o, err, sizeof(err)), 0);
	o.chroot_dir = "relative/dir";
	assert_int_equal(sandbox_chroot(&o, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "absolute"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forbidden_socket_family_kills),
		cmocka_unit_test(test_execve_kills),
		cmocka_unit_test(test_unshare_kills),
		cmocka_unit_test(test_new_process_kills),
		cmocka_unit_test(test_other_ioctl_kills),
		cmocka_unit_test(test_filter_covers_existing_threads),
		cmocka_unit_test(test_allowed_calls_work),
		cmocka_unit_test(test_caps_cleared),
		cmocka_unit_test(test_thread_with_caps_detected),
		cmocka_unit_test(test_chroot),
		cmocka_unit_test(test_chroot_options),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
