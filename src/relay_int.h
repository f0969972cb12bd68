/*
 * The relay's insides, shared by relay.c (decisions, caps, the worker, the
 * session's DATA hook) and relay_send.c (the outbound copy: routing, MX and
 * address choice, SMTP attempts).  Not for other modules: see relay.h.
 */
#ifndef FOSR_RELAY_INT_H
#define FOSR_RELAY_INT_H

#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "dns.h"
#include "log.h"
#include "persona.h"
#include "probe.h"
#include "relay.h"
#include "relay_caps.h"
#include "relay_dest.h"
#include "rules.h"
#include "smtp_client.h"

#define RELAY_ATTEMPTS_MAX	10	/* connections per recipient */
#define RELAY_IFADDR_MAX	64	/* interface addresses kept as our own */

enum relay_work { RW_EVAL, RW_PERSIST, RW_RECORD };

/* Refcounted rules: a job keeps the rules it started with across a reload. */
struct relay_rules_ref {
	struct rules	*rules;
	int		 refs;
};

struct relay_job {
	struct relay		*r;
	struct relay_job	*qnext;		/* worker or done queue */
	struct relay_job	*lnext, *lprev;	/* all live jobs */
	enum relay_work		 work;
	const char		*source;	/* "daemon" or "console" */
	bool			 live;		/* send for real (else dry-run) */
	relay_done_cb		 done_cb;
	void			*done_arg;

	/* A DATA stage request of a session (before its commit); see relay_data_cb. */
	bool			 pre;
	char			*msg_path;
	smtp_stage_done_cb	 pre_done;	/* NULL once cancelled */
	void			*pre_arg;
	bool			 have_dec;	/* dec came with the reception record */

	struct record	*rec;
	struct relay_rules_ref	*rules;
	char			 own[PROBE_OWN_MAX][64];
	int			 nown;
	unsigned char		*msg;
	size_t			 msglen;
	int			 eval_rc;
	struct rules_decision	 dec;
	char			 err[512];

	char			*caps_line;
	size_t			 caps_len;
	int			 io_rc;
	char			*record_json;	/* RW_RECORD */
	size_t			 record_len;

	/* delivery */
	char			 qid[16];
	int			 rcpt_idx;
	const char		*target_rcpt;
	char			 host[DNS_HOST_MAX];
	int			 port;
	bool			 ipv4_only;
	bool			 named;		/* smarthost or test server: the operator's */
	struct dns_mx		 mx[DNS_MX_MAX];
	int			 nmx, mx_idx;
	struct dns_addr		 addr[DNS_ADDR_MAX];
	int			 naddr, addr_idx;
	int			 attempts;
	char			*received;
	size_t			 receivedlen;
	struct smtp_client	*client;
	bool			 delivered_all, any_failed;
	struct jbuf		 outcome;	/* JSON array of attempts */
	char			 summary[512];
};

struct relay {
	struct event_base	*base;
	const struct cfg	*cfg;
	const char		*hostname;
	const struct persona	*persona;	/* the Received header templates (record.h) */
	char			 rules_path[PATH_MAX];
	struct relay_rules_ref	*rules;
	struct relay_caps	*caps_live, *caps_dry;
	struct dns		*dns;
	SSL_CTX			*ssl_ctx;
	bool			 test_mode;
	struct rdest_net	 allow[CFG_RELAY_LIST_MAX];	/* relay.allow_destinations */
	int			 nallow;
	struct sockaddr_storage	 ifaddr[RELAY_IFADDR_MAX];	/* this host's addresses */
	int			 nifaddr;
	char			 dir[PATH_MAX + 16];	/* <spool>/relay */
	relay_deliver_hook	 hook;
	void			*hook_arg;

	pthread_t		 worker;
	bool			 worker_started;
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;
	bool			 stop;
	struct relay_job	*todo_head, *todo_tail;
	struct relay_job	*done_head, *done_tail;
	struct event		*done_ev;
	struct relay_job	*jobs;
	int			 njobs;
};

/* relay.c: start an event with the capture's connection facts. */
void		 relay_event_begin(struct relay_job *, struct jbuf *, const char *id);
/* relay.c: the job is over (status "delivered", "failed"...): result event, outcome record, free. */
void		 relay_finish(struct relay_job *, const char *status, const char *why);
/* relay_send.c: deliver to the next recipient, or finish. */
void		 relay_next_rcpt(struct relay_job *);

#endif
