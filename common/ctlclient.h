/* ctlclient.h - the client side of the control protocol: connect, send one request, read its reply. */
#ifndef LB_CTLCLIENT_H
#define LB_CTLCLIENT_H

#include <cjson/cJSON.h>

/*
 * Shared by `layer4-lb ctl` and the Kubernetes controller.  Blocking I/O on one connection,
 * one request at a time (the protocol answers each request line with one reply line, in
 * order); nothing here logs.
 */

/* A request object {"op": op}, or NULL without memory. */
cJSON *lb_ctlc_request(const char *op);

/* Connect to the control socket at path; timeout_ms bounds every later send and receive on it
 * (SO_SNDTIMEO/SO_RCVTIMEO; 0 = no bound). Returns the fd (SOCK_CLOEXEC) or -errno
 * (-ENAMETOOLONG for a path that does not fit sun_path). */
int lb_ctlc_connect(const char *path, unsigned timeout_ms);

/* Send one request object (not consumed: the caller still owns req) as one line on an open
 * connection and parse the one-line reply into *ret (caller frees with cJSON_Delete).
 * 0, or -errno: -EMSGSIZE for a request over LB_CTL_LINE_MAX (nothing is sent), -ETIMEDOUT,
 * -ECONNRESET for a peer that closed, -EBADMSG for a reply that is not a JSON object.
 * A dataplane that hangs up early (too many clients, wrong uid) has written why: its reply is
 * still read and returned. *ret is set only on success. */
int lb_ctlc_call(int fd, const cJSON *req, cJSON **ret);

/* Connect, call, close: what ctl does for each command. An oversized request is refused
 * before connecting. */
int lb_ctlc_call_once(const char *path, unsigned timeout_ms, const cJSON *req, cJSON **ret);

#endif
