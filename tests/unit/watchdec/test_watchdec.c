/* test_watchdec.c - a watch response split into events the same way whatever its chunks. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/core/objects.h"
#include "controller/core/watchdec.h"

#define STREAM LB_TEST_DATA "/k8s/watch-stream.ndjson"
#define MAX_EVENTS 64

/* What one event looked like to the callback. */
struct seen {
	enum k8s_watch_type type;
	char rv[32];          /* metadata.resourceVersion, "" when there is none (ERROR) */
	uint64_t digest;      /* of the object re-printed: every byte of it counts */
	int code;             /* ERROR: the Status's code */
};

struct rec {
	struct seen ev[MAX_EVENTS];
	size_t n;
	size_t stop_at;       /* return stop_value from this event (1-based); 0 = never */
	int stop_value;
};

/* The recorded stream, as feeding it whole must decode it. */
static const struct {
	enum k8s_watch_type type;
	const char *rv;
} expected[] = {
	{ K8S_WATCH_ADDED, "48102" },    { K8S_WATCH_ADDED, "48103" },
	{ K8S_WATCH_MODIFIED, "48231" }, { K8S_WATCH_BOOKMARK, "48400" },
	{ K8S_WATCH_MODIFIED, "48517" }, { K8S_WATCH_DELETED, "48530" },
	{ K8S_WATCH_ERROR, "" },
};
#define N_EXPECTED (sizeof(expected) / sizeof(expected[0]))

static char *stream;      /* the fixture */
static size_t stream_len;
static struct rec whole;  /* the fixture fed in one piece */

static uint64_t fnv(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 0x100000001b3ull;
	return h;
}

static int record(void *arg, enum k8s_watch_type type, cJSON *object)
{
	struct rec *r = arg;
	struct seen *s;
	const char *rv = k8s_json_rv(object);
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(object, "code");
	char *text = cJSON_PrintUnformatted(object);

	assert_non_null(text);
	assert_true(r->n < MAX_EVENTS);
	s = &r->ev[r->n++];
	s->type = type;
	snprintf(s->rv, sizeof(s->rv), "%s", rv ? rv : "");
	s->digest = fnv(text);
	s->code = cJSON_IsNumber(code) ? code->valueint : 0;
	free(text);
	return r->stop_at && r->n == r->stop_at ? r->stop_value : 0;
}

static void assert_same_events(const struct rec *a, const struct rec *b)
{
	assert_int_equal(a->n, b->n);
	for (size_t i = 0; i < a->n; i++) {
		assert_int_equal(a->ev[i].type, b->ev[i].type);
		assert_string_equal(a->ev[i].rv, b->ev[i].rv);
		assert_true(a->ev[i].digest == b->ev[i].digest);
		assert_int_equal(a->ev[i].code, b->ev[i].code);
	}
}

/* Feed buf in the chunks given by sizes (the last chunk takes the rest). */
static void feed_chunks(const char *buf, size_t len, const size_t *sizes, size_t n_sizes,
			struct rec *r)
{
	struct k8s_watchdec d;
	char err[256] = "";
	size_t off = 0;

	memset(r, 0, sizeof(*r));
	k8s_watchdec_init(&d, record, r);
	for (size_t i = 0; i < n_sizes && off < len; i++) {
		size_t n = i + 1 == n_sizes ? len - off : sizes[i];

		if (n > len - off)
			n = len - off;
		assert_int_equal(k8s_watchdec_feed(&d, buf + off, n, err, sizeof(err)), 0);
		off += n;
	}
	assert_int_equal(off, len);
	assert_int_equal(k8s_watchdec_pending(&d), 0);
	k8s_watchdec_free(&d);
}

static void feed_whole(const char *buf, size_t len, struct rec *r)
{
	size_t one = len;

	feed_chunks(buf, len, &one, 1, r);
}

