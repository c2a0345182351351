/* ctlclient.c - the control protocol's client side: one request line out, one reply line in. */
#include "common/ctlclient.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/ctlproto.h"

/* No reply is that large: the biggest status (262,144 backends) is well under it. */
#define LB_CTLC_REPLY_MAX (1u << 30)
#define LB_CTLC_READ_CHUNK 65536

cJSON *lb_ctlc_request(const char *op)
{
	cJSON *o = cJSON_CreateObject();

	if (o && !cJSON_AddStringToObject(o, "op", op)) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

int lb_ctlc_connect(const char *path, unsigned timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = timeout_ms / 1000,
			      .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000 };
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	/* Set before connect: a listener with a full backlog would otherwise block it for ever. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1)
		goto out_close;
	return fd;
out_close:
	r = errno == EAGAIN || errno == EINPROGRESS ? -ETIMEDOUT : -errno;
	close(fd);
	return r;
}

/* The whole buffer, or -errno (a send timeout is -ETIMEDOUT, not "try again"). */
static int send_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		return n == -1 && errno != EAGAIN ? -errno : -ETIMEDOUT;
	}
	return 0;
}

/*
 * One reply line (without its newline), malloc'd.  Replies come one per request and the
 * caller waits for each, so nothing follows the newline that a later call would miss.
 */
static int recv_line(int fd, char **ret, size_t *ret_len)
{
	size_t len = 0, cap = 0;
	char *buf = NULL, *nl = NULL, *b;
	ssize_t n;
	int r;

	while (!nl) {
		if (cap - len < LB_CTLC_READ_CHUNK / 2) {
			size_t ncap = cap ? cap * 2 : LB_CTLC_READ_CHUNK;

			r = -EMSGSIZE;
			if (ncap > LB_CTLC_REPLY_MAX)
				goto out_free;
			r = -ENOMEM;
			if (!(b = realloc(buf, ncap)))
				goto out_free;
			buf = b;
			cap = ncap;
		}
		n = recv(fd, buf + len, cap - len, 0);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n == 0 ? -ECONNRESET : errno == EAGAIN ? -ETIMEDOUT : -errno;
			goto out_free;
		}
		nl = memchr(buf + len, '\n', (size_t)n);
		len += (size_t)n;
	}
	*ret = buf;
	*ret_len = (size_t)(nl - buf);
	return 0;
out_free:
	free(buf);
	return r;
}

/* A reply is one JSON object, maybe followed by blanks (and the '\r' of a CRLF). */
static int parse_reply(const char *line, size_t len, cJSON **ret)
{
	const char *end = NULL;
	cJSON *o = cJSON_ParseWithLengthOpts(line, len, &end, 0);

	while (o && end < line + len && strchr(" \t\r", *end))
		end++;
	if (!o || end < line + len || !cJSON_IsObject(o)) {
		cJSON_Delete(o);
		return -EBADMSG;
	}
	*ret = o;
	return 0;
}

/* req as one line ending in '\n' (malloc'd), or -EMSGSIZE past the dataplane's limit. */
static int request_line(const cJSON *req, char **ret, size_t *ret_len)
{
	char *text = cJSON_PrintUnformatted(req), *line;
	size_t n;

	if (!text)
		return -ENOMEM;
	n = strlen(text);
	/* The dataplane counts the newline, and would read no further than its limit. */
	if (n + 1 > LB_CTL_LINE_MAX) {
		free(text);
		return -EMSGSIZE;
	}
	line = realloc(text, n + 2);
	if (!line) {
		free(text);
		return -ENOMEM;
	}
	line[n] = '\n';
	line[n + 1] = '\0';
	*ret = line;
	*ret_len = n + 1;
	return 0;
}

static int call_line(int fd, const char *line, size_t len, cJSON **ret)
{
	char *buf = NULL; /* recv_line's -errno is negative; the analyzer cannot know errno > 0 */
	size_t n = 0;
	int r, rs;

	rs = send_all(fd, line, len);
	/* A dataplane that hangs up early (too many clients, another uid) has said why: read it. */
	if (rs && rs != -EPIPE && rs != -ECONNRESET)
		return rs;
	r = recv_line(fd, &buf, &n);
	if (r)
		return rs ? -ECONNRESET : r;
	r = parse_reply(buf, n, ret);
	free(buf);
	return r;
}

int lb_ctlc_call(int fd, const cJSON *req, cJSON **ret)
{
	char *line;
	size_t len;
	int r = request_line(req, &line, &len);

	if (r)
		return r;
	r = call_line(fd, line, len, ret);
	free(line);
	return r;
}

int lb_ctlc_call_once(const char *path, unsigned timeout_ms, const cJSON *req, cJSON **ret)
{
	char *line;
	size_t len;
	int fd, r;

	/* Serialised first: a request the dataplane would refuse unread is worth no connection. */
	r = request_line(req, &line, &len);
	if (r)
		return r;
	fd = lb_ctlc_connect(path, timeout_ms);
	r = fd;
	if (fd < 0)
		goto out_line;
	r = call_line(fd, line, len, ret);
	close(fd);
out_line:
	free(line);
	return r;
}
