"""Local shading: Lambert and Blinn-Phong with point / directional lights, spherical-harmonics lighting,
and shadow maps.

All shading functions are CHANNEL-LAST so that they work per pixel ([B,H,W,3], e.g. from a G-buffer)
and per vertex ([B,N,3], e.g. 3DMM fitting) alike: normals, points and albedo are [B,...,3] with the
batch first; lights hold [B,L,3] tensors (one set of L lights per batch element; [L,3] or [3] are
broadcast). Colours are linear RGB; nothing is clamped (clamp/tonemap when you write an image).

Radiometry: a light's `color` is the irradiance it delivers to a surface facing it, so Lambert gives
albedo * color * max(0, n.l); an ambient term adds albedo * ambient. Spherical-harmonics lighting uses
the 9 real orthonormal SH functions (bands 0-2) of Ramamoorthi & Hanrahan 2001, "An efficient
representation for irradiance environment maps"; `sh_shade` returns albedo * sum_k coeffs[k] * Y_k(n),
which is what 3DMM fitting (Face2Face, Deep3DFaceRecon) optimises, and `sh_irradiance` turns the SH
coefficients of an environment's radiance into these shading coefficients (clamped-cosine convolution
A_0 = pi, A_1 = 2pi/3, A_2 = pi/4) so that sh_shade == albedo * irradiance exactly for band-limited light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from neuralrender.errors import NeuralRenderError

__all__ = [
    "DirectionalLights",
    "PointLights",
    "lambert",
    "blinn_phong",
    "SH_CONSTANTS",
    "SH_LAMBERT_BANDS",
    "sh_basis",
    "sh_shade",
    "sh_irradiance",
    "sh_project",
    "sh_directional",
    "shadow_map",
    "shadow_lookup",
]


def _lights_tensor(x, name: str, ref: torch.Tensor | None = None) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32) if not torch.is_tensor(x) else x
    if ref is not None:
        t = t.to(device=ref.device, dtype=ref.dtype)
    if t.dim() == 1:
        t = t.view(1, 1, -1)
    elif t.dim() == 2:
        t = t.unsqueeze(1)
    if t.dim() != 3 or t.shape[-1] != 3:
        raise NeuralRenderError(f"lights: '{name}' must be [3], [B,3] or [B,L,3], got {tuple(t.shape)}")
    return t


def _bcast(t: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """[B,L,3] -> [B,1,...,1,L,3] to line up with points [B,...,3] (B may be 1 and broadcast)."""
    mid = points.dim() - 2
    return t.view(t.shape[0], *([1] * mid), t.shape[1], t.shape[2])


@dataclass
class DirectionalLights:
    """Lights at infinity. direction [B,L,3]: FROM the surface TOWARDS the light (normalised on use);
    color [B,L,3] (or [B,L,1]/[3]): irradiance on a surface facing the light. [3] and [B,3] inputs mean L=1."""

    direction: torch.Tensor
    color: torch.Tensor | float = 1.0

    def incident(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [B,...,3] -> (unit directions to the lights [B,...,L,3], irradiance [B,...,L,3])."""
        d = F.normalize(_lights_tensor(self.direction, "direction", points), dim=-1)
        c = _light_color(self.color, d)
        shape = (max(points.shape[0], d.shape[0]), *points.shape[1:-1], d.shape[1], 3)
        return _bcast(d, points).expand(shape), _bcast(c, points).expand(shape)

    def to(self, device) -> "DirectionalLights":
        return DirectionalLights(_to(self.direction, device), _to(self.color, device))


