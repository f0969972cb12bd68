/*
 * Probe rules (see rules.h).  The file is YAML read with libyaml's document
 * API and walked against a fixed schema: every error names the file, the line
 * and the dotted key, and unknown keys are errors.  A loaded rule set is
 * read-only; rules_eval() keeps all its state on the caller's stack, so any
 * number of threads may evaluate one set at once.
 *
 * Bounds on hostile mail: MIME decoding is capped by mime.c; the address
 * search looks at the decoded text only (at most RULES_SCAN_MAX bytes of
 * each); every regex runs with PCRE2's match, depth and heap limits plus an
 * automatic-callout budget that is global to the match (PCRE2's match limit is
 * reset at each start position, so alone it does not bound a long subject).
 * A regex that runs out of budget does not match.
 */
#include <sys/stat.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <yaml.h>

#include "log.h"
#include "mime.h"
#include "rules.h"
#include "util.h"
#include "yaml_util.h"

#define RULES_MAX		1024
#define RULES_VALUE_MAX		1024	/* one equals/contains value */
#define RULES_VALUES_MAX	256	/* values in one equals/contains list */
#define RULES_REGEX_MAX		1024	/* pattern length */
#define RULES_LIST_MAX		64	/* conditions, tests, CIDRs per list */
#define RULES_SCAN_MAX		(1024u * 1024)	/* text searched for an address */
#define RULES_WHAT_MAX		200	/* evidence "what" bytes */
#define RULES_OWN_MAX		32	/* own addresses looked for */
#define RULES_EV_MAX		32	/* evidence items per condition */
#define RULES_PRIO_MAX		1000000
#define RE_MATCH_LIMIT		100000
#define RE_DEPTH_LIMIT		10000
#define RE_HEAP_LIMIT		16384		/* KiB */
#define RE_CALLOUTS_MATCH	1000000ul	/* one pcre2_match() call */
#define RE_CALLOUTS_EVAL	8000000ul	/* one rules_eval() call */
#define B64_MIN			12	/* base64 of "1.2.3.4" */

enum mkind {
	MK_HEADER, MK_SUBJECT, MK_BODY, MK_MAIL_FROM, MK_RCPT, MK_RCPT_COUNT,
	MK_HELO, MK_AUTH_USER, MK_AUTH_PASS, MK_CLIENT, MK_SIZE, MK_TLS,
	MK_MENTIONS, MK_COUNT
};
static const char *const mkind_names[MK_COUNT] = {
	"header", "subject", "body", "mail_from", "rcpt", "rcpt_count",
	"helo", "auth_user", "auth_pass", "client", "size", "tls",
	"mentions_own_address",
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
static const char *const nop_names[NOP_COUNT] = { "lt", "le", "gt", "ge", "eq" };

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

/* One piece of evidence. */
struct ev_item {
	const char	*matcher;
	char		 where[MIME_NAME_MAX + 16];
	char		 what[RULES_WHAT_MAX + 1];
	size_t		 whatlen;
};

struct own_addr {
	int		 af;
	unsigned char	 a[16];
};

/* Evaluation state, on rules_eval()'s stack. */
struct ectx {
	const struct rules_facts *f;
	bool			 mime_tried;
	struct mime_msg		 mm;
	char			*body_lc;
	bool			 body_lc_tried;
	struct own_addr		 own[RULES_OWN_MAX + 1];
	int			 nown;
	uint32_t		 own4[RULES_OWN_MAX + 1];	/* the IPv4 ones */
	int			 nown4;
	bool			 own_v6;
	pcre2_match_context	*mctx;
	pcre2_match_data	*md;
	unsigned long		 re_left;	/* this eval */
	unsigned long		 re_match_left;	/* this match */
	int			 nev;
	struct ev_item		 ev[RULES_EV_MAX];	/* last: not cleared */
};

/* Where an address was found. */
struct hit {
	char		 what[RULES_WHAT_MAX + 1];
	size_t		 whatlen;
};

static int	 values_parse(struct yu_ctx *, yaml_node_t *, const char *,
		    struct strtest *);
static int	 strtest_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 strtest_parse(struct yu_ctx *, yaml_node_t *, const char *,
		    bool, struct strtest *);
static int	 regex_compile(struct yu_ctx *, yaml_node_t *, const char *,
		    struct strtest *);
static int	 cidr_parse(const char *, struct cidr *);
static int	 num_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 matcher_parse(struct yu_ctx *, int, const char *, yaml_node_t *,
		    struct matcher *);
static int	 place_parse(struct yu_ctx *, yaml_node_t *, const char *,
		    struct place *);
static int	 mo_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static bool	 name_match(const char *, size_t, bool, const char *);
static bool	 trace_field(const char *);
static bool	 trace_line(const char *, size_t);
static size_t	 line_quote(const char *, size_t, int *, size_t *);
static bool	 scan_lines(struct ectx *, const char *, size_t, bool,
		    struct hit *);
static bool	 hex_glue(unsigned char);
static bool	 scan_hex8(struct ectx *, const char *, size_t, struct hit *);
static void	 cond_order(struct cond *);
static int	 cond_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 reply_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 actions_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 rule_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 rule_parse(struct yu_ctx *, yaml_node_t *, const char *,
		    struct rule *);
static int	 top_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 rule_cmp(const void *, const void *);
static void	 strtest_free(struct strtest *);
static void	 ev_add(struct ectx *, const char *, const char *, const char *,
		    const void *, size_t);
static void	 what_set(char *, size_t *, const void *, size_t);
static int	 re_callout_cb(pcre2_callout_block *, void *);
static bool	 str_test(struct ectx *, const struct strtest *, const char *,
		    size_t, const char *, char *, size_t *);
static const struct mime_msg *ectx_mime(struct ectx *);
static bool	 m_string(struct ectx *, const struct matcher *);
static bool	 m_numeric(struct ectx *, const struct matcher *);
static bool	 m_client(struct ectx *, const struct matcher *);
static bool	 m_mentions(struct ectx *, const struct matcher *);
static bool	 matcher_eval(struct ectx *, const struct matcher *);
static void	 own_collect(struct ectx *);
static void	 own_add(struct ectx *, const char *);
static bool	 v4_token(const char *, size_t, uint32_t *);
static bool	 v4_url_number(const char *, size_t);
static bool	 v4_part(const char *, size_t, int, int, uint64_t *);
static char	*lc_dup(const char *, size_t);
static int	 addr_parse(const char *, struct own_addr *);
static void	 hit_set(struct hit *, const char *, size_t, size_t,
		    const char *, size_t);
static bool	 scan_text(struct ectx *, const char *, size_t, bool,
		    struct hit *);
static size_t	 digit_find(const char *, size_t, size_t);
static bool	 scan_v4(struct ectx *, const char *, size_t, struct hit *);
static bool	 scan_v6(struct ectx *, const char *, size_t, struct hit *);
static unsigned	 b64_align(unsigned, size_t);
static bool	 scan_b64(struct ectx *, const char *, size_t, struct hit *);

static const char *const stage_names[] = { "ehlo", "auth", "rset", "data" };

/* Byte classes of the address search (ASCII only; bytes >= 0x80 are none). */
#define SC_TOK		0x01	/* IPv4 token: letter, digit, '.' */
#define SC_ALNUM	0x02	/* letter or digit */
#define SC_V6		0x04	/* IPv6 run: hex digit, ':', '.' */
#define SC_B64		0x08	/* base64 alphabet: letter, digit, '+', '/' */
#define SC_NL		0x10	/* '\r' or '\n' */
#define SC_DIGIT	0x20	/* decimal digit */

static const unsigned char sc_tab[256] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x10, 0x00, 0x00, 0x10, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x05, 0x08,
	0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f,
	0x2f, 0x2f, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0b,
	0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
	0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
	0x0b, 0x0b, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0b,
	0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
	0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
	0x0b, 0x0b, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00,
};
#define SC(c)	(sc_tab[(unsigned char)(c)])

/*
 * For the base64 search: the roles a character of the alphabet can play in a
 * pair of adjacent characters that decodes (at some alignment) to a byte in
 * '0'..':'.  Low nibble: as the first character, value a; high nibble: as the
 * second, value b; a pair (a, b) is such a pair exactly when the two nibbles
 * share a bit.  Bit 0: a is 12 or 13 (a << 2 | b >> 4, any b); bit 1: a is
 * 14 and b < 48 (same byte); bit 2: a & 15 is 3 and b < 44 ((a & 15) << 4 |
 * b >> 2); bit 3: a & 3 is 0 and b is 48..58 ((a & 3) << 6 | b).  Every
 * alphabet character has bit 4 set, every other byte is 0.
 */
static const unsigned char b64_pair[256] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x10,
	0x98, 0x90, 0x90, 0x90, 0x98, 0x90, 0x90, 0x10,
	0x18, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x78, 0x70, 0x70, 0x74, 0x78, 0x70, 0x70,
	0x70, 0x78, 0x70, 0x70, 0x70, 0x79, 0x71, 0x72,
	0x70, 0x78, 0x70, 0x70, 0x74, 0x78, 0x70, 0x70,
	0x70, 0x78, 0x70, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x70, 0x70, 0x78, 0x70, 0x70, 0x70, 0x78,
	0x70, 0x70, 0x74, 0x78, 0x70, 0x70, 0x70, 0x78,
	0x70, 0x70, 0x70, 0x38, 0x30, 0x30, 0x30, 0x98,
	0x90, 0x90, 0x94, 0x00, 0x00, 0x00, 0x00, 0x00,
};

enum top_key { TK_RULES, TK_COUNT };
static const char *const top_keys[TK_COUNT] = { "rules" };

