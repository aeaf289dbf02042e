"""Adam fused against Adam's loop (``trainer.optimizers``): SB3's gradient steps alone.

The same model twice, one with its optimizers fused, on gymnasium's Pendulum-v1 (no EnergyPlus:
the gradient step is what is measured, and SB3's default networks are the same size whatever the
building's handful of observations), torch on one thread, the two timed in turn ``rounds`` times:
PPO's update a sample (``n_steps`` 512, ``batch_size`` 64, ten epochs) and SAC's gradient step (a
batch of 256). What the trainer gains in steps/s depends on the share of the update in a step
(docs/design.md, "Adam fused").
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.figures import row

PPO_STEPS = 512
SAC_STEPS = 100


def _models(algorithm: str) -> tuple[Any, Any]:
    """A looped and a fused model of ``algorithm``, each with data to learn from."""
    from stable_baselines3 import PPO, SAC

    from trainer import optimizers

    pair = []
    for fuse in (False, True):
        if algorithm == "PPO":
            model: Any = PPO("MlpPolicy", "Pendulum-v1", n_steps=PPO_STEPS, batch_size=64, seed=0, device="cpu")
            model.learn(PPO_STEPS)
        else:
            model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=SAC_STEPS, seed=0, device="cpu")
            model.learn(SAC_STEPS + 1)
        if fuse:
            optimizers.fuse(model)
        pair.append(model)
    return pair[0], pair[1]


def _seconds(model: Any, algorithm: str) -> float:
    """One update's seconds: per sample for PPO, per gradient step for SAC."""
    started = time.perf_counter()
    if algorithm == "PPO":
        model.train()
        return (time.perf_counter() - started) / PPO_STEPS
    model.train(gradient_steps=SAC_STEPS, batch_size=model.batch_size)
    return (time.perf_counter() - started) / SAC_STEPS


def optimizer(rounds: int = 3) -> list[dict[str, Any]]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for algorithm, what in (("PPO", "PPO's update, a sample"), ("SAC", "SAC's gradient step")):
            looped, fused = _models(algorithm)
            times: dict[bool, list[float]] = {False: [], True: []}
            for n in range(rounds):  # in turn, the first alternating, so that drift weighs on both
                for is_fused in (n % 2 == 1, n % 2 == 0):
                    times[is_fused].append(_seconds(fused if is_fused else looped, algorithm))
            slow, fast = (statistics.median(times[f]) * 1000 for f in (False, True))
            rows.append(row(f"Adam fused: {what}, ms (one torch thread; looped | fused, median of {rounds})",
                            f"{slow:.3f} | {fast:.3f}", "ms", "reported", None))  # fmt: skip
            rows.append(row(f"  {algorithm}: looped / fused", round(slow / fast, 2), "x", "reported", None))
    finally:
        torch.set_num_threads(threads)
    return rows
