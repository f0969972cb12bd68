/* Unit tests for authdb.c: the credential policy matcher and the shipped default list. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>

#include "authdb.h"

static const char *const domains[] = { "mail.example.com", "example.com" };
static const char *const users[] = { "root", "postmaster", "alice" };
static const struct authdb_ctx ctx = { domains, 2, users, 3 };

static struct authdb *
parse(const char *text)
{
	char err[256];
	struct authdb *db = authdb_parse(text, strlen(text), &ctx, err, sizeof(err));

	if (db == NULL)
		fail_msg("%s", err);
	return db;
}

static void
expect_parse_err(const char *text, const char *want)
{
	char err[256] = "";
	struct authdb *db = authdb_parse(text, strlen(text), &ctx, err, sizeof(err));

	assert_null(db);
	assert_string_equal(err, want);
}

/* First match decides; "!" refuses; nothing matching refuses. */
static void
test_order_and_negation(void **state)
{
	struct authdb *db = parse("# c\n\n!root:secret\nroot:*\n  bob:b?b  \n");
	int line;

	assert_false(authdb_check(db, "root", "secret", &line));
	assert_int_equal(line, 3);
	assert_true(authdb_check(db, "root", "other", &line));
	assert_int_equal(line, 4);
	assert_true(authdb_check(db, "ROOT", "x", NULL));	/* user: any case */
	assert_true(authdb_check(db, "bob", "bob", NULL));
	assert_false(authdb_check(db, "bob", "BOB", NULL));	/* password: exact */
	assert_false(authdb_check(db, "carol", "x", &line));
	assert_int_equal(line, 0);
	assert_int_equal(authdb_nrules(db), 3);
	authdb_free(db);
	/* no rules at all: everything refused */
	db = parse("");
	assert_false(authdb_check(db, "a", "b", NULL));
	authdb_free(db);
	assert_false(authdb_check(NULL, "a", "b", NULL));
}

/* {domain}, {local} expand; {user} is the user or its local part. */
static void
test_tokens(void **state)
{
	struct authdb *db = parse("!*:{user}\n{local}@{domain}:*\n");

	/* root and postmaster are system accounts: only alice expands */
	assert_int_equal(authdb_nrules(db), 1 + 1 * 2);
	assert_true(authdb_check(db, "alice@example.com", "Tr0ub4dor", NULL));
	assert_true(authdb_check(db, "Alice@MAIL.example.com", "xyzzy1", NULL));
	assert_false(authdb_check(db, "Postmaster@MAIL.example.com", "xyzzy1", NULL));
	assert_false(authdb_check(db, "alice@example.net", "Tr0ub4dor", NULL));
	assert_false(authdb_check(db, "alice@example.com", "alice", NULL));
	assert_false(authdb_check(db, "alice@example.com", "ALICE@example.com", NULL));
	assert_false(authdb_check(db, "mallory@example.com", "Tr0ub4dor", NULL));
	authdb_free(db);
	/* a ":" in the user pattern is escaped; attacker globs are data, not patterns */
	db = parse("a\\:b:x\n");
	assert_true(authdb_check(db, "a:b", "x", NULL));
	authdb_free(db);
	db = parse("alice:*\n");
	assert_false(authdb_check(db, "*", "x", NULL));
	authdb_free(db);
}

static void
test_errors(void **state)
{
	char big[AUTHDB_LINE_MAX + 10];
	char path[] = "/tmp/authdb-test-XXXXXX";
	char err[256];
	int fd;

	expect_parse_err("ok:ok\nnocolon\n", "line 2: expected user:password");
	expect_parse_err(":x\n", "line 1: empty user pattern (\"*\" matches any)");
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	big[1] = ':';
	expect_parse_err(big, "line 1: longer than 1024 bytes");
	{
		char nul[] = "a:b\0c\n";
		assert_null(authdb_parse(nul, sizeof(nul) - 1, &ctx, err, sizeof(err)));
		assert_string_equal(err, "line 1: NUL byte");
	}
	assert_null(authdb_load("/nonexistent/creds", &ctx, err, sizeof(err)));
	assert_string_equal(err, "/nonexistent/creds: No such file or directory");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x:y\nbad\n", 8), 8);
	close(fd);
	assert_null(authdb_load(path, &ctx, err, sizeof(err)));
	assert_non_null(strstr(err, ": line 2: expected user:password"));
	unlink(path);
	/* A FIFO (no writer) is refused at once, never waited on: the load
	   runs on the event loop (SIGHUP). */
	{
		char fifo[64] = "/tmp/authdb-fifo-XXXXXX";
		pid_t pid;
		int st;

		assert_non_null(mkdtemp(fifo));
		strcat(fifo, "/f");	/* room: 64 bytes */
		assert_int_equal(mkfifo(fifo, 0600), 0);
		if ((pid = fork()) == 0) {
			alarm(5);	/* the old open(2) blocked here for ever */
			_exit(authdb_load(fifo, &ctx, err, sizeof(err)) == NULL &&
			    strstr(err, "not a regular file") != NULL ? 0 : 1);
		}
		assert_true(pid > 0);
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
		unlink(fifo);
		*strrchr(fifo, '/') = '\0';
		rmdir(fifo);
	}
}

