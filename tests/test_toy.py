"""The toy world: procedural pictures, the shipped toy CLIP, and prompt-following judged on pixels."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from farm.toy.clip import WEIGHTS, ToyTokenizer, load_toy_clip, zero_shot_accuracy
from farm.toy.world import COLOURS, POSITIONS, SIZES, WORDS, ToyWorld, shape_mask

# The toy models' training lives beside scripts/train_toy.py, outside the farm package.
SCRIPTS = str(Path(__file__).resolve().parent.parent / "scripts")
if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)

from toy_training.clip import Recipe, train  # noqa: E402

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


def test_same_place_groups_differ_in_shape_only():
    pictures = ToyWorld(3).pictures(30, group=3, same_place=1.0)
    for start in range(0, 30, 3):
        run = pictures[start:start + 3]
        assert {p.shape for p in run} == {"circle", "square", "triangle"}
        assert len({(p.colour, p.background, p.position, p.size) for p in run}) == 1
    mixed = ToyWorld(3).pictures(60, group=2, same_place=0.0)
    assert len({(p.position, p.size) for p in mixed}) > 5


def test_wide_colours_lie_anywhere_in_their_names_region_and_soft_edges_blur():
    from farm.toy.world import nearest_colour

    world = ToyWorld(4, wide_colours=1.0)
    for name in COLOURS:
        samples = np.array([world.colour(name) for _ in range(50)])
        assert all(nearest_colour(rgb) == name for rgb in samples)
        assert samples.std(axis=0).max() > 20  # not just the named colour, jittered
    # By hand: (200, 90, 60) is 70.0 from red (220, 30, 30) and 75.2 from orange (245, 135, 20).
    assert nearest_colour((200, 90, 60)) == "red" and nearest_colour((200, 110, 30)) == "orange"
    near = ToyWorld(4, wide_colours=1.0, wide_radius=60.0)
    for name in COLOURS:
        samples = np.array([near.colour(name) for _ in range(50)])
        assert all(nearest_colour(rgb) == name for rgb in samples)
        assert np.linalg.norm(samples - np.array(COLOURS[name]), axis=1).max() <= 60.0
    sharp = ToyWorld(9, noise=0.0).batch(20).images
    soft = ToyWorld(9, noise=0.0, soft_edges=1.0).batch(20).images

    def colours_per_row(images):
        return np.mean([len(np.unique(row.reshape(-1, 3), axis=0)) for image in images for row in image])

    assert colours_per_row(soft) > 2 * colours_per_row(sharp)  # blurred edges: mixed colours in between


# --- the pixel judge -------------------------------------------------------------------------


def test_judge_fill_ratios_are_the_shapes_areas_over_their_boxes():
    from farm.toy.judge import FILL

    # By hand: a circle fills pi r^2 / (2r)^2 of its box, a square all of it, a triangle half.
    assert FILL == {"triangle": 0.5, "circle": 3.141592653589793 / 4, "square": 1.0}


def test_judge_reads_fresh_pictures():
    from farm.toy.judge import judge

    batch = ToyWorld(2024, size=128, partial_captions=False).batch(150)
    right = dict.fromkeys(("shape", "position", "colour", "background"), 0)
    for image, picture in zip(batch.images, batch.pictures):
        verdict = judge(image)
        for attribute in right:
            right[attribute] += getattr(verdict, attribute) == getattr(picture, attribute)
    assert all(r >= 0.97 * 150 for r in right.values()), right
    assert judge(np.full((64, 64, 3), 90, np.uint8)) is None  # nothing stands out


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
    small = dict(Recipe().config, text_width=32, text_layers=1)

    def run(seed):  # both phases: 3 steps, then 2 on wide colours and soft edges
        recipe = Recipe(seed=seed, steps=3, finetune_steps=2, batch=8, threads=1, config=small)
        return train(recipe, log=lambda _: None, evaluate_every=0)[0]

    a, b, c = (m.state_dict() for m in (run(0), run(0), run(1)))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_the_second_phase_starts_from_the_first_as_shipped():
    """Phase two continues from phase one's weights rounded to fp16, on pictures of wide colours
    and soft edges drawn from seed + 1."""
    from toy_training.clip import contrastive_phase

    from farm.toy.common import float_state, half_state

    recipe = Recipe(steps=3, finetune_steps=2, batch=8, threads=1,
                    config=dict(Recipe().config, text_width=32, text_layers=1))
    both = train(recipe, log=lambda _: None, evaluate_every=0)[0]
    first, tokenizer, _ = train(dataclasses.replace(recipe, finetune_steps=0), log=lambda _: None, evaluate_every=0)
    first.load_state_dict(float_state(half_state(first)))
    torch.manual_seed(1)
    world = ToyWorld(seed=1, size=64, wide_colours=recipe.finetune_wide_colours, soft_edges=recipe.finetune_soft_edges,
                     wide_radius=recipe.finetune_wide_radius)
    contrastive_phase(first, tokenizer, world, recipe, 2, recipe.finetune_learning_rate, 1, lambda _: None, 0, None,
                      0.0)
    a, b = both.state_dict(), first.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_teacher_scores_by_hand():
    """The distillation's teacher (scripts/toy_training/teacher.py): squared distances over the scales,
    0 for a named picture against its own caption, which the caption pool puts first."""
    from toy_training.teacher import InBetween, Scales, attribute_scores, caption_pool

    from farm.toy.world import SHAPES

    red, black = np.array(COLOURS["red"]) / 255, np.array(COLOURS["black"]) / 255
    picture = InBetween(np.zeros((1, 64, 64, 3), np.uint8), red[None], black[None], np.array([[0.25, 0.5]]),
                        np.array([[1.0, 0.0, 0.0]]))
    scales = Scales(colour=0.25, place=0.15, shape=3.0)
    parts = attribute_scores(picture, scales)
    # By hand: orange - red = (25, 105, -10) / 255: 11750 / 65025 / 0.25^2 = 2.8912; the right is 0.5 from
    # the left: 0.25 / 0.15^2 = 11.111; a square where the picture is all circle: 3 x (1 - 0).
    assert abs(parts["colour"][0, list(COLOURS).index("orange")] + 2.8912) < 1e-4
    assert parts["colour"][0, list(COLOURS).index("red")] == 0
    assert parts["background"][0, list(COLOURS).index("black")] == 0
    assert abs(parts["position"][0, list(POSITIONS).index("right")] + 11.111) < 1e-3
    assert parts["shape"][0, SHAPES.index("square")] == -3.0
    captions, scores = caption_pool(picture, scales, np.random.default_rng(0))
    assert captions[0] == "a red circle on the left on a black background" and scores[0, 0] == 0
    assert len(captions) == 2 and scores[0, 1] < 0


def test_the_distillation_phase_is_deterministic_and_moves_the_weights():
    small = dict(Recipe().config, text_width=32, text_layers=1)

    def run(distill_steps):
        recipe = Recipe(steps=2, finetune_steps=0, distill_steps=distill_steps, distill_batch=6, batch=8, config=small)
        return train(recipe, log=lambda _: None, evaluate_every=0)[0].state_dict()

    a, b, none = run(2), run(2), run(0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], none[k]) for k in a)


def test_the_measured_films_change_one_or_two_attributes_a_scene():
    """scripts/toy_films.py's films: seeded, six scenes, each one or two attributes from the one
    before, never a shape the colour of its background; captions in the toy world's words."""
    from toy_films import ATTRIBUTES, caption, film_prompts

    assert film_prompts(5) == film_prompts(5) and film_prompts(5) != film_prompts(6)
    changes = set()
    for seed in range(1, 21):
        scenes = film_prompts(seed)
        assert len(scenes) == 6
        for before, after in zip(scenes, scenes[1:]):
            changed = sum(before[a] != after[a] for a in ATTRIBUTES)
            assert changed in (1, 2)
            changes.add(changed)
        assert all(s["colour"] != s["background"] for s in scenes)
    assert changes == {1, 2}
    assert caption(film_prompts(1)[0]).split()[0] == "a"
    assert set(" ".join(caption(s) for s in film_prompts(1)).split()) <= set(WORDS)


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


