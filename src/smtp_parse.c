/*
 * Pure parsing of SMTP command lines (see smtp_parse.h).  Every function
 * works on (pointer, length): NUL bytes are ordinary bytes here, strlen()
 * is never used on input, and every copy into a fixed field is bounded.
 * Where Postfix (3.7, Debian defaults) accepts something odd, we accept it
 * too, so that a client cannot tell the honeypot from the real thing.
 */
#include <string.h>

#include "smtp_parse.h"
#include "util.h"

/* Largest BDAT chunk size we even parse: 2^53, beyond any real chunk. */
#define BDAT_SIZE_MAX	(UINT64_C(1) << 53)

/* SIZE= is an off_t in Postfix: larger values are out of range. */
#define MAIL_SIZE_MAX	((uint64_t)INT64_MAX)

static bool	is_ws(unsigned char);
static bool	ieq(const char *, size_t, const char *);
static bool	iprefix(const char *, size_t, const char *);
static bool	is_header_name(const char *, size_t);
static bool	is_xtext(const char *, size_t);
static bool	is_notify(const char *, size_t);
static bool	is_orcpt(const char *, size_t);
static int	copy_field(char *, size_t, const char *, size_t);
static enum smtp_path_err check_mailbox(const char *, size_t);
static enum smtp_path_err parse_path(const char *, size_t, size_t *, struct smtp_path *, bool);
static enum smtp_path_err parse_param(const char *, size_t, struct smtp_path *, bool);
static enum smtp_path_err parse_envelope(const char *, size_t, const char *,
		    struct smtp_path *, bool);
static void	creds_set(char *, size_t *, const unsigned char *, size_t, bool *);

static const struct {
	const char	*name;
	enum smtp_cmd	 cmd;
} smtp_verbs[] = {
	{ "HELO", SMTP_CMD_HELO },
	{ "EHLO", SMTP_CMD_EHLO },
	{ "MAIL", SMTP_CMD_MAIL },
	{ "RCPT", SMTP_CMD_RCPT },
	{ "DATA", SMTP_CMD_DATA },
	{ "BDAT", SMTP_CMD_BDAT },
	{ "RSET", SMTP_CMD_RSET },
	{ "NOOP", SMTP_CMD_NOOP },
	{ "QUIT", SMTP_CMD_QUIT },
	{ "VRFY", SMTP_CMD_VRFY },
	{ "EXPN", SMTP_CMD_EXPN },
	{ "HELP", SMTP_CMD_HELP },
	{ "STARTTLS", SMTP_CMD_STARTTLS },
	{ "AUTH", SMTP_CMD_AUTH },
	{ "ETRN", SMTP_CMD_ETRN },
	{ "TURN", SMTP_CMD_TURN },
	{ "XCLIENT", SMTP_CMD_XCLIENT },
	{ "XFORWARD", SMTP_CMD_XFORWARD },
};

/* Blank separators; Postfix's tokenizer also splits at a stray CR. */
static bool
is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* Case-insensitive ASCII comparison of s[0..len) with the C string lit. */
static bool
ieq(const char *s, size_t len, const char *lit)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char a = (unsigned char)s[i], b = (unsigned char)lit[i];

		if (b == '\0')
			return false;
		if (a >= 'a' && a <= 'z')
			a -= 'a' - 'A';
		if (b >= 'a' && b <= 'z')
			b -= 'a' - 'A';
		if (a != b)
			return false;
	}
	return lit[len] == '\0';
}

/* True when s[0..len) starts with lit, ASCII case-insensitively. */
static bool
iprefix(const char *s, size_t len, const char *lit)
{
	size_t n = strlen(lit);

	return len >= n && ieq(s, n, lit);
}

/*
 * A header field name followed by ':' (RFC 5322 ftext: printable ASCII but
 * ':'), as in "Subject:" or "X-Mailer:x".  Postfix's is_header() test: a
 * client that sends its headers as commands is hung up on.
 */
static bool
is_header_name(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == ':')
			return i > 0;
		if (c < 33 || c > 126)
			return false;
	}
	return false;
}

