"""The model's Adam optimizers in torch's fused implementation: ``fuse(model)``.

torch's Adam and AdamW run, by default on the CPU, a Python loop over the parameters, a handful of
tensor operations each; with ``fused=True`` one kernel updates them all. The arithmetic is Adam's
either way (the same hyperparameters, the same state), and the results agree to rounding. For
SB3's small networks a gradient step is mostly such per-operation overhead: PPO's update took 17 %
less time a sample, and on the 5-zone building SAC and TD3 learnt 8-9 % more steps a second
(docs/design.md, "Adam fused").

The optimizers are the ones SB3 saves (``_get_torch_save_params``: ``policy.optimizer``, SAC's
``actor.optimizer``, ``critic.optimizer`` and ``ent_coef_optimizer``...), each replaced by a fused
copy of itself: its parameter groups as the policy made them (PPO's ``eps`` 1e-5, CrossQ's
``betas``), its state loaded as a checkpoint's would be. Left as they are: optimizers other than
Adam and AdamW (A2C's RMSprop), a group whose ``fused``, ``foreach``, ``capturable`` or
``differentiable`` the experiment set, and parameters torch has no fused kernel for.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def _chosen(group: dict[str, Any]) -> bool:
    """Whether the experiment chose the group's implementation (``fused`` or ``foreach`` given,
    False included) or needs what fused Adam does not do (``capturable``, ``differentiable``)."""
    return any(group.get(key) is not None for key in ("fused", "foreach")) or any(
        group.get(key) for key in ("capturable", "differentiable")
    )


def fuse(model: Any) -> list[str]:
    """Replace ``model``'s Adam/AdamW optimizers by fused ones; the names of those that run fused."""
    import torch
    from stable_baselines3.common.save_util import recursive_getattr, recursive_setattr

    state_dicts, _ = model._get_torch_save_params()
    fused = []
    for name in state_dicts:
        optimizer = recursive_getattr(model, name)
        if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
            continue
        if all(group.get("fused") for group in optimizer.param_groups):  # loaded from a fused checkpoint
            fused.append(name)
            continue
        if any(_chosen(group) for group in optimizer.param_groups):
            continue
        groups = [{**group, "fused": True, "foreach": None} for group in optimizer.param_groups]
        try:
            replacement = type(optimizer)(groups, fused=True)
        except (RuntimeError, ValueError) as exc:  # no fused kernel for these parameters' device or type
            log.info("%s stays unfused: %s", name, exc)
            continue
        replacement.load_state_dict(optimizer.state_dict())  # its groups too: fused again below
        for group in replacement.param_groups:
            group.update(fused=True, foreach=None)
        recursive_setattr(model, name, replacement)
        fused.append(name)
    return fused
