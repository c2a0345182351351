/* plane.c - the main thread's loop: signals, control socket, metrics, configuration changes. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/log.h"
#include "dataplane/evloop.h"
#include "dataplane/handover.h"
#include "dataplane/plane.h"
#include "dataplane/snapshot.h"
#include "dataplane/worker.h"

/*
 * Design: the workers never wait for the main thread and the main thread never touches a
 * worker's ring.  Every change of configuration, from SIGHUP or an apply, goes the same way:
 * merge the file's listeners with the managed ones, build a complete snapshot (validating it
 * and binding every new socket), and only then hand it to each worker through an atomic
 * pointer and an eventfd wake-up.  A change that fails anywhere before that point changes
 * nothing.  The one failure that does not stop a change is a managed listener's bind: that
 * listener goes in without sockets and every later change tries it again (snapshot.c).
 */

/* Control and metrics clients past their deadline, checked once a tick. */
static void expire_clients(struct dp_plane *p)
{
	uint64_t now = dp_now_ms();

	if (now < p->expire_ms)
		return;
	p->expire_ms = now + DP_PLANE_TICK_MS;
	dp_plane_expire_clients(p, now);
}

static int any_stopped(const struct dp_plane *p)
{
	for (unsigned i = 0; i < p->n_workers; i++)
		if (atomic_load(&p->workers[i].stopped))
			return (int)i;
	return -1;
}

/* Hand a snapshot to every worker; each takes its own reference. */
static void publish(struct dp_plane *p, struct dp_snapshot *s)
{
	dp_snapshot_publish(s);
	for (unsigned i = 0; p->workers && i < p->n_workers; i++) {
		struct dp_snapshot *old;

		dp_snapshot_get(s);
		old = atomic_exchange(&p->workers[i].next, s);
		dp_snapshot_put(old); /* one the worker never picked up */
		dp_worker_wake(&p->workers[i]);
	}
	dp_snapshot_put(p->snap);
	p->snap = s;
}

int dp_plane_commit(struct dp_plane *p, struct lb_config *file, struct lb_config *managed,
		    char *err, size_t errlen)
{
	struct lb_config *merged;
	struct dp_snapshot *s;
	int r;

	r = lb_config_merge(file ? file : p->file, managed ? managed : p->managed, &merged, err,
			    errlen);
	if (r)
		return r;
	merged->reuseport_overlap = p->overlap_until_ms && dp_now_ms() < p->overlap_until_ms;
	/* dp_snapshot_build owns merged from here, also on failure. */
	r = dp_snapshot_build(merged, p->snap, p->takeover ? &p->takeover->pool : NULL,
			      p->n_workers, p->generation + 1, &s, err, errlen);
	if (r)
		return r;
	p->generation++;
	publish(p, s);
	if (file) {
		lb_config_free(p->file);
		p->file = file;
	}
	if (managed) {
		lb_config_free(p->managed);
		p->managed = managed;
	}
	return 0;
}

void dp_plane_override(const struct dp_plane *p, struct lb_config *conf)
{
	if (p->control_socket)
		snprintf(conf->control_socket, sizeof(conf->control_socket), "%s", p->control_socket);
	if (p->handover_socket)
		snprintf(conf->handover_socket, sizeof(conf->handover_socket), "%s",
			 p->handover_socket);
}

void dp_plane_keep_apply(struct dp_plane *p, const char *line, size_t len)
{
	free(p->applied_doc);
	p->applied_doc = malloc(len);
	p->applied_doc_len = p->applied_doc ? len : 0;
	if (p->applied_doc)
		memcpy(p->applied_doc, line, len);
	else
		log_warn("out of memory keeping the apply for a successor: a handover will carry "
			 "the file's listeners only");
}

/*
 * Settings that size the process are read once at start; a reload that changes them says which,
 * by name, into buf ("acceptors, metrics").  Returns how many.
 */
static unsigned restart_only(const struct lb_config *cur, const struct lb_config *conf,
			     char *buf, size_t len)
{
	const struct {
		const char *name;
		bool changed;
	} rows[] = {
		{ "acceptors", conf->acceptors != cur->acceptors },
		{ "io_engine", conf->io_engine != cur->io_engine },
		{ "buffer_size", conf->buffer_size != cur->buffer_size },
		{ "buffer_count", conf->buffer_count != cur->buffer_count },
		{ "control_socket", strcmp(conf->control_socket, cur->control_socket) != 0 },
		{ "control_socket_group",
		  strcmp(conf->control_socket_group, cur->control_socket_group) != 0 },
		{ "handover_socket", strcmp(conf->handover_socket, cur->handover_socket) != 0 },
		{ "metrics", strcmp(conf->metrics, cur->metrics) != 0 },
	};
	unsigned n = 0;
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		if (!rows[i].changed)
			continue;
		used += (size_t)snprintf(buf + used, len - used, "%s%s", n ? ", " : "", rows[i].name);
		if (used >= len)
			used = len - 1;
		n++;
	}
	return n;
}

