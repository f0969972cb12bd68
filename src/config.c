/*
 * Configuration files: the main YAML config and the seed's feed config (YAML
 * or JSON, which libyaml reads as YAML flow style).  The file is loaded with
 * libyaml's document API and walked against a fixed schema, so the walk is as
 * deep as the schema whatever the document holds (aliases cannot make it
 * loop).  Every error names the file, the line and the dotted key.  Nothing
 * is applied unless the whole file is valid.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "authdb.h"
#include "campaign.h"
#include "config.h"
#include "log.h"
#include "relay_dest.h"
#include "util.h"
#include "yaml_util.h"

#define CFG_KEYPATH_MAX	YU_PATH_MAX

static int	 feed_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 feed_channels(struct yu_ctx *, yaml_node_t *, const char *,
		    struct cfg_feed *);
static int	 feed_parse(struct yu_ctx *, yaml_node_t *, const char *,
		    struct cfg_feed *);
static int	 listener_key_cb(struct yu_ctx *, int, const char *,
		    yaml_node_t *, void *);
static int	 listeners_parse(struct yu_ctx *, yaml_node_t *, const char *,
		    struct cfg *, size_t *);
static int	 tls_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 sandbox_key_cb(struct yu_ctx *, int, const char *,
		    yaml_node_t *, void *);
static int	 spool_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 client_lookup_key_cb(struct yu_ctx *, int, const char *,
		    yaml_node_t *, void *);
static int	 auth_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 limits_key_cb(struct yu_ctx *, int, const char *,
		    yaml_node_t *, void *);
static int	 metrics_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 get_address(struct yu_ctx *, yaml_node_t *, const char *, char *, size_t);
static int	 main_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static int	 get_list(struct yu_ctx *, yaml_node_t *, const char *,
		    char (*)[CFG_RELAY_ENTRY_MAX], int *, bool);
static int	 get_hostport(struct yu_ctx *, yaml_node_t *, const char *,
		    char *, size_t, bool);
static int	 relay_caps_key_cb(struct yu_ctx *, int, const char *,
		    yaml_node_t *, void *);
static int	 relay_timeouts_key_cb(struct yu_ctx *, int, const char *,
		    yaml_node_t *, void *);
static int	 relay_test_key_cb(struct yu_ctx *, int, const char *,
		    yaml_node_t *, void *);
static int	 relay_own_addresses(struct yu_ctx *, yaml_node_t *,
		    const char *, struct cfg_relay *);
static int	 relay_key_cb(struct yu_ctx *, int, const char *, yaml_node_t *,
		    void *);
static const char *default_listener_name(int, enum tls_mode);

static const char *const tls_mode_names[] = { "plain", "starttls", "implicit" };
static const char *const auth_names[] = { "accept", "reject", "accept_after", "policy" };
static const char *const relay_mode_names[] = { "off", "dry-run", "live" };

/* Main config sections, in the order of the example file. */
enum main_key {
	MK_HOSTNAME, MK_SENSOR, MK_PERSONA, MK_USER, MK_PORT_OFFSET,
	MK_LISTENERS, MK_TLS, MK_SPOOL, MK_EVENT_LOG, MK_AUTH, MK_LIMITS,
	MK_FEED, MK_RELAY, MK_LOCAL, MK_SANDBOX, MK_CLIENT_LOOKUP, MK_METRICS, MK_AMQP,
	MK_ANALYSIS, MK_COUNT
};
static const char *const main_keys[MK_COUNT] = {
	"hostname", "sensor", "persona", "user", "port_offset",
	"listeners", "tls", "spool", "event_log", "auth", "limits", "feed",
	"relay", "local_recipients", "sandbox", "client_lookup", "metrics", "amqp",
	"analysis",
};

enum analysis_key { AN_ENABLED, AN_STORE, AN_ATT_MAX, AN_CAMPAIGNS_MAX, AN_COUNT };
static const char *const analysis_keys[AN_COUNT] = {
	"enabled", "store_attachments", "attachment_max", "campaigns_max",
};

enum metrics_key { MX_ADDRESS, MX_PORT, MX_COUNT };
static const char *const metrics_keys[MX_COUNT] = { "address", "port" };

enum amqp_key {
	AQ_HOST, AQ_PORT, AQ_VHOST, AQ_USER, AQ_PASSWORD, AQ_EXCHANGE,
	AQ_EXCHANGE_TYPE, AQ_ROUTING_KEY, AQ_TLS, AQ_CA_FILE, AQ_SERVER_NAME,
	AQ_PAYLOAD, AQ_METADATA, AQ_TIMEOUT, AQ_RECEIVED_HEADER, AQ_PARSED_ROUTING_KEY,
	AQ_DNS_SERVER, AQ_COUNT
};
static const char *const amqp_keys[AQ_COUNT] = {
	"host", "port", "vhost", "user", "password", "exchange", "exchange_type",
	"routing_key", "tls", "ca_file", "server_name", "payload", "metadata",
	"timeout", "received_header", "parsed_routing_key", "dns_server",
};
#define AMQP_REQUIRED	((1u << AQ_HOST) | (1u << AQ_USER) | \
			 (1u << AQ_PASSWORD) | (1u << AQ_EXCHANGE))
static const char *const amqp_exchange_types[] = { "topic", "direct", "fanout", "headers" };

enum client_lookup_key { CL_ENABLED, CL_DNS_SERVER, CL_TIMEOUT_MS, CL_COUNT };
static const char *const client_lookup_keys[CL_COUNT] = {
	"enabled", "dns_server", "timeout_ms",
};

enum sandbox_key { SB_SECCOMP, SB_CHROOT, SB_COUNT };
static const char *const sandbox_keys[SB_COUNT] = { "seccomp", "chroot" };

enum local_key { LR_DOMAINS, LR_USERS, LR_COUNT };
static const char *const local_keys[LR_COUNT] = { "domains", "users" };

enum listener_key { LK_ADDRESS, LK_PORT, LK_TLS, LK_NAME, LK_POLICY, LK_COUNT };
static const char *const listener_keys[LK_COUNT] = {
	"address", "port", "tls", "name", "policy",
};
static const char *const policy_names[] = { "relay", "submission" };

enum tls_key { TK_CERTIFICATE, TK_KEY, TK_COUNT };
static const char *const tls_keys[TK_COUNT] = { "certificate", "key" };

enum spool_key { SK_DIRECTORY, SK_MAILDIR, SK_MIN_FREE, SK_MAX_BYTES,
	SK_JOURNAL_SEGMENT, SK_JOURNAL_KEEP, SK_COUNT };
static const char *const spool_keys[SK_COUNT] = {
	"directory", "maildir", "min_free", "max_bytes", "journal_segment",
	"journal_keep",
};

enum auth_key { AK_OUTCOME, AK_ACCEPT_AFTER, AK_CREDENTIALS, AK_MEMORY_TTL, AK_COUNT };
static const char *const auth_keys[AK_COUNT] = { "outcome", "accept_after", "credentials",
	"memory_ttl" };

enum limits_key {
	LM_LINE_LENGTH, LM_MESSAGE_SIZE, LM_RECIPIENTS, LM_SOFT_ERRORS,
	LM_HARD_ERRORS, LM_ERROR_SLEEP, LM_IDLE_TIMEOUT, LM_SESSION_LIFETIME,
	LM_SESSIONS, LM_SESSIONS_PER_IP, LM_BANNER_DELAY, LM_BANNER_JITTER,
	LM_COUNT
};
static const char *const limits_keys[LM_COUNT] = {
	"line_length", "message_size", "recipients", "soft_errors",
	"hard_errors", "error_sleep", "idle_timeout", "session_lifetime",
	"sessions", "sessions_per_ip", "banner_delay_ms", "banner_jitter_ms",
};

