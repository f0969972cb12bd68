/* Unit tests for tls: certificate generation and reuse, file modes, a real handshake. */
#include <sys/socket.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
/* With -Isrc, <limits.h> finds src/limits.h: give OpenSSL's err.h its INT_MAX. */
#ifndef INT_MAX
#define INT_MAX __INT_MAX__
#endif
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tls.h"
#include "testutil.h"

#define HOST	"mx1.example.test"

struct fixture {
	char	dir[64];
	char	cert[128];
	char	key[128];
};

static int	 setup(void **state);
static int	 teardown(void **state);
static X509	*load_cert(const char *path);
static int	 handshake(SSL_CTX *sctx, int client_max_version, const char *sni,
		    struct tls_info *info);

/* A fresh temp dir; cert and key paths in directories that do not exist yet. */
static int
setup(void **state)
{
	struct fixture	*f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/test_tls.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->cert, sizeof(f->cert), "%s/certs/sub/cert.pem", f->dir);
	snprintf(f->key, sizeof(f->key), "%s/private/key.pem", f->dir);
	*state = f;
	return 0;
}

/* Remove the temp dir. */
static int
teardown(void **state)
{
	struct fixture	*f = *state;

	rm_rf(f->dir);
	free(f);
	return 0;
}

/* Parse a PEM certificate file. */
static X509 *
load_cert(const char *path)
{
	FILE	*fp = fopen(path, "r");
	X509	*x;

	assert_non_null(fp);
	x = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(x);
	return x;
}

/*
 * Handshake a client against sctx over a socketpair, both ends non-blocking
 * in one loop; fill info from the server side.  0 on success, -1 on failure.
 */
static int
handshake(SSL_CTX *sctx, int client_max_version, const char *sni,
    struct tls_info *info)
{
	int	 sv[2], rc = -1;
	SSL_CTX	*cctx = SSL_CTX_new(TLS_client_method());
	SSL	*s, *c;
	bool	 sdone = false, cdone = false;
	char	 buf[8];

