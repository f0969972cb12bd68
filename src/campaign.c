/*
 * Campaign table: ssdeep fingerprints compared against every kept campaign
 * (fuzzy_compare is a few microseconds; the table is bounded), LRU eviction,
 * atomic rewrite of one text file.  See campaign.h for the format.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fuzzy.h>

#include "campaign.h"
#include "util.h"

struct campaigns {
	char		*path;		/* NULL: memory only */
	struct campaign	*c;
	size_t		 n;
	size_t		 max;
	int		 threshold;
	uint64_t	 next;
	bool		 dirty;
};

static bool	fp_valid(const char *, size_t);
static int	load(struct campaigns *, char *, size_t);

/* "blocksize:hash:hash", base64 alphabet, shorter than CAMPAIGN_FP_MAX. */
static bool
fp_valid(const char *s, size_t len)
{
	size_t i, colons = 0;

	if (len == 0 || len >= CAMPAIGN_FP_MAX || s[0] < '1' || s[0] > '9')
		return false;
	for (i = 0; i < len; i++) {
		if (s[i] == ':') {
			if (++colons > 2)
				return false;
		} else if (colons == 0 ? !(s[i] >= '0' && s[i] <= '9') :
		    !((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' &&
		    s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		    s[i] == '+' || s[i] == '/'))
			return false;
	}
	return colons == 2;
}

struct campaigns *
campaigns_open(const char *path, size_t max, int threshold, char *err,
    size_t errlen)
{
	struct campaigns *cp;

	if ((cp = calloc(1, sizeof(*cp))) == NULL)
		goto oom;
	cp->max = max ? max : CAMPAIGN_MAX_DEFAULT;
	cp->threshold = threshold > 0 && threshold <= 100 ? threshold :
	    CAMPAIGN_THRESHOLD_DEFAULT;
	cp->next = 1;
	if ((cp->c = calloc(cp->max, sizeof(*cp->c))) == NULL)
		goto oom;
	if (path != NULL) {
		if ((cp->path = strdup(path)) == NULL)
			goto oom;
		if (load(cp, err, errlen) == -1) {
			campaigns_free(cp);
			return NULL;
		}
	}
	return cp;
oom:
	snprintf(err, errlen, "campaigns: out of memory");
	campaigns_free(cp);
	return NULL;
}

void
campaigns_free(struct campaigns *cp)
{
	if (cp == NULL)
		return;
	free(cp->c);
	free(cp->path);
	free(cp);
}

/*
 * Read the file.  Absent is an empty table; anything that does not parse is
 * an error naming the line, so a damaged table is looked at, not overwritten.
 * More records than max keeps the most recently seen.
 */
static int
load(struct campaigns *cp, char *err, size_t errlen)
{
	FILE *fp;
	char *line = NULL, fpbuf[CAMPAIGN_FP_MAX + 1];
	size_t cap = 0;
	ssize_t n;
	unsigned long lineno = 0;
	int rc = -1;

	if ((fp = fopen(cp->path, "re")) == NULL) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", cp->path, strerror(errno));
		return -1;
	}
	while ((n = getline(&line, &cap, fp)) != -1) {
		struct campaign c;
		long long first, last;
		int used = 0;

		lineno++;
		if (n == 0 || line[n - 1] != '\n' || (size_t)n > 256) {
			snprintf(err, errlen, "%s:%lu: torn or overlong line",
			    cp->path, lineno);
			goto out;
		}
		line[n - 1] = '\0';
		if (lineno == 1) {
			if (sscanf(line, "fosr-campaigns 1 next=%" SCNu64 "%n",
			    &cp->next, &used) != 1 || line[used] != '\0' ||
			    cp->next == 0) {
				snprintf(err, errlen, "%s:1: not a campaign "
				    "table (version 1)", cp->path);
				goto out;
			}
			continue;
		}
		memset(&c, 0, sizeof(c));
		if (sscanf(line, "%" SCNu64 " %" SCNu64 " %lld %lld %148s%n",
		    &c.id, &c.count, &first, &last, fpbuf, &used) != 5 ||
		    line[used] != '\0' || c.id == 0 || c.id >= cp->next ||
		    !fp_valid(fpbuf, strlen(fpbuf))) {
			snprintf(err, errlen, "%s:%lu: bad campaign record",
			    cp->path, lineno);
			goto out;
		}
		c.first = (time_t)first;
		c.last = (time_t)last;
		memcpy(c.fp, fpbuf, strlen(fpbuf) + 1);
		if (cp->n < cp->max)
			cp->c[cp->n++] = c;
		else {
			size_t i, lru = 0;

			for (i = 1; i < cp->n; i++)
				if (cp->c[i].last < cp->c[lru].last)
					lru = i;
			if (c.last > cp->c[lru].last)
				cp->c[lru] = c;
		}
	}
	if (ferror(fp)) {
		snprintf(err, errlen, "%s: read: %s", cp->path, strerror(errno));
		goto out;
	}
	if (lineno == 0 && n == -1) {
		/* An empty file: a table never saved whole; start afresh. */
	}
	rc = 0;
out:
	free(line);
	fclose(fp);
	return rc;
}

