/*
 * Durable relay caps.  Every relay reservation is one JSON line appended to
 * <dir>/<name>.log and fsync'ed before the send it allows may start; the file
 * is read back at open, so a restart (or a kill -9) never resets a count.
 *
 * Decisions are made in memory, on one thread (the event loop):
 * relay_caps_check() and relay_caps_reserve() are called back to back, so two
 * concurrent probes cannot both take the last slot.  relay_caps_persist()
 * does the write and fsync and may run on a worker thread; a reservation
 * whose write fails stays counted (the cap errs on the safe side) and the
 * caller must not send.
 *
 * A writer holds an exclusive lock (flock) on the file for its lifetime:
 * the daemon and the -i console cannot both count at once.
 *
 * Recipients are counted by their canonical form (addr_key(), addr.h), which
 * is also what the journal records.  At a writable open, a torn last line
 * is cut and the journal compacted: reservations older than a day (the
 * longest window) keep only their sha256.
 */
#ifndef FOSR_RELAY_CAPS_H
#define FOSR_RELAY_CAPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config.h"
#include "util.h"

#define RELAY_CAPS_HOUR		3600
#define RELAY_CAPS_DAY		86400

struct relay_caps;

/* What one relay would consume. */
struct relay_caps_req {
	const char		*sha256;	/* content id */
	const char		*client_ip;
	const char *const	*rcpt;		/* recipient addresses */
	int			 nrcpt;
	uint64_t		 size;
};

/* Current use of each cap touched by a request (before it is counted). */
struct relay_caps_usage {
	int	 day, hour, client_ip;
	int	 client_network;	/* of the client's /24 or /64 (network) */
	char	 network[UTIL_NET_SCOPE_MAX];	/* "" when client_ip is no address */
	int	 recipient, domain;	/* the most used recipient / domain of req */
	bool	 seen_sha256;
};

/*
 * Open (create) <dir>/<name>.log and load it.  readonly: no creation, no
 * lock, a missing file is empty (for the console's "verify").  A torn last
 * line is cut off (its send never started: the write comes first).  A whole
 * line that does not parse does not fail the open: it turns relaying off
 * (relay_caps_broken()) and is logged.  NULL with err filled on failure,
 * including "locked by another process".
 */
struct relay_caps *relay_caps_open(const char *dir, const char *name,
		    const struct cfg_relay_caps *limits, bool readonly,
		    char *err, size_t errlen);
void		 relay_caps_free(struct relay_caps *);

/*
 * Whether req may be relayed at now: 0 yes; -1 no, with why naming the cap
 * ("per_day: 20 of 20 used", "per_client_network: 5 of 5 used
 * (192.0.2.0/24)": one client network's share of the day, its /24 or /64,
 * counted from the journal's src_ip, so a restart keeps it).  Size and
 * recipient count are checked too.
 */
int		 relay_caps_check(const struct relay_caps *, const struct relay_caps_req *,
		    time_t now, char *why, size_t whylen);

void		 relay_caps_usage(const struct relay_caps *, const struct relay_caps_req *,
		    time_t now, struct relay_caps_usage *out);

/*
 * Count req in memory at once (no I/O) and return the journal line to make
 * durable (malloc'ed, newline included; the caller frees it).  source is
 * "daemon" or "console".  The caller checked first.  0, or -1 out of memory
 * or a recipient without a canonical form (then nothing was counted).
 */
int		 relay_caps_reserve(struct relay_caps *, const struct relay_caps_req *,
		    time_t now, const char *source, char **line, size_t *len);

/*
 * Append line (one whole line) and fsync it.  0, or -1 with err filled: the
 * caller must not send.  A failed write is cut back.  Any thread, one at a time.
 */
int		 relay_caps_persist(struct relay_caps *, const char *line, size_t len,
		    char *err, size_t errlen);

/* Reservations counted in the last day (for logs and tests). */
int		 relay_caps_count_day(const struct relay_caps *, time_t now);

/*
 * Whether addr matches the never-relay list: "local@" matches that local
 * part at any domain (and alone: Postfix takes "postmaster"), "user@domain"
 * the address, "domain" or "@domain" the domain and its subdomains.  Both
 * sides are compared in canonical form (addr.h: "abuse"@x, ab\use@X. are
 * abuse@x), ASCII case ignored.  An address without a canonical form
 * matches.  On a match, *which points at the entry.
 */
bool		 relay_caps_never_relay(const char (*list)[CFG_RELAY_ENTRY_MAX], int n,
		    const char *addr, const char **which);

/* Whether domain or a parent is in a domain list (canonical forms, as above). */
bool		 relay_domain_in_list(const char (*list)[CFG_RELAY_ENTRY_MAX], int n,
		    const char *domain, const char **which);

/*
 * Why relaying is off, or NULL: a whole journal line that could not be read
 * at open (logged with the file and line).  relay_caps_check() then refuses
 * everything until an operator repairs the line and restarts.
 */
const char	*relay_caps_broken(const struct relay_caps *);

/* The domain part of addr (after the last '@'), or "" */
const char	*relay_addr_domain(const char *addr);

#endif