static int setup(void **state)
{
	FILE *f = fopen(STREAM, "rb");
	long n;

	if (!f)
		return -1;
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET)) {
		fclose(f);
		return -1;
	}
	stream = malloc((size_t)n);
	stream_len = stream ? fread(stream, 1, (size_t)n, f) : 0;
	fclose(f);
	if (stream_len != (size_t)n)
		return -1;
	feed_whole(stream, stream_len, &whole);
	return 0;
}

static int teardown(void **state)
{
	free(stream);
	return 0;
}

/* --- the recorded stream -------------------------------------------------------------------- */

static void test_stream_whole(void **state)
{
	assert_int_equal(whole.n, N_EXPECTED);
	for (size_t i = 0; i < N_EXPECTED; i++) {
		assert_int_equal(whole.ev[i].type, expected[i].type);
		assert_string_equal(whole.ev[i].rv, expected[i].rv);
	}
	/* The ERROR event carries the Status object: 410 Gone, "Expired": relist. */
	assert_int_equal(whole.ev[N_EXPECTED - 1].code, 410);
	assert_string_equal(k8s_watch_type_name(K8S_WATCH_BOOKMARK), "BOOKMARK");
	assert_string_equal(k8s_watch_type_name(K8S_WATCH_ERROR), "ERROR");
	assert_string_equal(k8s_watch_type_name((enum k8s_watch_type)99), "?");
}

/* The decoded objects are the real thing: EndpointSlices with their endpoints and ports. */
static int check_slice(void *arg, enum k8s_watch_type type, cJSON *object)
{
	struct k8s_obj *o;
	char err[128];
	unsigned *n = arg;

	if (type == K8S_WATCH_BOOKMARK || type == K8S_WATCH_ERROR)
		return 0;
	assert_int_equal(k8s_obj_from_json(K8S_KIND_ENDPOINTSLICE, object, &o, err, sizeof(err)),
			 0);
	assert_string_equal(o->meta.ns, "shop");
	assert_string_equal(o->slice.service, "web");
	assert_int_equal(o->slice.n_ports, 2);
	assert_true(o->slice.n_eps >= 2);
	k8s_obj_free(o);
	(*n)++;
	return 0;
}

static void test_stream_objects(void **state)
{
	struct k8s_watchdec d;
	unsigned n = 0;
	char err[256];

	k8s_watchdec_init(&d, check_slice, &n);
	assert_int_equal(k8s_watchdec_feed(&d, stream, stream_len, err, sizeof(err)), 0);
	assert_int_equal(n, 5);
	k8s_watchdec_free(&d);
}

static void test_stream_every_split(void **state)
{
	struct rec r;

	for (size_t off = 0; off <= stream_len; off++) {
		size_t sizes[2] = { off, 0 };

		feed_chunks(stream, stream_len, sizes, 2, &r);
		assert_same_events(&r, &whole);
	}
}

static void test_stream_byte_by_byte(void **state)
{
	struct k8s_watchdec d;
	struct rec r = { 0 };
	char err[256];

	k8s_watchdec_init(&d, record, &r);
	for (size_t i = 0; i < stream_len; i++) {
		assert_int_equal(k8s_watchdec_feed(&d, stream + i, 1, err, sizeof(err)), 0);
		/* An event is out exactly when its newline has been fed. */
		if (stream[i] != '\n')
			assert_true(k8s_watchdec_pending(&d) > 0);
	}
	assert_int_equal(k8s_watchdec_pending(&d), 0);
	assert_same_events(&r, &whole);
	k8s_watchdec_free(&d);
}

/* xorshift64*: the same chunkings on every run, so a failure can be replayed. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

static void test_stream_random_chunks(void **state)
{
	static size_t sizes[20000];
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	struct rec r;

	for (int round = 0; round < 300; round++) {
		/* Small chunks, chunks of a few events, and a mix, as networks deliver them. */
		size_t limit = round % 3 == 0 ? 16 : round % 3 == 1 ? 4096 : 600, n = 0, total = 0;

		while (total < stream_len) {
			sizes[n] = 1 + rnd(&seed) % limit;
			total += sizes[n++];
		}
		sizes[n++] = 0;
		feed_chunks(stream, stream_len, sizes, n, &r);
		assert_same_events(&r, &whole);
	}
}

