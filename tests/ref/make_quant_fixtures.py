#!/usr/bin/python3
"""NumPy reference for kiln's post-training quantization (tests/test_quantize.c reads it).

Weights: a (6, 10) tensor with an ordinary row, an all-zero row, a constant row, a row of exact ties
(half steps of a power-of-two scale), a row with an outlier and an all-positive row, quantized at
every bit width (8, 4, 2 affine; 1 binary; 4-bit log2; f16 and bf16), per tensor, per channel (axis 0)
and per block of 4 along the last axis, symmetric and asymmetric, with min-max and MSE clipping; and a
(4, 2, 3, 3) convolution weight per channel. The arithmetic is that of src/core/quant.h, written
again here in float32 NumPy: q = clip(rint(x / s) + z, qmin, qmax), x' = (q - z) * s.
Calibration: fixed 2048-bin histograms and the ranges minmax, percentile, KL (TensorRT entropy) and
MSE choose from them (src/compress/calibrate.h describes the methods).

Run: /usr/bin/python3 tests/ref/make_quant_fixtures.py   (writes tests/ref/data/quant.bin)
Format: records of u32 name length, name, u32 rank, i64 dims, float32 data (tests/support/fixture.h)."""

import os
import struct

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "quant.bin")
f32 = np.float32


def qrange(bits, signed):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def params(lo, hi, r, symmetric):
    """Scale and zero point of the range [lo, hi] widened to include 0 (kn_quant_params)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    s = max(-lo, hi) / r[1] if symmetric else (hi - lo) / (r[1] - r[0])
    s = f32(s)
    if not s >= np.finfo(np.float32).tiny:
        s = f32(1.0)
    z = 0
    if not symmetric:
        z = int(min(max(r[0] - np.rint(lo / float(s)), r[0]), r[1]))
    return s, z


def fake(x, s, z, r):
    x = np.asarray(x, dtype=f32)
    q = np.rint(x / s) + f32(z)
    q = np.minimum(np.maximum(q, f32(r[0])), f32(r[1]))
    return (q.astype(np.int64) - z).astype(f32) * s


def clipped_error(v, lo, hi, r, symmetric):
    c = np.minimum(np.maximum(v, lo), hi)
    s, z = params(min(0.0, c.min()), max(0.0, c.max()), r, symmetric)
    e = v.astype(np.float64) - fake(c, s, z, r).astype(np.float64)
    total = 0.0
    for x in e:  # in order, as the C code sums
        total += x * x
    return total


def mse_clip(v, r, symmetric, steps=100):
    lo, hi = f32(min(0.0, v.min())), f32(max(0.0, v.max()))
    best, best_lo, best_hi = np.inf, lo, hi
    for k in range(steps, 0, -1):
        a = k / steps
        m = max(-float(lo), float(hi))
        a_lo = f32(-a * m) if symmetric else f32(a * float(lo))
        a_hi = f32(a * m) if symmetric else f32(a * float(hi))
        err = clipped_error(v, a_lo, a_hi, r, symmetric)
        if err < best:
            best, best_lo, best_hi = err, a_lo, a_hi
    return np.minimum(np.maximum(v, best_lo), best_hi)


def groups(shape, gran):
    """Group index of every element (flat), as format/storage_affine.c forms them."""
    n = int(np.prod(shape))
    i = np.arange(n)
    if gran == "tensor":
        return np.zeros(n, dtype=np.int64)
    if gran == "channel":
        inner = n // shape[0]
        return i // inner
    block = int(gran.split(":")[1])
    cols = shape[-1]
    per_row = (cols + block - 1) // block
    return i // cols * per_row + i % cols // block


def quantize_affine(w, bits, gran, symmetric, mse):
    flat = w.reshape(-1).astype(f32).copy()
    g = groups(w.shape, gran)
    r = qrange(bits, True)  # i8, i4, i2 storage levels are signed; asymmetric ones add a zero point
    out = np.empty_like(flat)
    for k in np.unique(g):
        idx = np.nonzero(g == k)[0]
        v = flat[idx]
        if mse:
            v = mse_clip(v, r, symmetric)
        s, z = params(min(0.0, v.min()), max(0.0, v.max()), r, symmetric)
        out[idx] = fake(v, s, z, r)
    return out.reshape(w.shape)


def quantize_binary(w, gran):
    flat = w.reshape(-1).astype(f32).copy()
    g = groups(w.shape, gran)
    for k in np.unique(g):
        idx = np.nonzero(g == k)[0]
        a = f32(np.sum(np.abs(flat[idx].astype(np.float64))) / len(idx))
        flat[idx] = np.where(flat[idx] < 0, -a, a)
    return flat.reshape(w.shape)


def quantize_log2(w, bits, gran):
    flat = w.reshape(-1).astype(f32).copy()
    g = groups(w.shape, gran)
    for k in np.unique(g):
        idx = np.nonzero(g == k)[0]
        v = flat[idx]
        m = np.abs(v).max()
        if m < np.finfo(np.float32).tiny:
            flat[idx] = 0
            continue
        e_max = int(np.rint(np.log2(float(m))))
        levels = [0.0] + [2.0 ** e for e in range(e_max - (1 << (bits - 1)) + 2, e_max + 1)]
        res = []
        for x in v:
            best = 0.0
            for level in levels[1:]:
                if abs(abs(float(x)) - level) < abs(abs(float(x)) - best):
                    best = level
            res.append(-best if x < 0 and best > 0 else best)
        flat[idx] = np.array(res, dtype=f32)
    return flat.reshape(w.shape)


def bf16(w):
    u = w.astype(f32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
    return u.astype(np.uint32).view(f32)


def weights():
    rng = np.random.default_rng(7)
    w = np.zeros((6, 10), dtype=f32)
    w[0] = rng.normal(0, 0.3, 10)
    w[1] = 0.0                                              # an all-zero channel
    w[2] = 0.7                                              # a constant channel
    step = 2.0 ** -6                                        # max 127 steps: symmetric i8 scale 2^-6
    w[3] = np.array([127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, -64.5, 100.5]) * step  # ties
    w[4] = rng.normal(0, 0.05, 10)
    w[4, 6] = 1.5                                           # an outlier that MSE clipping cuts
    w[5] = rng.uniform(0.1, 0.9, 10)                        # positive only: asymmetric zero point
    return w.astype(f32)


def write(records):
    os.makedirs(os.path.dirname(DATA), exist_ok=True)
    with open(DATA, "wb") as f:
        for name, t in records:
            t = np.asarray(t, dtype="<f4")
            raw = name.encode()
            f.write(struct.pack("<I", len(raw)) + raw)
            f.write(struct.pack("<I", t.ndim))
            f.write(struct.pack("<%dq" % t.ndim, *t.shape))
            f.write(t.tobytes())
    print(f"{DATA}: {len(records)} records")


# ---- calibration ----

def kl_threshold(bins, absmax, levels):
    n = len(bins)
    bins = bins.copy()
    bins[0] = bins[1]  # the zero spike of ReLU outputs does not vote
    best, best_i = np.inf, n
    for i in range(levels, n + 1):
        p = bins[:i].astype(np.float64)
        p[-1] += bins[i:].sum()
        group = np.arange(i) * levels // i
        src = bins[:i].astype(np.float64)
        total = np.bincount(group, weights=src, minlength=levels)
        nonzero = np.bincount(group, weights=(src != 0).astype(np.float64), minlength=levels)
        q = np.where(src != 0, total[group] / np.maximum(nonzero[group], 1), 0.0)
        if p.sum() <= 0 or q.sum() <= 0:
            continue
        if np.any((p > 0) & (q <= 0)):
            continue
        pn, qn = p / p.sum(), q / q.sum()
        m = pn > 0
        kl = float(np.sum(pn[m] * np.log(pn[m] / qn[m])))
        if kl < best:
            best, best_i = kl, i
    return absmax * best_i / n


def mse_range(bins, lo, hi, r, symmetric, steps=200):
    n = len(bins)
    width = (hi - lo) / n
    centres = np.array([f32(lo + (b + 0.5) * width) for b in range(n)], dtype=f32)
    used = bins != 0
    best, out = np.inf, (lo, hi)
    for k in range(steps, 0, -1):
        a = k / steps
        if symmetric:
            m = a * max(-lo, hi)
            a_lo, a_hi = f32(max(lo, -m)), f32(min(hi, m))
        else:
            a_lo, a_hi = f32(a * lo), f32(a * hi)
        s, z = params(a_lo, a_hi, r, symmetric)
        e = centres[used].astype(np.float64) - fake(centres[used], s, z, r).astype(np.float64)
        err = 0.0
        for c, x in zip(bins[used], e):
            err += float(c) * x * x
        if err < best:
            best, out = err, (float(a_lo), float(a_hi))
    return out


def percentile_edge(bins, lo, hi, target, upper):
    width = (hi - lo) / len(bins)
    seen = 0.0
    for b, c in enumerate(bins):
        seen += float(c)
        if seen >= target:
            return lo + (b + (1 if upper else 0)) * width
    return hi


def histograms():
    """Two activation histograms: ReLU-like (a spike at 0 and a long tail) and signed Gaussian-like."""
    rng = np.random.default_rng(11)
    relu = np.maximum(rng.laplace(0.2, 0.6, 200000), 0).astype(f32)
    relu[:3] = 9.0                                           # rare far outliers
    signed = np.concatenate([rng.normal(0.3, 1.0, 150000), [-7.5, 6.0]]).astype(f32)
    out = []
    for name, x in (("relu", relu), ("signed", signed)):
        lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
        absmax = max(-lo, hi)
        bins = np.clip(((x.astype(np.float64) - lo) / (hi - lo) * 2048).astype(np.int64), 0, 2047)
        abs_bins = np.clip((np.abs(x.astype(np.float64)) / absmax * 2048).astype(np.int64), 0, 2047)
        out.append((name, lo, hi, absmax, np.bincount(bins, minlength=2048), np.bincount(abs_bins, minlength=2048)))
    return out


def main():
    records = []
    w = weights()
    records.append(("w", w))
    for bits in (8, 4, 2):
        for gran in ("tensor", "channel", "block:4"):
            for sym in (True, False):
                for mse in (False, True):
                    name = f"w/{bits}/{gran}/{'sym' if sym else 'asym'}/{'mse' if mse else 'minmax'}"
                    records.append((name, quantize_affine(w, bits, gran, sym, mse)))
    for gran in ("tensor", "channel"):
        records.append((f"w/1/{gran}/binary", quantize_binary(w, gran)))
        records.append((f"w/4/{gran}/log2", quantize_log2(w, 4, gran)))
    records.append(("w/16/f16", w.astype(np.float16).astype(f32)))
    records.append(("w/16/bf16", bf16(w)))
    conv = np.random.default_rng(3).normal(0, 0.2, (4, 2, 3, 3)).astype(f32)
    records.append(("k", conv))
    records.append(("k/4/channel/sym/mse", quantize_affine(conv, 4, "channel", True, True)))
    records.append(("k/8/channel/asym/minmax", quantize_affine(conv, 8, "channel", False, False)))

    for name, lo, hi, absmax, bins, abs_bins in histograms():
        records.append((f"hist/{name}/bins", bins.astype(f32)))          # counts < 2^24: exact in f32
        records.append((f"hist/{name}/abs_bins", abs_bins.astype(f32)))
        records.append((f"hist/{name}/range", np.array([lo, hi, absmax], dtype=f32)))
        lo, hi, absmax = float(f32(lo)), float(f32(hi)), float(f32(absmax))
        count = float(bins.sum())
        records.append((f"hist/{name}/kl128", np.array([kl_threshold(abs_bins, absmax, 128)], dtype=f32)))
        records.append((f"hist/{name}/kl256", np.array([kl_threshold(abs_bins, absmax, 256)], dtype=f32)))
        records.append((f"hist/{name}/mse_u8", np.array(mse_range(bins, lo, hi, qrange(8, False), False), dtype=f32)))
        records.append((f"hist/{name}/mse_i8", np.array(mse_range(bins, lo, hi, qrange(8, True), True), dtype=f32)))
        f = 99.9 / 100  # as kiln computes P / 100
        t = percentile_edge(abs_bins, 0.0, absmax, f * count, True)
        p_lo = min(0.0, percentile_edge(bins, lo, hi, (1 - f) * count, False))
        p_hi = max(0.0, percentile_edge(bins, lo, hi, f * count, True))
        records.append((f"hist/{name}/pct99.9_sym", np.array([max(lo, -t), min(hi, t)], dtype=f32)))
        records.append((f"hist/{name}/pct99.9_asym", np.array([p_lo, p_hi], dtype=f32)))
    write(records)


if __name__ == "__main__":
    main()
