"""Does a run follow a paper row's recipe, and how does its error compare? One answer, used by
`report` and by the W&B summary of a training run. It takes typed settings, never a config dict.

The recipe of a row is what the row's exp composes to (`+exp=cifar_resnet20` with no
overrides; `resnet_repro.recipes` composes it). A run follows it when every setting that changes
what is learned is equal. `recipe(settings)` flattens a run's settings into "section.key" ->
value items and drops only the keys named in IGNORED below (device, logging, intervals, paths,
progress, compile, workers, decode path, precision, when to stop the process): every other key,
including any setting added later, is recipe by default. Settings that cannot act given the
others are dropped too (INERT: the warm-up's lr when the warm-up is off, the plateau rule of a
step schedule, ...).

Besides the settings, what the run measured must be the paper's (`Facts`, from summary.json or,
while training, from the data it loaded): the data set (CIFAR-10 / ImageNet), its number of
classes and its training and test sizes (§4.2: 50k / 10k; §4.1: 1.28M less the recipe's
held-out images / 50k), and a complete run (every planned iteration trained).

Data: torchvision's CIFAR-10 files are the paper's data and get verdicts. The JPEG copy
(`data=cifar10_folder`) is another data set (quality-75 JPEG: akamaster's ResNet-20, trained on
the original, errs on more than twice as many of its test images as on the original test set,
experiments/results/cifar10-jpeg/akamaster.md; that also counts the shift from the original to
the copy, which a net trained on the copy does not meet), so a run of the recipe there shows its
gap to the paper but gets no verdict (`Judgement.no_verdict` says why). Anything else is "not
the paper's recipe".

Training precision (bf16 autocast with fp32 weights, TF32, or fp32) is not part of the recipe:
it changes rounding, not the model, the data or the optimisation (experiments/fidelity.md gives
the reason and the expected size). The report shows it in every row and never averages runs of
different precisions together.

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

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from resnet_repro.paper import numbers as paper
from resnet_repro.config.archs import NAMED_MODELS
from resnet_repro.runs.state import summary_status

K = 2.0  # band half-width in standard deviations of (ours mean - paper)
SIGMA_CIFAR = paper.TABLE6_RESNET110_MEAN_STD[1]  # 0.16: Table 6, ResNet-110 over 5 runs
SIGMA_IMAGENET = 0.2  # ours: the paper reports no ImageNet spread

PAPER_DATA = {"cifar": "cifar10", "imagenet": "imagenet"}  # the data sets that get verdicts
JPEG_COPY = "cifar10_folder"

REPRODUCED = "reproduced"
BETTER = "better than the paper"
WORSE = "worse than the paper"
NOT_RECIPE = "not the paper's recipe"
NO_VERDICT = "no verdict"
# Measured: experiments/results/cifar10-jpeg/akamaster.md (18.97% vs 8.27% for their ResNet-20).
JPEG_REASON = ("the JPEG copy of CIFAR-10 is another data set than the paper's (quality-75 JPEG: "
               "akamaster's ResNet-20, trained on the original, errs on 18.97% of its test images, 8.27% of "
               "the original's); compare with the peers on the same data")

# The settings that do not change what is learned, each with its reason. Everything else is
# recipe. A key ending in "." names a whole section.
IGNORED: dict[str, str] = {
    "exp_name": "a label",
    "seed": "seeds are the report's n, not a recipe",
    "renamed_from": "a label",
    "model.name": "a label (the architecture's own fields are compared)",
    "model.num_classes": "null means the data's classes; the measured number of classes is compared",
    "data.name": "judged on its own: the paper's files, the JPEG copy (no verdict) or other data",
    "data.root": "a path (where the same data lives)",
    "data.download": "whether torchvision may download the same files",
    "data.cache_dir": "a path (the decoded-image cache)",
    "data.workers": "loader processes: the same images in the same order",
    "data.decode": "decode path (device or workers): the same sampler and draws, decoder rounding only",
    "trainer.device": "where it runs",
    "trainer.eval_every": "evaluation interval (recipe under the plateau schedule, which it paces)",
    "trainer.log_every": "logging interval",
    "trainer.ckpt_every": "checkpoint interval (a resume continues exactly)",
    "trainer.eval_batch_size": "evaluation batch: BN uses fixed statistics, so any size gives the same error",
    "trainer.progress": "the progress bar",
    "trainer.compile": "torch.compile: the same computation (tests/test_fast_path.py)",
    "trainer.channels_last": "memory layout: the same computation",
    "trainer.amp": "precision: shown in every row, never averaged across (experiments/fidelity.md)",
    "trainer.tf32": "precision: shown in every row, never averaged across (experiments/fidelity.md)",
    "trainer.max_time": "when the process stops (a paused run is incomplete, never judged)",
    "trainer.pause_at": "when the process stops (a paused run is incomplete, never judged)",
    "logger.": "logging",
    "bench.": "the bench command's settings",
    "resume": "which run dir continues (the run's own settings are compared)",
}

# Readable names of the recipe keys a user is likeliest to change (others show as their key).
LABELS = {
    "model.family": "model family", "model.depth": "depth", "model.residual": "residual",
    "model.shortcut": "shortcut", "model.bottleneck_stride": "bottleneck stride",
    "model.bn_group_size": "BN group size", "model.weights": "starting weights",
    "model.freeze_backbone": "frozen backbone", "data.val_size": "held-out images", "data.pad": "pad",
    "data.flip": "flip", "data.norm": "normalisation", "data.resize": "resize",
    "optim.momentum": "momentum", "optim.weight_decay": "weight decay", "optim.nesterov": "nesterov",
    "schedule.kind": "schedule", "schedule.base_lr": "lr", "schedule.milestones": "lr drops at",
    "schedule.gamma": "lr factor", "schedule.warmup.enabled": "warm-up", "schedule.warmup.lr": "warm-up lr",
    "trainer.batch_size": "batch", "trainer.max_iters": "iterations", "trainer.sync_bn": "SyncBN",
}


@dataclass(frozen=True)
class Recipe:
    """A run's settings that change what it learns: sorted ("section.key", value) items."""

    items: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.items)

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)


