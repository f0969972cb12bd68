/* libFuzzer target: the main and the feed config loaders over arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* Run both loaders; they must never crash, leak or overrun, whatever the input. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cfg c;
	static struct cfg_feed f;
	char err[256];

	cfg_defaults(&c);
	if (cfg_load_buf(&c, "fuzz.yml", (const char *)data, size, err,
	    sizeof(err)) == -1 && memchr(err, '\0', sizeof(err)) == NULL)
		__builtin_trap();
	memset(&f, 0, sizeof(f));
	if (cfg_load_feed_buf(&f, "fuzz.yml", (const char *)data, size, err,
	    sizeof(err)) == -1 && memchr(err, '\0', sizeof(err)) == NULL)
		__builtin_trap();
	return 0;
}
