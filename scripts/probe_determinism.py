"""Which renderer options repeat bit for bit on this CUDA device, with and without deterministic mode.

    python scripts/probe_determinism.py      # prints one JSON line per option
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm.render.bigsleep import BigSleep  # noqa: E402
from farm.render.models import load_models  # noqa: E402
from farm.spec import spec_from_dict  # noqa: E402


def main() -> None:
    spec = spec_from_dict({"title": "probe", "scenes": [{"narration": "x"}]}, preset="tiny",
                          overrides=["render.cutouts=16", "render.device=cuda"])
    models = load_models(spec.models, 128, torch.device("cuda"))
    for deterministic in (True, False):
        for resample in ("nearest", "bilinear", "area"):
            for precision in ("fp32", "bf16"):
                settings = dataclasses.replace(spec.render, deterministic=deterministic, cutout_resample=resample,
                                               precision=precision)
                torch.use_deterministic_algorithms(False)
                try:
                    runs = []
                    for _ in range(2):
                        sleeper = BigSleep(models, settings, "a red circle", seed=9)
                        for _ in range(4):
                            sleeper.step()
                        runs.append(sleeper.z.detach().clone())
                    outcome = "same" if torch.equal(runs[0], runs[1]) else "differs"
                except RuntimeError as exc:
                    outcome = f"error: {str(exc).splitlines()[0][:200]}"
                print(json.dumps({"deterministic": deterministic, "resample": resample, "precision": precision,
                                  "outcome": outcome}), flush=True)


if __name__ == "__main__":
    main()