@pytest.mark.parametrize("attribute", ["colour", "shape", "position"])
def test_shipped_toy_clip_meets_its_zero_shot_target(held_out_accuracy, attribute):
    assert held_out_accuracy[attribute] >= TARGETS[attribute], held_out_accuracy


# --- prompt-following through farm's renderer, judged on pixels --------------------------------

CHANNELS = {"red": 0, "green": 1, "blue": 2}
RENDER_FRAMES = 4
RENDER_SEEDS = (1, 2, 3, 4, 5, 6)  # scene seeds; every start is the best of the preset's 96 by the loss


def toy_spec(**render):
    from farm.spec import spec_from_dict

    return spec_from_dict({"title": "Toy", "scenes": [{"narration": "x", "prompt": "a red circle", "duration": 1}],
                           "render": {"preset": "toy", **render}})  # the preset's models: the toy CLIP and generator


@pytest.fixture(scope="module")
def toy_models():
    from farm.render.models import load_models

    torch.set_num_threads(1)
    spec = toy_spec()
    return load_models(spec.models, spec.video.size, torch.device("cpu"))


# A render job: (prompt, scene seed, the render settings changed from the preset's, as (name, value) pairs).
Job = tuple[str, int, tuple[tuple[str, float], ...]]


def final_frame(models, job: Job) -> np.ndarray:
    """The last of the RENDER_FRAMES frames farm's renderer makes for the job."""
    from farm.render.bigsleep import render_scene

    prompt, seed, changed = job
    frames = list(render_scene(models, toy_spec(**dict(changed)).render, prompt, seed=seed, frames=RENDER_FRAMES))
    return frames[-1].image


