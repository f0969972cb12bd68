/*
 * spool_seg.h on its own (test_spool.c drives it through spool.c): the
 * segment format on disk, the replay of what a crash left (complete records
 * only, a torn or corrupt tail ignored, intact files kept), and a checkpoint
 * that deletes a sealed segment once its files are named.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "spool_seg.h"
#include "util.h"
#include "testutil.h"

struct fixture {
	char	dir[64];
	char	seg[96];
	char	tmp[96];
	char	msg[96];
	int	msg_fd;
};

static const char *const bodies[] = {
	"Subject: one\r\n\r\nfirst\r\n",
	"Subject: two\r\n\r\nsecond, a little longer\r\n",
	"",
};

/* A spool's three directories under a fresh temp dir. */
static int
setup(void **state)
{
	struct fixture	*f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_spool_seg.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->seg, sizeof(f->seg), "%s/segments", f->dir);
	snprintf(f->tmp, sizeof(f->tmp), "%s/tmp", f->dir);
	snprintf(f->msg, sizeof(f->msg), "%s/messages", f->dir);
	assert_int_equal(mkdir(f->seg, 0700), 0);
	assert_int_equal(mkdir(f->tmp, 0700), 0);
	assert_int_equal(mkdir(f->msg, 0700), 0);
	assert_true((f->msg_fd = open(f->msg, O_DIRECTORY | O_RDONLY)) >= 0);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture	*f = *state;

	close(f->msg_fd);
	rm_rf(f->dir);
	free(f);
	return 0;
}

/* sha256 of s as 64 hex digits. */
static void
sha_hex(const char *s, char out[65])
{
	unsigned char	md[EVP_MAX_MD_SIZE];
	unsigned int	mdlen = 0;

	assert_int_equal(EVP_Digest(s, strlen(s), md, &mdlen, EVP_sha256(), NULL), 1);
	util_hex(md, mdlen, out);
}

/* Open the log on f's directories (no checkpoint thread yet). */
static struct spool_seglog *
seg_open(struct fixture *f, bool no_checkpoint)
{
	struct spool_seg_opts	 o;
	struct spool_seglog	*log;

	memset(&o, 0, sizeof(o));
	o.seg_dir = f->seg;
	o.tmp_dir = f->tmp;
	o.msg_dir_fd = f->msg_fd;
	o.no_checkpoint = no_checkpoint;
	o.no_syncfs = true;
	assert_non_null(log = spool_seg_open(&o));
	return log;
}

/* Append bodies[0..n) as one group; hex[i] gets each digest. */
static void
append(struct spool_seglog *log, size_t n, char hex[][65])
{
	struct spool_seg_rec	recs[3];

	for (size_t i = 0; i < n; i++) {
		sha_hex(bodies[i], hex[i]);
		recs[i].hex = hex[i];
		recs[i].data = (const unsigned char *)bodies[i];
		recs[i].len = strlen(bodies[i]);
	}
	assert_int_equal(spool_seg_append(log, recs, n), 0);
}

/* Entries in a directory, dot files excluded; name gets the last one. */
static int
entries(const char *dir, char *name, size_t len)
{
	DIR		*d = opendir(dir);
	struct dirent	*de;
	int		 n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		n++;
		if (name != NULL)
			snprintf(name, len, "%s/%s", dir, de->d_name);
	}
	closedir(d);
	return n;
}

/* messages/<hex>.eml holds exactly want, or is absent when want is NULL. */
static void
assert_eml(struct fixture *f, const char *hex, const char *want)
{
	char	 path[200];
	char	*got;
	size_t	 len;

	snprintf(path, sizeof(path), "%s/%s.eml", f->msg, hex);
	if (want == NULL) {
		assert_int_equal(access(path, F_OK), -1);
		return;
	}
	got = slurp(path, &len);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(got, want, len);
	free(got);
}

/* Records on disk: the documented header, then the bytes, back to back. */
static void
test_format(void **state)
{
	struct fixture		*f = *state;
	struct spool_seglog	*log = seg_open(f, true);
	char			 hex[3][65], path[200], want[128];
	char			*s;
	size_t			 len, off = 0;

	append(log, 2, hex);
	spool_seg_free(log);
	assert_int_equal(entries(f->seg, path, sizeof(path)), 1);
	assert_int_equal(entries(f->msg, NULL, 0), 0);
	s = slurp(path, &len);
	for (int i = 0; i < 2; i++) {
		snprintf(want, sizeof(want), "FOSRSEG1 %.64s %016zx\n", hex[i], strlen(bodies[i]));
		assert_int_equal(strlen(want), SPOOL_SEG_HDR);
		assert_true(off + SPOOL_SEG_HDR + strlen(bodies[i]) <= len);
		assert_memory_equal(s + off, want, SPOOL_SEG_HDR);
		assert_memory_equal(s + off + SPOOL_SEG_HDR, bodies[i], strlen(bodies[i]));
		off += SPOOL_SEG_HDR + strlen(bodies[i]);
	}
	assert_int_equal(off, len);
	free(s);
}

