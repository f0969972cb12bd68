/*
 * The JSON writer: every JSON document the daemon writes (events, the
 * reception record, payloads, relay records) is built through it.
 */
#ifndef FOSR_JBUF_H
#define FOSR_JBUF_H

#include <stdbool.h>
#include <stddef.h>

/*
 * JSON builder.  Keys are trusted C strings; every value string goes through
 * jb_str(), which writes valid UTF-8 JSON whatever the input bytes: control
 * characters (C0, DEL, C1) and the bidi controls as \uXXXX and each byte of
 * an invalid UTF-8 sequence as U+FFFD.
 */
struct jbuf {
	char	*buf;
	size_t	 len;
	size_t	 cap;
	int	 depth;
	bool	 first[16];	/* no comma needed yet at this depth */
	bool	 oom;		/* an allocation failed: the result is unusable */
};

void	jb_init(struct jbuf *);
void	jb_free(struct jbuf *);
void	jb_reset(struct jbuf *);
void	jb_obj_open(struct jbuf *);
void	jb_obj_close(struct jbuf *);
void	jb_arr_open(struct jbuf *);
void	jb_arr_close(struct jbuf *);
void	jb_key(struct jbuf *, const char *key);
void	jb_str(struct jbuf *, const void *s, size_t len);
void	jb_cstr(struct jbuf *, const char *s);	/* NULL writes null */
void	jb_int(struct jbuf *, long long);
void	jb_uint(struct jbuf *, unsigned long long);
void	jb_bool(struct jbuf *, bool);
void	jb_null(struct jbuf *);
void	jb_raw(struct jbuf *, const char *json, size_t len);	/* already-valid JSON value */
/* Raw bytes after what is there: no separator, no escaping (a line's "\n"). */
void	jb_put(struct jbuf *, const void *p, size_t n);
/* key + value shorthands */
void	jb_kstr(struct jbuf *, const char *key, const void *s, size_t len);
void	jb_kcstr(struct jbuf *, const char *key, const char *s);
void	jb_kint(struct jbuf *, const char *key, long long);
void	jb_kuint(struct jbuf *, const char *key, unsigned long long);
void	jb_kbool(struct jbuf *, const char *key, bool);

#endif
