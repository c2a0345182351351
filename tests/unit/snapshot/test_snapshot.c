/* test_snapshot.c - snapshots on loopback: sockets and state shared across reloads, then closed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dataplane/dp.h"
#include "dataplane/snapshot.h"

#define N_WORKERS 2
#define A "10.0.0.1:80"
#define B "10.0.0.2:80"
#define C "10.0.0.3:80"

static struct dp_snapshot untouched;

/*
 * A port nobody listens on right now: bind port 0, read what the kernel chose, close.  Never
 * the same one twice in this process, so two calls make two distinct addresses.
 */
static unsigned free_port(void)
{
	static unsigned given[64], n_given;
	struct sockaddr_in sin;
	socklen_t len;
	bool seen;
	int fd;

	do {
		sin = (struct sockaddr_in){ .sin_family = AF_INET };
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(sin);
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_int_not_equal(fd, -1);
		assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
		assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
		close(fd);
		seen = false;
		for (unsigned i = 0; i < n_given; i++)
			seen |= given[i] == ntohs(sin.sin_port);
	} while (seen);
	assert_true(n_given < sizeof(given) / sizeof(given[0]));
	given[n_given++] = ntohs(sin.sin_port);
	return ntohs(sin.sin_port);
}

/* A plain socket on 127.0.0.1:port: no SO_REUSEPORT, so any listener there makes it fail. */
static int plain_listen(unsigned port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd, one = 1;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_not_equal(fd, -1);
	/* Only lets a TIME_WAIT of an earlier test through, never a listening socket. */
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 || listen(fd, 1) == -1) {
		int r = -errno;

		close(fd);
		return r;
	}
	return fd;
}

static bool port_in_use(unsigned port)
{
	int fd = plain_listen(port);

	if (fd >= 0) {
		close(fd);
		return false;
	}
	assert_int_equal(fd, -EADDRINUSE);
	return true;
}

static unsigned count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	unsigned n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/*
 * A configuration of one or two listeners on 127.0.0.1 (l1 NULL for one), each with its
 * backends given as "ip:port,ip:port" ("" for none: managed only), written as YAML flow;
 * from the file (managed false), or as an apply would give them (managed true).
 */
