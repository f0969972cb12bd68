/* Unit tests for spool_path.c: the spool's layout, every path and name, with no spool open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "spool.h"

static const char hex64[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* The spool's layout (spool_path.c): every name, with no spool open. */
static void
test_layout_paths(void **state)
{
	const char *sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	char buf[256], small[20];
	unsigned long long n;

	assert_int_equal(spool_path_message(buf, sizeof(buf), "/s", sha), 0);
	assert_string_equal(buf, "/s/messages/0123456789abcdef0123456789abcdef"
	    "0123456789abcdef0123456789abcdef.eml");
	assert_int_equal(spool_name_message(buf, sizeof(buf), sha), 0);
	assert_string_equal(buf, "0123456789abcdef0123456789abcdef0123456789abcdef"
	    "0123456789abcdef.eml");
	/* Only a content name: never a path out of messages/. */
	assert_int_equal(spool_path_message(buf, sizeof(buf), "/s", "../../etc/passwd"), -1);
	assert_int_equal(spool_path_message(buf, sizeof(buf), "/s",
	    "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"), -1);
	assert_int_equal(spool_path_message(buf, sizeof(buf), "/s", "0123"), -1);
	assert_int_equal(spool_path_message(small, sizeof(small), "/s", sha), -1);
	assert_int_equal(spool_path_journal(buf, sizeof(buf), "/s"), 0);
	assert_string_equal(buf, "/s/receptions.jsonl");
	assert_int_equal(spool_path_segment(buf, sizeof(buf), "/s", 7), 0);
	assert_string_equal(buf, "/s/receptions.jsonl.00000000000000000007");
	assert_true(spool_segment_name("receptions.jsonl.00000000000000000007", &n));
	assert_int_equal(n, 7);
	assert_false(spool_segment_name("receptions.jsonl", &n));
	assert_false(spool_segment_name("receptions.jsonl.", &n));
	assert_false(spool_segment_name("receptions.jsonl.7x", &n));
	assert_false(spool_segment_name("receptions.jsonl.-7", &n));
	assert_false(spool_segment_name("receptions.jsonl.99999999999999999999999", &n));
	assert_int_equal(spool_path_cursor(buf, sizeof(buf), "/s", "6162"), 0);
	assert_string_equal(buf, "/s/feed/6162.cursor");
	assert_true(spool_cursor_name("6162.cursor"));
	assert_false(spool_cursor_name("6162.cursor.tmp"));
	assert_int_equal(spool_path_dir(buf, sizeof(buf), "/s", SPOOL_DIR_RELAY), 0);
	assert_string_equal(buf, "/s/relay");
	assert_int_equal(spool_path_journal(small, 10, "/a/long/spool"), -1);
	/* the analysis worker's (issue 15): attachments only by a content name */
	assert_int_equal(spool_path_attachment(buf, sizeof(buf), "/s", sha), 0);
	assert_string_equal(buf, "/s/attachments/0123456789abcdef0123456789abcdef"
	    "0123456789abcdef0123456789abcdef");
	assert_int_equal(spool_path_attachment(buf, sizeof(buf), "/s", "../x"), -1);
	assert_int_equal(spool_path_attachment(small, sizeof(small), "/s", sha), -1);
	assert_int_equal(spool_path_dir(buf, sizeof(buf), "/s", SPOOL_PARSED_NAME), 0);
	assert_string_equal(buf, "/s/parsed.jsonl");
}

/* A path that fits exactly (its NUL included) is built; one byte less is -1, never cut. */
static void
test_exact_fit(void **state)
{
	char buf[256];
	size_t need;

	(void)state;
	need = strlen("/s/messages/") + 64 + strlen(".eml") + 1;
	assert_int_equal(spool_path_message(buf, need, "/s", hex64), 0);
	assert_int_equal(strlen(buf), need - 1);
	assert_int_equal(spool_path_message(buf, need - 1, "/s", hex64), -1);
	need = 64 + strlen(".eml") + 1;
	assert_int_equal(spool_name_message(buf, need, hex64), 0);
	assert_int_equal(spool_name_message(buf, need - 1, hex64), -1);
	need = strlen("/s/attachments/") + 64 + 1;
	assert_int_equal(spool_path_attachment(buf, need, "/s", hex64), 0);
	assert_int_equal(spool_path_attachment(buf, need - 1, "/s", hex64), -1);
	need = strlen("/s/receptions.jsonl") + 1;
	assert_int_equal(spool_path_journal(buf, need, "/s"), 0);
	assert_int_equal(spool_path_journal(buf, need - 1, "/s"), -1);
	need = strlen("/s/receptions.jsonl.") + 20 + 1;
	assert_int_equal(spool_path_segment(buf, need, "/s", 1), 0);
	assert_int_equal(spool_path_segment(buf, need - 1, "/s", 1), -1);
	need = strlen("/s/feed/6162.cursor") + 1;
	assert_int_equal(spool_path_cursor(buf, need, "/s", "6162"), 0);
	assert_int_equal(spool_path_cursor(buf, need - 1, "/s", "6162"), -1);
	need = strlen("/s/relay") + 1;
	assert_int_equal(spool_path_dir(buf, need, "/s", SPOOL_DIR_RELAY), 0);
	assert_int_equal(spool_path_dir(buf, need - 1, "/s", SPOOL_DIR_RELAY), -1);
}