enum rule_key { RK_NAME, RK_PRIORITY, RK_ENABLED, RK_STAGE, RK_CONDITIONS,
	RK_ACTIONS, RK_COUNT };
static const char *const rule_keys[RK_COUNT] = {
	"name", "priority", "enabled", "stage", "conditions", "actions",
};
#define RULE_REQUIRED	((1u << RK_NAME) | (1u << RK_STAGE) | \
			 (1u << RK_CONDITIONS))

enum act_key { AK_RELAY, AK_REPLY, AK_TAG, AK_PUBLISH, AK_COUNT };
static const char *const act_keys[AK_COUNT] = {
	"relay", "reply", "tag", "publish",
};

enum reply_key { PK_CODE, PK_TEXT, PK_COUNT };
static const char *const reply_keys[PK_COUNT] = { "code", "text" };

enum st_key { SK_EQUALS, SK_CONTAINS, SK_REGEX, SK_NOCASE, SK_NOT, SK_NAME,
	SK_COUNT };
static const char *const st_keys[SK_COUNT] = {
	"equals", "contains", "regex", "nocase", "not", "name",
};

enum mo_key { MO_IN, MO_NOT, MO_COUNT };
static const char *const mo_keys[MO_COUNT] = { "in", "not" };

/* mentions_own_address: true searches these, in this order. */
static const struct place place_default[] = {
	{ .kind = PL_SUBJECT }, { .kind = PL_HEADERS }, { .kind = PL_BODY },
};

/*
 * Header fields that mail software writes about a message's transport and
 * identity, not the sender about its content: trace fields (RFC 5321 4.4,
 * RFC 5322 3.6.6-7) and their non-standard kin (the client address webmail
 * and proxies add, delivery stamps), identification fields (RFC 5322 3.6.4),
 * authentication results and signatures (RFC 8601, 6376, 8617, 7208) and the
 * stamps of mail services and filters.  Botnets forge them naming the very
 * server they send to, and a forwarded or bounced mail carries them: they
 * say nothing of a sender testing us, so mentions_own_address: true and the
 * place "headers" skip them.  A trailing '*' makes a name a prefix.
 */
static const char *const trace_fields[] = {
	/* trace */
	"Received", "Return-Path", "Resent-*", "X-Received", "Delivered-To",
	"X-Delivered-To", "Envelope-To", "X-Envelope-*", "X-Original-To",
	"X-Originating-*", "X-Forwarded-*", "X-Real-IP", "X-Client-IP",
	"X-Sender-IP", "X-Source-IP", "X-Remote-IP", "X-Remote-Addr",
	"X-Source", "X-Source-*", "X-AntiAbuse", "X-Authenticated-Sender",
	/* identification */
	"Message-ID", "In-Reply-To", "References", "Content-ID",
	/* authentication */
	"Authentication-Results", "ARC-*", "DKIM-Signature",
	"DomainKey-Signature", "Received-SPF",
	/* services and filters */
	"X-Google-*", "X-Gm-*", "X-MS-*", "X-Microsoft-*", "X-Forefront-*",
	"X-Spam-*", "X-Virus-*", "X-Barracuda-*", "X-Proofpoint-*",
	"X-Mimecast-*", "X-IronPort-*", "X-YMail-*",
};

/* The value list of equals/contains: one string or a list of them. */
static int
values_parse(struct yu_ctx *x, yaml_node_t *n, const char *path,
    struct strtest *t)
{
	yaml_node_item_t *items = NULL;
	yaml_node_t *v;
	char ipath[YU_PATH_MAX];
	int i, count = 1;

	if (n->type == YAML_SEQUENCE_NODE) {
		if (yu_seq_items(x, n, path, RULES_VALUES_MAX, &items, &count) == -1)
			return -1;
	}
	if ((t->vals = calloc((size_t)count, sizeof(*t->vals))) == NULL ||
	    (t->lens = calloc((size_t)count, sizeof(*t->lens))) == NULL)
		return yu_error(x, n, path, "out of memory");
	for (i = 0; i < count; i++) {
		if (items != NULL) {
			yu_path(ipath, sizeof(ipath), "%s[%d]", path, i);
			if ((v = yaml_document_get_node(x->doc, items[i])) == NULL)
				return yu_error(x, n, path, "malformed list");
		} else {
			yu_path(ipath, sizeof(ipath), "%s", path);
			v = n;
		}
		if ((t->vals[i] = yu_dup(x, v, ipath, RULES_VALUE_MAX, &t->lens[i])) == NULL)
			return -1;
		t->nvals++;
		if (t->op == SOP_CONTAINS && t->lens[i] == 0)
			return yu_error(x, v, ipath, "must not be empty");
	}
	return 0;
}

/* Compile t's regex (PCRE2, UTF, automatic callouts for the budget). */
static int
regex_compile(struct yu_ctx *x, yaml_node_t *n, const char *path,
    struct strtest *t)
{
	const char *s = NULL;
	size_t len = 0;
	PCRE2_SIZE eoff;
	PCRE2_UCHAR msg[128];
	uint32_t opt;
	int ecode;

	if (yu_scalar(x, n, path, &s, &len) == -1)
		return -1;
	if (len == 0)
		return yu_error(x, n, path, "must not be empty");
	if (len > RULES_REGEX_MAX)
		return yu_error(x, n, path, "longer than %d bytes",
		    RULES_REGEX_MAX);
	opt = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C |
	    PCRE2_AUTO_CALLOUT | (t->nocase ? PCRE2_CASELESS : 0);
	t->re = pcre2_compile((PCRE2_SPTR)s, len, opt, &ecode, &eoff, NULL);
	if (t->re == NULL) {
		if (pcre2_get_error_message(ecode, msg, sizeof(msg)) < 0)
			snprintf((char *)msg, sizeof(msg), "error %d", ecode);
		return yu_error(x, n, path, "bad regex at offset %zu: %s",
		    (size_t)eoff, (char *)msg);
	}
	return 0;
}

/* State of one string test's mapping walk. */
struct st_state {
	struct strtest	*t;
	yaml_node_t	*opnode;
	char		 oppath[YU_PATH_MAX];
	bool		 is_header;
};

/* Apply one key of a string test (the operator value is read afterwards). */
static int
strtest_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct st_state *s = arg;
	const char *c;

	switch ((enum st_key)key) {
	case SK_EQUALS:
	case SK_CONTAINS:
	case SK_REGEX:
		if (s->opnode != NULL)
			return yu_error(x, v, path,
			    "only one of equals, contains, regex per test");
		s->opnode = v;
		yu_path(s->oppath, sizeof(s->oppath), "%s", path);
		s->t->op = key == SK_EQUALS ? SOP_EQUALS :
		    key == SK_CONTAINS ? SOP_CONTAINS : SOP_REGEX;
		return 0;
	case SK_NOCASE:
		return yu_bool(x, v, path, &s->t->nocase);
	case SK_NOT:
		return yu_bool(x, v, path, &s->t->neg);
	case SK_NAME:
		if (!s->is_header)
			return yu_error(x, v, path,
			    "only a header test has a name");
		if (yu_str(x, v, path, s->t->hname, sizeof(s->t->hname),
		    false) == -1)
			return -1;
		for (c = s->t->hname; *c != '\0'; c++)
			if ((unsigned char)*c <= ' ' ||
			    (unsigned char)*c >= 0x7f || *c == ':')
				return yu_error(x, v, path,
				    "not a header field name");
		return 0;
	case SK_COUNT:
		break;
	}
	return 0;
}

/* Parse one string test: {equals|contains|regex: ..., nocase, not[, name]}. */
static int
strtest_parse(struct yu_ctx *x, yaml_node_t *n, const char *path, bool is_header,
    struct strtest *t)
{
	struct st_state s = { .t = t, .is_header = is_header };
	uint32_t seen;
	int i;
	size_t j;

	if (n->type != YAML_MAPPING_NODE)
		return yu_error(x, n, path, "expected a test such as "
		    "{contains: \"...\"}, {equals: ...} or {regex: ...}");
	t->op = SOP_EXISTS;
	if (yu_map_walk(x, n, path, st_keys, SK_COUNT, strtest_key_cb, &s,
	    &seen) == -1)
		return -1;
	if (is_header && !(seen & (1u << SK_NAME)))
		return yu_missing(x, n, path, st_keys, 1u << SK_NAME, seen);
	if (s.opnode == NULL) {
		if (!is_header)
			return yu_error(x, n, path,
			    "needs one of equals, contains, regex");
		return 0;	/* header present */
	}
	if (t->op == SOP_REGEX)
		return regex_compile(x, s.opnode, s.oppath, t);
	if (values_parse(x, s.opnode, s.oppath, t) == -1)
		return -1;
	if (t->nocase)
		for (i = 0; i < t->nvals; i++)
			for (j = 0; j < t->lens[i]; j++)
				if (t->vals[i][j] >= 'A' && t->vals[i][j] <= 'Z')
					t->vals[i][j] += 32;
	return 0;
}

/* Parse "addr" or "addr/bits" (IPv4 or IPv6) into c; 0 or -1. */
static int
cidr_parse(const char *s, struct cidr *c)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash;
	uint64_t bits;
	size_t alen;

	memset(c, 0, sizeof(*c));
	slash = strchr(s, '/');
	alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	if (alen == 0 || alen >= sizeof(buf))
		return -1;
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	if (inet_pton(AF_INET, buf, c->a) == 1) {
		c->af = AF_INET;
		c->bits = 32;
	} else if (inet_pton(AF_INET6, buf, c->a) == 1) {
		c->af = AF_INET6;
		c->bits = 128;
	} else
		return -1;
	if (slash != NULL) {
		if (util_parse_u64(slash + 1, strlen(slash + 1), 0,
		    (uint64_t)c->bits, false, &bits) == -1)
			return -1;
		c->bits = (int)bits;
	}
	return 0;
}

