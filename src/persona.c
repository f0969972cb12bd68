/*
 * Personas: the reply texts of the SMTP server, as data.
 *
 * The "postfix-3.7" table was recorded from a real Debian 12 Postfix 3.7.11
 * (tests/persona/postfix_private.sh + record.py; the transcript is
 * tests/persona/postfix-3.7.transcript, the behaviour behind the texts is in
 * tests/persona/NOTES.md).  Entries marked SOURCE could not be produced by the
 * private instance and come from the Postfix 3.7 sources; entries marked
 * CHOSEN have no Postfix counterpart and were picked to look like one.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "persona.h"

#define PERSONA_ARG_MAX	256

static size_t	persona_put(char *, size_t, size_t, const char *, size_t, size_t);
static size_t	persona_put_num(char *, size_t, size_t, uint64_t);
static bool	persona_name_is(const char *, size_t, const char *);

static const struct persona persona_postfix37 = {
	.name = "postfix-3.7",
	.replies = {
		[PR_BANNER] = "220 {host} ESMTP Postfix (Debian/GNU)",
		[PR_HELO_OK] = "250 {host}",
		/* The session turns "250 " into "250-" when keywords follow. */
		[PR_EHLO_FIRST] = "250 {host}",
		/* No enhanced status code here: that is how Postfix says it. */
		[PR_HELO_SYNTAX] = "501 Syntax: HELO hostname",
		[PR_EHLO_SYNTAX] = "501 Syntax: EHLO hostname",
		/* SOURCE: only with smtpd_helo_required = yes (not the default). */
		[PR_NEED_HELO] = "503 5.5.1 Error: send HELO/EHLO first",
		[PR_MAIL_OK] = "250 2.1.0 Ok",
		[PR_MAIL_NESTED] = "503 5.5.1 Error: nested MAIL command",
		[PR_MAIL_SYNTAX] = "501 5.5.4 Syntax: MAIL FROM:<address>",
		[PR_MAIL_BAD_ADDR] = "501 5.1.7 Bad sender address syntax",
		/* {arg} = the parameter exactly as sent, e.g. "FOO=bar", "SIZE". */
		[PR_MAIL_BAD_PARAM] = "555 5.5.4 Unsupported option: {arg}",
		[PR_MAIL_BAD_SIZE] = "501 5.5.4 Bad message size syntax",
		/* {arg} = the whole parameter, e.g. "BODY=foo". */
		[PR_MAIL_BAD_BODY] = "555 5.5.4 Unsupported option: {arg}",
		[PR_SIZE_EXCEEDED] = "552 5.3.4 Message size exceeds fixed limit",
		/* SOURCE: Postfix 3.7 accepts UTF-8 addresses without SMTPUTF8. */
		[PR_SMTPUTF8_NEEDED] = "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
		[PR_NEED_MAIL] = "503 5.5.1 Error: need MAIL command",
		[PR_RCPT_OK] = "250 2.1.5 Ok",
		[PR_RCPT_SYNTAX] = "501 5.5.4 Syntax: RCPT TO:<address>",
		[PR_RCPT_BAD_ADDR] = "501 5.1.3 Bad recipient address syntax",
		[PR_RCPT_BAD_PARAM] = "555 5.5.4 Unsupported option: {arg}",
		[PR_RCPT_TOO_MANY] = "452 4.5.3 Error: too many recipients",
		/* Recorded with mydestination = $myhostname; {arg} = address. */
		[PR_RCPT_UNKNOWN_LOCAL] = "550 5.1.1 <{arg}>: Recipient address rejected: "
		    "User unknown in local recipient table",
		/* Yes, "RCPT" also for DATA/BDAT without any MAIL. */
		[PR_NEED_RCPT] = "503 5.5.1 Error: need RCPT command",
		[PR_NO_VALID_RCPT] = "554 5.5.1 Error: no valid recipients",
		[PR_DATA_SYNTAX] = "501 5.5.4 Syntax: DATA",
		[PR_DATA_GO] = "354 End data with <CR><LF>.<CR><LF>",
		[PR_QUEUED] = "250 2.0.0 Ok: queued as {qid}",
		[PR_MSG_TOO_BIG] = "552 5.3.4 Error: message file too big",
		/* SOURCE: smtpd.c, queue file system full / write failure. */
		[PR_STORAGE_FULL] = "452 4.3.1 Insufficient system storage",
		[PR_WRITE_ERROR] = "451 4.3.0 Error: queue file write error",
		/* 521: Postfix closes the connection after it (chunk size unknown). */
		[PR_BDAT_SYNTAX] = "521 5.5.4 Syntax: BDAT count [LAST]",
		[PR_BDAT_OK] = "250 2.0.0 Ok: {n} bytes",
		[PR_DATA_AFTER_BDAT] = "503 5.5.1 Error: DATA after BDAT",
		[PR_RSET_OK] = "250 2.0.0 Ok",
		[PR_RSET_SYNTAX] = "501 5.5.4 Syntax: RSET",
		[PR_NOOP_OK] = "250 2.0.0 Ok",
		[PR_QUIT] = "221 2.0.0 Bye",
		[PR_VRFY_SYNTAX] = "501 5.5.4 Syntax: VRFY address [SMTPUTF8]",
		/* {arg} = the argument as given (brackets kept). */
		[PR_VRFY_OK] = "252 2.0.0 {arg}",
		/* Postfix 3.7 has no EXPN: it is an unknown command. */
		[PR_EXPN_SYNTAX] = "500 5.5.2 Error: command not recognized",
		/* ETRN replies carry no enhanced status code. */
		[PR_ETRN_SYNTAX] = "500 Syntax: ETRN domain",
		/* SOURCE: only with smtpd_helo_required = yes; by default ETRN
		 * before HELO gets the normal 459. */
		[PR_ETRN_NEED_HELO] = "503 Error: send HELO/EHLO first",
		[PR_ETRN_IN_MAIL] = "503 Error: MAIL transaction in progress",
		/* {arg} = domain without a leading '@' or '#'. */
		[PR_ETRN_REPLY] = "459 <{arg}>: service unavailable",
		[PR_UNKNOWN] = "500 5.5.2 Error: command not recognized",
		[PR_EMPTY] = "500 5.5.2 Error: bad syntax",
		/* CHOSEN: Postfix never says this; it cuts a command at 2048
		 * bytes, runs the head and drops the tail. */
		[PR_LINE_TOO_LONG] = "500 5.5.2 Error: bad syntax",
		[PR_STARTTLS_GO] = "220 2.0.0 Ready to start TLS",
		[PR_STARTTLS_SYNTAX] = "501 5.5.4 Syntax: STARTTLS",
		[PR_STARTTLS_ACTIVE] = "554 5.5.1 Error: TLS already active",
		/* Recorded with smtpd_tls_security_level = none. */
		[PR_STARTTLS_UNAVAILABLE] = "502 5.5.1 Error: command not implemented",
		[PR_AUTH_OK] = "235 2.7.0 Authentication successful",
		[PR_AUTH_FAILED] = "535 5.7.8 Error: authentication failed: authentication failure",
		[PR_AUTH_SYNTAX] = "501 5.5.4 Syntax: AUTH mechanism",
		[PR_AUTH_ALREADY] = "503 5.5.1 Error: already authenticated",
		[PR_AUTH_IN_MAIL] = "503 5.5.1 Error: MAIL transaction in progress",
		[PR_AUTH_BAD_MECH] = "535 5.7.8 Error: authentication failed: no mechanism available",
		[PR_AUTH_ABORTED] = "501 5.7.0 Authentication aborted",
		[PR_AUTH_BAD_B64] = "535 5.7.8 Error: authentication failed: bad protocol / cancel",
		/* "334 " with an empty {arg} for AUTH PLAIN: the space stays. */
		[PR_AUTH_CHALLENGE] = "334 {arg}",
		[PR_TOO_MANY_ERRORS] = "421 4.7.0 {host} Error: too many errors",
		[PR_TIMEOUT] = "421 4.4.2 {host} Error: timeout exceeded",
		/* SOURCE: smtpd.c anvil connection count limit. */
		[PR_TOO_MANY_CONN] = "421 4.7.0 {host} Error: too many connections from {addr}",
		/* SOURCE: postscreen's reply when every smtpd is busy. */
		[PR_TOO_MANY_SESSIONS] = "421 4.3.2 All server ports are busy",
		/* CHOSEN: Postfix just closes; postscreen's wording. */
		[PR_SHUTDOWN] = "421 4.3.2 Service currently unavailable",
		/* SOURCE: smtpd_forbid_bare_newline = yes (Postfix 3.9 wording). */
		[PR_BARE_LF_REJECT] = "550 5.5.2 Error: bare <LF> received",
		[PR_FORBIDDEN] = "221 2.7.0 Error: I can break rules, too. Goodbye.",
		/* SOURCE: never sent by default, Postfix allows AUTH before EHLO. */
		[PR_AUTH_NEED_HELO] = "503 5.5.1 Error: send HELO/EHLO first",
		[PR_BAD_UTF8] = "500 5.5.2 Error: bad UTF-8 syntax",
		[PR_XCLIENT_DENIED] = "550 5.7.0 Error: insufficient authorization",
		[PR_MAIL_BAD_RET] = "501 5.5.4 Bad RET parameter syntax",
		[PR_MAIL_BAD_ENVID] = "501 5.5.4 Bad ENVID parameter syntax",
		[PR_RCPT_BAD_NOTIFY] = "501 5.5.4 Error: Bad NOTIFY parameter syntax",
		[PR_RCPT_BAD_ORCPT] = "501 5.5.4 Error: Bad ORCPT parameter syntax",
		[PR_BDAT_QUEUED] = "250 2.0.0 Ok: {n} bytes queued as {qid}",
		[PR_BDAT_NULL] = "551 5.7.1 Null BDAT request",
		[PR_BDAT_TOO_BIG] = "552 5.3.4 Chunk exceeds message size limit",
		[PR_BDAT_DISCARDED] = "551 5.0.0 Discarded {n} bytes after earlier error",
		[PR_AUTH_NEED_STEP] = "535 5.7.8 Error: authentication failed: "
		    "another step is needed in authentication",
		/* Recorded with smtpd_sasl_auth_enable = no. */
		[PR_AUTH_TEMPFAIL] = "454 4.7.0 Temporary authentication failure: generic failure",
		[PR_AUTH_NOT_ENABLED] = "503 5.5.1 Error: authentication not enabled",
		/* Recorded with Debian's master.cf submission/submissions templates. */
		[PR_NEED_STARTTLS] = "530 5.7.0 Must issue a STARTTLS command first",
		[PR_RCPT_ACCESS_DENIED] = "554 5.7.1 <{arg}>: Recipient address rejected: "
		    "Access denied",
	},
	/* Recorded order (Debian 12, Cyrus SASL with mech_list PLAIN LOGIN CRAM-MD5). */
	.ehlo = {
		"PIPELINING",
		"SIZE {size}",
		"VRFY",
		"ETRN",
		"STARTTLS",
		"AUTH PLAIN LOGIN CRAM-MD5",
		"ENHANCEDSTATUSCODES",
		"8BITMIME",
		"DSN",
		"SMTPUTF8",
		"CHUNKING",
		NULL
	},
	.auth_mechs = "PLAIN LOGIN CRAM-MD5",
	/* Postfix's smtpd: folded on three lines, RFC 3848 protocol in {with}. */
	.received_fmt = "Received: from {helo} ({name} [{ip}])\r\n"
	    "\tby {host} (Postfix) with {with} id {qid}\r\n"
	    "\tfor <{rcpt}>; {date}\r\n",
	/* Several recipients: smtpd.c ends the "by" line with ';' and puts the date alone. */
	.received_multi_fmt = "Received: from {helo} ({name} [{ip}])\r\n"
	    "\tby {host} (Postfix) with {with} id {qid};\r\n"
	    "\t{date}\r\n",
};

