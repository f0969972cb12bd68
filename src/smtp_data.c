/*
 * The DATA and BDAT body scanner (see smtp_data.h).  Pure: no I/O, no
 * allocation; the state is the caller's.
 */
#include <string.h>

#include "smtp_data.h"

#define DOTCR_MAX	64		/* CRs held back after a leading dot */

/* Zero the state: the start of a message, at the beginning of a line. */
void
smtp_data_init(struct smtp_data *d)
{
	memset(d, 0, sizeof(*d));
	d->dpos = SMTP_DP_BOL;
}

/* A byte that ends no line, starts no CR/dot sequence and raises no anomaly. */
static inline bool
data_plain(unsigned char c)
{
	return (c >= 0x20 && c <= 0x7e) || c == '\t';
}

/*
 * The DATA body scanner.  Lines end at LF, as Postfix reads them; a line that
 * is a single "." (CRLF or bare LF) ends the message, a leading "." is
 * removed (RFC 5321 4.5.2), every other byte is stored exactly.  Bare LF, bare
 * CR, NUL, 8-bit bytes, lines over 998 octets and end markers other than
 * <CRLF>.<CRLF> are recorded as anomalies.
 */
size_t
smtp_data_scan(struct smtp_data *t, const unsigned char *p, size_t n,
    unsigned char *out, size_t outcap, size_t *olenp, bool *done)
{
	size_t olen = 0, i;

	*done = false;
	for (i = 0; i < n && !*done; i++) {
		unsigned char c = p[i];

		/* Room for this byte and the CRs a leading dot may have held back. */
		if (olen + DOTCR_MAX + 2 > outcap)
			break;
		if (t->dpos == SMTP_DP_MID && !t->prev_cr && t->crdot == 0 && data_plain(c)) {
			/*
			 * Fast path, the bulk of every mail: in the middle of a line,
			 * after a byte that was not CR, a run of printable ASCII and
			 * tabs changes nothing but the line length; copy it whole.
			 */
			size_t k = i + 1, room = outcap - 2 - olen;

			while (k < n && k - i < room && data_plain(p[k]))
				k++;
			memcpy(out + olen, p + i, k - i);
			olen += k - i;
			if (t->linelen < UINT32_MAX - (k - i))
				t->linelen += (uint32_t)(k - i);
			i = k - 1;
			continue;
		}
		switch (t->dpos) {
		case SMTP_DP_BOL:
			if (c == '.') {
				t->dpos = SMTP_DP_DOT;
				continue;
			}
			break;
		case SMTP_DP_DOT:
			if (c == '\n') {
				t->anomalies |= SMTP_DATA_SMUGGLE;
				*done = true;
				continue;
			}
			if (c == '\r') {
				t->dpos = SMTP_DP_DOTCR;
				t->dotcr = 1;
				continue;
			}
			break;	/* a stuffed dot: dropped, c is content */
		case SMTP_DP_DOTCR:
			if (c == '\n') {
				/* ".\r\n" ends the message; so does ".\r\r\n" for Postfix. */
				if (t->prev_line_bare || t->dotcr > 1)
					t->anomalies |= SMTP_DATA_SMUGGLE;
				*done = true;
				continue;
			}
			if (c == '\r' && t->dotcr < DOTCR_MAX) {
				t->dotcr++;
				continue;
			}
			/* ".\r" then something: the dot was stuffing, the CRs are content. */
			while (t->dotcr > 0) {
				out[olen++] = '\r';
				t->dotcr--;
				t->linelen++;
			}
			t->prev_cr = true;
			break;
		case SMTP_DP_MID:
			break;
		}
		/* c is a content byte in the middle of a line. */
		out[olen++] = c;
		/* <CR>.<CR> ends nothing here (nor in Postfix) but is a smuggling try. */
		if (t->crdot == 2 && c == '\r')
			t->anomalies |= SMTP_DATA_SMUGGLE;
		t->crdot = (c == '\r') ? 1 : (t->crdot == 1 && c == '.') ? 2 : 0;
		if (c == '\n') {
			/* RFC 5321 4.5.3.1.6: at most 998 octets before the CRLF. */
			if (t->linelen - (t->prev_cr ? 1 : 0) > 998)
				t->anomalies |= SMTP_DATA_LONG_LINE;
			t->prev_line_bare = !t->prev_cr;
			if (!t->prev_cr)
				t->anomalies |= SMTP_DATA_BARE_LF;
			t->prev_cr = false;
			t->linelen = 0;
			t->dpos = SMTP_DP_BOL;
			continue;
		}
		if (t->prev_cr)
			t->anomalies |= SMTP_DATA_BARE_CR;
		t->prev_cr = c == '\r';
		if (c == '\0')
			t->anomalies |= SMTP_DATA_NUL;
		else if (c >= 0x80)
			t->anomalies |= SMTP_DATA_8BIT;
		if (t->linelen < UINT32_MAX)
			t->linelen++;
		t->dpos = SMTP_DP_MID;
	}
	*olenp = olen;
	return i;
}

/* BDAT content: NUL and 8-bit bytes, and the last two bytes. */
void
smtp_data_bdat(struct smtp_data *t, const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (p[i] == 0)
			t->anomalies |= SMTP_DATA_NUL;
		else if (p[i] >= 0x80)
			t->anomalies |= SMTP_DATA_8BIT;
	}
	if (n > 0) {
		t->last2[0] = n >= 2 ? p[n - 2] : t->last2[1];
		t->last2[1] = p[n - 1];
	}
}

/* Whether the BDAT message of size bytes ends with CRLF. */
bool
smtp_data_ends_crlf(const struct smtp_data *t, uint64_t size)
{
	return size >= 2 && t->last2[0] == '\r' && t->last2[1] == '\n';
}
