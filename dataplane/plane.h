/* plane.h - the main thread: configuration in force, control socket, metrics, signals. */
#ifndef DP_PLANE_H
#define DP_PLANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#include "common/config.h"
#include "dataplane/dp.h"

struct dp_plane;

/* Something in the main thread's epoll set: epoll_event.data.ptr points at it. */
struct dp_evsrc {
	int fd;
	void (*handle)(struct dp_plane *p, struct dp_evsrc *src, uint32_t events);
};

/*
 * A buffered, non-blocking stream socket of the main thread (control or metrics client).
 * Unread input is in[in_off, in_len); unsent output is out[out_off, out_len).  A client that
 * stops reading is not a reason to buffer without end or to spin: input is read only while at
 * most DP_STREAM_OUT_HIGH bytes of output are unsent, and the epoll set holds exactly the
 * events that can make progress (dp_stream_update).
 */
struct dp_stream {
	struct dp_evsrc ev;
	char *in;
	size_t in_off, in_len, in_cap;
	char *out;
	size_t out_len, out_off, out_cap;
	uint32_t watched;      /* epoll events registered */
	bool in_done;          /* nothing more is read (EOF, error, or a server decision) */
	bool close_after;      /* close once the output is flushed */
	unsigned timeout_ms;   /* from the set: how long without progress before the drop */
	uint64_t deadline_ms;  /* dropped by dp_streams_expire at this time (CLOCK_MONOTONIC) */
	struct dp_stream *next;
};

#define DP_STREAM_OUT_HIGH (1u << 20) /* stop reading while more than this is unsent */

/* The clients of one server socket. */
struct dp_streams {
	struct dp_stream *head;
	unsigned n, max;
	unsigned timeout_ms;  /* deadline given at accept, renewed by progress (dp_stream_touch) */
	const char *goodbye;  /* sent, best effort, to a client dropped at its deadline */
};

static inline size_t dp_stream_unsent(const struct dp_stream *s)
{
	return s->out_len - s->out_off;
}

static inline bool dp_stream_backlogged(const struct dp_stream *s)
{
	return dp_stream_unsent(s) > DP_STREAM_OUT_HIGH;
}

/* How long --reuseport-overlap joins: the old pod's stop comes well within it. */
#define DP_OVERLAP_WINDOW_MS (300u * 1000)

/* The main loop's tick: paused listeners come back and client deadlines are checked. */
#define DP_PLANE_TICK_MS 200

/*
 * A server of the main thread (control socket, metrics, handover socket), as the loop sees
 * it: registered with dp_plane_serve() when opened, asked through these and never called by
 * name, so that plane.c does not call into the files that call it (evloop.h).
 */
struct dp_service {
	void (*expire)(struct dp_plane *p, uint64_t now_ms); /* drop clients past deadline */
	bool (*busy)(const struct dp_plane *p);               /* a change must wait now */
	void (*close)(struct dp_plane *p);                    /* at exit */
};

struct dp_plane {
	const char *config_path;
	const char *control_socket;  /* --control-socket, overrides the file's; NULL = none */
	const char *handover_socket; /* --handover-socket, overrides the file's; NULL = none */
	struct lb_config *file;      /* the last good configuration file (owned) */
	struct lb_config *managed;   /* listeners of the last successful apply (owned) or NULL */
	bool applied;
	uint64_t applied_version;
	char *applied_doc;           /* that apply's request line (owned), for a successor */
	size_t applied_doc_len;
	uint64_t applies_ok, applies_failed;
	uint64_t reloads_ok, reloads_failed;
	struct dp_snapshot *snap;    /* in force (reference) */
	uint64_t generation;
	struct dp_worker *workers;
	unsigned n_workers;
	unsigned n_started;          /* workers whose thread was created */
	const struct dp_engine *engine;
	bool log_level_from_env;
	int draining;
	int epfd;
	struct dp_evsrc sig;
	struct dp_control *control;
	struct dp_metrics *metrics;
	struct dp_handover *handover; /* the handover socket, or NULL */
	struct dp_takeover *takeover; /* what our predecessor sent, until it drains */
	bool handed_over;            /* a successor serves our sockets (and owns their files) */
	bool kept_control;           /* ... but not our control socket (its own is elsewhere) */
	bool wait_after_handover;    /* handed over and drained, stay until SIGTERM (a pod) */
	/*
	 * --reuseport-overlap: until then (0: never), an address in use is joined, not refused
	 * (snapshot.c: lsocks_new).  Only for the overlap of an upgrade: afterwards a port another
	 * process of our uid holds is a conflict again, reported as at any start.
	 */
	uint64_t overlap_until_ms;
	bool terminated;             /* SIGTERM or SIGINT came */
	bool lingering;              /* ... and now it waits for it */
	struct dp_evsrc *paused[4];  /* listeners out of the epoll set for want of fds */
	unsigned n_paused;
	uint64_t resume_ms;
	uint64_t expire_ms;          /* next check of the clients' deadlines */
	const struct dp_service *services[4]; /* control, metrics, handover (evloop.c) */
	unsigned n_services;
};

