"""StreamV2V's feature-bank self-attention: one batched call over the stream batch's rows vs the former Python loop
(one attention call per row), measured in one run on this machine.

    python benchmarks/streamv2v_attention.py [--tokens 1024] [--dim 320] [--rows 3] [--repeats 30] [--threads 1]

The layer is an SD1.5-sized spatial self-attention (``--dim`` channels, 8 heads, ``--tokens`` query tokens: 1024 =
the first UNet level at 256x256); each of ``--rows`` rows (one per denoising step) reads a bank of one merged frame
of ``--tokens`` tokens, with feature fusion on. Both paths give the same numbers (checked here); the figure is the
median time per processor call over ``--repeats`` calls, and the ratio loop / batched.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _smoke import add_smoke_flag, apply_smoke  # noqa: E402

from baselines.streamv2v import BankEntry, FeatureBank, FeatureBankAttnProcessor, nearest_features  # noqa: E402


class LoopProcessor(FeatureBankAttnProcessor):
    """The former implementation: attention and fusion one row at a time (kept here as the baseline)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        heads, rows = attn.heads, []
        for r in range(query.shape[0]):
            banked = self.bank.get(self.name, self.bank.steps[r])
            k = torch.cat([key[r]] + [e.keys for e in banked])
            v = torch.cat([value[r]] + [e.values for e in banked])
            q = query[r].view(1, -1, heads, query.shape[-1] // heads).transpose(1, 2)
            k = k.view(1, -1, heads, k.shape[-1] // heads).transpose(1, 2)
            v = v.view(1, -1, heads, v.shape[-1] // heads).transpose(1, 2)
            o = F.scaled_dot_product_attention(q, k, v)
            rows.append(o.transpose(1, 2).reshape(-1, heads * o.shape[-1]))
        out = attn.to_out[1](attn.to_out[0](torch.stack(rows)))
        fused = []
        for r in range(out.shape[0]):
            banked = self.bank.get(self.name, self.bank.steps[r])
            x = out[r]
            if self.fuse and banked:
                nn = nearest_features(x, torch.cat([e.outputs for e in banked]), self.threshold)
                x = (1 - self.strength) * x + self.strength * nn
            fused.append(x)
        return torch.stack(fused)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=320)
    ap.add_argument("--rows", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    add_smoke_flag(ap)
    args = apply_smoke(ap, ap.parse_args(), dict(tokens=16, dim=32, repeats=2))
    torch.set_num_threads(args.threads)
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=args.dim, heads=8, dim_head=args.dim // 8).eval()
    bank = FeatureBank(size=1, update="fifo")
    for step in range(args.rows):
        bank.add("l", step, BankEntry(*(torch.randn(args.tokens, args.dim) for _ in range(3))), index=0)
    bank.steps, bank.indices, bank.write = list(range(args.rows)), [0] * args.rows, [False] * args.rows
    x = torch.randn(args.rows, args.tokens, args.dim)
    procs = {
        "batched": FeatureBankAttnProcessor("l", bank, fuse=True, strength=0.8, threshold=0.98),
        "loop": LoopProcessor("l", bank, fuse=True, strength=0.8, threshold=0.98),
    }
    results, outs = {}, {}
    with torch.no_grad():
        for _ in range(3):  # interleaved warm-up
            for name, p in procs.items():
                attn.set_processor(p)
                outs[name] = attn(x)
        times = {name: [] for name in procs}
        for _ in range(args.repeats):  # interleaved: both see the same machine state
            for name, p in procs.items():
                attn.set_processor(p)
                t0 = time.perf_counter()
                attn(x)
                times[name].append(time.perf_counter() - t0)
    torch.testing.assert_close(outs["batched"], outs["loop"], atol=1e-5, rtol=1e-4)
    for name, ts in times.items():
        results[name] = {"median_ms": statistics.median(ts) * 1e3, "min_ms": min(ts) * 1e3}
    ratio = results["loop"]["median_ms"] / results["batched"]["median_ms"]
    report = {
        "settings": vars(args) | {"out": str(args.out)},
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "results": results,
        "loop_over_batched": ratio,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "streamv2v_attention.json").write_text(json.dumps(report, indent=2))
    md = [
        "# StreamV2V feature-bank attention: batched vs per-row loop",
        "",
        f"`python benchmarks/streamv2v_attention.py` — {args.rows} rows x {args.tokens} tokens x {args.dim} "
        f"channels, bank of one frame per row, fusion on, {args.threads} thread(s), median of {args.repeats} "
        f"interleaved calls, {platform.platform()}, torch {torch.__version__}. Same outputs (checked).",
        "",
        "| path | median ms / call | min ms |",
        "|---|---|---|",
        *[f"| {n} | {r['median_ms']:.2f} | {r['min_ms']:.2f} |" for n, r in results.items()],
        "",
        f"loop / batched = **{ratio:.2f}x**",
        "",
    ]
    (args.out / "streamv2v_attention.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
