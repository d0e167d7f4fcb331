"""Own priors from Python and the CLI: diffusers folders, weights-only state dicts + architecture JSON,
``save_prior`` round trips for every adapter, ``convert-prior``, one-line errors naming the paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffrecon.cli import main
from diffrecon.errors import CheckpointError
from diffrecon.priors import DiffusionPrior, LatentPrior, load, load_prior, save_prior
from diffrecon.priors.adapters import from_diffusers, from_monai, from_monai_autoencoder, monai_architecture

UNET_KW = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": [8, 8],
    "attention_levels": [False, False],
    "num_res_blocks": 1,
    "norm_num_groups": 8,
}
ARCH_JSON = {
    "architecture": {"type": "monai.DiffusionModelUNet", "kwargs": UNET_KW},
    "schedule": {"type": "vp", "beta_schedule": "linear", "num_steps": 100, "beta_start": 1e-4,
                 "beta_end": 0.02},
    "parameterisation": "eps",
    "data": {"range": [0, 1], "image_shape": [1, 16, 16]},
}


def _monai_unet(seed=0, **kw):
    from monai.networks.nets import DiffusionModelUNet

    torch.manual_seed(seed)
    return DiffusionModelUNet(**{**UNET_KW, **kw}).eval()


def _probe(prior):
    """Raw network output on a fixed input at two steps (identical weights ⇒ identical output)."""
    d = getattr(prior, "diffusion", prior)
    x = torch.randn((2, *d.image_shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return d(x, torch.tensor([3, 40]))


def _same(p, q):
    torch.testing.assert_close(_probe(p), _probe(q), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def diffusers():
    return pytest.importorskip("diffusers")


def _diffusers_unet(diffusers, in_channels=1, size=16):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        layers_per_block=1,
    ).eval()


@pytest.fixture(scope="module")
def diffusers_dir(diffusers, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    _diffusers_unet(diffusers).save_pretrained(root / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=100, prediction_type="epsilon").save_pretrained(
        root / "scheduler"
    )
    return root


@pytest.fixture(scope="module")
def latent_diffusers_dir(diffusers, tmp_path_factory):
    root = tmp_path_factory.mktemp("latent_pipe")
    _diffusers_unet(diffusers, in_channels=2, size=8).save_pretrained(root / "unet")
    torch.manual_seed(1)
    diffusers.AutoencoderKL(
        in_channels=1, out_channels=1, block_out_channels=(8, 8), latent_channels=2, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, sample_size=16,
    ).save_pretrained(root / "vae")
    diffusers.DDPMScheduler(num_train_timesteps=100, prediction_type="v_prediction").save_pretrained(
        root / "scheduler"
    )
    return root


def _write_pth(tmp_path, state, name="unet.pth", arch=ARCH_JSON):
    torch.save(state, tmp_path / name)
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    return tmp_path / name, tmp_path / "arch.json"


# ----------------------------------------------------------------------------- diffusers folders
def test_load_diffusers_folder(diffusers_dir):
    prior = load(diffusers_dir)
    assert isinstance(prior, DiffusionPrior) and prior.image_shape == (1, 16, 16)
    assert prior.parameterisation == "eps" and prior.config["architecture"]["type"] == "diffusers.UNet2DModel"
    _same(prior, from_diffusers(diffusers_dir))


def test_save_prior_diffusers_roundtrip(diffusers_dir, tmp_path):
    prior = load(diffusers_dir)
    save_prior(prior, tmp_path / "conv")
    cfg = json.loads((tmp_path / "conv.json").read_text())
    assert cfg["architecture"]["type"] == "diffusers.UNet2DModel"
    assert cfg["architecture"]["config"]["block_out_channels"] == [8, 16]
    back = load(tmp_path / "conv")
    assert back.image_shape == prior.image_shape and back.parameterisation == "eps"
    _same(prior, back)


def test_save_prior_latent_diffusers_roundtrip(latent_diffusers_dir, tmp_path):
    prior = load(latent_diffusers_dir)
    assert isinstance(prior, LatentPrior) and prior.image_shape == (1, 16, 16)
    save_prior(prior, tmp_path / "lat")
    back = load(tmp_path / "lat")
    assert isinstance(back, LatentPrior) and back.scale_factor == pytest.approx(prior.scale_factor)
    _same(prior, back)
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x), prior.encode(x))
        torch.testing.assert_close(back.decode(prior.encode(x)), prior.decode(prior.encode(x)))


def test_diffusers_missing_parts_name_the_path(diffusers, tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(CheckpointError, match=f"missing {tmp_path / 'scheduler'}"):
        load(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=f"no diffusers folder at {empty} \\(missing {empty / 'unet'}"):
        load(empty)


def test_folder_holding_a_checkpoint_is_named(tmp_path):
    save_prior(from_monai(_monai_unet(), _ddpm(), image_shape=(1, 16, 16)), tmp_path / "mine")
    with pytest.raises(CheckpointError, match="mine: pass one"):
        load(tmp_path)


# ----------------------------------------------------------------------------- state dicts
def _ddpm():
    from monai.networks.schedulers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=100)


def _reference(unet):
    from diffrecon.priors import VPSchedule

    return DiffusionPrior(unet, VPSchedule.linear(100, 1e-4, 0.02), "eps", image_shape=(1, 16, 16))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {"lr": 1.0}},
        lambda sd: {"ema": {f"module.model.{k}": v for k, v in sd.items()}, "step": 10},
    ],
    ids=["plain", "state_dict", "model+module.", "ema+module.model."],
)
def test_pth_state_dict_with_architecture(tmp_path, wrap):
    unet = _monai_unet()
    pth, arch = _write_pth(tmp_path, wrap(unet.state_dict()))
    prior = load(pth, architecture=arch)
    assert prior.image_shape == (1, 16, 16) and prior.parameterisation == "eps"
    _same(prior, _reference(unet))
    # the architecture may also be a dict, and the default is <stem>.json beside the weights
    _same(load(pth, architecture=ARCH_JSON), prior)
    (tmp_path / "unet.json").write_text(json.dumps(ARCH_JSON))
    _same(load(pth), prior)


def test_pth_prefers_the_ema_weights(tmp_path):
    raw, ema = _monai_unet(0), _monai_unet(1)
    pth, arch = _write_pth(tmp_path, {"model": raw.state_dict(), "ema": ema.state_dict()})
    prior = load(pth, architecture=arch)
    _same(prior, _reference(ema))
    assert prior.config["source"]["entry"] == "ema"


def test_pth_wrong_keys_and_shapes(tmp_path):
    sd = _monai_unet().state_dict()
    extra = {**sd, "head.weight": torch.zeros(2)}
    pth, arch = _write_pth(tmp_path, extra, "extra.pth")
    with pytest.raises(CheckpointError, match=r"extra\.pth.*1 unexpected tensors.*head\.weight"):
        load(pth, architecture=arch)
    missing = dict(sd)
    gone = sorted(missing)[0]
    missing.pop(gone)
    pth, _ = _write_pth(tmp_path, missing, "missing.pth")
    with pytest.raises(CheckpointError, match=rf"1 missing tensors.*{gone}"):
        load(pth, architecture=arch)
    wide = ARCH_JSON | {"architecture": {"type": "monai.DiffusionModelUNet",
                                         "kwargs": {**UNET_KW, "channels": [16, 16]}}}
    (tmp_path / "wide.json").write_text(json.dumps(wide))
    pth, _ = _write_pth(tmp_path, sd, "narrow.pth")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load(pth, architecture=tmp_path / "wide.json")
    torch.save({"epoch": 3}, tmp_path / "nothing.pth")
    with pytest.raises(CheckpointError, match="holds no name -> tensor mapping"):
        load(tmp_path / "nothing.pth", architecture=arch)


def test_pth_missing_files_and_bad_architecture(tmp_path):
    with pytest.raises(CheckpointError, match=f"no PyTorch weights file at {tmp_path / 'model.pth'}"):
        load(tmp_path / "model.pth")
    torch.save(_monai_unet().state_dict(), tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match=f"--architecture.*{tmp_path / 'model.json'}"):
        load(tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match=f"no architecture JSON at {tmp_path / 'nope.json'}"):
        load(tmp_path / "model.pth", architecture=tmp_path / "nope.json")
    (tmp_path / "net_only.json").write_text(json.dumps(ARCH_JSON["architecture"]))
    with pytest.raises(CheckpointError, match='put it under "architecture"'):
        load(tmp_path / "model.pth", architecture=tmp_path / "net_only.json")
    no_sched = {k: v for k, v in ARCH_JSON.items() if k != "schedule"}
    (tmp_path / "no_sched.json").write_text(json.dumps(no_sched))
    with pytest.raises(CheckpointError, match="lacks the required key 'schedule'"):
        load(tmp_path / "model.pth", architecture=tmp_path / "no_sched.json")
    with pytest.raises(CheckpointError, match="--architecture describes a .pth"):
        load("head-64", architecture=ARCH_JSON)


def test_missing_prior_names_every_path_looked_for(tmp_path):
    x = tmp_path / "x"
    with pytest.raises(CheckpointError) as err:
        load(x)
    msg = str(err.value)
    for part in (f"{x}.json", f"{x}.safetensors", f"no diffusers folder at {x} (missing {x / 'unet'})"):
        assert part in msg
    assert "\n" not in msg
    with pytest.raises(CheckpointError, match="no bundled prior named 'nope' \\(bundled: head-64"):
        load("nope")


def test_stem_with_a_dot_is_not_truncated(tmp_path):
    prior = from_monai(_monai_unet(), _ddpm(), image_shape=(1, 16, 16))
    w, j = save_prior(prior, tmp_path / "prior.v2")
    assert (w.name, j.name) == ("prior.v2.safetensors", "prior.v2.json")
    _same(load(tmp_path / "prior.v2"), prior)


# ----------------------------------------------------------------------------- MONAI round trips
def test_save_prior_monai_unet_without_architecture(tmp_path):
    unet = _monai_unet(attention_levels=[False, True], num_head_channels=8, resblock_updown=True)
    prior = from_monai(unet, _ddpm(), image_shape=(1, 16, 16))
    assert prior.config["architecture"]["kwargs"]["resblock_updown"] is True
    save_prior(prior, tmp_path / "m")
    _same(prior, load(tmp_path / "m"))


def test_save_prior_monai_latent_roundtrip(tmp_path):
    from monai.networks.nets import AutoencoderKL

    torch.manual_seed(2)
    ae = AutoencoderKL(
        spatial_dims=2, in_channels=1, out_channels=1, channels=(8, 8), latent_channels=2, num_res_blocks=1,
        norm_num_groups=4, attention_levels=(False, False), with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    ).eval()
    assert monai_architecture(ae)["kwargs"]["with_encoder_nonlocal_attn"] is False
    diff = from_monai(_monai_unet(in_channels=2, out_channels=2, norm_num_groups=4), _ddpm(),
                      image_shape=(2, 8, 8))
    lp = from_monai_autoencoder(ae, diff, scale_factor=0.5, image_shape=(1, 16, 16))
    save_prior(lp, tmp_path / "lat")
    back = load(tmp_path / "lat")
    assert isinstance(back, LatentPrior) and back.image_shape == (1, 16, 16)
    _same(lp, back)
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(back.decode(back.encode(x)), lp.decode(lp.encode(x)))


def test_unsaveable_network_says_how(tmp_path):
    from diffrecon.priors.networks import TinyDenoiser

    prior = from_monai(TinyDenoiser(width=8, depth=1), _ddpm(), image_shape=(1, 16, 16))
    with pytest.raises(CheckpointError, match="architecture="):
        save_prior(prior, tmp_path / "t")


# ----------------------------------------------------------------------------- CLI
def test_convert_prior_cli_diffusers_and_pth(diffusers_dir, tmp_path, capsys):
    out = tmp_path / "conv"
    assert main(["convert-prior", str(diffusers_dir), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    _same(load(out), load(diffusers_dir))
    # never replaces without --overwrite
    before = (tmp_path / "conv.json").read_bytes()
    assert main(["convert-prior", str(diffusers_dir), str(out)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and err.count("\n") == 1
    assert (tmp_path / "conv.json").read_bytes() == before
    assert main(["convert-prior", str(diffusers_dir), str(out), "--overwrite", "--half"]) == 0
    assert json.loads((tmp_path / "conv.json").read_text())["stored_dtype"] == "float16"
    # a state dict with its architecture JSON
    unet = _monai_unet()
    pth, arch = _write_pth(tmp_path, {"state_dict": unet.state_dict()})
    assert main(["convert-prior", str(pth), str(tmp_path / "fromsd"), "--architecture", str(arch)]) == 0
    _same(load(tmp_path / "fromsd"), _reference(unet))
    # a bad input is one line naming the path
    capsys.readouterr()
    assert main(["convert-prior", str(tmp_path / "model.pth"), str(tmp_path / "z")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no PyTorch weights file at {tmp_path / 'model.pth'}" in err


def test_reconstruct_with_a_diffusers_folder_prior(diffusers_dir, tmp_path, capsys):
    import nibabel as nib

    vol = np.zeros((16, 16, 3), np.float32)
    vol[4:12, 4:12, :] = 1.0
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "vol.nii.gz")
    sino = tmp_path / "sino.npz"
    assert main(["simulate", str(tmp_path / "vol.nii.gz"), str(sino), "--views", "6"]) == 0
    def reconstruct(out, *prior):
        return main(["reconstruct", str(sino), str(tmp_path / out), "--method", "dds", *prior,
                     "--steps", "2", "--quiet"])

    assert reconstruct("dds.nii.gz", "--prior", str(diffusers_dir)) == 0, capsys.readouterr().err
    out = tmp_path / "dds.nii.gz"
    assert out.exists() and nib.load(out).shape == vol.shape
    assert json.loads((tmp_path / "dds.json").read_text())["prior"] == str(diffusers_dir)
    # a .pth prior without its architecture fails before any work, naming the JSON looked for
    pth = tmp_path / "m.pth"
    torch.save(_monai_unet().state_dict(), pth)
    assert reconstruct("again.nii.gz", "--prior", str(pth)) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'm.json'}" in err and err.count("\n") == 1
    assert not (tmp_path / "again.nii.gz").exists()
    # and with --architecture it runs
    (tmp_path / "a.json").write_text(json.dumps(ARCH_JSON))
    assert reconstruct("pth.nii.gz", "--prior", str(pth), "--architecture", str(tmp_path / "a.json")) == 0
    assert (tmp_path / "pth.nii.gz").exists()


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["{tmp}/missing", "{tmp}/out"], "prior not found"),
        (["{tmp}/m.pth", "{tmp}/out"], "--architecture"),
        (["{tmp}/m.pth", "{tmp}/out", "--architecture", "{tmp}/nope.json"], "no architecture JSON"),
        (["{tmp}/p", "{tmp}/p"], "already exists"),
        (["{tmp}/p", "{tmp}/out", "--sample-steps", "x"], "invalid int value"),
    ],
)
def test_export_bad_input_is_one_line(tmp_path, capsys, argv, needle):
    from diffrecon.priors import export

    torch.save(_monai_unet().state_dict(), tmp_path / "m.pth")
    save_prior(from_monai(_monai_unet(), _ddpm(), image_shape=(1, 16, 16)), tmp_path / "p")
    argv = [a.format(tmp=tmp_path) for a in argv]
    try:
        code = export.main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    assert code in (1, 2)
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert load_prior(tmp_path / "p")  # never clobbered