/* Open replays the segments left: every record becomes its .eml, segments go. */
static void
test_replay(void **state)
{
	struct fixture		*f = *state;
	struct spool_seglog	*log = seg_open(f, true);
	char			 hex[3][65];
	uint64_t		 ck, passes, rec;

	append(log, 3, hex);
	spool_seg_free(log);
	assert_int_equal(entries(f->seg, NULL, 0), 1);

	log = seg_open(f, true);
	for (int i = 0; i < 3; i++)
		assert_eml(f, hex[i], bodies[i]);
	assert_int_equal(entries(f->seg, NULL, 0), 0);
	assert_int_equal(entries(f->tmp, NULL, 0), 0);
	spool_seg_get_stats(log, &ck, &passes, &rec);
	assert_int_equal(rec, 3);
	spool_seg_free(log);
}

/* A torn tail (never acknowledged) is not replayed; what precedes it is. */
static void
test_torn_tail(void **state)
{
	struct fixture		*f = *state;
	struct spool_seglog	*log = seg_open(f, true);
	char			 hex[3][65], path[200];
	struct stat		 st;

	append(log, 2, hex);
	spool_seg_free(log);
	assert_int_equal(entries(f->seg, path, sizeof(path)), 1);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(truncate(path, st.st_size - 1), 0);

	spool_seg_free(seg_open(f, true));
	assert_eml(f, hex[0], bodies[0]);
	assert_eml(f, hex[1], NULL);
	assert_int_equal(entries(f->seg, NULL, 0), 0);
}

/* Bytes that do not match their digest end the replay of that segment. */
static void
test_corrupt_record(void **state)
{
	struct fixture		*f = *state;
	struct spool_seglog	*log = seg_open(f, true);
	char			 hex[3][65], path[200];
	int			 fd;

	append(log, 3, hex);
	spool_seg_free(log);
	assert_int_equal(entries(f->seg, path, sizeof(path)), 1);
	/* One byte of the second record's body. */
	assert_true((fd = open(path, O_WRONLY)) >= 0);
	assert_int_equal(pwrite(fd, "X", 1,
	    (off_t)(2 * SPOOL_SEG_HDR + strlen(bodies[0]) + 3)), 1);
	close(fd);

	spool_seg_free(seg_open(f, true));
	assert_eml(f, hex[0], bodies[0]);
	assert_eml(f, hex[1], NULL);
	assert_eml(f, hex[2], NULL);
}

/* An intact file is kept (not counted); a wrong one is replaced whole. */
static void
test_restore_wrong_file(void **state)
{
	struct fixture		*f = *state;
	struct spool_seglog	*log = seg_open(f, true);
	char			 hex[3][65], path[200];
	uint64_t		 ck, passes, rec;
	FILE			*fp;

	append(log, 2, hex);
	spool_seg_free(log);
	snprintf(path, sizeof(path), "%s/%s.eml", f->msg, hex[0]);
	assert_non_null(fp = fopen(path, "w"));
	fputs(bodies[0], fp);
	fclose(fp);
	snprintf(path, sizeof(path), "%s/%s.eml", f->msg, hex[1]);
	assert_non_null(fp = fopen(path, "w"));
	fputs("torn", fp);
	fclose(fp);

	log = seg_open(f, true);
	assert_eml(f, hex[0], bodies[0]);
	assert_eml(f, hex[1], bodies[1]);
	spool_seg_get_stats(log, &ck, &passes, &rec);
	assert_int_equal(rec, 1);
	spool_seg_free(log);
}

/* With the thread: a sealed segment whose files are named is checkpointed away. */
static void
test_checkpoint(void **state)
{
	struct fixture		*f = *state;
	struct spool_seglog	*log = seg_open(f, false);
	char			 hex[3][65], path[200];
	uint64_t		 ck = 0, passes, rec;
	FILE			*fp;

	assert_int_equal(spool_seg_start(log), 0);
	assert_true(spool_seg_seal_due(log) == 0);
	append(log, 1, hex);
	assert_true(spool_seg_seal_due(log) > 0);
	/* The worker names the file, then says so. */
	snprintf(path, sizeof(path), "%s/%s.eml", f->msg, hex[0]);
	assert_non_null(fp = fopen(path, "w"));
	fputs(bodies[0], fp);
	fclose(fp);
	spool_seg_names_done(log);
	assert_int_equal(entries(f->seg, NULL, 0), 1);
	spool_seg_want_checkpoint(log);
	for (int i = 0; i < 500 && ck == 0; i++) {
		struct timespec	ts = { 0, 10 * 1000 * 1000 };

		spool_seg_get_stats(log, &ck, &passes, &rec);
		if (ck == 0)
			nanosleep(&ts, NULL);
	}
	assert_int_equal(ck, 1);
	assert_true(passes >= 1);
	assert_int_equal(entries(f->seg, NULL, 0), 0);
	assert_eml(f, hex[0], bodies[0]);
	spool_seg_free(log);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_format, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_wrong_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
