/*
 * hpfeeds publisher and subscriber tool (see hpfeeds.h).
 *
 * One connection to the broker, driven by libevent:
 *   IDLE --connect--> CONNECTING --TCP/TLS up--> INFO --INFO frame, AUTH sent--> READY
 * and back to IDLE (with a backoff timer) on any error.  In READY the pump
 * reads the journal from each channel's read position, builds payloads and
 * writes PUBLISH frames, a bounded batch per callback.  Entries stay in a
 * per-channel queue until confirmed (echo, or SIOCOUTQ drained + grace); the
 * confirmed prefix moves the channel's durable cursor.
 */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "hpfeeds.h"
#include "hpfeeds_wire.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define HPF_WIN_ENTRIES		64		/* unconfirmed payloads per channel */
#define HPF_WIN_BYTES		(8u << 20)	/* unconfirmed bytes per channel */
#define HPF_QUEUE_MAX		65536		/* entries held per channel (incl. acked) */
#define HPF_OUT_HIGH		(4u << 20)	/* stop pumping above this much output */
#define HPF_OUT_LOW		(256u << 10)	/* resume below this */
#define HPF_READ_HIGH		(2u << 20)	/* input buffer bound (> one frame) */
#define HPF_CHUNK		(64u << 10)	/* journal read size */
#define HPF_LINE_MAX		(8u << 20)	/* longer journal lines are skipped */
#define HPF_BATCH_MSGS		32		/* payloads per pump callback */
#define HPF_BATCH_BYTES		(4u << 20)	/* payload bytes per pump callback */
#define HPF_BACKOFF_MIN_MS	1000
#define HPF_BACKOFF_MAX_MS	60000
#define HPF_STABLE_MS		5000		/* up this long = auth accepted */
#define HPF_STALL_MS		120000		/* no echo for this long: reconnect */
#define HPF_POLL_MS		20		/* SIOCOUTQ poll interval */
#define HPF_GRACE_MS		500		/* connection must outlive the ack by this */
#define HPF_JSON_DEPTH		32
#define HPF_HEAD_LEN		256		/* bytes of a source file's start that identify it */
#define HPF_RETRY_MIN_MS	100		/* a transient read error: retry after */
#define HPF_RETRY_MAX_MS	5000

/* build_payload's answers besides 0. */
#define HPF_SKIP		-1		/* never publishable (logged): skip */
#define HPF_RETRY		-2		/* transient (logged): read it again later */

enum hpf_state {
	HPF_ST_IDLE,		/* waiting for the reconnect timer */
	HPF_ST_CONNECTING,	/* TCP (and TLS) handshake */
	HPF_ST_INFO,		/* waiting for the broker's INFO */
	HPF_ST_READY,		/* authenticated (as far as we know: silence) */
};

/* One published journal entry waiting for confirmation. */
struct hpf_entry {
	char		 sha[65];	/* mail channels: its sha256 */
	uint64_t	 key;		/* FNV-1a of the payload: matched against echoes */
	bool		 skip;		/* line not publishable: confirmed as is */
	bool		 outstanding;	/* counts against the window */
	bool		 confirmed;
	uint64_t	 end_off;	/* journal offset after this line */
	uint64_t	 lkey;		/* FNV-1a of the line (without '\n') */
	uint32_t	 llen;		/* its length; 0 = not known */
	size_t		 bytes;		/* frame bytes */
	uint64_t	 sent_ms;
	uint64_t	 acked_ms;	/* SIOCOUTQ seen 0 after it was written; 0 = not yet */
};

enum hpf_src_id { HPF_SRC_JOURNAL, HPF_SRC_EVENTS, HPF_NSRC };

/*
 * A file read from a cursor: the spool's journal or the JSON event log.  fd
 * is normally path; after a rotation it is the old file (draining) until
 * every channel of the source has published and confirmed it to its end.
 */
struct hpf_src {
	char		 path[PATH_MAX];	/* "" = none */
	int		 fd;
	ino_t		 ino;		/* of the file fd reads */
	dev_t		 dev;
	bool		 started;	/* the cursors' files were reconciled */
	bool		 draining;	/* fd is a rotated-away file */
	bool		 settled;	/* nobody writes it any more (a newer file
					   followed it, or found at start) */
	uint64_t	 dsize;		/* its size when last looked at */
	uint64_t	 dsize_ms;	/* when it got that size */
};

struct hpf_chan {
	char		 name[CFG_NAME_MAX];
	enum hpf_src_id	 src;
	char		 cursor_path[PATH_MAX];
	uint64_t	 cursor;	/* everything before is confirmed */
	uint64_t	 cino, cdev;	/* the file the cursor points into (0 = not known) */
	uint64_t	 lkey;		/* the confirmed line ending at cursor: FNV-1a, */
	uint32_t	 llen;		/* length (0 = not known): finds a copy of the file */
	uint64_t	 hkey;		/* FNV-1a of the file's first hlen bytes: tells */
	uint32_t	 hlen;		/* a truncated file, finds its copy */
	bool		 dirty;		/* cursor changed since saved */
	bool		 nosub;		/* may not subscribe: confirm by SIOCOUTQ */
	bool		 denied;	/* broker refused our publishes: stop */
	bool		 lost;		/* the cursor file was there but unreadable */
	bool		 subscribed;	/* SUBSCRIBE sent on this connection */
	size_t		 limit;		/* largest payload */

	struct hpf_entry *q;		/* ring of entries in journal order */
	size_t		 qcap, qhead, qlen;
	size_t		 out_n;		/* outstanding entries */
	size_t		 out_bytes;

	char		*rbuf;		/* journal reader: bytes at rbase.. */
	size_t		 rcap, rstart, rlen;
	uint64_t	 rbase;
	bool		 rskip;		/* discarding an overlong line */
};

struct hpf {
	struct event_base *base;
	struct cfg_feed	 feed;
	bool		 sub_mode;	/* operator tool: subscribe and print */
	long		 sub_count;	/* exit after this many (0 = never) */
	long		 sub_seen;
	bool		 sub_failed;	/* stdout went away */
	char		 spool_dir[PATH_MAX];
	char		 sensor[CFG_NAME_MAX];
	struct hpf_src	 srcs[HPF_NSRC];
	hpf_limit_fn	 jlimit;	/* the live journal's acknowledged length */
	void		*jlimit_arg;

	struct hpf_chan	 chans[CFG_CHANNELS_MAX + 1];	/* + the events channel */
	int		 nchans;

	enum hpf_state	 state;
	struct bufferevent *bev;
	SSL_CTX		*ssl_ctx;
	struct evdns_base *dns;
	uint64_t	 gen;		/* connection generation */
	uint64_t	 state_ms;	/* when the current state began */
	uint64_t	 wr_ms;		/* READY: last time the broker took bytes */
	uint64_t	 wr_drained;	/* bytes the output buffer handed to the socket */
	uint64_t	 wr_seen;	/* wr_drained at wr_ms */
	int		 wr_outq;	/* SIOCOUTQ at the last tick */
	uint64_t	 ready_ms;
	uint64_t	 rx_ms;		/* last time bytes came from the broker */
	bool		 stable;
	int		 backoff_ms;
	char		 lastmsg[512];	/* last warning of the failure series */
	bool		 closing_logged;	/* a reason for this close was logged */

	struct event	*ev_reconnect;
	struct event	*ev_pump;
	struct event	*ev_poll;
	struct event	*ev_tick;
	struct event	*ev_retry;
	bool		 pump_pending;
	bool		 held;		/* a transient error: pump stopped until ev_retry */
	int		 retry_ms;
	char		 retrymsg[512];	/* last warning of the transient error series */

	struct jbuf	 pl;		/* last payload built */
	uint64_t	 pl_off;	/* its journal end offset (UINT64_MAX = none) */
	enum hpf_src_id	 pl_src;
	size_t		 pl_limit;
	char		 pl_sha[65];
	unsigned char	*body;		/* read buffer for .eml bytes */
	size_t		 bodycap;

	struct hpf_stats stats;
};

static uint64_t	 now_ms(void);
static void	 series_warn(struct hpf *, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));
static struct hpf *hpf_create(struct event_base *, const struct cfg_feed *,
		    const char *spool_dir, bool sub_mode, char *err, size_t errlen);
static int	 tls_ctx_setup(struct hpf *, char *err, size_t errlen);
static void	 conn_start(struct hpf *);
static void	 conn_drop(struct hpf *, bool retry);
static void	 reconnect_schedule(struct hpf *);
static void	 reconnect_cb(evutil_socket_t, short, void *);
static void	 event_cb(struct bufferevent *, short, void *);
static void	 read_cb(struct bufferevent *, void *);
static void	 write_cb(struct bufferevent *, void *);
static int	 frame_handle(struct hpf *, const struct hpf_frame *);
static int	 on_info(struct hpf *, const struct hpf_frame *);
static void	 on_error_frame(struct hpf *, const struct hpf_frame *);
static void	 on_publish(struct hpf *, const struct hpf_frame *);
static void	 sub_print(struct hpf *, const struct hpf_frame *);
static void	 sock_tune(int fd);
static void	 hpf_metrics_cb(void *);
static void	 tick_cb(evutil_socket_t, short, void *);
static int	 deadline_check(struct hpf *, uint64_t now);
static void	 out_drained_cb(struct evbuffer *, const struct evbuffer_cb_info *,
		    void *);
static void	 pump_schedule(struct hpf *);
static void	 pump_cb(evutil_socket_t, short, void *);
static void	 retry_cb(evutil_socket_t, short, void *);
static void	 pump_hold(struct hpf *, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));
static void	 pump_ok(struct hpf *);
static int	 publish_next(struct hpf *, struct hpf_chan *, size_t *bytes);
static bool	 hpf_record_private(const char *, size_t);
static int	 build_payload(struct hpf *, struct hpf_chan *, const char *line,
		    size_t len, uint64_t end_off, struct hpf_entry *);
static void	 poll_cb(evutil_socket_t, short, void *);
static void	 poll_arm(struct hpf *);
static bool	 chan_window_ok(const struct hpf_chan *);
static int	 chan_push(struct hpf_chan *, const struct hpf_entry *);
static void	 chan_confirm_upto(struct hpf *, struct hpf_chan *, size_t k);
static void	 chan_advance(struct hpf *, struct hpf_chan *);
static void	 chan_reset(struct hpf_chan *);
static struct hpf_chan *chan_find(struct hpf *, const uint8_t *name, size_t len);
static int	 reader_next(struct hpf *, struct hpf_chan *, const char **line,
		    size_t *len, uint64_t *end_off);
static int	 src_open(struct hpf *, enum hpf_src_id);
static void	 src_restart(struct hpf *, enum hpf_src_id);
static void	 src_head_update(int, uint64_t, struct hpf_chan *);
static void	 src_cut_follow(struct hpf *, enum hpf_src_id, struct hpf_chan *);
static void	 src_check(struct hpf *, enum hpf_src_id);
static uint64_t	 fnv64(const void *, size_t);
static int	 chan_setup(struct hpf *, const char *name, enum hpf_src_id,
		    char *err, size_t errlen);
static int	 cursor_load(struct hpf_chan *, char *err, size_t errlen);
static void	 cursor_save(struct hpf_chan *);
static void	 cursors_save(struct hpf *);

/* Monotonic clock in milliseconds. */
static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Log a warning about the connection, once per failure series: the same text
 * again before the connection has been up for a while goes to debug.
 */