/*
 * The shipped default: a detector's pairs are refused, plausible mailbox
 * logins get in.  The README's figures come from this list (printed).
 */
static const struct { const char *user, *pass; bool in; } pairs[] = {
	/* what detectors try */
	{ "admin", "admin", false },
	{ "test", "test", false },
	{ "user", "password", false },
	{ "qz8XkP3v", "Jr7mWq2N", false },		/* random garbage */
	{ "x9f2@example.com", "h3kLp0Zq", false },	/* random user at our domain */
	{ "guest", "guest", false },
	{ "administrator", "Summer2024!", false },
	{ "", "", false },
	/* typical brute force against mail servers */
	{ "info@example.com", "123456", false },
	{ "info@example.com", "info", false },
	{ "info@example.com", "info123", true },
	{ "info@example.com", "Password1", false },
	{ "info@example.com", "Welcome2024", false },
	{ "sales@example.com", "sales2024", true },
	{ "support@mail.example.com", "Support@123", true },
	{ "webmaster@example.com", "webmaster", false },
	{ "postmaster@example.com", "qwerty", false },
	{ "postmaster@example.com", "Postmaster2023", false },	/* an alias of root */
	{ "noreply@example.com", "Noreply2023", true },
	{ "contact@example.com", "Contact!2022", true },
	{ "admin@example.com", "admin123", false },
	{ "admin@example.com", "P4ssw0rd!", true },
	{ "office@example.com", "office1", true },
	{ "root", "root", false },
	{ "root", "toor", false },
	{ "root", "abcdef", false },	/* a system account: no mailbox login */
	{ "root@example.com", "Xk29vLq7", false },
	{ "postmaster@example.com", "Xk29vLq7", false },
	{ "alice@example.com", "Xk29vLq7", true },	/* a configured local user */
	{ "alice", "Xk29vLq7", true },
	{ "info", "info2020", false },	/* a role name without our domain */
	{ "info@other.example.net", "info2020", false },	/* not our domain */
	{ "john.smith@example.com", "Smith1985", false },	/* not a known mailbox */
	{ "noreply@example.com", "12345", false },
	{ "newsletter@example.com", "news", false },
};

static void
test_default_list(void **state)
{
	struct authdb *db = parse(authdb_default);
	int in = 0;

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		bool got = authdb_check(db, pairs[i].user, pairs[i].pass, NULL);
		if (got != pairs[i].in)
			fail_msg("%s:%s: %s, expected %s", pairs[i].user, pairs[i].pass,
			    got ? "accepted" : "refused", pairs[i].in ? "accepted" : "refused");
		in += got;
		if (got)
			printf("accepted: %s:%s\n", pairs[i].user, pairs[i].pass);
	}
	printf("default credential policy: %d of %zu pairs accepted\n", in,
	    sizeof(pairs) / sizeof(pairs[0]));
	authdb_free(db);
}


/*
 * F1: {local} never stands for a system account or alias (root, daemon,
 * bin, postmaster...): such accounts have no mailbox password, and a
 * detector's "root:anything" must not get in.
 */
