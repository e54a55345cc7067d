"""Several scenes in one batch (farm.render.batch): each scene's step, frames and state are its own,
whatever shares its batch; real open_clip and BigGAN classes (tiny preset), no Ray.

Bit for bit is not what a batch gives: the matrix libraries pick their kernels by the batch's size
(MKL adds a product of fewer than 4 rows in another order than one of 4 or more), so a scene's
step beside others differs from its step alone in the last bits, and its frames by a few levels
out of 255 over a short scene (docs/SPEC.md, render.scenes_per_worker, gives the figures). The
tolerances below are those; a scene that is alone in its batch is bit for bit the scene alone.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from farm.render.batch import SceneBatch, SceneJob, render_scenes, start_scene
from farm.render.bigsleep import BigSleep, Finished, Latents, render_scene_with_state, step_together
from farm.render.models import load_models
from farm.spec import spec_from_dict

from conftest import tiny_film

# A frame of a scene rendered beside others, against the scene alone, over a few steps: at most
# this many levels (of 255) on any pixel (measured: 1 over 12 steps at the tiny preset).
FRAME_LEVELS = 3


@pytest.fixture(scope="module")
def spec():
    return spec_from_dict(tiny_film(), overrides=["render.cutouts=4", "render.warmup_steps=1"])


@pytest.fixture(scope="module")
def models(spec):
    torch.set_num_threads(1)
    return load_models(spec.models, spec.video.size, torch.device("cpu"))


PROMPTS = ["a hairy tardigrade in the snow", [("a frozen valley at night", 1.0), ("a city", -0.5)],
           "a ball of white fur sleeping"]


def test_a_step_of_three_scenes_gives_each_its_own_loss_and_gradient(spec, models):
    """One step of three scenes (other prompts, seeds, a weighted negative prompt) against each
    scene's step alone: the same terms and the same gradients (Adam's first moment after one step
    is a tenth of it), to float rounding. Adam's update divides by the gradient's own size, so an
    element whose gradient is next to nothing moves by up to the learning rate either way: the
    latents themselves agree on average, not element by element."""
    alone = [BigSleep(models, spec.render, prompt, seed=10 + i) for i, prompt in enumerate(PROMPTS)]
    together = [BigSleep(models, spec.render, prompt, seed=10 + i) for i, prompt in enumerate(PROMPTS)]
    solo = [s.step() for s in alone]
    batched = step_together(together)
    for a, b in zip(solo, batched):
        for key in ("latent", "classes", "clip", "similarity", "loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    for a, b in zip(alone, together):
        assert b.steps == a.steps == 1
        for pa, pb in zip(a.optimizer.state.values(), b.optimizer.state.values()):
            scale = pa["exp_avg"].abs().max()
            torch.testing.assert_close(pb["exp_avg"], pa["exp_avg"], rtol=1e-4, atol=1e-5 * scale)
        assert (b.z - a.z).abs().mean() < 1e-3 * spec.render.learning_rate
    # each scene its own: no two alike
    assert not torch.allclose(together[0].optimizer.state[together[0].z]["exp_avg"],
                              together[2].optimizer.state[together[2].z]["exp_avg"])


def test_a_scene_alone_in_a_batch_is_the_scene_alone_bit_for_bit(spec, models):
    frames, sleeper = 3, None
    sleeper, expected = render_scene_with_state(models, spec.render, PROMPTS[0], 5, frames)
    expected = [f.image for f in expected]
    got = [e.image for _, e in render_scenes(models, 4, [SceneJob("a", spec.render, PROMPTS[0], 5, frames)])
           if not isinstance(e, Finished)]
    assert len(got) == frames and all(np.array_equal(a, b) for a, b in zip(expected, got))


def alone(models, job: SceneJob) -> tuple[list, dict]:
    """The scene rendered by itself: its frames and its last state."""
    sleeper, frames = render_scene_with_state(models, job.settings, job.prompt, job.seed, job.frames, job.init,
                                              resume=job.resume, state_every=job.state_every)
    out = list(frames)
    return out, sleeper.state_dict()


def test_scenes_join_and_leave_and_each_renders_as_alone(spec, models):
    """Four scenes of different lengths, two places: a short one leaves, the next joins at once;
    one is a keyframe anchor (no frames), one starts from given latents, one resumes from a frame's
    state. Each scene's frames, states and last latents are its own, whatever shared its batch."""
    anchor = dataclasses.replace(spec.render, warmup_steps=3)
    start = Latents(torch.randn(models.num_latents, models.z_dim), torch.full((models.num_latents, 1000), -3.9))
    resumed_from = list(render_scene_with_state(models, spec.render, PROMPTS[2], 9, 4, state_every=2)[1])[1].state
    jobs = [SceneJob("long", spec.render, PROMPTS[0], 1, 5, state_every=2),
            SceneJob("short", spec.render, PROMPTS[1], 2, 1),
            SceneJob("anchor", anchor, PROMPTS[2], 3, 0),
            SceneJob("from latents", spec.render, PROMPTS[1], 4, 2, init=start),
            SceneJob("resumed", spec.render, PROMPTS[2], 9, 4, resume=resumed_from, state_every=2)]
    got: dict[str, list] = {}
    ended: dict[str, Finished] = {}
    sizes = []
    batch = SceneBatch(models, 2)
    waiting = list(jobs)
    while waiting or batch.runs:
        while waiting and len(batch) < 2:
            job = waiting.pop(0)
            batch.add(job.key, start_scene(models, job))
        for key, run in list(batch.runs.items()):
            for event in run.events():
                if isinstance(event, Finished):
                    ended[key] = event
                else:
                    got.setdefault(key, []).append(event)
            if run.done:
                batch.remove(key)
        sizes.append(len(batch.step()) if batch.runs else 0)
    assert max(sizes) == 2, sizes  # scenes were stepped together
    for job in jobs:
        frames, state = alone(models, job)
        mine = got.get(job.key, [])
        assert [f.index for f in mine] == [f.index for f in frames], job.key
        for a, b in zip(frames, mine):
            levels = np.abs(a.image.astype(int) - b.image.astype(int)).max()
            assert levels <= FRAME_LEVELS, (job.key, a.index, levels)
            assert (a.state is None) == (b.state is None)
            if a.state is not None:
                assert int(b.state["steps"]) == int(a.state["steps"])
                np.testing.assert_allclose(b.state["z"], a.state["z"], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(ended[job.key].latents.z.numpy(), state["ema_z"] / (1 - float(state["ema_accum"])),
                                   rtol=1e-3, atol=1e-3)
    assert "anchor" in ended and "anchor" not in got  # an anchor draws no frames, only latents


def test_scenes_of_other_settings_never_share_a_step(spec, models):
    other = dataclasses.replace(spec.render, cutouts=2)
    batch = SceneBatch(models, 3)
    batch.add("a", start_scene(models, SceneJob("a", spec.render, PROMPTS[0], 1, 2)))
    batch.add("b", start_scene(models, SceneJob("b", other, PROMPTS[0], 1, 2)))
    batch.add("c", start_scene(models, SceneJob("c", spec.render, PROMPTS[0], 2, 2)))
    assert sorted(batch.step()) == ["a", "b", "c"]
    assert all(run.sleeper.steps == 1 for run in batch.runs.values())
    with pytest.raises(AssertionError, match="other settings"):
        step_together([batch.runs["a"].sleeper, batch.runs["b"].sleeper])


def test_the_render_actor_streams_each_batched_scene_on_its_own_and_a_slow_stream_slows_no_other(spec, models):
    """farm.driver.worker.SceneWorker as a plain object (no Ray): two scenes' render() streams, each
    taken in a thread of its own as Ray's threaded actor does, share its BatchLoop; one stream is
    not read for a while and the other finishes meanwhile. Each stream's frames and last latents are
    its scene's alone (within the tolerance), and the loop takes the next scene once one leaves."""
    import threading
    import time

    from farm.driver.worker import BatchLoop, SceneWorker

    worker = SceneWorker(1)
    worker.models = models
    worker.loop = BatchLoop(models, 2, 1)
    jobs = {"slow": (PROMPTS[0], 21, 3), "fast": (PROMPTS[1], 22, 2), "next": (PROMPTS[2], 23, 2)}
    items: dict[str, list] = {}
    finished: dict[str, float] = {}

    def read(name, pause):
        prompt, seed, frames = jobs[name]
        for item in worker.render(spec.render, prompt, seed, frames, state_every=1):
            items.setdefault(name, []).append(item)
            time.sleep(pause)
        finished[name] = time.monotonic()

    threads = [threading.Thread(target=read, args=("slow", 3.0)), threading.Thread(target=read, args=("fast", 0))]
    for thread in threads:
        thread.start()
    threads[1].join(timeout=300)
    assert "fast" in finished and "slow" not in finished  # the slow reader held back no one
    later = threading.Thread(target=read, args=("next", 0))  # a place came free: the next scene joins
    later.start()
    for thread in (threads[0], later):
        thread.join(timeout=300)
    assert set(finished) == set(jobs)
    for name, (prompt, seed, frames) in jobs.items():
        sleeper, expected = render_scene_with_state(models, spec.render, prompt, seed, frames)
        expected = list(expected)
        got = items[name]
        assert [i["frame"] for i in got[:-1]] == list(range(frames)) and "latents" in got[-1]
        for frame, item in zip(expected, got):
            image = np.asarray(Image.open(io.BytesIO(item["png"])), dtype=int)
            assert np.abs(image - frame.image.astype(int)).max() <= FRAME_LEVELS, name
            assert int(item["state"]["frames_done"]) == frame.index + 1
        np.testing.assert_allclose(got[-1]["latents"]["z"], sleeper.ema.average.z.numpy(), rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(got[-1]["first_latents"]["z"], sleeper.first.z.numpy(), rtol=1e-3, atol=1e-3)
    assert not worker.loop.batch.runs and not worker.loop.queues  # every scene left