static const struct persona *const personas[] = {
	&persona_postfix37,
};

/* The caller's value named name (len bytes), or NULL. */
static const struct persona_kv *
persona_kv_find(const struct persona_vars *v, const char *name, size_t len)
{
	for (int i = 0; i < v->nkv; i++)
		if (v->kv[i].value != NULL && strlen(v->kv[i].name) == len &&
		    memcmp(v->kv[i].name, name, len) == 0)
			return &v->kv[i];
	return NULL;
}

/* True if the placeholder name (len bytes) equals want. */
static bool
persona_name_is(const char *name, size_t len, const char *want)
{
	return strlen(want) == len && memcmp(name, want, len) == 0;
}

/*
 * Append at most max bytes of src (srclen long) to out at offset pos, each
 * byte outside 0x20..0x7e turned into '?'.  Never writes past outlen-1.
 * Returns the new offset.
 */
static size_t
persona_put(char *out, size_t outlen, size_t pos, const char *src, size_t srclen,
    size_t max)
{
	size_t i;

	if (src == NULL)
		return pos;
	if (srclen > max)
		srclen = max;
	for (i = 0; i < srclen && pos + 1 < outlen; i++) {
		unsigned char c = (unsigned char)src[i];

		out[pos++] = (c >= 0x20 && c <= 0x7e) ? (char)c : '?';
	}
	return pos;
}

