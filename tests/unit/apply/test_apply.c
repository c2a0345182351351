/* test_apply.c - applies to a plane without worker threads: binds, replies, status, metrics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/ctlproto.h"
#include "dataplane/plane.h"
#include "tests/unit/plane_pump.h"

/*
 * The plane runs here with no worker threads (its workers are never started): a commit builds
 * and publishes snapshots as it does for real, and the control socket is served by one pass of
 * the main loop at a time, so every reply, status and metrics text can be checked exactly,
 * together with the descriptors the process holds.
 */

#define N_WORKERS 2

struct harness {
	struct dp_plane p;
	char dir[64];
	char path[LB_PATH_MAX];
	unsigned fport; /* the file listener's */
};

static unsigned free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	close(fd);
	return ntohs(sin.sin_port);
}

/* Another process's socket on 127.0.0.1:port, as far as the dataplane can tell. */
static int hold_port(unsigned port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 1), 0);
	return fd;
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

static int parse_file(const char *text, struct lb_config **ret)
{
	char err[512];

	return lb_config_parse(text, strlen(text), "lb.yaml", ret, err, sizeof(err));
}

static int setup(void **state)
{
	struct harness *h = calloc(1, sizeof(*h));
	struct lb_config *conf = NULL;
	char text[256], err[512];

	assert_non_null(h);
	h->p.epfd = epoll_create1(EPOLL_CLOEXEC);
	h->p.sig.fd = -1;
	h->p.n_workers = N_WORKERS;
	h->p.engine = &dp_engine_epoll;
	/* Workers that never run: each is handed every snapshot, and its wake-up goes nowhere. */
	h->p.workers = calloc(N_WORKERS, sizeof(*h->p.workers));
	assert_non_null(h->p.workers);
	for (unsigned i = 0; i < N_WORKERS; i++)
		h->p.workers[i].efd = -1;
	assert_true(h->p.epfd >= 0);
	h->fport = free_port();
	snprintf(text, sizeof(text),
		 "listeners: [{name: file, listen: 127.0.0.1:%u, backends: [{address: "
		 "10.0.0.1:80}]}]\n",
		 h->fport);
	if (lb_config_parse(text, strlen(text), "lb.yaml", &conf, err, sizeof(err)))
		fail_msg("config: %s", err);
	if (dp_plane_commit(&h->p, conf, NULL, err, sizeof(err)))
		fail_msg("commit: %s", err);
	snprintf(h->dir, sizeof(h->dir), "/tmp/lb-apply-test-XXXXXX");
	assert_non_null(mkdtemp(h->dir));
	snprintf(h->path, sizeof(h->path), "%s/ctl.sock", h->dir);
	if (dp_control_open(&h->p, h->path, "", -1, err, sizeof(err)))
		fail_msg("dp_control_open: %s", err);
	*state = h;
	return 0;
}

static int teardown(void **state)
{
	struct harness *h = *state;

	dp_plane_close(&h->p); /* the control socket, the snapshot, both configurations */
	rmdir(h->dir);
	free(h);
	return 0;
}

/* One request on a fresh connection, the plane pumped until the reply is in. */
static cJSON *call(struct harness *h, const char *req)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[65536];
	size_t len = 0;
	cJSON *reply;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", h->path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	plane_pump(&h->p);
	assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
	assert_int_equal(send(fd, "\n", 1, MSG_NOSIGNAL), 1);
	for (unsigned i = 0; i < 100000 && !memchr(buf, '\n', len); i++) {
		ssize_t n;

		plane_pump(&h->p);
		n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
		if (n > 0)
			len += (size_t)n;
		else
			assert_true(n == -1 && errno == EAGAIN);
	}
	close(fd);
	plane_pump(&h->p); /* the server sees the hang-up and frees the client */
	assert_non_null(memchr(buf, '\n', len));
	reply = cJSON_ParseWithLength(buf, len);
	if (!reply)
		fail_msg("reply is not JSON: %.*s", (int)len, buf);
	return reply;
}

/* An apply of managed listeners given as ",{...}" fragments after the first. */
static cJSON *apply(struct harness *h, unsigned version, const char *listeners)
{
	char *req;
	cJSON *reply;

	assert_true(asprintf(&req, "{\"op\":\"apply\",\"version\":%u,\"listeners\":[%s]}", version,
			     listeners) > 0);
	reply = call(h, req);
	free(req);
	return reply;
}

