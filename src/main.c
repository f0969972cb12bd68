/*
 * fosr-collector: command line, configuration, binding, TLS keys, privilege
 * drop, signals and the event loop.  Everything else hangs off the
 * smtp_server built here.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "analysis.h"
#include "analysis_worker.h"
#include "charsets.h"
#include "config.h"
#include "console.h"
#include "dns.h"
#include "relay.h"
#include "rules.h"
#include "sandbox.h"
#include "amqp.h"
#include "hpfeeds.h"
#include "hpfeeds_sub.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "persona.h"
#include "smtp_session.h"
#include "spool.h"
#include "tls.h"
#include "util.h"

#define STOP_POLL_MS	100
#define STOP_GRACE_S	35

struct fosr {
	struct event_base	*base;
	struct event		*log_ev;	/* end of pass: write the gathered log lines */
	struct cfg		 cfg;
	struct smtp_server	*srv;
	SSL_CTX			*ssl_ctx;
	struct spool		*spool;
	struct dns		*dns;
	struct listeners	*ls;
	struct hpf		*hpf;
	struct amq		*amq;
	struct relay		*relay;
	struct aw		*aw;		/* the analysis worker (issue 15) */
	struct event		*sig_term, *sig_int, *sig_hup, *stop_timer;
	int			 stop_ticks;
	char			 hostname[CFG_NAME_MAX];
};

/* The command line. */
struct args {
	const char		*config, *feed;
	bool			 check, debug, subscribe, interactive, test_mode;
};

static void	 usage(FILE *);
static int	 parse_args(int, char **, struct args *);
static int	 load_config(struct fosr *, const struct args *, int, char **,
		    struct passwd **);
static void	 setup_process(struct fosr *);
static void	 setup_signals(struct fosr *);
static void	 setup_server(struct fosr *, const char *config);
static void	 setup_analysis(struct fosr *);
static void	 setup_charsets(struct fosr *);
static void	 setup_resolver(struct fosr *);
static void	 drop_to_user(struct fosr *, const struct passwd *, struct sandbox_opts *);
static void	 open_outputs(struct fosr *, bool test_mode);
static void	 set_aside_stale_cursors(struct fosr *);
static void	 announce(struct fosr *, const struct sandbox_opts *);
static void	 teardown(struct fosr *);
static void	 on_mail_cb(void *, const char *, size_t);
static void	 journal_limit_cb(void *, uint64_t *, uint64_t *);
static void	 signal_cb(evutil_socket_t, short, void *);
static void	 stop_cb(evutil_socket_t, short, void *);
static void	 log_flush_cb(evutil_socket_t, short, void *);
static void	 log_kick(void *);
static void	 drop_privileges(struct fosr *, const struct passwd *);
static void	 prepare_paths(struct fosr *, const struct passwd *);
static void	 tls_choose(struct cfg *);

/* A capture is durable: hand it to the publisher and the relay. */
static void
on_mail_cb(void *arg, const char *record, size_t len)
{
	struct fosr *f = arg;

	if (f->hpf)
		hpf_on_mail(f->hpf, record, len);
	amq_kick(f->amq);
	if (f->relay)
		relay_consider(f->relay, record, len);
	aw_kick(f->aw);
}

/* The publisher reads the live journal only up to its acknowledged lines. */
static void
journal_limit_cb(void *arg, uint64_t *ino, uint64_t *len)
{
	spool_journal_committed(arg, ino, len);
}

