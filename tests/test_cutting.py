"""Cutting a film through the real ffmpeg binary, read back with PyAV: timeline, transitions,
subtitles (soft, burned, SRT, WebVTT), narration you can hear, contact sheet, verification."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from farm.cutting.film import FilmCutter, plan_cut
from farm.cutting.subtitles import Cue, make_vtt, srt_time, unescape_soft
from farm.cutting.timeline import make_timeline
from farm.cutting.tools import find_ffmpeg, run_ffmpeg
from farm.cutting.verify import verify_film
from farm.errors import NarrationError, SpecError, StitchError
from farm.folder.layout import scene_dir
from farm.spec import spec_from_dict

from conftest import decode_video, tiny_film

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
NASTY = "It's \"quoted\": [a] (b) {c} <d> back\\slash C:\\films 100% Ça été, ß — {\\fs80} \\N end"


# --- the timeline rule, computed by hand ------------------------------------------------------


def test_timeline_rule_by_hand():
    # Scenes of 4, 6 and 4 frames at 4 fps with 0.5 s transitions: t = 2 frames.
    cut = make_timeline([4, 6, 4], 4, "cut", 2)
    assert (cut.total, cut.first_frames()) == (14, [0, 4, 10])
    fade = make_timeline([4, 6, 4], 4, "crossfade", 2)
    assert (fade.total, fade.first_frames()) == (14 - 2 * 2, [0, 2, 6])
    assert fade.slots() == [(0, 2), (2, 6), (6, 10)]
    morph = make_timeline([4, 6, 4], 4, "morph", 2)
    assert (morph.total, morph.first_frames()) == (14 + 2 * 2, [0, 6, 14])
    assert morph.slots()[-1] == (14, 18)
    held = make_timeline([4, 6, 4], 4, "crossfade", 2, hold=[0, 3, 0])
    assert (held.total, held.first_frames()) == (13, [0, 2, 9])


def test_a_transition_longer_than_a_scene_names_the_scene():
    with pytest.raises(SpecError, match=r"^video.transition_seconds: scene 2 has 3 frames"):
        make_timeline([4, 3, 4], 4, "crossfade", 2)  # a middle scene needs 2 x 2 frames
    with pytest.raises(SpecError, match="scene 1 has 1 frames"):
        make_timeline([1, 4], 4, "morph", 2)
    make_timeline([1, 1], 4, "cut", 2)  # a cut has no length


def test_subtitle_formats_by_hand():
    assert srt_time(3723.5) == "01:02:03,500"
    vtt = make_vtt([Cue(0.5, 1.25, "a <b> & c")])
    assert vtt == "WEBVTT\n\n1\n00:00:00.500 --> 00:00:01.250\na &lt;b&gt; &amp; c\n"


@pytest.mark.parametrize("field,value", [("transition", "wipe"), ("codec", "vp9"), ("narration", "festival"),
                                         ("subtitles", "hard"), ("transition_seconds", -1), ("preset", "warp")])
def test_bad_video_settings_name_the_field(field, value):
    with pytest.raises(SpecError, match=f"^video.{field}: .*{re.escape(str(value))}"):
        spec_from_dict(tiny_film(video={field: value}))


# --- a tiny film of synthetic frames ----------------------------------------------------------


def write_scene(folder: Path, count: int, colour, name: str = "frame_{:05d}.png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = np.full((128, 128, 3), colour, np.uint8)
        image[:8, : 8 * (i + 1)] = 255  # a bar that grows: frames differ
        Image.fromarray(image).save(folder / name.format(i))


def cut_film(film_dir: Path, scenes=3, narrations=None, bridges=False, hold_to_fit=False, **video):
    data = tiny_film(scenes=scenes)
    data["video"] = {"fps": 4, "narration": "none", **video}  # otherwise the spec's own defaults
    for scene, text in zip(data["scenes"], narrations or []):
        scene["narration"] = text
    spec = spec_from_dict(data)
    messages = []
    plan = plan_cut(spec, find_ffmpeg(spec.video.ffmpeg), messages.append, film_dir=film_dir, bridges=bridges,
                    hold_to_fit=hold_to_fit)
    for k, count in enumerate(plan.spec.frames_per_scene()):
        write_scene(scene_dir(film_dir, k), count, COLOURS[k % 3])
        if bridges and k + 1 < scenes:
            write_scene(scene_dir(film_dir, k), plan.timeline.t, (250, 250, 0), "bridge_{:05d}.png")
    cutter = FilmCutter(plan, film_dir, find_ffmpeg(spec.video.ffmpeg), messages.append)
    for k in range(scenes):
        cutter.bridge_ready(k)
        cutter.scene_ready(k)
    return cutter.finish(), messages


def colour_of(frame) -> int:
    return int(np.argmax(frame[64:, :, :].reshape(-1, 3).mean(axis=0)))


def test_crossfade_overlaps_scenes(tmp_path):
    result, _ = cut_film(tmp_path / "film")  # the defaults: crossfade of 0.5 s, soft subtitles
    frames = decode_video(result.video)
    assert len(frames) == 3 * 4 - 2 * 2 == result.timeline.total == result.checked["frames"]
    assert result.checked["seconds"] == pytest.approx(2.0, abs=1e-3)
    # scene 0 alone, then a blend of red into green, ...
    assert [colour_of(f) for f in frames[:2]] == [0, 0]
    blend = frames[3][64:, :, :].reshape(-1, 3).mean(axis=0)  # xfade's second frame: half and half
    assert 80 < blend[0] < 150 and 80 < blend[1] < 150
    assert colour_of(frames[-1]) == 2
    assert result.timeline.first_frames() == [0, 2, 4]  # film.yaml gets it (farm.film, farm stitch)


@pytest.mark.parametrize("transition,total", [("cut", 12), ("morph", 16)])
def test_cut_and_morph(tmp_path, transition, total):
    result, _ = cut_film(tmp_path / "film", transition=transition, bridges=True)
    frames = decode_video(result.video)
    assert len(frames) == total
    assert result.checked["seconds"] == pytest.approx(total / 4, abs=1e-3)
    if transition == "morph":  # the bridge frames (yellow) sit between the scenes
        yellow = [i for i, f in enumerate(frames) if f[64:, :, 0].mean() > 200 and f[64:, :, 1].mean() > 200]
        assert yellow == [4, 5, 10, 11]


def test_morph_without_bridge_frames_falls_back_to_crossfade(tmp_path):
    result, messages = cut_film(tmp_path / "film", transition="morph")
    assert result.timeline.transition == "crossfade" and result.timeline.total == 8
    assert any("using crossfade" in m for m in messages)


def soft_texts(path):
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    # mov_text: a 16-bit length, then UTF-8 text (then style boxes)
    return [p[2: 2 + int.from_bytes(p[:2], "big")].decode() for p in packets]


def parse_srt(text):
    return [block.split("\n", 2)[2] for block in text.strip().split("\n\n")]


def test_subtitle_text_round_trips_in_every_form(tmp_path):
    texts = [NASTY, "Ärger über «Guillemets» & 'single' quotes", "50% : done; [end]"]
    film_dir = tmp_path / "a dir with 'quotes' and \"double\" and spaces"
    result, _ = cut_film(film_dir, narrations=texts)
    assert [unescape_soft(t) for t in soft_texts(result.video)] == texts
    assert parse_srt(result.srt.read_text(encoding="utf-8")) == texts
    vtt = result.vtt.read_text(encoding="utf-8")
    unescaped = [b.split("\n", 2)[2].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
                 for b in vtt.split("\n\n", 1)[1].strip().split("\n\n")]
    assert unescaped == texts
    # cues follow the timeline: scene 2 starts at frame 2 of a crossfaded film at 4 fps
    assert "00:00:00,500 --> 00:00:01,000" in result.srt.read_text()
    with av.open(str(result.video)) as container:
        starts = [float(p.pts * p.time_base) for p in container.demux(container.streams.subtitles[0]) if p.size]
    assert starts == [0.0, 0.5, 1.0]


def test_burned_subtitles_draw_nasty_text(tmp_path):
    film_dir = tmp_path / "it's a \"film\" dir, 100%"
    burned, _ = cut_film(film_dir, narrations=[NASTY, "%{pts} [in]; drawtext=text=x", "'; rm -rf /"],
                         subtitles="burn", transition="cut")
    with av.open(str(burned.video)) as container:
        assert len(container.streams.subtitles) == 0
    plain, _ = cut_film(tmp_path / "plain", subtitles="none", transition="cut")
    a, b = decode_video(burned.video), decode_video(plain.video)
    assert len(a) == len(b) == 12
    for i in (0, 5, 11):  # text is drawn at the bottom, nothing changes at the top
        assert np.abs(a[i][100:].astype(int) - b[i][100:]).mean() > 2
        assert np.abs(a[i][:40].astype(int) - b[i][:40]).mean() < 2


def test_h265_and_full_chroma(tmp_path):
    result, _ = cut_film(tmp_path / "film", codec="h265", pix_fmt="yuv444p", crf=30, subtitles="none")
    with av.open(str(result.video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "hevc" and stream.codec_context.pix_fmt == "yuv444p"
    assert len(decode_video(result.video)) == 8


def test_contact_sheet_and_poster(tmp_path):
    result, _ = cut_film(tmp_path / "film")
    with Image.open(result.contact) as sheet:
        assert sheet.size[0] >= 2 * 256 and sheet.size[1] >= 2 * 256
        pixels = np.asarray(sheet.convert("RGB"))
    # each scene's picture is on the sheet, in order
    assert pixels[140, 140].argmax() == 0 and pixels[140, 140 + 272].argmax() == 1
    with Image.open(result.poster) as cover:
        assert cover.size == (512, 512)


# --- narration ---------------------------------------------------------------------------------


def audio_of(path):
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
    return samples, rate


def test_espeak_narration_is_heard_and_timed(tmp_path):
    result, messages = cut_film(tmp_path / "film", narration="espeak")
    assert any("lengthened" in m for m in messages)  # 1 s scenes cannot say a sentence
    samples, rate = audio_of(result.video)
    assert len(samples) / rate == pytest.approx(result.timeline.duration, abs=0.1)
    assert result.checked["audio_seconds"] == pytest.approx(result.timeline.duration, abs=0.3)
    for start, end in result.timeline.slots():  # speech in every scene's slot
        part = samples[int(start / 4 * rate): int(end / 4 * rate)]
        assert np.sqrt(np.mean(part ** 2)) > 0.01
    # the film got longer than 3 x 1 s to fit three sentences
    assert result.timeline.total > 8


def tone_wav(seconds=0.6, rate=24000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()


@pytest.fixture
def speech_server():
    """A loopback server speaking OpenAI's POST /v1/audio/speech; fails for input "FAIL"."""
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append((self.path, body, self.headers.get("Authorization")))
            if body["input"] == "FAIL":
                payload = json.dumps({"error": {"message": "voice unavailable", "type": "server_error"}}).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
            elif body["input"] == "FLAC":  # a server answering in a format it was not asked for
                payload = flac_of(tone_wav())
                self.send_response(200)
                self.send_header("Content-Type", "audio/flac")
            else:
                payload = tone_wav()
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    server.shutdown()


