/* httpd.h - the controller's /healthz, /readyz and /metrics: a tiny HTTP/1.0 server in the main loop. */
#ifndef CTRL_HTTPD_H
#define CTRL_HTTPD_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#define CTRL_HTTPD_CLIENTS 16
#define CTRL_HTTPD_REQ_MAX 2048
#define CTRL_HTTPD_DEADLINE_MS 5000

/* Fill *body (malloc'd) for path; returns the HTTP status. */
typedef int (*ctrl_httpd_route)(void *arg, const char *path, char **body);

struct ctrl_httpd_client {
	int fd;                      /* -1 = free */
	uint64_t deadline_ms;
	size_t len;
	char buf[CTRL_HTTPD_REQ_MAX];
};

struct ctrl_httpd {
	int lfd;
	ctrl_httpd_route route;
	void *arg;
	struct ctrl_httpd_client cl[CTRL_HTTPD_CLIENTS];
};

/* Listen on "ip:port": 0 or -errno with err set. */
int ctrl_httpd_open(struct ctrl_httpd *h, const char *addr, ctrl_httpd_route route, void *arg,
		    char *err, size_t errlen);
/* The descriptors to wait on, into fds (at most CTRL_HTTPD_CLIENTS + 1). */
unsigned ctrl_httpd_fds(const struct ctrl_httpd *h, struct curl_waitfd *fds);
/* Serve what the wait said is ready, and drop clients past their deadline. */
void ctrl_httpd_serve(struct ctrl_httpd *h, const struct curl_waitfd *fds, unsigned n,
		      uint64_t now_ms);
void ctrl_httpd_close(struct ctrl_httpd *h);

#endif
