/*
 * Internals of the rules modules: the loaded form of a rule set, which
 * rules_load.c builds from YAML and rules.c evaluates.  Not for other modules
 * (they use rules.h).
 */
#ifndef FOSR_RULES_INT_H
#define FOSR_RULES_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "mime.h"
#include "rules.h"

#define RULES_MAX		1024
#define RULES_VALUE_MAX		1024	/* one equals/contains value */
#define RULES_VALUES_MAX	256	/* values in one equals/contains list */
#define RULES_REGEX_MAX		1024	/* pattern length */
#define RULES_LIST_MAX		64	/* conditions, tests, CIDRs per list */
#define RULES_WHAT_MAX		200	/* evidence "what" bytes */
#define RULES_EV_MAX		32	/* evidence items per condition */
#define RULES_PRIO_MAX		1000000
#define RE_MATCH_LIMIT		100000
#define RE_DEPTH_LIMIT		10000
#define RE_HEAP_LIMIT		16384		/* KiB */
#define RE_CALLOUTS_MATCH	1000000ul	/* one pcre2_match() call */
#define RE_CALLOUTS_EVAL	8000000ul	/* one rules_eval() call */

enum mkind {
	MK_HEADER, MK_SUBJECT, MK_BODY, MK_MAIL_FROM, MK_RCPT, MK_RCPT_COUNT,
	MK_HELO, MK_AUTH_USER, MK_AUTH_PASS, MK_CLIENT, MK_SIZE, MK_TLS,
	MK_MENTIONS, MK_COUNT
};
/* Matchers that need the message: DATA stage only. */
#define MK_MSG_MASK	((1u << MK_HEADER) | (1u << MK_SUBJECT) | \
			 (1u << MK_BODY) | (1u << MK_SIZE) | (1u << MK_MENTIONS))
/* Matchers that need a transaction: DATA or RSET. */
#define MK_TXN_MASK	((1u << MK_MAIL_FROM) | (1u << MK_RCPT) | \
			 (1u << MK_RCPT_COUNT))

enum sop { SOP_EXISTS, SOP_EQUALS, SOP_CONTAINS, SOP_REGEX };

/* One string test: an operator over a value list or a regex. */
struct strtest {
	enum sop	 op;
	bool		 nocase;
	bool		 neg;
	char		 hname[MIME_NAME_MAX];	/* header matcher only */
	char		**vals;			/* lower-cased when nocase */
	size_t		*lens;
	int		 nvals;
	pcre2_code	*re;
};

enum nop { NOP_LT, NOP_LE, NOP_GT, NOP_GE, NOP_EQ, NOP_COUNT };

struct cidr {
	int		 af;
	unsigned char	 a[16];
	int		 bits;
};

/*
 * Where mentions_own_address looks: the Subject, the body text, one header
 * field by name (a trailing '*': any field whose name starts so), or every
 * header field but the trace and identification ones (trace_fields).
 */
enum pkind { PL_SUBJECT, PL_BODY, PL_HEADERS, PL_HEADER };

struct place {
	enum pkind	 kind;
	bool		 prefix;		/* PL_HEADER: name* */
	char		 name[MIME_NAME_MAX];	/* PL_HEADER, without the '*' */
	size_t		 namelen;
};

struct matcher {
	enum mkind	 kind;
	struct strtest	*st;		/* string kinds: all must hold */
	int		 nst;
	unsigned	 nhas;		/* numeric: bit per enum nop */
	uint64_t	 nv[NOP_COUNT];
	struct cidr	*cidrs;		/* client: any may hold */
	int		 ncidrs;
	bool		 b;		/* tls, mentions_own_address */
	struct place	*places;	/* mentions_own_address; NULL: the default */
	int		 nplaces;
};

struct cond {
	struct matcher	*m;
	int		 nm;
};

struct rule {
	char		 name[64];
	int		 prio;
	int		 order;
	bool		 enabled;
	enum rules_stage stage;
	struct cond	*c;
	int		 nc;
	bool		 relay;
	bool		 publish;
	int		 reply_code;
	char		 reply_text[256];
	char		 tag[64];
};

struct rules {
	struct rule	*r;
	int		 n;
};

/* The matchers' names, as the rules file and the evidence spell them. */
extern const char *const rules_mkind_names[MK_COUNT];

#endif
