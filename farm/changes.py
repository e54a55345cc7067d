"""What a change of the spec alters: the frames of which scenes, only how they are joined, or nothing.

The one source for "fields that change pixels". Every spec field is one of:

    execution   how the film is run, never what it looks like (workers, retries, dispatch, the
                LLM that wrote it, caches, the ffmpeg binary): a film continues with new values
    join        how frames are joined into film.mp4 (video transitions, subtitles, encoding,
                narration): ``farm stitch`` may change them, and ``farm render`` of the same
                film makes the segments again
    pixels      everything else: the frames themselves (seed, render, models, video fps and size,
                each scene's weighted prompts and length)

The film store (same film or not, which scenes to render again) and ``farm stitch``
(which overrides it accepts) both ask this module.
"""

from __future__ import annotations

import json
from typing import Any

from farm.errors import SpecError
from farm.spec import SceneSpec, build

# video.* settings that change how frames are joined, not the frames.
JOIN_SETTINGS = frozenset({"display_size", "transition", "transition_seconds", "subtitles", "codec", "crf", "preset",
                           "pix_fmt", "narration", "voice", "speech_model", "speech_base_url", "speech_api_key_env"})
EXECUTION_ONLY = {
    "render": frozenset({"workers", "cpus_per_worker", "gpus_per_worker", "scenes_per_worker", "retries"}),
    "video": frozenset({"ffmpeg"}),
    "models": frozenset({"cache_dir"}),
}
EXECUTION_SECTIONS = frozenset({"dispatch", "llm"})  # whole sections that never change a pixel


def changes_pixels(key: str) -> bool:
    """Whether the dotted spec field ``key`` (``video.crf``, ``render.cutouts``) changes frames."""
    section, _, name = key.partition(".")
    if section in EXECUTION_SECTIONS or name in EXECUTION_ONLY.get(section, ()):
        return False
    return not (section == "video" and name in JOIN_SETTINGS)


def restitchable(key: str) -> bool:
    """Whether ``farm stitch`` may change ``key``: a video setting that does not change frames."""
    return key.startswith("video.") and not changes_pixels(key)


def look(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved spec that decides what the film looks like: no execution or join
    settings (the timeline too is left out: it is derived from the rest)."""
    out = json.loads(json.dumps(spec_dict))
    out.pop("timeline", None)
    for section in EXECUTION_SECTIONS:
        out.pop(section, None)
    for section, keys in EXECUTION_ONLY.items():
        for key in keys:
            out.get(section, {}).pop(key, None)
    for key in JOIN_SETTINGS:
        out.get("video", {}).pop(key, None)
    return out


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Every field whose value differs between two resolved specs (what the film looks like only)."""
    if not prefix:
        a, b = look(a), look(b)
    out: list[str] = []
    for key in list(a) + [k for k in b if k not in a]:
        where = f"{prefix}.{key}" if prefix else str(key)
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differences(va, vb, where)
        elif isinstance(va, list) and isinstance(vb, list) and all(isinstance(x, dict) for x in va + vb):
            for i in range(max(len(va), len(vb))):
                if i >= len(va) or i >= len(vb):
                    out.append(f"{where}[{i}]")
                else:
                    out += differences(va[i], vb[i], f"{where}[{i}]")
        elif va != vb:
            out.append(where)
    return out


def scene_pixels(scene: dict[str, Any], fps: int) -> Any:
    """What of a scene (as a mapping) its frames depend on: every weighted prompt, and its frames."""
    try:
        built = build(SceneSpec, scene, "scene")
    except SpecError:
        return ("unreadable", json.dumps(scene, sort_keys=True, default=str))
    return built.weighted_prompts, max(1, round(built.seconds * fps))


def touched_scenes(old: dict[str, Any], new: dict[str, Any]) -> list[int]:
    """Scenes whose frames a spec change alters.

    A change of a pixel field outside the scenes (seed, render, models, video fps or size)
    touches every scene. A scene's own prompts or length touch it, and in ``chain`` mode
    every scene after it; in ``keyframe`` mode also the next scene, which starts from this
    scene's anchor. Title, story and narration shown only as subtitles touch none.
    """
    a, b = look(old), look(new)
    scenes_a, scenes_b = a.pop("scenes", []), b.pop("scenes", [])
    for side in (a, b):
        side.pop("title", None)
        side.pop("story", None)
    count = len(scenes_b)
    if a != b:
        return list(range(count))
    fps = int(b.get("video", {}).get("fps", 1))
    touched: set[int] = set()
    mode = b.get("render", {}).get("reseed")
    for index in range(count):
        if index >= len(scenes_a) or scene_pixels(scenes_a[index], fps) != scene_pixels(scenes_b[index], fps):
            touched.add(index)
            if mode == "chain":
                touched.update(range(index, count))
            elif mode == "keyframe" and index + 1 < count:
                touched.add(index + 1)
    return sorted(touched)
