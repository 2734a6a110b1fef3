"""Kinetics-600, 64x64: predict 11 frames from 5 (Ho et al. 2022, §4.2 and appendix A).

Kinetics-600 is not in the TFDS catalog: download the videos yourself and read them with the video-folder builder
(class subfolders become labels; see docs/datasets.md):
  python main.py --config=configs/kinetics600.py --workdir=gs://BUCKET/vdm/k600 --distributed \
      --config.data.video_dir=/data/kinetics600/train --config.data.data_dir=gs://BUCKET/tensorflow_datasets

Paper: FVD 16.2 (reconstruction guidance), on 128-256 TPU-v4 chips.
Model: 256 channels, multipliers (1,2,4,8), 2 res blocks, v-prediction, batch 256, 220k steps; a 16-frame model
conditioned at sampling time on 5 frames by reconstruction guidance w_r = 9 with 128 ancestral + 128 Langevin steps.
Our cost estimate (docs/baselines.md): 24.4 TFLOP per clip per step, ~1.4e21 FLOP for 220k steps at batch 256:
~13.5 h on 256 TPU-v4 chips at 40% of peak; 19.5 GiB per device with one clip per device and 8-way FSDP.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.name = "video_folder"
    config.data.video_dir = "/data/kinetics600/train"
    config.data.num_frames = 16
    config.data.resolution = 64
    config.data.shuffle_buffer = 4096

    config.model.base_channels = 256
    config.model.channel_mults = (1, 2, 4, 8)
    config.model.num_res_blocks = 2
    config.model.attn_resolutions = (32, 16, 8)
    config.model.head_dim = 64
    config.model.emb_dim = 1024
    config.model.dropout = 0.1
    config.model.dtype = "bfloat16"
    config.model.remat_policy = "full"  # Activations, not parameters, dominate memory at 64x64 (docs/baselines.md).

    config.diffusion.parameterization = "v"
    config.diffusion.loss_weighting = "v_mse"

    config.sampler.name = "pc"
    config.sampler.num_steps = 128
    config.sampler.corrector_steps = 1
    config.sampler.gamma = 0.3
    config.sampler.recon_guidance_weight = 9.0

    config.train.num_steps = 220_000
    config.train.batch_size = 256
    config.train.learning_rate = 3e-4
    config.train.warmup_steps = 1000
    config.train.lr_schedule = "constant"
    config.train.b2 = 0.99
    config.train.ema_decay = 0.9999
    config.train.log_every = 100
    config.train.checkpoint_every = 5000
    config.train.sample_every = 20_000
    config.train.eval_every = 50_000

    config.eval.metrics = ("fvd",)
    config.eval.num_samples = 2048
    config.eval.batch_size = 64

    config.parallel.rules = "fsdp"
    return config
