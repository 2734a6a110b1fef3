"""UCF-101 unconditional, 16x64x64: the setting of Ho et al. 2022 (Video Diffusion Models), appendix A.

Launch on a TPU v4 pod slice (every host runs the same command; TFDS data and checkpoints on GCS):
  python main.py --config=configs/ucf101.py --workdir=gs://BUCKET/vdm/ucf101 --distributed \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets

Paper: IS 57.0, FID 295 (C3D features, 10,000 samples) for unconditional UCF-101 16x64x64, on 128 TPU-v4 chips.
Model: 256 channels, multipliers (1,2,4,8), 2 res blocks, attention at 32/16/8 with head dim 64, conditioning
embedding 1024 (a 4-layer noise-level MLP), dropout 0.1; cosine log-SNR schedule in [-20, 20], eps-prediction; Adam
b2 0.99, lr 3e-4, no weight decay, batch 128, EMA 0.9999, 60k steps; 8 independent image frames appended to each
16-frame video; trained on all 13,320 videos (split 1's train + test); sampling with 256 ancestral steps, gamma 0.1.
Ours, not the paper's: the 1000-step linear warm-up, gradient clipping at global norm 1 (from configs/default.py), and
the evaluation: the C3D IS / FID of the paper are not implemented; FVD (I3D) on 2048 samples, as in TATS and
StyleGAN-V, and the warp error. The EMA has no warm-up (`train.ema_warmup=False`): 0.9999 from step 0.
Our cost estimate (docs/baselines.md, from the compile check): 36.5 TFLOP per clip per step with remat, 4.7 PFLOP per
step at batch 128, ~2.8e20 FLOP for 60k steps: ~5.5 h on 128 TPU-v4 chips at 40% of peak; 23.1 GiB per device with
one clip per device and 8-way FSDP.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.name = "ucf101"
    config.data.num_frames = 16
    config.data.frame_stride = 1
    config.data.resolution = 64
    config.data.num_image_frames = 8
    config.data.shuffle_buffer = 2048

    config.model.base_channels = 256
    config.model.channel_mults = (1, 2, 4, 8)
    config.model.num_res_blocks = 2
    config.model.attn_resolutions = (32, 16, 8)
    config.model.head_dim = 64
    config.model.emb_dim = 1024
    config.model.emb_mlp_layers = 4
    config.model.dropout = 0.1
    config.model.dtype = "bfloat16"
    config.model.remat_policy = "full"  # Without remat one 24-frame 64x64 clip needs ~35 GiB per device (8-way FSDP).

    config.diffusion.schedule = "cosine"
    config.diffusion.logsnr_min = -20.0
    config.diffusion.logsnr_max = 20.0
    config.diffusion.parameterization = "eps"
    config.diffusion.loss_weighting = "eps_mse"

    config.sampler.name = "ancestral"
    config.sampler.num_steps = 256
    config.sampler.gamma = 0.1

    config.train.num_steps = 60_000
    config.train.batch_size = 128
    config.train.learning_rate = 3e-4
    config.train.warmup_steps = 1000  # Ours: the paper gives no warm-up.
    config.train.lr_schedule = "constant"  # The paper gives one learning rate and no schedule.
    config.train.b1 = 0.9
    config.train.b2 = 0.99
    config.train.weight_decay = 0.0
    config.train.ema_decay = 0.9999
    config.train.ema_warmup = False  # The paper gives one decay (with the warm-up it would be 0.99985 at step 60k).
    config.train.log_every = 100
    config.train.checkpoint_every = 2000
    config.train.sample_every = 5000
    config.train.eval_every = 10_000
    config.train.num_samples = 16

    config.eval.metrics = ("fvd", "warp_error")  # Ours: the paper reports C3D IS / FID, not implemented here.
    config.eval.num_samples = 2048  # FVD's usual UCF-101 protocol (TATS, StyleGAN-V); the paper's IS / FID use 10k.
    config.eval.batch_size = 64

    config.parallel.mesh_shape = (-1, 1, 1)
    config.parallel.rules = "fsdp"
    return config
