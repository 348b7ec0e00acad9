#!/usr/bin/python3
"""Reference trajectories for kiln's optimizers, LR schedules and gradient clipping (tests/test_optim.c).

The problem: three parameters (a matrix, a 4-D conv-like kernel, a vector) and the loss
    L_t(p) = sum(c/2 (p - target)^2 + noise_t p),  so  grad_t = c * (p - target) + noise_t,
with fixed c, target and per-step noise_t stored in the fixtures; the C test evaluates the same gradient
in float32. Each optimizer configuration runs 10 steps with a per-step learning rate lr_t (also stored)
and the parameters after every step are recorded. SGD, Adam, AdamW and Adagrad run in PyTorch (float32);
torch 1.13 has no Adafactor, so Adafactor runs in tests/ref/adafactor_ref.py (NumPy, float64).
Every hyperparameter is a float32 number so both sides use identical values; the C test's table of
configurations must match CONFIGS below.
Run: /usr/bin/python3 tests/ref/make_optim_fixtures.py   (writes tests/ref/data/optim.{bin,txt})"""

import warnings

import numpy as np
import torch

import adafactor_ref
from train_fixture_io import FixtureWriter, f32

STEPS = 10
SHAPES = {"w": (3, 4), "k": (2, 3, 2, 3), "b": (4,)}
rng = np.random.default_rng(7)
out = FixtureWriter("optim", "kiln optimizer/schedule/clipping fixtures from tests/ref/make_optim_fixtures.py")

init = {n: rng.normal(0.0, 0.5, s).astype(np.float32) for n, s in SHAPES.items()}
curvature = {n: rng.uniform(0.5, 2.0, s).astype(np.float32) for n, s in SHAPES.items()}
target = {n: rng.normal(0.0, 1.0, s).astype(np.float32) for n, s in SHAPES.items()}
noise = {n: rng.normal(0.0, 0.3, (STEPS,) + s).astype(np.float32) for n, s in SHAPES.items()}
for n in SHAPES:
    out.add(f"init/{n}", init[n])
    out.add(f"curvature/{n}", curvature[n])
    out.add(f"target/{n}", target[n])
    out.add(f"noise/{n}", noise[n])