static const cJSON *get(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!v)
		fail_msg("no \"%s\" in %s", key, cJSON_PrintUnformatted(o));
	return v;
}

static const cJSON *status_listener(const cJSON *st, const char *name)
{
	const cJSON *l;

	cJSON_ArrayForEach(l, get(st, "listeners"))
		if (!strcmp(get(l, "name")->valuestring, name))
			return l;
	fail_msg("no listener %s in the status", name);
	return NULL;
}

static bool metrics_have(struct harness *h, const char *line)
{
	size_t len;
	char *text = dp_metrics_text(&h->p, &len), *hit;

	assert_non_null(text);
	hit = strstr(text, line);
	free(text);
	return hit != NULL;
}

static void assert_ok_apply(const cJSON *reply, unsigned version)
{
	assert_true(cJSON_IsTrue(get(reply, "ok")));
	assert_string_equal(get(reply, "op")->valuestring, "apply");
	assert_int_equal(get(reply, "version")->valueint, version);
	assert_true(cJSON_IsObject(get(reply, "changes")));
	assert_true(cJSON_IsArray(get(reply, "bind_failures"))); /* always there */
}

/*
 * The example of the brief: one of two listeners cannot bind.  The apply succeeds, the reply
 * names the one left out and why, status and metrics show it unbound, and the same apply
 * after the port is freed binds it.
 */
static void test_bind_failure_is_per_listener(void **state)
{
	struct harness *h = *state;
	unsigned p1 = free_port(), pb = free_port(), nfd;
	int blocker = hold_port(pb);
	char ls[512], want[128], line[192];
	const cJSON *bf, *f, *l, *b;
	cJSON *reply, *st;

	snprintf(ls, sizeof(ls),
		 "{\"name\":\"ns/web/http\",\"listen\":\"127.0.0.1:%u\",\"backends\":[{\"address\":"
		 "\"10.0.0.2:80\"}]},{\"name\":\"ns/db/pg\",\"listen\":\"127.0.0.1:%u\","
		 "\"algorithm\":\"maglev\",\"backends\":[{\"address\":\"10.0.0.3:5432\"},"
		 "{\"address\":\"10.0.0.4:5432\",\"weight\":2}]}",
		 p1, pb);
	nfd = count_fds();
	reply = apply(h, 9, ls);
	assert_ok_apply(reply, 9);
	assert_int_equal(get(get(reply, "changes"), "listeners_added")->valueint, 2);
	bf = get(reply, "bind_failures");
	assert_int_equal(cJSON_GetArraySize(bf), 1);
	f = cJSON_GetArrayItem(bf, 0);
	assert_int_equal(cJSON_GetArraySize(f), 3); /* name, listen, error: nothing else */
	assert_string_equal(get(f, "name")->valuestring, "ns/db/pg");
	snprintf(want, sizeof(want), "127.0.0.1:%u", pb);
	assert_string_equal(get(f, "listen")->valuestring, want);
	snprintf(want, sizeof(want), "cannot listen on 127.0.0.1:%u: Address already in use", pb);
	assert_string_equal(get(f, "error")->valuestring, want);
	cJSON_Delete(reply);
	/* Only the bound listener's sockets, one per worker. */
	assert_int_equal(count_fds(), nfd + N_WORKERS);
	assert_true(h->p.applied && h->p.applied_version == 9 && h->p.applies_ok == 1);

	st = call(h, "{\"op\":\"status\"}");
	l = status_listener(st, "ns/web/http");
	assert_true(cJSON_IsTrue(get(l, "bound")));
	assert_null(cJSON_GetObjectItemCaseSensitive(l, "bind_error"));
	assert_true(cJSON_IsTrue(get(status_listener(st, "file"), "bound")));
	l = status_listener(st, "ns/db/pg");
	assert_true(cJSON_IsFalse(get(l, "bound")));
	assert_string_equal(get(l, "bind_error")->valuestring, want);
	assert_true(cJSON_IsTrue(get(l, "managed")));
	assert_int_equal(get(l, "accepted")->valueint, 0);
	assert_int_equal(get(l, "active")->valueint, 0);
	assert_int_equal(cJSON_GetArraySize(get(l, "backends")), 2);
	b = cJSON_GetArrayItem(get(l, "backends"), 1);
	assert_string_equal(get(b, "address")->valuestring, "10.0.0.4:5432");
	assert_int_equal(get(b, "weight")->valueint, 2);
	assert_int_equal(get(b, "connections")->valueint, 0);
	cJSON_Delete(st);
	assert_true(metrics_have(h, "\nlayer4lb_listener_bound{listener=\"ns/db/pg\"} 0\n"));
	assert_true(metrics_have(h, "\nlayer4lb_listener_bound{listener=\"ns/web/http\"} 1\n"));
	assert_true(metrics_have(h, "\nlayer4lb_listener_bound{listener=\"file\"} 1\n"));
	assert_true(metrics_have(h, "# TYPE layer4lb_listener_bound gauge\n"));

	/* The other process lets go: the very same apply binds it. */
	close(blocker);
	nfd = count_fds();
	reply = apply(h, 10, ls);
	assert_ok_apply(reply, 10);
	assert_int_equal(cJSON_GetArraySize(get(reply, "bind_failures")), 0);
	assert_int_equal(get(get(reply, "changes"), "listeners_unchanged")->valueint, 2);
	cJSON_Delete(reply);
	assert_int_equal(count_fds(), nfd + N_WORKERS);
	snprintf(line, sizeof(line), "\nlayer4lb_listener_bound{listener=\"ns/db/pg\"} 1\n");
	assert_true(metrics_have(h, line));
	st = call(h, "{\"op\":\"status\"}");
	l = status_listener(st, "ns/db/pg");
	assert_true(cJSON_IsTrue(get(l, "bound")));
	assert_null(cJSON_GetObjectItemCaseSensitive(l, "bind_error"));
	cJSON_Delete(st);

	/* Removing them closes both addresses' sockets. */
	reply = apply(h, 11, "");
	assert_ok_apply(reply, 11);
	cJSON_Delete(reply);
	assert_int_equal(count_fds(), nfd - N_WORKERS);
}