static void
series_warn(struct hpf *h, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	h->closing_logged = true;
	if (strcmp(buf, h->lastmsg) == 0) {
		log_debug("%s", buf);
		return;
	}
	snprintf(h->lastmsg, sizeof(h->lastmsg), "%s", buf);
	log_warn("%s", buf);
}

/* ------------------------------------------------------------- cursors */

/*
 * Read a channel's cursor file (missing = 0): "<offset>", then (optional,
 * older cursors lack them) " ino=<n> dev=<n> line=<fnv64 hex>:<length>": the
 * file the offset points into and the line that ends there.
 */
static int
cursor_load(struct hpf_chan *c, char *err, size_t errlen)
{
	char buf[200], *sp, *tok, *save = NULL;
	ssize_t n;
	size_t len;
	uint64_t v;
	int fd;

	c->cursor = 0;
	c->cino = c->cdev = c->lkey = c->hkey = 0;
	c->llen = c->hlen = 0;
	if ((fd = open(c->cursor_path, O_RDONLY | O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", c->cursor_path, strerror(errno));
		return -1;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0) {
		snprintf(err, errlen, "%s: %s", c->cursor_path, strerror(errno));
		return -1;
	}
	len = (size_t)n;
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	buf[len] = '\0';
	if ((sp = memchr(buf, ' ', len)) != NULL) {
		len = (size_t)(sp - buf);
		for (tok = strtok_r(sp + 1, " ", &save); tok != NULL;
		    tok = strtok_r(NULL, " ", &save)) {
			unsigned long long a, b;

			if (sscanf(tok, "ino=%llu", &a) == 1)
				c->cino = a;
			else if (sscanf(tok, "dev=%llu", &a) == 1)
				c->cdev = a;
			else if (sscanf(tok, "line=%llx:%llu", &a, &b) == 2 && b < UINT32_MAX) {
				c->lkey = a;
				c->llen = (uint32_t)b;
			} else if (sscanf(tok, "head=%llx:%llu", &a, &b) == 2 &&
			    b <= HPF_HEAD_LEN) {
				c->hkey = a;
				c->hlen = (uint32_t)b;
			}
		}
	}
	if (util_parse_u64(buf, len, 0, (uint64_t)INT64_MAX, false, &v) == -1) {
		/* A bad cursor means duplicates from the start, never a loss. */
		log_warn("hpfeeds: cursor=%s unreadable, publishing channel %s from "
		    "the start of the journal", c->cursor_path, c->name);
		c->cino = c->cdev = c->lkey = c->hkey = 0;
		c->llen = c->hlen = 0;
		c->lost = true;
		return 0;
	}
	c->cursor = v;
	return 0;
}

/* Write a channel's cursor durably: tmp file, fsync, rename, fsync dir. */
static void
cursor_save(struct hpf_chan *c)
{
	char tmp[PATH_MAX + 8], buf[200], dir[PATH_MAX], *slash;
	int fd, len;

	if (!c->dirty)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", c->cursor_path);
	len = snprintf(buf, sizeof(buf), "%llu ino=%llu dev=%llu line=%016llx:%u "
	    "head=%016llx:%u\n", (unsigned long long)c->cursor,
	    (unsigned long long)c->cino, (unsigned long long)c->cdev,
	    (unsigned long long)c->lkey, c->llen, (unsigned long long)c->hkey, c->hlen);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd == -1 || write(fd, buf, (size_t)len) != len || fsync(fd) == -1) {
		log_warn("hpfeeds: cursor=%s write failed: %s", tmp, strerror(errno));
		if (fd != -1)
			close(fd);
		return;
	}
	close(fd);
	if (rename(tmp, c->cursor_path) == -1) {
		log_warn("hpfeeds: cursor=%s rename failed: %s", c->cursor_path,
		    strerror(errno));
		return;
	}
	snprintf(dir, sizeof(dir), "%s", c->cursor_path);
	if ((slash = strrchr(dir, '/')) != NULL) {
		*slash = '\0';
		if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
			(void)fsync(fd);
			close(fd);
		}
	}
	c->dirty = false;
}

/*
 * Save every channel's cursor that moved, with the first bytes of the file
 * it reads as they are now (a file cut or replaced under the same inode
 * while the daemon is stopped is told by them).
 */
static void
cursors_save(struct hpf *h)
{
	struct stat st;
	int i, k;

	for (k = 0; k < HPF_NSRC && !h->sub_mode; k++) {
		struct hpf_src *sr = &h->srcs[k];

		if (sr->fd == -1 || sr->draining || fstat(sr->fd, &st) == -1)
			continue;
		for (i = 0; i < h->nchans; i++)
			if (h->chans[i].src == (enum hpf_src_id)k)
				src_head_update(sr->fd, (uint64_t)st.st_size, &h->chans[i]);
	}
	for (i = 0; i < h->nchans; i++)
		cursor_save(&h->chans[i]);
}

/* ------------------------------------------------------------- journal */

/* Point every channel of source k at the start of the file fd reads now. */
static void
src_restart(struct hpf *h, enum hpf_src_id k)
{
	struct hpf_src *sr = &h->srcs[k];
	bool inflight = false;
	int i;

	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];

		if (c->src != k)
			continue;
		c->cursor = 0;
		c->cino = (uint64_t)sr->ino;
		c->cdev = (uint64_t)sr->dev;
		c->lkey = c->hkey = 0;
		c->llen = c->hlen = 0;
		c->dirty = true;
		if (c->qlen > 0)
			inflight = true;
	}
	h->pl_off = UINT64_MAX;
	if (inflight && h->state != HPF_ST_IDLE) {
		/* Entries in flight refer to the other file: start over. */
		conn_drop(h, true);
		return;
	}
	for (i = 0; i < h->nchans; i++)
		if (h->chans[i].src == k)
			chan_reset(&h->chans[i]);
}

/*
 * Whether fd holds, at off, the line c's cursor ends with (llen bytes then
 * '\n'); true when that line is not known.
 */
static bool
src_line_matches(int fd, const struct hpf_chan *c, uint64_t off)
{
	char *b;
	bool ok;

	if (c->llen == 0 || c->llen > HPF_CHUNK)
		return true;	/* not known, or too long to read each tick */
	if (off < (uint64_t)c->llen + 1 || (b = malloc((size_t)c->llen + 1)) == NULL)
		return false;
	ok = pread(fd, b, (size_t)c->llen + 1, (off_t)(off - c->llen - 1)) ==
	    (ssize_t)c->llen + 1 && b[c->llen] == '\n' && fnv64(b, c->llen) == c->lkey;
	free(b);
	return ok;
}

/* Whether fd starts with the head c recorded (true when none is). */
static bool
src_head_matches(int fd, const struct hpf_chan *c)
{
	char b[HPF_HEAD_LEN];

	if (c->hlen == 0)
		return true;
	return pread(fd, b, c->hlen, 0) == (ssize_t)c->hlen && fnv64(b, c->hlen) == c->hkey;
}

/*
 * Whether the file fd reads (size bytes) is still the one c's cursor was
 * made in, or was cut (copytruncate) or rewritten in place.
 */
static bool
src_cut(int fd, uint64_t size, const struct hpf_chan *c)
{
	return size < c->cursor || size < c->hlen || !src_head_matches(fd, c) ||
	    (c->cursor > 0 && !src_line_matches(fd, c, c->cursor));
}

/*
 * Record more of the first bytes of the file fd reads (size bytes) in c;
 * never over a head that no longer matches (src_cut tells that).
 */
static void
src_head_update(int fd, uint64_t size, struct hpf_chan *c)
{
	char b[HPF_HEAD_LEN];
	size_t n = size < HPF_HEAD_LEN ? (size_t)size : HPF_HEAD_LEN;

	if (n <= c->hlen || pread(fd, b, n, 0) != (ssize_t)n ||
	    (c->hlen > 0 && fnv64(b, c->hlen) != c->hkey))
		return;
	c->hkey = fnv64(b, n);
	c->hlen = (uint32_t)n;
	c->dirty = true;
}

/*
 * Find, beside source k's file, the file channel c's cursor points into: by
 * inode (a rotation: mv and a new file), or, with by_copy, another file at
 * least as long as the cursor holding the cursor's last line at the cursor
 * (copytruncate's copy).  Rotated names start with the file's name
 * (name.1, name-20260101).  Returns an open descriptor, or -1.
 */
static int
src_find(struct hpf *h, enum hpf_src_id k, const struct hpf_chan *c, bool by_copy,
    char *found, size_t foundlen)
{
	struct hpf_src *sr = &h->srcs[k];
	char dir[PATH_MAX], path[PATH_MAX];
	const char *base, *slash;
	struct dirent *de;
	struct stat st;
	size_t bl;
	DIR *d;
	int fd = -1;

	if ((slash = strrchr(sr->path, '/')) != NULL) {
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - sr->path), sr->path);
		if (dir[0] == '\0')
			snprintf(dir, sizeof(dir), "/");
		base = slash + 1;
	} else {
		snprintf(dir, sizeof(dir), ".");
		base = sr->path;
	}
	bl = strlen(base);
	if ((d = opendir(dir)) == NULL)
		return -1;
	while (fd == -1 && (de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, base, bl) != 0 || de->d_name[bl] == '\0')
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
		    sizeof(path) || stat(path, &st) == -1 || !S_ISREG(st.st_mode))
			continue;
		if (by_copy ? ((uint64_t)st.st_size < c->cursor ||
		    (uint64_t)st.st_size < c->hlen || (c->llen == 0 && c->hlen == 0) ||
		    (st.st_ino == sr->ino && st.st_dev == sr->dev)) :
		    ((uint64_t)st.st_ino != c->cino || (uint64_t)st.st_dev != c->cdev))
			continue;
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
			continue;
		if (!src_line_matches(fd, c, c->cursor) || !src_head_matches(fd, c)) {
			close(fd);
			fd = -1;
			continue;
		}
		snprintf(found, foundlen, "%s", path);
	}
	closedir(d);
	return fd;
}

