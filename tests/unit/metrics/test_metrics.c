/* test_metrics.c - metrics clients in the main loop: the request deadline and the client limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dataplane/evloop.h"
#include "dataplane/plane.h"
#include "dataplane/worker.h"
#include "tests/unit/plane_pump.h"

/* The server is driven by a loop of our own, as in tests/unit/control: no waiting. */

struct harness {
	struct dp_plane p;
	struct sockaddr_in sa;
};

static int setup(void **state)
{
	struct harness *h = calloc(1, sizeof(*h));
	socklen_t len = sizeof(h->sa);
	char err[256], addr[64];
	int fd;

	assert_non_null(h);
	h->sa.sin_family = AF_INET;
	h->sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* A port that was free a moment ago. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&h->sa, sizeof(h->sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&h->sa, &len), 0);
	close(fd);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(h->sa.sin_port));
	h->p.epfd = epoll_create1(EPOLL_CLOEXEC);
	h->p.sig.fd = -1;
	assert_true(h->p.epfd >= 0);
	if (dp_metrics_open(&h->p, addr, -1, err, sizeof(err)))
		fail_msg("dp_metrics_open: %s", err);
	*state = h;
	return 0;
}

static int teardown(void **state)
{
	struct harness *h = *state;

	dp_plane_close_services(&h->p);
	close(h->p.epfd);
	free(h);
	return 0;
}

static int client(struct harness *h)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = { .tv_sec = 10 }; /* hang guard */

	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(fd, (struct sockaddr *)&h->sa, sizeof(h->sa)), 0);
	plane_pump(&h->p); /* accepted */
	return fd;
}

/* Everything the server sends until it closes (the loop is pumped in between). */
static void read_to_eof(struct harness *h, int fd, char *buf, size_t len)
{
	size_t got = 0;

	for (unsigned i = 0; i < 100000; i++) {
		ssize_t n = recv(fd, buf + got, len - 1 - got, MSG_DONTWAIT);

		if (n == 0) {
			buf[got] = '\0';
			return;
		}
		if (n > 0)
			got += (size_t)n;
		else
			assert_true(errno == EAGAIN);
		plane_pump(&h->p);
	}
	buf[got] = '\0';
	fail_msg("the server did not close; got '%s'", buf);
}

static bool still_open(int fd)
{
	char c;

	return recv(fd, &c, 1, MSG_DONTWAIT) == -1 && errno == EAGAIN;
}

/*
 * 32 scrapers that send half a request used to hold every slot for ever.  A request must be
 * complete within 10 s; deadlines are checked with the time given, so nothing waits.
 */
static void test_partial_requests_expire(void **state)
{
	static const char half[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
	struct harness *h = *state;
	char buf[1024];
	int fds[32], fd;

	for (int i = 0; i < 32; i++) {
		fds[i] = client(h);
		assert_int_equal(send(fds[i], half, sizeof(half) - 1, MSG_NOSIGNAL),
				 (ssize_t)sizeof(half) - 1);
		plane_pump(&h->p);
	}
	fd = client(h); /* over the limit: closed at once */
	read_to_eof(h, fd, buf, sizeof(buf));
	assert_string_equal(buf, "");
	close(fd);

	dp_plane_expire_clients(&h->p, dp_now_ms() + 9000);
	for (int i = 0; i < 32; i++)
		assert_true(still_open(fds[i]));
	dp_plane_expire_clients(&h->p, dp_now_ms() + 11000);
	for (int i = 0; i < 32; i++) {
		read_to_eof(h, fds[i], buf, sizeof(buf));
		assert_non_null(strstr(buf, "HTTP/1.1 408 Request Timeout\r\n"));
		close(fds[i]);
	}

	/* Room again (a path that needs no snapshot). */
	fd = client(h);
	assert_true(send(fd, "GET /nope HTTP/1.1\r\n\r\n", 22, MSG_NOSIGNAL) == 22);
	read_to_eof(h, fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 404 Not Found\r\n"));
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_partial_requests_expire, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
