/*
 * Text log on stderr and the JSON-lines event log.  Every text line is
 * formatted in full and written with one write(2) so that lines from several
 * threads never interleave; every event is one line written the same way to a
 * file opened with O_APPEND.
 *
 * On the event loop thread, after log_defer_start(), lines are gathered in
 * memory and written by log_flush() at the end of the loop pass (one write
 * per file per pass instead of one per line; the session module flushes
 * before it sends replies, so a client never sees a reply before the event
 * it follows is in the file).  Errors, other threads and a full buffer write
 * at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <linux/limits.h>	/* PATH_MAX: <limits.h> resolves to src/limits.h under -Isrc */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>	/* EVENT_LOG_*: constants only */

#include "log.h"
#include "utf8.h"
#include "util.h"

#define LOG_LINE_MAX	4096
#define LOG_DEFER_MAX	(64 * 1024)	/* a pass writing more flushes early */

/* Lines waiting for log_flush(): one queue per file. */
struct dq {
	char	*buf;
	size_t	 len;
};

static void	 log_vlog(enum log_level, const char *, va_list)
		    __attribute__((format(printf, 2, 0)));
static size_t	 esc_token(unsigned char, char *);
static int	 log_event_openfd(const char *);
static void	 log_event_write(const char *, size_t);
static bool	 log_deferring(void);
static void	 dq_add(struct dq *, int, const char *, size_t);
static void	 dq_flush(struct dq *, int);

static enum log_level	 log_level = LOG_LVL_INFO;
static const char *const log_names[] = { "err", "warn", "info", "debug" };

static int	 ev_fd = -1;
static char	 ev_path[PATH_MAX];
static char	 ev_sensor[256];
static bool	 ev_failing;	/* last write failed: warn once per failure series */

static bool		 defer_on;
static pthread_t	 defer_thread;
static void		(*defer_kick)(void *);
static void		*defer_kick_arg;
static struct dq	 dq_text, dq_ev;

/* Set the threshold of the text log. */
void
log_init(enum log_level level)
{
	log_level = level;
}

/* Whether debug lines are written. */
bool
log_debug_enabled(void)
{
	return log_level >= LOG_LVL_DEBUG;
}

/*
 * From now on, lines written by the calling thread wait in memory for
 * log_flush(); kick(arg) runs when a queue goes from empty to non-empty (it
 * should arrange a log_flush() at the end of the loop pass).
 */
void
log_defer_start(void (*kick)(void *), void *arg)
{
	defer_thread = pthread_self();
	defer_kick = kick;
	defer_kick_arg = arg;
	defer_on = true;
}

/* Write what waits and stop deferring (before exit). */
void
log_defer_stop(void)
{
	log_flush();
	defer_on = false;
	free(dq_text.buf);
	free(dq_ev.buf);
	memset(&dq_text, 0, sizeof(dq_text));
	memset(&dq_ev, 0, sizeof(dq_ev));
}

/* Whether this thread's lines are deferred now. */
static bool
log_deferring(void)
{
	return defer_on && pthread_equal(pthread_self(), defer_thread);
}

/* Queue len bytes for fd; writes at once when the queue is full or memory is short. */
static void
dq_add(struct dq *q, int fd, const char *p, size_t len)
{
	bool was_empty = q->len == 0;

	if (q->buf == NULL && (q->buf = malloc(LOG_DEFER_MAX)) == NULL) {
		(void)util_write_all(fd, p, len);
		return;
	}
	if (q->len + len > LOG_DEFER_MAX)
		dq_flush(q, fd);
	if (len > LOG_DEFER_MAX) {
		(void)util_write_all(fd, p, len);
		return;
	}
	memcpy(q->buf + q->len, p, len);
	q->len += len;
	if (was_empty && defer_kick != NULL)
		defer_kick(defer_kick_arg);
}

/* Write a queue out. */
static void
dq_flush(struct dq *q, int fd)
{
	if (q->len == 0)
		return;
	if (fd != -1)
		(void)util_write_all(fd, q->buf, q->len);
	q->len = 0;
}