/* Whether a is later than b. */
static bool
ts_after(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

/*
 * The spool's journal segments, receptions.jsonl.<n>: among those beside
 * source k's file, the one numbered next after done (done NULL: the oldest).
 * Their number, not their mtime, is their order: segments filled within one
 * tick of a coarse clock share an mtime, and a clock stepped back reverses
 * it.  Returns an open descriptor (name in found), or -1: none follows (the
 * file itself is next), or (*known false) done is not a segment.
 */
static int
src_seg_next(struct hpf *h, enum hpf_src_id k, const struct stat *done, char *found,
    size_t foundlen, bool *known)
{
	struct hpf_src *sr = &h->srcs[k];
	char dir[PATH_MAX], path[PATH_MAX], bestpath[PATH_MAX];
	const char *base, *slash, *p;
	unsigned long long n, after = 0, best = ULLONG_MAX;
	struct dirent *de;
	struct stat st;
	size_t bl;
	DIR *d;
	int pass, fd;

	*known = done == NULL;
	if ((slash = strrchr(sr->path, '/')) != NULL) {
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - sr->path), sr->path);
		if (dir[0] == '\0')
			snprintf(dir, sizeof(dir), "/");
		base = slash + 1;
	} else {
		snprintf(dir, sizeof(dir), ".");
		base = sr->path;
	}
	bl = strlen(base);
	if ((d = opendir(dir)) == NULL)
		return -1;
	/* Pass 0 finds done's number, pass 1 the smallest one after it. */
	for (pass = done == NULL ? 1 : 0; pass < 2; pass++) {
		rewinddir(d);
		while ((de = readdir(d)) != NULL) {
			if (strncmp(de->d_name, base, bl) != 0 || de->d_name[bl] != '.' ||
			    de->d_name[bl + 1] == '\0')
				continue;
			for (p = de->d_name + bl + 1; *p >= '0' && *p <= '9'; p++)
				;
			errno = 0;
			if (*p != '\0' || (n = strtoull(de->d_name + bl + 1, NULL, 10)) ==
			    ULLONG_MAX || errno != 0)
				continue;
			if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
			    sizeof(path) || stat(path, &st) == -1 || !S_ISREG(st.st_mode))
				continue;
			if (pass == 0) {
				if (st.st_ino == done->st_ino && st.st_dev == done->st_dev) {
					after = n;
					*known = true;
				}
			} else if ((done == NULL || n > after) && n < best) {
				best = n;
				snprintf(bestpath, sizeof(bestpath), "%s", path);
			}
		}
		if (!*known)
			break;
	}
	closedir(d);
	if (!*known || best == ULLONG_MAX) {
		errno = 0;
		return -1;
	}
	if ((fd = open(bestpath, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	snprintf(found, foundlen, "%s", bestpath);
	return fd;
}

/*
 * The rotated file that follows the one just drained (done: its stat):
 * among the files beside source k's whose names start with its name (not
 * the file itself, not compressed ones), the one last written soonest after
 * done was.  Rotation by rename (name.1 .. name.N, or the spool's numbered
 * journal segments) keeps each file's last write before the next one's.
 * Returns an open descriptor (name in found), or -1: the file itself is next.
 */
static int
src_next(struct hpf *h, enum hpf_src_id k, const struct stat *done, char *found,
    size_t foundlen)
{
	static const char *const packed[] = { ".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z" };
	struct hpf_src *sr = &h->srcs[k];
	char dir[PATH_MAX], path[PATH_MAX], best[PATH_MAX] = "";
	const char *base, *slash;
	struct timespec bt = { 0, 0 };
	struct dirent *de;
	struct stat st;
	size_t bl, nl, i;
	DIR *d;
	bool known;
	int fd;

	if (k == HPF_SRC_JOURNAL &&
	    ((fd = src_seg_next(h, k, done, found, foundlen, &known)) != -1 || known))
		return fd;
	if ((slash = strrchr(sr->path, '/')) != NULL) {
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - sr->path), sr->path);
		if (dir[0] == '\0')
			snprintf(dir, sizeof(dir), "/");
		base = slash + 1;
	} else {
		snprintf(dir, sizeof(dir), ".");
		base = sr->path;
	}
	bl = strlen(base);
	if ((d = opendir(dir)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		nl = strlen(de->d_name);
		if (strncmp(de->d_name, base, bl) != 0 || nl == bl)
			continue;
		for (i = 0; i < sizeof(packed) / sizeof(packed[0]); i++)
			if (nl >= strlen(packed[i]) &&
			    strcmp(de->d_name + nl - strlen(packed[i]), packed[i]) == 0)
				break;
		if (i < sizeof(packed) / sizeof(packed[0]))
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
		    sizeof(path) || stat(path, &st) == -1 || !S_ISREG(st.st_mode) ||
		    (st.st_ino == done->st_ino && st.st_dev == done->st_dev) ||
		    !ts_after(&st.st_mtim, &done->st_mtim))
			continue;
		if (best[0] == '\0' || ts_after(&bt, &st.st_mtim)) {
			snprintf(best, sizeof(best), "%s", path);
			bt = st.st_mtim;
		}
	}
	closedir(d);
	if (best[0] == '\0') {
		errno = 0;
		return -1;
	}
	if ((fd = open(best, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	snprintf(found, foundlen, "%s", best);
	return fd;
}

/* Read source k's rotated-away file (fd2, found at name) before its file. */
static void
src_drain_from(struct hpf *h, enum hpf_src_id k, int fd2, const char *name)
{
	struct hpf_src *sr = &h->srcs[k];
	struct stat st;
	int i;

	if (sr->fd != -1)
		close(sr->fd);
	sr->fd = fd2;
	if (fstat(fd2, &st) == 0) {
		sr->ino = st.st_ino;
		sr->dev = st.st_dev;
		sr->dsize = (uint64_t)st.st_size;
	}
	sr->draining = true;
	sr->settled = true;
	sr->dsize_ms = now_ms();
	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];

		if (c->src != k)
			continue;
		c->cino = (uint64_t)sr->ino;
		c->cdev = (uint64_t)sr->dev;
		c->dirty = true;
	}
	log_info("hpfeeds: file=%s was rotated: publishing the rest of %s first", sr->path,
	    name);
	h->pl_off = UINT64_MAX;
}

/*
 * Open source k if it exists now; 0 when open, -1 (errno set) when not (yet).
 * The first time, reconcile the channels' cursors with the file: a cursor
 * that points into another file (the log was rotated while the daemon was
 * stopped) drains that file first when it is found beside it, and says what
 * was lost when it is not.
 */
static int
src_open(struct hpf *h, enum hpf_src_id k)
{
	struct hpf_src *sr = &h->srcs[k];
	struct hpf_chan *rc = NULL;
	char found[PATH_MAX];
	struct stat st, zero;
	bool current = false, known, lost = false;
	int i, fd2;

	if (sr->fd != -1)
		return 0;
	if (sr->path[0] == '\0') {
		errno = ENOENT;
		return -1;
	}
	if ((sr->fd = open(sr->path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	if (fstat(sr->fd, &st) == -1) {
		close(sr->fd);
		sr->fd = -1;
		return -1;
	}
	sr->ino = st.st_ino;
	sr->dev = st.st_dev;
	sr->draining = false;
	if (sr->started)
		return 0;
	sr->started = true;
	memset(&zero, 0, sizeof(zero));	/* src_next: older than any file */
	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];

		if (c->src != k)
			continue;
		if (c->cino == (uint64_t)sr->ino && c->cdev == (uint64_t)sr->dev)
			current = true;
		else if (c->cino != 0 && rc == NULL)
			rc = c;
	}
	/* A channel already on this file: the others finished the old one. */
	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];

		if (c->src != k)
			continue;
		if (c->cino == 0 || (current && (c->cino != (uint64_t)sr->ino ||
		    c->cdev != (uint64_t)sr->dev))) {
			if (c->cino != 0)
				c->cursor = 0;
			c->cino = (uint64_t)sr->ino;
			c->cdev = (uint64_t)sr->dev;
			c->dirty = true;	/* record which file */
			chan_reset(c);
		}
	}
	if (!current && rc != NULL &&
	    (fd2 = src_find(h, k, rc, false, found, sizeof(found))) != -1) {
		src_drain_from(h, k, fd2, found);
		return 0;
	}
	/*
	 * No cursor knows its file (none yet, unreadable) or the one it knows
	 * is gone: duplicates from the start, never a loss, and the start is
	 * the oldest journal segment still there, not the current file.  For
	 * the event log, the oldest rotated file beside it when a cursor was
	 * there but is unreadable or its file gone (a channel new to an old
	 * event log starts with the current file).
	 */
	for (i = 0; i < h->nchans; i++)
		if (h->chans[i].src == k && h->chans[i].lost)
			lost = true;
	if (!current && (k == HPF_SRC_JOURNAL ?
	    (fd2 = src_seg_next(h, k, NULL, found, sizeof(found), &known)) != -1 :
	    (rc != NULL || lost) && (fd2 = src_next(h, k, &zero, found, sizeof(found))) != -1)) {
		log_warn("hpfeeds: file=%s: no cursor points into a file still there: "
		    "publishing from the oldest rotated file %s", sr->path, found);
		for (i = 0; i < h->nchans; i++) {
			struct hpf_chan *c = &h->chans[i];

			if (c->src != k)
				continue;
			c->cursor = 0;
			c->lkey = c->hkey = 0;
			c->llen = c->hlen = 0;
			chan_reset(c);
		}
		src_drain_from(h, k, fd2, found);
		return 0;
	}
	if (rc != NULL && !current) {
		log_warn("hpfeeds: file=%s: the file channel %s's cursor points into "
		    "(inode %llu, offset %llu) is gone: what it held after that offset is "
		    "lost; publishing %s from the start", sr->path, rc->name,
		    (unsigned long long)rc->cino, (unsigned long long)rc->cursor, sr->path);
		src_restart(h, k);
		return 0;
	}
	/* The same file: was it cut (copytruncate) while we were stopped? */
	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];

		if (c->src == k && src_cut(sr->fd, (uint64_t)st.st_size, c)) {
			src_cut_follow(h, k, c);
			return 0;
		}
	}
	return 0;
}

/*
 * Source k's file was cut below channel c's cursor or rewritten
 * (copytruncate): publish the rest from its copy when one is found beside
 * it, else say what is lost; then the file from its start.
 */
static void
src_cut_follow(struct hpf *h, enum hpf_src_id k, struct hpf_chan *c)
{
	struct hpf_src *sr = &h->srcs[k];
	char found[PATH_MAX];
	int i, fd2;

	if ((fd2 = src_find(h, k, c, true, found, sizeof(found))) == -1) {
		log_warn("hpfeeds: file=%s was cut or rewritten below the cursor of "
		    "channel %s and no copy of it was found: what it held after offset "
		    "%llu is lost; publishing it from the start", sr->path, c->name,
		    (unsigned long long)c->cursor);
		src_restart(h, k);
		return;
	}
	log_warn("hpfeeds: file=%s was cut (copytruncate): channel %s publishes the "
	    "rest from its copy %s first", sr->path, c->name, found);
	src_drain_from(h, k, fd2, found);
	for (i = 0; i < h->nchans; i++)
		if (h->chans[i].src == k && h->chans[i].qlen > 0 && h->state != HPF_ST_IDLE) {
			/* Entries in flight were read from the cut file: again. */
			conn_drop(h, true);
			return;
		}
	for (i = 0; i < h->nchans; i++)
		if (h->chans[i].src == k)
			chan_reset(&h->chans[i]);
}

/*
 * Whether source k's rotated-away file is done: its size unchanged for a
 * second (a writer may append until it reopens) and every channel's cursor
 * at its end with nothing in flight.  A torn last line (no '\n') left at
 * the end of a file nobody writes any more is reported and given up.
 */
static bool
src_drained(struct hpf *h, enum hpf_src_id k, const struct stat *st)
{
	struct hpf_src *sr = &h->srcs[k];
	uint64_t size = (uint64_t)st->st_size;
	int i;

	if (!sr->settled) {
		if (size != sr->dsize) {
			sr->dsize = size;
			sr->dsize_ms = now_ms();
			return false;
		}
		if (now_ms() - sr->dsize_ms < 1000)
			return false;
	}
	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];

		if (c->src != k || (c->qlen == 0 && c->cursor >= size))
			continue;
		if (c->qlen > 0 || c->rbase + c->rstart != c->cursor ||
		    c->rbase + c->rlen != size || c->rskip)
			return false;	/* not all read, or not all confirmed */
	}
	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];

		if (c->src == k && c->cursor < size)
			log_warn("hpfeeds: file=%s: the rotated file ends with a partial "
			    "line of %llu bytes: not published (channel %s)", sr->path,
			    (unsigned long long)(size - c->cursor), c->name);
	}
	return true;
}

/*
 * Once a tick: notice a rotation of source k.  Rotated by a rename and a new
 * file (logrotate's create): keep reading the old file to its end, publish
 * and confirm it, then follow the new one.  Cut below a cursor
 * (copytruncate): publish the rest from the copy when it is found (the lines
 * written between the copy and the cut are lost, logrotate's own limit), and
 * say so loudly when it is not; then the file from its start.
 */
