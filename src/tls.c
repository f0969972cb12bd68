/*
 * TLS for the listeners: the server SSL_CTX, a snakeoil-like self-signed
 * certificate generated on first start, and the handshake facts a session
 * records.  OpenSSL 3 APIs only (no deprecated calls).  Never logs.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* With -Isrc, <limits.h> finds src/limits.h: give OpenSSL's err.h its INT_MAX. */
#ifndef INT_MAX
#define INT_MAX __INT_MAX__
#endif
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls.h"
#include "util.h"

#define TLS_RSA_BITS		2048
#define TLS_VALID_DAYS		3650
#define TLS_CN_MAX		64	/* ub-common-name (RFC 5280) */
#define TLS_SESSION_ID_CTX	"fosr-collector"
#define TLS_PATH_MAX		4096

static void	 tls_err(char *err, size_t errlen, const char *what);
static bool	 tls_hostname_ok(const char *h);
static int	 tls_mkparent(const char *path);
static X509	*tls_make_cert(EVP_PKEY *pkey, const char *hostname);
static int	 tls_write_pem(const char *path, mode_t mode, EVP_PKEY *pkey, X509 *x);
static int	 tls_generate(const char *cert, const char *key, const char *hostname,
		    char *err, size_t errlen);

/* Fill err with what failed and the first queued OpenSSL error (or errno). */
static void
tls_err(char *err, size_t errlen, const char *what)
{
	unsigned long	e = ERR_get_error();
	char		buf[256];

	if (e != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		snprintf(err, errlen, "tls: %s: %s", what, buf);
	} else if (errno != 0)
		snprintf(err, errlen, "tls: %s: %s", what, strerror(errno));
	else
		snprintf(err, errlen, "tls: %s", what);
	ERR_clear_error();
}

/*
 * Open a PEM file to read as root: a FIFO put in its place (by whoever can
 * write its directory) would block the start for ever, a directory or a
 * device is no certificate either.  Links are followed (Let's Encrypt's
 * live/ holds links); what is read is the regular file just checked.
 */
static BIO *
tls_open_pem(const char *path, char *err, size_t errlen)
{
	struct stat	 st;
	BIO		*b;
	int		 fd;

	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "tls: %s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "tls: %s is not a regular file: refusing to read it",
		    path);
		close(fd);
		return NULL;
	}
	if ((b = BIO_new_fd(fd, BIO_CLOSE)) == NULL) {
		close(fd);
		errno = 0;
		tls_err(err, errlen, path);
	}
	return b;
}

/* SSL_CTX_use_certificate_chain_file, from a checked file. */
static int
tls_use_chain(SSL_CTX *ctx, const char *path, char *err, size_t errlen)
{
	BIO		*b;
	X509		*x, *ca;
	unsigned long	 e;
	int		 rc = -1;

	if ((b = tls_open_pem(path, err, errlen)) == NULL)
		return -1;
	errno = 0;
	if ((x = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL)) == NULL ||
	    SSL_CTX_use_certificate(ctx, x) != 1 ||
	    SSL_CTX_clear_chain_certs(ctx) != 1) {
		tls_err(err, errlen, path);
		goto out;
	}
	while ((ca = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
		if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
			X509_free(ca);
			tls_err(err, errlen, path);
			goto out;
		}
	}
	/* The end of the file is "no start line"; anything else is an error. */
	e = ERR_peek_last_error();
	if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
		tls_err(err, errlen, path);
		goto out;
	}
	ERR_clear_error();
	rc = 0;
out:
	X509_free(x);
	BIO_free(b);
	return rc;
}

/* SSL_CTX_use_PrivateKey_file (PEM), from a checked file. */
static int
tls_use_key(SSL_CTX *ctx, const char *path, char *err, size_t errlen)
{
	BIO		*b;
	EVP_PKEY	*pkey;
	int		 rc = 0;

	if ((b = tls_open_pem(path, err, errlen)) == NULL)
		return -1;
	errno = 0;
	if ((pkey = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)) == NULL ||
	    SSL_CTX_use_PrivateKey(ctx, pkey) != 1) {
		tls_err(err, errlen, path);
		rc = -1;
	}
	EVP_PKEY_free(pkey);
	BIO_free(b);
	return rc;
}

