/*
 * The spool's reception journal (receptions.jsonl): the group's lines in one
 * write and one fdatasync (worker), the acknowledged length readers may read
 * up to, rotation into numbered segments, pruning of the segments every
 * cursor is done with, and the repair of a torn last line at open.
 */
#include <sys/queue.h>
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

#include "log.h"
#include "spool.h"
#include "spool_int.h"
#include "testhook.h"
#include "util.h"

static void	 spool_journal_rotate(struct spool *);
static void	 spool_journal_prune(struct spool *);

/* Cut a torn last line off the journal (crash mid-append); 0 or -1. */
int
spool_repair_journal(int fd, off_t *lenp)
{
	struct stat	 st;
	char		 buf[4096];
	off_t		 pos, keep = 0;
	ssize_t		 n;

	if (fstat(fd, &st) == -1)
		return -1;
	*lenp = st.st_size;
	if (st.st_size == 0)
		return 0;
	if (pread(fd, buf, 1, st.st_size - 1) != 1)
		return -1;
	if (buf[0] == '\n')
		return 0;
	/* Scan backwards for the last newline. */
	pos = st.st_size;
	while (pos > 0) {
		size_t	chunk = pos > (off_t)sizeof(buf) ? sizeof(buf) : (size_t)pos;

		pos -= (off_t)chunk;
		n = pread(fd, buf, chunk, pos);
		if (n != (ssize_t)chunk) {
			if (n >= 0)
				errno = EIO;
			return -1;
		}
		for (size_t i = chunk; i > 0; i--) {
			if (buf[i - 1] == '\n') {
				keep = pos + (off_t)i;
				goto found;
			}
		}
	}
found:
	if (ftruncate(fd, keep) == -1 || fsync(fd) == -1)
		return -1;
	*lenp = keep;
	return 0;
}

/*
 * Append the records of the group's successful commits in one write and
 * fsync the journal.  On any failure the journal is cut back to its length
 * before, so no torn or unacknowledged line stays (a cut that fails is
 * tried again before the next append, which fails with it).  0 or -1 (errno).
 */
int
spool_journal_append(struct spool *sp, struct spool_msgq *q)
{
	struct spool_msg	*m;
	size_t			 total = 0, off = 0;
	char			*buf;
	int			 e;

	TAILQ_FOREACH(m, q, entry)
		if (m->status == 0)
			total += m->reclen;
	if (total == 0)
		return 0;
	if ((buf = malloc(total)) == NULL)
		return -1;
	TAILQ_FOREACH(m, q, entry)
		if (m->status == 0) {
			memcpy(buf + off, m->record, m->reclen);
			off += m->reclen;
		}
	/*
	 * A failed append whose cut failed too left bytes behind journal_len:
	 * nothing goes after them (a later cut would take acknowledged lines,
	 * and a torn line would swallow the next), the cut is tried again.
	 */
	/*
	 * The rotation's fsync of the spool directory failed: the live file's
	 * name may not be on disk, and a line in it would announce a mail a
	 * power cut takes back (its line gone with the name).  Again first.
	 */
	if (sp->journal_dirsync) {
		if ((e = TESTHOOK("journal_dirsync", "")) != 0 ||
		    util_fsync_dir(sp->dir) == -1) {
			if (e == 0)
				e = errno;
			free(buf);
			errno = e;
			return -1;
		}
		sp->journal_dirsync = false;
	}
	if (sp->journal_cut) {
		if ((e = TESTHOOK("journal_trunc", "")) != 0 ||
		    ftruncate(sp->journal_fd, sp->journal_len) == -1 ||
		    fsync(sp->journal_fd) == -1) {
			if (e == 0)
				e = errno;
			free(buf);
			errno = e;
			return -1;
		}
		sp->journal_cut = false;
	}
	if ((e = TESTHOOK("journal_write", "")) != 0 ||
	    util_write_all(sp->journal_fd, buf, total) == -1 ||
	    (e = TESTHOOK("journal_sync", "")) != 0 ||
	    fdatasync(sp->journal_fd) == -1) {
		if (e != 0)
			errno = e;
		e = errno;
		free(buf);
		if (TESTHOOK("journal_trunc", "") == 0 &&
		    ftruncate(sp->journal_fd, sp->journal_len) == 0)
			(void)fsync(sp->journal_fd);
		else
			sp->journal_cut = true;
		errno = e;
		return -1;
	}
	free(buf);
	sp->journal_len += (off_t)total;
	spool_wrote(sp, total);
	spool_journal_committed_set(sp);
	(void)TESTHOOK("acked", "");
	if (sp->journal_seg > 0 && (uint64_t)sp->journal_len >= sp->journal_seg)
		spool_journal_rotate(sp);
	return 0;
}

