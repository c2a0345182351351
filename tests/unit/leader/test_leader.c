/* test_leader.c - Lease election by client-go's rules: create, wait, take over, renew, release. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/core/leader.h"

#define ME "layer4-lb-controller-7f9c_n1"
#define OTHER "layer4-lb-controller-7f9c_n2"
#define NAME "layer4-lb-controller"
#define NS "layer4-lb-system"
#define T1 "2026-03-02T10:00:00.000000Z"
#define T2 "2026-03-02T10:00:02.000000Z"

/* A Lease as the API server returns it. */
static struct ctrl_lease lease(const char *holder, const char *renew, const char *rv,
			       int duration, int transitions)
{
	char text[1024];
	struct ctrl_lease l;
	cJSON *j;

	snprintf(text, sizeof(text),
		 "{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"metadata\":{"
		 "\"name\":\"" NAME "\",\"namespace\":\"" NS "\",\"resourceVersion\":\"%s\","
		 "\"uid\":\"8d5c\"},\"spec\":{\"holderIdentity\":\"%s\","
		 "\"leaseDurationSeconds\":%d,"
		 "\"acquireTime\":\"2026-03-01T08:00:00.000000Z\",\"renewTime\":\"%s\","
		 "\"leaseTransitions\":%d}}",
		 rv, holder, duration, renew, transitions);
	j = cJSON_Parse(text);
	assert_non_null(j);
	assert_int_equal(ctrl_lease_from_json(j, &l), 0);
	cJSON_Delete(j);
	return l;
}

static const cJSON *field(const cJSON *body, const char *obj, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(body, obj), key);
}