/* Append the decimal form of n at offset pos; returns the new offset. */
static size_t
persona_put_num(char *out, size_t outlen, size_t pos, uint64_t n)
{
	char buf[24];
	int len = snprintf(buf, sizeof(buf), "%llu", (unsigned long long)n);

	return persona_put(out, outlen, pos, buf, len > 0 ? (size_t)len : 0, sizeof(buf));
}

/*
 * The persona called name, or NULL.  The result is static: never freed,
 * valid for the life of the process.
 */
const struct persona *
persona_find(const char *name)
{
	size_t i;

	if (name == NULL)
		return NULL;
	for (i = 0; i < sizeof(personas) / sizeof(personas[0]); i++)
		if (strcmp(personas[i]->name, name) == 0)
			return personas[i];
	return NULL;
}

/* The default persona ("postfix-3.7"); static, never NULL. */
const struct persona *
persona_default(void)
{
	return &persona_postfix37;
}

/*
 * Expand tmpl into out (outlen bytes, always NUL-terminated when outlen > 0,
 * truncated safely).  Every expanded value is made printable: bytes outside
 * 0x20..0x7e become '?'; {arg} is also capped at 256 bytes.  An unknown
 * "{name}" or a lone '{' is copied as is; NULL values expand to nothing.
 * Returns the number of bytes written, without the NUL.
 */