enum feed_key {
	FK_BROKER, FK_PORT, FK_IDENTITY, FK_SECRET, FK_CHANNELS, FK_TLS,
	FK_CA_FILE, FK_SERVER_NAME, FK_EVENTS_CHANNEL, FK_METADATA, FK_TIMEOUT,
	FK_PAYLOAD, FK_RECEIVED_HEADER, FK_PARSED_CHANNEL, FK_COUNT
};
static const char *const feed_keys[FK_COUNT] = {
	"broker", "port", "identity", "secret", "channels", "tls", "ca_file",
	"server_name", "events_channel", "metadata", "timeout", "payload",
	"received_header", "parsed_channel",
};
/* feed.payload, in enum cfg_payload's order. */
static const char *const payload_names[] = { "json", "raw" };
#define FEED_REQUIRED	((1u << FK_BROKER) | (1u << FK_PORT) | \
			 (1u << FK_IDENTITY) | (1u << FK_SECRET) | \
			 (1u << FK_CHANNELS))

enum relay_key {
	RK_MODE, RK_RULES, RK_OWN_ADDRESSES, RK_CAPS, RK_NEVER_RELAY,
	RK_SMARTHOST, RK_IPV4_ONLY, RK_DNS_SERVER, RK_MX_PORT, RK_TIMEOUTS,
	RK_TEST_MODE, RK_ALLOW_DEST, RK_COUNT
};
static const char *const relay_keys[RK_COUNT] = {
	"mode", "rules", "own_addresses", "caps", "never_relay", "smarthost",
	"ipv4_only_domains", "dns_server", "mx_port", "timeouts", "test_mode",
	"allow_destinations",
};

enum relay_caps_key {
	RC_PER_DAY, RC_PER_HOUR, RC_PER_RECIPIENT, RC_PER_DOMAIN,
	RC_PER_CLIENT_IP, RC_PER_CLIENT_NETWORK, RC_MAX_RECIPIENTS, RC_MAX_SIZE,
	RC_COUNT
};
static const char *const relay_caps_keys[RC_COUNT] = {
	"per_day", "per_hour", "per_recipient", "per_domain", "per_client_ip",
	"per_client_network", "max_recipients", "max_size",
};

enum relay_timeouts_key {
	RT_CONNECT, RT_GREETING, RT_COMMAND, RT_DATA, RT_ATTEMPT, RT_COUNT
};
static const char *const relay_timeouts_keys[RT_COUNT] = {
	"connect", "greeting", "command", "data", "attempt",
};

enum relay_test_key { RX_RECIPIENT, RX_SERVER, RX_COUNT };
static const char *const relay_test_keys[RX_COUNT] = { "recipient", "server" };

/* Never relayed to, unless relay.never_relay replaces the list. */
static const char *const never_relay_defaults[] = {
	"postmaster@", "abuse@", "hostmaster@", "webmaster@", "security@",
	"mailer-daemon@", "noc@",
	/* Open-relay testers and blocklist operators. */
	"mail-abuse.org", "abuse.net", "ordb.org", "njabl.org", "sorbs.net",
	"spamhaus.org", "spamcop.net", "rbl.jp", "uceprotect.net",
	"blocklist.de", "relay-test.org",
};

/* What main_key_cb() needs besides the config: where port checks report. */
struct main_state {
	struct cfg	*c;
	size_t		 offset_line;	/* 0 = port_offset not in the file */
	size_t		 port_lines[CFG_LISTENERS_MAX];	/* 0 = default listener */
	bool		 listeners_set;
};

/* Read the channels value: one string or a list of 1..CFG_CHANNELS_MAX strings. */
static int
feed_channels(struct yu_ctx *x, yaml_node_t *n, const char *path,
    struct cfg_feed *f)
{
	yaml_node_item_t *it;
	yaml_node_t *v;
	char ipath[CFG_KEYPATH_MAX];
	int i, j;

	f->nchannels = 0;
	if (n->type == YAML_SCALAR_NODE) {
		if (yu_str(x, n, path, f->channels[0], sizeof(f->channels[0]),
		    false) == -1)
			return -1;
		f->nchannels = 1;
		return 0;
	}
	if (n->type != YAML_SEQUENCE_NODE)
		return yu_error(x, n, path,
		    "expected a channel name or a list of them");
	for (it = n->data.sequence.items.start; it < n->data.sequence.items.top;
	    it++) {
		i = f->nchannels;
		snprintf(ipath, sizeof(ipath), "%s[%d]", path, i);
		if ((v = yaml_document_get_node(x->doc, *it)) == NULL)
			return yu_error(x, n, path, "malformed list");
		if (i >= CFG_CHANNELS_MAX)
			return yu_error(x, v, ipath, "more than %d channels",
			    CFG_CHANNELS_MAX);
		if (yu_str(x, v, ipath, f->channels[i], sizeof(f->channels[i]),
		    false) == -1)
			return -1;
		for (j = 0; j < i; j++)
			if (strcmp(f->channels[j], f->channels[i]) == 0)
				return yu_error(x, v, ipath,
				    "duplicate channel \"%.64s\"", f->channels[i]);
		f->nchannels++;
	}
	if (f->nchannels == 0)
		return yu_error(x, n, path, "at least one channel is needed");
	return 0;
}

/* Apply one feed key. */
static int
feed_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cfg_feed *f = arg;

	switch ((enum feed_key)key) {
	case FK_BROKER:
		return yu_str(x, v, path, f->broker, sizeof(f->broker), false);
	case FK_PORT:
		return yu_int(x, v, path, 1, 65535, &f->port);
	case FK_IDENTITY:
		return yu_str(x, v, path, f->identity, sizeof(f->identity),
		    false);
	case FK_SECRET:
		return yu_str(x, v, path, f->secret, sizeof(f->secret), true);
	case FK_CHANNELS:
		return feed_channels(x, v, path, f);
	case FK_TLS:
		return yu_bool(x, v, path, &f->tls);
	case FK_CA_FILE:
		return yu_str(x, v, path, f->ca_file, sizeof(f->ca_file), true);
	case FK_SERVER_NAME:
		return yu_str(x, v, path, f->server_name,
		    sizeof(f->server_name), true);
	case FK_EVENTS_CHANNEL:
		return yu_str(x, v, path, f->events_channel,
		    sizeof(f->events_channel), true);
	case FK_METADATA:
		return yu_bool(x, v, path, &f->metadata);
	case FK_TIMEOUT:
		return yu_int(x, v, path, 1, HPF_TIMEOUT_MAX, &f->timeout);
	case FK_PAYLOAD: {
		int p;

		if (yu_enum(x, v, path, payload_names, 2, &p) == -1)
			return -1;
		f->payload = (enum cfg_payload)p;
		return 0;
	}
	case FK_RECEIVED_HEADER:
		return yu_bool(x, v, path, &f->received_header);
	case FK_PARSED_CHANNEL:
		return yu_str(x, v, path, f->parsed_channel,
		    sizeof(f->parsed_channel), true);
	case FK_COUNT:
		break;
	}
	return yu_error(x, v, path, "internal: unhandled key");
}