/* Write the lines the loop thread gathered (events first, then text). */
void
log_flush(void)
{
	if (!log_deferring())
		return;
	if (dq_ev.len > 0) {
		size_t len = dq_ev.len;

		dq_ev.len = 0;
		log_event_write(dq_ev.buf, len);
	}
	dq_flush(&dq_text, STDERR_FILENO);
}

/* Format one text log line "TIMESTAMP level message" and write it to stderr. */
static void
log_vlog(enum log_level level, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	size_t n;
	int r;

	if (level > log_level)
		return;
	log_timestamp(line, sizeof(line));
	n = strlen(line);
	r = snprintf(line + n, sizeof(line) - n, " %s ", log_names[level]);
	if (r > 0)
		n += (size_t)r;
	r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (r < 0)
		r = 0;
	if ((size_t)r >= sizeof(line) - n) {
		/* Truncated: mark it so the reader knows. */
		n = sizeof(line) - 5;
		memcpy(line + n, "...", 3);
		n += 3;
	} else
		n += (size_t)r;
	line[n++] = '\n';
	if (level <= LOG_LVL_WARN || !log_deferring()) {
		/* Keep the order of what this thread wrote before. */
		if (log_deferring())
			dq_flush(&dq_text, STDERR_FILENO);
		(void)util_write_all(STDERR_FILENO, line, n);
	} else
		dq_add(&dq_text, STDERR_FILENO, line, n);
}

/* Log an error. */
void
log_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vlog(LOG_LVL_ERR, fmt, ap);
	va_end(ap);
}

/* Log a warning. */
void
log_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vlog(LOG_LVL_WARN, fmt, ap);
	va_end(ap);
}

/* Log an informational line. */
void
log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vlog(LOG_LVL_INFO, fmt, ap);
	va_end(ap);
}

/* Log a debug line (only with -d). */
void
log_debug(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vlog(LOG_LVL_DEBUG, fmt, ap);
	va_end(ap);
}

static pthread_mutex_t	series_mu = PTHREAD_MUTEX_INITIALIZER;

static void	log_at(enum log_level, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

/* log_vlog() with arguments. */
static void
log_at(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vlog(lvl, fmt, ap);
	va_end(ap);
}

static int64_t
series_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec;
}

/* One occurrence of a repeated condition (see log.h). */
void
log_series(struct log_series *s, enum log_level lvl, const char *fmt, ...)
{
	char buf[LOG_LINE_MAX / 2];
	unsigned long long held;
	int64_t now = series_now(), since;
	int saved = errno;	/* callers log on their error paths */
	va_list ap;

	pthread_mutex_lock(&series_mu);
	s->total++;
	if (s->logged && now - s->last < LOG_SERIES_S) {
		s->held++;
		pthread_mutex_unlock(&series_mu);
		errno = saved;
		return;
	}
	held = s->held;
	since = s->logged ? now - s->last : 0;
	s->held = 0;
	s->last = now;
	s->logged = true;
	pthread_mutex_unlock(&series_mu);
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (held > 0)
		log_at(lvl, "%s (%llu more not logged in the last %lld s)", buf, held,
		    (long long)since);
	else
		log_at(lvl, "%s", buf);
	errno = saved;
}

/* The condition is over: its closing line, with the count (see log.h). */
void
log_series_end(struct log_series *s, enum log_level lvl, const char *fmt, ...)
{
	char buf[LOG_LINE_MAX / 2];
	unsigned long long total;
	int64_t now;
	int saved = errno;
	va_list ap;

	now = series_now();
	pthread_mutex_lock(&series_mu);
	if (s->total == 0 || (s->ended && now - s->last_end < LOG_SERIES_S)) {
		pthread_mutex_unlock(&series_mu);
		errno = saved;
		return;
	}
	total = s->total;
	s->total = 0;
	s->last_end = now;
	s->ended = true;
	pthread_mutex_unlock(&series_mu);
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_at(lvl, "%s (after %llu occurrences)", buf, total);
	errno = saved;
}