/* Validation stays atomic: an invalid apply changes nothing, held port or not. */
static void test_invalid_apply_changes_nothing(void **state)
{
	struct harness *h = *state;
	unsigned p1 = free_port(), pb = free_port(), nfd;
	int blocker = hold_port(pb);
	struct dp_snapshot *before;
	char ls[512];
	cJSON *reply;

	reply = apply(h, 1, "");
	cJSON_Delete(reply);
	before = h->p.snap;
	nfd = count_fds();
	/* A listener on the file listener's address, next to a good one and a held one. */
	snprintf(ls, sizeof(ls),
		 "{\"name\":\"a\",\"listen\":\"127.0.0.1:%u\",\"backends\":[]},"
		 "{\"name\":\"b\",\"listen\":\"127.0.0.1:%u\",\"backends\":[]},"
		 "{\"name\":\"c\",\"listen\":\"127.0.0.1:%u\",\"backends\":[]}",
		 p1, pb, h->fport);
	reply = apply(h, 2, ls);
	assert_false(cJSON_IsTrue(get(reply, "ok")));
	assert_non_null(strstr(get(reply, "error")->valuestring, "config file listener \"file\""));
	assert_null(cJSON_GetObjectItemCaseSensitive(reply, "bind_failures"));
	cJSON_Delete(reply);
	/* Two of the apply on one address. */
	snprintf(ls, sizeof(ls),
		 "{\"name\":\"a\",\"listen\":\"127.0.0.1:%u\",\"backends\":[]},"
		 "{\"name\":\"b\",\"listen\":\"127.0.0.1:%u\",\"backends\":[]}",
		 p1, p1);
	reply = apply(h, 3, ls);
	assert_false(cJSON_IsTrue(get(reply, "ok")));
	cJSON_Delete(reply);
	assert_ptr_equal(h->p.snap, before);
	assert_int_equal(count_fds(), nfd);
	assert_true(h->p.applied_version == 1 && h->p.applies_failed == 2);
	close(blocker);
}

/*
 * A listener with no backends (a Service without ready endpoints) binds its port; the
 * balancer has nothing to pick, which the workers turn into closing each connection.
 */
