"""The toy world: procedural pictures, the shipped toy CLIP, and prompt-following judged on pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from farm.toy.clip import WEIGHTS, ToyTokenizer, load_toy_clip
from farm.toy.train_clip import Recipe, train, zero_shot_accuracy
from farm.toy.world import COLOURS, POSITIONS, SIZES, WORDS, ToyWorld, shape_mask

# Seeds the training never draws from (it uses the recipe's seed and 10_000 + step).
HELD_OUT_SEED = 31_337_001


# --- the world -------------------------------------------------------------------------------


def test_world_is_seeded_and_endless():
    a, b, c = ToyWorld(5), ToyWorld(5), ToyWorld(6)
    first, again, other = a.batch(8), b.batch(8), c.batch(8)
    assert np.array_equal(first.images, again.images) and first.captions == again.captions
    assert not np.array_equal(first.images, other.images)
    assert not np.array_equal(first.images, a.batch(8).images)  # the next batch is new


def test_pictures_show_what_their_captions_say():
    world = ToyWorld(11, size=64, noise=0.0, partial_captions=False)
    batch = world.batch(40)
    for image, picture, caption in zip(batch.images, batch.pictures, batch.captions):
        assert caption.startswith(f"a {picture.size} {picture.colour} {picture.shape}")
        assert POSITIONS[picture.position][0] in caption and f"on a {picture.background} background" in caption
        _, cx, cy = POSITIONS[picture.position]
        # The named position's centre pixel has the shape's colour, a corner the background's.
        centre = image[int(cy * 64), int(cx * 64)].astype(int)
        corner = image[0, 0].astype(int) if picture.position != "centre" else image[0, 63].astype(int)
        assert np.abs(centre - COLOURS[picture.colour]).max() <= 40, (caption, centre)
        assert np.abs(corner - COLOURS[picture.background]).max() <= 40, (caption, corner)


def test_shapes_have_similar_areas_and_differ():
    s = 256
    ys, xs = np.mgrid[0:s, 0:s] / s
    r = SIZES["big"][0]
    masks = {shape: shape_mask(shape, xs, ys, 0.5, 0.5, r) for shape in ("circle", "square", "triangle")}
    areas = {k: m.mean() for k, m in masks.items()}
    circle = np.pi * r * r
    assert all(0.6 * circle < a < 1.4 * circle for a in areas.values()), areas
    assert (masks["circle"] ^ masks["square"]).mean() > 0.01 and (masks["square"] ^ masks["triangle"]).mean() > 0.02


# --- the tokenizer ---------------------------------------------------------------------------


def test_tokenizer_maps_open_clip_bpe_onto_the_compact_vocabulary():
    import open_clip

    tokenizer = ToyTokenizer.for_words(WORDS, context_length=16)
    bpe = open_clip.get_tokenizer("ViT-B-32")
    tokens = tokenizer(["a red circle", "a hairy tardigrade"])
    raw = bpe(["a red circle", "a hairy tardigrade"], context_length=16)
    assert tokens.shape == (2, 16) and tokens.max() < tokenizer.vocab_size
    assert torch.equal(tokens == 0, raw == 0)  # padding stays 0
    # Same positions as the BPE tokens; end-of-text holds the highest id (open_clip pools there).
    assert int(tokens[0].argmax()) == int(raw[0].argmax()) == 4
    assert tokens[0, 4] == tokenizer.vocab_size - 1
    assert (tokens[1, 2:-1][tokens[1, 2:-1] != 0] == 1).sum() >= 1  # unknown words -> <unk>
    assert len(set(tokens[0, 1:4].tolist())) == 3 and 1 not in tokens[0].tolist()


# --- training --------------------------------------------------------------------------------


def test_training_is_deterministic_from_its_seed():
    recipe = Recipe(steps=3, batch=8, threads=1)
    small = dict(recipe.config, text_width=32, text_layers=1)
    runs = [train(Recipe(steps=3, batch=8, threads=1, config=small), log=lambda _: None, evaluate_every=0)[0]
            for _ in range(2)]
    other = train(Recipe(seed=1, steps=3, batch=8, threads=1, config=small), log=lambda _: None, evaluate_every=0)[0]
    a, b, c = (m.state_dict() for m in (*runs, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# --- the shipped weights ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_clip():
    torch.set_num_threads(1)
    return load_toy_clip()


def test_shipped_weights_are_small_and_the_real_clip_class(toy_clip):
    import open_clip

    model, tokenizer, size = toy_clip
    assert isinstance(model, open_clip.CLIP)
    assert WEIGHTS.stat().st_size <= 10_000_000
    assert model.token_embedding.num_embeddings == tokenizer.vocab_size < 100


@pytest.fixture(scope="module")
def held_out_accuracy(toy_clip):
    model, tokenizer, _ = toy_clip
    return zero_shot_accuracy(model, tokenizer, seed=HELD_OUT_SEED, n=400)


TARGETS = {"colour": 0.95, "shape": 0.85, "position": 0.80}


NOT_MET = pytest.mark.xfail(strict=True, reason="issue 7 target not reached yet by the shipped weights (docs/TOY.md)")


@pytest.mark.parametrize("attribute", ["colour", pytest.param("shape", marks=NOT_MET),
                                       pytest.param("position", marks=NOT_MET)])
def test_shipped_toy_clip_meets_its_zero_shot_target(held_out_accuracy, attribute):
    assert held_out_accuracy[attribute] >= TARGETS[attribute], held_out_accuracy


# --- prompt-following through farm's renderer, judged on pixels --------------------------------

CHANNELS = {"red": 0, "green": 1, "blue": 2}
RENDER_FRAMES = 4


def toy_spec(**render):
    from farm.spec import spec_from_dict

    return spec_from_dict({"title": "Toy", "scenes": [{"narration": "x", "prompt": "a red circle", "duration": 1}],
                           "render": {"preset": "toy", **render}})


@pytest.fixture(scope="module")
def toy_models():
    from farm.render.models import load_models

    torch.set_num_threads(1)
    spec = toy_spec()
    return load_models(spec.models, spec.video.size, torch.device("cpu"))


def colour_leads(models, settings) -> dict[str, float]:
    """For red, green, blue: how far the prompted channel's mean leads the larger other channel
    in the final frame of "a <colour> circle on a black background" (0..255)."""
    from farm.render.bigsleep import render_scene

    leads = {}
    for colour, channel in CHANNELS.items():
        frames = list(render_scene(models, settings, f"a {colour} circle on a black background", seed=1,
                                   frames=RENDER_FRAMES))
        mean = frames[-1].image.reshape(-1, 3).astype(float).mean(axis=0)
        leads[colour] = float(mean[channel] - np.delete(mean, channel).max())
    return leads


@pytest.fixture(scope="module")
def default_leads(toy_models):
    return colour_leads(toy_models, toy_spec().render)


@pytest.fixture(scope="module")
def weak_leads(toy_models):
    return colour_leads(toy_models, toy_spec(clip_weight=toy_spec().render.clip_weight / 1000).render)


# Red does not follow yet: from this seed the tiny (random) BigGAN's first image has its red
# channel saturated at 0 (tanh), so no gradient can raise it (docs/TOY.md).
RED_STUCK = pytest.mark.xfail(strict=True, reason="tiny random BigGAN starts with red saturated at 0 (docs/TOY.md)")
COLOURS_TESTED = [pytest.param("red", marks=RED_STUCK), "green", "blue"]


@pytest.mark.parametrize("colour", COLOURS_TESTED)
def test_toy_preset_paints_the_prompted_colour(toy_models, default_leads, colour):
    from open_clip import CLIP

    assert isinstance(toy_models.clip, CLIP)
    assert default_leads[colour] > 20, default_leads


@pytest.mark.parametrize("colour", COLOURS_TESTED)
def test_a_clip_weight_far_too_low_loses_the_prompt(default_leads, weak_leads, colour):
    """The loss balance matters: with the CLIP term 1000 times too weak the regularisers win."""
    assert default_leads[colour] > 20 and weak_leads[colour] < 20, (default_leads, weak_leads)
    assert weak_leads[colour] < default_leads[colour] - 20, (default_leads, weak_leads)
