/* howire.c - the handover protocol's messages on the wire, for both ends (handover.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "dataplane/handover.h"

/* --- messages ----------------------------------------------------------------------- */

const char *dp_ho_file_id(const struct stat *st, char *buf, size_t len)
{
	/* Text: a 64-bit inode number does not survive a JSON number (a double). */
	snprintf(buf, len, "%ju:%ju", (uintmax_t)st->st_dev, (uintmax_t)st->st_ino);
	return buf;
}

int dp_ho_send(int sock, const void *buf, size_t len, const int *fds, unsigned n_fds)
{
	union {
		char buf[CMSG_SPACE(DP_HO_FDS_MAX * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (n_fds > DP_HO_FDS_MAX)
		return -EINVAL;
	if (n_fds) {
		struct cmsghdr *cm;

		memset(&u, 0, sizeof(u));
		msg.msg_control = u.buf;
		msg.msg_controllen = CMSG_SPACE(n_fds * sizeof(int));
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, n_fds * sizeof(int));
	}
	return sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) == -1 ? -errno : 0;
}

int dp_unix_sockaddr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return 0;
}

int dp_ho_connect(const char *path, unsigned timeout_s, int *ret_fd)
{
	struct timeval tv = { .tv_sec = timeout_s };
	struct sockaddr_un sa;
	int fd, r = dp_unix_sockaddr(path, &sa);

	if (r)
		return r;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	/* Blocking reads with a hang guard: a peer that stops answering fails us. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		r = -errno;
		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

/* Every descriptor in msg's control data, into fds (up to room); returns how many came. */
static unsigned collect_fds(struct msghdr *msg, int *fds, unsigned room)
{
	unsigned n = 0;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
		unsigned k;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (unsigned i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (n < room)
				fds[n++] = fd;
			else
				close(fd);
		}
	}
	return n;
}

int dp_ho_recv(int sock, void *buf, size_t cap, int *fds, unsigned *ret_n)
{
	union {
		/* One more than allowed, so that too many is seen as such, not as truncation. */
		char buf[CMSG_SPACE((DP_HO_FDS_MAX + 1) * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			      .msg_controllen = sizeof(u.buf) };
	int fds_in[DP_HO_FDS_MAX + 1];
	ssize_t len;
	unsigned n;

	*ret_n = 0;
	/*
	 * The successor waits here with SO_RCVTIMEO set, and the kernel does not restart a
	 * socket wait with a timeout after an interruption, even one that delivers no signal
	 * to us (task work, io_uring's among it). Once in CI that made a takeover give up on
	 * the old process's "draining" answer, which was on its way.
	 */
	do
		len = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (len == -1 && errno == EINTR);
	if (len == -1)
		return -errno;
	n = collect_fds(&msg, fds_in, DP_HO_FDS_MAX + 1);
	if ((msg.msg_flags & MSG_CTRUNC) || n > DP_HO_FDS_MAX || (msg.msg_flags & MSG_TRUNC)) {
		for (unsigned i = 0; i < n; i++)
			close(fds_in[i]);
		return (msg.msg_flags & MSG_TRUNC) ? -EMSGSIZE : -ETOOMANYREFS;
	}
	memcpy(fds, fds_in, n * sizeof(int));
	*ret_n = n;
	return (int)len;
}

int dp_ho_send_json(int sock, cJSON *obj)
{
	char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
	int r = -ENOMEM;

	cJSON_Delete(obj);
	if (text && strlen(text) <= DP_HO_MSG_MAX)
		r = dp_ho_send(sock, text, strlen(text), NULL, 0);
	free(text);
	return r;
}

/* --- the successor's session --------------------------------------------------------- */
