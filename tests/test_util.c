#include <math.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/util.h"
#include "tests/helpers.h"

Test(dtype, bf16_round_trip_and_rounding) {
    cr_assert_eq(f32_to_bf16(1.0f), 0x3f80);
    cr_assert_float_eq(bf16_to_f32(0x3f80), 1.0f, 0);
    /* 1 + 2^-8 is halfway between two bf16 values: ties to even (down to 1.0) */
    cr_assert_eq(f32_to_bf16(1.00390625f), 0x3f80);
    cr_assert_eq(f32_to_bf16(1.01171875f), 0x3f82); /* 1 + 3*2^-8: tie, rounds up to even */
    cr_assert(isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

Test(dtype, f16_matches_ieee_half) {
    cr_assert_eq(f32_to_f16(1.0f), 0x3c00);
    cr_assert_eq(f32_to_f16(-2.0f), 0xc000);
    cr_assert_eq(f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(f32_to_f16(1e6f), 0x7c00);
    cr_assert_eq(f32_to_f16(5.9604644775390625e-8f), 0x0001); /* smallest subnormal */
    for (uint32_t h = 0; h < 0x7c00; h++)                     /* every finite positive half */
        cr_assert_eq(f32_to_f16(f16_to_f32((uint16_t)h)), h, "half %04x", h);
}

Test(dtype, names_round_trip_and_unknown_rejected) {
    for (int t = 1; t < DTYPE_COUNT; t++)
        cr_assert_eq(dtype_from_name(dtype_name((dtype)t)), t);
    cr_assert_eq(dtype_from_name("F8_E4M3"), DTYPE_UNKNOWN);
}

Test(util, atomic_write_leaves_no_temporary_on_abort) {
    char dir[64], path[128], tmp[sizeof(((atomic_file *)0)->tmp_path)];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/out.txt", dir);
    atomic_file af;
    assay_error err;
    cr_assert_eq(atomic_open(&af, path, &err), 0);
    snprintf(tmp, sizeof tmp, "%s", af.tmp_path);
    fputs("partial", af.fp);
    atomic_abort(&af);
    cr_assert(!path_exists(path));
    cr_assert(!path_exists(tmp));
    cr_assert_eq(file_write_atomic(path, "ok", 2, &err), 0);
    char *back = NULL;
    cr_assert_eq(file_read_all(path, &back, NULL, &err), 0);
    cr_assert_str_eq(back, "ok");
    free(back);
    unlink(path);
    rmdir(dir);
}

Test(util, size_arithmetic_detects_overflow) {
    size_t r;
    cr_assert_eq(size_mul(SIZE_MAX / 2 + 1, 2, &r), -1);
    cr_assert_eq(size_mul(3, 4, &r), 0);
    cr_assert_eq(r, 12);
    cr_assert_eq(size_add(SIZE_MAX, 1, &r), -1);
}

Test(cli, unknown_command_exits_2) {
    cr_assert_eq(test_run(NULL, "no-such-command"), 2);
    cr_assert_eq(test_run(NULL, "version"), 0);
    char *out = NULL;
    cr_assert_eq(test_run(&out, "devices"), 0);
    cr_assert(strstr(out, "cpu: available"));
    free(out);
}

Test(util, shortest_float_decimal_reads_back_exactly) {
    cr_assert_eq(float_shortest_decimal(1e-5f), 1e-05);
    cr_assert_eq(float_shortest_decimal(500000.0f), 500000.0);
    cr_assert_eq(float_shortest_decimal(0.1f), 0.1);
    for (float f = 1e-7f; f < 1e7f; f *= 1.37f)
        cr_assert_eq((float)float_shortest_decimal(f), f);
}
