/*
 * The spool's layout: every path of the spool, built here (see spool.h).
 * Pure functions: the console, hpfeeds and main use them with no spool open.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spool.h"


/* snprintf into buf: 0, or -1 when it did not fit. */
static int
spool_path_fmt(char *buf, size_t len, int n)
{
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* A message's name: its content's SHA-256, lower-case hex. */
static bool
spool_sha256_ok(const char *sha256)
{
	return strlen(sha256) == 64 && strspn(sha256, "0123456789abcdef") == 64;
}

int
spool_name_message(char *buf, size_t len, const char *sha256)
{
	if (!spool_sha256_ok(sha256))
		return -1;
	return spool_path_fmt(buf, len, snprintf(buf, len, "%s.eml", sha256));
}

int
spool_path_message(char *buf, size_t len, const char *spool_dir, const char *sha256)
{
	if (!spool_sha256_ok(sha256))
		return -1;
	return spool_path_fmt(buf, len, snprintf(buf, len, "%s/" SPOOL_DIR_MESSAGES "/%s.eml",
	    spool_dir, sha256));
}

int
spool_path_attachment(char *buf, size_t len, const char *spool_dir, const char *sha256)
{
	if (!spool_sha256_ok(sha256))
		return -1;
	return spool_path_fmt(buf, len, snprintf(buf, len, "%s/" SPOOL_DIR_ATTACHMENTS "/%s",
	    spool_dir, sha256));
}

int
spool_path_journal(char *buf, size_t len, const char *spool_dir)
{
	return spool_path_fmt(buf, len, snprintf(buf, len, "%s/" SPOOL_JOURNAL_NAME,
	    spool_dir));
}

int
spool_path_segment(char *buf, size_t len, const char *spool_dir, unsigned long long n)
{
	return spool_path_fmt(buf, len, snprintf(buf, len, "%s/" SPOOL_JOURNAL_NAME ".%020llu",
	    spool_dir, n));
}

/* receptions.jsonl.<digits>, the number not above ULLONG_MAX. */
bool
spool_segment_name(const char *name, unsigned long long *n)
{
	size_t bl = sizeof(SPOOL_JOURNAL_NAME) - 1;
	char *end;

	if (strncmp(name, SPOOL_JOURNAL_NAME ".", bl + 1) != 0 || name[bl + 1] < '0' ||
	    name[bl + 1] > '9')
		return false;
	errno = 0;
	*n = strtoull(name + bl + 1, &end, 10);
	return *end == '\0' && errno == 0;
}

int
spool_path_dir(char *buf, size_t len, const char *spool_dir, const char *sub)
{
	return spool_path_fmt(buf, len, snprintf(buf, len, "%s/%s", spool_dir, sub));
}

int
spool_path_cursor(char *buf, size_t len, const char *spool_dir, const char *channel_hex)
{
	return spool_path_fmt(buf, len, snprintf(buf, len, "%s/" SPOOL_DIR_FEED "/%s"
	    SPOOL_CURSOR_SUFFIX, spool_dir, channel_hex));
}

bool
spool_cursor_name(const char *name)
{
	size_t nl = strlen(name), sl = sizeof(SPOOL_CURSOR_SUFFIX) - 1;

	return nl >= sl && strcmp(name + nl - sl, SPOOL_CURSOR_SUFFIX) == 0;
}
