/*
 * Credential policy for AUTH (auth.outcome: policy), in the style of Cowrie's
 * userdb: an ordered list of "user:password" patterns, the first that matches
 * decides, a "!" makes a matching rule refuse, nothing matching refuses.
 *
 *	# comment
 *	!*:{user}			refuse a password equal to the user (or its local part)
 *	!admin:*			refuse the user "admin" whatever the password
 *	{local}@{domain}:??????*	accept a local user at one of our domains, 6+ chars
 *
 * Patterns are fnmatch(3) globs ("*", "?", "[...]", "\" escapes); the user
 * is matched without regard to case, the password exactly.  In the user
 * pattern {domain} stands for each of the sensor's domains and {local} for
 * each of its local users; the password pattern {user}, alone, is the user
 * name or its local part.  The first ":" separates the two patterns (a ":"
 * in the user pattern is written "\:").
 */
#ifndef AUTHDB_H
#define AUTHDB_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define AUTHDB_RULES_MAX	65536	/* after {domain}/{local} expansion */
#define AUTHDB_LINE_MAX		1024

struct authdb;

/* What {domain} and {local} expand to. */
struct authdb_ctx {
	const char *const	*domains;
	int			 ndomains;
	const char *const	*users;
	int			 nusers;
};

/* Parse rules from text; NULL with err set on a bad line. */
struct authdb	*authdb_parse(const char *text, size_t len, const struct authdb_ctx *,
		    char *err, size_t errlen);
/* Read and parse a rules file. */
struct authdb	*authdb_load(const char *path, const struct authdb_ctx *,
		    char *err, size_t errlen);
void		 authdb_free(struct authdb *);
/*
 * true if the pair is accepted.  *line (if not NULL) is the line number of
 * the deciding rule, 0 when none matched.
 */
bool		 authdb_check(const struct authdb *, const char *user, const char *pass,
		    int *line);
int		 authdb_nrules(const struct authdb *);
/*
 * The same without a password (CRAM-MD5 sends only a digest): the rules
 * whose password pattern depends on the password cannot be judged and are
 * skipped; the first other ("user:*") rule that matches decides.
 */
bool		 authdb_check_nopass(const struct authdb *, const char *user, int *line);
/*
 * Is user (or its local part, before the last "@") a Debian system account
 * or alias (root, daemon, postmaster, systemd-*...)?  {local} never expands
 * to one: they have no mailbox password, and "root:anything" is a
 * detector's first try.
 */
bool		 authdb_system_user(const char *user);

/*
 * What each user logged in with, across sessions, remembered per source
 * (the client's /24 or /64, authmem_scope()): a real mailbox has one
 * password, as one client sees it, and no client can pin a mailbox for the
 * others.  At most max entries (AUTHMEM_MAX: 3.6 MB at worst), at most
 * per_scope of them for one source (its oldest forgotten first), each
 * forgotten ttl seconds after its login (auth.memory_ttl); a user or password
 * longer than AUTHMEM_FIELD_MAX is not remembered.  A CRAM-MD5 login is
 * remembered as its challenge and digest, against which a later password
 * from the same source is checked (a later CRAM-MD5 digest cannot be).
 */
#define AUTHMEM_MAX		4096
#define AUTHMEM_PER_SCOPE	16
#define AUTHMEM_TTL_DEFAULT	86400	/* auth.memory_ttl, seconds */
#define AUTHMEM_TTL_MAX		(30 * 86400)
#define AUTHMEM_FIELD_MAX	256
#define AUTHMEM_SCOPE_MAX	64	/* INET6_ADDRSTRLEN + "/64" */

enum authmem_res { AUTHMEM_UNKNOWN, AUTHMEM_MATCH, AUTHMEM_MISMATCH };

struct authmem;
struct sockaddr;

struct authmem	*authmem_new(int max, int per_scope, time_t ttl);
void		 authmem_set_ttl(struct authmem *, time_t ttl);
void		 authmem_free(struct authmem *);
int		 authmem_count(const struct authmem *);
void		 authmem_scope(const struct sockaddr *, char *out, size_t outlen);
/* user is compared without regard to case, the password exactly. */
enum authmem_res authmem_check_pass(const struct authmem *, const char *scope,
		    const char *user, const char *pass, time_t now);
/* digest: 32 hex digits of HMAC-MD5(password, challenge) (RFC 2195). */
enum authmem_res authmem_check_cram(const struct authmem *, const char *scope,
		    const char *user, const char *challenge, const char *digest, time_t now);
void		 authmem_remember_pass(struct authmem *, const char *scope,
		    const char *user, const char *pass, time_t now);
void		 authmem_remember_cram(struct authmem *, const char *scope,
		    const char *user, const char *challenge, const char *digest, time_t now);

/* The shipped default list (etc/credentials.txt holds the same text). */
extern const char authdb_default[];

#endif
