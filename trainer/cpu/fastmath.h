// trainer/cpu/fastmath.h — exp and erf for float that GCC can vectorise (#pragma omp simd):
// glibc's expf/erff are scalar calls, and they dominated softmax and GELU.  Accuracy is a few
// float ulps (tests/test_trainer_ops.c checks the float ops against the double ones, which use
// libm's exp and erf).
#pragma once
#include <stdint.h>
#include <string.h>

// e^x: Cephes expf.  x = n ln2 + r with |r| <= ln2/2, e^r by a degree-7 polynomial, 2^n built in
// the exponent bits.  Inputs are clamped to [-87, 88] (finite, normal results).
__attribute__((always_inline)) static inline float vm_fast_expf(float x) {
    x = x < -87.0f ? -87.0f : x;  // (two plain selects: GCC vectorises these, not nested ones)
    x = x > 88.0f ? 88.0f : x;
    float fx = x * 1.44269504088896341f;
    float fn = (fx + 12582912.0f) - 12582912.0f;  // round to nearest: add and remove 1.5 * 2^23
    int n = (int)fn;
    float r = x - fn * 0.693359375f + fn * 2.12194440e-4f;  // x - n ln2, in two parts
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    union { int32_t i; float f; } s = {.i = (n + 127) << 23};
    return y * s.f;
}

// erf(x): the rational approximation x P(x^2) / Q(x^2) on [-4, 4] of Eigen's
// generic_fast_erf_float (erf is +-1 in float outside).
__attribute__((always_inline)) static inline float vm_fast_erff(float x) {
    x = x < -4.0f ? -4.0f : x;
    x = x > 4.0f ? 4.0f : x;
    float x2 = x * x;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 + -2.10102402082508e-06f;
    p = p * x2 + -5.69250639462346e-05f;
    p = p * x2 + -7.34990630326855e-04f;
    p = p * x2 + -2.95459980854025e-03f;
    p = p * x2 + -1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * x2 + -2.13374055278905e-04f;
    q = q * x2 + -1.68282697438203e-03f;
    q = q * x2 + -7.37332916720468e-03f;
    q = q * x2 + -1.42647390514189e-02f;
    return x * p / q;
}
