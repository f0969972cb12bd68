#!/bin/sh
# Install the Debian packages fosr-collector needs to build and test, or, when not
# root, print the exact apt-get line.  Quiet when everything is already there.
# Everything a test runs is named here, even what most machines already have:
# `make check-fresh` proves the list on a pristine debootstrap root.
#   procps              /bin/kill (the unit's ExecReload, checked by systemd-analyze verify)
#   libnet-ssleay-perl  swaks's TLS (only a Recommends of swaks, which
#                       --no-install-recommends leaves out)
#   iproute2            ss (bench/scale.sh)
#   libgmime-3.0-dev libmagic-dev libfuzzy-dev libgumbo-dev
#                       the mail analysis (src/analysis.c, src/campaign.c)
#   prometheus          promtool and a real server for tests/e2e/test_metrics.py
#   logrotate, man-db, groff-base   test_install: the logrotate snippet, the man pages
#                       (none is in a debootstrap minbase root)
#   librabbitmq-dev     the AMQP output; rabbitmq-server, python3-pika: test_amqp's
#                       private broker and consumer
PKGS="build-essential pkg-config clang libclang-rt-14-dev libevent-dev libssl-dev libyaml-dev
libc-ares-dev libcmocka-dev libpcre2-dev libseccomp-dev libidn2-dev
libgmime-3.0-dev libmagic-dev libfuzzy-dev libgumbo-dev systemd procps iproute2 openssl python3
python3-aiosmtpd python3-jsonschema swaks libnet-ssleay-perl postfix libsasl2-modules sasl2-bin valgrind
logrotate man-db groff-base prometheus librabbitmq-dev rabbitmq-server python3-pika"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "fosr-collector: missing Debian packages. Install them with:" >&2
	echo "  sudo apt-get install -y$missing" >&2
	exit 1
fi
echo "fosr-collector: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# postfix asks questions on install; answer them "No configuration" up front.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing
