"""The renderer as a bare loop: real open_clip and BigGAN classes (tiny preset), no Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from farm.render.bigsleep import BigSleep, Latents, derive_seed, render_scene, render_scene_with_state
from farm.render.models import load_models
from farm.spec import spec_from_dict

from conftest import tiny_film

PROMPT = "a hairy tardigrade in the snow"


@pytest.fixture(scope="module")
def spec():
    return spec_from_dict(tiny_film(), overrides=["render.cutouts=4"])


@pytest.fixture(scope="module")
def models(spec):
    torch.set_num_threads(1)
    return load_models(spec.models, spec.video.size, torch.device("cpu"))


def test_tiny_models_are_the_real_classes(models):
    from open_clip import CLIP
    from pytorch_pretrained_biggan import BigGAN

    assert isinstance(models.clip, CLIP) and isinstance(models.biggan, BigGAN)
    assert models.resolution == 128
    assert models.num_latents == 1 + 10  # gen_z plus the ten blocks of a 128-pixel BigGAN-deep


def test_tiny_models_are_identical_on_every_load(spec, models):
    again = load_models(spec.models, spec.video.size, torch.device("cpu"))
    for a, b in zip(models.biggan.state_dict().values(), again.biggan.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(models.clip.state_dict().values(), again.clip.state_dict().values()):
        assert torch.equal(a, b)


def test_optimisation_lowers_the_loss_on_a_fixed_prompt(spec, models):
    sleeper = BigSleep(models, spec.render, PROMPT, seed=3)
    losses = [sleeper.step()["loss"] for _ in range(30)]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first - 0.3, (first, last)


def test_optimisation_raises_clip_similarity(spec, models):
    sleeper = BigSleep(models, spec.render, PROMPT, seed=3)
    before = np.mean([sleeper.losses()["similarity"].item() for _ in range(4)])
    for _ in range(30):
        sleeper.step()
    after = np.mean([sleeper.losses()["similarity"].item() for _ in range(4)])
    assert after > before, (before, after)


def test_frames_are_the_trajectory(spec, models):
    frames = list(render_scene(models, spec.render, PROMPT, seed=5, frames=4))
    assert [f.index for f in frames] == [0, 1, 2, 3]
    for frame in frames:
        assert frame.image.shape == (128, 128, 3) and frame.image.dtype == np.uint8
        assert frame.image.std() > 1  # an image, not a flat colour
    # The image moves as the optimisation goes on.
    assert not np.array_equal(frames[0].image, frames[-1].image)
    assert frames[0].png().startswith(b"\x89PNG")


def test_same_seed_same_frames_other_seed_other_frames(spec, models):
    a = [f.image for f in render_scene(models, spec.render, PROMPT, seed=11, frames=2)]
    b = [f.image for f in render_scene(models, spec.render, PROMPT, seed=11, frames=2)]
    c = [f.image for f in render_scene(models, spec.render, PROMPT, seed=12, frames=2)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_a_scene_can_start_from_given_latents(spec, models):
    sleeper, frames = render_scene_with_state(models, spec.render, PROMPT, seed=1, frames=2)
    list(frames)
    end = Latents.from_numpy(sleeper.ema.average.to_numpy(), models.device)
    follower = BigSleep(models, spec.render, "a frozen valley", seed=2, init=end)
    assert torch.equal(follower.z.detach(), end.z) and torch.equal(follower.classes.detach(), end.classes)


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(1, 0) == derive_seed(1, 0)
    seeds = {derive_seed(1, k, p) for k in range(10) for p in range(2)} | {derive_seed(2, 0)}
    assert len(seeds) == 21


def test_staged_biggan_folder_loads_through_the_librarys_loader(tmp_path, spec, models):
    """Offline clusters stage config.json + pytorch_model.bin; the library's own from_pretrained reads them."""
    import dataclasses

    from farm.errors import ModelError

    folder = tmp_path / "biggan-staged"
    folder.mkdir()
    (folder / "config.json").write_text(models.biggan.config.to_json_string())
    torch.save(models.biggan.state_dict(), folder / "pytorch_model.bin")
    staged_spec = dataclasses.replace(spec.models, biggan=str(folder))
    staged = load_models(staged_spec, 128, torch.device("cpu"))
    for a, b in zip(models.biggan.state_dict().values(), staged.biggan.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ModelError, match=r"^video\.size: 256 is not a size .* can make \(it makes 128\)"):
        load_models(staged_spec, 256, torch.device("cpu"))
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(ModelError, match=r"^models\.biggan: .*missing pytorch_model\.bin"):
        load_models(staged_spec, 128, torch.device("cpu"))
