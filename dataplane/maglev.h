/* maglev.h - Maglev consistent hashing (Eisenbud et al., NSDI 2016): lookup table. */
#ifndef DP_MAGLEV_H
#define DP_MAGLEV_H

#include <stdint.h>

struct dp_maglev {
	uint32_t m;       /* table size, a prime */
	uint32_t n;       /* backends */
	uint32_t *table;  /* m entries, each a backend index */
};

/*
 * Smallest prime table size from a fixed list that is >= 1000 * n (M >> N keeps the keys moved
 * by a removal near the minimum 1/N), capped at
 * 131071.
 */
uint32_t dp_maglev_size_for(uint32_t n);

/*
 * Build the table with the paper's population algorithm: backend i's permutation comes from
 * offset = h1(id) % m, skip = h2(id) % (m - 1) + 1; weights give a backend proportionally
 * more turns (weights may be NULL: all 1).  Fills mg only on success; it does not free a
 * previous table.  Returns 0, -EINVAL (n == 0, m not prime or < n, a zero weight) or -ENOMEM.
 */
int dp_maglev_build(struct dp_maglev *mg, const uint64_t *ids, const unsigned *weights, uint32_t n,
		    uint32_t m);
void dp_maglev_free(struct dp_maglev *mg);

static inline uint32_t dp_maglev_lookup(const struct dp_maglev *mg, uint64_t key)
{
	return mg->table[key % mg->m];
}

#endif
