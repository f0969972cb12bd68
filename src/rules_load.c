/*
 * Probe rules, loading (see rules.h).  The file is YAML read through
 * yaml_util and walked against a fixed schema: every error names the file,
 * the line and the dotted key, and unknown keys are errors.  A loaded rule
 * set is read-only (rules.c evaluates it).
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "log.h"
#include "rules_int.h"
#include "util.h"
#include "yaml_util.h"

const char *const rules_mkind_names[MK_COUNT] = {
	"header", "subject", "body", "mail_from", "rcpt", "rcpt_count",
	"helo", "auth_user", "auth_pass", "client", "size", "tls",
	"mentions_own_address",
};
static const char *const nop_names[NOP_COUNT] = { "lt", "le", "gt", "ge", "eq" };
static const char *const stage_names[] = { "ehlo", "auth", "rset", "data" };

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


static int	 values_parse(struct yu_ctx *, yaml_node_t *, const char *,
		    struct strtest *);
static int	 regex_compile(struct yu_ctx *, yaml_node_t *, const char *,
		    struct strtest *);
static int	 strtest_key_cb(struct yu_ctx *, int, const char *,
		    yaml_node_t *, void *);
static int	 strtest_parse(struct yu_ctx *, yaml_node_t *, const char *,
		    bool, struct strtest *);
static int	 cidr_parse(const char *, struct cidr *);
static int	 num_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 matcher_parse(struct yu_ctx *, int, const char *,
		    yaml_node_t *, struct matcher *);
static int	 place_parse(struct yu_ctx *, yaml_node_t *, const char *,
		    struct place *);
static int	 mo_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static void	 cond_order(struct cond *);
static int	 cond_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 reply_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 actions_key_cb(struct yu_ctx *, int, const char *,
		    yaml_node_t *, void *);
static int	 rule_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 rule_parse(struct yu_ctx *, yaml_node_t *, const char *,
		    struct rule *);
static int	 top_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 rule_cmp(const void *, const void *);
static void	 strtest_free(struct strtest *);

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
		if ((v = yu_seq_item(x, n, path, items, i, ipath,
		    sizeof(ipath))) == NULL)
			return -1;
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
	char ipath[YU_PATH_MAX], buf[INET6_ADDRSTRLEN + 8], esc[4 * sizeof(buf)];
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
			if ((iv = yu_seq_item(x, v, path, items, i, ipath,
			    sizeof(ipath))) == NULL)
				return -1;
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
			if ((iv = yu_seq_item(x, v, path, items, i, ipath,
			    sizeof(ipath))) == NULL)
				return -1;
			if (yu_str(x, iv, ipath, buf, sizeof(buf), false) == -1)
				return -1;
			if (cidr_parse(buf, &m->cidrs[i]) == -1)
				return yu_error(x, iv, ipath,
				    "expected an address or CIDR such as "
				    "192.0.2.0/24 or 2001:db8::/32, got \"%s\"",
				    log_escape(esc, sizeof(esc), buf, strlen(buf)));
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
		if ((iv = yu_seq_item(x, v, path, items, i, ipath,
		    sizeof(ipath))) == NULL)
			return -1;
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
			if ((iv = yu_seq_item(x, v, path, items, i, ipath,
			    sizeof(ipath))) == NULL)
				return -1;
			r->nc++;
			if ((r->c[i].m = calloc(MK_COUNT,
			    sizeof(*r->c[i].m))) == NULL)
				return yu_error(x, v, path, "out of memory");
			cs.c = &r->c[i];
			cs.stage = r->stage;
			if (yu_map_walk(x, iv, ipath, rules_mkind_names, MK_COUNT,
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
	char ipath[YU_PATH_MAX], esc[128];
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
		if ((iv = yu_seq_item(x, v, path, items, i, ipath,
		    sizeof(ipath))) == NULL)
			return -1;
		rs->n++;
		rs->r[i].order = i;
		if (rule_parse(x, iv, ipath, &rs->r[i]) == -1)
			return -1;
		for (j = 0; j < i; j++)
			if (strcmp(rs->r[j].name, rs->r[i].name) == 0)
				return yu_error(x, iv, ipath,
				    "duplicate rule name \"%s\"", log_escape(esc,
				    sizeof(esc), rs->r[i].name, strlen(rs->r[i].name)));
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
