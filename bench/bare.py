"""`python -m bench.bare EXPERIMENT.json RESULT.json`: the bare loop the trainer is measured against.

What a hand-written Sinergym + Stable-Baselines3 script does with the same experiment: the same
environment and wrappers (``trainer.envs.make_env``, in the same ``DummyVecEnv``), the same
algorithm, hyperparameters (``trainer.registry``), action noise, seed and optimizers (Adam fused, as
``trainer.optimizers`` makes the trainer's), then ``learn`` - and nothing else: no callback, no
TensorBoard, no MLflow, no checkpoints, no uploads, no heartbeat.
It runs torch with the trainer's number of threads (``trainer.envs.torch_threads``: torch's default
for one environment). Writes RESULT.json: the timesteps learnt, the seconds ``learn`` took and the
CPU time this process's threads used meanwhile.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    from sinergym_cloud.contracts import Experiment
    from trainer import envs, optimizers, registry

    experiment = Experiment.model_validate_json(Path(argv[0]).read_text())
    os.environ.setdefault("TQDM_DISABLE", "1")
    envs.ensure_energyplus()
    threads = envs.torch_threads(experiment.n_envs)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    vec_env = envs.vectorize([lambda: envs.make_env(experiment, "bare")])
    try:
        params = registry.hyperparameters(experiment)
        policy = params.pop("policy", "MlpPolicy")
        sigma = params.pop("sigma", None)
        if experiment.algorithm in ("DDPG", "TD3", "SAC") and sigma:
            import numpy as np
            from stable_baselines3.common.noise import NormalActionNoise

            n = vec_env.action_space.shape[-1]
            params["action_noise"] = NormalActionNoise(np.zeros(n), sigma * np.ones(n))
        model = registry.algos()[experiment.algorithm](policy, vec_env, seed=experiment.seed, **params)
        optimizers.fuse(model)
        episode_len = int(vec_env.env_method("get_wrapper_attr", "timestep_per_episode", indices=[0])[0])
        started, cpu_started = time.monotonic(), time.process_time()
        model.learn(total_timesteps=experiment.episodes * episode_len, log_interval=experiment.log_interval)
        seconds, cpu = time.monotonic() - started, time.process_time() - cpu_started
        result = {"timesteps": int(model.num_timesteps), "seconds": seconds, "cpu_seconds": cpu}
        Path(argv[1]).write_text(json.dumps(result))
    finally:
        vec_env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
