"""Story -> scenes offline, and the CLIP prompt-length check."""

from __future__ import annotations

import pytest

from farm.errors import SpecError
from farm.spec import spec_from_dict
from farm.writing.plan import CLIP_MAX_TOKENS, clip_token_count, fit_prompt, plan_film, split_story

STORY = ("In a drop of meltwater, a tardigrade wakes. Its legs are covered in long white fur, thick as a yeti's coat. "
         "It paddles through the cold water! Snow falls above it like a slow storm of stars. "
         "It climbs onto a moss leaf and looks out over the frozen valley. Then it sleeps again.")


def test_split_story_keeps_every_sentence_in_order():
    scenes = split_story(STORY)
    assert len(scenes) >= 2
    assert " ".join(s.narration for s in scenes) == " ".join(STORY.split())
    for scene in scenes:
        assert clip_token_count(scene.visual_prompt) <= CLIP_MAX_TOKENS


def test_plan_fills_in_scenes_from_the_story():
    """Sentences are grouped until a scene reads for 5 s at 2.5 words a second (farm.spec), and each
    scene lasts its reading time, rounded to 0.1 s, at least 2 s. By hand, words per sentence:
    8 + 13 = 21 (8.4 s) | 6 + 10 = 16 (6.4 s) | 13 (5.2 s) | 4 (1.6 s, so 2 s)."""
    spec = plan_film(spec_from_dict({"title": "t", "story": {"text": STORY}}))
    assert [s.narration for s in spec.scenes] == [
        "In a drop of meltwater, a tardigrade wakes. Its legs are covered in long white fur, thick as a yeti's coat.",
        "It paddles through the cold water! Snow falls above it like a slow storm of stars.",
        "It climbs onto a moss leaf and looks out over the frozen valley.",
        "Then it sleeps again.",
    ]
    assert [s.duration for s in spec.scenes] == [8.4, 6.4, 5.2, 2.0]  # written out, not left to the reading rule


def test_fit_prompt_cuts_long_text_to_75_tokens():
    long = " ".join(["tardigrade"] * 200)
    assert clip_token_count(long) > CLIP_MAX_TOKENS
    assert 0 < clip_token_count(fit_prompt(long)) <= CLIP_MAX_TOKENS


def test_too_long_prompt_is_an_error_naming_the_scene():
    spec = spec_from_dict({"title": "t", "scenes": [{"narration": "ok"}, {"narration": "ok", "prompt": "yeti " * 90}]})
    with pytest.raises(SpecError, match=r"^scenes\[1\]\.prompt: is \d+ CLIP tokens long"):
        plan_film(spec)


def test_story_without_sentences_is_an_error():
    with pytest.raises(SpecError, match=r"^story\.text:"):
        plan_film(spec_from_dict({"title": "t", "story": {"text": "   ...   "}}))


def test_prompt_tokens_are_counted_as_open_clips_tokenizer_counts_them():
    """farm's torch-free count against open_clip's own tokenizer, on prompts of every kind."""
    from open_clip.tokenizer import _tokenizer

    from farm.spec import load_spec

    from conftest import EXAMPLE

    texts = [s.visual_prompt for s in load_spec(EXAMPLE).scenes] + [
        "a cat", "A  CAT\tin   the\nsnow", "", "   ", "don't stop: it's 3.14159 o'clock!!!",
        "ユキタルディグラダ、氷河の雪どけ水の中で", "Ça café naïve façade — «quotes» & more",
        "&amp;lt;b&amp;gt; html &eacute;", "emoji 🐻‍❄️ and ✨✨✨", "snake_case-and-kebab-case/with/slashes",
        "<start_of_text>marked<end_of_text>", "supercalifragilisticexpialidocious " * 5, "x" * 300,
    ]
    assert [clip_token_count(t) for t in texts] == [len(_tokenizer.encode(t)) for t in texts]
    # By hand: two whole words in CLIP's vocabulary are two tokens; nothing is none.
    assert clip_token_count("a cat") == 2 and clip_token_count("  ") == 0


def test_counting_prompt_tokens_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from farm.writing.plan import clip_token_count; "
            "n = clip_token_count('a furry white yeti tardigrade'); print(n, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(clip_token_count("a furry white yeti tardigrade")), "False"]