/* libevent's log line (any thread): see log.h. */
void
log_libevent(int severity, const char *msg)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static time_t window;
	static unsigned shown;
	static unsigned long long dropped;
	char esc[512];
	struct timespec now;
	enum log_level lvl;
	unsigned long long was = 0;
	bool show;

	switch (severity) {
	case EVENT_LOG_DEBUG:	lvl = LOG_LVL_DEBUG; break;
	case EVENT_LOG_MSG:	lvl = LOG_LVL_INFO; break;
	case EVENT_LOG_WARN:	lvl = LOG_LVL_WARN; break;
	default:		lvl = LOG_LVL_ERR; break;
	}
	if (lvl > log_level)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&mu);
	if (now.tv_sec - window >= LOG_LIBEVENT_WINDOW_S) {
		window = now.tv_sec;
		shown = 0;
		was = dropped;
		dropped = 0;
	}
	if ((show = shown < LOG_LIBEVENT_BURST))
		shown++;
	else
		dropped++;
	pthread_mutex_unlock(&mu);
	if (was > 0)
		log_warn("libevent: %llu lines suppressed (more than %d in %d s)", was,
		    LOG_LIBEVENT_BURST, LOG_LIBEVENT_WINDOW_S);
	if (!show)
		return;
	log_escape(esc, sizeof(esc), msg ? msg : "", msg ? strlen(msg) : 0);
	switch (lvl) {
	case LOG_LVL_DEBUG:	log_debug("libevent: %s", esc); break;
	case LOG_LVL_INFO:	log_info("libevent: %s", esc); break;
	case LOG_LVL_WARN:	log_warn("libevent: %s", esc); break;
	default:		log_err("libevent: %s", esc); break;
	}
}

/* Log an error and exit 1: startup failures and broken invariants only. */
void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vlog(LOG_LVL_ERR, fmt, ap);
	va_end(ap);
	log_flush();
	exit(1);
}

