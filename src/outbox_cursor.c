/*
 * The outbox's cursor files (format in outbox.h): reading one at open,
 * saving the ones that moved (tmp + fsync + rename + fsync of the
 * directory), restoring a cursor whose file was lost, and setting aside the
 * cursor files no output of this process opened.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fosr_limits.h"
#include "hpfeeds_wire.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "outbox_int.h"
#include "spool.h"
#include "testhook.h"
#include "util.h"

static void	 cursor_save(struct outbox_cursor *);
static bool	 cursor_is_open(dev_t, ino_t, const char *file);
static void	 cursor_tmp_remove(const struct outbox_cursor *);
static bool	 cursor_tmp_stale(int, dev_t, ino_t, const char *, const char *);

pthread_mutex_t		 outbox_open_mu = PTHREAD_MUTEX_INITIALIZER;
struct outbox_cursor	*outbox_open_list;

/* ------------------------------------------------------------- cursors */

/*
 * A save (cursor_save) the daemon died in left <cursor>.tmp: the rename is
 * the save, so the cursor file is whole and the temporary is nothing.  At
 * open, before this cursor is ever saved (no save of it can be in progress).
 */
static void
cursor_tmp_remove(const struct outbox_cursor *c)
{
	char tmp[PATH_MAX + 8];

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", c->cursor_path) >= sizeof(tmp))
		return;
	if (unlink(tmp) == 0)
		log_info("%s: cursor of \"%s\": removed %s, left by a save a crash "
		    "interrupted", c->ob->who, c->name, tmp);
	else if (errno != ENOENT)
		log_warn("%s: cursor of \"%s\": cannot remove %s: %s", c->ob->who,
		    c->name, tmp, strerror(errno));
}

/*
 * Read a channel's cursor file (missing = 0): "<offset>", then (optional,
 * older cursors lack them) " ino=<n> dev=<n> line=<fnv64 hex>:<length>": the
 * file the offset points into and the line that ends there.
 */
