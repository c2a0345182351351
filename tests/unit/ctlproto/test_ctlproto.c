/* test_ctlproto.c - control requests: every refusal and its message, good requests, reply lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/ctlproto.h"

/* A valid listener, as JSON, for building apply requests. */
#define LSN(name, listen, backend)                                                                 \
	"{\"name\":\"" name "\",\"listen\":\"" listen "\",\"backends\":[{\"address\":\"" backend \
	"\"}]}"

static struct lb_config untouched;

static struct lb_ctl_request parse_ok(const char *line)
{
	struct lb_ctl_request r;
	char err[512] = "";
	int ret;

	ret = lb_ctl_request_parse(line, strlen(line), &r, err, sizeof(err));
	if (ret != 0)
		fail_msg("unexpected error %d: %s\n--- input: %s", ret, err, line);
	return r;
}

/*
 * Parsing must fail with -EINVAL and a message containing every needle (the whole message when
 * exact), leaving ret owning nothing.  Returns what was filled in for the error reply.
 */
static struct lb_ctl_request expect_bad(const char *line, const char *exact, const char *n1,
					const char *n2)
{
	struct lb_ctl_request r;
	char err[512] = "";
	int ret;

	memset(&r, 0x5a, sizeof(r));
	r.listeners = &untouched;
	ret = lb_ctl_request_parse(line, strlen(line), &r, err, sizeof(err));
	if (ret != -EINVAL)
		fail_msg("want -EINVAL, got %d (%s)\n--- input: %s", ret, err, line);
	assert_null(r.listeners);
	if (exact && strcmp(err, exact))
		fail_msg("want '%s', got '%s'\n--- input: %s", exact, err, line);
	if (n1 && !strstr(err, n1))
		fail_msg("want '%s' in '%s'\n--- input: %s", n1, err, line);
	if (n2 && !strstr(err, n2))
		fail_msg("want '%s' in '%s'\n--- input: %s", n2, err, line);
	return r;
}

static void test_malformed(void **state)
{
	struct lb_ctl_request r;

	r = expect_bad("{\"op\":", "malformed JSON", NULL, NULL);
	assert_int_equal(r.op, (enum lb_ctl_op)-1);
	assert_string_equal(r.id, "");
	expect_bad("", "malformed JSON", NULL, NULL);
	expect_bad("op=ping", "malformed JSON", NULL, NULL);
	expect_bad("{'op':'ping'}", "malformed JSON", NULL, NULL);
}

