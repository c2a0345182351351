/*
 * fuzz_apply_yaml.c - an apply file as `layer4-lb ctl apply FILE` reads it before sending it
 * (lb_config_parse_listeners): the listeners of the control protocol, written as YAML.
 */
#include "common/config.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	struct lb_config *c = NULL;
	char *text = fuzz_text(data, size);

	if (!text)
		return 0;
	if (!lb_config_parse_listeners(text, size, "apply.yaml", &c, err, sizeof(err))) {
		for (size_t i = 0; i < c->n_listeners; i++)
			FUZZ_ASSERT(c->listeners[i].managed);
		lb_config_free(c);
	} else {
		FUZZ_ASSERT(err[0]);
	}
	free(text);
	return 0;
}
