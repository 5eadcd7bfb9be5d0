"""Does a run follow a paper row's recipe, and how does its error compare? One answer, used by
`report` and by the W&B summary of a training run.

The recipe of a row (numbers in resnet_repro/paper.py, with their sections):

- the row's architecture (`models.get_arch(row)`: family, depth, plain/residual, shortcut
  option, and the bottleneck stride for bottleneck nets), trained from scratch;
- the paper's data: CIFAR-10 (10 classes, trained on all 50,000 training images, tested on the
  10,000 test images; torchvision's copy or the JPEG copy `cifar10_folder`, which the verdict
  names) or ImageNet (1000 classes, the 1,281,167 training images less at most
  IMAGENET_MAX_HELD_OUT held out for the plateau schedule, tested on the 50,000 val images);
- the schedule and length: CIFAR 64k iterations of batch 128, lr 0.1 divided by 10 at 32k and
  48k, with the lr-0.01 warm-up for ResNet-110/1202 only; ImageNet 600k iterations of batch
  256, lr 0.1 divided by 10 on plateaus (or a step schedule).

Anything else gets "not the paper's recipe: <what differs>" and no verdict. A field a run did
not record (an old run without config.yaml) counts as a difference: "<field> not recorded".

Verdict statistics. Our mean of n seeds is compared with the paper's number, itself a mean of
n_paper runs (5 for ResNet-110's 6.61 ± 0.16, Table 6; 1 for every other row). With a per-run
standard deviation sigma, the difference of the two means has standard deviation
sigma * sqrt(1/n + 1/n_paper), so

    band = K * sigma * sqrt(1/n + 1/n_paper),   K = 2 (about 95% for normal noise)

    d = ours mean - paper:  |d| <= band: "reproduced";  d < -band: "better than the paper";
                            d > band: "worse than the paper".

sigma: CIFAR-10 0.16 points, the one run-to-run spread the paper reports (ResNet-110, Table
6), used for every depth. ImageNet 0.2 points: our choice, the paper gives single runs and no
spread; 0.2 is of the order of the seed-to-seed spread reported for ResNets on ImageNet. E.g.
ResNet-20 (one paper run), n = 1: band = 2 * 0.16 * sqrt(2) = 0.45; n = 9: 0.34. ResNet-110
(n_paper = 5), n = 1: 0.35; n = 9: 0.18.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from resnet_repro import paper
from resnet_repro.archs import IMAGENET_LAYERS, NAMED_MODELS

K = 2.0  # band half-width in standard deviations of (ours mean - paper)
SIGMA_CIFAR = paper.TABLE6_RESNET110_MEAN_STD[1]  # 0.16: Table 6, ResNet-110 over 5 runs
SIGMA_IMAGENET = 0.2  # ours: the paper reports no ImageNet spread
IMAGENET_MAX_HELD_OUT = 10000  # ours: conf/data/imagenet.yaml holds out 10k training images for the plateau

CIFAR_DATA = ("cifar10", "cifar10_folder")  # torchvision's files, or the JPEG copy
JPEG_COPY = "cifar10_folder"

REPRODUCED = "reproduced"
BETTER = "better than the paper"
WORSE = "worse than the paper"
NOT_RECIPE = "not the paper's recipe"


@dataclass(frozen=True)
class Recipe:
    """What a run trained with, as far as a paper row's recipe goes (None: not recorded)."""

    family: str | None
    depth: int | None
    residual: bool | None
    shortcut: str | None
    bottleneck_stride: str | None
    num_classes: int | None
    data: str | None
    train_size: int | None
    test_size: int | None
    iterations: int | None  # trained; while training, the planned trainer.max_iters
    batch_size: int | None
    schedule: str | None  # schedule.kind
    base_lr: float | None
    milestones: tuple[int, ...] | None
    gamma: float | None
    warmup: bool | None
    warmup_lr: float | None
    weights: str | None  # started from these weights (None: from scratch)


