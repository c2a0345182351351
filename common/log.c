/* log.c - leveled logging to stderr with a timestamp, one write(2) per line. */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

_Atomic int lb_log_threshold = LB_LOG_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

const char *lb_log_level_name(enum lb_log_level l)
{
	return (unsigned)l < 4 ? level_names[l] : "?";
}

int lb_log_level_parse(const char *s, enum lb_log_level *ret)
{
	static const struct {
		const char *name;
		enum lb_log_level lvl;
	} map[] = {
		{ "error", LB_LOG_ERROR }, { "warn", LB_LOG_WARN },   { "warning", LB_LOG_WARN },
		{ "info", LB_LOG_INFO },   { "debug", LB_LOG_DEBUG }, { "trace", LB_LOG_DEBUG },
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (!strcasecmp(s, map[i].name)) {
			*ret = map[i].lvl;
			return 0;
		}
	}
	return -EINVAL;
}

/* RUST_LOG looks like "info" or "layer4_lb=debug,warn": take the first level we know. */
static int parse_rust_log(const char *v, enum lb_log_level *ret)
{
	char buf[256], *save = NULL, *tok;

	snprintf(buf, sizeof(buf), "%s", v);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (!lb_log_level_parse(eq ? eq + 1 : tok, ret))
			return 0;
	}
	return -EINVAL;
}

int lb_log_level_from_env(enum lb_log_level *ret)
{
	const char *v = getenv("LOG_LEVEL");

	if (v && *v)
		return lb_log_level_parse(v, ret) ? -EINVAL : 1;
	v = getenv("RUST_LOG");
	if (v && *v)
		return parse_rust_log(v, ret) ? -EINVAL : 1;
	return 0;
}

void lb_log(enum lb_log_level lvl, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n, m;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		     ts.tv_nsec / 1000000, lb_log_level_name(lvl));
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line so lines from several threads never interleave. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}