static void test_listener_without_backends(void **state)
{
	struct harness *h = *state;
	unsigned p1 = free_port();
	const cJSON *l;
	char ls[256];
	cJSON *reply, *st;

	snprintf(ls, sizeof(ls),
		 "{\"name\":\"empty\",\"listen\":\"127.0.0.1:%u\",\"algorithm\":\"maglev\","
		 "\"backends\":[],\"health_check\":{}}",
		 p1);
	reply = apply(h, 1, ls);
	assert_ok_apply(reply, 1);
	assert_int_equal(cJSON_GetArraySize(get(reply, "bind_failures")), 0);
	assert_int_equal(get(get(reply, "changes"), "backends_added")->valueint, 0);
	cJSON_Delete(reply);
	st = call(h, "{\"op\":\"status\"}");
	l = status_listener(st, "empty");
	assert_true(cJSON_IsTrue(get(l, "bound")));
	assert_int_equal(cJSON_GetArraySize(get(l, "backends")), 0);
	cJSON_Delete(st);
	assert_true(metrics_have(h, "\nlayer4lb_listener_bound{listener=\"empty\"} 1\n"));

	/* Endpoints come and go again. */
	snprintf(ls, sizeof(ls),
		 "{\"name\":\"empty\",\"listen\":\"127.0.0.1:%u\",\"algorithm\":\"maglev\","
		 "\"backends\":[{\"address\":\"10.0.0.9:80\"}],\"health_check\":{}}",
		 p1);
	reply = apply(h, 2, ls);
	assert_int_equal(get(get(reply, "changes"), "backends_added")->valueint, 1);
	cJSON_Delete(reply);
	snprintf(ls, sizeof(ls), "{\"name\":\"empty\",\"listen\":\"127.0.0.1:%u\",\"backends\":[]}",
		 p1);
	reply = apply(h, 3, ls);
	assert_ok_apply(reply, 3);
	assert_int_equal(get(get(reply, "changes"), "backends_removed")->valueint, 1);
	cJSON_Delete(reply);
	assert_int_equal(h->p.snap->listeners[1].n_backends, 0);
	assert_non_null(h->p.snap->listeners[1].socks);
}

/*
 * A reload (a commit of a new file) tries an unbound managed listener again too, and keeps it
 * in force while it still cannot bind; a file listener that cannot bind still refuses it.
 */
static void test_reload_retries_managed(void **state)
{
	struct harness *h = *state;
	unsigned pb = free_port(), pf = free_port();
	int blocker = hold_port(pb), fblocker = hold_port(pf);
	struct lb_config *conf = NULL;
	struct dp_snapshot *before;
	char text[256], err[512];
	cJSON *reply;

	snprintf(text, sizeof(text), "{\"name\":\"m\",\"listen\":\"127.0.0.1:%u\",\"backends\":[]}",
		 pb);
	reply = apply(h, 1, text);
	assert_int_equal(cJSON_GetArraySize(get(reply, "bind_failures")), 1);
	cJSON_Delete(reply);

	snprintf(text, sizeof(text),
		 "listeners: [{name: file, listen: 127.0.0.1:%u, backends: [{address: "
		 "10.0.0.5:80}]}]\n",
		 h->fport);
	assert_int_equal(parse_file(text, &conf), 0);
	assert_int_equal(dp_plane_commit(&h->p, conf, NULL, err, sizeof(err)), 0);
	assert_string_equal(h->p.snap->listeners[1].conf->name, "m");
	assert_null(h->p.snap->listeners[1].socks);

	/* A file listener that cannot bind: refused, as before. */
	before = h->p.snap;
	snprintf(text, sizeof(text),
		 "listeners: [{name: other, listen: 127.0.0.1:%u, backends: [{address: "
		 "10.0.0.5:80}]}]\n",
		 pf);
	assert_int_equal(parse_file(text, &conf), 0);
	assert_int_equal(dp_plane_commit(&h->p, conf, NULL, err, sizeof(err)), -EADDRINUSE);
	assert_non_null(strstr(err, "listener other: cannot listen on"));
	lb_config_free(conf);
	assert_ptr_equal(h->p.snap, before);

	close(blocker);
	snprintf(text, sizeof(text),
		 "listeners: [{name: file, listen: 127.0.0.1:%u, backends: [{address: "
		 "10.0.0.5:80}]}]\n",
		 h->fport);
	assert_int_equal(parse_file(text, &conf), 0);
	assert_int_equal(dp_plane_commit(&h->p, conf, NULL, err, sizeof(err)), 0);
	assert_non_null(h->p.snap->listeners[1].socks);
	close(fblocker);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bind_failure_is_per_listener, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_invalid_apply_changes_nothing, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_listener_without_backends, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_retries_managed, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