/* Apply one amqp key. */
static int
amqp_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cfg_amqp *a = arg;
	int i;

	switch ((enum amqp_key)key) {
	case AQ_HOST:
		return yu_str(x, v, path, a->host, sizeof(a->host), false);
	case AQ_PORT:
		return yu_int(x, v, path, 1, 65535, &a->port);
	case AQ_VHOST:
		return yu_str(x, v, path, a->vhost, sizeof(a->vhost), false);
	case AQ_USER:
		return yu_str(x, v, path, a->user, sizeof(a->user), false);
	case AQ_PASSWORD:
		return yu_str(x, v, path, a->password, sizeof(a->password), true);
	case AQ_EXCHANGE:
		return yu_str(x, v, path, a->exchange, sizeof(a->exchange), false);
	case AQ_EXCHANGE_TYPE:
		if (yu_enum(x, v, path, amqp_exchange_types, 4, &i) == -1)
			return -1;
		snprintf(a->exchange_type, sizeof(a->exchange_type), "%s",
		    amqp_exchange_types[i]);
		return 0;
	case AQ_ROUTING_KEY:
		return yu_str(x, v, path, a->routing_key, sizeof(a->routing_key), true);
	case AQ_TLS:
		return yu_bool(x, v, path, &a->tls);
	case AQ_CA_FILE:
		return yu_str(x, v, path, a->ca_file, sizeof(a->ca_file), true);
	case AQ_SERVER_NAME:
		return yu_str(x, v, path, a->server_name, sizeof(a->server_name), true);
	case AQ_PAYLOAD:
		/* The feed's formats, built by the same functions (hpfeeds_wire.c). */
		if (yu_enum(x, v, path, payload_names, 2, &i) == -1)
			return -1;
		a->payload = (enum cfg_payload)i;
		return 0;
	case AQ_RECEIVED_HEADER:
		return yu_bool(x, v, path, &a->received_header);
	case AQ_METADATA:
		return yu_bool(x, v, path, &a->metadata);
	case AQ_TIMEOUT:
		return yu_int(x, v, path, 1, HPF_TIMEOUT_MAX, &a->timeout);
	case AQ_PARSED_ROUTING_KEY:
		if (yu_str(x, v, path, a->parsed_routing_key,
		    sizeof(a->parsed_routing_key), true) == -1)
			return -1;
		a->parsed = a->parsed_routing_key[0] != '\0';
		return 0;
	case AQ_DNS_SERVER:
		return get_hostport(x, v, path, a->dns_server, sizeof(a->dns_server), true);
	case AQ_COUNT:
		break;
	}
	return yu_error(x, v, path, "internal: unhandled key");
}

/* Parse the main config's "amqp" mapping into a. */
static int
amqp_parse(struct yu_ctx *x, yaml_node_t *n, const char *prefix,
    struct cfg_amqp *a)
{
	uint32_t seen;

	memset(a, 0, sizeof(*a));
	snprintf(a->vhost, sizeof(a->vhost), "/");
	snprintf(a->exchange_type, sizeof(a->exchange_type), "topic");
	a->metadata = true;
	a->received_header = true;
	a->timeout = HPF_TIMEOUT_DEFAULT;
	if (yu_map_walk(x, n, prefix, amqp_keys, AQ_COUNT, amqp_key_cb, a,
	    &seen) == -1)
		return -1;
	if (yu_missing(x, n, prefix, amqp_keys, AMQP_REQUIRED, seen) == -1)
		return -1;
	if (a->port == 0)
		a->port = a->tls ? 5671 : 5672;
	/* One key, one kind of document: a consumer binds to what it wants. */
	if (a->parsed && strcmp(a->parsed_routing_key, a->routing_key) == 0)
		return yu_error(x, n, prefix, "parsed_routing_key \"%.64s\" is also "
		    "routing_key: the parsed documents need a key of their own",
		    a->parsed_routing_key);
	a->enabled = true;
	return 0;
}

/* Parse a feed mapping (file root or the main config's "feed") into f. */
static int
feed_parse(struct yu_ctx *x, yaml_node_t *n, const char *prefix,
    struct cfg_feed *f)
{
	uint32_t seen;

	memset(f, 0, sizeof(*f));
	f->timeout = HPF_TIMEOUT_DEFAULT;
	f->payload = CFG_PAYLOAD_JSON;
	f->received_header = true;
	if (yu_map_walk(x, n, prefix, feed_keys, FK_COUNT, feed_key_cb, f,
	    &seen) == -1)
		return -1;
	if (yu_missing(x, n, prefix, feed_keys, FEED_REQUIRED, seen) == -1)
		return -1;
	if (f->parsed_channel[0] != '\0') {
		int i;

		for (i = 0; i < f->nchannels; i++)
			if (strcmp(f->parsed_channel, f->channels[i]) == 0)
				break;
		if (i < f->nchannels || strcmp(f->parsed_channel, f->events_channel) == 0)
			return yu_error(x, n, prefix, "parsed_channel \"%.64s\" is also "
			    "another channel", f->parsed_channel);
	}
	if (strlen(x->name) >= sizeof(f->source))
		return yu_error(x, NULL, NULL, "file name too long");
	snprintf(f->source, sizeof(f->source), "%s", x->name);
	f->enabled = true;
	return 0;
}

/* A numeric IPv4 or IPv6 address ("[::]", as Postfix writes one, is "::"). */
static int
get_address(struct yu_ctx *x, yaml_node_t *v, const char *path, char *dst, size_t dstlen)
{
	unsigned char addr[sizeof(struct in6_addr)];
	size_t len;

	if (yu_str(x, v, path, dst, dstlen, false) == -1)
		return -1;
	len = strlen(dst);
	if (len > 2 && dst[0] == '[' && dst[len - 1] == ']' && strchr(dst, ':') != NULL) {
		memmove(dst, dst + 1, len - 2);
		dst[len - 2] = '\0';
	}
	if (inet_pton(AF_INET, dst, addr) != 1 && inet_pton(AF_INET6, dst, addr) != 1)
		return yu_error(x, v, path, "not a numeric IPv4 or IPv6 address");
	return 0;
}

/* Apply one key of the analysis section. */
static int
analysis_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v, void *arg)
{
	struct cfg_analysis *an = arg;

	switch ((enum analysis_key)key) {
	case AN_ENABLED:
		return yu_bool(x, v, path, &an->enabled);
	case AN_STORE:
		return yu_bool(x, v, path, &an->store_attachments);
	case AN_ATT_MAX:
		/* analysis.c keeps a blob of at most its decoded_max anyway */
		return yu_num(x, v, path, 1, ANALYSIS_ATTACHMENT_MAX_CAP, YU_KMG | YU_BYTES,
		    &an->attachment_max);
	case AN_CAMPAIGNS_MAX:
		return yu_num(x, v, path, 1, 1000000, 0, &an->campaigns_max);
	case AN_COUNT:
		break;
	}
	return yu_error(x, v, path, "internal: unhandled key");
}

/* Apply one key of the metrics section. */
static int
metrics_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v, void *arg)
{
	struct cfg_metrics *m = arg;

	if (key == MX_ADDRESS)
		return get_address(x, v, path, m->address, sizeof(m->address));
	return yu_int(x, v, path, 1, 65535, &m->port);
}

/* The name a listener gets when the file gives none. */
static const char *
default_listener_name(int port, enum tls_mode tls)
{
	if (port == 465 || tls == TLS_MODE_IMPLICIT)
		return "submissions";
	if (port == 587)
		return "submission";
	return "smtp";
}

