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

struct tls_info {
	char	version[16];	/* "TLSv1.3" */
	char	cipher[64];	/* "TLS_AES_256_GCM_SHA384" */
	char	sni[256];	/* "" when the client sent none; as sent, bounded */
	int	bits;
};

/* Fill out from an established connection. */
void	 tls_get_info(SSL *ssl, struct tls_info *out);

#endif
