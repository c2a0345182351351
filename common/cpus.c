/* cpus.c - how many workers to run: NUM_ACCEPTORS, the config, else min(affinity, cgroup quota). */
#include "common/cpus.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LB_CPUS_MAX 1024 /* more workers than this is a typo, not a machine */
#define CG_MOUNT "/sys/fs/cgroup"

/* One quota figure and the cgroup directory (inside root) it came from. */
struct cg_quota {
	unsigned long long quota;
	unsigned long long period;
	enum lb_cpus_source source;
	char dir[PATH_MAX];
};

/* Everything learned from the cgroup files under one root. */
struct cg_probe {
	const char *root; /* "" for the real filesystem, never with a trailing '/' */
	bool have;	  /* best holds the smallest quota seen */
	struct cg_quota best;
	unsigned malformed; /* quota files we could not parse and ignored */
	char bad[PATH_MAX]; /* the first of them, inside root */
};

const char *lb_cpus_source_name(enum lb_cpus_source s)
{
	switch (s) {
	case LB_CPUS_ENV:
		return "NUM_ACCEPTORS";
	case LB_CPUS_CONFIG:
		return "config";
	case LB_CPUS_AFFINITY:
		return "affinity";
	case LB_CPUS_CGROUP_V2:
		return "cgroup v2";
	case LB_CPUS_CGROUP_V1:
		return "cgroup v1";
	}
	return "unknown";
}

