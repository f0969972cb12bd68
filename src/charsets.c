/*
 * Conversions to UTF-8 kept loaded before a chroot (see charsets.h).
 */

#include <iconv.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <gmime/gmime.h>

#include "charsets.h"

/*
 * The charsets mail is written in, by glibc's name (its aliases, e.g. cp1251,
 * x-sjis, ks_c_5601-1987, are resolved through gconv-modules.cache to the
 * same module).  Outside glibc's built-ins (UTF-8, US-ASCII, UTF-16/32,
 * UCS-2/4, UTF-7), each is a module; several share one (ISO-2022-JP and
 * ISO-2022-JP-2; EUC-KR and CP949 use libKSC).
 */
static const char *const charsets_list[] = {
	/* Latin */
	"ISO-8859-1", "ISO-8859-2", "ISO-8859-3", "ISO-8859-4", "ISO-8859-9",
	"ISO-8859-10", "ISO-8859-13", "ISO-8859-14", "ISO-8859-15", "ISO-8859-16",
	"WINDOWS-1250", "WINDOWS-1252", "WINDOWS-1254", "WINDOWS-1257",
	"WINDOWS-1258", "IBM850", "IBM437", "MACINTOSH",
	/* Cyrillic, Greek, Hebrew, Arabic, Thai, Vietnamese */
	"KOI8-R", "KOI8-U", "ISO-8859-5", "WINDOWS-1251", "IBM866",
	"ISO-8859-7", "WINDOWS-1253", "ISO-8859-8", "WINDOWS-1255",
	"ISO-8859-6", "WINDOWS-1256", "TIS-620", "CP874", "ISO-8859-11", "VISCII",
	/* Japanese, Chinese, Korean */
	"SHIFT_JIS", "CP932", "EUC-JP", "ISO-2022-JP", "ISO-2022-JP-2",
	"GB2312", "GBK", "GB18030", "BIG5", "BIG5-HKSCS", "EUC-TW",
	"EUC-KR", "CP949", "ISO-2022-KR",
	/* built in, listed so the list says what works */
	"UTF-7", "UTF-16", "UTF-32",
};

#define CHARSETS_N	(sizeof(charsets_list) / sizeof(charsets_list[0]))

/* One descriptor per charset, and one for GMime's name when it differs. */
static iconv_t	 charsets_cd[CHARSETS_N * 2];
static size_t	 charsets_ncd;
static int	 charsets_pinned;

size_t
charsets_listed(void)
{
	return CHARSETS_N;
}

/* Keep a descriptor for the conversion of cs to UTF-8; 0, or -1 if none. */
static int
charsets_keep(const char *cs)
{
	iconv_t cd;

	if (charsets_ncd >= sizeof(charsets_cd) / sizeof(charsets_cd[0]) ||
	    (cd = iconv_open("UTF-8", cs)) == (iconv_t)-1)
		return -1;
	charsets_cd[charsets_ncd++] = cd;
	return 0;
}

int
charsets_pin(int gmime, char *missing, size_t missinglen)
{
	size_t i, used = 0;
	int bad = 0;

	if (missinglen > 0)
		missing[0] = '\0';
	if (charsets_pinned)
		return 0;
	charsets_pinned = 1;
	for (i = 0; i < CHARSETS_N; i++) {
		const char *cs = charsets_list[i], *gn;

		if (charsets_keep(cs) == -1) {
			int n = snprintf(missing + used, missinglen - used, "%s%s",
			    used ? "," : "", cs);

			if (n > 0 && (size_t)n < missinglen - used)
				used += (size_t)n;
			bad++;
			continue;
		}
		/* GMime converts with its own name for some charsets. */
		if (gmime && (gn = g_mime_charset_iconv_name(cs)) != NULL &&
		    strcasecmp(gn, cs) != 0)
			(void)charsets_keep(gn);
	}
	return bad;
}

void
charsets_unpin(void)
{
	while (charsets_ncd > 0)
		iconv_close(charsets_cd[--charsets_ncd]);
	charsets_pinned = 0;
}
