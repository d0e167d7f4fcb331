"""Adapters: MONAI UNet + schedulers agree with MONAI's own maths; diffusers is optional and lazy."""


import pytest
import torch

from diffrecon.errors import MissingDependencyError
from diffrecon.priors.adapters import from_diffusers, from_monai, from_monai_autoencoder


def _unet():
    from monai.networks.nets import DiffusionModelUNet

    torch.manual_seed(0)
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 16),
        attention_levels=(False, False),
        num_res_blocks=1,
        norm_num_groups=8,
    ).eval()


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
def test_monai_ddim_x0_matches(pred):
    from monai.networks.schedulers import DDIMScheduler

    unet = _unet()
    sch = DDIMScheduler(
        num_train_timesteps=1000, schedule="scaled_linear_beta", prediction_type=pred, clip_sample=False
    )
    sch.set_timesteps(50)
    prior = from_monai(unet, sch, image_shape=(1, 16, 16))
    x = torch.randn(1, 1, 16, 16)
    t = 500
    with torch.no_grad():
        out = unet(x=x, timesteps=torch.tensor([t]))
        _, x0_monai = sch.step(out, t, x)
        x0 = prior.x0(x, torch.tensor([t]))
    torch.testing.assert_close(x0, x0_monai, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(prior.schedule.alphas_cumprod.float(), sch.alphas_cumprod.float())


def test_monai_ddpm_cosine_schedule_transfers():
    from monai.networks.schedulers import DDPMScheduler

    sch = DDPMScheduler(num_train_timesteps=200, schedule="cosine", prediction_type="epsilon")
    prior = from_monai(_unet(), sch)
    assert prior.schedule.num_steps == 200 and prior.parameterisation == "eps"
    with torch.no_grad():
        assert prior.sample  # has a sampler
        prior.image_shape = (1, 16, 16)
        s = prior.sample(1, steps=4, generator=torch.Generator().manual_seed(0))
    assert s.shape == (1, 1, 16, 16) and torch.isfinite(s).all()


def test_monai_autoencoder_latent_prior():
    from monai.networks.nets import AutoencoderKL
    from monai.networks.schedulers import DDPMScheduler

    ae = AutoencoderKL(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 8),
        latent_channels=2,
        num_res_blocks=1,
        norm_num_groups=4,
        attention_levels=(False, False),
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    ).eval()
    from monai.networks.nets import DiffusionModelUNet

    lat_unet = DiffusionModelUNet(
        spatial_dims=2,
        in_channels=2,
        out_channels=2,
        channels=(8, 8),
        attention_levels=(False, False),
        num_res_blocks=1,
        norm_num_groups=4,
    )
    diff = from_monai(lat_unet, DDPMScheduler(num_train_timesteps=100), image_shape=(2, 8, 8))
    lp = from_monai_autoencoder(ae, diff, scale_factor=0.5, image_shape=(1, 16, 16))
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        z = lp.encode(x)
        assert z.shape == (2, 2, 8, 8)
        assert lp.decode(z).shape == x.shape
        assert lp.sample(1, steps=2).shape == (1, 1, 16, 16)


def test_diffusers_missing_is_clear(monkeypatch, tmp_path):
    import sys

    # A None entry in sys.modules makes every import of the package fail, as on a machine without it.
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(MissingDependencyError, match=r"diffrecon\[diffusers\]"):
        from_diffusers(tmp_path)


def test_diffusers_roundtrip(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    unet = diffusers.UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        layers_per_block=1,
    )
    unet.save_pretrained(tmp_path / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=100, prediction_type="v_prediction").save_pretrained(
        tmp_path / "scheduler"
    )
    prior = from_diffusers(tmp_path)
    assert prior.parameterisation == "v" and prior.image_shape == (1, 16, 16)
    with torch.no_grad():
        assert prior.x0(torch.randn(1, 1, 16, 16), torch.tensor([10])).shape == (1, 1, 16, 16)
