"""Checkpoints: full round trip, atomic writes, safe loads, clear refusals."""

from __future__ import annotations

import errno
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import resnet_repro.runs.checkpoint as ck
from resnet_repro.runs.checkpoint import (
    FORMAT,
    check_compatible,
    checkpoint_meta,
    load_checkpoint,
    resolve_checkpoint_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from resnet_repro.errors import CheckpointError

ARCH = {"depth": 20, "shortcut": "A", "residual": True, "widths": [16, 32, 64]}


def make_state(iteration: int = 1234) -> dict:
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {
        "meta": checkpoint_meta(model_name="resnet20", arch=ARCH, num_classes=10,
                                iteration=iteration),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "schedule": {"kind": "warmup_until_error", "switch_iter": 400,
                     "main": {"kind": "step"}},
        "rng": rng_state(),
        "wandb_run_id": None,
        "nested": {"a": [1, 2.5, (3, "x")], "b": {"c": None, "d": True}},
    }


def assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_checkpoint_roundtrip_keeps_tensors_plain_values_and_rng(tmp_path: Path) -> None:
    state = make_state()
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["format"] == FORMAT
    assert_same({"format": FORMAT, **state, "digest": loaded["digest"]}, loaded)
    # The optimizer state must load back into an optimizer (resume keeps momentum buffers).
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.load_state_dict(loaded["optimizer"])
    assert len(opt.state) == 2


def draws() -> tuple:
    return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(),
            np.random.randn(), torch.rand(3).tolist())


def test_rng_roundtrip_reproduces_the_same_random_draws(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.randn()  # leave cached gaussians in the state
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()})
    expected = draws()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert draws() == expected


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, make_state(100))
    before = path.read_bytes()

    def full_disk(obj, f, *a, **kw) -> None:
        f.write(b"partial data")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ck.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=f"could not write checkpoint {path}: No space"):
        save_checkpoint(path, make_state(200))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_failed_rename_leaves_previous_checkpoint_intact(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, make_state(100))
    before = path.read_bytes()

    def denied(src, dst) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "replace", denied)  # the one atomic writer (atomic.py)
    with pytest.raises(CheckpointError, match="Permission denied"):
        save_checkpoint(path, make_state(200))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    monkeypatch.undo()
    assert load_checkpoint(path)["meta"]["iteration"] == 100


def test_saving_a_value_that_weights_only_cannot_load_fails_at_save_time(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"state\['meta'\]\['loss'\] is a float64"):
        save_checkpoint(tmp_path / "c.pt", {"meta": {"loss": np.float64(1.0)}})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_file_is_refused_with_a_clear_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, make_state())
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2],
                      "garbage": os.urandom(4096),
                      "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="not a readable resnet_repro checkpoint"):
        load_checkpoint(path)


class _Exploit:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    _Exploit.marker = str(marker)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": FORMAT, "model": _Exploit()}, protocol=protocol))
    with pytest.raises(CheckpointError, match="not a readable resnet_repro checkpoint") as e:
        load_checkpoint(path)
    assert not marker.exists()
    assert "weights_only=False" not in str(e.value)  # never advise the unsafe way out
    assert "\n" not in str(e.value)


def test_file_that_is_not_a_resnet_repro_checkpoint_is_refused(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="no 'format' key"):
        load_checkpoint(tmp_path / "bare.pt")
    torch.save({"format": "resnet_repro/0"}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="format 'resnet_repro/0'"):
        load_checkpoint(tmp_path / "old.pt")


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_checkpoint_for_another_model_is_refused_naming_the_difference(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, make_state())
    ckpt = load_checkpoint(path)
    check_compatible(ckpt, model_name="resnet20", arch=dict(ARCH, widths=(16, 32, 64)))
    # The architecture decides: the same network under another name resumes (older runs kept
    # an exp's model name after an override; today a run is named after its network).
    check_compatible(ckpt, model_name="cifar_resnet20_renamed", arch=ARCH, path=path)
    with pytest.raises(
        CheckpointError,
        match=rf"checkpoint {path} is for model resnet20 with shortcut='A' "
        r"but this run builds resnet20 with shortcut='B'",
    ):
        check_compatible(ckpt, model_name="resnet20", arch=dict(ARCH, shortcut="B"), path=path)
    with pytest.raises(CheckpointError, match="zero_init"):
        check_compatible(ckpt, model_name="resnet20", arch=dict(ARCH, zero_init=True))


