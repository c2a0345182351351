/* store.c - an informer's cache: objects of one kind by "namespace/name", a chained hash table. */
#include "controller/core/store.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define STORE_INITIAL_BUCKETS 64

/* FNV-1a: keys are short and not chosen by an attacker who could see the table. */
static uint64_t hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 0x100000001b3ull;
	return h;
}

int k8s_store_init(struct k8s_store *s)
{
	s->buckets = calloc(STORE_INITIAL_BUCKETS, sizeof(*s->buckets));
	s->n_buckets = STORE_INITIAL_BUCKETS;
	s->count = 0;
	return s->buckets ? 0 : -ENOMEM;
}

/* Double the table when it averages more than one entry a bucket; a failure only costs speed. */
static void grow(struct k8s_store *s)
{
	size_t n = s->n_buckets * 2;
	struct k8s_store_entry **b = calloc(n, sizeof(*b)), *e, *next;

	if (!b)
		return;
	for (size_t i = 0; i < s->n_buckets; i++)
		for (e = s->buckets[i]; e; e = next) {
			next = e->next;
			e->next = b[hash(e->key) & (n - 1)];
			b[hash(e->key) & (n - 1)] = e;
		}
	free(s->buckets);
	s->buckets = b;
	s->n_buckets = n;
}

static struct k8s_store_entry **find(const struct k8s_store *s, const char *key)
{
	struct k8s_store_entry **pe = &s->buckets[hash(key) & (s->n_buckets - 1)];

	while (*pe && strcmp((*pe)->key, key))
		pe = &(*pe)->next;
	return pe;
}

int k8s_store_put(struct k8s_store *s, struct k8s_obj *o)
{
	char key[K8S_LABEL_MAX + K8S_NAME_MAX + 1];
	struct k8s_store_entry **pe, *e;
	size_t n;

	k8s_obj_key(&o->meta, key, sizeof(key));
	pe = find(s, key);
	if (*pe) {
		k8s_obj_free((*pe)->obj);
		(*pe)->obj = o;
		return 0;
	}
	n = strlen(key) + 1;
	e = malloc(sizeof(*e) + n);
	if (!e) {
		k8s_obj_free(o);
		return -ENOMEM;
	}
	memcpy(e->key, key, n);
	e->obj = o;
	e->next = NULL;
	*pe = e;
	if (++s->count > s->n_buckets)
		grow(s);
	return 0;
}

struct k8s_obj *k8s_store_get(const struct k8s_store *s, const char *key)
{
	struct k8s_store_entry *e = *find(s, key);

	return e ? e->obj : NULL;
}

int k8s_store_del(struct k8s_store *s, const char *key)
{
	struct k8s_store_entry **pe = find(s, key), *e = *pe;

	if (!e)
		return -ENOENT;
	*pe = e->next;
	k8s_obj_free(e->obj);
	free(e);
	s->count--;
	return 0;
}

void k8s_store_swap(struct k8s_store *a, struct k8s_store *b)
{
	struct k8s_store t = *a;

	*a = *b;
	*b = t;
}

void k8s_store_clear(struct k8s_store *s)
{
	struct k8s_store_entry *e, *next;

	for (size_t i = 0; s->buckets && i < s->n_buckets; i++) {
		for (e = s->buckets[i]; e; e = next) {
			next = e->next;
			k8s_obj_free(e->obj);
			free(e);
		}
		s->buckets[i] = NULL;
	}
	s->count = 0;
}

void k8s_store_free(struct k8s_store *s)
{
	k8s_store_clear(s);
	free(s->buckets);
	s->buckets = NULL;
	s->n_buckets = 0;
}
