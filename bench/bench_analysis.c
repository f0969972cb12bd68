/*
 * CPU per mail of the analysis (src/analysis.c: GMime, gumbo, libmagic,
 * hashes, ssdeep), of GMime's parse and text decode alone, and of the rules'
 * hand-written reader (src/mime.c), on three generated mails: 1 KB plain,
 * 30 KB HTML, 300 KB with an attachment; then the sustained analysis rate
 * on a mix of the three, and the bounded cost of a nested MIME bomb with and
 * without the container cap.  With directories as arguments, it also runs
 * mime.c and GMime over every file in them (e.g. fuzz/corpus/mime) and
 * prints their total and worst CPU.
 *
 *	make build/rel/bench_analysis && build/rel/bench_analysis [DIR...]
 * (bench/analysis.sh does both, with fuzz/corpus/mime.)
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <gmime/gmime.h>

#include "analysis.h"
#include "mime.h"

struct sbuf {
	char	*s;
	size_t	 len;
	size_t	 cap;
};

static void
add(struct sbuf *b, const char *s)
{
	size_t l = strlen(s);

	if (b->len + l + 1 > b->cap) {
		b->cap = (b->len + l + 1) * 2;
		if ((b->s = realloc(b->s, b->cap)) == NULL)
			exit(1);
	}
	memcpy(b->s + b->len, s, l + 1);
	b->len += l;
}

static double
cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char words[] = "offer bank money transfer click here free "
    "urgent account verify winner prize dear friend business proposal ";

static void
text(struct sbuf *b, size_t n, unsigned seed)
{
	char w[64];
	size_t start = b->len;

	while (b->len - start < n) {
		size_t i = (seed = seed * 1103515245 + 12345) % (sizeof(words) - 20);

		while (i > 0 && words[i - 1] != ' ')
			i--;
		snprintf(w, sizeof(w), "%.*s%s", (int)(strcspn(words + i, " ")),
		    words + i, (b->len - start) % 70 > 60 ? "\n" : " ");
		add(b, w);
	}
}

static const char hdr[] =
    "Received: from pc (unknown [198.51.100.7]) by mx.example.org (Postfix)"
    " with ESMTP id 4F2A1; Sun, 6 Dec 2026 08:00:00 +0000\n"
    "From: \"Bank\" <service@bank.example>\nTo: you@example.org\n"
    "Subject: =?utf-8?q?Your_account?=\nDate: Sun, 6 Dec 2026 08:00:00 +0000\n"
    "Message-ID: <1@bank.example>\nMIME-Version: 1.0\n";

static void
mail_plain(struct sbuf *b)
{
	add(b, hdr);
	add(b, "Content-Type: text/plain; charset=us-ascii\n\n");
	text(b, 600, 1);
	add(b, "\nhttp://bank.example/verify?id=1\n");
}

static void
mail_html(struct sbuf *b)
{
	int i;
	char l[256];

	add(b, hdr);
	add(b, "Content-Type: text/html; charset=utf-8\n"
	    "Content-Transfer-Encoding: quoted-printable\n\n<html><body>\n");
	for (i = 0; b->len < 30 * 1024; i++) {
		snprintf(l, sizeof(l), "<p class=3D\"c%d\"><a href=3D\"https://"
		    "link%d.example/c?u=3D%d\">", i % 7, i % 50, i);
		add(b, l);
		text(b, 120, (unsigned)i);
		add(b, "</a><img src=3D\"http://t.example/p.gif\" width=3D1></p>\n");
	}
	add(b, "</body></html>\n");
}

static void
mail_attach(struct sbuf *b)
{
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned seed = 7;
	char line[80];
	int i;

	add(b, hdr);
	add(b, "Content-Type: multipart/mixed; boundary=\"BB\"\n\n--BB\n"
	    "Content-Type: text/plain\n\n");
	text(b, 800, 3);
	add(b, "\n--BB\nContent-Type: application/pdf; name=\"invoice.pdf\"\n"
	    "Content-Disposition: attachment; filename=\"invoice.pdf\"\n"
	    "Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK");
	while (b->len < 300 * 1024) {
		for (i = 0; i < 76; i++)
			line[i] = b64[(seed = seed * 1103515245 + 12345) >> 16 & 63];
		line[76] = '\n';
		line[77] = '\0';
		add(b, line);
	}
	add(b, "--BB--\n");
}

/* GMime alone: parse, and decode every text part to UTF-8 (mime.c's job). */
static void
gmime_text(const char *d, size_t len)
{
	GMimeStream *st = g_mime_stream_mem_new_with_buffer(d, len);
	GMimeParser *p = g_mime_parser_new_with_stream(st);
	GMimeMessage *m = g_mime_parser_construct_message(p, NULL);
	GMimePartIter *it;

	if (m != NULL) {
		it = g_mime_part_iter_new(GMIME_OBJECT(m));
		do {
			GMimeObject *o = g_mime_part_iter_get_current(it);

			if (o != NULL && GMIME_IS_TEXT_PART(o))
				g_free(g_mime_text_part_get_text(GMIME_TEXT_PART(o)));
		} while (g_mime_part_iter_next(it));
		g_mime_part_iter_free(it);
		g_object_unref(m);
	}
	g_object_unref(p);
	g_object_unref(st);
}

