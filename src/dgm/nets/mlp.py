"""A level-conditioned residual MLP for vector data (2-D toys, flattened features)."""

from __future__ import annotations

from torch import Tensor, nn

from dgm.nets.embeddings import ClassEmbedding, level_embedding, no_labels


class LevelMLP(nn.Sequential):
    """emb(i) (B, emb_dim) -> (B, out_dim): the learned map from the sinusoidal features."""

    def __init__(self, emb_dim: int, out_dim: int):
        super().__init__(nn.Linear(emb_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))


class ResidualBlock(nn.Module):
    """h + W2 SiLU(W1 SiLU(LN(h)) + E emb): one pre-norm residual block with the level added."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        """h (B, hidden), emb (B, hidden) -> (B, hidden)."""
        z = self.fc1(self.act(self.norm(h))) + self.emb(emb)
        return h + self.fc2(self.act(z))


class MLP(nn.Module):
    """Residual MLP: (x (B, D), i (B,), cond=None) -> (B, D); a fresh net outputs exactly 0.

    Args:
        dim: D, the data dimension (input and output).
        hidden: width of the residual stream.
        depth: number of residual blocks.
        emb_dim: size of the sinusoidal level embedding.
        num_classes: with labels, a class embedding is added to the level embedding (None: no labels).
        out_dim: the output size (default D; 2 D for a DDPM that learns its reverse variance).
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 4, emb_dim: int = 128, num_classes: int | None = None,
                 out_dim: int | None = None):
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("emb_dim", emb_dim)):
            if value < 1:
                raise ValueError(f"MLP {name} must be positive, got {value}")
        if depth < 0:
            raise ValueError(f"MLP depth must be >= 0, got {depth}")
        if emb_dim % 2:
            raise ValueError(f"MLP emb_dim must be even, got {emb_dim}")
        self.dim, self.hidden, self.depth, self.emb_dim = dim, hidden, depth, emb_dim
        self.level = LevelMLP(emb_dim, hidden)
        self.num_classes = num_classes
        self.label = None if num_classes is None else ClassEmbedding(num_classes, hidden)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out_dim = dim if out_dim is None else out_dim
        if self.out_dim < 1:
            raise ValueError(f"MLP out_dim must be positive, got {out_dim}")
        self.out = nn.Linear(hidden, self.out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def config(self) -> dict:
        """The JSON-able config that ``build_net`` turns back into an untrained copy."""
        config = {"kind": "mlp", "dim": self.dim, "hidden": self.hidden, "depth": self.depth, "emb_dim": self.emb_dim}
        if self.num_classes is not None:
            config["num_classes"] = self.num_classes
        if self.out_dim != self.dim:
            config["out_dim"] = self.out_dim
        return config

    def forward(self, x: Tensor, i: Tensor, cond: Tensor | None = None) -> Tensor:
        """x (B, D) float, i (B,) levels (integer or fractional), cond (B,) labels or None -> (B, out_dim)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLP(dim={self.dim}) expects x of shape (B, {self.dim}), got {tuple(x.shape)}")
        emb = self.level(level_embedding(i, self.emb_dim).to(x.dtype))
        if self.label is None:
            no_labels("MLP", cond)
        else:
            emb = emb + self.label(cond, x.shape[0]).to(x.dtype)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(nn.functional.silu(self.out_norm(h)))