static void
test_local_excludes_system(void **state)
{
	static const char *const u[] = { "root", "daemon", "bin", "www-data", "_apt",
	    "nobody", "postfix", "postmaster", "mailer-daemon", "MAIL", "alice",
	    "systemd-network", "messagebus", "sshd" };
	const struct authdb_ctx c = { domains, 2, u, (int)(sizeof(u) / sizeof(u[0])) };
	char err[256];
	const char *t = "{local}:*\n{local}@{domain}:*\n";
	struct authdb *db = authdb_parse(t, strlen(t), &c, err, sizeof(err));

	assert_non_null(db);
	for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
		char at[128];
		bool want = strcmp(u[i], "alice") == 0;

		snprintf(at, sizeof(at), "%s@example.com", u[i]);
		if (authdb_check(db, u[i], "Xk29vLq7", NULL) != want ||
		    authdb_check(db, at, "Xk29vLq7", NULL) != want)
			fail_msg("%s: %s", u[i], want ? "refused" : "accepted");
		assert_true(authdb_system_user(u[i]) == !want);
	}
	assert_int_equal(authdb_nrules(db), 1 + 2);
	authdb_free(db);
}

/*
 * F9: a {domain}/{local} value is a literal (its "*", "?", "[", "\\" are
 * escaped), and a value that looks like a token is not expanded again.
 */
static void
test_expand_literal(void **state)
{
	static const char *const d[] = { "ex*mple.com", "{domain}" };
	static const char *const u[] = { "a*", "b?", "[c]", "d\\", "{local}", "!e" };
	const struct authdb_ctx c = { d, 2, u, 6 };
	char err[256];
	const char *t = "{local}@{domain}:*\n";
	struct authdb *db = authdb_parse(t, strlen(t), &c, err, sizeof(err));

	assert_non_null(db);
	assert_int_equal(authdb_nrules(db), 12);
	assert_true(authdb_check(db, "a*@ex*mple.com", "Xk29vLq7", NULL));
	assert_false(authdb_check(db, "abc@ex*mple.com", "Xk29vLq7", NULL));
	assert_false(authdb_check(db, "a*@example.com", "Xk29vLq7", NULL));
	assert_true(authdb_check(db, "b?@{domain}", "Xk29vLq7", NULL));
	assert_false(authdb_check(db, "bx@{domain}", "Xk29vLq7", NULL));
	assert_true(authdb_check(db, "[c]@{domain}", "Xk29vLq7", NULL));
	assert_false(authdb_check(db, "c@{domain}", "Xk29vLq7", NULL));
	assert_true(authdb_check(db, "d\\@{domain}", "Xk29vLq7", NULL));
	assert_true(authdb_check(db, "{local}@{domain}", "Xk29vLq7", NULL));
	assert_false(authdb_check(db, "a*@{local}", "Xk29vLq7", NULL));
	assert_true(authdb_check(db, "!e@ex*mple.com", "Xk29vLq7", NULL));
	authdb_free(db);
}

/*
 * F2: CRAM-MD5 carries no password: only rules whose password pattern is
 * "*" can decide (a rule that depends on the password is skipped).
 */
static void
test_check_nopass(void **state)
{
	struct authdb *db = parse(authdb_default);
	int line;

	assert_false(authdb_check_nopass(db, "admin", &line));
	assert_true(line > 0);
	assert_false(authdb_check_nopass(db, "qz8XkP3v", &line));
	assert_int_equal(line, 0);
	assert_false(authdb_check_nopass(db, "root", NULL));
	assert_true(authdb_check_nopass(db, "info@example.com", &line));
	assert_true(line > 0);
	assert_true(authdb_check_nopass(db, "alice", NULL));
	authdb_free(db);
	db = parse("!bob:x*\nbob:*\n");
	assert_true(authdb_check_nopass(db, "bob", &line));
	assert_int_equal(line, 2);
	authdb_free(db);
}

/* RFC 2195's example: tim, "tanstaaftanstaaf". */
#define RFC_CHAL	"<1896.697170952@postoffice.reston.mci.net>"
#define RFC_DIGEST	"b913a602c7eda7a495b4e6e7334d3890"

/*
 * F1: a mailbox has one password, as one client sees it.  Once a user got
 * in with a password from a source (a /24 or /64), another password for that
 * user from that source is refused, in any later session, until the entry
 * expires; the memory is bounded (expired entries go first, then the oldest).
 */
#define SA	"192.0.2.0/24"
#define SB	"198.51.100.0/24"
#define T0	((time_t)1000000)
#define TTL	60