void
smtp_parse_command(const char *line, size_t len, struct smtp_cmdline *out)
{
	size_t i = 0, vstart, vend, astart, aend;
	size_t k;

	/* Leading blanks are skipped, as Postfix's tokenizer does. */
	while (i < len && is_ws((unsigned char)line[i]))
		i++;
	vstart = i;
	while (i < len && !is_ws((unsigned char)line[i]))
		i++;
	vend = i;
	while (i < len && is_ws((unsigned char)line[i]))
		i++;
	astart = i;
	aend = len;
	while (aend > astart && is_ws((unsigned char)line[aend - 1]))
		aend--;

	out->verb = vend > vstart ? line + vstart : "";
	out->verblen = vend - vstart;
	out->arg = aend > astart ? line + astart : "";
	out->arglen = aend - astart;

	if (out->verblen == 0) {
		out->cmd = SMTP_CMD_NONE;
		return;
	}
	for (k = 0; k < sizeof(smtp_verbs) / sizeof(smtp_verbs[0]); k++) {
		if (ieq(out->verb, out->verblen, smtp_verbs[k].name)) {
			out->cmd = smtp_verbs[k].cmd;
			return;
		}
	}
	out->cmd = is_header_name(out->verb, out->verblen) ?
	    SMTP_CMD_HEADERLIKE : SMTP_CMD_UNKNOWN;
}

/* The canonical upper-case name of a command, for logs. */
const char *
smtp_cmd_name(enum smtp_cmd cmd)
{
	size_t k;

	switch (cmd) {
	case SMTP_CMD_NONE:
		return "(empty)";
	case SMTP_CMD_UNKNOWN:
		return "(unknown)";
	case SMTP_CMD_HEADERLIKE:
		return "(header)";
	default:
		break;
	}
	for (k = 0; k < sizeof(smtp_verbs) / sizeof(smtp_verbs[0]); k++)
		if (smtp_verbs[k].cmd == cmd)
			return smtp_verbs[k].name;
	return "(invalid)";
}

/* Copy s[0..len) NUL-terminated into dst[size]; -1 when it does not fit. */
static int
copy_field(char *dst, size_t size, const char *s, size_t len)
{
	if (len >= size)
		return -1;
	memcpy(dst, s, len);
	dst[len] = '\0';
	return 0;
}

/*
 * RFC 3461 xtext: printable ASCII but '+' and '=', with "+HH" hex escapes
 * (either case accepted, as Postfix's xtext_unquote does).  Empty is bad.
 */
static bool
is_xtext(const char *s, size_t len)
{
	static const char hexdig[] = "0123456789ABCDEFabcdef";
	size_t i;

	if (len == 0)
		return false;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '+') {
			/* s[i+1] == NUL would match strchr's terminator. */
			if (i + 2 >= len || s[i + 1] == '\0' || s[i + 2] == '\0' ||
			    strchr(hexdig, s[i + 1]) == NULL ||
			    strchr(hexdig, s[i + 2]) == NULL)
				return false;
			i += 2;
			continue;
		}
		if (c < 33 || c > 126 || c == '=')
			return false;
	}
	return true;
}

/* NOTIFY=NEVER or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461 4.1). */
static bool
is_notify(const char *s, size_t len)
{
	size_t i = 0, start;

	if (ieq(s, len, "NEVER"))
		return true;
	if (len == 0)
		return false;
	while (i <= len) {
		start = i;
		while (i < len && s[i] != ',')
			i++;
		if (!ieq(s + start, i - start, "SUCCESS") &&
		    !ieq(s + start, i - start, "FAILURE") &&
		    !ieq(s + start, i - start, "DELAY"))
			return false;
		i++;
	}
	return true;
}

/* ORCPT=addr-type;xtext with a non-empty type (Postfix's test). */
static bool
is_orcpt(const char *s, size_t len)
{
	const char *semi = memchr(s, ';', len);
	size_t tlen, i;

	if (semi == NULL || semi == s)
		return false;
	tlen = (size_t)(semi - s);
	for (i = 0; i < tlen; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 33 || c > 126)
			return false;
	}
	return is_xtext(semi + 1, len - tlen - 1);
}