def test_openai_narration_through_the_client(tmp_path, speech_server, monkeypatch):
    from farm.cutting.narration import speak_openai
    from farm.spec import VideoSpec

    url, requests = speech_server
    monkeypatch.setenv("FARM_TEST_TTS_KEY", "sk-test")
    # A server only the spec names gets no key (farm/keys.py) ...
    speak_openai("a yeti", VideoSpec(speech_base_url=url, speech_api_key_env="FARM_TEST_TTS_KEY"))
    assert requests.pop()[2] == "Bearer none"
    # ... one the user names does (here in the environment; --set video.speech_base_url does the same).
    monkeypatch.setenv("FARM_TRUSTED_ENDPOINTS", url)
    result, _ = cut_film(tmp_path / "film", scenes=2, narration="openai", speech_base_url=url, voice="nova",
                         speech_api_key_env="FARM_TEST_TTS_KEY", transition="cut")
    assert [r[0] for r in requests] == ["/v1/audio/speech"] * 2
    assert requests[0][1]["voice"] == "nova" and requests[0][1]["model"] == "tts-1"
    assert requests[0][1]["input"].startswith("Scene 1:") and requests[0][2] == "Bearer sk-test"
    samples, rate = audio_of(result.video)
    assert len(samples) / rate == pytest.approx(result.timeline.duration, abs=0.1)
    # the 0.6 s tone at the start of each 1 s scene, silence after it
    for k in range(2):
        assert np.sqrt(np.mean(samples[int((k + 0.1) * rate): int((k + 0.5) * rate)] ** 2)) > 0.1
        assert np.sqrt(np.mean(samples[int((k + 0.75) * rate): int((k + 0.95) * rate)] ** 2)) < 0.01


