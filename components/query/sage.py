"""SAGE: Stochastic Adversarial Gradient Embedding (Sec. 3, Algorithm 1), read top to bottom.

For a target sample with ``z = phi(x)`` and ``p = h(x)``:

1. eq. 3  ``g^c = -∇_z log d_c(z)``                           (C×m adversarial Jacobian)
2. eq. 4  ``E = Σ_c p_c g^c``                                  (expected gradient)
3. eq. 5  ``g̃^c = g^c - λ_c E``, ``λ_c = |g^c·E| / ||E||²``   (positive orthogonal projection)
4. eq. 6  ``S(x) = (√p_1 g̃^1, …, √p_C g̃^C)``                 (so ||S||² = Σ_c p_c ||g̃^c||²)
5. Algorithm 1: the largest ``||S||`` first, then greedy farthest-first in S-space.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from components.query.base import PoolOutputs, register, top
from components.query.diversity import embedding_distance, farthest_first, kmeanspp

POP_EPS = 1e-12


def _mlp_layers(disc: nn.Module) -> list[nn.Module] | None:
    layers = list(disc) if isinstance(disc, nn.Sequential) else None
    if layers and all(isinstance(l, (nn.Linear, nn.ReLU)) for l in layers) \
            and isinstance(layers[-1], nn.Linear):
        return layers
    return None


def adversarial_jacobian(disc: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Eq. 3 for every class: ``g^c = -∇_z log σ(a_c(z)) = -(1-σ(a_c)) ∂a_c/∂z``, shape (N, C, m).

    Closed form for a Linear/ReLU discriminator (one batched product through the layers);
    any other discriminator goes through :func:`adversarial_jacobian_autograd`.
    """
    layers = _mlp_layers(disc)
    if layers is None:
        return adversarial_jacobian_autograd(disc, z)
    masks, h = [], z
    for layer in layers:
        h = layer(h)
        if isinstance(layer, nn.ReLU):
            masks.append((h > 0).to(z.dtype))
    logits = h
    jac = layers[-1].weight.to(z.dtype).expand(len(z), -1, -1)      # (N, C, hidden)
    for layer in reversed(layers[:-1]):
        if isinstance(layer, nn.ReLU):
            jac = jac * masks.pop()[:, None, :]
        else:
            jac = jac @ layer.weight.to(z.dtype)
    return -torch.sigmoid(-logits)[:, :, None] * jac


