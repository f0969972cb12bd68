/*
 * Durable relay caps (see relay_caps.h).  The journal is JSON lines:
 *   {"t":1764218130,"sha256":"...","src_ip":"...","rcpt":["a@b"],"source":"daemon"}
 * Memory holds the last day of reservations and every sha256 ever relayed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "relay_caps.h"
#include "relay_json.h"
#include "util.h"

#define CAPS_FILE_MAX	(256u * 1024 * 1024)	/* refuse to load more than this */
#define CAPS_ADDR_MAX	256
#define CAPS_IP_MAX	64

struct caps_mail {
	time_t	 t;
	char	 ip[CAPS_IP_MAX];
};

struct caps_rcpt {
	time_t	 t;
	char	 addr[CAPS_ADDR_MAX];	/* lower case */
};

struct relay_caps {
	struct cfg_relay_caps	 lim;
	int			 fd;		/* -1 when read-only */
	char			 path[PATH_MAX];
	struct caps_mail	*mails;
	size_t			 nmails, capmails;
	struct caps_rcpt	*rcpts;
	size_t			 nrcpts, caprcpts;
	char			(*shas)[65];
	size_t			 nshas, capshas;
};

static int	 caps_grow(void **, size_t *, size_t, size_t);
static int	 caps_add(struct relay_caps *, time_t, const char *, const char *,
		    const char *const *, int);
static void	 caps_prune(struct relay_caps *, time_t);
static int	 caps_load(struct relay_caps *, int, bool, char *, size_t);
static int	 caps_load_line(struct relay_caps *, const char *, size_t);
static bool	 caps_seen(const struct relay_caps *, const char *);
static int	 caps_count_rcpt(const struct relay_caps *, time_t, const char *, bool);
static void	 caps_lower(char *, size_t, const char *);

/* Make room for one more element in a growing array. */
static int
caps_grow(void **arr, size_t *cap, size_t n, size_t elem)
{
	void *p;
	size_t ncap;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 32;
	if ((p = reallocarray(*arr, ncap, elem)) == NULL)
		return -1;
	*arr = p;
	*cap = ncap;
	return 0;
}

/* Lower-case copy of s into dst (truncated to dstlen-1). */
static void
caps_lower(char *dst, size_t dstlen, const char *s)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < dstlen; i++)
		dst[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
	dst[i] = '\0';
}

/* Record one reservation in memory. */
static int
caps_add(struct relay_caps *c, time_t t, const char *sha, const char *ip,
    const char *const *rcpt, int nrcpt)
{
	if (caps_grow((void **)&c->mails, &c->capmails, c->nmails, sizeof(*c->mails)) == -1 ||
	    caps_grow((void **)&c->shas, &c->capshas, c->nshas, sizeof(*c->shas)) == -1)
		return -1;
	for (int i = 0; i < nrcpt; i++)
		if (caps_grow((void **)&c->rcpts, &c->caprcpts, c->nrcpts + (size_t)i,
		    sizeof(*c->rcpts)) == -1)
			return -1;
	c->mails[c->nmails].t = t;
	snprintf(c->mails[c->nmails].ip, CAPS_IP_MAX, "%s", ip);
	c->nmails++;
	if (!caps_seen(c, sha)) {
		snprintf(c->shas[c->nshas], 65, "%s", sha);
		c->nshas++;
	}
	for (int i = 0; i < nrcpt; i++) {
		c->rcpts[c->nrcpts].t = t;
		caps_lower(c->rcpts[c->nrcpts].addr, CAPS_ADDR_MAX, rcpt[i]);
		c->nrcpts++;
	}
	return 0;
}

/* Forget reservations older than a day (the sha256 list stays). */
static void
caps_prune(struct relay_caps *c, time_t now)
{
	size_t i, j;

	for (i = j = 0; i < c->nmails; i++)
		if (c->mails[i].t > now - RELAY_CAPS_DAY)
			c->mails[j++] = c->mails[i];
	c->nmails = j;
	for (i = j = 0; i < c->nrcpts; i++)
		if (c->rcpts[i].t > now - RELAY_CAPS_DAY)
			c->rcpts[j++] = c->rcpts[i];
	c->nrcpts = j;
}

/* Whether sha was relayed before. */
static bool
caps_seen(const struct relay_caps *c, const char *sha)
{
	for (size_t i = 0; i < c->nshas; i++)
		if (strcmp(c->shas[i], sha) == 0)
			return true;
	return false;
}