# name: (optimizer, base lr, keyword arguments). lr_t = base * (1 - 0.04 (t - 1)), t = 1..STEPS.
CONFIGS = {
    "sgd": ("sgd", 0.1, {}),
    "sgd_momentum": ("sgd", 0.05, dict(momentum=0.9, dampening=0.3)),
    "sgd_nesterov": ("sgd", 0.05, dict(momentum=0.8, nesterov=True, weight_decay=0.01)),
    "adam": ("adam", 0.01, {}),
    "adam_wd": ("adam", 0.01, dict(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    "adamw": ("adamw", 0.01, dict(weight_decay=0.1)),
    "adagrad": ("adagrad", 0.1, dict(lr_decay=0.05, initial_accumulator_value=0.1, weight_decay=0.01)),
    "adafactor": ("adafactor", 0.0, {}),
    "adafactor_momentum": ("adafactor", 0.0, dict(beta1=0.9)),
    "adafactor_warmup": ("adafactor", 0.0, dict(warmup_init=True, weight_decay=0.1)),
    "adafactor_fixed_lr": ("adafactor", 0.02, dict(relative_step=False, scale_parameter=False)),
    "adafactor_fixed_lr_momentum": ("adafactor", 0.02, dict(relative_step=False, beta1=0.8, clip_threshold=0.5,
                                                             weight_decay=0.1)),
}


def as_f32(value):
    return tuple(f32(v) for v in value) if isinstance(value, tuple) else (value if isinstance(value, bool) else f32(value))


def step_lrs(base):
    return [f32(np.float32(base) * np.float32(1.0 - 0.04 * t)) for t in range(STEPS)]


def run_torch(kind, lrs, kwargs):
    params = {n: torch.tensor(init[n], requires_grad=True) for n in SHAPES}
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "adagrad": torch.optim.Adagrad}[kind]
    opt = cls(list(params.values()), lr=lrs[0], foreach=False, **kwargs)
    trajectory = {n: [] for n in SHAPES}
    for t in range(STEPS):
        for n, p in params.items():
            with torch.no_grad():
                p.grad = torch.tensor(curvature[n]) * (p - torch.tensor(target[n])) + torch.tensor(noise[n][t])
        opt.param_groups[0]["lr"] = lrs[t]
        opt.step()
        for n, p in params.items():
            trajectory[n].append(p.detach().numpy().copy())
    return trajectory


def run_adafactor(lrs, kwargs):
    cfg = adafactor_ref.defaults()
    cfg.update(kwargs)
    params = {n: init[n].astype(np.float64) for n in SHAPES}
    states = {n: adafactor_ref.init_state(p, cfg) for n, p in params.items()}
    trajectory = {n: [] for n in SHAPES}
    for t in range(STEPS):
        for n, p in params.items():
            grad = curvature[n].astype(np.float64) * (p - target[n]) + noise[n][t]
            adafactor_ref.step(p, grad, states[n], t + 1, lrs[t], cfg)
            trajectory[n].append(p.copy())
    return trajectory


for name, (kind, base_lr, kwargs) in CONFIGS.items():
    kwargs = {k: as_f32(v) for k, v in kwargs.items()}
    lrs = step_lrs(base_lr)
    trajectory = run_adafactor(lrs, kwargs) if kind == "adafactor" else run_torch(kind, lrs, kwargs)
    out.add(f"lr/{name}", lrs)
    for n in SHAPES:
        out.add(f"trajectory/{name}/{n}", np.stack(trajectory[n]))


def scheduler_lrs(make, base, steps):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base)
    sched = make(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


S = torch.optim.lr_scheduler
# SequentialLR steps its next scheduler with an explicit epoch at a milestone; torch warns about that itself.
warnings.filterwarnings("ignore", message="The epoch parameter")
# kn_schedule {kind, base_lr, warmup_steps, total_steps, step_size, gamma, min_lr} in the C test.
out.add("schedule/cosine_warmup", scheduler_lrs(lambda o: S.SequentialLR(o, [
    S.LinearLR(o, start_factor=1 / 5, end_factor=1.0, total_iters=4),
    S.CosineAnnealingLR(o, T_max=25, eta_min=f32(1e-3))], milestones=[5]), f32(0.1), 30))
out.add("schedule/cosine", scheduler_lrs(lambda o: S.CosineAnnealingLR(o, T_max=12), f32(0.05), 12))
out.add("schedule/step_warmup", scheduler_lrs(lambda o: S.SequentialLR(o, [
    S.LinearLR(o, start_factor=1 / 3, end_factor=1.0, total_iters=2),
    S.StepLR(o, step_size=4, gamma=f32(0.5))], milestones=[3]), f32(0.1), 20))
out.add("schedule/step", scheduler_lrs(lambda o: S.StepLR(o, step_size=3, gamma=f32(0.1)), f32(0.2), 10))
out.add("schedule/constant_warmup", scheduler_lrs(
    lambda o: S.LinearLR(o, start_factor=1 / 4, end_factor=1.0, total_iters=3), f32(0.01), 8))

# Global-norm clipping: one set of gradients, clipped to 1.0 (active) and to 100 (inactive).
grads = {n: rng.normal(0.0, 1.0, s).astype(np.float32) for n, s in SHAPES.items()}
for n in SHAPES:
    out.add(f"clip/grad/{n}", grads[n])
for max_norm in (1.0, 100.0):
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES.values()]
    for p, n in zip(params, SHAPES):
        p.grad = torch.tensor(grads[n])
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    out.add(f"clip/{max_norm:g}/norm", [norm.item()])
    for p, n in zip(params, SHAPES):
        out.add(f"clip/{max_norm:g}/{n}", p.grad.numpy())

out.write()
