/* test_ctlclient.c - the control client against a scripted server thread on a temp Unix socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/ctlclient.h"
#include "common/ctlproto.h"

/*
 * Each test starts a server thread that accepts one connection and plays one script: reads
 * the request line (recording it), then answers in its own way.  The thread records what it
 * received, so a test can also check what was (not) sent.  Timeouts are hang guards only.
 */

enum script {
	S_REPLY,      /* answer in one write */
	S_SPLIT,      /* answer in pieces, a little apart */
	S_CLOSE,      /* read the request, close without a word */
	S_GARBAGE,    /* answer with a line that is not JSON */
	S_NOT_OBJECT, /* answer with JSON that is not an object */
	S_SILENT,     /* read the request, then say nothing until the client gives up */
	S_REFUSE,     /* write a refusal at once and hang up without reading (too many clients) */
	S_DRAIN,      /* read until the client closes, answer nothing */
};

struct server {
	char dir[64];
	char path[LB_PATH_MAX];
	int lfd;
	enum script script;
	const char *reply;
	pthread_t thread;
	char got[256];  /* the first bytes received */
	size_t n_got;   /* every byte received */
};

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static void write_str(int fd, const char *s)
{
	size_t len = strlen(s);

	while (len) {
		ssize_t n = send(fd, s, len, MSG_NOSIGNAL);

		if (n <= 0)
			return; /* the client may be gone: that is the point of some scripts */
		s += n;
		len -= (size_t)n;
	}
}

/* Read until a newline (stop_at_line) or EOF, recording what came. */
static void read_request(struct server *sv, int fd, bool stop_at_line)
{
	char buf[65536];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
		if (sv->n_got < sizeof(sv->got) - 1) {
			size_t k = sizeof(sv->got) - 1 - sv->n_got;

			memcpy(sv->got + sv->n_got, buf, (size_t)n < k ? (size_t)n : k);
		}
		sv->n_got += (size_t)n;
		if (stop_at_line && memchr(buf, '\n', (size_t)n))
			return;
	}
}

static void *serve(void *arg)
{
	struct server *sv = arg;
	struct timeval tv = { .tv_sec = 10 };
	int fd = accept4(sv->lfd, NULL, NULL, SOCK_CLOEXEC);

	if (fd == -1)
		return NULL;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (sv->script == S_REFUSE) {
		write_str(fd, sv->reply);
		close(fd);
		return NULL;
	}
	read_request(sv, fd, sv->script != S_DRAIN && sv->script != S_SILENT);
	switch (sv->script) {
	case S_REPLY:
	case S_GARBAGE:
	case S_NOT_OBJECT:
		write_str(fd, sv->reply);
		break;
	case S_SPLIT:
		for (size_t off = 0, len = strlen(sv->reply); off < len; off += 7) {
			char piece[8];

			snprintf(piece, sizeof(piece), "%s", sv->reply + off);
			write_str(fd, piece);
			sleep_ms(5); /* each piece its own read on the other side */
		}
		break;
	default:
		break; /* S_CLOSE, S_DRAIN; S_SILENT read until the client closed */
	}
	close(fd);
	return NULL;
}

static struct server *server_start(enum script script, const char *reply)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct server *sv = calloc(1, sizeof(*sv));

	assert_non_null(sv);
	snprintf(sv->dir, sizeof(sv->dir), "/tmp/lb-ctlc-test-XXXXXX");
	assert_non_null(mkdtemp(sv->dir));
	snprintf(sv->path, sizeof(sv->path), "%s/ctl.sock", sv->dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sv->path);
	sv->script = script;
	sv->reply = reply;
	sv->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(sv->lfd >= 0);
	assert_int_equal(bind(sv->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(sv->lfd, 4), 0);
	assert_int_equal(pthread_create(&sv->thread, NULL, serve, sv), 0);
	return sv;
}

/* Wait for the script to end; the record (got, n_got) stays readable until server_free. */
static void server_join(struct server *sv)
{
	pthread_join(sv->thread, NULL);
}

static void server_free(struct server *sv)
{
	close(sv->lfd);
	unlink(sv->path);
	rmdir(sv->dir);
	free(sv);
}

static cJSON *ping(const char *id)
{
	cJSON *o = cJSON_CreateObject();

	assert_non_null(cJSON_AddStringToObject(o, "op", "ping"));
	if (id)
		assert_non_null(cJSON_AddStringToObject(o, "id", id));
	return o;
}

static const char *str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	assert_true(cJSON_IsString(v));
	return v->valuestring;
}