/* Apply one key of a listener. */
static int
listener_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cfg_listener *l = arg;
	int mode;

	switch ((enum listener_key)key) {
	case LK_ADDRESS:
		return get_address(x, v, path, l->address, sizeof(l->address));
	case LK_PORT:
		return yu_int(x, v, path, 1, 65535, &l->port);
	case LK_TLS:
		if (yu_enum(x, v, path, tls_mode_names, 3, &mode) == -1)
			return -1;
		l->tls = (enum tls_mode)mode;
		return 0;
	case LK_NAME:
		return yu_str(x, v, path, l->name, sizeof(l->name), false);
	case LK_POLICY:
		if (yu_enum(x, v, path, policy_names, 2, &mode) == -1)
			return -1;
		l->policy = (enum listener_policy)mode;
		return 0;
	case LK_COUNT:
		break;
	}
	return yu_error(x, v, path, "internal: unhandled key");
}

/*
 * Parse the listeners list, replacing the defaults.  Each entry needs a port;
 * address defaults to 0.0.0.0, tls to implicit on 465 and starttls elsewhere.
 */
static int
listeners_parse(struct yu_ctx *x, yaml_node_t *n, const char *path,
    struct cfg *c, size_t *port_lines)
{
	yaml_node_item_t *it;
	yaml_node_t *v;
	struct cfg_listener *l;
	char ipath[CFG_KEYPATH_MAX], pport[CFG_KEYPATH_MAX + 8];
	uint32_t seen;
	int i, j;

	if (n->type != YAML_SEQUENCE_NODE)
		return yu_error(x, n, path, "expected a list of listeners");
	c->nlisteners = 0;
	for (it = n->data.sequence.items.start; it < n->data.sequence.items.top;
	    it++) {
		i = c->nlisteners;
		snprintf(ipath, sizeof(ipath), "%s[%d]", path, i);
		if ((v = yaml_document_get_node(x->doc, *it)) == NULL)
			return yu_error(x, n, path, "malformed list");
		if (i >= CFG_LISTENERS_MAX)
			return yu_error(x, v, ipath, "more than %d listeners",
			    CFG_LISTENERS_MAX);
		l = &c->listeners[i];
		memset(l, 0, sizeof(*l));
		l->tls = TLS_MODE_STARTTLS;
		if (yu_map_walk(x, v, ipath, listener_keys, LK_COUNT,
		    listener_key_cb, l, &seen) == -1)
			return -1;
		if (yu_missing(x, v, ipath, listener_keys, 1u << LK_PORT,
		    seen) == -1)
			return -1;
		if (!(seen & (1u << LK_ADDRESS)))
			snprintf(l->address, sizeof(l->address), "0.0.0.0");
		if (!(seen & (1u << LK_TLS)) && l->port == 465)
			l->tls = TLS_MODE_IMPLICIT;
		if (!(seen & (1u << LK_NAME)))
			snprintf(l->name, sizeof(l->name), "%s",
			    default_listener_name(l->port, l->tls));
		/* Debian's submission/submissions templates on their ports. */
		if (!(seen & (1u << LK_POLICY)))
			l->policy = l->port == 465 || l->port == 587 ?
			    LISTENER_POLICY_SUBMISSION : LISTENER_POLICY_RELAY;
		/*
		 * The templates need TLS (smtpd_tls_security_level=encrypt,
		 * smtpd_tls_wrappermode=yes): without it every MAIL would get
		 * 530 and no client could ever use the listener.
		 */
		if (l->policy == LISTENER_POLICY_SUBMISSION && l->tls == TLS_MODE_PLAIN) {
			const yaml_node_t *kn = yu_map_value(x, v, (seen & (1u << LK_POLICY)) ?
			    "policy" : "tls");
			snprintf(pport, sizeof(pport), "%s.%s", ipath,
			    (seen & (1u << LK_POLICY)) ? "policy" : "tls");
			return yu_error(x, kn ? kn : v, pport, "policy submission%s needs "
			    "tls starttls or implicit (Debian's templates require TLS); "
			    "use policy relay for a plain listener",
			    (seen & (1u << LK_POLICY)) ? "" : " (the default on 465 and 587)");
		}
		port_lines[i] = v->start_mark.line + 1;
		for (j = 0; j < i; j++) {
			if (c->listeners[j].port == l->port &&
			    strcmp(c->listeners[j].address, l->address) == 0) {
				snprintf(pport, sizeof(pport), "%s.port", ipath);
				return yu_error(x, v, pport,
				    "%s port %d is already used by %s[%d]",
				    l->address, l->port, path, j);
			}
		}
		c->nlisteners++;
	}
	if (c->nlisteners == 0)
		return yu_error(x, n, path, "at least one listener is needed");
	return 0;
}

/* Apply one key of the tls section. */
static int
tls_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cfg *c = arg;

	c->tls_configured = true;
	if (key == TK_CERTIFICATE)
		return yu_str(x, v, path, c->tls_cert, sizeof(c->tls_cert),
		    false);
	return yu_str(x, v, path, c->tls_key, sizeof(c->tls_key), false);
}

/* Apply one key of the spool section. */
static int
spool_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cfg *c = arg;

	switch ((enum spool_key)key) {
	case SK_DIRECTORY:
		return yu_str(x, v, path, c->spool_dir, sizeof(c->spool_dir),
		    false);
	case SK_MAILDIR:
		return yu_str(x, v, path, c->maildir, sizeof(c->maildir), true);
	case SK_MIN_FREE:
		return yu_num(x, v, path, 0, UINT64_MAX, YU_KMG | YU_BYTES,
		    &c->spool_min_free);
	case SK_MAX_BYTES:
		return yu_num(x, v, path, 0, UINT64_MAX, YU_KMG | YU_BYTES,
		    &c->spool_max_bytes);
	case SK_JOURNAL_SEGMENT:
		if (yu_num(x, v, path, 0, UINT64_MAX, YU_KMG | YU_BYTES,
		    &c->journal_segment) == -1)
			return -1;
		if (c->journal_segment != 0 && c->journal_segment < SPOOL_JOURNAL_SEG_MIN)
			return yu_error(x, v, path, "at least 4K (or 0: one journal file)");
		return 0;
	case SK_JOURNAL_KEEP:
		return yu_int(x, v, path, 0, 1000000, &c->journal_keep);
	case SK_COUNT:
		break;
	}
	return yu_error(x, v, path, "internal: unhandled key");
}

/* Apply one key of the sandbox section. */
static int
sandbox_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cfg_sandbox *sb = arg;

	switch ((enum sandbox_key)key) {
	case SB_SECCOMP:
		return yu_bool(x, v, path, &sb->seccomp);
	case SB_CHROOT:
		if (yu_str(x, v, path, sb->chroot, sizeof(sb->chroot), true) == -1)
			return -1;
		if (sb->chroot[0] != '\0' && sb->chroot[0] != '/')
			return yu_error(x, v, path, "must be an absolute path or \"\"");
		return 0;
	case SB_COUNT:
		break;
	}
	return yu_error(x, v, path, "internal: unhandled key");
}

/* Apply one key of the client_lookup section. */
static int
client_lookup_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cfg_client_lookup *cl = arg;

	switch ((enum client_lookup_key)key) {
	case CL_ENABLED:
		return yu_bool(x, v, path, &cl->enabled);
	case CL_DNS_SERVER:
		return get_hostport(x, v, path, cl->dns_server,
		    sizeof(cl->dns_server), true);
	case CL_TIMEOUT_MS:
		return yu_int(x, v, path, 100, 60000, &cl->timeout_ms);
	case CL_COUNT:
		break;
	}
	return yu_error(x, v, path, "internal: unhandled key");
}