@dataclass
class PointLights:
    """Point lights. position [B,L,3] (world); color [B,L,3]: irradiance at unit distance facing the light;
    attenuation (c0, c1, c2): irradiance is divided by c0 + c1 d + c2 d^2 (default (1,0,0): none; use
    (0,0,1) for physical inverse-square falloff)."""

    position: torch.Tensor
    color: torch.Tensor | float = 1.0
    attenuation: tuple[float, float, float] = (1.0, 0.0, 0.0)

    def incident(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [B,...,3] -> (unit directions to the lights [B,...,L,3], irradiance [B,...,L,3])."""
        p = _lights_tensor(self.position, "position", points)
        c = _light_color(self.color, p)
        v = _bcast(p, points) - points.unsqueeze(-2)  # [B,...,L,3]
        dist = torch.linalg.norm(v, dim=-1, keepdim=True).clamp_min(1e-12)
        c0, c1, c2 = self.attenuation
        att = c0 + c1 * dist + c2 * dist * dist
        return v / dist, _bcast(c, points) / att

    def to(self, device) -> "PointLights":
        return PointLights(_to(self.position, device), _to(self.color, device), self.attenuation)


def _to(x, device):
    return x.to(device) if torch.is_tensor(x) else x


def _light_color(color, ref: torch.Tensor) -> torch.Tensor:
    """color float | [3] | [B,3] | [B,L,3] | [B,L,1] -> [B or 1, L, 3] matching ref [B,L,3]."""
    c = torch.as_tensor(color, dtype=ref.dtype, device=ref.device)
    if c.dim() == 0:
        c = c.expand(3)
    if c.dim() == 1:
        c = c.view(1, 1, -1)
    elif c.dim() == 2:
        c = c.unsqueeze(1)
    return c.expand(max(c.shape[0], ref.shape[0]), ref.shape[1], 3)


def _ambient(ambient, ref: torch.Tensor) -> torch.Tensor:
    """ambient float | [3] | [B,3] -> broadcastable to ref [B,...,3]."""
    a = torch.as_tensor(ambient, dtype=ref.dtype, device=ref.device)
    if a.dim() == 2:
        a = a.view(a.shape[0], *([1] * (ref.dim() - 2)), a.shape[1])
    return a


def _albedo(albedo, ref: torch.Tensor) -> torch.Tensor:
    if albedo is None:
        return torch.ones((), dtype=ref.dtype, device=ref.device)
    return torch.as_tensor(albedo, dtype=ref.dtype, device=ref.device)


def lambert(normals: torch.Tensor, lights, albedo=None, points: torch.Tensor | None = None, ambient=0.0,
            shadow: torch.Tensor | None = None) -> torch.Tensor:
    """Diffuse shading: albedo * (ambient + sum_l color_l * max(0, n . l_l) * shadow_l).

    normals [B,...,3] (normalised here); lights: DirectionalLights | PointLights | list of them;
    albedo [B,...,3] (or broadcastable; None = 1); points [B,...,3] world positions (needed by point
    lights); ambient float | [3] | [B,3]; shadow [B,...,L] in [0,1] (1 = lit), L over all lights in order.
    Returns [B,...,3].
    """
    n = F.normalize(normals, dim=-1)
    lvec, irr = _incident(lights, n if points is None else points, need_points=points is not None)
    cos = (n.unsqueeze(-2) * lvec).sum(-1).clamp_min(0)  # [B,...,L]
    if shadow is not None:
        cos = cos * shadow
    diffuse = (cos.unsqueeze(-1) * irr).sum(-2)
    return _albedo(albedo, n) * (diffuse + _ambient(ambient, n))


def blinn_phong(normals: torch.Tensor, points: torch.Tensor, eye: torch.Tensor, lights, albedo=None,
                specular=1.0, shininess: float | torch.Tensor = 32.0, ambient=0.0,
                shadow: torch.Tensor | None = None) -> torch.Tensor:
    """Blinn-Phong: lambert(...) + specular * sum_l color_l * max(0, n . h_l)^shininess * [n . l_l > 0] * shadow_l.

    points [B,...,3] world positions; eye [B,3] viewer positions (camera centres, `Cameras.centers`);
    h_l = normalize(l_l + v), v = normalize(eye - point). specular float | [3] | [B,...,3] (the specular
    colour); shininess float or [B,...,1]. Returns [B,...,3].
    """
    n = F.normalize(normals, dim=-1)
    lvec, irr = _incident(lights, points, need_points=True)
    e = torch.as_tensor(eye, dtype=points.dtype, device=points.device)
    if e.dim() == 1:
        e = e.unsqueeze(0)
    e = e.view(e.shape[0], *([1] * (points.dim() - 2)), 3)
    v = F.normalize(e - points, dim=-1)
    cos = (n.unsqueeze(-2) * lvec).sum(-1)  # [B,...,L]
    h = F.normalize(lvec + v.unsqueeze(-2), dim=-1)
    s = torch.as_tensor(shininess, dtype=n.dtype, device=n.device)
    spec = (n.unsqueeze(-2) * h).sum(-1).clamp_min(0) ** s * (cos > 0)
    lit = cos.clamp_min(0)
    if shadow is not None:
        lit, spec = lit * shadow, spec * shadow
    diffuse = (lit.unsqueeze(-1) * irr).sum(-2)
    specular_term = (spec.unsqueeze(-1) * irr).sum(-2)
    ks = torch.as_tensor(specular, dtype=n.dtype, device=n.device)
    return _albedo(albedo, n) * (diffuse + _ambient(ambient, n)) + ks * specular_term


def _incident(lights, points: torch.Tensor, need_points: bool):
    if isinstance(lights, (list, tuple)):
        parts = [_incident(lt, points, need_points) for lt in lights]
        B = max(p[0].shape[0] for p in parts)
        return (torch.cat([p[0].expand(B, *p[0].shape[1:]) for p in parts], -2),
                torch.cat([p[1].expand(B, *p[1].shape[1:]) for p in parts], -2))
    if isinstance(lights, PointLights) and not need_points:
        raise NeuralRenderError("point lights need the surface positions: pass points=[B,...,3]")
    if not isinstance(lights, (DirectionalLights, PointLights)):
        raise NeuralRenderError(f"lights must be DirectionalLights / PointLights or a list, got {type(lights).__name__}")
    return lights.incident(points)


# ------------------------------------------------------------------------------ spherical harmonics
#: Normalisation constants of the real SH basis (bands 0..2), in `sh_basis` order.
SH_CONSTANTS = (
    0.5 * math.sqrt(1 / math.pi),       # Y00
    math.sqrt(3 / (4 * math.pi)),       # Y1-1 = c y
    math.sqrt(3 / (4 * math.pi)),       # Y10  = c z
    math.sqrt(3 / (4 * math.pi)),       # Y11  = c x
    0.5 * math.sqrt(15 / math.pi),      # Y2-2 = c x y
    0.5 * math.sqrt(15 / math.pi),      # Y2-1 = c y z
    0.25 * math.sqrt(5 / math.pi),      # Y20  = c (3 z^2 - 1)
    0.5 * math.sqrt(15 / math.pi),      # Y21  = c x z
    0.25 * math.sqrt(15 / math.pi),     # Y22  = c (x^2 - y^2)
)
#: Clamped-cosine (Lambert) convolution per band: A_0 = pi, A_1 = 2 pi / 3, A_2 = pi / 4.
SH_LAMBERT_BANDS = (math.pi, 2 * math.pi / 3, math.pi / 4)
_BAND = (0, 1, 1, 1, 2, 2, 2, 2, 2)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Real orthonormal SH basis up to band 2 at unit directions: [...,3] -> [...,9].

    Order (l, m): (0,0), (1,-1), (1,0), (1,1), (2,-2), (2,-1), (2,0), (2,1), (2,2), i.e.
    0.282095, 0.488603 y, 0.488603 z, 0.488603 x, 1.092548 xy, 1.092548 yz, 0.315392 (3z^2-1),
    1.092548 xz, 0.546274 (x^2-y^2). The input is normalised first.
    """
    n = F.normalize(normals, dim=-1)
    x, y, z = n.unbind(-1)
    c = SH_CONSTANTS
    return torch.stack([
        torch.full_like(x, c[0]), c[1] * y, c[2] * z, c[3] * x, c[4] * x * y, c[5] * y * z,
        c[6] * (3 * z * z - 1), c[7] * x * z, c[8] * (x * x - y * y),
    ], -1)


def _coeffs(coeffs: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    c = coeffs.to(device=ref.device, dtype=ref.dtype)
    if c.dim() == 2:
        c = c.unsqueeze(0)
    if c.dim() != 3 or c.shape[1] != 9:
        raise NeuralRenderError(f"SH coefficients must be [B,9,C] (or [9,C]), got {tuple(coeffs.shape)}")
    return c


def sh_shade(normals: torch.Tensor, coeffs: torch.Tensor, albedo=None) -> torch.Tensor:
    """albedo * sum_k coeffs[:, k] * Y_k(n): normals [B,...,3], coeffs [B,9,C] (C = 3 for RGB) -> [B,...,C].

    A constant ambient a is coeffs[:, 0] = a / 0.282095; see `sh_irradiance` to light with an environment.
    """
    c = _coeffs(coeffs, normals)
    Y = sh_basis(normals)  # [B,...,9]
    B = max(Y.shape[0], c.shape[0])
    Y, c = Y.expand(B, *Y.shape[1:]), c.expand(B, 9, c.shape[-1])
    out = (Y.reshape(B, -1, 9) @ c).reshape(*Y.shape[:-1], c.shape[-1])
    return _albedo(albedo, out) * out


def sh_irradiance(radiance_coeffs: torch.Tensor) -> torch.Tensor:
    """SH coefficients of incoming radiance [B,9,C] -> shading coefficients for `sh_shade` [B,9,C]:
    multiplies band l by the clamped-cosine factor A_l (Ramamoorthi & Hanrahan 2001), so that
    sh_shade(n, sh_irradiance(L)) = integral of L(w) max(0, n.w) dw for radiance band-limited to l <= 2.
    """
    a = torch.tensor([SH_LAMBERT_BANDS[b] for b in _BAND], dtype=radiance_coeffs.dtype, device=radiance_coeffs.device)
    return radiance_coeffs * a.view(*([1] * (radiance_coeffs.dim() - 2)), 9, 1)


def sh_project(directions: torch.Tensor, values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Project a spherical function onto the 9 SH functions by quadrature:
    directions [N,3] (unit), values [B,N,C], weights [N] (solid angle of each sample, summing to 4 pi)
    -> coeffs [B,9,C] = sum_i w_i f(d_i) Y(d_i)."""
    Y = sh_basis(directions) * weights.unsqueeze(-1)  # [N,9]
    return torch.einsum("nk,bnc->bkc", Y.to(values.dtype), values)


def sh_directional(direction: torch.Tensor, color) -> torch.Tensor:
    """Radiance SH coefficients [B,9,3] of a directional light (a delta towards `direction` [B,3], unit
    irradiance per colour channel `color` [B,3] or [3]): L_k = color * Y_k(direction). Pass through
    `sh_irradiance` to get the 9-term approximation of Lambert max(0, n.l)."""
    d = direction if direction.dim() == 2 else direction.unsqueeze(0)
    c = torch.as_tensor(color, dtype=d.dtype, device=d.device)
    c = c.view(1, 3) if c.dim() == 1 else c
    return sh_basis(d).unsqueeze(-1) * c.unsqueeze(1)


# ------------------------------------------------------------------------------------- shadow maps
def shadow_map(light_cameras, verts: torch.Tensor, faces: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Depth from the light's point of view: light_cameras (a `Cameras` batch, e.g. look_at from the
    light position) -> depth [B,H,W] (camera z; +inf where nothing is hit). verts [V,3] or [B,V,3]."""
    from neuralrender.graphics.raster import rasterize

    frags = rasterize(light_cameras, verts, faces, backend=backend)
    return torch.where(frags.face_id >= 0, frags.depth, torch.full_like(frags.depth, float("inf")))


def shadow_lookup(depth_map: torch.Tensor, light_cameras, points: torch.Tensor, bias: float = 1e-2,
                  pcf: int = 1) -> torch.Tensor:
    """Visibility of world points from the light: depth_map [B,H,W] from `shadow_map`, points [B,...,3]
    -> [B,...] in [0,1] (1 = lit). A point is lit when its light-camera depth <= stored depth * (1 + bias)
    (relative bias against acne); points outside the light's view are lit. pcf = k averages the test
    over a (2k+1)^2 pixel neighbourhood (percentage-closer filtering) for soft edges; 0 = single tap.
    """
    B = points.shape[0]
    flat = points.reshape(B, -1, 3)
    xy, z = light_cameras.project(flat)  # [B,N,2], [B,N]
    H, W = depth_map.shape[-2:]
    col = torch.floor(xy[..., 0]).long()
    row = torch.floor(xy[..., 1]).long()
    lit = torch.zeros_like(z)
    taps = 0
    for di in range(-pcf, pcf + 1):
        for dj in range(-pcf, pcf + 1):
            r, c = row + di, col + dj
            inside = (r >= 0) & (r < H) & (c >= 0) & (c < W) & (z > 0)
            idx = (r.clamp(0, H - 1) * W + c.clamp(0, W - 1))
            stored = torch.gather(depth_map.reshape(B, -1), 1, idx)
            lit = lit + torch.where(inside, (z <= stored * (1 + bias)).to(z.dtype), torch.ones_like(z))
            taps += 1
    return (lit / taps).reshape(points.shape[:-1])