static void
test_memory(void **state)
{
	struct authmem *m = authmem_new(3, 3, TTL);

	assert_int_equal(authmem_check_pass(m, SA, "info@x", "Secret99", T0), AUTHMEM_UNKNOWN);
	authmem_remember_pass(m, SA, "info@x", "Secret99", T0);
	assert_int_equal(authmem_check_pass(m, SA, "info@x", "Secret99", T0), AUTHMEM_MATCH);
	assert_int_equal(authmem_check_pass(m, SA, "INFO@X", "Secret99", T0), AUTHMEM_MATCH);
	assert_int_equal(authmem_check_pass(m, SA, "info@x", "secret99", T0), AUTHMEM_MISMATCH);
	assert_int_equal(authmem_check_pass(m, SA, "info@x", "", T0), AUTHMEM_MISMATCH);
	/* CRAM-MD5 against a remembered password: the digest is checked */
	authmem_remember_pass(m, SA, "tim", "tanstaaftanstaaf", T0);
	assert_int_equal(authmem_check_cram(m, SA, "tim", RFC_CHAL, RFC_DIGEST, T0),
	    AUTHMEM_MATCH);
	assert_int_equal(authmem_check_cram(m, SA, "tim", RFC_CHAL,
	    "B913A602C7EDA7A495B4E6E7334D3890", T0), AUTHMEM_MATCH);
	assert_int_equal(authmem_check_cram(m, SA, "tim", RFC_CHAL,
	    "00000000000000000000000000000000", T0), AUTHMEM_MISMATCH);
	assert_int_equal(authmem_check_cram(m, SA, "nobody@x", RFC_CHAL, RFC_DIGEST, T0),
	    AUTHMEM_UNKNOWN);
	/* a CRAM-MD5 login remembered: a later password is checked against it */
	authmem_remember_cram(m, SA, "tom", RFC_CHAL, RFC_DIGEST, T0 + 1);
	assert_int_equal(authmem_check_pass(m, SA, "tom", "tanstaaftanstaaf", T0), AUTHMEM_MATCH);
	assert_int_equal(authmem_check_pass(m, SA, "tom", "other", T0), AUTHMEM_MISMATCH);
	/* ...and another CRAM-MD5 cannot be checked against it */
	assert_int_equal(authmem_check_cram(m, SA, "tom", "<1.2@h>", RFC_DIGEST, T0),
	    AUTHMEM_UNKNOWN);
	assert_int_equal(authmem_count(m), 3);
	/* bounded: the fourth user pushes out the oldest */
	authmem_remember_pass(m, SA, "sales@x", "Other123", T0 + 2);
	assert_int_equal(authmem_count(m), 3);
	assert_int_equal(authmem_check_pass(m, SA, "info@x", "whatever", T0), AUTHMEM_UNKNOWN);
	assert_int_equal(authmem_check_pass(m, SA, "sales@x", "Other123", T0), AUTHMEM_MATCH);
	/* an over-long field is not remembered */
	{
		char big[AUTHMEM_FIELD_MAX + 2];
		memset(big, 'p', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		authmem_remember_pass(m, SA, "long@x", big, T0);
		assert_int_equal(authmem_check_pass(m, SA, "long@x", "x", T0), AUTHMEM_UNKNOWN);
	}
	authmem_free(m);
	authmem_free(NULL);
}

/*
 * The lock-out: client A logs in once as each plausible mailbox; another
 * source is not refused for any of them (A's memory is A's), A is, until
 * the TTL; A cannot push other sources' entries out beyond its own cap; a
 * junk CRAM-MD5 digest pins nothing for anyone else.
 */
static void
test_memory_scoped(void **state)
{
	struct authmem *m = authmem_new(8, 2, TTL);
	char scope[64];

	authmem_remember_pass(m, SA, "info@x", "Secret99", T0);
	assert_int_equal(authmem_check_pass(m, SB, "info@x", "Other123", T0), AUTHMEM_UNKNOWN);
	authmem_remember_pass(m, SB, "info@x", "Other123", T0);
	assert_int_equal(authmem_check_pass(m, SA, "info@x", "Other123", T0), AUTHMEM_MISMATCH);
	assert_int_equal(authmem_check_pass(m, SB, "info@x", "Other123", T0), AUTHMEM_MATCH);
	assert_int_equal(authmem_check_pass(m, SB, "info@x", "Secret99", T0), AUTHMEM_MISMATCH);
	/* expiry: after TTL seconds A's entry is gone, before it is not */
	assert_int_equal(authmem_check_pass(m, SA, "info@x", "Other123", T0 + TTL - 1),
	    AUTHMEM_MISMATCH);
	assert_int_equal(authmem_check_pass(m, SA, "info@x", "Other123", T0 + TTL),
	    AUTHMEM_UNKNOWN);
	/* a junk CRAM-MD5 digest from A: B's PLAIN logins are not judged by it */
	authmem_remember_cram(m, SA, "sales@x", RFC_CHAL, "0123456789abcdef0123456789abcdef", T0);
	assert_int_equal(authmem_check_pass(m, SB, "sales@x", "Tulip2024x", T0), AUTHMEM_UNKNOWN);
	assert_int_equal(authmem_check_pass(m, SA, "sales@x", "Tulip2024x", T0), AUTHMEM_MISMATCH);
	/* per-source cap: A's third user replaces A's oldest, not B's entry */
	authmem_remember_pass(m, SA, "support@x", "Orchid555", T0 + 1);
	assert_int_equal(authmem_count(m), 3);
	assert_int_equal(authmem_check_pass(m, SA, "info@x", "x", T0 + 1), AUTHMEM_UNKNOWN);
	for (int i = 0; i < 20; i++) {
		char u[32];
		snprintf(u, sizeof(u), "user%d@x", i);
		authmem_remember_pass(m, SA, u, "Secret99", T0 + 2 + i);
	}
	assert_int_equal(authmem_count(m), 3);
	assert_int_equal(authmem_check_pass(m, SB, "info@x", "Other123", T0 + 30), AUTHMEM_MATCH);
	/* expired entries are reused before the table grows */
	authmem_remember_pass(m, "203.0.113.0/24", "a@x", "Secret99", T0 + 3 * TTL);
	assert_int_equal(authmem_count(m), 3);
	assert_int_equal(authmem_check_pass(m, "203.0.113.0/24", "a@x", "Secret99", T0 + 3 * TTL),
	    AUTHMEM_MATCH);
	authmem_free(m);

	/* the source a client is remembered under: its /24, its /64 */
	{
		struct sockaddr_in sin = { .sin_family = AF_INET };
		struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };

		inet_pton(AF_INET, "192.0.2.77", &sin.sin_addr);
		authmem_scope((struct sockaddr *)&sin, scope, sizeof(scope));
		assert_string_equal(scope, "192.0.2.0/24");
		inet_pton(AF_INET6, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", &sin6.sin6_addr);
		authmem_scope((struct sockaddr *)&sin6, scope, sizeof(scope));
		assert_string_equal(scope, "2001:db8:1:2::/64");
		/* an IPv4 client on a dual-stack socket counts as IPv4 */
		inet_pton(AF_INET6, "::ffff:192.0.2.9", &sin6.sin6_addr);
		authmem_scope((struct sockaddr *)&sin6, scope, sizeof(scope));
		assert_string_equal(scope, "192.0.2.0/24");
	}
}

/* The embedded default is etc/credentials.txt. */
static void
test_default_is_etc(void **state)
{
	char path[4096], *buf;
	const char *me = __FILE__, *p = strstr(me, "tests/unit/test_authdb.c");
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%.*setc/credentials.txt", (int)(p ? p - me : 0), me);
	if ((f = fopen(path, "r")) == NULL)
		fail_msg("%s: cannot open", path);
	buf = calloc(1, 1 << 20);
	n = fread(buf, 1, (1 << 20) - 1, f);
	fclose(f);
	assert_int_equal(n, strlen(authdb_default));
	assert_string_equal(buf, authdb_default);
	free(buf);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_and_negation),
		cmocka_unit_test(test_tokens),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_default_list),
		cmocka_unit_test(test_default_is_etc),
		cmocka_unit_test(test_local_excludes_system),
		cmocka_unit_test(test_expand_literal),
		cmocka_unit_test(test_check_nopass),
		cmocka_unit_test(test_memory),
		cmocka_unit_test(test_memory_scoped),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
