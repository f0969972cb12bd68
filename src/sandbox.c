/*
 * Least privilege: chroot, capabilities, no_new_privs and the seccomp filter
 * (default action: kill the process).  The allow list was derived from the
 * whole end-to-end suite; see the comment above sandbox_allow[].
 * Library-like: never logs, fills the caller's err.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/capability.h>
#include <linux/sockios.h>

#include <seccomp.h>

#include "sandbox.h"

/* Sanitizer runtimes (LeakSanitizer) need more than the daemon itself. */
#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_SANITIZER	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(leak_sanitizer)
#define SANDBOX_SANITIZER	1
#endif
#endif
#ifndef SANDBOX_SANITIZER
#define SANDBOX_SANITIZER	0
#endif

#define SANDBOX_CAP_MAX		63	/* highest capability number tried */

static int	 sandbox_errf(char *, size_t, const char *, ...)
		    __attribute__((format(printf, 3, 4)));
static int	 sandbox_filter(char *, size_t);
static int	 sandbox_allow_name(scmp_filter_ctx, const char *, char *, size_t);
static int	 sandbox_verify(bool, char *, size_t);
static int	 sandbox_verify_self(char *, size_t);
static uint64_t	 sandbox_hex(const char *);

/*
 * System calls the running daemon makes, unconditionally allowed.  Derived
 * empirically: the whole e2e suite ran against a build that calls
 * sandbox_enter() where main does, under `strace -f`, and every call made
 * after the filter's seccomp() was collected (release build; the ASan build
 * in part, since LeakSanitizer cannot run under a tracer).  Then the suite
 * ran without strace, filter on, in both builds: a missing call would end a
 * daemon by SIGSYS and fail its test.  Marked "(code)" are the calls the
 * suite did not show but a code path has (another variant of the same call,
 * an error path, a thread starting late).  Names unknown on the build's
 * architecture are skipped.
 */
static const char *const sandbox_allow[] = {
	/* descriptors; files under the spool, the event log, rules, /proc/self */
	"read", "readv", "pread64", "write", "writev", "pwrite64" /* (code) */,
	"close", "openat", "open" /* (code) */, "lseek" /* (code) */, "fstat",
	"newfstatat", "stat" /* (code) */, "lstat" /* (code) */, "statx" /* (code) */,
	"statfs", "fstatfs" /* (code) */, "fsync", "fdatasync", "syncfs" /* spool checkpoint */,
	"ftruncate" /* (code) */, "rename", "renameat", "renameat2" /* (code) */,
	"link", "linkat" /* (code) */, "unlink", "unlinkat" /* (code) */,
	"mkdir" /* (code) */, "mkdirat" /* (code) */, "getdents64", "access",
	"faccessat" /* (code) */, "fchmod" /* (code) */, "fcntl", "dup3",
	/* event loop and worker hand-off */
	"epoll_wait", "epoll_pwait", "epoll_ctl", "poll" /* (code) */,
	"ppoll" /* (code) */, "eventfd2" /* (code) */, "futex",
	"sched_yield" /* (code) */,
	/* sockets: socket() itself is checked below; no bind, no listen */
	"accept4", "accept" /* (code) */, "connect", "recvfrom", "sendto",
	"recvmsg", "sendmsg", "setsockopt", "getsockopt", "getsockname",
	"getpeername", "shutdown",
	/* memory */
	"mmap", "munmap", "mprotect", "brk", "madvise", "mremap" /* (code) */,
	/* time, randomness, identity */
	"clock_gettime", "clock_getres" /* (code) */, "gettimeofday",
	"time" /* (code) */, "nanosleep" /* (code) */, "clock_nanosleep" /* (code) */,
	"getrandom", "uname" /* (code) */, "getpid", "gettid", "getuid" /* (code) */,
	"geteuid" /* (code) */, "getgid" /* (code) */, "getegid" /* (code) */,
	"prlimit64" /* (code) */,
	/* signals, threads starting after the filter, exit; tgkill: abort() */
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack" /* (code) */,
	"tgkill" /* (code) */, "set_robust_list", "rseq", "restart_syscall" /* (code) */,
	"exit", "exit_group",
};

/*
 * Only for ASan/LSan builds: the leak check at exit clones a tracer that
 * ptrace-attaches every thread; the runtime reads /proc/self/maps and links.
 * A release build never allows these.
 */
static const char *const sandbox_allow_sanitizer[] = {
	"clone", "ptrace", "wait4", "waitid", "prctl", "sched_getaffinity",
	"getdents", "readlink", "readlinkat", "kill", "getppid",
};

/* Fill err; always -1. */
static int
sandbox_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* chroot into opts->chroot_dir (see sandbox.h). */
int
sandbox_chroot(const struct sandbox_opts *opts, char *err, size_t errlen)
{
	const char *dir = opts->chroot_dir;

	if (dir == NULL || dir[0] == '\0')
		return 0;
	if (dir[0] != '/')
		return sandbox_errf(err, errlen, "chroot: \"%s\" is not an absolute path", dir);
	if (chdir(dir) == -1)
		return sandbox_errf(err, errlen, "chroot: cannot enter %s: %s", dir,
		    strerror(errno));
	if (chroot(".") == -1)
		return sandbox_errf(err, errlen, "chroot: %s: %s", dir, strerror(errno));
	if (chdir("/") == -1)
		return sandbox_errf(err, errlen, "chroot: chdir / in %s: %s", dir,
		    strerror(errno));
	return 0;
}