/* The length is the line: a valid object cut short is malformed. */
static void test_malformed_cut_by_len(void **state)
{
	const char *line = "{\"op\":\"ping\"}";
	struct lb_ctl_request r;
	char err[128] = "";

	assert_int_equal(lb_ctl_request_parse(line, strlen(line) - 1, &r, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "malformed JSON");
	assert_null(r.listeners);
}

/* Text after the object is not part of one request: it must not be silently dropped. */
static void test_trailing_garbage(void **state)
{
	expect_bad("{\"op\":\"ping\"} x", "malformed JSON: text after the object", NULL, NULL);
	expect_bad("{\"op\":\"ping\"}{\"op\":\"apply\"}", "malformed JSON: text after the object",
		   NULL, NULL);
}

/* JSON types that the YAML-based listener parser could not tell apart must be refused here. */
static void test_listener_json_types(void **state)
{
	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[{\"name\":true,"
		   "\"listen\":\"127.0.0.1:8080\",\"backends\":[{\"address\":\"10.0.0.1:80\"}]}]}",
		   "listeners[0].name: must be a string", NULL, NULL);
	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[{\"name\":\"a\","
		   "\"listen\":\"127.0.0.1:8080\",\"proxy_protocol\":false,"
		   "\"backends\":[{\"address\":\"10.0.0.1:80\"}]}]}",
		   "listeners[0].proxy_protocol: must be a string", NULL, NULL);
	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[{\"name\":\"a\","
		   "\"listen\":\"127.0.0.1:8080\",\"backends\":[{\"address\":\"10.0.0.1:80\","
		   "\"weight\":null}]}]}",
		   "listeners[0].backends[0].weight: must be a number", NULL, NULL);
	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[{\"name\":\"a\","
		   "\"listen\":\"127.0.0.1:8080\",\"health_check\":null,"
		   "\"backends\":[{\"address\":\"10.0.0.1:80\"}]}]}",
		   "listeners[0].health_check: must be an object", NULL, NULL);
	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[{\"name\":\"a\",\"name\":\"b\","
		   "\"listen\":\"127.0.0.1:8080\",\"backends\":[{\"address\":\"10.0.0.1:80\"}]}]}",
		   "listeners[0].name: given twice", NULL, NULL);
	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[7]}",
		   "listeners[0]: must be an object", NULL, NULL);
}

/* JSON allows a repeated key; only the first would be read, so the second must be refused. */
static void test_duplicate_field(void **state)
{
	expect_bad("{\"op\":\"ping\",\"op\":\"apply\"}", NULL, "\"op\"", NULL);
	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[],\"listeners\":[" LSN(
			   "web", "127.0.0.1:8080", "10.0.0.1:80") "]}",
		   NULL, "\"listeners\"", NULL);
}

static void test_not_an_object(void **state)
{
	static const char *const lines[] = { "[]", "[{\"op\":\"ping\"}]", "\"ping\"", "42",
					     "null", "true" };

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		expect_bad(lines[i], "a request must be a JSON object", NULL, NULL);
}

static void test_op(void **state)
{
	struct lb_ctl_request r;

	expect_bad("{}", "missing field \"op\"", NULL, NULL);
	expect_bad("{\"id\":\"a\"}", "missing field \"op\"", NULL, NULL);
	expect_bad("{\"OP\":\"ping\"}", "missing field \"op\"", NULL, NULL);
	expect_bad("{\"op\":1}", "\"op\" must be a string", NULL, NULL);
	expect_bad("{\"op\":null}", "\"op\" must be a string", NULL, NULL);
	expect_bad("{\"op\":[\"ping\"]}", "\"op\" must be a string", NULL, NULL);
	expect_bad("{\"op\":\"reload\"}",
		   "unknown op \"reload\" (expected ping, status or apply)", NULL, NULL);
	expect_bad("{\"op\":\"PING\"}", NULL, "unknown op \"PING\"", NULL);
	expect_bad("{\"op\":\"\"}", NULL, "unknown op \"\"", NULL);
	/* The id is kept for the error reply even when the op is wrong. */
	r = expect_bad("{\"id\":\"req-1\",\"op\":\"nope\"}", NULL, "unknown op", NULL);
	assert_string_equal(r.id, "req-1");
	assert_int_equal(r.op, (enum lb_ctl_op)-1);
}

static void test_id(void **state)
{
	char line[256], id[LB_CTL_ID_MAX + 1];
	struct lb_ctl_request r;
	const char *msg = "\"id\" must be a string of at most 63 bytes";

	expect_bad("{\"op\":\"ping\",\"id\":5}", msg, NULL, NULL);
	expect_bad("{\"op\":\"ping\",\"id\":null}", msg, NULL, NULL);
	expect_bad("{\"op\":\"ping\",\"id\":[\"a\"]}", msg, NULL, NULL);

	memset(id, 'x', LB_CTL_ID_MAX);
	id[LB_CTL_ID_MAX] = '\0';
	snprintf(line, sizeof(line), "{\"op\":\"ping\",\"id\":\"%s\"}", id);
	r = expect_bad(line, msg, NULL, NULL);
	assert_string_equal(r.id, "");

	/* 63 bytes is the longest accepted. */
	id[LB_CTL_ID_MAX - 1] = '\0';
	snprintf(line, sizeof(line), "{\"op\":\"ping\",\"id\":\"%s\"}", id);
	r = parse_ok(line);
	assert_string_equal(r.id, id);
	assert_null(r.listeners);
}

static void test_unknown_fields(void **state)
{
	expect_bad("{\"op\":\"ping\",\"x\":1}", "unknown field \"x\"", NULL, NULL);
	expect_bad("{\"op\":\"status\",\"Id\":\"a\"}", "unknown field \"Id\"", NULL, NULL);
	/* version and listeners belong to apply only. */
	expect_bad("{\"op\":\"status\",\"version\":1}", "unknown field \"version\"", NULL, NULL);
	expect_bad("{\"op\":\"ping\",\"listeners\":[]}", "unknown field \"listeners\"", NULL,
		   NULL);
	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[],\"dry_run\":true}",
		   "unknown field \"dry_run\"", NULL, NULL);
}

static void test_version(void **state)
{
	static const struct {
		const char *version, *got;
	} bad[] = {
		{ "-1", "got -1" },
		{ "1.5", "got 1.5" },
		/* Integers as written: no fraction, exponent or leading zero, as in lb.yaml. */
		{ "1.0", "got 1.0" },
		{ "1e3", "got 1e3" },
		{ "01", "got 01" },
		{ "-0", "got -0" },
		{ "\"1\"", "got \"1\"" },
		{ "true", "got true" },
		{ "null", "got null" },
		{ "[1]", "got [1]" },
		{ "9007199254740992", "got 9007199254740992" },
		{ "18446744073709551617", "got 18446744073709551617" },
		{ "1e300", "got 1e300" },
	};
	const char *msg = "apply: \"version\" must be a JSON integer between 0 and 2^53-1, ";
	struct lb_ctl_request r;
	char line[256];

	r = expect_bad("{\"op\":\"apply\",\"id\":\"v\",\"listeners\":[]}",
		       "apply: missing field \"version\"", NULL, NULL);
	assert_int_equal(r.op, LB_CTL_APPLY);
	assert_string_equal(r.id, "v");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(line, sizeof(line), "{\"op\":\"apply\",\"version\":%s,\"listeners\":[]}",
			 bad[i].version);
		r = expect_bad(line, NULL, msg, bad[i].got);
		assert_false(r.has_version);
	}

	r = parse_ok("{\"op\":\"apply\",\"version\":9007199254740991,\"listeners\":[]}");
	assert_true(r.version == LB_CTL_VERSION_MAX);
	lb_ctl_request_clear(&r);
	r = parse_ok("{\"op\":\"apply\",\"version\":0,\"listeners\":[]}");
	assert_true(r.version == 0);
	lb_ctl_request_clear(&r);
	/* Exact on the way in, with no double in between. */
	r = parse_ok("{\"op\":\"apply\",\"version\":9007199254740989,\"listeners\":[]}");
	assert_true(r.version == 9007199254740989ull);
	lb_ctl_request_clear(&r);
}

/*
 * cJSON cuts strings at a NUL, so "ping\u0000x" was answered as ping and a listener named
 * "m2\u0000evil" applied as "m2".  Refused before parsing, wherever it is.
 */
static void test_nul(void **state)
{
	static const char *const lines[] = {
		"{\"op\":\"ping\\u0000x\"}",
		"{\"op\":\"ping\",\"id\":\"a\\u0000\"}",
		"{\"op\\u0000x\":\"ping\"}",
		"{\"op\":\"apply\",\"version\":1,\"listeners\":[" LSN("m2\\u0000evil", "127.0.0.1:80",
									  "10.0.0.1:80") "]}",
		"{\"op\":\"apply\",\"version\":1,\"listeners\":[" LSN("m2", "127.0.0.1:80",
									  "10.0.0.1:80\\u0000") "]}",
	};
	const char *msg = "a request must not contain NUL characters (a zero byte or \"\\u0000\")";
	static const char raw[] = "{\"op\":\"pi\0ng\"}";
	struct lb_ctl_request r;
	char err[256];

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		expect_bad(lines[i], msg, NULL, NULL);
	/* A zero byte in the line itself (strlen would stop at it: give the length). */
	assert_int_equal(lb_ctl_request_parse(raw, sizeof(raw) - 1, &r, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, msg);
	/* An escaped backslash before "u0000" is text, not a NUL. */
	r = parse_ok("{\"op\":\"ping\",\"id\":\"a\\\\u0000\"}");
	assert_string_equal(r.id, "a\\u0000");
	/* "\u0001" is not a NUL; the id is then simply a string with a control character. */
	r = parse_ok("{\"op\":\"ping\",\"id\":\"\\u0001\"}");
	assert_string_equal(r.id, "\x01");
}

/*
 * Listener numbers reach the file's parser as written, so they are held to its rules and
 * quoted as the client wrote them (cJSON alone turned 1.0 into 1, 1e2 into 100, 1e400 into
 * "null").
 */
static void test_listener_numbers_as_written(void **state)
{
	static const char *const bad[] = { "1.0", "1e2", "1e400", "-1", "01", "1E2", "0.5",
					   "99999999999999999999" };
	char line[512], got[64];
	struct lb_ctl_request r;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(line, sizeof(line),
			 "{\"op\":\"apply\",\"version\":1,\"listeners\":[{\"name\":\"w\","
			 "\"listen\":\"127.0.0.1:80\",\"backends\":[{\"address\":\"10.0.0.1:80\","
			 "\"weight\":%s}]}]}",
			 bad[i]);
		snprintf(got, sizeof(got), "got \"%s\"", bad[i]);
		expect_bad(line, NULL,
			   "listeners[0].backends[0].weight: must be an integer between 1 and 256",
			   got);
	}
	r = parse_ok("{\"op\":\"apply\",\"version\":1,\"listeners\":[{\"name\":\"w\","
		     "\"listen\":\"127.0.0.1:80\",\"connect_timeout_ms\":1500,"
		     "\"backends\":[{\"address\":\"10.0.0.1:80\",\"weight\":\"7\"},"
		     "{\"address\":\"10.0.0.2:80\",\"weight\":256}]}]}");
	assert_int_equal(r.listeners->listeners[0].connect_timeout_ms, 1500);
	assert_int_equal(r.listeners->listeners[0].backends[0].weight, 7);
	assert_int_equal(r.listeners->listeners[0].backends[1].weight, 256);
	lb_ctl_request_clear(&r);
}

static void test_listeners_field(void **state)
{
	struct lb_ctl_request r;

	r = expect_bad("{\"op\":\"apply\",\"version\":4}", "apply: missing field \"listeners\"",
		       NULL, NULL);
	assert_true(r.version == 4);
	expect_bad("{\"op\":\"apply\",\"version\":4,\"listeners\":{}}",
		   "apply: \"listeners\" must be a list", NULL, NULL);
	expect_bad("{\"op\":\"apply\",\"version\":4,\"listeners\":null}",
		   "apply: \"listeners\" must be a list", NULL, NULL);
	expect_bad("{\"op\":\"apply\",\"version\":4,\"listeners\":\"web\"}",
		   "apply: \"listeners\" must be a list", NULL, NULL);
}

/* Listener mistakes come from the config parser, without its "apply:1:" position. */
static void test_bad_listener(void **state)
{
	struct lb_ctl_request r;
	char err[512];
	const char *line;
	int ret;

	line = "{\"op\":\"apply\",\"id\":\"b\",\"version\":9,\"listeners\":[" LSN(
		"web", "127.0.0.1:8080", "10.0.0.1") "]}";
	memset(&r, 0, sizeof(r));
	ret = lb_ctl_request_parse(line, strlen(line), &r, err, sizeof(err));
	assert_int_equal(ret, -EINVAL);
	assert_null(r.listeners);
	assert_int_equal(strncmp(err, "listeners[0].backends[0].address: invalid address",
				 strlen("listeners[0].backends[0].address: invalid address")),
			 0);
	assert_non_null(strstr(err, "\"10.0.0.1\""));
	assert_null(strstr(err, "apply:"));
	/* What was read is kept for the error reply. */
	assert_int_equal(r.op, LB_CTL_APPLY);
	assert_string_equal(r.id, "b");
	assert_true(r.version == 9);

	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[" LSN(
			   "web", "127.0.0.1:8080", "10.0.0.1:80") "," LSN("web", "127.0.0.1:8081",
									    "10.0.0.2:80") "]}",
		   NULL, "listeners[1].name: duplicate listener name \"web\"", NULL);
	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[" LSN(
			   "a", "127.0.0.1:8080", "10.0.0.1:80") "," LSN("b", "127.0.0.1:8080",
									  "10.0.0.2:80") "]}",
		   NULL, "listeners[1].listen: 127.0.0.1:8080 is already the address", NULL);
	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[{\"name\":\"web\","
		   "\"listen\":\"127.0.0.1:8080\",\"backends\":{}}]}",
		   NULL, "listeners[0].backends: must be a list", NULL);
	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[{\"name\":\"web\","
		   "\"backends\":[{\"address\":\"10.0.0.1:80\"}]}]}",
		   NULL, "listeners[0]: missing required key \"listen\"", NULL);
	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[{\"name\":\"web\","
		   "\"listen\":\"127.0.0.1:8080\",\"backends\":[{\"address\":\"10.0.0.1:80\","
		   "\"weight\":0}]}]}",
		   NULL, "listeners[0].backends[0].weight", NULL);
	/* The top level of an apply is not the file's: process settings cannot ride along. */
	expect_bad("{\"op\":\"apply\",\"version\":1,\"listeners\":[{\"name\":\"web\","
		   "\"listen\":\"127.0.0.1:8080\",\"buffer_size\":4096,"
		   "\"backends\":[{\"address\":\"10.0.0.1:80\"}]}]}",
		   NULL, "listeners[0]: unknown key \"buffer_size\"", NULL);
}

static void test_ping_status(void **state)
{
	struct lb_ctl_request r;

	r = parse_ok("{\"op\":\"ping\",\"id\":\"abc-1\"}");
	assert_int_equal(r.op, LB_CTL_PING);
	assert_string_equal(r.id, "abc-1");
	assert_null(r.listeners);
	assert_true(r.version == 0);

	/* Field order does not matter; no id is "". */
	r = parse_ok("  {\"op\" : \"status\"}  ");
	assert_int_equal(r.op, LB_CTL_STATUS);
	assert_string_equal(r.id, "");
	assert_null(r.listeners);
	lb_ctl_request_clear(&r);

	r = parse_ok("{\"id\":\"\",\"op\":\"ping\"}");
	assert_string_equal(r.id, "");
	assert_string_equal(lb_ctl_op_name(LB_CTL_PING), "ping");
	assert_string_equal(lb_ctl_op_name(LB_CTL_STATUS), "status");
	assert_string_equal(lb_ctl_op_name(LB_CTL_APPLY), "apply");
	assert_string_equal(lb_ctl_op_name((enum lb_ctl_op)-1), "?");
}

static void test_apply_empty(void **state)
{
	struct lb_ctl_request r;

	r = parse_ok("{\"op\":\"apply\",\"version\":3,\"listeners\":[]}");
	assert_int_equal(r.op, LB_CTL_APPLY);
	assert_true(r.version == 3);
	/* An empty list is a real (empty) set of managed listeners, not "nothing". */
	assert_non_null(r.listeners);
	assert_int_equal(r.listeners->n_listeners, 0);
	lb_ctl_request_clear(&r);
	assert_null(r.listeners);
	lb_ctl_request_clear(&r);
}

/*
 * A listener of an apply may have no backends (a Service with no ready endpoints): it keeps
 * its port bound while there is nothing to send to.  The file's listeners may not.
 */
static void test_apply_listener_without_backends(void **state)
{
	struct lb_ctl_request r;

	r = parse_ok("{\"op\":\"apply\",\"version\":4,\"listeners\":[{\"name\":\"ns/web/http\","
		     "\"listen\":\"0.0.0.0:8080\",\"algorithm\":\"maglev\",\"backends\":[],"
		     "\"health_check\":{}}]}");
	assert_non_null(r.listeners);
	assert_int_equal(r.listeners->n_listeners, 1);
	assert_int_equal(r.listeners->listeners[0].n_backends, 0);
	assert_null(r.listeners->listeners[0].backends);
	assert_true(r.listeners->listeners[0].managed);
	lb_ctl_request_clear(&r);
}

static void test_apply_two_listeners(void **state)
{
	const char *line =
		"{\"op\":\"apply\",\"id\":\"k8s-42\",\"version\":42,\"listeners\":["
		"{\"name\":\"web\",\"listen\":\"0.0.0.0:8080\",\"algorithm\":\"least_conn\","
		"\"backends\":[{\"address\":\"10.0.0.1:80\",\"weight\":5},"
		"{\"address\":\"10.0.0.2:80\"}],"
		"\"health_check\":{\"interval_ms\":500,\"timeout_ms\":200}},"
		"{\"name\":\"v6\",\"listen\":\"[::1]:8443\","
		"\"backends\":[{\"address\":\"[2001:db8::1]:443\"}]}]}";
	const struct lb_listener_conf *l;
	struct lb_ctl_request r;

	r = parse_ok(line);
	assert_int_equal(r.op, LB_CTL_APPLY);
	assert_string_equal(r.id, "k8s-42");
	assert_true(r.version == 42);
	assert_non_null(r.listeners);
	assert_int_equal(r.listeners->n_listeners, 2);

	l = &r.listeners->listeners[0];
	assert_string_equal(l->name, "web");
	assert_true(l->managed);
	assert_string_equal(l->listen_str, "0.0.0.0:8080");
	assert_int_equal(l->listen.ss.ss_family, AF_INET);
	assert_int_equal(l->algorithm, LB_ALGO_LEAST_CONN);
	assert_int_equal(l->n_backends, 2);
	assert_string_equal(l->backends[0].addr_str, "10.0.0.1:80");
	assert_int_equal(l->backends[0].weight, 5);
	assert_string_equal(l->backends[1].addr_str, "10.0.0.2:80");
	assert_int_equal(l->backends[1].weight, 1);
	assert_true(l->health.enabled);
	assert_int_equal(l->health.interval_ms, 500);
	assert_int_equal(l->health.timeout_ms, 200);
	assert_int_equal(l->health.rise, 2);
	assert_int_equal(l->health.fall, 3);

	/* Every default of the file applies to an apply. */
	l = &r.listeners->listeners[1];
	assert_string_equal(l->name, "v6");
	assert_true(l->managed);
	assert_int_equal(l->listen.ss.ss_family, AF_INET6);
	assert_string_equal(l->listen_str, "[::1]:8443");
	assert_int_equal(l->n_backends, 1);
	assert_int_equal(l->backends[0].addr.ss.ss_family, AF_INET6);
	assert_string_equal(l->backends[0].addr_str, "[2001:db8::1]:443");
	assert_int_equal(l->backends[0].weight, 1);
	assert_int_equal(l->algorithm, LB_ALGO_ROUND_ROBIN);
	assert_false(l->health.enabled);
	assert_int_equal(l->connect_timeout_ms, 3000);
	assert_int_equal(l->idle_timeout_ms, 300000);
	assert_int_equal(l->max_connections, 100000);
	assert_int_equal(l->connect_retries, 2);
	assert_int_equal(l->max_fails, 3);
	assert_int_equal(l->fail_timeout_ms, 10000);

	lb_ctl_request_clear(&r);
	assert_null(r.listeners);
}

/*
 * A reply must be exactly one line: text, then one '\n' at the very end and none before it.
 * Returns the line parsed back (the caller deletes it) and frees the line.
 */
static cJSON *reply_parse(char *line)
{
	size_t n;
	cJSON *o;

	assert_non_null(line);
	n = strlen(line);
	assert_true(n >= 2);
	assert_int_equal(line[n - 1], '\n');
	assert_null(memchr(line, '\n', n - 1));
	assert_null(memchr(line, '\r', n));
	o = cJSON_ParseWithLength(line, n - 1);
	assert_non_null(o);
	assert_true(cJSON_IsObject(o));
	free(line);
	return o;
}

static const char *field_str(const cJSON *o, const char *name)
{
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);

	assert_non_null(f);
	assert_true(cJSON_IsString(f));
	return f->valuestring;
}

static void assert_ok(const cJSON *o, bool ok)
{
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "ok");

	assert_non_null(f);
	assert_true(cJSON_IsBool(f));
	assert_int_equal(cJSON_IsTrue(f), ok);
}