/* Apply one key of a numeric test. */
static int
num_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct matcher *m = arg;

	m->nhas |= 1u << key;
	return yu_num(x, v, path, 0, UINT64_MAX, YU_KMG, &m->nv[key]);
}

/* Parse the value of matcher kind k into m. */
static int
matcher_parse(struct yu_ctx *x, int k, const char *path, yaml_node_t *v,
    struct matcher *m)
{
	yaml_node_item_t *items = NULL;
	yaml_node_t *iv;
	char ipath[YU_PATH_MAX], buf[INET6_ADDRSTRLEN + 8];
	uint32_t seen;
	int i, count = 1;

	m->kind = (enum mkind)k;
	switch (m->kind) {
	case MK_HEADER: case MK_SUBJECT: case MK_BODY: case MK_MAIL_FROM:
	case MK_RCPT: case MK_HELO: case MK_AUTH_USER: case MK_AUTH_PASS:
		if (v->type == YAML_SEQUENCE_NODE &&
		    yu_seq_items(x, v, path, RULES_LIST_MAX, &items, &count) == -1)
			return -1;
		if ((m->st = calloc((size_t)count, sizeof(*m->st))) == NULL)
			return yu_error(x, v, path, "out of memory");
		for (i = 0; i < count; i++) {
			iv = v;
			yu_path(ipath, sizeof(ipath), "%s", path);
			if (items != NULL) {
				yu_path(ipath, sizeof(ipath), "%s[%d]", path, i);
				if ((iv = yaml_document_get_node(x->doc,
				    items[i])) == NULL)
					return yu_error(x, v, path,
					    "malformed list");
			}
			m->nst++;
			if (strtest_parse(x, iv, ipath, m->kind == MK_HEADER,
			    &m->st[i]) == -1)
				return -1;
		}
		return 0;
	case MK_RCPT_COUNT:
	case MK_SIZE:
		if (v->type == YAML_SCALAR_NODE) {	/* shorthand for eq */
			m->nhas = 1u << NOP_EQ;
			return yu_num(x, v, path, 0, UINT64_MAX, YU_KMG, &m->nv[NOP_EQ]);
		}
		if (yu_map_walk(x, v, path, nop_names, NOP_COUNT, num_key_cb, m,
		    &seen) == -1)
			return -1;
		if (seen == 0)
			return yu_error(x, v, path,
			    "needs one of lt, le, gt, ge, eq");
		return 0;
	case MK_CLIENT:
		if (v->type == YAML_SEQUENCE_NODE &&
		    yu_seq_items(x, v, path, RULES_LIST_MAX, &items, &count) == -1)
			return -1;
		if ((m->cidrs = calloc((size_t)count, sizeof(*m->cidrs))) == NULL)
			return yu_error(x, v, path, "out of memory");
		for (i = 0; i < count; i++) {
			iv = v;
			yu_path(ipath, sizeof(ipath), "%s", path);
			if (items != NULL) {
				yu_path(ipath, sizeof(ipath), "%s[%d]", path, i);
				if ((iv = yaml_document_get_node(x->doc,
				    items[i])) == NULL)
					return yu_error(x, v, path,
					    "malformed list");
			}
			if (yu_str(x, iv, ipath, buf, sizeof(buf), false) == -1)
				return -1;
			if (cidr_parse(buf, &m->cidrs[i]) == -1)
				return yu_error(x, iv, ipath,
				    "expected an address or CIDR such as "
				    "192.0.2.0/24 or 2001:db8::/32, got \"%s\"",
				    buf);
			m->ncidrs++;
		}
		return 0;
	case MK_TLS:
		return yu_bool(x, v, path, &m->b);
	case MK_MENTIONS:
		if (v->type == YAML_SEQUENCE_NODE)
			return yu_error(x, v, path,
			    "expected true, false or {in: [...]}");
		if (v->type != YAML_MAPPING_NODE)
			return yu_bool(x, v, path, &m->b);
		m->b = true;
		if (yu_map_walk(x, v, path, mo_keys, MO_COUNT, mo_key_cb, m,
		    &seen) == -1)
			return -1;
		return yu_missing(x, v, path, mo_keys, 1u << MO_IN, seen);
	case MK_COUNT:
		break;
	}
	return yu_error(x, v, path, "unknown matcher");
}

/*
 * One place of mentions_own_address.in: subject, body, headers or
 * header:NAME (NAME* for a prefix).  An explicitly named field counts even
 * when it is a trace field: the operator said so.
 */
static int
place_parse(struct yu_ctx *x, yaml_node_t *n, const char *path, struct place *p)
{
	char buf[8 + MIME_NAME_MAX + 1], esc[64];
	const char *c;
	size_t len;

	if (yu_str(x, n, path, buf, sizeof(buf), false) == -1)
		return -1;
	if (strcmp(buf, "subject") == 0)
		p->kind = PL_SUBJECT;
	else if (strcmp(buf, "body") == 0)
		p->kind = PL_BODY;
	else if (strcmp(buf, "headers") == 0)
		p->kind = PL_HEADERS;
	else if (strncmp(buf, "header:", 7) == 0) {
		p->kind = PL_HEADER;
		len = strlen(buf + 7);
		if (len > 0 && buf[7 + len - 1] == '*') {
			p->prefix = true;
			len--;
		}
		/* RFC 5322 ftext: printable ASCII but ':' (and our '*'). */
		for (c = buf + 7; c < buf + 7 + len; c++)
			if ((unsigned char)*c <= ' ' ||
			    (unsigned char)*c >= 0x7f || *c == ':' || *c == '*')
				break;
		if (len == 0 || c != buf + 7 + len || len >= sizeof(p->name))
			return yu_error(x, n, path, "not a header field name "
			    "(header:NAME, or header:PREFIX* for a prefix)");
		memcpy(p->name, buf + 7, len);
		p->name[len] = '\0';
		p->namelen = len;
	} else
		return yu_error(x, n, path, "unknown place \"%s\" (expected "
		    "subject, body, headers or header:NAME)",
		    log_escape(esc, sizeof(esc), buf, strlen(buf)));
	return 0;
}

/* Apply one key of mentions_own_address: {in: [...], not: bool}. */
static int
mo_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct matcher *m = arg;
	yaml_node_item_t *items;
	yaml_node_t *iv;
	char ipath[YU_PATH_MAX];
	bool neg;
	int i, count;

	if (key == MO_NOT) {
		if (yu_bool(x, v, path, &neg) == -1)
			return -1;
		m->b = !neg;
		return 0;
	}
	if (yu_seq_items(x, v, path, RULES_LIST_MAX, &items, &count) == -1)
		return -1;
	if ((m->places = calloc((size_t)count, sizeof(*m->places))) == NULL)
		return yu_error(x, v, path, "out of memory");
	for (i = 0; i < count; i++) {
		yu_path(ipath, sizeof(ipath), "%s[%d]", path, i);
		if ((iv = yaml_document_get_node(x->doc, items[i])) == NULL)
			return yu_error(x, v, path, "malformed list");
		if (place_parse(x, iv, ipath, &m->places[i]) == -1)
			return -1;
		m->nplaces++;
	}
	return 0;
}

/*
 * How dear a matcher is to evaluate: envelope facts are free, headers need
 * the MIME parse, the body and the address search decode every text part.
 */
static int
matcher_cost(enum mkind k)
{
	switch (k) {
	case MK_SIZE: case MK_RCPT_COUNT: case MK_TLS: case MK_CLIENT:
		return 0;
	case MK_HELO: case MK_MAIL_FROM: case MK_RCPT: case MK_AUTH_USER:
	case MK_AUTH_PASS:
		return 1;
	case MK_HEADER: case MK_SUBJECT:
		return 2;
	default:
		return 3;
	}
}

/*
 * All matchers of a condition must hold and evaluation stops at the first
 * that does not: put the cheap ones first (stable, so equal costs keep the
 * file's order), so that "size < 64K" spares a 30 MiB mail its MIME decoding.
 */
static void
cond_order(struct cond *c)
{
	for (int i = 1; i < c->nm; i++) {
		struct matcher m = c->m[i];
		int j = i - 1;

		while (j >= 0 && matcher_cost(c->m[j].kind) > matcher_cost(m.kind)) {
			c->m[j + 1] = c->m[j];
			j--;
		}
		c->m[j + 1] = m;
	}
}

/* What cond_key_cb() needs: the condition being filled, the rule's stage. */
struct cond_state {
	struct cond	*c;
	enum rules_stage stage;
};

/* Parse one matcher of a condition. */
static int
cond_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cond_state *s = arg;

	if (((1u << key) & MK_MSG_MASK) && s->stage != RULES_STAGE_DATA)
		return yu_error(x, v, path, "only at stage data");
	if (((1u << key) & MK_TXN_MASK) && s->stage != RULES_STAGE_DATA &&
	    s->stage != RULES_STAGE_RSET)
		return yu_error(x, v, path, "only at stage data or rset");
	return matcher_parse(x, key, path, v, &s->c->m[s->c->nm++]);
}