	assert_non_null(cctx);
	if (client_max_version != 0)
		SSL_CTX_set_max_proto_version(cctx, client_max_version);
	SSL_CTX_set_min_proto_version(cctx, 0);
	/* Let an old-protocol client really offer TLS 1.0/1.1 (OpenSSL 3). */
	SSL_CTX_set_cipher_list(cctx, "DEFAULT:@SECLEVEL=0");
	SSL_CTX_set_security_level(cctx, 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	s = SSL_new(sctx);
	c = SSL_new(cctx);
	SSL_set_fd(s, sv[0]);
	SSL_set_fd(c, sv[1]);
	if (sni != NULL)
		assert_int_equal(SSL_set_tlsext_host_name(c, sni), 1);
	for (int i = 0; i < 1000 && !(sdone && cdone); i++) {
		int	r, e;

		if (!cdone) {
			r = SSL_connect(c);
			if (r == 1)
				cdone = true;
			else if ((e = SSL_get_error(c, r)) != SSL_ERROR_WANT_READ &&
			    e != SSL_ERROR_WANT_WRITE)
				goto out;
		}
		if (!sdone) {
			r = SSL_accept(s);
			if (r == 1)
				sdone = true;
			else if ((e = SSL_get_error(s, r)) != SSL_ERROR_WANT_READ &&
			    e != SSL_ERROR_WANT_WRITE)
				goto out;
		}
	}
	if (!(sdone && cdone))
		goto out;
	/* Application data flows both ways. */
	assert_int_equal(SSL_write(c, "ping", 4), 4);
	for (int i = 0; i < 100; i++) {
		int	r = SSL_read(s, buf, sizeof(buf));

		if (r == 4) {
			assert_memory_equal(buf, "ping", 4);
			rc = 0;
			break;
		}
		/* TLS 1.3 session tickets: let the client consume them. */
		(void)SSL_read(c, buf, sizeof(buf));
	}
	tls_get_info(s, info);
out:
	ERR_clear_error();
	SSL_free(s);
	SSL_free(c);
	SSL_CTX_free(cctx);
	close(sv[0]);
	close(sv[1]);
	return rc;
}

/* First call generates key and cert with the right modes; a second call reuses them. */
static void
test_generate_and_reuse(void **state)
{
	struct fixture	*f = *state;
	char		 err[256] = "";
	SSL_CTX		*ctx;
	struct stat	 st;
	char		*c1, *k1, *c2, *k2;
	size_t		 cl1, kl1, cl2, kl2;
	mode_t		 old = umask(077);	/* a strict umask must not make the cert 0600 */

	ctx = tls_server_ctx_new(f->cert, f->key, HOST, err, sizeof(err));
	umask(old);
	if (ctx == NULL)
		print_error("%s\n", err);
	assert_non_null(ctx);
	assert_int_equal(stat(f->key, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(f->cert, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	c1 = slurp(f->cert, &cl1);
	k1 = slurp(f->key, &kl1);
	assert_non_null(strstr(c1, "-----BEGIN CERTIFICATE-----"));
	assert_non_null(strstr(k1, "-----BEGIN PRIVATE KEY-----"));
	/* As a Debian Postfix 3.7: TLS 1.0 and up. */
	assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_VERSION);
	assert_true(SSL_CTX_get_options(ctx) & SSL_OP_NO_RENEGOTIATION);
	assert_true(SSL_CTX_get_options(ctx) & SSL_OP_NO_COMPRESSION);
	assert_true(SSL_CTX_get_session_cache_mode(ctx) & SSL_SESS_CACHE_SERVER);
	SSL_CTX_free(ctx);

	ctx = tls_server_ctx_new(f->cert, f->key, "other.example.test", err, sizeof(err));
	assert_non_null(ctx);
	SSL_CTX_free(ctx);
	c2 = slurp(f->cert, &cl2);
	k2 = slurp(f->key, &kl2);
	assert_int_equal(cl1, cl2);
	assert_memory_equal(c1, c2, cl1);
	assert_int_equal(kl1, kl2);
	assert_memory_equal(k1, k2, kl1);
	free(c1);
	free(c2);
	free(k1);
	free(k2);
}

/* The certificate has the snakeoil shape: CN, SAN, serial, 10 years, SHA-256, CA:FALSE. */
static void
test_cert_contents(void **state)
{
	struct fixture		*f = *state;
	char			 err[256], cn[256];
	SSL_CTX			*ctx = tls_server_ctx_new(f->cert, f->key, HOST, err,
				    sizeof(err));
	X509			*x;
	GENERAL_NAMES		*sans;
	const GENERAL_NAME	*g;
	BASIC_CONSTRAINTS	*bc;
	EVP_PKEY		*pk;
	int			 days, secs, crit;
	BIGNUM			*serial;

	assert_non_null(ctx);
	SSL_CTX_free(ctx);
	x = load_cert(f->cert);

	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName,
	    cn, sizeof(cn)) > 0);
	assert_string_equal(cn, HOST);
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);
	assert_int_equal(X509_get_version(x), X509_VERSION_3);

	sans = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
	assert_non_null(sans);
	assert_int_equal(sk_GENERAL_NAME_num(sans), 1);
	g = sk_GENERAL_NAME_value(sans, 0);
	assert_int_equal(g->type, GEN_DNS);
	assert_string_equal((const char *)ASN1_STRING_get0_data(g->d.dNSName), HOST);
	GENERAL_NAMES_free(sans);

	bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
	assert_non_null(bc);
	assert_int_equal(bc->ca, 0);
	BASIC_CONSTRAINTS_free(bc);
	assert_int_equal(X509_check_ca(x), 0);

	assert_int_equal(X509_get_signature_nid(x), NID_sha256WithRSAEncryption);
	pk = X509_get0_pubkey(x);
	assert_int_equal(EVP_PKEY_get_base_id(pk), EVP_PKEY_RSA);
	assert_int_equal(EVP_PKEY_get_bits(pk), 2048);
	assert_int_equal(X509_verify(x, pk), 1);	/* self-signed */

	assert_int_equal(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x),
	    X509_get0_notAfter(x)), 1);
	assert_int_equal(days, 3650);
	assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) <= 0);

	serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	assert_true(BN_num_bits(serial) >= 60);
	assert_false(BN_is_negative(serial));
	BN_free(serial);
	X509_free(x);
}

