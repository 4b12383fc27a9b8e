"""Encoders: images, language and robot state, each to tokens of width d_model."""

from encoders.state import StateConfig, StateEncoder
from encoders.text import TextConfig, TextEncoder
from encoders.vision import VisionConfig, VisionEncoder

__all__ = ["StateConfig", "StateEncoder", "TextConfig", "TextEncoder", "VisionConfig", "VisionEncoder"]
