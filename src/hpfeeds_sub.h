/*
 * The hpfeeds operator tool (--feed-subscribe), over hpf_subscribe().
 */
#ifndef FOSR_HPFEEDS_SUB_H
#define FOSR_HPFEEDS_SUB_H

struct cfg_feed;

/*
 * Operator tool (--feed-subscribe): connect with the feed's identity and
 * secret, subscribe once to each channel, print every received publish to
 * stdout as one JSON line: {"channel":..., "ident":..., "verified": bool,
 * <the payload's own keys>} ("payload_raw" instead when the payload is not a
 * JSON object).  "verified" is true when the sha256 recomputed from the exact
 * bytes (raw_b64 when present, else msg) matches the payload's "sha256".
 * Reconnects with backoff; runs until killed.  argv: optional "--count N" to
 * exit 0 after N messages.  Returns the process exit status.
 */
int		 hpf_subscribe_main(const struct cfg_feed *feed, int argc, char **argv);

#endif
