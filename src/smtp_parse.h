/*
 * Pure parsing of SMTP command lines: verbs, MAIL/RCPT paths and ESMTP
 * parameters, BDAT arguments, AUTH arguments and SASL payloads.  No I/O, no
 * logging, no allocation: functions read (const char *, size_t) and fill
 * caller-owned structs.  Every input is hostile; every output is bounded.
 */
#ifndef FOSR_SMTP_PARSE_H
#define FOSR_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fosr_limits.h"

enum smtp_cmd {
	SMTP_CMD_NONE,		/* empty line */
	SMTP_CMD_UNKNOWN,
	SMTP_CMD_HELO, SMTP_CMD_EHLO, SMTP_CMD_MAIL, SMTP_CMD_RCPT, SMTP_CMD_DATA,
	SMTP_CMD_BDAT, SMTP_CMD_RSET, SMTP_CMD_NOOP, SMTP_CMD_QUIT, SMTP_CMD_VRFY,
	SMTP_CMD_EXPN, SMTP_CMD_HELP, SMTP_CMD_STARTTLS, SMTP_CMD_AUTH, SMTP_CMD_ETRN,
	SMTP_CMD_TURN, SMTP_CMD_XCLIENT, SMTP_CMD_XFORWARD,
	SMTP_CMD_HEADERLIKE,	/* "Subject: ..." / "From: ...": a client sending headers as commands */
};

struct smtp_cmdline {
	enum smtp_cmd	 cmd;
	const char	*verb;		/* points into the line */
	size_t		 verblen;
	const char	*arg;		/* after the verb and one or more spaces; "" if none */
	size_t		 arglen;	/* trailing spaces removed */
};

/* Split a command line (CRLF already removed).  Never fails. */
void	smtp_parse_command(const char *line, size_t len, struct smtp_cmdline *out);

const char *smtp_cmd_name(enum smtp_cmd);

enum smtp_body { SMTP_BODY_NONE, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME, SMTP_BODY_BINARYMIME };

enum smtp_path_err {
	SMTP_PATH_OK,
	SMTP_PATH_ERR_SYNTAX,	/* no "FROM:"/"TO:" : "Syntax: MAIL FROM:<address>" */
	SMTP_PATH_ERR_ADDR,	/* unparseable address: "Bad sender/recipient address syntax" */
	SMTP_PATH_ERR_PARAM,	/* unknown parameter: errparam names it */
	SMTP_PATH_ERR_SIZE,	/* SIZE= not a number */
	SMTP_PATH_ERR_BODY,	/* BODY= unknown value */
};

struct smtp_path {
	char		 addr[SMTP_PATH_MAX + 1];	/* without <>, NUL-terminated */
	size_t		 addrlen;
	bool		 null_path;	/* "<>" */
	bool		 has_size;
	uint64_t	 size;
	enum smtp_body	 body;
	bool		 smtputf8;
	char		 ret[8];	/* DSN RET=FULL|HDRS */
	char		 envid[SMTP_PARAM_MAX + 1];
	char		 notify[64];	/* DSN NOTIFY= */
	char		 orcpt[SMTP_PARAM_MAX + 1];
	char		 auth[SMTP_PARAM_MAX + 1];	/* MAIL AUTH= */
	const char	*errparam;	/* on PARAM errors: points into the input */
	size_t		 errparamlen;
};

/*
 * Parse the argument of MAIL ("FROM:<a@b> SIZE=10 BODY=8BITMIME") or RCPT
 * ("TO:<a@b> NOTIFY=NEVER").  Accepts what Postfix accepts by default: spaces
 * after the colon, a missing <> around a plain address, source routes.
 */
enum smtp_path_err smtp_parse_mail(const char *arg, size_t len, struct smtp_path *out);
enum smtp_path_err smtp_parse_rcpt(const char *arg, size_t len, struct smtp_path *out);

/* "BDAT <size> [LAST]": 0 or -1.  size is capped by UINT64_MAX parsing. */
int	smtp_parse_bdat(const char *arg, size_t len, uint64_t *size, bool *last);

enum smtp_auth_mech { SMTP_AUTH_UNKNOWN, SMTP_AUTH_PLAIN, SMTP_AUTH_LOGIN, SMTP_AUTH_CRAM_MD5 };

struct smtp_auth_arg {
	enum smtp_auth_mech mech;
	const char	*mechname;	/* points into the input */
	size_t		 mechlen;
	bool		 has_initial;	/* an initial response follows the mechanism */
	const char	*initial;	/* may be "=" (empty response) */
	size_t		 initiallen;
};

/* "AUTH PLAIN [initial]": 0, or -1 when there is no mechanism or too many words. */
int	smtp_parse_auth(const char *arg, size_t len, struct smtp_auth_arg *out);

/* What a SASL exchange revealed. */
struct smtp_creds {
	char		 authzid[SMTP_AUTH_FIELD_MAX + 1];
	char		 user[SMTP_AUTH_FIELD_MAX + 1];
	char		 pass[SMTP_AUTH_FIELD_MAX + 1];	/* CRAM-MD5: the hex digest */
	size_t		 authzidlen, userlen, passlen;	/* real lengths (may contain NUL) */
	bool		 truncated;
};

/*
 * Decode one base64 SASL line.  "*" is the client's cancel: returns 1.
 * Returns 0 with the decoded bytes in out (outlen set), -1 on bad base64
 * (bad characters, data after '='), or 2 when the last group is incomplete
 * (Cyrus then asks for another step).  "=" decodes to the empty string.
 */
int	smtp_sasl_b64(const char *line, size_t len, unsigned char *out, size_t outmax,
	    size_t *outlen);

/* PLAIN: "authzid\0user\0pass".  0, or -1 when it does not have two NULs. */
int	smtp_sasl_plain(const unsigned char *buf, size_t len, struct smtp_creds *out);

/* CRAM-MD5 response "user SP 32-hex-digest".  0, or -1 when malformed (still
 * fills user/pass with what there was). */
int	smtp_sasl_cram(const unsigned char *buf, size_t len, struct smtp_creds *out);

#endif