/* Parse one journal line; -1 when it is not a valid reservation. */
static int
caps_load_line(struct relay_caps *c, const char *line, size_t len)
{
	char sha[65], ip[CAPS_IP_MAX], addrs[8][CAPS_ADDR_MAX];
	const char *ptrs[8], *v, *el;
	size_t vl, ell;
	long long t;
	int n;

	if (!relay_json_is_object(line, len) ||
	    relay_json_get(line, len, "t", &v, &vl) == -1 ||
	    relay_json_int(v, vl, &t) == -1 ||
	    relay_json_get_str(line, len, "sha256", sha, sizeof(sha)) == -1 ||
	    relay_json_get_str(line, len, "src_ip", ip, sizeof(ip)) == -1 ||
	    relay_json_get(line, len, "rcpt", &v, &vl) == -1)
		return -1;
	for (n = 0; n < 8 && relay_json_index(v, vl, n, &el, &ell) == 0; n++) {
		if (relay_json_str(el, ell, addrs[n], sizeof(addrs[n])) == -1)
			return -1;
		ptrs[n] = addrs[n];
	}
	return caps_add(c, (time_t)t, sha, ip, ptrs, n);
}

/* Read the whole journal from fd; cut a torn tail when writable. */
static int
caps_load(struct relay_caps *c, int fd, bool writable, char *err, size_t errlen)
{
	struct stat st;
	char *buf = NULL, *p, *e, *nl;
	size_t len = 0;
	ssize_t r;

	if (fstat(fd, &st) == -1 || (uint64_t)st.st_size > CAPS_FILE_MAX) {
		snprintf(err, errlen, "%s: cannot read (size or stat)", c->path);
		return -1;
	}
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", c->path);
		return -1;
	}
	while (len < (size_t)st.st_size) {
		r = pread(fd, buf + len, (size_t)st.st_size - len, (off_t)len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	for (p = buf, e = buf + len; p < e; p = nl + 1) {
		if ((nl = memchr(p, '\n', (size_t)(e - p))) == NULL) {
			/* Torn tail: its fsync never returned, so nothing was sent. */
			if (writable && ftruncate(fd, (off_t)(p - buf)) == -1) {
				snprintf(err, errlen, "%s: cannot cut torn tail: %s",
				    c->path, strerror(errno));
				free(buf);
				return -1;
			}
			break;
		}
		if (nl > p && caps_load_line(c, p, (size_t)(nl - p)) == -1 &&
		    errno == ENOMEM) {
			snprintf(err, errlen, "%s: out of memory", c->path);
			free(buf);
			return -1;
		}
	}
	free(buf);
	return 0;
}

/* Open and load a caps journal. */
struct relay_caps *
relay_caps_open(const char *dir, const char *name,
    const struct cfg_relay_caps *limits, bool readonly, char *err,
    size_t errlen)
{
	struct relay_caps *c;
	int fd, dfd;
	bool created = false;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->fd = -1;
	c->lim = *limits;
	snprintf(c->path, sizeof(c->path), "%s/%s.log", dir, name);
	if (readonly) {
		if ((fd = open(c->path, O_RDONLY | O_CLOEXEC)) == -1) {
			if (errno == ENOENT)
				return c;
			snprintf(err, errlen, "%s: %s", c->path, strerror(errno));
			goto fail;
		}
		if (caps_load(c, fd, false, err, errlen) == -1) {
			close(fd);
			goto fail;
		}
		close(fd);
		caps_prune(c, time(NULL));
		return c;
	}
	if (util_mkdirs(dir, 0750) == -1) {
		snprintf(err, errlen, "%s: cannot create: %s", dir, strerror(errno));
		goto fail;
	}
	if ((fd = open(c->path, O_RDWR | O_APPEND | O_CLOEXEC)) == -1 && errno == ENOENT) {
		fd = open(c->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		created = true;
	}
	if (fd == -1) {
		snprintf(err, errlen, "%s: %s", c->path, strerror(errno));
		goto fail;
	}
	c->fd = fd;
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		snprintf(err, errlen, "%s: locked by another process (is the daemon "
		    "or a console running?)", c->path);
		goto fail;
	}
	if (created) {
		if (fsync(fd) == -1 ||
		    (dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
			snprintf(err, errlen, "%s: %s", c->path, strerror(errno));
			goto fail;
		}
		if (fsync(dfd) == -1) {
			snprintf(err, errlen, "%s: fsync: %s", dir, strerror(errno));
			close(dfd);
			goto fail;
		}
		close(dfd);
	}
	if (caps_load(c, fd, true, err, errlen) == -1)
		goto fail;
	caps_prune(c, time(NULL));
	return c;
fail:
	relay_caps_free(c);
	return NULL;
}

/* Close the journal and free. */
void
relay_caps_free(struct relay_caps *c)
{
	if (c == NULL)
		return;
	if (c->fd != -1)
		close(c->fd);
	free(c->mails);
	free(c->rcpts);
	free(c->shas);
	free(c);
}

/* Reservations within window seconds of now for addr (or its domain). */
static int
caps_count_rcpt(const struct relay_caps *c, time_t now, const char *addr,
    bool domain)
{
	char low[CAPS_ADDR_MAX];
	const char *want;
	int n = 0;

	caps_lower(low, sizeof(low), addr);
	want = domain ? relay_addr_domain(low) : low;
	for (size_t i = 0; i < c->nrcpts; i++) {
		if (c->rcpts[i].t <= now - RELAY_CAPS_DAY)
			continue;
		if (strcmp(domain ? relay_addr_domain(c->rcpts[i].addr) :
		    c->rcpts[i].addr, want) == 0)
			n++;
	}
	return n;
}

/* Usage of the caps req would touch. */
void
relay_caps_usage(const struct relay_caps *c, const struct relay_caps_req *req,
    time_t now, struct relay_caps_usage *u)
{
	int n;

	memset(u, 0, sizeof(*u));
	for (size_t i = 0; i < c->nmails; i++) {
		if (c->mails[i].t <= now - RELAY_CAPS_DAY)
			continue;
		u->day++;
		if (c->mails[i].t > now - RELAY_CAPS_HOUR)
			u->hour++;
		if (req->client_ip && strcmp(c->mails[i].ip, req->client_ip) == 0)
			u->client_ip++;
	}
	for (int i = 0; i < req->nrcpt; i++) {
		if ((n = caps_count_rcpt(c, now, req->rcpt[i], false)) > u->recipient)
			u->recipient = n;
		if ((n = caps_count_rcpt(c, now, req->rcpt[i], true)) > u->domain)
			u->domain = n;
	}
	u->seen_sha256 = req->sha256 && caps_seen(c, req->sha256);
}

/* May req be relayed now? */
int
relay_caps_check(const struct relay_caps *c, const struct relay_caps_req *req,
    time_t now, char *why, size_t whylen)
{
	struct relay_caps_usage u;
	int n;

	if (req->nrcpt <= 0) {
		snprintf(why, whylen, "no recipient");
		return -1;
	}
	if (req->nrcpt > c->lim.max_recipients) {
		snprintf(why, whylen, "max_recipients: %d recipients, at most %d",
		    req->nrcpt, c->lim.max_recipients);
		return -1;
	}
	if (req->size > c->lim.max_size) {
		snprintf(why, whylen, "max_size: %llu bytes, at most %llu",
		    (unsigned long long)req->size, (unsigned long long)c->lim.max_size);
		return -1;
	}
	relay_caps_usage(c, req, now, &u);
	if (u.seen_sha256) {
		snprintf(why, whylen, "same content: sha256 already relayed");
		return -1;
	}
	if (u.day >= c->lim.per_day) {
		snprintf(why, whylen, "per_day: %d of %d used", u.day, c->lim.per_day);
		return -1;
	}
	if (u.hour >= c->lim.per_hour) {
		snprintf(why, whylen, "per_hour: %d of %d used", u.hour, c->lim.per_hour);
		return -1;
	}
	if (u.client_ip >= c->lim.per_client_ip) {
		snprintf(why, whylen, "per_client_ip: %d of %d used", u.client_ip,
		    c->lim.per_client_ip);
		return -1;
	}
	/* Several recipients of one request count against each other too. */
	for (int i = 0; i < req->nrcpt; i++) {
		int same_addr = 0, same_dom = 0;

		for (int j = 0; j < i; j++) {
			if (strcasecmp(req->rcpt[j], req->rcpt[i]) == 0)
				same_addr++;
			if (strcasecmp(relay_addr_domain(req->rcpt[j]),
			    relay_addr_domain(req->rcpt[i])) == 0)
				same_dom++;
		}
		n = caps_count_rcpt(c, now, req->rcpt[i], false) + same_addr;
		if (n >= c->lim.per_recipient) {
			snprintf(why, whylen, "per_recipient: %d of %d used", n,
			    c->lim.per_recipient);
			return -1;
		}
		n = caps_count_rcpt(c, now, req->rcpt[i], true) + same_dom;
		if (n >= c->lim.per_domain) {
			snprintf(why, whylen, "per_domain: %d of %d used", n,
			    c->lim.per_domain);
			return -1;
		}
	}
	return 0;
}

/* Count req in memory and build its journal line. */
int
relay_caps_reserve(struct relay_caps *c, const struct relay_caps_req *req,
    time_t now, const char *source, char **line, size_t *len)
{
	struct jbuf jb;

	jb_init(&jb);
	jb_obj_open(&jb);
	jb_kint(&jb, "t", (long long)now);
	jb_kcstr(&jb, "sha256", req->sha256);
	jb_kcstr(&jb, "src_ip", req->client_ip ? req->client_ip : "");
	jb_key(&jb, "rcpt");
	jb_arr_open(&jb);
	for (int i = 0; i < req->nrcpt; i++)
		jb_cstr(&jb, req->rcpt[i]);
	jb_arr_close(&jb);
	jb_kcstr(&jb, "source", source);
	jb_obj_close(&jb);
	if (jb.oom || caps_grow((void **)&jb.buf, &jb.cap, jb.len + 1, 1) == -1) {
		jb_free(&jb);
		return -1;
	}
	caps_prune(c, now);
	if (caps_add(c, now, req->sha256, req->client_ip ? req->client_ip : "",
	    req->rcpt, req->nrcpt) == -1) {
		jb_free(&jb);
		return -1;
	}
	jb.buf[jb.len++] = '\n';
	*line = jb.buf;
	*len = jb.len;
	return 0;
}

/* Append and fsync one journal line. */
int
relay_caps_persist(struct relay_caps *c, const char *line, size_t len,
    char *err, size_t errlen)
{
	if (c->fd == -1) {
		snprintf(err, errlen, "%s: opened read-only", c->path);
		return -1;
	}
	if (util_write_all(c->fd, line, len) == -1) {
		snprintf(err, errlen, "%s: write: %s", c->path, strerror(errno));
		return -1;
	}
	if (fdatasync(c->fd) == -1) {
		snprintf(err, errlen, "%s: fsync: %s", c->path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Reservations of the last day. */
int
relay_caps_count_day(const struct relay_caps *c, time_t now)
{
	int n = 0;

	for (size_t i = 0; i < c->nmails; i++)
		if (c->mails[i].t > now - RELAY_CAPS_DAY)
			n++;
	return n;
}

/* The domain of an address. */
const char *
relay_addr_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at ? at + 1 : "";
}

/*
 * Whether the local part (llen bytes at local) is the mailbox pat (plen
 * bytes), ignoring case: itself or a subaddress of it, "pat+tag" or
 * "pat-tag" (Postfix's recipient_delimiter, qmail's '-'), which most
 * providers deliver to pat.
 */
static bool
never_local_eq(const char *local, size_t llen, const char *pat, size_t plen)
{
	if (llen < plen || strncasecmp(local, pat, plen) != 0)
		return false;
	return llen == plen || local[plen] == '+' || local[plen] == '-';
}

/* Match addr against the never-relay list. */
bool
relay_never_relay(const char (*list)[CFG_RELAY_ENTRY_MAX], int n,
    const char *addr, const char **which)
{
	const char *at = strrchr(addr, '@'), *dom = at ? at + 1 : addr, *pat, *pat_at;
	size_t llen = at ? (size_t)(at - addr) : 0, plen, dlen = strlen(dom);

	for (int i = 0; i < n; i++) {
		pat = list[i];
		plen = strlen(pat);
		if (plen == 0)
			continue;
		if (pat[plen - 1] == '@') {
			/* local part at any domain; "postmaster" is case-insensitive */
			if (at && never_local_eq(addr, llen, pat, plen - 1))
				goto hit;
			continue;
		}
		if (pat[0] != '@' && (pat_at = strrchr(pat, '@')) != NULL) {
			if (at && never_local_eq(addr, llen, pat, (size_t)(pat_at - pat)) &&
			    strcasecmp(dom, pat_at + 1) == 0)
				goto hit;
			continue;
		}
		if (pat[0] == '@') {
			pat++;
			plen--;
		}
		if (dlen == plen && strcasecmp(dom, pat) == 0)
			goto hit;
		if (dlen > plen && dom[dlen - plen - 1] == '.' &&
		    strcasecmp(dom + dlen - plen, pat) == 0)
			goto hit;
		continue;
hit:
		if (which)
			*which = list[i];
		return true;
	}
	return false;
}
