/* debounce.c - when to reconcile after cache changes (see debounce.h). */
#include "controller/core/debounce.h"

void ctrl_debounce_init(struct ctrl_debounce *d, unsigned quiet_ms, unsigned max_ms)
{
	*d = (struct ctrl_debounce){ .quiet_ms = quiet_ms,
				     .max_ms = max_ms < quiet_ms ? quiet_ms : max_ms };
}

void ctrl_debounce_change(struct ctrl_debounce *d, uint64_t now)
{
	if (!d->dirty || d->followup) {
		d->dirty = true;
		d->dirty_since = now;
	}
	d->followup = false;
	d->last_change = now;
}

void ctrl_debounce_followup(struct ctrl_debounce *d, uint64_t now)
{
	if (d->dirty)
		return;
	d->dirty = d->followup = true;
	d->dirty_since = d->last_change = now;
}

void ctrl_debounce_urgent(struct ctrl_debounce *d)
{
	d->dirty = d->urgent = true;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

uint64_t ctrl_debounce_due(const struct ctrl_debounce *d)
{
	uint64_t quiet = d->last_change + d->quiet_ms;
	uint64_t ceiling = d->dirty_since + d->max_ms;

	if (d->urgent)
		return 0;
	if (d->followup)
		return quiet;
	/* While a burst goes on, quiet for quiet_ms is not enough: also max_ms since the last. */
	if (d->burst)
		quiet = max_u64(quiet, d->last_fire + d->max_ms);
	return quiet < ceiling ? quiet : ceiling;
}

bool ctrl_debounce_fire(struct ctrl_debounce *d, uint64_t now)
{
	uint64_t quiet = d->last_change + d->quiet_ms, ceiling = d->dirty_since + d->max_ms;

	if (!d->dirty || now < ctrl_debounce_due(d))
		return false;
	if (d->followup && !d->urgent) {
		d->dirty = d->followup = false;
		return true; /* nothing to apply: the burst and its timing are not ours */
	}
	if (d->urgent)
		d->burst = false;
	else if (ceiling < quiet || d->last_change - d->dirty_since >= d->max_ms / 2)
		/* The ceiling cut changes that were still coming, or they came for a while. */
		d->burst = true;
	else
		/* Held by the burst rule, the burst goes on (a pause between two steps of a
		 * rollout); a reconcile that only waited for quiet ends it. */
		d->burst = d->burst && d->last_fire + d->max_ms > quiet;
	d->dirty = d->urgent = d->followup = false;
	d->last_fire = now;
	return true;
}
