"""A small Transformer encoder whose normalization is chosen by name and by position.

Where the norm sits in a residual block is the difference between the original
Transformer (Vaswani et al., 2017) and most models trained since (Xiong et al., 2020):

* **post-LN**: ``x = norm(x + sublayer(x))`` -- the norm is on the residual path, so
  every block re-normalizes the sum;
* **pre-LN**: ``x = x + sublayer(norm(x))`` -- the residual path is an identity from the
  input to the output, and a final norm follows the last block.

:class:`TransformerBlock` is one encoder block (self-attention, then a two-layer
feed-forward net, each wrapped as above). With ``norm="ln"``, no dropout and the same
weights it computes what ``torch.nn.TransformerEncoderLayer(..., dropout=0,
batch_first=True, norm_first=...)`` computes, and its parameter names are the same, so
weights load either way. ``norm="rms"`` swaps in :class:`normlib.RMSNorm`.
:class:`TinyTransformer` stacks blocks between a token embedding and a linear read-out;
:func:`ffn_gradient_norms` measures what Xiong et al. plot: the gradient norm of each
block's second feed-forward weight; :func:`first_adam_step` takes one Adam step and
reports how far each such weight and the model's output moved.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as TF

from ..factory import make_norm

__all__ = [
    "TransformerBlock",
    "TinyTransformer",
    "ffn_gradient_norms",
    "first_adam_step",
    "TRANSFORMER_NORMS",
    "NORM_POSITIONS",
]

#: The norms a :class:`TransformerBlock` accepts.
TRANSFORMER_NORMS = ("ln", "rms", "none")
#: Where a block puts its norms, before each sublayer (``"pre"``) or after the residual sum (``"post"``).
NORM_POSITIONS = ("pre", "post")

NormSpec = Union[str, Callable[[int], nn.Module]]


def _token_norm(norm: NormSpec, d_model: int, eps: float) -> nn.Module:
    """A norm over the last (feature) dim of (N, T, d_model) tokens."""
    if callable(norm):
        return norm(d_model)
    if norm not in TRANSFORMER_NORMS:
        raise ValueError(
            f"norm must be one of {TRANSFORMER_NORMS} or a callable d_model -> Module, got {norm!r}: "
            "a Transformer normalizes each token over its features; BatchNorm, GroupNorm and "
            "InstanceNorm would need the tokens in another layout"
        )
    return make_norm(norm, d_model, spatial_dims=0, eps=eps)


class TransformerBlock(nn.Module):
    """One encoder block on ``(N, T, d_model)`` tokens: self-attention, then a feed-forward net.

    ``position="post"``: ``x = norm1(x + attn(x))`` then ``x = norm2(x + ffn(x))``;
    ``position="pre"``: ``x = x + attn(norm1(x))`` then ``x = x + ffn(norm2(x))``.
    ``ffn(x) = linear2(activation(linear1(x)))``. ``norm`` is ``"ln"``, ``"rms"``, ``"none"``
    or a callable ``d_model -> Module``. No dropout. ``forward(x, attn_mask=None,
    is_causal=False)``; a causal mask hides later tokens from earlier ones.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dim_feedforward: int,
        norm: NormSpec = "ln",
        position: str = "pre",
        activation: str = "relu",
        bias: bool = True,
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        if position not in NORM_POSITIONS:
            raise ValueError(f"position must be 'pre' or 'post', got {position!r}")
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
        self.position = position
        self.activation = activation
        # Names as in torch.nn.TransformerEncoderLayer, so state dicts load either way.
        self.self_attn = nn.MultiheadAttention(
            d_model, num_heads, dropout=0.0, bias=bias, batch_first=True, **factory_kwargs
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory_kwargs)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory_kwargs)
        self.norm1 = _token_norm(norm, d_model, eps)
        self.norm2 = _token_norm(norm, d_model, eps)
        if device is not None or dtype is not None:
            self.norm1.to(device=device, dtype=dtype)
            self.norm2.to(device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"position={self.position!r}, activation={self.activation!r}"

    def attention(self, x: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False) -> Tensor:
        if is_causal and attn_mask is None:
            steps = x.shape[-2]
            attn_mask = torch.triu(torch.ones(steps, steps, dtype=torch.bool, device=x.device), diagonal=1)
        return self.self_attn(x, x, x, attn_mask=attn_mask, need_weights=False)[0]

    def feed_forward(self, x: Tensor) -> Tensor:
        act = TF.relu if self.activation == "relu" else TF.gelu
        return self.linear2(act(self.linear1(x)))

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"TransformerBlock expects (N, T, d_model) tokens, got a {x.dim()}-D input")
        if self.position == "post":
            x = self.norm1(x + self.attention(x, attn_mask, is_causal))
            return self.norm2(x + self.feed_forward(x))
        x = x + self.attention(self.norm1(x), attn_mask, is_causal)
        return x + self.feed_forward(self.norm2(x))


