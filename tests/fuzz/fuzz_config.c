/*
 * fuzz_config.c - the configuration file: lb_config_parse, as `layer4-lb --config` and SIGHUP
 * read it, and the control_socket reader `ctl -c FILE` uses.  A file that parses merges with no
 * managed listeners into itself (what the dataplane's first commit does).
 */
#include "common/config.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024], sock[LB_PATH_MAX];
	struct lb_config *c = NULL, *merged = NULL;
	char *text = fuzz_text(data, size);

	if (!text)
		return 0;
	if (!lb_config_parse(text, size, "fuzz.yaml", &c, err, sizeof(err))) {
		if (!lb_config_merge(c, NULL, &merged, err, sizeof(err)))
			FUZZ_ASSERT(merged->n_listeners == c->n_listeners);
		lb_config_free(merged);
		lb_config_free(c);
	} else {
		FUZZ_ASSERT(err[0]); /* a refusal always says why */
	}
	lb_config_control_socket(text, size, "fuzz.yaml", sock, sizeof(sock), err, sizeof(err));
	free(text);
	return 0;
}
