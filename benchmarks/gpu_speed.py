"""Speed of every method where users run it: `model=sd15` shapes (random weights), 512x512, a 2-step
``t_index_list``, TAESD + depth, float16 on one GPU; eager and compiled (the steady stream call's UNet compiled
whole, ``fullgraph=True``, replayed as a CUDA graph) side by side, and Live2Diff with channels-last on and off.

Per method and mode, in one process (methods built one at a time, freed before the next):

* **steady-state FPS**: frames emitted per second over ``--frames`` pushes after the method's warm-up
  (``steady_state_frames`` + 2 pushes, untimed; compilation happens there), pushed as fast as the method takes them;
* **end-to-end latency p50 / p95**: for each frame pushed in the timed window, from the start of its push to the end
  of the push that emitted it, device synchronised and the frame copied to the CPU (pipeline lag included);
* **peak memory**: ``torch.cuda.max_memory_allocated`` over build + run (CPU: the process's peak RSS, process-wide);
* **MFU**: FLOPs per emitted frame, counted with ``torch.utils.flop_counter.FlopCounterMode`` over ``--flop-pushes``
  more steady-state pushes (matmuls, convolutions, attention; eager model), x FPS / the card's dense fp16 peak
  (``--peak-tflops`` overrides; none on CPU).

A row that fails records the first line of its error as its status (and prints it) and the run goes on; with
``--budget-s`` no row starts after that many seconds (rows run in priority order, see :data:`PRIORITY`), so one
prepared GPU call (``benchmarks/gpu_prepare.sh`` here, ``bash benchmarks/gpu_run.sh`` there) fits its minutes.

    python benchmarks/gpu_speed.py                      # GPU: sd15 shapes, 512^2, float16, every method
    python benchmarks/gpu_speed.py --smoke              # CPU: tiny model, 32^2, float32, 3 methods (~1-2 min)
    python benchmarks/gpu_speed.py --plan               # writes the table with every row open (no run)

Writes benchmarks/results/gpu_speed.{json,md} (``--smoke``: benchmarks/results/smoke/gpu_speed_smoke.{json,md}).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's code, not an installed copy

RESULTS = ROOT / "benchmarks" / "results"
SKIP = {"busy"}  # the latency gate's synthetic test subject, not a method
# dense fp16/bf16 tensor-core peaks (no sparsity), TFLOP/s, matched against torch.cuda.get_device_name()
PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
               "A100": 312.0, "L40S": 362.1, "RTX 4090": 165.2, "A10G": 125.0, "L4": 121.0}  # fmt: skip


def all_methods() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml") if p.stem not in SKIP)


def method_config(name: str, args, compiled: bool, channels_last: bool = False, extra: tuple[str, ...] = ()):
    from hydra import compose, initialize_config_dir

    over = [
        f"model={args.model}",
        f"hardware={args.hardware}",
        f"hardware.dtype={args.dtype}",
        f"method=[{name}]",
        *extra,
    ]
    if args.threads:
        over.append(f"hardware.threads={args.threads}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=over)
    mcfg = cfg.method[name]
    if "t_index_list" in mcfg:
        mcfg.t_index_list = list(args.t_index_list)
    if channels_last:
        if "channels_last" not in mcfg:
            return None
        mcfg.channels_last = True
    if compiled and "compile" in mcfg:
        mcfg.compile = False  # compiled below, with this script's backend / fullgraph settings
    return mcfg


def compile_method(m, args) -> str | None:
    """Compile the method's steady stream call (Live2Diff: ``stream.compile``; the latent baselines:
    ``compile``); None when the method has nothing to compile. CUDA graphs on CUDA (``reduce-overhead``)."""
    target = getattr(getattr(m, "stream", None), "compile", None) or getattr(m, "compile", None)
    if target is None or not callable(target):
        return None
    kw = {"backend": args.compile_backend, "fullgraph": not args.allow_graph_breaks}
    if args.compile_backend == "inductor":
        kw["cuda_graphs"] = args.cuda_graphs
    target(**kw)
    return "fullgraph" if kw["fullgraph"] else "graph breaks allowed"


def clip(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """A smooth moving pattern, ``[n, 3, size, size]`` in [0, 1] on the CPU (where a user's frames arrive)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, max(size // 8, 1), max(size // 8, 1), generator=g)
    base = torch.nn.functional.interpolate(base[None], size=(size, size), mode="bilinear")[0]
    return torch.stack([torch.roll(base, shifts=(i, 2 * i), dims=(1, 2)) for i in range(n)]).clamp(0, 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(args, device: torch.device) -> float | None:
    if args.peak_tflops:
        return float(args.peak_tflops)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def measure(
    name: str, args, compiled: bool, channels_last: bool = False, extra: tuple[str, ...] = (), label: str = ""
) -> dict:
    """One row; any exception becomes the row's status (its first line), so one broken row does not stop the run.
    ``extra``: Hydra overrides of this row (the authors' comparison: the same weights folder as theirs)."""
    row = {"method": name, "mode": mode_name(compiled, channels_last) + label, "_extra": extra}
    t0 = time.perf_counter()
    try:
        return _measure(name, args, compiled, channels_last, row)
    except Exception as e:  # noqa: BLE001 - the row records the failure and the run goes on
        first = (str(e).strip().splitlines() or [""])[0][:300]
        row.pop("_extra", None)
        return {**row, "status": f"error: {type(e).__name__}: {first}", "row_s": time.perf_counter() - t0}
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def mode_name(compiled: bool, channels_last: bool) -> str:
    return ("compiled" if compiled else "eager") + (" + channels_last" if channels_last else "")


def _measure(name: str, args, compiled: bool, channels_last: bool, row: dict) -> dict:
    from hydra.utils import instantiate
    from torch.utils.flop_counter import FlopCounterMode

    from eval.interface import method_steady_state_frames

    t_row = time.perf_counter()
    mcfg = method_config(name, args, compiled, channels_last, row.pop("_extra", ()))
    if mcfg is None:
        return {**row, "status": "n/a (no channels_last option)"}
    device = torch.device(str(mcfg.get("device", "cpu")) if "device" in mcfg else args.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    m = instantiate(mcfg, _convert_="all")
    build_s = time.perf_counter() - t0
    graph = None
    if compiled:
        graph = compile_method(m, args)
        if graph is None:
            del m
            return {**row, "status": "n/a (nothing to compile)"}
    warm = method_steady_state_frames(m) + 2
    frames = clip(warm + args.frames + args.flop_pushes, args.size)
    m.prepare("a watercolor painting of a street", height=args.size, width=args.size, seed=42)
    push_t: dict[int, float] = {}
    emit_t: dict[int, float] = {}
    step_s: list[float] = []
    with torch.inference_mode():
        t0 = time.perf_counter()
        for i in range(warm):  # untimed: warm-up, pipeline fill, compilation
            m.push(i, frames[i])
        sync(device)
        warm_s = time.perf_counter() - t0
        start = time.perf_counter()
        for i in range(warm, warm + args.frames):
            t = time.perf_counter()
            push_t[i] = t
            out = m.push(i, frames[i])
            for _, o in out:
                o.float().cpu()  # the one device-to-host copy per emitted frame (synchronises)
            sync(device)
            now = time.perf_counter()
            step_s.append(now - t)
            for j, _ in out:
                emit_t[j] = now
        elapsed = time.perf_counter() - start
        emitted = len(emit_t)
        flops = None
        if not compiled and args.flop_pushes:  # more steady-state pushes, counted (eager: the compiled graph does the same math)
            counter, counted = FlopCounterMode(display=False), 0
            with counter:
                for i in range(warm + args.frames, warm + args.frames + args.flop_pushes):
                    counted += len(m.push(i, frames[i]))
            sync(device)
            flops = counter.get_total_flops() / counted if counted else None  # per emitted frame
    lat = sorted(emit_t[i] - push_t[i] for i in push_t if i in emit_t)
    comps = getattr(m, "components", None)
    dtypes = {}
    for part in ("unet", "vae", "depth", "depth_mapper"):  # fp16 TAESD / depth when hardware.dtype is float16
        p = next(getattr(comps, part).parameters(), None) if getattr(comps, part, None) is not None else None
        if p is not None:
            dtypes[part] = str(p.dtype).removeprefix("torch.")
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; process-wide
    del m
    gc.collect()

    def pct(q: float) -> float | None:
        return statistics.quantiles(lat, n=100, method="inclusive")[q - 1] * 1e3 if len(lat) >= 2 else None

    return {
        **row,
        "status": "ok",
        "device": str(device),
        "fps": emitted / elapsed if elapsed > 0 else None,
        "push_ms_median": statistics.median(step_s) * 1e3,
        "latency_ms_p50": pct(50),
        "latency_ms_p95": pct(95),
        "latency_n": len(lat),
        "peak_mem_MiB": peak_mem,
        "peak_mem_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS",
        "flops_per_frame": flops,
        "component_dtypes": dtypes,
        "compile": graph,
        "build_s": build_s,
        "row_s": time.perf_counter() - t_row,
        "warmup_s": warm_s,
        "warmup_pushes": warm,
        "timed_pushes": args.frames,
        "emitted": emitted,
    }


def add_mfu(rows: list[dict], peak: float | None) -> None:
    flops = {r["method"]: r.get("flops_per_frame") for r in rows if r["mode"] == "eager" and r.get("flops_per_frame")}
    for r in rows:
        if "authors'" in r["mode"]:  # their code's FLOPs are not counted
            r["flops_per_frame"] = r["mfu"] = None
            continue
        f = flops.get(r["method"]) if r.get("status") == "ok" else None
        r["flops_per_frame"] = f
        ok = r.get("status") == "ok" and f and peak and r.get("fps")
        r["mfu"] = f * r["fps"] / (peak * 1e12) if ok else None


def fmt(v, spec: str = ".1f", missing: str = "—") -> str:
    return missing if v is None else format(v, spec)


def markdown(result: dict) -> str:
    a = result["args"]
    open_rows = result["open"]
    head = [
        "# Speed where users run it: every method, eager and compiled",
        "",
        f"`model={a['model']}` shapes (random weights), {a['size']}x{a['size']}, t_index_list {a['t_index_list']}, "
        f"TAESD + depth, {a['dtype']}, `hardware={a['hardware']}`; {a['frames']} timed pushes per row after each "
        "method's warm-up; one process, methods built one at a time.",
        "",
        f"Device: {result['device_name']}. torch {result['torch']}. Peak used for MFU: "
        f"{fmt(result['peak_tflops'], '.1f', 'none')} TFLOP/s.",
        "",
    ]
    if open_rows:
        head += [
            "**GPU rows open: not run yet.** No GPU was available to the session that wrote this script; every row "
            "below is to be filled by `python benchmarks/gpu_speed.py` on the card (the table is rewritten with the "
            "card named). Goal for `live2diff` on one H100: >= 60 FPS and end-to-end p95 <= 40 ms (the reference "
            "reports 16.43 FPS on an RTX 4090 with TensorRT, 6.91 without).",
            "",
        ]
    if result.get("smoke"):
        head += [
            "**Smoke run on a CPU** (tiny model): proves the script end to end; the figures say nothing about a GPU.",
            "",
        ]
    lines = [
        "| method | mode | FPS | e2e p50 ms | e2e p95 ms | peak mem MiB | GFLOP/frame | MFU | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        f = r.get("flops_per_frame")
        lines.append(
            f"| {r['method']} | {r['mode']} | {fmt(r.get('fps'))} | {fmt(r.get('latency_ms_p50'))} "
            f"| {fmt(r.get('latency_ms_p95'))} | {fmt(r.get('peak_mem_MiB'), '.0f')} "
            f"| {fmt(None if f is None else f / 1e9, '.2f')} | {fmt(r.get('mfu'), '.1%')} | {r.get('status', '')} |"
        )
    ref = {r["mode"]: r for r in result["rows"] if r["method"] == "streamdiffusion" and r.get("status") == "ok"}
    ours, theirs = ref.get("eager, same weights as authors'"), ref.get("authors' code, eager")
    if ours and theirs:
        lines += ["", f"StreamDiffusion, ours / authors' on this device (same weights folder, eager both): FPS "
                  f"{ours['fps'] / theirs['fps']:.2f}x, e2e p95 {theirs['latency_ms_p95'] / ours['latency_ms_p95']:.2f}x "
                  "(> 1: ours faster). TensorRT (the authors' fast path) is out of reach: no TensorRT wheels."]  # fmt: skip
    tail = [
        "",
        "FPS: frames emitted per second in steady state. End-to-end latency: push of a frame to the end of the push "
        "that emitted it (device synchronised, frame on the CPU), so a stream batch's pipeline lag is included. "
        "Peak memory: "
        + ("CUDA max allocated per row." if not result.get("smoke") else "process peak RSS (CPU).")
        + " FLOPs per emitted frame: `--flop-pushes` further steady-state pushes counted on the eager model "
        "(matmuls, convolutions, attention), divided by the frames they emitted; used for both modes. Compiled: the steady stream call's UNet "
        "compiled whole (`fullgraph=True`, temporal attention inside: `Live2DiffStream.compile` / "
        "`LatentStreamMethod.compile`; backend " + a.get("compile_backend", "inductor") + ", CUDA "
        "graphs on CUDA); methods without that option show n/a.",
        "",
        f"Command: `{result['command']}`",
        "",
    ]
    return "\n".join(head + lines + tail)


# -- the authors' code on the same device ---------------------------------------------------------------------------
NARROW_SD15 = ["model.unet.block_out_channels=[32,32,32,32]", "model.unet.layers_per_block=1",
               "model.unet.norm_num_groups=16", "model.unet.cross_attention_dim=32",
               "model.text_encoder.hidden_size=32", "model.text_encoder.intermediate_size=64",
               "model.text_encoder.num_attention_heads=2", "model.text_encoder.num_hidden_layers=3"]  # fmt: skip


def reference_weights(args, root: Path) -> dict[str, Path]:
    """One random SD1.5 diffusers folder + TAESD folder in the published layouts (``--smoke``: narrow widths), that
    each side loads with its own loader: the same weights for ours and theirs."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from live2diff.testing import fixtures as fx

    over = ["model=sd15", *(NARROW_SD15 if args.smoke else [])]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        model = OmegaConf.to_container(compose("config", overrides=over).model, resolve=True)
    widths = fx.widths_of(model)
    if args.smoke:
        widths |= {"vae_block_out_channels": [32, 32, 32, 32], "taesd_channels": [16, 16, 16, 16]}
    return {"base": fx.write_sd15_folder(root / "sd15", widths, seed=1),
            "taesd": fx.write_taesd_folder(root / "taesd", widths, seed=4),
            "narrow": NARROW_SD15 if args.smoke else []}  # fmt: skip


def authors_streamdiffusion(args, weights: dict) -> dict:
    """The authors' StreamDiffusion (``streamdiffusion==0.1.1``, installed ``--no-deps``) as their img2img wrapper
    sets it up (TAESD, frame_buffer_size 1, denoising batch, cfg self, guidance 1.2), timed like our rows: their
    ``__call__`` on CUDA (its own event timing and synchronisation included, as users run it); on the CPU the same
    steps without the CUDA events. Eager: their code has no torch.compile path (TensorRT is theirs: no wheels)."""
    row = {"method": "streamdiffusion", "mode": "authors' code, eager"}
    t_row = time.perf_counter()
    try:
        import streamdiffusion.pipeline as sdp
        from diffusers import AutoencoderTiny, StableDiffusionPipeline
    except ImportError as e:
        return {**row, "status": f"not run: {e} (benchmarks/gpu_prepare.sh carries streamdiffusion)"}
    try:
        device = torch.device(args.device)
        dtype = getattr(torch, args.dtype)
        pipe = StableDiffusionPipeline.from_pretrained(
            weights["base"], safety_checker=None, requires_safety_checker=False, local_files_only=True,
            torch_dtype=dtype,
        ).to(device)  # fmt: skip
        pipe.vae = AutoencoderTiny.from_pretrained(weights["taesd"], local_files_only=True, torch_dtype=dtype).to(device)
        pipe.set_progress_bar_config(disable=True)
        stream = sdp.StreamDiffusion(
            pipe, t_index_list=list(args.t_index_list), torch_dtype=dtype, width=args.size, height=args.size,
            do_add_noise=True, use_denoising_batch=True, frame_buffer_size=1, cfg_type="self",
        )  # fmt: skip
        stream.prepare("a watercolor painting of a street", num_inference_steps=50, guidance_scale=1.2, delta=1.0)
        n = len(args.t_index_list)

        def call(frame):
            if device.type == "cuda":
                out = stream(frame.to(device))
            else:  # their __call__ without torch.cuda.Event
                x = stream.image_processor.preprocess(frame[None], args.size, args.size).to(device, dtype)
                out = stream.decode_image(stream.predict_x0_batch(stream.encode_image(x))).detach().clone()
            return stream.image_processor.postprocess(out, output_type="pt")[0].float().cpu()

        warm = n + 2
        frames = clip(warm + args.frames + n - 1, args.size)
        push_t, emit_t, step_s = {}, {}, []
        with torch.inference_mode():
            for i in range(warm):
                call(frames[i])
            sync(device)
            start = time.perf_counter()
            for i in range(warm, warm + args.frames + n - 1):
                t = time.perf_counter()
                if i < warm + args.frames:
                    push_t[i] = t
                call(frames[i])  # returns frame i - (n - 1): their stream batch's lag
                sync(device)
                now = time.perf_counter()
                if i < warm + args.frames:
                    step_s.append(now - t)
                emit_t[i - (n - 1)] = now
            elapsed = sum(step_s)
        lat = sorted(emit_t[i] - push_t[i] for i in push_t if i in emit_t)

        def pct(q):
            return statistics.quantiles(lat, n=100, method="inclusive")[q - 1] * 1e3 if len(lat) >= 2 else None

        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        return {**row, "status": "ok", "device": str(device), "fps": args.frames / elapsed,
                "push_ms_median": statistics.median(step_s) * 1e3, "latency_ms_p50": pct(50),
                "latency_ms_p95": pct(95), "latency_n": len(lat), "peak_mem_MiB": peak,
                "timed_pushes": args.frames, "row_s": time.perf_counter() - t_row}  # fmt: skip
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [""])[0][:300]
        return {**row, "status": f"error: {type(e).__name__}: {first}", "row_s": time.perf_counter() - t_row}
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def reference_rows(args) -> list[dict]:
    """Ours and the authors' on the same weights folder, one after the other: StreamDiffusion (eager both; ours
    also compiled); Live2Diff's authors' pipeline is not wired yet (its oracle runner is benchmarks/reference/)."""
    import copy
    import tempfile

    args = copy.copy(args)
    args.model = "sd15"  # its structure (narrow widths in --smoke), the same for both sides
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            weights = reference_weights(args, Path(tmp))
        except Exception as e:  # noqa: BLE001
            first = (str(e).strip().splitlines() or [""])[0][:300]
            return [{"method": "streamdiffusion", "mode": "authors' code, eager", "status": f"error: {first}"}]
        extra = (f"model.weights.base={weights['base']}", f"model.weights.taesd={weights['taesd']}",
                 "model.weights.motion=random", "model.weights.lcm_lora=none", "model.depth.kind=none",
                 "method.streamdiffusion.similar_image_filter=false", *weights["narrow"])  # fmt: skip
        rows.append(measure("streamdiffusion", args, False, extra=extra, label=", same weights as authors'"))
        print(json.dumps(rows[-1], default=str), flush=True)
        rows.append(authors_streamdiffusion(args, weights))
        print(json.dumps(rows[-1], default=str), flush=True)
    rows.append({"method": "live2diff", "mode": "authors' code, eager",
                 "status": "not measured (the authors' pipeline runner is not wired into this script yet)"})  # fmt: skip
    return rows


# the rows that matter most come first: a run that reaches its --budget-s leaves the others open
PRIORITY = ("live2diff", "streamdiffusion", "streamv2v", "per_frame_img2img")
CHANNELS_LAST = ("live2diff",)  # also run with hardware.channels_last=true


def plan_rows(methods: list[str], args) -> list[tuple[str, bool, bool]]:
    """``(method, compiled, channels_last)`` in running order: the priority methods (eager, compiled, then their
    channels-last rows), then every other method eager, then those compiled."""
    first = [m for m in PRIORITY if m in methods]
    rest = [m for m in methods if m not in first]
    rows = []
    for m in first:
        rows += [(m, False, False), (m, True, False)]
        if m in CHANNELS_LAST:
            rows += [(m, False, True), (m, True, True)]
    rows += [(m, False, False) for m in rest] + [(m, True, False) for m in rest]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU, 64^2, float32, few rows (~1-2 min)")
    ap.add_argument("--plan", action="store_true", help="write the table with every row open, run nothing")
    ap.add_argument("--methods", nargs="*", default=None, help="default: every conf/method file but busy")
    ap.add_argument(
        "--compile-methods", nargs="*", default=None, help="default: every method with something to compile"
    )
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend (smoke: eager)")
    ap.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false", help="compiled without CUDA graphs")
    ap.add_argument("--allow-graph-breaks", action="store_true", help="compile with fullgraph=False")
    ap.add_argument("--budget-s", type=float, default=None, help="start no new row after this many seconds")
    ap.add_argument("--reference", action="store_true", help="also the authors' code on the same weights (first)")
    ap.add_argument("--model", default="sd15")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--hardware", default="cuda")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument(
        "--t-index-list", type=int, nargs="+", default=[30, 40], help="the reference demo's 2 steps"
    )
    ap.add_argument("--frames", type=int, default=60, help="timed pushes per row")
    ap.add_argument("--flop-pushes", type=int, default=16, help="pushes whose FLOPs are counted (eager)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    argv = " ".join(sys.argv[1:])
    if args.smoke:  # the same rows' code at toy sizes: a compiled row and a channels-last row, in about a minute
        args.model, args.size, args.hardware, args.dtype = "tiny", 32, "cpu", "float32"
        args.frames = min(args.frames, 4)
        args.flop_pushes = min(args.flop_pushes, 2)
        args.threads = args.threads or 1
        args.methods = args.methods or ["identity", "live2diff", "streamdiffusion"]
        if args.compile_methods is None:  # CPU code generation for the UNet takes many minutes: trace only
            args.compile_methods = ["streamdiffusion"]
            if args.compile_backend == "inductor":
                args.compile_backend = "eager"
        if args.out == RESULTS:  # never over the recorded figures (benchmarks/_smoke.py's rule)
            args.out = RESULTS / "smoke"
    args.device = "cuda" if args.hardware == "cuda" else "cpu"
    methods = args.methods or all_methods()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict] = []
    start = time.perf_counter()
    plan = plan_rows(methods, args)
    if args.reference:  # after our streamdiffusion rows (or first, without them): ours vs theirs, same weights
        at = max((i + 1 for i, r in enumerate(plan) if r[0] == "streamdiffusion"), default=0)
        plan.insert(at, ("reference", False, False))
    for name, compiled, cl in plan:
        if name == "reference":
            if args.plan:
                rows += [{"method": "streamdiffusion", "mode": "authors' code, eager", "status": "open"}]
            elif args.budget_s is not None and time.perf_counter() - start > args.budget_s:
                rows += [{"method": "streamdiffusion", "mode": "authors' code, eager", "status": "not run (budget)"}]
            else:
                rows += reference_rows(args)
            continue
        base = {"method": name, "mode": mode_name(compiled, cl)}
        if compiled and args.compile_methods is not None and name not in args.compile_methods:
            rows.append({**base, "status": "not run (--compile-methods)"})
            continue
        if args.plan:
            rows.append({**base, "status": "open"})
            continue
        if args.device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --smoke (CPU) or --plan (table with open rows)")
        spent = time.perf_counter() - start
        if args.budget_s is not None and spent > args.budget_s:
            rows.append({**base, "status": f"not run (budget: {spent:.0f} s of {args.budget_s:.0f} spent)"})
            continue
        rows.append(measure(name, args, compiled, cl))
        status = rows[-1].get("status", "")
        print(json.dumps(rows[-1], default=str), flush=True)
        if status.startswith("error"):
            print(f"ROW FAILED {name} {base['mode']}: {status}", file=sys.stderr, flush=True)
    device = torch.device(args.device)
    peak = None if args.plan else peak_tflops(args, device)
    add_mfu(rows, peak)
    if args.plan:
        device_name = "none (not run)"
    elif device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)"
    result = {
        "benchmark": "gpu_speed",
        "smoke": args.smoke,
        "open": args.plan,
        "args": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)},
        "device_name": device_name,
        "peak_tflops": peak,
        "torch": torch.__version__,
        "command": "python benchmarks/gpu_speed.py " + argv,
        "elapsed_s": None if args.plan else time.perf_counter() - start,
        "rows": rows,
    }
    stem = "gpu_speed_smoke" if args.smoke else "gpu_speed"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = markdown(result)
    (args.out / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
