/* Unit tests for smtp_parse.c: command split, MAIL/RCPT, BDAT, AUTH, SASL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_parse.h"

static enum smtp_cmd cmd_of(const char *);
static enum smtp_path_err mail(const char *, struct smtp_path *);
static enum smtp_path_err rcpt(const char *, struct smtp_path *);
static void	test_command_verbs(void **);
static void	test_command_split(void **);
static void	test_command_nul(void **);
static void	test_command_headerlike(void **);
static void	test_cmd_name(void **);
static void	test_mail_forms(void **);
static void	test_mail_null_and_route(void **);
static void	test_mail_quoted(void **);
static void	test_mail_bad_addr(void **);
static void	test_mail_size(void **);
static void	test_mail_body_and_flags(void **);
static void	test_mail_dsn_auth(void **);
static void	test_mail_bad_params(void **);
static void	test_mail_overlong(void **);
static void	test_rcpt(void **);
static void	test_bdat(void **);
static void	test_auth(void **);
static void	test_sasl_b64(void **);
static void	test_sasl_plain(void **);
static void	test_sasl_cram(void **);

/* The command of a C-string line. */
static enum smtp_cmd
cmd_of(const char *line)
{
	struct smtp_cmdline c;

	smtp_parse_command(line, strlen(line), &c);
	return c.cmd;
}

/* smtp_parse_mail on a C string. */
static enum smtp_path_err
mail(const char *arg, struct smtp_path *p)
{
	return smtp_parse_mail(arg, strlen(arg), p);
}

/* smtp_parse_rcpt on a C string. */
static enum smtp_path_err
rcpt(const char *arg, struct smtp_path *p)
{
	return smtp_parse_rcpt(arg, strlen(arg), p);
}

/* Every verb is recognised in any case; others are unknown. */
static void
test_command_verbs(void **state)
{
	assert_int_equal(cmd_of("HELO x"), SMTP_CMD_HELO);
	assert_int_equal(cmd_of("ehlo x"), SMTP_CMD_EHLO);
	assert_int_equal(cmd_of("MaIl FROM:<a@b>"), SMTP_CMD_MAIL);
	assert_int_equal(cmd_of("rcpt TO:<a@b>"), SMTP_CMD_RCPT);
	assert_int_equal(cmd_of("DATA"), SMTP_CMD_DATA);
	assert_int_equal(cmd_of("bdat 10 LAST"), SMTP_CMD_BDAT);
	assert_int_equal(cmd_of("RSET"), SMTP_CMD_RSET);
	assert_int_equal(cmd_of("noop"), SMTP_CMD_NOOP);
	assert_int_equal(cmd_of("QUIT"), SMTP_CMD_QUIT);
	assert_int_equal(cmd_of("VRFY root"), SMTP_CMD_VRFY);
	assert_int_equal(cmd_of("EXPN list"), SMTP_CMD_EXPN);
	assert_int_equal(cmd_of("HELP"), SMTP_CMD_HELP);
	assert_int_equal(cmd_of("StartTLS"), SMTP_CMD_STARTTLS);
	assert_int_equal(cmd_of("AUTH PLAIN"), SMTP_CMD_AUTH);
	assert_int_equal(cmd_of("ETRN x"), SMTP_CMD_ETRN);
	assert_int_equal(cmd_of("TURN"), SMTP_CMD_TURN);
	assert_int_equal(cmd_of("XCLIENT ADDR=1.2.3.4"), SMTP_CMD_XCLIENT);
	assert_int_equal(cmd_of("XFORWARD NAME=x"), SMTP_CMD_XFORWARD);
	assert_int_equal(cmd_of("GET / HTTP/1.0"), SMTP_CMD_UNKNOWN);
	assert_int_equal(cmd_of("MAILX"), SMTP_CMD_UNKNOWN);
	assert_int_equal(cmd_of("MAI"), SMTP_CMD_UNKNOWN);
	assert_int_equal(cmd_of("QUIT\x01"), SMTP_CMD_UNKNOWN);
	assert_int_equal(cmd_of(""), SMTP_CMD_NONE);
	assert_int_equal(cmd_of("  \t "), SMTP_CMD_NONE);
}

