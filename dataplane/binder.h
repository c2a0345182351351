/*
 * binder.h - ports below 1024 for a dataplane that holds no capability.
 *
 * Kubernetes gives a non-root container no ambient capabilities, and allowPrivilegeEscalation:
 * false voids file capabilities, so CAP_NET_BIND_SERVICE in the dataplane's container would
 * not reach a non-root dataplane.  Instead a tiny binder (`layer4-lb binder`, root with that
 * one capability, in a container of its own) binds listening sockets for it and hands them
 * over with SCM_RIGHTS, as the handover does: the dataplane never runs with a privilege, and
 * the binder never touches traffic.
 *
 * Protocol (SOCK_SEQPACKET, one request per connection):
 *   -> {"op":"bind","listen":"ADDR:PORT","count":N[,"join":true][,"protocol":"udp"]}
 *   <- {"ok":true,"left":K} with up to DP_HO_FDS_MAX listening sockets, repeated until K is
 *      0 and N sockets came; or {"ok":false,"error":"why"}
 * All N are bound at once (one group: a second request would find the address in use), for
 * N workers.  The binder serves only its --uid (and root), binds only ports below 1024
 * (any other the dataplane binds itself), and N is at most DP_BINDER_SOCKETS_MAX.  Errors
 * carry "errno" too (EADDRINUSE: the port is taken).  Without "join" an address something
 * listens on is refused (EADDRINUSE); with it, a binder started with --reuseport-overlap
 * binds, in its first DP_OVERLAP_WINDOW_MS, into the SO_REUSEPORT group there.  Any root
 * process's SO_REUSEPORT sockets on that port form such a group with ours, which is why both
 * the flag and the window bound it: it is meant for the previous pod's binder's, during an
 * upgrade whose two pods cannot pass sockets (plane.h: overlap_until_ms).
 */
#ifndef DP_BINDER_H
#define DP_BINDER_H

#include <stdbool.h>
#include <stddef.h>

#include "common/addr.h"
#include "common/config.h"

#define DP_BINDER_SOCKETS_MAX 1024u /* one per worker; NUM_ACCEPTORS is at most 1024 */

/* `layer4-lb binder --socket PATH --uid UID`: serve until SIGTERM; the exit status. */
int dp_binder_main(int argc, char **argv);

/*
 * Ask the binder at path for n sockets of proto on a (into fds), joining the group already
 * listening there if join: 0, or -errno with err set
 * (-EACCES, -EADDRINUSE ... as the binder's bind said, -ECONNREFUSED when none serves).
 */
int dp_binder_request(const char *path, const struct lb_addr *a, enum lb_protocol proto,
		      unsigned n, bool join, int *fds, char *err, size_t errlen);

#endif