static void test_reply_ping(void **state)
{
	struct lb_ctl_request r = parse_ok("{\"op\":\"ping\",\"id\":\"p1\"}");
	cJSON *o;

	o = reply_parse(lb_ctl_reply_finish(lb_ctl_reply_new(&r, 1)));
	assert_ok(o, true);
	assert_string_equal(field_str(o, "op"), "ping");
	assert_string_equal(field_str(o, "id"), "p1");
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "version"));
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "error"));
	cJSON_Delete(o);

	/* No id in the request: none in the reply. */
	r = parse_ok("{\"op\":\"status\"}");
	o = reply_parse(lb_ctl_reply_finish(lb_ctl_reply_new(&r, 1)));
	assert_string_equal(field_str(o, "op"), "status");
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "id"));
	cJSON_Delete(o);
}

static void test_reply_apply_version(void **state)
{
	struct lb_ctl_request r;
	const cJSON *v;
	cJSON *reply, *o;

	r = parse_ok("{\"op\":\"apply\",\"id\":\"a\",\"version\":4294967297,\"listeners\":[]}");
	reply = lb_ctl_reply_new(&r, 1);
	assert_non_null(reply);
	/* The caller adds its own fields before finishing. */
	cJSON_AddNumberToObject(reply, "listeners_added", 0);
	o = reply_parse(lb_ctl_reply_finish(reply));
	assert_ok(o, true);
	assert_string_equal(field_str(o, "op"), "apply");
	assert_string_equal(field_str(o, "id"), "a");
	v = cJSON_GetObjectItemCaseSensitive(o, "version");
	assert_non_null(v);
	assert_true(cJSON_IsNumber(v));
	assert_true((uint64_t)v->valuedouble == 4294967297ull);
	assert_non_null(cJSON_GetObjectItemCaseSensitive(o, "listeners_added"));
	cJSON_Delete(o);
	lb_ctl_request_clear(&r);
}

