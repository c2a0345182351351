/*
 * fuzz_kubeconfig.c - a kubeconfig (k8s_kubeconfig_parse): the controller's --kubeconfig and
 * $KUBECONFIG.  Relative paths in it are taken in the test data's kubeconfig folder, so seeds
 * that name its certificates reach the PEM and base64 paths.
 */
#include "controller/core/kubeconfig.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	struct k8s_config c = { 0 };
	char *text = fuzz_text(data, size);

	if (!text)
		return 0;
	if (!k8s_kubeconfig_parse(text, size, "fuzz", FUZZ_DATA "/kubeconfig/files", NULL, &c, err,
				  sizeof(err))) {
		FUZZ_ASSERT(c.server && c.server[0]);
		k8s_config_clear(&c);
	} else {
		FUZZ_ASSERT(err[0]);
	}
	free(text);
	return 0;
}