/* Verb and argument boundaries, blanks trimmed, "" when no argument. */
static void
test_command_split(void **state)
{
	struct smtp_cmdline c;
	const char *l;

	l = "EHLO   client.example  \t ";
	smtp_parse_command(l, strlen(l), &c);
	assert_int_equal(c.verblen, 4);
	assert_ptr_equal(c.verb, l);
	assert_int_equal(c.arglen, strlen("client.example"));
	assert_memory_equal(c.arg, "client.example", c.arglen);

	l = "MAIL\tFROM:<a@b> SIZE=1";
	smtp_parse_command(l, strlen(l), &c);
	assert_int_equal(c.cmd, SMTP_CMD_MAIL);
	assert_int_equal(c.arglen, strlen("FROM:<a@b> SIZE=1"));
	assert_memory_equal(c.arg, "FROM:<a@b> SIZE=1", c.arglen);

	l = "QUIT";
	smtp_parse_command(l, strlen(l), &c);
	assert_int_equal(c.cmd, SMTP_CMD_QUIT);
	assert_non_null(c.arg);
	assert_string_equal(c.arg, "");
	assert_int_equal(c.arglen, 0);

	l = "DATA   ";
	smtp_parse_command(l, strlen(l), &c);
	assert_int_equal(c.cmd, SMTP_CMD_DATA);
	assert_int_equal(c.arglen, 0);

	/* Leading blanks skipped, like Postfix's tokenizer. */
	l = "  NOOP x";
	smtp_parse_command(l, strlen(l), &c);
	assert_int_equal(c.cmd, SMTP_CMD_NOOP);
	assert_ptr_equal(c.verb, l + 2);
	assert_int_equal(c.arglen, 1);

	smtp_parse_command(l, 0, &c);	/* len is authoritative */
	assert_int_equal(c.cmd, SMTP_CMD_NONE);
	assert_int_equal(c.verblen, 0);
	assert_int_equal(c.arglen, 0);
}

/* NUL bytes are data: no truncation, no match through them. */
static void
test_command_nul(void **state)
{
	static const char l1[] = "QUIT\0garbage";
	static const char l2[] = "HELO a\0b  ";
	static const char l3[] = "\0";
	struct smtp_cmdline c;

	smtp_parse_command(l1, sizeof(l1) - 1, &c);
	assert_int_equal(c.cmd, SMTP_CMD_UNKNOWN);
	assert_int_equal(c.verblen, sizeof(l1) - 1);

	smtp_parse_command(l2, sizeof(l2) - 1, &c);
	assert_int_equal(c.cmd, SMTP_CMD_HELO);
	assert_int_equal(c.arglen, 3);
	assert_memory_equal(c.arg, "a\0b", 3);

	smtp_parse_command(l3, 1, &c);
	assert_int_equal(c.cmd, SMTP_CMD_UNKNOWN);
	assert_int_equal(c.verblen, 1);
}

/* Header lines sent as commands are recognised (Postfix hangs up on them). */
static void
test_command_headerlike(void **state)
{
	assert_int_equal(cmd_of("Subject: hello"), SMTP_CMD_HEADERLIKE);
	assert_int_equal(cmd_of("From: <a@b>"), SMTP_CMD_HEADERLIKE);
	assert_int_equal(cmd_of("To: x"), SMTP_CMD_HEADERLIKE);
	assert_int_equal(cmd_of("Received: from x"), SMTP_CMD_HEADERLIKE);
	assert_int_equal(cmd_of("Content-Type: text/plain"), SMTP_CMD_HEADERLIKE);
	assert_int_equal(cmd_of("Message-ID: <1@x>"), SMTP_CMD_HEADERLIKE);
	assert_int_equal(cmd_of("Date: Mon"), SMTP_CMD_HEADERLIKE);
	assert_int_equal(cmd_of("X-Mailer: foo"), SMTP_CMD_HEADERLIKE);
	assert_int_equal(cmd_of("subject:"), SMTP_CMD_HEADERLIKE);
	assert_int_equal(cmd_of("Subject:nospace"), SMTP_CMD_HEADERLIKE);
	/* Not headers. */
	assert_int_equal(cmd_of(": x"), SMTP_CMD_UNKNOWN);
	assert_int_equal(cmd_of("Sub\x01ject: x"), SMTP_CMD_UNKNOWN);
	assert_int_equal(cmd_of("Subject"), SMTP_CMD_UNKNOWN);
	assert_int_equal(cmd_of("MAIL FROM:<a@b>"), SMTP_CMD_MAIL);
}

/* Names for logs. */
static void
test_cmd_name(void **state)
{
	assert_string_equal(smtp_cmd_name(SMTP_CMD_MAIL), "MAIL");
	assert_string_equal(smtp_cmd_name(SMTP_CMD_STARTTLS), "STARTTLS");
	assert_string_equal(smtp_cmd_name(SMTP_CMD_XFORWARD), "XFORWARD");
	assert_non_null(smtp_cmd_name(SMTP_CMD_NONE));
	assert_non_null(smtp_cmd_name(SMTP_CMD_UNKNOWN));
	assert_non_null(smtp_cmd_name(SMTP_CMD_HEADERLIKE));
	assert_non_null(smtp_cmd_name((enum smtp_cmd)999));
}

