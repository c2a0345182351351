/* test_kubeconfig.c - kubeconfig parsing, in-cluster loading and which configuration is used. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "controller/core/kubeconfig.h"

#define FILES LB_TEST_DATA "/kubeconfig/files"

/*
 * Known PEM texts and their base64, computed outside this test (python3 base64.b64encode),
 * so a decoder that agreed with a twin encoder here could not pass by mistake.  Their
 * lengths modulo 3 are 1, 2 and 0: the encodings end with "==", "=" and no padding.
 */
#define CA_PEM "-----BEGIN CERTIFICATE-----\nMIIBcluster-ca-for-tests\n-----END CERTIFICATE-----\n"
#define CERT_PEM                                                                                   \
	"-----BEGIN CERTIFICATE-----\nMIIBclient-cert-for-tests\n-----END CERTIFICATE-----\n"
#define KEY_PEM                                                                                    \
	"-----BEGIN EC PRIVATE KEY-----\nMHcclient-key-for-tests\n-----END EC PRIVATE KEY-----\n"
#define CA_B64                                                                                     \
	"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJjbHVzdGVyLWNhLWZvci10ZXN0cwotLS0tLUVORCBDRVJU" \
	"SUZJQ0FURS0tLS0tCg=="
#define CERT_B64                                                                                   \
	"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJjbGllbnQtY2VydC1mb3ItdGVzdHMKLS0tLS1FTkQgQ0VS" \
	"VElGSUNBVEUtLS0tLQo="
#define KEY_B64                                                                                    \
	"LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY2NsaWVudC1rZXktZm9yLXRlc3RzCi0tLS0tRU5EIEVD" \
	"IFBSSVZBVEUgS0VZLS0tLS0K"

/* A cluster "c" and a context "ctx" for it (current), lines 1-8; users follow from line 9. */
#define HEAD                                                                                       \
	"current-context: ctx\n"                                                                   \
	"clusters:\n"                                                                              \
	"- name: c\n"                                                                              \
	"  cluster:\n"                                                                             \
	"    server: https://10.0.0.1:6443\n"                                                      \
	"contexts:\n"                                                                              \
	"- name: ctx\n"                                                                            \
	"  context: {cluster: c, user: u}\n"

/* users: [u] with the given keys under user:, which start at line 12. */
#define USER(keys)                                                                                 \
	HEAD "users:\n"                                                                            \
	     "- name: u\n"                                                                         \
	     "  user:\n" keys

static char tmp[64]; /* a directory for this run's files */

/* tmp/name */
static const char *tmp_path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tmp, name);
	return buf;
}