/* Apply one key of the auth section. */
static int
auth_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cfg *c = arg;
	int o;

	if (key == AK_OUTCOME) {
		if (yu_enum(x, v, path, auth_names, 4, &o) == -1)
			return -1;
		c->auth_outcome = (enum auth_outcome)o;
		return 0;
	}
	if (key == AK_CREDENTIALS)
		return yu_str(x, v, path, c->auth_credentials, sizeof(c->auth_credentials), true);
	if (key == AK_MEMORY_TTL)
		return yu_int(x, v, path, 1, AUTHMEM_TTL_MAX, &c->auth_memory_ttl);
	return yu_int(x, v, path, 0, 1000, &c->auth_accept_after);
}

/* Apply one key of the limits section. */
static int
limits_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cfg_limits *l = arg;
	uint64_t u;

	switch ((enum limits_key)key) {
	case LM_LINE_LENGTH:
		if (yu_num(x, v, path, SMTP_LINE_MIN, SMTP_LINE_MAX,
		    YU_KMG | YU_BYTES, &u) == -1)
			return -1;
		l->line_length = (size_t)u;
		return 0;
	case LM_MESSAGE_SIZE:
		return yu_num(x, v, path, 1024, 1ull << 36, YU_KMG | YU_BYTES,
		    &l->message_size);
	case LM_RECIPIENTS:
		return yu_int(x, v, path, 1, SMTP_RCPT_MAX, &l->recipients);
	case LM_SOFT_ERRORS:
		return yu_int(x, v, path, 1, 10000, &l->soft_errors);
	case LM_HARD_ERRORS:
		return yu_int(x, v, path, 1, 10000, &l->hard_errors);
	case LM_ERROR_SLEEP:
		return yu_int(x, v, path, 0, 300, &l->error_sleep);
	case LM_IDLE_TIMEOUT:
		return yu_int(x, v, path, 1, 86400, &l->idle_timeout);
	case LM_SESSION_LIFETIME:
		return yu_int(x, v, path, 1, 7 * 86400, &l->session_lifetime);
	case LM_SESSIONS:
		return yu_int(x, v, path, 1, 1000000, &l->sessions);
	case LM_SESSIONS_PER_IP:
		return yu_int(x, v, path, 1, 1000000, &l->sessions_per_ip);
	case LM_BANNER_DELAY:
		return yu_int(x, v, path, 0, 600000, &l->banner_delay_ms);
	case LM_BANNER_JITTER:
		return yu_int(x, v, path, 0, 600000, &l->banner_jitter_ms);
	case LM_COUNT:
		break;
	}
	return yu_error(x, v, path, "internal: unhandled key");
}

/*
 * Split "host:port", "[v6]:port" or "host" (port = defport, or an error when
 * defport is 0) into host and port.  Returns 0 or -1.
 */
int
cfg_hostport(const char *s, char *host, size_t hostlen, int *port, int defport)
{
	const char *colon, *hend;
	uint64_t p;
	size_t hl;

	if (s[0] == '[') {
		if ((hend = strchr(s, ']')) == NULL)
			return -1;
		colon = hend[1] == ':' ? hend + 1 : NULL;
		if (hend[1] != '\0' && colon == NULL)
			return -1;
		s++;
	} else {
		colon = strrchr(s, ':');
		if (colon != NULL && strchr(s, ':') != colon)
			return -1;	/* a bare IPv6 address needs brackets */
		hend = colon ? colon : s + strlen(s);
	}
	hl = (size_t)(hend - s);
	if (hl == 0 || hl >= hostlen)
		return -1;
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (colon == NULL) {
		if (defport == 0)
			return -1;
		*port = defport;
		return 0;
	}
	if (util_parse_u64(colon + 1, strlen(colon + 1), 1, 65535, false, &p) == -1)
		return -1;
	*port = (int)p;
	return 0;
}

/* Read a list of strings (one string is accepted too) into a relay list. */
static int
get_list(struct yu_ctx *x, yaml_node_t *n, const char *path,
    char (*out)[CFG_RELAY_ENTRY_MAX], int *count, bool lower)
{
	yaml_node_item_t *it;
	yaml_node_t *v;
	char ipath[CFG_KEYPATH_MAX];
	int i;

	*count = 0;
	if (yu_is_null(n))
		return 0;
	if (n->type == YAML_SCALAR_NODE) {
		if (yu_str(x, n, path, out[0], CFG_RELAY_ENTRY_MAX, false) == -1)
			return -1;
		*count = 1;
	} else if (n->type != YAML_SEQUENCE_NODE) {
		return yu_error(x, n, path, "expected a list of strings");
	} else {
		for (it = n->data.sequence.items.start;
		    it < n->data.sequence.items.top; it++) {
			i = *count;
			snprintf(ipath, sizeof(ipath), "%s[%d]", path, i);
			if ((v = yaml_document_get_node(x->doc, *it)) == NULL)
				return yu_error(x, n, path, "malformed list");
			if (i >= CFG_RELAY_LIST_MAX)
				return yu_error(x, v, ipath, "more than %d entries",
				    CFG_RELAY_LIST_MAX);
			if (yu_str(x, v, ipath, out[i], CFG_RELAY_ENTRY_MAX,
			    false) == -1)
				return -1;
			(*count)++;
		}
	}
	if (lower)
		for (i = 0; i < *count; i++)
			for (char *p = out[i]; *p; p++)
				if (*p >= 'A' && *p <= 'Z')
					*p = (char)(*p - 'A' + 'a');
	return 0;
}

/* Read a "host:port" string (port required unless empty is allowed and given). */
static int
get_hostport(struct yu_ctx *x, yaml_node_t *n, const char *path, char *dst,
    size_t dstlen, bool numeric)
{
	char host[CFG_NAME_MAX];
	unsigned char addr[sizeof(struct in6_addr)];
	int port;

	if (yu_str(x, n, path, dst, dstlen, true) == -1)
		return -1;
	if (dst[0] == '\0')
		return 0;
	if (cfg_hostport(dst, host, sizeof(host), &port, 0) == -1)
		return yu_error(x, n, path,
		    "expected host:port (\"[v6]:port\" for IPv6), got \"%.64s\"", dst);
	if (numeric && inet_pton(AF_INET, host, addr) != 1 &&
	    inet_pton(AF_INET6, host, addr) != 1)
		return yu_error(x, n, path, "not a numeric address:port");
	return 0;
}

/* Apply one key of relay.caps. */
static int
relay_caps_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cfg_relay_caps *c = arg;

	switch ((enum relay_caps_key)key) {
	case RC_PER_DAY:
		return yu_int(x, v, path, 0, 100000, &c->per_day);
	case RC_PER_HOUR:
		return yu_int(x, v, path, 0, 100000, &c->per_hour);
	case RC_PER_RECIPIENT:
		return yu_int(x, v, path, 0, 100000, &c->per_recipient);
	case RC_PER_DOMAIN:
		return yu_int(x, v, path, 0, 100000, &c->per_domain);
	case RC_PER_CLIENT_IP:
		return yu_int(x, v, path, 0, 100000, &c->per_client_ip);
	case RC_PER_CLIENT_NETWORK:
		return yu_int(x, v, path, 0, 100000, &c->per_client_network);
	case RC_MAX_RECIPIENTS:
		return yu_int(x, v, path, 1, 100, &c->max_recipients);
	case RC_MAX_SIZE:
		return yu_num(x, v, path, 1, 1ull << 36, YU_KMG | YU_BYTES,
		    &c->max_size);
	case RC_COUNT:
		break;
	}
	return yu_error(x, v, path, "internal: unhandled key");
}

