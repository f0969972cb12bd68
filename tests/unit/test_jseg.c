/* Unit tests for jseg.c: segment names, scan, and the pruning rules. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jseg.h"
#include "testutil.h"

#define BASE	"parsed.jsonl"

struct fx {
	char	 dir[64];
	char	 feed[96];
};

static void
put(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static unsigned long long
ino_of(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (unsigned long long)st.st_ino;
}

static bool
exists(struct fx *f, unsigned long long n)
{
	char p[256];

	assert_int_equal(jseg_path(p, sizeof(p), f->dir, BASE, n), 0);
	return access(p, F_OK) == 0;
}

/* Segments 1..4 of 10 bytes each and the live file. */
static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char p[256];
	unsigned long long n;

	snprintf(f->dir, sizeof(f->dir), "/tmp/fosr-jseg-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->feed, sizeof(f->feed), "%s/feed", f->dir);
	assert_int_equal(mkdir(f->feed, 0700), 0);
	for (n = 1; n <= 4; n++) {
		assert_int_equal(jseg_path(p, sizeof(p), f->dir, BASE, n), 0);
		put(p, "{\"a\":123}\n");
	}
	snprintf(p, sizeof(p), "%s/" BASE, f->dir);
	put(p, "{\"b\":1}\n");
	/* another journal's segment: never touched */
	snprintf(p, sizeof(p), "%s/receptions.jsonl.00000000000000000001", f->dir);
	put(p, "x\n");
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	rm_rf(f->dir);
	free(f);
	return 0;
}

static void
cursor(struct fx *f, const char *name, const char *text)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/%s.cursor", f->feed, name);
	put(p, text);
}

static void
test_names(void **state)
{
	char p[64];
	unsigned long long n;

	assert_int_equal(jseg_path(p, sizeof(p), "/s", BASE, 7), 0);
	assert_string_equal(p, "/s/parsed.jsonl.00000000000000000007");
	assert_int_equal(jseg_path(p, 8, "/s", BASE, 7), -1);
	assert_true(jseg_name("parsed.jsonl.00000000000000000012", BASE, &n));
	assert_int_equal(n, 12);
	assert_false(jseg_name("parsed.jsonl", BASE, &n));
	assert_false(jseg_name("parsed.jsonl.", BASE, &n));
	assert_false(jseg_name("parsed.jsonl.1x", BASE, &n));
	assert_false(jseg_name("parsed.jsonl.gz", BASE, &n));
	assert_false(jseg_name("parsed.jsonlx.1", BASE, &n));
	assert_false(jseg_name("receptions.jsonl.1", BASE, &n));
}

static void
test_scan(void **state)
{
	struct fx *f = *state;
	unsigned long long last;
	uint64_t bytes;

	assert_int_equal(jseg_scan(f->dir, BASE, &last, &bytes), 0);
	assert_int_equal(last, 4);
	assert_int_equal(bytes, 40);
}

/* Only what every cursor is past: older than the oldest segment pointed into. */
static void
test_prune_by_cursor(void **state)
{
	struct fx *f = *state;
	char p[256], text[128];
	uint64_t freed = 0;

	assert_int_equal(jseg_path(p, sizeof(p), f->dir, BASE, 3), 0);
	snprintf(text, sizeof(text), "5 ino=%llu dev=1 line=0:0 head=0:0\n", ino_of(p));
	cursor(f, "a", text);
	snprintf(p, sizeof(p), "%s/" BASE, f->dir);
	snprintf(text, sizeof(text), "3 ino=%llu dev=1 line=0:0 head=0:0\n", ino_of(p));
	cursor(f, "b", text);
	/* a cursor over another file (the reception journal): no say here */
	cursor(f, "c", "9 ino=1 dev=1 line=0:0 head=0:0\n");
	assert_int_equal(jseg_prune(f->dir, BASE, f->feed, 0, "test", &freed), 2);
	assert_int_equal(freed, 20);
	assert_false(exists(f, 1));
	assert_false(exists(f, 2));
	assert_true(exists(f, 3));
	assert_true(exists(f, 4));
	snprintf(p, sizeof(p), "%s/receptions.jsonl.00000000000000000001", f->dir);
	assert_int_equal(access(p, F_OK), 0);
}

/* Beyond the newest keep only; no cursor at all: every reader is past them. */
static void
test_prune_keep(void **state)
{
	struct fx *f = *state;
	uint64_t freed = 0;

	assert_int_equal(jseg_prune(f->dir, BASE, f->feed, 4, "test", &freed), 0);
	assert_int_equal(jseg_prune(f->dir, BASE, f->feed, 1, "test", &freed), 3);
	assert_int_equal(freed, 30);
	assert_true(exists(f, 4));
	assert_false(exists(f, 3));
}

/* When in doubt, keep: a cursor without an inode, or one that cannot be read. */
static void
test_prune_in_doubt(void **state)
{
	struct fx *f = *state;
	char p[256];
	uint64_t freed = 0;

	cursor(f, "old", "12\n");
	assert_int_equal(jseg_prune(f->dir, BASE, f->feed, 0, "test", &freed), 0);
	assert_true(exists(f, 1));
	snprintf(p, sizeof(p), "%s/old.cursor", f->feed);
	assert_int_equal(unlink(p), 0);
	snprintf(p, sizeof(p), "%s/dir.cursor", f->feed);
	assert_int_equal(mkdir(p, 0700), 0);	/* read(2): EISDIR */
	assert_int_equal(jseg_prune(f->dir, BASE, f->feed, 0, "test", &freed), -1);
	assert_int_equal(freed, 0);
	assert_true(exists(f, 1) && exists(f, 4));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test_setup_teardown(test_scan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prune_by_cursor, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prune_keep, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prune_in_doubt, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
