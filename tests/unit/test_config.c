/* Unit tests for config.c: defaults, every key, every error form, the seed's feed file. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "rules.h"

static int	 load(struct cfg *, const char *, char *);
static int	 load_feed(struct cfg_feed *, const char *, char *);
static void	 expect_err(const char *, const char *);
static void	 expect_feed_err(const char *, const char *);
static void	 src_path(char *, size_t, const char *);

static const char seed_feed[] =
    "---  # Broker config\n"
    "  broker: \"127.0.0.1\"\n"
    "  port: 10_000\n"
    "  identity: \"writer\"\n"
    "  secret: \"secret\"\n"
    "  channels:\n"
    "    - \"spam.mails\"\n";

/* Load yaml as main config "t.yml" over defaults. */
static int
load(struct cfg *c, const char *yaml, char *err)
{
	cfg_defaults(c);
	return cfg_load_buf(c, "t.yml", yaml, strlen(yaml), err, 256);
}

/* Load yaml as feed config "f.yml". */
static int
load_feed(struct cfg_feed *f, const char *yaml, char *err)
{
	memset(f, 0, sizeof(*f));
	return cfg_load_feed_buf(f, "f.yml", yaml, strlen(yaml), err, 256);
}

/* The main config must fail with an error starting with want. */
static void
expect_err(const char *yaml, const char *want)
{
	struct cfg *c = malloc(sizeof(*c));
	char err[256];

	assert_non_null(c);
	if (load(c, yaml, err) != -1)
		fail_msg("accepted: %s", yaml);
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("got \"%s\", want \"%s...\"", err, want);
	free(c);
}

/* The feed config must fail with an error starting with want. */
static void
expect_feed_err(const char *yaml, const char *want)
{
	struct cfg_feed *f = malloc(sizeof(*f));
	char err[256];

	assert_non_null(f);
	if (load_feed(f, yaml, err) != -1)
		fail_msg("accepted: %s", yaml);
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("got \"%s\", want \"%s...\"", err, want);
	free(f);
}

/* Path of a file of the source tree (tests run from the project root). */
static void
src_path(char *out, size_t len, const char *rel)
{
	const char *me = __FILE__, *p = strstr(me, "tests/unit/test_config.c");

	snprintf(out, len, "%.*s%s", (int)(p ? p - me : 0), me, rel);
}

/* The embedded defaults are what the header promises. */
static void
test_defaults(void **state)
{
	struct cfg *c = malloc(sizeof(*c));

	cfg_defaults(c);
	assert_string_equal(c->path, "");
	assert_string_equal(c->hostname, "");
	assert_string_equal(c->persona, "postfix-3.7");
	assert_string_equal(c->user, "nobody");
	/* inet_protocols = all: every port on IPv4 and on a v6-only IPv6 socket */
	assert_int_equal(c->nlisteners, 6);
	for (int i = 0; i < 3; i++) {
		assert_false(c->listeners[i].if_available);
		assert_string_equal(c->listeners[i + 3].address, "::");
		assert_true(c->listeners[i + 3].if_available);
		assert_int_equal(c->listeners[i + 3].port, c->listeners[i].port);
		assert_int_equal(c->listeners[i + 3].tls, c->listeners[i].tls);
		assert_string_equal(c->listeners[i + 3].name, c->listeners[i].name);
	}
	assert_int_equal(c->listeners[0].port, 25);
	assert_int_equal(c->listeners[0].tls, TLS_MODE_STARTTLS);
	assert_string_equal(c->listeners[0].name, "smtp");
	assert_string_equal(c->listeners[0].address, "0.0.0.0");
	assert_int_equal(c->listeners[1].port, 465);
	assert_int_equal(c->listeners[1].tls, TLS_MODE_IMPLICIT);
	assert_string_equal(c->listeners[1].name, "submissions");
	assert_int_equal(c->listeners[2].port, 587);
	assert_int_equal(c->listeners[2].tls, TLS_MODE_STARTTLS);
	assert_string_equal(c->listeners[2].name, "submission");
	assert_int_equal(c->listeners[0].policy, LISTENER_POLICY_RELAY);
	assert_int_equal(c->listeners[1].policy, LISTENER_POLICY_SUBMISSION);
	assert_int_equal(c->listeners[2].policy, LISTENER_POLICY_SUBMISSION);
	assert_string_equal(c->tls_cert, "tls/cert.pem");
	assert_string_equal(c->tls_key, "tls/key.pem");
	assert_string_equal(c->spool_dir, "spool");
	assert_string_equal(c->maildir, "");
	assert_true(c->spool_min_free == SPOOL_MIN_FREE_DEFAULT);
	assert_true(c->spool_max_bytes == 0);
	assert_string_equal(c->event_log, "fosr-events.json");
	assert_int_equal(c->auth_outcome, AUTH_OUTCOME_POLICY);
	assert_int_equal(c->auth_memory_ttl, 86400);
	assert_string_equal(c->auth_credentials, "");
	assert_int_equal(c->limits.line_length, SMTP_LINE_DEFAULT);
	assert_true(c->limits.message_size == SMTP_MSG_SIZE_DEFAULT);
	assert_int_equal(c->limits.recipients, SMTP_RCPT_DEFAULT);
	assert_int_equal(c->limits.idle_timeout, SMTP_IDLE_DEFAULT);
	assert_int_equal(c->limits.sessions_per_ip, SMTP_SESSIONS_IP_DEFAULT);
	assert_int_equal(c->limits.banner_delay_ms, 0);
	assert_false(c->feed.enabled);
	assert_string_equal(cfg_tls_mode_name(TLS_MODE_IMPLICIT), "implicit");
	assert_string_equal(cfg_auth_outcome_name(AUTH_OUTCOME_ACCEPT_AFTER),
	    "accept_after");
	free(c);
}

/*
 * postconf -d NAME of the installed Postfix (a declared test dependency,
 * scripts/deps.sh), macros expanded ("${stress?{1}:{20}}" is 20 unstressed),
 * a time unit 's' dropped.  A missing postconf fails the test: the pinned
 * values must come from the real thing.
 */
static unsigned long long
postconf_default(const char *name)
{
	char cmd[160], buf[256], *end;
	unsigned long long v;
	FILE *p;
	int st;

	snprintf(cmd, sizeof(cmd),
	    "PATH=/usr/sbin:/sbin:$PATH postconf -dhx %s 2>&1", name);
	if ((p = popen(cmd, "r")) == NULL)
		fail_msg("popen %s", cmd);
	if (fgets(buf, sizeof(buf), p) == NULL)
		buf[0] = '\0';
	st = pclose(p);
	if (st != 0)
		fail_msg("%s: exit %d: %s (install postfix: scripts/deps.sh)", cmd, st, buf);
	v = strtoull(buf, &end, 10);
	if (end != buf && *end == 's')
		end++;
	if (end == buf || (*end != '\n' && *end != '\0'))
		fail_msg("postconf -d %s: not a number: %s", name, buf);
	return v;
}

/*
 * Every persona-relevant default is the value a stock Debian 12 Postfix 3.7
 * has (postconf -d); tests/persona/NOTES.md has the whole table, with the
 * settings that have no counterpart and why.
 */
