import math
from fractions import Fraction

import torch


def _debye_u(n=14):
    """Polynomials u_k(p) of the uniform asymptotic expansion (DLMF 10.41.9-10), coefficients of p^i."""
    us = [[Fraction(1)]]
    for _ in range(n):
        u = us[-1]
        a = [Fraction(0)] * (len(u) + 3)
        for i in range(1, len(u)):  # p^2 (1 - p^2) u'(p) / 2
            a[i + 1] += i * u[i] / 2
            a[i + 3] -= i * u[i] / 2
        for i, c in enumerate(u):  # int_0^p (1 - 5 t^2) u(t) dt / 8
            a[i + 1] += c / (8 * (i + 1))
            a[i + 3] -= 5 * c / (8 * (i + 3))
        us.append(a)
    return [[float(c) for c in u] for u in us]


U = _debye_u()


def _debye(v, x):  # v >= 20
    r = torch.hypot(v, x)
    p = v / r
    veta = r + v * torch.log(x / (v + r))
    si, sk, vk = torch.zeros_like(v), torch.zeros_like(v), torch.ones_like(v)
    for k, u in enumerate(U):
        q = torch.zeros_like(v)
        for c in reversed(u):
            q = q * p + c
        si, sk, vk = si + q / vk, sk + (-1) ** k * q / vk, vk * v
    base = -0.5 * torch.log(r / v)
    return (veta - 0.5 * torch.log(2 * math.pi * v) + base + torch.log(si),
            -veta + 0.5 * torch.log(math.pi / (2 * v)) + base + torch.log(sk))


def _large_x(v, x):  # v < 20, x >= 250: terms vanish long before the series diverges (k ~ 2x)
    t, si, sk = torch.ones_like(x), torch.ones_like(x), torch.ones_like(x)
    for k in range(1, 200):
        t = t * (4 * v * v - (2 * k - 1) ** 2) / (8 * k * x)
        si, sk = si + (-1) ** k * t, sk + t
    return (x - 0.5 * torch.log(2 * math.pi * x) + torch.log(si),
            -x + 0.5 * torch.log(math.pi / (2 * x)) + torch.log(sk))


def _log_k_quad(v, x):
    """log int_0^inf exp(-x cosh t) cosh(v t) dt: trapezoid rule on t = k h in log space, anchored at the peak."""
    def lg(t):
        t = t.abs()  # the integrand is even
        return -x[:, None] * torch.cosh(t) + v[:, None] * t + torch.log1p(torch.exp(-2 * v[:, None] * t)) - math.log(2)
    ts = torch.where(v * v > x, torch.asinh(v / x), torch.zeros_like(x))
    for _ in range(3):  # Newton steps towards the peak, x sinh t = v tanh(v t)
        th = torch.tanh(v * ts)
        d1, d2 = -x * torch.sinh(ts) + v * th, -x * torch.cosh(ts) + v * v * (1 - th * th)
        ts = torch.where((ts > 0) & (d2 < 0), torch.clamp(ts - d1 / d2, min=0.0), ts)
    h = torch.clamp(0.5 / torch.sqrt(x * torch.cosh(ts)), max=0.2)
    k0 = torch.floor(ts / h)
    m = lg((k0 * h)[:, None])[:, 0]
    k = k0[:, None] + torch.arange(-128, 128, dtype=x.dtype, device=x.device)
    w = torch.where(k == 0, 0.5, 1.0) * (k >= 0)
    s = (w * torch.exp(lg(k * h[:, None]) - m[:, None])).sum(dim=1)
    return m + torch.log(h * s)


def _quadrature(v, x):  # v < 20, x < 250
    lk, lk1 = _log_k_quad(v, x), _log_k_quad(v + 1, x)
    depth = torch.floor(2 * x) + 40  # I_{v+1}/I_v by its continued fraction, backward
    r = torch.zeros_like(x)
    for k in range(540, 0, -1):
        r = torch.where(k <= depth, 1 / (2 * (v + k) / x + r), r)
    # Wronskian: I_v K_{v+1} + I_{v+1} K_v = 1/x
    return -torch.log(x) - lk - torch.log(torch.exp(lk1 - lk) + r), lk


class Model(torch.nn.Module):
    """log I_v(x), log K_v(x) with v = expm1(lv ln 10), x = exp(lx ln 10), fp64, by regime."""

    def forward(self, lv, lx):
        v, x = torch.expm1(lv * math.log(10)), torch.exp(lx * math.log(10))
        li, lk = torch.empty_like(v), torch.empty_like(v)
        regimes = (v >= 20, (v < 20) & (x >= 250), (v < 20) & (x < 250))
        for sel, fn in zip(regimes, (_debye, _large_x, _quadrature)):
            for idx in torch.nonzero(sel).flatten().split(1 << 15):  # bounded memory
                li[idx], lk[idx] = fn(v[idx], x[idx])
        return li, lk