static void
src_check(struct hpf *h, enum hpf_src_id k)
{
	struct hpf_src *sr = &h->srcs[k];
	struct stat st, pst;
	char found[PATH_MAX];
	int i, fd2;

	/* Open (and reconcile) now, not when the broker is back: a rotation
	 * while it is away must be noticed. */
	if (sr->fd == -1 && src_open(h, k) == -1)
		return;
	if (fstat(sr->fd, &st) == -1)
		return;
	if (sr->draining) {
		if (!src_drained(h, k, &st))
			return;
		if ((fd2 = src_next(h, k, &st, found, sizeof(found))) != -1) {
			/* Rotated more than once: the next one, from its start. */
			src_drain_from(h, k, fd2, found);
			src_restart(h, k);
			return;
		}
		if (errno != 0) {
			/* Not looked for (no descriptor...): again, never skipped. */
			pump_hold(h, "hpfeeds: file=%s: looking for the file after the "
			    "rotated one: %s", sr->path, strerror(errno));
			return;
		}
		log_info("hpfeeds: file=%s: the rotated file is published; following "
		    "the new one", sr->path);
		close(sr->fd);
		sr->fd = -1;
		if (src_open(h, k) == -1) {
			/* Not there (yet): read from its start once it is. */
			sr->ino = 0;
			sr->dev = 0;
		}
		src_restart(h, k);
		return;
	}
	if (stat(sr->path, &pst) == 0 && (pst.st_ino != sr->ino || pst.st_dev != sr->dev)) {
		sr->draining = true;
		sr->settled = false;	/* a writer may append until it reopens */
		sr->dsize = (uint64_t)st.st_size;
		sr->dsize_ms = now_ms();
		log_info("hpfeeds: file=%s was rotated: publishing the rest of the old file "
		    "(inode %llu) first", sr->path, (unsigned long long)sr->ino);
		return;
	}
	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];

		if (c->src == k && src_cut(sr->fd, (uint64_t)st.st_size, c)) {
			src_cut_follow(h, k, c);
			return;
		}
	}
	for (i = 0; i < h->nchans; i++)
		if (h->chans[i].src == k)
			src_head_update(sr->fd, (uint64_t)st.st_size, &h->chans[i]);
}

/*
 * Next complete line ('\n'-terminated) of the journal for channel c.  Returns
 * 1 with the line (without '\n'), 0 when there is none yet, 2 when an
 * overlong line was skipped (end_off set), -1 on a read error.
 */
static int
reader_next(struct hpf *h, struct hpf_chan *c, const char **line, size_t *len,
    uint64_t *end_off)
{
	char *nl, *nb;
	ssize_t n;
	size_t ncap, want;

	if (src_open(h, c->src) == -1) {
		if (errno != ENOENT)
			pump_hold(h, "hpfeeds: file=%s open failed: %s", h->srcs[c->src].path,
			    strerror(errno));
		return 0;
	}
	for (;;) {
		nl = c->rlen > c->rstart ?
		    memchr(c->rbuf + c->rstart, '\n', c->rlen - c->rstart) : NULL;
		if (nl != NULL) {
			size_t at = (size_t)(nl - c->rbuf);

			*line = c->rbuf + c->rstart;
			*len = at - c->rstart;
			*end_off = c->rbase + at + 1;
			c->rstart = at + 1;
			if (c->rskip) {
				c->rskip = false;
				return 2;
			}
			return 1;
		}
		/* No newline buffered: compact, grow or give up on the line, read. */
		if (c->rstart > 0) {
			memmove(c->rbuf, c->rbuf + c->rstart, c->rlen - c->rstart);
			c->rbase += c->rstart;
			c->rlen -= c->rstart;
			c->rstart = 0;
		}
		if (c->rlen == c->rcap) {
			if (c->rskip || c->rcap >= HPF_LINE_MAX) {
				if (!c->rskip)
					log_warn("hpfeeds: file=%s line at offset %llu longer "
					    "than %u bytes: not published", h->srcs[c->src].path,
					    (unsigned long long)c->rbase, HPF_LINE_MAX);
				c->rskip = true;
				c->rbase += c->rlen;
				c->rlen = 0;
			} else {
				ncap = c->rcap == 0 ? HPF_CHUNK : c->rcap * 2;
				if ((nb = realloc(c->rbuf, ncap)) == NULL) {
					pump_hold(h, "hpfeeds: file=%s: out of memory for "
					    "a line", h->srcs[c->src].path);
					return 0;
				}
				c->rbuf = nb;
				c->rcap = ncap;
			}
		}
		want = c->rcap - c->rlen;
		if (c->src == HPF_SRC_JOURNAL && h->jlimit != NULL) {
			/* The live file only up to its acknowledged lines. */
			uint64_t ino, lim, at = c->rbase + c->rlen;

			h->jlimit(h->jlimit_arg, &ino, &lim);
			if (ino == (uint64_t)h->srcs[c->src].ino) {
				if (lim <= at)
					return 0;
				if (lim - at < want)
					want = (size_t)(lim - at);
			}
		}
		n = pread(h->srcs[c->src].fd, c->rbuf + c->rlen, want,
		    (off_t)(c->rbase + c->rlen));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			pump_hold(h, "hpfeeds: file=%s read failed: %s", h->srcs[c->src].path,
			    strerror(errno));
			return -1;
		}
		if (n == 0)
			return 0;	/* a torn or absent last line: wait for its '\n' */
		c->rlen += (size_t)n;
	}
}

/* --------------------------------------------------------- channel queue */

/* Whether channel c may send another payload now. */
static bool
chan_window_ok(const struct hpf_chan *c)
{
	return !c->denied && c->out_n < HPF_WIN_ENTRIES &&
	    c->out_bytes < HPF_WIN_BYTES && c->qlen < HPF_QUEUE_MAX;
}

/* Append an entry to c's queue; 0 or -1 (out of memory). */
static int
chan_push(struct hpf_chan *c, const struct hpf_entry *e)
{
	struct hpf_entry *nq;
	size_t ncap, i;

	if (c->qlen == c->qcap) {
		ncap = c->qcap == 0 ? 128 : c->qcap * 2;
		if ((nq = calloc(ncap, sizeof(*nq))) == NULL)
			return -1;
		for (i = 0; i < c->qlen; i++)
			nq[i] = c->q[(c->qhead + i) % c->qcap];
		free(c->q);
		c->q = nq;
		c->qcap = ncap;
		c->qhead = 0;
	}
	c->q[(c->qhead + c->qlen) % c->qcap] = *e;
	c->qlen++;
	if (e->outstanding) {
		c->out_n++;
		c->out_bytes += e->bytes;
	}
	return 0;
}

/* Mark entries 0..k (queue order) confirmed, then advance the cursor. */
static void
chan_confirm_upto(struct hpf *h, struct hpf_chan *c, size_t k)
{
	size_t i;

	for (i = 0; i <= k && i < c->qlen; i++) {
		struct hpf_entry *e = &c->q[(c->qhead + i) % c->qcap];

		if (e->outstanding) {
			e->outstanding = false;
			c->out_n--;
			c->out_bytes -= e->bytes;
		}
		e->confirmed = true;
	}
	chan_advance(h, c);
}

/* Pop the confirmed prefix of c's queue, moving the cursor past it. */
static void
chan_advance(struct hpf *h, struct hpf_chan *c)
{
	bool moved = false;

	while (c->qlen > 0) {
		struct hpf_entry *e = &c->q[c->qhead];

		if (!e->confirmed && !e->skip)
			break;
		c->cursor = e->end_off;
		c->lkey = e->lkey;
		c->llen = e->llen;
		if (!e->skip)
			h->stats.confirmed++;
		if (!e->skip)
			metrics_inc(M_FEED_CONFIRMED, "hpfeeds", c->name);
		c->qhead = (c->qhead + 1) % c->qcap;
		c->qlen--;
		moved = true;
	}
	if (moved) {
		c->dirty = true;
		pump_schedule(h);
	}
}

/* Forget everything in flight: the reader goes back to the cursor. */
static void
chan_reset(struct hpf_chan *c)
{
	c->qhead = c->qlen = 0;
	c->out_n = 0;
	c->out_bytes = 0;
	c->subscribed = false;
	c->rbase = c->cursor;
	c->rstart = c->rlen = 0;
	c->rskip = false;
}

/* The configured channel with this name, or NULL. */
static struct hpf_chan *
chan_find(struct hpf *h, const uint8_t *name, size_t len)
{
	int i;

	for (i = 0; i < h->nchans; i++)
		if (strlen(h->chans[i].name) == len &&
		    memcmp(h->chans[i].name, name, len) == 0)
			return &h->chans[i];
	return NULL;
}

/* ------------------------------------------------------------ pump */

/* Run the pump soon (from a zero timer, so I/O is served in between). */
static void
pump_schedule(struct hpf *h)
{
	struct timeval tv = { 0, 0 };

	if (h->sub_mode || h->state != HPF_ST_READY || h->pump_pending || h->held)
		return;
	h->pump_pending = true;
	evtimer_add(h->ev_pump, &tv);
}

/*
 * A transient error (no descriptor, no memory, an I/O error) stopped the
 * pump: the entry stays where it is, the cursor does not move, and the pump
 * runs again after a backoff.  Logged once per series of the same text.
 */
static void
pump_hold(struct hpf *h, const char *fmt, ...)
{
	char buf[512];
	struct timeval tv;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (strcmp(buf, h->retrymsg) != 0) {
		snprintf(h->retrymsg, sizeof(h->retrymsg), "%s", buf);
		log_warn("%s; retrying (the entry stays in the spool)", buf);
	} else
		log_debug("%s; retrying", buf);
	h->held = true;
	h->pump_pending = false;
	evtimer_del(h->ev_pump);
	if (h->retry_ms < HPF_RETRY_MIN_MS)
		h->retry_ms = HPF_RETRY_MIN_MS;
	tv.tv_sec = h->retry_ms / 1000;
	tv.tv_usec = (h->retry_ms % 1000) * 1000;
	evtimer_add(h->ev_retry, &tv);
	h->retry_ms = h->retry_ms * 2 > HPF_RETRY_MAX_MS ? HPF_RETRY_MAX_MS : h->retry_ms * 2;
}

/* An entry was read and built: end a transient error series. */
static void
pump_ok(struct hpf *h)
{
	if (h->retrymsg[0] != '\0')
		log_info("hpfeeds: reading the spool again after: %s", h->retrymsg);
	h->retrymsg[0] = '\0';
	h->retry_ms = HPF_RETRY_MIN_MS;
}

/* The retry backoff expired: pump again. */
static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hpf *h = arg;

	h->held = false;
	pump_schedule(h);
}

/* Publish a bounded batch of journal entries, then yield. */
static void
pump_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hpf *h = arg;
	size_t msgs = 0, bytes = 0, b;
	bool progress = true, any_nosub = false;
	int i, r;

	h->pump_pending = false;
	/* A file cut or rotated since the last tick is noticed before it is read. */
	for (i = 0; i < HPF_NSRC; i++) {
		src_check(h, (enum hpf_src_id)i);
		if (h->state != HPF_ST_READY)
			return;
	}
	while (progress && msgs < HPF_BATCH_MSGS && bytes < HPF_BATCH_BYTES) {
		progress = false;
		for (i = 0; i < h->nchans; i++) {
			struct hpf_chan *c = &h->chans[i];

			if (h->state != HPF_ST_READY || h->held)
				return;
			if (evbuffer_get_length(bufferevent_get_output(h->bev)) > HPF_OUT_HIGH)
				goto out;	/* write_cb resumes */
			if (!chan_window_ok(c))
				continue;
			b = 0;
			r = publish_next(h, c, &b);
			if (r > 0) {
				progress = true;
				msgs++;
				bytes += b;
				if (c->nosub)
					any_nosub = true;
			}
		}
	}
	if (progress)
		pump_schedule(h);	/* more may be waiting: yield, then go on */