/* Apply one key of actions.reply. */
static int
reply_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct rule *r = arg;
	uint64_t code;
	const char *c;

	if (key == PK_CODE) {
		if (yu_num(x, v, path, 0, 599, YU_KMG, &code) == -1)
			return -1;
		if (code < 200)
			return yu_error(x, v, path,
			    "an SMTP reply code is 200..599");
		r->reply_code = (int)code;
		return 0;
	}
	if (yu_str(x, v, path, r->reply_text, sizeof(r->reply_text),
	    true) == -1)
		return -1;
	/* The text goes on the wire after the code: printable ASCII only. */
	for (c = r->reply_text; *c != '\0'; c++)
		if ((unsigned char)*c < ' ' || (unsigned char)*c > '~')
			return yu_error(x, v, path,
			    "only printable ASCII (no line breaks)");
	return 0;
}

/* Apply one key of actions. */
static int
actions_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct rule *r = arg;
	uint32_t seen;
	const char *c;

	switch ((enum act_key)key) {
	case AK_RELAY:
		if (yu_bool(x, v, path, &r->relay) == -1)
			return -1;
		if (r->relay && r->stage != RULES_STAGE_DATA)
			return yu_error(x, v, path,
			    "relay needs a message: only at stage data");
		return 0;
	case AK_REPLY:
		if (yu_map_walk(x, v, path, reply_keys, PK_COUNT, reply_key_cb, r,
		    &seen) == -1)
			return -1;
		return yu_missing(x, v, path, reply_keys, 1u << PK_CODE, seen);
	case AK_TAG:
		if (yu_str(x, v, path, r->tag, sizeof(r->tag), false) == -1)
			return -1;
		/* A tag may name a folder: keep it a plain file name. */
		for (c = r->tag; *c != '\0'; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' &&
			    *c <= 'Z') || (*c >= '0' && *c <= '9') ||
			    *c == '-' || *c == '_' || *c == '.'))
				return yu_error(x, v, path,
				    "only letters, digits, '-', '_' and '.'");
		if (r->tag[0] == '.')
			return yu_error(x, v, path, "must not start with '.'");
		return 0;
	case AK_PUBLISH:
		return yu_bool(x, v, path, &r->publish);
	case AK_COUNT:
		break;
	}
	return 0;
}

/* Apply one key of a rule. */
static int
rule_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct rule *r = arg;
	struct cond_state cs;
	yaml_node_item_t *items;
	yaml_node_t *iv;
	char ipath[YU_PATH_MAX], esc[48];
	const char *s = NULL;
	size_t len = 0;
	uint64_t prio;
	uint32_t seen;
	int i, count;

	switch ((enum rule_key)key) {
	case RK_NAME:
		if (yu_str(x, v, path, r->name, sizeof(r->name), false) == -1)
			return -1;
		for (s = r->name; *s != '\0'; s++)
			if ((unsigned char)*s < ' ' || (unsigned char)*s == 0x7f)
				return yu_error(x, v, path,
				    "contains a control character");
		return 0;
	case RK_PRIORITY:
		if (yu_num(x, v, path, 0, RULES_PRIO_MAX, YU_KMG, &prio) == -1)
			return -1;
		r->prio = (int)prio;
		return 0;
	case RK_ENABLED:
		return yu_bool(x, v, path, &r->enabled);
	case RK_STAGE:
		if (yu_scalar(x, v, path, &s, &len) == -1)
			return -1;
		for (i = 0; i < 4; i++)
			if (strlen(stage_names[i]) == len &&
			    strncasecmp(stage_names[i], s, len) == 0) {
				r->stage = (enum rules_stage)i;
				return 0;
			}
		return yu_error(x, v, path,
		    "expected one of ehlo, auth, rset, data, got \"%s\"",
		    log_escape(esc, sizeof(esc), s, len));
	case RK_CONDITIONS:
		if (yu_seq_items(x, v, path, RULES_LIST_MAX, &items, &count) == -1)
			return -1;
		if ((r->c = calloc((size_t)count, sizeof(*r->c))) == NULL)
			return yu_error(x, v, path, "out of memory");
		for (i = 0; i < count; i++) {
			yu_path(ipath, sizeof(ipath), "%s[%d]", path, i);
			if ((iv = yaml_document_get_node(x->doc, items[i])) ==
			    NULL)
				return yu_error(x, v, path, "malformed list");
			r->nc++;
			if ((r->c[i].m = calloc(MK_COUNT,
			    sizeof(*r->c[i].m))) == NULL)
				return yu_error(x, v, path, "out of memory");
			cs.c = &r->c[i];
			cs.stage = r->stage;
			if (yu_map_walk(x, iv, ipath, mkind_names, MK_COUNT,
			    cond_key_cb, &cs, &seen) == -1)
				return -1;
			if (seen == 0)
				return yu_error(x, iv, ipath,
				    "a condition needs at least one matcher");
			cond_order(&r->c[i]);
		}
		return 0;
	case RK_ACTIONS:
		return yu_map_walk(x, v, path, act_keys, AK_COUNT, actions_key_cb,
		    r, &seen);
	case RK_COUNT:
		break;
	}
	return 0;
}

/*
 * Parse one rule.  The stage is read first, whatever the key order, because
 * which matchers and actions are allowed depends on it.
 */
static int
rule_parse(struct yu_ctx *x, yaml_node_t *n, const char *path, struct rule *r)
{
	yaml_node_pair_t *p;
	yaml_node_t *k, *v;
	char spath[YU_PATH_MAX];
	uint32_t seen;

	r->enabled = true;
	r->publish = true;
	r->prio = 100;
	if (n->type != YAML_MAPPING_NODE)
		return yu_error(x, n, path, "expected a rule (a mapping)");
	for (p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	    p++) {
		k = yaml_document_get_node(x->doc, p->key);
		v = yaml_document_get_node(x->doc, p->value);
		if (k != NULL && v != NULL && k->type == YAML_SCALAR_NODE &&
		    k->data.scalar.length == 5 &&
		    memcmp(k->data.scalar.value, "stage", 5) == 0) {
			yu_path(spath, sizeof(spath), "%s.stage", path);
			if (rule_key_cb(x, RK_STAGE, spath, v, r) == -1)
				return -1;
		}
	}
	if (yu_map_walk(x, n, path, rule_keys, RK_COUNT, rule_key_cb, r,
	    &seen) == -1)
		return -1;
	return yu_missing(x, n, path, rule_keys, RULE_REQUIRED, seen);
}

/* Apply the top-level key: the list of rules. */
static int
top_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct rules *rs = arg;
	yaml_node_item_t *items;
	yaml_node_t *iv;
	char ipath[YU_PATH_MAX];
	int i, j, count;

	if ((v->type == YAML_SCALAR_NODE && v->data.scalar.length == 0) ||
	    (v->type == YAML_SEQUENCE_NODE && v->data.sequence.items.top ==
	    v->data.sequence.items.start))
		return 0;	/* "rules:" or "rules: []": no rules */
	if (yu_seq_items(x, v, path, RULES_MAX, &items, &count) == -1)
		return -1;
	if ((rs->r = calloc((size_t)count, sizeof(*rs->r))) == NULL)
		return yu_error(x, v, path, "out of memory");
	for (i = 0; i < count; i++) {
		yu_path(ipath, sizeof(ipath), "%s[%d]", path, i);
		if ((iv = yaml_document_get_node(x->doc, items[i])) == NULL)
			return yu_error(x, v, path, "malformed list");
		rs->n++;
		rs->r[i].order = i;
		if (rule_parse(x, iv, ipath, &rs->r[i]) == -1)
			return -1;
		for (j = 0; j < i; j++)
			if (strcmp(rs->r[j].name, rs->r[i].name) == 0)
				return yu_error(x, iv, ipath,
				    "duplicate rule name \"%s\"", rs->r[i].name);
	}
	return 0;
}

/* Priority order, file order among equals. */
static int
rule_cmp(const void *a, const void *b)
{
	const struct rule *ra = a, *rb = b;

	if (ra->prio != rb->prio)
		return ra->prio < rb->prio ? -1 : 1;
	return ra->order < rb->order ? -1 : ra->order > rb->order;
}

/* Load rules from a buffer (see rules.h). */
struct rules *
rules_load_buf(const char *name, const char *buf, size_t len, char *err,
    size_t errlen)
{
	struct yu_ctx x = { .name = name, .err = err, .errlen = errlen };
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	struct rules *rs;
	uint32_t seen;
	int r, rc = -1;

	if (errlen > 0)
		err[0] = '\0';
	if ((rs = calloc(1, sizeof(*rs))) == NULL) {
		snprintf(err, errlen, "%s: out of memory", name);
		return NULL;
	}
	if (len > YU_FILE_MAX) {
		snprintf(err, errlen, "%s: larger than %d bytes", name,
		    YU_FILE_MAX);
		free(rs);
		return NULL;
	}
	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "%s: out of memory", name);
		free(rs);
		return NULL;
	}
	x.doc = &doc;
	if ((r = yu_doc_load(&x, &parser, &doc, buf, len)) != 1) {
		rc = r;		/* 0: an empty file, no rules */
		goto out;
	}
	root = yaml_document_get_root_node(&doc);
	if (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0) {
		rc = 0;
		goto done;
	}
	if (yu_map_walk(&x, root, "", top_keys, TK_COUNT, top_key_cb, rs,
	    &seen) == -1)
		goto done;
	if (rs->n > 1)
		qsort(rs->r, (size_t)rs->n, sizeof(*rs->r), rule_cmp);
	rc = 0;
done:
	yaml_document_delete(&doc);
out:
	yaml_parser_delete(&parser);
	if (rc == -1) {
		if (errlen > 0 && err[0] == '\0')
			snprintf(err, errlen, "%s: cannot load", name);
		rules_free(rs);
		return NULL;
	}
	return rs;
}