def _dict(d: Any, key: str) -> Mapping[str, Any]:
    v = d.get(key) if isinstance(d, Mapping) else None
    return v if isinstance(v, Mapping) else {}


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def recipe_of(summary: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> Recipe:
    """A run's recipe from its summary.json, completed from its resolved config (config.yaml,
    or a W&B run's config): old summaries lack the schedule fields that newer ones carry."""
    config = config or {}
    arch, model = _dict(summary, "arch"), _dict(config, "model")
    sched, c_sched = _dict(summary, "schedule"), _dict(config, "schedule")
    c_warm = _dict(c_sched, "warmup")
    trainer, data = _dict(config, "trainer"), _dict(config, "data")
    milestones = _first(sched.get("milestones"), c_sched.get("milestones"))
    return Recipe(
        family=_first(arch.get("family"), model.get("family")),
        depth=_first(arch.get("depth"), model.get("depth")),
        residual=_first(arch.get("residual"), model.get("residual")),
        shortcut=_first(arch.get("shortcut"), model.get("shortcut")),
        bottleneck_stride=_first(arch.get("bottleneck_stride"), model.get("bottleneck_stride")),
        num_classes=_first(summary.get("num_classes"), arch.get("num_classes"), model.get("num_classes")),
        data=_first(summary.get("data"), data.get("name")),
        train_size=summary.get("train_size"),
        test_size=summary.get("test_size"),
        iterations=summary.get("iterations"),
        batch_size=_first(summary.get("batch_size"), trainer.get("batch_size")),
        schedule=_first(sched.get("kind"), c_sched.get("kind")),
        base_lr=_first(sched.get("base_lr"), c_sched.get("base_lr")),
        milestones=tuple(milestones) if isinstance(milestones, (list, tuple)) else None,
        gamma=_first(sched.get("gamma"), c_sched.get("gamma")),
        warmup=_first(sched.get("warmup"), c_warm.get("enabled")),
        warmup_lr=c_warm.get("lr"),
        weights=summary.get("weights") if "weights" in summary else model.get("weights"),
    )


def planned_recipe(config: Mapping[str, Any], arch: Mapping[str, Any], sizes: Mapping[str, int]) -> Recipe:
    """The recipe a run is training to (before it ends): its config, the built architecture,
    the data's sizes and the planned trainer.max_iters."""
    summary = {"arch": dict(arch), "train_size": sizes.get("train"), "test_size": sizes.get("test"),
               "iterations": _dict(config, "trainer").get("max_iters")}
    return recipe_of(summary, config)


# --------------------------------------------------------------------------------------------
# The rule
# --------------------------------------------------------------------------------------------


def _is_bottleneck(family: str, depth: int) -> bool:
    return family == "imagenet" and IMAGENET_LAYERS.get(depth, ("basic",))[0] == "bottleneck"


def _close(a: Any, b: float) -> bool:
    ok = isinstance(a, (int, float)) and not isinstance(a, bool)
    return ok and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def recipe_differences(row: str, r: Recipe) -> list[str]:
    """How recipe `r` differs from paper row `row` (a named model, e.g. "cifar_resnet20");
    empty when it is the row's recipe."""
    want = NAMED_MODELS[row]
    cifar = want.family == "cifar"
    out: list[str] = []

    def check(value: Any, expected: Any, what: str, say: str) -> None:
        """`say` formats a difference with {v} (ours) and {p} (the paper's)."""
        if value is None:
            out.append(f"{what} not recorded")
        elif not (_close(value, expected) if isinstance(expected, float) else value == expected):
            out.append(say.format(v=value, p=expected))

    # The data set
    if r.data is None:
        out.append("data not recorded")
    elif cifar and r.data not in CIFAR_DATA:
        out.append(f"{r.data} data (paper CIFAR-10)")
    elif not cifar and r.data != "imagenet":
        out.append(f"{r.data} data (paper ImageNet)")
    check(r.num_classes, paper.CIFAR_CLASSES if cifar else paper.IMAGENET_CLASSES, "number of classes",
          "{v} classes (paper {p})")
    # The architecture
    check(r.family, want.family, "model family", "{v} family (paper {p})")
    check(r.depth, want.depth, "depth", "depth {v} (paper {p})")
    if r.residual is None or r.residual != want.residual:
        out.append("residual not recorded" if r.residual is None
                   else "residual net (paper plain)" if r.residual else "plain net (paper residual)")
    if want.residual:
        check(r.shortcut, want.shortcut, "shortcut", "shortcut {v} (paper {p})")
    if _is_bottleneck(want.family, want.depth):
        check(r.bottleneck_stride, want.bottleneck_stride, "bottleneck stride",
              "bottleneck stride on the {v} (paper {p})")
    if r.weights:
        out.append(f"started from weights {r.weights} (paper: from scratch)")
    # Length, batch, schedule
    check(r.iterations, paper.CIFAR_ITERATIONS if cifar else paper.IMAGENET_ITERATIONS, "iterations",
          "{v} iterations (paper {p})")
    check(r.batch_size, paper.CIFAR_BATCH if cifar else paper.IMAGENET_BATCH, "batch size", "batch {v} (paper {p})")
    if cifar:
        check(r.schedule, "step", "schedule", "{v} schedule (paper step)")
        check(r.base_lr, paper.CIFAR_BASE_LR, "learning rate", "lr {v:g} (paper {p:g})")
        if r.schedule == "step":
            ms = ", ".join(map(str, r.milestones)) if r.milestones is not None else None
            check(ms, ", ".join(map(str, paper.CIFAR_MILESTONES)), "lr milestones", "lr drops at {v} (paper {p})")
            check(r.gamma, paper.CIFAR_GAMMA, "lr factor", "lr factor {v:g} (paper {p:g})")
        warm = row in paper.CIFAR_WARMUP or row in paper.CIFAR_WARMUP_OURS
        check(r.warmup, warm, "warm-up", "lr warm-up (paper none)" if not warm else "no warm-up (paper lr 0.01 first)")
        if warm and r.warmup and r.warmup_lr is not None:
            check(r.warmup_lr, paper.CIFAR_WARMUP_LR, "warm-up lr", "warm-up lr {v:g} (paper {p:g})")
        check(r.train_size, paper.CIFAR_TRAIN_SIZE, "train size", "trained on {v} images (paper {p})")
        check(r.test_size, paper.CIFAR_TEST_SIZE, "test size", "tested on {v} images (paper {p})")
    else:
        if r.schedule is None or r.schedule not in paper.IMAGENET_SCHEDULES:
            out.append("schedule not recorded" if r.schedule is None else f"{r.schedule} schedule (paper plateau)")
        check(r.base_lr, paper.IMAGENET_BASE_LR, "learning rate", "lr {v:g} (paper {p:g})")
        if r.schedule == "step":
            check(r.gamma, paper.IMAGENET_GAMMA, "lr factor", "lr factor {v:g} (paper {p:g})")
        check(r.warmup, False, "warm-up", "lr warm-up (paper none)")
        lo = paper.IMAGENET_TRAIN_SIZE - IMAGENET_MAX_HELD_OUT
        if r.train_size is None or not lo <= r.train_size <= paper.IMAGENET_TRAIN_SIZE:
            out.append("train size not recorded" if r.train_size is None
                       else f"trained on {r.train_size} images (paper {paper.IMAGENET_TRAIN_SIZE})")
        check(r.test_size, paper.IMAGENET_TEST_SIZE, "test size", "tested on {v} images (paper {p})")
    return out


def band(sigma: float, n: int, n_paper: int = 1, k: float = K) -> float:
    """Half-width of the 'reproduced' band for a mean of n runs against a paper mean of
    n_paper runs: k * sigma * sqrt(1/n + 1/n_paper)."""
    return k * sigma * math.sqrt(1 / n + 1 / n_paper)


def verdict(ours_mean: float, paper_value: float, half_width: float) -> str:
    """Errors: below the band is better than the paper, above it worse."""
    d = ours_mean - paper_value
    eps = 1e-9  # float noise must not flip a verdict on the boundary
    return REPRODUCED if abs(d) <= half_width + eps else BETTER if d < 0 else WORSE


def on_data(v: str, data: str | None) -> str:
    """The verdict of a run on the JPEG copy says so."""
    return f"{v} on CIFAR-10 (JPEG copy)" if data == JPEG_COPY else v


def not_recipe(differences: list[str]) -> str:
    return f"{NOT_RECIPE}: " + "; ".join(differences)


# --------------------------------------------------------------------------------------------
# The paper's number for a run (W&B)
# --------------------------------------------------------------------------------------------


def paper_value(row: str) -> tuple[str, float, int] | None:
    """(table, the number a run of `row` is compared with, runs behind it): Table 6's test
    error (ResNet-110: the mean of 5 runs); for ImageNet the 10-crop top-1 of Table 2, else 3."""
    if row == "cifar_resnet110":
        return "Table 6", paper.TABLE6_RESNET110_MEAN_STD[0], paper.TABLE6_RESNET110_RUNS
    if row in paper.TABLE6_ERROR:
        return "Table 6", paper.TABLE6_ERROR[row], 1
    if row in paper.TABLE2_TOP1:
        return "Table 2", paper.TABLE2_TOP1[row], 1
    if row in paper.TABLE3_TOP1_TOP5:
        return "Table 3", paper.TABLE3_TOP1_TOP5[row][0], 1
    return None


def paper_reference(exp_name: str, recipe: Recipe, test_err: float | None = None) -> dict[str, Any]:
    """W&B fields for a run of `exp_name` whose recipe is the paper row's, else {}.

    CIFAR: "paper/test_err" (a reference line beside test/err) and, given our final test_err,
    "paper/gap" (ours - paper), "paper/band" and "paper/verdict" for this one run. ImageNet:
    "paper/ten_crop_err" only: training measures the centre crop, the paper 10 crops, so the
    gap belongs to `eval` and the report."""
    ref = paper_value(exp_name)
    if ref is None or recipe_differences(exp_name, recipe):
        return {}
    table, value, n_paper = ref
    if table != "Table 6":
        return {"paper/ten_crop_err": value}
    out: dict[str, Any] = {"paper/test_err": value}
    if test_err is not None:
        half = band(SIGMA_CIFAR, 1, n_paper)
        out.update({"paper/gap": test_err - value, "paper/band": half,
                    "paper/verdict": on_data(verdict(test_err, value, half), recipe.data)})
    return out


def planned_reference(exp_name: str, config: Mapping[str, Any], arch: Mapping[str, Any],
                      sizes: Mapping[str, int]) -> dict[str, Any]:
    """The paper's reference line for each evaluation row of a training run (or {})."""
    return paper_reference(exp_name, planned_recipe(config, arch, sizes))


def with_paper_reference(summary: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """`summary` plus the paper's number, the gap and a one-run verdict (for W&B)."""
    test_err = summary.get("test_err")
    test_err = float(test_err) if isinstance(test_err, (int, float)) and not isinstance(test_err, bool) else None
    ref = paper_reference(str(summary.get("exp_name")), recipe_of(summary, config), test_err)
    return {**summary, **ref}