/* Apply one key of relay.timeouts. */
static int
relay_timeouts_key_cb(struct yu_ctx *x, int key, const char *path,
    yaml_node_t *v, void *arg)
{
	struct cfg_relay_timeouts *t = arg;
	int *dst[RT_COUNT] = { &t->connect, &t->greeting, &t->command, &t->data,
	    &t->attempt };

	return yu_int(x, v, path, 1, key == RT_ATTEMPT ? 86400 : 3600, dst[key]);
}

/* Apply one key of relay.test_mode. */
static int
relay_test_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cfg_relay *r = arg;

	if (key == RX_SERVER)
		return get_hostport(x, v, path, r->test_server,
		    sizeof(r->test_server), false);
	if (yu_str(x, v, path, r->test_recipient, sizeof(r->test_recipient),
	    true) == -1)
		return -1;
	if (r->test_recipient[0] && (strchr(r->test_recipient, '@') == NULL ||
	    strpbrk(r->test_recipient, " <>\r\n") != NULL))
		return yu_error(x, v, path, "expected an address like user@example.org");
	return 0;
}

/* Read relay.own_addresses: numeric IPv4/IPv6 addresses. */
static int
relay_own_addresses(struct yu_ctx *x, yaml_node_t *n, const char *path,
    struct cfg_relay *r)
{
	char (*tmp)[CFG_RELAY_ENTRY_MAX];
	unsigned char addr[sizeof(struct in6_addr)];
	char ipath[CFG_KEYPATH_MAX];
	int i, count = 0, rc = -1;

	if ((tmp = calloc(CFG_RELAY_LIST_MAX, sizeof(*tmp))) == NULL)
		return yu_error(x, n, path, "out of memory");
	if (get_list(x, n, path, tmp, &count, true) == -1)
		goto done;
	for (i = 0; i < count; i++) {
		snprintf(ipath, sizeof(ipath), "%s[%d]", path, i);
		if (strlen(tmp[i]) >= sizeof(r->own_addresses[0]) ||
		    (inet_pton(AF_INET, tmp[i], addr) != 1 &&
		    inet_pton(AF_INET6, tmp[i], addr) != 1)) {
			yu_error(x, n, ipath, "not a numeric IPv4 or IPv6 address: \"%.64s\"",
			    tmp[i]);
			goto done;
		}
		snprintf(r->own_addresses[i], sizeof(r->own_addresses[i]), "%s", tmp[i]);
	}
	r->nown = count;
	rc = 0;
done:
	free(tmp);
	return rc;
}

/* Apply one key of the relay section. */
static int
relay_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cfg_relay *r = arg;
	uint32_t seen;
	int m;

	switch ((enum relay_key)key) {
	case RK_MODE:
		if (yu_enum(x, v, path, relay_mode_names, 3, &m) == -1)
			return -1;
		r->mode = (enum relay_mode)m;
		return 0;
	case RK_RULES:
		return yu_str(x, v, path, r->rules, sizeof(r->rules), true);
	case RK_OWN_ADDRESSES:
		return relay_own_addresses(x, v, path, r);
	case RK_CAPS:
		return yu_map_walk(x, v, path, relay_caps_keys, RC_COUNT,
		    relay_caps_key_cb, &r->caps, &seen);
	case RK_NEVER_RELAY:
		return get_list(x, v, path, r->never_relay, &r->nnever, true);
	case RK_SMARTHOST:
		return get_hostport(x, v, path, r->smarthost,
		    sizeof(r->smarthost), false);
	case RK_IPV4_ONLY:
		return get_list(x, v, path, r->ipv4_only_domains,
		    &r->nipv4_only, true);
	case RK_DNS_SERVER:
		return get_hostport(x, v, path, r->dns_server,
		    sizeof(r->dns_server), true);
	case RK_MX_PORT:
		return yu_int(x, v, path, 1, 65535, &r->mx_port);
	case RK_TIMEOUTS:
		return yu_map_walk(x, v, path, relay_timeouts_keys, RT_COUNT,
		    relay_timeouts_key_cb, &r->timeouts, &seen);
	case RK_TEST_MODE:
		return yu_map_walk(x, v, path, relay_test_keys, RX_COUNT,
		    relay_test_key_cb, r, &seen);
	case RK_ALLOW_DEST:
		if (get_list(x, v, path, r->allow_destinations, &r->nallow, true) == -1)
			return -1;
		for (int i = 0; i < r->nallow; i++) {
			struct rdest_net n;
			if (rdest_net_parse(r->allow_destinations[i], &n) == -1)
				return yu_error(x, v, path, "not an address or a network "
				    "(\"127.0.0.0/8\", \"::1\"): \"%.64s\"",
				    r->allow_destinations[i]);
		}
		return 0;
	case RK_COUNT:
		break;
	}
	return yu_error(x, v, path, "internal: unhandled key");
}

/* Read a list of strings into a fixed table; -1 on error. */
static int
str_list(struct yu_ctx *x, yaml_node_t *n, const char *path, char *tab,
    size_t width, int max, int *count)
{
	yaml_node_item_t *it;
	yaml_node_t *v;
	char ipath[CFG_KEYPATH_MAX];
	int i = 0;

	if (n->type != YAML_SEQUENCE_NODE)
		return yu_error(x, n, path, "expected a list");
	for (it = n->data.sequence.items.start; it < n->data.sequence.items.top;
	    it++, i++) {
		snprintf(ipath, sizeof(ipath), "%s[%d]", path, i);
		if ((v = yaml_document_get_node(x->doc, *it)) == NULL)
			return yu_error(x, n, path, "malformed list");
		if (i >= max)
			return yu_error(x, v, ipath, "more than %d entries", max);
		if (yu_str(x, v, ipath, tab + (size_t)i * width, width, false) == -1)
			return -1;
	}
	*count = i;
	return 0;
}

/* Apply one key of the local_recipients section. */
static int
local_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct cfg_local *l = arg;

	if (key == LR_DOMAINS)
		return str_list(x, v, path, &l->domains[0][0], sizeof(l->domains[0]),
		    CFG_LOCAL_DOMAINS_MAX, &l->ndomains);
	return str_list(x, v, path, &l->users[0][0], sizeof(l->users[0]),
	    CFG_LOCAL_USERS_MAX, &l->nusers);
}

