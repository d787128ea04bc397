"""Independent float64 NumPy implementations of each attention block's equations, for the layer tests.

Written from the papers' equations (and the official code's numerics where the papers are silent), without any
torch op, so a bug in a layer cannot hide behind the same bug here.
"""

import numpy as np


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def conv2d_same(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Cross-correlation of x (B, Cin, H, W) with w (Cout, Cin, k, k), zero padding k//2, stride 1, no bias."""
    k = w.shape[-1]
    p = k // 2
    b, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((b, w.shape[0], h, wd))
    for u in range(k):
        for v in range(k):
            out += np.einsum("bchw,oc->bohw", xp[:, :, u : u + h, v : v + wd], w[:, :, u, v])
    return out


def sge(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, groups: int, eps: float = 1e-5) -> np.ndarray:
    b, c, h, w = x.shape
    xg = x.reshape(b, groups, c // groups, h * w)
    g = xg.mean(axis=3, keepdims=True)  # global descriptor per group
    sim = (xg * g).sum(axis=2)  # c_i = g · x_i, (B, G, HW)
    centred = sim - sim.mean(axis=2, keepdims=True)
    std = np.sqrt((centred**2).sum(axis=2, keepdims=True) / (h * w - 1))  # unbiased
    a = gamma.reshape(1, groups, 1) * centred / (std + eps) + beta.reshape(1, groups, 1)
    return (xg * sigmoid(a)[:, :, None, :]).reshape(b, c, h, w)


def se(x: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    z = x.mean(axis=(2, 3))
    hidden = np.maximum(z @ w1.T + b1, 0.0)
    s = sigmoid(hidden @ w2.T + b2)
    return x * s[:, :, None, None]


def layer_norm(v: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = v.mean(axis=1, keepdims=True)
    var = ((v - mu) ** 2).mean(axis=1, keepdims=True)  # population variance, as LayerNorm
    return (v - mu) / np.sqrt(var + eps) * weight + bias


def gc(x: np.ndarray, p: dict[str, np.ndarray], se_params: dict[str, np.ndarray] | None = None) -> np.ndarray:
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    logits = np.einsum("c,bcn->bn", p["mask_w"], flat) + p["mask_b"]
    alpha = np.exp(logits - logits.max(axis=1, keepdims=True))
    alpha /= alpha.sum(axis=1, keepdims=True)
    context = np.einsum("bcn,bn->bc", flat, alpha)
    t = context @ p["w1"].T + p["b1"]
    t = np.maximum(layer_norm(t, p["ln_w"], p["ln_b"]), 0.0)
    t = t @ p["w2"].T + p["b2"]
    out = x + t[:, :, None, None]
    if se_params is not None:
        out = se(out, **se_params)
    return out


def spatial_gate(x: np.ndarray, conv_w: np.ndarray, bn: dict[str, np.ndarray] | None = None) -> np.ndarray:
    pooled = np.concatenate([x.max(axis=1, keepdims=True), x.mean(axis=1, keepdims=True)], axis=1)
    logits = conv2d_same(pooled, conv_w)
    if bn is not None:  # eval-mode BatchNorm over the single channel
        logits = (logits - bn["mean"]) / np.sqrt(bn["var"] + 1e-5) * bn["weight"] + bn["bias"]
    return sigmoid(logits)


def spatial_attention(x: np.ndarray, conv_w: np.ndarray) -> np.ndarray:
    return x * spatial_gate(x, conv_w)


def cbam(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    def mlp(v: np.ndarray) -> np.ndarray:
        return np.maximum(v @ p["w1"].T + p["b1"], 0.0) @ p["w2"].T + p["b2"]

    channel = sigmoid(mlp(x.mean(axis=(2, 3))) + mlp(x.max(axis=(2, 3))))
    x = x * channel[:, :, None, None]
    return x * spatial_gate(x, p["conv_w"], p["bn"])


def eca(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    k = kernel.shape[0]
    z = np.pad(x.mean(axis=(2, 3)), ((0, 0), (k // 2, k // 2)))
    c = x.shape[1]
    y = np.stack([z[:, i : i + k] @ kernel for i in range(c)], axis=1)  # 1-D cross-correlation over channels
    return x * sigmoid(y)[:, :, None, None]
