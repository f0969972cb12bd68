/*
 * Named limits in one place.  Values marked "default" are what the embedded
 * configuration uses; config.c lets an operator change them within the ranges
 * given here.  Postfix's default is used wherever Postfix has one.
 */
#ifndef FOSR_LIMITS_H
#define FOSR_LIMITS_H

#define FOSR_VERSION		"0.1.0"

/* RFC 5321 4.5.3.1 sizes, and Postfix's line_length_limit. */
#define SMTP_LINE_DEFAULT	2048		/* default command line cap (bytes, w/o CRLF) */
#define SMTP_LINE_MIN		512
#define SMTP_LINE_MAX		65536
#define SMTP_DOMAIN_MAX		255		/* HELO argument, domains */
#define SMTP_PATH_MAX		2048		/* a mailbox inside <>: whatever fits Postfix's 2048-byte line */
#define SMTP_PARAM_MAX		512		/* one ESMTP parameter value (ENVID, ORCPT) */
#define SMTP_AUTH_LINE_MAX	12288		/* one AUTH line (Postfix: 12288) */
#define SMTP_AUTH_FIELD_MAX	256		/* decoded user / password kept */

#define SMTP_RCPT_DEFAULT	1000		/* smtpd_recipient_limit */
/*
 * limits.recipients at most (Postfix's default): the reception record of
 * that many recipients must be one journal line every reader takes whole
 * (JOURNAL_LINE_MAX, asserted below).
 */
#define SMTP_RCPT_MAX		1000
#define SMTP_RCPT_OVERSHOOT	1000		/* smtpd_recipient_overshoot_limit (not configurable) */
#define SMTP_JUNK_LIMIT		100		/* smtpd_junk_command_limit (not configurable) */
#define SMTP_SOFT_ERRORS_DEFAULT 10		/* smtpd_soft_error_limit */
#define SMTP_HARD_ERRORS_DEFAULT 20		/* smtpd_hard_error_limit */
#define SMTP_ERROR_SLEEP_DEFAULT 1		/* smtpd_error_sleep_time (s) */
#define SMTP_IDLE_DEFAULT	300		/* smtpd_timeout (s) */
#define SMTP_LIFETIME_DEFAULT	3600		/* whole session (s) */
#define SMTP_MSG_SIZE_DEFAULT	10240000	/* message_size_limit (the EHLO SIZE) */
#define SMTP_SESSIONS_DEFAULT	1000		/* all listeners together */
#define SMTP_SESSIONS_IP_DEFAULT 50		/* smtpd_client_connection_count_limit */

/*
 * Messages being decided and committed hold their reception record and the
 * rules' copy of the recipients (about four times the recipients' bytes): past
 * this much in all, further messages' ends wait for room (one always goes).
 */
#define SMTP_COMMIT_BUDGET	(32u * 1024 * 1024)

/* Read-side watermark: a session's input buffer never holds more than this. */
#define SMTP_READ_HIGHWATER	(64 * 1024)

#define SPOOL_MIN_FREE_DEFAULT	(64ull * 1024 * 1024)	/* refuse mail below this free space */
#define SPOOL_JOURNAL_SEG_DEFAULT (256ull * 1024 * 1024)	/* journal segment size */
#define SPOOL_JOURNAL_SEG_MIN	4096
#define SPOOL_JOURNAL_KEEP_DEFAULT 8			/* segments kept once published */

/*
 * The longest journal line (reception record) its readers take: the
 * publishers' outbox, the console.  A record holds at most SMTP_RCPT_MAX
 * recipients of SMTP_PATH_MAX bytes, each byte written as at most 3 (an
 * invalid byte as U+FFFD, a 2-byte C1 control as \u0080), with quotes and
 * a comma; everything else in it (sender, HELO, AUTH, TLS, the DATA
 * decision and its evidence) is bounded well under RECORD_REST_MAX.
 */
#define JOURNAL_LINE_MAX	(8u << 20)
#define RECORD_RCPT_JSON_MAX	(3u * SMTP_PATH_MAX + 3)
#define RECORD_REST_MAX		(1u << 20)
_Static_assert((unsigned long long)SMTP_RCPT_MAX * RECORD_RCPT_JSON_MAX + RECORD_REST_MAX <
    JOURNAL_LINE_MAX, "a reception record of the most recipients does not fit a journal line");

/* hpfeeds: deadline of each connection state (connect, TLS, INFO, a stalled write). */
#define HPF_TIMEOUT_DEFAULT	30		/* s */
#define HPF_TIMEOUT_MAX		3600

#define CFG_LISTENERS_MAX	16
#define CFG_CHANNELS_MAX	16
#define CFG_NAME_MAX		256		/* hostnames, identities, channels (hpfeeds str8) */

#endif
