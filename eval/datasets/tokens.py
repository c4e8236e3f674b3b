"""Prompts longer than the CLIP text encoders take: said once per run, in a warning and a report note.

SD1.5's text encoder and the CLIP score's both read 77 tokens (start, at most 75 tokens of text, end); every method
and metric truncates a longer prompt silently, so a run conditions on (and scores against) less than the prompt
says. The count uses CLIP's BPE vocabulary (open_clip's ``SimpleTokenizer``, the same vocabulary as SD1.5's
``CLIPTokenizer``), loaded only when some prompt could be that long: a token covers at least one byte.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

CONTEXT = 77  # tokens the CLIP text encoders read, start and end included
TEXT_TOKENS = CONTEXT - 2


@functools.lru_cache(maxsize=1)
def _bpe():
    """open_clip's tokenizer module on its own: importing the ``open_clip`` package (its models) takes seconds,
    the tokenizer file needs only its vocabulary."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = f"{spec.submodule_search_locations[0]}/tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("_live2diff_bench_clip_bpe", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def token_count(prompt: str) -> int | None:
    """Text tokens of ``prompt`` (start and end not counted); None when the tokenizer is unavailable."""
    tok = _bpe()
    return None if tok is None else len(tok.encode(prompt))


def long_prompt_note(prompts: Iterable[tuple[str, str]]) -> str | None:
    """The report note (also logged once as a warning) for the ``(video, prompt)`` pairs whose prompt is truncated,
    or None when none is."""
    long = []
    for video, prompt in prompts:
        if len(prompt.encode("utf-8")) <= TEXT_TOKENS:  # fewer bytes than the limit: fewer tokens too
            continue
        n = token_count(prompt)
        if n is not None and n > TEXT_TOKENS:
            long.append(f"{video} ({n + 2} tokens)")
    if not long:
        return None
    shown = ", ".join(long[:10]) + (f" and {len(long) - 10} more" if len(long) > 10 else "")
    note = (
        f"prompts of {len(long)} video(s) are longer than the CLIP text encoder's {CONTEXT} tokens and are truncated "
        f"to their first {TEXT_TOKENS} (by every method's text encoder and by the CLIP score): {shown}"
    )
    log.warning("%s", note)
    return note