/* Apply one top-level key of the main config. */
static int
main_key_cb(struct yu_ctx *x, int key, const char *path, yaml_node_t *v,
    void *arg)
{
	struct main_state *ms = arg;
	struct cfg *c = ms->c;
	uint32_t seen;

	switch ((enum main_key)key) {
	case MK_HOSTNAME:
		return yu_str(x, v, path, c->hostname, sizeof(c->hostname),
		    true);
	case MK_SENSOR:
		return yu_str(x, v, path, c->sensor, sizeof(c->sensor), true);
	case MK_PERSONA:
		return yu_str(x, v, path, c->persona, sizeof(c->persona),
		    false);
	case MK_USER:
		return yu_str(x, v, path, c->user, sizeof(c->user), true);
	case MK_PORT_OFFSET:
		ms->offset_line = v->start_mark.line + 1;
		return yu_int(x, v, path, 0, 65534, &c->port_offset);
	case MK_LISTENERS:
		ms->listeners_set = true;
		return listeners_parse(x, v, path, c, ms->port_lines);
	case MK_TLS:
		return yu_map_walk(x, v, path, tls_keys, TK_COUNT, tls_key_cb, c,
		    &seen);
	case MK_SPOOL:
		return yu_map_walk(x, v, path, spool_keys, SK_COUNT, spool_key_cb,
		    c, &seen);
	case MK_SANDBOX:
		return yu_map_walk(x, v, path, sandbox_keys, SB_COUNT, sandbox_key_cb,
		    &c->sandbox, &seen);
	case MK_CLIENT_LOOKUP:
		return yu_map_walk(x, v, path, client_lookup_keys, CL_COUNT,
		    client_lookup_key_cb, &c->client_lookup, &seen);
	case MK_AMQP:
		if (yu_is_null(v)) {
			memset(&c->amqp, 0, sizeof(c->amqp));
			return 0;
		}
		return amqp_parse(x, v, path, &c->amqp);
	case MK_EVENT_LOG:
		return yu_str(x, v, path, c->event_log, sizeof(c->event_log),
		    true);
	case MK_AUTH:
		return yu_map_walk(x, v, path, auth_keys, AK_COUNT, auth_key_cb, c,
		    &seen);
	case MK_LIMITS:
		return yu_map_walk(x, v, path, limits_keys, LM_COUNT,
		    limits_key_cb, &c->limits, &seen);
	case MK_FEED:
		if (yu_is_null(v)) {
			memset(&c->feed, 0, sizeof(c->feed));
			return 0;
		}
		return feed_parse(x, v, path, &c->feed);
	case MK_RELAY:
		if (yu_is_null(v))
			return 0;
		return yu_map_walk(x, v, path, relay_keys, RK_COUNT, relay_key_cb,
		    &c->relay, &seen);
	case MK_LOCAL:
		if (yu_is_null(v)) {
			c->local.ndomains = 0;	/* null: no local domains at all */
			c->local.nusers = 0;
			return 0;
		}
		return yu_map_walk(x, v, path, local_keys, LR_COUNT, local_key_cb,
		    &c->local, &seen);
	case MK_METRICS:
		/* null or absent: off (an extra open port is a fingerprint) */
		memset(&c->metrics, 0, sizeof(c->metrics));
		if (yu_is_null(v))
			return 0;
		snprintf(c->metrics.address, sizeof(c->metrics.address), "127.0.0.1");
		if (yu_map_walk(x, v, path, metrics_keys, MX_COUNT, metrics_key_cb,
		    &c->metrics, &seen) == -1 ||
		    yu_missing(x, v, path, metrics_keys, 1u << MX_PORT, seen) == -1)
			return -1;
		c->metrics.enabled = true;
		return 0;
	case MK_ANALYSIS:
		if (yu_is_null(v))
			return 0;
		return yu_map_walk(x, v, path, analysis_keys, AN_COUNT, analysis_key_cb,
		    &c->analysis, &seen);
	case MK_COUNT:
		break;
	}
	return yu_error(x, v, path, "internal: unhandled key");
}

/* Fill c with the embedded defaults. */
void
cfg_defaults(struct cfg *c)
{
	static const struct {
		int		 port;
		enum tls_mode	 tls;
		const char	*name;
	} dl[] = {
		{ 25, TLS_MODE_STARTTLS, "smtp" },
		{ 465, TLS_MODE_IMPLICIT, "submissions" },
		{ 587, TLS_MODE_STARTTLS, "submission" },
	};
	size_t i, n;

	memset(c, 0, sizeof(*c));
	snprintf(c->persona, sizeof(c->persona), "postfix-3.7");
	snprintf(c->user, sizeof(c->user), "nobody");
	c->local.ndomains = -1;		/* the hostname and localhost */
	c->local.nusers = -1;		/* Debian's passwd users and aliases */
	/*
	 * Every port on 0.0.0.0 and on [::] (v6-only), as a stock Postfix with
	 * inet_protocols = all; the IPv6 ones are skipped on a host without IPv6.
	 */
	n = sizeof(dl) / sizeof(dl[0]);
	for (i = 0; i < 2 * n; i++) {
		snprintf(c->listeners[i].address,
		    sizeof(c->listeners[i].address), "%s", i < n ? "0.0.0.0" : "::");
		c->listeners[i].port = dl[i % n].port;
		c->listeners[i].tls = dl[i % n].tls;
		snprintf(c->listeners[i].name, sizeof(c->listeners[i].name),
		    "%s", dl[i % n].name);
		c->listeners[i].if_available = i >= n;
		c->listeners[i].policy = dl[i % n].port == 25 ?
		    LISTENER_POLICY_RELAY : LISTENER_POLICY_SUBMISSION;
	}
	c->nlisteners = (int)i;
	snprintf(c->tls_cert, sizeof(c->tls_cert), "tls/cert.pem");
	snprintf(c->tls_key, sizeof(c->tls_key), "tls/key.pem");
	snprintf(c->spool_dir, sizeof(c->spool_dir), "spool");
	c->sandbox.seccomp = true;
	c->sandbox.chroot[0] = '\0';
	c->client_lookup.enabled = true;
	c->analysis.enabled = true;
	c->analysis.store_attachments = true;
	c->analysis.attachment_max = ANALYSIS_ATTACHMENT_MAX_DEFAULT;
	c->analysis.campaigns_max = CAMPAIGN_MAX_DEFAULT;
	c->client_lookup.dns_server[0] = '\0';
	c->client_lookup.timeout_ms = 10000;
	c->spool_min_free = SPOOL_MIN_FREE_DEFAULT;
	c->spool_max_bytes = 0;
	c->journal_segment = SPOOL_JOURNAL_SEG_DEFAULT;
	c->journal_keep = SPOOL_JOURNAL_KEEP_DEFAULT;
	snprintf(c->event_log, sizeof(c->event_log), "fosr-events.json");
	/* Accepting everything is a honeypot's loudest tell: the shipped policy. */
	c->auth_outcome = AUTH_OUTCOME_POLICY;
	c->auth_accept_after = 1;
	c->auth_memory_ttl = AUTHMEM_TTL_DEFAULT;
	c->limits.line_length = SMTP_LINE_DEFAULT;
	c->limits.message_size = SMTP_MSG_SIZE_DEFAULT;
	c->limits.recipients = SMTP_RCPT_DEFAULT;
	c->limits.soft_errors = SMTP_SOFT_ERRORS_DEFAULT;
	c->limits.hard_errors = SMTP_HARD_ERRORS_DEFAULT;
	c->limits.error_sleep = SMTP_ERROR_SLEEP_DEFAULT;
	c->limits.idle_timeout = SMTP_IDLE_DEFAULT;
	c->limits.session_lifetime = SMTP_LIFETIME_DEFAULT;
	c->limits.sessions = SMTP_SESSIONS_DEFAULT;
	c->limits.sessions_per_ip = SMTP_SESSIONS_IP_DEFAULT;
	c->limits.banner_delay_ms = 0;
	c->limits.banner_jitter_ms = 0;
	c->relay.mode = RELAY_MODE_DRY_RUN;
	/* "" = the shipped etc/rules.yml, built into the binary (rules_default.c). */
	c->relay.rules[0] = '\0';
	c->relay.caps.per_day = 20;
	c->relay.caps.per_hour = 10;
	c->relay.caps.per_recipient = 5;
	c->relay.caps.per_domain = 10;
	c->relay.caps.per_client_ip = 10;
	c->relay.caps.per_client_network = -1;	/* a quarter of per_day */
	c->relay.caps.max_recipients = 1;
	c->relay.caps.max_size = 1024 * 1024;
	for (i = 0; i < sizeof(never_relay_defaults) / sizeof(never_relay_defaults[0]); i++)
		snprintf(c->relay.never_relay[i], sizeof(c->relay.never_relay[i]), "%s",
		    never_relay_defaults[i]);
	c->relay.nnever = (int)i;
	snprintf(c->relay.ipv4_only_domains[0], sizeof(c->relay.ipv4_only_domains[0]),
	    "gmail.com");
	snprintf(c->relay.ipv4_only_domains[1], sizeof(c->relay.ipv4_only_domains[1]),
	    "googlemail.com");
	c->relay.nipv4_only = 2;
	c->relay.mx_port = 25;
	c->relay.timeouts.connect = 30;
	c->relay.timeouts.greeting = 60;
	c->relay.timeouts.command = 60;
	c->relay.timeouts.data = 120;
	c->relay.timeouts.attempt = 600;
}