/* Load a rules file (see rules.h). */
struct rules *
rules_load(const char *path, char *err, size_t errlen)
{
	struct rules *rs;
	char *buf;
	size_t len;

	if (yu_read_file(path, &buf, &len, err, errlen) == -1)
		return NULL;
	rs = rules_load_buf(path, buf, len, err, errlen);
	free(buf);
	return rs;
}

/* Free one string test. */
static void
strtest_free(struct strtest *t)
{
	int i;

	for (i = 0; i < t->nvals; i++)
		free(t->vals[i]);
	free(t->vals);
	free(t->lens);
	pcre2_code_free(t->re);
}

/* Free a rule set; NULL is a no-op. */
void
rules_free(struct rules *rs)
{
	struct matcher *m;
	int i, j, k, l;

	if (rs == NULL)
		return;
	for (i = 0; i < rs->n; i++) {
		for (j = 0; j < rs->r[i].nc; j++) {
			for (k = 0; k < rs->r[i].c[j].nm; k++) {
				m = &rs->r[i].c[j].m[k];
				for (l = 0; l < m->nst; l++)
					strtest_free(&m->st[l]);
				free(m->st);
				free(m->cidrs);
				free(m->places);
			}
			free(rs->r[i].c[j].m);
		}
		free(rs->r[i].c);
	}
	free(rs->r);
	free(rs);
}

/* Number of rules in a set (enabled or not). */
int
rules_count(const struct rules *rs)
{
	return rs != NULL ? rs->n : 0;
}

/* Whether any enabled rule is at stage st (callers may skip rules_eval()). */
bool
rules_has_stage(const struct rules *rs, enum rules_stage st)
{
	int i;

	for (i = 0; rs != NULL && i < rs->n; i++)
		if (rs->r[i].enabled && rs->r[i].stage == st)
			return true;
	return false;
}

/* The name of a stage ("ehlo", "auth", "rset", "data"). */
const char *
rules_stage_name(enum rules_stage st)
{
	return (unsigned)st < 4 ? stage_names[st] : "?";
}

/* ------------------------------------------------------------ evaluation */

/* Copy at most RULES_WHAT_MAX bytes, not cutting a UTF-8 sequence in two. */
static void
what_set(char *dst, size_t *dlen, const void *src, size_t n)
{
	const unsigned char *s = src;

	if (n > RULES_WHAT_MAX) {
		n = RULES_WHAT_MAX;
		while (n > RULES_WHAT_MAX - 3 && (s[n] & 0xc0) == 0x80)
			n--;
	}
	memcpy(dst, s, n);
	dst[n] = '\0';
	*dlen = n;
}

/* Record one piece of evidence for the condition being evaluated. */
static void
ev_add(struct ectx *e, const char *matcher, const char *where,
    const char *where_arg, const void *what, size_t whatlen)
{
	struct ev_item *it;
	size_t n, a;

	if (e->nev >= RULES_EV_MAX)
		return;
	it = &e->ev[e->nev++];
	it->matcher = matcher;
	/* where[:where_arg], cut to fit (no snprintf: this runs per condition). */
	n = strnlen(where, sizeof(it->where) - 1);
	memcpy(it->where, where, n);
	if (where_arg != NULL && n < sizeof(it->where) - 1) {
		it->where[n++] = ':';
		a = strnlen(where_arg, sizeof(it->where) - 1 - n);
		memcpy(it->where + n, where_arg, a);
		n += a;
	}
	it->where[n] = '\0';
	what_set(it->what, &it->whatlen, what, whatlen);
}

/* PCRE2 automatic callout: spend the budget, abort the match when it is gone. */
static int
re_callout_cb(pcre2_callout_block *cb, void *arg)
{
	struct ectx *e = arg;

	(void)cb;
	if (e->re_left == 0 || e->re_match_left == 0)
		return PCRE2_ERROR_MATCHLIMIT;
	e->re_left--;
	e->re_match_left--;
	return 0;
}

/*
 * Run the string test t (negation not applied) on s[0..n); s NULL = absent.
 * lc is s lower-cased (or NULL) for fast case-insensitive search.  On a
 * match the matched text goes to what.
 */
static bool
str_test(struct ectx *e, const struct strtest *t, const char *s, size_t n,
    const char *lc, char *what, size_t *whatlen)
{
	PCRE2_SIZE *ov;
	const char *hit;
	char *tmp;
	long off;
	int i, rc;

	*whatlen = 0;
	what[0] = '\0';
	if (s == NULL)
		return false;
	switch (t->op) {
	case SOP_EXISTS:
		what_set(what, whatlen, s, n);
		return true;
	case SOP_EQUALS:
		for (i = 0; i < t->nvals; i++) {
			if (t->lens[i] != n)
				continue;
			if (t->nocase ? strncasecmp(s, t->vals[i], n) == 0 :
			    memcmp(s, t->vals[i], n) == 0) {
				what_set(what, whatlen, s, n);
				return true;
			}
		}
		return false;
	case SOP_CONTAINS:
		/* Case-insensitive: search a lower-cased copy (memmem is linear). */
		tmp = NULL;
		if (t->nocase && lc == NULL) {
			if ((tmp = lc_dup(s, n)) == NULL)
				return false;
			lc = tmp;
		}
		for (i = 0, off = -1; i < t->nvals && off < 0; i++) {
			hit = memmem(t->nocase ? lc : s, n, t->vals[i],
			    t->lens[i]);
			if (hit != NULL) {
				off = hit - (t->nocase ? lc : s);
				what_set(what, whatlen, s + off, t->lens[i]);
			}
		}
		free(tmp);
		return off >= 0;
	case SOP_REGEX:
		if (e->md == NULL || e->mctx == NULL)
			return false;
		e->re_match_left = RE_CALLOUTS_MATCH;
		rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, 0, 0, e->md, e->mctx);
		if (rc < 0)
			return false;	/* no match, or a limit was reached */
		ov = pcre2_get_ovector_pointer(e->md);
		if (ov[1] >= ov[0] && ov[1] <= n)
			what_set(what, whatlen, s + ov[0], ov[1] - ov[0]);
		return true;
	}
	return false;
}

/* The decoded message, parsed on first use (empty when there is none). */
static const struct mime_msg *
ectx_mime(struct ectx *e)
{
	if (!e->mime_tried) {
		e->mime_tried = true;
		if (e->f->msg != NULL && mime_parse(e->f->msg, e->f->msglen,
		    &e->mm) == -1)
			memset(&e->mm, 0, sizeof(e->mm));
	}
	return &e->mm;
}

/* Lower-case an ASCII copy of n bytes; NULL when out of memory. */
static char *
lc_dup(const char *s, size_t n)
{
	char *d;
	size_t i;

	if ((d = malloc(n + 1)) == NULL)
		return NULL;
	for (i = 0; i < n; i++)
		d[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
	d[n] = '\0';
	return d;
}

/* A string matcher: every test must hold (header and rcpt: on any value). */
static bool
m_string(struct ectx *e, const struct matcher *m)
{
	const struct rules_facts *f = e->f;
	const struct mime_msg *mm;
	const struct strtest *t;
	const char *name = mkind_names[m->kind], *s = NULL, *hname = NULL;
	char what[RULES_WHAT_MAX + 1];
	size_t whatlen = 0, n = 0;
	bool ok;
	int i, j;

	for (i = 0; i < m->nst; i++) {
		t = &m->st[i];
		ok = false;
		switch (m->kind) {
		case MK_HEADER:
			mm = ectx_mime(e);
			for (j = 0; j < mm->nhdrs && !ok; j++) {
				if (strcasecmp(mm->hdrs[j].name, t->hname) != 0)
					continue;
				ok = str_test(e, t, mm->hdrs[j].value,
				    mm->hdrs[j].valuelen, NULL, what, &whatlen);
				hname = mm->hdrs[j].name;
			}
			if (!ok)
				hname = t->hname;
			if (ok != t->neg)
				ev_add(e, name, "header", hname, t->neg ?
				    "not matched" : what, t->neg ? 11 : whatlen);
			break;
		case MK_RCPT:
			for (j = 0; j < f->nrcpt && f->rcpt != NULL && !ok; j++)
				if (f->rcpt[j] != NULL)
					ok = str_test(e, t, f->rcpt[j],
					    strlen(f->rcpt[j]), NULL, what,
					    &whatlen);
			if (ok != t->neg)
				ev_add(e, name, name, NULL, t->neg ?
				    "not matched" : what, t->neg ? 11 : whatlen);
			break;
		case MK_SUBJECT: {
			const struct mime_header *h;

			mm = ectx_mime(e);
			if ((h = mime_header_get(mm, "Subject")) != NULL)
				ok = str_test(e, t, h->value, h->valuelen, NULL,
				    what, &whatlen);
			if (ok != t->neg)
				ev_add(e, name, "header", "Subject", t->neg ?
				    "not matched" : what, t->neg ? 11 : whatlen);
			break;
		}
		case MK_BODY:
			mm = ectx_mime(e);
			if (mm->body != NULL && t->nocase && t->op ==
			    SOP_CONTAINS && !e->body_lc_tried) {
				e->body_lc_tried = true;
				e->body_lc = lc_dup(mm->body, mm->bodylen);
			}
			ok = str_test(e, t, mm->body, mm->bodylen,
			    t->nocase ? e->body_lc : NULL, what, &whatlen);
			if (ok != t->neg)
				ev_add(e, name, name, NULL, t->neg ?
				    "not matched" : what, t->neg ? 11 : whatlen);
			break;
		default:
			s = m->kind == MK_MAIL_FROM ? f->mail_from :
			    m->kind == MK_HELO ? f->helo :
			    m->kind == MK_AUTH_USER ? f->auth_user : f->auth_pass;
			n = s != NULL ? strlen(s) : 0;
			ok = str_test(e, t, s, n, NULL, what, &whatlen);
			if (ok != t->neg)
				ev_add(e, name, name, NULL, t->neg ?
				    "not matched" : what, t->neg ? 11 : whatlen);
			break;
		}
		if (ok == t->neg)
			return false;
	}
	return true;
}

/* rcpt_count or size against every comparison given. */
static bool
m_numeric(struct ectx *e, const struct matcher *m)
{
	uint64_t v, x;
	char buf[32];
	size_t len;

	if (m->kind == MK_RCPT_COUNT)
		v = e->f->nrcpt > 0 ? (uint64_t)e->f->nrcpt : 0;
	else
		v = e->f->size != 0 ? e->f->size : e->f->msglen;
	if (((m->nhas & (1u << NOP_LT)) && !(v < m->nv[NOP_LT])) ||
	    ((m->nhas & (1u << NOP_LE)) && !(v <= m->nv[NOP_LE])) ||
	    ((m->nhas & (1u << NOP_GT)) && !(v > m->nv[NOP_GT])) ||
	    ((m->nhas & (1u << NOP_GE)) && !(v >= m->nv[NOP_GE])) ||
	    ((m->nhas & (1u << NOP_EQ)) && !(v == m->nv[NOP_EQ])))
		return false;
	/* v in decimal, written backwards from the end of buf. */
	len = 0;
	x = v;
	do {
		buf[sizeof(buf) - 1 - len++] = (char)('0' + x % 10);
		x /= 10;
	} while (x != 0);
	ev_add(e, mkind_names[m->kind], mkind_names[m->kind], NULL,
	    buf + sizeof(buf) - len, len);
	return true;
}

/* Parse an address string into a (v4-mapped IPv6 becomes IPv4); 0 or -1. */
static int
addr_parse(const char *s, struct own_addr *a)
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0,
	    0, 0xff, 0xff };
	char buf[INET6_ADDRSTRLEN + 1];
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n >= sizeof(buf))
		return -1;
	/* Tolerate "[addr]" as some callers print IPv6 that way. */
	if (s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, buf, a->a) == 1) {
		a->af = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, a->a) == 1) {
		a->af = AF_INET6;
		if (memcmp(a->a, mapped, 12) == 0) {
			memmove(a->a, a->a + 12, 4);
			memset(a->a + 4, 0, 12);
			a->af = AF_INET;
		}
		return 0;
	}
	return -1;
}

