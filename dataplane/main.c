/* main.c - layer4-lb: arguments, configuration, workers, signals (drain and reload). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/config.h"
#include "common/cpus.h"
#include "common/log.h"
#include "dataplane/dp.h"

#define NOFILE_WANTED 100000

struct dp_main {
	const char *config_path;
	struct dp_snapshot *snap; /* the running configuration (reference) */
	struct dp_worker *workers;
	unsigned n_workers;
	uint64_t version;
	bool log_level_from_env;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: layer4-lb --config FILE [--check]\n"
		"       layer4-lb --version | --help\n"
		"\n"
		"io_uring Layer 4 (TCP) load balancer.\n"
		"\n"
		"  -c, --config FILE  configuration file (YAML; see docs/configuration.md)\n"
		"      --check        validate the configuration file and exit\n"
		"  -V, --version      print the version and exit\n"
		"  -h, --help         print this help and exit\n"
		"\n"
		"Environment: NUM_ACCEPTORS (worker threads), LOG_LEVEL (error|warn|info|debug;\n"
		"RUST_LOG is accepted as an alias).\n"
		"Signals: SIGTERM/SIGINT drain and exit, SIGHUP reloads the configuration file.\n");
}

/* Raise the soft limit to the hard one: each proxied connection needs two descriptors. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			log_warn("cannot raise the file descriptor limit: %s", strerror(errno));
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < NOFILE_WANTED)
		log_warn("file descriptor limit is %llu, below %d: at most about %llu proxied "
			 "connections (raise LimitNOFILE / ulimit -n)",
			 (unsigned long long)rl.rlim_cur, NOFILE_WANTED,
			 (unsigned long long)rl.rlim_cur / 2);
	else
		log_info("file descriptor limit: %llu", (unsigned long long)rl.rlim_cur);
}

static void apply_log_level(struct dp_main *m, const struct lb_config *c)
{
	if (!m->log_level_from_env && c->log_level_set)
		lb_log_threshold = c->log_level;
}

/* Hand a snapshot to every worker; each takes its own reference. */
static void publish(struct dp_main *m, struct dp_snapshot *s)
{
	for (unsigned i = 0; i < m->n_workers; i++) {
		struct dp_snapshot *old;

		dp_snapshot_get(s);
		old = atomic_exchange(&m->workers[i].next, s);
		dp_snapshot_put(old); /* one the worker never picked up */
		dp_worker_wake(&m->workers[i]);
	}
	dp_snapshot_put(m->snap);
	m->snap = s;
}

static void reload(struct dp_main *m)
{
	struct lb_config *conf;
	struct dp_snapshot *s;
	char err[1024];

	if (lb_config_load(m->config_path, &conf, err, sizeof(err))) {
		log_err("reload refused, keeping the running configuration: %s", err);
		return;
	}
	if (conf->acceptors != m->snap->conf->acceptors || conf->io_engine != m->snap->conf->io_engine ||
	    conf->buffer_size != m->snap->conf->buffer_size ||
	    conf->buffer_count != m->snap->conf->buffer_count)
		log_warn("reload: acceptors, io_engine and buffer settings take effect only at "
			 "restart");
	apply_log_level(m, conf);
	if (dp_snapshot_build(conf, m->snap, m->n_workers, m->version + 1, &s, err, sizeof(err))) {
		log_err("reload refused, keeping the running configuration: %s", err);
		return;
	}
	m->version++;
	publish(m, s);
	log_info("reloaded %s: %zu listeners (version %llu)", m->config_path, s->conf->n_listeners,
		 (unsigned long long)m->version);
}

/* Wait for every worker's engine; any failure is fatal at start. */
static int wait_workers_ready(struct dp_main *m)
{
	for (unsigned i = 0; i < m->n_workers; i++) {
		int r;

		while (!(r = atomic_load(&m->workers[i].init_result)))
			usleep(1000);
		if (r < 0)
			return r;
	}
	return 0;
}

static int start_workers(struct dp_main *m)
{
	const struct lb_config *c = m->snap->conf;

	m->workers = calloc(m->n_workers, sizeof(*m->workers));
	if (!m->workers)
		return -ENOMEM;
	for (unsigned i = 0; i < m->n_workers; i++) {
		struct dp_worker *w = &m->workers[i];
		int r;

		w->id = i;
		w->eng = &dp_engine_uring;
		w->buffer_size = c->buffer_size;
		w->buffer_count = c->buffer_count;
		dp_snapshot_get(m->snap);
		atomic_init(&w->next, m->snap);
		r = dp_worker_start(w);
		if (r) {
			log_err("cannot start worker %u: %s", i, strerror(-r));
			return r;
		}
	}
	return wait_workers_ready(m);
}

static bool all_stopped(const struct dp_main *m)
{
	for (unsigned i = 0; i < m->n_workers; i++)
		if (!atomic_load(&m->workers[i].stopped))
			return false;
	return true;
}