/*
 * Publish the current journal file's inode and the length of its
 * acknowledged lines (worker, and spool_open).  A failed append is cut back
 * to journal_len: a reader that read beyond it would read past the cut into
 * the next append's bytes (a torn line, skipped: a lost 250'd mail).
 */
void
spool_journal_committed_set(struct spool *sp)
{
	struct stat st;
	uint64_t ino = 0;

	if (fstat(sp->journal_fd, &st) == 0)
		ino = (uint64_t)st.st_ino;
	pthread_mutex_lock(&sp->jc_mu);
	sp->jc_ino = ino;
	sp->jc_len = (uint64_t)sp->journal_len;
	pthread_mutex_unlock(&sp->jc_mu);
}

/*
 * The current journal file's inode and how many of its bytes are
 * acknowledged lines: readers of the live journal read no further (any
 * thread).  A rotated segment is acknowledged whole.
 */
void
spool_journal_committed(struct spool *sp, uint64_t *ino, uint64_t *len)
{
	pthread_mutex_lock(&sp->jc_mu);
	*ino = sp->jc_ino;
	*len = sp->jc_len;
	pthread_mutex_unlock(&sp->jc_mu);
}

/*
 * The journal reached its segment size: rename it to receptions.jsonl.<n>
 * (the readers follow it by inode to its end, then take the next segment)
 * and start a new one.  Runs in the commit worker after an append, so no
 * line is split.  On any failure the current file simply keeps growing.
 */
static void
spool_journal_rotate(struct spool *sp)
{
	char name[PATH_MAX];
	int fd, e;

	if (spool_path_segment(name, sizeof(name), sp->dir, sp->journal_seq + 1) == -1)
		return;
	if (rename(sp->journal_path, name) == -1) {
		log_warn("spool: journal rotation: rename %s: %s", sp->journal_path,
		    strerror(errno));
		return;
	}
	if ((fd = open(sp->journal_path, O_RDWR | O_APPEND | O_CREAT | O_EXCL |
	    O_CLOEXEC, SPOOL_FILE_MODE)) == -1) {
		log_warn("spool: journal rotation: %s: %s; keeping one file",
		    sp->journal_path, strerror(errno));
		(void)rename(name, sp->journal_path);
		return;
	}
	/* The new file's name on disk: else no line in it is acknowledged. */
	if ((e = TESTHOOK("journal_dirsync", "")) != 0 || util_fsync_dir(sp->dir) == -1) {
		log_warn("spool: journal rotation: fsync %s: %s; again before the next "
		    "append", sp->dir, strerror(e != 0 ? e : errno));
		sp->journal_dirsync = true;
	}
	sp->journal_seq++;
	close(sp->journal_fd);
	sp->journal_fd = fd;
	sp->journal_len = 0;
	spool_journal_committed_set(sp);
	log_info("spool: journal rotated to %s", name);
	spool_journal_prune(sp);
}

/*
 * Delete rotated segments every reader is done with: beyond the newest
 * journal_keep, and older than the file each feed cursor (<dir>/feed/
 * *.cursor, "<offset> ino=<n> ...") points into.  When in doubt, keep: a
 * cursor that names no inode (an old format), that cannot be read (EMFILE,
 * EIO) or a feed/ directory that cannot be read keeps everything.
 */