static void
test_postfix_defaults(void **state)
{
	struct cfg *c = malloc(sizeof(*c));
	size_t i;

	assert_non_null(c);
	cfg_defaults(c);
	const struct {
		const char		*name;
		unsigned long long	 ours;
	} pin[] = {
		{ "message_size_limit", c->limits.message_size },
		{ "line_length_limit", c->limits.line_length },
		{ "smtpd_recipient_limit", (unsigned long long)c->limits.recipients },
		{ "smtpd_recipient_overshoot_limit", SMTP_RCPT_OVERSHOOT },
		{ "smtpd_soft_error_limit", (unsigned long long)c->limits.soft_errors },
		{ "smtpd_hard_error_limit", (unsigned long long)c->limits.hard_errors },
		{ "smtpd_error_sleep_time", (unsigned long long)c->limits.error_sleep },
		{ "smtpd_junk_command_limit", SMTP_JUNK_LIMIT },
		{ "smtpd_timeout", (unsigned long long)c->limits.idle_timeout },
		{ "smtpd_starttls_timeout", (unsigned long long)c->limits.idle_timeout },
		{ "smtpd_client_connection_count_limit",
		    (unsigned long long)c->limits.sessions_per_ip },
		{ "smtpd_sasl_response_limit", SMTP_AUTH_LINE_MAX },
	};

	for (i = 0; i < sizeof(pin) / sizeof(pin[0]); i++) {
		unsigned long long pf = postconf_default(pin[i].name);

		if (pf != pin[i].ours)
			fail_msg("%s: ours %llu, postconf -d %llu", pin[i].name,
			    pin[i].ours, pf);
	}
	free(c);
}