static void drain(struct dp_main *m, int level)
{
	for (unsigned i = 0; i < m->n_workers; i++) {
		atomic_store(&m->workers[i].drain, level);
		dp_worker_wake(&m->workers[i]);
	}
}

/* Signals are blocked in every thread and taken here, synchronously. */
static int signal_loop(struct dp_main *m, const sigset_t *set)
{
	const struct timespec tick = { .tv_sec = 0, .tv_nsec = 200 * 1000000 };
	int draining = 0;

	while (!all_stopped(m)) {
		int sig = sigtimedwait(set, NULL, &tick);

		if (sig == SIGHUP && !draining) {
			reload(m);
		} else if (sig == SIGTERM || sig == SIGINT) {
			draining++;
			if (draining == 1)
				log_info("%s: draining (at most %u ms), no new connections",
					 strsignal(sig), m->snap->conf->drain_timeout_ms);
			else
				log_info("%s again: closing every connection now", strsignal(sig));
			drain(m, draining > 1 ? 2 : 1);
		}
	}
	for (unsigned i = 0; i < m->n_workers; i++)
		pthread_join(m->workers[i].thread, NULL);
	if (!draining) {
		log_err("every worker stopped unexpectedly");
		return 1;
	}
	log_info("drained, exiting");
	return 0;
}

static int parse_args(int argc, char **argv, struct dp_main *m, bool *check)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' }, { "check", no_argument, NULL, 'k' },
		{ "version", no_argument, NULL, 'V' },      { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int o;

	while ((o = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
		switch (o) {
		case 'c':
			m->config_path = optarg;
			break;
		case 'k':
			*check = true;
			break;
		case 'V':
			printf("layer4-lb %s\n", LB_VERSION);
			exit(0);
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc || !m->config_path) {
		fprintf(stderr, "layer4-lb: %s\n",
			optind < argc ? "unexpected argument" : "--config FILE is required");
		usage(stderr);
		return 2;
	}
	return 0;
}

static int setup_logging(struct dp_main *m)
{
	enum lb_log_level lvl;
	int r = lb_log_level_from_env(&lvl);

	if (r < 0) {
		fprintf(stderr, "layer4-lb: LOG_LEVEL/RUST_LOG must be error, warn, info or debug\n");
		return 2;
	}
	if (r > 0) {
		lb_log_threshold = lvl;
		m->log_level_from_env = true;
	}
	return 0;
}

static int size_workers(struct dp_main *m, const struct lb_config *conf)
{
	struct lb_cpus cpus;
	char err[256];

	if (lb_cpus_detect("/", getenv("NUM_ACCEPTORS"), conf->acceptors, 0, &cpus, err,
			   sizeof(err))) {
		log_err("%s", err);
		return 2;
	}
	m->n_workers = cpus.n;
	log_info("%s", cpus.detail);
	return 0;
}

int main(int argc, char **argv)
{
	struct dp_main m = { .version = 1 };
	struct lb_config *conf;
	bool check = false;
	char err[1024];
	sigset_t set;
	int r;

	r = parse_args(argc, argv, &m, &check);
	if (!r)
		r = setup_logging(&m);
	if (r)
		return r;
	if (lb_config_load(m.config_path, &conf, err, sizeof(err))) {
		fprintf(stderr, "layer4-lb: invalid configuration: %s\n", err);
		return 1;
	}
	if (check) {
		printf("%s: configuration is valid (%zu listeners)\n", m.config_path,
		       conf->n_listeners);
		lb_config_free(conf);
		return 0;
	}
	apply_log_level(&m, conf);
	r = size_workers(&m, conf);
	if (r) {
		lb_config_free(conf);
		return r;
	}
	if (conf->io_engine == LB_ENGINE_EPOLL) {
		log_err("io_engine: epoll is not available in this version yet; use auto or "
			"io_uring");
		lb_config_free(conf);
		return 1;
	}
	if (conf->control_socket[0] || conf->metrics[0])
		log_warn("control_socket and metrics are accepted but not served by this version");
	raise_nofile();
	/* Sends use MSG_NOSIGNAL; this also covers shutdown() and anything else. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* before any thread: they inherit it */

	if (dp_snapshot_build(conf, NULL, m.n_workers, m.version, &m.snap, err, sizeof(err))) {
		log_err("%s", err);
		return 1;
	}
	r = start_workers(&m);
	if (r) {
		log_err("cannot start the %s engine; exiting", dp_engine_uring.name);
		return 1;
	}
	for (unsigned i = 0; i < m.snap->n_listeners; i++)
		log_info("listener %s on %s: %s over %u backends", m.snap->listeners[i].conf->name,
			 m.snap->listeners[i].conf->listen_str,
			 lb_algo_name(m.snap->listeners[i].conf->algorithm),
			 m.snap->listeners[i].n_backends);
	log_info("layer4-lb %s running: %u workers, %s engine", LB_VERSION, m.n_workers,
		 dp_engine_uring.name);
	r = signal_loop(&m, &set);
	dp_snapshot_put(m.snap);
	free(m.workers);
	return r;
}
