"""The renderer as a bare loop: real open_clip and BigGAN classes (tiny preset), no Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from farm.render.bigsleep import BigSleep, Latents, render_scene, render_scene_with_state
from farm.render.models import load_models
from farm.seeds import derive_seed
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


def test_a_64_pixel_biggan_deep_has_eight_blocks_and_draws_64_pixels():
    """Four up-samplings from 4x4; channel multipliers 16, 8, 4, 2, 1, each a (keep, up-sample) pair."""
    from farm.render.biggan import biggan_layers, build_tiny_biggan, generate, latent_rows

    assert biggan_layers(64) == [(False, 16, 16), (True, 16, 8), (False, 8, 8), (True, 8, 4),
                                 (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)]
    biggan = build_tiny_biggan(64).eval()
    rows = latent_rows(biggan)
    assert rows == 1 + 8
    with torch.no_grad():
        image = generate(biggan, torch.randn(1, rows, 128), torch.zeros(1, rows, 1000), 1.0)
    assert image.shape == (1, 3, 64, 64)


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
    """Scored on the same 16 cutouts before and after (no cutout noise): 30 steps raise the prompt's
    mean cosine similarity by more than 0.02 (measured: 0.146 -> 0.188, on one CPU thread)."""
    from farm.render.cutouts import cutout_boxes

    sleeper = BigSleep(models, spec.render, PROMPT, seed=3)
    boxes = cutout_boxes(spec.render, 16, models.resolution, torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = sleeper.losses(boxes)["similarity"].item()
    for _ in range(30):
        sleeper.step()
    with torch.no_grad():
        after = sleeper.losses(boxes)["similarity"].item()
    assert after > before + 0.02, (before, after)


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
    from farm.render.biggan import build_tiny_biggan

    folder = tmp_path / "biggan-staged"
    folder.mkdir()
    (folder / "config.json").write_text(models.biggan.config.to_json_string())
    torch.save(build_tiny_biggan(128).state_dict(), folder / "pytorch_model.bin")  # the library's own format
    staged_spec = dataclasses.replace(spec.models, biggan=str(folder))
    staged = load_models(staged_spec, 128, torch.device("cpu"))
    for a, b in zip(models.biggan.state_dict().values(), staged.biggan.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ModelError, match=r"^video\.size: 256 is not a size .* can make \(it makes 128\)"):
        load_models(staged_spec, 256, torch.device("cpu"))
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(ModelError, match=r"^models\.biggan: .*missing pytorch_model\.bin"):
        load_models(staged_spec, 128, torch.device("cpu"))


# --- the published algorithm, term by term --------------------------------------------------------


def plain_big_sleep_loss(models, z, logits, boxes, prompts, clip_weight, truncation):
    """big-sleep's loss written out plainly: per-layer BigGAN forward, one F.interpolate (nearest) per
    cutout, per-row skew/kurtosis loops, -clip_weight x cos per prompt."""
    import torch.nn.functional as F

    classes = torch.sigmoid(logits)
    gen = models.biggan.generator
    cond = torch.cat([z, models.biggan.embeddings(classes)], dim=1)
    x = gen.gen_z(cond[0][None]).view(-1, 4, 4, 16 * gen.config.channel_width).permute(0, 3, 1, 2).contiguous()
    row = 1
    for layer in gen.layers:
        if layer.__class__.__name__ == "GenBlock":
            x = layer(x, cond[row][None], truncation)
            row += 1
        else:
            x = layer(x)
    image = (torch.tanh(gen.conv_to_rgb(gen.relu(gen.bn(x, truncation)))[:, :3]) + 1) / 2
    pieces = [F.interpolate(image[:, :, top:top + side, left:left + side], (models.clip_size,) * 2, mode="nearest")
              for top, left, side in boxes.tolist()]
    embeds = models.clip.encode_image((torch.cat(pieces) - models.clip_mean) / models.clip_std)
    lat = ((1 - torch.std(z, dim=1)).abs().mean() + z.mean(dim=1).abs().mean()
           + 4 * torch.max(z.square().mean(), torch.tensor(1.0)))
    for array in z:
        diffs = array - array.mean()
        zscores = diffs / diffs.pow(2).mean().sqrt()
        lat = lat + (zscores.pow(4).mean() - 3).abs() / len(z) + zscores.pow(3).mean().abs() / len(z)
    cls = ((50 * torch.topk(classes, largest=False, dim=1, k=classes.shape[1] - 1)[0]) ** 2).mean()
    sim = 0
    for text, weight in prompts:
        text_embed = models.clip.encode_text(models.tokenizer([text]))
        sim = sim - clip_weight * weight * torch.cosine_similarity(text_embed, embeds, dim=-1).mean()
    return lat + cls + sim


def test_total_loss_equals_a_plain_implementation_of_the_published_formulas(spec, models):
    import dataclasses

    from farm.render.cutouts import cutout_boxes

    settings = dataclasses.replace(spec.render, cutouts=6, clip_weight=100.0, truncation=0.7)
    prompts = [(PROMPT, 1.0), ("a red balloon", 0.5), ("a city", -1.0)]
    sleeper = BigSleep(models, settings, prompts, seed=4)
    for _ in range(3):
        sleeper.step()
    boxes = cutout_boxes(settings, 6, models.resolution, torch.Generator().manual_seed(8))
    ours = sleeper.losses(boxes)["loss"].item()
    theirs = plain_big_sleep_loss(models, sleeper.z.detach(), sleeper.classes.detach(), boxes, prompts,
                                  100.0, 0.7).item()
    assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-4)


def test_gradient_accumulation_averages_the_passes(spec, models):
    import dataclasses

    from farm.render.cutouts import cutout_boxes

    settings = dataclasses.replace(spec.render, gradient_accumulation=2)
    sleeper = BigSleep(models, settings, PROMPT, seed=6)
    # The two passes' cutouts, drawn from a copy of the scene's generator.
    copy = torch.Generator().set_state(sleeper.rng.get_state())
    boxes = [cutout_boxes(settings, settings.cutouts, models.resolution, copy) for _ in range(2)]
    twin = BigSleep(models, settings, PROMPT, seed=6)
    grads = []
    for b in boxes:
        twin.optimizer.zero_grad()
        twin.losses(b)["loss"].backward()
        grads.append((twin.z.grad.clone(), twin.classes.grad.clone()))
    z, classes = twin.z.detach().clone().requires_grad_(True), twin.classes.detach().clone().requires_grad_(True)
    z.grad, classes.grad = (grads[0][0] + grads[1][0]) / 2, (grads[0][1] + grads[1][1]) / 2
    torch.optim.Adam([z, classes], lr=settings.learning_rate).step()
    sleeper.step()
    torch.testing.assert_close(sleeper.z.detach(), z.detach())
    torch.testing.assert_close(sleeper.classes.detach(), classes.detach())


def test_reseeding_inside_a_scene_mixes_in_the_set_fraction(spec, models):
    import dataclasses

    settings = dataclasses.replace(spec.render, reseed_every=2, reseed_fraction=0.25)
    sleeper = BigSleep(models, settings, PROMPT, seed=7)
    before = sleeper.z.detach().clone()
    generator = torch.Generator().set_state(sleeper.noise_rng.get_state())
    sleeper.reseed()
    noise = torch.randn(before.shape, generator=generator)
    torch.testing.assert_close(sleeper.z.detach(), 0.75 * before + 0.25 * noise)
    # Every second step, and only then: one step matches a run without re-seeding, two do not.
    plain = BigSleep(models, dataclasses.replace(spec.render, reseed_every=0), PROMPT, seed=7)
    moving = BigSleep(models, settings, PROMPT, seed=7)
    plain.step(), moving.step()
    assert torch.equal(plain.z, moving.z)
    plain.step(), moving.step()
    assert not torch.equal(plain.z, moving.z)


def test_init_candidates_keep_the_start_with_the_lowest_loss(spec, models):
    import dataclasses

    from farm.render.bigsleep import CLASS_INIT_MEAN, CLASS_INIT_STD, total_loss
    from farm.render.cutouts import cutout_boxes

    settings = dataclasses.replace(spec.render, init_candidates=4)
    sleeper = BigSleep(models, settings, PROMPT, seed=11)
    # The same draws by hand: the first start, the shared cutouts, then three more starts.
    rng = torch.Generator().manual_seed(11)

    def draw():
        z = torch.randn(models.num_latents, models.z_dim, generator=rng)
        return z, CLASS_INIT_MEAN + CLASS_INIT_STD * torch.randn(models.num_latents, models.num_classes, generator=rng)

    first = draw()
    boxes = cutout_boxes(settings, settings.cutouts, models.resolution, rng)
    starts = [first] + [draw() for _ in range(3)]
    with torch.no_grad():
        losses = [BigSleep(models, spec.render, PROMPT, seed=11, init=Latents(z, c)).losses(boxes)["loss"].item()
                  for z, c in starts]
    best = int(np.argmin(losses))
    assert len(set(losses)) == 4
    with torch.no_grad():  # scored together, each loss is what it is alone
        together = total_loss(sleeper.loss_terms(torch.stack([z for z, _ in starts]),
                                                 torch.stack([c for _, c in starts]), boxes)).tolist()
    np.testing.assert_allclose(together, losses, rtol=1e-5)
    assert torch.equal(sleeper.z.detach(), starts[best][0]) and torch.equal(sleeper.classes.detach(), starts[best][1])
    torch.testing.assert_close(sleeper.ema.average.z, starts[best][0])  # frames start from the winner too
    # One candidate is big-sleep's single random start, untouched.
    single = BigSleep(models, dataclasses.replace(spec.render, init_candidates=1), PROMPT, seed=11)
    assert torch.equal(single.z.detach(), first[0])


def test_a_resumed_scene_is_byte_identical(spec, models):
    import dataclasses

    settings = dataclasses.replace(spec.render, reseed_every=3)
    _, frames = render_scene_with_state(models, settings, PROMPT, seed=8, frames=5, state_every=2)
    whole = list(frames)
    assert [f.state is not None for f in whole] == [False, True, False, True, True]
    sleeper, rest = render_scene_with_state(models, settings, PROMPT, seed=8, frames=5, resume=whole[1].state)
    rest = list(rest)
    assert [f.index for f in rest] == [2, 3, 4]
    for a, b in zip(whole[2:], rest):
        assert np.array_equal(a.image, b.image) and a.loss == b.loss
    for key, value in whole[-1].state.items():
        assert np.array_equal(value, sleeper.state_dict()[key]), key


def test_max_classes_conditions_biggan_on_exactly_that_many_classes(spec, models):
    import dataclasses

    from farm.render.losses import class_vectors

    settings = dataclasses.replace(spec.render, max_classes=3, class_temperature=2.0)
    sleeper = BigSleep(models, settings, PROMPT, seed=9)
    for _ in range(2):
        sleeper.step()
    vectors = class_vectors(sleeper.classes.detach(), settings.max_classes, settings.class_temperature)
    assert ((vectors != 0).sum(dim=1) == 3).all()
    assert list(render_scene(models, settings, PROMPT, seed=9, frames=1))[0].image.std() > 1


def test_morph_bridge_ends_on_the_neighbouring_frames(spec, models):
    from farm.render.morph import bridge_frames

    first, frames_a = render_scene_with_state(models, spec.render, PROMPT, seed=1, frames=2)
    last_of_a = list(frames_a)[-1].image
    second, frames_b = render_scene_with_state(models, spec.render, "a frozen valley", seed=2, frames=2)
    first_of_b = list(frames_b)[0].image
    bridge = bridge_frames(models, first.ema.average, second.first, 5, spec.render.truncation)
    assert len(bridge) == 5
    assert np.array_equal(bridge[0], last_of_a) and np.array_equal(bridge[-1], first_of_b)
    middle = bridge[2].astype(float)
    assert np.abs(middle - last_of_a).mean() > 1 and np.abs(middle - first_of_b).mean() > 1



def test_self_attention_is_the_librarys(models):
    from farm.render.biggan import self_attention

    layer = next(block for block in models.biggan.generator.layers if block.__class__.__name__ != "GenBlock")
    saved = layer.gamma.detach().clone()
    try:
        layer.gamma.data.fill_(0.7)  # random tiny weights leave it at 0, which would hide the attention
        x = torch.randn(2, layer.in_channels, 64, 64, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(self_attention(layer, x), layer(x), atol=1e-5, rtol=1e-5)
    finally:
        layer.gamma.data.copy_(saved)


def test_loaded_models_are_frozen(models):
    # Only the latents are optimised: no weight of CLIP or BigGAN may ask for a gradient.
    assert not any(p.requires_grad for p in models.clip.parameters())
    assert not any(p.requires_grad for p in models.biggan.parameters())
