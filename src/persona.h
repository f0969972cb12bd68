/*
 * Personas: every reply the SMTP server can give, as data.  The session state
 * machine names a reply by its id; the persona holds the text.  Templates are
 * single reply lines without CRLF and may contain the placeholders
 *   {host}  the configured hostname        {qid}  a queue id
 *   {addr}  the client's address           {arg}  a client argument (sanitised)
 *   {n}     a number given by the caller   {size} the message size limit
 * Adding a persona = adding one table to persona.c; the session never changes.
 */
#ifndef FOSR_PERSONA_H
#define FOSR_PERSONA_H

#include <stddef.h>
#include <stdint.h>

enum persona_reply {
	PR_BANNER,
	PR_HELO_OK,		/* reply to HELO */
	PR_EHLO_FIRST,		/* first line of the EHLO reply (code and dash added by session) */
	PR_HELO_SYNTAX,
	PR_EHLO_SYNTAX,
	PR_NEED_HELO,
	PR_MAIL_OK,
	PR_MAIL_NESTED,
	PR_MAIL_SYNTAX,
	PR_MAIL_BAD_ADDR,
	PR_MAIL_BAD_PARAM,	/* {arg} = the unsupported parameter */
	PR_MAIL_BAD_SIZE,	/* SIZE= value not a number */
	PR_MAIL_BAD_BODY,	/* BODY= value unknown */
	PR_SIZE_EXCEEDED,	/* SIZE= over the limit (MAIL) */
	PR_SMTPUTF8_NEEDED,	/* reserved */
	PR_NEED_MAIL,
	PR_RCPT_OK,
	PR_RCPT_SYNTAX,
	PR_RCPT_BAD_ADDR,
	PR_RCPT_BAD_PARAM,
	PR_RCPT_TOO_MANY,
	PR_RCPT_UNKNOWN_LOCAL,	/* {arg} = address: local recipient unknown */
	PR_NEED_RCPT,		/* DATA/BDAT with no transaction */
	PR_NO_VALID_RCPT,	/* DATA/BDAT in a transaction without recipients */
	PR_DATA_SYNTAX,
	PR_DATA_GO,
	PR_QUEUED,		/* {qid} */
	PR_MSG_TOO_BIG,		/* after DATA/BDAT */
	PR_STORAGE_FULL,
	PR_WRITE_ERROR,
	PR_BDAT_SYNTAX,
	PR_BDAT_OK,		/* {n} = chunk size */
	PR_DATA_AFTER_BDAT,
	PR_RSET_OK,
	PR_RSET_SYNTAX,
	PR_NOOP_OK,
	PR_QUIT,
	PR_VRFY_SYNTAX,
	PR_VRFY_OK,		/* {arg} */
	PR_EXPN_SYNTAX,
	PR_ETRN_SYNTAX,
	PR_ETRN_NEED_HELO,
	PR_ETRN_IN_MAIL,
	PR_ETRN_REPLY,		/* {arg} = domain */
	PR_UNKNOWN,
	PR_EMPTY,		/* an empty command line */
	PR_LINE_TOO_LONG,
	PR_STARTTLS_GO,
	PR_STARTTLS_SYNTAX,
	PR_STARTTLS_ACTIVE,
	PR_STARTTLS_UNAVAILABLE,	/* STARTTLS when not offered */
	PR_AUTH_OK,
	PR_AUTH_FAILED,
	PR_AUTH_SYNTAX,
	PR_AUTH_ALREADY,
	PR_AUTH_IN_MAIL,
	PR_AUTH_BAD_MECH,
	PR_AUTH_ABORTED,
	PR_AUTH_BAD_B64,
	PR_AUTH_CHALLENGE,	/* "334 {arg}" */
	PR_TOO_MANY_ERRORS,
	PR_TIMEOUT,
	PR_TOO_MANY_CONN,	/* {addr} */
	PR_TOO_MANY_SESSIONS,	/* all listeners full */
	PR_SHUTDOWN,
	PR_BARE_LF_REJECT,	/* reserved for a persona that rejects bare LF */
	PR_FORBIDDEN,		/* CONNECT/GET/POST or a header line as a command: reply, then hang up */
	PR_AUTH_NEED_HELO,	/* AUTH before EHLO */
	/* Added with the recorded Postfix 3.7 persona (tests/persona/NOTES.md). */
	PR_BAD_UTF8,		/* command line that is not valid UTF-8 */
	PR_XCLIENT_DENIED,	/* XCLIENT / XFORWARD from an unauthorised client */
	PR_MAIL_BAD_RET,	/* RET= value unknown or repeated */
	PR_MAIL_BAD_ENVID,	/* ENVID= not valid xtext */
	PR_RCPT_BAD_NOTIFY,	/* NOTIFY= value bad */
	PR_RCPT_BAD_ORCPT,	/* ORCPT= value bad */
	PR_BDAT_QUEUED,		/* BDAT ... LAST done: {n} = total bytes, {qid} */
	PR_BDAT_NULL,		/* "BDAT 0" without LAST */
	PR_BDAT_TOO_BIG,	/* a chunk pushes the message over the size limit */
	PR_BDAT_DISCARDED,	/* later chunk after a BDAT error: {n} = its size */
	PR_AUTH_NEED_STEP,	/* "AUTH PLAIN =" or "AUTH PLAIN *" */
	PR_AUTH_NOT_ENABLED,	/* AUTH when AUTH is not offered */
	PR_AUTH_TEMPFAIL,	/* Cyrus: PLAIN/LOGIN with an empty user name */
	PR_NEED_STARTTLS,	/* submission (587) before STARTTLS */
	PR_RCPT_ACCESS_DENIED,	/* {arg} = address: submission RCPT/VRFY without AUTH */
	PR_COUNT
};

