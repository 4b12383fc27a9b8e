"""The experiment: one typed config assembling every component's section, above all of them."""

from experiment.config import Config, TrainConfig, load_config

__all__ = ["Config", "TrainConfig", "load_config"]
