#!/bin/sh
# Private, throw-away Postfix 3.7 instance for recording/differential tests.
#
#   postfix_private.sh start [DIR]   create DIR (default: mktemp), start Postfix,
#                                    print shell-style KEY=VALUE lines on stdout:
#                                      PF_DIR PF_PORT PF_TLSPORT PF_LOCALPORT PF_PID
#                                    (also written to DIR/env)
#   postfix_private.sh stop DIR      stop the instance (files are kept)
#   postfix_private.sh clean DIR     stop and remove DIR
#
# Environment: PF_EXTRA_MAIN  extra main.cf settings, one "name = value" a line
#                            (applied with postconf -e, so they override).
#              PF_LOCAL_OPTS  master.cf -o settings of PF_LOCALPORT only
#              PF_TLS_OPTS    master.cf -o settings of PF_TLSPORT, after its own
#                            (e.g. the rest of Debian's submissions template)
#              PF_HOSTNAME    myhostname (default mail.example.com)
#
# Services (all on 127.0.0.1, ports chosen free):
#   PF_PORT       plain smtpd, STARTTLS offered
#   PF_TLSPORT    smtpd with smtpd_tls_wrappermode=yes (implicit TLS, like 465)
#   PF_LOCALPORT  like PF_PORT, with the settings of PF_LOCAL_OPTS (words
#                 "name=value", each a master.cf -o; none by default): the
#                 test that needs a short timeout or a small size limit sets
#                 them here and identically on the other side
# The configuration is the stock one of Debian 12's "Internet Site" setup
# (/usr/share/postfix/main.cf.debian + main.cf.tls, /etc/postfix/master.cf.proto
# with its submissions template), changed only where it must: a private open
# relay on loopback (mynetworks, smtpd_relay_restrictions, inet_interfaces,
# ports), private paths (queue, data, TLS files, SASL), discard transports.
# For local-recipient checks (550 User unknown) start a second instance with
#   PF_EXTRA_MAIN='mydestination = $myhostname'  (address classes are decided
#   by trivial-rewrite, so a per-service -o mydestination would not work).
# Nothing system-wide is touched, nor read for the answers: aliases and the local
# recipient table are the instance's own (a stock Debian 12's, built at start),
# and no tool reads /etc/postfix/main.cf (a Postfix with "No configuration" has none).
# Requires root (Postfix drops privileges to the "postfix" user itself).
set -eu

die() { echo "postfix_private: $*" >&2; exit 1; }

need_packages() {
	missing=""
	for p in postfix sasl2-bin libsasl2-modules; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		echo "postfix_private: installing$missing" >&2
		# shellcheck disable=SC2086 # word splitting wanted: a package list
		DEBIAN_FRONTEND=noninteractive apt-get install -y $missing >&2 ||
			die "cannot install$missing"
	fi
}

# A port below the kernel's ephemeral range: a bind(0) pick, once released, may
# be given to any outgoing connection before Postfix binds it.
free_port() {
	/usr/bin/python3 -c 'import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
while True:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randrange(10000, low) if low > 11024 else 0))
    except OSError:
        s.close()
        continue
    print(s.getsockname()[1]); s.close(); break'
}

wait_port() {
	/usr/bin/python3 - "$1" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
for _ in range(100):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        s.close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
}

