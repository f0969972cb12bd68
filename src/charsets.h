/*
 * Charset conversions kept loaded for a chroot.  glibc converts most charsets
 * with modules it dlopen()s from /usr/lib/<arch>/gconv on first use, and
 * unloads a module some time after its last descriptor is closed
 * (iconv/gconv_dl.c: a module whose use count is 0 is dlclose()d after
 * TRIES_BEFORE_UNLOAD later loads of other modules).  Under sandbox.chroot
 * that directory is outside: an unloaded module cannot come back, and a
 * Subject in KOI8-R or Shift_JIS would decode to '?'.  charsets_pin(), called
 * before the chroot, opens one iconv descriptor to UTF-8 for each charset of
 * a list of the common mail charsets (charsets.c) and keeps it open: a module
 * with a descriptor open is never unloaded, and a later iconv_open() of the
 * same conversion (src/mime.c, GMime for the analysis) finds it loaded and
 * needs no file.  The first iconv_open() also maps gconv-modules.cache (the
 * charset aliases), kept for the process's life.  A charset outside the list
 * under a chroot fails iconv_open() (EINVAL): both readers then keep the
 * bytes (mime.c: ASCII kept, other bytes U+FFFD; GMime: its fallback).
 */
#ifndef FOSR_CHARSETS_H
#define FOSR_CHARSETS_H

#include <stddef.h>

/*
 * Open and keep the conversions to UTF-8 of the list; with gmime (GMime is
 * initialised), also of GMime's own name for each charset where it differs
 * (g_mime_charset_iconv_name(): GMime decodes "gb2312" with "GBK").  Returns
 * the number of charsets of the list that glibc cannot convert (0 normally);
 * their names in missing (comma-separated, cut to missinglen).  Idempotent.
 */
int	charsets_pin(int gmime, char *missing, size_t missinglen);

/* The number of charsets of the list (for the log line). */
size_t	charsets_listed(void);

/* Close the kept descriptors (at exit). */
void	charsets_unpin(void);

#endif
