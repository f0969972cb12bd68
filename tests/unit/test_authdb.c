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
 * F1: a mailbox has one password.  Once a user got in with a password,
 * another password for that user is refused, in any later session; the
 * memory is bounded (the oldest entry goes).
 */
static void
test_memory(void **state)
{
	struct authmem *m = authmem_new(3);

	assert_int_equal(authmem_check_pass(m, "info@x", "Secret99"), AUTHMEM_UNKNOWN);
	authmem_remember_pass(m, "info@x", "Secret99");
	assert_int_equal(authmem_check_pass(m, "info@x", "Secret99"), AUTHMEM_MATCH);
	assert_int_equal(authmem_check_pass(m, "INFO@X", "Secret99"), AUTHMEM_MATCH);
	assert_int_equal(authmem_check_pass(m, "info@x", "secret99"), AUTHMEM_MISMATCH);
	assert_int_equal(authmem_check_pass(m, "info@x", ""), AUTHMEM_MISMATCH);
	/* CRAM-MD5 against a remembered password: the digest is checked */
	authmem_remember_pass(m, "tim", "tanstaaftanstaaf");
	assert_int_equal(authmem_check_cram(m, "tim", RFC_CHAL, RFC_DIGEST), AUTHMEM_MATCH);
	assert_int_equal(authmem_check_cram(m, "tim", RFC_CHAL,
	    "B913A602C7EDA7A495B4E6E7334D3890"), AUTHMEM_MATCH);
	assert_int_equal(authmem_check_cram(m, "tim", RFC_CHAL,
	    "00000000000000000000000000000000"), AUTHMEM_MISMATCH);
	assert_int_equal(authmem_check_cram(m, "nobody@x", RFC_CHAL, RFC_DIGEST),
	    AUTHMEM_UNKNOWN);
	/* a CRAM-MD5 login remembered: a later password is checked against it */
	authmem_remember_cram(m, "tom", RFC_CHAL, RFC_DIGEST);
	assert_int_equal(authmem_check_pass(m, "tom", "tanstaaftanstaaf"), AUTHMEM_MATCH);
	assert_int_equal(authmem_check_pass(m, "tom", "other"), AUTHMEM_MISMATCH);
	/* ...and another CRAM-MD5 cannot be checked against it */
	assert_int_equal(authmem_check_cram(m, "tom", "<1.2@h>", RFC_DIGEST), AUTHMEM_UNKNOWN);
	assert_int_equal(authmem_count(m), 3);
	/* bounded: the fourth user pushes out the first */
	authmem_remember_pass(m, "sales@x", "Other123");
	assert_int_equal(authmem_count(m), 3);
	assert_int_equal(authmem_check_pass(m, "info@x", "whatever"), AUTHMEM_UNKNOWN);
	assert_int_equal(authmem_check_pass(m, "sales@x", "Other123"), AUTHMEM_MATCH);
	/* an over-long field is not remembered */
	{
		char big[AUTHMEM_FIELD_MAX + 2];
		memset(big, 'p', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		authmem_remember_pass(m, "long@x", big);
		assert_int_equal(authmem_check_pass(m, "long@x", "x"), AUTHMEM_UNKNOWN);
	}
	authmem_free(m);
	authmem_free(NULL);
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