/* Empty the bounding set when allowed to (see sandbox.h). */
int
sandbox_drop_bounding(char *err, size_t errlen)
{
	int cap;

	if (prctl(PR_CAPBSET_READ, CAP_SETPCAP, 0, 0, 0) != 1)
		return 0;
	{
		struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
		struct __user_cap_data_struct data[2];

		memset(data, 0, sizeof(data));
		if (syscall(SYS_capget, &hdr, data) == -1)
			return sandbox_errf(err, errlen, "capget: %s", strerror(errno));
		if (!(data[0].effective & (1U << CAP_SETPCAP)))
			return 0;
	}
	for (cap = 0; cap <= SANDBOX_CAP_MAX; cap++) {
		if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0)
			break;	/* EINVAL: past the kernel's last capability */
		/* CAP_SETPCAP last: it is what allows the drops */
		if (cap == CAP_SETPCAP)
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1)
			return sandbox_errf(err, errlen, "drop capability %d from the "
			    "bounding set: %s", cap, strerror(errno));
	}
	if (prctl(PR_CAPBSET_DROP, CAP_SETPCAP, 0, 0, 0) == -1)
		return sandbox_errf(err, errlen, "drop CAP_SETPCAP from the bounding set: %s",
		    strerror(errno));
	return 0;
}

/* Clear every capability of the calling thread, set no_new_privs. */
int
sandbox_drop_caps(char *err, size_t errlen)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];

	/* EINVAL: a kernel without ambient capabilities (< 4.3) has none to clear */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1 &&
	    errno != EINVAL)
		return sandbox_errf(err, errlen, "clear ambient capabilities: %s",
		    strerror(errno));
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) == -1)
		return sandbox_errf(err, errlen, "capset: %s", strerror(errno));
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		return sandbox_errf(err, errlen, "no_new_privs: %s", strerror(errno));
	return 0;
}

/* Allow one system call by name; unknown names are skipped. */
static int
sandbox_allow_name(scmp_filter_ctx ctx, const char *name, char *err, size_t errlen)
{
	int nr, r;

	if ((nr = seccomp_syscall_resolve_name(name)) == __NR_SCMP_ERROR || nr < 0)
		return 0;
	if ((r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)) < 0)
		return sandbox_errf(err, errlen, "seccomp: allow %s: %s", name, strerror(-r));
	return 0;
}

/* Build and load the filter on every thread. */
static int
sandbox_filter(char *err, size_t errlen)
{
	/* ioctl requests: pending input/output bytes, non-blocking mode */
	static const unsigned long ioctls[] = { FIONREAD, SIOCOUTQ, FIONBIO };
	/* socket families: IPv4/IPv6 outbound (broker, MX, DNS), AF_UNIX */
	static const int families[] = { AF_INET, AF_INET6, AF_UNIX };
	scmp_filter_ctx ctx;
	size_t i;
	int r;

	if ((ctx = seccomp_init(SCMP_ACT_KILL_PROCESS)) == NULL)
		return sandbox_errf(err, errlen, "seccomp: cannot set up a filter (no "
		    "seccomp in this kernel, or under valgrind?)");
	if ((r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)) < 0 ||
	    (r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1)) < 0 ||
	    (r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) < 0) {
		sandbox_errf(err, errlen, "seccomp: attributes: %s", strerror(-r));
		goto fail;
	}
	for (i = 0; i < sizeof(sandbox_allow) / sizeof(sandbox_allow[0]); i++)
		if (sandbox_allow_name(ctx, sandbox_allow[i], err, errlen) == -1)
			goto fail;
	if (SANDBOX_SANITIZER) {
		for (i = 0; i < sizeof(sandbox_allow_sanitizer) /
		    sizeof(sandbox_allow_sanitizer[0]); i++)
			if (sandbox_allow_name(ctx, sandbox_allow_sanitizer[i], err,
			    errlen) == -1)
				goto fail;
	} else {
		/* new threads only (CLONE_THREAD), never a new process */
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
		    SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
		if (r < 0) {
			sandbox_errf(err, errlen, "seccomp: clone rule: %s", strerror(-r));
			goto fail;
		}
	}
	/*
	 * clone3 passes its flags in memory a filter cannot read: ENOSYS makes
	 * glibc's pthread_create fall back to clone, which is checked above.
	 */
	if ((r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)) < 0 &&
	    r != -EDOM) {
		sandbox_errf(err, errlen, "seccomp: clone3 rule: %s", strerror(-r));
		goto fail;
	}
	for (i = 0; i < sizeof(ioctls) / sizeof(ioctls[0]); i++) {
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
		    SCMP_A1(SCMP_CMP_EQ, ioctls[i], 0));
		if (r < 0) {
			sandbox_errf(err, errlen, "seccomp: ioctl rule: %s", strerror(-r));
			goto fail;
		}
	}
	for (i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
		    SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)families[i], 0));
		if (r < 0) {
			sandbox_errf(err, errlen, "seccomp: socket rule: %s", strerror(-r));
			goto fail;
		}
	}
	if ((r = seccomp_load(ctx)) < 0) {
		sandbox_errf(err, errlen, "seccomp: load: %s", strerror(-r));
		goto fail;
	}
	seccomp_release(ctx);
	return 0;