static void
mimec(const char *d, size_t len)
{
	struct mime_msg m;

	if (mime_parse((const unsigned char *)d, len, &m) == 0)
		mime_msg_free(&m);
}

static void
analyse(struct analysis *a, const char *d, size_t len)
{
	struct analysis_result r;

	if (analysis_run(a, (const unsigned char *)d, len, NULL, NULL, &r) == 0)
		analysis_result_free(&r);
}

/*
 * Microseconds of CPU per call, over at least 1 s of CPU.  The clock is read
 * once per batch: reading the process CPU clock is a system call here (~1 us
 * on this VM), as much as mime.c's whole 1 KB parse.
 */
static double
per_call(int which, struct analysis *a, const char *d, size_t len)
{
	double t0 = cpu_now(), t;
	long n = 0, batch = 1, i;

	do {
		for (i = 0; i < batch; i++) {
			if (which == 0)
				analyse(a, d, len);
			else if (which == 1)
				gmime_text(d, len);
			else
				mimec(d, len);
		}
		n += batch;
		if ((t = cpu_now() - t0) < 0.1)
			batch *= 2;
	} while (t < 1.0);
	return t / (double)n * 1e6;
}

/* The worst and total CPU of mime.c and GMime over every file in dir. */
static void
corpus(const char *dir)
{
	DIR *dp;
	struct dirent *de;
	double tot[2] = { 0, 0 }, worst[2] = { 0, 0 };
	long files = 0;
	int k;

	if ((dp = opendir(dir)) == NULL) {
		perror(dir);
		return;
	}
	while ((de = readdir(dp)) != NULL) {
		char path[4096], *buf;
		FILE *f;
		long len;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if ((f = fopen(path, "rb")) == NULL)
			continue;
		fseek(f, 0, SEEK_END);
		len = ftell(f);
		rewind(f);
		buf = malloc((size_t)len + 1);
		if (buf == NULL || fread(buf, 1, (size_t)len, f) != (size_t)len) {
			free(buf);
			fclose(f);
			continue;
		}
		fclose(f);
		files++;
		for (k = 0; k < 2; k++) {
			double t0 = cpu_now(), t;
			int i;

			for (i = 0; i < 10; i++) {
				if (k == 0)
					mimec(buf, (size_t)len);
				else
					gmime_text(buf, (size_t)len);
			}
			t = (cpu_now() - t0) / 10;
			tot[k] += t;
			if (t > worst[k])
				worst[k] = t;
		}
		free(buf);
	}
	closedir(dp);
	printf("corpus %s: %ld files; mime.c total %.1f ms, worst %.0f us; "
	    "GMime parse+text total %.1f ms, worst %.0f us\n", dir, files,
	    tot[0] * 1e3, worst[0] * 1e6, tot[1] * 1e3, worst[1] * 1e6);
}

