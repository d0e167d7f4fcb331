"""Checkpoint format: round trip, clear errors for broken files, and no unpickling of arbitrary objects."""

import json
import os
import pathlib

import pytest
import torch

from diffrecon.errors import CheckpointError
from diffrecon.priors import DiffusionPrior, VPSchedule, load, load_prior, load_torch_weights, save_prior
from diffrecon.priors.networks import build_network, unet_config

TINY = {"type": "diffrecon.TinyDenoiser", "kwargs": {"width": 8, "depth": 2}}


def _prior(arch=TINY, param="v"):
    net = build_network(arch)
    return DiffusionPrior(
        net,
        VPSchedule.linear(100, 1e-3, 0.05),
        param,
        "index",
        image_shape=(1, 16, 16),
        config={"architecture": arch, "data_description": "unit test"},
    )


def test_roundtrip(tmp_path):
    p = _prior()
    w, j = save_prior(p, tmp_path / "tiny")
    assert w.name == "tiny.safetensors" and j.name == "tiny.json"
    cfg = json.loads(j.read_text())
    assert cfg["format"] == "diffrecon-prior" and cfg["parameterisation"] == "v"
    assert cfg["schedule"]["beta_schedule"] == "linear" and cfg["data"]["image_shape"] == [1, 16, 16]
    q = load(tmp_path / "tiny")
    x = torch.randn(2, 1, 16, 16)
    t = torch.tensor([3, 50])
    torch.testing.assert_close(p.x0(x, t), q.x0(x, t))
    for path in (tmp_path / "tiny.json", tmp_path / "tiny.safetensors", str(tmp_path / "tiny")):
        assert isinstance(load_prior(path), DiffusionPrior)


def test_roundtrip_monai_unet(tmp_path):
    arch = unet_config((8, 16), num_head_channels=8, norm_num_groups=8)
    p = _prior(arch, "eps")
    save_prior(p, tmp_path / "u")
    q = load(tmp_path / "u")
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(p.eps(x, 7), q.eps(x, 7))


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found|no bundled prior"):
        load(tmp_path / "nothing")
    save_prior(_prior(), tmp_path / "a")
    (tmp_path / "a.safetensors").unlink()
    with pytest.raises(CheckpointError, match="weights file not found"):
        load(tmp_path / "a")
    with pytest.raises(CheckpointError, match="no bundled prior"):
        load("no-such-prior-name")


def test_corrupt_weights(tmp_path):
    save_prior(_prior(), tmp_path / "a")
    data = (tmp_path / "a.safetensors").read_bytes()
    (tmp_path / "a.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load(tmp_path / "a")
    (tmp_path / "a.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError):
        load(tmp_path / "a")


def test_corrupt_or_foreign_config(tmp_path):
    save_prior(_prior(), tmp_path / "a")
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(tmp_path / "a")
    (tmp_path / "a.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not a diffrecon prior"):
        load(tmp_path / "a")


def _edit_config(path, fn):
    cfg = json.loads(path.read_text())
    fn(cfg)
    path.write_text(json.dumps(cfg))


def test_wrong_architecture(tmp_path):
    save_prior(_prior(), tmp_path / "a")
    _edit_config(tmp_path / "a.json", lambda c: c["architecture"].update(type="monai.NotANet"))
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load(tmp_path / "a")
    save_prior(_prior(), tmp_path / "b")
    _edit_config(
        tmp_path / "b.json",
        lambda c: c.update(architecture=unet_config((8, 16), num_head_channels=8, norm_num_groups=8)),
    )
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        load(tmp_path / "b")


def test_mismatched_shapes(tmp_path):
    save_prior(_prior(), tmp_path / "a")
    _edit_config(tmp_path / "a.json", lambda c: c["architecture"]["kwargs"].update(width=12))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load(tmp_path / "a")


def test_missing_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    save_prior(_prior(), tmp_path / "a")
    t = load_file(str(tmp_path / "a.safetensors"))
    t.pop(sorted(t)[0])
    save_file(t, str(tmp_path / "a.safetensors"))
    with pytest.raises(CheckpointError, match="missing tensors"):
        load(tmp_path / "a")


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "payload": _Evil(marker)}, bad)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_torch_weights(bad)
    assert not marker.exists(), "the pickle payload ran"
    good = tmp_path / "ok.pt"
    torch.save({"w": torch.ones(3)}, good)
    assert torch.equal(load_torch_weights(good)["w"], torch.ones(3))


def test_no_pickle_in_package_sources():
    """Every torch.load in the package passes weights_only=True."""
    root = pathlib.Path(__file__).resolve().parents[1] / "diffrecon"
    for f in root.rglob("*.py"):
        for line in f.read_text().splitlines():
            if "torch.load(" in line and not line.strip().startswith("#"):
                assert "weights_only=True" in line, f"{f}: {line.strip()}"


def test_save_prior_never_replaces_without_overwrite(tmp_path):
    from diffrecon.errors import OutputExistsError

    w, j = save_prior(_prior(), tmp_path / "a")
    before = (w.read_bytes(), j.read_bytes())
    with pytest.raises(OutputExistsError, match="already exists"):
        save_prior(_prior(), tmp_path / "a")
    assert (w.read_bytes(), j.read_bytes()) == before
    j.unlink()  # half a prior on disk: still refused, and the weights file is left alone
    with pytest.raises(OutputExistsError):
        save_prior(_prior(), tmp_path / "a")
    assert w.read_bytes() == before[0] and not j.exists()
    save_prior(_prior(), tmp_path / "a", overwrite=True)
    assert j.exists()
