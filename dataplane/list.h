/* list.h - intrusive circular doubly linked list (the kernel's list_head, reduced). */
#ifndef DP_LIST_H
#define DP_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct dp_list {
	struct dp_list *prev, *next;
};

#define dp_container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

static inline void dp_list_init(struct dp_list *l)
{
	l->prev = l->next = l;
}

static inline bool dp_list_empty(const struct dp_list *l)
{
	return l->next == l;
}

/* Unlinked nodes point at themselves, so removing twice is harmless. */
static inline void dp_list_del(struct dp_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	dp_list_init(n);
}

static inline void dp_list_add_tail(struct dp_list *head, struct dp_list *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}

static inline void dp_list_move_tail(struct dp_list *head, struct dp_list *n)
{
	dp_list_del(n);
	dp_list_add_tail(head, n);
}

/* Move every node of `from` to the tail of `head`; `from` is left empty. */
static inline void dp_list_splice_tail(struct dp_list *head, struct dp_list *from)
{
	if (dp_list_empty(from))
		return;
	from->next->prev = head->prev;
	head->prev->next = from->next;
	from->prev->next = head;
	head->prev = from->prev;
	dp_list_init(from);
}

#define dp_list_first(head, type, member) dp_container_of((head)->next, type, member)

/* Safe against removal of the current node. */
#define dp_list_for_each(pos, tmp, head)                                                           \
	for (pos = (head)->next, tmp = pos->next; pos != (head); pos = tmp, tmp = pos->next)

#endif