def render_threads() -> int:
    """One render at a time per CPU this process may use, at most 4."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(4, cpus)


@pytest.fixture(scope="module")
def final_frames(toy_models):
    """Each job's final frame, rendered once for the module however many tests judge it, the jobs
    side by side on render_threads() threads. A render is the same pixels whenever and on whichever
    thread it is drawn: its random streams are its scene's own, the models are only read, and torch
    runs each operation on one thread (test_a_shared_frame_is_the_frame_drawn_alone checks one)."""
    from concurrent.futures import ThreadPoolExecutor

    frames: dict[Job, np.ndarray] = {}
    with ThreadPoolExecutor(render_threads()) as pool:

        def get(jobs: list[Job]) -> list[np.ndarray]:
            missing = [job for job in dict.fromkeys(jobs) if job not in frames]
            frames.update(zip(missing, pool.map(lambda job: final_frame(toy_models, job), missing)))
            return [frames[job] for job in jobs]

        yield get


def colour_jobs(**changed) -> dict[str, list[Job]]:
    """For red, green, blue: "a <colour> circle on a black background", one job per seed."""
    return {colour: [(f"a {colour} circle on a black background", seed, tuple(sorted(changed.items())))
                     for seed in RENDER_SEEDS] for colour in CHANNELS}


def colour_renders(final_frames, **changed) -> dict[str, list[np.ndarray]]:
    """For red, green, blue: the final frames of "a <colour> circle on a black background", one per seed."""
    jobs = colour_jobs(**changed)
    frames = iter(final_frames([job for colour in CHANNELS for job in jobs[colour]]))
    return {colour: [next(frames) for _ in jobs[colour]] for colour in CHANNELS}


def lead(image: np.ndarray, colour: str) -> float:
    """How far the prompted channel of the frame's mean colour leads the larger other channel (0..255)."""
    mean = image.reshape(-1, 3).astype(float).mean(axis=0)
    channel = CHANNELS[colour]
    return float(mean[channel] - np.delete(mean, channel).max())


def read_as_prompted(renders: dict[str, list[np.ndarray]]) -> int:
    """How many frames the pixel judge reads as the prompted colour on a black background."""
    from farm.toy.judge import judge

    verdicts = [judge(image) for images in renders.values() for image in images]
    colours = [colour for colour, images in renders.items() for _ in images]
    return sum(v is not None and (v.colour, v.background) == (c, "black") for v, c in zip(verdicts, colours))


@pytest.fixture(scope="module")
def default_renders(final_frames):
    return colour_renders(final_frames)


