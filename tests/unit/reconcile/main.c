/* main.c - unit_reconcile: objects, the cache and reconcile, one group each. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "world.h"

int main(void)
{
	int failed = 0;

	failed += run_objects_tests();
	failed += run_store_tests();
	failed += run_reconcile_tests();
	return failed ? 1 : 0;
}
