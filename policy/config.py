"""The ``policy`` config section (how chunks are predicted, executed and normalized), and ``ModelConfig``:
the sections a policy is built from."""

from dataclasses import dataclass
from typing import Literal

from action_head import HEADS, head_config_class
from action_head.base import HeadConfig
from action_head.diffusion import DiffusionHeadConfig
from core.configuration import ConfigError, doc_field
from encoders import StateConfig, TextConfig, VisionConfig
from fusion import FusionConfig


@dataclass
class PolicyConfig:
    d_model: int = doc_field(256, "token width shared by encoders, fusion and heads")
    chunk_size: int = doc_field(16, "H: actions predicted per chunk")
    n_action_steps: int = doc_field(8, "actions executed from each chunk before re-planning")
    n_obs_steps: int = doc_field(1, "observation frames given to the model (history)")
    normalization: Literal["min_max", "mean_std"] = doc_field("min_max", "state and action normalization")
    relative_actions: bool = doc_field(False, "predict actions minus the current state (action and state share a space)")
    state_dropout: float = doc_field(
        0.0, "training only: chance per sample of hiding the robot state (a learned token instead), "
             "so the policy cannot copy its own trajectory from proprioception and must look")
    first_frame: bool = doc_field(
        False, "also show the policy the episode's first camera images (the layout before the arm moves), "
               "encoded by the same ResNet (a forward pass without gradients) as extra scene tokens: the goal "
               "stays in view when the arm later hides it or looks like it (the stock reach scene); images only")
    aux_state_weight: float = doc_field(
        0.0, "training only: weight of an auxiliary loss that predicts, from the fused context the head reads, "
             "the simulator's full state the dataset recorded (Meta-World's 39-dim observation with the goal, "
             "PushT's block pose); privileged information that teaches the encoders where the goal is and never "
             "reaches the policy at inference (0 = off)")
    ensemble: Literal["none", "act", "average"] = doc_field(
        "none", "temporal ensembling, re-planning every step: act (exponential) | average (last K chunks)")
    ensemble_coeff: float = doc_field(0.01, "ACT ensembling weight exp(-coeff * i), i = 0 for the oldest")
    ensemble_k: int = doc_field(4, "chunks averaged by ensemble=average")

    def __post_init__(self):
        if self.chunk_size < 1 or self.n_obs_steps < 1 or self.d_model < 1:
            raise ConfigError("policy.chunk_size, n_obs_steps and d_model must be >= 1")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ConfigError(f"policy.n_action_steps={self.n_action_steps} must be in [1, chunk_size={self.chunk_size}]")
        if self.ensemble != "none" and self.n_action_steps != 1:
            raise ConfigError(f"policy.ensemble={self.ensemble} re-plans every step: set policy.n_action_steps=1")
        if not 0.0 <= self.state_dropout < 1.0:
            raise ConfigError("policy.state_dropout must be in [0, 1)")
        if not 0.0 <= self.aux_state_weight <= 100.0:
            raise ConfigError(f"policy.aux_state_weight must be in [0, 100], got {self.aux_state_weight}")
        if not 1 <= self.ensemble_k <= self.chunk_size:
            raise ConfigError(f"policy.ensemble_k={self.ensemble_k} must be in [1, chunk_size={self.chunk_size}]")


@dataclass
class BackboneConfig:
    type: Literal["modular", "vlm"] = doc_field(
        "modular", "modular: ResNet18 + frozen text encoder + fusion + action head, trained from scratch | "
                   "vlm: a pretrained vision-language model that writes the chunk as text (the vlm section)")


@dataclass
class VLMConfig:
    """The ``vlm`` backbone (the VLA-0 recipe): read only when ``backbone.type: vlm``."""

    model_name: str = doc_field("HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
                                "Hugging Face image-text-to-text model: hub id or local directory")
    n_bins: int = doc_field(512, "B: each normalized action value is written as an integer in [0, B)")
    state_in_prompt: bool = doc_field(True, "write the robot state into the prompt, as integers in [0, B)")
    system_prompt: str = doc_field("", "an optional system turn before the user turn")
    mask_prob: float = doc_field(0.0, "training only: chance per action token of hiding it in the input "
                                      "(the target stays), so the model cannot copy its own previous numbers")
    lora_rank: int = doc_field(0, "LoRA adapters of this rank on the language model's projections (peft); "
                                  "0 fine-tunes every weight")
    lora_alpha: int = doc_field(32, "LoRA scaling numerator (alpha / rank)")
    freeze_vision: bool = doc_field(False, "keep the vision tower's weights fixed")
    gradient_checkpointing: bool = doc_field(False, "recompute activations in backward: less memory, slower")
    image_splitting: bool = doc_field(False, "let the image processor tile large images (SmolVLM); off for "
                                             "small robot camera frames")

    def __post_init__(self):
        if not self.model_name:
            raise ConfigError("vlm.model_name must name a hub model or a local directory")
        if self.n_bins < 2:
            raise ConfigError(f"vlm.n_bins must be >= 2, got {self.n_bins}")
        if not 0.0 <= self.mask_prob < 1.0:
            raise ConfigError(f"vlm.mask_prob must be in [0, 1), got {self.mask_prob}")
        if self.lora_rank < 0 or self.lora_alpha < 1:
            raise ConfigError("vlm.lora_rank must be >= 0 and vlm.lora_alpha >= 1")


@dataclass
class ModelConfig:
    """What a policy is built from: the model's sections of the experiment config. The modular
    backbone reads vision, text, state, fusion and action_head; the vlm backbone reads vlm."""

    backbone: BackboneConfig = doc_field(default_factory=BackboneConfig, doc="which model family")

    policy: PolicyConfig = doc_field(default_factory=PolicyConfig, doc="chunking, normalization, ensembling")
    vision: VisionConfig = doc_field(default_factory=VisionConfig, doc="ResNet18 image tokens")
    text: TextConfig = doc_field(default_factory=TextConfig, doc="frozen language encoder")
    state: StateConfig = doc_field(default_factory=StateConfig, doc="robot-state MLP")
    fusion: FusionConfig = doc_field(default_factory=FusionConfig, doc="scene self-attention + state cross-attention")
    action_head: HeadConfig = doc_field(default_factory=DiffusionHeadConfig, doc="the action head, by type",
                                        polymorphic=head_config_class, choices=HEADS.names)
    vlm: VLMConfig = doc_field(default_factory=VLMConfig, doc="pretrained vision-language backbone")

    def __post_init__(self):
        if self.backbone.type == "vlm" and self.policy.normalization != "min_max":
            raise ConfigError("backbone.type=vlm writes actions as integers over [-1, 1]: "
                              "set policy.normalization=min_max")
        if self.backbone.type == "vlm" and self.policy.first_frame:
            raise ConfigError("policy.first_frame is for the modular backbone; set it to false with backbone.type=vlm")
        if self.backbone.type == "vlm" and self.policy.aux_state_weight > 0:
            raise ConfigError("policy.aux_state_weight is for the modular backbone; set it to 0 with backbone.type=vlm")

    def model_summary(self) -> str:
        """One phrase for logs: ``diffusion head`` or ``vlm HuggingFaceTB/SmolVLM2-256M-Video-Instruct``."""
        if self.backbone.type == "vlm":
            return f"vlm {self.vlm.model_name}"
        return f"{self.action_head.type} head"


MODEL_SECTIONS = ("backbone", "policy", "vision", "text", "state", "fusion", "action_head", "vlm")