@pytest.fixture(scope="module")
def weak_renders(final_frames):
    return colour_renders(final_frames, clip_weight=toy_spec().render.clip_weight / 1000)


# A clear margin, worked out by hand: the frame's mean lead of an exact drawing of the prompt with a
# circle of the mean area of the code's two sizes, radii 0.12 and 0.195 of the side (pi (0.12^2 +
# 0.195^2) / 2 = 0.0823 of the frame), on the named black (12, 12, 12): red (220, 30, 30) 0.0823 x 190
# = 15.65, green (30, 170, 50) 0.0823 x 120 = 9.88, blue (30, 60, 220) 0.0823 x 160 = 13.18. The test
# asks for half of that in 4 of the 6 seeds.
CLEAR_LEAD = {"red": 15.65 / 2, "green": 9.88 / 2, "blue": 13.18 / 2}


@pytest.mark.parametrize("colour", CHANNELS)
def test_toy_preset_paints_the_prompted_colour(toy_models, default_renders, colour):
    from open_clip import CLIP

    assert isinstance(toy_models.clip, CLIP)
    leads = [round(lead(image, colour), 1) for image in default_renders[colour]]
    assert sum(x > CLEAR_LEAD[colour] for x in leads) >= 4, leads


def test_the_pixel_judge_reads_the_prompted_colours(default_renders):
    """Judged on pixels, not by CLIP: the prompted colour on a black background in at least half
    of the frames (by chance, one in 64)."""
    assert read_as_prompted(default_renders) >= len(CHANNELS) * len(RENDER_SEEDS) / 2


def test_a_clip_weight_far_too_low_loses_the_prompt(default_renders, weak_renders):
    """The loss balance matters: with the CLIP term 1000 times too weak the regularisers win, and
    the judge reads the prompt in at most half as many frames."""
    default, weak = read_as_prompted(default_renders), read_as_prompted(weak_renders)
    assert default >= len(CHANNELS) * len(RENDER_SEEDS) / 2 and weak <= default / 2, (default, weak)


SHAPE_PROMPTS = [("circle", "red", "black"), ("square", "yellow", "blue"), ("triangle", "white", "green"),
                 ("circle", "green", "white"), ("square", "orange", "purple"), ("triangle", "blue", "yellow")]
SHAPE_SEEDS = (1, 2, 3, 4)  # 24 frames; seeds 5-8 were kept out of the choice (docs/TOY.md)


@pytest.fixture(scope="module")
def judged_shapes(final_frames):
    """The pixel judge's reading of each prompt's final frame (not the guiding CLIP's). The first
    prompt is the colour tests' red one: its frames are theirs, rendered once."""
    from farm.toy.judge import judge

    keys = [(seed, shape, colour, background) for seed in SHAPE_SEEDS for shape, colour, background in SHAPE_PROMPTS]
    frames = final_frames([(f"a {colour} {shape} on a {background} background", seed, ())
                           for seed, shape, colour, background in keys])
    return {key: judge(frame) for key, frame in zip(keys, frames)}


def test_a_shared_frame_is_the_frame_drawn_alone(toy_models, final_frames):
    """What the tests judge, rendered side by side with other scenes, is bit for bit what the
    renderer draws for that scene alone."""
    job = colour_jobs()["red"][0]
    assert np.array_equal(final_frames([job])[0], final_frame(toy_models, job))


def test_toy_preset_draws_the_prompted_shape(judged_shapes):
    """A judge that is not the guiding CLIP reads the prompted shape well above chance: in at least
    half of the 24 frames, where chance (one shape in three) gives 8."""
    right = [key for key, v in judged_shapes.items() if v and v.shape == key[1]]
    assert len(right) >= 12, judged_shapes


def test_toy_preset_paints_the_prompted_colours_on_their_background(judged_shapes):
    """Colour and background both as prompted in at least half of the frames (chance: 1 in 56)."""
    right = [key for key, v in judged_shapes.items() if v and (v.colour, v.background) == key[2:]]
    assert len(right) >= 12, judged_shapes


# --- the toy generator -----------------------------------------------------------------------