/* The stream with "\r\n" line ends and blank keep-alive lines ("\n" and "\r\n") between
 * events, at every split point. */
static void test_stream_crlf_keepalive(void **state)
{
	char *buf = malloc(stream_len * 2 + 64);
	size_t len = 0, ev = 0;
	struct rec r;

	assert_non_null(buf);
	memcpy(buf, "\n\r\n", 3);
	len = 3;
	for (size_t i = 0; i < stream_len; i++) {
		if (stream[i] != '\n') {
			buf[len++] = stream[i];
			continue;
		}
		memcpy(buf + len, "\r\n", 2);
		len += 2;
		if (ev++ % 2 == 0) {
			memcpy(buf + len, "\n\r\n", 3);
			len += 3;
		}
	}
	for (size_t off = 0; off <= len; off++) {
		size_t sizes[2] = { off, 0 };

		feed_chunks(buf, len, sizes, 2, &r);
		assert_same_events(&r, &whole);
	}
	free(buf);
}

/* --- errors and the callback's stop --------------------------------------------------------- */

#define EV(type, rv)                                                                               \
	"{\"type\":\"" type "\",\"object\":{\"metadata\":{\"resourceVersion\":\"" rv "\"}}}\n"

static void test_not_json(void **state)
{
	static const char text[] =
		EV("ADDED", "1") "{\"type\":\"ADDED\",\"object\":{tr\n" EV("ADDED", "3");
	struct k8s_watchdec d;
	struct rec r = { 0 };
	char err[256] = "";

	k8s_watchdec_init(&d, record, &r);
	assert_int_equal(k8s_watchdec_feed(&d, text, sizeof(text) - 1, err, sizeof(err)), -EBADMSG);
	assert_int_equal(r.n, 1); /* the event before it, and nothing after */
	assert_non_null(strstr(err, "watch event 2 is not JSON"));

	/* After a reset the decoder takes a new response. */
	k8s_watchdec_reset(&d);
	assert_int_equal(k8s_watchdec_feed(&d, EV("MODIFIED", "4"), strlen(EV("MODIFIED", "4")),
					   err, sizeof(err)),
			 0);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.ev[1].rv, "4");
	k8s_watchdec_free(&d);
}

static void test_not_json_split(void **state)
{
	static const char text[] = EV("ADDED", "1") "this is not JSON\n";
	struct k8s_watchdec d;
	struct rec r = { 0 };
	char err[256] = "";
	size_t half = sizeof(EV("ADDED", "1")) - 1 + 6;

	/* The bad line completed from held bytes is refused the same way. */
	k8s_watchdec_init(&d, record, &r);
	assert_int_equal(k8s_watchdec_feed(&d, text, half, err, sizeof(err)), 0);
	assert_int_equal(k8s_watchdec_feed(&d, text + half, sizeof(text) - 1 - half, err,
					   sizeof(err)),
			 -EBADMSG);
	assert_int_equal(r.n, 1);
	assert_non_null(strstr(err, "not JSON"));
	k8s_watchdec_free(&d);
}

static void test_not_an_event(void **state)
{
	static const char *const bad[] = {
		"{\"type\":\"ADDED\"}\n",                    /* no object */
		"{\"type\":7,\"object\":{}}\n",              /* type not a string */
		"{\"type\":\"ADDED\",\"object\":\"x\"}\n",   /* object not an object */
		"[1,2]\n",
	};
	char err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct k8s_watchdec d;
		struct rec r = { 0 };

		err[0] = 0;
		k8s_watchdec_init(&d, record, &r);
		assert_int_equal(k8s_watchdec_feed(&d, bad[i], strlen(bad[i]), err, sizeof(err)),
				 -EBADMSG);
		assert_int_equal(r.n, 0);
		assert_non_null(strstr(err, "has no \"type\" string and \"object\""));
		k8s_watchdec_free(&d);
	}
}

