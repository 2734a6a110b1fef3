"""BAIR robot pushing, 64x64: predict 15 frames from 1 (Ho et al. 2022, §4.2 and appendix A).

  python main.py --config=configs/bair.py --workdir=gs://BUCKET/vdm/bair --distributed \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets

Paper: FVD 66.92 (reconstruction guidance, 100 x 256 samples against the test set), on 128 TPU-v4 chips.
Model: 128 channels, multipliers (1,2,3,4), 3 res blocks, attention at 32/16/8 with head dim 64, conditioning
embedding 1024 (a 2-layer noise-level MLP), dropout 0.1, v-prediction; Adam b2 0.999, lr 2e-4, weight decay 0.01,
batch 128, EMA 0.999, 660k steps, horizontal flips, 8 independent image frames appended to each 16-frame video;
unconditional 16-frame model, conditioned at sampling time on the first frame by reconstruction guidance w_r = 50 with
256 ancestral (gamma 0) + 256 Langevin steps (here 255: no corrector after the last step, to t = 0). Evaluation
(`--mode=evaluate`) follows the paper: 100 predictions from the first frame of each of the 256 test clips, FVD against
those clips.
Ours, not the paper's: the 1000-step linear warm-up, gradient clipping at global norm 1 (from configs/default.py),
and weight decay decoupled (AdamW) and applied to matrices and kernels only. The EMA has no warm-up: 0.999 from step 0.
Our cost estimate (docs/baselines.md): 149.3M parameters, 8.6 TFLOP per clip (16 + 8 image frames) per step, ~7.3e20
FLOP for 660k steps: ~14 h on 128 TPU-v4 chips at 40% of peak; 9.2 GiB per device with one clip per device and 8-way
FSDP.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.name = "bair_robot_pushing_small"
    config.data.num_frames = 16
    config.data.resolution = 64
    config.data.num_image_frames = 8
    config.data.random_flip = True
    config.data.shuffle_buffer = 2048

    config.model.base_channels = 128
    config.model.channel_mults = (1, 2, 3, 4)
    config.model.num_res_blocks = 3
    config.model.attn_resolutions = (32, 16, 8)
    config.model.head_dim = 64
    config.model.emb_dim = 1024
    config.model.emb_mlp_layers = 2
    config.model.dropout = 0.1
    config.model.dtype = "bfloat16"
    config.model.remat_policy = "full"  # Activations, not parameters, dominate memory at 64x64 (docs/baselines.md).

    config.diffusion.schedule = "cosine"
    config.diffusion.logsnr_min = -20.0
    config.diffusion.logsnr_max = 20.0
    config.diffusion.parameterization = "v"
    config.diffusion.loss_weighting = "v_mse"

    config.sampler.name = "pc"
    config.sampler.num_steps = 256
    config.sampler.corrector_steps = 1
    config.sampler.langevin_delta = 0.1
    config.sampler.gamma = 0.0
    config.sampler.recon_guidance_weight = 50.0

    config.train.num_steps = 660_000
    config.train.batch_size = 128
    config.train.learning_rate = 2e-4
    config.train.warmup_steps = 1000  # Ours: the paper gives no warm-up.
    config.train.lr_schedule = "constant"  # The paper gives one learning rate and no schedule.
    config.train.b2 = 0.999
    config.train.weight_decay = 0.01
    config.train.ema_decay = 0.999
    config.train.ema_warmup = False  # The paper gives one decay.
    config.train.log_every = 100
    config.train.checkpoint_every = 5000
    config.train.sample_every = 20_000
    config.train.eval_every = 0  # At the end only: 25,600 guided samples, ~8% of training's FLOPs each time.

    config.eval.metrics = ("fvd",)
    config.eval.num_cond_frames = 1  # Predict 15 frames from each test clip's first.
    config.eval.samples_per_clip = 100  # 100 x 256: 100 samples for each of the 256 test clips.
    config.eval.num_samples = 25_600
    config.eval.batch_size = 64

    config.parallel.rules = "fsdp"
    return config
