"""CLIP text encoder and tokenizer (SD1.5's), and prompt encoding with the reference's clip skip."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from live2diff.components.weights import load_state_dict, require
from live2diff.convert import load_ldm_text_encoder


class OpenClipTokenizer:
    """SD1.x's CLIP tokenizer without files to fetch (the BPE vocabulary open_clip ships, which is OpenAI's):
    ``tok(["a cat"]) -> LongTensor[N, 77]``, ``<|startoftext|>`` + at most 75 tokens + ``<|endoftext|>``, padded
    with ``<|endoftext|>`` (49407) as SD1.x's ``CLIPTokenizer`` (``pad_token: <|endoftext|>``) pads — not with 0 as
    open_clip's own tokenizer does, which would change every conditioning token after the prompt."""

    SOT, EOT = 49406, 49407

    def __init__(self, context_length: int = 77):
        from open_clip.tokenizer import SimpleTokenizer

        self._tok = SimpleTokenizer(context_length=context_length)
        self.model_max_length = context_length

    def __call__(self, prompts: str | Sequence[str]) -> Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        n = self.model_max_length
        out = torch.full((len(prompts), n), self.EOT, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids = [self.SOT, *self._tok.encode(p)[: n - 2], self.EOT]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


class HFTokenizer:
    """A transformers ``CLIPTokenizer`` loaded from a local folder, padded to 77 like SD1.5's pipelines."""

    def __init__(self, tokenizer: Any):
        self._tok = tokenizer
        self.model_max_length = tokenizer.model_max_length

    def __call__(self, prompts: str | Sequence[str]) -> Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        return self._tok(
            list(prompts),
            padding="max_length",
            max_length=self.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids


def build_text(cfg: dict, base: Path | None):
    """``(CLIPTextModel, tokenizer)``: from the base's diffusers folder, its single file, or random (cfg sizes)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    if base is not None and base.is_dir():
        from transformers import CLIPTokenizer

        require(base / "text_encoder", "model.weights.base", "the 'text_encoder' subfolder")
        for name in ("vocab.json", "merges.txt"):
            require(
                base / "tokenizer" / name, "model.weights.base", f"the CLIP tokenizer file tokenizer/{name}"
            )
        te = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", local_files_only=True)
        tok = HFTokenizer(CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", local_files_only=True))
        return te, tok
    t = cfg["text_encoder"]
    te = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=int(t["hidden_size"]),
            intermediate_size=int(t["intermediate_size"]),
            num_hidden_layers=int(t["num_hidden_layers"]),
            num_attention_heads=int(t["num_attention_heads"]),
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=int(t["hidden_size"]),
        )
    )
    if base is not None:  # single file: the CLIP text weights live under cond_stage_model.transformer.
        load_ldm_text_encoder(load_state_dict(base, "model.weights.base"), te, base, "model.weights.base")
    return te, OpenClipTokenizer()


def with_clip_skip(comps: Any, clip_skip: int | None) -> Any:
    """``comps`` with a method's own ``clip_skip`` (None: keep the model config's ``model.clip_skip``).

    A method encodes prompts as its reference does: Live2Diff's configs take the penultimate layer (``clip_skip:
    2`` in the model config), StreamDiffusion / StreamV2V / diffusers' img2img / AnimateDiff call the text encoder
    without a skip (0: the final layer). A value the text encoder cannot give is refused naming the key."""
    if clip_skip is None:
        return comps
    te = comps.text_encoder
    n_layers = int(getattr(getattr(te, "config", None), "num_hidden_layers", 0) or 0)
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or clip_skip < 0:
        raise ValueError(f"clip_skip must be null (the model's) or an integer >= 0, got {clip_skip!r}")
    if n_layers and clip_skip >= n_layers:
        raise ValueError(
            f"clip_skip={clip_skip}: the text encoder has {n_layers} layers, so clip_skip must be < {n_layers} "
            "(0 = the final layer)"
        )
    if int(clip_skip) == int(comps.clip_skip or 0):
        return comps
    return dataclasses.replace(comps, clip_skip=int(clip_skip))


@torch.no_grad()
def encode_prompt(comps: Any, prompt: str | Sequence[str]) -> Tensor:
    """Text embeddings ``[N, 77, D]``.

    ``clip_skip`` follows the reference (and diffusers): ``k`` takes ``hidden_states[-(k + 1)]`` — the output of
    the layer ``k`` before the last — then CLIP's final layer norm; 0/None takes the last layer. The reference's
    style configs use ``clip_skip: 2``."""
    ids = comps.tokenizer(prompt).to(comps.device)
    te = comps.text_encoder
    if not comps.clip_skip:
        return te(ids)[0].to(comps.dtype)
    out = te(ids, output_hidden_states=True)
    h = out.hidden_states[-(comps.clip_skip + 1)]
    return getattr(te, "text_model", te).final_layer_norm(h).to(comps.dtype)
