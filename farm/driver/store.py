"""The film store: a film's folder on local disk, its resolved spec and its manifest.

    out/<film>/
      film.yaml        resolved spec (everything needed to reproduce)
      manifest.json    scene states, attempts, frame counts, hashes, timings, frame ranges
                       and the node that rendered each, nodes avoided and why
      scenes/NNN/      frames (PNG), the renderer state of a scene in progress
                       (state.npz, replaced as frames arrive), latents between jobs
      film.mp4  film.srt

(the names: farm.folder.layout; the manifest's records: farm.folder.manifest)

Every write is atomic (a temporary file, then a rename), so an interrupted run
never leaves half a frame or half a manifest behind. Frames and states may be
written ``later=True``: by WRITERS threads side by side, so that their flushes to
disk overlap instead of holding the dispatch loop one after another (about 8 ms
each on a virtual disk: 32 workers' frames and states were more than the loop's
time); :meth:`FilmStore.settle` waits until they are all on disk.

``--out`` may also be a ``pyarrow.fs`` URI (``s3://bucket/films``, ``gs://...``,
``file:///shared/films``): the film's folder then lives there, and the driver
works in a local copy (under ``$XDG_CACHE_HOME/farm/stores``, ffmpeg needs local
files). Opening pulls what the store holds (the film's lock object beside it: farm.folder.lock);
every write (spec, manifest, frame,
state, latents, segment, film) goes to both, through :meth:`FilmStore.put` and
:meth:`FilmStore.publish`.
"""

from __future__ import annotations

import hashlib
import io
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import yaml

from farm.changes import differences, look, touched_scenes
from farm.errors import InputError, OutputConflictError
from farm.folder.layout import MANIFEST_NAME, SPEC_NAME, atomic_write, frame_path, scene_dir, write_film_yaml
from farm.folder.lock import folder_lock, store_lock
from farm.folder.manifest import Manifest, SceneRecord
from farm.folder.remote import Remote, cache_for, is_uri

__all__ = ["FilmStore", "Remote", "cache_for"]
from farm.spec import FilmSpec

WRITERS = 8  # threads writing frames and states side by side (put later=True)