def test_run_directory_resolves_to_its_last_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint_path(run)
    run.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in run directory"):
        resolve_checkpoint_path(run)
    save_checkpoint(run / "checkpoints" / "last.pt", make_state())
    last = run / "checkpoints" / "last.pt"
    assert resolve_checkpoint_path(run) == last
    assert resolve_checkpoint_path(str(last)) == last


def test_a_flipped_byte_inside_tensor_data_is_detected(tmp_path: Path) -> None:
    # torch's zip reader does not notice this; the stored digest does.
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.randn(256, 256)}})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="content does not match its digest"):
        load_checkpoint(path)


def test_keep_previous_moves_the_replaced_file_aside(tmp_path: Path) -> None:
    last, prev = tmp_path / "last.pt", tmp_path / "prev.pt"
    save_checkpoint(last, {"meta": {"iteration": 1}}, keep_previous=prev)
    assert not prev.exists()
    save_checkpoint(last, {"meta": {"iteration": 2}}, keep_previous=prev)
    assert load_checkpoint(prev)["meta"]["iteration"] == 1
    assert load_checkpoint(last)["meta"]["iteration"] == 2


def test_eval_and_analyze_rebuild_the_network_as_trained_bn_groups_included(tmp_path: Path, monkeypatch) -> None:
    # A grouped-BN run (§4.2's two GPUs of 64 images, here 2 groups of 16): every reader of the
    # checkpoint gets GroupedBatchNorm2d layers of the trained group size, not plain BN.
    import resnet_repro.analyze as analyze
    import resnet_repro.evaluate as evaluate
    from conftest import train_tiny
    from resnet_repro.models.grouped_bn import GroupedBatchNorm2d

    train_tiny(tmp_path, ["model.bn_group_size=16", "trainer.max_iters=2", "trainer.eval_every=2"])
    seen: list[torch.nn.Module] = []

    def spy(real):
        def call(model, batches, *a, **k):
            seen.append(model)
            return real(model, batches, *a, **k)
        return call

    monkeypatch.setattr(analyze, "layer_responses", spy(analyze.layer_responses))
    monkeypatch.setattr(evaluate, "evaluate", spy(evaluate.evaluate))
    analyze.analyze_run(tmp_path, max_images=8)
    evaluate.evaluate_checkpoint(tmp_path, device="cpu", batch_size=64)
    assert len(seen) == 2
    for model in seen:
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bns and all(isinstance(m, GroupedBatchNorm2d) and m.group_size == 16 for m in bns)


def test_a_checkpoint_names_no_module_of_ours_so_a_new_layout_still_resumes_it(tmp_path: Path) -> None:
    """Issue 33 moved the modules into packages while the Figure 6 runs trained: a checkpoint
    holds tensors, numbers, strings and containers only (torch.load with weights_only=True
    refuses anything else), never a class or function of resnet_repro by its import path."""
    import pickletools
    import zipfile

    from conftest import train_tiny

    run = tmp_path / "run"
    train_tiny(run, ["trainer.max_iters=4"])
    with zipfile.ZipFile(run / "checkpoints" / "last.pt") as z:
        pickled = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    ops = list(pickletools.genops(pickled))
    # GLOBAL names "module qualname"; STACK_GLOBAL takes both from the strings pushed before it
    names = [str(arg) for op, arg, _ in ops if op.name in ("GLOBAL", "SHORT_BINUNICODE", "BINUNICODE", "UNICODE")]
    assert any(op.name in ("GLOBAL", "STACK_GLOBAL") for op, _, _ in ops)  # torch's own rebuild functions
    modules = [n.split(" ")[0] for n in names]  # (storage keys such as "resnet_repro/1" are file names)
    assert not [m for m in modules if m == "resnet_repro" or m.startswith("resnet_repro.")]
