/*
 * The JSON reader on the record path: how long reading one reception-journal
 * line takes with json.c, with the reader it replaced (relay_json.c, when
 * built with OLD=file), and with jansson (WITH_JANSSON).  Each line is read
 * as relay.c reads a record: validated, then every member walked, strings
 * decoded, integers parsed, arrays and objects walked the same way.
 *
 *   bench/json_bench.sh [N]     N lines (default 1000000) of each shape
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"

long long	jansson_walk(const char *, size_t);	/* bench/json_bench_jansson.c */
long long	old_walk(const char *, size_t);		/* bench/json_bench_old.c */
static long long	walk_value(const char *, size_t, int);
static long long	new_walk(const char *, size_t);
static double	now(void);

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);	/* CPU time: the machine is shared */
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Walk one value: a checksum over what was read, so nothing is optimised out. */
static long long
walk_value(const char *v, size_t vl, int depth)
{
	char buf[1024];
	const char *k, *e;
	size_t pos = 0, kl, el;
	long long n, sum = 0;
	bool b;

	if (depth > 8)
		return -1;
	if (*v == '"')
		return json_str(v, vl, buf, sizeof(buf)) == 0 ? (long long)strlen(buf) : -1;
	if (*v == '{') {
		while (json_member(v, vl, &pos, &k, &kl, &e, &el) == 1)
			sum += (long long)kl + walk_value(e, el, depth + 1);
		return sum;
	}
	if (*v == '[') {
		while (json_element(v, vl, &pos, &e, &el) == 1)
			sum += walk_value(e, el, depth + 1);
		return sum;
	}
	if (json_int(v, vl, &n) == 0)
		return n & 0xff;
	if (json_bool(v, vl, &b) == 0)
		return b;
	return json_is_null(v, vl) ? 0 : -1;
}

static long long
new_walk(const char *line, size_t len)
{
	/* The member walk ends in 0 only when the whole line is one object. */
	return walk_value(line, len, 0);
}

int
main(int argc, char **argv)
{
	static const char shape[] = "{\"time\":\"2026-01-01T00:00:00Z\",\"sha256\":"
	    "\"%064x\",\"size\":%d,\"src_ip\":\"192.0.2.%d\",\"mail_from\":"
	    "\"s%d@example.org\",\"rcpt_to\":[\"r@example.net\"]}";
	long n = argc > 2 ? atol(argv[2]) : 1000000, i;
	char (*lines)[2048];
	size_t *lens, nl = 0, cap = 4096, bytes;
	char buf[4096];
	FILE *f;
	int set, which;
	double t;
	long long sum;
	const char *names[] = { "json.c", "relay_json.c (old)", "jansson" };

	if (argc < 2 || (f = fopen(argv[1], "r")) == NULL) {
		fprintf(stderr, "usage: json_bench records.jsonl [N]\n");
		return 2;
	}
	lines = malloc(cap * sizeof(*lines));
	lens = malloc(cap * sizeof(*lens));
	/* Set 0: test_journal.py's record() shape, 1000 distinct; set 1: the file. */
	for (i = 0; i < 1000; i++) {
		lens[nl] = (size_t)snprintf(lines[nl], sizeof(lines[nl]), shape,
		    (unsigned)i, 100 + (int)i % 1000, (int)i % 250, (int)i);
		nl++;
	}
	while (nl < cap && fgets(buf, sizeof(buf), f) != NULL) {
		buf[strcspn(buf, "\n")] = '\0';
		if (*buf == '\0')
			continue;
		lens[nl] = strlen(buf);
		memcpy(lines[nl], buf, lens[nl] + 1);
		nl++;
	}
	fclose(f);
	for (set = 0; set < 2; set++) {
		size_t first = set == 0 ? 0 : 1000, count = set == 0 ? 1000 : nl - 1000;

		for (which = 0; which < 3; which++) {
			sum = 0;
			bytes = 0;
			t = now();
			for (i = 0; i < n; i++) {
				size_t j = first + (size_t)i % count;
				long long r = which == 0 ? new_walk(lines[j], lens[j]) :
				    which == 1 ? old_walk(lines[j], lens[j]) :
				    jansson_walk(lines[j], lens[j]);

				if (r < 0) {
					fprintf(stderr, "%s: line %zu not read\n", names[which], j);
					return 1;
				}
				sum += r;
				bytes += lens[j];
			}
			t = now() - t;
			printf("%-22s %-20s %ld lines %6.0f ns/line %7.1f MB/s (sum %lld)\n",
			    set == 0 ? "record() shape" : "real records", names[which], n,
			    t * 1e9 / (double)n, (double)bytes / t / 1e6, sum);
		}
	}
	return 0;
}
