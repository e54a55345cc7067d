"""The render actor: loads CLIP and BigGAN once, then streams scenes frame by frame.

It moves frames (PNG bytes) and latents (numpy arrays) it does not interpret
beyond the renderer's own API; the optimisation itself lives in farm.render.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Iterator

import ray


class SceneWorker:
    """Ray actor, one per GPU (or per ``cpus_per_worker`` CPUs when the cluster has none)."""

    def __init__(self, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.models = None

    def load(self, models_spec, size: int, device: str) -> dict[str, Any]:
        """Load the models; a separate call so a bad model raises its own error, not a dead actor."""
        from farm.render.models import load_models, resolve_device

        self.models = load_models(models_spec, size, resolve_device(device))
        return {
            "node": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": str(self.models.device),
            "resources": ray.get_runtime_context().get_assigned_resources(),
        }

    def render(self, settings, prompt, seed: int, frames: int, init=None, resume=None,
               state_every: int = 0) -> Iterator[dict[str, Any]]:
        """Stream one item per frame, then a last item with the scene's first and last (EMA) latents.

        A frame item carries ``state`` (numpy arrays, opaque here) when the renderer attached
        one; ``resume`` is such a state, to continue a scene after the frame it came with.
        """
        from farm.render.bigsleep import Latents, render_scene_with_state

        assert self.models is not None, "load() must run before render()"
        start = Latents.from_numpy(init, self.models.device) if init is not None else None
        sleeper, frame_iter = render_scene_with_state(self.models, settings, prompt, seed, frames, start,
                                                      resume=resume, state_every=state_every)
        for frame in frame_iter:
            item = {"frame": frame.index, "png": frame.png(), "loss": frame.loss, "similarity": frame.similarity}
            if frame.state is not None:
                item["state"] = frame.state
            yield item
        last = {"latents": sleeper.ema.average.to_numpy()}
        if sleeper.first is not None:
            last["first_latents"] = sleeper.first.to_numpy()
        yield last

    def bridge(self, start, end, count: int, settings) -> list[bytes]:
        """A morph's bridge frames (PNG bytes) from latents ``start`` to ``end`` (numpy dicts)."""
        import io

        from PIL import Image

        from farm.render.bigsleep import Latents
        from farm.render.morph import bridge_frames

        assert self.models is not None, "load() must run before bridge()"
        device = self.models.device
        images = bridge_frames(self.models, Latents.from_numpy(start, device), Latents.from_numpy(end, device), count,
                               settings.truncation, settings.max_classes, settings.class_temperature)
        out = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            out.append(buffer.getvalue())
        return out