static struct lb_config *listeners_of(bool managed, const char *l0, unsigned p0, const char *b0,
				      const char *l1, unsigned p1, const char *b1)
{
	char text[1024], backends[256], *tok, *save;
	const char *names[2] = { l0, l1 }, *bs[2] = { b0, b1 };
	unsigned ports[2] = { p0, p1 };
	struct lb_config *c = NULL;
	char err[512] = "";
	size_t n;
	int r;

	n = (size_t)snprintf(text, sizeof(text), "{\"listeners\":[");
	for (int i = 0; i < 2 && names[i]; i++) {
		snprintf(backends, sizeof(backends), "%s", bs[i]);
		n += (size_t)snprintf(text + n, sizeof(text) - n, "%s{\"name\":\"%s\","
				      "\"listen\":\"127.0.0.1:%u\",\"backends\":[",
				      i ? "," : "", names[i], ports[i]);
		for (tok = strtok_r(backends, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
			n += (size_t)snprintf(text + n, sizeof(text) - n, "%s{\"address\":\"%s\"}",
					      tok == backends ? "" : ",", tok);
		n += (size_t)snprintf(text + n, sizeof(text) - n, "]}");
	}
	snprintf(text + n, sizeof(text) - n, "]}");
	r = managed ? lb_config_parse_listeners(text, strlen(text), "apply", &c, err, sizeof(err))
		    : lb_config_parse(text, strlen(text), "t.yaml", &c, err, sizeof(err));
	if (r)
		fail_msg("config: %s\n--- input: %s", err, text);
	return c;
}

static struct lb_config *conf_of(const char *l0, unsigned p0, const char *b0, const char *l1,
				 unsigned p1, const char *b1)
{
	return listeners_of(false, l0, p0, b0, l1, p1, b1);
}

static struct lb_config *managed_of(const char *l0, unsigned p0, const char *b0, const char *l1,
				    unsigned p1, const char *b1)
{
	return listeners_of(true, l0, p0, b0, l1, p1, b1);
}

static struct dp_snapshot *build_ok(struct lb_config *conf, const struct dp_snapshot *old,
				    uint64_t gen)
{
	struct dp_snapshot *s = NULL;
	char err[512] = "";
	int r;

	r = dp_snapshot_build(conf, old, NULL, N_WORKERS, gen, &s, err, sizeof(err));
	if (r)
		fail_msg("build: %d %s", r, err);
	assert_non_null(s);
	assert_int_equal(atomic_load(&s->refs), 1);
	assert_true(s->generation == gen);
	assert_int_equal(s->n_workers, N_WORKERS);
	assert_ptr_equal(s->conf, conf);
	return s;
}

static struct dp_bstate *bstate(const struct dp_snapshot *s, unsigned l, const char *backend)
{
	const struct dp_slistener *sl = &s->listeners[l];

	for (unsigned i = 0; i < sl->n_backends; i++)
		if (!strcmp(sl->backends[i].name, backend))
			return sl->backends[i].st;
	fail_msg("no backend %s in listener %u", backend, l);
	return NULL;
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1;
}

/* Each worker's socket listens on the address, with SO_REUSEPORT, and is non-blocking. */
static void assert_listening(const struct dp_lsocks *ls, unsigned port)
{
	assert_int_equal(ls->n, N_WORKERS);
	for (unsigned i = 0; i < ls->n; i++) {
		struct sockaddr_in sin;
		socklen_t len = sizeof(sin);
		int v = 0;

		assert_true(ls->fds[i] >= 0);
		for (unsigned j = 0; j < i; j++)
			assert_int_not_equal(ls->fds[i], ls->fds[j]);
		assert_int_equal(getsockname(ls->fds[i], (struct sockaddr *)&sin, &len), 0);
		assert_int_equal(ntohs(sin.sin_port), port);
		assert_int_equal(ntohl(sin.sin_addr.s_addr), INADDR_LOOPBACK);
		len = sizeof(v);
		assert_int_equal(getsockopt(ls->fds[i], SOL_SOCKET, SO_ACCEPTCONN, &v, &len), 0);
		assert_int_equal(v, 1);
		assert_int_equal(getsockopt(ls->fds[i], SOL_SOCKET, SO_REUSEPORT, &v, &len), 0);
		assert_int_equal(v, 1);
		assert_true(fcntl(ls->fds[i], F_GETFL) & O_NONBLOCK);
		assert_true(fcntl(ls->fds[i], F_GETFD) & FD_CLOEXEC);
	}
}

/* A client connection to port is accepted on one of the sockets of ls. */
static void assert_accepts(const struct dp_lsocks *ls, unsigned port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	struct pollfd pfd[N_WORKERS];
	int cfd, afd = -1;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_not_equal(cfd, -1);
	assert_int_equal(connect(cfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	for (unsigned i = 0; i < N_WORKERS; i++)
		pfd[i] = (struct pollfd){ .fd = ls->fds[i], .events = POLLIN };
	assert_int_equal(poll(pfd, N_WORKERS, 5000), 1);
	for (unsigned i = 0; i < N_WORKERS && afd < 0; i++)
		if (pfd[i].revents & POLLIN)
			afd = accept4(ls->fds[i], NULL, NULL, SOCK_CLOEXEC);
	assert_true(afd >= 0);
	/* Reset, not FIN: no TIME_WAIT left on the port for the checks that follow. */
	setsockopt(afd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	setsockopt(cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(afd);
	close(cfd);
}

static void test_first_snapshot(void **state)
{
	unsigned port = free_port();
	const struct dp_slistener *sl;
	struct dp_snapshot *s;

	s = build_ok(conf_of("web", port, A "," B, NULL, 0, NULL), NULL, 1);
	assert_int_equal(s->n_listeners, 1);
	sl = &s->listeners[0];
	assert_ptr_equal(sl->conf, &s->conf->listeners[0]);
	assert_int_equal(atomic_load(&sl->socks->refs), 1);
	assert_true(lb_addr_equal(&sl->socks->addr, &sl->conf->listen));
	assert_listening(sl->socks, port);
	assert_int_equal(atomic_load(&sl->st->refs), 1);
	assert_int_equal(sl->n_backends, 2);
	assert_string_equal(sl->backends[0].name, A);
	assert_string_equal(sl->backends[1].name, B);
	assert_true(lb_addr_equal(&sl->backends[1].addr, &sl->conf->backends[1].addr));
	assert_int_equal(sl->backends[0].weight, 1);
	for (unsigned i = 0; i < 2; i++) {
		assert_int_equal(atomic_load(&sl->backends[i].st->refs), 1);
		assert_true(atomic_load(&sl->backends[i].st->check_up));
	}
	assert_ptr_not_equal(sl->backends[0].st, sl->backends[1].st);
	assert_true(port_in_use(port));
	assert_accepts(sl->socks, port);
	dp_snapshot_put(s);
	assert_false(port_in_use(port));
}

static void test_reload_shares(void **state)
{
	unsigned port = free_port();
	struct dp_snapshot *s1, *s2;
	struct dp_slistener *l1, *l2;
	struct dp_bstate *a, *b, *c;
	int fds[N_WORKERS];

	s1 = build_ok(conf_of("web", port, A "," B, NULL, 0, NULL), NULL, 1);
	a = bstate(s1, 0, A);
	b = bstate(s1, 0, B);
	atomic_store(&b->conns_total, 17); /* counters ride along with the state */
	s2 = build_ok(conf_of("web", port, B "," C, NULL, 0, NULL), s1, 2);
	l1 = &s1->listeners[0];
	l2 = &s2->listeners[0];
	c = bstate(s2, 0, C);

	/* Same address: the very same sockets, not a second bind. */
	assert_ptr_equal(l2->socks, l1->socks);
	assert_int_equal(atomic_load(&l1->socks->refs), 2);
	assert_ptr_equal(l2->st, l1->st);
	assert_int_equal(atomic_load(&l1->st->refs), 2);
	assert_ptr_equal(bstate(s2, 0, B), b);
	assert_int_equal(atomic_load(&b->refs), 2);
	assert_true(atomic_load(&b->conns_total) == 17);
	assert_ptr_not_equal(c, a);
	assert_ptr_not_equal(c, b);
	assert_int_equal(atomic_load(&c->refs), 1);
	assert_true(atomic_load(&c->conns_total) == 0);
	assert_int_equal(atomic_load(&a->refs), 1);
	/* s2 reads its own configuration, not s1's. */
	assert_ptr_equal(l2->conf, &s2->conf->listeners[0]);
	assert_ptr_not_equal(s2->conf, s1->conf);

	for (unsigned i = 0; i < N_WORKERS; i++)
		fds[i] = l2->socks->fds[i];
	dp_snapshot_put(s1);
	assert_int_equal(atomic_load(&l2->socks->refs), 1);
	assert_int_equal(atomic_load(&l2->st->refs), 1);
	assert_int_equal(atomic_load(&b->refs), 1);
	assert_int_equal(atomic_load(&c->refs), 1);
	for (unsigned i = 0; i < N_WORKERS; i++)
		assert_true(fd_open(fds[i]));
	assert_listening(l2->socks, port);
	assert_accepts(l2->socks, port);
	assert_string_equal(l2->backends[0].name, B);
	assert_true(port_in_use(port));

	dp_snapshot_put(s2);
	for (unsigned i = 0; i < N_WORKERS; i++) {
		assert_false(fd_open(fds[i]));
		assert_int_equal(errno, EBADF);
	}
	assert_false(port_in_use(port));
}

static void test_listen_address_change(void **state)
{
	unsigned p1 = free_port(), p2 = free_port();
	struct dp_snapshot *s1, *s2;

	s1 = build_ok(conf_of("web", p1, A, NULL, 0, NULL), NULL, 1);
	s2 = build_ok(conf_of("web", p2, A, NULL, 0, NULL), s1, 2);
	assert_ptr_not_equal(s2->listeners[0].socks, s1->listeners[0].socks);
	assert_int_equal(atomic_load(&s1->listeners[0].socks->refs), 1);
	assert_int_equal(atomic_load(&s2->listeners[0].socks->refs), 1);
	assert_listening(s2->listeners[0].socks, p2);
	/* Still the same listener by name: counters and health carry over. */
	assert_ptr_equal(s2->listeners[0].st, s1->listeners[0].st);
	assert_ptr_equal(bstate(s2, 0, A), bstate(s1, 0, A));
	assert_true(port_in_use(p1));
	assert_true(port_in_use(p2));

	/* The old address closes with the last snapshot that had it. */
	dp_snapshot_put(s1);
	assert_false(port_in_use(p1));
	assert_true(port_in_use(p2));
	assert_accepts(s2->listeners[0].socks, p2);
	dp_snapshot_put(s2);
	assert_false(port_in_use(p2));
}

/* Sockets follow the address, counters and health the name. */
static void test_rename_and_swap(void **state)
{
	unsigned p1 = free_port(), p2 = free_port();
	struct dp_snapshot *s1, *s2, *s3;

	s1 = build_ok(conf_of("web", p1, A, NULL, 0, NULL), NULL, 1);
	s2 = build_ok(conf_of("www", p1, A, NULL, 0, NULL), s1, 2);
	assert_ptr_equal(s2->listeners[0].socks, s1->listeners[0].socks);
	assert_ptr_not_equal(s2->listeners[0].st, s1->listeners[0].st);
	assert_int_equal(atomic_load(&s2->listeners[0].st->refs), 1);
	assert_ptr_not_equal(bstate(s2, 0, A), bstate(s1, 0, A));
	dp_snapshot_put(s1);

	/* Two listeners trade addresses: each takes over the other's sockets. */
	dp_snapshot_put(s2);
	s1 = build_ok(conf_of("web", p1, A, "db", p2, B), NULL, 1);
	s3 = build_ok(conf_of("web", p2, A, "db", p1, B), s1, 2);
	assert_ptr_equal(s3->listeners[0].socks, s1->listeners[1].socks);
	assert_ptr_equal(s3->listeners[1].socks, s1->listeners[0].socks);
	assert_ptr_equal(s3->listeners[0].st, s1->listeners[0].st);
	assert_ptr_equal(bstate(s3, 1, B), bstate(s1, 1, B));
	dp_snapshot_put(s1);
	assert_listening(s3->listeners[0].socks, p2);
	assert_listening(s3->listeners[1].socks, p1);
	dp_snapshot_put(s3);
	assert_false(port_in_use(p1));
	assert_false(port_in_use(p2));
}

static void expect_build_error(struct lb_config *conf, const struct dp_snapshot *old,
			       const char *n1, const char *n2)
{
	struct dp_snapshot *s = &untouched;
	char err[512] = "";
	int r;

	r = dp_snapshot_build(conf, old, NULL, N_WORKERS, 9, &s, err, sizeof(err));
	assert_int_equal(r, -EADDRINUSE);
	assert_ptr_equal(s, &untouched);
	if (!strstr(err, n1) || !strstr(err, n2))
		fail_msg("want '%s' and '%s' in '%s'", n1, n2, err);
}

static void test_bind_failure(void **state)
{
	unsigned port = free_port();
	char where[64];
	unsigned nfd;
	int blocker;

	blocker = plain_listen(port);
	assert_true(blocker >= 0);
	snprintf(where, sizeof(where), "127.0.0.1:%u", port);
	nfd = count_fds();
	/* conf is the build's, also on failure: AddressSanitizer reports it if it leaks. */
	expect_build_error(conf_of("web", port, A, NULL, 0, NULL), NULL, "listener web", where);
	assert_int_equal(count_fds(), nfd);
	close(blocker);
}

/* A failed reload leaves the running snapshot exactly as it was, and nothing of its own open. */
static void test_bind_failure_on_reload(void **state)
{
	unsigned p1 = free_port(), p2 = free_port(), pb = free_port();
	struct dp_snapshot *s1;
	char where[64];
	unsigned nfd;
	int blocker;

	s1 = build_ok(conf_of("web", p1, A "," B, NULL, 0, NULL), NULL, 1);
	blocker = plain_listen(pb);
	assert_true(blocker >= 0);
	snprintf(where, sizeof(where), "127.0.0.1:%u", pb);
	nfd = count_fds();

	/* web's sockets and state were shared before blocked failed: the references go back. */
	expect_build_error(conf_of("web", p1, A "," C, "blocked", pb, A), s1, "listener blocked",
			   where);
	assert_int_equal(count_fds(), nfd);
	assert_int_equal(atomic_load(&s1->listeners[0].socks->refs), 1);
	assert_int_equal(atomic_load(&s1->listeners[0].st->refs), 1);
	assert_int_equal(atomic_load(&bstate(s1, 0, A)->refs), 1);
	assert_int_equal(atomic_load(&bstate(s1, 0, B)->refs), 1);

	/* api bound its sockets before blocked failed: they are closed again. */
	expect_build_error(conf_of("api", p2, C, "blocked", pb, A), s1, "listener blocked",
			   where);
	assert_int_equal(count_fds(), nfd);
	assert_false(port_in_use(p2));
	assert_listening(s1->listeners[0].socks, p1);
	assert_accepts(s1->listeners[0].socks, p1);

	close(blocker);
	dp_snapshot_put(s1);
	assert_false(port_in_use(p1));
}

/*
 * A managed listener whose port another process holds is left without sockets; the rest goes
 * ahead.  Nothing of the failed bind stays open, and the next build, once the port is free,
 * binds it while sharing everything else.
 */
static void test_managed_bind_failure_keeps_the_rest(void **state)
{
	unsigned p1 = free_port(), pb = free_port();
	const struct dp_slistener *web, *blocked, *web2, *blocked2;
	struct dp_snapshot *s1, *s2;
	unsigned nfd;
	int blocker;

	blocker = plain_listen(pb);
	assert_true(blocker >= 0);
	nfd = count_fds();
	s1 = build_ok(managed_of("web", p1, A, "blocked", pb, B "," C), NULL, 1);
	assert_int_equal(s1->n_listeners, 2);
	web = &s1->listeners[0];
	blocked = &s1->listeners[1];
	assert_listening(web->socks, p1);
	assert_int_equal(web->bind_err, 0);
	assert_accepts(web->socks, p1);
	/* In the snapshot, with its state and backends, but no sockets. */
	assert_null(blocked->socks);
	assert_int_equal(blocked->bind_err, -EADDRINUSE);
	assert_ptr_equal(blocked->conf, &s1->conf->listeners[1]);
	assert_int_equal(atomic_load(&blocked->st->refs), 1);
	assert_int_equal(blocked->n_backends, 2);
	assert_int_equal(atomic_load(&bstate(s1, 1, B)->refs), 1);
	/* Exactly web's sockets were opened: none of blocked's are left behind. */
	assert_int_equal(count_fds(), nfd + N_WORKERS);
	atomic_store(&blocked->st->accepted, 5); /* its counters ride along, as any listener's */

	/* Still held: still left out, and the build still succeeds. */
	s2 = build_ok(managed_of("web", p1, A, "blocked", pb, B "," C), s1, 2);
	assert_null(s2->listeners[1].socks);
	assert_int_equal(s2->listeners[1].bind_err, -EADDRINUSE);
	assert_ptr_equal(s2->listeners[0].socks, web->socks);
	assert_int_equal(count_fds(), nfd + N_WORKERS);
	dp_snapshot_put(s2);

	/* Freed: the same set again binds it, and shares everything else with s1. */
	close(blocker);
	nfd = count_fds();
	s2 = build_ok(managed_of("web", p1, A, "blocked", pb, B "," C), s1, 3);
	web2 = &s2->listeners[0];
	blocked2 = &s2->listeners[1];
	assert_listening(blocked2->socks, pb);
	assert_int_equal(blocked2->bind_err, 0);
	assert_accepts(blocked2->socks, pb);
	assert_int_equal(count_fds(), nfd + N_WORKERS);
	assert_ptr_equal(web2->socks, web->socks);
	assert_int_equal(atomic_load(&web->socks->refs), 2);
	assert_ptr_equal(blocked2->st, blocked->st);
	assert_int_equal(atomic_load(&blocked->st->refs), 2);
	assert_true(atomic_load(&blocked2->st->accepted) == 5);
	assert_ptr_equal(bstate(s2, 1, B), bstate(s1, 1, B));
	assert_int_equal(atomic_load(&bstate(s2, 1, C)->refs), 2);

	dp_snapshot_put(s1);
	assert_int_equal(atomic_load(&blocked2->st->refs), 1);
	assert_int_equal(atomic_load(&web2->socks->refs), 1);
	assert_true(port_in_use(pb));
	dp_snapshot_put(s2);
	assert_false(port_in_use(p1));
	assert_false(port_in_use(pb));
	assert_int_equal(count_fds(), nfd - N_WORKERS); /* web's, open when nfd was taken */
}

/*
 * A managed listener moved to an address that is held is in force without sockets, not left
 * serving its old address: the old sockets close with the last snapshot that had them.
 */
static void test_managed_moved_to_held_address(void **state)
{
	unsigned p1 = free_port(), pb = free_port();
	struct dp_snapshot *s1, *s2;
	int blocker;

	s1 = build_ok(managed_of("web", p1, A, NULL, 0, NULL), NULL, 1);
	blocker = plain_listen(pb);
	assert_true(blocker >= 0);
	s2 = build_ok(managed_of("web", pb, A, NULL, 0, NULL), s1, 2);
	assert_null(s2->listeners[0].socks);
	assert_int_equal(s2->listeners[0].bind_err, -EADDRINUSE);
	assert_int_equal(atomic_load(&s1->listeners[0].socks->refs), 1); /* not shared */
	assert_ptr_equal(s2->listeners[0].st, s1->listeners[0].st);     /* same name */
	assert_ptr_equal(bstate(s2, 0, A), bstate(s1, 0, A));
	dp_snapshot_put(s1);
	assert_false(port_in_use(p1));
	close(blocker);
	dp_snapshot_put(s2);
	assert_false(port_in_use(pb));
}

/* The configuration file's listeners stay all-or-nothing, next to managed ones too. */
static void test_file_listener_bind_failure_still_fails(void **state)
{
	unsigned p1 = free_port(), pb = free_port();
	struct lb_config *c;
	char where[64];
	unsigned nfd;
	int blocker;

	blocker = plain_listen(pb);
	assert_true(blocker >= 0);
	snprintf(where, sizeof(where), "127.0.0.1:%u", pb);
	nfd = count_fds();
	c = managed_of("web", p1, A, "file", pb, B);
	c->listeners[1].managed = false; /* as lb_config_merge gives a file listener */
	expect_build_error(c, NULL, "listener file", where);
	assert_int_equal(count_fds(), nfd);
	assert_false(port_in_use(p1));
	close(blocker);
}

/* A managed listener may have no backends: bound, no balancer input, and back again. */
/*
 * --reuseport-overlap (reuseport_overlap in the merged configuration): an address another
 * process's SO_REUSEPORT listener holds (here the test's own socket, same uid) is joined; without
 * it the build fails as at any start; a listener without SO_REUSEPORT is never joined.
 */
static void test_reuseport_overlap_joins(void **state)
{
	unsigned port = free_port();
	struct lb_addr a;
	struct dp_snapshot *s = NULL;
	char err[512] = "";
	struct lb_config *conf;
	int theirs, plain;

	(void)state;
	assert_int_equal(lb_addr_parse("127.0.0.1:0", true, &a, err, sizeof(err)), 0);
	((struct sockaddr_in *)&a.ss)->sin_port = htons(port);
	assert_int_equal(dp_listen_socket(&a, LB_PROTO_TCP, &theirs), 0);

	conf = conf_of("web", port, "10.0.0.1:80", NULL, 0, NULL);
	assert_int_equal(dp_snapshot_build(conf, NULL, NULL, N_WORKERS, 1, &s, err, sizeof(err)),
			 -EADDRINUSE);
	assert_non_null(strstr(err, "Address already in use"));

	conf = conf_of("web", port, "10.0.0.1:80", NULL, 0, NULL);
	conf->reuseport_overlap = true;
	s = build_ok(conf, NULL, 1);
	assert_int_equal(s->listeners[0].socks->n, N_WORKERS);
	dp_snapshot_put(s);
	close(theirs);

	port = free_port();
	plain = plain_listen(port);
	assert_true(plain >= 0);
	conf = conf_of("web", port, "10.0.0.1:80", NULL, 0, NULL);
	conf->reuseport_overlap = true;
	assert_int_equal(dp_snapshot_build(conf, NULL, NULL, N_WORKERS, 1, &s, err, sizeof(err)),
			 -EADDRINUSE);
	close(plain);
}

static void test_listener_without_backends(void **state)
{
	unsigned port = free_port();
	struct dp_snapshot *s1, *s2, *s3;

	s1 = build_ok(managed_of("empty", port, "", NULL, 0, NULL), NULL, 1);
	assert_int_equal(s1->listeners[0].n_backends, 0);
	assert_null(s1->listeners[0].backends);
	assert_listening(s1->listeners[0].socks, port);
	assert_accepts(s1->listeners[0].socks, port);
	dp_snapshot_publish(s1);

	s2 = build_ok(managed_of("empty", port, A "," B, NULL, 0, NULL), s1, 2);
	assert_int_equal(s2->listeners[0].n_backends, 2);
	assert_int_equal(atomic_load(&bstate(s2, 0, A)->refs), 1);
	assert_ptr_equal(s2->listeners[0].socks, s1->listeners[0].socks);
	dp_snapshot_publish(s2);

	s3 = build_ok(managed_of("empty", port, "", NULL, 0, NULL), s2, 3);
	assert_int_equal(s3->listeners[0].n_backends, 0);
	assert_ptr_equal(s3->listeners[0].st, s1->listeners[0].st);
	dp_snapshot_publish(s3);
	/* A and B are in no published snapshot now: their connections are drained. */
	assert_true(atomic_load(&bstate(s2, 0, A)->generation) < 3);
	dp_snapshot_put(s1);
	dp_snapshot_put(s2);
	assert_int_equal(atomic_load(&s3->listeners[0].socks->refs), 1);
	assert_true(port_in_use(port));
	dp_snapshot_put(s3);
	assert_false(port_in_use(port));
}

static void test_publish_generations(void **state)
{
	unsigned port = free_port();
	struct dp_snapshot *s1, *s2;
	struct dp_bstate *a, *b, *c;

	s1 = build_ok(conf_of("web", port, A "," B, NULL, 0, NULL), NULL, 1);
	dp_snapshot_publish(s1);
	a = bstate(s1, 0, A);
	b = bstate(s1, 0, B);
	assert_true(atomic_load(&dp_generation_published) == 1);
	assert_true(atomic_load(&a->generation) == 1);
	assert_true(atomic_load(&b->generation) == 1);

	s2 = build_ok(conf_of("web", port, B "," C, NULL, 0, NULL), s1, 2);
	/* Building is not publishing. */
	assert_true(atomic_load(&dp_generation_published) == 1);
	assert_true(atomic_load(&b->generation) == 1);
	dp_snapshot_publish(s2);
	c = bstate(s2, 0, C);
	assert_true(atomic_load(&dp_generation_published) == 2);
	/* A is in s1 only: older than published, so its connections are drained. */
	assert_true(atomic_load(&a->generation) < atomic_load(&dp_generation_published));
	assert_true(atomic_load(&b->generation) == 2);
	assert_true(atomic_load(&c->generation) == 2);
	dp_snapshot_put(s1);
	dp_snapshot_put(s2);
}

static void test_get_put(void **state)
{
	unsigned port = free_port();
	struct dp_snapshot *s;

	s = build_ok(conf_of("web", port, A, NULL, 0, NULL), NULL, 1);
	dp_snapshot_get(s);
	assert_int_equal(atomic_load(&s->refs), 2);
	dp_snapshot_put(s);
	assert_int_equal(atomic_load(&s->refs), 1);
	assert_true(port_in_use(port));
	assert_string_equal(s->listeners[0].backends[0].name, A);
	dp_snapshot_put(s);
	assert_false(port_in_use(port));
	dp_snapshot_put(NULL);
	dp_lsocks_put(NULL);
	dp_bstate_put(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_snapshot),
		cmocka_unit_test(test_reload_shares),
		cmocka_unit_test(test_listen_address_change),
		cmocka_unit_test(test_rename_and_swap),
		cmocka_unit_test(test_bind_failure),
		cmocka_unit_test(test_bind_failure_on_reload),
		cmocka_unit_test(test_managed_bind_failure_keeps_the_rest),
		cmocka_unit_test(test_managed_moved_to_held_address),
		cmocka_unit_test(test_file_listener_bind_failure_still_fails),
		cmocka_unit_test(test_listener_without_backends),
		cmocka_unit_test(test_reuseport_overlap_joins),
		cmocka_unit_test(test_publish_generations),
		cmocka_unit_test(test_get_put),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
