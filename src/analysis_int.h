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
#define PW_SCAN_MAX	(256 * 1024)	/* bytes of one text scanned for a password */

struct analysis {
	struct analysis_limits	 lim;
	magic_t			 magic;
	pcre2_code		*pw_re;
	pcre2_match_data	*pw_md;
	pcre2_match_context	*pw_mctx;
	GMimeParserOptions	*popts;
};

/* A bounded set of distinct strings, in first-seen order. */
struct strset {
	char		**v;
	size_t		  n;
	size_t		  cap;
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
};

/* analysis.c */
bool	analysis_cpu_over(struct ctx *);

/* analysis_scan.c */
void	analysis_set_add(struct ctx *, struct strset *, const char *, size_t);
void	analysis_set_free(struct strset *);
void	analysis_set_json(struct jbuf *, const char *, const struct strset *);
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