/* 10,000 nested multiparts through analysis_run with containers_max. */
static void
bomb(unsigned containers_max)
{
	struct analysis_limits lim;
	struct analysis *a;
	struct sbuf b = { 0 };
	struct rusage ru;
	char l[128], err[256];
	double t0;
	pid_t pid;
	int i, st;

	add(&b, "From: b@bomb.example\nMIME-Version: 1.0\n");
	for (i = 0; i < 10000; i++) {
		snprintf(l, sizeof(l), "Content-Type: multipart/mixed; "
		    "boundary=\"b%d\"\n\n--b%d\n", i, i);
		add(&b, l);
	}
	add(&b, "Content-Type: text/plain\n\ndeep\n");
	for (i = 9999; i >= 0; i--) {
		snprintf(l, sizeof(l), "--b%d--\n", i);
		add(&b, l);
	}
	fflush(stdout);
	/* In a child: without the cap GMime may not survive it. */
	if ((pid = fork()) == 0) {
		analysis_limits_default(&lim);
		lim.containers_max = containers_max;
		if ((a = analysis_new(&lim, err, sizeof(err))) == NULL)
			_exit(1);
		t0 = cpu_now();
		analyse(a, b.s, b.len);
		printf("bomb: 10,000 nested multiparts (%zu KB), containers_max "
		    "%u: %.0f ms CPU\n", b.len / 1024, containers_max,
		    (cpu_now() - t0) * 1e3);
		fflush(stdout);
		_exit(0);
	}
	if (wait4(pid, &st, 0, &ru) == pid && !(WIFEXITED(st) &&
	    WEXITSTATUS(st) == 0))
		printf("bomb: containers_max %u: the child died (%s %d) after "
		    "%.0f ms CPU\n", containers_max, WIFSIGNALED(st) ? "signal" :
		    "status", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
		    (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
		    (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3);
	printf("bomb: child peak RSS %ld MB\n", ru.ru_maxrss / 1024);
	free(b.s);
}

int
main(int argc, char **argv)
{
	static const char *const names[3] = { "1 KB plain", "30 KB HTML",
	    "300 KB + attachment" };
	struct sbuf m[3] = { { 0 }, { 0 }, { 0 } };
	struct analysis *a;
	char err[256];
	double t0, t;
	long n;
	int i;

	if ((a = analysis_new(NULL, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	mail_plain(&m[0]);
	mail_html(&m[1]);
	mail_attach(&m[2]);
	/* BENCH_PROFILE=0|1|2: only analyse that mail, for 5 s (perf record) */
	if (getenv("BENCH_PROFILE") != NULL) {
		i = atoi(getenv("BENCH_PROFILE")) % 3;
		t0 = cpu_now();
		do
			for (n = 0; n < 100; n++)
				analyse(a, m[i].s, m[i].len);
		while (cpu_now() - t0 < 5.0);
		return 0;
	}
	printf("%-22s %9s %14s %14s %12s\n", "mail", "bytes", "analysis us",
	    "GMime text us", "mime.c us");
	for (i = 0; i < 3; i++)
		printf("%-22s %9zu %14.1f %14.1f %12.1f\n", names[i], m[i].len,
		    per_call(0, a, m[i].s, m[i].len),
		    per_call(1, a, m[i].s, m[i].len),
		    per_call(2, a, m[i].s, m[i].len));
	/* Sustained: the three in turn, 5 s of CPU, one thread. */
	t0 = cpu_now();
	n = 0;
	do {
		for (i = 0; i < 30; i++, n++)
			analyse(a, m[n % 3].s, m[n % 3].len);
	} while ((t = cpu_now() - t0) < 5.0);
	printf("sustained analysis (1 KB, 30 KB, 300 KB in turn, one core): "
	    "%.0f mails/s\n", (double)n / t);
	t0 = cpu_now();
	n = 0;
	do {
		for (i = 0; i < 100; i++, n++)
			analyse(a, m[0].s, m[0].len);
	} while ((t = cpu_now() - t0) < 3.0);
	printf("sustained analysis (1 KB plain only, one core): %.0f mails/s\n",
	    (double)n / t);
	bomb(256);
	bomb(1000000);
	for (i = 1; i < argc; i++)
		corpus(argv[i]);
	analysis_free(a);
	for (i = 0; i < 3; i++)
		free(m[i].s);
	return 0;
}