/* Every version an apply accepts must come back exactly as sent, whatever its size. */
static void test_reply_version_exact(void **state)
{
	static const uint64_t versions[] = { 1, 4294967297ull, 1234567890123456ull,
					     4503599627370497ull, 6000000000000001ull,
					     9007199254740991ull };
	struct lb_ctl_request r = { .op = LB_CTL_APPLY, .has_version = true };
	char text[32];
	cJSON *o;

	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		r.version = versions[i];
		o = reply_parse(lb_ctl_reply_finish(lb_ctl_reply_new(&r, 1)));
		snprintf(text, sizeof(text), "%.0f",
			 cJSON_GetObjectItemCaseSensitive(o, "version")->valuedouble);
		cJSON_Delete(o);
		if ((uint64_t)strtoull(text, NULL, 10) != versions[i])
			fail_msg("version %llu came back as %s", (unsigned long long)versions[i],
				 text);
	}
}

static void test_reply_error(void **state)
{
	const char *line = "{\"op\":\"apply\",\"id\":\"e\",\"version\":7,\"listeners\":5}";
	struct lb_ctl_request r;
	char err[256];
	cJSON *o;

	/* An error reply echoes what the failed request got as far as. */
	assert_int_equal(lb_ctl_request_parse(line, strlen(line), &r, err, sizeof(err)), -EINVAL);
	o = reply_parse(lb_ctl_reply_error(&r, err));
	assert_ok(o, false);
	assert_string_equal(field_str(o, "op"), "apply");
	assert_string_equal(field_str(o, "id"), "e");
	assert_true(cJSON_GetObjectItemCaseSensitive(o, "version")->valuedouble == 7);
	assert_string_equal(field_str(o, "error"), "apply: \"listeners\" must be a list");
	cJSON_Delete(o);

	/* Nothing readable: no op, no id, just the error. */
	line = "][";
	assert_int_equal(lb_ctl_request_parse(line, strlen(line), &r, err, sizeof(err)), -EINVAL);
	o = reply_parse(lb_ctl_reply_error(&r, err));
	assert_ok(o, false);
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "op"));
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "id"));
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "version"));
	assert_string_equal(field_str(o, "error"), "malformed JSON");
	cJSON_Delete(o);
}