static const char *sfield(const cJSON *body, const char *obj, const char *key)
{
	const cJSON *v = field(body, obj, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int ifield(const cJSON *body, const char *obj, const char *key)
{
	const cJSON *v = field(body, obj, key);

	if (!cJSON_IsNumber(v))
		fail_msg("%s.%s is not a number", obj, key);
	return v->valueint;
}

static void test_lease_from_json(void **state)
{
	struct ctrl_lease l = lease(OTHER, T1, "4711", 30, 6);
	cJSON *j;

	assert_true(l.exists);
	assert_string_equal(l.holder, OTHER);
	assert_string_equal(l.renew_time, T1);
	assert_string_equal(l.rv, "4711");
	assert_int_equal(l.duration_s, 30);
	assert_int_equal(l.transitions, 6);

	/* A Lease with an empty spec: no holder, the default duration. */
	j = cJSON_Parse("{\"metadata\":{\"name\":\"x\",\"resourceVersion\":\"1\"},\"spec\":{}}");
	assert_int_equal(ctrl_lease_from_json(j, &l), 0);
	assert_string_equal(l.holder, "");
	assert_int_equal(l.duration_s, CTRL_LEASE_DURATION_S);
	assert_int_equal(l.transitions, 0);
	cJSON_Delete(j);
	j = cJSON_Parse("{\"kind\":\"Status\",\"code\":404}");
	assert_int_equal(ctrl_lease_from_json(j, &l), -EINVAL);
	cJSON_Delete(j);
}

static void test_create(void **state)
{
	struct ctrl_leader ld;
	struct ctrl_lease none = { .exists = false };
	cJSON *body;

	ctrl_leader_init(&ld, ME);
	assert_false(ld.leading);
	assert_int_equal(ctrl_leader_decide(&ld, &none, 1000, T1, NAME, NS, &body),
			 CTRL_LEADER_CREATE);
	assert_non_null(body);
	assert_string_equal(sfield(body, "metadata", "name"), NAME);
	assert_string_equal(sfield(body, "metadata", "namespace"), NS);
	assert_null(field(body, "metadata", "resourceVersion"));
	assert_string_equal(sfield(body, "spec", "holderIdentity"), ME);
	assert_int_equal(ifield(body, "spec", "leaseDurationSeconds"), CTRL_LEASE_DURATION_S);
	assert_string_equal(sfield(body, "spec", "acquireTime"), T1);
	assert_string_equal(sfield(body, "spec", "renewTime"), T1);
	assert_int_equal(ifield(body, "spec", "leaseTransitions"), 0);
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(body, "kind")->valuestring, "Lease");
	cJSON_Delete(body);
	/* Not the leader until the write succeeds. */
	assert_false(ld.leading);
	assert_true(ctrl_leader_written(&ld, true, 1100));
	assert_true(ld.leading);
}

/* Another holder's lease is waited out on our clock, from when we saw it change. */
static void test_wait_then_take_over(void **state)
{
	struct ctrl_leader ld;
	struct ctrl_lease l;
	uint64_t t0 = 5000000;
	cJSON *body;

	ctrl_leader_init(&ld, ME);
	/* Its renewTime is far in the past by the holder's clock: that is not trusted. */
	l = lease(OTHER, "2001-01-01T00:00:00.000000Z", "100", 15, 3);
	assert_int_equal(ctrl_leader_decide(&ld, &l, t0, T1, NAME, NS, &body), CTRL_LEADER_WAIT);
	assert_null(body);
	assert_int_equal(ctrl_leader_decide(&ld, &l, t0 + 14999, T1, NAME, NS, &body),
			 CTRL_LEADER_WAIT);
	assert_null(body);
	assert_false(ld.leading);

	/* Unchanged for 15 s of our time: take it, conditionally on the version read. */
	assert_int_equal(ctrl_leader_decide(&ld, &l, t0 + 15000, T2, NAME, NS, &body),
			 CTRL_LEADER_UPDATE);
	assert_non_null(body);
	assert_string_equal(sfield(body, "metadata", "resourceVersion"), "100");
	assert_string_equal(sfield(body, "spec", "holderIdentity"), ME);
	assert_string_equal(sfield(body, "spec", "acquireTime"), T2);
	assert_string_equal(sfield(body, "spec", "renewTime"), T2);
	assert_int_equal(ifield(body, "spec", "leaseTransitions"), 4);
	cJSON_Delete(body);
	assert_true(ctrl_leader_written(&ld, true, t0 + 15100));
	assert_true(ld.leading);
}

/* A holder that renews is never taken over: each renewal restarts the wait. */
static void test_renewals_reset_the_wait(void **state)
{
	struct ctrl_leader ld;
	struct ctrl_lease l;
	uint64_t t = 1000;
	char renew[40], rv[16];
	cJSON *body;

	ctrl_leader_init(&ld, ME);
	for (int i = 0; i < 20; i++, t += 10000) {
		snprintf(renew, sizeof(renew), "2026-03-02T10:00:%02d.000000Z", i);
		snprintf(rv, sizeof(rv), "%d", 200 + i);
		l = lease(OTHER, renew, rv, 15, 1);
		assert_int_equal(ctrl_leader_decide(&ld, &l, t, T1, NAME, NS, &body),
				 CTRL_LEADER_WAIT);
		assert_null(body);
	}
	/* Then it stops renewing: 15 s after the last change we saw, not after the first. */
	t -= 10000;
	assert_int_equal(ctrl_leader_decide(&ld, &l, t + 14999, T1, NAME, NS, &body),
			 CTRL_LEADER_WAIT);
	assert_int_equal(ctrl_leader_decide(&ld, &l, t + 15000, T1, NAME, NS, &body),
			 CTRL_LEADER_UPDATE);
	assert_int_equal(ifield(body, "spec", "leaseTransitions"), 2);
	cJSON_Delete(body);
}

/* The lease's own duration counts, not ours. */
static void test_lease_duration_from_lease(void **state)
{
	struct ctrl_leader ld;
	struct ctrl_lease l = lease(OTHER, T1, "300", 40, 0);
	cJSON *body;

	ctrl_leader_init(&ld, ME);
	assert_int_equal(ctrl_leader_decide(&ld, &l, 0 + 1, T1, NAME, NS, &body), CTRL_LEADER_WAIT);
	assert_int_equal(ctrl_leader_decide(&ld, &l, 30001, T1, NAME, NS, &body), CTRL_LEADER_WAIT);
	assert_int_equal(ctrl_leader_decide(&ld, &l, 40001, T1, NAME, NS, &body),
			 CTRL_LEADER_UPDATE);
	cJSON_Delete(body);
}

static void test_renew_own(void **state)
{
	struct ctrl_leader ld;
	struct ctrl_lease l = lease(ME, T1, "500", 15, 7);
	cJSON *body;

	ctrl_leader_init(&ld, ME);
	/* Ours: renewed at once, keeping acquireTime and the transition count. */
	assert_int_equal(ctrl_leader_decide(&ld, &l, 1000, T2, NAME, NS, &body),
			 CTRL_LEADER_UPDATE);
	assert_string_equal(sfield(body, "metadata", "resourceVersion"), "500");
	assert_string_equal(sfield(body, "spec", "holderIdentity"), ME);
	assert_string_equal(sfield(body, "spec", "acquireTime"), "2026-03-01T08:00:00.000000Z");
	assert_string_equal(sfield(body, "spec", "renewTime"), T2);
	assert_int_equal(ifield(body, "spec", "leaseTransitions"), 7);
	cJSON_Delete(body);
	/* Gaining leadership is a change; renewing is not. */
	assert_true(ctrl_leader_written(&ld, true, 1100));
	l = lease(ME, T2, "501", 15, 7);
	assert_int_equal(ctrl_leader_decide(&ld, &l, 3000, T2, NAME, NS, &body),
			 CTRL_LEADER_UPDATE);
	cJSON_Delete(body);
	assert_false(ctrl_leader_written(&ld, true, 3100));
	assert_true(ld.leading);
	assert_int_equal(ld.last_renew_ms, 3100);
}

/* Renewals that fail for the renew deadline end leadership, and not a moment before. */
static void test_renew_deadline(void **state)
{
	struct ctrl_leader ld;
	const uint64_t t0 = 100000;

	ctrl_leader_init(&ld, ME);
	assert_false(ctrl_leader_check_deadline(&ld, t0)); /* not leading: nothing to lose */
	assert_true(ctrl_leader_written(&ld, true, t0));
	/* Failed writes and failed reads (check_deadline) inside the deadline. */
	assert_false(ctrl_leader_written(&ld, false, t0 + 2000));
	assert_false(ctrl_leader_check_deadline(&ld, t0 + 4000));
	assert_false(ctrl_leader_written(&ld, false, t0 + CTRL_RENEW_DEADLINE_MS - 1));
	assert_false(ctrl_leader_check_deadline(&ld, t0 + CTRL_RENEW_DEADLINE_MS - 1));
	assert_true(ld.leading);
	/* At the deadline: lost, once. */
	assert_true(ctrl_leader_check_deadline(&ld, t0 + CTRL_RENEW_DEADLINE_MS));
	assert_false(ld.leading);
	assert_false(ctrl_leader_check_deadline(&ld, t0 + CTRL_RENEW_DEADLINE_MS + 1));
	assert_false(ctrl_leader_written(&ld, false, t0 + CTRL_RENEW_DEADLINE_MS + 2));

	/* A successful renewal in between moves the deadline. */
	assert_true(ctrl_leader_written(&ld, true, t0 + 20000));
	assert_false(ctrl_leader_written(&ld, false, t0 + 25000));
	assert_false(ctrl_leader_written(&ld, true, t0 + 28000));
	assert_false(ctrl_leader_check_deadline(&ld, t0 + 20000 + CTRL_RENEW_DEADLINE_MS));
	assert_true(ctrl_leader_written(&ld, false, t0 + 28000 + CTRL_RENEW_DEADLINE_MS));
	assert_false(ld.leading);
}

/* A released lease (holder "") is taken at once, without waiting out its duration. */
static void test_released_lease(void **state)
{
	struct ctrl_leader ld;
	struct ctrl_lease l = lease("", T1, "900", 1, 5);
	cJSON *body;

	ctrl_leader_init(&ld, ME);
	assert_int_equal(ctrl_leader_decide(&ld, &l, 1000, T2, NAME, NS, &body),
			 CTRL_LEADER_UPDATE);
	assert_string_equal(sfield(body, "metadata", "resourceVersion"), "900");
	assert_string_equal(sfield(body, "spec", "holderIdentity"), ME);
	assert_string_equal(sfield(body, "spec", "acquireTime"), T2);
	assert_int_equal(ifield(body, "spec", "leaseTransitions"), 6);
	assert_int_equal(ifield(body, "spec", "leaseDurationSeconds"), CTRL_LEASE_DURATION_S);
	cJSON_Delete(body);
}

/* While we lead, another replica's live lease means we have lost it. */
static void test_other_holder_while_leading(void **state)
{
	struct ctrl_leader ld;
	struct ctrl_lease l = lease(ME, T1, "10", 15, 0);
	cJSON *body;

	ctrl_leader_init(&ld, ME);
	assert_int_equal(ctrl_leader_decide(&ld, &l, 1000, T1, NAME, NS, &body),
			 CTRL_LEADER_UPDATE);
	cJSON_Delete(body);
	assert_true(ctrl_leader_written(&ld, true, 1000));
	l = lease(OTHER, T2, "11", 15, 1);
	assert_int_equal(ctrl_leader_decide(&ld, &l, 3000, T2, NAME, NS, &body), CTRL_LEADER_WAIT);
	assert_false(ld.leading);
}

/*
 * The release gives up the Lease just read, if it is ours: holder "", its count of
 * transitions, conditional on its resourceVersion.  Someone else's, or none: nothing to send.
 */
static void test_release(void **state)
{
	struct ctrl_leader ld;
	struct ctrl_lease mine = lease(ME, T1, "42", 15, 3);
	struct ctrl_lease other = lease(OTHER, T1, "43", 15, 4);
	struct ctrl_lease none = { .exists = false };
	cJSON *body;

	ctrl_leader_init(&ld, ME);
	assert_int_equal(ctrl_leader_decide(&ld, &mine, 1000, T1, NAME, NS, &body),
			 CTRL_LEADER_UPDATE);
	cJSON_Delete(body);
	assert_true(ctrl_leader_written(&ld, true, 1000));
	body = ctrl_leader_release_body(&ld, &mine, T2, NAME, NS);
	assert_non_null(body);
	assert_string_equal(sfield(body, "spec", "holderIdentity"), "");
	assert_int_equal(ifield(body, "spec", "leaseDurationSeconds"), 1);
	assert_string_equal(sfield(body, "spec", "renewTime"), T2);
	assert_int_equal(ifield(body, "spec", "leaseTransitions"), 3);
	assert_string_equal(sfield(body, "metadata", "name"), NAME);
	assert_string_equal(sfield(body, "metadata", "namespace"), NS);
	assert_string_equal(sfield(body, "metadata", "resourceVersion"), "42");
	cJSON_Delete(body);

	/* Our lease expired and another replica took it: the release must not touch it. */
	assert_null(ctrl_leader_release_body(&ld, &other, T2, NAME, NS));
	assert_null(ctrl_leader_release_body(&ld, &none, T2, NAME, NS));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lease_from_json),
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_wait_then_take_over),
		cmocka_unit_test(test_renewals_reset_the_wait),
		cmocka_unit_test(test_lease_duration_from_lease),
		cmocka_unit_test(test_renew_own),
		cmocka_unit_test(test_renew_deadline),
		cmocka_unit_test(test_released_lease),
		cmocka_unit_test(test_other_holder_while_leading),
		cmocka_unit_test(test_release),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