def flac_of(wav: bytes) -> bytes:
    from farm.cutting.tools import find_ffmpeg

    return subprocess.run([find_ffmpeg(), "-v", "error", "-f", "wav", "-i", "pipe:0", "-f", "flac", "pipe:1"],
                          input=wav, capture_output=True, check=True).stdout


def test_failing_or_missing_engines_are_one_line(tmp_path, speech_server, monkeypatch):
    url, _ = speech_server
    # Asked for WAV, answered in FLAC (ffmpeg would have read it, guessing): read as asked, refused.
    with pytest.raises(NarrationError, match=r"^video.narration: the narration of scene 1: the answer is not WAV"):
        cut_film(tmp_path / "flac", scenes=1, narrations=["FLAC"], narration="openai", speech_base_url=url)
    with pytest.raises(NarrationError,
                       match=r"^video.narration: openai text-to-speech at .* failed: .*voice unavailable"):
        cut_film(tmp_path / "a", scenes=1, narrations=["FAIL"], narration="openai", speech_base_url=url)
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng here
    with pytest.raises(NarrationError, match="^video.narration: espeak asked for, but espeak-ng is not installed"):
        cut_film(tmp_path / "b", narration="espeak")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result, messages = cut_film(tmp_path / "c", narration="auto")
    assert "narration: none" in messages[0] and result.checked["audio"] == 0
    assert not (scene_dir(tmp_path / "a", 0)).exists()  # nothing written when narration fails


