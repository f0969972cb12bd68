/*
 * Campaigns (issue 15): a mail whose text fingerprint (ssdeep) is within a
 * threshold of a known campaign's joins it, else it starts a new one.  The
 * table is bounded (the least recently seen campaign goes when it is full)
 * and durable: one file in the spool (campaign.c is the only owner of its
 * format), rewritten atomically (tmp, fsync, rename, fsync dir) by
 * campaigns_save().  Ids are never reused, across restarts too.
 *
 * File format, text, one record a line:
 *	fosr-campaigns 1 next=<next id>
 *	<id> <count> <first unix time> <last unix time> <ssdeep fingerprint>
 * A fingerprint is "blocksize:hash1:hash2" in the base64 alphabet: no space.
 * One thread at a time (the analysis worker).
 */
#ifndef FOSR_CAMPAIGN_H
#define FOSR_CAMPAIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CAMPAIGN_FP_MAX		148	/* ssdeep's FUZZY_MAX_RESULT */
#define CAMPAIGN_MAX_DEFAULT	2048
/*
 * ssdeep compare score (0-100) from which a mail joins a campaign.  Measured
 * (tests/unit/test_campaign.c, test_threshold, through the real extractor):
 * 4 spams x 5 variants (other names, links, numbers, a postscript, another
 * greeting) score 85-97 within a spam, 0 across spams of the same size.
 * ssdeep scores fall fast with edits spread over a short text: 40 leaves
 * room for heavier variants while 0 is where unrelated texts sit.
 */
#define CAMPAIGN_THRESHOLD_DEFAULT	40

struct campaign {
	uint64_t	id;
	uint64_t	count;
	time_t		first;
	time_t		last;
	char		fp[CAMPAIGN_FP_MAX];
};

struct campaign_match {
	uint64_t	id;
	uint64_t	count;		/* after this mail */
	int		score;		/* 0-100; -1 for a new campaign */
	bool		created;
};

struct campaigns;

/*
 * Open the table at path (NULL: in memory only), loading it if it exists.
 * max: campaigns kept (0: the default); threshold: 1..100 (0: the default).
 * A file that does not parse is an error (never silently replaced).
 */
struct campaigns *campaigns_open(const char *path, size_t max, int threshold,
		    char *err, size_t errlen);
void		campaigns_free(struct campaigns *);

/* Assign a fingerprint seen at now.  -1 if fp is not an ssdeep hash. */
int		campaigns_assign(struct campaigns *, const char *fp, time_t now,
		    struct campaign_match *out);
/* Write the table atomically, if changed since the last save (or load). */
int		campaigns_save(struct campaigns *, char *err, size_t errlen);

size_t		campaigns_count(const struct campaigns *);
const struct campaign *campaigns_get(const struct campaigns *, uint64_t id);

#endif
