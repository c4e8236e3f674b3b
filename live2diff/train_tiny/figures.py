"""The pictures ``python -m live2diff.train_tiny`` writes: the loss curve beside the weights, and the strip of
each method's output on the default run's first clip (``--strip``)."""

from __future__ import annotations

from pathlib import Path

import torch

from eval.paths import CONF_DIR


def plot_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {
        "image": "image stage: epsilon MSE",
        "decoder": "decoder: L1 + LPIPS",
        "video": "video stage: epsilon MSE",
    }
    stages = [s for s in titles if any(h["stage"] == s for h in history)]
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.2), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rows = [h for h in history if h["stage"] == stage]
        ax.plot([h["step"] for h in rows], [h["loss"] for h in rows])
        ax.set_title(titles[stage])
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


STRIP_METHODS = ("per_frame_img2img", "streamdiffusion", "streamv2v", "animatediff_window", "live2diff")


def write_strip(
    path: str | Path, methods=STRIP_METHODS, frames=(0, 8, 12, 16, 20, 23), scale: int = 2
) -> None:
    """Input vs each method's output on the default run's first clip (synthetic_000, seed 42), with
    ``model=tiny``: one row per method, one column per frame, as a PNG (``--strip PATH``)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from PIL import Image, ImageDraw

    from eval.datasets.synthetic import generate_clip

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"method=[{','.join(methods)}]"])
    clip = generate_clip(24, 64, 64, seed=0).frames
    prompt = cfg.dataset.prompt_list[0]
    rows = [("input", clip)]
    for name in methods:
        m = instantiate(cfg.method[name])
        m.prepare(prompt, height=64, width=64, seed=int(cfg.seed))
        out = dict(p for i in range(clip.shape[0]) for p in m.push(i, clip[i]))
        out.update(m.flush())
        rows.append((name, torch.stack([out[i] for i in range(clip.shape[0])])))
    side, label_w = 64 * scale, 150
    img = Image.new("RGB", (label_w + side * len(frames), side * len(rows)), "white")
    draw = ImageDraw.Draw(img)
    for r, (name, video) in enumerate(rows):
        draw.text((4, r * side + side // 2 - 6), name, fill="black")
        for c, f in enumerate(frames):
            arr = (video[f].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            tile = Image.fromarray(arr).resize((side, side), Image.NEAREST)
            img.paste(tile, (label_w + c * side, r * side))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