def test_a_code_means_what_its_softmaxes_say():
    from farm.toy.generator import CODE, meaning

    assert len(CODE) == 26
    zero = meaning(np.zeros(len(CODE)))  # every mix even: the palette's mean colour, equal weights
    mean_red = (220 + 30 + 30 + 240 + 245 + 12 + 245 + 135) / 8
    assert abs(zero.colour[0] - mean_red) < 1e-9 and zero.colour == zero.background
    assert all(abs(w - 1 / 3) < 1e-12 for w in zero.shapes.values())
    assert all(abs(w - 1 / 5) < 1e-12 for w in zero.places.values())
    assert all(abs(w - 1 / 2) < 1e-12 for w in zero.sizes.values())
    code = np.zeros(len(CODE))
    code[CODE.index("shape red")] = 2.0
    code[CODE.index("triangle")] = 1.0
    code[CODE.index("top")], code[CODE.index("big")] = 1.5, -1.0
    p = meaning(code)
    # By hand: red's weight is e^(2.5*2) / (e^5 + 7) = 0.954959; the other seven share the rest
    # evenly, and their red channels sum to 937: 0.954959 * 220 + 937 / (e^5 + 7) = 216.1200.
    # The triangle's weight e^2.5 / (e^2.5 + 2) = 12.1825 / 14.1825 = 0.858981; the top's
    # e^3.75 / (e^3.75 + 4) = 42.5211 / 46.5211 = 0.914017; small's 1 / (1 + e^-2.5) = 0.924142.
    assert abs(p.colour[0] - 216.1200) < 1e-3
    assert abs(p.shapes["triangle"] - 0.858981) < 1e-6 and p.shape == "triangle"
    assert abs(p.places["top"] - 0.914017) < 1e-6 and p.position == "top"
    assert abs(p.sizes["small"] - 0.924142) < 1e-6


def test_a_code_is_drawn_as_its_blended_templates():
    """A code whose logits agree draws the toy world's shape at the named place and mean radius;
    an even code draws the average of all thirty masks; the disagreement is 0 where every shape agrees."""
    from toy_training.generator import disagreement

    from farm.toy.generator import CODE, draw_codes

    size = 64
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    xs, ys = (xs + 0.5) / size, (ys + 0.5) / size
    code = np.full(len(CODE), -4.0)
    for name in ("shape yellow", "background blue", "square", "left", "big"):
        code[CODE.index(name)] = 4.0
    picture, mask = draw_codes(code[None], size, masks=True)
    square = shape_mask("square", xs, ys, 0.25, 0.5, (0.17 + 0.22) / 2)
    assert np.abs(mask[0] - square).max() < 1e-6
    assert np.abs(picture[0][square] * 255 - COLOURS["yellow"]).max() < 1e-3
    assert np.abs(picture[0][~square] * 255 - COLOURS["blue"]).max() < 1e-3
    even = draw_codes(np.zeros((1, len(CODE))), size, masks=True)[1][0]
    by_hand = sum(shape_mask(s, xs, ys, POSITIONS[p][1], POSITIONS[p][2], r).astype(np.float64)
                  for s in ("circle", "square", "triangle") for p in POSITIONS for r in (0.12, 0.195)) / 30
    assert np.abs(even - by_hand).max() < 1e-6
    apart = disagreement(code[None], size)[0]
    masks = [shape_mask(s, xs, ys, 0.25, 0.5, 0.195) for s in ("circle", "square", "triangle")]
    assert np.abs(apart - (np.any(masks, 0) & ~np.all(masks, 0))).max() < 1e-6


def test_generator_training_is_deterministic_from_its_seed():
    from toy_training.generator import GeneratorRecipe, train_generator

    def run(seed):
        return train_generator(GeneratorRecipe(seed=seed, steps=2, finetune_steps=2, batch=2,
                                               threads=1, finetune_threads=1), log=lambda _: None)[0].state_dict()

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_the_generators_second_phase_starts_from_the_first_as_shipped():
    from toy_training.generator import GeneratorRecipe, finetune_generator, train_generator

    recipe = GeneratorRecipe(steps=2, finetune_steps=2, batch=2, threads=1, finetune_threads=1)
    both = train_generator(recipe, log=lambda _: None)[0].state_dict()
    first = train_generator(dataclasses.replace(recipe, finetune_steps=0), log=lambda _: None)[0]
    second = finetune_generator(first, recipe, log=lambda _: None)[0].state_dict()
    assert all(torch.equal(both[k], second[k]) for k in both)
    assert not all(torch.equal(both[k], first.state_dict()[k]) for k in both)


