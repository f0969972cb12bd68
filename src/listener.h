/*
 * Listening sockets and the session caps: all listeners together
 * (limits.sessions) and per client address (limits.sessions_per_ip).  A client
 * over a cap gets the persona's 421 and is closed without a session.
 */
#ifndef FOSR_LISTENER_H
#define FOSR_LISTENER_H

#include <stddef.h>

struct smtp_server;
struct listeners;

/*
 * Bind every configured listener (address, port + port_offset).  Must run
 * before privileges are dropped.  Returns NULL with err filled (naming the
 * address and port and, for EACCES, how to allow low ports).
 */
struct listeners *listener_bind(struct smtp_server *srv, char *err, size_t errlen);

/* Start accepting (after the privilege drop). */
void		 listener_enable(struct listeners *);
/* Stop accepting; sockets stay open. */
void		 listener_disable(struct listeners *);
void		 listener_free(struct listeners *);

/* Human readable list "smtp 127.0.0.1:2525 starttls, ..." for the ready line. */
const char	*listener_describe(const struct listeners *);

#endif