static void test_request_and_reply(void **state)
{
	struct server *sv = server_start(S_REPLY, "{\"ok\":true,\"op\":\"ping\",\"id\":\"x\"}\n");
	cJSON *req = ping("x"), *reply = NULL;
	int fd = lb_ctlc_connect(sv->path, 5000);

	assert_true(fd >= 0);
	assert_int_equal(lb_ctlc_call(fd, req, &reply), 0);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok")));
	assert_string_equal(str(reply, "op"), "ping");
	assert_string_equal(str(reply, "id"), "x");
	close(fd);
	server_join(sv);
	/* One line, exactly the request; req is still the caller's (used again below). */
	assert_string_equal(sv->got, "{\"op\":\"ping\",\"id\":\"x\"}\n");
	assert_int_equal(sv->n_got, strlen(sv->got));
	assert_string_equal(str(req, "id"), "x");
	cJSON_Delete(reply);
	cJSON_Delete(req);
	server_free(sv);
}

/* Integers above 2^53 stay exact on the way out: the request is sent as its own text. */
static void test_call_once_sends_raw_numbers(void **state)
{
	struct server *sv = server_start(S_REPLY, "{\"ok\":true,\"op\":\"apply\"}\r\n");
	cJSON *req = cJSON_CreateObject(), *reply = NULL;

	assert_non_null(cJSON_AddStringToObject(req, "op", "apply"));
	assert_non_null(lb_json_add_u64(req, "version", LB_CTL_VERSION_MAX));
	assert_non_null(cJSON_AddArrayToObject(req, "listeners"));
	assert_int_equal(lb_ctlc_call_once(sv->path, 5000, req, &reply), 0);
	assert_string_equal(str(reply, "op"), "apply");
	server_join(sv);
	assert_string_equal(sv->got,
			    "{\"op\":\"apply\",\"version\":9007199254740991,\"listeners\":[]}\n");
	cJSON_Delete(reply);
	cJSON_Delete(req);
	server_free(sv);
}

/* A reply that arrives in pieces (a large status does) is put together. */
static void test_reply_split_across_writes(void **state)
{
	static const char reply_text[] =
		"{\"ok\":true,\"op\":\"status\",\"listeners\":[{\"name\":\"web\",\"backends\":[]}]}\n";
	struct server *sv = server_start(S_SPLIT, reply_text);
	cJSON *req = ping(NULL), *reply = NULL;
	const cJSON *ls;

	assert_int_equal(lb_ctlc_call_once(sv->path, 5000, req, &reply), 0);
	assert_string_equal(str(reply, "op"), "status");
	ls = cJSON_GetObjectItemCaseSensitive(reply, "listeners");
	assert_int_equal(cJSON_GetArraySize(ls), 1);
	assert_string_equal(str(cJSON_GetArrayItem(ls, 0), "name"), "web");
	server_join(sv);
	cJSON_Delete(reply);
	cJSON_Delete(req);
	server_free(sv);
}

static void test_peer_closes_without_reply(void **state)
{
	struct server *sv = server_start(S_CLOSE, NULL);
	cJSON *req = ping("gone"), *reply = &(cJSON){ 0 }, *untouched = reply;

	assert_int_equal(lb_ctlc_call_once(sv->path, 5000, req, &reply), -ECONNRESET);
	assert_ptr_equal(reply, untouched);
	server_join(sv);
	assert_true(sv->n_got > 0); /* it was sent; only the answer is missing */
	cJSON_Delete(req);
	server_free(sv);
}

static void test_reply_not_json(void **state)
{
	struct server *sv = server_start(S_GARBAGE, "hello, I am not JSON\n");
	cJSON *req = ping(NULL), *reply = NULL;

	assert_int_equal(lb_ctlc_call_once(sv->path, 5000, req, &reply), -EBADMSG);
	assert_null(reply);
	server_join(sv);
	server_free(sv);

	/* JSON, but not the object every reply is; and an object with text after it. */
	sv = server_start(S_NOT_OBJECT, "[true]\n");
	assert_int_equal(lb_ctlc_call_once(sv->path, 5000, req, &reply), -EBADMSG);
	server_join(sv);
	server_free(sv);
	sv = server_start(S_NOT_OBJECT, "{\"ok\":true} {\"ok\":false}\n");
	assert_int_equal(lb_ctlc_call_once(sv->path, 5000, req, &reply), -EBADMSG);
	assert_null(reply);
	server_join(sv);
	server_free(sv);
	cJSON_Delete(req);
}