#define PERSONA_EHLO_MAX	24

struct persona {
	const char	*name;		/* "postfix-3.7" */
	const char	*replies[PR_COUNT];
	/* EHLO keywords in order; "SIZE {size}" and "STARTTLS"/"AUTH ..." included:
	 * the session drops STARTTLS when TLS is active or unavailable. */
	const char	*ehlo[PERSONA_EHLO_MAX];
	const char	*auth_mechs;	/* "PLAIN LOGIN CRAM-MD5" */
	/*
	 * The Received header our MTA adds on reception (record_received_header:
	 * a relayed copy, a raw hpfeeds payload), CRLF line ends included:
	 * {helo} {name} {ip} {host} {with} {qid} {rcpt} {date}.  received_fmt
	 * for a mail with one recipient; received_multi_fmt (no {rcpt}) for one
	 * with several, as Postfix's smtpd writes no "for" clause then.
	 */
	const char	*received_fmt;
	const char	*received_multi_fmt;
};

/* A named value of a template beyond persona_vars' own (persona_format). */
struct persona_kv {
	const char	*name;
	const char	*value;
};

struct persona_vars {
	const char	*host;
	const char	*qid;
	const char	*addr;
	const char	*arg;		/* raw client bytes: sanitised while formatting */
	size_t		 arglen;
	uint64_t	 n;
	uint64_t	 size;
	const struct persona_kv *kv;	/* {name}s of the caller's, not capped */
	int		 nkv;
};

/* The persona called name, or NULL. */
const struct persona *persona_find(const char *name);
const struct persona *persona_default(void);

/*
 * Expand tmpl into out (NUL-terminated, at most outlen-1 bytes, truncated
 * safely).  {arg} is copied with every byte outside 0x21..0x7e except space
 * replaced by '?' (as Postfix's printable()), capped at 256 bytes.
 * {name} of v->kv gets its value whole (bytes outside 0x20..0x7e as '?').
 * Returns the length written.
 */
size_t	persona_format(char *out, size_t outlen, const char *tmpl,
	    const struct persona_vars *v);

#endif
