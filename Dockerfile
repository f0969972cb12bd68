# fosr-collector in a container (issue 14, item 5).
#
#   podman build -t fosr-collector .          (or docker build; BASE=... for another base)
#   podman run -d --read-only -p 25:25 -p 465:465 -p 587:587 \
#       -v fosr-data:/var/lib/fosr-collector -e FOSR_HOSTNAME=mail.example.com fosr-collector
#
# Runs as uid/gid 2000 (T-Pot's convention for its honeypots) on a read-only
# root.  Everything it writes is on one volume, /var/lib/fosr-collector:
# spool/ (mail and durable queues, relay caps), tls/ (the certificate made on
# the first start), log/fosr-events.json (events) and hostname (the name the
# banner gives, made once; FOSR_HOSTNAME overrides it).  The binary carries
# cap_net_bind_service as a file capability to bind 25/465/587 as uid 2000
# (dropped by the daemon once bound); with no-new-privileges set, file
# capabilities are ignored: then publish the ports with
# --sysctl net.ipv4.ip_unprivileged_port_start=0 (Docker's default).
# scripts/check-container.sh (make check-container) builds and tests this file.
ARG BASE=debian:12-slim

FROM ${BASE} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends build-essential pkg-config \
      libevent-dev libssl-dev libyaml-dev libc-ares-dev libpcre2-dev libseccomp-dev libidn2-dev
WORKDIR /src
COPY Makefile ./
COPY src/ src/
COPY etc/ etc/
RUN make -j"$(nproc)" fosr-collector && ./fosr-collector --version
# The runtime packages are the ones owning the libraries the binary links:
# found here, so the image follows BASE's library versions.
RUN ldd fosr-collector | awk '$3 ~ /^\// { print $3 }' | while read -r lib; do \
        dpkg -S "*/${lib##*/}" | sed -n 's/^\([^:,]*\)[:,].*/\1/p'; \
    done | grep -v -- '-dev$' | sort -u > runtime-packages \
 && test -s runtime-packages && cat runtime-packages

FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
COPY --from=build /src/runtime-packages /usr/share/fosr-collector/runtime-packages
COPY --from=build /src/fosr-collector /usr/local/sbin/fosr-collector
COPY etc/container/fosr-collector.yml /etc/fosr-collector/fosr-collector.yml
COPY etc/container/entrypoint.sh /usr/local/sbin/fosr-entrypoint
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libcap2-bin \
      $(cat /usr/share/fosr-collector/runtime-packages) \
 && setcap cap_net_bind_service=+ep /usr/local/sbin/fosr-collector \
 && apt-get purge -y -qq --auto-remove libcap2-bin \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && groupadd -g 2000 fosr \
 && useradd -u 2000 -g 2000 -M -d /var/lib/fosr-collector -s /usr/sbin/nologin fosr \
 && install -d -o 2000 -g 2000 -m 0750 /var/lib/fosr-collector \
 && chmod 755 /usr/local/sbin/fosr-entrypoint \
 && /usr/local/sbin/fosr-collector --check-config -c /etc/fosr-collector/fosr-collector.yml
USER 2000:2000
WORKDIR /var/lib/fosr-collector
VOLUME ["/var/lib/fosr-collector"]
EXPOSE 25 465 587
# SIGTERM: stop accepting, let sessions inside DATA finish (30 s at most):
# give it 45 s before a SIGKILL (docker stop -t 45, compose stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/sbin/fosr-entrypoint"]