/* Whether the client address is in any of the CIDRs. */
static bool
m_client(struct ectx *e, const struct matcher *m)
{
	struct own_addr a;
	int i, full, rest;

	if (addr_parse(e->f->src_ip, &a) == -1)
		return false;
	for (i = 0; i < m->ncidrs; i++) {
		if (m->cidrs[i].af != a.af)
			continue;
		full = m->cidrs[i].bits / 8;
		rest = m->cidrs[i].bits % 8;
		if (memcmp(m->cidrs[i].a, a.a, (size_t)full) != 0)
			continue;
		if (rest != 0 && ((m->cidrs[i].a[full] ^ a.a[full]) &
		    (0xff << (8 - rest)) & 0xff) != 0)
			continue;
		ev_add(e, "client", "client", NULL, e->f->src_ip,
		    strlen(e->f->src_ip));
		return true;
	}
	return false;
}

/* Add one own address (skipping duplicates and what does not parse). */
static void
own_add(struct ectx *e, const char *s)
{
	struct own_addr a;
	int i;

	if (e->nown >= RULES_OWN_MAX + 1 || addr_parse(s, &a) == -1)
		return;
	for (i = 0; i < e->nown; i++)
		if (e->own[i].af == a.af && memcmp(e->own[i].a, a.a, 16) == 0)
			return;
	e->own[e->nown++] = a;
	if (a.af == AF_INET6)
		e->own_v6 = true;
	else
		e->own4[e->nown4++] = (uint32_t)a.a[0] << 24 |
		    (uint32_t)a.a[1] << 16 | (uint32_t)a.a[2] << 8 | a.a[3];
}

/* The addresses mentions_own_address looks for: configured ones + dst_ip. */
static void
own_collect(struct ectx *e)
{
	int i;

	for (i = 0; i < e->f->nown && e->f->own_addrs != NULL &&
	    i < RULES_OWN_MAX; i++)
		own_add(e, e->f->own_addrs[i]);
	own_add(e, e->f->dst_ip);
}

/* Parse one part: decimal (<= maxdec digits) or 0x hex (<= maxhex digits). */
static bool
v4_part(const char *s, size_t n, int maxdec, int maxhex, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;
	int d;

	if (n >= 3 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		if (n - 2 > (size_t)maxhex)
			return false;
		for (i = 2; i < n; i++) {
			if ((d = (s[i] >= '0' && s[i] <= '9') ? s[i] - '0' :
			    (s[i] >= 'a' && s[i] <= 'f') ? s[i] - 'a' + 10 :
			    (s[i] >= 'A' && s[i] <= 'F') ? s[i] - 'A' + 10 :
			    -1) < 0)
				return false;
			v = v * 16 + (uint64_t)d;
		}
	} else {
		if (n == 0 || n > (size_t)maxdec)
			return false;
		for (i = 0; i < n; i++) {
			if (s[i] < '0' || s[i] > '9')
				return false;
			v = v * 10 + (uint64_t)(s[i] - '0');
		}
	}
	*out = v;
	return true;
}

/*
 * Parse a whole token as an IPv4 address: dotted quad (each part decimal or
 * 0x hex), one decimal integer, or one 0x hex integer.  Trailing dots (end of
 * a sentence) are ignored.
 */
static bool
v4_token(const char *s, size_t n, uint32_t *out)
{
	uint64_t p[4], v;
	size_t i, start;
	int np = 0;

	while (n > 0 && s[n - 1] == '.')
		n--;
	if (n == 0 || s[0] == '.')
		return false;
	if (memchr(s, '.', n) == NULL) {
		if (!v4_part(s, n, 10, 8, &v) || v > 0xffffffffu)
			return false;
		*out = (uint32_t)v;
		return true;
	}
	for (i = 0, start = 0; i <= n; i++) {
		if (i < n && s[i] != '.')
			continue;
		if (np == 4 || !v4_part(s + start, i - start, 3, 2, &p[np]) ||
		    p[np] > 255)
			return false;
		np++;
		start = i + 1;
	}
	if (np != 4)
		return false;
	*out = (uint32_t)(p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]);
	return true;
}

/* Set the hit text: the token, with a ":port" that follows it. */
static void
hit_set(struct hit *h, const char *s, size_t n, size_t tokend,
    const char *tok, size_t toklen)
{
	size_t e = tokend;

	if (e < n && s[e] == ':') {
		for (e++; e < n && e - tokend <= 6 && s[e] >= '0' && s[e] <= '9';
		    e++)
			;
		if (e == tokend + 1)
			e = tokend;
	}
	what_set(h->what, &h->whatlen, tok, toklen + (e - tokend));
}

/* The first decimal digit in s[i..n), or n (eight bytes a step). */
static size_t
digit_find(const char *s, size_t i, size_t n)
{
	const uint64_t ones = 0x0101010101010101ull;
	uint64_t w, x;

	for (; i + 8 <= n; i += 8) {
		memcpy(&w, s + i, 8);
		/* A byte in '0'..'9' (exact per byte: "hasbetween", Bit Twiddling Hacks). */
		x = w & (ones * 127);
		if (((ones * (127 + '9' + 1) - x) & ~w & (x + ones * (127 -
		    ('0' - 1))) & (ones * 0x80)) != 0)
			break;
	}
	for (; i < n; i++)
		if (SC(s[i]) & SC_DIGIT)
			return i;
	return n;
}

/*
 * Whether the token s[0..n) is a bare decimal number (the integer form).  An
 * own address in 100.0.0.0/6-ish is a Unix time of this decade in decimal
 * (107.20.243.254 is 1796535294, 2026-12-06T05:34:54Z) that mail written at
 * that second carries in its links; it counts only as a token of its own,
 * not glued to a joiner such as '=', '/', '#', '-', '_' (hex_glue).
 */