/*
 * Check a mailbox (route already removed): no control bytes, no NUL, no
 * unquoted blank or angle bracket, balanced quotes, no dangling backslash.
 * 8-bit bytes pass: Postfix takes them, and spam is full of them.
 */
static enum smtp_path_err
check_mailbox(const char *s, size_t len)
{
	bool quoted = false;
	size_t i;

	if (len == 0 || len > SMTP_PATH_MAX)
		return SMTP_PATH_ERR_ADDR;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f)
			return SMTP_PATH_ERR_ADDR;
		if (c == '\\') {
			if (++i >= len)
				return SMTP_PATH_ERR_ADDR;
			c = (unsigned char)s[i];
			if (c < 0x20 || c == 0x7f)
				return SMTP_PATH_ERR_ADDR;
			continue;
		}
		if (c == '"') {
			quoted = !quoted;
			continue;
		}
		if (!quoted && (c == ' ' || c == '<' || c == '>'))
			return SMTP_PATH_ERR_ADDR;
	}
	return quoted ? SMTP_PATH_ERR_ADDR : SMTP_PATH_OK;
}

/*
 * Parse the path at s[*pos..len): "<mailbox>", "<>", "<@route:mailbox>" or,
 * as Postfix allows without strict_rfc821_envelopes, a bare mailbox.  On
 * success *pos is just past the path and out->addr is filled.
 */
static enum smtp_path_err
parse_path(const char *s, size_t len, size_t *pos, struct smtp_path *out,
    bool allow_null)
{
	size_t i = *pos, start, end, next;
	bool quoted = false;
	enum smtp_path_err err;

	if (i < len && s[i] == '<') {
		/* Find the closing '>' outside quotes. */
		start = ++i;
		for (; i < len; i++) {
			if (s[i] == '\\' && i + 1 < len) {
				i++;
				continue;
			}
			if (s[i] == '"')
				quoted = !quoted;
			else if (s[i] == '>' && !quoted)
				break;
		}
		if (i >= len)
			return SMTP_PATH_ERR_ADDR;	/* lone '<' */
		end = i;
		next = i + 1;
		/* Postfix shrugs at extra '>' ("<a@b>>"), not at other junk. */
		while (next < len && s[next] == '>')
			next++;
		if (next < len && !is_ws((unsigned char)s[next]))
			return SMTP_PATH_ERR_ADDR;
	} else {
		/* Bare address: up to the first blank outside quotes. */
		start = i;
		for (; i < len; i++) {
			if (s[i] == '\\' && i + 1 < len) {
				i++;
				continue;
			}
			if (s[i] == '"')
				quoted = !quoted;
			else if (!quoted && is_ws((unsigned char)s[i]))
				break;
		}
		end = i;
		next = i;
	}

	if (end == start) {
		if (s[*pos] != '<' || !allow_null)
			return SMTP_PATH_ERR_ADDR;
		out->null_path = true;
		out->addr[0] = '\0';
		out->addrlen = 0;
		*pos = next;
		return SMTP_PATH_OK;
	}

	/*
	 * RFC 5321 4.1.2 source route "@a,@b:user@dom": obsolete, must be
	 * accepted and ignored (C.1).  Keep only the mailbox.
	 */
	if (s[start] == '@') {
		const char *colon = memchr(s + start, ':', end - start);
		size_t j;

		/* "<@b>" has no mailbox after a route: Postfix takes it whole. */
		if (colon == NULL) {
			if (memchr(s + start, ',', end - start) != NULL)
				return SMTP_PATH_ERR_ADDR;
			goto mailbox;
		}
		for (j = start; j < (size_t)(colon - s); j++) {
			unsigned char c = (unsigned char)s[j];

			if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>' ||
			    c == '"' || c == '\\')
				return SMTP_PATH_ERR_ADDR;
			/* Each hop is "@domain", hops separated by ','. */
			if (c == '@' && (j + 1 == (size_t)(colon - s) ||
			    s[j + 1] == ',' || s[j + 1] == '@'))
				return SMTP_PATH_ERR_ADDR;
			if (c == ',' && s[j + 1] != '@')
				return SMTP_PATH_ERR_ADDR;
		}
		start = (size_t)(colon - s) + 1;
	}
