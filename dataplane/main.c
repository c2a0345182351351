/* main.c - layer4-lb: arguments, configuration, workers, signals (drain and reload). */
#include <assert.h>
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
#include "common/ctlproto.h"
#include "common/log.h"
#include "dataplane/binder.h"
#include "dataplane/dp.h"
#include "dataplane/engine.h"
#include "dataplane/handover.h"
#include "dataplane/plane.h"
#include "dataplane/snapshot.h"
#include "dataplane/worker.h"

#define NOFILE_WANTED 100000

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: layer4-lb --config FILE [--check] [--control-socket PATH]\n"
		"                 [--handover-socket PATH]\n"
		"                 [--takeover PATH | --takeover-if-running PATH]\n"
		"                 [--wait-after-handover] [--reuseport-overlap]\n"
		"       layer4-lb ctl [-s SOCKET | -c CONFIG] ping | status | apply FILE\n"
		"       layer4-lb binder --socket PATH --uid UID [--gid GID]\n"
		"       layer4-lb --version | --help\n"
		"\n"
		"io_uring Layer 4 (TCP) load balancer.\n"
		"\n"
		"  -c, --config FILE  configuration file (YAML; see docs/configuration.md)\n"
		"      --check        validate the configuration file and exit\n"
		"  -s, --control-socket PATH\n"
		"                     serve the control socket at PATH (overrides control_socket)\n"
		"      --handover-socket PATH\n"
		"                     let a new process take over from this one through PATH\n"
		"                     (overrides handover_socket)\n"
		"      --takeover PATH\n"
		"                     take over the sockets of the process serving the handover\n"
		"                     socket at PATH, then tell it to drain and exit\n"
		"      --takeover-if-running PATH\n"
		"                     the same when a process serves PATH; start afresh when\n"
		"                     none does (no socket file, or nobody listening on it)\n"
		"      --wait-after-handover\n"
		"                     once handed over and drained, stay (serving ping and\n"
		"                     status) until SIGTERM: a container that exits is restarted\n"
		"      --reuseport-overlap\n"
		"                     listen beside a running process of the same user on its\n"
		"                     addresses (SO_REUSEPORT) instead of refusing them: an upgrade\n"
		"                     without a handover socket; set net.ipv4.tcp_migrate_req=1 so\n"
		"                     that the old process's queued connections move here as it stops\n"
		"                     (for the first 300 s: later a port in use is refused again)\n"
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

/* Wait for every worker's engine; any failure is fatal at start. */
static int wait_workers_ready(struct dp_plane *p)
{
	for (unsigned i = 0; i < p->n_workers; i++) {
		int r;

		while (!(r = atomic_load(&p->workers[i].init_result)))
			usleep(1000);
		if (r < 0)
			return r;
	}
	return 0;
}

static int start_workers(struct dp_plane *p)
{
	const struct lb_config *c = p->snap->conf;

	p->workers = calloc(p->n_workers, sizeof(*p->workers));
	if (!p->workers)
		return -ENOMEM;
	for (unsigned i = 0; i < p->n_workers; i++) {
		struct dp_worker *w = &p->workers[i];
		int r;

		w->id = i;
		w->eng = p->engine;
		w->buffer_size = c->buffer_size;
		w->buffer_count = c->buffer_count;
		/* Backpressure by bytes: a slow reader pins at most ~1 MiB per direction. */
		w->half_qmax = DP_HALF_QBYTES / c->buffer_size;
		if (w->half_qmax < 2)
			w->half_qmax = 2;
		if (w->half_qmax > DP_HALF_QMAX)
			w->half_qmax = DP_HALF_QMAX;
		dp_snapshot_get(p->snap);
		atomic_init(&w->next, p->snap);
		r = dp_worker_start(w);
		if (r) {
			log_err("cannot start worker %u: %s", i, strerror(-r));
			return r;
		}
		p->n_started++;
	}
	return wait_workers_ready(p);
}

/* An absolute path that fits a Unix socket address, or exit status 2. */
static int socket_path_arg(const char *flag, const char *path, const char **ret)
{
	if (path[0] != '/' || strlen(path) >= LB_PATH_MAX) {
		fprintf(stderr, "layer4-lb: --%s must be an absolute path shorter than %d bytes\n",
			flag, LB_PATH_MAX);
		return 2;
	}
	*ret = path;
	return 0;
}

