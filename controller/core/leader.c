/*
 * leader.c - Lease-based leader election rules (client-go's), without I/O.
 *
 * Every RetryPeriod each replica reads the Lease.  A replica that is not the holder takes it
 * only when the record has not changed for leaseDurationSeconds by its own clock (the holder's
 * clock is never trusted); the holder renews it.  Writes are updates carrying the
 * resourceVersion that was read, so of two replicas racing for an expired lease only one
 * wins (the other gets 409 Conflict).  A leader that cannot renew for RenewDeadline stops
 * acting as leader before its lease can expire for the others.
 */
#include "controller/core/leader.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void ctrl_leader_init(struct ctrl_leader *l, const char *identity)
{
	*l = (struct ctrl_leader){ 0 };
	snprintf(l->identity, sizeof(l->identity), "%s", identity);
}

static void copy(char *dst, size_t len, const cJSON *v)
{
	snprintf(dst, len, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

int ctrl_lease_from_json(const cJSON *json, struct ctrl_lease *ret)
{
	const cJSON *md = cJSON_GetObjectItemCaseSensitive(json, "metadata");
	const cJSON *spec = cJSON_GetObjectItemCaseSensitive(json, "spec");
	const cJSON *d, *t;

	if (!cJSON_IsObject(md))
		return -EINVAL;
	*ret = (struct ctrl_lease){ .exists = true };
	copy(ret->rv, sizeof(ret->rv), cJSON_GetObjectItemCaseSensitive(md, "resourceVersion"));
	copy(ret->holder, sizeof(ret->holder),
	     cJSON_GetObjectItemCaseSensitive(spec, "holderIdentity"));
	copy(ret->renew_time, sizeof(ret->renew_time),
	     cJSON_GetObjectItemCaseSensitive(spec, "renewTime"));
	copy(ret->acquire_time, sizeof(ret->acquire_time),
	     cJSON_GetObjectItemCaseSensitive(spec, "acquireTime"));
	d = cJSON_GetObjectItemCaseSensitive(spec, "leaseDurationSeconds");
	t = cJSON_GetObjectItemCaseSensitive(spec, "leaseTransitions");
	ret->duration_s = cJSON_IsNumber(d) && d->valueint > 0 ? d->valueint : CTRL_LEASE_DURATION_S;
	ret->transitions = cJSON_IsNumber(t) ? t->valueint : 0;
	return 0;
}

static bool record_equal(const struct ctrl_lease *a, const struct ctrl_lease *b)
{
	return a->exists == b->exists && !strcmp(a->holder, b->holder) &&
	       !strcmp(a->renew_time, b->renew_time) && !strcmp(a->rv, b->rv);
}

static cJSON *lease_body(const char *name, const char *ns, const char *rv, const char *holder,
			 int duration_s, const char *acquire, const char *renew, int transitions)
{
	cJSON *o = cJSON_CreateObject(), *md, *spec;
	bool ok = o && cJSON_AddStringToObject(o, "apiVersion", "coordination.k8s.io/v1") &&
		  cJSON_AddStringToObject(o, "kind", "Lease") &&
		  (md = cJSON_AddObjectToObject(o, "metadata")) &&
		  cJSON_AddStringToObject(md, "name", name) &&
		  cJSON_AddStringToObject(md, "namespace", ns) &&
		  (!rv || cJSON_AddStringToObject(md, "resourceVersion", rv)) &&
		  (spec = cJSON_AddObjectToObject(o, "spec")) &&
		  cJSON_AddStringToObject(spec, "holderIdentity", holder) &&
		  cJSON_AddNumberToObject(spec, "leaseDurationSeconds", duration_s) &&
		  cJSON_AddStringToObject(spec, "acquireTime", acquire) &&
		  cJSON_AddStringToObject(spec, "renewTime", renew) &&
		  cJSON_AddNumberToObject(spec, "leaseTransitions", transitions);

	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

enum ctrl_leader_action ctrl_leader_decide(struct ctrl_leader *l, const struct ctrl_lease *lease,
					   uint64_t now_ms, const char *now_rfc3339,
					   const char *name, const char *ns, cJSON **ret_body)
{
	bool mine;

	*ret_body = NULL;
	if (!lease->exists) {
		*ret_body = lease_body(name, ns, NULL, l->identity, CTRL_LEASE_DURATION_S,
				       now_rfc3339, now_rfc3339, 0);
		l->observed = *lease;
		l->observed_ms = now_ms;
		return *ret_body ? CTRL_LEADER_CREATE : CTRL_LEADER_WAIT;
	}
	if (!record_equal(&l->observed, lease)) {
		l->observed = *lease;
		l->observed_ms = now_ms;
	}
	mine = !strcmp(lease->holder, l->identity);
	if (!mine && lease->holder[0] &&
	    now_ms < l->observed_ms + (uint64_t)lease->duration_s * 1000) {
		l->leading = false;
		return CTRL_LEADER_WAIT;
	}
	*ret_body = lease_body(name, ns, lease->rv, l->identity, CTRL_LEASE_DURATION_S,
			       mine && lease->acquire_time[0] ? lease->acquire_time : now_rfc3339,
			       now_rfc3339, mine ? lease->transitions : lease->transitions + 1);
	return *ret_body ? CTRL_LEADER_UPDATE : CTRL_LEADER_WAIT;
}

bool ctrl_leader_written(struct ctrl_leader *l, bool ok, uint64_t now_ms)
{
	bool was = l->leading;

	if (ok) {
		l->leading = true;
		l->last_renew_ms = now_ms;
		return !was;
	}
	return ctrl_leader_check_deadline(l, now_ms);
}

bool ctrl_leader_check_deadline(struct ctrl_leader *l, uint64_t now_ms)
{
	if (l->leading && now_ms >= l->last_renew_ms + CTRL_RENEW_DEADLINE_MS) {
		l->leading = false;
		return true;
	}
	return false;
}

cJSON *ctrl_leader_release_body(const struct ctrl_leader *l, const struct ctrl_lease *cur,
				const char *now_rfc3339, const char *name, const char *ns)
{
	if (!cur->exists || strcmp(cur->holder, l->identity))
		return NULL;
	/* Read back while ours: its count is the one we wrote. */
	return lease_body(name, ns, cur->rv, "", 1, now_rfc3339, now_rfc3339, cur->transitions);
}