/*
 * Make `file` and `managed` (either may be NULL: keep the current one) the configuration in
 * force: merge, build a snapshot (binding new sockets), hand it to every worker.  On success
 * takes ownership of both; on failure frees neither, changes nothing and fills err.  A managed
 * listener whose address cannot be bound is no failure: it is in force without sockets
 * (p->snap->listeners[i].socks NULL), and every later commit tries its address again.
 */
int dp_plane_commit(struct dp_plane *p, struct lb_config *file, struct lb_config *managed,
		    char *err, size_t errlen);

/* Stop accepting and drain; why says who asked ("Terminated", "handed over to pid 7"). */
void dp_plane_drain(struct dp_plane *p, const char *why);
/* Keep a copy of the request line of the apply in force, for a successor (handover.h). */
void dp_plane_keep_apply(struct dp_plane *p, const char *line, size_t len);

/* Apply command-line overrides to a freshly loaded configuration file. */
void dp_plane_override(const struct dp_plane *p, struct lb_config *conf);
int dp_plane_open(struct dp_plane *p, const sigset_t *signals);
int dp_plane_run(struct dp_plane *p);
/* Stop and join every started worker at once (start-up failure, a worker died). */
void dp_plane_stop_workers(struct dp_plane *p);
/* Frees everything; every started worker must have been joined. */
void dp_plane_close(struct dp_plane *p);

/* stream.c */
int dp_stream_read(struct dp_stream *s, size_t max);
int dp_stream_write(struct dp_stream *s, const char *data, size_t len);
int dp_stream_flush(struct dp_stream *s);
int dp_stream_update(struct dp_plane *p, struct dp_stream *s);
void dp_stream_touch(struct dp_stream *s);
void dp_stream_free(struct dp_stream *s);
int dp_stream_adopt(struct dp_plane *p, struct dp_streams *set, int fd,
		    void (*handle)(struct dp_plane *, struct dp_evsrc *, uint32_t));
void dp_stream_drop(struct dp_streams *set, struct dp_stream *s);
unsigned dp_streams_expire(struct dp_streams *set, uint64_t now_ms);

/* control.c: the Unix control socket. */
/* fd >= 0: our predecessor's listening socket at path, served as it is. */
int dp_control_open(struct dp_plane *p, const char *path, const char *group, int fd, char *err,
		    size_t errlen);
int dp_control_listen_fd(const struct dp_plane *p);
/* Accept no more clients (a successor does); those connected are still answered. */
void dp_control_stop(struct dp_plane *p);
/* Drop clients past their deadline (now_ms from dp_now_ms); run from the loop's tick. */

/* metrics.c: Prometheus text over HTTP. */
int dp_metrics_open(struct dp_plane *p, const char *addr, int fd, char *err, size_t errlen);
int dp_metrics_listen_fd(const struct dp_plane *p);
void dp_metrics_stop(struct dp_plane *p);

/* ctl.c: `layer4-lb ctl ...`, the operator's client. */
int dp_ctl_main(int argc, char **argv);

/* status.c: what status replies and /metrics report. */
cJSON *dp_status_json(const struct dp_plane *p);
/*
 * The listeners in force that could not be bound, for an apply's reply: a list (maybe empty)
 * of {"name", "listen", "error"}, or NULL without memory.
 */
cJSON *dp_status_bind_failures(const struct dp_plane *p);
char *dp_metrics_text(const struct dp_plane *p, size_t *ret_len);

#endif
