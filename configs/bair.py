"""BAIR robot pushing, 64x64: predict 15 frames from 1 (Ho et al. 2022, §4.2 and appendix A).

  python main.py --config=configs/bair.py --workdir=gs://BUCKET/vdm/bair --distributed \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets

Paper: FVD 66.92 (reconstruction guidance, 100 x 256 samples against the test set), on 128-256 TPU-v4 chips.
Model: 128 channels, multipliers (1,2,3,4), 3 res blocks, v-prediction; Adam b2 0.999, lr 2e-4, weight decay 0.01,
batch 128, EMA 0.999, 660k steps, horizontal flips; unconditional 16-frame model, conditioned at sampling time on the
first frame by reconstruction guidance w_r = 50 with 256 ancestral + 256 Langevin steps.
Our cost estimate (docs/baselines.md): 137.5M parameters, 5.8 TFLOP per clip per step, ~4.9e20 FLOP for 660k steps:
~10 h on 128 TPU-v4 chips at 40% of peak; 6.4 GiB per device with one clip per device and 8-way FSDP.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.name = "bair_robot_pushing_small"
    config.data.num_frames = 16
    config.data.resolution = 64
    config.data.random_flip = True
    config.data.shuffle_buffer = 2048

    config.model.base_channels = 128
    config.model.channel_mults = (1, 2, 3, 4)
    config.model.num_res_blocks = 3
    config.model.attn_resolutions = (32, 16, 8)
    config.model.head_dim = 64
    config.model.emb_dim = 512
    config.model.dropout = 0.1
    config.model.dtype = "bfloat16"
    config.model.remat_policy = "full"  # Activations, not parameters, dominate memory at 64x64 (docs/baselines.md).

    config.diffusion.parameterization = "v"
    config.diffusion.loss_weighting = "v_mse"

    config.sampler.name = "pc"
    config.sampler.num_steps = 256
    config.sampler.corrector_steps = 1
    config.sampler.langevin_delta = 0.1
    config.sampler.gamma = 0.1
    config.sampler.recon_guidance_weight = 50.0

    config.train.num_steps = 660_000
    config.train.batch_size = 128
    config.train.learning_rate = 2e-4
    config.train.warmup_steps = 1000
    config.train.lr_schedule = "constant"
    config.train.b2 = 0.999
    config.train.weight_decay = 0.01
    config.train.ema_decay = 0.999
    config.train.log_every = 100
    config.train.checkpoint_every = 5000
    config.train.sample_every = 20_000
    config.train.eval_every = 50_000

    config.eval.metrics = ("fvd",)
    config.eval.num_samples = 256
    config.eval.batch_size = 64

    config.parallel.rules = "fsdp"
    return config
