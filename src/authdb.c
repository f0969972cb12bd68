/*
 * Credential policy (see authdb.h): ordered user:password glob rules.
 * Pure: no I/O but authdb_load's read of the file, no logging.
 */

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <openssl/hmac.h>
#include <openssl/evp.h>

#include "authdb.h"
#include "util.h"

#define AUTHDB_FILE_MAX	(4 * 1024 * 1024)

const char authdb_default[] =
#include "authdb_default.inc"
    ;

struct authdb_rule {
	char	*user;		/* fnmatch pattern, tokens expanded */
	char	*pass;		/* fnmatch pattern; NULL with pass_is_user */
	bool	 deny;
	bool	 pass_is_user;	/* "{user}" */
	int	 line;
};

struct authdb {
	struct authdb_rule	*rules;
	int			 nrules;
	int			 cap;
};

void
authdb_free(struct authdb *db)
{
	if (db == NULL)
		return;
	for (int i = 0; i < db->nrules; i++) {
		free(db->rules[i].user);
		free(db->rules[i].pass);
	}
	free(db->rules);
	free(db);
}

int
authdb_nrules(const struct authdb *db)
{
	return db ? db->nrules : 0;
}

/* Append one expanded rule; takes user (freed on failure). */
static int
authdb_add(struct authdb *db, char *user, const char *pass, bool deny, bool pass_is_user,
    int line, char *err, size_t errlen)
{
	struct authdb_rule *r;

	if (db->nrules >= AUTHDB_RULES_MAX) {
		free(user);
		snprintf(err, errlen, "line %d: more than %d rules after expansion",
		    line, AUTHDB_RULES_MAX);
		return -1;
	}
	if (db->nrules == db->cap) {
		int ncap = db->cap ? db->cap * 2 : 64;
		if ((r = reallocarray(db->rules, (size_t)ncap, sizeof(*r))) == NULL) {
			free(user);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		db->rules = r;
		db->cap = ncap;
	}
	r = &db->rules[db->nrules];
	r->user = user;
	r->pass = pass_is_user ? NULL : strdup(pass);
	if (!pass_is_user && r->pass == NULL) {
		free(user);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	r->deny = deny;
	r->pass_is_user = pass_is_user;
	r->line = line;
	db->nrules++;
	return 0;
}

/* Debian 12's passwd accounts, its aliases, and service accounts of common packages. */
static const char *const system_users[] = {
	"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail",
	"news", "uucp", "proxy", "www-data", "backup", "list", "irc", "gnats",
	"_apt", "nobody", "postfix", "postmaster", "mailer-daemon", "messagebus",
	"sshd", "ntp", "_chrony", "statd", "dovecot", "dovenull", "opendkim",
	"clamav", "debian-exim", "operator", "nogroup",
};

bool
authdb_system_user(const char *user)
{
	const char *at = strrchr(user, '@');
	size_t n = at ? (size_t)(at - user) : strlen(user);

	if (n >= 8 && strncasecmp(user, "systemd-", 8) == 0)
		return true;
	for (size_t i = 0; i < sizeof(system_users) / sizeof(system_users[0]); i++)
		if (strlen(system_users[i]) == n && strncasecmp(user, system_users[i], n) == 0)
			return true;
	return false;
}

/*
 * Expand the first {domain} or {local} of rest (each value in turn) after
 * the already expanded prefix done, then the tokens after it, then add the
 * rule.  A value is a literal: its glob characters are escaped, and the
 * tokens it may hold are not looked at again (only rest is).
 */
static int
authdb_expand(struct authdb *db, const char *done, const char *rest, const char *pass,
    bool deny, bool pass_is_user, const struct authdb_ctx *ctx, int line, char *err,
    size_t errlen)
{
	static const struct { const char *tok; size_t len; } toks[] = {
		{ "{domain}", 8 }, { "{local}", 7 },
	};
	const char *p, *best = NULL, *v;
	const char *const *vals = NULL;
	size_t toklen = 0, n, dn = strlen(done);
	int nvals = 0, i, tok = 0;
	char *u, *w;

	for (i = 0; i < 2; i++)
		if ((p = strstr(rest, toks[i].tok)) != NULL && (best == NULL || p < best)) {
			best = p;
			tok = i;
			toklen = toks[i].len;
			vals = i == 0 ? ctx->domains : ctx->users;
			nvals = i == 0 ? ctx->ndomains : ctx->nusers;
		}
	if (best == NULL) {
		if ((u = malloc(dn + strlen(rest) + 1)) == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		memcpy(u, done, dn);
		strcpy(u + dn, rest);
		return authdb_add(db, u, pass, deny, pass_is_user, line, err, errlen);
	}
	n = (size_t)(best - rest);
	for (i = 0; i < nvals; i++) {
		if (tok == 1 && authdb_system_user(vals[i]))
			continue;
		/* each byte of the value escaped at most: twice its length */
		if ((u = malloc(dn + n + 2 * strlen(vals[i]) + 1)) == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		memcpy(u, done, dn);
		memcpy(u + dn, rest, n);
		w = u + dn + n;
		for (v = vals[i]; *v; v++) {
			if (strchr("*?[]\\", *v) != NULL)
				*w++ = '\\';
			*w++ = *v;
		}
		*w = '\0';
		if (authdb_expand(db, u, best + toklen, pass, deny, pass_is_user, ctx, line,
		    err, errlen) == -1) {
			free(u);
			return -1;
		}
		free(u);
	}
	return 0;
}

/* Parse one line (NUL-terminated, no newline). */
static int
authdb_line(struct authdb *db, char *l, const struct authdb_ctx *ctx, int line,
    char *err, size_t errlen)
{
	char *sep, *e;
	bool deny = false;

	while (*l == ' ' || *l == '\t')
		l++;
	e = l + strlen(l);
	while (e > l && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	if (*l == '\0' || *l == '#')
		return 0;
	if (*l == '!') {
		deny = true;
		l++;
	}
	/* The first ":" not escaped by a backslash. */
	for (sep = l; *sep && *sep != ':'; sep++)
		if (*sep == '\\' && sep[1] != '\0')
			sep++;
	if (*sep != ':') {
		snprintf(err, errlen, "line %d: expected user:password", line);
		return -1;
	}
	*sep++ = '\0';
	if (*l == '\0') {
		snprintf(err, errlen, "line %d: empty user pattern (\"*\" matches any)", line);
		return -1;
	}
	return authdb_expand(db, "", l, sep, deny, strcmp(sep, "{user}") == 0, ctx, line,
	    err, errlen);
}

struct authdb *
authdb_parse(const char *text, size_t len, const struct authdb_ctx *ctx, char *err,
    size_t errlen)
{
	struct authdb *db;
	char buf[AUTHDB_LINE_MAX + 1];
	size_t off = 0, n;
	const char *nl;
	int line = 0;

	if ((db = calloc(1, sizeof(*db))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	while (off < len) {
		line++;
		nl = memchr(text + off, '\n', len - off);
		n = nl ? (size_t)(nl - (text + off)) : len - off;
		if (n > AUTHDB_LINE_MAX) {
			snprintf(err, errlen, "line %d: longer than %d bytes", line, AUTHDB_LINE_MAX);
			goto fail;
		}
		if (memchr(text + off, '\0', n) != NULL) {
			snprintf(err, errlen, "line %d: NUL byte", line);
			goto fail;
		}
		memcpy(buf, text + off, n);
		buf[n] = '\0';
		if (authdb_line(db, buf, ctx, line, err, errlen) == -1)
			goto fail;
		off += n + (nl != NULL);
	}
	return db;
fail:
	authdb_free(db);
	return NULL;
}

struct authdb *
authdb_load(const char *path, const struct authdb_ctx *ctx, char *err, size_t errlen)
{
	struct authdb *db;
	struct stat st;
	char *text, e2[256];
	ssize_t r;
	size_t got = 0;
	int fd;

	/* O_NONBLOCK: a FIFO put in its place must not block the loop (SIGHUP). */
	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) || st.st_size > AUTHDB_FILE_MAX) {
		snprintf(err, errlen, "%s: not a regular file of at most %d bytes", path,
		    AUTHDB_FILE_MAX);
		close(fd);
		return NULL;
	}
	if ((text = malloc((size_t)st.st_size + 1)) == NULL) {
		snprintf(err, errlen, "out of memory");
		close(fd);
		return NULL;
	}
	while (got < (size_t)st.st_size) {
		r = read(fd, text + got, (size_t)st.st_size - got);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	db = authdb_parse(text, got, ctx, e2, sizeof(e2));
	free(text);
	if (db == NULL)
		snprintf(err, errlen, "%s: %s", path, e2);
	return db;
}

/* Does pass equal user, or user's local part (before the last "@")? */
static bool
authdb_pass_is_user(const char *user, const char *pass)
{
	const char *at = strrchr(user, '@');

	if (strcasecmp(user, pass) == 0)
		return true;
	return at != NULL && (size_t)(at - user) == strlen(pass) &&
	    strncasecmp(user, pass, (size_t)(at - user)) == 0;
}

bool
authdb_check(const struct authdb *db, const char *user, const char *pass, int *line)
{
	const struct authdb_rule *r;

	if (line)
		*line = 0;
	if (db == NULL)
		return false;
	for (int i = 0; i < db->nrules; i++) {
		r = &db->rules[i];
		if (fnmatch(r->user, user, FNM_CASEFOLD) != 0)
			continue;
		if (r->pass_is_user ? !authdb_pass_is_user(user, pass) :
		    fnmatch(r->pass, pass, 0) != 0)
			continue;
		if (line)
			*line = r->line;
		return !r->deny;
	}
	return false;
}

bool
authdb_check_nopass(const struct authdb *db, const char *user, int *line)
{
	const struct authdb_rule *r;

	if (line)
		*line = 0;
	if (db == NULL)
		return false;
	for (int i = 0; i < db->nrules; i++) {
		r = &db->rules[i];
		if (r->pass_is_user || strcmp(r->pass, "*") != 0)
			continue;
		if (fnmatch(r->user, user, FNM_CASEFOLD) != 0)
			continue;
		if (line)
			*line = r->line;
		return !r->deny;
	}
	return false;
}

/* ---- what each user logged in with, as each source saw it ---- */

/*
 * Scoped to the client's source (its /24 or /64): the consistency a detector
 * can see (the same client, the same mailbox, two passwords) holds, and no
 * client's logins can refuse another's.  At most max entries of at most
 * 3 * (AUTHMEM_FIELD_MAX + 1) bytes of strings each besides the entry (4096
 * entries: 3.6 MB at worst); a source keeps at most per_scope of them (its oldest
 * goes), an entry expires ttl seconds after its login, and when the table is
 * full an expired entry, else the oldest, is replaced.  One linear pass per
 * AUTH (4096 compares at most).
 */
struct authmem_ent {
	char	 scope[AUTHMEM_SCOPE_MAX];
	time_t	 when;		/* the login that set it */
	char	*user;
	char	*pass;		/* NULL: a CRAM-MD5 login, chal and digest */
	char	*chal;
	char	*digest;
};

struct authmem {
	struct authmem_ent	*ent;
	int			 max;
	int			 per_scope;
	time_t			 ttl;
	int			 n;
};

struct authmem *
authmem_new(int max, int per_scope, time_t ttl)
{
	struct authmem *m;

	if (max < 1 || per_scope < 1 || ttl < 1 || (m = calloc(1, sizeof(*m))) == NULL)
		return NULL;
	if ((m->ent = calloc((size_t)max, sizeof(*m->ent))) == NULL) {
		free(m);
		return NULL;
	}
	m->max = max;
	m->per_scope = per_scope;
	m->ttl = ttl;
	return m;
}

void
authmem_set_ttl(struct authmem *m, time_t ttl)
{
	if (m != NULL && ttl > 0)
		m->ttl = ttl;
}

/* The source a client is remembered under: "a.b.c.0/24" or "x:x:x:x::/64". */
void
authmem_scope(const struct sockaddr *sa, char *out, size_t outlen)
{
	util_net_scope(sa, out, outlen);
}

static void
authmem_clear(struct authmem_ent *e)
{
	free(e->user);
	free(e->pass);
	free(e->chal);
	free(e->digest);
	memset(e, 0, sizeof(*e));
}

void
authmem_free(struct authmem *m)
{
	if (m == NULL)
		return;
	for (int i = 0; i < m->n; i++)
		authmem_clear(&m->ent[i]);
	free(m->ent);
	free(m);
}

int
authmem_count(const struct authmem *m)
{
	return m ? m->n : 0;
}

static bool
authmem_live(const struct authmem *m, const struct authmem_ent *e, time_t now)
{
	return e->user != NULL && now - e->when < m->ttl;
}

static struct authmem_ent *
authmem_find(const struct authmem *m, const char *scope, const char *user, time_t now)
{
	if (m == NULL)
		return NULL;
	for (int i = 0; i < m->n; i++)
		if (authmem_live(m, &m->ent[i], now) && strcmp(m->ent[i].scope, scope) == 0 &&
		    strcasecmp(m->ent[i].user, user) == 0)
			return &m->ent[i];
	return NULL;
}

/* Does digest (hex, any case) equal HMAC-MD5(pass, chal)? */
static bool
authmem_cram_ok(const char *pass, const char *chal, const char *digest)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1];

	if (HMAC(EVP_md5(), pass, (int)strlen(pass), (const unsigned char *)chal,
	    strlen(chal), md, &mdlen) == NULL)
		return false;
	for (unsigned int i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return strlen(digest) == 2 * (size_t)mdlen && strcasecmp(hex, digest) == 0;
}

enum authmem_res
authmem_check_pass(const struct authmem *m, const char *scope, const char *user,
    const char *pass, time_t now)
{
	const struct authmem_ent *e = authmem_find(m, scope, user, now);

	if (e == NULL)
		return AUTHMEM_UNKNOWN;
	if (e->pass != NULL)
		return strcmp(e->pass, pass) == 0 ? AUTHMEM_MATCH : AUTHMEM_MISMATCH;
	return authmem_cram_ok(pass, e->chal, e->digest) ? AUTHMEM_MATCH : AUTHMEM_MISMATCH;
}

enum authmem_res
authmem_check_cram(const struct authmem *m, const char *scope, const char *user,
    const char *chal, const char *digest, time_t now)
{
	const struct authmem_ent *e = authmem_find(m, scope, user, now);

	if (e == NULL || e->pass == NULL)
		return AUTHMEM_UNKNOWN;
	return authmem_cram_ok(e->pass, chal, digest) ? AUTHMEM_MATCH : AUTHMEM_MISMATCH;
}

/*
 * The entry for (scope, user), in one pass: its own; else, when the source
 * has per_scope entries, its oldest (one source never pushes out another's);
 * else an expired one; else a free one; else the oldest of all.
 */
static struct authmem_ent *
authmem_slot(struct authmem *m, const char *scope, const char *user, time_t now)
{
	struct authmem_ent *e, *mine = NULL, *expired = NULL, *oldest = NULL;
	int nmine = 0;

	for (int i = 0; i < m->n; i++) {
		e = &m->ent[i];
		if (!authmem_live(m, e, now)) {
			if (expired == NULL)
				expired = e;
			continue;
		}
		if (strcmp(e->scope, scope) == 0) {
			if (strcasecmp(e->user, user) == 0) {
				authmem_clear(e);
				return e;
			}
			nmine++;
			if (mine == NULL || e->when < mine->when)
				mine = e;
		}
		if (oldest == NULL || e->when < oldest->when)
			oldest = e;
	}
	if (nmine >= m->per_scope)
		e = mine;
	else if (expired != NULL)
		e = expired;
	else if (m->n < m->max)
		return &m->ent[m->n++];
	else
		e = oldest;
	authmem_clear(e);
	return e;
}

/* Drop a half-filled entry (out of memory): keep the array dense. */
static void
authmem_drop(struct authmem *m, struct authmem_ent *e)
{
	struct authmem_ent *last = &m->ent[m->n - 1];

	authmem_clear(e);
	if (e != last) {
		*e = *last;
		memset(last, 0, sizeof(*last));
	}
	m->n--;
}

static bool
authmem_fits(const char *scope, const char *user)
{
	return strlen(scope) < AUTHMEM_SCOPE_MAX && strlen(user) <= AUTHMEM_FIELD_MAX;
}

void
authmem_remember_pass(struct authmem *m, const char *scope, const char *user,
    const char *pass, time_t now)
{
	struct authmem_ent *e;

	if (m == NULL || !authmem_fits(scope, user) || strlen(pass) > AUTHMEM_FIELD_MAX)
		return;
	e = authmem_slot(m, scope, user, now);
	snprintf(e->scope, sizeof(e->scope), "%s", scope);
	e->when = now;
	if ((e->user = strdup(user)) == NULL || (e->pass = strdup(pass)) == NULL)
		authmem_drop(m, e);
}

void
authmem_remember_cram(struct authmem *m, const char *scope, const char *user,
    const char *chal, const char *digest, time_t now)
{
	struct authmem_ent *e;

	if (m == NULL || !authmem_fits(scope, user) || strlen(chal) > AUTHMEM_FIELD_MAX ||
	    strlen(digest) > AUTHMEM_FIELD_MAX)
		return;
	e = authmem_slot(m, scope, user, now);
	snprintf(e->scope, sizeof(e->scope), "%s", scope);
	e->when = now;
	if ((e->user = strdup(user)) == NULL || (e->chal = strdup(chal)) == NULL ||
	    (e->digest = strdup(digest)) == NULL)
		authmem_drop(m, e);
}