do_start() {
	[ "$(id -u)" = 0 ] || die "must run as root"
	need_packages
	id postfix >/dev/null 2>&1 || die "no postfix user"
	getent group postdrop >/dev/null || die "no postdrop group"

	dir=${1:-}
	if [ -z "$dir" ]; then
		dir=$(mktemp -d /tmp/pfpriv.XXXXXX)
	fi
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	chmod 755 "$dir"
	# The postfix user must reach the queue: every parent must be searchable
	# (mktemp -d makes 0700 directories, which fails with a bare "Permission denied").
	p=$dir
	while [ "$p" != / ]; do
		p=$(dirname "$p")
		[ "$(stat -c %A "$p" | cut -c10)" = x ] || [ "$(stat -c %A "$p" | cut -c10)" = t ] ||
			die "$p is not searchable by others (chmod o+x it): the postfix user cannot reach $dir"
	done
	host=${PF_HOSTNAME:-mail.example.com}
	conf=$dir/etc
	mkdir -p "$conf" "$conf/sasl" "$dir/queue" "$dir/data" "$dir/tls"
	chown postfix:postfix "$dir/data"

	port=$(free_port)
	tlsport=$(free_port)
	localport=$(free_port)
	while [ "$tlsport" = "$port" ]; do tlsport=$(free_port); done
	while [ "$localport" = "$port" ] || [ "$localport" = "$tlsport" ]; do
		localport=$(free_port)
	done

	# Self-signed certificate, like Debian's snakeoil one.
	if [ ! -s "$dir/tls/cert.pem" ]; then
		openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
			-subj "/CN=$host" -keyout "$dir/tls/key.pem" \
			-out "$dir/tls/cert.pem" >/dev/null 2>&1 || die "openssl failed"
		chmod 600 "$dir/tls/key.pem"
	fi

	# Cyrus SASL with a private sasldb.  Debian's smtpd reads
	# $config_directory/sasl/smtpd.conf (cyrus_sasl_config_path is not enough).
	cat > "$conf/sasl/smtpd.conf" <<SASL
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN CRAM-MD5
sasldb_path: $dir/sasldb2
SASL
	rm -f "$dir/sasldb2"
	echo "password" | saslpasswd2 -f "$dir/sasldb2" -p -c -u "$host" user ||
		die "saslpasswd2 failed"
	chown postfix:postfix "$dir/sasldb2"
	chmod 640 "$dir/sasldb2"

	# The local recipient table of a stock Debian 12 Postfix, private: the
	# machine's own /etc/aliases may have no aliases.db (a Postfix installed
	# with "No configuration" has none: every local lookup then answers
	# "451 4.3.0 Temporary lookup failure") and its passwd may hold anybody.
	# So: Debian's /etc/aliases as its postinst writes it, and the accounts
	# of a fresh Debian 12 (base-passwd, plus postfix), each built here.
	cat > "$conf/aliases" <<'ALIASES'
# See man 5 aliases for format
postmaster:    root
ALIASES
	for u in root daemon bin sys sync games man lp mail news uucp proxy www-data \
	    backup list irc _apt nobody postfix; do
		echo "$u $u"
	done > "$conf/passwd"

	# master.cf: the package's (master.cf.dist, the pristine copy of what a
	# fresh install gets as /etc/postfix/master.cf.proto, which the machine's
	# admin may edit), without chroot (no chroot tree to populate) and with
	# our own listeners instead of "smtp inet".
	master_src=/usr/share/postfix/master.cf.dist
	[ -f "$master_src" ] || master_src=/etc/postfix/master.cf.proto
	awk '
		/^[ \t]*#/ || /^[ \t]*$/ || /^[ \t]/ { if (!skip) print; next }
		{
			skip = 0
			if ($2 == "inet") { skip = 1; next }
			if (NF >= 8) $5 = "n"
			print
		}' "$master_src" > "$conf/master.cf"
	cat >> "$conf/master.cf" <<MASTER
127.0.0.1:$port inet n - n - - smtpd
127.0.0.1:$tlsport inet n - n - - smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
MASTER
	for o in ${PF_TLS_OPTS:-}; do
		printf '  -o %s\n' "$o" >> "$conf/master.cf"
	done
	cat >> "$conf/master.cf" <<MASTER
127.0.0.1:$localport inet n - n - - smtpd
  -o syslog_name=postfix/local
MASTER
	for o in ${PF_LOCAL_OPTS:-}; do
		printf '  -o %s\n' "$o" >> "$conf/master.cf"
	done

	# main.cf: what Debian's postinst writes for "Internet Site" (the two
	# package files, its smtpd_relay_restrictions, the debconf answers
	# mailbox_size_limit 0, recipient_delimiter +, inet_protocols all), then
	# the private settings below, applied over it with postconf -e.
	cat /usr/share/postfix/main.cf.debian /usr/share/postfix/main.cf.tls > "$conf/main.cf" ||
		die "no /usr/share/postfix/main.cf.debian"
	cat > "$conf/main.cf.private" <<MAIN
inet_protocols = all
myhostname = $host
mydomain = example.com
myorigin = \$myhostname
mydestination =
relayhost =
mynetworks = 192.0.2.1/32
inet_interfaces = 127.0.0.1
queue_directory = $dir/queue
data_directory = $dir/data
alias_maps = hash:$conf/aliases
alias_database = hash:$conf/aliases
local_recipient_maps = hash:$conf/passwd \$alias_maps
default_transport = discard
local_transport = discard
relay_transport = discard
virtual_transport = discard
smtpd_relay_restrictions = check_client_access static:OK, reject_unauth_destination
smtpd_recipient_restrictions =
mailbox_size_limit = 0
recipient_delimiter = +
maillog_file_prefixes = /var, /dev/stdout, $dir
maillog_file = $dir/maillog
smtpd_tls_cert_file = $dir/tls/cert.pem
smtpd_tls_key_file = $dir/tls/key.pem
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $conf/sasl
MAIN
	while IFS= read -r l; do
		postconf -c "$conf" -e "$l" || die "postconf -e $l failed"
	done < "$conf/main.cf.private"
	if [ -n "${PF_EXTRA_MAIN:-}" ]; then
		printf '%s\n' "$PF_EXTRA_MAIN" | while IFS= read -r l; do
			[ -n "$l" ] || continue
			postconf -c "$conf" -e "$l" || die "bad PF_EXTRA_MAIN line: $l"
		done
	fi

	# (-c: with none, the map tools read /etc/postfix/main.cf, which may not exist)
	postalias -c "$conf" "hash:$conf/aliases" || die "postalias $conf/aliases failed"
	postmap -c "$conf" "hash:$conf/passwd" || die "postmap $conf/passwd failed"

	postfix -c "$conf" check >&2 || die "postfix check failed (see above)"
	postfix -c "$conf" start >&2 || die "postfix start failed; see $dir/maillog"
	for p in $port $tlsport $localport; do
		wait_port "$p" || die "port $p did not open; see $dir/maillog"
	done
	pid=$(head -n1 "$dir/queue/pid/master.pid" 2>/dev/null | tr -d ' ')
	cat > "$dir/env" <<ENV
PF_DIR=$dir
PF_PORT=$port
PF_TLSPORT=$tlsport
PF_LOCALPORT=$localport
PF_PID=$pid
ENV
	cat "$dir/env"
}

do_stop() {
	dir=${1:?usage: $0 stop DIR}
	[ -d "$dir/etc" ] || die "$dir is not a private instance"
	if [ -f "$dir/queue/pid/master.pid" ] &&
	    postfix -c "$dir/etc" status >/dev/null 2>&1; then
		postfix -c "$dir/etc" stop >&2 || true
		# wait for the master to be gone
		pid=$(head -n1 "$dir/queue/pid/master.pid" 2>/dev/null | tr -d ' ')
		i=0
		while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
			sleep 0.1; i=$((i + 1))
		done
	fi
}

case "${1:-}" in
start) shift; do_start "${1:-}" ;;
stop) shift; do_stop "${1:-}" ;;
clean) shift; do_stop "${1:-}"; rm -rf "${1:?}" ;;
*) echo "usage: $0 start [DIR] | stop DIR | clean DIR" >&2; exit 2 ;;
esac
