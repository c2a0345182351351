/* store.h - an informer's cache: objects of one kind by "namespace/name". */
#ifndef K8S_STORE_H
#define K8S_STORE_H

#include <stddef.h>

#include "controller/core/objects.h"

struct k8s_store_entry {
	struct k8s_store_entry *next;  /* the bucket's chain */
	struct k8s_obj *obj;           /* owned */
	char key[];
};

struct k8s_store {
	struct k8s_store_entry **buckets;
	size_t n_buckets;              /* a power of two */
	size_t count;
};

int k8s_store_init(struct k8s_store *s);
/* Insert or replace (the old object is freed): takes o.  0 or -ENOMEM (o is then freed). */
int k8s_store_put(struct k8s_store *s, struct k8s_obj *o);
struct k8s_obj *k8s_store_get(const struct k8s_store *s, const char *key);
/* Remove and free; 0, or -ENOENT when absent. */
int k8s_store_del(struct k8s_store *s, const char *key);
/* Every object, in no order; the callback must not change the store. */
#define k8s_store_for_each(s, e, i)                                                                \
	for ((i) = 0; (i) < (s)->n_buckets; (i)++)                                                 \
		for ((e) = (s)->buckets[(i)]; (e); (e) = (e)->next)
/* Move everything out of src into dst (dst cleared first); src is left empty. */
void k8s_store_swap(struct k8s_store *a, struct k8s_store *b);
void k8s_store_clear(struct k8s_store *s);
void k8s_store_free(struct k8s_store *s);

#endif
