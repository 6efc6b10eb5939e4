"""Anti-aliased signed-distance drawing in torch, batched over frames.

A shape is a function from pixel coordinates to a signed distance (negative
inside) in canvas units, with per-frame parameters of shape [T, 1, 1]. Its
coverage of a pixel is `clamp(0.5 - sdf / pixel, 0, 1)`, which anti-aliases
edges over one pixel. Each shape is evaluated only inside its bounding box
(the union over frames), which is what makes drawing ~60 shapes per frame
cheap on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Sdf = Callable[[Tensor, Tensor], Tensor]  # (x [1, h, w], y [1, h, w]) -> [T, h, w]
Color = Tensor | tuple[float, float, float] | Callable[[Tensor, Tensor], Tensor]


def _p(v: Tensor | float) -> Tensor:
    """Per-frame parameter [T] (or scalar) -> [T, 1, 1] for broadcasting over pixels."""
    t = torch.as_tensor(v, dtype=torch.float32)
    return t.view(-1, 1, 1)


def circle(cx: Tensor | float, cy: Tensor | float, r: Tensor | float) -> Sdf:
    return lambda x, y: torch.hypot(x - _p(cx), y - _p(cy)) - _p(r)


def ellipse(
    cx: Tensor | float,
    cy: Tensor | float,
    rx: Tensor | float,
    ry: Tensor | float,
    angle: Tensor | float = 0.0,
) -> Sdf:
    """An ellipse with half axes rx, ry rotated by angle (radians)."""

    def sdf(x: Tensor, y: Tensor) -> Tensor:
        c, s = torch.cos(_p(angle)), torch.sin(_p(angle))
        dx, dy = x - _p(cx), y - _p(cy)
        return ellipse_distance(c * dx + s * dy, -s * dx + c * dy, _p(rx), _p(ry))

    return sdf


def ellipse_distance(u: Tensor, v: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Approximate signed distance to an axis-aligned ellipse (first-order: k (k - 1) / |grad k|).

    Accurate near the boundary, which is all anti-aliasing needs. Far from a very
    flat ellipse (a closed mouth's cavity has height 0) the first-order estimate
    collapses toward 0, so it is bounded below by the distance to the bounding
    box, which the true distance never undercuts.
    """
    a, b = a.clamp_min(1e-7), b.clamp_min(1e-7)
    k = torch.hypot(u / a, v / b)
    grad = torch.hypot(u / (a * a), v / (b * b)).clamp_min(1e-9)
    box_distance = torch.maximum(u.abs() - a, v.abs() - b)
    return torch.maximum(k * (k - 1) / grad, box_distance)


def capsule(
    ax: Tensor | float, ay: Tensor | float, bx: Tensor | float, by: Tensor | float, r: Tensor | float
) -> Sdf:
    """A segment a-b thickened by radius r."""

    def sdf(x: Tensor, y: Tensor) -> Tensor:
        pax, pay = x - _p(ax), y - _p(ay)
        bax, bay = _p(bx) - _p(ax), _p(by) - _p(ay)
        h = ((pax * bax + pay * bay) / (bax * bax + bay * bay).clamp_min(1e-12)).clamp(0, 1)
        return torch.hypot(pax - bax * h, pay - bay * h) - _p(r)

    return sdf


def box(cx: Tensor | float, cy: Tensor | float, hx: float, hy: float, rounding: float = 0.0) -> Sdf:
    def sdf(x: Tensor, y: Tensor) -> Tensor:
        qx = (x - _p(cx)).abs() - (hx - rounding)
        qy = (y - _p(cy)).abs() - (hy - rounding)
        outside = torch.hypot(qx.clamp_min(0), qy.clamp_min(0))
        return outside + torch.maximum(qx, qy).clamp_max(0) - rounding

    return sdf