out:
	if (any_nosub)
		poll_arm(h);
}

/* A reception record a rule keeps off the feeds ("publish": false). */
static bool
hpf_record_private(const char *line, size_t len)
{
	const char *v;
	size_t vl;

	return hpf_json_object(line, len) && hpf_json_find(line, len, "publish", &v, &vl) &&
	    vl == 5 && memcmp(v, "false", 5) == 0;
}

/*
 * Publish the next journal entry of channel c.  Returns 1 when an entry was
 * queued (published or skipped), 0 when there is nothing to do.
 */
static int
publish_next(struct hpf *h, struct hpf_chan *c, size_t *bytes)
{
	struct hpf_entry e;
	uint8_t hdr[HPF_HDR_LEN + 2 + 2 * HPF_STR8_MAX];
	const char *line;
	size_t len, hl = 0;
	uint64_t end_off;
	int r, b = 0;

	r = reader_next(h, c, &line, &len, &end_off);
	if (r <= 0)
		return 0;
	memset(&e, 0, sizeof(e));
	e.end_off = end_off;
	if (r == 1 && len < UINT32_MAX) {
		e.lkey = fnv64(line, len);
		e.llen = (uint32_t)len;
	}
	if (r == 1 && !(c->src != HPF_SRC_EVENTS && hpf_record_private(line, len)) &&
	    (b = build_payload(h, c, line, len, end_off, &e)) == HPF_RETRY) {
		/* Read this line again after the backoff; the cursor stays. */
		c->rbase = end_off - len - 1;
		c->rstart = c->rlen = 0;
		return 0;
	}
	if (r == 2 || (c->src != HPF_SRC_EVENTS && hpf_record_private(line, len)) ||
	    b == HPF_SKIP ||
	    (hl = hpf_wire_publish_header(hdr, sizeof(hdr), h->feed.identity, c->name,
	    h->pl.len)) == 0) {
		/* Not publishable (logged): it leaves the queue in its turn. */
		e.skip = true;
		if (chan_push(c, &e) == -1)
			goto oom;
		h->stats.skipped++;
		chan_advance(h, c);
		return 1;
	}
	pump_ok(h);
	e.bytes = hl + h->pl.len;
	e.outstanding = true;
	e.sent_ms = now_ms();
	if (chan_push(c, &e) == -1)
		goto oom;
	bufferevent_write(h->bev, hdr, hl);
	bufferevent_write(h->bev, h->pl.buf, h->pl.len);
	h->stats.published++;
	*bytes = e.bytes;
	return 1;
oom:
	/* Out of memory: read this line again next time (r == 2 lines are skipped). */
	if (r == 1) {
		c->rbase = end_off - len - 1;
		c->rstart = c->rlen = 0;
	}
	return 0;
}

/*
 * The .eml of a reception record is gone (ENOENT): the one condition that
 * skips a mail.  Said loudly: a warning, an event, the skipped counter.
 */
static void
skip_missing(struct hpf *h, struct hpf_chan *c, const char *path, const char *sha)
{
	struct jbuf jb;

	log_warn("hpfeeds: message=%s is gone (%s): channel %s skips it, it will "
	    "never be published", path, strerror(ENOENT), c->name);
	jb_init(&jb);
	evlog_begin(&jb, "fosr.output.skipped", NULL);
	jb_kcstr(&jb, "output", "hpfeeds");
	jb_kcstr(&jb, "channel", c->name);
	jb_kcstr(&jb, "sha256", sha);
	jb_kcstr(&jb, "reason", "message file missing");
	evlog_emit(&jb);
	jb_free(&jb);
}

/*
 * Build the payload for the journal line into h->pl (reused when the previous
 * channel built the same one).  Returns 0 with sha set; HPF_SKIP when the
 * entry can never be published (logged: not a record, the .eml is gone, an
 * event too large); HPF_RETRY on a transient error (no descriptor, no memory,
 * an I/O error; the pump is held and retries: a mail is never skipped for a
 * reason that may go away).
 */
static int
build_payload(struct hpf *h, struct hpf_chan *c, const char *line, size_t len,
    uint64_t end_off, struct hpf_entry *ent)
{
	static const char *meta_keys[] = { "time", "session", "queue_id", "listener",
	    "src_ip", "src_port", "dst_ip", "dst_port", "helo", "tls", "auth",
	    "mail_from", "rcpt_to", "anomalies" };
	char path[PATH_MAX], esc[128];
	const char *v;
	size_t vl, i, want;
	struct stat st;
	struct jbuf meta;
	ssize_t n;
	size_t got = 0;
	bool cut = false;
	int fd, rc = -1;
	char *sha = ent->sha;

	if (h->pl_off == end_off && h->pl_src == c->src && h->pl_limit == c->limit) {
		memcpy(sha, h->pl_sha, 65);
		ent->key = fnv64(h->pl.buf, h->pl.len);
		return 0;
	}
	h->pl_off = UINT64_MAX;
	if (c->src == HPF_SRC_EVENTS) {
		/* An event is published as it was logged: one JSON object. */
		if (!hpf_json_object(line, len) || len > c->limit) {
			log_warn("hpfeeds: event at offset %llu of %s is %s; not published",
			    (unsigned long long)(end_off - len - 1), h->srcs[c->src].path,
			    len > c->limit ? "too large" : "not a JSON object");
			return HPF_SKIP;
		}
		jb_reset(&h->pl);
		jb_raw(&h->pl, line, len);
		if (h->pl.oom) {
			jb_free(&h->pl);
			jb_init(&h->pl);
			pump_hold(h, "hpfeeds: event at offset %llu: out of memory",
			    (unsigned long long)(end_off - len - 1));
			return HPF_RETRY;
		}
		ent->key = fnv64(line, len);
		return 0;
	}
	if (!hpf_json_object(line, len) || !hpf_json_find(line, len, "sha256", &v, &vl) ||
	    vl != 66 || !hpf_is_sha256_hex(v + 1, 64)) {
		log_warn("hpfeeds: journal line at offset %llu is not a reception "
		    "record: \"%s\"; not published", (unsigned long long)(end_off - len - 1),
		    log_escape(esc, sizeof(esc), line, len));
		return HPF_SKIP;
	}
	for (i = 0; i < 64; i++)
		sha[i] = (char)(v[1 + i] | ((v[1 + i] >= 'A' && v[1 + i] <= 'F') ? 0x20 : 0));
	sha[64] = '\0';
	if ((size_t)snprintf(path, sizeof(path), "%s/messages/%s.eml", h->spool_dir,
	    sha) >= sizeof(path)) {
		log_warn("hpfeeds: spool path too long for message=%s; not published", sha);
		return HPF_SKIP;
	}
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 || fstat(fd, &st) == -1) {
		int e = errno;

		if (fd != -1)
			close(fd);
		if (e == ENOENT) {
			skip_missing(h, c, path, sha);
			return HPF_SKIP;
		}
		pump_hold(h, "hpfeeds: message=%s unreadable: %s", path, strerror(e));
		return HPF_RETRY;
	}
	/* Each byte makes at least one payload byte: more than limit never fits. */
	want = (uint64_t)st.st_size > c->limit ? c->limit : (size_t)st.st_size;
	if (want + 1 > h->bodycap) {
		unsigned char *nb = realloc(h->body, want + 1);

		if (nb == NULL) {
			close(fd);
			pump_hold(h, "hpfeeds: message=%s: out of memory for %zu bytes",
			    path, want + 1);
			return HPF_RETRY;
		}
		h->body = nb;
		h->bodycap = want + 1;
	}
	n = 0;
	while (got < want) {
		n = pread(fd, h->body + got, want - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got < want) {
		/* An I/O error, or the file changed under us: read it again later. */
		pump_hold(h, "hpfeeds: message=%s %s", path, n < 0 ?
		    strerror(errno) : "shorter than its size");
		close(fd);
		return HPF_RETRY;
	}
	close(fd);

	jb_init(&meta);
	if (h->feed.metadata) {
		jb_obj_open(&meta);
		for (i = 0; i < sizeof(meta_keys) / sizeof(meta_keys[0]); i++) {
			if (hpf_json_find(line, len, meta_keys[i], &v, &vl)) {
				jb_key(&meta, meta_keys[i]);
				jb_raw(&meta, v, vl);
			}
		}
		if (h->sensor[0] != '\0')
			jb_kcstr(&meta, "sensor", h->sensor);
		jb_obj_close(&meta);
		if (meta.oom || meta.len > c->limit / 2) {
			log_warn("hpfeeds: message=%s metadata too large; published without it",
			    sha);
			jb_reset(&meta);
			jb_obj_open(&meta);
			jb_obj_close(&meta);
		}
	}
	if (hpf_payload_build(&h->pl, sha, h->body, got, (uint64_t)st.st_size, c->limit,
	    meta.len > 2 ? meta.buf + 1 : NULL, meta.len > 2 ? meta.len - 2 : 0,
	    &cut) == -1) {
		/* Out of memory (the limit is never below one byte per byte). */
		pump_hold(h, "hpfeeds: message=%s payload could not be built", sha);
		rc = HPF_RETRY;
		goto out;
	}
	if (cut)
		log_info("hpfeeds: message=%s size=%lld published truncated to %zu bytes",
		    sha, (long long)st.st_size, h->pl.len);
	h->pl_off = end_off;
	h->pl_src = c->src;
	h->pl_limit = c->limit;
	memcpy(h->pl_sha, sha, 65);
	ent->key = fnv64(h->pl.buf, h->pl.len);
	rc = 0;
out:
	jb_free(&meta);
	/* Keep memory bounded between big mails. */
	if (h->bodycap > (2u << 20)) {
		free(h->body);
		h->body = NULL;
		h->bodycap = 0;
	}
	return rc;
}

/* ------------------------------------------------------ SIOCOUTQ confirm */

/* Start the SIOCOUTQ poll if it is not running. */
static void
poll_arm(struct hpf *h)
{
	struct timeval tv = { 0, HPF_POLL_MS * 1000 };

	if (!evtimer_pending(h->ev_poll, NULL))
		evtimer_add(h->ev_poll, &tv);
}

/*
 * For channels the identity may not subscribe to: entries whose bytes the
 * broker's TCP stack acknowledged (nothing left in our output buffer and
 * SIOCOUTQ = 0) are confirmed once the connection has stayed up for a grace
 * period after that (an ERROR and close would have come by then).
 */