/* Print the usage text. */
static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: fosr-collector [-dh] [-c config.yml] [-f feed_config.yml] [--check-config]\n"
	    "\n"
	    "A fake open SMTP relay that captures spam (25, 465 implicit TLS, 587 STARTTLS).\n"
	    "It runs in the foreground and logs to stderr; without -c it uses its embedded\n"
	    "defaults (ports 25/465/587, ./spool, ./fosr-events.json, ./tls/).\n"
	    "\n"
	    "  -c, --config FILE       main configuration (YAML); see etc/fosr-collector.yml\n"
	    "      --check-config      validate the configuration (and -f file) and exit\n"
	    "  -d, --debug             debug log with a protocol trace of every session\n"
	    "  -f, --feed-config FILE  hpfeeds broker config (the seed's feed_config.yml)\n"
	    "  -i, --interactive       review console over the spool: list, show, verify the\n"
	    "                          relay decision, send one (no listeners are started)\n"
	    "  -t, --testMode          relay every probe to relay.test_mode.recipient through\n"
	    "                          relay.test_mode.server instead of the real MX\n"
	    "      --feed-subscribe    subscribe to the feed's channels with its identity and\n"
	    "                          print each payload as a JSON line (sha256 verified)\n"
	    "      --analyse FILE...   print what is inside each mail (attachments, URLs,\n"
	    "                          addresses, headers, text fingerprint) as JSON lines\n"
	    "      --campaigns TABLE   with --analyse: assign campaigns in this table file\n"
	    "      --version           print the version and exit\n"
	    "  -h, --help              this text\n");
}

int
main(int argc, char **argv)
{
	static struct fosr f;
	struct passwd *pw = NULL;
	struct sandbox_opts sbx;
	struct args a;
	int rc;

	if ((rc = parse_args(argc, argv, &a)) >= 0)
		return rc;
	log_init(a.debug ? LOG_LVL_DEBUG : LOG_LVL_INFO);
	if ((rc = load_config(&f, &a, argc, argv, &pw)) >= 0)
		return rc;
	setup_process(&f);
	setup_signals(&f);
	setup_server(&f, a.config);
	setup_analysis(&f);
	setup_charsets(&f);
	setup_resolver(&f);
	drop_to_user(&f, pw, &sbx);
	open_outputs(&f, a.test_mode);
	set_aside_stale_cursors(&f);
	announce(&f, &sbx);

	event_base_dispatch(f.base);

	teardown(&f);
	log_info("fosr-collector stopped");
	return 0;
}

/*
 * The command line into a.  -1: go on; else the exit status (--help,
 * --version, a usage error).
 */
