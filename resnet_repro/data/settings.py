"""The data settings (`data.*`) and the names of the sources, without torch: the config schema
(`resnet_repro.config.settings`) is built from them before any command imports torch."""

from __future__ import annotations

from dataclasses import dataclass

from resnet_repro.errors import ConfigError

CIFAR_SOURCES = ("cifar10", "cifar10_folder", "synthetic")
DATA_SOURCES = (*CIFAR_SOURCES, "imagenet")
NORMS = ("per_pixel", "imagenet")


@dataclass(frozen=True)
class DataSettings:
    name: str
    root: str | None = None
    download: bool = True
    cache_dir: str | None = None
    val_size: int = 0  # held out of the training images (§4.2's 45k/5k schedule study: 5000)
    pad: int = 4  # §4.2
    flip: bool = True  # §4.2
    norm: str = "per_pixel"  # §4.2 per-pixel mean; "imagenet": per-channel mean/std (pretrained nets)
    resize: int | None = None  # upsample CIFAR batches (fine-tuning ImageNet nets at 224)
    n_train: int = 10000  # synthetic only
    n_test: int = 2000  # synthetic only
    num_classes: int = 10  # synthetic only
    workers: int = 8  # imagenet: DataLoader worker processes
    crop: int = 224  # imagenet: §3.4 "224x224 crop"
    scale: tuple[int, int] = (256, 480)  # imagenet: §3.4 shorter side in [256, 480]
    lighting_std: float = 0.1  # imagenet: §3.4 PCA colour augmentation, alpha std 0.1
    decode: str = "auto"  # imagenet: where JPEGs are decoded and augmented (device_input.py)

    def __post_init__(self) -> None:
        if len(self.scale) != 2:  # the schema's tuple[int, int] is a list of any length to OmegaConf
            raise ConfigError(f"data.scale must be a list of 2 integers, got {list(self.scale)!r}")
        object.__setattr__(self, "scale", tuple(self.scale))  # OmegaConf gives a list
        if self.val_size < 0:
            raise ConfigError(f"data.val_size must be >= 0, got {self.val_size}")
