/* leader.h - Lease-based leader election rules (client-go's), without I/O: tested on their own. */
#ifndef CTRL_LEADER_H
#define CTRL_LEADER_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define CTRL_LEASE_DURATION_S 15   /* client-go's defaults */
#define CTRL_RENEW_DEADLINE_MS 10000
#define CTRL_RETRY_PERIOD_MS 2000

/* What the Lease object said when it was last read. */
struct ctrl_lease {
	bool exists;
	char holder[256];
	int duration_s;
	char renew_time[40];          /* as written: compared, never parsed (clocks differ) */
	char acquire_time[40];
	int transitions;
	char rv[32];
};

struct ctrl_leader {
	char identity[256];
	bool leading;
	/* Local time at which the record last changed: expiry is judged on our own clock, so
	 * clock skew between nodes does not matter (client-go's observedTime). */
	uint64_t observed_ms;
	struct ctrl_lease observed;
	uint64_t last_renew_ms;       /* our last successful write as leader */
};

enum ctrl_leader_action {
	CTRL_LEADER_WAIT = 0,         /* another holder's lease is live: try again later */
	CTRL_LEADER_CREATE,           /* no Lease yet: create it holding it */
	CTRL_LEADER_UPDATE,           /* take over an expired lease, or renew ours */
};

void ctrl_leader_init(struct ctrl_leader *l, const char *identity);

/* Parse a Lease object (GET reply): 0 or -EINVAL. */
int ctrl_lease_from_json(const cJSON *json, struct ctrl_lease *ret);

/*
 * Decide from the Lease just read (exists false after a 404) what to do at now_ms.  For
 * CREATE and UPDATE, *ret_spec is the Lease body to send (with metadata.resourceVersion for
 * the update's precondition), built with now_rfc3339 as the time written.
 */
enum ctrl_leader_action ctrl_leader_decide(struct ctrl_leader *l, const struct ctrl_lease *lease,
					   uint64_t now_ms, const char *now_rfc3339,
					   const char *name, const char *ns, cJSON **ret_body);

/* The write's outcome.  Returns true when leadership changed (either way). */
bool ctrl_leader_written(struct ctrl_leader *l, bool ok, uint64_t now_ms);
/*
 * A failed read or a refused write: as leader, leadership is lost once renewals have failed
 * for the renew deadline.  Returns true when leadership was lost.
 */
bool ctrl_leader_check_deadline(struct ctrl_leader *l, uint64_t now_ms);

/*
 * The body that gives the lease up on shutdown (holder "", so others need not wait it out),
 * from the Lease as just read: conditional on its resourceVersion, so a release can never
 * clobber a successor who took an expired lease meanwhile.  NULL when the Lease read is not
 * ours (or without memory): nothing to release.
 */
cJSON *ctrl_leader_release_body(const struct ctrl_leader *l, const struct ctrl_lease *cur,
				const char *now_rfc3339, const char *name, const char *ns);

#endif
