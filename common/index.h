/*
 * index.h - find array elements by key in constant time: names and addresses of thousands of
 * listeners and backends are matched on every apply, and comparing every pair would cost
 * millions of comparisons (tens of milliseconds on the path from a pod turning Ready to the
 * dataplane serving it).
 *
 * The index holds element numbers only; element i's key is at base + i * stride, so the array
 * must not move while the index is used.  Capacity is fixed at init for n elements.
 */
#ifndef LB_INDEX_H
#define LB_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lb_index {
	const char *base;
	size_t stride;
	uint64_t (*hash)(const void *key);
	bool (*equal)(const void *a, const void *b);
	uint32_t *slots; /* element number + 1; 0 when empty */
	size_t mask;
};

int lb_index_init(struct lb_index *x, const void *base, size_t stride, size_t n,
		  uint64_t (*hash)(const void *key), bool (*equal)(const void *a, const void *b));
/* Add element i: -1 when its key is new, else the number of the element that has it. */
long lb_index_add(struct lb_index *x, uint32_t i);
/* The number of an element whose key equals key, or -1 (also for an index never set up). */
long lb_index_find(const struct lb_index *x, const void *key);
void lb_index_free(struct lb_index *x);

/* Keys that are NUL-terminated strings held in the element (a char array, not a pointer). */
uint64_t lb_index_str_hash(const void *key);
bool lb_index_str_equal(const void *a, const void *b);

/* FNV-1a with splitmix64's finaliser: FNV-1a alone mixes the last bytes poorly. */
uint64_t lb_hash_bytes(const void *p, size_t n);
uint64_t lb_hash_mix(uint64_t x);

#endif
