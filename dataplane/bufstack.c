/* bufstack.c - giving back the memory of receive buffers that stay unused (bufstack.h). */
#include "dataplane/bufstack.h"

#include <sys/mman.h>

void dp_buf_release(char *base, size_t size, unsigned bid)
{
	/* Cannot fail on a private anonymous mapping of ours; nothing to do if it did. */
	(void)madvise(base + (size_t)bid * size, size, MADV_DONTNEED);
}

unsigned dp_bufstack_trim(struct dp_bufstack *s, char *base, size_t size)
{
	unsigned n = 0;

	for (unsigned i = s->released; i < s->low; i++, n++)
		dp_buf_release(base, size, s->v[i]);
	if (s->low > s->released)
		s->released = s->low;
	s->low = s->n;
	return n;
}
