"""UCF-101 class-conditional, 16x64x64, with classifier-free guidance: ours, not a model of the paper.

  python main.py --config=configs/ucf101_class_cfg.py --workdir=gs://BUCKET/vdm/ucf101_cfg --distributed \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets

The unconditional UCF-101 setting (configs/ucf101.py) plus a class embedding over the 101 actions with a learned null
class, dropped with probability 0.1 in training; sampled with guidance weight w = 2. The paper's guidance study
(Ho et al. 2022, Table 5) is of text-to-video models at w in {1, 2, 5}: IS-like scores rise with w, FID-like scores
improve up to w = 2 and then degrade. Like configs/ucf101.py it trains on all videos (train + test of split 1), so
FVD's real side, the test part, was seen in training: compare such FVDs only with runs trained the same way.
"""

from configs import ucf101


def get_config():
    config = ucf101.get_config()
    config.model.num_classes = 101
    config.model.cond_drop_prob = 0.1
    config.sampler.guidance_weight = 2.0
    return config
