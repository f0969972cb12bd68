/*
 * A session's (or a reception record's) facts turned into a rules decision,
 * at any stage: EHLO/HELO, AUTH and RSET on the loop (the session's stage
 * hook, through relay_stage_cb), DATA on a complete message (the relay's
 * worker before the commit or after it, the console's verify).  The one
 * place that fills struct rules_facts, lists the honeypot's own addresses
 * for a capture and logs fosr.rule.match.  Knows nothing of relaying.
 */
#ifndef FOSR_PROBE_H
#define FOSR_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "rules.h"
#include "smtp_session.h"

struct record;

/* The own addresses of one capture: relay.own_addresses, then its dst_ip. */
#define PROBE_OWN_MAX	(CFG_RELAY_LIST_MAX + 1)

/*
 * Fill buf with the honeypot's own addresses for a capture that reached
 * dst_ip (NULL or "": none) and point own[] at them; returns how many.
 */
int		 probe_own(const struct cfg *, const char *dst_ip, char (*buf)[64],
		    const char **own);

/* The rules stage of a session stage. */
enum rules_stage probe_stage(enum smtp_stage);

/* Whether the rules have any enabled rule at this stage, with relaying not off (rules NULL: no). */
bool		 probe_stage_wanted(const struct cfg *, const struct rules *, enum smtp_stage);

/*
 * Decide a session's stage now (EHLO/AUTH/RSET): 0 with res filled (a match
 * is logged as fosr.rule.match), -1 when there is no decision (no rule at
 * the stage, or the evaluation failed: logged).
 */
int		 probe_stage_decide(const struct cfg *, const struct rules *,
		    const struct smtp_stage_req *, struct smtp_stage_result *);

/*
 * Run the rules on a record's facts at stage st (own addresses given; msg
 * may be NULL, size is the whole message's).  rules_eval's return.
 */
int		 probe_decide(const struct rules *, const struct record *, enum rules_stage st,
		    const char *const *own, int nown, const unsigned char *msg, size_t msglen,
		    uint64_t size, struct rules_decision *);

/* A decision as the session's stage result (record member not set). */
void		 probe_result_fill(struct smtp_stage_result *, const struct rules_decision *);

/* fosr.rule.match (and its log line) for a decision on a record; source: "daemon", "console". */
void		 probe_rule_event(const struct record *, enum rules_stage,
		    const struct rules_decision *, const char *source);

/* A record holding the facts of a session's DATA request; NULL when out of memory. */
struct record	*probe_record(const struct smtp_stage_req *);

#endif