int
campaigns_assign(struct campaigns *cp, const char *fp, time_t now,
    struct campaign_match *out)
{
	size_t i, best = 0, lru = 0, len = strlen(fp);
	int score, bestscore = -1;
	struct campaign *c;

	memset(out, 0, sizeof(*out));
	if (!fp_valid(fp, len))
		return -1;
	for (i = 0; i < cp->n; i++) {
		score = fuzzy_compare(fp, cp->c[i].fp);
		if (score > bestscore) {
			bestscore = score;
			best = i;
		}
		if (cp->c[i].last < cp->c[lru].last)
			lru = i;
	}
	cp->dirty = true;
	if (bestscore >= cp->threshold) {
		c = &cp->c[best];
		c->count++;
		if (now > c->last)
			c->last = now;
		out->id = c->id;
		out->count = c->count;
		out->score = bestscore;
		return 0;
	}
	/* A new campaign; the least recently seen one goes when full. */
	c = cp->n < cp->max ? &cp->c[cp->n++] : &cp->c[lru];
	memset(c, 0, sizeof(*c));
	c->id = cp->next++;
	c->count = 1;
	c->first = c->last = now;
	memcpy(c->fp, fp, len + 1);
	out->id = c->id;
	out->count = 1;
	out->score = -1;
	out->created = true;
	return 0;
}

int
campaigns_save(struct campaigns *cp, char *err, size_t errlen)
{
	char tmp[4096], dir[4096], *buf = NULL;
	size_t len = 0, cap, i;
	int fd = -1, n, rc = -1;

	if (cp->path == NULL || !cp->dirty)
		return 0;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", cp->path) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "campaigns: path too long");
		return -1;
	}
	cap = 64 + cp->n * (CAMPAIGN_FP_MAX + 96);
	if ((buf = malloc(cap)) == NULL) {
		snprintf(err, errlen, "campaigns: out of memory");
		return -1;
	}
	len = (size_t)snprintf(buf, cap, "fosr-campaigns 1 next=%" PRIu64 "\n",
	    cp->next);
	for (i = 0; i < cp->n; i++) {
		n = snprintf(buf + len, cap - len, "%" PRIu64 " %" PRIu64
		    " %lld %lld %s\n", cp->c[i].id, cp->c[i].count,
		    (long long)cp->c[i].first, (long long)cp->c[i].last,
		    cp->c[i].fp);
		if (n < 0 || (size_t)n >= cap - len)
			break;		/* cannot happen: cap counts the widest */
		len += (size_t)n;
	}
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
	    O_NOFOLLOW, 0640)) == -1 || util_write_all(fd, buf, len) == -1 ||
	    fsync(fd) == -1) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	close(fd);
	fd = -1;
	if (rename(tmp, cp->path) == -1) {
		snprintf(err, errlen, "%s: rename: %s", cp->path, strerror(errno));
		(void)unlink(tmp);
		goto out;
	}
	/* The rename is durable once the directory is synced. */
	snprintf(dir, sizeof(dir), "%s", cp->path);
	if (util_fsync_dir(dirname(dir)) == -1) {
		snprintf(err, errlen, "%s: fsync: %s", dir, strerror(errno));
		goto out;
	}
	cp->dirty = false;
	rc = 0;
out:
	if (fd != -1)
		close(fd);
	free(buf);
	return rc;
}

size_t
campaigns_count(const struct campaigns *cp)
{
	return cp->n;
}

const struct campaign *
campaigns_get(const struct campaigns *cp, uint64_t id)
{
	size_t i;

	for (i = 0; i < cp->n; i++)
		if (cp->c[i].id == id)
			return &cp->c[i];
	return NULL;
}