static void appendf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* snprintf onto the end of buf; a full buffer just truncates, the text is for humans. */
static void appendf(char *buf, size_t len, const char *fmt, ...)
{
	size_t used = strnlen(buf, len);
	va_list ap;

	if (used + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Strict: digits only, 1..LB_CPUS_MAX.  strtoul would accept " 2", "+2" and "2x". */
static int parse_acceptors(const char *s, unsigned *ret, char *err, size_t errlen)
{
	char shown[40];
	unsigned long v = 0;
	const char *p;
	size_t i;

	/* Quote at most a short, printable prefix: the message ends up in a log line. */
	for (i = 0; i < sizeof(shown) - 4 && s[i]; i++)
		shown[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
	strcpy(shown + i, s[i] ? "..." : "");

	for (p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			goto out_invalid;
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > LB_CPUS_MAX) {
			set_err(err, errlen,
				"NUM_ACCEPTORS must be a positive integer no larger than %d, got "
				"\"%s\"",
				LB_CPUS_MAX, shown);
			return -EINVAL;
		}
	}
	if (p == s || v == 0)
		goto out_invalid;
	*ret = (unsigned)v;
	return 0;

out_invalid:
	set_err(err, errlen, "NUM_ACCEPTORS must be a positive integer, got \"%s\"", shown);
	return -EINVAL;
}

/* CPU_COUNT of sched_getaffinity; the mask grows for machines with more than 1024 CPUs. */
static unsigned affinity_count(void)
{
	long online;
	int ncpu;

	for (ncpu = CPU_SETSIZE; ncpu <= (1 << 20); ncpu *= 2) {
		size_t size = CPU_ALLOC_SIZE(ncpu);
		cpu_set_t *set = CPU_ALLOC(ncpu);
		int n;

		if (!set)
			break;
		if (sched_getaffinity(0, size, set) == 0) {
			n = CPU_COUNT_S(size, set);
			CPU_FREE(set);
			return n > 0 ? (unsigned)n : 1;
		}
		CPU_FREE(set);
		if (errno != EINVAL)
			break;
	}
	online = sysconf(_SC_NPROCESSORS_ONLN);
	return online > 0 ? (unsigned)online : 1;
}

/* buf = a b c, or -ENAMETOOLONG (and buf = "") when it does not fit. */
static int path_join(char *buf, size_t len, const char *a, const char *b, const char *c)
{
	const char *parts[] = {a, b, c};
	size_t off = 0, n, i;

	for (i = 0; i < 3; i++) {
		n = strlen(parts[i]);
		if (n >= len - off) {
			buf[0] = '\0';
			return -ENAMETOOLONG;
		}
		memcpy(buf + off, parts[i], n);
		off += n;
	}
	buf[off] = '\0';
	return 0;
}

/* Read a small file whole into buf, NUL-terminated.  Returns its length or -errno. */
static int read_small(const char *path, char *buf, size_t len)
{
	size_t off = 0;
	ssize_t n;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	while (off < len - 1) {
		n = read(fd, buf + off, len - 1 - off);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out_close;
		}
		if (n == 0)
			break;
		off += (size_t)n;
	}
	buf[off] = '\0';
	r = (int)off;
out_close:
	close(fd);
	return r;
}

/* A decimal u64 at *p, advancing *p; -EINVAL if there are no digits or it overflows. */
static int parse_u64(const char **p, unsigned long long *ret)
{
	unsigned long long v;
	char *end;

	if (!isdigit((unsigned char)**p))
		return -EINVAL;
	errno = 0;
	v = strtoull(*p, &end, 10);
	if (errno)
		return -EINVAL;
	*p = end;
	*ret = v;
	return 0;
}

/* Only the newline the kernel writes may follow the figures. */
static bool at_end(const char *p)
{
	return p[0] == '\0' || (p[0] == '\n' && p[1] == '\0');
}

/* cpu.max: "max 100000" or "150000 100000".  1 = quota, 0 = none, -EINVAL = malformed. */
static int parse_cpu_max(const char *s, unsigned long long *quota, unsigned long long *period)
{
	bool unlimited = strncmp(s, "max", 3) == 0;

	if (unlimited)
		s += 3;
	else if (parse_u64(&s, quota) < 0 || *quota == 0)
		return -EINVAL;
	if (*s++ != ' ' || parse_u64(&s, period) < 0 || *period == 0 || !at_end(s))
		return -EINVAL;
	return unlimited ? 0 : 1;
}

/* cpu.cfs_quota_us is "-1" for none; the period is a positive number of microseconds. */
static int parse_cfs(const char *qs, const char *ps, unsigned long long *quota,
		     unsigned long long *period)
{
	if (strcmp(qs, "-1") == 0 || strcmp(qs, "-1\n") == 0)
		return 0;
	if (parse_u64(&qs, quota) < 0 || *quota == 0 || !at_end(qs))
		return -EINVAL;
	if (parse_u64(&ps, period) < 0 || *period == 0 || !at_end(ps))
		return -EINVAL;
	return 1;
}

static void probe_malformed(struct cg_probe *pr, const char *dir, const char *file)
{
	if (pr->malformed++ == 0)
		path_join(pr->bad, sizeof(pr->bad), dir, "/", file);
}

/* Keep the smaller of what we had and quota/period from dir: every ancestor's limit applies. */
static void probe_offer(struct cg_probe *pr, enum lb_cpus_source src, unsigned long long quota,
			unsigned long long period, const char *dir)
{
	struct cg_quota *b = &pr->best;

	if (pr->have && (double)quota / (double)period >= (double)b->quota / (double)b->period)
		return;
	pr->have = true;
	b->quota = quota;
	b->period = period;
	b->source = src;
	snprintf(b->dir, sizeof(b->dir), "%s", dir);
}

/* One cgroup v2 directory (inside root); no cpu.max = the root cgroup or no cpu controller. */
static void probe_v2_dir(struct cg_probe *pr, const char *dir)
{
	unsigned long long quota = 0, period = 0;
	/* "": read_small's -errno is negative, but the analyzer cannot know errno is not 0. */
	char path[PATH_MAX], buf[64] = "";

	if (path_join(path, sizeof(path), pr->root, dir, "/cpu.max") < 0 ||
	    read_small(path, buf, sizeof(buf)) < 0)
		return;
	switch (parse_cpu_max(buf, &quota, &period)) {
	case 1:
		probe_offer(pr, LB_CPUS_CGROUP_V2, quota, period, dir);
		break;
	case 0:
		break;
	default:
		probe_malformed(pr, dir, "cpu.max");
	}
}

static void probe_v1_dir(struct cg_probe *pr, const char *dir)
{
	unsigned long long quota = 0, period = 0;
	char path[PATH_MAX], qbuf[32], pbuf[32];

	if (path_join(path, sizeof(path), pr->root, dir, "/cpu.cfs_quota_us") < 0 ||
	    read_small(path, qbuf, sizeof(qbuf)) < 0)
		return;
	if (path_join(path, sizeof(path), pr->root, dir, "/cpu.cfs_period_us") < 0 ||
	    read_small(path, pbuf, sizeof(pbuf)) < 0)
		return;
	switch (parse_cfs(qbuf, pbuf, &quota, &period)) {
	case 1:
		probe_offer(pr, LB_CPUS_CGROUP_V1, quota, period, dir);
		break;
	case 0:
		break;
	default:
		probe_malformed(pr, dir, "cpu.cfs_quota_us");
	}
}

/*
 * Visit mount + cgpath and each parent up to the mount itself.  Reaching the mount is also the
 * container case: without a cgroup namespace /proc/self/cgroup names the host path
 * ("/docker/abc") while the container sees its own cgroup mounted at the mount point.
 */
static void probe_walk(struct cg_probe *pr, const char *mount, const char *cgpath,
		       void (*visit)(struct cg_probe *, const char *))
{
	size_t mlen = strlen(mount);
	char dir[PATH_MAX];
	char *slash;

	if (path_join(dir, sizeof(dir), mount, strcmp(cgpath, "/") ? cgpath : "", "") < 0)
		snprintf(dir, sizeof(dir), "%s", mount);
	for (;;) {
		visit(pr, dir);
		slash = strrchr(dir + mlen, '/');
		if (!slash)
			break;
		*slash = '\0';
	}
}

/*
 * The cgroup path from /proc/self/cgroup, made safe to append to a mount point: trailing
 * slashes go, and a path that climbs out with ".." (a process outside our cgroup namespace)
 * becomes "/", the mount itself.
 */
static void clean_cgpath(char *path)
{
	size_t len = strcspn(path, "\n");
	const char *p;

	while (len > 1 && path[len - 1] == '/')
		len--;
	path[len] = '\0';
	for (p = path; (p = strstr(p, "..")); p += 2) {
		if ((p == path || p[-1] == '/') && (p[2] == '/' || p[2] == '\0')) {
			strcpy(path, "/");
			return;
		}
	}
	if (path[0] != '/')
		strcpy(path, "/");
}

static bool has_controller(const char *list, const char *name)
{
	size_t n = strlen(name);
	const char *p;

	for (p = list; (p = strstr(p, name)); p += n)
		if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
			return true;
	return false;
}

static bool is_dir(const char *root, const char *dir)
{
	char path[PATH_MAX];
	struct stat st;

	return path_join(path, sizeof(path), root, dir, "") == 0 && stat(path, &st) == 0 &&
	       S_ISDIR(st.st_mode);
}

/* v1 mounts the cpu controller as cpu,cpuacct (sometimes cpuacct,cpu) with a "cpu" symlink. */
static void probe_v1(struct cg_probe *pr, const char *controllers, const char *cgpath)
{
	char listed[PATH_MAX];
	const char *mounts[] = {listed, CG_MOUNT "/cpu,cpuacct", CG_MOUNT "/cpu"};
	size_t i;

	if (path_join(listed, sizeof(listed), CG_MOUNT "/", controllers, "") < 0)
		/* cppcheck-suppress unreadVariable ; read through mounts[0] below */
		listed[0] = '\0';
	for (i = 0; i < sizeof(mounts) / sizeof(mounts[0]); i++) {
		if (mounts[i][0] && is_dir(pr->root, mounts[i])) {
			probe_walk(pr, mounts[i], cgpath, probe_v1_dir);
			return;
		}
	}
}

/*
 * Lines of /proc/self/cgroup are "id:controllers:path"; v2 is "0::path".  On a hybrid host both
 * kinds appear, so look at each and keep the smallest quota.  No file means no quota.
 */
static void probe_cgroups(struct cg_probe *pr)
{
	char path[PATH_MAX];
	char *line = NULL, *ctl, *cgpath;
	size_t cap = 0;
	FILE *f;

	if (path_join(path, sizeof(path), pr->root, "/proc/self/cgroup", "") < 0)
		return;
	f = fopen(path, "re");
	if (!f)
		return;
	while (getline(&line, &cap, f) != -1) {
		ctl = strchr(line, ':');
		cgpath = ctl ? strchr(ctl + 1, ':') : NULL;
		if (!cgpath)
			continue;
		*ctl++ = '\0';
		*cgpath++ = '\0';
		clean_cgpath(cgpath);
		if (strcmp(line, "0") == 0 && ctl[0] == '\0')
			probe_walk(pr, CG_MOUNT, cgpath, probe_v2_dir);
		else if (has_controller(ctl, "cpu"))
			probe_v1(pr, ctl, cgpath);
	}
	free(line);
	fclose(f);
}

static void describe_quota(const struct cg_probe *pr, char *buf, size_t len)
{
	const struct cg_quota *b = &pr->best;
	bool v2 = b->source == LB_CPUS_CGROUP_V2;

	appendf(buf, len, "cgroup %s %llu/%llu = %.2f CPUs%s in %s",
		v2 ? "v2 cpu.max" : "v1 cpu.cfs_quota_us/cpu.cfs_period_us", b->quota, b->period,
		(double)b->quota / (double)b->period, b->quota % b->period ? " (rounded up)" : "",
		b->dir);
}

/* The automatic figure: min(affinity, ceil(quota)), at least 1, and why. */
static void decide_auto(const struct cg_probe *pr, struct lb_cpus *c)
{
	unsigned long long qn = 0;

	if (pr->have)
		qn = pr->best.quota / pr->best.period + (pr->best.quota % pr->best.period != 0);
	if (pr->have && qn < c->affinity) {
		c->n = qn > 0 ? (unsigned)qn : 1;
		c->source = pr->best.source;
		appendf(c->detail, sizeof(c->detail), "%u workers: ", c->n);
		describe_quota(pr, c->detail, sizeof(c->detail));
		appendf(c->detail, sizeof(c->detail), "; %u CPUs in the affinity mask",
			c->affinity);
	} else {
		c->n = c->affinity;
		c->source = LB_CPUS_AFFINITY;
		appendf(c->detail, sizeof(c->detail), "%u workers: %u CPUs in the affinity mask; ",
			c->n, c->affinity);
		if (pr->have) {
			describe_quota(pr, c->detail, sizeof(c->detail));
			appendf(c->detail, sizeof(c->detail), " is no smaller");
		} else {
			appendf(c->detail, sizeof(c->detail), "no cgroup CPU quota");
		}
	}
	if (pr->malformed)
		appendf(c->detail, sizeof(c->detail), "; ignored %u malformed quota file%s (%s)",
			pr->malformed, pr->malformed > 1 ? "s" : "", pr->bad);
}

int lb_cpus_detect(const char *root, const char *env_value, unsigned config_n, unsigned affinity,
		   struct lb_cpus *ret, char *err, size_t errlen)
{
	struct cg_probe pr = {0};
	struct lb_cpus c = {0};
	size_t rlen = root ? strlen(root) : 0;
	char rootbuf[PATH_MAX];
	unsigned env_n = 0;
	int r;

	if (env_value) {
		r = parse_acceptors(env_value, &env_n, err, errlen);
		if (r < 0)
			return r;
	}

	/* "/" and "" are the real filesystem; strip trailing slashes so joins give "<root>/proc".
	 */
	while (rlen > 0 && root[rlen - 1] == '/')
		rlen--;
	if (rlen < sizeof(rootbuf)) {
		if (rlen)
			memcpy(rootbuf, root, rlen);
		rootbuf[rlen] = '\0';
		pr.root = rootbuf;
		probe_cgroups(&pr);
	} /* else nothing under it could be opened anyway: no quota */

	/* Both figures are filled whatever decides n, so the caller can warn about
	 * oversubscription. */
	c.affinity = affinity ? affinity : affinity_count();
	c.quota = pr.have ? (double)pr.best.quota / (double)pr.best.period : 0;
	if (env_n) {
		c.n = env_n;
		c.source = LB_CPUS_ENV;
		snprintf(c.detail, sizeof(c.detail), "%u workers: NUM_ACCEPTORS=%u", c.n, env_n);
	} else if (config_n) {
		c.n = config_n;
		c.source = LB_CPUS_CONFIG;
		snprintf(c.detail, sizeof(c.detail), "%u workers: acceptors: %u in the config", c.n,
			 config_n);
	} else {
		decide_auto(&pr, &c);
	}
	*ret = c;
	return 0;
}