# --- ffmpeg failures and wrong files -----------------------------------------------------------


def test_ffmpeg_missing_or_failing_is_one_line_with_its_words(tmp_path):
    with pytest.raises(StitchError, match="^video.ffmpeg: .* is not an executable ffmpeg"):
        find_ffmpeg(str(tmp_path / "no-ffmpeg"))
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho 'first line' >&2\necho 'Conversion failed: disk on fire' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(StitchError) as info:
        cut_film(tmp_path / "film", ffmpeg=str(fake))
    message = str(info.value)
    assert "\n" not in message and message.startswith("ffmpeg failed on")
    assert "disk on fire" in message


def test_a_hung_ffmpeg_or_speech_engine_is_stopped_in_one_line(tmp_path, monkeypatch):
    from farm.cutting import narration
    from farm.spec import VideoSpec

    # The real ffmpeg reading a minute of test pattern at its own pace (-re), given half a second.
    started = time.monotonic()
    with pytest.raises(StitchError, match=r"^ffmpeg timed out on the slow pattern: no result after 0.5s, stopped"):
        run_ffmpeg(find_ffmpeg(), ["-re", "-f", "lavfi", "-i", "testsrc=size=16x16:rate=10", "-t", "60",
                                   "-f", "null", "-"], "the slow pattern", timeout=0.5)
    assert time.monotonic() - started < 5
    monkeypatch.setattr(narration, "SPEECH_BASE_S", 0.5)
    monkeypatch.setattr(narration, "SPEECH_PER_CHAR_S", 0.0)
    # An espeak-ng that never answers ...
    fake = tmp_path / "espeak-ng"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(NarrationError, match=r"^video.narration: espeak-ng timed out: no speech after 0.5s for 7 "):
        narration.speak_espeak("a yeti.", "en")
    # ... and a speech server that takes the request and never answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        with pytest.raises(NarrationError, match=r"^video.narration: openai text-to-speech at .* failed: timed out"):
            narration.speak_openai("a yeti.", VideoSpec(speech_base_url=url))
    assert time.monotonic() - started < 10


def test_a_wrong_film_is_an_error(tmp_path):
    result, _ = cut_film(tmp_path / "film", subtitles="none")
    longer = make_timeline([4, 4, 5], 4, "crossfade", 2)
    with pytest.raises(StitchError, match=r"ffmpeg made a wrong film: 8 frames, the timeline has 9"):
        verify_film(result.video, longer, 128, "h264", audio=False, subtitles=False)
    with pytest.raises(StitchError, match="0 audio streams, expected 1"):
        verify_film(result.video, result.timeline, 128, "h264", audio=True, subtitles=False)
    with pytest.raises(StitchError, match="video codec h264, expected hevc"):
        verify_film(result.video, result.timeline, 128, "h265", audio=False, subtitles=False)


def test_stitching_again_holds_the_last_frame_to_fit_speech(tmp_path):
    result, messages = cut_film(tmp_path / "film", scenes=2, narration="espeak", hold_to_fit=True, transition="cut")
    assert any("holding their last frame" in m for m in messages)
    tl = result.timeline
    assert tl.frames == (4, 4) and all(h > 0 for h in tl.hold)
    frames = decode_video(result.video)
    assert len(frames) == 8 + sum(tl.hold)
    # scene 1's held frames repeat its last frame (the bar at full length for frame 3)
    held = frames[4: 4 + tl.hold[0]]
    assert all(np.abs(f.astype(int) - frames[3]).mean() < 2 for f in held)
    assert colour_of(frames[4 + tl.hold[0]]) == 1


def test_subtitle_text_cannot_forge_a_cue():
    from farm.cutting.subtitles import clean_text

    for text in ("a --> b", "a ---> b", "a ------> b", "a -\u002d-> b"):
        assert "-->" not in clean_text(text), text
    assert clean_text("a -> b") == "a -> b"
