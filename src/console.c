/*
 * The -i console (see console.h).  Every command is a line; every answer is
 * printed to stdout; nothing the input holds can crash it.
 */
#include <ctype.h>
#include <dirent.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "config.h"
#include "console.h"
#include "jseg.h"
#include "json.h"
#include "log.h"
#include "probe.h"
#include "record.h"
#include "relay.h"
#include "relay_caps.h"
#include "rules.h"
#include "spool.h"

#define CONSOLE_PAGE		20
#define CONSOLE_LINE_MAX	4096
#define CONSOLE_REC_MAX		20000		/* newest journal records loaded (~3 KB each) */
#define CONSOLE_CHUNK		(256 * 1024)	/* journal read backwards this much at a time */
#define CONSOLE_REC_LEN_MAX	JOURNAL_LINE_MAX	/* every record the session writes */
#define CONSOLE_SHOW_LINES	60
#define CONSOLE_PARSED_SCAN	(64ULL * 1024 * 1024)	/* parsed.jsonl searched from its end */
#define CONSOLE_SHOW_ITEMS	20	/* attachments, URLs listed */

struct con_item {
	char		*json;
	size_t		 len;
	struct record *rec;
};

struct console {
	struct cfg	*cfg;
	bool		 test_mode;
	struct con_item	*items;
	size_t		 nitems;
	bool		 more;		/* the journal holds older records than loaded */
	size_t		*view;		/* indexes matching the filter */
	size_t		 nview;
	size_t		 page;		/* first row shown */
	char		 filter[256];
	bool		 done;		/* send finished */
	bool		 sent;
	char		 summary[512];
};

static int	 con_load(struct console *);
static void	 con_filter(struct console *, const char *);
static bool	 con_match(const struct con_item *, const char *);
static void	 con_list(struct console *, size_t);
static struct con_item *con_pick(struct console *, const char *);
static void	 con_show(struct console *, struct con_item *);
static void	 con_verify(struct console *, struct con_item *, bool *);
static char	*con_parsed_find(const char *, const char *, size_t *);
static char	*con_parsed_find_in(const char *, const char *, size_t *, uint64_t *);
static void	 con_show_analysis(struct console *, const char *);
static void	 con_send(struct console *, struct con_item *, bool);
static void	 con_send_done(void *, bool, const char *);
static void	 con_tick_cb(evutil_socket_t, short, void *);
static int	 con_readline(const char *, char *, size_t);
static void	 con_help(void);
static bool	 con_icontains(const char *, const char *);
static const char *con_esc(const char *, char *, size_t);

/*
 * s escaped for the terminal (log_escape: quotes, controls, C1, bidi and
 * every non-ASCII byte), into buf; returns buf.  Every stored or remote
 * byte the console prints goes through it.
 */
static const char *
con_esc(const char *s, char *buf, size_t len)
{
	log_escape(buf, len, s, strlen(s));
	return buf;
}

/* Case-insensitive substring test. */
static bool
con_icontains(const char *hay, const char *needle)
{
	size_t n = strlen(needle);

	if (n == 0)
		return true;
	for (; *hay; hay++)
		if (strncasecmp(hay, needle, n) == 0)
			return true;
	return false;
}

/* Read one command line (prompt first); -1 at EOF.  Longer lines are cut. */
static int
con_readline(const char *prompt, char *buf, size_t len)
{
	size_t n;
	int ch;

	fputs(prompt, stdout);
	fflush(stdout);
	if (fgets(buf, (int)len, stdin) == NULL)
		return -1;
	n = strlen(buf);
	if (n > 0 && buf[n - 1] != '\n')
		while ((ch = getchar()) != EOF && ch != '\n')
			;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
	    buf[n - 1] == '\t'))
		buf[--n] = '\0';
	return 0;
}

/* Parse one journal line into the next item; false when it is not a record. */
static bool
con_add(struct console *c, const char *line, size_t n)
{
	struct con_item *it = &c->items[c->nitems];
	char err[256];

	if (n == 0 || n > CONSOLE_REC_LEN_MAX)
		return false;
	if ((it->rec = record_parse(line, n, err, sizeof(err))) == NULL)
		return false;
	if ((it->json = strndup(line, n)) == NULL) {
		record_free(it->rec);
		return false;
	}
	it->len = n;
	c->nitems++;
	return true;
}

/*
 * Read one journal file from its end, adding its records newest first
 * until CONSOLE_REC_MAX are loaded (time and memory bounded: chunks read
 * backwards, at most one record longer than a chunk held).  A torn last
 * line (no '\n' yet) is left out.  0, or -1 (said).
 */