mailbox:
	if ((err = check_mailbox(s + start, end - start)) != SMTP_PATH_OK)
		return err;
	/* "a@" has an empty domain: Postfix rejects it. */
	if (s[end - 1] == '@' && (end - start < 2 || s[end - 2] != '\\'))
		return SMTP_PATH_ERR_ADDR;
	if (copy_field(out->addr, sizeof(out->addr), s + start, end - start) != 0)
		return SMTP_PATH_ERR_ADDR;
	out->addrlen = end - start;
	*pos = next;
	return SMTP_PATH_OK;
}

/*
 * One ESMTP parameter word w[0..len), of MAIL (is_mail) or RCPT.  Names are
 * matched with their '=' as Postfix does, so "SIZE" without a value is an
 * unknown parameter.  Duplicates: Postfix refuses a second RET, ENVID,
 * NOTIFY or ORCPT and silently takes the last SIZE and BODY; so do we.
 */
static enum smtp_path_err
parse_param(const char *w, size_t len, struct smtp_path *out, bool is_mail)
{
	const char *v;
	size_t vlen;

	if (is_mail) {
		if (iprefix(w, len, "SIZE=")) {
			v = w + 5;
			vlen = len - 5;
			/* Digits only: util_parse_u64 has no sign, no blanks. */
			if (util_parse_u64(v, vlen, 0, MAIL_SIZE_MAX, false,
			    &out->size) != 0)
				return SMTP_PATH_ERR_SIZE;
			out->has_size = true;
			return SMTP_PATH_OK;
		}
		if (iprefix(w, len, "BODY=")) {
			v = w + 5;
			vlen = len - 5;
			if (ieq(v, vlen, "7BIT"))
				out->body = SMTP_BODY_7BIT;
			else if (ieq(v, vlen, "8BITMIME"))
				out->body = SMTP_BODY_8BITMIME;
			else if (ieq(v, vlen, "BINARYMIME"))
				out->body = SMTP_BODY_BINARYMIME;
			else
				return SMTP_PATH_ERR_BODY;
			return SMTP_PATH_OK;
		}
		if (ieq(w, len, "SMTPUTF8")) {
			out->smtputf8 = true;
			return SMTP_PATH_OK;
		}
		if (iprefix(w, len, "RET=")) {
			v = w + 4;
			vlen = len - 4;
			if (out->ret[0] != '\0')
				return SMTP_PATH_ERR_PARAM;
			if (ieq(v, vlen, "FULL"))
				memcpy(out->ret, "FULL", 5);
			else if (ieq(v, vlen, "HDRS"))
				memcpy(out->ret, "HDRS", 5);
			else
				return SMTP_PATH_ERR_PARAM;
			return SMTP_PATH_OK;
		}
		if (iprefix(w, len, "ENVID=")) {
			v = w + 6;
			vlen = len - 6;
			if (out->envid[0] != '\0' || !is_xtext(v, vlen) ||
			    copy_field(out->envid, sizeof(out->envid), v, vlen) != 0)
				return SMTP_PATH_ERR_PARAM;
			return SMTP_PATH_OK;
		}
		if (iprefix(w, len, "AUTH=")) {
			v = w + 5;
			vlen = len - 5;
			if (out->auth[0] != '\0' || !is_xtext(v, vlen) ||
			    copy_field(out->auth, sizeof(out->auth), v, vlen) != 0)
				return SMTP_PATH_ERR_PARAM;
			return SMTP_PATH_OK;
		}
		return SMTP_PATH_ERR_PARAM;
	}
	if (iprefix(w, len, "NOTIFY=")) {
		v = w + 7;
		vlen = len - 7;
		if (out->notify[0] != '\0' || !is_notify(v, vlen) ||
		    copy_field(out->notify, sizeof(out->notify), v, vlen) != 0)
			return SMTP_PATH_ERR_PARAM;
		return SMTP_PATH_OK;
	}
	if (iprefix(w, len, "ORCPT=")) {
		v = w + 6;
		vlen = len - 6;
		if (out->orcpt[0] != '\0' || !is_orcpt(v, vlen) ||
		    copy_field(out->orcpt, sizeof(out->orcpt), v, vlen) != 0)
			return SMTP_PATH_ERR_PARAM;
		return SMTP_PATH_OK;
	}
	return SMTP_PATH_ERR_PARAM;
}