class TinyTransformer(nn.Module):
    """Token embedding + learned positions, ``depth`` blocks, (pre-LN: a final norm), read-out.

    ``init="xavier"`` (the default) gives every linear weight Xavier-uniform values and
    every linear bias zeros, as the original Transformer code did and as Xiong et al.'s
    analysis assumes; ``init="torch"`` keeps PyTorch's default initialization.

    ``forward(tokens)`` maps ``(N, T)`` integer tokens to ``(N, T, num_classes)`` logits.
    Blocks are ``blocks[0] ... blocks[depth - 1]``; ``final_norm`` is the norm after the last
    block in the pre-LN arrangement (as in Xiong et al. and GPT-2) and ``nn.Identity`` in
    the post-LN one, whose last block already ends with a norm.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        depth: int = 6,
        d_model: int = 32,
        num_heads: int = 4,
        dim_feedforward: int = 64,
        norm: NormSpec = "ln",
        position: str = "pre",
        causal: bool = False,
        eps: float = 1e-5,
        init: str = "xavier",
    ) -> None:
        super().__init__()
        if init not in ("xavier", "torch"):
            raise ValueError(f"init must be 'xavier' or 'torch', got {init!r}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.max_len = max_len
        self.causal = causal
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, num_heads, dim_feedforward, norm, position, eps=eps) for _ in range(depth)
        )
        self.final_norm = _token_norm(norm, d_model, eps) if position == "pre" else nn.Identity()
        self.head = nn.Linear(d_model, num_classes)
        if init == "xavier":
            for module in self.modules():
                if isinstance(module, nn.Linear):  # also the attention's output projection
                    nn.init.xavier_uniform_(module.weight)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)

    def residual_norms(self, tokens: Tensor) -> List[float]:
        """Mean L2 norm of a token's vector entering each block and leaving the last one
        (``depth + 1`` values), under ``no_grad``."""
        with torch.no_grad():
            x = self.embedding(tokens) + self.positions[: tokens.shape[1]]
            norms = [float(torch.linalg.vector_norm(x, dim=-1).mean())]
            for block in self.blocks:
                x = block(x, is_causal=self.causal)
                norms.append(float(torch.linalg.vector_norm(x, dim=-1).mean()))
        return norms

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or tokens.shape[1] > self.max_len:
            raise ValueError(f"expected (N, T) tokens with T <= {self.max_len}, got shape {tuple(tokens.shape)}")
        x = self.embedding(tokens) + self.positions[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x, is_causal=self.causal)
        return self.head(self.final_norm(x))


def ffn_gradient_norms(model: TinyTransformer, tokens: Tensor, targets: Tensor) -> List[float]:
    """Frobenius norm of dLoss/dW for each block's ``linear2.weight``, first block first.

    The loss is the mean cross-entropy of ``model(tokens)`` against ``targets`` (shape
    ``(N, T)``). Gradients are computed with ``torch.autograd.grad`` and left nowhere: the
    model's ``.grad`` fields are not touched. Xiong et al. (2020, Fig. 3) plot this quantity
    at initialization: it grows towards the last block in post-LN, and stays level in pre-LN.
    """
    logits = model(tokens)
    loss = TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    weights = [block.linear2.weight for block in model.blocks]
    grads = torch.autograd.grad(loss, weights)
    return [float(torch.linalg.vector_norm(g)) for g in grads]


def first_adam_step(model: TinyTransformer, tokens: Tensor, targets: Tensor, lr: float = 1e-3) -> dict:
    """Take one ``torch.optim.Adam(lr=lr)`` step on the mean cross-entropy and report it.

    Returns ``{"update_norms": [...], "output_change": float}``: the Frobenius norm of the
    change of each block's ``linear2.weight`` (first block first), and the relative change
    ``||f_after - f_before|| / ||f_before||`` of the logits on ``tokens``. Adam's first
    step moves every weight by about ``lr`` (``m / sqrt(v) = g / |g|``), whatever the size
    of its gradient. The model's parameters are changed in place and its ``.grad`` fields
    are left set: use a fresh model.
    """
    weights = [block.linear2.weight for block in model.blocks]
    before = [w.detach().clone() for w in weights]
    with torch.no_grad():
        logits_before = model(tokens)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    optimizer.zero_grad()
    logits = model(tokens)
    TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).backward()
    optimizer.step()
    with torch.no_grad():
        change = torch.linalg.vector_norm(model(tokens) - logits_before) / torch.linalg.vector_norm(logits_before)
        updates = [float(torch.linalg.vector_norm(w - b)) for w, b in zip(weights, before)]
    return {"update_norms": updates, "output_change": float(change)}