/* Two generations get different serials and keys. */
static void
test_serial_random(void **state)
{
	struct fixture	*f = *state;
	char		 err[256], c2[160], k2[160];
	SSL_CTX		*a, *b;
	X509		*xa, *xb;

	snprintf(c2, sizeof(c2), "%s/b/cert.pem", f->dir);
	snprintf(k2, sizeof(k2), "%s/b/key.pem", f->dir);
	a = tls_server_ctx_new(f->cert, f->key, HOST, err, sizeof(err));
	b = tls_server_ctx_new(c2, k2, HOST, err, sizeof(err));
	assert_non_null(a);
	assert_non_null(b);
	xa = load_cert(f->cert);
	xb = load_cert(c2);
	assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(xa),
	    X509_get0_serialNumber(xb)), 0);
	X509_free(xa);
	X509_free(xb);
	SSL_CTX_free(a);
	SSL_CTX_free(b);
}

/* Only one of the two files: an error, and the existing file is left alone. */
static void
test_one_file_missing(void **state)
{
	struct fixture	*f = *state;
	char		 err[256] = "", *k1, *k2;
	size_t		 l1, l2;
	SSL_CTX		*ctx = tls_server_ctx_new(f->cert, f->key, HOST, err, sizeof(err));
	struct stat	 st;

	assert_non_null(ctx);
	SSL_CTX_free(ctx);
	k1 = slurp(f->key, &l1);
	assert_int_equal(unlink(f->cert), 0);
	ctx = tls_server_ctx_new(f->cert, f->key, HOST, err, sizeof(err));
	assert_null(ctx);
	assert_non_null(strstr(err, f->key));
	assert_int_equal(stat(f->cert, &st), -1);
	k2 = slurp(f->key, &l2);
	assert_int_equal(l1, l2);
	assert_memory_equal(k1, k2, l1);
	free(k1);
	free(k2);

	/* And the other way round. */
	assert_int_equal(unlink(f->key), 0);
	ctx = tls_server_ctx_new(f->cert, f->key, HOST, err, sizeof(err));
	assert_non_null(ctx);	/* both missing again: regenerated */
	SSL_CTX_free(ctx);
	assert_int_equal(unlink(f->key), 0);
	err[0] = '\0';
	assert_null(tls_server_ctx_new(f->cert, f->key, HOST, err, sizeof(err)));
	assert_true(strlen(err) > 0);
	assert_int_equal(stat(f->key, &st), -1);
}

/* Bad inputs fail with a message: garbage files, a hostname that is not a DNS name. */
static void
test_errors(void **state)
{
	struct fixture	*f = *state;
	char		 err[256] = "", c[160], k[160];
	FILE		*fp;

	assert_null(tls_server_ctx_new(f->cert, f->key, "bad host,DNS:evil", err,
	    sizeof(err)));
	assert_non_null(strstr(err, "hostname"));
	assert_null(tls_server_ctx_new(f->cert, f->key, "", err, sizeof(err)));
	assert_null(tls_server_ctx_new(f->cert, f->key, NULL, err, sizeof(err)));

	snprintf(c, sizeof(c), "%s/garbage.crt", f->dir);
	snprintf(k, sizeof(k), "%s/garbage.key", f->dir);
	fp = fopen(c, "w");
	fputs("not a cert\n", fp);
	fclose(fp);
	fp = fopen(k, "w");
	fputs("not a key\n", fp);
	fclose(fp);
	err[0] = '\0';
	assert_null(tls_server_ctx_new(c, k, HOST, err, sizeof(err)));
	assert_non_null(strstr(err, c));
}

