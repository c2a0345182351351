/* ctlproto.h - control protocol messages: request parsing and reply framing, no I/O. */
#ifndef LB_CTLPROTO_H
#define LB_CTLPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/config.h"

/* One request or reply per line; a longer line is refused unread. */
#define LB_CTL_LINE_MAX (8u << 20)
#define LB_CTL_ID_MAX 64
#define LB_CTL_VERSION_MAX 9007199254740991ull /* 2^53 - 1: exact in every JSON reader */

enum lb_ctl_op {
	LB_CTL_PING = 0,
	LB_CTL_STATUS,
	LB_CTL_APPLY,
};

struct lb_ctl_request {
	enum lb_ctl_op op;
	char id[LB_CTL_ID_MAX];      /* optional "id", echoed in the reply ("" = none) */
	uint64_t version;            /* apply */
	bool has_version;            /* version parsed: echo it in the reply */
	struct lb_config *listeners; /* apply: the managed listeners, owned */
};

const char *lb_ctl_op_name(enum lb_ctl_op op);

/*
 * Parse one line (without its newline).  On failure returns -EINVAL (-ENOMEM without memory),
 * writes the reason to err and fills what it could of ret (op, id, version) so the error reply
 * can echo them; ret never owns anything after a failure.  Numbers are taken as written (the
 * listeners' parser sees "1.0" and refuses it, as in a file); NUL characters are refused.
 */
int lb_ctl_request_parse(const char *line, size_t len, struct lb_ctl_request *ret, char *err,
			 size_t errlen);
void lb_ctl_request_clear(struct lb_ctl_request *r);

/*
 * Add an integer as its exact decimal text: cJSON keeps numbers as doubles and prints them with
 * 15 significant digits, so 9007199254740991 would come out as 9.00719925474099e+15.  Returns
 * the item, or NULL without memory.
 */
cJSON *lb_json_add_u64(cJSON *obj, const char *name, uint64_t v);
cJSON *lb_json_add_i64(cJSON *obj, const char *name, int64_t v);

/* A reply object with "ok" and the request's "op", "id" and, for apply, "version". */
cJSON *lb_ctl_reply_new(const struct lb_ctl_request *req, int ok);
/* An error reply line for req (which may be NULL or partly parsed). */
char *lb_ctl_reply_error(const struct lb_ctl_request *req, const char *msg);
/* Serialise and free a reply: one line ending in '\n' (malloc'd), or NULL without memory. */
char *lb_ctl_reply_finish(cJSON *reply);

#endif