/* The forms Postfix accepts without strict_rfc821_envelopes. */
static void
test_mail_forms(void **state)
{
	struct smtp_path p;

	assert_int_equal(mail("FROM:<a@b.example>", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "a@b.example");
	assert_int_equal(p.addrlen, 11);
	assert_false(p.null_path);
	assert_false(p.has_size);
	assert_int_equal(p.body, SMTP_BODY_NONE);

	assert_int_equal(mail("from:<a@b>", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "a@b");
	assert_int_equal(mail("FROM: <a@b>", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "a@b");
	assert_int_equal(mail("FROM:\t <a@b>", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "a@b");
	assert_int_equal(mail("FROM:a@b", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "a@b");
	assert_int_equal(mail("FROM: a@b SIZE=5", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "a@b");
	assert_true(p.has_size);
	assert_true(p.size == 5);
	assert_int_equal(mail("FROM:<user>", &p), SMTP_PATH_OK);	/* no domain */
	assert_string_equal(p.addr, "user");
	/* 8-bit mailbox (SMTPUTF8 or not): Postfix takes it. */
	assert_int_equal(mail("FROM:<j\xc3\xb6rg@b> SMTPUTF8", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "j\xc3\xb6rg@b");
	assert_true(p.smtputf8);

	/* Missing or misspelt keyword. */
	assert_int_equal(mail("<a@b>", &p), SMTP_PATH_ERR_SYNTAX);
	assert_int_equal(mail("FROM <a@b>", &p), SMTP_PATH_ERR_SYNTAX);
	assert_int_equal(mail("FROM :<a@b>", &p), SMTP_PATH_ERR_SYNTAX);
	assert_int_equal(mail("TO:<a@b>", &p), SMTP_PATH_ERR_SYNTAX);
	assert_int_equal(mail("FROM:", &p), SMTP_PATH_ERR_SYNTAX);
	assert_int_equal(mail("FROM:   ", &p), SMTP_PATH_ERR_SYNTAX);
	assert_int_equal(mail("", &p), SMTP_PATH_ERR_SYNTAX);
	assert_int_equal(smtp_parse_mail("FROM:<a@b>", 4, &p), SMTP_PATH_ERR_SYNTAX);
}

/* "<>" and source routes. */
static void
test_mail_null_and_route(void **state)
{
	struct smtp_path p;

	assert_int_equal(mail("FROM:<>", &p), SMTP_PATH_OK);
	assert_true(p.null_path);
	assert_int_equal(p.addrlen, 0);
	assert_string_equal(p.addr, "");
	assert_int_equal(mail("FROM: <> BODY=8BITMIME", &p), SMTP_PATH_OK);
	assert_true(p.null_path);
	assert_int_equal(p.body, SMTP_BODY_8BITMIME);

	assert_int_equal(mail("FROM:<@a,@b:u@d>", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "u@d");
	assert_false(p.null_path);
	assert_int_equal(mail("FROM:<@relay.example:u@d>", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "u@d");

	assert_int_equal(mail("FROM:<@a,@b>", &p), SMTP_PATH_ERR_ADDR);	/* no ':' */
	/* Recorded from Postfix 3.7: "<@b>" and "<a@b>>" pass, "<a@>" does not. */
	assert_int_equal(mail("FROM:<@b>", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "@b");
	assert_int_equal(mail("FROM:<a@b>>", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "a@b");
	assert_int_equal(mail("FROM:<a@>", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<a@b>x", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<@a:>", &p), SMTP_PATH_ERR_ADDR);	/* no mailbox */
	assert_int_equal(mail("FROM:<@:u@d>", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<@a,b:u@d>", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<@a,:u@d>", &p), SMTP_PATH_ERR_ADDR);
}

/* Quoted local parts are kept, quotes and all; '>' and blanks inside quotes are fine. */
static void
test_mail_quoted(void **state)
{
	struct smtp_path p;

	assert_int_equal(mail("FROM:<\"a b\"@d>", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "\"a b\"@d");
	assert_int_equal(mail("FROM:<\"a>b\"@d> SIZE=1", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "\"a>b\"@d");
	assert_true(p.size == 1);
	assert_int_equal(mail("FROM:<\"a\\\"b\"@d>", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "\"a\\\"b\"@d");
	assert_int_equal(mail("FROM:\"a b\"@d SIZE=2", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "\"a b\"@d");
	assert_true(p.size == 2);

	assert_int_equal(mail("FROM:<\"ab@d>", &p), SMTP_PATH_ERR_ADDR);	/* unbalanced */
	assert_int_equal(mail("FROM:\"ab@d", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<a\\>", &p), SMTP_PATH_ERR_ADDR);
}

/* Hostile and broken addresses. */
static void
test_mail_bad_addr(void **state)
{
	static const char nul1[] = "FROM:<a\0b@c>";
	static const char nul2[] = "FROM:a\0b@c";
	struct smtp_path p;

	assert_int_equal(mail("FROM:<", &p), SMTP_PATH_ERR_ADDR);		/* lone '<' */
	assert_int_equal(mail("FROM:<a@b", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<a@b SIZE=1", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:a@b>", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<a@b>x", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<a@b>SIZE=1", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<<a@b>>", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<a b@c>", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<a\tb@c>", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<a\x7f@c>", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<a\r@c>", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(smtp_parse_mail(nul1, sizeof(nul1) - 1, &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(smtp_parse_mail(nul2, sizeof(nul2) - 1, &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(mail("FROM:<a@b> <c@d>", &p), SMTP_PATH_ERR_PARAM);
	assert_memory_equal(p.errparam, "<c@d>", p.errparamlen);
}

/* SIZE: digits only, off_t range, duplicates take the last (as Postfix). */
static void
test_mail_size(void **state)
{
	struct smtp_path p;

	assert_int_equal(mail("FROM:<a@b> SIZE=0", &p), SMTP_PATH_OK);
	assert_true(p.has_size);
	assert_true(p.size == 0);
	assert_int_equal(mail("FROM:<a@b> size=33554432", &p), SMTP_PATH_OK);
	assert_true(p.size == 33554432);
	assert_int_equal(mail("FROM:<a@b> SIZE=9223372036854775807", &p), SMTP_PATH_OK);
	assert_true(p.size == INT64_MAX);
	assert_int_equal(mail("FROM:<a@b> SIZE=10 SIZE=20", &p), SMTP_PATH_OK);
	assert_true(p.size == 20);

	assert_int_equal(mail("FROM:<a@b> SIZE=9223372036854775808", &p), SMTP_PATH_ERR_SIZE);
	assert_int_equal(mail("FROM:<a@b> SIZE=99999999999999999999999", &p), SMTP_PATH_ERR_SIZE);
	assert_memory_equal(p.errparam, "SIZE=", 5);
	assert_int_equal(mail("FROM:<a@b> SIZE=-1", &p), SMTP_PATH_ERR_SIZE);
	assert_int_equal(mail("FROM:<a@b> SIZE=+1", &p), SMTP_PATH_ERR_SIZE);
	assert_int_equal(mail("FROM:<a@b> SIZE=1k", &p), SMTP_PATH_ERR_SIZE);
	assert_int_equal(mail("FROM:<a@b> SIZE=1_000", &p), SMTP_PATH_ERR_SIZE);
	assert_int_equal(mail("FROM:<a@b> SIZE=", &p), SMTP_PATH_ERR_SIZE);
	assert_int_equal(mail("FROM:<a@b> SIZE=10 SIZE=x", &p), SMTP_PATH_ERR_SIZE);
	assert_int_equal(p.errparamlen, 6);
	assert_memory_equal(p.errparam, "SIZE=x", 6);
	/* Without '=' it is no SIZE parameter at all (Postfix matches "SIZE="). */
	assert_int_equal(mail("FROM:<a@b> SIZE", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(p.errparamlen, 4);
}

/* BODY and SMTPUTF8. */
static void
test_mail_body_and_flags(void **state)
{
	struct smtp_path p;

	assert_int_equal(mail("FROM:<a@b> BODY=7BIT", &p), SMTP_PATH_OK);
	assert_int_equal(p.body, SMTP_BODY_7BIT);
	assert_int_equal(mail("FROM:<a@b> body=8bitmime", &p), SMTP_PATH_OK);
	assert_int_equal(p.body, SMTP_BODY_8BITMIME);
	assert_int_equal(mail("FROM:<a@b> BODY=BinaryMIME", &p), SMTP_PATH_OK);
	assert_int_equal(p.body, SMTP_BODY_BINARYMIME);
	assert_int_equal(mail("FROM:<a@b> smtputf8", &p), SMTP_PATH_OK);
	assert_true(p.smtputf8);

	assert_int_equal(mail("FROM:<a@b> BODY=8BIT", &p), SMTP_PATH_ERR_BODY);
	assert_memory_equal(p.errparam, "BODY=8BIT", p.errparamlen);
	assert_int_equal(mail("FROM:<a@b> BODY=", &p), SMTP_PATH_ERR_BODY);
	assert_int_equal(mail("FROM:<a@b> BODY", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(mail("FROM:<a@b> SMTPUTF8=yes", &p), SMTP_PATH_ERR_PARAM);
}

/* DSN RET/ENVID and AUTH= on MAIL. */
static void
test_mail_dsn_auth(void **state)
{
	struct smtp_path p;

	assert_int_equal(mail("FROM:<a@b> RET=hdrs ENVID=QQ314159+2B AUTH=<>", &p),
	    SMTP_PATH_OK);
	assert_string_equal(p.ret, "HDRS");
	assert_string_equal(p.envid, "QQ314159+2B");
	assert_string_equal(p.auth, "<>");
	assert_int_equal(mail("FROM:<a@b> RET=FULL AUTH=e+3Dmc2@example.com", &p),
	    SMTP_PATH_OK);
	assert_string_equal(p.ret, "FULL");
	assert_string_equal(p.auth, "e+3Dmc2@example.com");

	assert_int_equal(mail("FROM:<a@b> RET=ALL", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(mail("FROM:<a@b> RET=FULL RET=HDRS", &p), SMTP_PATH_ERR_PARAM);
	assert_memory_equal(p.errparam, "RET=HDRS", p.errparamlen);
	assert_int_equal(mail("FROM:<a@b> ENVID=", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(mail("FROM:<a@b> ENVID=a=b", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(mail("FROM:<a@b> ENVID=a+2", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(mail("FROM:<a@b> ENVID=a+ZZ", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(mail("FROM:<a@b> ENVID=\xff", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(mail("FROM:<a@b> ENVID=x ENVID=y", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(mail("FROM:<a@b> AUTH=", &p), SMTP_PATH_ERR_PARAM);
	/* RCPT-only parameters are unknown on MAIL. */
	assert_int_equal(mail("FROM:<a@b> NOTIFY=NEVER", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(mail("FROM:<a@b> ORCPT=rfc822;a@b", &p), SMTP_PATH_ERR_PARAM);
}

/* Unknown, valueless and odd parameters name themselves in errparam. */
static void
test_mail_bad_params(void **state)
{
	static const char nul[] = "FROM:<a@b> SIZE=1 BO\0DY=7BIT";
	const char *a;
	struct smtp_path p;

	a = "FROM:<a@b> SIZE=10 XVERP BODY=7BIT";
	assert_int_equal(mail(a, &p), SMTP_PATH_ERR_PARAM);
	assert_ptr_equal(p.errparam, strstr(a, "XVERP"));
	assert_int_equal(p.errparamlen, 5);
	assert_int_equal(mail("FROM:<a@b> =x", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(mail("FROM:<a@b> FOO=bar", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(p.errparamlen, 7);
	assert_int_equal(mail("FROM:<a@b> TRANSID=<x>", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(smtp_parse_mail(nul, sizeof(nul) - 1, &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(p.errparamlen, 10);
	assert_memory_equal(p.errparam, "BO\0DY=7BIT", 10);
	/* Several blanks between parameters are fine. */
	assert_int_equal(mail("FROM:<a@b>   SIZE=1 \t BODY=7BIT", &p), SMTP_PATH_OK);
	assert_true(p.size == 1);
	assert_int_equal(p.body, SMTP_BODY_7BIT);
}

/* Values and addresses longer than their fields are errors, never overflows. */
static void
test_mail_overlong(void **state)
{
	char buf[4096], *q;
	struct smtp_path p;

	/* Address of exactly SMTP_PATH_MAX bytes fits. */
	q = buf + sprintf(buf, "FROM:<");
	memset(q, 'a', SMTP_PATH_MAX - 2);
	q += SMTP_PATH_MAX - 2;
	q += sprintf(q, "@b>");
	assert_int_equal(mail(buf, &p), SMTP_PATH_OK);
	assert_int_equal(p.addrlen, SMTP_PATH_MAX);
	assert_int_equal(strlen(p.addr), SMTP_PATH_MAX);
	/* One more byte does not. */
	q = buf + sprintf(buf, "FROM:<");
	memset(q, 'a', SMTP_PATH_MAX - 1);
	q += SMTP_PATH_MAX - 1;
	q += sprintf(q, "@b>");
	assert_int_equal(mail(buf, &p), SMTP_PATH_ERR_ADDR);
	/* Same for a bare address. */
	q = buf + sprintf(buf, "FROM:");
	memset(q, 'a', 3000);
	q[3000] = '\0';
	assert_int_equal(mail(buf, &p), SMTP_PATH_ERR_ADDR);

	/* ENVID of SMTP_PARAM_MAX fits, one more is a PARAM error. */
	q = buf + sprintf(buf, "FROM:<a@b> ENVID=");
	memset(q, 'e', SMTP_PARAM_MAX);
	q[SMTP_PARAM_MAX] = '\0';
	assert_int_equal(mail(buf, &p), SMTP_PATH_OK);
	assert_int_equal(strlen(p.envid), SMTP_PARAM_MAX);
	q[SMTP_PARAM_MAX] = 'e';
	q[SMTP_PARAM_MAX + 1] = '\0';
	assert_int_equal(mail(buf, &p), SMTP_PATH_ERR_PARAM);
	assert_ptr_equal(p.errparam, buf + strlen("FROM:<a@b> "));

	q = buf + sprintf(buf, "FROM:<a@b> AUTH=");
	memset(q, 'u', 2000);
	q[2000] = '\0';
	assert_int_equal(mail(buf, &p), SMTP_PATH_ERR_PARAM);

	q = buf + sprintf(buf, "TO:<a@b> ORCPT=rfc822;");
	memset(q, 'o', SMTP_PARAM_MAX);
	q[SMTP_PARAM_MAX] = '\0';
	assert_int_equal(rcpt(buf, &p), SMTP_PATH_ERR_PARAM);

	/* NOTIFY is bounded by its 64-byte field. */
	q = buf + sprintf(buf, "TO:<a@b> NOTIFY=SUCCESS");
	while (q - buf < 200)
		q += sprintf(q, ",DELAY");
	assert_int_equal(rcpt(buf, &p), SMTP_PATH_ERR_PARAM);
}

/* RCPT: TO:, no null path, NOTIFY and ORCPT only. */
static void
test_rcpt(void **state)
{
	struct smtp_path p;

	assert_int_equal(rcpt("TO:<x@y>", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "x@y");
	assert_int_equal(rcpt("to: x@y", &p), SMTP_PATH_OK);
	assert_string_equal(p.addr, "x@y");
	assert_int_equal(rcpt("TO:<postmaster>", &p), SMTP_PATH_OK);
	assert_int_equal(rcpt("TO:<@hop:x@y> NOTIFY=success,FAILURE ORCPT=rfc822;x+40y", &p),
	    SMTP_PATH_OK);
	assert_string_equal(p.addr, "x@y");
	assert_string_equal(p.notify, "success,FAILURE");
	assert_string_equal(p.orcpt, "rfc822;x+40y");
	assert_int_equal(rcpt("TO:<x@y> NOTIFY=NEVER", &p), SMTP_PATH_OK);
	assert_string_equal(p.notify, "NEVER");

	assert_int_equal(rcpt("TO:<>", &p), SMTP_PATH_ERR_ADDR);
	assert_int_equal(rcpt("FROM:<x@y>", &p), SMTP_PATH_ERR_SYNTAX);
	assert_int_equal(rcpt("TO:", &p), SMTP_PATH_ERR_SYNTAX);
	assert_int_equal(rcpt("TO:<x@y> SIZE=10", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(rcpt("TO:<x@y> BODY=7BIT", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(rcpt("TO:<x@y> NOTIFY=NEVER,DELAY", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(rcpt("TO:<x@y> NOTIFY=", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(rcpt("TO:<x@y> NOTIFY=SUCCESS,", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(rcpt("TO:<x@y> NOTIFY=SOMETIMES", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(rcpt("TO:<x@y> NOTIFY=NEVER NOTIFY=NEVER", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(rcpt("TO:<x@y> ORCPT=x@y", &p), SMTP_PATH_ERR_PARAM);	/* no type */
	assert_int_equal(rcpt("TO:<x@y> ORCPT=;x@y", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(rcpt("TO:<x@y> ORCPT=rfc822;", &p), SMTP_PATH_ERR_PARAM);
	assert_int_equal(rcpt("TO:<x@y> ORCPT", &p), SMTP_PATH_ERR_PARAM);
	assert_memory_equal(p.errparam, "ORCPT", 5);
}

/* BDAT size [LAST]. */
static void
test_bdat(void **state)
{
	static const char nul[] = "12\0";
	uint64_t size = 77;
	bool last = true;

#define BDAT(s) smtp_parse_bdat((s), strlen(s), &size, &last)
	assert_int_equal(BDAT("123"), 0);
	assert_true(size == 123);
	assert_false(last);
	assert_int_equal(BDAT("0 LAST"), 0);
	assert_true(size == 0);
	assert_true(last);
	assert_int_equal(BDAT("42 last"), 0);
	assert_true(size == 42 && last);
	assert_int_equal(BDAT("42 \t LaSt"), 0);
	assert_true(last);
	assert_int_equal(BDAT("9007199254740992"), 0);	/* 2^53 */
	assert_true(size == (UINT64_C(1) << 53));

	size = 5;
	assert_int_equal(BDAT("9007199254740993"), -1);
	assert_int_equal(BDAT("18446744073709551616"), -1);
	assert_int_equal(BDAT(""), -1);
	assert_int_equal(BDAT("LAST"), -1);
	assert_int_equal(BDAT("-1"), -1);
	assert_int_equal(BDAT("+1"), -1);
	assert_int_equal(BDAT(" 1"), -1);
	assert_int_equal(BDAT("1x"), -1);
	assert_int_equal(BDAT("1 LASTX"), -1);
	assert_int_equal(BDAT("1 LAST x"), -1);
	assert_int_equal(BDAT("1 FIRST"), -1);
	assert_int_equal(BDAT("1 2"), -1);
	assert_int_equal(BDAT("0x10"), -1);
	assert_int_equal(smtp_parse_bdat(nul, 3, &size, &last), -1);
	assert_true(size == 5);	/* untouched on error */
#undef BDAT
}

/* AUTH mechanism [initial-response]. */
static void
test_auth(void **state)
{
	struct smtp_auth_arg a;
	const char *s;

	s = "PLAIN AGEAYg==";
	assert_int_equal(smtp_parse_auth(s, strlen(s), &a), 0);
	assert_int_equal(a.mech, SMTP_AUTH_PLAIN);
	assert_ptr_equal(a.mechname, s);
	assert_int_equal(a.mechlen, 5);
	assert_true(a.has_initial);
	assert_int_equal(a.initiallen, 8);
	assert_memory_equal(a.initial, "AGEAYg==", 8);

	s = "login";
	assert_int_equal(smtp_parse_auth(s, strlen(s), &a), 0);
	assert_int_equal(a.mech, SMTP_AUTH_LOGIN);
	assert_false(a.has_initial);
	s = "cram-md5";
	assert_int_equal(smtp_parse_auth(s, strlen(s), &a), 0);
	assert_int_equal(a.mech, SMTP_AUTH_CRAM_MD5);
	s = "PLAIN =";
	assert_int_equal(smtp_parse_auth(s, strlen(s), &a), 0);
	assert_true(a.has_initial);
	assert_int_equal(a.initiallen, 1);
	s = "CRAM-SHA1";
	assert_int_equal(smtp_parse_auth(s, strlen(s), &a), 0);
	assert_int_equal(a.mech, SMTP_AUTH_UNKNOWN);
	assert_int_equal(a.mechlen, 9);
	s = "  LOGIN \t dXNlcg==  ";
	assert_int_equal(smtp_parse_auth(s, strlen(s), &a), 0);
	assert_int_equal(a.mech, SMTP_AUTH_LOGIN);
	assert_memory_equal(a.initial, "dXNlcg==", a.initiallen);

	assert_int_equal(smtp_parse_auth("", 0, &a), -1);
	assert_int_equal(smtp_parse_auth("   ", 3, &a), -1);
	s = "PLAIN a b";
	assert_int_equal(smtp_parse_auth(s, strlen(s), &a), -1);
	s = "PL\0AIN";
	assert_int_equal(smtp_parse_auth(s, 6, &a), 0);
	assert_int_equal(a.mech, SMTP_AUTH_UNKNOWN);
}

/* SASL base64 lines: cancel, empty, strict decoding, bounded output. */
static void
test_sasl_b64(void **state)
{
	unsigned char out[64];
	size_t n = 99;

	assert_int_equal(smtp_sasl_b64("*", 1, out, sizeof(out), &n), 1);
	assert_int_equal(smtp_sasl_b64("=", 1, out, sizeof(out), &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(smtp_sasl_b64("", 0, out, sizeof(out), &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(smtp_sasl_b64("dXNlcg==", 8, out, sizeof(out), &n), 0);
	assert_int_equal(n, 4);
	assert_memory_equal(out, "user", 4);
	/* An incomplete last group: Cyrus (and so Postfix) wants another step. */
	assert_int_equal(smtp_sasl_b64("dXNlcg", 6, out, sizeof(out), &n), 2);
	assert_int_equal(smtp_sasl_b64("YWJjZA=", 7, out, sizeof(out), &n), 2);
	assert_int_equal(smtp_sasl_b64("YW", 2, out, sizeof(out), &n), 2);
	/* Data after padding, or a bad character in the partial group: bad. */
	assert_int_equal(smtp_sasl_b64("YW==YWJj", 8, out, sizeof(out), &n), -1);
	assert_int_equal(smtp_sasl_b64("YWJj=A", 6, out, sizeof(out), &n), -1);
	assert_int_equal(smtp_sasl_b64("YWJj!", 5, out, sizeof(out), &n), -1);
	assert_int_equal(smtp_sasl_b64("dXNl cg==", 9, out, sizeof(out), &n), -1);
	assert_int_equal(smtp_sasl_b64("**", 2, out, sizeof(out), &n), -1);
	assert_int_equal(smtp_sasl_b64("dXNlcg==", 8, out, 3, &n), -1);
}

/* PLAIN: authzid NUL user NUL pass; real lengths; truncation flagged. */
static void
test_sasl_plain(void **state)
{
	static const unsigned char m1[] = "\0user\0secret";
	static const unsigned char m2[] = "admin\0bob\0p\0w";
	static const unsigned char m3[] = "user\0pass";
	unsigned char big[2000];
	struct smtp_creds c;

	assert_int_equal(smtp_sasl_plain(m1, sizeof(m1) - 1, &c), 0);
	assert_int_equal(c.authzidlen, 0);
	assert_string_equal(c.user, "user");
	assert_int_equal(c.userlen, 4);
	assert_string_equal(c.pass, "secret");
	assert_int_equal(c.passlen, 6);
	assert_false(c.truncated);

	assert_int_equal(smtp_sasl_plain(m2, sizeof(m2) - 1, &c), 0);
	assert_string_equal(c.authzid, "admin");
	assert_string_equal(c.user, "bob");
	assert_int_equal(c.passlen, 3);
	assert_memory_equal(c.pass, "p\0w", 3);

	assert_int_equal(smtp_sasl_plain(m3, sizeof(m3) - 1, &c), -1);
	assert_int_equal(smtp_sasl_plain((const unsigned char *)"x", 1, &c), -1);
	assert_int_equal(smtp_sasl_plain((const unsigned char *)"", 0, &c), -1);
	assert_int_equal(smtp_sasl_plain((const unsigned char *)"\0\0", 2, &c), 0);
	assert_int_equal(c.userlen, 0);
	assert_int_equal(c.passlen, 0);

	/* A 1500-byte password is kept truncated, its real length recorded. */
	memset(big, 'p', sizeof(big));
	big[0] = '\0';
	memcpy(big + 1, "u", 1);
	big[2] = '\0';
	assert_int_equal(smtp_sasl_plain(big, 1503, &c), 0);
	assert_string_equal(c.user, "u");
	assert_int_equal(c.passlen, 1500);
	assert_int_equal(strlen(c.pass), SMTP_AUTH_FIELD_MAX);
	assert_true(c.truncated);
	/* Overlong user, too. */
	memset(big, 'u', sizeof(big));
	big[0] = '\0';
	big[1000] = '\0';
	assert_int_equal(smtp_sasl_plain(big, 1004, &c), 0);
	assert_int_equal(c.userlen, 999);
	assert_int_equal(strlen(c.user), SMTP_AUTH_FIELD_MAX);
	assert_int_equal(c.passlen, 3);
	assert_true(c.truncated);
}

/* CRAM-MD5: "user SP 32 hex", either case; partial data still captured. */
static void
test_sasl_cram(void **state)
{
	struct smtp_creds c;
	const char *s;
	unsigned char big[1000];

#define CRAM(s) smtp_sasl_cram((const unsigned char *)(s), strlen(s), &c)
	assert_int_equal(CRAM("tim b913a602c7eda7a495b4e6e7334d3890"), 0);
	assert_string_equal(c.user, "tim");
	assert_string_equal(c.pass, "b913a602c7eda7a495b4e6e7334d3890");
	assert_int_equal(c.passlen, 32);
	assert_int_equal(CRAM("tim B913A602C7EDA7A495B4E6E7334D3890"), 0);
	assert_int_equal(CRAM("John Doe b913a602c7eda7a495b4e6e7334d3890"), 0);
	assert_string_equal(c.user, "John Doe");

	s = "tim b913a602c7eda7a495b4e6e7334d389";	/* 31 hex */
	assert_int_equal(CRAM(s), -1);
	assert_string_equal(c.user, "tim");
	assert_string_equal(c.pass, "b913a602c7eda7a495b4e6e7334d389");
	assert_int_equal(CRAM("tim b913a602c7eda7a495b4e6e7334d3890a"), -1);
	assert_int_equal(CRAM("tim g913a602c7eda7a495b4e6e7334d3890"), -1);
	assert_int_equal(CRAM("timb913a602c7eda7a495b4e6e7334d3890"), -1);
	assert_string_equal(c.user, "timb913a602c7eda7a495b4e6e7334d3890");
	assert_int_equal(CRAM(" b913a602c7eda7a495b4e6e7334d3890"), -1);	/* no user */
	assert_int_equal(CRAM(""), -1);
	assert_int_equal(smtp_sasl_cram((const unsigned char *)
	    "tim b913a602c7eda7a495b4e6e7334d38\0000", 36, &c), -1);

	memset(big, 'u', sizeof(big));
	memcpy(big + sizeof(big) - 33, " b913a602c7eda7a495b4e6e7334d3890", 33);
	assert_int_equal(smtp_sasl_cram(big, sizeof(big), &c), 0);
	assert_int_equal(c.userlen, sizeof(big) - 33);
	assert_int_equal(strlen(c.user), SMTP_AUTH_FIELD_MAX);
	assert_true(c.truncated);
#undef CRAM
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_command_verbs),
		cmocka_unit_test(test_command_split),
		cmocka_unit_test(test_command_nul),
		cmocka_unit_test(test_command_headerlike),
		cmocka_unit_test(test_cmd_name),
		cmocka_unit_test(test_mail_forms),
		cmocka_unit_test(test_mail_null_and_route),
		cmocka_unit_test(test_mail_quoted),
		cmocka_unit_test(test_mail_bad_addr),
		cmocka_unit_test(test_mail_size),
		cmocka_unit_test(test_mail_body_and_flags),
		cmocka_unit_test(test_mail_dsn_auth),
		cmocka_unit_test(test_mail_bad_params),
		cmocka_unit_test(test_mail_overlong),
		cmocka_unit_test(test_rcpt),
		cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_auth),
		cmocka_unit_test(test_sasl_b64),
		cmocka_unit_test(test_sasl_plain),
		cmocka_unit_test(test_sasl_cram),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