/*
 * Common body of MAIL and RCPT: "<kw>" (FROM: or TO:, case-insensitive,
 * the colon glued to it), optional blanks, the path, then blank-separated
 * parameters.  out is cleared first; errparam is set on parameter errors.
 */
static enum smtp_path_err
parse_envelope(const char *arg, size_t len, const char *kw,
    struct smtp_path *out, bool is_mail)
{
	size_t i, kwlen = strlen(kw), wstart;
	enum smtp_path_err err;

	memset(out, 0, sizeof(*out));
	if (arg == NULL || !iprefix(arg, len, kw))
		return SMTP_PATH_ERR_SYNTAX;
	i = kwlen;
	while (i < len && is_ws((unsigned char)arg[i]))
		i++;
	if (i >= len)
		return SMTP_PATH_ERR_SYNTAX;	/* "MAIL FROM:" alone */
	if ((err = parse_path(arg, len, &i, out, is_mail)) != SMTP_PATH_OK)
		return err;

	for (;;) {
		while (i < len && is_ws((unsigned char)arg[i]))
			i++;
		if (i >= len)
			break;
		wstart = i;
		while (i < len && !is_ws((unsigned char)arg[i]))
			i++;
		err = parse_param(arg + wstart, i - wstart, out, is_mail);
		if (err != SMTP_PATH_OK) {
			out->errparam = arg + wstart;
			out->errparamlen = i - wstart;
			return err;
		}
	}
	return SMTP_PATH_OK;
}

enum smtp_path_err
smtp_parse_mail(const char *arg, size_t len, struct smtp_path *out)
{
	return parse_envelope(arg, len, "FROM:", out, true);
}

enum smtp_path_err
smtp_parse_rcpt(const char *arg, size_t len, struct smtp_path *out)
{
	return parse_envelope(arg, len, "TO:", out, false);
}

int
smtp_parse_bdat(const char *arg, size_t len, uint64_t *size, bool *last)
{
	size_t i = 0, nend;
	uint64_t v;

	if (arg == NULL)
		return -1;
	while (i < len && arg[i] >= '0' && arg[i] <= '9')
		i++;
	nend = i;
	if (util_parse_u64(arg, nend, 0, BDAT_SIZE_MAX, false, &v) != 0)
		return -1;
	if (nend == len) {
		*size = v;
		*last = false;
		return 0;
	}
	if (!is_ws((unsigned char)arg[i]))
		return -1;
	while (i < len && is_ws((unsigned char)arg[i]))
		i++;
	/* Trailing blanks after LAST are tolerated like the arg trimming. */
	while (len > i && is_ws((unsigned char)arg[len - 1]))
		len--;
	if (!ieq(arg + i, len - i, "LAST"))
		return -1;
	*size = v;
	*last = true;
	return 0;
}

int
smtp_parse_auth(const char *arg, size_t len, struct smtp_auth_arg *out)
{
	size_t i = 0, mstart, mend, istart, iend;

	memset(out, 0, sizeof(*out));
	out->initial = "";
	if (arg == NULL)
		return -1;
	while (i < len && is_ws((unsigned char)arg[i]))
		i++;
	mstart = i;
	while (i < len && !is_ws((unsigned char)arg[i]))
		i++;
	mend = i;
	if (mend == mstart)
		return -1;
	while (i < len && is_ws((unsigned char)arg[i]))
		i++;
	istart = i;
	while (i < len && !is_ws((unsigned char)arg[i]))
		i++;
	iend = i;
	while (i < len && is_ws((unsigned char)arg[i]))
		i++;
	if (i < len)
		return -1;	/* a third word */

	out->mechname = arg + mstart;
	out->mechlen = mend - mstart;
	if (ieq(out->mechname, out->mechlen, "PLAIN"))
		out->mech = SMTP_AUTH_PLAIN;
	else if (ieq(out->mechname, out->mechlen, "LOGIN"))
		out->mech = SMTP_AUTH_LOGIN;
	else if (ieq(out->mechname, out->mechlen, "CRAM-MD5"))
		out->mech = SMTP_AUTH_CRAM_MD5;
	else
		out->mech = SMTP_AUTH_UNKNOWN;
	if (iend > istart) {
		out->has_initial = true;
		out->initial = arg + istart;
		out->initiallen = iend - istart;
	}
	return 0;
}

