/* kubeconfig.h - where the API server is and how to authenticate: kubeconfig files and in-cluster. */
#ifndef K8S_KUBECONFIG_H
#define K8S_KUBECONFIG_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Everything needed to reach one API server.  Certificates and keys are kept in memory (PEM)
 * and handed to libcurl as blobs: nothing is written to a temporary file.
 */
struct k8s_config {
	char *server;         /* "https://host:port" without a trailing slash; IPv6 hosts bracketed */
	char *ca_pem;         /* cluster CA (PEM), NULL = the system's trust store */
	size_t ca_len;
	char *cert_pem;       /* client certificate (PEM), NULL = none */
	size_t cert_len;
	char *key_pem;        /* client key (PEM), NULL = none */
	size_t key_len;
	char *token;          /* bearer token, NULL = none */
	char *token_file;     /* re-read when it changes (bound service account tokens rotate) */
	bool insecure;        /* insecure-skip-tls-verify: true only when the kubeconfig says so */
	char *tls_server_name; /* tls-server-name, NULL = from the server URL */
	char *namespace;      /* the context's namespace (in-cluster: the pod's), NULL = none */
	char *source;         /* where it came from, for messages: the file or "in-cluster" */
};

/*
 * Parse kubeconfig text (YAML): the current context (or context_name when not NULL), its
 * cluster (server, certificate-authority or certificate-authority-data,
 * insecure-skip-tls-verify, tls-server-name) and user (client-certificate[-data],
 * client-key[-data], token, tokenFile), and the context's namespace.  Relative file paths
 * (certificates, keys, tokenFile) are taken relative to base_dir (the kubeconfig's
 * directory; NULL = the working directory).  "-data" values are base64 of PEM; files are
 * read whole (at most 1 MiB each).  On failure returns -EINVAL (-ENOMEM, or -errno reading a
 * referenced file), leaves *ret alone, and writes to err "kubeconfig <name>[:<line>]: <what
 * is wrong>", naming the field (e.g. "users[0].user.client-key-data: not valid base64",
 * "context \"prod\" not found", "cluster \"c\" (clusters[0]) has no server").
 * Unsupported credentials (exec and auth-provider plugins, basic auth) are a clear error,
 * not ignored.
 */
int k8s_kubeconfig_parse(const char *text, size_t len, const char *name, const char *base_dir,
			 const char *context_name, struct k8s_config *ret, char *err, size_t errlen);

/* Read and parse a kubeconfig file (regular file, at most 16 MiB). */
int k8s_kubeconfig_load(const char *path, const char *context_name, struct k8s_config *ret,
			char *err, size_t errlen);

/*
 * In-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT (IPv6 host bracketed), the
 * service account token file and CA under dir (NULL = /var/run/secrets/kubernetes.io/
 * serviceaccount).  -ENOENT when not running in a cluster (the variables are unset).
 */
int k8s_incluster_load(const char *dir, struct k8s_config *ret, char *err, size_t errlen);

/*
 * Pick the configuration as client-go does: an explicit kubeconfig path, else $KUBECONFIG
 * (the first existing file of a colon-separated list), else in-cluster, else ~/.kube/config.
 * A context_name asks for a kubeconfig, so it skips the in-cluster step.  -ENOENT (and err
 * saying what to do) when there is none.
 */
int k8s_config_resolve(const char *kubeconfig, const char *context_name, struct k8s_config *ret,
		       char *err, size_t errlen);

/* Free everything c holds and zero it: safe on a zeroed struct, twice, and on NULL. */
void k8s_config_clear(struct k8s_config *c);

#endif