static int
con_load_file(struct console *c, const char *path)
{
	char *buf = NULL, *nb;
	size_t cap = 0, have = 0, i, k, nl;
	bool skipping = false, first = true;
	struct stat st;
	off_t pos;
	ssize_t n;
	int fd, rc = -1;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return 0;
		printf("cannot read %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		printf("cannot read %s: %s\n", path, strerror(errno));
		close(fd);
		return -1;
	}
	/* buf holds [pos, pos + have): a chunk and the start of a line after it. */
	pos = st.st_size;
	while (pos > 0 && c->nitems < CONSOLE_REC_MAX) {
		size_t want = pos > CONSOLE_CHUNK ? CONSOLE_CHUNK : (size_t)pos;

		if (have + want > cap) {
			if ((nb = realloc(buf, have + want)) == NULL)
				goto out;
			buf = nb;
			cap = have + want;
		}
		memmove(buf + want, buf, have);
		pos -= (off_t)want;
		for (k = 0; k < want; k += (size_t)n) {
			n = pread(fd, buf + k, want - k, pos + (off_t)k);
			if (n < 0 && errno == EINTR) {
				n = 0;
				continue;
			}
			if (n <= 0) {
				printf("cannot read %s: %s\n", path, n < 0 ? strerror(errno) :
				    "file shrank");
				goto out;
			}
		}
		have += want;
		/* Complete lines end at each '\n', newest first. */
		nl = have;
		for (i = have; i-- > 0 && c->nitems < CONSOLE_REC_MAX;) {
			if (buf[i] != '\n')
				continue;
			if (first)
				first = false;	/* bytes after the last '\n': torn */
			else if (!skipping)
				(void)con_add(c, buf + i + 1, nl - i - 1);
			skipping = false;
			nl = i;
		}
		if (first) {
			/* No '\n' at all yet: everything so far is the torn tail. */
			have = 0;
			continue;
		}
		/* Keep the partial line before the first '\n' for the next chunk. */
		have = nl;
		if (have > CONSOLE_REC_LEN_MAX) {
			skipping = true;	/* too long to be a record: drop it */
			have = 0;
		}
	}
	if (pos == 0 && have > 0 && !skipping && !first && c->nitems < CONSOLE_REC_MAX)
		(void)con_add(c, buf, have);	/* the journal's first line */
	if (pos > 0 || (c->nitems == CONSOLE_REC_MAX && have > 0))
		c->more = true;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

/* Descending order of names (the rotated segments' numbers have 20 digits). */
static int
con_name_desc(const void *a, const void *b)
{
	return strcmp(*(char *const *)b, *(char *const *)a);
}

/*
 * Read the reception journal from its end: receptions.jsonl, then its
 * rotated segments (receptions.jsonl.<n>), newest first, until the newest
 * CONSOLE_REC_MAX records are loaded, whatever the journal's size.  Items
 * end up oldest first, as the filter expects.
 */
static int
con_load(struct console *c)
{
	char path[PATH_MAX + 32], **names = NULL, **tmpn;
	unsigned long long seg;
	size_t nnames = 0, i, k;
	struct con_item tmp;
	struct dirent *de;
	DIR *d;
	int rc = 0;

	if ((c->items = calloc(CONSOLE_REC_MAX, sizeof(*c->items))) == NULL) {
		printf("out of memory\n");
		return -1;
	}
	if (spool_path_journal(path, sizeof(path), c->cfg->spool_dir) == -1 ||
	    con_load_file(c, path) == -1)
		return -1;
	if (c->nitems < CONSOLE_REC_MAX && (d = opendir(c->cfg->spool_dir)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (!spool_segment_name(de->d_name, &seg))
				continue;
			if ((tmpn = reallocarray(names, nnames + 1, sizeof(*names))) == NULL)
				break;
			names = tmpn;
			if ((names[nnames] = strdup(de->d_name)) == NULL)
				break;
			nnames++;
		}
		closedir(d);
		if (nnames > 1)
			qsort(names, nnames, sizeof(*names), con_name_desc);
		for (i = 0; i < nnames && rc == 0; i++) {
			if (c->nitems >= CONSOLE_REC_MAX) {
				c->more = true;
				break;
			}
			snprintf(path, sizeof(path), "%s/%s", c->cfg->spool_dir, names[i]);
			rc = con_load_file(c, path);
		}
		for (i = 0; i < nnames; i++)
			free(names[i]);
		free(names);
	}
	for (i = 0, k = c->nitems; i + 1 < k; i++, k--) {
		tmp = c->items[i];
		c->items[i] = c->items[k - 1];
		c->items[k - 1] = tmp;
	}
	return rc;
}

/* Whether the item matches the filter (sha256, sender, recipients, client, HELO). */
static bool
con_match(const struct con_item *it, const char *flt)
{
	const struct record *r = it->rec;

	if (con_icontains(r->sha256, flt) || con_icontains(r->mail_from, flt) ||
	    con_icontains(r->src_ip, flt) || con_icontains(r->helo, flt) ||
	    con_icontains(r->queue_id, flt))
		return true;
	for (int i = 0; i < r->nrcpt; i++)
		if (con_icontains(r->rcpt[i], flt))
			return true;
	return false;
}

/* Apply a filter ("" = all), newest first. */
static void
con_filter(struct console *c, const char *flt)
{
	snprintf(c->filter, sizeof(c->filter), "%s", flt);
	free(c->view);
	c->view = calloc(c->nitems + 1, sizeof(*c->view));
	c->nview = 0;
	c->page = 0;
	if (c->view == NULL)
		return;
	for (size_t i = c->nitems; i-- > 0;)
		if (con_match(&c->items[i], c->filter))
			c->view[c->nview++] = i;
}

/* Print one page from row start. */
static void
con_list(struct console *c, size_t start)
{
	char from[48], to[48], when[48], client[80];

	if (c->nview == 0) {
		printf("no captured mail%s%s%s\n", c->filter[0] ? " matches \"" : "",
		    c->filter, c->filter[0] ? "\"" : "");
		return;
	}
	if (start >= c->nview)
		start = c->nview > CONSOLE_PAGE ? c->nview - CONSOLE_PAGE : 0;
	c->page = start;
	printf("%5s  %-20s  %-12s  %-15s  %-30s  %-30s  %s\n", "#", "time", "sha256",
	    "client", "from", "to", "size");
	for (size_t k = start; k < c->nview && k < start + CONSOLE_PAGE; k++) {
		const struct record *r = c->items[c->view[k]].rec;
		log_escape(from, sizeof(from), r->mail_from, strlen(r->mail_from));
		log_escape(to, sizeof(to), r->nrcpt ? r->rcpt[0] : "", r->nrcpt ?
		    strlen(r->rcpt[0]) : 0);
		/* A journal may be damaged or edited: its every field is stored bytes. */
		log_escape(when, sizeof(when), r->time, strlen(r->time));
		log_escape(client, sizeof(client), r->src_ip, strlen(r->src_ip));
		printf("%5zu  %-20.19s  %-12.12s  %-15s  %-30.30s  %-30.30s%s %llu\n", k + 1,
		    when, r->sha256, client, from, to, r->nrcpt > 1 ? "+" : " ",
		    (unsigned long long)r->size);
	}
	printf("rows %zu-%zu of %zu%s%s%s  (n: next page, p: previous)\n", start + 1,
	    start + CONSOLE_PAGE < c->nview ? start + CONSOLE_PAGE : c->nview, c->nview,
	    c->filter[0] ? ", filter \"" : "", c->filter, c->filter[0] ? "\"" : "");
}

/* The item named by a row number or a sha256 prefix (6+ hex digits). */
static struct con_item *
con_pick(struct console *c, const char *arg)
{
	char *end;
	unsigned long n;
	size_t len = strlen(arg), i, found = 0, hit = 0;

	if (len == 0) {
		printf("which mail?  give its row number (from list) or a sha256 prefix\n");
		return NULL;
	}
	if (strspn(arg, "0123456789") == len && len < 10) {
		n = strtoul(arg, &end, 10);
		if (n >= 1 && n <= c->nview)
			return &c->items[c->view[n - 1]];
		printf("no row %s (list shows %zu)\n", arg, c->nview);
		return NULL;
	}
	if (len >= 6 && len <= 64 && strspn(arg, "0123456789abcdefABCDEF") == len) {
		for (i = 0; i < c->nitems; i++)
			if (strncasecmp(c->items[i].rec->sha256, arg, len) == 0) {
				found++;
				hit = i;
			}
		if (found >= 1)
			return &c->items[hit];	/* the latest reception of that content */
	}
	printf("no mail matches \"%.64s\" (a row number or a sha256 prefix of 6+ hex digits)\n",
	    arg);
	return NULL;
}

/* Print the envelope and the first lines of the message, escaped. */
static void
con_show(struct console *c, struct con_item *it)
{
	const struct record *r = it->rec;
	unsigned char *msg = NULL;
	size_t len = 0, off = 0, eol;
	char err[512], esc[300], eq[140], et[180], es[260], ed[260];
	int lines = 0;

	printf("sha256:    %s\nqueue id:  %s\nreceived:  %s\nclient:    %s port %d -> %s:%d\n",
	    r->sha256, log_escape(eq, sizeof(eq), r->queue_id, strlen(r->queue_id)),
	    log_escape(et, sizeof(et), r->time, strlen(r->time)),
	    log_escape(es, sizeof(es), r->src_ip, strlen(r->src_ip)), r->src_port,
	    log_escape(ed, sizeof(ed), r->dst_ip, strlen(r->dst_ip)), r->dst_port);
	log_escape(esc, sizeof(esc), r->helo, strlen(r->helo));
	printf("helo:      %s\ntls:       %s\n", esc, r->tls ? "yes" : "no");
	if (r->auth) {
		log_escape(esc, sizeof(esc), r->auth_user, strlen(r->auth_user));
		printf("auth:      user \"%s\"", esc);
		log_escape(esc, sizeof(esc), r->auth_pass, strlen(r->auth_pass));
		printf(" password \"%s\"\n", esc);
	}
	log_escape(esc, sizeof(esc), r->mail_from, strlen(r->mail_from));
	printf("from:      <%s>\n", esc);
	for (int i = 0; i < r->nrcpt; i++) {
		log_escape(esc, sizeof(esc), r->rcpt[i], strlen(r->rcpt[i]));
		printf("to:        <%s>\n", esc);
	}
	printf("size:      %llu bytes\n", (unsigned long long)r->size);
	con_show_analysis(c, r->sha256);
	if (relay_read_message(c->cfg->spool_dir, r->sha256, c->cfg->limits.message_size + 65536,
	    &msg, &len, err, sizeof(err)) == -1) {
		printf("message:   cannot read: %s\n", err);
		return;
	}
	printf("----- message (first %d lines, escaped) -----\n", CONSOLE_SHOW_LINES);
	while (off < len && lines < CONSOLE_SHOW_LINES) {
		unsigned char *nl = memchr(msg + off, '\n', len - off);
		eol = nl ? (size_t)(nl - msg) : len;
		size_t l = eol - off;
		if (l > 0 && msg[off + l - 1] == '\r')
			l--;
		log_escape(esc, sizeof(esc), msg + off, l);
		printf("%s\n", esc);
		off = eol + 1;
		lines++;
	}
	if (off < len)
		printf("----- %zu more bytes -----\n", len - off);
	free(msg);
}

/*
 * The newest line of the parsed journal whose top-level sha256 is sha (a
 * malloc'd copy, its length in *lenp), searched backwards from the end of
 * the live file, then of its rotated segments newest first (jseg.h), over
 * at most CONSOLE_PARSED_SCAN bytes in all, lines of at most
 * CONSOLE_REC_LEN_MAX; NULL when there is none (not analysed yet, or
 * analysis off).
 */
static char *
con_parsed_find(const char *spool_dir, const char *sha, size_t *lenp)
{
	char path[PATH_MAX + 32], *res;
	unsigned long long n;
	uint64_t scanned = 0;

	if (spool_path_dir(path, sizeof(path), spool_dir, SPOOL_PARSED_NAME) == -1)
		return NULL;
	if ((res = con_parsed_find_in(path, sha, lenp, &scanned)) != NULL ||
	    jseg_scan(spool_dir, SPOOL_PARSED_NAME, &n, NULL) == -1)
		return res;
	/* The deleted ones are the oldest: the numbers left are contiguous. */
	for (; n > 0 && res == NULL && scanned < CONSOLE_PARSED_SCAN; n--) {
		if (jseg_path(path, sizeof(path), spool_dir, SPOOL_PARSED_NAME, n) == -1 ||
		    access(path, F_OK) == -1)
			break;
		res = con_parsed_find_in(path, sha, lenp, &scanned);
	}
	return res;
}

/* con_parsed_find() in one file; *scanned counts the bytes read. */
static char *
con_parsed_find_in(const char *path, const char *sha, size_t *lenp, uint64_t *scannedp)
{
	char needle[80], got[80], *buf, *res = NULL;
	size_t carry = 0, n, end, i;
	uint64_t scanned = *scannedp;
	struct stat st;
	off_t off;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return NULL;
	snprintf(needle, sizeof(needle), "\"sha256\":\"%s\"", sha);
	if (fstat(fd, &st) == -1 ||
	    (buf = malloc(CONSOLE_CHUNK + CONSOLE_REC_LEN_MAX)) == NULL) {
		close(fd);
		return NULL;
	}
	off = st.st_size;
	while (off > 0 && scanned < CONSOLE_PARSED_SCAN && res == NULL) {
		/* buf: [the block before][the head of the last block, carried] */
		n = off > CONSOLE_CHUNK ? CONSOLE_CHUNK : (size_t)off;
		off -= (off_t)n;
		memmove(buf + n, buf, carry);
		if (pread(fd, buf, n, off) != (ssize_t)n)
			break;
		scanned += n;
		end = n + carry;
		/* complete lines, newest first: each ends at end, starts after a '\n' */
		for (i = end; i > 0 && res == NULL; i--) {
			if (buf[i - 1] != '\n' || i == end)
				continue;
			if (memmem(buf + i, end - i, needle, strlen(needle)) != NULL &&
			    json_get_str(buf + i, end - i, "sha256", got, sizeof(got)) == 0 &&
			    strcmp(got, sha) == 0 && (res = malloc(end - i + 1)) != NULL) {
				memcpy(res, buf + i, end - i);
				res[end - i] = '\0';
				*lenp = end - i;
			}
			end = i - 1;
		}
		if (res == NULL && off == 0 && end > 0 &&
		    memmem(buf, end, needle, strlen(needle)) != NULL &&
		    json_get_str(buf, end, "sha256", got, sizeof(got)) == 0 &&
		    strcmp(got, sha) == 0 && (res = malloc(end + 1)) != NULL) {
			memcpy(res, buf, end);
			res[end] = '\0';
			*lenp = end;
		}
		/* the head of this block: part of a line that starts earlier */
		carry = end <= CONSOLE_REC_LEN_MAX ? end : 0;
	}
	free(buf);
	close(fd);
	*scannedp = scanned;
	return res;
}

/* Print a string member of obj, escaped, after label. */
static void
con_print_str(const char *label, const char *obj, size_t len, const char *key)
{
	const char *v;
	size_t vl;
	char raw[1024], esc[300];
	long n;

	if (json_get(obj, len, key, &v, &vl) == 0 &&
	    (n = json_bytes(v, vl, raw, sizeof(raw))) >= 0) {
		log_escape(esc, sizeof(esc), raw, (size_t)n);
		printf("%s%s\n", label, esc);
	}
}

/* The analysis of the mail (issue 15): attachments, URLs, its campaign. */
static void
con_show_analysis(struct console *c, const char *sha)
{
	const char *v, *o, *e, *f, *h, *x;
	size_t vl, ol, el, fl, hl, xl, pos, k;
	char *doc, name[1024], esc[300], hash[80], magic[128];
	long long size, id, count;
	size_t len;
	long n;

	if ((doc = con_parsed_find(c->cfg->spool_dir, sha, &len)) == NULL) {
		printf("analysis:  none (not analysed yet, or analysis off)\n");
		return;
	}
	if (json_get(doc, len, "email", &o, &ol) == 0) {
		con_print_str("subject:   ", o, ol, "subject");
		if (json_get(o, ol, "attachments", &v, &vl) == 0)
			for (pos = 0, k = 0; json_element(v, vl, &pos, &e, &el) == 1; k++) {
				if (k == CONSOLE_SHOW_ITEMS) {
					printf("attach:    ...\n");
					break;
				}
				name[0] = hash[0] = magic[0] = '\0';
				size = -1;
				if (json_get(e, el, "file", &f, &fl) == 0) {
					if (json_get(f, fl, "name", &x, &xl) == 0 &&
					    (n = json_bytes(x, xl, name, sizeof(name) - 1)) >= 0)
						name[n] = '\0';
					if (json_get(f, fl, "size", &x, &xl) == 0)
						(void)json_int(x, xl, &size);
					if (json_get(f, fl, "hash", &h, &hl) == 0)
						(void)json_get_str(h, hl, "sha256", hash, sizeof(hash));
				}
				if (json_get(e, el, "fosr", &f, &fl) == 0)
					(void)json_get_str(f, fl, "magic_type", magic, sizeof(magic));
				log_escape(esc, sizeof(esc), name, strlen(name));
				printf("attach:    \"%s\" %lld bytes %s sha256 %s\n", esc, size,
				    con_esc(magic, name, sizeof(name)), hash);
			}
	}
	if (json_get(doc, len, "url", &o, &ol) == 0 &&
	    json_get(o, ol, "full", &v, &vl) == 0)
		for (pos = 0, k = 0; json_element(v, vl, &pos, &e, &el) == 1; k++) {
			if (k == CONSOLE_SHOW_ITEMS) {
				printf("url:       ...\n");
				break;
			}
			if ((n = json_bytes(e, el, name, sizeof(name))) >= 0) {
				log_escape(esc, sizeof(esc), name, (size_t)n);
				printf("url:       %s\n", esc);
			}
		}
	if (json_get(doc, len, "fosr", &o, &ol) == 0 &&
	    json_get(o, ol, "campaign", &v, &vl) == 0 && !json_is_null(v, vl)) {
		id = count = 0;
		if (json_get(v, vl, "id", &e, &el) == 0)
			(void)json_int(e, el, &id);
		if (json_get(v, vl, "count", &e, &el) == 0)
			(void)json_int(e, el, &count);
		printf("campaign:  %lld (%lld mails when this one came)\n", id, count);
	}
	free(doc);
}

/* Explain the relay decision: rules, never-relay list, caps. */
static void
con_verify(struct console *c, struct con_item *it, bool *ok)
{
	const struct record *r = it->rec;
	const struct cfg_relay *rc = &c->cfg->relay;
	struct rules_decision dec;
	struct relay_caps *caps;
	struct relay_caps_req q;
	struct relay_caps_usage u;
	struct rules *ru;
	unsigned char *msg = NULL;
	size_t len = 0;
	const char *own[PROBE_OWN_MAX], *which;
	char ownbuf[PROBE_OWN_MAX][64];
	char err[512], path[PATH_MAX], why[300], dir[PATH_MAX + 16], esc[1200];
	bool absent;
	int nown;

	*ok = false;
	printf("relay mode: %s%s\n", cfg_relay_mode_name(rc->mode),
	    c->test_mode ? " (test mode: sends go to the test recipient and server)" : "");
	if ((ru = relay_rules_load(c->cfg, path, sizeof(path), err, sizeof(err), &absent)) == NULL) {
		printf("rules: %s\n", err);
		return;
	}
	if (relay_read_message(c->cfg->spool_dir, r->sha256, c->cfg->limits.message_size + 65536,
	    &msg, &len, err, sizeof(err)) == -1) {
		printf("message: %s\n", err);
		rules_free(ru);
		return;
	}
	nown = probe_own(c->cfg, r->dst_ip, ownbuf, own);
	memset(&dec, 0, sizeof(dec));
	if (probe_decide(ru, r, RULES_STAGE_DATA, own, nown, msg, len, len, &dec) == -1) {
		printf("rules (%s): evaluation failed\n", path);
		goto done;
	}
	/* A rule's name may hold any byte but a C0 control (rules_load.c). */
	printf("rules (%s): %s%s%s -> %s\n", path, dec.matched ? "rule \"" : "no rule matched",
	    dec.matched ? con_esc(dec.rule, esc, sizeof(esc)) : "", dec.matched ? "\"" : "",
	    dec.relay ? "relay (a probe)" : "do not relay");
	if (dec.evidence)
		printf("evidence: %s\n", con_esc(dec.evidence, esc, sizeof(esc)));
	if (!dec.relay)
		goto done;
	if (relay_record_refused(r, why, sizeof(why)) == -1) {
		printf("refused: %s\n", con_esc(why, esc, sizeof(esc)));
		goto done;
	}
	for (int i = 0; i < r->nrcpt; i++) {
		if (relay_caps_never_relay(rc->never_relay, rc->nnever, r->rcpt[i], &which)) {
			printf("never_relay: <%s> matches \"%s\": refused\n",
			    con_esc(r->rcpt[i], esc, sizeof(esc)), which);
			goto done;
		}
	}
	(void)spool_path_dir(dir, sizeof(dir), c->cfg->spool_dir, SPOOL_DIR_RELAY);
	if ((caps = relay_caps_open(dir, "caps", &rc->caps, true, err, sizeof(err))) == NULL) {
		printf("caps: %s\n", err);
		goto done;
	}
	q.sha256 = r->sha256;
	q.client_ip = r->src_ip;
	q.rcpt = (const char *const *)r->rcpt;
	q.nrcpt = r->nrcpt;
	q.size = r->size ? r->size : len;
	relay_caps_usage(caps, &q, time(NULL), &u);
	printf("caps it would consume (used now -> after, of the limit):\n");
	printf("  per_day        %d -> %d of %d\n", u.day, u.day + 1, rc->caps.per_day);
	printf("  per_hour       %d -> %d of %d\n", u.hour, u.hour + 1, rc->caps.per_hour);
	printf("  per_client_ip  %d -> %d of %d (%s)\n", u.client_ip, u.client_ip + 1,
	    rc->caps.per_client_ip, con_esc(r->src_ip, esc, sizeof(esc)));
	printf("  per_client_network %d -> %d of %d (%s)\n", u.client_network,
	    u.client_network + 1, cfg_relay_caps_per_network(&rc->caps),
	    u.network[0] ? con_esc(u.network, esc, sizeof(esc)) : "no network");
	printf("  per_recipient  %d -> %d of %d\n", u.recipient, u.recipient + 1,
	    rc->caps.per_recipient);
	printf("  per_domain     %d -> %d of %d\n", u.domain, u.domain + 1, rc->caps.per_domain);
	printf("  recipients     %d of at most %d; size %llu of at most %llu\n", r->nrcpt,
	    rc->caps.max_recipients, (unsigned long long)q.size,
	    (unsigned long long)rc->caps.max_size);
	printf("  same content   %s\n", u.seen_sha256 ? "already relayed" : "never relayed");
	if (relay_caps_check(caps, &q, time(NULL), why, sizeof(why)) == -1)
		printf("verdict: refused by the caps: %s\n", con_esc(why, esc, sizeof(esc)));
	else {
		printf("verdict: may be relayed\n");
		*ok = true;
	}
	relay_caps_free(caps);
done:
	rules_decision_clear(&dec);
	rules_free(ru);
	free(msg);
}

/* The send finished. */
static void
con_send_done(void *arg, bool sent, const char *summary)
{
	struct console *c = arg;

	c->done = true;
	c->sent = sent;
	snprintf(c->summary, sizeof(c->summary), "%s", summary);
}

/* Loop tick while a send runs. */
static void
con_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	void **a = arg;
	struct console *c = a[0];

	if (c->done)
		event_base_loopbreak(a[1]);
}