/* A real handshake: TLSv1.3 by default, SNI reported as sent. */
static void
test_handshake_info(void **state)
{
	struct fixture	*f = *state;
	char		 err[256];
	SSL_CTX		*ctx = tls_server_ctx_new(f->cert, f->key, HOST, err, sizeof(err));
	struct tls_info	 info;

	assert_non_null(ctx);
	assert_int_equal(handshake(ctx, 0, "mail.victim.example", &info), 0);
	assert_string_equal(info.version, "TLSv1.3");
	assert_string_equal(info.sni, "mail.victim.example");
	assert_true(strncmp(info.cipher, "TLS_", 4) == 0);
	assert_true(info.bits >= 128);

	/* No SNI: empty string. */
	assert_int_equal(handshake(ctx, 0, NULL, &info), 0);
	assert_string_equal(info.sni, "");

	/* TLS 1.2 still works. */
	assert_int_equal(handshake(ctx, TLS1_2_VERSION, "x.example", &info), 0);
	assert_string_equal(info.version, "TLSv1.2");
	assert_string_equal(info.sni, "x.example");
	assert_true(strlen(info.cipher) > 0);

	/* TLS 1.1 is accepted, as Postfix accepts it (old spam clients). */
	assert_int_equal(handshake(ctx, TLS1_1_VERSION, NULL, &info), 0);
	assert_string_equal(info.version, "TLSv1.1");

	/* A maximal (255-byte) SNI fits and is kept whole. */
	{
		char	long_sni[256];

		memset(long_sni, 'a', 255);
		long_sni[255] = '\0';
		for (int i = 63; i < 255; i += 64)
			long_sni[i] = '.';
		assert_int_equal(handshake(ctx, 0, long_sni, &info), 0);
		assert_string_equal(info.sni, long_sni);
	}
	tls_get_info(NULL, &info);
	assert_string_equal(info.version, "");
	SSL_CTX_free(ctx);
}

/* The start-up log's summary: RFC 2253 subject and notAfter in UTC, bounded. */
static void
test_cert_summary(void **state)
{
	struct fixture	*f = *state;
	char		 err[256], subj[256], exp[32], want[32], tiny[8];
	SSL_CTX		*ctx = tls_server_ctx_new(f->cert, f->key, HOST, err, sizeof(err));
	X509		*x;
	struct tm	 tm;

	assert_non_null(ctx);
	assert_int_equal(tls_cert_summary(ctx, subj, sizeof(subj), exp, sizeof(exp)), 0);
	assert_string_equal(subj, "CN=" HOST);
	x = load_cert(f->cert);
	assert_int_equal(ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm), 1);
	strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%SZ", &tm);
	X509_free(x);
	assert_string_equal(exp, want);
	assert_int_equal(strlen(exp), 20);
	/* a short buffer is cut, still terminated */
	assert_int_equal(tls_cert_summary(ctx, tiny, sizeof(tiny), exp, sizeof(exp)), 0);
	assert_string_equal(tiny, "CN=mx1.");
	SSL_CTX_free(ctx);
}

/* Which of the seed's cert.pem/key.pem are in the working directory. */
static void
test_seed_files(void **state)
{
	struct fixture	*f = *state;
	char		 cwd[4096];
	int		 fd;

	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(f->dir), 0);
	assert_int_equal(tls_seed_files(), 0);
	assert_int_equal(mkdir(TLS_SEED_CERT, 0700), 0);	/* a directory is not a file */
	assert_int_equal(tls_seed_files(), 0);
	assert_int_equal(rmdir(TLS_SEED_CERT), 0);
	assert_true((fd = open(TLS_SEED_CERT, O_WRONLY | O_CREAT, 0600)) != -1);
	close(fd);
	assert_int_equal(tls_seed_files(), 1);
	assert_int_equal(symlink(TLS_SEED_CERT, TLS_SEED_KEY), 0);	/* links followed */
	assert_int_equal(tls_seed_files(), 3);
	assert_int_equal(unlink(TLS_SEED_CERT), 0);
	assert_int_equal(tls_seed_files(), 0);		/* a dangling link is nothing */
	assert_int_equal(unlink(TLS_SEED_KEY), 0);
	assert_true((fd = open(TLS_SEED_KEY, O_WRONLY | O_CREAT, 0600)) != -1);
	close(fd);
	assert_int_equal(tls_seed_files(), 2);
	unlink(TLS_SEED_KEY);
	assert_int_equal(chdir(cwd), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_generate_and_reuse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cert_contents, setup, teardown),
		cmocka_unit_test_setup_teardown(test_serial_random, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_file_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handshake_info, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cert_summary, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seed_files, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
