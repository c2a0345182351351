/* cpus.h - how many workers to run: NUM_ACCEPTORS, cgroup CPU quota, affinity mask. */
#ifndef LB_CPUS_H
#define LB_CPUS_H

#include <stddef.h>

enum lb_cpus_source {
	LB_CPUS_ENV = 0,     /* NUM_ACCEPTORS */
	LB_CPUS_CONFIG,      /* acceptors: N in the config file */
	LB_CPUS_AFFINITY,    /* sched_getaffinity, no smaller quota */
	LB_CPUS_CGROUP_V2,   /* cpu.max quota was the limit */
	LB_CPUS_CGROUP_V1,   /* cpu.cfs_quota_us / cpu.cfs_period_us was the limit */
};

struct lb_cpus {
	unsigned n;                /* the answer, >= 1 */
	enum lb_cpus_source source;
	unsigned affinity;         /* CPUs in the affinity mask */
	double quota;              /* quota/period in CPUs, 0 when there is none */
	char detail[256];          /* human-readable: where the figure came from */
};

/*
 * Inputs are explicit so tests can use fake trees:
 *   root      - filesystem root for /proc/self/cgroup and /sys/fs/cgroup ("" or "/" = real);
 *               reads <root>/proc/self/cgroup and <root>/sys/fs/cgroup/...
 *   env_value - the value of NUM_ACCEPTORS or NULL when unset
 *   config_n  - acceptors from the config (0 = auto)
 *   affinity  - CPUs in the affinity mask (0 = ask sched_getaffinity)
 * NUM_ACCEPTORS wins, then config_n, then min(affinity, ceil(quota)), at least 1.
 * Returns 0, or -EINVAL when NUM_ACCEPTORS is not a positive integer (err says so).
 */
int lb_cpus_detect(const char *root, const char *env_value, unsigned config_n, unsigned affinity,
		   struct lb_cpus *ret, char *err, size_t errlen);

const char *lb_cpus_source_name(enum lb_cpus_source s);

#endif
