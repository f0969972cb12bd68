/*
 * Mail analysis (issue 15): from the stored bytes of one mail to one JSON
 * document of what is inside it, in Elastic Common Schema names where ECS
 * has them: attachments (names RFC 2231/2047 decoded, declared and libmagic
 * types, size, md5/sha1/sha256/ssdeep, encrypted ZIPs and a password found
 * in the text), URLs from the text and from HTML href/src (gumbo), their
 * domains, IP and e-mail addresses, the headers of interest, the Received
 * chain's addresses, an ssdeep fingerprint of the normalised text and, with
 * a campaign table, the campaign the mail joins.
 *
 * Pure: no logging, no files (the caller stores the blobs and the document),
 * no global state but GMime's one-time init.  Built for hostile input: the
 * raw bytes examined, the MIME containers and leaves, the nesting depth, the
 * decoded bytes, the HTML tags and gumbo's memory, the indicators kept, the
 * CPU time spent and the document's size (under 1 MiB) are all capped;
 * each cap reached is named in fosr.analysis.limits.
 *
 * Wiring (one call per reception journal entry):
 *	a = analysis_new(NULL, err, sizeof(err));	   before the sandbox
 *	analysis_run(a, eml, len, rec_sha256, campaigns, &res);
 *	store res.blobs[i] as attachments/<sha256>; emit res.json
 *	analysis_result_free(&res);
 *	campaigns_save(campaigns, ...); then advance the cursor
 * (a crash between the two analyses that mail again and counts it twice in
 * its campaign: the table does not hold the journal position).  GLib aborts
 * on an allocation failure; the caps keep the peak near 3 x raw_max plus
 * the blobs (<= decoded_max).
 * An analysis context is for one thread at a time (libmagic is not
 * thread-safe); make one per worker.
 */
#ifndef FOSR_ANALYSIS_H
#define FOSR_ANALYSIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct campaigns;
struct jbuf;

struct analysis_limits {
	size_t		raw_max;	/* bytes of the mail examined */
	unsigned	containers_max;	/* multipart + message entities parsed */
	unsigned	depth_max;	/* nesting walked */
	unsigned	leaves_max;	/* leaf parts examined */
	size_t		decoded_max;	/* decoded bytes over all parts */
	size_t		blob_max;	/* one attachment kept as a blob (0: none) */
	size_t		html_max;	/* bytes of one HTML part tokenized */
	unsigned	html_tags_max;	/* '<' of one HTML part tokenized */
	unsigned	items_max;	/* URLs, addresses, IPs kept (each) */
	size_t		text_max;	/* normalised text fingerprinted */
	unsigned	cpu_ms_max;	/* thread CPU per mail, checked between parts and inside them */
	unsigned	headers_max;	/* header-field-like lines given to GMime */
};

/* The defaults (analysis_new(NULL, ...)); see analysis.c for the figures. */
void	analysis_limits_default(struct analysis_limits *);

/* Limits reached, in fosr.analysis.limits (bit order = name order). */
#define ANALYSIS_LIM_RAW	0x001
#define ANALYSIS_LIM_CONTAINERS	0x002
#define ANALYSIS_LIM_DEPTH	0x004
#define ANALYSIS_LIM_LEAVES	0x008
#define ANALYSIS_LIM_DECODED	0x010
#define ANALYSIS_LIM_BLOB	0x020
#define ANALYSIS_LIM_HTML	0x040
#define ANALYSIS_LIM_ITEMS	0x080
#define ANALYSIS_LIM_TEXT	0x100
#define ANALYSIS_LIM_CPU	0x200
#define ANALYSIS_LIM_HEADERS	0x400
#define ANALYSIS_LIM_DOCUMENT	0x800	/* strings or lists cut to keep it under 1 MiB */

/* One decoded attachment to store content-addressed (attachments/<sha256>). */
struct analysis_blob {
	char		 sha256[65];
	unsigned char	*data;
	size_t		 len;
};

struct analysis_result {
	char			*json;		/* one JSON object, NUL-terminated */
	size_t			 jsonlen;
	struct analysis_blob	*blobs;		/* distinct sha256s */
	size_t			 nblobs;
	char			 fingerprint[160];	/* ssdeep of the text, "" if none */
	unsigned		 limits;	/* ANALYSIS_LIM_* reached */
	unsigned		 nattachments;
	unsigned		 nurls;
	uint64_t		 campaign;	/* 0: no table or no fingerprint */
};

struct analysis;

/*
 * A context: GMime initialised (once per process), libmagic loaded (reads
 * the magic database: call before a sandbox forbids it).  lim NULL: the
 * defaults.  NULL on failure with err set.
 */
struct analysis	*analysis_new(const struct analysis_limits *lim, char *err,
		    size_t errlen);
void		 analysis_free(struct analysis *);

/*
 * Analyse len bytes of one mail as stored (RFC 5322, CRLF or LF).  sha256 is
 * the reception record's (64 hex digits, or NULL to compute it); cp, if not
 * NULL, is the campaign table the mail is assigned in (the caller saves it).
 * Fills res (free with analysis_result_free()).  Returns 0, or -1 on an
 * allocation failure (res is then empty).  Malformed mail is not an error:
 * whatever could be read is in the document.
 */
int	analysis_run(struct analysis *a, const unsigned char *eml, size_t len,
	    const char *sha256, struct campaigns *cp, struct analysis_result *res);
void	analysis_result_free(struct analysis_result *);

/*
 * The same fields written into jb, an object the caller has opened (e.g. by
 * log_event_begin() for a fosr.mail.parsed event); res gets everything but json.
 */
int	analysis_fields(struct analysis *a, const unsigned char *eml, size_t len,
	    const char *sha256, struct campaigns *cp, struct jbuf *jb,
	    struct analysis_result *res);

/*
 * `fosr-collector --analyse FILE...`: print one document per file (a line
 * each); with campaigns_path, assign campaigns in that table and save it.
 * Returns the exit status.
 */
int	analysis_cli(char **files, int nfiles, const char *campaigns_path);

#endif