static void test_unknown_type(void **state)
{
	static const char text[] = EV("ADDED", "1") EV("SYNC", "2") EV("ADDED", "3");
	struct k8s_watchdec d;
	struct rec r = { 0 };
	char err[256] = "";

	k8s_watchdec_init(&d, record, &r);
	assert_int_equal(k8s_watchdec_feed(&d, text, sizeof(text) - 1, err, sizeof(err)), -EBADMSG);
	assert_int_equal(r.n, 1);
	assert_non_null(strstr(err, "watch event 2 has unknown type \"SYNC\""));
	k8s_watchdec_free(&d);
}

static void test_callback_stop(void **state)
{
	struct k8s_watchdec d;
	struct rec r = { .stop_at = 2, .stop_value = 7 };
	char err[256];

	/* Whole: the stop value comes back and no later event is decoded. */
	k8s_watchdec_init(&d, record, &r);
	assert_int_equal(k8s_watchdec_feed(&d, stream, stream_len, err, sizeof(err)), 7);
	assert_int_equal(r.n, 2);
	k8s_watchdec_free(&d);

	/* Byte by byte: the byte that ends the second event returns it. */
	memset(&r, 0, sizeof(r));
	r.stop_at = 2;
	r.stop_value = -ECANCELED;
	k8s_watchdec_init(&d, record, &r);
	for (size_t i = 0; i < stream_len; i++) {
		int ret = k8s_watchdec_feed(&d, stream + i, 1, err, sizeof(err));

		if (ret) {
			assert_int_equal(ret, -ECANCELED);
			assert_int_equal(r.n, 2);
			assert_int_equal(stream[i], '\n');
			break;
		}
		assert_true(i + 1 < stream_len);
	}
	assert_int_equal(r.n, 2);
	k8s_watchdec_free(&d);
}

static void test_truncated_stream(void **state)
{
	struct k8s_watchdec d;
	struct rec r = { 0 };
	char err[256];

	/* A stream cut inside its last event: the bytes of it are held, not decoded. */
	k8s_watchdec_init(&d, record, &r);
	assert_int_equal(k8s_watchdec_feed(&d, stream, stream_len - 10, err, sizeof(err)), 0);
	assert_int_equal(r.n, N_EXPECTED - 1);
	assert_true(k8s_watchdec_pending(&d) > 0);
	k8s_watchdec_reset(&d);
	assert_int_equal(k8s_watchdec_pending(&d), 0);
	k8s_watchdec_free(&d);
}

/* --- the line limit ------------------------------------------------------------------------- */

/* A valid event line of exactly len bytes (without its newline): padding, then the event. */
static char *event_of_size(size_t len)
{
	static const char ev[] =
		"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"resourceVersion\":\"9\"}}}";
	char *b = malloc(len + 1);

	assert_non_null(b);
	assert_true(len >= sizeof(ev) - 1);
	memset(b, ' ', len - (sizeof(ev) - 1));
	memcpy(b + len - (sizeof(ev) - 1), ev, sizeof(ev) - 1);
	b[len] = '\n';
	return b;
}

static int feed_split(char *b, size_t len, size_t first, struct rec *r, char *err, size_t errlen)
{
	struct k8s_watchdec d;
	int ret;

	memset(r, 0, sizeof(*r));
	k8s_watchdec_init(&d, record, r);
	ret = k8s_watchdec_feed(&d, b, first, err, errlen);
	if (ret == 0)
		ret = k8s_watchdec_feed(&d, b + first, len - first, err, errlen);
	k8s_watchdec_free(&d);
	return ret;
}

