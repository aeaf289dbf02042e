"""The end of a Sinergym episode without its two-second wait.

Sinergym runs EnergyPlus in a thread and trades observations and actions with it through queues.
Its ``step`` puts the action, then waits up to 2 s for the next observation; the timeout is how it
learns that the simulation has ended. At the last step of every episode EnergyPlus takes the action,
writes its reports and ends (a few tens of milliseconds) without sending an observation, so that
step waits the whole 2 s: measured on the 5-zone building, a one-week episode's 671 real steps took
0.45 s of simulation and its last step 2.0 s; a one-year episode pays the same 2 s, and so does
every evaluation episode.

``end_without_waiting`` gives the environment an observation queue whose timed ``get`` also gives
up as soon as the simulation thread has finished, which is the condition the timeout stands for.
Everything else is Sinergym's own: the same last, truncated step (the last observation repeated,
its reward, its info, the step counter rolled back), in the same order. A ``get`` that receives an
observation returns it as soon as it is put; the queue waits in slices only so that it can look at
the thread between them.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any

log = logging.getLogger("trainer")

SLICE_SECONDS = 0.02  # how often a waiting get looks whether the simulation thread has ended


class SimulationAwareQueue(queue.Queue[Any]):
    """A queue whose blocking, timed ``get`` raises ``queue.Empty`` once ``simulator``'s thread has ended."""

    def __init__(self, simulator: Any, maxsize: int = 1) -> None:
        super().__init__(maxsize)
        self.simulator = simulator
        self.ended_early = 0  # gets that gave up because the simulation had ended, before their timeout

    def simulation_ended(self) -> bool:
        if self.simulator.simulation_complete:
            return True
        thread = self.simulator.energyplus_thread
        return thread is not None and not thread.is_alive()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block or timeout is None:
            return super().get(block, timeout)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                return super().get(True, max(0.0, min(SLICE_SECONDS, remaining)))
            except queue.Empty:
                if remaining <= SLICE_SECONDS:
                    raise
                if self.simulation_ended():
                    try:
                        return super().get(False)  # put just before the end
                    except queue.Empty:
                        self.ended_early += 1
                        raise


def end_without_waiting(env: Any) -> bool:
    """Give Sinergym's environment (under ``env``'s wrappers) the simulation-aware observation queue.
    False, and nothing changed, when the environment is not one this Sinergym version builds (no
    ``energyplus_simulator`` sharing the environment's ``obs_queue``)."""
    base = env.unwrapped
    simulator = getattr(base, "energyplus_simulator", None)
    current = getattr(base, "obs_queue", None)
    if simulator is None or current is None or getattr(simulator, "obs_queue", None) is not current:
        log.debug("%s: Sinergym's observation queue not found; episodes end after its 2 s timeout", type(base))
        return False
    if isinstance(current, SimulationAwareQueue):
        return True
    if not isinstance(current, queue.Queue) or not current.empty():  # before the first reset only
        return False
    replacement = SimulationAwareQueue(simulator, current.maxsize)
    base.obs_queue = replacement
    simulator.obs_queue = replacement
    return True
