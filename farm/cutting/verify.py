"""Read a stitched film back with PyAV and hold it against its timeline: a wrong file is an error."""

from __future__ import annotations

from pathlib import Path

from farm.cutting.timeline import Timeline
from farm.errors import StitchError

CODEC_NAMES = {"h264": "h264", "h265": "hevc"}


def verify_film(path: Path, timeline: Timeline, size: int, codec: str, audio: bool, subtitles: bool) -> dict:
    """Check frame count, fps, size, codec, duration and streams; returns what was read."""
    import av

    def wrong(message: str) -> StitchError:
        return StitchError(f"{path}: ffmpeg made a wrong film: {message}")

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise wrong(f"it cannot be read ({exc})") from exc
    with container:
        if len(container.streams.video) != 1:
            raise wrong(f"{len(container.streams.video)} video streams, expected 1")
        video = container.streams.video[0]
        found = {
            "codec": video.codec_context.name,
            "size": (video.width, video.height),
            # The stream's declared rate. The average rate is frames over the muxed duration, which
            # the muxer may shorten by a few ticks when audio is interleaved (12.0002 for 12).
            "fps": video.base_rate or video.guessed_rate or video.average_rate,
            "audio": len(container.streams.audio),
            "subtitles": len(container.streams.subtitles),
        }
        if found["codec"] != CODEC_NAMES[codec]:
            raise wrong(f"video codec {found['codec']}, expected {CODEC_NAMES[codec]}")
        if found["size"] != (size, size):
            raise wrong(f"{video.width}x{video.height} pixels, expected {size}x{size}")
        if found["fps"] != timeline.fps:
            raise wrong(f"{found['fps']} frames per second, expected {timeline.fps}")
        if found["audio"] != int(audio):
            raise wrong(f"{found['audio']} audio streams, expected {int(audio)}")
        if found["subtitles"] != int(subtitles):
            raise wrong(f"{found['subtitles']} subtitle streams, expected {int(subtitles)}")
        frames, last_end = 0, 0.0
        audio_end = 0.0
        streams = [video] + list(container.streams.audio)
        for packet in container.demux(*streams):
            if packet.pts is None or packet.size == 0:
                continue
            end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            if packet.stream.type == "video":
                frames += 1
                last_end = max(last_end, end)
            else:
                audio_end = max(audio_end, end)
        found.update(frames=frames, seconds=last_end, audio_seconds=audio_end if audio else None)
    if frames != timeline.total:
        raise wrong(f"{frames} frames, the timeline has {timeline.total}")
    frame = 1 / timeline.fps
    if abs(last_end - timeline.duration) > frame / 2:
        raise wrong(f"video lasts {last_end:.3f} s, the timeline {timeline.duration:.3f} s")
    if audio and abs(audio_end - timeline.duration) > frame + 0.05:
        raise wrong(f"audio lasts {audio_end:.3f} s, the video {timeline.duration:.3f} s")
    return found