/* The limit is the same whether a line arrives in one chunk or in several. */
static void test_limit_boundary(void **state)
{
	size_t splits[] = { 0, 1, K8S_WATCH_LINE_MAX / 2, K8S_WATCH_LINE_MAX - 1,
			    K8S_WATCH_LINE_MAX };
	char err[256];
	struct rec r;
	char *b;

	b = event_of_size(K8S_WATCH_LINE_MAX);
	for (size_t i = 0; i < sizeof(splits) / sizeof(splits[0]); i++) {
		assert_int_equal(feed_split(b, K8S_WATCH_LINE_MAX + 1, splits[i], &r, err,
					    sizeof(err)),
				 0);
		assert_int_equal(r.n, 1);
		assert_string_equal(r.ev[0].rv, "9");
	}
	free(b);

	b = event_of_size(K8S_WATCH_LINE_MAX + 1);
	for (size_t i = 0; i < sizeof(splits) / sizeof(splits[0]); i++) {
		err[0] = 0;
		assert_int_equal(feed_split(b, K8S_WATCH_LINE_MAX + 2, splits[i], &r, err,
					    sizeof(err)),
				 -EMSGSIZE);
		assert_int_equal(r.n, 0);
		assert_non_null(strstr(err, "watch event 1 is longer than"));
	}
	free(b);
}

/* A line over the limit is refused as soon as it is over, not after it has all been held. */
static void test_limit_without_buffering(void **state)
{
	const size_t chunk = 1u << 20;
	char *b = malloc(chunk * 2);
	struct k8s_watchdec d;
	struct rec r = { 0 };
	char err[256] = "";
	size_t fed = 0;
	int ret = 0;

	assert_non_null(b);
	memset(b, ' ', chunk * 2);

	/* One chunk already over the limit and with no newline: nothing of it is copied. */
	k8s_watchdec_init(&d, record, &r);
	{
		char *big = malloc(K8S_WATCH_LINE_MAX + 1);

		assert_non_null(big);
		memset(big, ' ', K8S_WATCH_LINE_MAX + 1);
		assert_int_equal(k8s_watchdec_feed(&d, big, K8S_WATCH_LINE_MAX + 1, err,
						   sizeof(err)),
				 -EMSGSIZE);
		free(big);
	}
	assert_null(d.buf);
	assert_int_equal(d.cap, 0);
	assert_non_null(strstr(err, "longer than"));
	k8s_watchdec_free(&d);

	/* Chunk after chunk without a newline: the chunk that crosses the limit is refused. */
	k8s_watchdec_init(&d, record, &r);
	b[0] = '{';
	while (ret == 0) {
		ret = k8s_watchdec_feed(&d, b + (fed ? 1 : 0), chunk, err, sizeof(err));
		if (ret == 0) {
			fed += chunk;
			assert_int_equal(k8s_watchdec_pending(&d), fed);
		}
		assert_true(fed <= K8S_WATCH_LINE_MAX);
	}
	assert_int_equal(ret, -EMSGSIZE);
	assert_int_equal(fed, K8S_WATCH_LINE_MAX);
	assert_true(d.cap <= K8S_WATCH_LINE_MAX);
	assert_int_equal(r.n, 0);
	k8s_watchdec_free(&d);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stream_whole),
		cmocka_unit_test(test_stream_objects),
		cmocka_unit_test(test_stream_every_split),
		cmocka_unit_test(test_stream_byte_by_byte),
		cmocka_unit_test(test_stream_random_chunks),
		cmocka_unit_test(test_stream_crlf_keepalive),
		cmocka_unit_test(test_not_json),
		cmocka_unit_test(test_not_json_split),
		cmocka_unit_test(test_not_an_event),
		cmocka_unit_test(test_unknown_type),
		cmocka_unit_test(test_callback_stop),
		cmocka_unit_test(test_truncated_stream),
		cmocka_unit_test(test_limit_boundary),
		cmocka_unit_test(test_limit_without_buffering),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
