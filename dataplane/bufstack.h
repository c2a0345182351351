/*
 * bufstack.h - a worker's free receive buffers, most recently used on top, and the memory of
 * those that stay unused given back to the system.
 *
 * Buffers are taken from and returned to the top, so a light load keeps reusing the same few
 * and the bottom of the stack holds the ones nothing needed for longest.  After a burst of
 * bulk traffic those are resident (up to buffer_count x buffer_size, 256 MiB per worker by
 * default) though idle: dp_bufstack_trim() gives back the pages of every buffer that stayed at
 * the bottom since the last trim (madvise MADV_DONTNEED: the next write gets fresh zeroed
 * pages), so resident memory follows the load down as well as up.
 */
#ifndef DP_BUFSTACK_H
#define DP_BUFSTACK_H

#include <stddef.h>

struct dp_bufstack {
	unsigned *v;        /* buffer ids; v[0..n) are free, v[n - 1] on top */
	unsigned n;
	unsigned low;       /* the fewest free since the last trim: v[0..low) have not moved */
	unsigned released;  /* v[0..released) have had their pages given back */
};

static inline void dp_bufstack_push(struct dp_bufstack *s, unsigned bid)
{
	s->v[s->n++] = bid;
}

static inline unsigned dp_bufstack_pop(struct dp_bufstack *s)
{
	unsigned bid = s->v[--s->n];

	if (s->n < s->low)
		s->low = s->n;
	if (s->n < s->released)
		s->released = s->n;
	return bid;
}

/*
 * Give back the pages of the buffers (at base + id * size) that stayed free, unmoved, since the
 * last call; returns how many were given back now.
 */
unsigned dp_bufstack_trim(struct dp_bufstack *s, char *base, size_t size);

/* Give back the pages of one buffer. */
void dp_buf_release(char *base, size_t size, unsigned bid);

#endif
