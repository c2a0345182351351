/* test_cpus.c - worker count from NUM_ACCEPTORS, config, and fake cgroup v1/v2 trees. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/cpus.h"

/* Each test gets a fresh mkdtemp directory standing in for "/". */
struct tree {
	char root[64];
};

static int setup_tree(void **state)
{
	struct tree *t = calloc(1, sizeof(*t));

	if (!t)
		return -1;
	snprintf(t->root, sizeof(t->root), "/tmp/lb-cpus-XXXXXX");
	if (!mkdtemp(t->root)) {
		free(t);
		return -1;
	}
	*state = t;
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int teardown_tree(void **state)
{
	struct tree *t = *state;
	int r = nftw(t->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);

	free(t);
	return r;
}

/* Write <root>/<rel> with content, creating the directories on the way (mkdir -p). */
static void put(const struct tree *t, const char *rel, const char *content)
{
	char path[PATH_MAX];
	char *p;
	size_t len = strlen(content);
	int fd;

	snprintf(path, sizeof(path), "%s/%s", t->root, rel);
	for (p = path + strlen(t->root) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		assert_true(mkdir(path, 0755) == 0 || errno == EEXIST);
		*p = '/';
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	close(fd);
}

/* Auto mode (no NUM_ACCEPTORS, no config) must never fail. */
static struct lb_cpus detect_auto(const struct tree *t, unsigned affinity)
{
	struct lb_cpus c;
	char err[256] = "";

	assert_int_equal(lb_cpus_detect(t->root, NULL, 0, affinity, &c, err, sizeof(err)), 0);
	assert_true(c.n >= 1);
	assert_non_null(strstr(c.detail, "workers"));
	return c;
}

static void test_v2_quota(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "0::/kubepods/x\n");
	put(t, "sys/fs/cgroup/kubepods/x/cpu.max", "200000 100000\n");
	c = detect_auto(t, 8);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.source, LB_CPUS_CGROUP_V2);
	assert_int_equal(c.affinity, 8);
	assert_true(c.quota > 1.99 && c.quota < 2.01);
	assert_non_null(strstr(c.detail, "cgroup v2 cpu.max 200000/100000 = 2.00 CPUs in "
					 "/sys/fs/cgroup/kubepods/x"));
	assert_null(strstr(c.detail, "rounded up"));
	assert_null(strstr(c.detail, t->root)); /* paths are shown as the process sees them */
}

static void test_v2_max(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "0::/kubepods/x\n");
	put(t, "sys/fs/cgroup/kubepods/x/cpu.max", "max 100000\n");
	c = detect_auto(t, 8);
	assert_int_equal(c.n, 8);
	assert_int_equal(c.source, LB_CPUS_AFFINITY);
	assert_true(c.quota == 0);
	assert_non_null(strstr(c.detail, "no cgroup CPU quota"));
}

static void test_v2_fractional(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "0::/kubepods/x\n");
	put(t, "sys/fs/cgroup/kubepods/x/cpu.max", "150000 100000\n");
	c = detect_auto(t, 4);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.source, LB_CPUS_CGROUP_V2);
	assert_true(c.quota > 1.49 && c.quota < 1.51);
	assert_string_equal(c.detail, "2 workers: cgroup v2 cpu.max 150000/100000 = 1.50 CPUs "
				      "(rounded up) in /sys/fs/cgroup/kubepods/x; 4 CPUs in the "
				      "affinity mask");
}

static void test_v2_half_cpu(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "0::/x\n");
	put(t, "sys/fs/cgroup/x/cpu.max", "50000 100000\n");
	c = detect_auto(t, 4);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.source, LB_CPUS_CGROUP_V2);
}

static void test_affinity_smaller_than_quota(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "0::/x\n");
	put(t, "sys/fs/cgroup/x/cpu.max", "400000 100000\n");
	c = detect_auto(t, 2);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.source, LB_CPUS_AFFINITY);
	assert_true(c.quota > 3.99 && c.quota < 4.01);
	assert_non_null(strstr(c.detail, "is no smaller"));

	/* A tie is not the quota binding: the mask alone would give the same answer. */
	c = detect_auto(t, 4);
	assert_int_equal(c.n, 4);
	assert_int_equal(c.source, LB_CPUS_AFFINITY);
}

