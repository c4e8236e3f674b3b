"""The gate's yardsticks: fixed workloads timed beside each method, whose time the method's is divided by.

A ratio cancels a change of the machine's speed only as far as the yardstick is slowed like the method. A neighbour
streaming memory slows a network of many small kernels over a few MB of weights and activations (cache misses,
allocator, dispatch) far more than a matrix product that lives in the core's L2; a ratio of the one to the other
then moves by tens of percent with the neighbours (`benchmarks/results/gate_power*.md`). So each gated method is
divided by the yardstick that resembles its work (``gate.calibration`` / ``gate.calibrations``):

* ``matmul`` — a 3x3 convolution and chained 192x192 matrix products (under 1 ms on one CPU core): compute-bound
  methods (``busy``) and microsecond ones (``identity``).
* ``products`` — chained 256x256 matrix products (about 1 ms): compute-bound methods whose operands leave L2.
* ``unet`` — :class:`UNetLike`, a frozen random network with the op mix and the sizes of one streaming step of a
  tiny latent video-diffusion model at 64x64 px: a pixel encoder (convolutions, 64 -> 8 px), a three-level UNet at
  8x8 latents over three stream-batch rows (GroupNorm-SiLU-conv residual blocks, spatial self- and
  cross-attention, feed-forward, temporal attention over a 16-frame key cache) and a pixel decoder (8 -> 64 px).
  Nothing is imported from any method's package: the yardstick stays fixed whatever the methods become.

Changing either workload changes what every ratio means: bump :data:`eval.gate.reference.CALIBRATION_VERSION`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MatmulCalibration:
    """A fixed tensor workload (a 3x3 convolution and matrix products, under 1 ms on one CPU core)."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        g = torch.Generator().manual_seed(1234)
        self.x = torch.rand(1, 16, 64, 64, generator=g).to(self.device)
        self.w = (torch.randn(16, 16, 3, 3, generator=g) / 12).to(self.device)
        self.a = (torch.randn(192, 192, generator=g) / 14).to(self.device)

    @torch.inference_mode()
    def __call__(self) -> float:
        y = torch.nn.functional.conv2d(self.x, self.w, padding=1)
        m = self.a
        for _ in range(6):
            m = m @ self.a
        return float(y.mean() + m[0, 0])  # reading a value synchronises the device


class ProductsCalibration:
    """Chained products of 256x256 matrices (three per call, about 1 ms on one CPU core): the work of a
    compute-bound method whose operands spill out of the core's L2 (``busy``'s kind), which the ``matmul``
    yardstick's L2-resident products and small convolution do not share."""

    def __init__(self, device: str | torch.device = "cpu", size: int = 256, chain: int = 3) -> None:
        self.device = torch.device(device)
        g = torch.Generator().manual_seed(4321)
        self.a = (torch.randn(size, size, generator=g) / size**0.5).to(self.device)
        self.b = (torch.randn(size, size, generator=g) / size**0.5).to(self.device)
        self.chain = chain

    @torch.inference_mode()
    def __call__(self) -> float:
        x = self.a
        for _ in range(self.chain):
            x = torch.mm(x, self.b)
        return float(x[0, 0])  # reading a value synchronises the device


