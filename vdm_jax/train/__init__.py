"""Training: the functional train state, the jitted sharded step, Orbax checkpoints, the loop, sampling.

`vdm_jax.train.loop.train_and_evaluate(cfg, workdir)` is the main job; `main.py` only parses flags.
"""

from vdm_jax.train.config import ParallelConfig, TrainConfig

__all__ = ["ParallelConfig", "TrainConfig"]