/* Kubernetes: the pod cgroup limits the container even when the container has none. */
static void test_v2_parent_wins(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
	put(t, "sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "300000 100000\n");
	put(t, "sys/fs/cgroup/kubepods/pod1/cpu.max", "100000 100000\n");
	put(t, "sys/fs/cgroup/kubepods/cpu.max", "max 100000\n");
	c = detect_auto(t, 8);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.source, LB_CPUS_CGROUP_V2);
	assert_non_null(strstr(c.detail, "in /sys/fs/cgroup/kubepods/pod1;"));

	/* ... and the child's own limit still counts when it is the smaller one. */
	put(t, "sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n");
	put(t, "sys/fs/cgroup/kubepods/pod1/cpu.max", "600000 100000\n");
	put(t, "sys/fs/cgroup/kubepods/cpu.max", "300000 100000\n");
	c = detect_auto(t, 8);
	assert_int_equal(c.n, 3);
	assert_non_null(strstr(c.detail, "in /sys/fs/cgroup/kubepods;"));
}

/* Inside a cgroup namespace the process is at "/" and its limit is on the mount root. */
static void test_v2_namespace_root(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "0::/\n");
	put(t, "sys/fs/cgroup/cpu.max", "300000 100000\n");
	c = detect_auto(t, 8);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.source, LB_CPUS_CGROUP_V2);
	assert_non_null(strstr(c.detail, "in /sys/fs/cgroup;"));
}

/* A path that climbs with ".." must not read outside the cgroup mount. */
static void test_v2_dotdot_path(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "0::/../../../etc\n");
	put(t, "sys/fs/cgroup/cpu.max", "200000 100000\n");
	put(t, "etc/cpu.max", "100000 100000\n");
	c = detect_auto(t, 8);
	assert_int_equal(c.n, 2);
}

static void test_v1_quota(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup",
	    "12:memory:/docker/abc\n"
	    "4:cpu,cpuacct:/docker/abc\n"
	    "1:name=systemd:/docker/abc\n");
	put(t, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "300000\n");
	put(t, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
	c = detect_auto(t, 8);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.source, LB_CPUS_CGROUP_V1);
	assert_true(c.quota > 2.99 && c.quota < 3.01);
	assert_non_null(strstr(c.detail, "cgroup v1"));
	assert_non_null(strstr(c.detail, "/sys/fs/cgroup/cpu,cpuacct/docker/abc"));
}

static void test_v1_unlimited(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "4:cpu,cpuacct:/docker/abc\n");
	put(t, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n");
	put(t, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
	c = detect_auto(t, 6);
	assert_int_equal(c.n, 6);
	assert_int_equal(c.source, LB_CPUS_AFFINITY);
	assert_true(c.quota == 0);
	assert_null(strstr(c.detail, "malformed"));
}

/* Docker without a cgroup namespace: the host path is named, the container's cgroup is the mount.
 */
static void test_v1_mount_root_fallback(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "4:cpu,cpuacct:/docker/abc\n");
	put(t, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000\n");
	put(t, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
	c = detect_auto(t, 8);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.source, LB_CPUS_CGROUP_V1);
	assert_non_null(strstr(c.detail, "in /sys/fs/cgroup/cpu,cpuacct;"));
}

/* Only a "cpu" mount (no cpu,cpuacct directory), and the controllers listed the other way round. */
static void test_v1_cpu_mount(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "3:cpuacct,cpu:/x\n");
	put(t, "sys/fs/cgroup/cpu/x/cpu.cfs_quota_us", "250000\n");
	put(t, "sys/fs/cgroup/cpu/x/cpu.cfs_period_us", "100000\n");
	c = detect_auto(t, 8);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.source, LB_CPUS_CGROUP_V1);

	/* "cpuacct" alone is not the cpu controller. */
	put(t, "proc/self/cgroup", "3:cpuacct:/x\n");
	c = detect_auto(t, 8);
	assert_int_equal(c.n, 8);
	assert_int_equal(c.source, LB_CPUS_AFFINITY);
}

