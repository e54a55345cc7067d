"""The machine-level knobs of a render: matrix precision, memory layout, determinism.

They are process-wide torch settings, applied when a scene starts; every scene of a
film has the same settings, so a worker's scenes never disagree about them.
"""

from __future__ import annotations

import os

import torch

from farm.errors import SpecError
from farm.render.models import Models

# Options whose backward pass has no deterministic CUDA implementation in torch, so
# ``render.deterministic`` refuses them there (see docs/SPEC.md).
NONDETERMINISTIC_ON_CUDA: dict[str, str] = {}


def check_deterministic(settings, device_type: str) -> None:
    """One line naming the option that cannot be made deterministic on this device."""
    if not settings.deterministic or device_type != "cuda":
        return
    for option, reason in NONDETERMINISTIC_ON_CUDA.items():
        field, _, value = option.partition("=")
        if str(getattr(settings, field)).lower() == value:
            raise SpecError(f"render.{field}", f"{value} cannot be rendered deterministically on CUDA ({reason}); "
                                               f"choose another value or set render.deterministic: false")


def prepare_device(models: Models, settings) -> None:
    cuda = models.device.type == "cuda"
    if cuda:
        tf32 = settings.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    check_deterministic(settings, models.device.type)
    if settings.deterministic and cuda:
        # cuBLAS needs a fixed workspace for reproducible matrix products; it reads this
        # when its handle is made, before the first product of the process.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif cuda:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    layout = torch.channels_last if settings.channels_last else torch.contiguous_format
    if models.memory_format != layout:
        models.clip.to(memory_format=layout)
        models.biggan.to(memory_format=layout)
        models.memory_format = layout
