/*
 * Probe rules: a safe, declarative rule language (YAML, no eval, no code in
 * data) that classifies a capture as a relay probe or not.  Pure and
 * thread-safe once loaded: rules_eval() may run on a worker thread (MIME
 * decoding of a large mail must not run on the event loop).  Never logs.
 */
#ifndef FOSR_RULES_H
#define FOSR_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum rules_stage { RULES_STAGE_EHLO, RULES_STAGE_AUTH, RULES_STAGE_RSET, RULES_STAGE_DATA };

/*
 * Own addresses a rule looks for (own_addrs beyond are ignored): every one the
 * relay's configuration can list, plus the address a capture came in on.
 */
#define RULES_OWN_MAX		65

/* What a rule may look at.  All pointers are borrowed for the call. */
struct rules_facts {
	enum rules_stage	 stage;
	const char		*helo;
	const char		*auth_user;		/* NULL: no AUTH */
	const char		*auth_pass;
	const char		*mail_from;
	const char *const	*rcpt;
	int			 nrcpt;
	const char		*src_ip;
	const char		*dst_ip;		/* the local address the client reached */
	int			 dst_port;
	bool			 tls;
	uint64_t		 size;
	const unsigned char	*msg;			/* raw message (DATA stage), may be NULL */
	size_t			 msglen;
	const char *const	*own_addrs;		/* the honeypot's public addresses (RULES_OWN_MAX) */
	int			 nown;
};

struct rules_decision {
	char		 rule[64];		/* matching rule's name; "" = no rule matched */
	bool		 matched;
	bool		 relay;
	bool		 publish;		/* default true */
	int		 reply_code;		/* 0 = no reply override */
	char		 reply_text[256];	/* e.g. "4.7.1 Try again later" */
	char		 tag[64];
	char		*evidence;		/* JSON array (malloc'd), caller frees; may be NULL */
};

struct rules;

/* Load a rules file.  NULL with err = "FILE:LINE: KEY: what is wrong". */
struct rules	*rules_load(const char *path, char *err, size_t errlen);
struct rules	*rules_load_buf(const char *name, const char *buf, size_t len,
		    char *err, size_t errlen);
void		 rules_free(struct rules *);

/* Evaluate the enabled rules of f->stage in priority order; first match wins. */
int		 rules_eval(const struct rules *, const struct rules_facts *f,
		    struct rules_decision *out);
void		 rules_decision_clear(struct rules_decision *);

/* Number of rules in a set; whether any enabled rule is at stage st. */
int		 rules_count(const struct rules *);
bool		 rules_has_stage(const struct rules *, enum rules_stage st);
/* "ehlo", "auth", "rset" or "data". */
const char	*rules_stage_name(enum rules_stage st);

#endif