def test_a_folded_biggan_loads_its_own_weights(tmp_path):
    """torch leaves spectral norm's load hook behind after removing it; the fold removes it too."""
    from farm.toy.generator import TOY_BIGGAN, build_toy_biggan, load_toy_biggan, save_toy_biggan

    torch.manual_seed(3)
    model = build_toy_biggan()
    save_toy_biggan(tmp_path / "g.pt", model, TOY_BIGGAN, {})
    loaded = load_toy_biggan(tmp_path / "g.pt")
    assert all(torch.equal(v.half().float(), loaded.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def toy_generator():
    from farm.toy.generator import load_toy_biggan

    torch.set_num_threads(1)
    return load_toy_biggan()


def test_shipped_generator_is_the_biggan_class_and_small(toy_generator):
    from pytorch_pretrained_biggan import BigGAN

    from farm.toy.generator import WEIGHTS as GENERATOR_WEIGHTS

    assert isinstance(toy_generator, BigGAN) and toy_generator.config.output_dim == 64
    assert GENERATOR_WEIGHTS.stat().st_size + WEIGHTS.stat().st_size <= 10_000_000


def test_shipped_generator_draws_what_its_code_says(toy_generator):
    """On random latents (Big Sleep's starting point), the pixel judge reads in the drawing the
    shape and place the code stands for, and the pixels stay near the exact drawing."""
    from farm.toy.generator import drawing_fidelity

    fidelity = drawing_fidelity(toy_generator, seed=HELD_OUT_SEED, n=100)
    assert fidelity["position"] >= 0.75 and fidelity["rmse"] < 0.1, fidelity


def test_shipped_generator_draws_the_coded_shape(toy_generator):
    """Where the code clearly stands for one shape, place and size, the judge reads that shape in at
    least half of the drawings (chance: a third)."""
    from farm.toy.generator import clear_shape_fidelity

    share, count = clear_shape_fidelity(toy_generator, seed=HELD_OUT_SEED, n=1200)
    assert count >= 100 and share >= 0.5, (share, count)


@pytest.mark.parametrize("which", ["built", "shipped"])
def test_toy_generator_listens_to_its_code_only(which, toy_generator):
    """Every latent value but the code, and the class mix, leave the picture unchanged."""
    from farm.render.biggan import generate, latent_rows
    from farm.toy.generator import CODE, build_toy_biggan, decode

    torch.manual_seed(5)
    model = build_toy_biggan() if which == "built" else toy_generator
    z = torch.randn(2, latent_rows(model), model.config.z_dim)
    other = torch.randn_like(z)
    other[:, 0, :len(CODE)] = z[:, 0, :len(CODE)]
    classes = torch.rand(2, latent_rows(model), model.config.num_classes)
    with torch.no_grad():
        assert torch.equal(decode(model, z), generate(model, other, classes, 1.0))
        changed = z.clone()
        changed[:, 0, 0] += 1.0
        assert not torch.equal(decode(model, z), decode(model, changed))


def test_toy_generator_problems_are_one_line_naming_the_field(tmp_path):
    from farm.errors import ModelError
    from farm.toy.generator import load_toy_biggan

    with pytest.raises(ModelError,
                       match=r"^video\.size: 256 is not a size the toy generator can make \(it makes 64\)$"):
        load_toy_biggan(size=256)
    with pytest.raises(ModelError, match=r"^models\.biggan: the toy generator's weights are missing .*train_toy\.py$"):
        load_toy_biggan(tmp_path / "none.pt")
    torch.save({"config": {"size": 64, "channels": 16, "attention": 32}, "state": {"x": torch.zeros(1)}, "info": {}},
               tmp_path / "wrong.pt")
    with pytest.raises(ModelError,
                       match=r"^models\.biggan: .*wrong\.pt does not hold the toy generator's weights \(.*missing"):
        load_toy_biggan(tmp_path / "wrong.pt")
