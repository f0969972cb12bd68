/*
 * libFuzzer target: the hpfeeds frame decoder over a stream of frames, with
 * re-encoding checks, and the payload verifier (JSON scanner, string and
 * base64 decoding) that the subscriber tool runs on every received payload.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hpfeeds.h"
#include "hpfeeds_wire.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decode frames back to back; re-encode each and compare with the input bytes. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t out[HPF_MAX_FRAME];
	struct hpf_frame f;
	char err[256], a[256], b[256];
	size_t used, n;
	uint32_t total;
	uint8_t op;
	int r;

	/* The whole input as a payload, then each PUBLISH payload below. */
	(void)hpf_payload_verify(data, size);
	while (size > 0) {
		r = hpf_wire_header(data, size, &total, &op, err, sizeof(err));
		if (r <= 0)
			break;
		r = hpf_wire_decode(data, size, &f, &used, err, sizeof(err));
		if (r <= 0)
			break;
		if (used != total || used > size || f.len != total || f.op != op)
			abort();
		n = 0;
		if (f.op == HPF_OP_PUBLISH) {
			memcpy(a, f.name, f.namelen);
			a[f.namelen] = '\0';
			memcpy(b, f.chan, f.chanlen);
			b[f.chanlen] = '\0';
			if (memchr(a, 0, f.namelen) == NULL && memchr(b, 0, f.chanlen) == NULL)
				n = hpf_wire_publish(out, sizeof(out), a, b, f.data, f.datalen);
			(void)hpf_payload_verify(f.data, f.datalen);
		} else if (f.op == HPF_OP_ERROR) {
			n = hpf_wire_error(out, sizeof(out), (const char *)f.data, f.datalen);
		} else if (f.op == HPF_OP_INFO) {
			memcpy(a, f.name, f.namelen);
			a[f.namelen] = '\0';
			if (memchr(a, 0, f.namelen) == NULL)
				n = hpf_wire_info(out, sizeof(out), a, f.data, f.datalen);
		}
		if (n != 0 && (n != used || memcmp(out, data, n) != 0))
			abort();
		data += used;
		size -= used;
	}
	return 0;
}