size_t
persona_format(char *out, size_t outlen, const char *tmpl,
    const struct persona_vars *v)
{
	static const struct persona_vars none;
	const struct persona_kv *kv;
	const char *p, *close;
	size_t pos = 0, n;

	if (out == NULL || outlen == 0)
		return 0;
	if (v == NULL)
		v = &none;
	for (p = tmpl ? tmpl : ""; *p != '\0' && pos + 1 < outlen; p++) {
		if (*p != '{' || (close = strchr(p + 1, '}')) == NULL) {
			out[pos++] = *p;
			continue;
		}
		n = (size_t)(close - (p + 1));
		if (persona_name_is(p + 1, n, "host"))
			pos = persona_put(out, outlen, pos, v->host,
			    v->host ? strlen(v->host) : 0, PERSONA_ARG_MAX);
		else if (persona_name_is(p + 1, n, "qid"))
			pos = persona_put(out, outlen, pos, v->qid,
			    v->qid ? strlen(v->qid) : 0, PERSONA_ARG_MAX);
		else if (persona_name_is(p + 1, n, "addr"))
			pos = persona_put(out, outlen, pos, v->addr,
			    v->addr ? strlen(v->addr) : 0, PERSONA_ARG_MAX);
		else if (persona_name_is(p + 1, n, "arg"))
			pos = persona_put(out, outlen, pos, v->arg,
			    v->arg ? v->arglen : 0, PERSONA_ARG_MAX);
		else if (persona_name_is(p + 1, n, "n"))
			pos = persona_put_num(out, outlen, pos, v->n);
		else if (persona_name_is(p + 1, n, "size"))
			pos = persona_put_num(out, outlen, pos, v->size);
		else if ((kv = persona_kv_find(v, p + 1, n)) != NULL)
			pos = persona_put(out, outlen, pos, kv->value, strlen(kv->value),
			    SIZE_MAX);
		else {
			out[pos++] = *p;
			continue;
		}
		p = close;
	}
	out[pos] = '\0';
	return pos;
}
