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

/* The shipped default list (etc/credentials.txt holds the same text). */
extern const char authdb_default[];

#endif
