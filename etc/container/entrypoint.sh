#!/bin/sh
# Container entrypoint: give the daemon a hostname that survives restarts
# (not the container id, which changes with every container and gives the
# honeypot away), then exec it in the foreground as PID 1.
#
# The name is FOSR_HOSTNAME when set; else the one kept in the volume's
# "hostname" file; else one made up on the first start (as a Postfix on a
# host without a domain names itself: <name>.localdomain) and kept there.
# The configuration is /etc/fosr-collector/fosr-collector.yml (FOSR_CONFIG),
# written with that hostname to the volume's .fosr-collector.yml unless it
# sets hostname itself.  Extra arguments go to fosr-collector.
set -eu
VOL=${FOSR_VOLUME:-/var/lib/fosr-collector}
CONF=${FOSR_CONFIG:-/etc/fosr-collector/fosr-collector.yml}
cd "$VOL"
mkdir -p log tls

valid() {	# a DNS name: letters, digits, hyphens and dots, 1..253 bytes
	printf '%s' "$1" | grep -Eqx '[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?'
}

if [ -n "${FOSR_HOSTNAME:-}" ]; then
	host=$FOSR_HOSTNAME
elif [ -s hostname ]; then
	host=$(head -n 1 hostname)
else
	n=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
	host=$(echo mail mx smtp mail1 mx1 mx2 mailhost relay post smtp1 |
	    cut -d ' ' -f $((n % 10 + 1))).localdomain
	printf '%s\n' "$host" >hostname.tmp && mv hostname.tmp hostname
fi
valid "$host" || { echo "fosr-entrypoint: hostname \"$host\" is not a DNS name" >&2; exit 2; }

if grep -Eq '^hostname[[:space:]]*:' "$CONF"; then
	exec /usr/local/sbin/fosr-collector -c "$CONF" "$@"
fi
{
	echo "# Written by fosr-entrypoint at each start from $CONF: do not edit."
	cat "$CONF"
	printf '\nhostname: "%s"\n' "$host"
} >.fosr-collector.yml.tmp
mv .fosr-collector.yml.tmp .fosr-collector.yml
exec /usr/local/sbin/fosr-collector -c "$VOL/.fosr-collector.yml" "$@"
