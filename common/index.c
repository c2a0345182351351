/* index.c - open-addressing index of array elements by key (see index.h). */
#include "common/index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

uint64_t lb_hash_mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

uint64_t lb_hash_bytes(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 0xcbf29ce484222325ULL;

	while (n--) {
		h ^= *b++;
		h *= 0x100000001b3ULL;
	}
	return lb_hash_mix(h);
}

uint64_t lb_index_str_hash(const void *key)
{
	return lb_hash_bytes(key, strlen(key));
}

bool lb_index_str_equal(const void *a, const void *b)
{
	return !strcmp(a, b);
}

int lb_index_init(struct lb_index *x, const void *base, size_t stride, size_t n,
		  uint64_t (*hash)(const void *key), bool (*equal)(const void *a, const void *b))
{
	size_t cap = 8;

	while (cap < 2 * n)
		cap *= 2;
	x->slots = calloc(cap, sizeof(*x->slots));
	if (!x->slots)
		return -ENOMEM;
	x->base = base;
	x->stride = stride;
	x->hash = hash;
	x->equal = equal;
	x->mask = cap - 1;
	return 0;
}

static const void *key_of(const struct lb_index *x, uint32_t i)
{
	return x->base + (size_t)i * x->stride;
}

/* Linear probing; at most half full, so a probe always ends at an empty slot. */
static uint32_t *slot_of(const struct lb_index *x, const void *key)
{
	size_t k = x->hash(key) & x->mask;

	while (x->slots[k] && !x->equal(key_of(x, x->slots[k] - 1), key))
		k = (k + 1) & x->mask;
	return &x->slots[k];
}

long lb_index_find(const struct lb_index *x, const void *key)
{
	uint32_t v = x->slots ? *slot_of(x, key) : 0;

	return (long)v - 1;
}

long lb_index_add(struct lb_index *x, uint32_t i)
{
	uint32_t *slot = slot_of(x, key_of(x, i));

	if (*slot)
		return *slot - 1;
	*slot = i + 1;
	return -1;
}

void lb_index_free(struct lb_index *x)
{
	free(x->slots);
	x->slots = NULL;
}
