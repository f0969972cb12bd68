/*
 * Numbered journal segments: names, scan, pruning by cursor (see jseg.h).
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jseg.h"
#include "log.h"
#include "spool.h"

struct jseg_ent {
	unsigned long long	 n;
	uint64_t		 ino;
	uint64_t		 size;
};

int
jseg_path(char *buf, size_t len, const char *dir, const char *base, unsigned long long n)
{
	int r = snprintf(buf, len, "%s/%s.%020llu", dir, base, n);

	return r < 0 || (size_t)r >= len ? -1 : 0;
}

bool
jseg_name(const char *name, const char *base, unsigned long long *n)
{
	size_t bl = strlen(base);
	char *end;

	if (strncmp(name, base, bl) != 0 || name[bl] != '.' || name[bl + 1] < '0' ||
	    name[bl + 1] > '9')
		return false;
	errno = 0;
	*n = strtoull(name + bl + 1, &end, 10);
	return *end == '\0' && errno == 0;
}

/* Every segment of base in dir, unsorted.  0, or -1 with errno. */
static int
jseg_list(const char *dir, const char *base, struct jseg_ent **out, size_t *nout)
{
	char path[PATH_MAX];
	struct jseg_ent *v = NULL, *t;
	size_t n = 0, cap = 0;
	unsigned long long num;
	struct dirent *de;
	struct stat st;
	DIR *d;
	int e;

	if ((d = opendir(dir)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (!jseg_name(de->d_name, base, &num))
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
		    sizeof(path))
			continue;
		if (stat(path, &st) == -1) {
			if (errno == ENOENT)
				continue;
			goto fail;	/* its inode unknown: a cursor may be in it */
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			if ((t = reallocarray(v, cap, sizeof(*v))) == NULL)
				goto fail;
			v = t;
		}
		v[n].n = num;
		v[n].ino = (uint64_t)st.st_ino;
		v[n++].size = (uint64_t)st.st_size;
	}
	closedir(d);
	*out = v;
	*nout = n;
	return 0;
fail:
	e = errno;
	closedir(d);
	free(v);
	errno = e;
	return -1;
}

int
jseg_scan(const char *dir, const char *base, unsigned long long *last, uint64_t *bytes)
{
	struct jseg_ent *v;
	size_t n, i;

	if (jseg_list(dir, base, &v, &n) == -1)
		return -1;
	*last = 0;
	if (bytes != NULL)
		*bytes = 0;
	for (i = 0; i < n; i++) {
		if (v[i].n > *last)
			*last = v[i].n;
		if (bytes != NULL)
			*bytes += v[i].size;
	}
	free(v);
	return 0;
}

/*
 * The oldest segment number a cursor file in cursor_dir points into
 * (ULLONG_MAX: none does).  0 when in doubt (every segment kept), -1 when
 * the directory or a cursor cannot be read (logged).
 */
static int
jseg_oldest_read(const char *cursor_dir, const struct jseg_ent *v, size_t n,
    const char *who, unsigned long long *oldest)
{
	char path[PATH_MAX + 256], buf[200], *p;
	unsigned long long ino;
	struct dirent *de;
	ssize_t r = 0;
	size_t i;
	DIR *d;
	int fd;

	*oldest = ULLONG_MAX;
	if ((d = opendir(cursor_dir)) == NULL) {
		if (errno == ENOENT)
			return 0;
		log_warn("%s: cannot read the cursors in %s: %s; no segment deleted",
		    who, cursor_dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (!spool_cursor_name(de->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", cursor_dir, de->d_name);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 && errno == ENOENT)
			continue;	/* removed since: it protects nothing */
		if (fd == -1 || (r = read(fd, buf, sizeof(buf) - 1)) <= 0) {
			log_warn("%s: cannot read the cursor %s: %s; no segment deleted",
			    who, path, fd == -1 || r < 0 ? strerror(errno) : "empty");
			if (fd != -1)
				close(fd);
			closedir(d);
			return -1;
		}
		close(fd);
		buf[r] = '\0';
		if ((p = strstr(buf, " ino=")) == NULL || sscanf(p, " ino=%llu", &ino) != 1) {
			*oldest = 0;	/* unknown file: keep all */
			continue;
		}
		for (i = 0; i < n; i++)
			if (v[i].ino == ino && v[i].n < *oldest)
				*oldest = v[i].n;
	}
	closedir(d);
	return 0;
}

static int
jseg_newest_first(const void *a, const void *b)
{
	const struct jseg_ent *x = a, *y = b;

	return x->n < y->n ? 1 : x->n > y->n ? -1 : 0;
}

int
jseg_prune(const char *dir, const char *base, const char *cursor_dir, int keep,
    const char *who, uint64_t *freed)
{
	char path[PATH_MAX];
	struct jseg_ent *v;
	unsigned long long oldest;
	size_t n, i;
	int deleted = 0;

	if (jseg_list(dir, base, &v, &n) == -1) {
		log_warn("%s: cannot list the segments of %s/%s: %s; none deleted", who,
		    dir, base, strerror(errno));
		return -1;
	}
	if (n <= (size_t)(keep < 0 ? 0 : keep)) {
		free(v);
		return 0;
	}
	if (jseg_oldest_read(cursor_dir, v, n, who, &oldest) == -1) {
		free(v);
		return -1;
	}
	qsort(v, n, sizeof(*v), jseg_newest_first);
	for (i = (size_t)keep; i < n; i++) {
		if (v[i].n >= oldest)
			continue;
		if (jseg_path(path, sizeof(path), dir, base, v[i].n) == -1)
			continue;
		if (unlink(path) == 0) {
			log_info("%s: segment %s deleted (every reader past it, beyond "
			    "journal_keep=%d)", who, path, keep);
			*freed += v[i].size;
			deleted++;
		} else if (errno != ENOENT)
			log_warn("%s: cannot delete %s: %s", who, path, strerror(errno));
	}
	free(v);
	return deleted;
}
