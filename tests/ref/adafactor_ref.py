"""Adafactor in NumPy (float64), written from the paper, as the oracle for kiln's src/train/optim.c.

Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018
(arXiv:1804.04235). Algorithm 4 (matrices: factored second moment) and Algorithm 5 (vectors), with
section 6 (update clipping), 7.1 (beta2_t = 1 - t^c) and 8 (relative step size). For a parameter X with
gradient G at step t (t = 1, 2, ...):

    beta2_t = 1 - t^decay_rate                                  (decay_rate = -0.8 in the paper)
    rho_t   = lr                        when not relative_step
            = min(1e-2, 1/sqrt(t))      relative_step
            = min(1e-6 t, 1/sqrt(t))    relative_step with warmup_init
    alpha_t = max(eps2, RMS(X_{t-1})) rho_t  when scale_parameter, else rho_t
    ndim >= 2 (factored over the last two dims; any leading dims index independent matrices):
        R_t = beta2_t R_{t-1} + (1 - beta2_t) rowmean(G^2 + eps1)       (..., rows)
        C_t = beta2_t C_{t-1} + (1 - beta2_t) colmean(G^2 + eps1)       (..., cols)
        V_t = R_t C_t^T / mean(R_t)                                     (per matrix)
    ndim == 1:
        V_t = beta2_t V_{t-1} + (1 - beta2_t) (G^2 + eps1)
    U_t = G / sqrt(V_t);   U^_t = U_t / max(1, RMS(U_t) / clip_threshold)
    first moment (beta1 > 0 only):  m_t = beta1 m_{t-1} + (1 - beta1) U^_t, which replaces U^_t below
    X_t = X_{t-1} - alpha_t weight_decay X_{t-1} - alpha_t U^_t

RMS is taken over the whole parameter. Row/column means instead of the paper's sums give the same V_t.
"""

import math

import numpy as np


def defaults():
    return dict(lr=0.0, eps1=1e-30, eps2=1e-3, clip_threshold=1.0, decay_rate=-0.8, relative_step=True,
                scale_parameter=True, warmup_init=False, beta1=0.0, weight_decay=0.0)


def rms(x):
    return math.sqrt(np.mean(np.square(x)))


def init_state(param, cfg):
    state = {}
    if param.ndim >= 2:
        state["row"] = np.zeros(param.shape[:-1])
        state["col"] = np.zeros(param.shape[:-2] + param.shape[-1:])
    else:
        state["v"] = np.zeros(param.shape)
    if cfg["beta1"] > 0:
        state["m"] = np.zeros(param.shape)
    return state


def step(param, grad, state, t, lr, cfg):
    """One Adafactor update of param (float64 array, in place) at step t >= 1."""
    beta2 = 1.0 - t ** cfg["decay_rate"]
    if cfg["relative_step"]:
        ceiling = 1e-6 * t if cfg["warmup_init"] else 1e-2
        rho = min(ceiling, 1.0 / math.sqrt(t))
    else:
        rho = lr
    alpha = max(cfg["eps2"], rms(param)) * rho if cfg["scale_parameter"] else rho

    g2 = np.square(grad) + cfg["eps1"]
    if param.ndim >= 2:
        state["row"] = beta2 * state["row"] + (1 - beta2) * g2.mean(axis=-1)
        state["col"] = beta2 * state["col"] + (1 - beta2) * g2.mean(axis=-2)
        row_mean = state["row"].mean(axis=-1, keepdims=True)
        v = (state["row"] / row_mean)[..., :, None] * state["col"][..., None, :]
    else:
        state["v"] = beta2 * state["v"] + (1 - beta2) * g2
        v = state["v"]
    update = grad / np.sqrt(v)
    update /= max(1.0, rms(update) / cfg["clip_threshold"])
    if cfg["beta1"] > 0:
        state["m"] = cfg["beta1"] * state["m"] + (1 - cfg["beta1"]) * update
        update = state["m"]
    param -= alpha * cfg["weight_decay"] * param + alpha * update