def adversarial_jacobian_autograd(disc: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Reference path (torch.func vmap + jacrev) for eq. 3; works for any discriminator."""
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in disc.named_parameters()}
    buffers = dict(disc.named_buffers())

    def neg_log_d(zi: torch.Tensor) -> torch.Tensor:
        return -F.logsigmoid(functional_call(disc, (params, buffers), (zi[None],))[0])

    return vmap(jacrev(neg_log_d))(z)


def expected_gradient(g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ``E = Σ_c p_c g^c`` → (N, m)."""
    return torch.einsum("nc,ncm->nm", p, g)


def positive_orthogonal_projection(g: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Eq. 5: remove from each ``g^c`` the part along ``E`` scaled by ``|g^c·E|/||E||²``.

    A component parallel to ``E`` vanishes; an opposite one is pushed further away.
    Where ``||E|| ≈ 0`` the gradients are returned unchanged.
    """
    norm_sq = (expected * expected).sum(1, keepdim=True)                 # (N, 1)
    dots = torch.einsum("ncm,nm->nc", g, expected)                      # (N, C)
    lam = dots.abs() / norm_sq.clamp_min(POP_EPS)
    lam = torch.where(norm_sq > POP_EPS, lam, torch.zeros_like(lam))
    return g - lam[:, :, None] * expected[:, None, :]


def sage_embedding(g_tilde: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Eq. 6: ``S(x) = (√p_c g̃^c)_c`` flattened to (N, C·m)."""
    return (p.sqrt()[:, :, None] * g_tilde).flatten(1)


def storage_dtype(n: int, width: int, device: torch.device, setting: str = "auto") -> torch.dtype:
    """``auto``: float32 while the N × C·m embedding takes under half the free memory of the
    device (RAM on the CPU), else float16, which halves it (100k × 345 × 256: 35 → 18 GB)."""
    if setting != "auto":
        return getattr(torch, setting)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    return torch.float32 if n * width * 4 < free / 2 else torch.float16


def embed_pool(pool: PoolOutputs, *, chunk: int, pop: bool = True,
               storage: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """S(x) for the whole pool: :func:`embed` on the model's features and probabilities."""
    disc = pool.discriminator
    if disc is None or getattr(disc, "outputs", 0) < 2:
        raise ValueError("Sage needs the class-level (TSF) discriminator: set train.adversarial: tsf")
    return embed(disc, pool.features, pool.probabilities, chunk=chunk, pop=pop, storage=storage)


def embed(disc: nn.Module, z: torch.Tensor, p: torch.Tensor, *, chunk: int, pop: bool = True,
          storage: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """S(x) for every row of ``z``, ``chunk`` (sample, class) rows at a time, so the peak is
    about the embedding itself. Returns ``(emb, norms)`` with float32 norms ``||S(x)||``.

    A float16 embedding is stored divided by the largest norm (every entry within ±1, far from
    float16's limits); distances scale alike, so the greedy picks are unchanged by it.
    """
    num_classes, m = p.shape[1], z.shape[1]
    dtype = storage_dtype(len(z), num_classes * m, z.device, storage)
    step = max(1, chunk // num_classes)

    def chunks():
        with torch.no_grad():
            for start in range(0, len(z), step):
                sl = slice(start, start + step)
                g = adversarial_jacobian(disc, z[sl])
                if pop:
                    g = positive_orthogonal_projection(g, expected_gradient(g, p[sl]))
                yield sl, sage_embedding(g, p[sl])

    emb = torch.empty(len(z), num_classes * m, device=z.device, dtype=dtype)
    norms = torch.empty(len(z), device=z.device)
    for sl, block in chunks():
        norms[sl] = block.norm(dim=1)
        emb[sl] = block
    if dtype == torch.float16 and len(z):
        scale = float(norms.max()) or 1.0
        for sl, block in chunks():  # once more, scaled: the largest norm was not known before
            emb[sl] = block / scale
    return emb, norms


def select_from_embedding(emb: torch.Tensor, budget: int, *, diversity: str, seed: int,
                          chunk: int, norms: torch.Tensor | None = None
                          ) -> tuple[list[int], list[float]]:
    """Algorithm 1 on precomputed embeddings (also used by the benchmark and tests);
    ``norms``: ``||S(x)||`` where ``emb`` is stored scaled."""
    if norms is None:
        norms = emb.to(torch.promote_types(emb.dtype, torch.float32)).norm(dim=1)
    if diversity == "none":
        return top(norms, budget)
    first = int(torch.argmax(norms))
    if emb.dtype == torch.float16:  # upcast block by block: blocks of at most 64 MB of float32
        chunk = max(1, min(chunk, (64 << 20) // (4 * emb.shape[1])))
    distance_to = embedding_distance(emb, chunk=chunk)
    if diversity == "greedy":
        picks = farthest_first(distance_to, len(emb), budget, first=first)
    else:
        picks = kmeanspp(distance_to, len(emb), budget, first=first, seed=seed)
    return picks, norms[picks].tolist()


def _sage(pop: bool, diversity: str):
    def strategy(pool: PoolOutputs, budget, seed, *, chunk, storage="auto"):
        emb, norms = embed_pool(pool, chunk=chunk, pop=pop, storage=storage)
        return select_from_embedding(emb, budget, diversity=diversity, seed=seed, chunk=chunk,
                                     norms=norms)
    return strategy


register("sage", requires="class")(_sage(pop=True, diversity="greedy"))
register("sage-kmeans++", requires="class")(_sage(pop=True, diversity="kmeans++"))
register("sage-no-pop", requires="class")(_sage(pop=False, diversity="greedy"))
register("sage-no-diversity", requires="class")(_sage(pop=True, diversity="none"))
