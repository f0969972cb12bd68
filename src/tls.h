/*
 * TLS for the listeners: one server SSL_CTX (TLS 1.2 and 1.3), a self-signed
 * certificate generated on first start when none is there, and the facts a
 * session records about a handshake.  Never logs; errors go to errbuf.
 */
#ifndef FOSR_TLS_H
#define FOSR_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

/*
 * Load cert/key; when both files are missing, generate a 2048-bit RSA key and a
 * self-signed certificate for hostname (CN and subjectAltName, serial random,
 * valid 10 years, the shape of Debian's ssl-cert snakeoil), write them (key
 * 0600, creating directories), then load them.  Returns NULL with err filled.
 */
SSL_CTX	*tls_server_ctx_new(const char *cert, const char *key, const char *hostname,
	    char *err, size_t errlen);

/*
 * The pair the seed's README had users make with openssl "inside this
 * directory": used when no tls paths are configured and both are there.
 */
#define TLS_SEED_CERT	"cert.pem"
#define TLS_SEED_KEY	"key.pem"

/*
 * Which of the seed's files are in the working directory: 0 none, 1 the
 * certificate only, 2 the key only, 3 both (each a regular file, links
 * followed).
 */
int	 tls_seed_files(void);

/*
 * The subject (RFC 2253, non-ASCII escaped) and notAfter (UTC, ISO 8601) of
 * ctx's certificate, for the start-up log line.  Returns 0 or -1.
 */
int	 tls_cert_summary(SSL_CTX *ctx, char *subject, size_t subjlen,
	    char *expires, size_t explen);

struct tls_info {
	char	version[16];	/* "TLSv1.3" */
	char	cipher[64];	/* "TLS_AES_256_GCM_SHA384" */
	char	sni[256];	/* "" when the client sent none; as sent, bounded */
	int	bits;
};

/* Fill out from an established connection. */
void	 tls_get_info(SSL *ssl, struct tls_info *out);

#endif
