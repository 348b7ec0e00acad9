#!/usr/bin/python3
"""Fits the polynomials of src/kernels/vmath (see vmath.h) and prints them as C.

Each fit is a weighted least-squares fit on Chebyshev nodes, reweighted toward the minimax (Lawson's
iteration), in double; the error printed is that of the float coefficients, evaluated in double (the
kernels add their own float rounding on top).
Run: /usr/bin/python3 tools/vmath_fit.py
"""
import math

import numpy as np


def fit(f, lo, hi, powers, center, scale_of, nodes=3000, rounds=30):
    """Coefficients c of sum_k c_k (x - center)^powers[k] ~ f(x) on [lo, hi], minimising the largest
    |error| * scale_of(x). Coefficients are rounded to float one at a time, lowest power first, and
    the rest refitted around each rounded one, so that the rounding costs little accuracy."""
    t = np.cos(np.linspace(0.0, np.pi, nodes))
    x = lo + (hi - lo) * (t + 1.0) / 2.0
    y = np.array([f(v) for v in x])
    basis = np.stack([(x - center) ** p for p in powers], axis=1)
    scale = np.array([scale_of(v) for v in x])
    fixed = []
    for k in range(len(powers)):
        rest = y - (basis[:, :k] @ np.array(fixed) if fixed else 0.0)
        free = basis[:, k:]
        weight = np.ones(nodes)
        for _ in range(rounds):
            w = weight * scale
            coef, *_ = np.linalg.lstsq(free * w[:, None], rest * w, rcond=None)
            err = np.abs(free @ coef - rest) * scale
            weight = weight * np.sqrt(err / err.max()) + 1e-12
            weight /= weight.max()
        fixed.append(float(np.float32(coef[0])))
    coef = np.array(fixed)
    return coef, float(np.max(np.abs(basis @ coef - y) * scale))


def emit(name, coef, err, what):
    print(f"/* {what}: largest error {err:.2e} */")
    body = ", ".join(f"{float(np.float32(c)):.9e}f" for c in coef)
    print(f"#define {name} {{{body}}}")


def erfcx(z):
    return math.erfc(z) * math.exp(z * z)


def main():
    half_ln2 = math.log(2.0) / 2.0
    c, e = fit(lambda r: (math.expm1(r) - r) / (r * r) if r else 0.5, -half_ln2, half_ln2,
               range(0, 5), 0.0, lambda r: r * r / math.exp(r))
    emit("KN_VMATH_EXP_POLY", c, e, "e^r = 1 + r + r^2 P(r) on [-ln2/2, ln2/2], P's error times r^2 / e^r")

    c, e = fit(lambda x: (math.tanh(x) - x) / x**3 if x > 1e-4 else -1.0 / 3.0, 0.0, 0.625,
               [0, 2, 4, 6, 8, 10], 0.0, lambda x: x**3 / max(math.tanh(x), 1e-300) if x else 0.0)
    emit("KN_VMATH_TANH_POLY", c, e, "tanh x = x + x^3 P(x^2) on [0, 0.625], relative")

    c, e = fit(lambda x: (math.erf(x) - x) / x if x > 1e-6 else 2.0 / math.sqrt(math.pi) - 1.0, 0.0,
               0.921875, [0, 2, 4, 6, 8, 10, 12], 0.0,
               lambda x: x / math.erf(x) if x > 1e-6 else 1.0 / (2.0 / math.sqrt(math.pi)))
    emit("KN_VMATH_ERF_POLY", c, e, "erf x = x + x P(x^2) on [0, 0.921875], relative")

    lo, hi = 1.0 / 10.5, 1.0 / 0.921875
    mid = float(np.float32(0.6))  # centre found by trying: the float coefficients lose least here
    c, e = fit(lambda w: erfcx(1.0 / w), lo, hi, range(0, 13), mid, lambda w: 1.0 / erfcx(1.0 / w))
    print(f"#define KN_VMATH_ERFC_CENTER {np.float32(mid):.9e}f")
    emit("KN_VMATH_ERFC_POLY", c, e,
         "erfc z = e^(-z^2) P(1/z - KN_VMATH_ERFC_CENTER) on [0.921875, 10.5], relative")


main()