/* A ping whose line (JSON and newline) is exactly len bytes. */
static cJSON *ping_of_line_len(size_t len)
{
	static const size_t frame = sizeof("{\"op\":\"ping\",\"id\":\"\"}\n") - 1;
	cJSON *req = ping(NULL);
	char *id = malloc(len - frame + 1);

	assert_non_null(id);
	memset(id, 'x', len - frame);
	id[len - frame] = '\0';
	assert_non_null(cJSON_AddStringToObject(req, "id", id));
	free(id);
	return req;
}

/* A request the dataplane would refuse unread is refused here, and not a byte goes out. */
static void test_oversized_request_not_sent(void **state)
{
	struct server *sv = server_start(S_DRAIN, NULL);
	cJSON *req = ping_of_line_len(LB_CTL_LINE_MAX + 1), *reply = NULL, *small = ping(NULL);
	int fd;

	fd = lb_ctlc_connect(sv->path, 5000);
	assert_true(fd >= 0);
	assert_int_equal(lb_ctlc_call(fd, req, &reply), -EMSGSIZE);
	assert_null(reply);
	close(fd);
	server_join(sv);
	assert_int_equal(sv->n_got, 0);
	server_free(sv);

	/* call_once does not even connect: nobody listens at this path. */
	assert_int_equal(lb_ctlc_call_once("/nonexistent/ctl.sock", 5000, req, &reply), -EMSGSIZE);
	assert_int_equal(lb_ctlc_call_once("/nonexistent/ctl.sock", 5000, small, &reply), -ENOENT);
	assert_null(reply);
	cJSON_Delete(small);
	cJSON_Delete(req);
}

/* The limit counts the newline, as the dataplane does: a line of exactly 8 MiB goes. */
static void test_request_at_the_limit_is_sent(void **state)
{
	struct server *sv = server_start(S_REPLY, "{\"ok\":true,\"op\":\"ping\"}\n");
	cJSON *req = ping_of_line_len(LB_CTL_LINE_MAX), *reply = NULL;

	assert_int_equal(lb_ctlc_call_once(sv->path, 10000, req, &reply), 0);
	server_join(sv);
	assert_int_equal(sv->n_got, LB_CTL_LINE_MAX);
	cJSON_Delete(reply);
	cJSON_Delete(req);
	server_free(sv);
}

/* A server that never answers: the call gives up after timeout_ms (a hang guard here). */
static void test_timeout(void **state)
{
	struct server *sv = server_start(S_SILENT, NULL);
	cJSON *req = ping("slow"), *reply = NULL;
	int fd = lb_ctlc_connect(sv->path, 100);

	assert_true(fd >= 0);
	assert_int_equal(lb_ctlc_call(fd, req, &reply), -ETIMEDOUT);
	assert_null(reply);
	close(fd); /* the server reads to EOF and ends */
	server_join(sv);
	assert_true(sv->n_got > 0);
	server_free(sv);
	cJSON_Delete(req);
}

/* Too many clients, another uid: the dataplane writes why and hangs up; that is the reply. */
static void test_early_hangup_reply_is_returned(void **state)
{
	struct server *sv = server_start(S_REFUSE, "{\"ok\":false,\"error\":\"too many control "
						   "connections\"}\n");
	cJSON *req = ping(NULL), *reply = NULL;
	int fd = lb_ctlc_connect(sv->path, 5000);

	assert_true(fd >= 0);
	server_join(sv); /* refused and closed before anything was sent */
	assert_int_equal(lb_ctlc_call(fd, req, &reply), 0);
	assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok")));
	assert_string_equal(str(reply, "error"), "too many control connections");
	close(fd);
	cJSON_Delete(reply);
	cJSON_Delete(req);
	server_free(sv);
}

static void test_connect_errors(void **state)
{
	char longpath[200];
	int fd;

	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(lb_ctlc_connect(longpath, 1000), -ENAMETOOLONG);
	assert_int_equal(lb_ctlc_connect("/nonexistent/ctl.sock", 1000), -ENOENT);
	fd = lb_ctlc_connect("/", 1000); /* not a socket */
	assert_true(fd < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_and_reply),
		cmocka_unit_test(test_call_once_sends_raw_numbers),
		cmocka_unit_test(test_reply_split_across_writes),
		cmocka_unit_test(test_peer_closes_without_reply),
		cmocka_unit_test(test_reply_not_json),
		cmocka_unit_test(test_oversized_request_not_sent),
		cmocka_unit_test(test_request_at_the_limit_is_sent),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_early_hangup_reply_is_returned),
		cmocka_unit_test(test_connect_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
