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

#include "addr.h"
#include "log.h"
#include "relay_caps.h"
#include "json.h"
#include "util.h"

#define CAPS_FILE_MAX	(256u * 1024 * 1024)	/* refuse to load more than this */
#define CAPS_IP_MAX	64			/* struct record's src_ip (record.h) */

struct caps_mail {
	time_t	 t;
	char	 ip[CAPS_IP_MAX];
	char	 net[UTIL_NET_SCOPE_MAX];	/* its /24 or /64, "" when ip is none */
};

struct caps_rcpt {
	time_t		 t;
	char		*key;		/* addr_key(): canonical, lower case */
	const char	*dom;		/* its domain, inside key */
};

struct relay_caps {
	struct cfg_relay_caps	 lim;
	int			 fd;		/* -1 when read-only */
	off_t			 size;		/* of the journal, every line whole */
	char			 path[PATH_MAX];
	char			 broken[PATH_MAX + 256];	/* why relaying is off, or "" */
	struct caps_mail	*mails;
	size_t			 nmails, capmails;
	struct caps_rcpt	*rcpts;
	size_t			 nrcpts, caprcpts;
	char			(*shas)[65];
	size_t			 nshas, capshas;
};

static int	 caps_grow(void **, size_t *, size_t, size_t);
static int	 caps_add(struct relay_caps *, time_t, const char *, const char *,
		    char **, int);
static void	 caps_prune(struct relay_caps *, time_t);
static int	 caps_load(struct relay_caps *, int, bool, char *, size_t);
struct caps_line;
struct caps_buf;
static int	 caps_parse_line(const char *, size_t, struct caps_line *);
static void	 caps_put(struct caps_buf *, const void *, size_t);
static int	 caps_rewrite(struct relay_caps *, const char *, size_t, char *, size_t);
static int	 caps_keys(const struct relay_caps_req *, char ***);
static void	 caps_keys_free(char **, int);
static bool	 caps_seen(const struct relay_caps *, const char *);
static int	 caps_count_rcpt(const struct relay_caps *, time_t, const char *, bool);
static bool	 caps_sha_ok(const char *);
static bool	 caps_domain_under(const char *, const char *);
static int	 caps_pat_domain(const char *, char *, size_t);

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

/*
 * Record one reservation in memory.  keys (nrcpt addr_key() strings) become
 * the caps' own on success; on failure nothing was recorded and the caller
 * still owns them.
 */