def convex_polygon(points: Tensor, rounding: float = 0.0) -> Sdf:
    """Convex polygon with vertices points [T, n, 2] in either winding, grown by `rounding`.

    The distance is the largest signed distance to an edge line: exact inside,
    a slight under-estimate beyond corners, which rounding hides.
    """

    def sdf(x: Tensor, y: Tensor) -> Tensor:
        a = points
        b = torch.roll(points, -1, dims=1)
        edge = b - a
        normal = torch.stack((edge[..., 1], -edge[..., 0]), -1)
        normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        centroid = points.mean(dim=1, keepdim=True)
        # Orient normals outward whatever the winding.
        sign = torch.sign(((a - centroid) * normal).sum(-1, keepdim=True)).clamp_min(0) * 2 - 1
        normal = normal * sign
        offset = (normal * a).sum(-1)  # [T, n]
        d = normal[..., 0, None, None] * x[:, None] + normal[..., 1, None, None] * y[:, None]
        return (d - offset[..., None, None]).amax(dim=1) - rounding

    return sdf


def intersect(*sdfs: Sdf) -> Sdf:
    def sdf(x: Tensor, y: Tensor) -> Tensor:
        out = sdfs[0](x, y)
        for other in sdfs[1:]:
            out = torch.maximum(out, other(x, y))
        return out

    return sdf


class PixelGrid:
    """Pixel-centre coordinates of a W x H image in canvas units, and shape coverage on them."""

    def __init__(self, frames: int, width: int, height: int) -> None:
        self.frames, self.width, self.height = frames, width, height
        self.pixel = 1.0 / height  # canvas units per pixel
        self.x = (torch.arange(width, dtype=torch.float32) + 0.5 - width / 2) / height  # [W]
        self.y = (torch.arange(height, dtype=torch.float32) + 0.5) / height  # [H]

    def coverage(
        self, sdf: Sdf, bbox: tuple[float, float, float, float]
    ) -> tuple[slice, slice, Tensor] | None:
        """(rows, cols, coverage [T, h, w]) of a shape inside its bounding box, None if off-image."""
        x0, y0, x1, y1 = bbox
        j0 = max(0, int(x0 * self.height + self.width / 2) - 1)
        j1 = min(self.width, int(x1 * self.height + self.width / 2) + 2)
        i0 = max(0, int(y0 * self.height) - 1)
        i1 = min(self.height, int(y1 * self.height) + 2)
        if j0 >= j1 or i0 >= i1:
            return None
        rows, cols = slice(i0, i1), slice(j0, j1)
        x = self.x[cols].view(1, 1, -1)
        y = self.y[rows].view(1, -1, 1)
        cov = (0.5 - sdf(x, y) / self.pixel).clamp(0, 1)
        return rows, cols, cov.expand(self.frames, -1, -1)


class Canvas(PixelGrid):
    """T frames of W x H RGB in [0, 1], plus a label map of which part covers each pixel."""

    def __init__(self, frames: int, width: int, height: int, background: Tensor) -> None:
        """background: [T, 3, H, W] or anything that broadcasts to it."""
        super().__init__(frames, width, height)
        self.image = torch.empty(frames, 3, height, width)
        self.image[:] = background
        self.labels = torch.zeros(frames, height, width, dtype=torch.uint8)

    def fill(self, sdf: Sdf, bbox: tuple[float, float, float, float], color: Color, label: int) -> None:
        """Paint `sdf` over the image inside bbox (x0, y0, x1, y1 in canvas units, union over frames)."""
        covered = self.coverage(sdf, bbox)
        if covered is None:
            return
        rows, cols, cov = covered
        if callable(color):
            paint = color(self.x[cols].view(1, 1, -1), self.y[rows].view(1, -1, 1))  # [T|1, 3, h, w]
        else:
            paint = torch.as_tensor(color, dtype=torch.float32).view(-1, 3, 1, 1)
        region = self.image[:, :, rows, cols]
        self.image[:, :, rows, cols] = region + cov[:, None] * (paint - region)
        self.labels[:, rows, cols] = torch.where(cov > 0.5, label, self.labels[:, rows, cols])


def bbox_of(points: Tensor, margin: float) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of points [..., 2] over all frames, grown by margin."""
    flat = points.reshape(-1, 2)
    lo, hi = flat.min(dim=0).values, flat.max(dim=0).values
    return (float(lo[0]) - margin, float(lo[1]) - margin, float(hi[0]) + margin, float(hi[1]) + margin)