static void
spool_journal_prune(struct spool *sp)
{
	char path[PATH_MAX + 256], feed[PATH_MAX], buf[200], *p;
	unsigned long long n, oldest_read = ULLONG_MAX, ino;
	unsigned long long *segs = NULL, *inos = NULL, *tmp;
	size_t nseg = 0, cap = 0, i, j;
	struct dirent *de;
	struct stat st;
	ssize_t r;
	DIR *d;
	int fd, e;

	if ((d = opendir(sp->dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (!spool_segment_name(de->d_name, &n))
			continue;
		snprintf(path, sizeof(path), "%s/%s", sp->dir, de->d_name);
		if (stat(path, &st) == -1) {
			if (errno == ENOENT)
				continue;
			goto out;	/* its inode unknown: a cursor may be in it */
		}
		if (nseg == cap) {
			cap = cap ? cap * 2 : 16;
			if ((tmp = reallocarray(segs, cap, sizeof(*segs))) == NULL)
				goto out;
			segs = tmp;
			if ((tmp = reallocarray(inos, cap, sizeof(*inos))) == NULL)
				goto out;
			inos = tmp;
		}
		segs[nseg] = n;
		inos[nseg++] = (unsigned long long)st.st_ino;
	}
	closedir(d);
	d = NULL;
	if (nseg <= (size_t)sp->journal_keep)
		goto out;
	/* The oldest segment a cursor still points into (ULLONG_MAX: none). */
	(void)spool_path_dir(feed, sizeof(feed), sp->dir, SPOOL_DIR_FEED);
	if ((e = TESTHOOK("prune_feed_dir", "")) != 0) {
		errno = e;
		d = NULL;
	} else
		d = opendir(feed);
	if (d == NULL && errno != ENOENT) {
		/* When in doubt, keep: any cursor in there may need every segment. */
		log_warn("spool: cannot read the feed cursors in %s: %s; no journal "
		    "segment deleted", feed, strerror(errno));
		goto out;
	}
	if (d != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (!spool_cursor_name(de->d_name))
				continue;
			snprintf(path, sizeof(path), "%s/%s", feed, de->d_name);
			if ((e = TESTHOOK("prune_cursor", de->d_name)) != 0) {
				errno = e;
				fd = -1;
			} else
				fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd == -1 && errno == ENOENT)
				continue;	/* removed since: it protects nothing */
			if (fd == -1 || (r = read(fd, buf, sizeof(buf) - 1)) <= 0) {
				/* EMFILE, EIO...: the cursor may point anywhere. */
				log_warn("spool: cannot read the feed cursor %s: %s; no "
				    "journal segment deleted", path, fd == -1 || r < 0 ?
				    strerror(errno) : "empty");
				if (fd != -1)
					close(fd);
				goto out;
			}
			close(fd);
			buf[r] = '\0';
			if ((p = strstr(buf, " ino=")) == NULL ||
			    sscanf(p, " ino=%llu", &ino) != 1) {
				oldest_read = 0;	/* unknown file: keep all */
				continue;
			}
			for (i = 0; i < nseg; i++)
				if (inos[i] == ino && segs[i] < oldest_read)
					oldest_read = segs[i];
		}
		closedir(d);
		d = NULL;
	}
	/* Newest first, so the first journal_keep are kept. */
	for (i = 0; i < nseg; i++)
		for (j = i + 1; j < nseg; j++)
			if (segs[j] > segs[i]) {
				n = segs[i];
				segs[i] = segs[j];
				segs[j] = n;
			}
	for (i = (size_t)sp->journal_keep; i < nseg; i++) {
		if (segs[i] >= oldest_read)
			continue;
		if (spool_path_segment(path, sizeof(path), sp->dir, segs[i]) == 0 &&
		    unlink(path) == 0)
			log_info("spool: journal segment %s deleted (published, beyond "
			    "journal_keep=%d)", path, sp->journal_keep);
	}
out:
	if (d != NULL)
		closedir(d);
	free(segs);
	free(inos);
}