static void reload(struct dp_plane *p)
{
	const struct lb_config *cur = p->file;
	struct lb_config_diff d;
	struct lb_config *conf;
	char err[1024], changed[160];

	if (dp_plane_busy(p)) {
		snprintf(err, sizeof(err), "a successor process is taking over our sockets");
		goto out_refused;
	}
	if (lb_config_load(p->config_path, &conf, err, sizeof(err)))
		goto out_refused;
	dp_plane_override(p, conf);
	if (restart_only(cur, conf, changed, sizeof(changed)))
		log_warn("reload: %s changed; %s only at restart", changed,
			 strchr(changed, ',') ? "these take effect" : "it takes effect");
	lb_config_diff(cur, conf, &d);
	if (dp_plane_commit(p, conf, NULL, err, sizeof(err))) {
		lb_config_free(conf);
		goto out_refused;
	}
	if (!p->log_level_from_env && conf->log_level_set)
		lb_log_threshold = conf->log_level;
	p->reloads_ok++;
	log_info("reloaded %s: file listeners +%u -%u ~%u =%u, backends +%u -%u; %u listeners in "
		 "force",
		 p->config_path, d.listeners_added, d.listeners_removed, d.listeners_changed,
		 d.listeners_unchanged, d.backends_added, d.backends_removed, p->snap->n_listeners);
	/* Only managed listeners can be left unbound: a file listener's failure refused it. */
	for (unsigned i = 0; i < p->snap->n_listeners; i++)
		if (!p->snap->listeners[i].socks)
			log_warn("reload: listener %s is still not serving: cannot listen on "
				 "%s: %s",
				 p->snap->listeners[i].conf->name,
				 p->snap->listeners[i].conf->listen_str,
				 strerror(-p->snap->listeners[i].bind_err));
	return;
out_refused:
	p->reloads_failed++;
	log_err("reload refused, keeping the running configuration: %s", err);
}

void dp_plane_drain(struct dp_plane *p, const char *why)
{
	p->draining++;
	if (p->draining == 1)
		log_info("%s: draining (at most %u ms), no new connections", why,
			 p->snap->conf->drain_timeout_ms);
	else
		log_info("%s again: closing every connection now", why);
	for (unsigned i = 0; i < p->n_workers; i++) {
		atomic_store(&p->workers[i].drain, p->draining > 1 ? 2 : 1);
		dp_worker_wake(&p->workers[i]);
	}
}

static void signal_event(struct dp_plane *p, struct dp_evsrc *src, uint32_t events)
{
	struct signalfd_siginfo si;

	while (read(src->fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGHUP && !p->draining)
			reload(p);
		else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			p->terminated = true;
			dp_plane_drain(p, strsignal(si.ssi_signo));
		}
	}
}

static bool all_stopped(const struct dp_plane *p)
{
	for (unsigned i = 0; i < p->n_workers; i++)
		if (!atomic_load(&p->workers[i].stopped))
			return false;
	return true;
}

/* SIGTERM, SIGINT and SIGHUP must already be blocked in every thread. */
int dp_plane_open(struct dp_plane *p, const sigset_t *signals)
{
	p->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (p->epfd == -1)
		return -errno;
	p->sig.fd = signalfd(-1, signals, SFD_NONBLOCK | SFD_CLOEXEC);
	if (p->sig.fd == -1)
		return -errno;
	p->sig.handle = signal_event;
	return dp_plane_watch(p, &p->sig, EPOLLIN);
}

/*
 * Handed over and drained, with --wait-after-handover: a container that exited now would be
 * restarted in the old pod, and would take the sockets back from the new one.  So it stays,
 * serving only its own control socket (ping, status) if the successor did not take it, until
 * the pod is deleted.
 */
static bool linger(struct dp_plane *p)
{
	if (!p->handed_over || !p->wait_after_handover || p->terminated)
		return false;
	if (!p->lingering) {
		p->lingering = true;
		log_info("handed over and drained: waiting for SIGTERM (--wait-after-handover)");
	}
	return true;
}

/* Runs until every worker has stopped; returns the process exit status. */
int dp_plane_run(struct dp_plane *p)
{
	struct epoll_event evs[32];

	while (!all_stopped(p) || linger(p)) {
		int n = epoll_wait(p->epfd, evs, 32, DP_PLANE_TICK_MS), dead;

		for (int i = 0; i < n; i++) {
			struct dp_evsrc *src = evs[i].data.ptr;

			src->handle(p, src, evs[i].events);
		}
		dp_plane_resume_paused(p);
		expire_clients(p);
		/*
		 * A worker that died outside a drain leaves its share of the listeners' traffic
		 * unserved: better to exit and be restarted than to limp.
		 */
		if (!p->draining && (dead = any_stopped(p)) >= 0) {
			log_err("worker %d stopped unexpectedly; exiting", dead);
			dp_plane_stop_workers(p);
			return 1;
		}
	}
	for (unsigned i = 0; i < p->n_started; i++)
		pthread_join(p->workers[i].thread, NULL);
	p->n_started = 0;
	if (!p->draining) {
		log_err("every worker stopped unexpectedly");
		return 1;
	}
	log_info("drained, exiting");
	return 0;
}

void dp_plane_stop_workers(struct dp_plane *p)
{
	for (unsigned i = 0; i < p->n_started; i++) {
		atomic_store(&p->workers[i].drain, 2);
		dp_worker_wake(&p->workers[i]);
	}
	for (unsigned i = 0; i < p->n_started; i++)
		pthread_join(p->workers[i].thread, NULL);
	p->n_started = 0;
}

void dp_plane_close(struct dp_plane *p)
{
	dp_plane_close_services(p);
	dp_takeover_free(p->takeover);
	p->takeover = NULL;
	free(p->applied_doc);
	if (p->sig.fd > 0)
		close(p->sig.fd);
	if (p->epfd > 0)
		close(p->epfd);
	/* Workers are joined: a snapshot handed to one that never took it is ours to drop. */
	for (unsigned i = 0; p->workers && i < p->n_workers; i++)
		dp_snapshot_put(atomic_exchange(&p->workers[i].next, NULL));
	dp_snapshot_put(p->snap);
	p->snap = NULL;
	lb_config_free(p->file);
	lb_config_free(p->managed);
	free(p->workers);
}
