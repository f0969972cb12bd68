/*
 * hpfeeds 3 frame codec and payload format: pure functions over byte buffers,
 * no I/O, no logging.
 *
 * Frame: u32 big-endian total length (header included), u8 opcode, body.
 * str8 = u8 length + that many bytes; "rest" = the remainder of the frame.
 * See ../shared/hpfeeds-vectors.md for byte-exact examples.
 */
#ifndef FOSR_HPFEEDS_WIRE_H
#define FOSR_HPFEEDS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HPF_OP_ERROR		0
#define HPF_OP_INFO		1
#define HPF_OP_AUTH		2
#define HPF_OP_PUBLISH		3
#define HPF_OP_SUBSCRIBE	4
#define HPF_OP_UNSUBSCRIBE	5

#define HPF_HDR_LEN		5
#define HPF_SHA1_LEN		20
/* The largest frames the reference broker accepts, per opcode. */
#define HPF_MAX_FRAME		1048581u	/* ERROR, PUBLISH */
#define HPF_MAX_FRAME_SMALL	281u		/* INFO, AUTH */
#define HPF_MAX_FRAME_SUB	1048576u	/* SUBSCRIBE, UNSUBSCRIBE */
#define HPF_STR8_MAX		255

/* A decoded frame; pointers borrow the buffer given to hpf_wire_decode(). */
struct hpf_frame {
	uint8_t		 op;
	uint32_t	 len;		/* total frame length */
	const uint8_t	*name;		/* INFO broker name; AUTH/PUBLISH/SUB ident */
	size_t		 namelen;
	const uint8_t	*chan;		/* PUBLISH/SUB/UNSUB channel */
	size_t		 chanlen;
	const uint8_t	*data;		/* ERROR text, INFO nonce, AUTH hash, PUBLISH payload */
	size_t		 datalen;
};

/* Largest frame accepted for op (0 for an unknown opcode). */
uint32_t hpf_wire_max_frame(uint8_t op);

/*
 * Look at the 5-byte header in buf.  Returns 1 with *total and *op set when the
 * header is there and plausible (length >= 5 and within the limit for the
 * opcode), 0 when fewer than 5 bytes are buffered, -1 (err filled) when the
 * header is bad: the connection must be closed.
 */
int	 hpf_wire_header(const void *buf, size_t len, uint32_t *total, uint8_t *op,
	    char *err, size_t errlen);

/*
 * Decode one frame at the start of buf.  Returns 1 with f filled and *consumed
 * = f->len when a whole valid frame is there, 0 when more bytes are needed,
 * -1 (err filled) for a malformed frame (bad length, unknown opcode, str8
 * overrunning the frame, AUTH hash not 20 bytes).
 */
int	 hpf_wire_decode(const void *buf, size_t len, struct hpf_frame *f,
	    size_t *consumed, char *err, size_t errlen);

/*
 * Encoders write one frame into out[0..outlen) and return its length, or 0
 * when a string is too long for str8, the frame would exceed its limit, or
 * outlen is too small.
 */
size_t	 hpf_wire_info(uint8_t *out, size_t outlen, const char *name,
	    const uint8_t *nonce, size_t noncelen);
size_t	 hpf_wire_auth(uint8_t *out, size_t outlen, const char *ident,
	    const uint8_t *nonce, size_t noncelen, const char *secret, size_t secretlen);
size_t	 hpf_wire_publish(uint8_t *out, size_t outlen, const char *ident,
	    const char *chan, const void *payload, size_t payloadlen);
/* SUBSCRIBE or UNSUBSCRIBE (op), the channel not length-prefixed. */
size_t	 hpf_wire_subscribe(uint8_t *out, size_t outlen, uint8_t op,
	    const char *ident, const char *chan);
size_t	 hpf_wire_error(uint8_t *out, size_t outlen, const char *text, size_t textlen);

/*
 * Header of a PUBLISH frame (length, opcode, ident, channel) for a payload of
 * payloadlen bytes that the caller appends itself.  out must hold
 * HPF_HDR_LEN + 2 + 2 * HPF_STR8_MAX bytes.  Returns the header length or 0.
 */
