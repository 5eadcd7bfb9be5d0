"""`python -m resnet_repro eval ckpt=<run dir, checkpoint or torchvision weights>`.

- One of our checkpoints: the model and the data come from the config saved in it, so it is
  evaluated on exactly the split and preprocessing it was trained with; `data_root=` points at
  another copy of the same data.
- A torchvision ResNet weights file (`resnet50-*.pth`, v1.5 layout): evaluated on the ImageNet
  val folder under `data_root=` with the paper's protocols.
- akamaster/pytorch_resnet_cifar10's CIFAR-10 weights (`resnet20-*.th`, peers.py): evaluated on
  the CIFAR-10 copy under `data_root=` (an image folder, .tar.gz or torchvision's directory).

Evaluations run in fp32 (TF32 on CUDA as the run's trainer.tf32), never under autocast. Our
checkpoints' test results are recorded beside the run: `eval_<protocol>.json` for the run's final
weights, `eval_<protocol>_iter<N>.json` for any other checkpoint (a run still training, `prev.pt`),
and a `_bn-<kind>` suffix for other BN statistics than the data set's default, each with its
iteration, weights digest, BN statistics and precision; no record replaces one of another kind.

Protocols: CIFAR "single" (§4.2: the single original 32x32 view). ImageNet "center" (256, centre
224 crop; Figure 4), "ten_crop" (§3.4, Tables 2-3), "multi_scale" (fully convolutional,
shorter side {224, 256, 384, 480, 640}, each with its flip; Table 4), or "all" of them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from resnet_repro.runs.checkpoint import FORMAT, load_checkpoint, resolve_checkpoint_path
from resnet_repro.data.build import imagenet_norm, load_cifar_splits
from resnet_repro.data.settings import DataSettings
from resnet_repro.data.pipeline import eval_batches
from resnet_repro.evaluation.metrics import evaluate
from resnet_repro.training.step import precision, set_tf32
from resnet_repro.errors import ConfigError, DataError, ReproError
from resnet_repro.runs.sinks import write_json_atomic
from resnet_repro.config.archs import get_arch
from resnet_repro.models.resnet import build_from_arch
from resnet_repro.models.pretrained import apply_weights, infer_torchvision_model
from resnet_repro.training.policy import resolve_device
from resnet_repro.evaluation.names import PROTOCOLS as IMAGENET_PROTOCOLS
from resnet_repro.runs.provenance import weights_digest
from resnet_repro.runs.state import not_final_weights
from resnet_repro.trained import model_from_checkpoint
from resnet_repro.schema import typed
from resnet_repro.config.settings import EvalSettings


def _task(cfg: DictConfig) -> None:
    try:
        e = typed(EvalSettings, cfg)  # conf/eval.yaml, typed and checked
        evaluate_checkpoint(
            e.ckpt, split=e.split, data_root=e.data_root, device=e.device, batch_size=e.batch_size,
            protocol=e.protocol, workers=e.workers, precise_bn_batches=_precise_bn_setting(e.precise_bn_batches),
            decode=e.decode,
        )
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


# `precise_bn_batches=auto`: ImageNet checkpoints get precise BN statistics over this many
# training batches of the run's global batch (256 -> 51,200 images, ~4% of an epoch; ours, the
# authors' notes give no number: Detectron's precise BN uses 200 iterations too). CIFAR: off.
IMAGENET_PRECISE_BN_BATCHES = 200


def _precise_bn_setting(value: Any) -> int | None:
    """precise_bn_batches from the command line: `auto` (None) or an integer >= 0."""
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"precise_bn_batches must be auto or an integer >= 0, got {value!r}")
    return value


def _precise_bn(model, settings, data_settings, device, num_batches: int, workers: int, decode: str = "auto") -> str:
    """Recompute the BN statistics over `num_batches` of the run's own training batches (its
    global batch, grouped as in training, training augmentation, from iteration 0); returns
    the `bn_stats` label of the numbers that follow."""
    from resnet_repro.training.inputs import build_training_data
    from resnet_repro.training.distributed import World
    from resnet_repro.training.precise_bn import recompute_bn_stats

    if data_settings.name == "imagenet":
        data_settings = replace(data_settings, workers=workers, decode=decode)
    data = build_training_data(data_settings, settings.seed, batch_size=settings.trainer.batch_size,
                               eval_batch_size=settings.trainer.eval_batch_size, device=device, world=World())
    batches = data.stream.iterate(0)
    try:
        used = recompute_bn_stats(model, batches, num_batches)
    finally:
        batches.close()  # an endless stream: stop its loader workers now
    print(f"BN statistics: averaged over {used} training batches of {settings.trainer.batch_size} images")
    return f"precise:{used}"


def _imagenet_protocols(protocol: str) -> list[str]:
    if protocol in ("auto", "ten_crop"):
        return ["ten_crop"]  # the paper's comparison protocol (Tables 2 and 3)
    if protocol == "all":
        return list(IMAGENET_PROTOCOLS)
    if protocol not in IMAGENET_PROTOCOLS:
        raise ConfigError(f"unknown ImageNet protocol {protocol!r}; choose from: {', '.join(IMAGENET_PROTOCOLS)}, all")
    return [protocol]


def _eval_imagenet(
    model, files, labels, protocols, device, workers, batch_size, what: str, norm: str = "mean_std",
    decode: str = "auto",
) -> list[dict[str, Any]]:
    from resnet_repro.evaluation.protocols import evaluate_protocol, finalize

    results = []
    for proto in protocols:
        counts = evaluate_protocol(model, files, labels, proto, device=device, norm=norm, workers=workers,
                                   batch_size=batch_size, decode=decode)
        r = finalize(counts)
        print(f"{proto}: top-1 error {r['top1_err']:.2f}%, top-5 error {r['top5_err']:.2f}% ({r['n']} images) - {what}")
        results.append({"protocol": proto, "err": r["top1_err"], "top5_err": r["top5_err"], "n": r["n"]})
    return results


def _check_classes(model_classes: int, data_classes: int, where: str | Path) -> None:
    """Refuse data whose classes the classifier was not trained on: its outputs would be scored
    against labels that mean something else (issue 14: "100% error", exit 0)."""
    if model_classes != data_classes:
        raise DataError(f"the checkpoint's classifier has {model_classes} classes but {where} has {data_classes}: "
                        f"evaluate it on data with the same classes")


def final_weights(run_dir: Path, iteration: int, digest: str) -> bool:
    """Are these the run's final weights? Its summary.json says the run is complete at this
    iteration (and, when it records one, with this weights digest). A run still training, a
    paused one, or an older checkpoint (`prev.pt`, a run trained further since) is not."""
    import json

    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and not_final_weights(summary, iteration, digest) is None


def eval_file_name(protocol: str, iteration: int, final: bool, bn_stats: str | None = None) -> str:
    """`eval_<protocol>.json` for the final weights; `eval_<protocol>_iter<N>.json` beside it
    for any other checkpoint, so an older evaluation never replaces the final one. `bn_stats`
    (other BN statistics than the data set's default, e.g. "running" for ImageNet) adds
    `_bn-<kind>`, so an evaluation with other statistics never replaces the default one."""
    name = f"eval_{protocol}" if final else f"eval_{protocol}_iter{iteration}"
    if bn_stats is not None:
        name += "_bn-" + bn_stats.replace(":", "")
    return name + ".json"


def _record(path: Path, results: list[dict[str, Any]], split: str, iteration: int, digest: str,
            precision_: str, default_bn: bool = True) -> None:
    """Save each protocol's result beside the run, where `report` finds the 10-crop and
    multi-scale numbers of Tables 2-4: the iteration, the weights' digest, the BN statistics
    and the precision it was computed in say which weights and how. `default_bn`: the BN
    statistics are the data set's default (precise for ImageNet, running for CIFAR)."""
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    if run_dir is None or split != "test":
        return
    final = final_weights(run_dir, iteration, digest)
    for r in results:
        record = {**{k: v for k, v in r.items() if k != "all"}, "split": split, "iteration": iteration,
                  "weights_digest": digest, "final_weights": final, "precision": precision_,
                  "checkpoint": str(path)}
        name = eval_file_name(r["protocol"], iteration, final, None if default_bn else r["bn_stats"])
        try:
            write_json_atomic(run_dir / name, record)
        except ReproError as e:
            print(f"warning: {e}: the result is printed above, not recorded", file=sys.stderr)
            continue
        if not final:
            print(f"recorded in {run_dir / name}: iteration {iteration} is not the run's final weights")
        elif not default_bn:
            print(f"recorded in {run_dir / name}: BN statistics {r['bn_stats']}, not the default "
                  f"(the default's record, if any, is kept and is the one the report shows)")


def _evaluate_akamaster(obj: dict[str, Any], path: Path, data_root: str | None, dev, batch_size: int,
                        split: str) -> dict[str, Any]:
    """akamaster/pytorch_resnet_cifar10's weights (peers.py) on the CIFAR-10 copy at data_root."""
    from resnet_repro.models.peers import evaluate_peer, peer_data_settings

    if not data_root:
        raise ConfigError(f"{path} is an akamaster CIFAR-10 weights file: give data_root=<CIFAR-10 image folder, "
                          f".tar.gz or torchvision directory>")
    if split != "test":
        raise ConfigError(f"{path}: public weights have no held-out split of ours (use split=test)")
    set_tf32(False)
    r = evaluate_peer(path, peer_data_settings(data_root), dev, batch_size)
    prec = precision(dev, amp=False, tf32=False)
    print(f"test error {r['err']:.2f}% ({r['n']} images, loss {r['loss']:.4f}) - {r['model']} of {r['peer']} "
          f"from {path}, on {data_root} ({prec})")
    return {"split": "test", "protocol": "single", **r, "bn_stats": "running", "precision": prec}


def evaluate_checkpoint(
    ckpt: str | Path,
    *,
    split: str = "test",
    data_root: str | None = None,
    device: str = "auto",
    batch_size: int = 1000,
    protocol: str = "auto",
    workers: int = 8,
    precise_bn_batches: int | None = None,
    decode: str = "auto",
) -> dict[str, Any]:
    """Evaluate a checkpoint; returns the (first) protocol's result:
    {"split", "protocol", "err" (top-1, %), "n", "bn_stats", ...}.

    `precise_bn_batches`: recompute BN statistics over this many training batches first
    (`precise_bn.py`); 0 uses the running averages saved in the checkpoint; None picks
    IMAGENET_PRECISE_BN_BATCHES for ImageNet runs and 0 otherwise. `bn_stats` in the result
    (and in `eval_<protocol>.json`) says which: "running" or "precise:<batches>". `decode`:
    where ImageNet JPEGs are decoded (data.decode: auto, device or workers; same numbers)."""
    if split not in ("test", "val"):
        raise ConfigError(f"split must be test or val, got {split!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
    path = resolve_checkpoint_path(ckpt)
    state = load_checkpoint(path, any_state_dict=True)
    dev = resolve_device(device, key="device")

    from resnet_repro.models.peers import is_akamaster

    if is_akamaster(state):
        return _evaluate_akamaster(state, path, data_root, dev, batch_size, split)
    if state.get("format") != FORMAT:  # a torchvision state dict
        return _evaluate_torchvision(state, path, data_root, dev, batch_size, protocol, workers,
                                     precise_bn_batches, decode)
    return _evaluate_run(state, path, split=split, data_root=data_root, dev=dev, batch_size=batch_size,
                         protocol=protocol, workers=workers, precise_bn_batches=precise_bn_batches, decode=decode)


def _evaluate_torchvision(state: dict, path: Path, data_root: str | None, dev: torch.device, batch_size: int,
                          protocol: str, workers: int, precise_bn_batches: int | None, decode: str) -> dict[str, Any]:
    """torchvision's weights (or a fine-tuned file of them) on an ImageNet folder's val/."""
    name = infer_torchvision_model(state, path)
    if not data_root:
        raise ConfigError(f"{path} is a torchvision weights file: give data_root=<ImageNet folder with val/>")
    from resnet_repro.data.image_files import scan_image_folder

    if precise_bn_batches:
        raise ConfigError(f"{path} is a torchvision weights file: precise BN statistics need the run's own "
                          f"training data and recipe (use precise_bn_batches=0)")
    files, labels, classes = scan_image_folder(Path(data_root) / "val")
    head = state.get("fc.weight")
    num_classes = head.shape[0] if head is not None else get_arch(name).num_classes
    _check_classes(num_classes, len(classes), Path(data_root) / "val")
    # The head's own size: a fine-tuned file keeps its classifier (apply_weights would
    # otherwise leave a head of another size freshly initialised).
    model = build_from_arch(replace(get_arch(name), num_classes=num_classes))
    apply_weights(model, state, path, name)
    set_tf32(False)
    results = _eval_imagenet(model.to(dev), files, labels, _imagenet_protocols(protocol), dev, workers,
                             batch_size, f"{name} from {path}", decode=decode)
    return {"split": "test", **results[0], "bn_stats": "running", "precision": precision(dev, amp=False, tf32=False),
            "all": results}


def _evaluate_run(state: dict, path: Path, *, split: str, data_root: str | None, dev: torch.device, batch_size: int,
                  protocol: str, workers: int, precise_bn_batches: int | None, decode: str) -> dict[str, Any]:
    """One of our checkpoints, on its run's data: read the data, precise BN if asked, evaluate, record."""
    trained = model_from_checkpoint(state, path)  # BN grouped as trained (precise BN)
    settings, meta, arch = trained.settings, trained.meta, trained.arch
    data_settings = settings.data if data_root is None else replace(settings.data, root=str(data_root))
    model = trained.model
    digest = weights_digest(model.state_dict())  # before precise BN changes the statistics
    model = model.to(dev)
    # fp32, as training evaluates (never under autocast); TF32 on CUDA as the run's trainer.tf32
    set_tf32(settings.trainer.tf32)
    prec = precision(dev, amp=False, tf32=settings.trainer.tf32)
    what = f"{settings.model.name} at iteration {meta['iteration']}, {path}"
    default_batches = IMAGENET_PRECISE_BN_BATCHES if data_settings.name == "imagenet" else 0
    if precise_bn_batches is None:
        precise_bn_batches = default_batches
    default_bn = precise_bn_batches == default_batches
    if protocol not in ("auto", "single") and data_settings.name != "imagenet":
        raise ConfigError(f"CIFAR is tested on the single original view (§4.2): protocol=single, got {protocol!r}")

    # Read the data (and check its classes) before precise BN, which can take minutes.
    data = _eval_data(data_settings, settings.seed, split)
    _check_classes(arch.num_classes, len(data.classes), data.where)

    bn_stats = "running"
    if precise_bn_batches:
        bn_stats = _precise_bn(model, settings, data_settings, dev, precise_bn_batches, workers, decode)

    if data_settings.name == "imagenet":
        results = _eval_imagenet(model, data.files, data.labels, _imagenet_protocols(protocol), dev, workers,
                                 batch_size, what, norm=imagenet_norm(data_settings.norm), decode=decode)
        results = [{**r, "bn_stats": bn_stats} for r in results]
        _record(path, results, split, meta["iteration"], digest, prec, default_bn)
        return {"split": split, **results[0], "iteration": meta["iteration"], "precision": prec, "all": results}

    splits = data.cifar
    chosen = splits.test if split == "test" else splits.val
    if len(chosen) == 0:
        raise ConfigError(f"the run has no {split} split (data.val_size=0)")
    r = evaluate(model, eval_batches(chosen, splits.mean, batch_size, dev, splits.std, data_settings.resize))
    print(f"{split} error {100 * r['err']:.2f}% ({r['n']} images, loss {r['loss']:.4f}) - {what}")
    result = {"split": split, "protocol": "single", "err": 100 * r["err"], "loss": r["loss"], "n": r["n"],
              "bn_stats": bn_stats}
    _record(path, [result], split, meta["iteration"], digest, prec, default_bn)
    return {**result, "iteration": meta["iteration"], "precision": prec}


@dataclass(frozen=True)
class _EvalData:
    """What a run is evaluated on: ImageNet's files and labels, or CIFAR's splits."""

    where: Any  # named in a class-count error
    classes: Sequence[Any]
    files: Sequence[Any] = ()
    labels: Sequence[int] = ()
    cifar: Any = None  # data.sources' CIFAR splits


def _eval_data(data_settings: DataSettings, seed: int, split: str) -> _EvalData:
    if data_settings.name != "imagenet":
        splits = load_cifar_splits(data_settings, seed)
        return _EvalData(data_settings.root or data_settings.name, splits.classes, cifar=splits)
    from resnet_repro.data.image_files import scan_image_folder
    from resnet_repro.data.imagenet import ImageNetStream

    if split == "test":
        where = Path(data_settings.root) / "val"
        files, labels, classes = scan_image_folder(where)
    else:
        where = Path(data_settings.root) / "train"
        s = ImageNetStream(data_settings.root, 1, seed, device="cpu", workers=0, holdout=data_settings.val_size)
        files, labels, classes = s.holdout_files, s.holdout_labels, s.classes
    return _EvalData(where, classes, files, labels)
