/*
 * The DATA and BDAT body scanner: pure, no I/O.  smtp_session feeds it the
 * bytes a client sends after DATA (or in BDAT chunks) as they arrive, in
 * pieces of any size; it gives back the message's content and what is odd
 * about it.
 *
 * DATA: lines end at LF, as Postfix reads them; a line that is a single "."
 * (CRLF or bare LF) ends the message, a leading "." is removed (RFC 5321
 * 4.5.2), every other byte is kept exactly (CRLF kept, bare CR and bare LF
 * kept as sent).  BDAT: every byte is content; only NUL and 8-bit bytes are
 * noted, and the last two bytes (whether the message ends with CRLF).
 */
#ifndef FOSR_SMTP_DATA_H
#define FOSR_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Anomalies (bits of smtp_data.anomalies; the reception record names them). */
#define SMTP_DATA_BARE_LF	0x0001	/* a line ended by LF alone */
#define SMTP_DATA_BARE_CR	0x0002	/* a CR not followed by LF */
#define SMTP_DATA_NUL		0x0004
#define SMTP_DATA_8BIT		0x0008
#define SMTP_DATA_LONG_LINE	0x0010	/* over 998 octets before the CRLF */
#define SMTP_DATA_SMUGGLE	0x0020	/* end of data not <CRLF>.<CRLF>, or <CR>.<CR> */

/* Output room smtp_data_scan needs to make progress (a dot and 64 CRs held back). */
#define SMTP_DATA_OUT_MIN	128

/* Where the DATA scanner is within a line. */
enum smtp_data_pos { SMTP_DP_BOL, SMTP_DP_MID, SMTP_DP_DOT, SMTP_DP_DOTCR };

/* The scanner's state: zero it with smtp_data_init() at DATA (or the first BDAT). */
struct smtp_data {
	enum smtp_data_pos dpos;
	unsigned	 dotcr;			/* CRs seen after a leading dot */
	unsigned char	 crdot;			/* 1 after a CR, 2 after CR '.' */
	bool		 prev_cr;
	bool		 prev_line_bare;
	uint32_t	 linelen;
	unsigned	 anomalies;		/* SMTP_DATA_* seen so far */
	unsigned char	 last2[2];		/* BDAT: the message's last two bytes */
};

void	 smtp_data_init(struct smtp_data *);

/*
 * Scan DATA input in[0..n): the message's content goes to out (at most
 * outcap bytes, outcap >= SMTP_DATA_OUT_MIN; *olen set to what was put
 * there).  Returns how many input bytes were consumed: all of them, or
 * fewer when out is full (call again with the rest) or the end of data was
 * seen (*done set; the end marker is consumed and not content).
 */
size_t	 smtp_data_scan(struct smtp_data *, const unsigned char *in, size_t n,
	    unsigned char *out, size_t outcap, size_t *olen, bool *done);

/* BDAT: note the anomalies and last bytes of the content in[0..n). */
void	 smtp_data_bdat(struct smtp_data *, const unsigned char *in, size_t n);

/* BDAT: whether a message of size bytes (its last bytes seen) ends with CRLF. */
bool	 smtp_data_ends_crlf(const struct smtp_data *, uint64_t size);

#endif