int
outbox_cursor_load(struct outbox_cursor *c, char *err, size_t errlen)
{
	char buf[200], *sp, *tok, *save = NULL;
	ssize_t n;
	size_t len;
	uint64_t v;
	int fd;

	c->cursor = 0;
	c->cino = c->cdev = c->lkey = c->hkey = 0;
	c->llen = c->hlen = 0;
	cursor_tmp_remove(c);
	if ((fd = open(c->cursor_path, O_RDONLY | O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", c->cursor_path, strerror(errno));
		return -1;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0) {
		snprintf(err, errlen, "%s: %s", c->cursor_path, strerror(errno));
		return -1;
	}
	len = (size_t)n;
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	buf[len] = '\0';
	if ((sp = memchr(buf, ' ', len)) != NULL) {
		len = (size_t)(sp - buf);
		for (tok = strtok_r(sp + 1, " ", &save); tok != NULL;
		    tok = strtok_r(NULL, " ", &save)) {
			unsigned long long a, b;

			if (sscanf(tok, "ino=%llu", &a) == 1)
				c->cino = a;
			else if (sscanf(tok, "dev=%llu", &a) == 1)
				c->cdev = a;
			else if (sscanf(tok, "line=%llx:%llu", &a, &b) == 2 && b < UINT32_MAX) {
				c->lkey = a;
				c->llen = (uint32_t)b;
			} else if (sscanf(tok, "head=%llx:%llu", &a, &b) == 2 &&
			    b <= OB_HEAD_LEN) {
				c->hkey = a;
				c->hlen = (uint32_t)b;
			}
		}
	}
	if (util_parse_u64(buf, len, 0, (uint64_t)INT64_MAX, false, &v) == -1) {
		/* A bad cursor means duplicates from the start, never a loss. */
		log_warn("%s: cursor=%s unreadable, publishing channel %s from "
		    "the start of the journal", c->ob->who, c->cursor_path, c->name);
		c->cino = c->cdev = c->lkey = c->hkey = 0;
		c->llen = c->hlen = 0;
		c->lost = true;
		return 0;
	}
	c->cursor = v;
	return 0;
}

/*
 * Write a channel's cursor durably: tmp file, fsync, rename, fsync dir.  A
 * failure leaves it dirty: saved again next time.  Until the directory is
 * synced the rename may not be on disk while the journal's pruning already
 * reads the new cursor: a save is only done once the fsync of the directory
 * succeeded.
 */
static void
cursor_save(struct outbox_cursor *c)
{
	char tmp[PATH_MAX + 8], buf[200], dir[PATH_MAX], *slash;
	int fd, len, e = 0;

	if (!c->dirty)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", c->cursor_path);
	len = snprintf(buf, sizeof(buf), "%llu ino=%llu dev=%llu line=%016llx:%u "
	    "head=%016llx:%u\n", (unsigned long long)c->cursor,
	    (unsigned long long)c->cino, (unsigned long long)c->cdev,
	    (unsigned long long)c->lkey, c->llen, (unsigned long long)c->hkey, c->hlen);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd == -1 || write(fd, buf, (size_t)len) != len || fsync(fd) == -1) {
		log_series(&c->save_fail, LOG_LVL_WARN, "%s: cursor=%s write failed: %s",
		    c->ob->who, tmp, strerror(errno));
		if (fd != -1)
			close(fd);
		return;
	}
	close(fd);
	if (rename(tmp, c->cursor_path) == -1) {
		log_series(&c->save_fail, LOG_LVL_WARN, "%s: cursor=%s rename failed: %s",
		    c->ob->who, c->cursor_path, strerror(errno));
		return;
	}
	snprintf(dir, sizeof(dir), "%s", c->cursor_path);
	if ((slash = strrchr(dir, '/')) != NULL) {
		*slash = '\0';
		if ((e = TESTHOOK("cursor_dirsync", c->name)) != 0 ||
		    util_fsync_dir(dir) == -1) {
			log_series(&c->save_fail, LOG_LVL_WARN, "%s: cursor=%s: fsync %s "
			    "failed: %s; saved again next time", c->ob->who,
			    c->cursor_path, dir, strerror(e != 0 ? e : errno));
			return;
		}
	}
	c->dirty = false;
	log_series_end(&c->save_fail, LOG_LVL_INFO, "%s: cursor=%s saved again",
	    c->ob->who, c->cursor_path);
}

/*
 * The output is configured again after its cursor was set aside
 * (outbox_set_aside_stale): take the cursor back from <cursor_dir>/stale/,
 * so that the output resumes where it stopped.  If the file it points into
 * was deleted meanwhile, outbox_start says so and starts from what is
 * there (duplicates, never a silent skip).
 */
void
outbox_cursor_restore(struct outbox_cursor *c)
{
	char stale[PATH_MAX + 8], from[PATH_MAX * 2];
	struct stat st;

	if (stat(c->cursor_path, &st) == 0 || errno != ENOENT)
		return;
	if ((size_t)snprintf(stale, sizeof(stale), "%s/" SPOOL_CURSOR_STALE,
	    c->ob->cursor_dir) >= sizeof(stale) ||
	    (size_t)snprintf(from, sizeof(from), "%s/%s", stale, c->file) >= sizeof(from))
		return;
	if (rename(from, c->cursor_path) == -1) {
		if (errno != ENOENT)
			log_warn("%s: cursor of \"%s\": cannot restore %s: %s; starting "
			    "without it", c->ob->who, c->name, from, strerror(errno));
		return;
	}
	/* Not synced: after a power cut it is in stale/ again, restored again. */
	(void)util_fsync_dir(c->ob->cursor_dir);
	(void)util_fsync_dir(stale);
	log_info("%s: cursor of \"%s\" restored from %s: the output is configured "
	    "again and resumes where it stopped", c->ob->who, c->name, stale);
}

/*
 * Save every channel's cursor that moved, with the first bytes of the file
 * it reads as they are now (a file cut or replaced under the same inode
 * while the daemon is stopped is told by them).
 */
void
outbox_save(struct outbox *ob)
{
	struct stat st;
	int i;

	if (ob == NULL)
		return;
	if (ob->fd != -1 && !ob->draining && fstat(ob->fd, &st) == 0)
		for (i = 0; i < ob->ncurs; i++)
			outbox_head_update(ob->fd, (uint64_t)st.st_size, ob->curs[i]);
	for (i = 0; i < ob->ncurs; i++)
		cursor_save(ob->curs[i]);
}

/* Whether a cursor of this process is the file named file in the directory (dev, ino). */
static bool
cursor_is_open(dev_t dev, ino_t ino, const char *file)
{
	struct outbox_cursor *c;
	bool found = false;

	pthread_mutex_lock(&outbox_open_mu);
	for (c = outbox_open_list; c != NULL && !found; c = c->open_next)
		found = c->ob->cdir_dev == dev && c->ob->cdir_ino == ino &&
		    strcmp(c->file, file) == 0;
	pthread_mutex_unlock(&outbox_open_mu);
	return found;
}

/*
 * name is a cursor's temporary (<cursor>.tmp) whose cursor no outbox of
 * this process opened: what a save a crash interrupted left of an output
 * no longer configured (an open cursor's own was removed at its open, and
 * one made since is a save in progress).  Removed (the cursor file is
 * whole: the rename is the save); true when name was such a temporary.
 */
static bool
cursor_tmp_stale(int dfd, dev_t dev, ino_t ino, const char *name, const char *dir)
{
	char cur[NAME_MAX + 1], shown[4 * (NAME_MAX + 1)];
	size_t nl = strlen(name), tl = sizeof(".tmp") - 1;

	if (nl <= tl || nl - tl >= sizeof(cur) || strcmp(name + nl - tl, ".tmp") != 0)
		return false;
	memcpy(cur, name, nl - tl);
	cur[nl - tl] = '\0';
	if (!spool_cursor_name(cur))
		return false;
	if (cursor_is_open(dev, ino, cur))
		return true;
	log_escape(shown, sizeof(shown), name, nl);
	if (unlinkat(dfd, name, 0) == 0)
		log_info("outbox: removed %s/%s, left by a cursor save a crash "
		    "interrupted", dir, shown);
	else if (errno != ENOENT)
		log_warn("outbox: cannot remove %s/%s, left by a cursor save a crash "
		    "interrupted: %s", dir, shown, strerror(errno));
	return true;
}

/*
 * Set aside the cursors of outputs no longer configured (see outbox.h):
 * each cursor file of dir that no outbox of this process opened is renamed
 * into dir/stale/, where the spool's pruning does not look.
 */
int
outbox_set_aside_stale(const char *dir)
{
	char stale[PATH_MAX + 8], from[PATH_MAX * 2], to[PATH_MAX * 3];
	char buf[64], name[OB_NAME_MAX], shown[4 * OB_NAME_MAX];
	struct dirent *de;
	struct stat st;
	unsigned long long off;
	ssize_t r;
	long nl;
	size_t fl, sl = sizeof(SPOOL_CURSOR_SUFFIX) - 1;
	int fd, moved = 0;
	DIR *d;

	if ((size_t)snprintf(stale, sizeof(stale), "%s/" SPOOL_CURSOR_STALE, dir) >=
	    sizeof(stale))
		return -1;
	if ((d = opendir(dir)) == NULL) {
		if (errno == ENOENT)
			return 0;
		log_warn("outbox: cannot read the cursors in %s: %s; none set aside", dir,
		    strerror(errno));
		return -1;
	}
	if (fstat(dirfd(d), &st) == -1) {
		closedir(d);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (cursor_tmp_stale(dirfd(d), st.st_dev, st.st_ino, de->d_name, dir))
			continue;
		if (!spool_cursor_name(de->d_name) ||
		    cursor_is_open(st.st_dev, st.st_ino, de->d_name))
			continue;
		(void)snprintf(from, sizeof(from), "%s/%s", dir, de->d_name);
		(void)snprintf(to, sizeof(to), "%s/%s", stale, de->d_name);
		/* For the log: whose it was (the name is its file name's hex) and where. */
		fl = strlen(de->d_name) - sl;
		if ((nl = util_unhex(de->d_name, fl, name, sizeof(name))) >= 0)
			log_escape(shown, sizeof(shown), name, (size_t)nl);
		else
			log_escape(shown, sizeof(shown), de->d_name, strlen(de->d_name));
		off = 0;
		if ((fd = open(from, O_RDONLY | O_CLOEXEC)) != -1) {
			if ((r = read(fd, buf, sizeof(buf) - 1)) > 0) {
				buf[r] = '\0';
				(void)sscanf(buf, "%llu", &off);
			}
			close(fd);
		}
		if ((mkdir(stale, 0750) == -1 && errno != EEXIST) || rename(from, to) == -1) {
			log_warn("outbox: cursor %s of \"%s\" belongs to no configured output "
			    "but cannot be set aside (%s): it keeps the journal segments from "
			    "the one it points into", from, shown, strerror(errno));
			continue;
		}
		moved++;
		log_warn("outbox: cursor of \"%s\" (offset %llu): its output is no longer "
		    "configured: moved to %s/; it no longer keeps journal segments (the "
		    "output configured again resumes from it, if what it points into is "
		    "still there)", shown, off, stale);
	}
	closedir(d);
	/* Not synced: after a power cut they are in dir again, moved again. */
	if (moved > 0) {
		(void)util_fsync_dir(stale);
		(void)util_fsync_dir(dir);
	}
	return moved;
}