/* A message or attachment name is exactly 64 lower-case hex digits: nothing longer, no other byte. */
static void
test_content_name_only(void **state)
{
	char buf[256], bad[80];

	(void)state;
	snprintf(bad, sizeof(bad), "%s0", hex64);		/* 65 digits */
	assert_int_equal(spool_name_message(buf, sizeof(buf), bad), -1);
	assert_int_equal(spool_path_attachment(buf, sizeof(buf), "/s", bad), -1);
	snprintf(bad, sizeof(bad), "%.63s", hex64);	/* 63 */
	assert_int_equal(spool_name_message(buf, sizeof(buf), bad), -1);
	assert_int_equal(spool_name_message(buf, sizeof(buf), ""), -1);
	snprintf(bad, sizeof(bad), "%.63s/", hex64);	/* a separator */
	assert_int_equal(spool_path_message(buf, sizeof(buf), "/s", bad), -1);
	snprintf(bad, sizeof(bad), "%.63sg", hex64);	/* not hex */
	assert_int_equal(spool_path_attachment(buf, sizeof(buf), "/s", bad), -1);
	/* A NUL inside: the name is what is before it, too short. */
	memcpy(bad, hex64, 65);
	bad[10] = '\0';
	assert_int_equal(spool_path_message(buf, sizeof(buf), "/s", bad), -1);
}

/* Segment numbers round-trip over the whole range; the name is parsed exactly. */
static void
test_segment_names(void **state)
{
	const unsigned long long nums[] = { 0, 1, 99999, 18446744073709551615ull };
	char buf[256];
	const char *base;
	unsigned long long n;

	(void)state;
	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		assert_int_equal(spool_path_segment(buf, sizeof(buf), "/s", nums[i]), 0);
		base = strrchr(buf, '/') + 1;
		n = 42;
		assert_true(spool_segment_name(base, &n));
		assert_true(n == nums[i]);
	}
	/* Names sort as numbers: fixed width. */
	assert_int_equal(spool_path_segment(buf, sizeof(buf), "/s", 0), 0);
	assert_string_equal(buf, "/s/receptions.jsonl.00000000000000000000");
	assert_true(spool_segment_name("receptions.jsonl.18446744073709551615", &n));
	assert_false(spool_segment_name("receptions.jsonl.18446744073709551616", &n));
	assert_false(spool_segment_name("receptions.jsonl.+7", &n));
	assert_false(spool_segment_name("receptions.jsonl. 7", &n));
	assert_false(spool_segment_name("receptions.jsonl.7 ", &n));
	assert_false(spool_segment_name("receptions.jsonlx7", &n));
	assert_false(spool_segment_name("xreceptions.jsonl.7", &n));
	assert_false(spool_segment_name("receptions.jsonl.7.tmp", &n));
	assert_false(spool_segment_name("", &n));
}

/* A cursor file is <anything>.cursor; the temporary files beside them are not. */
static void
test_cursor_names(void **state)
{
	(void)state;
	assert_true(spool_cursor_name("616e616c79736973.cursor"));
	assert_true(spool_cursor_name("analysis.cursor"));
	assert_false(spool_cursor_name("6162.cursor~"));
	assert_false(spool_cursor_name("6162.cursorx"));
	assert_false(spool_cursor_name("6162.CURSOR"));
	assert_false(spool_cursor_name("cursor"));
	assert_false(spool_cursor_name(""));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout_paths),
		cmocka_unit_test(test_exact_fit),
		cmocka_unit_test(test_content_name_only),
		cmocka_unit_test(test_segment_names),
		cmocka_unit_test(test_cursor_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
