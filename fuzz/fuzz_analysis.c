/*
 * libFuzzer target: a raw mail through the whole extractor (GMime, gumbo,
 * libmagic, ssdeep, the text scans) with small caps, so the limit paths are
 * reached too, and a campaign table in memory.  The document must be valid
 * UTF-8 JSON (one object) under 1 MiB, every blob's sha256 the hash of its
 * bytes, and the caps must hold.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "analysis.h"
#include "campaign.h"
#include "log.h"
#include "util.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static struct analysis *a;
static struct campaigns *cp;
static unsigned long runs;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct analysis_limits lim;
	struct analysis_result res;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	char err[256], hex[65];
	size_t i;

	if (a == NULL) {
		analysis_limits_default(&lim);
		lim.raw_max = 256 * 1024;
		lim.containers_max = 24;
		lim.depth_max = 8;
		lim.leaves_max = 40;
		lim.decoded_max = 512 * 1024;
		lim.blob_max = 64 * 1024;
		lim.html_max = 64 * 1024;
		lim.html_tags_max = 2000;
		lim.items_max = 50;
		lim.text_max = 16 * 1024;
		lim.cpu_ms_max = 1000;
		lim.headers_max = 200;
		if ((a = analysis_new(&lim, err, sizeof(err))) == NULL ||
		    (cp = campaigns_open(NULL, 64, 0, err, sizeof(err))) == NULL)
			__builtin_trap();
	}
	if (analysis_run(a, data, size, NULL, cp, &res) == -1)
		__builtin_trap();
	if (res.json == NULL || res.json[0] != '{' ||
	    res.json[res.jsonlen - 1] != '}' || strlen(res.json) != res.jsonlen ||
	    !utf8_valid(res.json, res.jsonlen) || res.nattachments > 40 ||
	    res.jsonlen >= 1024 * 1024)
		__builtin_trap();
	for (i = 0; i < res.nblobs; i++) {
		if (res.blobs[i].len > 64 * 1024 ||
		    EVP_Digest(res.blobs[i].data, res.blobs[i].len, md, &mdlen,
		    EVP_sha256(), NULL) != 1)
			__builtin_trap();
		util_hex(md, mdlen, hex);
		if (strcmp(hex, res.blobs[i].sha256) != 0)
			__builtin_trap();
	}
	analysis_result_free(&res);
	/* the table stays bounded; recreate it now and then */
	if (++runs % 10000 == 0) {
		campaigns_free(cp);
		if ((cp = campaigns_open(NULL, 64, 0, err, sizeof(err))) == NULL)
			__builtin_trap();
	}
	return 0;
}