int
smtp_sasl_b64(const char *line, size_t len, unsigned char *out, size_t outmax,
    size_t *outlen)
{
	long n;

	size_t full = len - len % 4, i;

	*outlen = 0;
	if (len == 1 && line[0] == '*')
		return 1;
	/* RFC 4954: "=" is an empty initial response. */
	if (len == 1 && line[0] == '=')
		return 0;
	/* Whole groups first: bad characters or data after '=' are errors. */
	n = util_b64_decode(line, full, out, outmax);
	if (n < 0 || (full > 0 && len % 4 != 0 && line[full - 1] == '='))
		return -1;
	if (len % 4 != 0) {
		/* A partial last group: as Cyrus, the exchange needs another step. */
		for (i = full; i < len; i++) {
			unsigned char c = (unsigned char)line[i];
			if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			    (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '='))
				return -1;
			if (c == '=' && i + 1 < len && line[i + 1] != '=')
				return -1;
		}
		return 2;
	}
	*outlen = (size_t)n;
	return 0;
}

/* Keep s[0..len) in a creds field, truncating and flagging when too long. */
static void
creds_set(char *dst, size_t *dstlen, const unsigned char *s, size_t len,
    bool *truncated)
{
	size_t n = len;

	if (n > SMTP_AUTH_FIELD_MAX) {
		n = SMTP_AUTH_FIELD_MAX;
		*truncated = true;
	}
	if (n > 0)
		memcpy(dst, s, n);
	dst[n] = '\0';
	*dstlen = len;
}

int
smtp_sasl_plain(const unsigned char *buf, size_t len, struct smtp_creds *out)
{
	const unsigned char *nul1, *nul2;
	size_t zlen, ulen;

	memset(out, 0, sizeof(*out));
	if (buf == NULL || len == 0)
		return -1;
	if ((nul1 = memchr(buf, '\0', len)) == NULL)
		return -1;
	zlen = (size_t)(nul1 - buf);
	if ((nul2 = memchr(nul1 + 1, '\0', len - zlen - 1)) == NULL)
		return -1;
	ulen = (size_t)(nul2 - nul1 - 1);
	creds_set(out->authzid, &out->authzidlen, buf, zlen, &out->truncated);
	creds_set(out->user, &out->userlen, nul1 + 1, ulen, &out->truncated);
	/* The password is the rest, NULs and all: we keep what was sent. */
	creds_set(out->pass, &out->passlen, nul2 + 1, len - zlen - ulen - 2,
	    &out->truncated);
	return 0;
}

int
smtp_sasl_cram(const unsigned char *buf, size_t len, struct smtp_creds *out)
{
	size_t sp, dlen, i;

	memset(out, 0, sizeof(*out));
	if (buf == NULL)
		return -1;
	/* RFC 2195: the digest follows the last space; names may hold spaces. */
	for (sp = len; sp > 0; sp--)
		if (buf[sp - 1] == ' ')
			break;
	if (sp == 0) {
		creds_set(out->user, &out->userlen, buf, len, &out->truncated);
		return -1;
	}
	creds_set(out->user, &out->userlen, buf, sp - 1, &out->truncated);
	dlen = len - sp;
	creds_set(out->pass, &out->passlen, buf + sp, dlen, &out->truncated);
	if (sp - 1 == 0 || dlen != 32)
		return -1;
	for (i = 0; i < 32; i++) {
		unsigned char c = buf[sp + i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		    (c >= 'A' && c <= 'F')))
			return -1;
	}
	return 0;
}
