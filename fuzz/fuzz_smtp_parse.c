/*
 * libFuzzer target for smtp_parse.c (and the base64 decoder it uses).  The
 * first byte selects the parser; the rest is the input, copied into an
 * exact-size heap buffer so that ASan catches any read past len.  Selector
 * values beyond the parsers run them all on the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"
#include "util.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void	fuzz_command(const char *, size_t);
static void	fuzz_path(const char *, size_t, bool);
static void	fuzz_bdat(const char *, size_t);
static void	fuzz_auth(const char *, size_t);
static void	fuzz_sasl(const char *, size_t);
static void	check_str(const char *, size_t);

/* A fixed field must be NUL-terminated within its size. */
static void
check_str(const char *s, size_t size)
{
	if (memchr(s, '\0', size) == NULL)
		abort();
}

/* Split a line; the verb and argument must lie inside the input. */
static void
fuzz_command(const char *p, size_t n)
{
	struct smtp_cmdline c;

	smtp_parse_command(p, n, &c);
	if (c.verblen > 0 && (c.verb < p || c.verb + c.verblen > p + n))
		abort();
	if (c.arglen > 0 && (c.arg < p || c.arg + c.arglen > p + n))
		abort();
	if (c.arg == NULL || c.verb == NULL || smtp_cmd_name(c.cmd) == NULL)
		abort();
	/* What the session does next: parse the argument again. */
	if (c.cmd == SMTP_CMD_MAIL)
		fuzz_path(c.arg, c.arglen, true);
	else if (c.cmd == SMTP_CMD_RCPT)
		fuzz_path(c.arg, c.arglen, false);
	else if (c.cmd == SMTP_CMD_BDAT)
		fuzz_bdat(c.arg, c.arglen);
	else if (c.cmd == SMTP_CMD_AUTH)
		fuzz_auth(c.arg, c.arglen);
}

/* MAIL or RCPT argument; check every field is terminated and in bounds. */
static void
fuzz_path(const char *p, size_t n, bool is_mail)
{
	struct smtp_path path;
	enum smtp_path_err e;

	e = is_mail ? smtp_parse_mail(p, n, &path) : smtp_parse_rcpt(p, n, &path);
	check_str(path.addr, sizeof(path.addr));
	check_str(path.ret, sizeof(path.ret));
	check_str(path.envid, sizeof(path.envid));
	check_str(path.notify, sizeof(path.notify));
	check_str(path.orcpt, sizeof(path.orcpt));
	check_str(path.auth, sizeof(path.auth));
	if (e == SMTP_PATH_OK && (path.addrlen != strlen(path.addr) ||
	    (path.addrlen == 0) != path.null_path))
		abort();
	if (e == SMTP_PATH_ERR_PARAM && (path.errparam < p ||
	    path.errparam + path.errparamlen > p + n))
		abort();
}

/* BDAT argument. */
static void
fuzz_bdat(const char *p, size_t n)
{
	uint64_t size;
	bool last;

	if (smtp_parse_bdat(p, n, &size, &last) == 0 && size > (UINT64_C(1) << 53))
		abort();
}

/* AUTH argument, then its initial response through the SASL decoders. */
static void
fuzz_auth(const char *p, size_t n)
{
	struct smtp_auth_arg a;

	if (smtp_parse_auth(p, n, &a) != 0)
		return;
	if (a.mechname < p || a.mechname + a.mechlen > p + n)
		abort();
	if (a.has_initial) {
		if (a.initial < p || a.initial + a.initiallen > p + n)
			abort();
		fuzz_sasl(a.initial, a.initiallen);
	}
}

/* One SASL line: base64, then PLAIN and CRAM on the decoded bytes. */
static void
fuzz_sasl(const char *p, size_t n)
{
	unsigned char buf[SMTP_AUTH_LINE_MAX];
	struct smtp_creds c;
	size_t outlen = 0;
	int r;

	r = smtp_sasl_b64(p, n, buf, sizeof(buf), &outlen);
	if (r != 0)
		return;
	if (outlen > sizeof(buf))
		abort();
	if (smtp_sasl_plain(buf, outlen, &c) == 0 && c.authzidlen + c.userlen +
	    c.passlen + 2 != outlen)
		abort();
	check_str(c.user, sizeof(c.user));
	check_str(c.pass, sizeof(c.pass));
	smtp_sasl_cram(buf, outlen, &c);
	check_str(c.user, sizeof(c.user));
	check_str(c.pass, sizeof(c.pass));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *p;
	size_t n;
	unsigned sel;

	if (size < 1)
		return 0;
	sel = data[0];
	n = size - 1;
	/* Exact-size copy: no terminator, so any overread is caught. */
	if ((p = malloc(n ? n : 1)) == NULL)
		return 0;
	memcpy(p, data + 1, n);

	switch (sel % 8) {
	case 0:
		fuzz_command(p, n);
		break;
	case 1:
		fuzz_path(p, n, true);
		break;
	case 2:
		fuzz_path(p, n, false);
		break;
	case 3:
		fuzz_bdat(p, n);
		break;
	case 4:
		fuzz_auth(p, n);
		break;
	case 5:
		fuzz_sasl(p, n);
		break;
	case 6:
		/* Raw decoded bytes straight into PLAIN and CRAM. */
		{
			struct smtp_creds c;

			smtp_sasl_plain((const unsigned char *)p, n, &c);
			smtp_sasl_cram((const unsigned char *)p, n, &c);
		}
		break;
	default:
		fuzz_command(p, n);
		fuzz_path(p, n, true);
		fuzz_path(p, n, false);
		fuzz_bdat(p, n);
		fuzz_auth(p, n);
		fuzz_sasl(p, n);
		break;
	}
	free(p);
	return 0;
}
