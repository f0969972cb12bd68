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

	assert_int_equal(authdb_nrules(db), 1 + 3 * 2);
	assert_true(authdb_check(db, "alice@example.com", "Tr0ub4dor", NULL));
	assert_true(authdb_check(db, "Postmaster@MAIL.example.com", "xyzzy1", NULL));
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
	{ "postmaster@example.com", "Postmaster2023", true },
	{ "contact@example.com", "Contact!2022", true },
	{ "admin@example.com", "admin123", false },
	{ "admin@example.com", "P4ssw0rd!", true },
	{ "office@example.com", "office1", true },
	{ "root", "root", false },
	{ "root", "toor", false },
	{ "root", "abcdef", true },
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
	}
	printf("default credential policy: %d of %zu pairs accepted\n", in,
	    sizeof(pairs) / sizeof(pairs[0]));
	authdb_free(db);
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