static int
parse_args(int argc, char **argv, struct args *a)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "debug", no_argument, NULL, 'd' },
		{ "feed-config", required_argument, NULL, 'f' },
		{ "interactive", no_argument, NULL, 'i' },
		{ "testMode", no_argument, NULL, 't' },
		{ "test-mode", no_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'V' },
		{ "feed-subscribe", no_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ "analyse", required_argument, NULL, 'A' },
		{ "analyze", required_argument, NULL, 'A' },
		{ "campaigns", required_argument, NULL, 'K' },
		{ NULL, 0, NULL, 0 },
	};
	const char *analyse = NULL, *campaigns = NULL;
	int ch;

	memset(a, 0, sizeof(*a));
	while ((ch = getopt_long(argc, argv, "c:df:hit", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			a->config = optarg;
			break;
		case 'C':
			a->check = true;
			break;
		case 'd':
			a->debug = true;
			break;
		case 'f':
			a->feed = optarg;
			break;
		case 'i':
			a->interactive = true;
			break;
		case 't':
			a->test_mode = true;
			break;
		case 'S':
			a->subscribe = true;
			break;
		case 'A':
			analyse = optarg;
			break;
		case 'K':
			campaigns = optarg;
			break;
		case 'V':
			printf("fosr-collector %s\n", FOSR_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (analyse != NULL) {
		/* --analyse FILE [FILE...]: the arguments left are files too */
		argv[optind - 1] = (char *)analyse;
		log_init(LOG_LVL_WARN);
		return analysis_cli(argv + optind - 1, argc - optind + 1, campaigns);
	}
	if (optind != argc) {
		fprintf(stderr, "fosr-collector: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	return -1;
}

/*
 * Load the configuration (and -f file) and the user to run as; run the modes
 * that end there (--feed-subscribe, --check-config, -i).  -1: go on and serve;
 * else the exit status.
 */
static int
load_config(struct fosr *f, const struct args *a, int argc, char **argv,
    struct passwd **pw)
{
	const char *config = a->config;
	char err[1024];

	cfg_defaults(&f->cfg);
	if (config && cfg_load(&f->cfg, config, err, sizeof(err)) == -1) {
		fprintf(stderr, "fosr-collector: %s\n", err);
		return 1;
	}
	if (a->feed && cfg_load_feed(&f->cfg.feed, a->feed, err, sizeof(err)) == -1) {
		fprintf(stderr, "fosr-collector: %s\n", err);
		return 1;
	}
	if (a->subscribe) {
		if (!f->cfg.feed.enabled) {
			fprintf(stderr, "fosr-collector: --feed-subscribe needs a broker: "
			    "-f feed_config.yml or a feed section in -c\n");
			return 2;
		}
		if (a->check) {
			printf("%s: configuration ok\n", f->cfg.feed.source);
			return 0;
		}
		return hpf_subscribe_main(&f->cfg.feed, argc, argv);
	}
	if (f->cfg.user[0] && geteuid() == 0 && (*pw = getpwnam(f->cfg.user)) == NULL) {
		fprintf(stderr, "fosr-collector: %s: user: no such user \"%s\"\n",
		    config ? config : "(embedded defaults)", f->cfg.user);
		return 1;
	}
	if (a->check) {
		/* The rules file is the operator's too: its errors now, not at the start. */
		if (f->cfg.relay.mode != RELAY_MODE_OFF) {
			char rpath[PATH_MAX];
			struct rules *ru;
			bool absent;

			ru = relay_rules_load(&f->cfg, rpath, sizeof(rpath), err, sizeof(err),
			    &absent);
			if (ru == NULL) {
				fprintf(stderr, "fosr-collector: %s\n", err);
				if (!absent)
					return 1;
			}
			rules_free(ru);
		}
		printf("%s: configuration ok\n", config ? config : "(embedded defaults)");
		return 0;
	}
	if (a->interactive)
		return console_main(&f->cfg, a->test_mode);
	return -1;
}

/* The host name, descriptor limit, threads and the event loop. */
static void
setup_process(struct fosr *f)
{
	struct event_config *ec;
	struct rlimit rl;

	if (f->cfg.hostname[0])
		snprintf(f->hostname, sizeof(f->hostname), "%s", f->cfg.hostname);
	else {
		/*
		 * Postfix's myhostname default (mail_params.c check_myhostname()):
		 * gethostname(), and a name without a dot gets ".localdomain"
		 * ($mydomain's default): "vm" is "vm.localdomain", as
		 * `postconf -d myhostname` says.  Never a bare "localhost".
		 */
		char h[256] = "";

		if (gethostname(h, sizeof(h) - 1) == -1 || !h[0])
			snprintf(h, sizeof(h), "localhost");
		snprintf(f->hostname, sizeof(f->hostname), "%.200s%s", h,
		    strchr(h, '.') ? "" : ".localdomain");
	}

	signal(SIGPIPE, SIG_IGN);
	/* Every session is a descriptor: take all the kernel allows. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	/*
	 * libevent's own lines ("Error from accept() call", ...) through our
	 * text log, escaped and rate-limited: by default it writes every one
	 * to stderr, a million in 5 s from a loop spinning on EMFILE.
	 */
	event_set_log_callback(log_libevent);
	if (evthread_use_pthreads() == -1)
		fatalx("evthread_use_pthreads failed");
	/*
	 * The epoll changelist folds the add/del pairs a bufferevent makes
	 * for every reply (write interest on, drained, off) into at most one
	 * epoll_ctl per descriptor and loop pass: measured ~10 epoll_ctl
	 * calls per mail without it.  No descriptor here is dup()ed, the
	 * one case where the changelist is unsafe.
	 */
	if ((ec = event_config_new()) == NULL)
		fatalx("out of memory");
	event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	f->base = event_base_new_with_config(ec);
	event_config_free(ec);
	if (f->base == NULL)
		fatalx("event_base_new failed");
}

/*
 * Signals first: a SIGTERM that arrives as soon as the ports listen
 * (systemd, a test) must still mean a graceful stop.  libevent holds it
 * until the loop runs, when everything below exists.
 */
static void
setup_signals(struct fosr *f)
{
	f->sig_term = evsignal_new(f->base, SIGTERM, signal_cb, f);
	f->sig_int = evsignal_new(f->base, SIGINT, signal_cb, f);
	f->sig_hup = evsignal_new(f->base, SIGHUP, signal_cb, f);
	f->stop_timer = event_new(f->base, -1, EV_PERSIST, stop_cb, f);
	if (!f->sig_term || !f->sig_int || !f->sig_hup || !f->stop_timer)
		fatalx("out of memory");
	evsignal_add(f->sig_term, NULL);
	evsignal_add(f->sig_int, NULL);
	evsignal_add(f->sig_hup, NULL);
}

/* The persona, the TLS keys, the server and its sockets (still privileged). */
static void
setup_server(struct fosr *f, const char *config)
{
	struct smtp_server_opts so;
	char err[1024];

	memset(&so, 0, sizeof(so));
	so.base = f->base;
	so.cfg = &f->cfg;
	so.hostname = f->hostname;
	if ((so.persona = persona_find(f->cfg.persona)) == NULL)
		fatalx("%s: persona: unknown persona \"%s\"",
		    config ? config : "(embedded defaults)", f->cfg.persona);

	/* Keys and sockets need the privileges we are about to give up. */
	tls_choose(&f->cfg);
	so.ssl_ctx = tls_server_ctx_new(f->cfg.tls_cert, f->cfg.tls_key, f->hostname,
	    err, sizeof(err));
	if (so.ssl_ctx == NULL)
		fatalx("tls: %s", err);
	{
		char subj[512], exp[32];

		tls_cert_summary(so.ssl_ctx, subj, sizeof(subj), exp, sizeof(exp));
		log_info("tls: certificate %s: subject \"%s\", expires %s",
		    f->cfg.tls_cert, subj, exp);
	}
	f->ssl_ctx = so.ssl_ctx;
	if ((f->srv = smtp_server_new(&so)) == NULL)
		fatalx("out of memory");
	if ((f->ls = listener_bind(f->srv, err, sizeof(err))) == NULL)
		fatalx("%s", err);
	if (f->cfg.metrics.enabled && metrics_listen(f->base, f->cfg.metrics.address,
	    f->cfg.metrics.port, err, sizeof(err)) == -1)
		fatalx("metrics: %s", err);
}

/* The analysis context: libmagic reads its database before the chroot. */
static void
setup_analysis(struct fosr *f)
{
	char err[1024];

	if (f->cfg.analysis.enabled &&
	    (f->aw = aw_new(&f->cfg.analysis, err, sizeof(err))) == NULL)
		fatalx("%s", err);
}

/*
 * glibc's charset modules, before the chroot: a conversion iconv_open()s its
 * module from /usr/lib/<arch>/gconv, not inside a chroot (charsets.h).  Done
 * with or without one: the same conversions either way, and no dlopen and
 * dlclose of a module as mails in different charsets come and go.
 */
static void
setup_charsets(struct fosr *f)
{
	char missing[256];
	int bad;

	bad = charsets_pin(f->aw != NULL, missing, sizeof(missing));
	if (bad > 0)
		log_warn("charsets: %d of the %zu listed charsets have no glibc "
		    "conversion (%s): their text is kept raw", bad, charsets_listed(),
		    missing);
}

/*
 * The client name lookup's resolver, before the chroot: c-ares reads
 * /etc/resolv.conf and keys its query IDs from /dev/urandom when the channel
 * is created, and without /dev/urandom (a chroot) from rand(), which GMime
 * seeds with time(NULL): the IDs of every daemon started in one second would
 * be the same, and known.  No thread, no socket yet (queries open theirs).
 * The relay's resolver and CA bundle too (relay_prepare), and the hpfeeds
 * and AMQP broker names' resolvers (hpf_prepare, amq_prepare).
 */
static void
setup_resolver(struct fosr *f)
{
	char err[1024];

	/* The relay's resolver and TLS client context, for the same reasons. */
	if (relay_prepare(f->base, &f->cfg, err, sizeof(err)) == -1)
		fatalx("relay: %s", err);
	/* The hpfeeds and AMQP brokers' name resolvers, for the same reasons. */
	if (hpf_prepare(f->base, &f->cfg.feed, err, sizeof(err)) == -1)
		fatalx("feed: %s", err);
	if (amq_prepare(&f->cfg.amqp, err, sizeof(err)) == -1)
		fatalx("amqp: %s", err);

	if (f->cfg.client_lookup.enabled) {
		/*
		 * The client name lookup: a resolver try waits 5 s at most
		 * (glibc's RES_TIMEOUT), and a third of the lookup's bound, so
		 * that a query (a try, then one twice as long) ends with the
		 * session's wait: a lookup given up leaves nothing for long.
		 */
		int try_ms = f->cfg.client_lookup.timeout_ms / 3;
		if (try_ms > 5000)
			try_ms = 5000;
		if ((f->dns = dns_new(f->base, f->cfg.client_lookup.dns_server, try_ms,
		    err, sizeof(err))) == NULL)
			fatalx("client_lookup: %s", err);
		smtp_server_set_dns(f->srv, f->dns);
	}
}

/* chroot, the bounding set, the spool's paths, the user, the capabilities. */
static void
drop_to_user(struct fosr *f, const struct passwd *pw, struct sandbox_opts *sbx)
{
	char err[1024];

	memset(sbx, 0, sizeof(*sbx));
	sbx->seccomp = f->cfg.sandbox.seccomp;
	sbx->chroot_dir = f->cfg.sandbox.chroot;
	if (sandbox_chroot(sbx, err, sizeof(err)) == -1 ||
	    sandbox_drop_bounding(err, sizeof(err)) == -1)
		fatalx("sandbox: %s", err);
	prepare_paths(f, pw);		/* after the chroot: paths are inside it */
	if (pw)
		drop_privileges(f, pw);
	/* Capabilities are per thread: drop them before any thread starts. */
	if (sandbox_drop_caps(err, sizeof(err)) == -1)
		fatalx("sandbox: %s", err);
}

/* The event log, the spool, the feed, the relay, credentials. */
static void
open_outputs(struct fosr *f, bool test_mode)
{
	struct smtp_stage_hooks hooks;
	struct spool_opts so;
	char err[1024];

	if (log_event_open(f->cfg.event_log, f->cfg.sensor[0] ? f->cfg.sensor : f->hostname,
	    err, sizeof(err)) == -1)
		fatalx("event log: %s", err);
	memset(&so, 0, sizeof(so));
	so.dir = f->cfg.spool_dir;
	so.maildir = f->cfg.maildir;
	so.hostname = f->hostname;
	so.min_free = f->cfg.spool_min_free;
	so.max_bytes = f->cfg.spool_max_bytes;
	so.journal_segment = f->cfg.journal_segment;
	so.journal_keep = f->cfg.journal_keep;
	if ((f->spool = spool_open(f->base, &so, err, sizeof(err))) == NULL)
		fatalx("spool: %s", err);
	smtp_server_set_spool(f->srv, f->spool);
	/*
	 * The analysis worker first: the parsed journal's readers (hpfeeds,
	 * AMQP) start on a file whose torn tail it has cut.  Its parsed journal
	 * and attachments count in spool.max_bytes; parsed.jsonl rotates as the
	 * reception journal does.
	 */
	if (f->aw != NULL) {
		aw_set_journal(f->aw, f->spool, f->cfg.journal_segment, f->cfg.journal_keep);
		if (aw_start(f->aw, f->cfg.spool_dir, journal_limit_cb, f->spool,
		    err, sizeof(err)) == -1)
			fatalx("%s", err);
	} else if (f->cfg.feed.parsed_channel[0] != '\0' || f->cfg.amqp.parsed)
		log_warn("analysis is off: feed.parsed_channel and amqp.parsed_routing_key "
		    "publish nothing new");

	if (f->cfg.feed.enabled) {
		if ((f->hpf = hpf_new(f->base, &f->cfg.feed, f->cfg.spool_dir,
		    smtp_server_persona(f->srv), f->hostname, err, sizeof(err))) == NULL)
			fatalx("feed: %s", err);
		hpf_set_journal_limit(f->hpf, journal_limit_cb, f->spool);
		hpf_set_sensor(f->hpf, f->cfg.sensor[0] ? f->cfg.sensor : f->hostname);
		if (hpf_set_event_log(f->hpf, f->cfg.event_log, err, sizeof(err)) == -1 ||
		    hpf_set_parsed(f->hpf, f->aw != NULL ? aw_parsed_committed : NULL,
		    f->aw, err, sizeof(err)) == -1)
			fatalx("feed: %s", err);
	}
	/* A thread: started here, before the sandbox (its filter covers every thread). */
	if (f->cfg.amqp.enabled && (f->amq = amq_new(f->base, &f->cfg.amqp,
	    f->cfg.spool_dir, f->cfg.sensor[0] ? f->cfg.sensor : f->hostname,
	    smtp_server_persona(f->srv), f->hostname, journal_limit_cb, f->spool,
	    err, sizeof(err))) == NULL)
		fatalx("amqp: %s", err);
	amq_set_parsed_limit(f->amq, f->aw != NULL ? aw_parsed_committed : NULL, f->aw);
	if ((f->relay = relay_new(f->base, &f->cfg, f->hostname, err, sizeof(err))) == NULL)
		fatalx("relay: %s", err);
	/* After the chroot, as the relay rules: SIGHUP reloads from the same place. */
	if (f->cfg.auth_outcome == AUTH_OUTCOME_POLICY) {
		if (smtp_server_load_auth(f->srv, err, sizeof(err)) == -1)
			fatalx("auth: credential policy: %s", err);
		log_info("auth: credential policy %s", err);
	}
	if (test_mode && relay_set_test_mode(f->relay, true, err, sizeof(err)) == -1)
		fatalx("%s", err);
	smtp_server_set_on_mail(f->srv, on_mail_cb, f);
	/* The rules decide at EHLO, AUTH, RSET and (before the commit) DATA. */
	memset(&hooks, 0, sizeof(hooks));
	hooks.wanted = relay_stage_wanted;
	hooks.stage_cb = relay_stage_cb;
	hooks.data_cb = relay_data_cb;
	hooks.data_cancel = relay_data_cancel;
	hooks.arg = f->relay;
	smtp_server_set_hooks(f->srv, &hooks);
}

/*
 * Every output has opened its cursors in <spool>/feed: a cursor there that
 * none opened belongs to an output removed from the configuration, and
 * would keep every journal segment from the one it points into forever.
 * Move those to feed/stale/ (outbox_set_aside_stale).  Outputs that open a
 * cursor in feed/ must do it before this step.
 */
static void
set_aside_stale_cursors(struct fosr *f)
{
	char feed[PATH_MAX];

	if (spool_path_dir(feed, sizeof(feed), f->cfg.spool_dir, SPOOL_DIR_FEED) == 0)
		(void)outbox_set_aside_stale(feed);
}

/* Enter the sandbox, start accepting, say so (log and event). */
static void
announce(struct fosr *f, const struct sandbox_opts *sbx)
{
	struct jbuf jb;
	char err[1024];

	/* Everything is open and every thread runs: from here only what serving needs. */
	if (sandbox_enter(sbx, err, sizeof(err)) == -1)
		fatalx("sandbox: %s", err);
	log_info("sandbox: seccomp=%s chroot=%s", sbx->seccomp ? "on" : "off",
	    sbx->chroot_dir && sbx->chroot_dir[0] ? sbx->chroot_dir : "none");

	listener_enable(f->ls);
	log_info("fosr-collector %s ready: hostname=%s persona=%s spool=%s listeners: %s",
	    FOSR_VERSION, f->hostname, smtp_server_persona(f->srv)->name, f->cfg.spool_dir,
	    listener_describe(f->ls));
	jb_init(&jb);
	log_event_begin(&jb, "fosr.collector.start", NULL);
	jb_kcstr(&jb, "version", FOSR_VERSION);
	jb_kcstr(&jb, "listeners", listener_describe(f->ls));
	log_event_message(&jb, "fosr-collector %s started: %s", FOSR_VERSION,
	    listener_describe(f->ls));
	log_event_emit(&jb);
	jb_free(&jb);

	/* From here the loop's log lines and events are written once per pass. */
	if ((f->log_ev = event_new(f->base, -1, 0, log_flush_cb, NULL)) != NULL)
		log_defer_start(log_kick, f->log_ev);
}

/* After the loop: close the sessions, then everything in reverse order. */
static void
teardown(struct fosr *f)
{
	struct jbuf jb;

	log_defer_stop();
	if (f->log_ev != NULL)
		event_free(f->log_ev);
	smtp_server_close_all(f->srv);
	dns_free(f->dns);	/* no session is left to call back */
	listener_free(f->ls);
	hpf_free(f->hpf);
	amq_free(f->amq);
	aw_free(f->aw);
	charsets_unpin();	/* after the analysis worker, which converts */
	relay_free(f->relay);
	spool_free(f->spool);
	metrics_shutdown();
	jb_init(&jb);
	log_event_begin(&jb, "fosr.collector.stop", NULL);
	log_event_message(&jb, "fosr-collector %s stopped", FOSR_VERSION);
	log_event_emit(&jb);
	jb_free(&jb);
	log_event_close();
	event_free(f->sig_term);
	event_free(f->sig_int);
	event_free(f->sig_hup);
	event_free(f->stop_timer);
	SSL_CTX_free(f->ssl_ctx);
	smtp_server_free(f->srv);	/* and its credential policy */
	event_base_free(f->base);
}

/*
 * Give the entry name of directory at (AT_FDCWD: name is a configured path)
 * to pw, as root, without following a symbolic link in its last component:
 * what lies below the spool is pw's, who could have put a link (or a hard
 * link) there to have root chown its target, any file of the system.  The
 * parents of a configured path are the operator's and are followed.  dir: a
 * directory (made first when it is missing), else a regular file, created
 * when create is set.  Returns the open directory (for its own entries), or
 * -1 for a file or a missing one; any other failure is fatal, naming shown.
 */
static int
prepare_own(int at, const char *name, const char *shown, bool dir, bool create,
    const struct passwd *pw)
{
	struct stat st;
	int fd;

	if (dir && create && mkdirat(at, name, 0750) == -1 && errno != EEXIST)
		fatalx("cannot create %s: %s", shown, strerror(errno));
	if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) == -1) {
		if (errno != ENOENT || dir)
			fatalx("cannot prepare %s: %s", shown, strerror(errno));
		if (!create)
			return -1;
	} else if (S_ISLNK(st.st_mode))
		fatalx("%s is a symbolic link: refusing to give its target to %s as root "
		    "(remove it, or configure the real path)", shown, pw->pw_name);
	else if (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
		fatalx("%s is not a %s: refusing to give it to %s as root", shown,
		    dir ? "directory" : "regular file", pw->pw_name);
	/* O_NOFOLLOW again: the entry may have been swapped since fstatat. */
	fd = openat(at, name, (dir ? O_RDONLY | O_DIRECTORY : O_WRONLY | O_APPEND | O_CREAT |
	    O_NONBLOCK) | O_NOFOLLOW | O_CLOEXEC, 0640);
	if (fd == -1 && errno == ELOOP)
		fatalx("%s is a symbolic link: refusing to give its target to %s as root "
		    "(remove it, or configure the real path)", shown, pw->pw_name);
	if (fd == -1 || fstat(fd, &st) == -1)
		fatalx("cannot open %s: %s", shown, strerror(errno));
	if (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
		fatalx("%s is not a %s: refusing to give it to %s as root", shown,
		    dir ? "directory" : "regular file", pw->pw_name);
	if (!dir && st.st_nlink > 1)
		fatalx("%s has %ju hard links: refusing to give it to %s as root", shown,
		    (uintmax_t)st.st_nlink, pw->pw_name);
	if (fchown(fd, pw->pw_uid, pw->pw_gid) == -1)
		fatalx("cannot give %s to %s: %s", shown, pw->pw_name, strerror(errno));
	if (!dir) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Create the spool directory and event log before the privilege drop, owned
 * by the unprivileged user, so it can write them afterwards.  Nothing is
 * chowned through a symbolic link (prepare_own).
 */
static void
prepare_paths(struct fosr *f, const struct passwd *pw)
{
	const char *subdirs[] = { SPOOL_DIR_TMP, SPOOL_DIR_MESSAGES, SPOOL_DIR_SEGMENTS,
	    SPOOL_DIR_FEED, SPOOL_DIR_RELAY };
	char path[PATH_MAX + 32];
	int sfd;

	if (util_mkdirs(f->cfg.spool_dir, 0750) == -1)
		fatalx("spool: cannot create %s: %s", f->cfg.spool_dir, strerror(errno));
	if (pw == NULL)
		return;
	sfd = prepare_own(AT_FDCWD, f->cfg.spool_dir, f->cfg.spool_dir, true, false, pw);
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		(void)spool_path_dir(path, sizeof(path), f->cfg.spool_dir, subdirs[i]);
		close(prepare_own(sfd, subdirs[i], path, true, true, pw));
	}
	(void)spool_path_journal(path, sizeof(path), f->cfg.spool_dir);
	(void)prepare_own(sfd, SPOOL_JOURNAL_NAME, path, false, false, pw);
	close(sfd);
	if (f->cfg.maildir[0]) {
		if (util_mkdirs(f->cfg.maildir, 0750) == -1)
			fatalx("maildir: cannot prepare %s: %s", f->cfg.maildir, strerror(errno));
		close(prepare_own(AT_FDCWD, f->cfg.maildir, f->cfg.maildir, true, false, pw));
	}
	if (f->cfg.event_log[0])
		(void)prepare_own(AT_FDCWD, f->cfg.event_log, f->cfg.event_log, false, true, pw);
}

/* Become pw for good: groups, gid, uid; verify root cannot be regained. */
static void
drop_privileges(struct fosr *f, const struct passwd *pw)
{
	if (setgroups(1, &pw->pw_gid) == -1 ||
	    setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) == -1 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) == -1)
		fatalx("cannot drop privileges to %s: %s", pw->pw_name, strerror(errno));
	if (pw->pw_uid != 0 && (setuid(0) != -1 || seteuid(0) != -1))
		fatalx("privilege drop to %s did not stick", pw->pw_name);
	log_info("running as user %s (uid %u)", pw->pw_name, (unsigned)pw->pw_uid);
}

/* End of a loop pass: write the log lines and events it gathered. */
static void
log_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	log_flush();
}

/*
 * No tls paths configured: the seed told its users to make cert.pem and
 * key.pem "inside this directory"; use them when both are here rather than
 * generating another pair under tls/.
 */
static void
tls_choose(struct cfg *c)
{
	int have;

	if (c->tls_configured || (have = tls_seed_files()) == 0)
		return;
	if (have != 3) {
		log_warn("tls: %s is here but %s is not: not using it (using %s)",
		    have == 1 ? TLS_SEED_CERT : TLS_SEED_KEY,
		    have == 1 ? TLS_SEED_KEY : TLS_SEED_CERT, c->tls_cert);
		return;
	}
	snprintf(c->tls_cert, sizeof(c->tls_cert), "%s", TLS_SEED_CERT);
	snprintf(c->tls_key, sizeof(c->tls_key), "%s", TLS_SEED_KEY);
}

/* A log line waits: have it written at the end of this loop pass. */
static void
log_kick(void *arg)
{
	event_active(arg, EV_TIMEOUT, 0);
}

/* SIGTERM/SIGINT: graceful stop.  SIGHUP: reopen the event log, reload rules and credentials. */
static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct fosr *f = arg;
	struct timeval tv = { 0, STOP_POLL_MS * 1000 };

	if (sig == SIGHUP) {
		log_info("SIGHUP: reopening the event log");
		log_event_reopen();
		relay_reload_rules(f->relay);
		if (f->cfg.auth_outcome == AUTH_OUTCOME_POLICY) {
			char err[512];
			if (smtp_server_load_auth(f->srv, err, sizeof(err)) == -1)
				log_warn("auth: credential policy: %s (keeping the previous rules)",
				    err);
			else
				log_info("auth: credential policy reloaded %s", err);
		}
		return;
	}
	if (smtp_server_stopping(f->srv)) {
		log_info("second signal: stopping now");
		event_base_loopexit(f->base, NULL);
		return;
	}
	log_info("signal %d: stopping (sessions in DATA may finish)", (int)sig);
	listener_disable(f->ls);
	smtp_server_stop(f->srv);
	evtimer_add(f->stop_timer, &tv);
}

/* During a stop: leave the loop once every session is gone or time is up. */
static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fosr *f = arg;

	f->stop_ticks++;
	if (smtp_server_sessions(f->srv) == 0 || f->stop_ticks * STOP_POLL_MS > STOP_GRACE_S * 1000)
		event_base_loopexit(f->base, NULL);
}
