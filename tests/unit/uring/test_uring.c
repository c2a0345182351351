/* test_uring.c - a worker's ring refuses every opcode, flag and registration outside its list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "dataplane/engine.h"

static char err[256];

/* Submit the one SQE prepared and return its completion's result. */
static int submit_one(struct io_uring *ring, uint64_t tag)
{
	struct io_uring_cqe *cqe;
	int r;

	assert_int_equal(io_uring_submit(ring), 1);
	r = io_uring_wait_cqe(ring, &cqe);
	assert_int_equal(r, 0);
	assert_int_equal(cqe->user_data, tag);
	r = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return r;
}

/* A sealed ring as a worker has it, or skip where this kernel or sandbox has no io_uring. */
static int ring_up(void **state)
{
	static struct io_uring ring;
	int r;

	if (dp_uring_probe(err, sizeof(err))) {
		print_message("io_uring unavailable here (%s): skipped\n", err);
		*state = NULL;
		return 0;
	}
	r = dp_uring_open(&ring, err, sizeof(err));
	if (r == 0)
		r = dp_uring_seal(&ring, err, sizeof(err));
	if (r) {
		print_message("%s\n", err);
		return -1;
	}
	*state = &ring;
	return 0;
}

static int ring_down(void **state)
{
	if (*state)
		io_uring_queue_exit(*state);
	return 0;
}

#define RING_OR_SKIP(ring)                   \
	struct io_uring *ring = *state;      \
	if (!ring) {                         \
		skip();                      \
	}

/*
 * READ of an eventfd holding 1, as the worker's wake-up, with these SQE flags: the result, and
 * what was read into *got (0: nothing).
 */
static int read_eventfd(struct io_uring *ring, unsigned flags, uint64_t tag, uint64_t *got)
{
	uint64_t one = 1;
	int efd = eventfd(0, EFD_CLOEXEC), r;
	struct io_uring_sqe *sqe;

	assert_true(efd >= 0);
	assert_int_equal(write(efd, &one, sizeof(one)), sizeof(one));
	*got = 0;
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_read(sqe, efd, got, sizeof(*got), 0);
	sqe->flags |= flags;
	io_uring_sqe_set_data64(sqe, tag);
	r = submit_one(ring, tag);
	close(efd);
	return r;
}

/* What the engine issues still works. */
static void test_allowed_op_runs(void **state)
{
	RING_OR_SKIP(ring);
	uint64_t got;

	assert_int_equal(read_eventfd(ring, 0, 1, &got), sizeof(got));
	assert_int_equal(got, 1);
}

/* NOP, OPENAT and WRITE are none of the engine's: each completes with EACCES, nothing done. */
static void test_other_ops_refused(void **state)
{
	RING_OR_SKIP(ring);
	char path[] = "/tmp/l4lb-uring-XXXXXX";
	int fd = mkstemp(path);
	struct io_uring_sqe *sqe;

	assert_true(fd >= 0);
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data64(sqe, 2);
	assert_int_equal(submit_one(ring, 2), -EACCES);

	unlink(path);
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_openat(sqe, AT_FDCWD, path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	io_uring_sqe_set_data64(sqe, 3);
	assert_int_equal(submit_one(ring, 3), -EACCES);
	assert_int_equal(access(path, F_OK), -1); /* the file was not created */

	sqe = io_uring_get_sqe(ring);
	io_uring_prep_write(sqe, fd, "x", 1, 0);
	io_uring_sqe_set_data64(sqe, 4);
	assert_int_equal(submit_one(ring, 4), -EACCES);
	assert_int_equal(lseek(fd, 0, SEEK_END), 0); /* nothing written */
	close(fd);
}

/* An allowed opcode with a flag the engine never sets (IOSQE_ASYNC) is refused too. */
static void test_other_flags_refused(void **state)
{
	RING_OR_SKIP(ring);
	uint64_t got;

	assert_int_equal(read_eventfd(ring, IOSQE_ASYNC, 5, &got), -EACCES);
	assert_int_equal(got, 0);
}

/* Once sealed, the ring takes no registration: no files, no buffers, no new restrictions. */
static void test_registrations_refused(void **state)
{
	RING_OR_SKIP(ring);
	struct io_uring_restriction res = { .opcode = IORING_RESTRICTION_SQE_OP,
					    .sqe_op = IORING_OP_NOP };
	int fds[1] = { 0 };

	assert_int_equal(io_uring_register_files(ring, fds, 1), -EACCES);
	/* (liburing 2.3's io_uring_register_restrictions is declared but not exported) */
	assert_int_equal(syscall(__NR_io_uring_register, ring->ring_fd,
				 IORING_REGISTER_RESTRICTIONS, &res, 1), -1);
	assert_int_equal(io_uring_register_probe(ring, &(struct io_uring_probe){ 0 }, 0),
			 -EACCES);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_allowed_op_runs),
		cmocka_unit_test(test_other_ops_refused),
		cmocka_unit_test(test_other_flags_refused),
		cmocka_unit_test(test_registrations_refused),
	};

	return cmocka_run_group_tests(tests, ring_up, ring_down);
}
