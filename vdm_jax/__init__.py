"""vdm_jax: video diffusion models (Ho et al. 2022) in JAX / Flax NNX.

Subpackages, imported one way (diffusion <- models <- train/evaluation; data and parallel are leaves):
  diffusion   pure jax.numpy maths: schedules, parameterizations, losses, samplers, guidance
  models      the factorised space-time 3D U-Net (Flax NNX)
  data        TFDS builders (embedded moving_shapes, video folders, catalog datasets) and the input pipeline
  parallel    device meshes and logical-axis shardings
  train       train state, the jitted step, checkpoints, the loop, sampling
  evaluation  FVD (I3D), temporal-consistency metrics, the evaluate mode
"""

__version__ = "0.1.0"