/* The commented example file loads and matches the defaults it documents. */
static void
test_example_file(void **state)
{
	struct cfg *c = malloc(sizeof(*c)), *d = malloc(sizeof(*d));
	char path[512], err[256];

	src_path(path, sizeof(path), "etc/fosr-collector.yml");
	cfg_defaults(c);
	if (cfg_load(c, path, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_string_equal(c->path, path);
	cfg_defaults(d);
	memcpy(d->path, c->path, sizeof(d->path));
	/* It spells the tls: paths out (their defaults), so they count as configured. */
	assert_true(c->tls_configured);
	d->tls_configured = true;
	assert_memory_equal(c, d, sizeof(*c));
	free(c);
	free(d);
}

/* client_lookup: on by default (Postfix's smtpd_peername_lookup), bounded. */
static void
test_client_lookup(void **state)
{
	struct cfg *c = malloc(sizeof(*c));
	char err[256];

	assert_int_equal(load(c, "", err), 0);
	assert_true(c->client_lookup.enabled);
	assert_string_equal(c->client_lookup.dns_server, "");
	assert_int_equal(c->client_lookup.timeout_ms, 10000);
	assert_int_equal(load(c, "client_lookup: {enabled: false, dns_server: \"127.0.0.1:5353\", "
	    "timeout_ms: 500}\n", err), 0);
	assert_false(c->client_lookup.enabled);
	assert_string_equal(c->client_lookup.dns_server, "127.0.0.1:5353");
	assert_int_equal(c->client_lookup.timeout_ms, 500);
	free(c);
	expect_err("client_lookup: {timeout_ms: 99}\n", "t.yml:1: client_lookup.timeout_ms: 99 is out");
	expect_err("client_lookup: {timeout_ms: 60001}\n", "t.yml:1: client_lookup.timeout_ms");
	expect_err("client_lookup: {dns_server: \"ns.example:53\"}\n",
	    "t.yml:1: client_lookup.dns_server: not a numeric");
	expect_err("client_lookup: {server: \"\"}\n", "t.yml:1: client_lookup.server: unknown key");
}

/* metrics: off unless given; loopback unless an address is; errors name file, line, key. */
static void
test_metrics_section(void **state)
{
	struct cfg *c = malloc(sizeof(*c));
	char err[256];

	assert_int_equal(load(c, "", err), 0);
	assert_false(c->metrics.enabled);
	assert_int_equal(load(c, "metrics: {port: 9464}\n", err), 0);
	assert_true(c->metrics.enabled);
	assert_string_equal(c->metrics.address, "127.0.0.1");
	assert_int_equal(c->metrics.port, 9464);
	assert_int_equal(load(c, "port_offset: 6000\nmetrics:\n  address: \"[::1]\"\n  port: 80\n",
	    err), 0);
	assert_string_equal(c->metrics.address, "::1");
	assert_int_equal(c->metrics.port, 80);	/* no port_offset */
	assert_int_equal(load(c, "metrics: ~\n", err), 0);
	assert_false(c->metrics.enabled);
	free(c);
	expect_err("metrics: {}\n", "t.yml:1: metrics.port: missing");
	expect_err("hostname: x\nmetrics:\n  port: 0\n", "t.yml:3: metrics.port: 0 is out of range");
	expect_err("metrics:\n  port: 9464\n  address: localhost\n",
	    "t.yml:3: metrics.address: not a numeric IPv4 or IPv6 address");
	expect_err("metrics: {port: 1, path: /x}\n", "t.yml:1: metrics.path: unknown key");
	expect_err("metrics: 9464\n", "t.yml:1: metrics: expected a mapping");
}

/* analysis: on by default (issue 15: every mail); sizes with K/M/G; errors name file, line, key. */
static void
test_analysis_section(void **state)
{
	struct cfg *c = malloc(sizeof(*c));
	char err[256];

	assert_int_equal(load(c, "", err), 0);
	assert_true(c->analysis.enabled);
	assert_true(c->analysis.store_attachments);
	assert_int_equal(c->analysis.attachment_max, 16 * 1024 * 1024);
	assert_int_equal(c->analysis.campaigns_max, 2048);
	assert_int_equal(load(c, "analysis:\n  enabled: false\n  store_attachments: no\n"
	    "  attachment_max: 2M\n  campaigns_max: 10\n", err), 0);
	assert_false(c->analysis.enabled);
	assert_false(c->analysis.store_attachments);
	assert_int_equal(c->analysis.attachment_max, 2 * 1024 * 1024);
	assert_int_equal(c->analysis.campaigns_max, 10);
	assert_int_equal(load(c, "analysis: ~\n", err), 0);
	assert_true(c->analysis.enabled);
	free(c);
	expect_err("analysis:\n  attachment_max: 65M\n",
	    "t.yml:2: analysis.attachment_max: 68157440 bytes is out of range");
	expect_err("analysis: {campaigns_max: 0}\n", "t.yml:1: analysis.campaigns_max: 0 is out");
	expect_err("analysis: {enabled: maybe}\n", "t.yml:1: analysis.enabled");
	expect_err("analysis: {cursor: x}\n", "t.yml:1: analysis.cursor: unknown key");
}

/* An empty file (or a null document) keeps the defaults. */
static void
test_empty(void **state)
{
	struct cfg *c = malloc(sizeof(*c));
	char err[256];

	assert_int_equal(load(c, "", err), 0);
	assert_int_equal(c->nlisteners, 6);
	assert_int_equal(load(c, "# only a comment\n", err), 0);
	assert_int_equal(load(c, "---\n...\n", err), 0);
	assert_string_equal(c->path, "t.yml");
	free(c);
}

/* Every main key, set to a non-default value, lands in its field. */
static void
test_every_key(void **state)
{
	static const char yaml[] =
	    "hostname: mx.example.net\n"
	    "sensor: s-01\n"
	    "persona: \"exim-4.96\"\n"
	    "user: \"\"\n"
	    "port_offset: 6000\n"
	    "listeners:\n"
	    "  - {address: \"::\", port: 2525, tls: plain, name: alt}\n"
	    "  - port: 465\n"
	    "  - port: 587\n"
	    "    address: 127.0.0.1\n"
	    "  - {port: 10, tls: implicit}\n"
	    "  - {address: \"[::1]\", port: 587, policy: relay}\n"
	    "tls:\n"
	    "  certificate: /etc/c.pem\n"
	    "  key: /etc/k.pem\n"
	    "spool:\n"
	    "  directory: /var/spool/fosr\n"
	    "  maildir: /var/mail/fosr\n"
	    "  min_free: 1_024K\n"
	    "  max_bytes: 2G\n"
	    "event_log: \"\"\n"
	    "auth:\n"
	    "  outcome: accept_after\n"
	    "  accept_after: 3\n"
	    "  credentials: creds.txt\n"
	    "  memory_ttl: 3600\n"
	    "limits:\n"
	    "  line_length: 4096\n"
	    "  message_size: 10M\n"
	    "  recipients: 5\n"
	    "  soft_errors: 2\n"
	    "  hard_errors: 4\n"
	    "  error_sleep: 0\n"
	    "  idle_timeout: 60\n"
	    "  session_lifetime: 600\n"
	    "  sessions: 10\n"
	    "  sessions_per_ip: 3\n"
	    "  banner_delay_ms: 1500\n"
	    "  banner_jitter_ms: 250\n"
	    "feed:\n"
	    "  broker: broker.example\n"
	    "  port: 20000\n"
	    "  identity: w\n"
	    "  secret: s\n"
	    "  channels: one\n";
	struct cfg *c = malloc(sizeof(*c));
	char err[256];

	if (load(c, yaml, err) != 0)
		fail_msg("%s", err);
	assert_string_equal(c->hostname, "mx.example.net");
	assert_string_equal(c->sensor, "s-01");
	assert_string_equal(c->persona, "exim-4.96");
	assert_string_equal(c->user, "");
	assert_int_equal(c->port_offset, 6000);
	assert_int_equal(c->nlisteners, 5);
	/* a listener from the file is never optional, and "[::1]" is "::1" */
	assert_false(c->listeners[0].if_available);
	assert_string_equal(c->listeners[4].address, "::1");
	assert_int_equal(c->listeners[4].port, 587);
	assert_string_equal(c->listeners[0].address, "::");
	assert_int_equal(c->listeners[0].port, 2525);
	assert_int_equal(c->listeners[0].tls, TLS_MODE_PLAIN);
	assert_string_equal(c->listeners[0].name, "alt");
	assert_string_equal(c->listeners[1].address, "0.0.0.0");
	assert_int_equal(c->listeners[1].tls, TLS_MODE_IMPLICIT);
	assert_string_equal(c->listeners[1].name, "submissions");
	assert_string_equal(c->listeners[2].address, "127.0.0.1");
	assert_int_equal(c->listeners[2].tls, TLS_MODE_STARTTLS);
	assert_string_equal(c->listeners[2].name, "submission");
	assert_int_equal(c->listeners[3].tls, TLS_MODE_IMPLICIT);
	assert_string_equal(c->listeners[3].name, "submissions");
	/* Debian's submission templates on 465/587 unless the file says otherwise */
	assert_int_equal(c->listeners[0].policy, LISTENER_POLICY_RELAY);
	assert_int_equal(c->listeners[1].policy, LISTENER_POLICY_SUBMISSION);
	assert_int_equal(c->listeners[2].policy, LISTENER_POLICY_SUBMISSION);
	assert_int_equal(c->listeners[3].policy, LISTENER_POLICY_RELAY);
	assert_int_equal(c->listeners[4].policy, LISTENER_POLICY_RELAY);
	assert_string_equal(c->tls_cert, "/etc/c.pem");
	assert_string_equal(c->tls_key, "/etc/k.pem");
	assert_string_equal(c->spool_dir, "/var/spool/fosr");
	assert_string_equal(c->maildir, "/var/mail/fosr");
	assert_true(c->spool_min_free == 1024ull * 1024);
	assert_true(c->spool_max_bytes == 2ull << 30);
	assert_string_equal(c->event_log, "");
	assert_int_equal(c->auth_outcome, AUTH_OUTCOME_ACCEPT_AFTER);
	assert_string_equal(c->auth_credentials, "creds.txt");
	assert_int_equal(c->auth_accept_after, 3);
	assert_int_equal(c->auth_memory_ttl, 3600);
	assert_int_equal(c->limits.line_length, 4096);
	assert_true(c->limits.message_size == 10ull << 20);
	assert_int_equal(c->limits.recipients, 5);
	assert_int_equal(c->limits.soft_errors, 2);
	assert_int_equal(c->limits.hard_errors, 4);
	assert_int_equal(c->limits.error_sleep, 0);
	assert_int_equal(c->limits.idle_timeout, 60);
	assert_int_equal(c->limits.session_lifetime, 600);
	assert_int_equal(c->limits.sessions, 10);
	assert_int_equal(c->limits.sessions_per_ip, 3);
	assert_int_equal(c->limits.banner_delay_ms, 1500);
	assert_int_equal(c->limits.banner_jitter_ms, 250);
	assert_true(c->feed.enabled);
	assert_string_equal(c->feed.source, "t.yml");
	assert_string_equal(c->feed.broker, "broker.example");
	assert_int_equal(c->feed.port, 20000);
	assert_int_equal(c->feed.nchannels, 1);
	assert_string_equal(c->feed.channels[0], "one");
	free(c);
}

/* The seed's feed_config.yml, verbatim, inline and from etc/. */
static void
test_feed_seed(void **state)
{
	struct cfg_feed *f = malloc(sizeof(*f));
	char err[256], path[512];

	if (load_feed(f, seed_feed, err) != 0)
		fail_msg("%s", err);
	assert_true(f->enabled);
	assert_string_equal(f->source, "f.yml");
	assert_string_equal(f->broker, "127.0.0.1");
	assert_int_equal(f->port, 10000);
	assert_string_equal(f->identity, "writer");
	assert_string_equal(f->secret, "secret");
	assert_int_equal(f->nchannels, 1);
	assert_string_equal(f->channels[0], "spam.mails");
	assert_false(f->tls);
	assert_false(f->metadata);
	assert_string_equal(f->events_channel, "");
	assert_int_equal(f->timeout, HPF_TIMEOUT_DEFAULT);

	src_path(path, sizeof(path), "etc/feed_config.yml");
	memset(f, 0, sizeof(*f));
	if (cfg_load_feed(f, path, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_string_equal(f->source, path);
	assert_int_equal(f->port, 10000);
	assert_string_equal(f->channels[0], "spam.mails");
	free(f);
}

/* The same keys in JSON, inline and from etc/. */
static void
test_feed_json(void **state)
{
	static const char json[] =
	    "{\"broker\": \"10.0.0.1\", \"port\": 10000, \"identity\": \"w\",\n"
	    " \"secret\": \"s\", \"channels\": [\"a\", \"b\"], \"tls\": true,\n"
	    " \"ca_file\": \"/etc/ca.pem\", \"server_name\": \"hp.example\",\n"
	    " \"events_channel\": \"ev\", \"metadata\": true}\n";
	struct cfg_feed *f = malloc(sizeof(*f));
	char err[256], path[512];

	if (load_feed(f, json, err) != 0)
		fail_msg("%s", err);
	assert_string_equal(f->broker, "10.0.0.1");
	assert_int_equal(f->port, 10000);
	assert_int_equal(f->nchannels, 2);
	assert_string_equal(f->channels[1], "b");
	assert_true(f->tls);
	assert_string_equal(f->ca_file, "/etc/ca.pem");
	assert_string_equal(f->server_name, "hp.example");
	assert_string_equal(f->events_channel, "ev");
	assert_true(f->metadata);

	src_path(path, sizeof(path), "etc/feed_config.json");
	if (cfg_load_feed(f, path, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(f->port, 10000);
	assert_string_equal(f->identity, "writer");

	expect_feed_err("{\"broker\": \"b\", \"port\": 1, \"identity\": \"w\",\n"
	    " \"secret\": \"s\", \"channels\": [\"a\"], \"bogus\": 1}",
	    "f.yml:2: bogus: unknown key");
	free(f);
}

/* The parsed documents' outputs: off by default, their own names only. */
static void
test_parsed_outputs(void **state)
{
	static const char amqp[] = "amqp: {host: h, user: u, password: p, exchange: x, "
	    "routing_key: spam.mails";
	struct cfg *c = malloc(sizeof(*c));
	struct cfg_feed *f = malloc(sizeof(*f));
	char err[256], buf[512];

	if (load_feed(f, seed_feed, err) != 0)
		fail_msg("%s", err);
	assert_string_equal(f->parsed_channel, "");
	if (load_feed(f, "{broker: b, port: 1, identity: w, secret: s, channels: [a], "
	    "events_channel: ev, parsed_channel: fosr.parsed}", err) != 0)
		fail_msg("%s", err);
	assert_string_equal(f->parsed_channel, "fosr.parsed");
	expect_feed_err("{broker: b, port: 1, identity: w, secret: s, channels: [a, b], "
	    "parsed_channel: b}", "f.yml:1: parsed_channel \"b\" is also another channel");
	expect_feed_err("{broker: b, port: 1, identity: w, secret: s, channels: [a], "
	    "events_channel: ev, parsed_channel: ev}",
	    "f.yml:1: parsed_channel \"ev\" is also another channel");

	snprintf(buf, sizeof(buf), "%s}\n", amqp);
	if (load(c, buf, err) != 0)
		fail_msg("%s", err);
	assert_false(c->amqp.parsed);
	assert_string_equal(c->amqp.parsed_routing_key, "");
	snprintf(buf, sizeof(buf), "%s, parsed_routing_key: spam.parsed}\n", amqp);
	if (load(c, buf, err) != 0)
		fail_msg("%s", err);
	assert_true(c->amqp.parsed);
	assert_string_equal(c->amqp.parsed_routing_key, "spam.parsed");
	snprintf(buf, sizeof(buf), "%s, parsed_routing_key: spam.mails}\n", amqp);
	expect_err(buf, "t.yml:1: amqp: parsed_routing_key \"spam.mails\" is also routing_key");

	/* The broker name's resolver: the system's by default, else an address. */
	snprintf(buf, sizeof(buf), "%s}\n", amqp);
	if (load(c, buf, err) != 0)
		fail_msg("%s", err);
	assert_string_equal(c->amqp.dns_server, "");
	snprintf(buf, sizeof(buf), "%s, dns_server: \"127.0.0.1:5353\"}\n", amqp);
	if (load(c, buf, err) != 0)
		fail_msg("%s", err);
	assert_string_equal(c->amqp.dns_server, "127.0.0.1:5353");
	snprintf(buf, sizeof(buf), "%s, dns_server: \"ns.example:53\"}\n", amqp);
	expect_err(buf, "t.yml:1: amqp.dns_server: not a numeric address:port");
	free(c);
	free(f);
}

/* Booleans: YAML words in any case, quoted "True" as the original's users wrote. */
static void
test_feed_bools(void **state)
{
	static const char *const yes[] = { "true", "True", "YES", "on",
	    "\"True\"", "'true'" };
	static const char *const no[] = { "false", "No", "OFF", "\"false\"" };
	struct cfg_feed *f = malloc(sizeof(*f));
	char yaml[512], err[256];
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		snprintf(yaml, sizeof(yaml), "%s  tls: %s\n", seed_feed, yes[i]);
		if (load_feed(f, yaml, err) != 0)
			fail_msg("%s: %s", yes[i], err);
		assert_true(f->tls);
	}
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		snprintf(yaml, sizeof(yaml), "%s  tls: %s\n", seed_feed, no[i]);
		if (load_feed(f, yaml, err) != 0)
			fail_msg("%s: %s", no[i], err);
		assert_false(f->tls);
	}
	snprintf(yaml, sizeof(yaml), "%s  tls: 1\n", seed_feed);
	expect_feed_err(yaml, "f.yml:8: tls: expected true or false, got \"1\"");
	snprintf(yaml, sizeof(yaml), "%s  metadata: [true]\n", seed_feed);
	expect_feed_err(yaml, "f.yml:8: metadata: expected a single value, not a list");
	snprintf(yaml, sizeof(yaml), "%s  timeout: 2\n", seed_feed);
	if (load_feed(f, yaml, err) != 0)
		fail_msg("timeout: %s", err);
	assert_int_equal(f->timeout, 2);
	snprintf(yaml, sizeof(yaml), "%s  timeout: 0\n", seed_feed);
	if (load_feed(f, yaml, err) == 0)
		fail_msg("timeout 0 accepted");
	free(f);
}

/*
 * payload: json (the seed's, the default) or raw (the .eml's bytes, for the
 * spamtrap-system backend) and received_header (raw only; default true), in
 * the seed's feed file and the main config's feed section alike.
 */
static void
test_feed_payload(void **state)
{
	struct cfg_feed *f = malloc(sizeof(*f));
	struct cfg *c = malloc(sizeof(*c));
	char yaml[1024], err[256];

	if (load_feed(f, seed_feed, err) != 0)
		fail_msg("%s", err);
	assert_int_equal(f->payload, CFG_PAYLOAD_JSON);
	assert_true(f->received_header);
	snprintf(yaml, sizeof(yaml), "%s  payload: raw\n", seed_feed);
	if (load_feed(f, yaml, err) != 0)
		fail_msg("%s", err);
	assert_int_equal(f->payload, CFG_PAYLOAD_RAW);
	assert_true(f->received_header);
	snprintf(yaml, sizeof(yaml), "%s  payload: raw\n  received_header: false\n", seed_feed);
	if (load_feed(f, yaml, err) != 0)
		fail_msg("%s", err);
	assert_int_equal(f->payload, CFG_PAYLOAD_RAW);
	assert_false(f->received_header);
	snprintf(yaml, sizeof(yaml), "%s  payload: json\n", seed_feed);
	if (load_feed(f, yaml, err) != 0)
		fail_msg("%s", err);
	assert_int_equal(f->payload, CFG_PAYLOAD_JSON);

	snprintf(yaml, sizeof(yaml), "%s  payload: eml\n", seed_feed);
	expect_feed_err(yaml, "f.yml:8: payload: expected one of json, raw, got \"eml\"");
	snprintf(yaml, sizeof(yaml), "%s  payload: RAW\n", seed_feed);
	expect_feed_err(yaml, "f.yml:8: payload: expected one of json, raw, got \"RAW\"");
	snprintf(yaml, sizeof(yaml), "%s  payload: [raw]\n", seed_feed);
	expect_feed_err(yaml, "f.yml:8: payload: expected a single value, not a list");
	snprintf(yaml, sizeof(yaml), "%s  received_header: maybe\n", seed_feed);
	expect_feed_err(yaml, "f.yml:8: received_header: expected true or false, got \"maybe\"");
	expect_feed_err("{\"broker\": \"b\", \"port\": 1, \"identity\": \"w\",\n"
	    " \"secret\": \"s\", \"channels\": [\"a\"], \"payload\": \"xml\"}",
	    "f.yml:2: payload: expected one of json, raw, got \"xml\"");

	/* The main config's feed section: the same keys, the same errors. */
	if (load(c, "feed:\n  broker: b\n  port: 1\n  identity: w\n  secret: s\n"
	    "  channels: [a]\n  payload: raw\n  received_header: no\n", err) != 0)
		fail_msg("%s", err);
	assert_int_equal(c->feed.payload, CFG_PAYLOAD_RAW);
	assert_false(c->feed.received_header);
	expect_err("feed:\n  broker: b\n  port: 1\n  identity: w\n  secret: s\n"
	    "  channels: [a]\n  payload: mbox\n",
	    "t.yml:7: feed.payload: expected one of json, raw, got \"mbox\"");
	free(f);
	free(c);
}

/* Feed validation: required keys, lengths, counts, port range, types. */
static void
test_feed_errors(void **state)
{
	struct cfg_feed *f = malloc(sizeof(*f));
	char yaml[2048], id[300], err[256];
	int i;

	expect_feed_err("broker: b\nport: 1\nidentity: w\nchannels: [a]\n",
	    "f.yml:1: secret: missing");
	expect_feed_err("broker: b\nport: 1\nidentity: w\nsecret: s\n",
	    "f.yml:1: channels: missing");
	expect_feed_err("", "f.yml: empty feed config");
	expect_feed_err("- a\n- b\n", "f.yml:1: expected a mapping of keys");
	expect_feed_err("broker: b\nport: 0\n", "f.yml:2: port: 0 is out of range (1..65535)");
	expect_feed_err("broker: b\nport: 65536\n", "f.yml:2: port: 65536 is out of range");
	expect_feed_err("broker: b\nport: 1__0\n", "f.yml:2: port: expected a number, got \"1__0\"");
	expect_feed_err("broker: b\nport: -1\n", "f.yml:2: port: expected a number");
	expect_feed_err("broker: b\nport: {a: 1}\n",
	    "f.yml:2: port: expected a single value, not a mapping");
	expect_feed_err("broker: \"\"\n", "f.yml:1: broker: must not be empty");
	expect_feed_err("broker: b\nbroker: c\n", "f.yml:2: broker: duplicate key");
	expect_feed_err("broker: b\nchannels: []\n",
	    "f.yml:2: channels: at least one channel is needed");
	expect_feed_err("broker: b\nchannels:\n  - a\n  - a\n",
	    "f.yml:4: channels[1]: duplicate channel \"a\"");
	expect_feed_err("broker: b\nchannels:\n  - [a]\n",
	    "f.yml:3: channels[0]: expected a single value, not a list");
	expect_feed_err("broker: b\nchannels: {a: b}\n",
	    "f.yml:2: channels: expected a channel name or a list of them");
	expect_feed_err("broker: \"a\\0b\"\n", "f.yml:1: broker: contains a NUL byte");

	/* identity: 255 bytes is fine, 256 is an error (never truncated). */
	memset(id, 'i', 255);
	id[255] = '\0';
	snprintf(yaml, sizeof(yaml), "broker: b\nport: 1\nidentity: %s\n"
	    "secret: s\nchannels: [a]\n", id);
	if (load_feed(f, yaml, err) != 0)
		fail_msg("%s", err);
	assert_int_equal(strlen(f->identity), 255);
	snprintf(yaml, sizeof(yaml), "broker: b\nport: 1\nidentity: %si\n"
	    "secret: s\nchannels: [a]\n", id);
	expect_feed_err(yaml, "f.yml:3: identity: longer than 255 bytes");
	snprintf(yaml, sizeof(yaml), "broker: b\nport: 1\nidentity: w\n"
	    "secret: s\nchannels: [%si]\n", id);
	expect_feed_err(yaml, "f.yml:5: channels[0]: longer than 255 bytes");

	/* 16 channels are fine, the 17th is an error. */
	strcpy(yaml, "broker: b\nport: 1\nidentity: w\nsecret: s\nchannels:\n");
	for (i = 0; i < CFG_CHANNELS_MAX; i++)
		snprintf(yaml + strlen(yaml), sizeof(yaml) - strlen(yaml),
		    "  - c%d\n", i);
	if (load_feed(f, yaml, err) != 0)
		fail_msg("%s", err);
	assert_int_equal(f->nchannels, CFG_CHANNELS_MAX);
	strcat(yaml, "  - extra\n");
	expect_feed_err(yaml, "f.yml:22: channels[16]: more than 16 channels");

	/* A failed load leaves f as it was. */
	assert_int_equal(load_feed(f, seed_feed, err), 0);
	assert_int_equal(cfg_load_feed_buf(f, "x", "port: 0\n", 8, err,
	    sizeof(err)), -1);
	assert_int_equal(f->port, 10000);
	assert_string_equal(f->identity, "writer");
	free(f);
}

/* Main config errors: "FILE:LINE: dotted.key: message" for every kind. */
static void
test_main_errors(void **state)
{
	char longname[64];

	expect_err("bogus: 1\n", "t.yml:1: bogus: unknown key (expected one of: hostname,");
	expect_err("hostname: h\nlimits:\n  idle_timeout: 5\n  bogus: 1\n",
	    "t.yml:4: limits.bogus: unknown key (expected one of: line_length,");
	expect_err("limits:\n  idle_timeout: abc\n",
	    "t.yml:2: limits.idle_timeout: expected a number, got \"abc\"");
	expect_err("limits:\n  idle_timeout: 0\n",
	    "t.yml:2: limits.idle_timeout: 0 is out of range (1..86400)");
	expect_err("limits:\n  line_length: 100\n",
	    "t.yml:2: limits.line_length: 100 bytes is out of range (512..65536)");
	expect_err("limits:\n  line_length: 65537\n",
	    "t.yml:2: limits.line_length: 65537 bytes is out of range");
	expect_err("limits:\n  message_size: 12Q\n",
	    "t.yml:2: limits.message_size: expected a size");
	expect_err("limits:\n  message_size: 99999999999999999G\n",
	    "t.yml:2: limits.message_size: expected a size");
	expect_err("limits: 5\n", "t.yml:1: limits: expected a mapping of keys");
	expect_err("listeners:\n  - port: 25\n  - port: 70000\n",
	    "t.yml:3: listeners[1].port: 70000 is out of range (1..65535)");
	expect_err("listeners:\n  - port: 25\n  - {port: 26, tls: maybe}\n",
	    "t.yml:3: listeners[1].tls: expected one of plain, starttls, implicit, got \"maybe\"");
	expect_err("listeners:\n  - port: 25\n  - address: \"0.0.0.0\"\n",
	    "t.yml:3: listeners[1].port: missing");
	expect_err("listeners:\n  - {port: 25, address: localhost}\n",
	    "t.yml:2: listeners[0].address: not a numeric IPv4 or IPv6 address");
	expect_err("listeners:\n  - {port: 25, bogus: 1}\n",
	    "t.yml:2: listeners[0].bogus: unknown key");
	expect_err("listeners:\n  - port: 25\n  - port: 25\n",
	    "t.yml:3: listeners[1].port: 0.0.0.0 port 25 is already used by listeners[0]");
	expect_err("listeners: []\n", "t.yml:1: listeners: at least one listener");
	/* F11: the submission policy needs TLS; the line is the offending key's */
	expect_err("listeners:\n  - port: 25\n  - port: 2587\n    tls: plain\n"
	    "    policy: submission\n",
	    "t.yml:5: listeners[1].policy: policy submission needs tls starttls or implicit");
	expect_err("listeners:\n  - port: 25\n  - port: 587\n    tls: plain\n",
	    "t.yml:4: listeners[1].tls: policy submission (the default on 465 and 587) needs "
	    "tls starttls or implicit");
	{
		struct cfg *c = malloc(sizeof(*c));
		char err[256];

		if (load(c, "listeners:\n  - {port: 587, tls: plain, policy: relay}\n"
		    "  - {port: 2465, tls: implicit, policy: submission}\n", err) != 0)
			fail_msg("%s", err);
		free(c);
	}
	expect_err("listeners: 25\n", "t.yml:1: listeners: expected a list of listeners");
	expect_err("listeners:\n" "  - port: 1\n  - port: 2\n  - port: 3\n  - port: 4\n"
	    "  - port: 5\n  - port: 6\n  - port: 7\n  - port: 8\n  - port: 9\n"
	    "  - port: 10\n  - port: 11\n  - port: 12\n  - port: 13\n  - port: 14\n"
	    "  - port: 15\n  - port: 16\n  - port: 17\n",
	    "t.yml:18: listeners[16]: more than 16 listeners");
	/* port + offset out of range: blamed on the listener, or on the offset. */
	expect_err("port_offset: 65000\nlisteners:\n  - port: 25\n  - port: 587\n",
	    "t.yml:4: listeners[1].port: port 587 + port_offset 65000 = 65587 is out of range");
	expect_err("hostname: h\nport_offset: 65100\n",
	    "t.yml:2: port_offset: port 465 + port_offset 65100 = 65565 is out of range");
	expect_err("port_offset: 65535\n", "t.yml:1: port_offset: 65535 is out of range");
	expect_err("auth:\n  outcome: maybe\n",
	    "t.yml:2: auth.outcome: expected one of accept, reject, accept_after, policy");
	expect_err("auth:\n  accept_after: 1001\n", "t.yml:2: auth.accept_after: 1001 is out of range");
	expect_err("auth:\n  memory_ttl: 0\n", "t.yml:2: auth.memory_ttl: 0 is out of range");
	expect_err("auth:\n  memory_ttl: 2592001\n",
	    "t.yml:2: auth.memory_ttl: 2592001 is out of range");
	expect_err("spool:\n  directory: \"\"\n", "t.yml:2: spool.directory: must not be empty");
	expect_err("spool:\n  min_free: [1]\n",
	    "t.yml:2: spool.min_free: expected a single value, not a list");
	expect_err("tls:\n  certificate: c\n  cert: x\n", "t.yml:3: tls.cert: unknown key");
	expect_err("feed:\n  broker: b\n  port: 1\n", "t.yml:2: feed.identity: missing");
	expect_err("feed:\n  broker: b\n  port: 0\n", "t.yml:3: feed.port: 0 is out of range");
	expect_err("hostname: a\nhostname: b\n", "t.yml:2: hostname: duplicate key");
	expect_err("? [a]\n: 1\n", "t.yml:1: a key must be a string");
	expect_err("- 1\n", "t.yml:1: expected a mapping of keys");
	expect_err("hostname: [a\n", "t.yml:2: yaml: ");
	expect_err("hostname: \"a\n", "t.yml:");
	expect_err("hostname: a\n---\nhostname: b\n", "t.yml:3: more than one YAML document");
	memset(longname, 'p', 32);
	longname[32] = '\0';
	{
		char yaml[128];

		snprintf(yaml, sizeof(yaml), "persona: %s\n", longname);
		expect_err(yaml, "t.yml:1: persona: longer than 31 bytes");
		snprintf(yaml, sizeof(yaml), "persona: %.31s\n", longname);
		struct cfg *c = malloc(sizeof(*c));
		char err[256];

		assert_int_equal(load(c, yaml, err), 0);
		assert_int_equal(strlen(c->persona), 31);
		free(c);
	}
}

/* Aliases are followed (no loop), and a bad value through an alias is reported. */
static void
test_aliases(void **state)
{
	struct cfg *c = malloc(sizeof(*c));
	char err[256];

	assert_int_equal(load(c, "hostname: &h mx\nsensor: *h\n", err), 0);
	assert_string_equal(c->sensor, "mx");
	/* A self-referencing list: refused before any walk (yu_doc_load's shape check). */
	expect_err("listeners: &l [*l]\n", "t.yml:1: listeners[0]: alias *l inside its own "
	    "anchor (a cycle)");
	free(c);
}

/* A failed load leaves the config untouched; a missing file names the file. */
static void
test_unchanged_and_missing(void **state)
{
	struct cfg *c = malloc(sizeof(*c));
	struct cfg_feed *f = malloc(sizeof(*f));
	char err[256];

	cfg_defaults(c);
	assert_int_equal(cfg_load_buf(c, "t.yml", "hostname: x\nlimits:\n  recipients: 0\n",
	    strlen("hostname: x\nlimits:\n  recipients: 0\n"), err, sizeof(err)), -1);
	assert_string_equal(c->hostname, "");
	assert_int_equal(c->limits.recipients, SMTP_RCPT_DEFAULT);
	assert_string_equal(c->path, "");

	assert_int_equal(cfg_load(c, "/nonexistent/fosr.yml", err, sizeof(err)), -1);
	assert_string_equal(err, "/nonexistent/fosr.yml: cannot open: No such file or directory");
	assert_int_equal(cfg_load_feed(f, "/nonexistent/feed.yml", err, sizeof(err)), -1);
	assert_string_equal(err, "/nonexistent/feed.yml: cannot open: No such file or directory");
	assert_int_equal(cfg_load(c, "/", err, sizeof(err)), -1);
	assert_string_equal(err, "/: not a regular file");

	/* A tiny error buffer is truncated, never overrun. */
	assert_int_equal(cfg_load_buf(c, "t.yml", "bogus: 1\n", 9, err, 8), -1);
	assert_string_equal(err, "t.yml:1");
	free(c);
	free(f);
}

/* A feed: ~ in the main config leaves the feed disabled. */
static void
test_feed_null_in_main(void **state)
{
	struct cfg *c = malloc(sizeof(*c));
	char err[256];

	assert_int_equal(load(c, "feed: ~\n", err), 0);
	assert_false(c->feed.enabled);
	assert_int_equal(load(c, "feed:\n", err), 0);
	assert_false(c->feed.enabled);
	free(c);
}

/* The relay section: every key, the defaults, and the error forms. */
static void
test_relay_section(void **state)
{
	struct cfg *c = malloc(sizeof(*c));
	char err[256], rp[PATH_MAX], host[64];
	int port;

	assert_non_null(c);
	cfg_defaults(c);
	assert_int_equal(c->relay.mode, RELAY_MODE_DRY_RUN);
	assert_int_equal(c->relay.caps.per_day, 20);
	assert_int_equal(cfg_relay_caps_per_network(&c->relay.caps), 5);
	assert_int_equal(c->relay.caps.max_recipients, 1);
	assert_int_equal(c->relay.mx_port, 25);
	assert_int_equal(c->relay.timeouts.attempt, 600);
	assert_int_equal(c->relay.nallow, 0);
	assert_true(c->relay.nnever >= 2);
	assert_string_equal(c->relay.never_relay[0], "postmaster@");
	assert_string_equal(c->relay.never_relay[1], "abuse@");
	if (load(c,
	    "relay:\n"
	    "  mode: live\n"
	    "  rules: /etc/fosr/rules.yml\n"
	    "  own_addresses: [\"198.51.100.1\", \"2001:DB8::1\"]\n"
	    "  caps: {per_day: 3, per_hour: 2, per_recipient: 1, per_domain: 4,\n"
	    "         per_client_ip: 5, per_client_network: 6, max_recipients: 2,\n"
	    "         max_size: 64K}\n"
	    "  never_relay: [\"Abuse@\", \"blocked.example\"]\n"
	    "  smarthost: \"smtp.example.org:587\"\n"
	    "  ipv4_only_domains: gmail.com\n"
	    "  dns_server: \"127.0.0.1:5353\"\n"
	    "  mx_port: 2525\n"
	    "  timeouts: {connect: 1, greeting: 2, command: 3, data: 4, attempt: 86400}\n"
	    "  test_mode: {recipient: \"t@example.org\", server: \"[::1]:2525\"}\n"
	    "  allow_destinations: [\"127.0.0.0/8\", \"FD00::/8\", \"::1\"]\n",
	    err) != 0)
		fail_msg("%s", err);
	assert_int_equal(c->relay.mode, RELAY_MODE_LIVE);
	assert_string_equal(cfg_relay_mode_name(c->relay.mode), "live");
	assert_string_equal(c->relay.rules, "/etc/fosr/rules.yml");
	assert_int_equal(c->relay.nown, 2);
	assert_string_equal(c->relay.own_addresses[1], "2001:db8::1");
	assert_int_equal(c->relay.caps.per_day, 3);
	assert_int_equal(c->relay.caps.per_hour, 2);
	assert_int_equal(c->relay.caps.per_recipient, 1);
	assert_int_equal(c->relay.caps.per_domain, 4);
	assert_int_equal(c->relay.caps.per_client_ip, 5);
	assert_int_equal(cfg_relay_caps_per_network(&c->relay.caps), 6);
	assert_int_equal(c->relay.caps.max_recipients, 2);
	assert_int_equal(c->relay.caps.max_size, 65536);
	assert_int_equal(c->relay.nnever, 2);
	assert_string_equal(c->relay.never_relay[0], "abuse@");
	assert_int_equal(c->relay.nipv4_only, 1);
	assert_string_equal(c->relay.smarthost, "smtp.example.org:587");
	assert_string_equal(c->relay.dns_server, "127.0.0.1:5353");
	assert_int_equal(c->relay.mx_port, 2525);
	assert_int_equal(c->relay.timeouts.connect, 1);
	assert_int_equal(c->relay.timeouts.data, 4);
	assert_int_equal(c->relay.timeouts.attempt, 86400);
	assert_int_equal(c->relay.nallow, 3);
	assert_string_equal(c->relay.allow_destinations[1], "fd00::/8");
	assert_string_equal(c->relay.test_recipient, "t@example.org");
	assert_string_equal(c->relay.test_server, "[::1]:2525");
	assert_int_equal(cfg_hostport(c->relay.test_server, host, sizeof(host), &port, 0), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 2525);
	assert_int_equal(cfg_hostport("mx.example", host, sizeof(host), &port, 25), 0);
	assert_int_equal(port, 25);
	assert_int_equal(cfg_hostport("::1", host, sizeof(host), &port, 25), -1);
	assert_int_equal(cfg_hostport("h:0", host, sizeof(host), &port, 25), -1);
	/* By default no file: the built-in rules (the shipped etc/rules.yml). */
	cfg_defaults(c);
	snprintf(c->path, sizeof(c->path), "/etc/fosr/main.yml");
	cfg_relay_rules_path(c, rp, sizeof(rp));
	assert_string_equal(rp, "");
	/* A relative rules path is taken beside the config file. */
	snprintf(c->relay.rules, sizeof(c->relay.rules), "rules.yml");
	cfg_relay_rules_path(c, rp, sizeof(rp));
	assert_string_equal(rp, "/etc/fosr/rules.yml");
	free(c);
	expect_err("relay:\n  mode: on\n", "t.yml:2: relay.mode: expected one of off, dry-run, live");
	expect_err("relay:\n  caps:\n    per_week: 1\n", "t.yml:3: relay.caps.per_week: unknown key");
	expect_err("relay:\n  caps:\n    max_recipients: 0\n", "t.yml:3: relay.caps.max_recipients: 0 is out of range");
	/* More recipients than a journal line holds in a record (fosr_limits.h). */
	expect_err("limits:\n  recipients: 1001\n", "t.yml:2: limits.recipients: 1001 is out of range");
	expect_err("relay:\n  own_addresses: [\"example.org\"]\n", "t.yml:2: relay.own_addresses[0]: not a numeric");
	expect_err("relay:\n  dns_server: \"ns.example:53\"\n", "t.yml:2: relay.dns_server: not a numeric address:port");
	expect_err("relay:\n  smarthost: \"smtp.example.org\"\n", "t.yml:2: relay.smarthost: expected host:port");
	expect_err("relay:\n  test_mode:\n    recipient: nobody\n", "t.yml:3: relay.test_mode.recipient: expected an address");
	expect_err("relay:\n  timeouts:\n    data: 0\n", "t.yml:3: relay.timeouts.data: 0 is out of range");
	expect_err("relay:\n  timeouts:\n    attempt: 86401\n", "t.yml:3: relay.timeouts.attempt: 86401 is out of range");
	expect_err("relay:\n  allow_destinations: [\"10.1.0.0/8\"]\n", "t.yml:2: relay.allow_destinations: not an address or a network");
	expect_err("relay:\n  allow_destinations: [\"localhost\"]\n", "t.yml:2: relay.allow_destinations: not an address or a network");
	expect_err("relay:\n  never_relay: {a: b}\n", "t.yml:2: relay.never_relay: expected a list of strings");
}

/*
 * A FIFO where a config, feed or rules file should be is refused at once (the
 * three loaders share yaml_util's file read): a blocking open(2) waited for a
 * writer for ever, at start or on a reload.
 */
static void
test_fifo_refused(void **state)
{
	char dir[] = "/tmp/fosr-cfg-fifo-XXXXXX", fifo[64], err[256];
	struct cfg *c = malloc(sizeof(*c));
	struct cfg_feed f;
	pid_t pid;
	int st, which;

	assert_non_null(c);
	assert_non_null(mkdtemp(dir));
	snprintf(fifo, sizeof(fifo), "%s/f", dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	for (which = 0; which < 3; which++) {
		if ((pid = fork()) == 0) {
			alarm(5);	/* the blocking open(2) waited here */
			cfg_defaults(c);
			if (which == 0)
				st = cfg_load(c, fifo, err, sizeof(err));
			else if (which == 1)
				st = cfg_load_feed(&f, fifo, err, sizeof(err));
			else
				st = rules_load(fifo, err, sizeof(err)) == NULL ? -1 : 0;
			_exit(st == -1 && strstr(err, "not a regular file") != NULL ?
			    0 : 1);
		}
		assert_true(pid > 0);
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
	unlink(fifo);
	rmdir(dir);
	free(c);
}

/* Seconds of CPU since t0 (a wall clock would count the machine's load). */
static double
cpu_since(clock_t t0)
{
	return (double)(clock() - t0) / CLOCKS_PER_SEC;
}

/* "prefix" + n times open + mid + n times close + "suffix", malloc'ed. */
static char *
nest(const char *prefix, int n, const char *open, const char *mid,
    const char *close, const char *suffix)
{
	size_t lo = strlen(open), lc = strlen(close), len;
	char *b, *p;

	len = strlen(prefix) + (size_t)n * (lo + lc) + strlen(mid) + strlen(suffix) + 1;
	assert_non_null(b = malloc(len));
	p = b + sprintf(b, "%s", prefix);
	for (int i = 0; i < n; i++, p += lo)
		memcpy(p, open, lo);
	p += sprintf(p, "%s", mid);
	for (int i = 0; i < n; i++, p += lc)
		memcpy(p, close, lc);
	sprintf(p, "%s", suffix);
	return b;
}

/*
 * 100,000 nested levels (flow sequences, flow mappings, block mappings) and
 * alias expansions ("billion laughs", a cycle) in the main config, the
 * feed config and the rules: a clear error naming file, line and key, in
 * bounded time (libyaml alone took about 60 s on the 100,000 levels).
 */
static void
test_yaml_depth_and_aliases(void **state)
{
	struct cfg *c = malloc(sizeof(*c));
	struct cfg_feed f;
	struct rules *rs;
	char err[256], *y, *b, *p;
	clock_t t0;

	assert_non_null(c);
	t0 = clock();
	y = nest("relay:\n  own_addresses: ", 100000, "[", "", "]", "\n");
	assert_int_equal(load(c, y, err), -1);
	assert_string_equal(err, "t.yml:2: relay.own_addresses[0][0][0][0][0][0][0][0][0][0][0]"
	    "[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]"
	    "[0][0][0][0][0][0][0][0]...: nested deeper than 64 levels");
	free(y);
	y = nest("relay:\n  caps: ", 100000, "{a: ", "1", "}", "\n");
	assert_int_equal(load(c, y, err), -1);
	assert_non_null(strstr(err, "t.yml:2: relay.caps.a.a.a.a."));
	assert_non_null(strstr(err, "nested deeper than 64 levels"));
	free(y);
	y = nest("", 100000, "[", "", "]", "\n");
	assert_int_equal(load_feed(&f, y, err), -1);
	assert_non_null(strstr(err, "f.yml:1: [0][0]"));
	free(y);
	/* Block style: each level one more space. */
	assert_non_null(b = malloc(70 * 80));
	p = b + sprintf(b, "relay:\n");
	for (int i = 1; i < 70; i++)
		p += sprintf(p, "%*sk%d:\n", i, "", i);
	assert_int_equal(load(c, b, err), -1);
	assert_non_null(strstr(err, "t.yml:65: relay.k1.k2.k3."));
	free(b);
	y = nest("rules:\n  - name: x\n    conditions: ", 100000, "[", "", "]", "\n");
	rs = rules_load_buf("r.yml", y, strlen(y), err, sizeof(err));
	assert_null(rs);
	assert_non_null(strstr(err, "r.yml:3: rules[0].conditions[0][0]"));
	free(y);

	/* A billion laughs: 9 aliases of 9 aliases of ... of 9 scalars. */
	assert_non_null(b = malloc(4096));
	p = b + sprintf(b, "relay:\n  never_relay: &a0 [x, x, x, x, x, x, x, x, x]\n  own_addresses:\n");
	for (int i = 1; i < 10; i++)
		p += sprintf(p, "    - &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n",
		    i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
	assert_int_equal(load(c, b, err), -1);
	assert_non_null(strstr(err, "t.yml:7: relay.own_addresses[3][0]: aliases expand to more "
	    "than 10000 nodes"));
	free(b);
	/* An alias inside its own anchor: a cycle. */
	assert_int_equal(load(c, "relay:\n  never_relay: &a [x, [*a]]\n", err), -1);
	assert_string_equal(err, "t.yml:2: relay.never_relay[1][0]: alias *a inside its own "
	    "anchor (a cycle)");
	/* A few aliases are fine. */
	assert_int_equal(load(c, "relay:\n  never_relay: &n [\"abuse@\", \"x.example\"]\n"
	    "  ipv4_only_domains: *n\n", err), 0);
	assert_int_equal(c->relay.nipv4_only, 2);
	assert_true(cpu_since(t0) < 5.0);
	free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_postfix_defaults),
		cmocka_unit_test(test_example_file),
		cmocka_unit_test(test_client_lookup),
		cmocka_unit_test(test_metrics_section),
		cmocka_unit_test(test_analysis_section),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_feed_seed),
		cmocka_unit_test(test_feed_json),
		cmocka_unit_test(test_feed_bools),
		cmocka_unit_test(test_feed_payload),
		cmocka_unit_test(test_feed_errors),
		cmocka_unit_test(test_main_errors),
		cmocka_unit_test(test_aliases),
		cmocka_unit_test(test_unchanged_and_missing),
		cmocka_unit_test(test_feed_null_in_main),
		cmocka_unit_test(test_relay_section),
		cmocka_unit_test(test_fifo_refused),
		cmocka_unit_test(test_yaml_depth_and_aliases),
		cmocka_unit_test(test_parsed_outputs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
