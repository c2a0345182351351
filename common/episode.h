/*
 * episode.h - a run of failures, so that a loop logs it once: when it starts and when it ends.
 *
 * An API server down for ten minutes, or a process out of descriptors, fails the same way many
 * times a second or a minute.  A line per failure buries everything else (and costs disk on
 * every node at once); a line per episode says what happened, how often and for how long.
 * The caller logs: lb_episode_fail() says whether this failure opened an episode (log it as a
 * warning, later ones at debug level), lb_episode_end() whether a success closed one (log the
 * recovery with the count and the duration).
 */
#ifndef LB_EPISODE_H
#define LB_EPISODE_H

#include <stdbool.h>
#include <stdint.h>

struct lb_episode {
	uint64_t failures;  /* of the open episode; 0 when none is open */
	uint64_t start_ms;  /* when it opened (the caller's clock) */
};

/* A failure at now_ms: true if it opens an episode. */
static inline bool lb_episode_fail(struct lb_episode *e, uint64_t now_ms)
{
	if (e->failures++ == 0) {
		e->start_ms = now_ms;
		return true;
	}
	return false;
}

/*
 * A success at now_ms: the failures of the episode it closes (0 if none was open), with how
 * long the episode lasted in *lasted_ms.
 */
static inline uint64_t lb_episode_end(struct lb_episode *e, uint64_t now_ms, uint64_t *lasted_ms)
{
	uint64_t n = e->failures;

	*lasted_ms = n ? now_ms - e->start_ms : 0;
	e->failures = 0;
	return n;
}

#endif
