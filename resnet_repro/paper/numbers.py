"""The paper's numbers as data (He et al., CVPR 2016, arXiv:1512.03385).

Every value carries the table it comes from. Errors are percentages; FLOPs are multiply-adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Table 1, bottom row: FLOPs (multiply-adds) of the ImageNet nets at 224x224. Plain nets have
# the same FLOPs as their residual counterparts (option A adds none; §3.3 / Table 1 notes).
TABLE1_MACS: dict[str, float] = {
    "imagenet_resnet18": 1.8e9,
    "imagenet_resnet34": 3.6e9,
    "imagenet_resnet50": 3.8e9,
    "imagenet_resnet101": 7.6e9,
    "imagenet_resnet152": 11.3e9,
    "imagenet_plain18": 1.8e9,
    "imagenet_plain34": 3.6e9,
    "imagenet_resnet34_b": 3.6e9,
    "imagenet_resnet34_c": 3.6e9,
}

# Table 6: CIFAR-10 parameter counts (as printed, rounded) and test errors (%), option A.
TABLE6_PARAMS: dict[str, float] = {
    "cifar_resnet20": 0.27e6,
    "cifar_resnet32": 0.46e6,
    "cifar_resnet44": 0.66e6,
    "cifar_resnet56": 0.85e6,
    "cifar_resnet110": 1.7e6,
    "cifar_resnet1202": 19.4e6,
}
# Plain nets of Table 6 / Figure 6 have the same parameters as option-A ResNets.
TABLE6_PARAMS.update({k.replace("resnet", "plain"): v for k, v in TABLE6_PARAMS.items() if "1202" not in k})

TABLE6_ERROR: dict[str, float] = {
    "cifar_resnet20": 8.75,
    "cifar_resnet32": 7.51,
    "cifar_resnet44": 7.17,
    "cifar_resnet56": 6.97,
    "cifar_resnet110": 6.43,  # best of 5 runs; mean 6.61 +- 0.16
    "cifar_resnet1202": 7.93,
}
TABLE6_RESNET110_MEAN_STD = (6.61, 0.16)  # Table 6: "6.61 +- 0.16" over 5 runs

# Table 2: ImageNet val top-1 error (%), 10-crop, option A.
TABLE2_TOP1: dict[str, float] = {
    "imagenet_plain18": 27.94,
    "imagenet_plain34": 28.54,
    "imagenet_resnet18": 27.88,
    "imagenet_resnet34": 25.03,
}

# Table 3: ImageNet val, 10-crop, (top-1, top-5) error (%).
TABLE3_TOP1_TOP5: dict[str, tuple[float, float]] = {
    "imagenet_plain34": (28.54, 10.02),
    "imagenet_resnet34": (25.03, 7.76),  # option A
    "imagenet_resnet34_b": (24.52, 7.46),
    "imagenet_resnet34_c": (24.19, 7.40),
    "imagenet_resnet50": (22.85, 6.71),
    "imagenet_resnet101": (21.75, 6.05),
    "imagenet_resnet152": (21.43, 5.71),
}

# Table 4: ImageNet val, single model, multi-scale fully-convolutional testing (top-1, top-5).
TABLE4_TOP1_TOP5: dict[str, tuple[float, float]] = {
    "imagenet_resnet34_b": (21.84, 5.71),
    "imagenet_resnet34_c": (21.53, 5.60),
    "imagenet_resnet50": (20.74, 5.25),
    "imagenet_resnet101": (19.87, 4.60),
    "imagenet_resnet152": (19.38, 4.49),
}

# Public reproductions of Table 6 (CIFAR-10 test error, %): context rows beside ours, never
# verdict rows. Their recipes differ from the paper's, as each entry says.
@dataclass(frozen=True)
class Peer:
    name: str
    source: str
    recipe: str
    data: str  # the data set their numbers are on ("cifar10": the original files)
    errors: dict[str, float]
    std: dict[str, float] = field(default_factory=dict)  # when they report a spread
    runs: dict[str, int] = field(default_factory=dict)  # runs behind a number (1 when absent)


PEERS: tuple[Peer, ...] = (
    Peer("akamaster/pytorch_resnet_cifar10", "https://github.com/akamaster/pytorch_resnet_cifar10 (README table)",
         "PyTorch; 200 epochs on the 50k training images; the best epoch chosen on the test set", "cifar10",
         {"cifar_resnet20": 8.27, "cifar_resnet32": 7.37, "cifar_resnet44": 6.90, "cifar_resnet56": 6.61,
          "cifar_resnet110": 6.32}),
    Peer("gcr/torch-residual-networks", "https://github.com/gcr/torch-residual-networks (README)",
         "Torch (Lua) reimplementation; its README gives its training details", "cifar10",
         {"cifar_resnet20": 8.29, "cifar_resnet32": 7.63, "cifar_resnet44": 7.14, "cifar_resnet56": 6.94,
          "cifar_resnet110": 6.73}),
    Peer("tensorflow/models PR 5243", "https://github.com/tensorflow/models/pull/5243",
         "TensorFlow official ResNet; ResNet-56 on the 50k training images, 164 epochs, 5 seeds (mean ± std)",
         "cifar10", {"cifar_resnet56": 6.88}, std={"cifar_resnet56": 0.2}, runs={"cifar_resnet56": 5}),
)

# -- The data behind the tables. The judge's recipe of a row is its exp as composed
# -- (resnet_repro/recipes.py, every value in conf/ citing the paper); these are the data sizes
# -- the judge checks a run's measured data against.

TABLE6_RESNET110_RUNS = 5  # Table 6: ResNet-110's "6.61 +- 0.16" is over 5 runs; other rows print one number

# §4.2 (Table 6): CIFAR-10, trained on the 50k training images, tested on the 10k test images.
CIFAR_TRAIN_SIZE = 50000  # §4.2: "50k training images and 10k testing images in 10 classes"
CIFAR_TEST_SIZE = 10000  # §4.2 (the 45k/5k split only chose the schedule)
CIFAR_CLASSES = 10

# §3.4 / §4.1 (Tables 2-4): ImageNet 2012, 1000 classes, "trained on the 1.28 million training
# images, and evaluated on the 50k validation images" (§4.1).
IMAGENET_TRAIN_SIZE = 1281167  # §4.1: 1.28 million (ILSVRC-2012's exact count)
IMAGENET_TEST_SIZE = 50000  # §4.1: the 50k validation images (our test split)
IMAGENET_CLASSES = 1000
