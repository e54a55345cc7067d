"""Pieces of the film, each encoded once, then joined by stream copy.

A film is a row of pieces in timeline order: each scene's *body* (its frames
less those inside crossfades), and between scenes a *transition* piece (a
crossfade of the end of scene k with the start of scene k+1, or the morph's
bridge frames). A body is encoded as soon as its scene is complete, a
transition as soon as both its neighbours are; the film is then one ffmpeg
call that copies every piece (each starts on a keyframe) and adds the audio
and subtitle tracks.

A piece's file name carries a hash of everything it is made of (frame files'
sizes and times, encoding settings, burned text), so ``farm stitch`` with
other settings re-encodes only what changed.

ffmpeg runs in a private working folder whose entries have fixed, safe names
(``in0`` -> the frames' folder, ``cues.ass``): neither a path nor a subtitle's
text ever appears inside a filter graph.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from farm.cutting.subtitles import Cue, clip_cues, make_ass
from farm.cutting.tools import ffmpeg_timeout, file_arg, run_ffmpeg
from farm.folder.layout import temp_beside

CODECS = {"h264": "libx264", "h265": "libx265"}


@dataclass(frozen=True)
class Source:
    """Frames ``start .. start+count`` of a folder's sequence, the last frame repeated past its end."""

    folder: Path
    pattern: str  # ffmpeg image2 pattern, e.g. frame_%05d.png
    rendered: int  # frames on disk
    start: int
    count: int

    def plan(self) -> tuple[int, int, int]:
        """(first file, files read, copies of the last added)."""
        if self.start < self.rendered:
            read = min(self.start + self.count, self.rendered) - self.start
            return self.start, read, self.count - read
        return self.rendered - 1, 1, self.count - 1

    def files(self) -> list[Path]:
        first, read, _ = self.plan()
        return [self.folder / (self.pattern % i) for i in range(first, first + read)]


@dataclass(frozen=True)
class Piece:
    name: str  # body-003, xfade-003-004, morph-003-004
    sources: tuple[Source, ...]  # one, or two for a crossfade
    frames: int
    start: int  # first frame on the film's timeline

    @property
    def crossfade(self) -> bool:
        return len(self.sources) == 2


@dataclass(frozen=True)
class Encoding:
    fps: int
    size: int  # the frames' side, as rendered
    display_size: int  # the film's side, as played: the frames are scaled to it (Lanczos)
    codec: str
    crf: int
    preset: str
    pix_fmt: str

    def args(self) -> list[str]:
        args = ["-c:v", CODECS[self.codec], "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", self.pix_fmt,
                "-r", str(self.fps), "-an"]
        if self.codec == "h265":
            args += ["-x265-params", "log-level=error"]
        return args


def piece_key(piece: Piece, encoding: Encoding, burn: Sequence[Cue]) -> str:
    """A hash of what the piece is made of: frames (name, size, mtime), settings, burned cues."""
    signature = {
        "frames": piece.frames,
        "encoding": encoding.__dict__,
        "burn": [(c.start, c.end, c.text) for c in burn],
        "sources": [],
    }
    for source in piece.sources:
        stats = []
        for path in source.files():
            st = path.stat()
            stats.append((path.name, st.st_size, st.st_mtime_ns))
        signature["sources"].append({"plan": source.plan(), "files": stats})
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:12]


def encode_piece(piece: Piece, encoding: Encoding, burn: Sequence[Cue], out: Path, exe: str) -> Path:
    """Encode one piece into ``out`` (atomically): exactly ``piece.frames`` frames."""
    work = Path(tempfile.mkdtemp(prefix="farm-cut-"))
    try:
        inputs, chains = [], []
        for i, source in enumerate(piece.sources):
            os.symlink(source.folder.resolve(), work / f"in{i}")
            first, read, held = source.plan()
            inputs += ["-framerate", str(encoding.fps), "-start_number", str(first), "-i", f"in{i}/{source.pattern}"]
            chain = f"[{i}:v]trim=end_frame={read},setpts=PTS-STARTPTS"
            if held:
                chain += f",tpad=stop_mode=clone:stop={held}"
            chains.append(chain + f"[s{i}]")
        if piece.crossfade:
            seconds = f"{piece.frames / encoding.fps:.6f}"
            chains.append(f"[s0][s1]xfade=transition=fade:duration={seconds}:offset=0[m]")
            last = "m"
        else:
            last = "s0"
        tail = f"[{last}]"
        if encoding.display_size != encoding.size:  # before the subtitles, so their text is drawn at full size
            tail += f"scale={encoding.display_size}:{encoding.display_size}:flags=lanczos,"
        if burn:
            (work / "cues.ass").write_text(make_ass(burn, encoding.display_size, burn=True), encoding="utf-8")
            tail += "subtitles=filename=cues.ass,"
        chains.append(tail + f"format={encoding.pix_fmt}[v]")
        tmp = temp_beside(out.with_suffix(".mp4"))
        args = [*inputs, "-filter_complex", ";".join(chains), "-map", "[v]", "-frames:v", str(piece.frames),
                *encoding.args(), file_arg(tmp)]
        try:
            run_ffmpeg(exe, args, f"{piece.name}", cwd=work, timeout=ffmpeg_timeout(frames=piece.frames))
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def burned_cues(piece: Piece, cues: Sequence[Cue], fps: int) -> list[Cue]:
    return clip_cues(cues, piece.start / fps, (piece.start + piece.frames) / fps)


def join(pieces: Sequence[Path], out: Path, exe: str, codec: str, audio: Optional[Path] = None,
         subtitles: Optional[Path] = None) -> Path:
    """Pieces (all in one folder, safe names) -> ``out`` by stream copy, with audio and a soft track."""
    folder = pieces[0].parent
    listing = folder / f".film-{os.getpid()}.ffconcat"
    listing.write_text("ffconcat version 1.0\n" + "".join(f"file {p.name}\n" for p in pieces), encoding="utf-8")
    tmp = temp_beside(out)
    args = ["-f", "concat", "-safe", "0", "-i", file_arg(listing)]
    maps = ["-map", "0:v"]
    if audio is not None:
        args += ["-i", file_arg(audio)]
        maps += ["-map", f"{1}:a"]
    if subtitles is not None:
        args += ["-i", file_arg(subtitles)]
        maps += ["-map", f"{2 if audio is not None else 1}:s", "-c:s", "mov_text", "-metadata:s:s:0", "language=eng"]
    args += maps + ["-c:v", "copy", "-c:a", "copy"]
    if codec == "h265":
        args += ["-tag:v", "hvc1"]
    args += ["-movflags", "+faststart", file_arg(tmp)]
    try:
        inputs = [*pieces, *(f for f in (audio, subtitles) if f is not None)]
        run_ffmpeg(exe, args, f"the film {out}", timeout=ffmpeg_timeout(megabytes=megabytes(inputs)))
        os.replace(tmp, out)
    finally:
        listing.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out


def encode_audio(wav: Path, out: Path, exe: str) -> Path:
    tmp = temp_beside(out.with_suffix(".m4a"))
    try:
        run_ffmpeg(exe, ["-i", file_arg(wav), "-c:a", "aac", "-b:a", "96k", file_arg(tmp)], "the narration audio",
                   timeout=ffmpeg_timeout(megabytes=megabytes([wav])))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def megabytes(paths: Sequence[Path]) -> float:
    return sum(Path(p).stat().st_size for p in paths) / 1e6