static void
poll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hpf *h = arg;
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	uint64_t now = now_ms(), grace = HPF_GRACE_MS;
	bool drained = false, waiting = false;
	int sfd, outq = -1, i;
	size_t k;

	if (h->state != HPF_ST_READY)
		return;
	sfd = (int)bufferevent_getfd(h->bev);
	if (evbuffer_get_length(bufferevent_get_output(h->bev)) == 0 && sfd != -1 &&
	    ioctl(sfd, SIOCOUTQ, &outq) == 0 && outq == 0)
		drained = true;
	if (sfd != -1 && getsockopt(sfd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0)
		grace += 2 * (uint64_t)ti.tcpi_rtt / 1000;
	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];
		size_t last = SIZE_MAX;

		if (!c->nosub)
			continue;
		for (k = 0; k < c->qlen; k++) {
			struct hpf_entry *e = &c->q[(c->qhead + k) % c->qcap];

			if (e->skip || e->confirmed)
				continue;
			if (e->acked_ms == 0 && drained) {
				e->acked_ms = now;
				if (e->outstanding) {
					e->outstanding = false;
					c->out_n--;
					c->out_bytes -= e->bytes;
				}
				pump_schedule(h);
			}
			if (e->acked_ms != 0 && now - e->acked_ms >= grace)
				last = k;
			else
				waiting = true;
		}
		if (last != SIZE_MAX)
			chan_confirm_upto(h, c, last);
	}
	if (waiting)
		poll_arm(h);
}

/* ----------------------------------------------------------- connection */

/* Create the client TLS context: verify the broker's certificate and name. */
static int
tls_ctx_setup(struct hpf *h, char *err, size_t errlen)
{
	unsigned long e;

	if ((h->ssl_ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		goto fail;
	SSL_CTX_set_min_proto_version(h->ssl_ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(h->ssl_ctx, SSL_VERIFY_PEER, NULL);
	if (h->feed.ca_file[0] != '\0') {
		if (SSL_CTX_load_verify_locations(h->ssl_ctx, h->feed.ca_file, NULL) != 1)
			goto fail;
	} else if (SSL_CTX_set_default_verify_paths(h->ssl_ctx) != 1)
		goto fail;
	return 0;
fail:
	e = ERR_get_error();
	snprintf(err, errlen, "hpfeeds TLS setup%s%s: %s",
	    h->feed.ca_file[0] != '\0' ? " ca_file=" : "", h->feed.ca_file,
	    e != 0 ? ERR_reason_error_string(e) : "failed");
	ERR_clear_error();
	return -1;
}

/* Create the connection structures used by both the publisher and the tool. */
static struct hpf *
hpf_create(struct event_base *base, const struct cfg_feed *feed,
    const char *spool_dir, bool sub_mode, char *err, size_t errlen)
{
	struct hpf *h;
	char dir[PATH_MAX];
	int i, n;

	if (feed->nchannels <= 0) {
		snprintf(err, errlen, "hpfeeds: no channel configured");
		return NULL;
	}
	if (feed->broker[0] == '\0' || feed->port <= 0 || feed->port > 65535) {
		snprintf(err, errlen, "hpfeeds: broker address or port missing");
		return NULL;
	}
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		snprintf(err, errlen, "hpfeeds: out of memory");
		return NULL;
	}
	h->base = base;
	h->feed = *feed;
	h->sub_mode = sub_mode;
	for (i = 0; i < HPF_NSRC; i++)
		h->srcs[i].fd = -1;
	h->backoff_ms = HPF_BACKOFF_MIN_MS;
	h->pl_off = UINT64_MAX;
	jb_init(&h->pl);
	n = feed->nchannels > CFG_CHANNELS_MAX ? CFG_CHANNELS_MAX : feed->nchannels;
	if (!sub_mode) {
		snprintf(h->spool_dir, sizeof(h->spool_dir), "%s", spool_dir);
		snprintf(h->srcs[HPF_SRC_JOURNAL].path, sizeof(h->srcs[0].path),
		    "%s/receptions.jsonl", spool_dir);
		snprintf(dir, sizeof(dir), "%s/feed", spool_dir);
		if (util_mkdirs(dir, 0750) == -1) {
			snprintf(err, errlen, "hpfeeds: %s: %s", dir, strerror(errno));
			goto fail;
		}
	}
	h->nchans = 0;
	for (i = 0; i < n; i++)
		if (chan_setup(h, feed->channels[i], HPF_SRC_JOURNAL, err, errlen) == -1)
			goto fail;
	if (sub_mode && feed->events_channel[0] != '\0' &&
	    chan_setup(h, feed->events_channel, HPF_SRC_EVENTS, err, errlen) == -1)
		goto fail;
	if (feed->tls && tls_ctx_setup(h, err, errlen) == -1)
		goto fail;
	if (!sub_mode) {
		/*
		 * Record now which journal file each cursor points into: the
		 * spool deletes a rotated segment only once no cursor file
		 * points into it or an older one.
		 */
		(void)src_open(h, HPF_SRC_JOURNAL);
		cursors_save(h);
	}
	h->ev_reconnect = evtimer_new(base, reconnect_cb, h);
	h->ev_pump = evtimer_new(base, pump_cb, h);
	h->ev_poll = evtimer_new(base, poll_cb, h);
	h->ev_tick = event_new(base, -1, EV_PERSIST, tick_cb, h);
	h->ev_retry = evtimer_new(base, retry_cb, h);
	h->retry_ms = HPF_RETRY_MIN_MS;
	if (h->ev_reconnect == NULL || h->ev_pump == NULL || h->ev_poll == NULL ||
	    h->ev_tick == NULL || h->ev_retry == NULL) {
		snprintf(err, errlen, "hpfeeds: cannot create events");
		goto fail;
	}
	{
		struct timeval tv = { 1, 0 };

		evtimer_add(h->ev_tick, &tv);
	}
	if (!sub_mode)
		(void)metrics_on_scrape(hpf_metrics_cb, h);
	conn_start(h);
	return h;
fail:
	hpf_free(h);
	return NULL;
}

/*
 * Add channel name fed from source k: its payload limit and, for the
 * publisher, its cursor.  A name already there is skipped (subscribing twice
 * breaks the reference broker).  0 or -1 with err filled.
 */
static int
chan_setup(struct hpf *h, const char *name, enum hpf_src_id k, char *err, size_t errlen)
{
	char hex[2 * CFG_NAME_MAX + 1];
	struct hpf_chan *c;
	size_t nl;

	if (chan_find(h, (const uint8_t *)name, strlen(name)) != NULL)
		return 0;
	if (h->nchans >= (int)(sizeof(h->chans) / sizeof(h->chans[0]))) {
		snprintf(err, errlen, "hpfeeds: too many channels");
		return -1;
	}
	c = &h->chans[h->nchans];
	memset(c, 0, sizeof(*c));
	nl = strnlen(name, sizeof(c->name) - 1);
	memcpy(c->name, name, nl);
	c->name[nl] = '\0';
	c->src = k;
	c->limit = hpf_wire_max_payload(strlen(h->feed.identity), strlen(c->name));
	if (!h->sub_mode) {
		util_hex(c->name, strlen(c->name), hex);
		if ((size_t)snprintf(c->cursor_path, sizeof(c->cursor_path), "%s/feed/%s.cursor",
		    h->spool_dir, hex) >= sizeof(c->cursor_path)) {
			snprintf(err, errlen, "hpfeeds: spool path too long");
			return -1;
		}
		if (cursor_load(c, err, errlen) == -1)
			return -1;
		chan_reset(c);
	}
	h->nchans++;
	return 0;
}

/* FNV-1a, 64 bits: matches an echoed event with the entry that sent it. */
static uint64_t
fnv64(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint64_t v = 14695981039346656037ull;
	size_t i;

	for (i = 0; i < len; i++) {
		v ^= p[i];
		v *= 1099511628211ull;
	}
	return v;
}

/* Also publish the JSON event log (see hpfeeds.h). */
int
hpf_set_event_log(struct hpf *h, const char *path, char *err, size_t errlen)
{
	if (h->feed.events_channel[0] == '\0' || path == NULL || path[0] == '\0')
		return 0;
	if (chan_find(h, (const uint8_t *)h->feed.events_channel,
	    strlen(h->feed.events_channel)) != NULL) {
		snprintf(err, errlen, "hpfeeds: events_channel %s is also a mail channel",
		    h->feed.events_channel);
		return -1;
	}
	if (h->state == HPF_ST_READY) {
		snprintf(err, errlen, "hpfeeds: hpf_set_event_log() after the connection is up");
		return -1;
	}
	snprintf(h->srcs[HPF_SRC_EVENTS].path, sizeof(h->srcs[0].path), "%s", path);
	if (chan_setup(h, h->feed.events_channel, HPF_SRC_EVENTS, err, errlen) == -1)
		return -1;
	/* Now: which file the cursor points into, before anything rotates it. */
	(void)src_open(h, HPF_SRC_EVENTS);
	cursors_save(h);
	return 0;
}

/* Start the publisher (see hpfeeds.h). */
struct hpf *
hpf_new(struct event_base *base, const struct cfg_feed *feed,
    const char *spool_dir, char *err, size_t errlen)
{
	return hpf_create(base, feed, spool_dir, false, err, errlen);
}

/*
 * At a scrape: connected or not, and each channel's backlog, the bytes after
 * its cursor in the file it reads (the live journal up to its acknowledged
 * length) plus, while an older file drains, the current file's size (a
 * segment between the two, rare, is not counted).
 */
static void
hpf_metrics_cb(void *arg)
{
	struct hpf *h = arg;
	struct stat st;

	metrics_set(M_FEED_CONNECTED, "hpfeeds", NULL, h->state == HPF_ST_READY);
	for (int i = 0; i < h->nchans; i++) {
		const struct hpf_chan *c = &h->chans[i];
		const struct hpf_src *sr = &h->srcs[c->src];
		uint64_t size = 0, ino = 0, lim = 0, backlog = 0;

		if (sr->fd != -1 && fstat(sr->fd, &st) == 0)
			size = (uint64_t)st.st_size;
		else if (sr->fd == -1 && sr->path[0] && stat(sr->path, &st) == 0)
			size = (uint64_t)st.st_size;
		if (c->src == HPF_SRC_JOURNAL && h->jlimit != NULL && !sr->draining) {
			h->jlimit(h->jlimit_arg, &ino, &lim);
			if (sr->fd == -1 || ino == (uint64_t)sr->ino)
				size = lim;
		}
		if (size > c->cursor)
			backlog = size - c->cursor;
		if (sr->draining && stat(sr->path, &st) == 0)
			backlog += (uint64_t)st.st_size;
		metrics_set(M_FEED_BACKLOG, "hpfeeds", c->name, (double)backlog);
	}
}

/* Set the sensor name added to payloads with metadata. */
void
hpf_set_sensor(struct hpf *h, const char *sensor)
{
	snprintf(h->sensor, sizeof(h->sensor), "%s", sensor != NULL ? sensor : "");
	h->pl_off = UINT64_MAX;
}

/* New journal lines: publish soon. */
void
hpf_kick(struct hpf *h)
{
	if (h != NULL)
		pump_schedule(h);
}

/* The live journal's limit (see hpfeeds.h). */
void
hpf_set_journal_limit(struct hpf *h, hpf_limit_fn fn, void *arg)
{
	h->jlimit = fn;
	h->jlimit_arg = arg;
}

/* A mail was committed (smtp_server's on_mail hook): publish soon. */
void
hpf_on_mail(void *arg, const char *record, size_t len)
{
	hpf_kick(arg);
}

/* Copy the counters. */
void
hpf_get_stats(const struct hpf *h, struct hpf_stats *out)
{
	*out = h->stats;
}

/* Save cursors, close, free. */
void
hpf_free(struct hpf *h)
{
	int i;

	if (h == NULL)
		return;
	metrics_off_scrape(hpf_metrics_cb, h);
	if (h->bev != NULL)
		bufferevent_free(h->bev);
	if (!h->sub_mode)
		cursors_save(h);
	if (h->ev_reconnect != NULL)
		event_free(h->ev_reconnect);
	if (h->ev_pump != NULL)
		event_free(h->ev_pump);
	if (h->ev_poll != NULL)
		event_free(h->ev_poll);
	if (h->ev_tick != NULL)
		event_free(h->ev_tick);
	if (h->ev_retry != NULL)
		event_free(h->ev_retry);
	if (h->dns != NULL)
		evdns_base_free(h->dns, 0);
	if (h->ssl_ctx != NULL)
		SSL_CTX_free(h->ssl_ctx);
	for (i = 0; i < HPF_NSRC; i++)
		if (h->srcs[i].fd != -1)
			close(h->srcs[i].fd);
	for (i = 0; i < h->nchans; i++) {
		free(h->chans[i].q);
		free(h->chans[i].rbuf);
	}
	jb_free(&h->pl);
	free(h->body);
	free(h);
}

/* Whether s is a numeric IPv4 or IPv6 address. */
static bool
is_ip_literal(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* Begin a connection attempt (non-blocking). */
static void
conn_start(struct hpf *h)
{
	const char *name;
	SSL *ssl = NULL;
	bool literal = is_ip_literal(h->feed.broker);
	uint64_t gen;

	h->stats.connects++;
	h->closing_logged = false;
	if (!literal && h->dns == NULL &&
	    (h->dns = evdns_base_new(h->base, EVDNS_BASE_INITIALIZE_NAMESERVERS)) == NULL) {
		series_warn(h, "hpfeeds: broker=%s:%d cannot set up DNS resolution",
		    h->feed.broker, h->feed.port);
		reconnect_schedule(h);
		return;
	}
	if (h->feed.tls) {
		name = h->feed.server_name[0] != '\0' ? h->feed.server_name : h->feed.broker;
		if ((ssl = SSL_new(h->ssl_ctx)) == NULL)
			goto fail;
		if (is_ip_literal(name)) {
			if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) != 1)
				goto fail;
		} else if (SSL_set_tlsext_host_name(ssl, name) != 1 ||
		    SSL_set1_host(ssl, name) != 1)
			goto fail;
		h->bev = bufferevent_openssl_socket_new(h->base, -1, ssl,
		    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (h->bev == NULL)
			goto fail;
		ssl = NULL;	/* owned by the bufferevent */
		bufferevent_openssl_set_allow_dirty_shutdown(h->bev, 1);
	} else if ((h->bev = bufferevent_socket_new(h->base, -1,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS)) == NULL)
		goto fail;
	bufferevent_setcb(h->bev, read_cb, write_cb, event_cb, h);
	if (evbuffer_add_cb(bufferevent_get_output(h->bev), out_drained_cb, h) == NULL)
		goto fail;
	bufferevent_setwatermark(h->bev, EV_READ, 0, HPF_READ_HIGH);
	bufferevent_setwatermark(h->bev, EV_WRITE, HPF_OUT_LOW, 0);
	h->state = HPF_ST_CONNECTING;
	h->state_ms = now_ms();
	gen = ++h->gen;
	if (bufferevent_enable(h->bev, EV_READ | EV_WRITE) == -1)
		goto fail;
	/* Callbacks are deferred, but a failure may already have dropped it. */
	if (bufferevent_socket_connect_hostname(h->bev, literal ? NULL : h->dns,
	    AF_UNSPEC, h->feed.broker, h->feed.port) == -1 && h->gen == gen) {
		series_warn(h, "hpfeeds: broker=%s:%d connect failed: %s", h->feed.broker,
		    h->feed.port, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		conn_drop(h, true);
	}
	return;
fail:
	SSL_free(ssl);
	series_warn(h, "hpfeeds: broker=%s:%d cannot create the connection",
	    h->feed.broker, h->feed.port);
	conn_drop(h, true);
}

/*
 * Close the connection (if any) and forget what is in flight; with retry,
 * schedule the next attempt after the backoff.
 */
static void
conn_drop(struct hpf *h, bool retry)
{
	int i;

	if (h->bev != NULL) {
		bufferevent_free(h->bev);
		h->bev = NULL;
	}
	h->state = HPF_ST_IDLE;
	h->gen++;
	h->pump_pending = false;
	evtimer_del(h->ev_pump);
	evtimer_del(h->ev_poll);
	for (i = 0; i < h->nchans; i++)
		chan_reset(&h->chans[i]);
	if (h->stable) {
		h->stable = false;
	}
	if (retry)
		reconnect_schedule(h);
}

/* Arm the reconnect timer: backoff doubling from 1 s to 60 s, +-25 % jitter. */
static void
reconnect_schedule(struct hpf *h)
{
	struct timeval tv;
	uint64_t d = (uint64_t)h->backoff_ms, j = d / 2;

	d = d - d / 4 + (j > 0 ? util_random_u64() % (j + 1) : 0);
	tv.tv_sec = (time_t)(d / 1000);
	tv.tv_usec = (suseconds_t)((d % 1000) * 1000);
	log_debug("hpfeeds: broker=%s:%d reconnect in %llu ms", h->feed.broker,
	    h->feed.port, (unsigned long long)d);
	h->backoff_ms = h->backoff_ms * 2 > HPF_BACKOFF_MAX_MS ?
	    HPF_BACKOFF_MAX_MS : h->backoff_ms * 2;
	h->state = HPF_ST_IDLE;
	evtimer_add(h->ev_reconnect, &tv);
}

/* The backoff timer expired: try again. */
static void
reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
	conn_start(arg);
}

/* TCP keepalive (no protocol keepalive exists) and a bound on unacked data. */
static void
sock_tune(int fd)
{
	int on = 1, idle = 60, intvl = 15, cnt = 4;
	unsigned int uto = 120000;

	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
}

/* Connected, closed or failed. */
static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct hpf *h = arg;
	char reason[256];
	unsigned long e;
	int dnserr;

	if (what & BEV_EVENT_CONNECTED) {
		sock_tune((int)bufferevent_getfd(bev));
		h->state = HPF_ST_INFO;
		h->state_ms = now_ms();
		log_debug("hpfeeds: broker=%s:%d connected, waiting for INFO",
		    h->feed.broker, h->feed.port);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)))
		return;
	if (h->closing_logged) {
		/* The reason (an ERROR frame) was already logged. */
	} else if (h->state == HPF_ST_CONNECTING) {
		reason[0] = '\0';
		dnserr = bufferevent_socket_get_dns_error(bev);
		if (dnserr != 0)
			snprintf(reason, sizeof(reason), "DNS: %s", evutil_gai_strerror(dnserr));
		else if (h->feed.tls && (e = bufferevent_get_openssl_error(bev)) != 0) {
			SSL *ssl = bufferevent_openssl_get_ssl(bev);
			long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;

			snprintf(reason, sizeof(reason), "TLS: %s%s%s",
			    ERR_reason_error_string(e) != NULL ?
			    ERR_reason_error_string(e) : "handshake failed",
			    vr != X509_V_OK ? ": " : "",
			    vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
		}
		else
			snprintf(reason, sizeof(reason), "%s",
			    EVUTIL_SOCKET_ERROR() != 0 ?
			    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()) :
			    "connection closed");
		series_warn(h, "hpfeeds: broker=%s:%d connect failed: %s",
		    h->feed.broker, h->feed.port, reason);
	} else if (what & BEV_EVENT_EOF) {
		series_warn(h, "hpfeeds: broker=%s:%d closed the connection",
		    h->feed.broker, h->feed.port);
	} else {
		series_warn(h, "hpfeeds: broker=%s:%d connection lost: %s",
		    h->feed.broker, h->feed.port,
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	}
	while (ERR_get_error() != 0)
		;
	conn_drop(h, true);
}