fail:
	seccomp_release(ctx);
	return -1;
}

/* The value of a hexadecimal /proc field ("0000003fffffffff"). */
static uint64_t
sandbox_hex(const char *s)
{
	return strtoull(s, NULL, 16);
}

/* Read one thread's privileges (see sandbox.h). */
int
sandbox_state_read(int tid, struct sandbox_state *st)
{
	char path[64], line[256];
	FILE *fp;

	if (tid > 0)
		snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	else
		snprintf(path, sizeof(path), "/proc/self/status");
	memset(st, 0, sizeof(*st));
	st->no_new_privs = -1;
	st->seccomp = -1;
	if ((fp = fopen(path, "re")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), fp) != NULL) {
		char *v = strchr(line, ':');

		if (v == NULL)
			continue;
		*v++ = '\0';
		v += strspn(v, " \t");
		if (strcmp(line, "CapEff") == 0)
			st->cap_eff = sandbox_hex(v);
		else if (strcmp(line, "CapPrm") == 0)
			st->cap_prm = sandbox_hex(v);
		else if (strcmp(line, "CapInh") == 0)
			st->cap_inh = sandbox_hex(v);
		else if (strcmp(line, "CapAmb") == 0)
			st->cap_amb = sandbox_hex(v);
		else if (strcmp(line, "CapBnd") == 0)
			st->cap_bnd = sandbox_hex(v);
		else if (strcmp(line, "NoNewPrivs") == 0)
			st->no_new_privs = atoi(v);
		else if (strcmp(line, "Seccomp") == 0)
			st->seccomp = atoi(v);
	}
	fclose(fp);
	return 0;
}

/* Every thread: no capability, no_new_privs, under the filter if wanted. */
static int
sandbox_verify(bool seccomp, char *err, size_t errlen)
{
	struct sandbox_state st;
	struct dirent *de;
	DIR *d;
	int n = 0;

	if ((d = opendir("/proc/self/task")) == NULL)
		return sandbox_errf(err, errlen, "verify: /proc/self/task: %s "
		    "(is /proc mounted in the chroot?)", strerror(errno));
	while ((de = readdir(d)) != NULL) {
		int tid = atoi(de->d_name);

		if (tid <= 0)
			continue;
		if (sandbox_state_read(tid, &st) == -1) {
			if (errno == ENOENT)
				continue;	/* the thread just ended */
			closedir(d);
			return sandbox_errf(err, errlen, "verify: thread %d: %s", tid,
			    strerror(errno));
		}
		n++;
		if (st.cap_eff || st.cap_prm || st.cap_inh || st.cap_amb) {
			closedir(d);
			return sandbox_errf(err, errlen, "thread %d still holds "
			    "capabilities (eff %#llx prm %#llx amb %#llx): was it started "
			    "before sandbox_drop_caps()?", tid,
			    (unsigned long long)st.cap_eff, (unsigned long long)st.cap_prm,
			    (unsigned long long)st.cap_amb);
		}
		if (st.no_new_privs != 1 || (seccomp && st.seccomp != 2)) {
			closedir(d);
			return sandbox_errf(err, errlen, "thread %d: no_new_privs=%d "
			    "seccomp=%d after the sandbox was entered", tid,
			    st.no_new_privs, st.seccomp);
		}
	}
	closedir(d);
	if (n == 0)
		return sandbox_errf(err, errlen, "verify: no thread found in /proc/self/task");
	return 0;
}

/* The calling thread holds no capability (capget: works without /proc). */
static int
sandbox_verify_self(char *err, size_t errlen)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];

	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) == -1)
		return sandbox_errf(err, errlen, "capget: %s", strerror(errno));
	if (data[0].effective | data[1].effective | data[0].permitted |
	    data[1].permitted | data[0].inheritable | data[1].inheritable)
		return sandbox_errf(err, errlen, "capabilities left after capset");
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		return sandbox_errf(err, errlen, "no_new_privs is not set");
	return 0;
}

/* Enter the sandbox for good (see sandbox.h). */
int
sandbox_enter(const struct sandbox_opts *opts, char *err, size_t errlen)
{
	if (sandbox_drop_caps(err, errlen) == -1 || sandbox_verify_self(err, errlen) == -1)
		return -1;
	if (opts->seccomp && sandbox_filter(err, errlen) == -1)
		return -1;
	/*
	 * Every thread, from /proc.  A chroot without /proc cannot list them:
	 * the calling thread was checked above, TSYNC put the filter on all of
	 * them, and threads started after sandbox_drop_caps() inherited none.
	 */
	if (access("/proc/self/task", F_OK) == -1 && errno == ENOENT)
		return 0;
	return sandbox_verify(opts->seccomp, err, errlen);
}