/* Hybrid hosts list a v2 line and v1 controllers; the cpu quota is on the v1 side. */
static void test_hybrid(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "4:cpu,cpuacct:/svc\n0::/svc\n");
	put(t, "sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_quota_us", "100000\n");
	put(t, "sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_period_us", "100000\n");
	c = detect_auto(t, 8);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.source, LB_CPUS_CGROUP_V1);
}

static void test_no_proc_cgroup(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "sys/fs/cgroup/cpu.max", "100000 100000\n"); /* unreachable without the file */
	c = detect_auto(t, 5);
	assert_int_equal(c.n, 5);
	assert_int_equal(c.source, LB_CPUS_AFFINITY);
	assert_true(c.quota == 0);
	assert_int_equal(c.affinity, 5);
}

static void test_v2_malformed(void **state)
{
	static const char *const bad[] = {
	    "",
	    "lots 100000\n",
	    "100000\n",
	    "0 100000\n",
	    "100000 0\n",
	    "-5 100000\n",
	    "100000  100000\n",
	    "100000 100000 x\n",
	    "100000 100000x",
	    "max\n",
	    "99999999999999999999999 100000\n",
	};
	struct tree *t = *state;
	struct lb_cpus c;
	size_t i;

	put(t, "proc/self/cgroup", "0::/x\n");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put(t, "sys/fs/cgroup/x/cpu.max", bad[i]);
		c = detect_auto(t, 4);
		assert_int_equal(c.n, 4);
		assert_int_equal(c.source, LB_CPUS_AFFINITY);
		assert_true(c.quota == 0);
		assert_non_null(strstr(c.detail, "malformed"));
		assert_non_null(strstr(c.detail, "/sys/fs/cgroup/x/cpu.max"));
	}

	/* A malformed child does not hide a well-formed parent. */
	put(t, "sys/fs/cgroup/cpu.max", "200000 100000\n");
	c = detect_auto(t, 4);
	assert_int_equal(c.n, 2);
	assert_non_null(strstr(c.detail, "malformed"));
}

static void test_v1_malformed(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "4:cpu,cpuacct:/x\n");
	put(t, "sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_quota_us", "-2\n");
	put(t, "sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_period_us", "100000\n");
	c = detect_auto(t, 4);
	assert_int_equal(c.n, 4);
	assert_non_null(strstr(c.detail, "malformed"));

	put(t, "sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_quota_us", "200000\n");
	put(t, "sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_period_us", "0\n");
	c = detect_auto(t, 4);
	assert_int_equal(c.n, 4);
	assert_non_null(strstr(c.detail, "malformed"));
}

static void test_root_trailing_slash(void **state)
{
	struct tree *t = *state;
	char root[80];
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "0::/\n");
	put(t, "sys/fs/cgroup/cpu.max", "200000 100000\n");
	snprintf(root, sizeof(root), "%s//", t->root);
	assert_int_equal(lb_cpus_detect(root, NULL, 0, 8, &c, NULL, 0), 0);
	assert_int_equal(c.n, 2);
}

static void test_env_valid(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;
	char err[128] = "";

	put(t, "proc/self/cgroup", "0::/\n");
	put(t, "sys/fs/cgroup/cpu.max", "100000 100000\n");
	assert_int_equal(lb_cpus_detect(t->root, "3", 0, 8, &c, err, sizeof(err)), 0);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.source, LB_CPUS_ENV);
	assert_int_equal(c.affinity, 8);
	assert_true(c.quota > 0.99 && c.quota < 1.01); /* still reported, for a warning */
	assert_string_equal(c.detail, "3 workers: NUM_ACCEPTORS=3");

	assert_int_equal(lb_cpus_detect(t->root, "1024", 0, 8, &c, err, sizeof(err)), 0);
	assert_int_equal(c.n, 1024);
	assert_int_equal(lb_cpus_detect(t->root, "1", 0, 8, &c, err, sizeof(err)), 0);
	assert_int_equal(c.n, 1);
}