/* Bytes left our output buffer for the socket (the write deadline's progress). */
static void
out_drained_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct hpf *h = arg;

	h->wr_drained += info->n_deleted;
}

/* Output drained below the low watermark: keep pumping. */
static void
write_cb(struct bufferevent *bev, void *arg)
{
	pump_schedule(arg);
}

/* Decode and handle every complete frame in the input buffer. */
static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct hpf *h = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct hpf_frame f;
	unsigned char *p;
	char err[256];
	size_t len, used;
	uint32_t total;
	uint8_t op;
	int r;

	h->rx_ms = now_ms();
	for (;;) {
		len = evbuffer_get_length(in);
		if (len < HPF_HDR_LEN)
			return;
		p = evbuffer_pullup(in, HPF_HDR_LEN);
		r = hpf_wire_header(p, len, &total, &op, err, sizeof(err));
		if (r == 1 && op != HPF_OP_ERROR && op != HPF_OP_INFO && op != HPF_OP_PUBLISH) {
			snprintf(err, sizeof(err), "unexpected opcode %u from a broker",
			    (unsigned)op);
			r = -1;
		}
		if (r == -1)
			goto bad;
		if (len < total)
			return;
		p = evbuffer_pullup(in, (ev_ssize_t)total);
		if (p == NULL)
			return;
		if (hpf_wire_decode(p, total, &f, &used, err, sizeof(err)) != 1)
			goto bad;
		if (frame_handle(h, &f) == -1)
			return;	/* connection dropped: bev and in are gone */
		evbuffer_drain(in, used);
	}
bad:
	series_warn(h, "hpfeeds: broker=%s:%d protocol error: %s", h->feed.broker,
	    h->feed.port, err);
	conn_drop(h, true);
}

/* Handle one frame from the broker; -1 when the connection was dropped. */
static int
frame_handle(struct hpf *h, const struct hpf_frame *f)
{
	switch (f->op) {
	case HPF_OP_INFO:
		if (h->state != HPF_ST_INFO)
			return 0;	/* a second INFO: ignore */
		return on_info(h, f);
	case HPF_OP_ERROR:
		on_error_frame(h, f);
		return 0;	/* the broker closes; EOF follows */
	case HPF_OP_PUBLISH:
		if (h->state == HPF_ST_READY)
			on_publish(h, f);
		return 0;
	default:
		return 0;
	}
}

/* INFO: answer with AUTH, subscribe, start publishing. */
static int
on_info(struct hpf *h, const struct hpf_frame *f)
{
	uint8_t buf[HPF_HDR_LEN + 1 + HPF_STR8_MAX + HPF_SHA1_LEN + HPF_STR8_MAX];
	size_t n;
	int i;

	n = hpf_wire_auth(buf, sizeof(buf), h->feed.identity, f->data, f->datalen,
	    h->feed.secret, strlen(h->feed.secret));
	if (n == 0) {
		series_warn(h, "hpfeeds: identity too long for the protocol");
		conn_drop(h, true);
		return -1;
	}
	bufferevent_write(h->bev, buf, n);
	/* Subscribe once per channel per connection (twice breaks the reference broker). */
	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];

		if (c->subscribed || (c->nosub && !h->sub_mode) || c->denied)
			continue;
		n = hpf_wire_subscribe(buf, sizeof(buf), HPF_OP_SUBSCRIBE,
		    h->feed.identity, c->name);
		if (n == 0)
			continue;
		bufferevent_write(h->bev, buf, n);
		c->subscribed = true;
	}
	h->state = HPF_ST_READY;
	h->ready_ms = h->rx_ms = h->state_ms = h->wr_ms = now_ms();
	h->wr_seen = h->wr_drained;
	h->wr_outq = 0;
	log_debug("hpfeeds: broker=%s:%d ident=%s authenticating", h->feed.broker,
	    h->feed.port, h->feed.identity);
	if (h->sub_mode)
		fprintf(stderr, "hpfeeds: connected to %s:%d, subscribed to %d channel(s)\n",
		    h->feed.broker, h->feed.port, h->nchans);
	pump_schedule(h);
	return 0;
}