static int
caps_add(struct relay_caps *c, time_t t, const char *sha, const char *ip,
    char **keys, int nrcpt)
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
	/* From the journal's src_ip: a restart (or an old journal) counts the same. */
	(void)util_net_scope_str(ip, c->mails[c->nmails].net, UTIL_NET_SCOPE_MAX);
	c->nmails++;
	if (!caps_seen(c, sha)) {
		snprintf(c->shas[c->nshas], 65, "%s", sha);
		c->nshas++;
	}
	for (int i = 0; i < nrcpt; i++) {
		c->rcpts[c->nrcpts].t = t;
		c->rcpts[c->nrcpts].key = keys[i];
		c->rcpts[c->nrcpts].dom = addr_domain(keys[i]);
		keys[i] = NULL;
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
	for (i = j = 0; i < c->nrcpts; i++) {
		if (c->rcpts[i].t > now - RELAY_CAPS_DAY)
			c->rcpts[j++] = c->rcpts[i];
		else
			free(c->rcpts[i].key);
	}
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

/* 64 lower-case hex digits, as every writer checked. */
static bool
caps_sha_ok(const char *sha)
{
	return strlen(sha) == 64 && strspn(sha, "0123456789abcdef") == 64;
}

/* The counting keys of req's recipients (malloc'ed); 0, or -1 when one has no canonical form or out of memory. */
static int
caps_keys(const struct relay_caps_req *req, char ***out)
{
	char **keys, buf[ADDR_CANON_MAX];

	*out = NULL;
	if ((keys = calloc((size_t)(req->nrcpt > 0 ? req->nrcpt : 1), sizeof(*keys))) == NULL)
		return -1;
	for (int i = 0; i < req->nrcpt; i++) {
		if (addr_key(req->rcpt[i], buf, sizeof(buf)) == -1 ||
		    (keys[i] = strdup(buf)) == NULL) {
			caps_keys_free(keys, i);
			return -1;
		}
	}
	*out = keys;
	return 0;
}

/* Free n keys and their array. */
static void
caps_keys_free(char **keys, int n)
{
	if (keys == NULL)
		return;
	for (int i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
}

/* One journal line, parsed. */
struct caps_line {
	time_t	 t;
	char	 sha[65];
	char	 ip[CAPS_IP_MAX];
	char	**keys;		/* n addr_key() strings */
	int	 n;
};

/* A growing byte buffer (the compacted journal). */
struct caps_buf {
	char	*p;
	size_t	 len, cap;
	bool	 oom;
};

/* Append n bytes to b. */
static void
caps_put(struct caps_buf *b, const void *s, size_t n)
{
	if (b->oom)
		return;
	if (util_grow(&b->p, &b->cap, b->len + n, 4096, 0) == -1) {
		b->oom = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

/*
 * Parse one journal line into l; every member is checked (a line this
 * daemon did not write is not guessed at).  0; -1 with errno ENOMEM out of
 * memory, else EINVAL.  Lines of a compacted journal carry only "t" and
 * "sha256".
 */
static int
caps_parse_line(const char *line, size_t len, struct caps_line *l)
{
	const char *k, *v, *el, *rv = NULL;
	size_t kl, vl, ell, rvl = 0, pos = 0, epos;
	char *dec, buf[ADDR_CANON_MAX];
	long long tt = 0;
	bool have_t = false;
	int rc, cap = 0;

	memset(l, 0, sizeof(*l));
	while ((rc = json_member(line, len, &pos, &k, &kl, &v, &vl)) == 1) {
		if (kl == 1 && k[0] == 't') {
			if (have_t || json_int(v, vl, &tt) == -1)
				goto bad;
			have_t = true;
		} else if (kl == 6 && memcmp(k, "sha256", 6) == 0) {
			if (l->sha[0] || json_str(v, vl, l->sha, sizeof(l->sha)) == -1 ||
			    !caps_sha_ok(l->sha))
				goto bad;
		} else if (kl == 6 && memcmp(k, "src_ip", 6) == 0) {
			if (json_str(v, vl, l->ip, sizeof(l->ip)) == -1)
				goto bad;
		} else if (kl == 4 && memcmp(k, "rcpt", 4) == 0) {
			if (rv != NULL)
				goto bad;
			rv = v;
			rvl = vl;
		} else if (!(kl == 6 && memcmp(k, "source", 6) == 0))
			goto bad;
	}
	if (rc == -1 || !have_t || !l->sha[0])
		goto bad;
	l->t = (time_t)tt;
	/* Every recipient, whatever its length: a decoded string is never longer than its JSON. */
	for (epos = 0; rv != NULL && (rc = json_element(rv, rvl, &epos, &el, &ell)) == 1;
	    l->n++) {
		if (l->n == cap) {
			char **nk;
			cap = cap ? cap * 2 : 8;
			if ((nk = reallocarray(l->keys, (size_t)cap, sizeof(*nk))) == NULL)
				goto oom;
			l->keys = nk;
		}
		if ((dec = malloc(ell + 1)) == NULL)
			goto oom;
		if (json_str(el, ell, dec, ell + 1) == -1) {
			free(dec);
			goto bad;
		}
		/* Written as a key; a journal from before keys were canonical is re-keyed. */
		if (addr_key(dec, buf, sizeof(buf)) == 0) {
			free(dec);
			dec = strdup(buf);
		} else
			addr_lower(dec);
		if ((l->keys[l->n] = dec) == NULL)
			goto oom;
	}
	if (rv != NULL && rc == -1)
		goto bad;
	return 0;
oom:
	caps_keys_free(l->keys, l->n);
	l->keys = NULL;
	errno = ENOMEM;
	return -1;
bad:
	caps_keys_free(l->keys, l->n);
	l->keys = NULL;
	errno = EINVAL;
	return -1;
}

/*
 * Replace the journal with buf[0..len) (its compacted form), atomically: a
 * new file, locked before it has the journal's name (no second writer can
 * slip in), written, synced, renamed over the old one, directory synced.
 */
static int
caps_rewrite(struct relay_caps *c, const char *buf, size_t len, char *err, size_t errlen)
{
	char tmp[PATH_MAX + 8], dir[PATH_MAX], *sl;
	int fd;

	snprintf(tmp, sizeof(tmp), "%s.tmp", c->path);
	if ((fd = open(tmp, O_RDWR | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0640)) == -1) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1 || util_write_all(fd, buf, len) == -1 ||
	    fsync(fd) == -1 || rename(tmp, c->path) == -1) {
		snprintf(err, errlen, "%s: compaction: %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		return -1;
	}
	/* Renamed: from now on the new file is the journal, whatever follows. */
	close(c->fd);
	c->fd = fd;
	c->size = (off_t)len;
	snprintf(dir, sizeof(dir), "%s", c->path);
	if ((sl = strrchr(dir, '/')) != NULL)
		*sl = '\0';
	if (util_fsync_dir(sl ? dir : ".") == -1) {
		snprintf(err, errlen, "%s: fsync: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Read the whole journal from fd.  Writable: cut a torn tail and compact
 * (a reservation of the last day is kept whole, an older one as its sha256
 * alone: the same content is never relayed twice).  A whole line that does
 * not parse turns relaying off (c->broken) and is logged with its number;
 * the file is then left exactly as it is for the operator.
 */
static int
caps_load(struct relay_caps *c, int fd, bool writable, char *err, size_t errlen)
{
	struct stat st;
	struct caps_line l;
	struct caps_buf out = { NULL, 0, 0, false };
	char *buf = NULL, *p, *e, *nl, shown[128], small[160], e2[PATH_MAX + 64];
	size_t len = 0, lineno = 0;
	ssize_t r;
	time_t now = time(NULL);
	int n, rc = -1;

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
		if (r == -1) {
			snprintf(err, errlen, "%s: read: %s", c->path, strerror(errno));
			goto done;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	for (p = buf, e = buf + len; p < e; p = nl + 1) {
		lineno++;
		if ((nl = memchr(p, '\n', (size_t)(e - p))) == NULL) {
			/* Torn tail: its fsync never returned, so nothing was sent. */
			if (writable) {
				if (ftruncate(fd, (off_t)(p - buf)) == -1) {
					snprintf(err, errlen, "%s: cannot cut torn tail: %s",
					    c->path, strerror(errno));
					goto done;
				}
				log_warn("relay caps: %s: cut a torn last line (%zu bytes at "
				    "offset %zu, line %zu): a write that never finished",
				    c->path, (size_t)(e - p), (size_t)(p - buf), lineno);
			}
			len = (size_t)(p - buf);
			break;
		}
		if (nl == p)
			continue;
		if (caps_parse_line(p, (size_t)(nl - p), &l) == -1) {
			if (errno == ENOMEM) {
				snprintf(err, errlen, "%s: out of memory", c->path);
				goto done;
			}
			if (!c->broken[0]) {
				log_escape(shown, sizeof(shown), p, (size_t)(nl - p));
				snprintf(c->broken, sizeof(c->broken), "caps journal %s line %zu "
				    "unreadable: relaying is off until it is repaired", c->path,
				    lineno);
				log_err("relay caps: %s: line %zu is not a reservation: \"%s\"; "
				    "relaying is off until an operator repairs or removes the "
				    "line and restarts (README, \"Relay caps journal\")", c->path,
				    lineno, shown);
			}
			continue;
		}
		if (caps_add(c, l.t, l.sha, l.ip, l.keys, l.n) == -1) {
			caps_keys_free(l.keys, l.n);
			snprintf(err, errlen, "%s: out of memory", c->path);
			goto done;
		}
		free(l.keys);
		if (l.t > now - RELAY_CAPS_DAY) {
			caps_put(&out, p, (size_t)(nl - p) + 1);
		} else {
			/* sha256 is 64 hex digits (checked): nothing to escape. */
			n = snprintf(small, sizeof(small), "{\"t\":%lld,\"sha256\":\"%s\"}\n",
			    (long long)l.t, l.sha);
			caps_put(&out, small, (size_t)n);
		}
	}
	c->size = (off_t)len;
	if (writable && !c->broken[0] && (out.oom || out.len != len ||
	    (len > 0 && memcmp(out.p, buf, len) != 0))) {
		/*
		 * Not compacting is no reason to stop: the journal as it is counts
		 * the same (and a failed fsync of the directory after the rename
		 * leaves either file, both whole).
		 */
		if (out.oom)
			log_warn("relay caps: %s: not compacted: out of memory", c->path);
		else if (caps_rewrite(c, out.p, out.len, e2, sizeof(e2)) == -1)
			log_warn("relay caps: not compacted: %s", e2);
		else
			log_info("relay caps: %s compacted: %zu -> %zu bytes (reservations "
			    "older than a day kept as their sha256 only)", c->path, len,
			    out.len);
	}
	rc = 0;
done:
	free(out.p);
	free(buf);
	return rc;
}

/* Open and load a caps journal. */
struct relay_caps *
relay_caps_open(const char *dir, const char *name,
    const struct cfg_relay_caps *limits, bool readonly, char *err,
    size_t errlen)
{
	struct relay_caps *c;
	struct stat fst, pst;
	int fd, tries;
	bool created;

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
	for (tries = 0;; tries++) {
		created = false;
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
		/*
		 * A writer that compacted at its start renamed a new file over
		 * the one opened here: this lock would be on a file no longer
		 * the journal.  Open again.
		 */
		if (fstat(fd, &fst) == -1) {
			snprintf(err, errlen, "%s: %s", c->path, strerror(errno));
			goto fail;
		}
		if (stat(c->path, &pst) == 0 && pst.st_ino == fst.st_ino &&
		    pst.st_dev == fst.st_dev)
			break;
		if (tries >= 5) {
			snprintf(err, errlen, "%s: replaced while being opened", c->path);
			goto fail;
		}
		close(fd);
		c->fd = -1;
	}
	if (created) {
		if (fsync(fd) == -1) {
			snprintf(err, errlen, "%s: %s", c->path, strerror(errno));
			goto fail;
		}
		if (util_fsync_dir(dir) == -1) {
			snprintf(err, errlen, "%s: fsync: %s", dir, strerror(errno));
			goto fail;
		}
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
	for (size_t i = 0; i < c->nrcpts; i++)
		free(c->rcpts[i].key);
	free(c->rcpts);
	free(c->shas);
	free(c);
}

/* Why relaying is off (an unreadable journal line), or NULL. */
const char *
relay_caps_broken(const struct relay_caps *c)
{
	return c->broken[0] ? c->broken : NULL;
}

/* Reservations within the day of now for key (or its domain). */
static int
caps_count_rcpt(const struct relay_caps *c, time_t now, const char *key, bool domain)
{
	const char *want = domain ? addr_domain(key) : key;
	int n = 0;

	for (size_t i = 0; i < c->nrcpts; i++) {
		if (c->rcpts[i].t <= now - RELAY_CAPS_DAY)
			continue;
		if (strcmp(domain ? c->rcpts[i].dom : c->rcpts[i].key, want) == 0)
			n++;
	}
	return n;
}

/* Usage of the caps req would touch (a recipient without a canonical form counts as unused). */
void
relay_caps_usage(const struct relay_caps *c, const struct relay_caps_req *req,
    time_t now, struct relay_caps_usage *u)
{
	char key[ADDR_CANON_MAX], net[UTIL_NET_SCOPE_MAX] = "";
	int n;

	memset(u, 0, sizeof(*u));
	if (req->client_ip)
		(void)util_net_scope_str(req->client_ip, net, sizeof(net));
	snprintf(u->network, sizeof(u->network), "%s", net);
	for (size_t i = 0; i < c->nmails; i++) {
		if (c->mails[i].t <= now - RELAY_CAPS_DAY)
			continue;
		u->day++;
		if (c->mails[i].t > now - RELAY_CAPS_HOUR)
			u->hour++;
		if (req->client_ip && strcmp(c->mails[i].ip, req->client_ip) == 0)
			u->client_ip++;
		if (net[0] && strcmp(c->mails[i].net, net) == 0)
			u->client_network++;
	}
	for (int i = 0; i < req->nrcpt; i++) {
		if (addr_key(req->rcpt[i], key, sizeof(key)) == -1)
			continue;
		if ((n = caps_count_rcpt(c, now, key, false)) > u->recipient)
			u->recipient = n;
		if ((n = caps_count_rcpt(c, now, key, true)) > u->domain)
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
	char **keys;
	int n, rc = -1;

	if (c->broken[0]) {
		snprintf(why, whylen, "%s", c->broken);
		return -1;
	}
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
	if (req->sha256 == NULL || !caps_sha_ok(req->sha256)) {
		snprintf(why, whylen, "no valid sha256");
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
	/* One network's share: its hosts together cannot starve every other sender. */
	if (u.network[0] && u.client_network >= cfg_relay_caps_per_network(&c->lim)) {
		snprintf(why, whylen, "per_client_network: %d of %d used (%s)",
		    u.client_network, cfg_relay_caps_per_network(&c->lim), u.network);
		return -1;
	}
	if (caps_keys(req, &keys) == -1) {
		snprintf(why, whylen, "a recipient has no canonical form (or out of memory)");
		return -1;
	}
	/* Several recipients of one request count against each other too. */
	for (int i = 0; i < req->nrcpt; i++) {
		int same_addr = 0, same_dom = 0;

		for (int j = 0; j < i; j++) {
			if (strcmp(keys[j], keys[i]) == 0)
				same_addr++;
			if (strcmp(addr_domain(keys[j]), addr_domain(keys[i])) == 0)
				same_dom++;
		}
		n = caps_count_rcpt(c, now, keys[i], false) + same_addr;
		if (n >= c->lim.per_recipient) {
			snprintf(why, whylen, "per_recipient: %d of %d used", n,
			    c->lim.per_recipient);
			goto done;
		}
		n = caps_count_rcpt(c, now, keys[i], true) + same_dom;
		if (n >= c->lim.per_domain) {
			snprintf(why, whylen, "per_domain: %d of %d used", n,
			    c->lim.per_domain);
			goto done;
		}
	}
	rc = 0;
done:
	caps_keys_free(keys, req->nrcpt);
	return rc;
}

/* Count req in memory and build its journal line (recipients as their counting keys). */
int
relay_caps_reserve(struct relay_caps *c, const struct relay_caps_req *req,
    time_t now, const char *source, char **line, size_t *len)
{
	struct jbuf jb;
	char **keys;

	if (c->broken[0] || req->sha256 == NULL || !caps_sha_ok(req->sha256) ||
	    caps_keys(req, &keys) == -1)
		return -1;
	jb_init(&jb);
	jb_obj_open(&jb);
	jb_kint(&jb, "t", (long long)now);
	jb_kcstr(&jb, "sha256", req->sha256);
	jb_kcstr(&jb, "src_ip", req->client_ip ? req->client_ip : "");
	jb_key(&jb, "rcpt");
	jb_arr_open(&jb);
	for (int i = 0; i < req->nrcpt; i++)
		jb_cstr(&jb, keys[i]);
	jb_arr_close(&jb);
	jb_kcstr(&jb, "source", source);
	jb_obj_close(&jb);
	if (jb.oom || caps_grow((void **)&jb.buf, &jb.cap, jb.len + 1, 1) == -1) {
		jb_free(&jb);
		caps_keys_free(keys, req->nrcpt);
		return -1;
	}
	caps_prune(c, now);
	if (caps_add(c, now, req->sha256, req->client_ip ? req->client_ip : "",
	    keys, req->nrcpt) == -1) {
		jb_free(&jb);
		caps_keys_free(keys, req->nrcpt);
		return -1;
	}
	free(keys);
	jb.buf[jb.len++] = '\n';
	*line = jb.buf;
	*len = jb.len;
	return 0;
}

/*
 * Append and fsync one journal line.  A write that fails half way is cut
 * back, so the next line does not start glued to a fragment (and is not
 * lost at the next load); if even that fails, the next call cuts first.
 */
int
relay_caps_persist(struct relay_caps *c, const char *line, size_t len,
    char *err, size_t errlen)
{
	struct stat st;
	int saved;

	if (c->fd == -1) {
		snprintf(err, errlen, "%s: opened read-only", c->path);
		return -1;
	}
	if (len == 0 || line[len - 1] != '\n') {
		snprintf(err, errlen, "%s: not a whole line", c->path);
		return -1;
	}
	if (fstat(c->fd, &st) == -1) {
		snprintf(err, errlen, "%s: fstat: %s", c->path, strerror(errno));
		return -1;
	}
	if (st.st_size != c->size && ftruncate(c->fd, c->size) == -1) {
		snprintf(err, errlen, "%s: cannot cut a failed write back to %lld bytes: %s",
		    c->path, (long long)c->size, strerror(errno));
		return -1;
	}
	if (util_write_all(c->fd, line, len) == -1) {
		saved = errno;
		if (ftruncate(c->fd, c->size) == -1)
			log_warn("relay caps: %s: cannot cut a failed write back: %s",
			    c->path, strerror(errno));
		snprintf(err, errlen, "%s: write: %s", c->path, strerror(saved));
		return -1;
	}
	/* In the file from now on, synced or not: counted at the next load (the safe side). */
	c->size += (off_t)len;
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
 * bytes), both canonical keys (lower case): itself or a subaddress of it,
 * "pat+tag" or "pat-tag" (Postfix's recipient_delimiter, qmail's '-'),
 * which most providers deliver to pat.
 */
static bool
never_local_eq(const char *local, size_t llen, const char *pat, size_t plen)
{
	if (llen < plen || memcmp(local, pat, plen) != 0)
		return false;
	return llen == plen || local[plen] == '+' || local[plen] == '-';
}

/* Whether the canonical domain dom is pat (a domain, canonical form) or under it. */
static bool
caps_domain_under(const char *dom, const char *pat)
{
	size_t dl = strlen(dom), pl = strlen(pat);

	if (pl == 0 || dl < pl || strcmp(dom + dl - pl, pat) != 0)
		return false;
	return dl == pl || dom[dl - pl - 1] == '.';
}

/* The canonical form of a domain-list entry ("example.org", "@example.org"). */
static int
caps_pat_domain(const char *pat, char *out, size_t outlen)
{
	char tmp[ADDR_CANON_MAX + 4];
	const char *at;

	if (pat[0] == '@')
		pat++;
	if (strlen(pat) > ADDR_CANON_MAX)
		return -1;
	snprintf(tmp, sizeof(tmp), "x@%s", pat);
	if (addr_key(tmp, out, outlen) == -1)
		return -1;
	at = addr_domain(out);
	memmove(out, at, strlen(at) + 1);
	return 0;
}

/*
 * Match addr against the never-relay list, both in canonical form
 * (addr.h), ASCII case ignored in the local part too: "abuse"@x,
 * ab\use@X. and ABUSE@x are all abuse@x, and abuse+tag@x or abuse-tag@x
 * (subaddresses) match abuse@x.  An address without a canonical
 * form matches (never relay what cannot be compared).
 */
bool
relay_caps_never_relay(const char (*list)[CFG_RELAY_ENTRY_MAX], int n,
    const char *addr, const char **which)
{
	char key[ADDR_CANON_MAX], pk[ADDR_CANON_MAX];
	const char *dom, *pat;
	size_t llen, plen;
	bool hasdom;

	if (addr_key(addr, key, sizeof(key)) == -1) {
		if (which)
			*which = "(an address without a canonical form)";
		return true;
	}
	dom = addr_domain(key);
	hasdom = dom[0] != '\0';
	llen = hasdom ? (size_t)(dom - 1 - key) : strlen(key);
	for (int i = 0; i < n; i++) {
		pat = list[i];
		plen = strlen(pat);
		if (plen == 0)
			continue;
		if (pat[plen - 1] == '@' && plen > 1) {
			/* A local part at any domain (also a bare "postmaster"). */
			char lp[CFG_RELAY_ENTRY_MAX];
			snprintf(lp, sizeof(lp), "%.*s", (int)(plen - 1), pat);
			if (addr_key(lp, pk, sizeof(pk)) == 0 &&
			    never_local_eq(key, llen, pk, strlen(pk)))
				goto hit;
			continue;
		}
		if (pat[0] != '@' && strchr(pat, '@') != NULL) {
			const char *pd;

			if (hasdom && addr_key(pat, pk, sizeof(pk)) == 0 &&
			    *(pd = addr_domain(pk)) != '\0' && strcmp(dom, pd) == 0 &&
			    never_local_eq(key, llen, pk, (size_t)(pd - 1 - pk)))
				goto hit;
			continue;
		}
		if (hasdom && caps_pat_domain(pat, pk, sizeof(pk)) == 0 &&
		    caps_domain_under(dom, pk))
			goto hit;
		continue;
hit:
		if (which)
			*which = list[i];
		return true;
	}
	return false;
}

/* Whether domain (or a parent) is in a domain list (ipv4_only_domains), canonical forms compared. */
bool
relay_domain_in_list(const char (*list)[CFG_RELAY_ENTRY_MAX], int n,
    const char *domain, const char **which)
{
	char dk[ADDR_CANON_MAX], pk[ADDR_CANON_MAX];

	if (caps_pat_domain(domain, dk, sizeof(dk)) == -1)
		return false;
	for (int i = 0; i < n; i++) {
		if (strchr(list[i], '@') != NULL && list[i][0] != '@')
			continue;
		if (caps_pat_domain(list[i], pk, sizeof(pk)) == 0 &&
		    caps_domain_under(dk, pk)) {
			if (which)
				*which = list[i];
			return true;
		}
	}
	return false;
}
