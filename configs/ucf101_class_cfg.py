"""UCF-101 class-conditional, 16x64x64, with classifier-free guidance (Ho et al. 2022, §4.1 and appendix A).

  python main.py --config=configs/ucf101_class_cfg.py --workdir=gs://BUCKET/vdm/ucf101_cfg --distributed \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets

The unconditional UCF-101 setting (configs/ucf101.py) plus a class embedding over the 101 actions with a learned null
class, dropped with probability 0.1 in training; sampled with guidance weight w = 2 (the paper studies w in
{0, 1, 2, 5} for text conditioning and reports that guidance trades diversity for per-sample quality).
"""

from configs import ucf101


def get_config():
    config = ucf101.get_config()
    config.model.num_classes = 101
    config.model.cond_drop_prob = 0.1
    config.sampler.guidance_weight = 2.0
    return config
