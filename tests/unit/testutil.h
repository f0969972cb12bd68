/*
 * Helpers shared by the cmocka unit tests (tests/unit/test_*.c).
 *
 * Include after <cmocka.h> (the helpers assert with it).  Everything is
 * static inline: a test that uses none of it compiles without warnings, and
 * there is no library to link.  A helper goes here once a second test file
 * needs it; what one file needs stays in that file.
 */

#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/*
 * The whole file at path in a malloc'd buffer with a NUL after its last byte
 * (files may hold NULs: the length is in *lenp when lenp is not NULL).  The
 * test fails when the file cannot be opened or read.  The caller frees.
 */
static inline char *
slurp(const char *path, size_t *lenp)
{
	FILE	*fp = fopen(path, "rb");
	char	*buf;
	long	 n;

	if (fp == NULL)
		fail_msg("slurp: cannot open %s", path);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	n = ftell(fp);
	assert_true(n >= 0);
	assert_int_equal(fseek(fp, 0, SEEK_SET), 0);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	buf[n] = '\0';
	fclose(fp);
	if (lenp != NULL)
		*lenp = (size_t)n;
	return buf;
}

/* nftw callback of rm_rf(): remove one entry (children come first). */
static inline int
testutil_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	(void)remove(path);
	return 0;
}

/* rm -rf path: a test's scratch directory, symbolic links not followed. */
static inline void
rm_rf(const char *path)
{
	(void)nftw(path, testutil_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

#ifdef FOSR_RULES_H
/*
 * Rules from YAML text (include after rules.h): load_ok() fails the test
 * when the text does not load, load_err() when it loads or when its error
 * does not start with want ("t.yml:LINE: KEY: what").
 */
static inline struct rules *
load_ok(const char *yaml)
{
	char err[256] = "";
	struct rules *rs;

	rs = rules_load_buf("t.yml", yaml, strlen(yaml), err, sizeof(err));
	if (rs == NULL)
		fail_msg("load failed: %s", err);
	return rs;
}

static inline void
load_err(const char *yaml, const char *want)
{
	char err[256] = "";
	struct rules *rs;

	rs = rules_load_buf("t.yml", yaml, strlen(yaml), err, sizeof(err));
	if (rs != NULL) {
		rules_free(rs);
		fail_msg("loaded, expected error %s", want);
	}
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("error \"%s\", expected \"%s...\"", err, want);
}
#endif /* FOSR_RULES_H */

#endif /* TESTUTIL_H */