class FilmStore:
    def __init__(self, root: str | Path, slug: str) -> None:
        self.remote = Remote(str(root)) if is_uri(root) else None
        self.root = cache_for(self.remote.uri + self.remote.query) if self.remote else Path(root)
        self.slug = slug
        self.path = self.root / slug
        self.location = f"{self.remote.uri}/{slug}" if self.remote else str(self.path)
        self.manifest_path = self.path / MANIFEST_NAME
        self.spec: Optional[FilmSpec] = None  # the film this folder holds, once opened
        self.manifest = Manifest(slug, [])
        self.sent: set[str] = set()  # files this run wrote through to the remote store
        self.opened_at = time.time()
        self.changed: list[str] = []  # spec fields that differ from the film on disk (--rerender-changed)
        self.touched: list[int] = []  # scenes those changes made us render again
        self.writers: Optional[ThreadPoolExecutor] = None  # for put(later=True), started on first use
        self.pending: list[tuple[Future, Callable[[], None]]] = []  # writes put later, not settled yet
        self.manifest_due = False  # save_manifest(later=True) asked since the last settle

    # --- opening ---------------------------------------------------------------------------

    @contextmanager
    def lock(self, command: str, say: Optional[Callable[[str], None]] = None) -> Iterator[None]:
        """One run per film (farm.folder.lock): the local folder's flock, and for a film store URI
        the lock object beside the film in the store too."""
        with folder_lock(self.path, command, self.location):
            if self.remote is None:
                yield
                return
            with store_lock(self.remote, self.slug, command, say):
                yield

    def pull(self) -> None:
        """A remote store's copy of this film into the local folder (replacing what was there)."""
        if self.remote:
            self.remote.pull(self.slug, self.path)

    def open(self, spec: FilmSpec, same_as: tuple[FilmSpec, ...] = (), resume: bool = False,
             rerender_changed: bool = False) -> None:
        """Create the film's folder for ``spec``, or reopen one that holds this same film.

        ``same_as``: earlier forms of ``spec`` a folder may hold that are the same film (the
        plan before narration lengthened scenes to fit their speech). A folder holding a
        different film, or files that are not a film, is left untouched, unless
        ``rerender_changed``: then the scenes the changes touch are rendered again. ``resume``
        insists on a film already there. A remote store's copy is pulled first (:meth:`pull`),
        by the caller.
        """
        assert spec.slug == self.slug, (spec.slug, self.slug)
        self.spec = spec
        self.opened_at = time.time()  # what ffmpeg makes from now on goes to the remote store
        if not self.remote and self.root.exists() and not self.root.is_dir():
            raise InputError(f"{self.root}: the output path exists and is not a folder")
        if resume and not (self.path / SPEC_NAME).is_file():
            raise InputError(f"{self.location}: holds no film to resume (no film.yaml); "
                             "run without --resume to start it")
        old = self._check_same_film(spec, same_as, rerender_changed) if self.path.exists() else None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot create the film folder ({exc.strerror})") from exc
        manifest = self._read_manifest(allow_other_scenes=old is not None)
        if old is not None:
            manifest = self._forget_touched(old, manifest)
        self.write_spec(spec)
        self.manifest = manifest or self._new_manifest()
        self._reconcile()
        self.save_manifest()

    def _reconcile(self) -> None:
        """Frames a killed driver wrote after its last manifest save: recorded, not rendered again."""
        for scene in self.manifest.scenes:
            for frame in range(scene.frames_expected):
                if not scene.has_hash(frame) and self.has_frame(scene.index, frame):
                    self.write_frame(scene.index, frame, self.frame_path(scene.index, frame).read_bytes(),
                                     rewrite=False)

    def _check_same_film(self, spec: FilmSpec, same_as: tuple[FilmSpec, ...],
                         rerender_changed: bool) -> Optional[dict[str, Any]]:
        """None when the folder holds this film (or nothing); the old resolved spec when it
        holds a changed one and ``rerender_changed`` allows it."""
        spec_file = self.path / SPEC_NAME
        if not self.path.is_dir():
            raise OutputConflictError(f"{self.location}: exists and is not a folder; choose another --out")
        if not spec_file.is_file():
            if any(self.path.iterdir()):
                raise OutputConflictError(f"{self.location}: holds files but no film.yaml; "
                                          "choose another --out or empty it")
            return None
        try:
            existing = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise OutputConflictError(f"{spec_file}: cannot be read ({exc}); choose another --out") from exc
        if isinstance(existing, dict) and any(look(existing) == look(s.to_dict()) for s in (spec, *same_as)):
            return None
        fields = differences(existing if isinstance(existing, dict) else {}, spec.to_dict())
        if not rerender_changed or not isinstance(existing, dict):
            raise OutputConflictError(
                f"{self.location}: already holds a different film (differs at {', '.join(fields)}); "
                "choose another --out, add --rerender-changed to render again what the change touches, "
                "or remove that folder")
        self.changed = fields
        return existing

    def _forget_touched(self, old: dict[str, Any], manifest: Optional[Manifest]) -> Manifest:
        """Reset the scenes a spec change touches: their frames, states and latents go."""
        self.touched = touched_scenes(old, self.spec.to_dict())
        fresh = self._new_manifest()
        if manifest:
            for index, kept in enumerate(manifest.scenes[: len(fresh.scenes)]):
                if index not in self.touched:
                    fresh.scenes[index] = kept
            fresh.bad_nodes = manifest.bad_nodes
        for index in range(max(len(fresh.scenes), len(old.get("scenes", [])))):
            folder = self.scene_dir(index)
            if folder.is_dir() and (index in self.touched or index >= len(fresh.scenes)):
                for item in folder.iterdir():
                    self.remove(item)
        fresh.changed = self.changed
        return fresh

    def _new_manifest(self) -> Manifest:
        return Manifest.new(self.slug, self.spec.frames_per_scene())

    def _read_manifest(self, allow_other_scenes: bool = False) -> Optional[Manifest]:
        if not self.manifest_path.is_file():
            return None
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{self.manifest_path}: cannot be read ({exc}); "
                             "move it away to start this film over") from exc
        manifest = Manifest.from_json(text, str(self.manifest_path))
        if not allow_other_scenes and len(manifest.scenes) != len(self.spec.scenes):
            raise InputError(f"{self.manifest_path}: does not match the film's scenes; move it away to start over")
        return manifest

    def save_manifest(self, later: bool = False) -> None:
        """``later``: once at the next :meth:`settle`, beside the writes in flight (as the records stand
        then: a frame put later is in it once it is on disk)."""
        if later:
            self.manifest_due = True
            return
        self.put(self.manifest_path, self.manifest.to_json().encode())

    def write_spec(self, spec: FilmSpec, timeline: Optional[dict[str, Any]] = None) -> None:
        """film.yaml: the resolved spec (with the timeline, once the film is cut)."""
        self.publish(write_film_yaml(self.path, spec, timeline))

    # --- every write goes through here: the local folder, and the remote store if any --------

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def put(self, path: Path, data: bytes, later: bool = False, then: Callable[[], None] = lambda: None) -> None:
        """Write ``path`` atomically (and to the remote store), then call ``then`` (what records it).
        ``later``: in a writer thread; on disk, and ``then`` called, once :meth:`settle` returns.
        Never put the same path later twice before a settle."""
        if later:
            self.defer(lambda: self.put(path, data), then)
            return
        atomic_write(path, data)
        self.publish(path, data)
        then()

    def defer(self, write: Callable[[], None], then: Callable[[], None]) -> None:
        """``write()`` in a writer thread; ``then()`` in this one, at the next :meth:`settle`."""
        if self.writers is None:
            self.writers = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="farm-store")
        self.pending.append((self.writers.submit(write), then))

    def settle(self, stop: bool = False) -> None:
        """Wait until every write put later is on disk and recorded (in this thread: the manifest is
        never touched by a writer thread); the first that failed raises its error, unrecorded.
        ``stop``: and let the writer threads go (a later put starts them again)."""
        if self.manifest_due:  # one manifest write a settle: two in flight could land out of order
            self.manifest_due = False
            self.put(self.manifest_path, self.manifest.to_json().encode(), later=True)
        pending, self.pending = self.pending, []
        errors = [future.exception() for future, _ in pending]  # every one waited for, even after a failure
        if stop and self.writers is not None:
            self.writers.shutdown(wait=True)
            self.writers = None
        for (_, then), error in zip(pending, errors):
            if error is None:
                then()
        for error in errors:
            if error is not None:
                raise error

    def publish(self, path: Path, data: Optional[bytes] = None) -> None:
        """A file made in the local folder goes to the remote store too."""
        if self.remote:
            self.remote.put(self.relative(path), path.read_bytes() if data is None else data)
            self.sent.add(self.relative(path))

    def publish_new(self) -> None:
        """Every file made in the local folder since it was opened (segments, the film, subtitles,
        posters) goes to the remote store too."""
        if self.remote:
            self.sent.update(self.remote.publish_since(self.root, self.path, self.opened_at, self.sent))

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        if self.remote:
            self.remote.delete(self.relative(path))

    # --- scenes and frames -----------------------------------------------------------------

    def scene_dir(self, index: int) -> Path:
        return scene_dir(self.path, index)

    def frame_path(self, scene: int, frame: int) -> Path:
        return frame_path(self.path, scene, frame)

    def scene(self, index: int) -> SceneRecord:
        return self.manifest.scenes[index]

    def has_frame(self, scene: int, frame: int) -> bool:
        return self.frame_path(scene, frame).is_file()

    def write_frame(self, scene: int, frame: int, png: bytes, node: Optional[str] = None, rewrite: bool = True,
                    later: bool = False) -> None:
        digest = hashlib.sha256(png).hexdigest()[:16]

        def record() -> None:
            self.scene(scene).frame_written(frame, digest, node)

        if rewrite:
            self.put(self.frame_path(scene, frame), png, later, record)
        else:
            record()

    def scene_complete(self, index: int) -> bool:
        """Done in the manifest, and every frame still on disk."""
        record = self.scene(index)
        return record.state == "done" and all(self.has_frame(index, f) for f in range(record.frames_expected))

    # --- arrays: latents between jobs, renderer states of scenes in progress ------------------

    def write_arrays(self, scene: int, name: str, arrays: dict[str, np.ndarray], later: bool = False,
                     then: Callable[[], None] = lambda: None) -> None:
        path = self.scene_dir(scene) / f"{name}.npz"

        def write() -> None:
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            self.put(path, buffer.getvalue())

        if later:  # the arrays are packed in the writer thread too: the caller must not change them
            self.defer(write, then)
        else:
            write()
            then()

    def read_arrays(self, scene: int, name: str) -> Optional[dict[str, np.ndarray]]:
        path = self.scene_dir(scene) / f"{name}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return {key: data[key] for key in data.files}
        except (OSError, ValueError) as exc:  # a state cut short: the scene starts over
            raise InputError(f"{path}: cannot be read ({exc}); remove it to render that part again") from exc

    def write_state(self, scene: int, frame: int, state: dict[str, np.ndarray], later: bool = False) -> None:
        """The renderer state after ``frame``: the scene can continue from the frame after it."""
        def record() -> None:
            self.scene(scene).state_frame = frame

        self.write_arrays(scene, "state", {**state, FRAME_KEY: np.asarray(frame)}, later, record)

    def read_state(self, scene: int) -> Optional[tuple[int, dict[str, np.ndarray]]]:
        """(frame, state) for a scene in progress whose frames up to ``frame`` are all on disk."""
        arrays = self.read_arrays(scene, "state")
        if arrays is None or FRAME_KEY not in arrays:
            return None
        frame = int(arrays.pop(FRAME_KEY))
        if not all(self.has_frame(scene, f) for f in range(frame + 1)):
            return None
        return frame, arrays

    def clear_state(self, scene: int) -> None:
        self.remove(self.scene_dir(scene) / "state.npz")
        self.scene(scene).state_frame = None

    def summary(self) -> str:
        """What the folder holds: scenes done, and scenes part-done at frame k."""
        done, partial = [], []
        for record in self.manifest.scenes:
            if self.scene_complete(record.index):
                done.append(record.index)
            elif (state := self.read_state(record.index)) is not None:  # the state file, newer than the manifest
                partial.append(f"scene {record.index + 1} at frame {state[0] + 1}/{record.frames_expected}")
        text = f"{len(done)}/{len(self.manifest.scenes)} scenes done"
        return text + (f"; part-done: {', '.join(partial)}" if partial else "; none part-done")


FRAME_KEY = "__farm_frame"
