/*
 * seccomp_run.c - run a program under a seccomp profile in the JSON format Docker, podman,
 * containerd and CRI-O read (what a Kubernetes "Localhost" profile is), the way a container
 * runtime applies it: no_new_privs, the filter, then execve.
 *
 *   seccomp_run PROFILE.json PROGRAM [ARGS...]
 *
 * Understood: defaultAction, defaultErrnoRet, architectures, and syscalls[] entries of names,
 * action and errnoRet.  Argument conditions and capability includes/excludes are refused with
 * a message rather than ignored: a test must not pass under a filter looser than the profile.
 * Names this kernel's architecture does not know are skipped, as runc and crun do.
 */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	long len;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)len + 1))) {
		if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
			free(buf);
			buf = NULL;
		} else {
			buf[len] = '\0';
		}
	}
	fclose(f);
	return buf;
}

/* An action name and its errno (errnoRet, else the default) as libseccomp's action code. */
static int action(const char *name, const cJSON *errno_ret, int def_errno, uint32_t *ret)
{
	int e = cJSON_IsNumber(errno_ret) ? errno_ret->valueint : def_errno;

	if (!strcmp(name, "SCMP_ACT_ALLOW"))
		*ret = SCMP_ACT_ALLOW;
	else if (!strcmp(name, "SCMP_ACT_ERRNO"))
		*ret = SCMP_ACT_ERRNO(e);
	else if (!strcmp(name, "SCMP_ACT_LOG"))
		*ret = SCMP_ACT_LOG;
	else if (!strcmp(name, "SCMP_ACT_TRAP"))
		*ret = SCMP_ACT_TRAP;
	else if (!strcmp(name, "SCMP_ACT_KILL") || !strcmp(name, "SCMP_ACT_KILL_THREAD"))
		*ret = SCMP_ACT_KILL;
	else if (!strcmp(name, "SCMP_ACT_KILL_PROCESS"))
		*ret = SCMP_ACT_KILL_PROCESS;
	else
		return -EINVAL;
	return 0;
}

static int nonempty(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return v && !cJSON_IsNull(v) && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0) &&
	       !(cJSON_IsObject(v) && !v->child);
}

/* Build the filter the profile describes; on error print what was wrong and return NULL. */
static scmp_filter_ctx build(const char *path)
{
	const cJSON *def, *sys, *archs, *e;
	scmp_filter_ctx ctx = NULL;
	char *text = slurp(path);
	cJSON *prof = NULL;
	uint32_t def_act;
	int def_errno = EPERM;

	if (!text) {
		fprintf(stderr, "seccomp_run: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	prof = cJSON_Parse(text);
	free(text);
	if (!cJSON_IsObject(prof)) {
		fprintf(stderr, "seccomp_run: %s: not a JSON object\n", path);
		goto out;
	}
	e = cJSON_GetObjectItemCaseSensitive(prof, "defaultErrnoRet");
	if (cJSON_IsNumber(e))
		def_errno = e->valueint;
	def = cJSON_GetObjectItemCaseSensitive(prof, "defaultAction");
	if (!cJSON_IsString(def) || action(def->valuestring, NULL, def_errno, &def_act)) {
		fprintf(stderr, "seccomp_run: %s: defaultAction missing or unknown\n", path);
		goto out;
	}
	ctx = seccomp_init(def_act);
	if (!ctx) {
		fprintf(stderr, "seccomp_run: seccomp_init failed\n");
		goto out;
	}
	archs = cJSON_GetObjectItemCaseSensitive(prof, "architectures");
	cJSON_ArrayForEach(e, archs) {
		uint32_t a;

		if (!cJSON_IsString(e) || strncmp(e->valuestring, "SCMP_ARCH_", 10) ||
		    !(a = seccomp_arch_resolve_name(e->valuestring + 10))) {
			fprintf(stderr, "seccomp_run: %s: unknown architecture\n", path);
			goto fail;
		}
		if (a != seccomp_arch_native() && seccomp_arch_add(ctx, a) && errno != EEXIST)
			goto fail;
	}
	sys = cJSON_GetObjectItemCaseSensitive(prof, "syscalls");
	if (!cJSON_IsArray(sys)) {
		fprintf(stderr, "seccomp_run: %s: syscalls is not a list\n", path);
		goto fail;
	}
	cJSON_ArrayForEach(e, sys) {
		const cJSON *act = cJSON_GetObjectItemCaseSensitive(e, "action");
		const cJSON *names = cJSON_GetObjectItemCaseSensitive(e, "names");
		const cJSON *n;
		uint32_t a;

		if (nonempty(e, "args") || nonempty(e, "includes") || nonempty(e, "excludes")) {
			fprintf(stderr, "seccomp_run: %s: args, includes and excludes are not "
					"supported by this tool\n", path);
			goto fail;
		}
		if (!cJSON_IsString(act) ||
		    action(act->valuestring, cJSON_GetObjectItemCaseSensitive(e, "errnoRet"),
			   def_errno, &a) || !cJSON_IsArray(names)) {
			fprintf(stderr, "seccomp_run: %s: a syscalls entry lacks names or a known "
					"action\n", path);
			goto fail;
		}
		cJSON_ArrayForEach(n, names) {
			int nr = cJSON_IsString(n) ? seccomp_syscall_resolve_name(n->valuestring)
						   : __NR_SCMP_ERROR;
			int r;

			if (nr == __NR_SCMP_ERROR) {
				fprintf(stderr, "seccomp_run: %s: skipping unknown system call %s\n",
					path, cJSON_IsString(n) ? n->valuestring : "(not a string)");
				continue;
			}
			if (a == def_act)
				continue; /* libseccomp refuses a rule that repeats the default */
			r = seccomp_rule_add(ctx, a, nr, 0);
			if (r) {
				fprintf(stderr, "seccomp_run: rule for %s: %s\n", n->valuestring,
					strerror(-r));
				goto fail;
			}
		}
	}
	cJSON_Delete(prof);
	return ctx;
fail:
	seccomp_release(ctx);
	ctx = NULL;
out:
	cJSON_Delete(prof);
	return NULL;
}

int main(int argc, char **argv)
{
	scmp_filter_ctx ctx;
	int r;

	if (argc < 3) {
		fprintf(stderr, "usage: seccomp_run PROFILE.json PROGRAM [ARGS...]\n");
		return 2;
	}
	ctx = build(argv[1]);
	if (!ctx)
		return 2;
	/* no_new_privs is libseccomp's default (SCMP_FLTATR_CTL_NNP), as in a runtime. */
	r = seccomp_load(ctx);
	seccomp_release(ctx);
	if (r) {
		fprintf(stderr, "seccomp_run: loading the filter: %s\n", strerror(-r));
		return 2;
	}
	execvp(argv[2], argv + 2);
	fprintf(stderr, "seccomp_run: exec %s: %s\n", argv[2], strerror(errno));
	return 127;
}
