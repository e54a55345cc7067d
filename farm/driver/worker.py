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

    def render(self, settings, prompt: str, seed: int, frames: int, init=None, resume=None,
               state_every: int = 0) -> Iterator[dict[str, Any]]:
        """Stream one item per frame, then a last item with the scene's final (EMA) latents.

        A frame item carries the renderer's state after it every ``state_every`` frames (and
        after the last); ``resume`` is such a state: the scene continues from the frame after it.
        """
        from farm.render.bigsleep import Latents, render_scene_with_state

        assert self.models is not None, "load() must run before render()"
        start = Latents.from_numpy(init, self.models.device) if init is not None else None
        more = {key: value for key, value in (("resume", resume), ("state_every", state_every)) if value}
        sleeper, frame_iter = render_scene_with_state(self.models, settings, prompt, seed, frames, start, **more)
        for frame in frame_iter:
            yield {"frame": frame.index, "png": frame.png(), "loss": frame.loss, "similarity": frame.similarity,
                   "state": getattr(frame, "state", None)}
        yield {"latents": sleeper.ema.to_numpy()}
