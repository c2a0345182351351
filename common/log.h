/* log.h - one leveled logger for the whole project: a line per event on stderr. */
#ifndef LB_LOG_H
#define LB_LOG_H

#include <stdatomic.h>
#include <stdbool.h>

enum lb_log_level {
	LB_LOG_ERROR = 0,
	LB_LOG_WARN = 1,
	LB_LOG_INFO = 2,
	LB_LOG_DEBUG = 3,
};

/* Set by the main thread (reload), read by every worker: atomic, relaxed loads are enough. */
extern _Atomic int lb_log_threshold;

/* Parse "error" | "warn" | "info" | "debug" (also "warning", "trace" as debug). */
int lb_log_level_parse(const char *s, enum lb_log_level *ret);
const char *lb_log_level_name(enum lb_log_level l);

/*
 * LOG_LEVEL, else RUST_LOG (deployments written from the operations guide set it; a
 * RUST_LOG such as "layer4_lb=debug,info" is read by its last bare level or first value).
 * Returns 1 when one of them set the level, 0 when neither is set, -EINVAL if unparsable.
 */
int lb_log_level_from_env(enum lb_log_level *ret);

void lb_log(enum lb_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Cheap when disabled: the arguments are not evaluated. */
#define lb_log_enabled(lvl)                                                                        \
	((int)(lvl) <= atomic_load_explicit(&lb_log_threshold, memory_order_relaxed))
#define LB_LOG(lvl, ...)                                                                           \
	do {                                                                                       \
		if (lb_log_enabled(lvl))                                                           \
			lb_log(lvl, __VA_ARGS__);                                                  \
	} while (0)
#define log_err(...) LB_LOG(LB_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) LB_LOG(LB_LOG_WARN, __VA_ARGS__)
#define log_info(...) LB_LOG(LB_LOG_INFO, __VA_ARGS__)
#define log_debug(...) LB_LOG(LB_LOG_DEBUG, __VA_ARGS__)

#endif