class _Res(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int = 8):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.n2, self.c2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.emb = nn.Linear(4 * 32, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.c1(F.silu(self.n1(x))) + self.emb(F.silu(emb))[:, :, None, None]
        return self.skip(x) + self.c2(F.silu(self.n2(h)))


class _Spatial(nn.Module):
    """Self-attention, cross-attention to a [77, 32] context, GEGLU feed-forward (a transformer block)."""

    def __init__(self, c: int, heads: int = 4, ctx: int = 32):
        super().__init__()
        self.heads = heads
        self.norm_in, self.proj_in, self.proj_out = nn.GroupNorm(8, c), nn.Linear(c, c), nn.Linear(c, c)
        self.n1, self.n2, self.n3 = nn.LayerNorm(c), nn.LayerNorm(c), nn.LayerNorm(c)
        self.qkv, self.o1 = nn.Linear(c, 3 * c, bias=False), nn.Linear(c, c)
        self.q2, self.kv2, self.o2 = (
            nn.Linear(c, c, bias=False),
            nn.Linear(ctx, 2 * c, bias=False),
            nn.Linear(c, c),
        )
        self.ff1, self.ff2 = nn.Linear(c, 8 * c), nn.Linear(4 * c, c)

    def _attn(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, n, c = q.shape
        h = self.heads
        split = lambda t: t.reshape(b, -1, h, c // h).transpose(1, 2)  # noqa: E731
        return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, n, c)

    def forward(self, x: Tensor, ctx: Tensor) -> Tensor:
        b, c, hh, ww = x.shape
        t = self.proj_in(self.norm_in(x).flatten(2).transpose(1, 2))
        q, k, v = self.qkv(self.n1(t)).chunk(3, dim=-1)
        t = t + self.o1(self._attn(q, k, v))
        k, v = self.kv2(ctx).chunk(2, dim=-1)
        t = t + self.o2(self._attn(self.q2(self.n2(t)), k, v))
        a, gate = self.ff1(self.n3(t)).chunk(2, dim=-1)
        t = t + self.ff2(a * F.gelu(gate))
        return x + self.proj_out(t).transpose(1, 2).reshape(b, c, hh, ww)


class _Temporal(nn.Module):
    """Each pixel of each row attends to 16 cached keys/values (a uni-directional temporal attention step)."""

    def __init__(self, c: int, heads: int = 4, window: int = 16, rows: int = 3, hw: int = 64):
        super().__init__()
        self.heads, self.d = heads, c // heads
        self.norm, self.n1 = nn.GroupNorm(8, c), nn.LayerNorm(c)
        self.proj_in, self.proj_out = nn.Linear(c, c), nn.Linear(c, c)
        self.q, self.k, self.v, self.o = (nn.Linear(c, c, bias=False) for _ in range(4))
        g = torch.Generator().manual_seed(c)
        self.register_buffer("keys", torch.randn(rows * hw, heads, window, self.d, generator=g))
        self.register_buffer("values", torch.randn(rows * hw, heads, window, self.d, generator=g))

    def forward(self, x: Tensor) -> Tensor:
        b, c, hh, ww = x.shape
        t = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(b * hh * ww, 1, c))
        n = self.n1(t)
        q, k, v = self.q(n), self.k(n), self.v(n)
        rows = q.shape[0]
        self.keys[:rows, :, -1] = k.view(rows, self.heads, self.d)  # the call's own entry
        self.values[:rows, :, -1] = v.view(rows, self.heads, self.d)
        o = F.scaled_dot_product_attention(
            q.view(rows, self.heads, 1, self.d), self.keys[:rows], self.values[:rows]
        ).reshape(rows, 1, c)
        t = t + self.o(o)
        return x + self.proj_out(t).reshape(b, hh, ww, c).permute(0, 3, 1, 2)


class UNetLike(nn.Module):
    """A frozen, random-weight stand-in for one streaming step of a tiny latent video-diffusion model at 64x64 px
    (see the module docstring); ~0.4 M parameters."""

    def __init__(self, rows: int = 3, chans: tuple[int, int, int] = (32, 64, 64)):
        super().__init__()
        c0, c1, c2 = chans
        self.enc = nn.ModuleList(
            [nn.Conv2d(3, 8, 3, padding=1)] + [nn.Conv2d(8, 8, 3, stride=2, padding=1) for _ in range(3)]
        )
        self.enc_out = nn.Conv2d(8, 4, 3, padding=1)
        self.dec_in = nn.Conv2d(4, 8, 3, padding=1)
        self.dec = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1) for _ in range(3)])
        self.dec_out = nn.Conv2d(8, 3, 3, padding=1)
        self.time = nn.Sequential(nn.Linear(32, 128), nn.SiLU(), nn.Linear(128, 128))
        self.conv_in = nn.Conv2d(4, c0, 3, padding=1)
        self.down = nn.ModuleList(
            [
                nn.ModuleList([_Res(c0, c0), _Spatial(c0), _Temporal(c0, rows=rows, hw=64)]),
                nn.ModuleList([_Res(c0, c1), _Spatial(c1), _Temporal(c1, rows=rows, hw=16)]),
                nn.ModuleList([_Res(c1, c2), _Spatial(c2), _Temporal(c2, rows=rows, hw=4)]),
            ]
        )
        self.downsample = nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1) for c in (c0, c1)])
        self.mid = _Res(c2, c2)
        self.up = nn.ModuleList(
            [
                nn.ModuleList([_Res(c2 + c2, c2), _Spatial(c2), _Temporal(c2, rows=rows, hw=4)]),
                nn.ModuleList([_Res(c2 + c1, c1), _Spatial(c1), _Temporal(c1, rows=rows, hw=16)]),
                nn.ModuleList([_Res(c1 + c0, c0), _Spatial(c0), _Temporal(c0, rows=rows, hw=64)]),
            ]
        )
        self.conv_out = nn.Conv2d(c0, 4, 3, padding=1)
        g = torch.Generator().manual_seed(4321)
        for p in self.parameters():
            p.data.copy_(torch.randn(p.shape, generator=g) * (0.5 / max(1, p[0].numel()) ** 0.5))
        self.requires_grad_(False).eval()
        self.register_buffer("image", torch.rand(1, 3, 64, 64, generator=g))
        self.register_buffer("ctx", torch.randn(rows, 77, 32, generator=g))
        self.register_buffer("tfreq", torch.randn(rows, 32, generator=g))
        self.rows = rows

    def forward(self) -> Tensor:
        x = self.image
        for conv in self.enc:
            x = F.silu(conv(x))
        z = self.enc_out(x).expand(self.rows, -1, -1, -1)  # the stream batch: one new frame + older rows
        emb = self.time(self.tfreq)
        h = self.conv_in(z)
        skips = []
        for i, (res, spatial, temporal) in enumerate(self.down):
            h = temporal(spatial(res(h, emb), self.ctx))
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for i, (res, spatial, temporal) in enumerate(self.up):
            if i:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = temporal(spatial(res(torch.cat([h, skips.pop()], dim=1), emb), self.ctx))
        x = self.dec_in(self.conv_out(h)[:1])
        for conv in self.dec:
            x = F.silu(conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))
        return self.dec_out(x)


class UNetCalibration:
    """One forward of :class:`UNetLike` (a few ms on one CPU core) per call."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.net = UNetLike().to(self.device)

    @torch.inference_mode()
    def __call__(self) -> float:
        return float(self.net()[0, 0, 0, 0])  # reading a value synchronises the device


CALIBRATIONS: dict[str, Callable[[str | torch.device], Callable[[], float]]] = {
    "matmul": MatmulCalibration,
    "unet": UNetCalibration,
    "products": ProductsCalibration,
}