size_t	 hpf_wire_publish_header(uint8_t *out, size_t outlen, const char *ident,
	    const char *chan, size_t payloadlen);

/* SHA1(nonce || secret), the AUTH hash. */
void	 hpf_wire_auth_hash(const uint8_t *nonce, size_t noncelen, const char *secret,
	    size_t secretlen, uint8_t out[HPF_SHA1_LEN]);

/*
 * Largest PUBLISH payload the broker accepts for this ident and channel:
 * 1048576 - 2 - len(ident) - len(channel).
 */
size_t	 hpf_wire_max_payload(size_t identlen, size_t chanlen);

/*
 * The payload format: {"sha256": <hex of the raw bytes>, "msg": <UTF-8 text>}
 * plus optional keys, built with the JSON builder of log.h.
 */
struct jbuf;

/*
 * Build the payload for one mail into jb (reset first): {"sha256", "msg"},
 * "raw_b64" when bytes are not valid UTF-8 and the base64 fits, "truncated":
 * true and "size" when msg had to be cut (at a UTF-8 boundary) to keep the
 * payload within limit bytes, then meta (already-valid JSON members without
 * braces, "" or NULL for none).  body holds the first bodylen bytes of a mail
 * of size bytes.  *truncated (may be NULL) tells whether msg was cut.
 * Returns 0, or -1 (allocation failure, or limit too small).
 */
int	 hpf_payload_build(struct jbuf *jb, const char *sha256hex,
	    const void *body, size_t bodylen, uint64_t size, size_t limit,
	    const char *meta, size_t metalen, bool *truncated);

/*
 * A mail's payload for any output (hpfeeds, AMQP): hpf_payload_build() with,
 * when metadata is on, the reception record's keys (record[0..reclen), the
 * journal line; record_meta_keys of record.h) and "sensor" (NULL or "" =
 * none).  Metadata over half the limit is left out (*meta_dropped set).
 * Returns 0, or -1 (allocation failure).
 */
int	 hpf_payload_mail(struct jbuf *jb, const char *record, size_t reclen,
	    bool metadata, const char *sensor, const char *sha256hex,
	    const void *body, size_t bodylen, uint64_t size, size_t limit,
	    bool *truncated, bool *meta_dropped);

/*
 * A mail's raw payload for any output (payload: raw, for the spamtrap-system
 * backend, which hashes and parses the RFC 5322 bytes and finds the client
 * in the Received headers), built into jb (reset first): with p (the
 * persona; NULL = received_header off), the Received header our Postfix
 * would have added on reception (record_received_header() from the record
 * record[0..reclen), the journal line: HELO, client name and address, queue
 * id, protocol, time; hostname ours), then the stored bytes body[0..bodylen)
 * of a mail of size bytes; the whole cut to limit bytes (a cut MIME message
 * still parses).  *truncated tells whether the mail's bytes were cut; note
 * (notelen bytes) gets "" or why the header is missing or odd, for the
 * caller's log line.  Returns 0, or -1 (out of memory; jb is left empty).
 */
struct persona;
int	 hpf_payload_raw(struct jbuf *jb, const char *record, size_t reclen,
	    const struct persona *p, const char *hostname, const void *body,
	    size_t bodylen, uint64_t size, size_t limit, bool *truncated, char *note,
	    size_t notelen);

/* Whether a reception record is kept off every output by a rule ("publish": false). */
bool	 hpf_record_private(const char *record, size_t len);

/*
 * Check a payload: 1 when it has a "sha256" that equals the SHA-256 of the
 * exact bytes (raw_b64 when present, else msg), 0 when not, -1 when the
 * payload is not a JSON object with a sha256.
 */
int	 hpf_payload_verify(const void *payload, size_t len);

/* Whether s[0..len) is 64 hex digits. */
bool	 hpf_is_sha256_hex(const char *s, size_t len);

#endif
