/*
 * Text log (stderr, OpenSMTPD style "key=value" lines) and the JSON-lines event
 * log (Cowrie conventions).  Attacker bytes never reach either unescaped:
 * log_escape() for text, jb_str() for JSON.
 */
#ifndef FOSR_LOG_H
#define FOSR_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "utf8.h"

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Set the text log threshold; debug also turns on the protocol trace (-d). */
void	log_init(enum log_level level);
/*
 * Gather the calling (event loop) thread's info/debug lines and events in
 * memory until log_flush(); kick(arg) is called when something starts
 * waiting.  log_defer_stop() flushes and ends it.
 */
void	log_defer_start(void (*kick)(void *), void *arg);
void	log_defer_stop(void);
void	log_flush(void);
bool	log_debug_enabled(void);

void	log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * libevent's internal log (event_set_log_callback): its severity mapped to
 * ours, the text escaped, and at most LOG_LIBEVENT_BURST lines a window of
 * LOG_LIBEVENT_WINDOW_S seconds; the first line of a later window says how
 * many were suppressed.  A loop that logs in a spin can never flood stderr.
 */
#define LOG_LIBEVENT_BURST	5
#define LOG_LIBEVENT_WINDOW_S	1
void	log_libevent(int severity, const char *msg);
/*
 * A condition that can repeat without bound at an attacker's pace (accept(2)
 * failing for want of descriptors, the session cap reached and left again,
 * a full spool refusing every recipient): one struct log_series per call
 * site, zeroed (static, or in the owner's struct).  log_series() writes the
 * first occurrence at once, then at most one line per LOG_SERIES_S seconds,
 * which says how many were not written in between.  log_series_end() (the
 * condition is over) writes one closing line with the count, at most once
 * per LOG_SERIES_S too (a condition that flaps stays a few lines a minute);
 * a closing line held back is written by a later call, with the sum.  Any
 * thread.
 */
#define LOG_SERIES_S	60
struct log_series {
	int64_t			 last;		/* monotonic s of the last line, logged */
	int64_t			 last_end;	/* of the last closing line, ended */
	unsigned long long	 held;		/* occurrences not written since last */
	unsigned long long	 total;		/* occurrences not yet closed */
	bool			 logged, ended;
};
void	log_series(struct log_series *, enum log_level, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
void	log_series_end(struct log_series *, enum log_level, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));

/* Startup failures and broken invariants only: logs and exits 1. */
void	fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * Copy len bytes of src into dst as printable ASCII (vis-like: \r \n \t \\
 * \", other bytes outside 0x20..0x7e as \xNN: C0, DEL, C1, bidi controls and
 * invalid UTF-8 never come out raw), NUL-terminated, truncated with "..."
 * when dst is too small.  Returns dst.  dstlen must be >= 4.  Every attacker
 * byte in a text log line goes through here; a value that may hold a space
 * is printed as key="%s" (the quote cannot be closed from inside).
 */
char	*log_escape(char *dst, size_t dstlen, const void *src, size_t len);

#include "jbuf.h"

/* The connection facts every event carries. */
struct event_conn {
	uint64_t	 session;	/* printed as %016llx */
	const char	*src_ip;
	int		 src_port;
	const char	*dst_ip;
	int		 dst_port;
	const char	*protocol;	/* "smtp" */
	const char	*client_name;	/* the client lookup's name; NULL/"" before it */
};

/* Open (append, create 0640) the event log; NULL path or "" disables it. */
int	log_event_open(const char *path, const char *sensor, char *err, size_t errlen);
/* Reopen the same path (SIGHUP, for logrotate).  Logs a warning on failure. */
void	log_event_reopen(void);
void	log_event_close(void);

/*
 * Start an event in jb: opens the object and writes eventid, timestamp (ISO
 * 8601 UTC with microseconds), session, src/dst, protocol and sensor.  The
 * caller adds its fields and calls log_event_emit(), which closes the object,
 * appends a newline and writes the line in one write(2).  conn may be NULL
 * for events outside a session.
 */
void	log_event_begin(struct jbuf *jb, const char *eventid, const struct event_conn *conn);
void	log_event_emit(struct jbuf *jb);
/*
 * The event's human "message" (Cowrie's convention: one line a person reads
 * in Kibana), formatted into a bounded buffer (cut at 1 KiB) and written
 * with jb_str, so attacker bytes in it are escaped like every other field.
 */
void	log_event_message(struct jbuf *jb, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));

/* Current time as ISO 8601 UTC with microseconds: "2026-11-27T04:35:30.123456Z". */
void	log_timestamp(char *buf, size_t len);

#endif