@dataclass(frozen=True)
class Facts:
    """What a run measured (summary.json) or, while training, plans: None = not recorded."""

    data: str | None
    num_classes: int | None
    train_size: int | None
    test_size: int | None
    iterations: int | None  # trained (while training: the planned trainer.max_iters)
    status: str | None = "complete"  # summary.json's status ("paused": an incomplete prefix)


@dataclass(frozen=True)
class Judgement:
    """How a run (or a group of runs) stands against a paper row."""

    differences: tuple[str, ...]  # empty: the row's recipe
    no_verdict: str | None = None  # the recipe, but not the paper's data files: why there is no verdict

    @property
    def follows(self) -> bool:
        return not self.differences


# --------------------------------------------------------------------------------------------
# A run's recipe from its typed settings
# --------------------------------------------------------------------------------------------


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    return v


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _flatten(getattr(obj, f.name), f"{prefix}{f.name}.", out)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _flatten(v, f"{prefix}{k}.", out)
    else:
        out[prefix[:-1]] = _plain(obj)


def ignored(key: str, items: Mapping[str, Any]) -> bool:
    """Is `key` one of the settings that do not change what is learned (IGNORED), or inert
    given the others (a warm-up setting with the warm-up off, the other schedule kind's
    settings)?"""
    if key == "trainer.eval_every":
        return items.get("schedule.kind") != "plateau"  # the plateau rule is paced by evaluations
    if key in IGNORED or any(key.startswith(p) for p in IGNORED if p.endswith(".")):
        return True
    # INERT: settings that cannot act given the others
    if key.startswith("schedule.warmup.") and key != "schedule.warmup.enabled":
        return not items.get("schedule.warmup.enabled")
    if key.startswith("schedule.plateau."):
        return items.get("schedule.kind") != "plateau"
    if key in ("schedule.milestones", "schedule.gamma"):
        return items.get("schedule.kind") == "plateau"  # the plateau rule has its own factor
    if key == "model.freeze_backbone":
        return not items.get("model.weights")
    if key in SYNTHETIC_ONLY:
        return items.get("data.name") != "synthetic"
    if key in IMAGENET_ONLY:
        return items.get("data.name") != "imagenet"
    return False