/* Find "chan=<name>" at the end of an ERROR text. */
static struct hpf_chan *
error_chan(struct hpf *h, const struct hpf_frame *f)
{
	const uint8_t *p = f->data, *e = f->data + f->datalen;
	size_t i;

	for (i = 0; i + 5 <= f->datalen; i++) {
		if (memcmp(p + i, "chan=", 5) == 0)
			return chan_find(h, p + i + 5, (size_t)(e - (p + i + 5)));
	}
	return NULL;
}

/* ERROR from the broker: log it (once per series) and react. */
static void
on_error_frame(struct hpf *h, const struct hpf_frame *f)
{
	char text[300];
	struct hpf_chan *c;

	log_escape(text, sizeof(text), f->data, f->datalen);
	if (f->datalen >= 21 && memmem(f->data, f->datalen, "Authentication failed", 21)) {
		series_warn(h, "hpfeeds: broker=%s:%d ident=%s authentication failed "
		    "(wrong identity or secret): \"%s\"; retrying with backoff",
		    h->feed.broker, h->feed.port, h->feed.identity, text);
		return;
	}
	if (memmem(f->data, f->datalen, "to sub", 6) != NULL &&
	    (c = error_chan(h, f)) != NULL && !h->sub_mode) {
		/* Confirm this channel by TCP acknowledgement from now on. */
		if (!c->nosub)
			log_info("hpfeeds: broker=%s:%d ident=%s may not subscribe to "
			    "channel %s: confirming its publishes by TCP acknowledgement",
			    h->feed.broker, h->feed.port, h->feed.identity, c->name);
		c->nosub = true;
		h->closing_logged = true;
		h->backoff_ms = HPF_BACKOFF_MIN_MS;
		return;
	}
	if (memmem(f->data, f->datalen, "to pub", 6) != NULL &&
	    (c = error_chan(h, f)) != NULL && !h->sub_mode) {
		if (!c->denied)
			log_warn("hpfeeds: broker=%s:%d refused publishing: \"%s\"; channel "
			    "%s is held in the spool until restart", h->feed.broker,
			    h->feed.port, text, c->name);
		c->denied = true;
		h->closing_logged = true;
		return;
	}
	series_warn(h, "hpfeeds: broker=%s:%d error: \"%s\"", h->feed.broker,
	    h->feed.port, text);
}

/* A publish came back: confirm our own (echo), or print it (tool). */
static void
on_publish(struct hpf *h, const struct hpf_frame *f)
{
	struct hpf_chan *c;
	const char *sha;
	uint64_t key = 0;
	size_t k;

	if (h->sub_mode) {
		sub_print(h, f);
		return;
	}
	if (f->namelen != strlen(h->feed.identity) ||
	    memcmp(f->name, h->feed.identity, f->namelen) != 0)
		return;
	if ((c = chan_find(h, f->chan, f->chanlen)) == NULL || c->nosub)
		return;
	/*
	 * Our own publish, not one of the same mail by another sensor sharing
	 * the identity (a spam run sends the same bytes to many): the whole
	 * payload matches, its metadata (session, queue id, time) included.
	 */
	if (c->src != HPF_SRC_EVENTS &&
	    (f->datalen < 11 + 64 || memcmp(f->data, "{\"sha256\":\"", 11) != 0))
		return;	/* our mail payloads start with {"sha256":"<64 hex>" */
	key = fnv64(f->data, f->datalen);
	sha = (const char *)f->data + 11;
	for (k = 0; k < c->qlen; k++) {
		struct hpf_entry *e = &c->q[(c->qhead + k) % c->qcap];

		if (e->skip || e->confirmed)
			continue;
		if (e->key == key && (c->src == HPF_SRC_EVENTS ||
		    memcmp(e->sha, sha, 64) == 0)) {
			/* In order on one connection: everything before it got through too. */
			chan_confirm_upto(h, c, k);
			if (!h->stable) {
				h->stable = true;
				h->backoff_ms = HPF_BACKOFF_MIN_MS;
				if (h->lastmsg[0] != '\0')
					log_info("hpfeeds: broker=%s:%d publishing again",
					    h->feed.broker, h->feed.port);
				h->lastmsg[0] = '\0';
			}
			return;
		}
	}
}

/*
 * Every connection state has a deadline (feed.timeout): the TCP connect and
 * TLS handshake, the broker's INFO, and in READY a write the broker stops
 * taking (our output buffer plus the socket's unacknowledged bytes neither
 * empty nor shrinking).  A missed one drops the connection and reconnects
 * with the backoff; the warning's text is the same for every attempt, so
 * series_warn logs it once per series.  -1 when the connection was dropped.
 */
static int
deadline_check(struct hpf *h, uint64_t now)
{
	uint64_t limit = (uint64_t)(h->feed.timeout > 0 ? h->feed.timeout :
	    HPF_TIMEOUT_DEFAULT) * 1000;
	int sfd, outq = 0;
	size_t buffered;

	switch (h->state) {
	case HPF_ST_IDLE:
		return 0;
	case HPF_ST_CONNECTING:
		if (now - h->state_ms < limit)
			return 0;
		series_warn(h, "hpfeeds: broker=%s:%d connect%s not complete within %d s; "
		    "reconnecting", h->feed.broker, h->feed.port,
		    h->feed.tls ? " and TLS handshake" : "", (int)(limit / 1000));
		break;
	case HPF_ST_INFO:
		if (now - h->state_ms < limit)
			return 0;
		series_warn(h, "hpfeeds: broker=%s:%d connected but sent no INFO within "
		    "%d s; reconnecting", h->feed.broker, h->feed.port, (int)(limit / 1000));
		break;
	case HPF_ST_READY:
		/*
		 * Progress: nothing waiting, the socket took more from our
		 * buffer, or the peer acknowledged some of the socket's queue.
		 */
		buffered = evbuffer_get_length(bufferevent_get_output(h->bev));
		sfd = (int)bufferevent_getfd(h->bev);
		if (sfd == -1 || ioctl(sfd, SIOCOUTQ, &outq) == -1)
			outq = 0;
		if ((buffered == 0 && outq == 0) || h->wr_drained != h->wr_seen ||
		    outq < h->wr_outq) {
			h->wr_ms = now;
			h->wr_seen = h->wr_drained;
			h->wr_outq = outq;
			return 0;
		}
		h->wr_outq = outq;
		if (now - h->wr_ms < limit)
			return 0;
		series_warn(h, "hpfeeds: broker=%s:%d stopped reading (nothing taken "
		    "for %d s); reconnecting", h->feed.broker, h->feed.port,
		    (int)(limit / 1000));
		break;
	}
	conn_drop(h, true);
	return -1;
}

/* Once a second: save cursors, notice stable connections, stalls, new lines. */
static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hpf *h = arg;
	uint64_t now = now_ms();
	int i;

	if (!h->sub_mode) {
		cursors_save(h);
		src_check(h, HPF_SRC_JOURNAL);
		src_check(h, HPF_SRC_EVENTS);
	}
	if (deadline_check(h, now) == -1)
		return;
	if (h->state != HPF_ST_READY)
		return;
	if (!h->stable && now - h->ready_ms >= HPF_STABLE_MS) {
		h->stable = true;
		h->backoff_ms = HPF_BACKOFF_MIN_MS;
		if (h->lastmsg[0] != '\0' || !h->sub_mode)
			log_info("hpfeeds: broker=%s:%d connected as %s%s",
			    h->feed.broker, h->feed.port, h->feed.identity,
			    h->feed.tls ? " (TLS)" : "");
		h->lastmsg[0] = '\0';
	}
	if (h->sub_mode)
		return;
	for (i = 0; i < h->nchans; i++) {
		struct hpf_chan *c = &h->chans[i];
		struct hpf_entry *e;

		if (c->qlen > 0 && c->nosub)
			poll_arm(h);
		if (c->qlen == 0 || c->nosub)
			continue;
		e = &c->q[c->qhead];
		/* A slow link still brings echoes back: only silence is a stall. */
		if (!e->skip && !e->confirmed && now - e->sent_ms > HPF_STALL_MS &&
		    now - h->rx_ms > HPF_STALL_MS / 2) {
			series_warn(h, "hpfeeds: broker=%s:%d channel %s: no echo for %d s; "
			    "reconnecting to publish again", h->feed.broker, h->feed.port,
			    c->name, HPF_STALL_MS / 1000);
			conn_drop(h, true);
			return;
		}
	}
	pump_schedule(h);
}

/* ------------------------------------------------------------ subscriber */

/* Print a received publish as one JSON line with the verification result. */
static void
sub_print(struct hpf *h, const struct hpf_frame *f)
{
	struct jbuf jb;
	const char *p = (const char *)f->data, *e = p + f->datalen, *q;
	bool obj = hpf_json_object(p, f->datalen);

	jb_init(&jb);
	jb_obj_open(&jb);
	jb_kstr(&jb, "channel", f->chan, f->chanlen);
	jb_kstr(&jb, "ident", f->name, f->namelen);
	jb_kbool(&jb, "verified", obj && hpf_payload_verify(p, f->datalen) == 1);
	if (!obj)
		jb_kstr(&jb, "payload_raw", p, f->datalen);
	jb_obj_close(&jb);
	if (jb.oom) {
		jb_free(&jb);
		return;
	}
	if (obj) {
		/*
		 * Splice the payload's members in after ours.  In valid JSON a raw
		 * CR or LF can only be whitespace: make it a space (one line each).
		 */
		for (q = p; *q != '{'; q++)
			;	/* a valid object: only whitespace before its brace */
		for (q++; q < e && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'); q++)
			;
		while (e > q && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' ||
		    e[-1] == '\r'))
			e--;
		fwrite(jb.buf, 1, jb.len - 1, stdout);
		if (*q != '}')
			fputc(',', stdout);
		for (; q < e; q++)
			fputc(*q == '\n' || *q == '\r' ? ' ' : *q, stdout);
	} else
		fwrite(jb.buf, 1, jb.len, stdout);
	fputc('\n', stdout);
	jb_free(&jb);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "hpfeeds: cannot write to stdout: %s\n", strerror(errno));
		h->sub_failed = true;
		event_base_loopbreak(h->base);
		return;
	}
	if (h->sub_count > 0 && ++h->sub_seen >= h->sub_count)
		event_base_loopbreak(h->base);
}

/* The operator tool (see hpfeeds.h). */
int
hpf_subscribe_main(const struct cfg_feed *feed, int argc, char **argv)
{
	struct event_base *base;
	struct hpf *h;
	char err[256];
	long count = 0;
	int i, rc;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
			uint64_t v;

			if (util_parse_u64(argv[i + 1], strlen(argv[i + 1]), 1, LONG_MAX,
			    false, &v) == -1) {
				fprintf(stderr, "--count: not a positive number\n");
				return 2;
			}
			count = (long)v;
			i++;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	if ((base = event_base_new()) == NULL) {
		fprintf(stderr, "hpfeeds: cannot create an event loop\n");
		return 1;
	}
	if ((h = hpf_create(base, feed, NULL, true, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		event_base_free(base);
		return 1;
	}
	h->sub_count = count;
	event_base_dispatch(base);
	rc = h->sub_failed ? 1 : 0;
	hpf_free(h);
	event_base_free(base);
	return rc;
}
