/* handover.h - a running dataplane hands its listening sockets to its successor. */
#ifndef DP_HANDOVER_H
#define DP_HANDOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#include "common/addr.h"
#include "common/config.h"
#include "dataplane/dp.h"

/*
 * The protocol (docs/architecture.md, "Handover"), over a Unix SOCK_SEQPACKET socket so that
 * each message, and the descriptors it carries, arrives whole or not at all.  Every message is
 * a JSON object, except the apply document's pieces, which are its raw bytes.
 *
 *   new -> old  {"op":"hello","protocol":1}
 *   old -> new  {"op":"begin","protocol":1,"pid":P,"sockets":N,"apply_bytes":B
 *                [,"applied_version":V]}
 *               N times {"op":"socket","role":R,...} with 1 to 64 descriptors (SCM_RIGHTS):
 *                 role "listener": "listen":"ip:port","count":K  (K of that address's sockets;
 *                                  an address with more than 64 comes in several messages)
 *                 role "control" / "handover": "path":"/..."      (one descriptor)
 *                 role "metrics": "listen":"ip:port"              (one descriptor)
 *               the last successful apply line, B bytes in pieces of at most 32 KiB
 *               {"op":"end"}
 *   new -> old  {"op":"drain"}          (once its workers accept on the sockets)
 *   old -> new  {"op":"draining"}
 *
 * Either side may instead send {"op":"error","error":"..."} and hang up.  Until "drain", the
 * old process has changed nothing: a successor that fails or hangs up leaves it serving.
 */
#define DP_HO_PROTOCOL 1
#define DP_HO_MSG_MAX (64u << 10)        /* bytes of one message */
#define DP_HO_FDS_MAX 64u                /* descriptors in one message */
#define DP_HO_APPLY_PIECE (32u << 10)
#define DP_HO_ADDR_FDS_MAX 4096u         /* sockets of one address (acceptors is at most 1024) */
#define DP_HO_SOCKETS_MAX 65536u         /* socket messages in one handover */
#define DP_HO_TIMEOUT_MS 30000           /* whole exchange, either side: a hang guard */

/* One message and its descriptors: 0, or -errno (-EAGAIN: would block). */
int dp_ho_send(int sock, const void *buf, size_t len, const int *fds, unsigned n_fds);
/*
 * One message into buf (cap bytes) and its descriptors into fds (room for DP_HO_FDS_MAX,
 * close-on-exec).  Returns its length, 0 when the peer hung up, or -errno: -EMSGSIZE for a
 * longer message, -ETOOMANYREFS for more descriptors than that; on any failure every
 * descriptor that came is closed and *ret_n is 0.
 */
int dp_ho_recv(int sock, void *buf, size_t cap, int *fds, unsigned *ret_n);
struct sockaddr_un;
/* path as a Unix socket address: 0, or -ENAMETOOLONG. */
int dp_unix_sockaddr(const char *path, struct sockaddr_un *sa);
/* A SEQPACKET connection to path, its reads and writes bounded by timeout_s: 0 or -errno. */
int dp_ho_connect(const char *path, unsigned timeout_s, int *ret_fd);
/* A JSON object as one message (no newline): 0 or -errno; frees obj. */
int dp_ho_send_json(int sock, cJSON *obj);

/* --- the new process (takeover.c) ------------------------------------------------------ */

/* What a successor received. */
/* "dev:ino" of a file, as the handover names a socket file: in buf, returned. */
#define DP_HO_FILE_ID_MAX 48
struct stat;
const char *dp_ho_file_id(const struct stat *st, char *buf, size_t len);

struct dp_takeover {
	int sock;                          /* to the old process, until dp_takeover_finish */
	pid_t pid;                         /* the old process */
	struct dp_lsocks_pool pool;        /* its listener sockets, by address */
	int control_fd;                    /* its control socket, or -1 */
	char control_path[LB_PATH_MAX];
	char control_file[DP_HO_FILE_ID_MAX]; /* what its path named there ("" if not said) */
	int metrics_fd;                    /* its metrics listener, or -1 */
	struct lb_addr metrics_addr;
	int handover_fd;                   /* its handover socket, or -1 */
	char handover_path[LB_PATH_MAX];
	char handover_file[DP_HO_FILE_ID_MAX];
	bool control_taken, metrics_taken, handover_taken; /* by us: it must stop serving them */
	char *apply;                       /* its last successful apply line, or NULL */
	size_t apply_len;
	unsigned n_fds;                    /* descriptors received */
};

/*
 * Connect to the handover socket at path and receive everything (blocking, with a hang
 * guard).  Binds nothing.  On failure err says why and nothing is kept.
 */
int dp_takeover_receive(const char *path, struct dp_takeover **ret, char *err, size_t errlen);
/*
 * The same when a process may be serving at path: 1 with *ret NULL when none does (no file
 * there, or a socket file nobody listens on: the first pod of a node).
 */
int dp_takeover_receive_if_running(const char *path, struct dp_takeover **ret, char *err,
				   size_t errlen);
/*
 * The inherited socket of role ("control", "handover") at path, now the caller's; or -1, also
 * when path names another file here than it did for the old process (a pod of its own).
 */
int dp_takeover_take_unix(struct dp_takeover *t, const char *role, const char *path);
/* The inherited metrics socket if it listens on addr ("ip:port"), now the caller's; or -1. */
int dp_takeover_take_metrics(struct dp_takeover *t, const char *addr);
/* Ask the old process to stop accepting and drain, and wait for its word. */
int dp_takeover_finish(struct dp_takeover *t, char *err, size_t errlen);
/* Closes everything not taken. NULL is a no-op. */
void dp_takeover_free(struct dp_takeover *t);

/* --- the running process (handover.c) -------------------------------------------------- */

struct dp_plane;

/*
 * Serve the handover socket at path: use fd when it is >= 0 (inherited from our own
 * predecessor), else bind it (mode 0600, a stale file replaced).
 */
int dp_handover_open(struct dp_plane *p, const char *path, int fd, char *err, size_t errlen);

#endif