# Data settings that only one source reads (data/build.py, data/imagenet.py): inert elsewhere.
SYNTHETIC_ONLY = ("data.n_train", "data.n_test", "data.num_classes")
IMAGENET_ONLY = ("data.crop", "data.scale", "data.lighting_std")


def recipe(settings: Any) -> Recipe:
    """The recipe of a run from its typed settings (`settings.RunSettings`)."""
    flat: dict[str, Any] = {}
    _flatten(settings, "", flat)
    if not flat.get("schedule.warmup.enabled"):
        flat["schedule.warmup.enabled"] = False  # no warm-up section = warm-up off
    return Recipe(tuple(sorted((k, v) for k, v in flat.items() if not ignored(k, flat))))



def facts_of(summary: Mapping[str, Any]) -> Facts:
    """The measured facts of a finished (or paused) run from its summary.json."""
    arch = summary.get("arch") if isinstance(summary.get("arch"), Mapping) else {}
    classes = summary.get("num_classes", arch.get("num_classes"))  # type: ignore[union-attr]
    return Facts(data=summary.get("data"), num_classes=classes, train_size=summary.get("train_size"),
                 test_size=summary.get("test_size"), iterations=summary.get("iterations"),
                 status=summary_status(summary))


def planned_facts(data: str, num_classes: int, sizes: Mapping[str, int], max_iters: int) -> Facts:
    """A run's facts while it trains: its data as loaded and its planned length."""
    return Facts(data=data, num_classes=num_classes, train_size=sizes.get("train"), test_size=sizes.get("test"),
                 iterations=max_iters)


# --------------------------------------------------------------------------------------------
# The rule
# --------------------------------------------------------------------------------------------


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return str(v)


def _equal(a: Any, b: Any) -> bool:
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def setting_differences(run: Recipe, reference: Recipe) -> list[str]:
    """Each recipe setting that differs, named: "weight decay 0.0005 (paper 0.0001)"."""
    ours, ref = run.as_dict(), reference.as_dict()
    out = []
    # A key on one side only is inert on the other (the warm-up's lr with the warm-up off there):
    # the setting that switches it (named below) is the difference.
    for key in sorted(set(ours) & set(ref), key=_order):
        if not _equal(ours[key], ref[key]):
            out.append(f"{LABELS.get(key, key)} {_show(ours[key])} (paper {_show(ref[key])})")
    return out


_SECTIONS = ("model.", "data.", "optim.", "schedule.", "trainer.")


def _order(key: str) -> tuple[int, str]:
    return next((i for i, p in enumerate(_SECTIONS) if key.startswith(p)), len(_SECTIONS)), key


def _fact_differences(row: str, reference: Recipe, facts: Facts, run: Recipe | None) -> list[str]:
    """The measured facts against the paper's data (held-out images and length as the run
    planned them: a different plan is a setting difference, named on its own)."""
    family = NAMED_MODELS[row].family
    cifar = family == "cifar"
    out: list[str] = []
    if facts.data is None:
        out.append("data not recorded")
    elif facts.data not in (PAPER_DATA[family], *((JPEG_COPY,) if cifar else ())):
        out.append(f"{facts.data} data (paper {'CIFAR-10' if cifar else 'ImageNet'})")
    own = run if run is not None else reference
    held_out = own.get("data.val_size") or 0
    want = ((paper.CIFAR_CLASSES, paper.CIFAR_TRAIN_SIZE - held_out, paper.CIFAR_TEST_SIZE) if cifar
            else (paper.IMAGENET_CLASSES, paper.IMAGENET_TRAIN_SIZE - held_out, paper.IMAGENET_TEST_SIZE))
    # A run that held images out trains on fewer (its held-out count is named as a setting): flag
    # the training set only beyond that, but say the paper's own size, which held nothing out.
    paper_train = paper.CIFAR_TRAIN_SIZE if cifar else paper.IMAGENET_TRAIN_SIZE
    for value, expected, paper_value, what, say in (
        (facts.num_classes, want[0], want[0], "number of classes", "{v} classes (paper {p})"),
        (facts.train_size, want[1], paper_train, "train size", "trained on {v} images (paper {p})"),
        (facts.test_size, want[2], want[2], "test size", "tested on {v} images (paper {p})"),
    ):
        if value is None:
            out.append(f"{what} not recorded")
        elif value != expected:
            out.append(say.format(v=value, p=paper_value))
    planned = own.get("trainer.max_iters")
    if facts.status not in (None, "complete"):
        out.append(f"{facts.status} at iteration {facts.iterations} of {planned} (incomplete)")
    elif facts.iterations is None:
        out.append("iterations not recorded")
    elif facts.iterations != planned:
        out.append(f"stopped at iteration {facts.iterations} of {planned}")
    return out