/* Is h a plausible DNS name (letters, digits, '-', '_', '.'; <= 253)? */
static bool
tls_hostname_ok(const char *h)
{
	size_t	n = strlen(h);

	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char	c = (unsigned char)h[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

/* Create the directory that will hold path (mkdir -p, 0755). */
static int
tls_mkparent(const char *path)
{
	char	*copy, *dir;
	int	 r;

	if ((copy = strdup(path)) == NULL)
		return -1;
	dir = dirname(copy);
	r = util_mkdirs(dir, 0755);
	free(copy);
	return r;
}

/* Build and sign a self-signed certificate for hostname, as make-ssl-cert does. */
static X509 *
tls_make_cert(EVP_PKEY *pkey, const char *hostname)
{
	X509			*x = NULL;
	X509_NAME		*name;
	BIGNUM			*bn = NULL;
	ASN1_INTEGER		*serial = NULL;
	GENERAL_NAMES		*gens = NULL;
	GENERAL_NAME		*gen = NULL;
	ASN1_IA5STRING		*ia5 = NULL;
	BASIC_CONSTRAINTS	*bc = NULL;
	unsigned char		 rnd[20];
	X509V3_CTX		 v3;
	X509_EXTENSION		*ext;
	char			 cn[TLS_CN_MAX + 1];

	if ((x = X509_new()) == NULL ||
	    X509_set_version(x, X509_VERSION_3) != 1)
		goto fail;

	/* A positive 159-bit random serial, as make-ssl-cert (openssl req) makes. */
	util_random(rnd, sizeof(rnd));
	rnd[0] = (rnd[0] & 0x7f) | 0x40;
	if ((bn = BN_bin2bn(rnd, sizeof(rnd), NULL)) == NULL ||
	    (serial = BN_to_ASN1_INTEGER(bn, NULL)) == NULL ||
	    X509_set_serialNumber(x, serial) != 1)
		goto fail;

	if (X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), TLS_VALID_DAYS, 0, NULL) == NULL)
		goto fail;

	snprintf(cn, sizeof(cn), "%s", hostname);
	if ((name = X509_get_subject_name(x)) == NULL ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0) != 1 ||
	    X509_set_issuer_name(x, name) != 1 ||
	    X509_set_pubkey(x, pkey) != 1)
		goto fail;

	if ((bc = BASIC_CONSTRAINTS_new()) == NULL)
		goto fail;
	bc->ca = 0;
	if (X509_add1_ext_i2d(x, NID_basic_constraints, bc, 0, 0) != 1)
		goto fail;

	if ((gens = GENERAL_NAMES_new()) == NULL ||
	    (gen = GENERAL_NAME_new()) == NULL ||
	    (ia5 = ASN1_IA5STRING_new()) == NULL ||
	    ASN1_STRING_set(ia5, hostname, -1) != 1)
		goto fail;
	GENERAL_NAME_set0_value(gen, GEN_DNS, ia5);
	ia5 = NULL;
	if (sk_GENERAL_NAME_push(gens, gen) == 0)
		goto fail;
	gen = NULL;
	if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, 0) != 1)
		goto fail;
	/* openssl req adds a Subject Key Identifier ("hash"): so does snakeoil. */
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	if ((ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_key_identifier,
	    "hash")) == NULL)
		goto fail;
	if (X509_add_ext(x, ext, -1) != 1) {
		X509_EXTENSION_free(ext);
		goto fail;
	}
	X509_EXTENSION_free(ext);

	if (X509_sign(x, pkey, EVP_sha256()) == 0)
		goto fail;

	BN_free(bn);
	ASN1_INTEGER_free(serial);
	BASIC_CONSTRAINTS_free(bc);
	GENERAL_NAMES_free(gens);
	return x;

fail:
	X509_free(x);
	BN_free(bn);
	ASN1_INTEGER_free(serial);
	BASIC_CONSTRAINTS_free(bc);
	GENERAL_NAMES_free(gens);
	GENERAL_NAME_free(gen);
	ASN1_IA5STRING_free(ia5);
	return NULL;
}

/*
 * Write a PEM key (pkey) or certificate (x) to path with mode: a new file
 * beside it, fsync'ed, then linked into place so nothing is ever overwritten.
 */