static void test_env_invalid(void **state)
{
	static const char *const bad[] = {"0",	"-1", "abc",  "",    "2x",  " 2",  "99999999999",
					  "+2", "2 ", "1025", "0x2", "2\n", "1.5", "00"};
	struct tree *t = *state;
	struct lb_cpus c;
	char err[128];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&c, 0x5a, sizeof(c));
		err[0] = '\0';
		assert_int_equal(lb_cpus_detect(t->root, bad[i], 4, 8, &c, err, sizeof(err)),
				 -EINVAL);
		assert_non_null(strstr(err, "NUM_ACCEPTORS must be a positive integer"));
		assert_int_equal(c.n, 0x5a5a5a5a); /* ret untouched on failure */
	}

	assert_int_equal(lb_cpus_detect(t->root, "abc", 0, 8, &c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "NUM_ACCEPTORS must be a positive integer, got \"abc\"");
	/* Control characters are not copied into a log line. */
	assert_int_equal(lb_cpus_detect(t->root, "2\n", 0, 8, &c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "NUM_ACCEPTORS must be a positive integer, got \"2?\"");
	/* Without a message buffer it still fails cleanly. */
	assert_int_equal(lb_cpus_detect(t->root, "x", 0, 8, &c, NULL, 0), -EINVAL);
}

static void test_config_n(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	put(t, "proc/self/cgroup", "0::/\n");
	put(t, "sys/fs/cgroup/cpu.max", "200000 100000\n");
	assert_int_equal(lb_cpus_detect(t->root, NULL, 5, 8, &c, NULL, 0), 0);
	assert_int_equal(c.n, 5);
	assert_int_equal(c.source, LB_CPUS_CONFIG);
	assert_string_equal(c.detail, "5 workers: acceptors: 5 in the config");
}

static void test_env_beats_config(void **state)
{
	struct tree *t = *state;
	struct lb_cpus c;

	assert_int_equal(lb_cpus_detect(t->root, "3", 5, 8, &c, NULL, 0), 0);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.source, LB_CPUS_ENV);
}

static void test_source_names(void **state)
{
	assert_string_equal(lb_cpus_source_name(LB_CPUS_ENV), "NUM_ACCEPTORS");
	assert_string_equal(lb_cpus_source_name(LB_CPUS_CONFIG), "config");
	assert_string_equal(lb_cpus_source_name(LB_CPUS_AFFINITY), "affinity");
	assert_string_equal(lb_cpus_source_name(LB_CPUS_CGROUP_V2), "cgroup v2");
	assert_string_equal(lb_cpus_source_name(LB_CPUS_CGROUP_V1), "cgroup v1");
	assert_string_equal(lb_cpus_source_name((enum lb_cpus_source)99), "unknown");
}

/* Whatever this machine is, the real answer is at least one worker and consistent. */
static void test_real_machine(void **state)
{
	static const char *const roots[] = {"/", ""};
	struct lb_cpus c;
	char err[128] = "";
	size_t i;

	for (i = 0; i < 2; i++) {
		assert_int_equal(lb_cpus_detect(roots[i], NULL, 0, 0, &c, err, sizeof(err)), 0);
		assert_true(c.n >= 1);
		assert_true(c.affinity >= 1);
		assert_true(c.n <= c.affinity);
		assert_true(c.source == LB_CPUS_AFFINITY || c.source == LB_CPUS_CGROUP_V2 ||
			    c.source == LB_CPUS_CGROUP_V1);
		print_message("real machine: %s (%s)\n", c.detail, lb_cpus_source_name(c.source));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup_tree, teardown_tree)
	    T(test_v2_quota),
	    T(test_v2_max),
	    T(test_v2_fractional),
	    T(test_v2_half_cpu),
	    T(test_affinity_smaller_than_quota),
	    T(test_v2_parent_wins),
	    T(test_v2_namespace_root),
	    T(test_v2_dotdot_path),
	    T(test_v1_quota),
	    T(test_v1_unlimited),
	    T(test_v1_mount_root_fallback),
	    T(test_v1_cpu_mount),
	    T(test_hybrid),
	    T(test_no_proc_cgroup),
	    T(test_v2_malformed),
	    T(test_v1_malformed),
	    T(test_root_trailing_slash),
	    T(test_env_valid),
	    T(test_env_invalid),
	    T(test_config_n),
	    T(test_env_beats_config),
#undef T
	    cmocka_unit_test(test_source_names),
	    cmocka_unit_test(test_real_machine),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