static bool
v4_url_number(const char *s, size_t n)
{
	while (n > 0 && s[n - 1] == '.')
		n--;
	return n > 0 && memchr(s, '.', n) == NULL &&
	    !(n > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'));
}

/*
 * The IPv4 forms: a token (letters, digits, dots) that starts with a digit,
 * is at most 64 bytes long and parses to an own address (the decimal
 * integer not glued to a joiner: v4_url_number).
 */
static bool
scan_v4(struct ectx *e, const char *s, size_t n, struct hit *h)
{
	size_t i, j, lim;
	uint32_t v;
	int o;

	for (i = digit_find(s, 0, n); i < n; i = digit_find(s, i, n)) {
		if (i > 0 && (SC(s[i - 1]) & SC_TOK)) {
			/* Inside a token that does not start with a digit. */
			while (i < n && (SC(s[i]) & SC_TOK))
				i++;
			continue;
		}
		lim = n - i > 65 ? i + 65 : n;
		for (j = i + 1; j < lim && (SC(s[j]) & SC_TOK); j++)
			;
		if (j - i <= 64 && v4_token(s + i, j - i, &v) &&
		    !(v4_url_number(s + i, j - i) && ((i > 0 &&
		    hex_glue((unsigned char)s[i - 1])) || (j < n &&
		    hex_glue((unsigned char)s[j])))))
			for (o = 0; o < e->nown4; o++)
				if (e->own4[o] == v) {
					hit_set(h, s, n, j, s + i, j - i);
					return true;
				}
		i = j;
	}
	return false;
}

/*
 * The IPv6 forms: a run of hex digits, colons and dots (not starting with a
 * dot) with two colons or more, not glued to a letter or digit.  Only the
 * runs around a colon are looked at.
 */
static bool
scan_v6(struct ectx *e, const char *s, size_t n, struct hit *h)
{
	unsigned char a6[16];
	char buf[INET6_ADDRSTRLEN + 1];
	const char *p;
	size_t i, j, c, k;
	int o;

	for (c = 0; c < n && (p = memchr(s + c, ':', n - c)) != NULL; c = j) {
		/* No colon between the last run and p: the run around p has them all. */
		c = (size_t)(p - s);
		for (i = c; i > 0 && (SC(s[i - 1]) & SC_V6); i--)
			;
		while (s[i] == '.')
			i++;
		for (j = c, k = 0; j < n && (SC(s[j]) & SC_V6); j++)
			k += s[j] == ':';
		if (k < 2 || j - i >= sizeof(buf) || (i > 0 &&
		    (SC(s[i - 1]) & SC_ALNUM)) || (j < n && (SC(s[j]) & SC_ALNUM)))
			continue;
		memcpy(buf, s + i, j - i);
		buf[j - i] = '\0';
		if (inet_pton(AF_INET6, buf, a6) != 1)
			continue;
		for (o = 0; o < e->nown; o++)
			if (e->own[o].af == AF_INET6 &&
			    memcmp(e->own[o].a, a6, 16) == 0) {
				what_set(h->what, &h->whatlen, s + i, j - i);
				return true;
			}
	}
	return false;
}

/*
 * The decoding alignments (a bit each) in which the pair of roles m (see
 * b64_pair) whose first character is at alphabet index q of its run makes a
 * decoded byte: a decoded byte is made of the characters at quad positions
 * 0-1 (roles 0, 1), 1-2 (role 2) or 2-3 (role 3).
 */
static unsigned
b64_align(unsigned m, size_t q)
{
	unsigned need = 0;

	if (m & 3)
		need |= 1u << (q & 3);
	if (m & 4)
		need |= 1u << ((q - 1) & 3);
	if (m & 8)
		need |= 1u << ((q - 2) & 3);
	return need;
}

/*
 * Base64-looking runs (alphabet characters, line breaks allowed inside),
 * decoded at each of the 4 alignments and searched (not recursively).  An
 * alignment whose decoded bytes cannot hold a digit or a colon cannot hold an
 * address either: it is not decoded.
 */
static bool
scan_b64(struct ectx *e, const char *s, size_t n, struct hit *h)
{
	unsigned char *dec;
	char buf[INET6_ADDRSTRLEN + 1], enc[RULES_WHAT_MAX + 1];
	size_t i, j, k, alpha, declen, enclen;
	unsigned t, m, first, need;
	int off, skipped;
	bool joins;

	for (i = 0; i < n; ) {
		if (!(SC(s[i]) & SC_B64)) {
			i++;
			continue;
		}
		/*
		 * A run goes on over line breaks only when it starts a line:
		 * base64 that starts after a word ("see attached" and the
		 * base64 of a mail on the next line) would decode out of line,
		 * the mail's first field glued to garbage, no longer a field.
		 */
		joins = i == 0 || (SC(s[i - 1]) & SC_NL);
		/* A cheap look first: most runs (words) are too short. */
		for (j = i, alpha = 0; j < n && alpha < B64_MIN; j++) {
			if (SC(s[j]) & SC_B64)
				alpha++;
			else if (!(joins && (SC(s[j]) & SC_NL) && j + 1 < n &&
			    (SC(s[j + 1]) & (SC_ALNUM | SC_NL))))
				break;
		}
		if (alpha < B64_MIN) {
			i = j;
			continue;
		}
		/* The whole run; which alignments can decode to '0'..':'. */
		for (j = i, alpha = 0, need = 0, first = 0; j < n; j++) {
			if ((t = b64_pair[(unsigned char)s[j]]) != 0) {
				if ((m = first & (t >> 4)) != 0)
					need |= b64_align(m, alpha - 1);
				first = t & 15;
				alpha++;
			} else if (!(joins && (SC(s[j]) & SC_NL) && j + 1 < n &&
			    (SC(s[j + 1]) & (SC_ALNUM | SC_NL))))
				break;
		}
		if (need != 0 && (dec = malloc(alpha)) != NULL) {
			for (off = 0; off < 4; off++) {
				if (!(need & (1u << off)))
					continue;
				/* Skip off alphabet characters, then decode. */
				for (k = i, skipped = 0; k < j && skipped < off;
				    k++)
					if (s[k] != '\r' && s[k] != '\n')
						skipped++;
				declen = mime_b64_decode(s + k, j - k, dec,
				    alpha);
				if (declen < 7 || !scan_lines(e, (char *)dec,
				    declen, false, h))
					continue;
				for (enclen = j - k; k + enclen < n && enclen <
				    j - k + 2 && s[k + enclen] == '='; enclen++)
					;
				if (enclen > 120)
					enclen = 120;
				memcpy(enc, s + k, enclen);
				enc[enclen] = '\0';
				snprintf(buf, sizeof(buf), "%.*s",
				    (int)(sizeof(buf) - 1), h->what);
				snprintf(enc + enclen, sizeof(enc) - enclen,
				    " (base64: %s)", buf);
				what_set(h->what, &h->whatlen, enc, strlen(enc));
				free(dec);
				return true;
			}
			free(dec);
		}
		i = j;
	}
	return false;
}

/* Bytes that glue a token to its neighbour: word characters and joiners. */
static bool
hex_glue(unsigned char c)
{
	return (SC(c) & SC_ALNUM) || (c != '\0' &&
	    strchr("_-.+/=%@&#$~\\", c) != NULL);
}

/*
 * The address as 8 bare hex digits, all upper or all lower case, optionally
 * with ":port" (a published open-relay test format: D9808AFD:8080), as a
 * whole token: not glued to a word character or a joiner (a hash, a UUID, a
 * CSS colour, a Message-ID or URL part), a '.' only at a sentence end.  Also
 * the framing of the published sample, one digit before and ":N" after the
 * port ("at 1D9808AFD:8080:6 o'clock"); a 9-digit hex run alone is no match.
 * Hex without a letter a-f reads as a decimal number (a date, an order
 * number): it counts only with a port.  The own addresses' hex forms are
 * looked for with memmem(), the edges checked where one is found.
 */
static bool
scan_hex8(struct ectx *e, const char *s, size_t n, struct hit *h)
{
	static const char hexu[] = "0123456789ABCDEF", hexl[] = "0123456789abcdef";
	char pat[2][8];
	const char *q;
	size_t t, st, en, d;
	int o, c, k, p;
	bool letter, framed, port, tail;

	for (o = 0; o < e->nown4; o++) {
		for (k = 0, letter = false; k < 8; k++) {
			pat[0][k] = hexu[e->own4[o] >> (28 - 4 * k) & 15];
			pat[1][k] = hexl[e->own4[o] >> (28 - 4 * k) & 15];
			letter |= pat[0][k] >= 'A';
		}
		for (c = 0; c < (letter ? 2 : 1); c++) {
			for (t = 0; t + 8 <= n && (q = memmem(s + t, n - t,
			    pat[c], 8)) != NULL; t++) {
				t = (size_t)(q - s);
				/* The start: a token edge, or one digit at one. */
				st = t;
				framed = false;
				if (t > 0 && hex_glue((unsigned char)s[t - 1])) {
					if (!(SC(s[t - 1]) & SC_DIGIT) || (t > 1 &&
					    hex_glue((unsigned char)s[t - 2])))
						continue;
					framed = true;
					st = t - 1;
				}
				en = t + 8;
				if (en < n && (SC(s[en]) & SC_ALNUM))
					continue;
				/* ":port" (1..5 digits), maybe ":N" (framing). */
				port = tail = false;
				for (p = 0; p < 2 && en < n && s[en] == ':'; p++) {
					for (d = 0; en + 1 + d < n && d < 6 &&
					    (SC(s[en + 1 + d]) & SC_DIGIT); d++)
						;
					if (d == 0 || d > 5)
						break;
					en += 1 + d;
					if (p == 0)
						port = true;
					else
						tail = true;
				}
				if ((framed && !tail) || (!port && !letter))
					continue;
				/* What follows ends the token; '.' a sentence. */
				if (en < n && (s[en] == '.' ? en + 1 < n &&
				    hex_glue((unsigned char)s[en + 1]) :
				    hex_glue((unsigned char)s[en]) ||
				    (s[en] == ':' && en + 1 < n &&
				    (SC(s[en + 1]) & SC_DIGIT))))
					continue;
				what_set(h->what, &h->whatlen, s + st, en - st);
				return true;
			}
		}
	}
	return false;
}

/*
 * Search s[0..n) for an own address as a whole token (see rules.h); with
 * b64, also inside base64-looking runs.  Linear in n.
 */
static bool
scan_text(struct ectx *e, const char *s, size_t n, bool b64, struct hit *h)
{
	if (n > RULES_SCAN_MAX)
		n = RULES_SCAN_MAX;
	if (e->nown4 > 0 && (scan_v4(e, s, n, h) || scan_hex8(e, s, n, h)))
		return true;
	if (e->own_v6 && scan_v6(e, s, n, h))
		return true;
	return b64 && scan_b64(e, s, n, h);
}

/* Whether the field name matches pat[0..plen) (a prefix when prefix). */
static bool
name_match(const char *pat, size_t plen, bool prefix, const char *name)
{
	if (strncasecmp(name, pat, plen) != 0)
		return false;
	return prefix || name[plen] == '\0';
}

/* Whether a header field is a trace or identification field (trace_fields). */
static bool
trace_field(const char *name)
{
	size_t i, len;

	for (i = 0; i < sizeof(trace_fields) / sizeof(trace_fields[0]); i++) {
		len = strlen(trace_fields[i]);
		if (trace_fields[i][len - 1] == '*' ?
		    name_match(trace_fields[i], len - 1, true, name) :
		    name_match(trace_fields[i], len, false, name))
			return true;
	}
	return false;
}

/*
 * Whether the text line s[0..n) starts with a trace field ("Received: ";
 * "Received :" too, the obsolete syntax of RFC 5322 4.5).  A name too long
 * to keep is cut, as mime.c cuts it: a prefix ("X-Forwarded-*") still tells.
 */
static bool
trace_line(const char *s, size_t n)
{
	char name[MIME_NAME_MAX];
	size_t i, k;

	for (i = 0, k = 0; i < n && s[i] != ':' && (unsigned char)s[i] > ' ' &&
	    (unsigned char)s[i] < 0x7f; i++)
		if (k < sizeof(name) - 1)
			name[k++] = s[i];
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if (k == 0 || i >= n || s[i] != ':')
		return false;
	name[k] = '\0';
	return trace_field(name);
}

/*
 * The quoting of a text line: the '>' marks it starts with (each maybe after
 * blanks, and with one space after it: "> > "), their count in *depth, the
 * blanks after them in *indent.  Returns the offset of the rest.
 */
static size_t
line_quote(const char *s, size_t n, int *depth, size_t *indent)
{
	size_t i = 0, b;
	int d = 0;

	for (;;) {
		for (b = i; b < n && (s[b] == ' ' || s[b] == '\t'); b++)
			;
		if (b >= n || s[b] != '>')
			break;
		d++;
		i = b + 1;
		if (i < n && s[i] == ' ')
			i++;
	}
	*depth = d;
	*indent = b - i;
	return b;
}

/*
 * The body text, less the trace fields of a message header that the text
 * carries: an attached message's header that the decoding put there
 * (message/rfc822, text/rfc822-headers of a bounce), a header copied inline
 * (a bounce that indents it, a reply that quotes it with "> ").  Such a field
 * is a line that starts, after its quote marks and indentation, with a trace
 * field's name and ':', with its folded lines: the lines after it with the
 * same quote marks and a deeper indentation.  The rest is searched in runs
 * between such lines (with b64, base64 runs too).  The text a base64 run
 * decodes to is searched so, without b64: a header may be sent base64.
 */
static bool
scan_lines(struct ectx *e, const char *s, size_t n, bool b64, struct hit *h)
{
	const char *nl;
	size_t run, i, eol, off, indent, skip_indent = 0;
	int depth, skip_depth = 0;
	bool skip = false;

	if (n > RULES_SCAN_MAX)
		n = RULES_SCAN_MAX;
	for (run = 0, i = 0; i < n; i = eol) {
		nl = memchr(s + i, '\n', n - i);
		eol = nl != NULL ? (size_t)(nl - s) + 1 : n;
		off = line_quote(s + i, eol - i, &depth, &indent);
		if (trace_line(s + i + off, eol - i - off)) {
			skip = true;
			skip_depth = depth;
			skip_indent = indent;
		} else if (skip && depth == skip_depth && indent > skip_indent)
			;	/* a folded line of the skipped field */
		else {
			skip = false;
			continue;
		}
		if (i > run && scan_text(e, s + run, i - run, b64, h))
			return true;
		run = eol;
	}
	return run < n && scan_text(e, s + run, n - run, b64, h);
}

/*
 * Whether an own address is mentioned in the places of m (by default the
 * Subject, every header field but the trace ones, the body), in order.
 */
static bool
m_mentions(struct ectx *e, const struct matcher *m)
{
	const struct mime_msg *mm = ectx_mime(e);
	const struct mime_header *hd;
	const struct place *pl = m->places != NULL ? m->places : place_default;
	int npl = m->places != NULL ? m->nplaces :
	    (int)(sizeof(place_default) / sizeof(place_default[0]));
	struct hit h;
	const struct mime_header *subj = NULL;	/* searched already */
	int i, p;

	if (e->nown == 0)
		own_collect(e);
	memset(&h, 0, sizeof(h));
	for (p = 0; p < npl && e->nown > 0; p++) {
		switch (pl[p].kind) {
		case PL_SUBJECT:
			hd = mime_header_get(mm, "Subject");
			if (hd != NULL && scan_text(e, hd->value, hd->valuelen,
			    true, &h))
				goto found;
			subj = hd;
			break;
		case PL_HEADER:
		case PL_HEADERS:
			for (i = 0; i < mm->nhdrs; i++) {
				hd = &mm->hdrs[i];
				if (pl[p].kind == PL_HEADER ? !name_match(pl[p].name,
				    pl[p].namelen, pl[p].prefix, hd->name) :
				    trace_field(hd->name) || hd == subj)
					continue;
				if (scan_text(e, hd->value, hd->valuelen, true, &h))
					goto found;
			}
			break;
		case PL_BODY:
			if (mm->body != NULL && scan_lines(e, mm->body,
			    mm->bodylen, true, &h)) {
				hd = NULL;
				goto found;
			}
			break;
		}
	}
	if (!m->b)
		ev_add(e, "mentions_own_address", "message", NULL,
		    "no own address", 14);
	return !m->b;
found:
	if (m->b)
		ev_add(e, "mentions_own_address", hd != NULL ? "header" : "body",
		    hd != NULL ? hd->name : NULL, h.what, h.whatlen);
	return m->b;
}

/* Evaluate one matcher. */
static bool
matcher_eval(struct ectx *e, const struct matcher *m)
{
	switch (m->kind) {
	case MK_RCPT_COUNT:
	case MK_SIZE:
		return m_numeric(e, m);
	case MK_CLIENT:
		return m_client(e, m);
	case MK_TLS:
		if (e->f->tls != m->b)
			return false;
		ev_add(e, "tls", "tls", NULL, m->b ? "true" : "false",
		    m->b ? 4 : 5);
		return true;
	case MK_MENTIONS:
		return m_mentions(e, m);
	default:
		return m_string(e, m);
	}
}

/* Evaluate the rules for f->stage; first match wins (see rules.h). */
int
rules_eval(const struct rules *rs, const struct rules_facts *f,
    struct rules_decision *out)
{
	struct ectx e;
	struct jbuf jb;
	const struct rule *r;
	int i, j, k, rc = 0;
	bool ok;

	memset(out, 0, sizeof(*out));
	out->publish = true;
	if (rs == NULL || f == NULL)
		return 0;
	/* The evidence items (most of e) are written before they are read. */
	memset(&e, 0, offsetof(struct ectx, ev));
	e.f = f;
	e.re_left = RE_CALLOUTS_EVAL;
	if ((e.mctx = pcre2_match_context_create(NULL)) != NULL) {
		pcre2_set_match_limit(e.mctx, RE_MATCH_LIMIT);
		pcre2_set_depth_limit(e.mctx, RE_DEPTH_LIMIT);
		pcre2_set_heap_limit(e.mctx, RE_HEAP_LIMIT);
		pcre2_set_callout(e.mctx, re_callout_cb, &e);
	}
	e.md = pcre2_match_data_create(1, NULL);
	if (e.mctx == NULL || e.md == NULL) {
		pcre2_match_data_free(e.md);
		pcre2_match_context_free(e.mctx);
		return -1;
	}
	for (i = 0; i < rs->n && !out->matched; i++) {
		r = &rs->r[i];
		if (!r->enabled || r->stage != f->stage)
			continue;
		for (j = 0; j < r->nc && !out->matched; j++) {
			e.nev = 0;
			ok = true;
			for (k = 0; k < r->c[j].nm && ok; k++)
				ok = matcher_eval(&e, &r->c[j].m[k]);
			if (!ok)
				continue;
			out->matched = true;
			snprintf(out->rule, sizeof(out->rule), "%s", r->name);
			out->relay = r->relay;
			out->publish = r->publish;
			out->reply_code = r->reply_code;
			snprintf(out->reply_text, sizeof(out->reply_text), "%s",
			    r->reply_text);
			snprintf(out->tag, sizeof(out->tag), "%s", r->tag);
		}
	}
	if (out->matched) {
		jb_init(&jb);
		jb_arr_open(&jb);
		for (k = 0; k < e.nev; k++) {
			jb_obj_open(&jb);
			jb_kcstr(&jb, "matcher", e.ev[k].matcher);
			jb_kcstr(&jb, "where", e.ev[k].where);
			jb_kstr(&jb, "what", e.ev[k].what, e.ev[k].whatlen);
			jb_obj_close(&jb);
		}
		jb_arr_close(&jb);
		if (jb.oom || jb.buf == NULL) {
			jb_free(&jb);
			rc = -1;
		} else
			out->evidence = jb.buf;	/* ownership to the caller */
	}
	pcre2_match_data_free(e.md);
	pcre2_match_context_free(e.mctx);
	free(e.body_lc);
	mime_msg_free(&e.mm);
	return rc;
}

/* Free the evidence of a decision and reset it. */
void
rules_decision_clear(struct rules_decision *d)
{
	if (d == NULL)
		return;
	free(d->evidence);
	memset(d, 0, sizeof(*d));
	d->publish = true;
}