static int
tls_write_pem(const char *path, mode_t mode, EVP_PKEY *pkey, X509 *x)
{
	char		 tmp[TLS_PATH_MAX];
	unsigned char	 rnd[8];
	char		 hex[17];
	FILE		*fp;
	int		 fd, ok, e;

	util_random(rnd, sizeof(rnd));
	util_hex(rnd, sizeof(rnd), hex);
	if (snprintf(tmp, sizeof(tmp), "%s.%s.tmp", path, hex) >= (int)sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	/* Written as root: a fresh file only, never through a link someone left there. */
	if ((fd = open(tmp, O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC, mode)) == -1)
		return -1;
	/* The umask must not loosen nor tighten what we ask for. */
	if (fchmod(fd, mode) == -1 || (fp = fdopen(fd, "w")) == NULL) {
		e = errno;
		close(fd);
		unlink(tmp);
		errno = e;
		return -1;
	}
	if (pkey != NULL)
		ok = PEM_write_PrivateKey(fp, pkey, NULL, NULL, 0, NULL, NULL);
	else
		ok = PEM_write_X509(fp, x);
	if (ok != 1 || fflush(fp) != 0 || fsync(fileno(fp)) == -1) {
		e = errno;
		fclose(fp);
		unlink(tmp);
		errno = e;
		return -1;
	}
	if (fclose(fp) != 0) {
		e = errno;
		unlink(tmp);
		errno = e;
		return -1;
	}
	/* link(2) fails with EEXIST instead of replacing a file someone made meanwhile. */
	if (link(tmp, path) == -1) {
		e = errno;
		unlink(tmp);
		errno = e;
		return -1;
	}
	unlink(tmp);
	return 0;
}

/* Generate a key and a self-signed certificate and write both. */
static int
tls_generate(const char *cert, const char *key, const char *hostname,
    char *err, size_t errlen)
{
	EVP_PKEY	*pkey = NULL;
	X509		*x = NULL;
	int		 rc = -1;

	if (hostname == NULL || !tls_hostname_ok(hostname)) {
		snprintf(err, errlen, "tls: cannot make a certificate for "
		    "hostname \"%.64s\": not a DNS name", hostname ? hostname : "");
		return -1;
	}
	errno = 0;
	if ((pkey = EVP_RSA_gen(TLS_RSA_BITS)) == NULL) {
		tls_err(err, errlen, "generating RSA key");
		goto out;
	}
	errno = 0;
	if ((x = tls_make_cert(pkey, hostname)) == NULL) {
		tls_err(err, errlen, "building certificate");
		goto out;
	}
	if (tls_mkparent(key) == -1) {
		snprintf(err, errlen, "tls: creating directory for %s: %s", key,
		    strerror(errno));
		goto out;
	}
	if (tls_mkparent(cert) == -1) {
		snprintf(err, errlen, "tls: creating directory for %s: %s", cert,
		    strerror(errno));
		goto out;
	}
	errno = 0;
	if (tls_write_pem(key, 0600, pkey, NULL) == -1) {
		tls_err(err, errlen, key);
		goto out;
	}
	errno = 0;
	if (tls_write_pem(cert, 0644, NULL, x) == -1) {
		tls_err(err, errlen, cert);
		/* Do not leave a lone key behind: the next start would refuse it. */
		unlink(key);
		goto out;
	}
	rc = 0;
out:
	X509_free(x);
	EVP_PKEY_free(pkey);
	return rc;
}

/* Load (or first generate) the certificate and key and build the server context. */
SSL_CTX *
tls_server_ctx_new(const char *cert, const char *key, const char *hostname,
    char *err, size_t errlen)
{
	SSL_CTX		*ctx = NULL;
	struct stat	 st;
	bool		 have_cert, have_key;

	if (cert == NULL || key == NULL || cert[0] == '\0' || key[0] == '\0') {
		snprintf(err, errlen, "tls: certificate and key paths are required");
		return NULL;
	}
	ERR_clear_error();
	have_cert = stat(cert, &st) == 0;
	if (!have_cert && errno != ENOENT) {
		snprintf(err, errlen, "tls: %s: %s", cert, strerror(errno));
		return NULL;
	}
	have_key = stat(key, &st) == 0;
	if (!have_key && errno != ENOENT) {
		snprintf(err, errlen, "tls: %s: %s", key, strerror(errno));
		return NULL;
	}
	if (have_cert != have_key) {
		snprintf(err, errlen, "tls: %s exists but %s does not; refusing to "
		    "generate over it (remove it or provide both)",
		    have_cert ? cert : key, have_cert ? key : cert);
		return NULL;
	}
	if (!have_cert && tls_generate(cert, key, hostname, err, errlen) == -1)
		return NULL;

	errno = 0;
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		tls_err(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	/*
	 * What a Debian Postfix 3.7 accepts with smtpd_tls_security_level=may:
	 * TLS 1.0 and up, its "medium" cipher grade including anonymous suites.
	 * A stricter server would stand out; a spammer's old client must get in.
	 */
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION) != 1 ||
	    SSL_CTX_set_cipher_list(ctx,
	    "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH:@SECLEVEL=0") != 1) {
		tls_err(err, errlen, "setting protocol versions and ciphers");
		goto fail;
	}
	SSL_CTX_set_dh_auto(ctx, 1);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	/* Idle sessions keep no read/write buffers (memory per idle session). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	if (SSL_CTX_set_session_id_context(ctx,
	    (const unsigned char *)TLS_SESSION_ID_CTX,
	    sizeof(TLS_SESSION_ID_CTX) - 1) != 1) {
		tls_err(err, errlen, "setting session id context");
		goto fail;
	}
	/* ECDHE key exchange is automatic since OpenSSL 1.1.0 (no ecdh_auto call needed). */
	if (tls_use_chain(ctx, cert, err, errlen) == -1 ||
	    tls_use_key(ctx, key, err, errlen) == -1)
		goto fail;
	if (SSL_CTX_check_private_key(ctx) != 1) {
		tls_err(err, errlen, "key does not match certificate");
		goto fail;
	}
	return ctx;

fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* Which of the seed's cert.pem and key.pem are here (bit 0 and bit 1). */
int
tls_seed_files(void)
{
	struct stat	st;
	int		have = 0;

	if (stat(TLS_SEED_CERT, &st) == 0 && S_ISREG(st.st_mode))
		have |= 1;
	if (stat(TLS_SEED_KEY, &st) == 0 && S_ISREG(st.st_mode))
		have |= 2;
	return have;
}

/* Subject and expiry of the context's certificate, both bounded strings. */
int
tls_cert_summary(SSL_CTX *ctx, char *subject, size_t subjlen, char *expires,
    size_t explen)
{
	X509		*x;
	BIO		*b;
	struct tm	 tm;
	int		 n;

	if (subjlen == 0 || explen == 0)
		return -1;
	subject[0] = expires[0] = '\0';
	if ((x = SSL_CTX_get0_certificate(ctx)) == NULL)
		return -1;
	if ((b = BIO_new(BIO_s_mem())) == NULL)
		return -1;
	/* RFC 2253 escapes control and non-ASCII bytes: safe to log as is. */
	if (X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) < 0 ||
	    (n = BIO_read(b, subject, (int)(subjlen > INT_MAX ? INT_MAX : subjlen) - 1)) < 0)
		n = 0;
	subject[n] = '\0';
	BIO_free(b);
	memset(&tm, 0, sizeof(tm));
	if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1 ||
	    strftime(expires, explen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
		snprintf(expires, explen, "unknown");
		return -1;
	}
	return 0;
}

/* Record version, cipher, bits and SNI of an established connection. */
void
tls_get_info(SSL *ssl, struct tls_info *out)
{
	const SSL_CIPHER	*c;
	const char		*s;

	memset(out, 0, sizeof(*out));
	if (ssl == NULL)
		return;
	if ((s = SSL_get_version(ssl)) != NULL)
		snprintf(out->version, sizeof(out->version), "%s", s);
	if ((c = SSL_get_current_cipher(ssl)) != NULL) {
		if ((s = SSL_CIPHER_get_name(c)) != NULL)
			snprintf(out->cipher, sizeof(out->cipher), "%s", s);
		out->bits = SSL_CIPHER_get_bits(c, NULL);
	}
	/* SNI is attacker data: copied as sent (bounded); the logger escapes it. */
	if ((s = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) != NULL)
		snprintf(out->sni, sizeof(out->sni), "%s", s);
}
