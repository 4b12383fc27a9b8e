"""Loading pretrained Hugging Face models by hub id or local directory, with one fast clear error offline.

Used for the frozen text encoder (``text.model_name``) and the vision-language backbone
(``vlm.model_name``): a local directory, then the local cache, then the hub, in that order.
"""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from core.errors import DamagedFileError, MissingResourceError, UserError
from core.network import host_reachable

T = TypeVar("T")


def running_command() -> str:
    """How the current program was started, as a user would type it: ``python train.py``,
    ``python -m benchmarks``; used so that hints name the command that was actually run."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name.removesuffix('.__main__')}"
    return f"python {Path(sys.argv[0]).name}" if sys.argv and sys.argv[0] else "python train.py"


def hub_reachable() -> bool:
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and host_reachable(urlparse(constants.ENDPOINT).hostname)


def cached_snapshot(name: str) -> str | None:
    """The local directory of hub model ``name`` in the Hugging Face cache, or None."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:  # noqa: BLE001  (not cached, or an invalid repo id: either way, not here)
        return None


def _quietly(load: Callable[[str, bool], T], name: str) -> T:
    """A local load, without transformers' per-load progress bar (benchmarks build many policies)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load(name, True)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def load_pretrained(name: str, key: str, what: str, load: Callable[[str, bool], T], hint: str) -> T:
    """``load(name, local_files_only)`` from a local directory, the local cache, or the hub.

    ``key`` (the config key, e.g. ``text.model_name``) and ``what`` ("text encoder") name the model in
    errors; ``hint`` says what to do offline.
    """
    if Path(name).is_dir():  # a broken local directory is an error, not a reason to try the hub
        try:
            return _quietly(load, name)
        except (OSError, ValueError) as error:
            raise DamagedFileError(f"{key}: {name} is not a loadable Hugging Face model directory "
                                   f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    if name.startswith((".", "/", "~")) or "\\" in name:
        raise MissingResourceError(f"{key}: directory {name} does not exist")
    cached = cached_snapshot(name)
    if cached is not None:  # the local cache first, loaded as a directory: no network, no retries
        try:
            return _quietly(load, cached)
        except (OSError, ValueError):
            pass
    if not hub_reachable():
        raise MissingResourceError(f"{what} '{name}' is not a local directory, not in the Hugging Face cache, "
                                   f"and the hub cannot be reached (offline?); {hint}")
    try:
        return load(name, False)
    except OSError as error:
        raise UserError(f"{key}: could not load '{name}' from the hub ({str(error).splitlines()[0]})") from None
