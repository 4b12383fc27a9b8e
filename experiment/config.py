"""The whole experiment config: one typed section per component, loaded strictly from YAML.

It sits above everything it assembles; each section's class lives with its owner:

    policy       policy.PolicyConfig      (chunking, normalization, ensembling)  }
    vision       encoders.VisionConfig                                           }  policy.ModelConfig:
    text         encoders.TextConfig                                             }  what a policy is
    state        encoders.StateConfig                                            }  built from
    fusion       fusion.FusionConfig                                             }
    action_head  one of action_head.HEADS, chosen by its ``type``                }
    seed, device
    env          envs.EnvConfig
    data         data.DataConfig
    train        TrainConfig (here: train.py is a script)
    eval         evaluation.EvalConfig
"""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from action_head.diffusion import DiffusionHeadConfig
from core.configuration import ConfigError, apply_overrides, doc_field, from_dict, load_yaml
from core.errors import DamagedFileError
from data.config import DataConfig
from envs import EnvConfig, Features, benchmark, features_for
from evaluation.config import EvalConfig
from policy.checkpoint import CONFIG, read_meta
from policy.config import MODEL_SECTIONS, ModelConfig


@dataclass
class TrainConfig:
    steps: int = doc_field(20000, "optimizer steps")
    batch_size: int = doc_field(64, "samples per optimizer step")
    lr: float = doc_field(1e-4, "peak AdamW learning rate")
    weight_decay: float = doc_field(1e-4, "AdamW weight decay")
    adam_beta2: float = doc_field(0.999, "AdamW's second-moment decay (0.95 in the VLA-0 recipe)")
    warmup_steps: int = doc_field(500, "linear warmup before the cosine decay")
    grad_clip: float = doc_field(1.0, "max gradient norm (0 = off)")
    ema_decay: float = doc_field(0.0, "EMA of weights for evaluation (0 = off, 0.999 typical)")
    precision: Literal["auto", "fp32", "bf16"] = doc_field(
        "fp32", "bf16 autocast (1.7x faster ResNet18 training on AVX-512 BF16 CPUs) | fp32 | auto: bf16 where "
                "the device computes it natively (CUDA from Ampere on, CPUs with AVX-512 BF16 or AMX), else fp32 "
                "(elsewhere bf16 is emulated, many times slower)")
    channels_last: bool = doc_field(False, "channels-last memory format for the conv trunk")
    micro_batches: int = doc_field(1, "split each batch into this many micro-batches and accumulate their "
                                      "gradients: one update of batch_size samples, activations of "
                                      "batch_size / micro_batches (each slice's loss is its own mean, so the "
                                      "update is exactly the whole batch's only when every sample weighs alike)")
    log_every: int = doc_field(50, "steps between TensorBoard scalars")
    save_every: int = doc_field(1000, "steps between 'latest' checkpoints (atomic; --resume continues from it)")
    save_minutes: float = doc_field(10.0, "also save 'latest' when this many minutes passed since the last save "
                                          "(0 = by steps only)")
    num_workers: int = doc_field(0, "DataLoader worker processes (0: load in the training process)")

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.micro_batches < 1 or self.batch_size % self.micro_batches:
            raise ConfigError(f"train.micro_batches must be >= 1 and divide train.batch_size ({self.batch_size}), "
                              f"got {self.micro_batches}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 < self.adam_beta2 < 1.0:
            raise ConfigError(f"train.adam_beta2 must be in (0, 1), got {self.adam_beta2}")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.grad_clip < 0:  # a negative max norm flips the gradient: training would ascend the loss
            raise ConfigError(f"train.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.save_minutes < 0:
            raise ConfigError(f"train.save_minutes must be >= 0 (0 = by steps only), got {self.save_minutes}")
        if self.num_workers < 0:
            raise ConfigError(f"train.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class Config(ModelConfig):
    """The model's sections (``ModelConfig``: policy, vision, text, state, fusion, action_head) and the run's."""

    seed: int = doc_field(0, "seed for data order, initialization, augmentation and sampling")
    device: str = doc_field("auto", "auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps")
    env: EnvConfig = doc_field(default_factory=EnvConfig, doc="environment and its observation shapes")
    data: DataConfig = doc_field(default_factory=DataConfig, doc="where demonstrations come from")
    train: TrainConfig = doc_field(default_factory=TrainConfig, doc="optimization")
    eval: EvalConfig = doc_field(default_factory=EvalConfig, doc="closed-loop evaluation")

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.seed < 2**31:
            raise ConfigError(f"seed must be in [0, 2**31), got {self.seed}")
        if self.policy.aux_state_weight > 0 and not benchmark(self.env.name).privileged_dim:
            raise ConfigError(f"policy.aux_state_weight: {self.env.name} datasets record no simulator state; "
                              "set it to 0")

    @property
    def features(self) -> Features:
        """The shapes a policy of this config is built with: the env's, plus the simulator state its
        demonstrations record when ``policy.aux_state_weight`` trains on it."""
        features = features_for(self.env)
        if self.policy.aux_state_weight > 0:
            features = replace(features, privileged_dim=benchmark(self.env.name).privileged_dim)
        return features

    @property
    def model(self) -> ModelConfig:
        """The sections the policy is built from, as a ``ModelConfig`` of their own."""
        return ModelConfig(**{name: getattr(self, name) for name in MODEL_SECTIONS})


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file (optional) plus ``section.key=value`` overrides -> validated Config."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    if isinstance(data.get("action_head"), dict) and "type" not in data["action_head"]:
        data["action_head"] = {"type": DiffusionHeadConfig.type, **data["action_head"]}
    return from_dict(Config, data)


def head_overrides(path: str | Path, overrides: list[str], heads: list[str]) -> list[tuple[str, list[str]]]:
    """What the benchmarks measure for a config: (label, overrides) per action head for the modular
    backbone; the vision-language backbone, which has no head, once (label ``vlm``)."""
    if load_config(path, overrides).backbone.type == "vlm":
        return [("vlm", list(overrides))]
    return [(head, [*overrides, f"action_head.type={head}"]) for head in heads]


def checkpoint_config(directory: str | Path) -> Config:
    """The experiment config a checkpoint was trained with (``config.json``)."""
    config = read_meta(directory)["config"]
    if "env" not in config:
        raise DamagedFileError(f"{Path(directory) / CONFIG} records only the model (saved without run_config): "
                               "load it with policy.checkpoint.load_policy; evaluate.py and --resume need a checkpoint "
                               "that train.py wrote")
    try:
        return from_dict(Config, config)
    except ConfigError as error:
        raise DamagedFileError(f"{Path(directory) / CONFIG} holds a config this version cannot load "
                               f"({error})") from None