/*
 * Verify, confirm, send through the same path and caps as the daemon.  The
 * send follows relay.mode: in dry-run it stops after the verdict unless the
 * operator asked for a live send ("send N --live").
 */
static void
con_send(struct console *c, struct con_item *it, bool live)
{
	struct event_base *base;
	struct relay *r;
	struct event *tick;
	struct timeval tv = { 0, 50000 };
	char line[64], err[512], esc[1200];
	void *args[2];
	bool ok;

	if (c->cfg->relay.mode == RELAY_MODE_OFF) {
		printf("relay mode is off in the configuration: nothing can be sent\n");
		return;
	}
	con_verify(c, it, &ok);
	if (!ok) {
		printf("not sent\n");
		return;
	}
	if (c->cfg->relay.mode == RELAY_MODE_DRY_RUN && !live) {
		printf("relay.mode is dry-run: nothing was sent (\"send %.12s --live\" sends it "
		    "for real, counted against the live caps)\n", it->rec->sha256);
		return;
	}
	if (c->cfg->relay.mode == RELAY_MODE_DRY_RUN)
		printf("relay.mode is dry-run, but --live was given: this send is live.\n");
	printf("This really sends the mail to <%s>%s.\n",
	    con_esc(c->test_mode ? c->cfg->relay.test_recipient : it->rec->rcpt[0], esc,
	    sizeof(esc)),
	    c->test_mode ? " (the test recipient)" : "");
	if (con_readline("Type \"yes\" to send: ", line, sizeof(line)) == -1 ||
	    strcmp(line, "yes") != 0) {
		printf("not sent\n");
		return;
	}
	if ((base = event_base_new()) == NULL) {
		printf("out of memory\n");
		return;
	}
	if ((r = relay_new(base, c->cfg, c->cfg->hostname[0] ? c->cfg->hostname : "localhost",
	    err, sizeof(err))) == NULL) {
		printf("cannot send: %s\n", err);
		event_base_free(base);
		return;
	}
	if (c->test_mode && relay_set_test_mode(r, true, err, sizeof(err)) == -1) {
		printf("cannot send: %s\n", err);
		goto out;
	}
	c->done = c->sent = false;
	if (relay_send_now(r, it->json, it->len, con_send_done, c) == -1) {
		printf("cannot send this record\n");
		goto out;
	}
	printf("sending...\n");
	fflush(stdout);
	args[0] = c;
	args[1] = base;
	tick = event_new(base, -1, EV_PERSIST, con_tick_cb, args);
	event_add(tick, &tv);
	event_base_dispatch(base);
	event_free(tick);
	/* The summary quotes the MX's replies: attacker bytes. */
	printf("%s: %s\n", c->sent ? "sent" : "not sent",
	    con_esc(c->summary, esc, sizeof(esc)));
out:
	relay_free(r);
	event_base_free(base);
}