/* Write the current UTC time as "YYYY-mm-ddTHH:MM:SS.uuuuuuZ" into buf. */
void
log_timestamp(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	char date[32];

	if (len == 0)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	if (strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		date[0] = '\0';
	snprintf(buf, len, "%s.%06ldZ", date, (long)(ts.tv_nsec / 1000));
}

/* Write the escaped form of byte c into out (at most 4 chars); returns its length. */
static size_t
esc_token(unsigned char c, char *out)
{
	static const char hex[] = "0123456789abcdef";

	switch (c) {
	case '\r':
		memcpy(out, "\\r", 2);
		return 2;
	case '\n':
		memcpy(out, "\\n", 2);
		return 2;
	case '\t':
		memcpy(out, "\\t", 2);
		return 2;
	case '\\':
		memcpy(out, "\\\\", 2);
		return 2;
	case '"':
		/* Values are quoted in the log: a quote would end one and forge the next field. */
		memcpy(out, "\\\"", 2);
		return 2;
	default:
		break;
	}
	if (c >= 0x20 && c <= 0x7e) {
		out[0] = (char)c;
		return 1;
	}
	out[0] = '\\';
	out[1] = 'x';
	out[2] = hex[c >> 4];
	out[3] = hex[c & 0xf];
	return 4;
}

/*
 * Escape len bytes of src into dst (dstlen >= 4) as printable ASCII.  When the
 * whole escaped form does not fit, as many whole tokens as fit are kept and
 * "..." is appended.  Returns dst.
 */
char *
log_escape(char *dst, size_t dstlen, const void *src, size_t len)
{
	const unsigned char *s = src;
	char tok[4];
	size_t i, n, pos = 0, total = 0, room;
	bool fits = true;

	if (dstlen == 0)
		return dst;
	if (dstlen < 4) {
		dst[0] = '\0';
		return dst;
	}
	for (i = 0; i < len; i++) {
		total += esc_token(s[i], tok);
		if (total > dstlen - 1) {
			fits = false;
			break;
		}
	}
	room = fits ? dstlen - 1 : dstlen - 4;
	for (i = 0; i < len; i++) {
		n = esc_token(s[i], tok);
		if (pos + n > room)
			break;
		memcpy(dst + pos, tok, n);
		pos += n;
	}
	if (!fits) {
		memcpy(dst + pos, "...", 3);
		pos += 3;
	}
	dst[pos] = '\0';
	return dst;
}

/* Open path for appending events; returns the fd or -1 (errno set). */
static int
log_event_openfd(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

/*
 * Open the event log at path (append, created 0640) and remember sensor for
 * every event.  NULL or "" disables the event log.  Returns 0, or -1 with err
 * filled.
 */
int
log_event_open(const char *path, const char *sensor, char *err, size_t errlen)
{
	int fd;

	if (sensor == NULL)
		sensor = "";
	if (strlen(sensor) >= sizeof(ev_sensor)) {
		snprintf(err, errlen, "sensor name too long");
		return -1;
	}
	if (path != NULL && strlen(path) >= sizeof(ev_path)) {
		snprintf(err, errlen, "event log path too long");
		return -1;
	}
	log_event_close();
	memcpy(ev_sensor, sensor, strlen(sensor) + 1);
	if (path == NULL || *path == '\0')
		return 0;
	if ((fd = log_event_openfd(path)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	memcpy(ev_path, path, strlen(path) + 1);
	ev_fd = fd;
	ev_failing = false;
	return 0;
}

/*
 * Reopen the event log at the same path (after logrotate moved it).  The
 * descriptor number stays the same, so a writer in another thread never sees
 * a closed descriptor.  On failure the old file stays in use.
 */
void
log_event_reopen(void)
{
	int fd;

	if (ev_fd == -1)
		return;
	log_flush();
	if ((fd = log_event_openfd(ev_path)) == -1) {
		log_warn("event log %s: reopen: %s", ev_path, strerror(errno));
		return;
	}
	if (dup3(fd, ev_fd, O_CLOEXEC) == -1)
		log_warn("event log %s: reopen: %s", ev_path, strerror(errno));
	close(fd);
}

/* Close the event log; later events are discarded. */
void
log_event_close(void)
{
	log_flush();
	if (ev_fd != -1)
		close(ev_fd);
	ev_fd = -1;
	ev_path[0] = '\0';
}

/*
 * Reset jb and start an event: eventid, timestamp, then (when conn is not
 * NULL) session, src_ip, src_port, dst_ip, dst_port, protocol, then sensor.
 */
void
log_event_begin(struct jbuf *jb, const char *eventid, const struct event_conn *conn)
{
	char ts[40], sid[20];

	jb_reset(jb);
	jb_obj_open(jb);
	jb_kcstr(jb, "eventid", eventid);
	log_timestamp(ts, sizeof(ts));
	jb_kcstr(jb, "timestamp", ts);
	if (conn != NULL) {
		snprintf(sid, sizeof(sid), "%016llx",
		    (unsigned long long)conn->session);
		jb_kcstr(jb, "session", sid);
		jb_kcstr(jb, "src_ip", conn->src_ip);
		jb_kint(jb, "src_port", conn->src_port);
		jb_kcstr(jb, "dst_ip", conn->dst_ip);
		jb_kint(jb, "dst_port", conn->dst_port);
		jb_kcstr(jb, "protocol", conn->protocol);
		if (conn->client_name != NULL && conn->client_name[0] != '\0')
			jb_kcstr(jb, "client_name", conn->client_name);
	}
	jb_kcstr(jb, "sensor", ev_sensor);
}

/* The event's "message": a bounded human line (log.h). */
void
log_event_message(struct jbuf *jb, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	jb_kstr(jb, "message", buf, (size_t)n);
}

/*
 * Close the event's object, append "\n" and write the line to the event log
 * in one write(2).  Without an open event log, or when the builder ran out of
 * memory, the event is discarded.  jb keeps the finished line (len bytes,
 * newline included) so a caller can mirror it elsewhere.
 */
void
log_event_emit(struct jbuf *jb)
{
	jb_obj_close(jb);
	jb_put(jb, "\n", 1);
	if (jb->oom || ev_fd == -1)
		return;
	if (log_deferring()) {
		dq_add(&dq_ev, ev_fd, jb->buf, jb->len);
		return;
	}
	log_event_write(jb->buf, jb->len);
}

/* Write event lines to the event log; a failure is warned about once per series. */
static void
log_event_write(const char *p, size_t len)
{
	if (ev_fd == -1)
		return;
	if (util_write_all(ev_fd, p, len) == -1) {
		if (!ev_failing)
			log_warn("event log %s: write: %s", ev_path, strerror(errno));
		ev_failing = true;
		return;
	}
	ev_failing = false;
}