static void write_file(const char *name, const char *text)
{
	char path[256];
	FILE *f;

	f = fopen(tmp_path(path, sizeof(path), name), "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void clear_env(void)
{
	unsetenv("KUBECONFIG");
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
	setenv("HOME", tmp, 1); /* no .kube there unless a test writes one */
}

static int group_setup(void **state)
{
	char path[128];

	snprintf(tmp, sizeof(tmp), "/tmp/kubeconfig-test-XXXXXX");
	if (!mkdtemp(tmp))
		return -1;
	if (mkdir(tmp_path(path, sizeof(path), "sa"), 0700) ||
	    mkdir(tmp_path(path, sizeof(path), "certs"), 0700) ||
	    mkdir(tmp_path(path, sizeof(path), ".kube"), 0700))
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	return nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int test_setup(void **state)
{
	clear_env();
	return 0;
}

static void parse_ok_in(const char *text, const char *base_dir, const char *context,
			struct k8s_config *c)
{
	char err[512] = "";
	int r;

	r = k8s_kubeconfig_parse(text, strlen(text), "/x/config", base_dir, context, c, err,
				 sizeof(err));
	if (r != 0)
		fail_msg("unexpected error %d: %s\n--- input:\n%s", r, err, text);
}

static void parse_ok(const char *text, struct k8s_config *c)
{
	parse_ok_in(text, tmp, NULL, c);
}

/*
 * Parsing must fail with r, a message starting "kubeconfig /x/config" and naming each needle,
 * and leave the output as it was.
 */
static void expect_error_in(const char *text, const char *context, int want, const char *n1,
			    const char *n2)
{
	struct k8s_config c, before;
	char err[1024] = "";
	int r;

	memset(&c, 0x5a, sizeof(c));
	before = c;
	r = k8s_kubeconfig_parse(text, strlen(text), "/x/config", tmp, context, &c, err,
				 sizeof(err));
	if (r != want)
		fail_msg("want %d, got %d (%s)\n--- input:\n%s", want, r, err, text);
	assert_memory_equal(&c, &before, sizeof(c));
	if (strncmp(err, "kubeconfig /x/config", 20))
		fail_msg("want the file first, got '%s'", err);
	if (n1 && !strstr(err, n1))
		fail_msg("want '%s' in '%s'", n1, err);
	if (n2 && !strstr(err, n2))
		fail_msg("want '%s' in '%s'", n2, err);
}

static void expect_error(const char *text, const char *n1, const char *n2)
{
	expect_error_in(text, NULL, -EINVAL, n1, n2);
}

static void assert_blob(const char *got, size_t len, const char *want)
{
	assert_non_null(got);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(got, want, len);
	assert_int_equal(got[len], '\0');
}

/* ---- credentials ---- */

static void test_token_and_ca_data(void **state)
{
	struct k8s_config c;

	parse_ok("apiVersion: v1\n"
		 "kind: Config\n"
		 "preferences: {colors: true}\n"
		 "current-context: ctx\n"
		 "clusters:\n"
		 "- name: c\n"
		 "  cluster:\n"
		 "    server: https://api.example.com:6443//\n"
		 "    certificate-authority-data: " CA_B64 "\n"
		 "    tls-server-name: kubernetes.default\n"
		 "    proxy-url: http://proxy:3128\n"
		 "    extensions: [{name: x, extension: {a: 1}}]\n"
		 "contexts:\n"
		 "- name: ctx\n"
		 "  context: {cluster: c, user: u, namespace: lb-system}\n"
		 "users:\n"
		 "- name: u\n"
		 "  user:\n"
		 "    token: abc.def-123\n"
		 "    as-user-extra: {}\n",
		 &c);
	assert_string_equal(c.server, "https://api.example.com:6443");
	assert_blob(c.ca_pem, c.ca_len, CA_PEM);
	assert_string_equal(c.token, "abc.def-123");
	assert_null(c.token_file);
	assert_null(c.cert_pem);
	assert_null(c.key_pem);
	assert_false(c.insecure);
	assert_string_equal(c.tls_server_name, "kubernetes.default");
	assert_string_equal(c.namespace, "lb-system");
	assert_string_equal(c.source, "/x/config");
	k8s_config_clear(&c);
}

static void test_client_cert_data(void **state)
{
	struct k8s_config c;

	parse_ok(USER("    client-certificate-data: " CERT_B64 "\n"
		      "    client-key-data: " KEY_B64 "\n"),
		 &c);
	assert_string_equal(c.server, "https://10.0.0.1:6443");
	assert_blob(c.cert_pem, c.cert_len, CERT_PEM);
	assert_blob(c.key_pem, c.key_len, KEY_PEM);
	assert_null(c.token);
	assert_null(c.ca_pem);
	assert_null(c.namespace);
	k8s_config_clear(&c);
}

/* Base64 wrapped over lines (a YAML block scalar) and with spaces still decodes exactly. */
static void test_base64_wrapped(void **state)
{
	struct k8s_config c;

	parse_ok(USER("    client-certificate-data: |\n"
		      "      LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJjbGllbnQtY2VydC1mb3ItdGVz\n"
		      "      dHMKLS0tLS1FTkQgQ0VS\r\n"
		      "      VElGSUNBVEUtLS0tLQo=\n"
		      "    client-key-data: \"LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0t Ck1IY2Ns"
		      "aWVudC1rZXktZm9yLXRlc3RzCi0tLS0tRU5EIEVDIFBSSVZBVEUgS0VZLS0tLS0K \\t\"\n"),
		 &c);
	assert_blob(c.cert_pem, c.cert_len, CERT_PEM);
	assert_blob(c.key_pem, c.key_len, KEY_PEM);
	k8s_config_clear(&c);
}

static void test_files_relative(void **state)
{
	char err[512] = "", cwd[4096];
	struct k8s_config c;
	int r;

	/*
	 * The checked-in fixture names pki/ca.crt, pki/client.crt, pki/client.key: from /,
	 * they are found only next to the file.
	 */
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir("/"), 0);
	r = k8s_kubeconfig_load(FILES "/config", NULL, &c, err, sizeof(err));
	assert_int_equal(chdir(cwd), 0);
	if (r)
		fail_msg("%d: %s", r, err);
	assert_string_equal(c.server, "https://127.0.0.1:6443");
	assert_blob(c.ca_pem, c.ca_len, CA_PEM);
	assert_blob(c.cert_pem, c.cert_len, CERT_PEM);
	assert_blob(c.key_pem, c.key_len, KEY_PEM);
	assert_null(c.token);
	assert_string_equal(c.namespace, "lb-system");
	assert_string_equal(c.source, FILES "/config");
	k8s_config_clear(&c);
}

/* Relative to base_dir, not to the working directory; an absolute path as it is. */
static void test_files_base_dir(void **state)
{
	char text[1024], ca[128], err[512];
	struct k8s_config c;
	int r;

	write_file("certs/ca.crt", CA_PEM);
	write_file("certs/tls.crt", CERT_PEM);
	write_file("certs/tls.key", KEY_PEM);
	tmp_path(ca, sizeof(ca), "certs/ca.crt");
	snprintf(text, sizeof(text),
		 "current-context: ctx\n"
		 "clusters: [{name: c, cluster: {server: 'https://[fd00::1]:6443',"
		 " certificate-authority: %s}}]\n"
		 "contexts: [{name: ctx, context: {cluster: c, user: u}}]\n"
		 "users: [{name: u, user: {client-certificate: certs/tls.crt,"
		 " client-key: ./certs/tls.key}}]\n",
		 ca);
	parse_ok_in(text, tmp, NULL, &c);
	assert_string_equal(c.server, "https://[fd00::1]:6443");
	assert_blob(c.ca_pem, c.ca_len, CA_PEM);
	assert_blob(c.cert_pem, c.cert_len, CERT_PEM);
	assert_blob(c.key_pem, c.key_len, KEY_PEM);
	k8s_config_clear(&c);

	/* From another base_dir, certs/tls.crt is not there: the message names field and file. */
	r = k8s_kubeconfig_parse(text, strlen(text), "/x/config", "/nonexistent-dir", NULL, &c,
				 err, sizeof(err));
	assert_int_equal(r, -ENOENT);
	assert_non_null(strstr(err, "kubeconfig /x/config:4: users[0].user.client-certificate: "
				    "cannot read /nonexistent-dir/certs/tls.crt: No such file"));
}

static void test_token_file(void **state)
{
	struct k8s_config c;
	char want[128];

	write_file("token", "  secret-token-1\n\n");
	parse_ok(USER("    tokenFile: token\n"), &c);
	assert_string_equal(c.token, "secret-token-1");
	assert_string_equal(c.token_file, tmp_path(want, sizeof(want), "token"));
	k8s_config_clear(&c);

	/* Both: the file wins (it is the one that rotates), as in client-go. */
	parse_ok(USER("    token: inline\n"
		      "    tokenFile: token\n"),
		 &c);
	assert_string_equal(c.token, "secret-token-1");
	k8s_config_clear(&c);

	/* The checked-in fixture's other context. */
	{
		char err[512];

		assert_int_equal(k8s_kubeconfig_load(FILES "/config", "token-file", &c, err,
						     sizeof(err)),
				 0);
		assert_string_equal(c.token, "file-token-123");
		assert_string_equal(c.token_file, FILES "/token");
		assert_null(c.cert_pem);
		k8s_config_clear(&c);
	}

	expect_error_in(USER("    tokenFile: missing-token\n"), NULL, -ENOENT,
			"kubeconfig /x/config:12: users[0].user.tokenFile: cannot read ",
			"/missing-token");
	write_file("empty-token", "\n");
	expect_error(USER("    tokenFile: empty-token\n"), "users[0].user.tokenFile", "no token");
	expect_error(USER("    token: \"a\\nX-Evil: 1\"\n"), "users[0].user.token",
		     "control characters");
}

static void test_insecure(void **state)
{
	struct k8s_config c;

	parse_ok("current-context: ctx\n"
		 "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:8080',"
		 " insecure-skip-tls-verify: true}}]\n"
		 "contexts: [{name: ctx, context: {cluster: c}}]\n",
		 &c);
	assert_true(c.insecure);
	assert_string_equal(c.server, "http://127.0.0.1:8080");
	assert_null(c.token); /* a context without a user is anonymous */
	k8s_config_clear(&c);

	parse_ok("current-context: ctx\n"
		 "clusters: [{name: c, cluster: {server: 'https://h', insecure-skip-tls-verify: "
		 "false, certificate-authority-data: " CA_B64 "}}]\n"
		 "contexts: [{name: ctx, context: {cluster: c}}]\n",
		 &c);
	assert_false(c.insecure);
	assert_blob(c.ca_pem, c.ca_len, CA_PEM);
	k8s_config_clear(&c);

	expect_error("current-context: ctx\n"
		     "clusters: [{name: c, cluster: {server: 'https://h',\n"
		     "  insecure-skip-tls-verify: yes}}]\n"
		     "contexts: [{name: ctx, context: {cluster: c}}]\n",
		     "/x/config:3: clusters[0].cluster.insecure-skip-tls-verify: must be true or "
		     "false",
		     "\"yes\"");
	expect_error("current-context: ctx\n"
		     "clusters: [{name: c, cluster: {server: 'https://h',\n"
		     "  insecure-skip-tls-verify: \"true\"}}]\n"
		     "contexts: [{name: ctx, context: {cluster: c}}]\n",
		     "insecure-skip-tls-verify: must be true or false", NULL);
	expect_error("current-context: ctx\n"
		     "clusters: [{name: c, cluster: {server: 'https://h',\n"
		     "  certificate-authority-data: " CA_B64 ",\n"
		     "  insecure-skip-tls-verify: true}}]\n"
		     "contexts: [{name: ctx, context: {cluster: c}}]\n",
		     "cluster \"c\" (clusters[0])",
		     "specifying a root certificates file with the insecure flag is not allowed");
}

/* ---- contexts ---- */

#define TWO_CONTEXTS                                                                               \
	"clusters:\n"                                                                              \
	"- name: dev\n"                                                                            \
	"  cluster: {server: 'https://dev:6443'}\n"                                                \
	"- name: prod\n"                                                                           \
	"  cluster: {server: 'https://prod:6443'}\n"                                               \
	"contexts:\n"                                                                              \
	"- name: dev\n"                                                                            \
	"  context: {cluster: dev, user: dev-user}\n"                                              \
	"- name: prod\n"                                                                           \
	"  context: {cluster: prod, user: prod-user, namespace: live}\n"                           \
	"users:\n"                                                                                 \
	"- name: dev-user\n"                                                                       \
	"  user: {token: dev-token}\n"                                                             \
	"- name: prod-user\n"                                                                      \
	"  user: {token: prod-token}\n"

static void test_context_selection(void **state)
{
	struct k8s_config c;

	parse_ok("current-context: dev\n" TWO_CONTEXTS, &c);
	assert_string_equal(c.server, "https://dev:6443");
	assert_string_equal(c.token, "dev-token");
	assert_null(c.namespace);
	k8s_config_clear(&c);

	parse_ok_in("current-context: dev\n" TWO_CONTEXTS, NULL, "prod", &c);
	assert_string_equal(c.server, "https://prod:6443");
	assert_string_equal(c.token, "prod-token");
	assert_string_equal(c.namespace, "live");
	k8s_config_clear(&c);

	/* No current-context is fine when a context is named. */
	parse_ok_in(TWO_CONTEXTS, NULL, "dev", &c);
	assert_string_equal(c.token, "dev-token");
	k8s_config_clear(&c);

	expect_error_in("current-context: dev\n" TWO_CONTEXTS, "staging", -EINVAL,
			"kubeconfig /x/config: context \"staging\" not found", NULL);
	expect_error("current-context: gone\n" TWO_CONTEXTS,
		     "/x/config:1: current-context: context \"gone\" not found", NULL);
	expect_error(TWO_CONTEXTS, "current-context is not set", NULL);
	expect_error("current-context: \"\"\n" TWO_CONTEXTS, "current-context is not set", NULL);
}

static void test_missing_references(void **state)
{
	expect_error("current-context: x\n"
		     "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
		     "contexts: [{name: x, context: {cluster: nope, user: u}}]\n",
		     "/x/config:3: contexts[0].context.cluster: cluster \"nope\" not found", NULL);
	expect_error("current-context: x\n"
		     "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
		     "contexts: [{name: x, context: {cluster: c, user: nobody}}]\n"
		     "users: [{name: u, user: {token: t}}]\n",
		     "contexts[0].context.user: user \"nobody\" not found", NULL);
	expect_error("current-context: x\n"
		     "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
		     "contexts: [{name: y, context: {}}, {name: x, context: {user: u}}]\n",
		     "context \"x\" (contexts[1]) has no cluster", NULL);
	expect_error("current-context: x\n"
		     "clusters: [{name: c, cluster: {server: 'https://h'}},\n"
		     "           {name: c, cluster: {server: 'https://i'}}]\n"
		     "contexts: [{name: x, context: {cluster: c}}]\n",
		     "/x/config:3: clusters[1].name: duplicate name \"c\" (also clusters[0])", NULL);
}

/* ---- errors ---- */

static void test_server_errors(void **state)
{
	expect_error("current-context: x\n"
		     "clusters:\n"
		     "- name: c\n"
		     "  cluster: {certificate-authority-data: " CA_B64 "}\n"
		     "contexts: [{name: x, context: {cluster: c}}]\n",
		     "/x/config:3: cluster \"c\" (clusters[0]) has no server", NULL);
	expect_error("current-context: x\n"
		     "clusters: [{name: c}]\n"
		     "contexts: [{name: x, context: {cluster: c}}]\n",
		     "cluster \"c\" (clusters[0]) has no server", NULL);
	expect_error("current-context: x\n"
		     "clusters: [{name: c, cluster: {server: 'ftp://h'}}]\n"
		     "contexts: [{name: x, context: {cluster: c}}]\n",
		     "/x/config:2: clusters[0].cluster.server: must be an https:// or http:// URL",
		     "\"ftp://h\"");
	expect_error("current-context: x\n"
		     "clusters: [{name: c, cluster: {server: 'https://'}}]\n"
		     "contexts: [{name: x, context: {cluster: c}}]\n",
		     "clusters[0].cluster.server: no host", NULL);
	expect_error("current-context: x\n"
		     "clusters: [{name: c, cluster: {server: \"https://h\\r\\nX: 1\"}}]\n"
		     "contexts: [{name: x, context: {cluster: c}}]\n",
		     "clusters[0].cluster.server: a space or control character", NULL);
	expect_error("current-context: x\n"
		     "clusters: [{name: c, cluster: {server: [https://h]}}]\n"
		     "contexts: [{name: x, context: {cluster: c}}]\n",
		     "clusters[0].cluster.server: must be a string, got a list", NULL);
}

/* The base64 decoder refuses everything but standard, padded base64. */
static void test_bad_base64(void **state)
{
	static const char *const bad[] = {
		"LS0tLS1CRUdJTi@BDRVJU",  /* a character outside the alphabet */
		"LS0tLS1CRUdJTi-BDRVJU",  /* URL-safe alphabet */
		"LS0tLS1CRUdJTi_BDRVJU",  /* URL-safe alphabet */
		"LS0tLS1CRUdJTiBDRVJ",    /* 19 characters: not whole quartets, no padding */
		"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg", /* padding left off */
		"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tC===", /* too much padding */
		"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==LS0t", /* data after padding */
		"LS0t=S0t",               /* padding in the middle of a quartet */
		"====",                   /* padding alone */
		"-----BEGIN CERTIFICATE-----", /* PEM pasted where base64 of PEM belongs */
	};
	char text[1024];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* users[1], so a message that named the wrong entry would not match. */
		snprintf(text, sizeof(text),
			 HEAD "users:\n"
			      "- name: other\n"
			      "  user: {token: t}\n"
			      "- name: u\n"
			      "  user:\n"
			      "    client-certificate-data: " CERT_B64 "\n"
			      "    client-key-data: \"%s\"\n",
			 bad[i]);
		expect_error(text, "/x/config:15: users[1].user.client-key-data: not valid base64",
			     NULL);
	}
	/* Valid base64 of something that is not PEM: "hello world". */
	expect_error(USER("    client-certificate-data: aGVsbG8gd29ybGQ=\n"
			  "    client-key-data: " KEY_B64 "\n"),
		     "users[0].user.client-certificate-data: decodes to no PEM block", NULL);
	expect_error("current-context: x\n"
		     "clusters: [{name: c, cluster: {server: 'https://h',"
		     " certificate-authority-data: 'Y2E='}}]\n"
		     "contexts: [{name: x, context: {cluster: c}}]\n",
		     "clusters[0].cluster.certificate-authority-data: decodes to no PEM block",
		     NULL);
}

static void test_cert_key_pairs(void **state)
{
	char path[128];

	expect_error(USER("    client-key-data: " KEY_B64 "\n"),
		     "user \"u\" (users[0]) has client-key-data without a client certificate",
		     NULL);
	expect_error(USER("    client-certificate-data: " CERT_B64 "\n"),
		     "user \"u\" (users[0]) has client-certificate-data without a client key", NULL);
	write_file("certs/only.crt", CERT_PEM);
	expect_error(USER("    client-certificate: certs/only.crt\n"
			  "    token: t\n"),
		     "/x/config:10: user \"u\" (users[0]) has client-certificate without a client "
		     "key",
		     NULL);
	expect_error(USER("    client-certificate: certs/only.crt\n"
			  "    client-certificate-data: " CERT_B64 "\n"
			  "    client-key-data: " KEY_B64 "\n"),
		     "users[0].user: both client-certificate and client-certificate-data are set",
		     NULL);
	write_file("certs/not-pem.crt", "just text\n");
	expect_error(USER("    client-certificate: certs/not-pem.crt\n"
			  "    client-key-data: " KEY_B64 "\n"),
		     "users[0].user.client-certificate: ", "certs/not-pem.crt holds no PEM block");
	expect_error_in("current-context: x\n"
			"clusters: [{name: c, cluster: {server: 'https://h',"
			" certificate-authority: /nonexistent/ca.crt}}]\n"
			"contexts: [{name: x, context: {cluster: c}}]\n",
			NULL, -ENOENT,
			"/x/config:2: clusters[0].cluster.certificate-authority: cannot read "
			"/nonexistent/ca.crt: ",
			"No such file");
	/* Bounded: a file past 1 MiB is refused before it is read; so is a FIFO. */
	write_file("certs/huge.crt", "");
	assert_int_equal(truncate(tmp_path(path, sizeof(path), "certs/huge.crt"), (1 << 20) + 1),
			 0);
	expect_error_in(USER("    client-certificate-data: " CERT_B64 "\n"
			     "    client-key: certs/huge.crt\n"),
			NULL, -EFBIG, "users[0].user.client-key: cannot read ",
			"/certs/huge.crt: larger than 1 MiB");
	assert_int_equal(truncate(path, 1 << 20), 0); /* exactly 1 MiB: read, then not PEM */
	expect_error(USER("    client-certificate-data: " CERT_B64 "\n"
			  "    client-key: certs/huge.crt\n"),
		     "users[0].user.client-key: ", "/certs/huge.crt holds no PEM block");
	assert_int_equal(mkfifo(tmp_path(path, sizeof(path), "certs/fifo"), 0600), 0);
	expect_error(USER("    client-certificate-data: " CERT_B64 "\n"
			  "    client-key: certs/fifo\n"),
		     "users[0].user.client-key: cannot read ", "/certs/fifo: not a regular file");
	expect_error_in("current-context: x\n"
			"clusters: [{name: c, cluster: {server: 'https://h',"
			" certificate-authority: certs}}]\n"
			"contexts: [{name: x, context: {cluster: c}}]\n",
			NULL, -EISDIR, "clusters[0].cluster.certificate-authority: cannot read ",
			"/certs: Is a directory");
}

static void test_refused_credentials(void **state)
{
	expect_error(USER("    exec:\n"
			  "      apiVersion: client.authentication.k8s.io/v1beta1\n"
			  "      command: aws\n"),
		     "/x/config:12: users[0].user.exec: exec credential plugins are not supported; "
		     "use a token or client certificate",
		     NULL);
	expect_error(USER("    auth-provider:\n"
			  "      name: oidc\n"),
		     "users[0].user.auth-provider: auth-provider plugins are not supported", NULL);
	expect_error(USER("    username: admin\n"
			  "    password: hunter2\n"),
		     "users[0].user.username: basic authentication", "not supported");
	expect_error(USER("    password: hunter2\n"), "users[0].user.password: basic", NULL);
	/* Set but empty, as Go reads it, is not set. */
	{
		struct k8s_config c;

		parse_ok(USER("    exec: null\n"
			      "    username: \"\"\n"
			      "    token: t\n"),
			 &c);
		assert_string_equal(c.token, "t");
		k8s_config_clear(&c);
	}
}

static void test_yaml_errors(void **state)
{
	expect_error("current-context: x\nclusters: [\n", "YAML syntax error", NULL);
	expect_error("", "the file is empty", NULL);
	expect_error("- a\n- b\n", "/x/config:1: the top level must be a mapping, got a list",
		     NULL);
	expect_error("current-context: x\ncurrent-context: y\n",
		     "/x/config:2: current-context: duplicate key (first at line 1)", NULL);
	expect_error("current-context: x\ncontexts: {}\n", "contexts: must be a list", NULL);
	expect_error("current-context: x\ncontexts: [foo]\n",
		     "contexts[0]: must be a mapping, got a single value", NULL);
	{
		static const char nul[] = "current-context: x\0\nclusters: []\n";
		struct k8s_config c;
		char err[256];

		assert_int_equal(k8s_kubeconfig_parse(nul, sizeof(nul) - 1, "/x/config", NULL,
						      NULL, &c, err, sizeof(err)),
				 -EINVAL);
		assert_non_null(strstr(err, "NUL byte"));
	}
}

static void test_load_errors(void **state)
{
	struct k8s_config c;
	char err[512];

	assert_int_equal(k8s_kubeconfig_load("/nonexistent/config", NULL, &c, err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "kubeconfig /nonexistent/config: cannot read it"));
	assert_int_equal(k8s_kubeconfig_load(tmp, NULL, &c, err, sizeof(err)), -EISDIR);
	/* Messages keep the path as given; NULL err is allowed. */
	assert_int_equal(k8s_kubeconfig_load("/nonexistent/config", NULL, &c, NULL, 0), -ENOENT);
}

/* ---- in-cluster ---- */

static void write_sa(const char *token, const char *ca)
{
	char path[128];

	unlink(tmp_path(path, sizeof(path), "sa/token"));
	unlink(tmp_path(path, sizeof(path), "sa/ca.crt"));
	if (token)
		write_file("sa/token", token);
	if (ca)
		write_file("sa/ca.crt", ca);
}

static void test_incluster(void **state)
{
	char dir[128], want[160], err[512];
	struct k8s_config c;

	tmp_path(dir, sizeof(dir), "sa");
	write_sa("eyJhbGciOiJSUzI1NiJ9.payload.sig\n", CA_PEM);
	write_file("sa/namespace", "lb-system");
	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	assert_int_equal(k8s_incluster_load(dir, &c, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://10.96.0.1:443");
	assert_string_equal(c.token, "eyJhbGciOiJSUzI1NiJ9.payload.sig");
	snprintf(want, sizeof(want), "%s/token", dir);
	assert_string_equal(c.token_file, want);
	assert_blob(c.ca_pem, c.ca_len, CA_PEM);
	assert_null(c.cert_pem);
	assert_false(c.insecure);
	assert_string_equal(c.namespace, "lb-system");
	assert_string_equal(c.source, "in-cluster");
	k8s_config_clear(&c);

	setenv("KUBERNETES_SERVICE_HOST", "fd00:10:96::1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "6443", 1);
	assert_int_equal(k8s_incluster_load(dir, &c, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://[fd00:10:96::1]:6443");
	k8s_config_clear(&c);

	setenv("KUBERNETES_SERVICE_PORT", "0443x", 1);
	assert_int_equal(k8s_incluster_load(dir, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_PORT"));
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	setenv("KUBERNETES_SERVICE_HOST", "evil/path", 1);
	assert_int_equal(k8s_incluster_load(dir, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST"));
}

static void test_incluster_errors(void **state)
{
	char dir[128], err[512];
	struct k8s_config c, before;

	tmp_path(dir, sizeof(dir), "sa");
	write_sa("tok\n", CA_PEM);
	memset(&c, 0x5a, sizeof(c));
	before = c;

	assert_int_equal(k8s_incluster_load(dir, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST"));
	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	assert_int_equal(k8s_incluster_load(dir, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_PORT"));
	unsetenv("KUBERNETES_SERVICE_HOST");
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	assert_int_equal(k8s_incluster_load(dir, &c, err, sizeof(err)), -ENOENT);

	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	write_sa(NULL, CA_PEM);
	assert_int_equal(k8s_incluster_load(dir, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "cannot read the service account token"));
	assert_non_null(strstr(err, "/sa/token"));

	write_sa(" \n", CA_PEM);
	assert_int_equal(k8s_incluster_load(dir, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "/sa/token is empty"));

	write_sa("tok\n", NULL);
	assert_int_equal(k8s_incluster_load(dir, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "cannot read the cluster CA"));
	assert_non_null(strstr(err, "/sa/ca.crt"));
	assert_memory_equal(&c, &before, sizeof(c));
}

/* ---- which configuration ---- */

static void write_kubeconfig(const char *name, const char *token)
{
	char text[512];

	snprintf(text, sizeof(text),
		 "current-context: x\n"
		 "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
		 "contexts: [{name: x, context: {cluster: c, user: u}},"
		 " {name: y, context: {cluster: c, user: v}}]\n"
		 "users: [{name: u, user: {token: %s}}, {name: v, user: {token: %s-y}}]\n",
		 token, token);
	write_file(name, text);
}

static void expect_resolve(const char *kubeconfig, const char *context, const char *token,
			   const char *source)
{
	struct k8s_config c;
	char err[512] = "";
	int r;

	r = k8s_config_resolve(kubeconfig, context, &c, err, sizeof(err));
	if (r)
		fail_msg("resolve: %d: %s", r, err);
	assert_string_equal(c.token, token);
	if (source && !strstr(c.source, source))
		fail_msg("want source '%s', got '%s'", source, c.source);
	k8s_config_clear(&c);
}

static void test_resolve_order(void **state)
{
	char path[128], list[512], err[512];
	struct k8s_config c;

	write_kubeconfig("explicit", "explicit-token");
	write_kubeconfig("second", "second-token");
	write_kubeconfig("third", "third-token");
	write_kubeconfig(".kube/config", "home-token");

	/* Nothing but HOME: ~/.kube/config. */
	expect_resolve(NULL, NULL, "home-token", "/.kube/config");
	expect_resolve(NULL, "y", "home-token-y", "/.kube/config");

	/* KUBECONFIG: its first existing file, here the second entry. */
	snprintf(list, sizeof(list), "%s/missing::%s/second:%s/third", tmp, tmp, tmp);
	setenv("KUBECONFIG", list, 1);
	expect_resolve(NULL, NULL, "second-token", "/second");
	expect_resolve(NULL, "y", "second-token-y", "/second");

	/* An explicit path comes before KUBECONFIG. */
	expect_resolve(tmp_path(path, sizeof(path), "explicit"), NULL, "explicit-token",
		       "/explicit");

	/* KUBECONFIG naming only missing files is an error naming it, not a fall-through. */
	snprintf(list, sizeof(list), "%s/missing1:%s/missing2", tmp, tmp);
	setenv("KUBECONFIG", list, 1);
	assert_int_equal(k8s_config_resolve(NULL, NULL, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "KUBECONFIG="));
	assert_non_null(strstr(err, "/missing2"));
	unsetenv("KUBECONFIG");

	/* ~/.kube/config found but broken: its own error, not "no configuration". */
	write_file(".kube/config", USER("    client-certificate: gone.crt\n"));
	assert_int_equal(k8s_config_resolve(NULL, NULL, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/.kube/config:12: users[0].user.client-certificate: cannot "
				    "read "));
}

/*
 * In a pod, in-cluster comes before ~/.kube/config.  Its directory is the real one here:
 * outside a pod its missing token is the error, which shows it was chosen over the file.
 */
static void test_resolve_incluster(void **state)
{
	struct k8s_config c;
	char err[512];
	int r;

	write_kubeconfig(".kube/config", "home-token");
	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	r = k8s_config_resolve(NULL, NULL, &c, err, sizeof(err));
	if (r == 0) {
		assert_string_equal(c.source, "in-cluster"); /* this test runs in a pod */
		k8s_config_clear(&c);
	} else if (strncmp(err, "in-cluster: ", 12)) {
		fail_msg("want in-cluster chosen, got %d: %s", r, err);
	}
	/* A named context asks for a kubeconfig: in-cluster is passed over. */
	expect_resolve(NULL, "y", "home-token-y", "/.kube/config");
}

static void test_resolve_nothing(void **state)
{
	struct k8s_config c;
	char err[512];

	unsetenv("HOME");
	assert_int_equal(k8s_config_resolve(NULL, NULL, &c, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, "
				 "or run in a pod");
	setenv("HOME", "/nonexistent", 1);
	assert_int_equal(k8s_config_resolve(NULL, NULL, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "no Kubernetes configuration"));
	/* An explicit path that is missing is its own error, not a fall-back. */
	assert_int_equal(k8s_config_resolve("/nonexistent/kc", NULL, &c, err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "kubeconfig /nonexistent/kc: cannot read it"));
}

static void test_clear(void **state)
{
	struct k8s_config c = { 0 };

	k8s_config_clear(&c);
	k8s_config_clear(NULL);
	parse_ok(USER("    client-certificate-data: " CERT_B64 "\n"
		      "    client-key-data: " KEY_B64 "\n"
		      "    token: t\n"),
		 &c);
	k8s_config_clear(&c);
	assert_null(c.server);
	assert_null(c.key_pem);
	assert_int_equal(c.key_len, 0);
	assert_null(c.token);
	assert_null(c.source);
	k8s_config_clear(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_token_and_ca_data, test_setup),
		cmocka_unit_test_setup(test_client_cert_data, test_setup),
		cmocka_unit_test_setup(test_base64_wrapped, test_setup),
		cmocka_unit_test_setup(test_files_relative, test_setup),
		cmocka_unit_test_setup(test_files_base_dir, test_setup),
		cmocka_unit_test_setup(test_token_file, test_setup),
		cmocka_unit_test_setup(test_insecure, test_setup),
		cmocka_unit_test_setup(test_context_selection, test_setup),
		cmocka_unit_test_setup(test_missing_references, test_setup),
		cmocka_unit_test_setup(test_server_errors, test_setup),
		cmocka_unit_test_setup(test_bad_base64, test_setup),
		cmocka_unit_test_setup(test_cert_key_pairs, test_setup),
		cmocka_unit_test_setup(test_refused_credentials, test_setup),
		cmocka_unit_test_setup(test_yaml_errors, test_setup),
		cmocka_unit_test_setup(test_load_errors, test_setup),
		cmocka_unit_test_setup(test_incluster, test_setup),
		cmocka_unit_test_setup(test_incluster_errors, test_setup),
		cmocka_unit_test_setup(test_resolve_order, test_setup),
		cmocka_unit_test_setup(test_resolve_incluster, test_setup),
		cmocka_unit_test_setup(test_resolve_nothing, test_setup),
		cmocka_unit_test_setup(test_clear, test_setup),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
