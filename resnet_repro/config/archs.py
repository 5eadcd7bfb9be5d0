"""The paper's named architectures as plain data, without torch: what `report`, `judge` and
the settings need to know about a model (its family, depth, shortcut...) without paying for
torch's import. `models.py` builds the networks from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from resnet_repro.errors import ConfigError

Shortcut = Literal["A", "B", "C"]
Family = Literal["cifar", "imagenet"]
BottleneckStride = Literal["1x1", "3x3"]

SHORTCUTS = ("A", "B", "C")
BOTTLENECK_STRIDES = ("1x1", "3x3")

# Table 1: blocks per stage and block type for each ImageNet depth.
IMAGENET_LAYERS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)  # Table 1 (x4 at the output of a bottleneck)
CIFAR_WIDTHS = (16, 32, 64)  # §4.2: {16, 32, 64} filters on maps of {32, 16, 8}


@dataclass(frozen=True)
class Arch:
    """Everything that determines a network's shape: what a checkpoint must match."""

    # Plain `str` where the aliases above say which values: the settings' schema is built from
    # these fields, and OmegaConf has no Literal (__post_init__ checks the values).
    family: str  # Family
    depth: int
    residual: bool = True
    shortcut: str = "A"  # Shortcut
    bottleneck_stride: str = "1x1"  # BottleneckStride
    num_classes: int | None = None  # None: the family's (10 for CIFAR-10, 1000 for ImageNet)

    def __post_init__(self) -> None:
        """Every field checked, one clear line each: a network the models can build, or an error."""
        check_depth(self.family, self.depth)
        check_options(self.residual, self.shortcut, self.bottleneck_stride)
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {self.num_classes}")

    def as_dict(self) -> dict:
        return asdict(self)


def check_depth(family: str, depth: int) -> None:
    """A depth the family has: 6n+2 on CIFAR (§4.2), Table 1's on ImageNet."""
    if family == "cifar":
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(
                f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, 1202, ...), got {depth}"
            )
    elif family == "imagenet":
        if depth not in IMAGENET_LAYERS:
            raise ConfigError(
                f"ImageNet ResNet depth must be one of {sorted(IMAGENET_LAYERS)} (Table 1), got {depth}"
            )
    else:
        raise ConfigError(f"unknown model family {family!r}; choose 'cifar' or 'imagenet'")


def check_options(residual: bool, shortcut: str, bottleneck_stride: str) -> None:
    """The shortcut option (§3.3) and the bottleneck's stride."""
    if shortcut not in SHORTCUTS:
        raise ConfigError(f"unknown shortcut option {shortcut!r}; choose A, B or C (§3.3)")
    if not residual and shortcut != "A":
        raise ConfigError(
            f"plain nets have no shortcuts, so shortcut={shortcut!r} does not apply "
            "(use residual=true for option B/C)"
        )
    if bottleneck_stride not in BOTTLENECK_STRIDES:
        raise ConfigError(f"bottleneck_stride must be '1x1' (paper) or '3x3' (v1.5), got {bottleneck_stride!r}")


def check_group_size(group_size: int | None) -> None:
    """`model.bn_group_size`: images per BN group (models/grouped_bn.py), or None for ordinary BN."""
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2):
        raise ConfigError(f"bn_group_size must be an integer >= 2 (or null for ordinary BN), got {group_size!r}")


def _named() -> dict[str, Arch]:
    named: dict[str, Arch] = {}
    # §4.2, Table 6: n = 3, 5, 7, 9, 18, 200; option A everywhere on CIFAR.
    for d in (20, 32, 44, 56, 110, 1202):
        named[f"cifar_resnet{d}"] = Arch("cifar", d)
    # Figure 6 (left): plain-20/32/44/56 and plain-110.
    for d in (20, 32, 44, 56, 110):
        named[f"cifar_plain{d}"] = Arch("cifar", d, residual=False)
    # Table 2: plain/ResNet-18/34 with option A; Table 3: ResNet-34 B and C.
    for d in (18, 34):
        named[f"imagenet_plain{d}"] = Arch("imagenet", d, residual=False)
        named[f"imagenet_resnet{d}"] = Arch("imagenet", d, shortcut="A")
    named["imagenet_resnet34_b"] = Arch("imagenet", 34, shortcut="B")
    named["imagenet_resnet34_c"] = Arch("imagenet", 34, shortcut="C")
    # Table 3: ResNet-50/101/152 use option B, stride on the first 1x1 (the paper's layout).
    for d in (50, 101, 152):
        named[f"imagenet_resnet{d}"] = Arch("imagenet", d, shortcut="B")
    # torchvision's layout ("v1.5": option B, bottleneck stride on the 3x3): its weights load.
    for d in (18, 34, 50, 101, 152):
        named[f"torchvision_resnet{d}"] = Arch("imagenet", d, shortcut="B", bottleneck_stride="3x3")
    return named


NAMED_MODELS: dict[str, Arch] = _named()


def get_arch(name: str) -> Arch:
    try:
        return NAMED_MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(NAMED_MODELS)}") from None


def input_size(family: str) -> int:
    """The family's input resolution: 32 for CIFAR (§4.2), 224 for ImageNet (Table 1)."""
    return 32 if family == "cifar" else 224


def _same_network(a: Arch, b: Arch) -> bool:
    # The class count follows the data; everything else is the network's shape.
    return (a.family, a.depth, a.residual, a.shortcut, a.bottleneck_stride) == (
        b.family, b.depth, b.residual, b.shortcut, b.bottleneck_stride)


def name_for(arch: Arch) -> str:
    """The name of the network `arch` describes: a named model's name when one has this shape
    (e.g. `cifar_resnet32`), else one built the same way (`cifar_resnet74`, `imagenet_resnet50_c`,
    `imagenet_resnet18_3x3`): a run is always named after the network it trained."""
    for name, named in NAMED_MODELS.items():
        if _same_network(named, arch):
            return name
    name = f"{arch.family}_{'resnet' if arch.residual else 'plain'}{arch.depth}"
    paper_shortcut = "B" if arch.family == "imagenet" and arch.depth >= 50 else "A"  # Tables 2, 3, 6
    if arch.shortcut != paper_shortcut:
        name += f"_{arch.shortcut.lower()}"
    if arch.bottleneck_stride != "1x1":
        name += f"_{arch.bottleneck_stride}"
    return name


def names_after_network(model_name: str, exp_name: str, arch: Arch) -> tuple[str, str]:
    """(model name, exp name) of a run that trains `arch`: `+exp=cifar_resnet20 model.depth=32`
    trains ResNet-32, so the model, and an exp named after its model, become cifar_resnet32
    (the run dir, summary.json, W&B and the report all carry it). Other exp names (`demo`) stay."""
    if model_name not in NAMED_MODELS:
        return model_name, exp_name
    name = name_for(arch)
    return name, (name if exp_name == model_name else exp_name)
