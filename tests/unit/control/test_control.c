/* test_control.c - control socket clients in the main loop: backpressure, EOF, deadlines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/ctlproto.h"
#include "dataplane/evloop.h"
#include "dataplane/plane.h"
#include "dataplane/worker.h"
#include "tests/unit/plane_pump.h"

/*
 * The control server is driven here by a loop of our own (epoll_wait with no wait, then each
 * handler), so a test sees exactly what one pass of the main loop does: a loop that keeps
 * finding work with nothing new from the peer is a loop that spins.  Only ping is used: it
 * needs no snapshot.
 */

struct harness {
	struct dp_plane p;
	char dir[64];
	char path[LB_PATH_MAX];
};

static int setup(void **state)
{
	struct harness *h = calloc(1, sizeof(*h));
	char err[256];

	assert_non_null(h);
	snprintf(h->dir, sizeof(h->dir), "/tmp/lb-ctl-test-XXXXXX");
	assert_non_null(mkdtemp(h->dir));
	snprintf(h->path, sizeof(h->path), "%s/ctl.sock", h->dir);
	h->p.epfd = epoll_create1(EPOLL_CLOEXEC);
	h->p.sig.fd = -1;
	assert_true(h->p.epfd >= 0);
	if (dp_control_open(&h->p, h->path, "", -1, err, sizeof(err)))
		fail_msg("dp_control_open: %s", err);
	*state = h;
	return 0;
}

static int teardown(void **state)
{
	struct harness *h = *state;

	dp_plane_close_services(&h->p);
	close(h->p.epfd);
	rmdir(h->dir);
	free(h);
	return 0;
}

static int client(struct harness *h)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", h->path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	plane_pump(&h->p); /* accepted */
	return fd;
}

/* n pings with ids "<i>-xxxx..." padded to 60 bytes, one per line. */
static char *pings(unsigned n, size_t *ret_len)
{
	size_t cap = (size_t)n * 96 + 1, len = 0;
	char *b = malloc(cap);

	assert_non_null(b);
	for (unsigned i = 0; i < n; i++)
		len += (size_t)snprintf(b + len, cap - len, "{\"op\":\"ping\",\"id\":\"%08u-%051d\"}\n",
					i, 0);
	*ret_len = len;
	return b;
}

struct reader {
	char buf[256];
	size_t len;
	unsigned lines; /* replies seen, each checked to be the next id in order */
	bool eof;
};

/* Take the replies that are there; each must be the ping reply with the next id. */
static void read_replies(int fd, struct reader *rd)
{
	for (;;) {
		ssize_t n = recv(fd, rd->buf + rd->len, sizeof(rd->buf) - rd->len, 0);
		char *nl;

		if (n == 0) {
			rd->eof = true;
			return;
		}
		if (n < 0) {
			assert_int_equal(errno, EAGAIN);
			return;
		}
		rd->len += (size_t)n;
		while ((nl = memchr(rd->buf, '\n', rd->len))) {
			char want[128];

			snprintf(want, sizeof(want), "{\"ok\":true,\"op\":\"ping\",\"id\":\"%08u-%051d\"}",
				 rd->lines, 0);
			*nl = '\0';
			if (strcmp(rd->buf, want))
				fail_msg("reply %u: got '%s', want '%s'", rd->lines, rd->buf, want);
			rd->lines++;
			rd->len -= (size_t)(nl + 1 - rd->buf);
			memmove(rd->buf, nl + 1, rd->len);
		}
	}
}

/* Send what the socket takes now; returns the bytes sent. */
static size_t send_some(int fd, const char *buf, size_t len)
{
	ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);

	if (n < 0) {
		assert_int_equal(errno, EAGAIN);
		return 0;
	}
	return (size_t)n;
}

/*
 * A client sends its requests, shuts its side and never reads.  Once the replies wait for
 * it, the loop must have nothing to do: a level-triggered EPOLLIN left armed at EOF made every
 * pass wake for it (100% CPU).
 */
static void test_eof_with_unread_replies_is_quiet(void **state)
{
	struct harness *h = *state;
	struct reader rd = { 0 };
	size_t len, sent = 0;
	unsigned quiet = 0;
	char *req = pings(5000, &len);
	int fd = client(h);

	for (unsigned i = 0; sent < len && i < 100000; i++) {
		sent += send_some(fd, req + sent, len - sent);
		plane_pump(&h->p);
	}
	assert_int_equal(sent, len);
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	for (unsigned i = 0; i < 1000 && quiet < 100; i++)
		quiet = plane_pump(&h->p) ? 0 : quiet + 1;
	assert_int_equal(quiet, 100);

	/* The replies are all there once the client reads, then the server hangs up. */
	for (unsigned i = 0; !rd.eof && i < 100000; i++) {
		read_replies(fd, &rd);
		plane_pump(&h->p);
	}
	assert_true(rd.eof);
	assert_int_equal(rd.lines, 5000);
	close(fd);
	free(req);
}

/*
 * Pipelined requests from a client that does not read: the server stops reading once about
 * 1 MiB of replies wait (it would otherwise buffer replies without bound), and answers the
 * rest, in order, once the client reads again.
 */
