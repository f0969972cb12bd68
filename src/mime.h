/*
 * A small, bounded MIME reader for rule matching: the top-level headers with
 * their values unfolded and RFC 2047-decoded to UTF-8, and the text of the
 * message (text leaves of the MIME tree, transfer-decoded and converted to
 * UTF-8) as one buffer.  Built for hostile input: the raw bytes examined, the
 * decoded text kept, the nesting depth and the part count are all capped, and
 * nothing in here aborts.  Never logs.
 */
#ifndef FOSR_MIME_H
#define FOSR_MIME_H

#include <stdbool.h>
#include <stddef.h>

#define MIME_RAW_MAX		(4u * 1024 * 1024)	/* raw message bytes examined */
#define MIME_BODY_MAX		(1024u * 1024)		/* decoded body text kept */
#define MIME_HDR_TOTAL_MAX	(256u * 1024)		/* decoded header values kept */
#define MIME_HDR_VALUE_MAX	(16u * 1024)		/* one decoded header value */
#define MIME_HDR_MAX		512			/* top-level headers kept */
#define MIME_NAME_MAX		64			/* header name kept */
#define MIME_DEPTH_MAX		8			/* multipart / message nesting */
#define MIME_PARTS_MAX		128			/* MIME entities visited */

/* One top-level header: the name as sent (truncated), the decoded value. */
struct mime_header {
	char	 name[MIME_NAME_MAX];
	char	*value;		/* UTF-8 (best effort), NUL-terminated */
	size_t	 valuelen;
};

/* The decoded view of one message.  Free with mime_msg_free(). */
struct mime_msg {
	struct mime_header	*hdrs;
	int			 nhdrs;
	char			*body;		/* NUL-terminated, may be "" */
	size_t			 bodylen;
	bool			 truncated;	/* some cap was reached */
};

/*
 * Decode len bytes of a raw message (CRLF or LF line ends) into m.  Returns 0,
 * or -1 on allocation failure (m is then empty and safe to free).  Never reads
 * more than MIME_RAW_MAX bytes of msg.
 */
int	mime_parse(const unsigned char *msg, size_t len, struct mime_msg *m);
void	mime_msg_free(struct mime_msg *m);

/* The first header named name (case-insensitive), or NULL. */
const struct mime_header *mime_header_get(const struct mime_msg *m,
	    const char *name);

/*
 * Unfold a raw header value and decode its RFC 2047 encoded words to UTF-8.
 * Returns a malloc'd NUL-terminated string of at most max bytes (*outlen set),
 * or NULL on allocation failure.
 */
char	*mime_decode_header(const char *s, size_t len, size_t max,
	    size_t *outlen);

/*
 * Lenient base64 decode: characters outside the alphabet are skipped, '='
 * ends nothing.  Writes at most outmax bytes; returns the count written.
 */
size_t	mime_b64_decode(const char *in, size_t len, unsigned char *out,
	    size_t outmax);

/* Quoted-printable decode (RFC 2045 6.7, lenient); returns the count written. */
size_t	mime_qp_decode(const char *in, size_t len, bool header,
	    unsigned char *out, size_t outmax);

#endif
