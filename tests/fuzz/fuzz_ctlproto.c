/*
 * fuzz_ctlproto.c - one control socket request line (lb_ctl_request_parse), as the dataplane's
 * control loop reads it from any client allowed on the socket.  An apply that parses is merged
 * with an empty file configuration, as dp_plane_commit does, and answered.
 */
#include "common/config.h"
#include "common/ctlproto.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	struct lb_ctl_request req;
	struct lb_config *file = NULL, *merged = NULL;
	char *text = fuzz_text(data, size), *reply;

	if (!text)
		return 0;
	if (lb_ctl_request_parse(text, size, &req, err, sizeof(err))) {
		FUZZ_ASSERT(err[0]);
		free(text);
		return 0;
	}
	if (req.op == LB_CTL_APPLY) {
		FUZZ_ASSERT(req.listeners);
		static const char file_text[] = "control_socket: /run/x.sock\n";

		if (!lb_config_parse(file_text, sizeof(file_text) - 1, "lb.yaml", &file, err,
				     sizeof(err)) &&
		    !lb_config_merge(file, req.listeners, &merged, err, sizeof(err)))
			FUZZ_ASSERT(merged->n_listeners == req.listeners->n_listeners);
		lb_config_free(merged);
		lb_config_free(file);
	}
	reply = lb_ctl_reply_finish(lb_ctl_reply_new(&req, 1));
	free(reply);
	lb_ctl_request_clear(&req);
	free(text);
	return 0;
}
