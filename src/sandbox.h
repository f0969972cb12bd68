/*
 * Least privilege after start: an optional chroot, no capability left,
 * no_new_privs, and a seccomp filter (libseccomp) that lets the running
 * daemon make only the system calls it needs; any other call kills the
 * whole process (SIGSYS).  The calls must come in this order, from main:
 *
 *   bind sockets, load TLS keys        (root or CAP_NET_BIND_SERVICE)
 *   sandbox_chroot()                   still root: needs CAP_SYS_CHROOT
 *   sandbox_drop_bounding()            still root: needs CAP_SETPCAP
 *   prepare paths, drop to the user    setgroups/setresgid/setresuid
 *   sandbox_drop_caps()                before the first thread is created
 *   event log, spool, feed, relay      threads start here
 *   sandbox_enter()                    filter on every thread, verified
 *
 * With a chroot every path used after sandbox_chroot() (spool directory,
 * maildir, event log, rules file, the feed's CA file) is resolved inside it.
 * What libraries would load lazily is loaded before it: charsets_pin()
 * (glibc's gconv modules), relay_prepare() and the client lookup's resolver
 * (c-ares: /etc/resolv.conf, /dev/urandom; the relay's CA bundle), libmagic.
 */
#ifndef FOSR_SANDBOX_H
#define FOSR_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The "sandbox:" section of the main configuration. */
struct sandbox_opts {
	bool		 seccomp;	/* install the syscall filter (default true) */
	const char	*chroot_dir;	/* NULL or "" = no chroot (the default) */
};

/* What is left of the process's privileges, read from /proc/self/status. */
struct sandbox_state {
	uint64_t	 cap_eff, cap_prm, cap_inh, cap_amb, cap_bnd;
	int		 no_new_privs;	/* 1 when set */
	int		 seccomp;	/* 0 none, 1 strict, 2 filter */
};

/*
 * chdir into opts->chroot_dir, chroot there, chdir("/").  A no-op returning 0
 * when no chroot is configured.  Needs root (CAP_SYS_CHROOT), so it must run
 * before the privilege drop.  Returns 0 or -1 with err filled.
 */
int	sandbox_chroot(const struct sandbox_opts *opts, char *err, size_t errlen);

/*
 * Empty the capability bounding set while CAP_SETPCAP is still effective (as
 * root, before the privilege drop).  Without CAP_SETPCAP it changes nothing
 * and returns 0: under systemd, CapabilityBoundingSet= already limits it.
 * The permitted and effective sets are untouched, so setresuid() still works
 * afterwards.  Returns 0 or -1 with err filled.
 */
int	sandbox_drop_bounding(char *err, size_t errlen);

/*
 * Clear the ambient, inheritable, permitted and effective capabilities of the
 * calling thread and set no_new_privs.  Capabilities belong to each thread,
 * and a new thread copies its creator's: call this after the privilege drop
 * and before any thread is started.  Returns 0 or -1 with err filled.
 */
int	sandbox_drop_caps(char *err, size_t errlen);

/*
 * The last step, once every socket, file, key and thread exists: clear the
 * calling thread's capabilities again, set no_new_privs, install the seccomp
 * filter on all threads at once (TSYNC) when opts->seccomp, then verify from
 * /proc/self/task/ that no thread holds a capability and that each is under
 * the filter.  Returns 0 or -1 with err filled; on -1 the daemon must not go
 * on (a half-applied sandbox is a broken invariant).
 */
int	sandbox_enter(const struct sandbox_opts *opts, char *err, size_t errlen);

/*
 * Read the privileges of a thread of this process (tid 0 = the process) from
 * /proc/self/task/<tid>/status.  Returns 0 or -1 (errno set).
 */
int	sandbox_state_read(int tid, struct sandbox_state *st);

#endif
