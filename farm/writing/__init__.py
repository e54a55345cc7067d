"""Seed phrase -> story -> scenes.

    llm.py      the openai client: any OpenAI-compatible server, retries, one-line errors, tolerant JSON
    story.py    candidate stories from a phrase: prompts, saving, choosing
    scenes.py   story -> scenes by the LLM: chunks, JSON schema, prompts condensed to fit CLIP
    plan.py     the offline splitter, the CLIP token check, plan_film
    steps.py    farm story and farm plan as files

Nothing here imports Ray or torch at import time; open_clip's tokenizer is
imported when a prompt is first counted.
"""
