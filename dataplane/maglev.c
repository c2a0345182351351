/* maglev.c - Maglev lookup table population (Eisenbud et al., NSDI 2016, section 3.4). */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/maglev.h"

#define MAGLEV_EMPTY UINT32_MAX

static const uint32_t maglev_sizes[] = {
	251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
};

uint32_t dp_maglev_size_for(uint32_t n)
{
	uint64_t want = (uint64_t)n * 1000;
	size_t i;

	for (i = 0; i < sizeof(maglev_sizes) / sizeof(maglev_sizes[0]); i++)
		if (maglev_sizes[i] >= want)
			return maglev_sizes[i];
	return maglev_sizes[i - 1];
}

/*
 * The paper needs two independent hashes of the backend name; ids are already hashes of the
 * address, so two different finalisers (splitmix64's and MurmurHash3's fmix64) with different
 * pre-xors give offset and skip that do not move together.
 */
static uint64_t maglev_h1(uint64_t x)
{
	x ^= 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t maglev_h2(uint64_t x)
{
	x ^= 0xc2b2ae3d27d4eb4fULL;
	x = (x ^ (x >> 33)) * 0xff51afd7ed558ccdULL;
	x = (x ^ (x >> 33)) * 0xc4ceb9fe1a85ec53ULL;
	return x ^ (x >> 33);
}

static bool is_prime(uint32_t m)
{
	uint32_t d;

	if (m < 2)
		return false;
	for (d = 2; (uint64_t)d * d <= m; d++)
		if (m % d == 0)
			return false;
	return true;
}

static unsigned gcd(unsigned a, unsigned b)
{
	while (b) {
		unsigned t = a % b;

		a = b;
		b = t;
	}
	return a;
}

/*
 * Per-backend walk through its permutation.  pos is the permutation entry it will try next,
 * kept as a running sum mod m rather than (offset + j * skip) % m to avoid a multiply and a
 * divide per step.
 */
struct maglev_walk {
	uint64_t id;
	uint32_t idx; /* backend index, what the table stores */
	uint32_t pos;
	uint32_t skip;
	unsigned turns; /* weight / gcd of all weights */
};

/*
 * Backends take their turns in id order, not in the caller's order: when two want the same
 * entry the earlier one wins, so this keeps the key -> backend mapping independent of how the
 * configuration happened to list them.
 */
static int maglev_walk_cmp(const void *a, const void *b)
{
	const struct maglev_walk *x = a, *y = b;

	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* w claims the next empty entry of its permutation; the caller knows one is left. */
static void maglev_claim(uint32_t *table, uint32_t m, struct maglev_walk *w)
{
	while (table[w->pos] != MAGLEV_EMPTY) {
		w->pos += w->skip;
		if (w->pos >= m)
			w->pos -= m;
	}
	table[w->pos] = w->idx;
}

static void maglev_populate(uint32_t *table, uint32_t m, struct maglev_walk *w, uint32_t n)
{
	uint32_t filled = 0;
	uint32_t i;
	unsigned t;

	for (i = 0; i < m; i++)
		table[i] = MAGLEV_EMPTY;
	/* A backend of weight w takes w turns per round: weighted Maglev as in the paper's 3.4. */
	for (;;) {
		for (i = 0; i < n; i++) {
			for (t = 0; t < w[i].turns; t++) {
				maglev_claim(table, m, &w[i]);
				if (++filled == m)
					return;
			}
		}
	}
}

int dp_maglev_build(struct dp_maglev *mg, const uint64_t *ids, const unsigned *weights, uint32_t n,
		    uint32_t m)
{
	struct maglev_walk *w;
	uint32_t *table;
	unsigned g = 0;
	uint32_t i;

	if (n == 0 || m < n || !is_prime(m))
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (weights && weights[i] == 0)
			return -EINVAL;
		g = gcd(g, weights ? weights[i] : 1);
	}
	w = calloc(n, sizeof(*w));
	if (!w)
		return -ENOMEM;
	table = malloc((size_t)m * sizeof(*table));
	if (!table)
		goto out_free_walk;
	for (i = 0; i < n; i++) {
		w[i].id = ids[i];
		w[i].idx = i;
		w[i].pos = (uint32_t)(maglev_h1(ids[i]) % m);
		/* m is prime, so any skip in 1..m-1 makes the walk a full permutation. */
		w[i].skip = (uint32_t)(maglev_h2(ids[i]) % (m - 1)) + 1;
		w[i].turns = (weights ? weights[i] : 1) / g;
	}
	qsort(w, n, sizeof(*w), maglev_walk_cmp);
	maglev_populate(table, m, w, n);
	free(w);
	mg->m = m;
	mg->n = n;
	mg->table = table;
	return 0;

out_free_walk:
	free(w);
	return -ENOMEM;
}

void dp_maglev_free(struct dp_maglev *mg)
{
	if (!mg)
		return;
	free(mg->table);
	memset(mg, 0, sizeof(*mg));
}