/*
 * Load a main config from len bytes of buf over c; name is used in messages
 * and stored in c->path.  c is changed only on success.  Returns 0, or -1
 * with err filled.
 */
int
cfg_load_buf(struct cfg *c, const char *name, const char *buf, size_t len,
    char *err, size_t errlen)
{
	struct yu_ctx x = { .name = name, .err = err, .errlen = errlen };
	struct main_state *ms = NULL;
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	char path[CFG_KEYPATH_MAX];
	uint32_t seen;
	int i, r, rc = -1;
	bool have_doc = false;

	if (errlen > 0)
		err[0] = '\0';
	if (strlen(name) >= sizeof(c->path)) {
		snprintf(err, errlen, "config file name too long");
		return -1;
	}
	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "%s: out of memory", name);
		return -1;
	}
	if ((ms = calloc(1, sizeof(*ms))) == NULL ||
	    (ms->c = malloc(sizeof(*ms->c))) == NULL) {
		snprintf(err, errlen, "%s: out of memory", name);
		goto done;
	}
	*ms->c = *c;
	x.doc = &doc;
	if ((r = yu_doc_load(&x, &parser, &doc, buf, len)) == -1)
		goto done;
	have_doc = r == 1;
	if (have_doc) {
		root = yaml_document_get_root_node(&doc);
		if (!yu_is_null(root) && yu_map_walk(&x, root, "", main_keys,
		    MK_COUNT, main_key_cb, ms, &seen) == -1)
			goto done;
	}
	/* Every listener port must stay valid once the offset is added. */
	for (i = 0; i < ms->c->nlisteners; i++) {
		long p = (long)ms->c->listeners[i].port + ms->c->port_offset;
		size_t line;

		if (p >= 1 && p <= 65535)
			continue;
		if (ms->listeners_set) {
			line = ms->port_lines[i];
			snprintf(path, sizeof(path), "listeners[%d].port", i);
		} else {
			line = ms->offset_line;
			snprintf(path, sizeof(path), "port_offset");
		}
		yu_error_line(&x, line, path,
		    "port %d + port_offset %d = %ld is out of range (1..65535)",
		    ms->c->listeners[i].port, ms->c->port_offset, p);
		goto done;
	}
	snprintf(ms->c->path, sizeof(ms->c->path), "%s", name);
	*c = *ms->c;
	rc = 0;
done:
	if (have_doc)
		yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	if (ms != NULL)
		free(ms->c);
	free(ms);
	return rc;
}

/* Load the main config file at path over c (see cfg_load_buf()). */
int
cfg_load(struct cfg *c, const char *path, char *err, size_t errlen)
{
	char *buf;
	size_t len;
	int rc;

	if (yu_read_file(path, &buf, &len, err, errlen) == -1)
		return -1;
	rc = cfg_load_buf(c, path, buf, len, err, errlen);
	free(buf);
	return rc;
}

/*
 * Load a feed config (the seed's keys at the top level) from len bytes of
 * buf into f; f is changed only on success.  Returns 0, or -1 with err filled.
 */
int
cfg_load_feed_buf(struct cfg_feed *f, const char *name, const char *buf,
    size_t len, char *err, size_t errlen)
{
	struct yu_ctx x = { .name = name, .err = err, .errlen = errlen };
	struct cfg_feed *tmp = NULL;
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	int r, rc = -1;
	bool have_doc = false;

	if (errlen > 0)
		err[0] = '\0';
	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "%s: out of memory", name);
		return -1;
	}
	if ((tmp = calloc(1, sizeof(*tmp))) == NULL) {
		snprintf(err, errlen, "%s: out of memory", name);
		goto done;
	}
	x.doc = &doc;
	if ((r = yu_doc_load(&x, &parser, &doc, buf, len)) == -1)
		goto done;
	have_doc = r == 1;
	if (!have_doc) {
		snprintf(err, errlen, "%s: empty feed config (needs broker, "
		    "port, identity, secret, channels)", name);
		goto done;
	}
	root = yaml_document_get_root_node(&doc);
	if (feed_parse(&x, root, "", tmp) == -1)
		goto done;
	*f = *tmp;
	rc = 0;
done:
	if (have_doc)
		yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	free(tmp);
	return rc;
}

/* Load the feed config file at path into f (see cfg_load_feed_buf()). */
int
cfg_load_feed(struct cfg_feed *f, const char *path, char *err, size_t errlen)
{
	char *buf;
	size_t len;
	int rc;

	if (yu_read_file(path, &buf, &len, err, errlen) == -1)
		return -1;
	rc = cfg_load_feed_buf(f, path, buf, len, err, errlen);
	free(buf);
	return rc;
}

/* The configuration word for a TLS mode. */
const char *
cfg_tls_mode_name(enum tls_mode m)
{
	if ((unsigned)m < sizeof(tls_mode_names) / sizeof(tls_mode_names[0]))
		return tls_mode_names[m];
	return "unknown";
}

/* The configuration word for a listener policy. */
const char *
cfg_listener_policy_name(enum listener_policy p)
{
	if ((unsigned)p < sizeof(policy_names) / sizeof(policy_names[0]))
		return policy_names[p];
	return "?";
}

/* The configuration word for an AUTH outcome. */
const char *
cfg_auth_outcome_name(enum auth_outcome o)
{
	if ((unsigned)o < sizeof(auth_names) / sizeof(auth_names[0]))
		return auth_names[o];
	return "unknown";
}

/* The configuration word for a relay mode. */
const char *
cfg_relay_mode_name(enum relay_mode m)
{
	if ((unsigned)m < sizeof(relay_mode_names) / sizeof(relay_mode_names[0]))
		return relay_mode_names[m];
	return "unknown";
}

/* A configured file: relative paths are resolved beside the config file. */
static void
cfg_beside(const struct cfg *c, const char *file, char *out, size_t outlen)
{
	const char *slash;

	if (file[0] == '\0') {
		snprintf(out, outlen, "%s", "");
		return;
	}
	if (file[0] == '/' || c->path[0] == '\0' || (slash = strrchr(c->path, '/')) == NULL) {
		snprintf(out, outlen, "%s", file);
		return;
	}
	snprintf(out, outlen, "%.*s/%s", (int)(slash - c->path), c->path, file);
}

void
cfg_auth_credentials_path(const struct cfg *c, char *out, size_t outlen)
{
	cfg_beside(c, c->auth_credentials, out, outlen);
}

/* The rules file path: relative paths are resolved beside the config file. */
void
cfg_relay_rules_path(const struct cfg *c, char *out, size_t outlen)
{
	const char *slash;

	if (c->relay.rules[0] == '\0') {
		snprintf(out, outlen, "%s", "");
		return;
	}
	if (c->relay.rules[0] == '/' || c->path[0] == '\0' ||
	    (slash = strrchr(c->path, '/')) == NULL) {
		snprintf(out, outlen, "%s", c->relay.rules);
		return;
	}
	snprintf(out, outlen, "%.*s/%s", (int)(slash - c->path), c->path,
	    c->relay.rules);
}
