/*
 * The analysis's inside, shared by its three files and by nothing else:
 *   analysis.c       the context (libraries, limits), the run, the document
 *                    builder (headers, addresses, Received chain, caps
 *                    reached) and --analyse;
 *   analysis_mime.c  the raw bytes cut for GMime, the MIME walk, each leaf
 *                    part, attachments (hashes, ssdeep, libmagic, ZIP,
 *                    uuencode);
 *   analysis_scan.c  indicators in decoded text: URLs and their domains, IP
 *                    and e-mail addresses, HTML href/src and visible text,
 *                    the normalised text and an archive password; the
 *                    bounded string sets they are kept in.
 * The bounds and why each is enough are at the top of analysis.c.
 */
#ifndef FOSR_ANALYSIS_INT_H
#define FOSR_ANALYSIS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <fuzzy.h>
#include <gmime/gmime.h>
#include <magic.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "analysis.h"

struct jbuf;

#define URL_MAX		2048	/* a longer URL is cut there (and marked) */
#define ADDR_MAX	254
#define RECEIVED_MAX	64	/* Received: fields read */
#define MAGIC_BYTES	(1024 * 1024)	/* libmagic looks at the first MB */
#define TEXT_MIN	64	/* shorter normalised text: no fingerprint */
/* gumbo's memory for one part: this times html_max (measured: see analysis.c) */
#define GUMBO_MEM_FACTOR	16
#define PW_SCAN_MAX	(256 * 1024)	/* bytes of one text scanned for a password */

struct analysis {
	struct analysis_limits	 lim;
	magic_t			 magic;
	pcre2_code		*pw_re;
	pcre2_match_data	*pw_md;
	pcre2_match_context	*pw_mctx;
	GMimeParserOptions	*popts;
};

/*
 * The document's size (README, "Mail analysis"): every string cut at
 * DOC_STR_MAX bytes (an attachment's name and type at DOC_NAME_MAX), each
 * list within a byte budget of its own (items past it left out and counted
 * in fosr.analysis.omitted), so that escaping (a control byte is written as
 * six) cannot take a document past DOC_MAX, whatever the mail.
 * The lists' budgets (bytes of JSON): 480 + 160 + 5 x 24 + 5 x 12 + 24 =
 * 844 KB (1,000 attachments without names take ~400 KB); the strings
 * (4 x 6 x DOC_STR_MAX, a few x 6 x DOC_NAME_MAX) and the fixed fields
 * under 40 KB more: under DOC_MAX with an event's envelope.
 */
#define DOC_MAX		(1024 * 1024)
#define DOC_STR_MAX	1024
#define DOC_NAME_MAX	256
#define DOC_OMIT_MAX	24	/* lists that can be cut */
#define DOC_ATT_BUDGET		(480 * 1024)	/* email.attachments */
#define DOC_URL_BUDGET		(160 * 1024)	/* url.full */
#define DOC_LIST_BUDGET		(24 * 1024)	/* domains, IPs, hashes, body addresses */
#define DOC_ADDRS_BUDGET	(12 * 1024)	/* from, reply_to, to, cc, return_path */
#define DOC_RECEIVED_BUDGET	(24 * 1024)	/* fosr.received */

/*
 * A bounded set of distinct strings, in first-seen order, with a hash index
 * (open addressing, at most half full): a lookup costs the string's length,
 * not the set's (a strlen of every kept item per lookup was 24.7 s for one
 * 10 MB part of "www.a " after 500 long URLs).
 */
struct strset {
	char		**v;
	size_t		 *len;
	size_t		  n;
	size_t		  cap;
	size_t		 *idx;		/* slot: 0 empty, else index + 1 */
	size_t		  icap;		/* a power of two, >= 2 * cap */
};

struct att {
	char		*name;		/* UTF-8 or NULL */
	char		*declared;	/* type/subtype */
	char		*magic;
	const char	*disposition;
	size_t		 size;
	char		 md5[33];
	char		 sha1[41];
	char		 sha256[65];
	char		 ssdeep[FUZZY_MAX_RESULT];
	unsigned	 depth;
	bool		 archive;
	bool		 zip_encrypted;
	bool		 uuencoded;
};

struct ctx {
	struct analysis		*a;
	unsigned		 limits;
	unsigned		 containers;
	unsigned		 leaves;
	unsigned		 maxdepth;
	unsigned		 warnings;
	size_t			 decoded;
	struct timespec		 cpu0;
	struct strset		 urls, domains, ips, emails, from, reply_to,
				 to, cc, return_path;
	struct att		*att;
	size_t			 natt;
	size_t			 attcap;
	struct analysis_result	*res;
	char			*text;		/* normalised text */
	size_t			 textlen;
	bool			 text_from_plain;
	char			*html_text;	/* visible HTML text, if no plain */
	size_t			 html_textlen;
	char			*password;
	unsigned		 truncated;	/* strings cut in the document */
	struct {
		const char	*name;
		size_t		 n;
	}			 omitted[DOC_OMIT_MAX];
	size_t			 nomitted;
};

struct jb_mark {
	size_t	len;
	bool	first;
};

/* analysis.c */
#define CPU_STEP	(64 * 1024)	/* bytes scanned between two looks at the CPU cap */
bool	analysis_cpu_over(struct ctx *);
bool	analysis_cpu_at(struct ctx *, size_t, size_t *);
void	analysis_jb_mark(const struct jbuf *, struct jb_mark *);
bool	analysis_jb_fits(struct ctx *, struct jbuf *, const struct jb_mark *,
	    size_t, size_t, const char *, size_t);

/* analysis_scan.c */
void	analysis_set_add(struct ctx *, struct strset *, const char *, size_t);
void	analysis_set_free(struct strset *);
void	analysis_set_json(struct ctx *, struct jbuf *, const char *,
	    const char *, const struct strset *, size_t);
bool	analysis_ip_literal(const char *, size_t, char *, size_t);
void	analysis_norm_append(struct ctx *, char **, size_t *, const char *, size_t);
void	analysis_scan_text(struct ctx *, const char *, size_t);
void	analysis_html_scan(struct ctx *, const char *, size_t);

/* analysis_mime.c */
void	analysis_walk(struct ctx *, GMimeObject *, unsigned);
size_t	analysis_raw_cut(const unsigned char *, size_t,
		    const struct analysis_limits *, unsigned *);
GByteArray	*analysis_raw_prepare(const unsigned char *, size_t, unsigned *);

#endif /* FOSR_ANALYSIS_INT_H */