static int parse_args(int argc, char **argv, struct dp_plane *p, const char **takeover,
		      bool *if_running, bool *check)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
		{ "control-socket", required_argument, NULL, 's' },
		{ "handover-socket", required_argument, NULL, 'H' },
		{ "takeover", required_argument, NULL, 'T' },
		{ "takeover-if-running", required_argument, NULL, 'R' },
		{ "wait-after-handover", no_argument, NULL, 'W' },
		{ "reuseport-overlap", no_argument, NULL, 'O' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int o;

	while ((o = getopt_long(argc, argv, "c:s:Vh", opts, NULL)) != -1) {
		switch (o) {
		case 'c':
			p->config_path = optarg;
			break;
		case 's':
			if (socket_path_arg("control-socket", optarg, &p->control_socket))
				return 2;
			break;
		case 'H':
			if (socket_path_arg("handover-socket", optarg, &p->handover_socket))
				return 2;
			break;
		case 'T':
		case 'R':
			if (*takeover) {
				fprintf(stderr, "layer4-lb: --takeover and --takeover-if-running "
						"exclude each other\n");
				return 2;
			}
			if (socket_path_arg(o == 'T' ? "takeover" : "takeover-if-running", optarg,
					    takeover))
				return 2;
			*if_running = o == 'R';
			break;
		case 'k':
			*check = true;
			break;
		case 'W':
			p->wait_after_handover = true;
			break;
		case 'O':
			p->overlap_until_ms = dp_now_ms() + DP_OVERLAP_WINDOW_MS;
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
	if (optind < argc || !p->config_path) {
		fprintf(stderr, "layer4-lb: %s\n",
			optind < argc ? "unexpected argument" : "--config FILE is required");
		usage(stderr);
		return 2;
	}
	return 0;
}

/* An environment value fit for a message: short, and no control characters. */
static const char *shown(const char *v, char *buf, size_t len)
{
	size_t i;

	for (i = 0; v[i] && i + 1 < len; i++)
		buf[i] = (unsigned char)v[i] < 0x20 || v[i] == 0x7f ? '?' : v[i];
	buf[i] = '\0';
	return buf;
}

static int setup_logging(struct dp_plane *p)
{
	const char *name = "LOG_LEVEL", *v = getenv(name);
	enum lb_log_level lvl;
	int r = lb_log_level_from_env(&lvl);
	char buf[72];

	if (r < 0) {
		if (!v || !*v) /* the one lb_log_level_from_env read */
			v = getenv(name = "RUST_LOG");
		assert(v); /* it fails only on a value that is set, and one thread reads it again */
		fprintf(stderr, "layer4-lb: %s=\"%s\" names no log level: use error, warn, info or "
				"debug\n",
			name, shown(v, buf, sizeof(buf)));
		return 2;
	}
	if (r > 0) {
		lb_log_threshold = lvl;
		p->log_level_from_env = true;
	}
	return 0;
}

/* NUM_ACCEPTORS as start-up reads it, also for --check (which then says nothing more). */
static int size_workers(struct dp_plane *p, const struct lb_config *conf, bool check)
{
	struct lb_cpus cpus;
	char err[256];

	if (lb_cpus_detect("/", getenv("NUM_ACCEPTORS"), conf->acceptors, 0, &cpus, err,
			   sizeof(err))) {
		if (check)
			fprintf(stderr, "layer4-lb: %s\n", err);
		else
			log_err("%s", err);
		return 2;
	}
	p->n_workers = cpus.n;
	if (!check)
		log_info("%s", cpus.detail);
	return 0;
}

/* io_engine: auto takes io_uring when this host lets us, else epoll, and says which and why. */
static int choose_engine(struct dp_plane *p, const struct lb_config *conf)
{
	char why[512] = "";

	if (conf->io_engine == LB_ENGINE_EPOLL) {
		p->engine = &dp_engine_epoll;
		log_info("io_engine: epoll (configured)");
		return 0;
	}
	if (!dp_uring_probe(why, sizeof(why))) {
		p->engine = &dp_engine_uring;
		return 0;
	}
	if (conf->io_engine == LB_ENGINE_IO_URING) {
		log_err("io_engine: io_uring was configured but %s", why);
		return 1;
	}
	p->engine = &dp_engine_epoll;
	log_warn("io_engine auto: %s; using the epoll engine", why);
	return 0;
}

/*
 * The first configuration in force: the file's listeners and, after a takeover, the managed
 * listeners our predecessor had applied, so that we serve what it served before any
 * controller speaks to us.  Its sockets are taken by address (dp_snapshot_build).
 */
static int commit_first(struct dp_plane *p, struct lb_config *conf, char *err, size_t errlen)
{
	struct dp_takeover *t = p->takeover;
	struct lb_ctl_request req;
	char why[768];
	int r;

	if (!t || !t->apply)
		return dp_plane_commit(p, conf, NULL, err, errlen);
	r = lb_ctl_request_parse(t->apply, t->apply_len, &req, why, sizeof(why));
	if (!r && req.op != LB_CTL_APPLY) {
		snprintf(why, sizeof(why), "not an apply");
		r = -EPROTO;
	}
	if (!r && (r = dp_plane_commit(p, conf, req.listeners, why, sizeof(why))) == 0) {
		req.listeners = NULL; /* the plane's now */
		p->applied = true;
		p->applied_version = req.version;
		dp_plane_keep_apply(p, t->apply, t->apply_len);
	}
	if (r)
		snprintf(err, errlen, "the listeners pid %d had applied (with this configuration "
				      "file): %s", (int)t->pid, why);
	lb_ctl_request_clear(&req);
	return r;
}

/* The control, metrics and handover sockets: our predecessor's where they are the same. */
static int open_services(struct dp_plane *p, const struct lb_config *conf, char *err,
			 size_t errlen)
{
	struct dp_takeover *t = p->takeover;
	int r = 0;

	if (conf->control_socket[0])
		r = dp_control_open(p, conf->control_socket, conf->control_socket_group,
				    dp_takeover_take_unix(t, "control", conf->control_socket),
				    err, errlen);
	if (!r && conf->metrics[0])
		r = dp_metrics_open(p, conf->metrics, dp_takeover_take_metrics(t, conf->metrics),
				    err, errlen);
	if (!r && conf->handover_socket[0])
		r = dp_handover_open(p, conf->handover_socket,
				     dp_takeover_take_unix(t, "handover", conf->handover_socket),
				     err, errlen);
	return r;
}

/*
 * Listening sockets, control socket and metrics, before any worker starts.  Takes conf: the
 * plane owns it once committed, and it is freed here when it never got that far.
 */
static int open_plane(struct dp_plane *p, struct lb_config *conf, const sigset_t *signals)
{
	char err[1024];
	int r;

	r = dp_plane_open(p, signals);
	if (r) {
		lb_config_free(conf);
		log_err("cannot set up the main loop: %s", strerror(-r));
		return r;
	}
	r = commit_first(p, conf, err, sizeof(err));
	if (r) {
		lb_config_free(conf);
		log_err("%s", err);
		return r;
	}
	/* Sockets of addresses we do not serve: our copies go, our predecessor's drain. */
	if (p->takeover)
		dp_lsocks_pool_clear(&p->takeover->pool);
	r = open_services(p, conf, err, sizeof(err));
	if (r)
		log_err("%s", err);
	return r;
}

/*
 * Before anything is bound: a takeover that cannot be done is an error, not a fresh start;
 * with if_running, nobody serving at path is (the first pod of a node).
 */
static int take_over(struct dp_plane *p, const char *path, bool if_running)
{
	char err[1024];
	int r = if_running ? dp_takeover_receive_if_running(path, &p->takeover, err, sizeof(err))
			   : dp_takeover_receive(path, &p->takeover, err, sizeof(err));

	if (r == 1) {
		log_info("takeover: no process to take over from (%s); starting afresh", err);
		return 0;
	}
	if (r) {
		log_err("takeover: %s; the running process is unchanged", err);
		return r;
	}
	log_info("takeover: received %u sockets (%u listener addresses) and %s from pid %d",
		 p->takeover->n_fds, p->takeover->pool.n,
		 p->takeover->apply ? "its last apply" : "no apply", (int)p->takeover->pid);
	return 0;
}

/*
 * --reuseport-overlap: with net.ipv4.tcp_migrate_req (Linux 5.14+) the kernel moves what
 * waits in a closing listener's queue to another of its SO_REUSEPORT group, ours; without it
 * those connections are reset when our predecessor stops.  Only the administrator can set
 * it (it is the network namespace's), so we say what it is.
 */
static void log_overlap(void)
{
	char v[32] = "";
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_migrate_req", "re");
	int err = f ? 0 : errno;

	if (f) {
		if (!fgets(v, sizeof(v), f))
			snprintf(v, sizeof(v), "unreadable");
		fclose(f);
		v[strcspn(v, "\n")] = '\0';
	} else {
		snprintf(v, sizeof(v), "%s", err == ENOENT ? "missing (Linux before 5.14)"
							   : strerror(err));
	}
	if (!strcmp(v, "1"))
		log_info("reuseport overlap: for %u s, listening beside any process of our user on "
			 "our addresses; net.ipv4.tcp_migrate_req=1 moves its queued connections to "
			 "us when it stops", DP_OVERLAP_WINDOW_MS / 1000);
	else
		log_warn("reuseport overlap: for %u s, listening beside any process of our user on "
			 "our addresses, but net.ipv4.tcp_migrate_req is %s: connections queued on a "
			 "process we replace are reset when it stops (set it to 1)",
			 DP_OVERLAP_WINDOW_MS / 1000, v);
}

/* Our workers accept on the sockets: our predecessor may now stop and drain. */
static void finish_takeover(struct dp_plane *p)
{
	char err[512];
	int pid = (int)p->takeover->pid;

	if (dp_takeover_finish(p->takeover, err, sizeof(err)))
		log_warn("takeover: pid %d %s; it may still be accepting too: stop it with SIGTERM",
			 pid, err);
	else
		log_info("takeover: pid %d stops accepting and drains; we serve", pid);
	dp_takeover_free(p->takeover);
	p->takeover = NULL;
}

static void log_started(const struct dp_plane *p)
{
	for (unsigned i = 0; i < p->snap->n_listeners; i++)
		log_info("listener %s on %s: %s over %u backends", p->snap->listeners[i].conf->name,
			 p->snap->listeners[i].conf->listen_str,
			 lb_algo_name(p->snap->listeners[i].conf->algorithm),
			 p->snap->listeners[i].n_backends);
	if (p->control)
		log_info("control socket %s", p->file->control_socket);
	if (p->metrics)
		log_info("metrics on http://%s/metrics", p->file->metrics);
	if (p->handover)
		log_info("handover socket %s", p->file->handover_socket);
	log_info("layer4-lb %s running: %u worker%s, %s engine, log level %s", LB_VERSION,
		 p->n_workers, p->n_workers == 1 ? "" : "s", p->engine->name,
		 lb_log_level_name(lb_log_threshold));
}

int main(int argc, char **argv)
{
	struct dp_plane p = { .engine = &dp_engine_uring, .epfd = -1, .sig.fd = -1 };
	const char *takeover = NULL;
	bool if_running = false;
	struct lb_config *conf;
	bool check = false;
	char err[1024];
	sigset_t set;
	int r;

	if (argc > 1 && !strcmp(argv[1], "ctl"))
		return dp_ctl_main(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "binder"))
		return dp_binder_main(argc - 1, argv + 1);
	r = parse_args(argc, argv, &p, &takeover, &if_running, &check);
	if (!r)
		r = setup_logging(&p);
	if (r)
		return r;
	if (lb_config_load(p.config_path, &conf, err, sizeof(err))) {
		fprintf(stderr, "layer4-lb: invalid configuration: %s\n", err);
		return 1;
	}
	/* --check judges the environment as start-up would: a wrong NUM_ACCEPTORS fails both. */
	r = size_workers(&p, conf, check);
	if (r)
		goto out_conf;
	if (check) {
		printf("%s: configuration is valid (listeners: %zu)\n", p.config_path,
		       conf->n_listeners);
		goto out_conf;
	}
	if (!p.log_level_from_env && conf->log_level_set)
		lb_log_threshold = conf->log_level;
	dp_plane_override(&p, conf);
	r = choose_engine(&p, conf);
	if (r)
		goto out_conf;
	raise_nofile();
	/* Sends use MSG_NOSIGNAL; this also covers shutdown() and anything else. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* before any thread: they inherit it */

	if (takeover && take_over(&p, takeover, if_running)) {
		r = 1;
		goto out_conf;
	}
	if (p.overlap_until_ms)
		log_overlap();
	r = open_plane(&p, conf, &set); /* conf is the plane's (or freed) from here */
	if (r)
		goto out_failed;
	r = start_workers(&p);
	if (r) {
		log_err("cannot start the %s engine; exiting", p.engine->name);
		goto out_failed;
	}
	if (p.takeover)
		finish_takeover(&p);
	log_started(&p);
	r = dp_plane_run(&p);
	dp_plane_close(&p);
	return r;

out_failed:
	/* Workers first: nothing they use may be freed under them. */
	dp_plane_stop_workers(&p);
	dp_plane_close(&p); /* also leaves no socket file of ours behind */
	return 1;
out_conf:
	lb_config_free(conf);
	return r;
}