/* The command list. */
static void
con_help(void)
{
	printf("commands:\n"
	    "  list [TEXT]   captured mails, newest first; TEXT filters on sha256, queue id,\n"
	    "                sender, recipients, client address, HELO (\"list\" alone: all)\n"
	    "  n, p          next / previous page\n"
	    "  show N        envelope and first lines of mail N (row number or sha256 prefix)\n"
	    "  verify N      the relay decision: rule, evidence, never-relay, caps it would use\n"
	    "  send N        verify, ask for confirmation, relay (counts against the caps);\n"
	    "                with relay.mode dry-run it only verifies: \"send N --live\"\n"
	    "                sends for real all the same\n"
	    "  help          this text\n"
	    "  quit          leave (EOF too)\n");
}

/* Run the console. */
int
console_main(struct cfg *cfg, bool test_mode)
{
	struct console c;
	char line[CONSOLE_LINE_MAX], err[512], *cmd, *arg;
	struct con_item *it;
	bool ok;

	memset(&c, 0, sizeof(c));
	c.cfg = cfg;
	c.test_mode = test_mode;
	setvbuf(stdout, NULL, _IOLBF, 0);
	evthread_use_pthreads();
	if (test_mode && (!cfg->relay.test_recipient[0] || !cfg->relay.test_server[0])) {
		printf("fosr-collector -i -t: relay.test_mode.recipient and .server must be set "
		    "in the configuration\n");
		return 1;
	}
	if (log_event_open(cfg->event_log, cfg->sensor[0] ? cfg->sensor : "console", err,
	    sizeof(err)) == -1)
		printf("warning: event log: %s (sends will not be logged there)\n", err);
	if (con_load(&c) == -1)
		return 1;
	con_filter(&c, "");
	printf("fosr-collector review console: %zu captured mail%s in %s; relay mode %s%s\n",
	    c.nitems, c.nitems == 1 ? "" : "s", cfg->spool_dir, cfg_relay_mode_name(cfg->relay.mode),
	    test_mode ? ", test mode" : "");
	if (c.more)
		printf("(the newest %zu records of the journal are loaded; older ones stay in "
		    "%s/" SPOOL_JOURNAL_NAME "*)\n", c.nitems, cfg->spool_dir);
	if (!isatty(STDIN_FILENO))
		printf("(standard input is not a terminal: reading commands from it, one per line)\n");
	printf("type \"help\" for the commands\n");
	for (;;) {
		if (con_readline("fosr> ", line, sizeof(line)) == -1) {
			printf("\nend of input: leaving the console\n");
			break;
		}
		cmd = line;
		while (*cmd == ' ' || *cmd == '\t')
			cmd++;
		if (*cmd == '\0')
			continue;
		arg = cmd + strcspn(cmd, " \t");
		if (*arg) {
			*arg++ = '\0';
			while (*arg == ' ' || *arg == '\t')
				arg++;
		}
		if (strcmp(cmd, "quit") == 0 || strcmp(cmd, "q") == 0 || strcmp(cmd, "exit") == 0)
			break;
		else if (strcmp(cmd, "help") == 0 || strcmp(cmd, "h") == 0 || strcmp(cmd, "?") == 0)
			con_help();
		else if (strcmp(cmd, "list") == 0 || strcmp(cmd, "l") == 0) {
			con_filter(&c, arg);
			con_list(&c, 0);
		} else if (strcmp(cmd, "n") == 0 || strcmp(cmd, "next") == 0)
			con_list(&c, c.page + CONSOLE_PAGE < c.nview ? c.page + CONSOLE_PAGE : c.page);
		else if (strcmp(cmd, "p") == 0 || strcmp(cmd, "prev") == 0)
			con_list(&c, c.page >= CONSOLE_PAGE ? c.page - CONSOLE_PAGE : 0);
		else if (strcmp(cmd, "show") == 0 || strcmp(cmd, "s") == 0) {
			if ((it = con_pick(&c, arg)) != NULL)
				con_show(&c, it);
		} else if (strcmp(cmd, "verify") == 0 || strcmp(cmd, "v") == 0) {
			if ((it = con_pick(&c, arg)) != NULL)
				con_verify(&c, it, &ok);
		} else if (strcmp(cmd, "send") == 0) {
			/* "send N [--live]" */
			char *opt = arg + strcspn(arg, " \t");
			bool live = false;
			if (*opt) {
				*opt++ = '\0';
				opt += strspn(opt, " \t");
			}
			if (strcmp(opt, "--live") == 0)
				live = true;
			else if (*opt) {
				char esc[80];
				log_escape(esc, sizeof(esc), opt, strlen(opt));
				printf("unknown option \"%s\" (send N [--live])\n", esc);
				continue;
			}
			if ((it = con_pick(&c, arg)) != NULL)
				con_send(&c, it, live);
		} else {
			char esc[80];
			log_escape(esc, sizeof(esc), cmd, strlen(cmd));
			printf("unknown command \"%s\" (\"help\" lists the commands)\n", esc);
		}
	}
	for (size_t i = 0; i < c.nitems; i++) {
		free(c.items[i].json);
		record_free(c.items[i].rec);
	}
	free(c.items);
	free(c.view);
	log_event_close();
	return 0;
}