static void test_backlogged_replies_stop_reading(void **state)
{
	struct harness *h = *state;
	const unsigned n = 50000; /* about 4.4 MB of requests and as much in replies */
	struct reader rd = { 0 };
	size_t len, sent = 0;
	unsigned quiet = 0;
	char *req = pings(n, &len);
	int fd = client(h), outq = 0;

	for (unsigned i = 0; i < 100000 && quiet < 3; i++) {
		size_t k = send_some(fd, req + sent, len - sent);

		sent += k;
		quiet = k || plane_pump(&h->p) ? 0 : quiet + 1;
	}
	assert_int_equal(quiet, 3);
	assert_true(sent < len);
	/* What the server has taken in (sent, less what waits unread in its socket). */
	assert_int_equal(ioctl(fd, TIOCOUTQ, &outq), 0);
	assert_true(sent - (size_t)outq < (3u << 20));

	for (unsigned i = 0; rd.lines < n && i < 1000000; i++) {
		sent += send_some(fd, req + sent, len - sent);
		read_replies(fd, &rd);
		plane_pump(&h->p);
	}
	assert_int_equal(sent, len);
	assert_int_equal(rd.lines, n);
	assert_false(rd.eof);
	close(fd);
	free(req);
}

/* Waits for a line from fd, pumping the loop; returns it without its newline. */
static void read_line(struct harness *h, int fd, char *buf, size_t len)
{
	size_t got = 0;

	for (unsigned i = 0; i < 100000; i++) {
		ssize_t n = recv(fd, buf + got, len - 1 - got, 0);

		if (n > 0) {
			got += (size_t)n;
			buf[got] = '\0';
			if (strchr(buf, '\n')) {
				*strchr(buf, '\n') = '\0';
				return;
			}
		}
		if (n == 0)
			break;
		plane_pump(&h->p);
	}
	buf[got] = '\0';
	fail_msg("no line from the server, got '%s'", buf);
}

static bool at_eof(struct harness *h, int fd)
{
	char c;

	plane_pump(&h->p);
	return recv(fd, &c, 1, 0) == 0;
}

static bool still_open(int fd)
{
	char c;

	return recv(fd, &c, 1, 0) == -1 && errno == EAGAIN;
}

/*
 * Idle clients, and clients that sent half a request, used to keep their slot for ever: 64 of
 * them locked every other client out.  Deadlines are checked with the time given, so the test
 * needs no waiting.
 */
static void test_idle_and_partial_clients_expire(void **state)
{
	struct harness *h = *state;
	int fds[64], extra, fd;
	char line[512];

	for (int i = 0; i < 64; i++)
		fds[i] = client(h);
	assert_int_equal(send_some(fds[0], "{\"op\":\"ping\",", 13), 13);
	plane_pump(&h->p);
	extra = client(h);
	read_line(h, extra, line, sizeof(line));
	assert_non_null(strstr(line, "too many control connections"));
	assert_true(at_eof(h, extra));
	close(extra);

	dp_plane_expire_clients(&h->p, dp_now_ms() + 59000);
	for (int i = 0; i < 64; i++)
		assert_true(still_open(fds[i]));

	dp_plane_expire_clients(&h->p, dp_now_ms() + 61000);
	for (int i = 0; i < 64; i++) {
		read_line(h, fds[i], line, sizeof(line));
		assert_string_equal(line, "{\"ok\":false,\"error\":\"no complete request for 60 s; "
					  "closing the connection\"}");
		assert_true(at_eof(h, fds[i]));
		close(fds[i]);
	}

	/* Room again: a new client is served. */
	fd = client(h);
	assert_int_equal(send_some(fd, "{\"op\":\"ping\",\"id\":\"after\"}\n", 27), 27);
	read_line(h, fd, line, sizeof(line));
	assert_string_equal(line, "{\"ok\":true,\"op\":\"ping\",\"id\":\"after\"}");
	close(fd);
}

/* Sends a ping padded with spaces to exactly `len` bytes with its newline; returns the reply. */
static void padded_ping(struct harness *h, size_t len, char *line, size_t linelen)
{
	static const char head[] = "{\"op\":\"ping\",\"id\":\"pad\"";
	char *req = malloc(len);
	size_t sent = 0;
	int fd = client(h);

	assert_non_null(req);
	memset(req, ' ', len);
	memcpy(req, head, sizeof(head) - 1);
	req[len - 2] = '}';
	req[len - 1] = '\n';
	for (unsigned i = 0; sent < len && i < 1000000; i++) {
		ssize_t n = send(fd, req + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno != EAGAIN)
			break; /* the server hung up on an oversized line */
		sent += n > 0 ? (size_t)n : 0;
		plane_pump(&h->p);
	}
	read_line(h, fd, line, linelen);
	close(fd);
	free(req);
}

/* The limit is 8 MiB with the newline, the figure `ctl` checks before it sends. */
static void test_line_limit(void **state)
{
	struct harness *h = *state;
	char line[512];

	padded_ping(h, LB_CTL_LINE_MAX, line, sizeof(line));
	assert_string_equal(line, "{\"ok\":true,\"op\":\"ping\",\"id\":\"pad\"}");
	padded_ping(h, LB_CTL_LINE_MAX + 1, line, sizeof(line));
	assert_string_equal(line, "{\"ok\":false,\"error\":\"message longer than the 8 MiB limit; "
				  "closing the connection\"}");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_eof_with_unread_replies_is_quiet, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_backlogged_replies_stop_reading, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_idle_and_partial_clients_expire, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_line_limit, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
