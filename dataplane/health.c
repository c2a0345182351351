/* health.c - backend health: active-check rise/fall streaks and passive connect-failure trips. */
#include "dataplane/health.h"

void dp_health_init(struct dp_health *h, bool up)
{
	h->up = up;
	h->ok_streak = 0;
	h->fail_streak = 0;
}

/*
 * Streaks only count towards the state we are not in: a good check while up (or a bad one
 * while down) just breaks the opposite streak.  A rise or fall of 0 behaves as 1.
 */
bool dp_health_report(struct dp_health *h, const struct lb_health_conf *conf, bool ok)
{
	if (ok) {
		h->fail_streak = 0;
		if (h->up || ++h->ok_streak < conf->rise)
			return false;
		h->ok_streak = 0;
		h->up = true;
		return true;
	}
	h->ok_streak = 0;
	if (!h->up || ++h->fail_streak < conf->fall)
		return false;
	h->fail_streak = 0;
	h->up = false;
	return true;
}

void dp_bstate_init(struct dp_bstate *b)
{
	atomic_init(&b->fails, 0);
	atomic_init(&b->trips, 0);
	atomic_init(&b->down_until_ms, 0);
	atomic_init(&b->check_up, true);
	atomic_init(&b->refs, 1);
	atomic_init(&b->conns_total, 0);
	atomic_init(&b->connect_failures, 0);
	for (int i = 0; i < DP_CERR_N; i++)
		atomic_init(&b->connect_errors[i], 0);
	atomic_init(&b->bytes_in, 0);
	atomic_init(&b->bytes_out, 0);
	atomic_init(&b->active, 0);
	atomic_init(&b->generation, 0);
	dp_health_init(&b->check, true);
}

/*
 * Memory order: relaxed everywhere.  These words publish no other memory (nobody reads data
 * that was written before the flag flipped), and each is a heuristic on its own: a worker
 * that sees a verdict a few nanoseconds late sends at most one extra connection to a dying
 * backend, which the retry path absorbs.  Nothing here is worth a fence on the accept path.
 */
bool dp_bstate_usable(struct dp_bstate *b, uint64_t now_ms)
{
	return atomic_load_explicit(&b->check_up, memory_order_relaxed) &&
	       now_ms >= atomic_load_explicit(&b->down_until_ms, memory_order_relaxed);
}

/* fail_timeout doubled per trip since the last success, capped at 16x. */
static uint64_t bstate_backoff_ms(unsigned trips, unsigned fail_timeout_ms)
{
	return (uint64_t)fail_timeout_ms << (trips < 4 ? trips : 4);
}

/*
 * fails is not reset by a trip, so once the backoff ends a single failure trips again (with
 * twice the backoff); only a success clears the record.  Failures that land while the backend
 * is already out (connects that were in flight when it tripped, from any worker) do not trip
 * again: otherwise a burst of them would jump straight to the 16x backoff.  The compare and
 * exchange on down_until makes exactly one worker the one that trips for a given expiry.
 * max_fails == 0 turns passive health off, as in nginx.
 */
bool dp_bstate_report(struct dp_bstate *b, bool ok, unsigned max_fails, unsigned fail_timeout_ms,
		      uint64_t now_ms)
{
	uint_fast64_t until, next;
	unsigned fails;

	if (ok) {
		atomic_store_explicit(&b->fails, 0, memory_order_relaxed);
		atomic_store_explicit(&b->trips, 0, memory_order_relaxed);
		return false;
	}
	fails = atomic_fetch_add_explicit(&b->fails, 1, memory_order_relaxed) + 1;
	if (max_fails == 0 || fails < max_fails)
		return false;
	until = atomic_load_explicit(&b->down_until_ms, memory_order_relaxed);
	if (now_ms < until)
		return false;
	next = now_ms + bstate_backoff_ms(atomic_load_explicit(&b->trips, memory_order_relaxed),
					  fail_timeout_ms);
	if (!atomic_compare_exchange_strong_explicit(&b->down_until_ms, &until, next,
						     memory_order_relaxed, memory_order_relaxed))
		return false;
	atomic_fetch_add_explicit(&b->trips, 1, memory_order_relaxed);
	return true;
}