def judgement(row: str, reference: Recipe | None, run: Recipe | None, facts: Facts) -> Judgement:
    """How a run of recipe `run` with `facts` stands against paper row `row`, whose recipe is
    `reference` (None: the row has no exp to compose, so nothing follows it)."""
    if reference is None or row not in NAMED_MODELS:
        return Judgement(("no exp composes this row's recipe",))
    diffs = [] if run is None else setting_differences(run, reference)
    if run is None:
        diffs.append("settings not recorded (no readable config.yaml)")
    diffs += _fact_differences(row, reference, facts, run)
    if diffs:
        return Judgement(tuple(diffs))
    if facts.data == JPEG_COPY:
        return Judgement((), JPEG_REASON)
    return Judgement(())


def band(sigma: float, n: int, n_paper: int = 1, k: float = K) -> float:
    """Half-width of the 'reproduced' band for a mean of n runs against a paper mean of
    n_paper runs: k * sigma * sqrt(1/n + 1/n_paper)."""
    return k * sigma * math.sqrt(1 / n + 1 / n_paper)


def verdict(ours_mean: float, paper_value: float, half_width: float) -> str:
    """Errors: below the band is better than the paper, above it worse."""
    d = ours_mean - paper_value
    eps = 1e-9  # float noise must not flip a verdict on the boundary
    return REPRODUCED if abs(d) <= half_width + eps else BETTER if d < 0 else WORSE


def not_recipe(differences: Any) -> str:
    return f"{NOT_RECIPE}: " + "; ".join(differences)


def verdict_text(j: Judgement, ours_mean: float | None, paper_value: float, half_width: float | None) -> str:
    """The verdict cell: a verdict, "no verdict: <why>" or "not the paper's recipe: <what>"."""
    if not j.follows:
        return not_recipe(j.differences)
    if j.no_verdict:
        return f"{NO_VERDICT}: {j.no_verdict}"
    if ours_mean is None or half_width is None:
        return ""
    return verdict(ours_mean, paper_value, half_width)


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


def paper_reference(row: str, reference: Recipe | None, run: Recipe, facts: Facts,
                    test_err: float | None = None) -> dict[str, Any]:
    """W&B fields for a run of `row` that follows the row's recipe, else {}.

    CIFAR: "paper/test_err" (a reference line beside test/err) and, given our final test_err,
    "paper/gap" (ours - paper), "paper/band" and "paper/verdict" for this one run (on the JPEG
    copy: "no verdict: <why>"). ImageNet: "paper/ten_crop_err" only: training measures the
    centre crop, the paper 10 crops, so the gap belongs to `eval` and the report."""
    ref = paper_value(row)
    j = judgement(row, reference, run, facts)
    if ref is None or not j.follows:
        return {}
    table, value, n_paper = ref
    if table != "Table 6":
        return {"paper/ten_crop_err": value}
    out: dict[str, Any] = {"paper/test_err": value}
    if test_err is not None:
        half = band(SIGMA_CIFAR, 1, n_paper)
        out.update({"paper/gap": test_err - value, "paper/band": half,
                    "paper/verdict": verdict_text(j, test_err, value, half)})
    return out


def with_paper_reference(summary: Mapping[str, Any], reference: Recipe | None, run: Recipe) -> dict[str, Any]:
    """`summary` plus the paper's number, the gap and a one-run verdict (for W&B)."""
    test_err = summary.get("test_err")
    test_err = float(test_err) if isinstance(test_err, (int, float)) and not isinstance(test_err, bool) else None
    return {**summary, **paper_reference(str(summary.get("exp_name")), reference, run, facts_of(summary), test_err)}