static void test_reply_error_null_request(void **state)
{
	cJSON *o;

	/* A message with a newline (a line too long, a log excerpt) still makes one line. */
	o = reply_parse(lb_ctl_reply_error(NULL, "line too long\nsecond \"part\""));
	assert_ok(o, false);
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "op"));
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "id"));
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "version"));
	assert_string_equal(field_str(o, "error"), "line too long\nsecond \"part\"");
	cJSON_Delete(o);

	o = reply_parse(lb_ctl_reply_finish(lb_ctl_reply_new(NULL, 1)));
	assert_ok(o, true);
	assert_int_equal(cJSON_GetArraySize(o), 1);
	cJSON_Delete(o);
	assert_null(lb_ctl_reply_finish(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_malformed_cut_by_len),
		cmocka_unit_test(test_trailing_garbage),
		cmocka_unit_test(test_listener_json_types),
		cmocka_unit_test(test_duplicate_field),
		cmocka_unit_test(test_not_an_object),
		cmocka_unit_test(test_op),
		cmocka_unit_test(test_id),
		cmocka_unit_test(test_unknown_fields),
		cmocka_unit_test(test_version),
		cmocka_unit_test(test_nul),
		cmocka_unit_test(test_listener_numbers_as_written),
		cmocka_unit_test(test_listeners_field),
		cmocka_unit_test(test_bad_listener),
		cmocka_unit_test(test_ping_status),
		cmocka_unit_test(test_apply_empty),
		cmocka_unit_test(test_apply_listener_without_backends),
		cmocka_unit_test(test_apply_two_listeners),
		cmocka_unit_test(test_reply_ping),
		cmocka_unit_test(test_reply_apply_version),
		cmocka_unit_test(test_reply_version_exact),
		cmocka_unit_test(test_reply_error),
		cmocka_unit_test(test_reply_error_null_request),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
