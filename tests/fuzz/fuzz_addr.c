/*
 * fuzz_addr.c - the address parser (listen and backend addresses of the file, the control
 * protocol and the controller's EndpointSlices).  Whatever parses formats back to text that
 * parses to the same address.
 */
#include "common/addr.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256], text[LB_ADDR_STRLEN];
	struct lb_addr a, b;
	char *s = fuzz_text(data, size);

	if (!s)
		return 0;
	for (int port0 = 0; port0 < 2; port0++) {
		if (lb_addr_parse(s, port0, &a, err, sizeof(err)))
			continue;
		lb_addr_format(&a, text, sizeof(text));
		FUZZ_ASSERT(!lb_addr_parse(text, port0, &b, err, sizeof(err)));
		FUZZ_ASSERT(lb_addr_equal(&a, &b));
		lb_addr_check_use(&a, LB_ADDR_BACKEND, err, sizeof(err));
	}
	free(s);
	return 0;
}
