"""The fusions: how a multimodal cell joins its text and its speech side into the one vector its heads read.

Each fusion is one class here and one line in the registry, `common.grid.FUSIONS` (its name, what it does,
where it comes from, and whether it reads each modality's pooled vector or its sequence of token and frame
states); the flags, the run folders, `--help`, the report's comparisons and the docs' table derive from that
line. A fusion that reads vectors gets (utterances x width) tensors; one that reads sequences gets
(states, mask) pairs, states (utterances x positions x width) and mask (utterances x positions), and pools
them itself over the positions the masks mark.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from common.encoders import masked_mean
from common.errors import UserError
from common.grid import FUSIONS
from common.settings import FUSION_PARAMS


class Fusion(nn.Module):
    """Joins the text side and the speech side; `width` is the width of what it returns. `settings` holds the
    hyper-parameters (`--fusion_width` ...) and the dropout; a fusion reads those its registry line names."""

    def __init__(self, text_width: int, speech_width: int, settings: FusionSettings):
        super().__init__()
        self.dropout, self.dropout_on = nn.Dropout(settings.dropout), settings.dropout_on
        self.width = text_width + speech_width

    def dropped(self, text, speech):
        """Each side with dropout, where it goes on each modality before fusion (--dropout_on modalities)."""
        if self.dropout_on != "modalities":
            return text, speech
        if isinstance(text, tuple):  # sequences: (states, mask)
            return (self.dropout(text[0]), text[1]), (self.dropout(speech[0]), speech[1])
        return self.dropout(text), self.dropout(speech)

    def finished(self, fused: torch.Tensor) -> torch.Tensor:
        """The fused vector, with dropout where it goes once after fusion (--dropout_on fused)."""
        return self.dropout(fused) if self.dropout_on == "fused" else fused

    @property
    def reads(self) -> str:
        return FUSIONS[self.name].reads

    @property
    def name(self) -> str:
        return next(name for name, info in FUSIONS.items() if info.cls == type(self).__name__)


class Concat(Fusion):
    """The two pooled vectors side by side (dropout on each element alone: on the concatenation it is dropout on
    each modality's vector)."""

    def forward(self, text: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.cat([text, speech], dim=-1))


class ElementWiseAdd(Fusion):
    """The text vector plus a learnt linear map of the speech vector onto the text vector's width; dropout on
    each modality's vector (the original: head(W·dropout(speech) + dropout(text))) or once on the sum."""

    def __init__(self, text_width: int, speech_width: int, settings: FusionSettings):
        super().__init__(text_width, speech_width, settings)
        self.speech_projection = nn.Linear(speech_width, text_width)
        self.width = text_width

    def forward(self, text: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
        text, speech = self.dropped(text, speech)
        return self.finished(text + self.speech_projection(speech))


class Gated(Fusion):
    """The gated multimodal unit (Arevalo et al. 2017): each modality's vector through a tanh projection, mixed
    by a sigmoid gate computed from both: z * tanh(W_t t) + (1 - z) * tanh(W_s s), z = sigmoid(W_z [t; s]), per
    unit of the `--fusion_width` wide output."""

    def __init__(self, text_width: int, speech_width: int, settings: FusionSettings):
        super().__init__(text_width, speech_width, settings)
        self.width = settings.width_for(text_width)
        self.text_projection = nn.Linear(text_width, self.width)
        self.speech_projection = nn.Linear(speech_width, self.width)
        self.gate = nn.Linear(text_width + speech_width, self.width)

    def forward(self, text: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
        text, speech = self.dropped(text, speech)
        z = torch.sigmoid(self.gate(torch.cat([text, speech], dim=-1)))
        fused = z * torch.tanh(self.text_projection(text)) + (1 - z) * torch.tanh(self.speech_projection(speech))
        return self.finished(fused)


class LowRankTensor(Fusion):
    """Low-rank multimodal fusion (Liu et al. 2018, LMF): the tensor fusion of Zadeh et al. 2017, the outer product
    of the two vectors each with a 1 appended (so that each modality's own terms stay in it) mapped to the output,
    computed through `--fusion_rank` modality-specific factors instead of the full (d_t + 1)(d_s + 1) x width
    weight: sum over the ranks of (W_t [t; 1]) * (W_s [s; 1]), weighted, plus a bias."""

    def __init__(self, text_width: int, speech_width: int, settings: FusionSettings):
        super().__init__(text_width, speech_width, settings)
        self.width, rank = settings.width_for(text_width), settings.rank
        self.text_factor = nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, text_width + 1, self.width)))
        self.speech_factor = nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, speech_width + 1, self.width)))
        self.rank_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, rank)))
        self.bias = nn.Parameter(torch.zeros(self.width))

    def forward(self, text: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
        text, speech = self.dropped(text, speech)
        one = torch.ones_like(text[:, :1])
        text_terms = torch.matmul(torch.cat([text, one], dim=-1), self.text_factor)  # rank x utterances x width
        speech_terms = torch.matmul(torch.cat([speech, one], dim=-1), self.speech_factor)
        product = (text_terms * speech_terms).permute(1, 0, 2)  # utterances x rank x width
        fused = torch.matmul(self.rank_weights, product).squeeze(1) + self.bias
        return self.finished(fused)


class _CrossBlock(nn.Module):
    """One cross-modal transformer block (MulT's): the target sequence attends to the source sequence (pre-norm,
    residual), then a position-wise feed-forward layer."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm_target, self.norm_source, self.norm_out = (
            nn.LayerNorm(width),
            nn.LayerNorm(width),
            nn.LayerNorm(width),
        )
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, target: torch.Tensor, source: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        source = self.norm_source(source)
        if torch.onnx.is_in_onnx_export():
            attended = self._traceable(self.norm_target(target), source, source_mask)
        else:
            attended, _ = self.attention(
                self.norm_target(target), source, source, key_padding_mask=~source_mask.bool(), need_weights=False
            )
        target = target + attended
        return target + self.feed_forward(self.norm_out(target))

    def _traceable(self, query: torch.Tensor, source: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        """The attention's computation in evaluation, in operations whose shapes a traced graph keeps as
        dimensions (nn.MultiheadAttention's own fixes them as the traced batch's numbers)."""
        attention, heads = self.attention, self.attention.num_heads
        weights, biases = attention.in_proj_weight.chunk(3), attention.in_proj_bias.chunk(3)

        def by_head(x: torch.Tensor, k: int) -> torch.Tensor:  # utterances x heads x positions x head width
            x = F.linear(x, weights[k], biases[k])
            return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

        keep = source_mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(by_head(query, 0), by_head(source, 1), by_head(source, 2), attn_mask=keep)
        return attention.out_proj(out.transpose(1, 2).flatten(2))


class CrossAttention(Fusion):
    """Cross-modal attention in both directions (as MulT's cross-modal blocks, Tsai et al. 2019, and the KEMDy20
    systems that attend between hidden-state sequences): text tokens attend to speech frames, speech frames to
    text tokens, `--fusion_layers` blocks of `--fusion_heads` heads at `--fusion_width`; each side is then
    averaged over its own tokens or frames, and the two averages are joined side by side."""

    def __init__(self, text_width: int, speech_width: int, settings: FusionSettings):
        super().__init__(text_width, speech_width, settings)
        width = settings.width_for(text_width)
        if width % settings.heads:
            raise UserError(f"--fusion_width {width}: must be a multiple of --fusion_heads {settings.heads}")
        self.text_projection, self.speech_projection = nn.Linear(text_width, width), nn.Linear(speech_width, width)
        self.text_to_speech = nn.ModuleList(
            _CrossBlock(width, settings.heads, settings.dropout) for _ in range(settings.layers)
        )
        self.speech_to_text = nn.ModuleList(
            _CrossBlock(width, settings.heads, settings.dropout) for _ in range(settings.layers)
        )
        self.width = 2 * width

    def forward(self, text: tuple, speech: tuple) -> torch.Tensor:
        (text_states, text_mask), (speech_states, speech_mask) = self.dropped(text, speech)
        t, s = self.text_projection(text_states), self.speech_projection(speech_states)
        for to_speech, to_text in zip(self.text_to_speech, self.speech_to_text, strict=True):
            t, s = to_speech(t, s, speech_mask), to_text(s, t, text_mask)
        fused = torch.cat([masked_mean(t, text_mask), masked_mean(s, speech_mask)], dim=-1)
        return self.finished(fused)


@dataclass(frozen=True)
class FusionSettings:
    """What a fusion may be configured with: its width, attention heads and blocks, rank (`settings.FUSION_PARAMS`);
    and the model's dropout."""

    dropout: float = 0.1
    dropout_on: str = "modalities"
    width: int = FUSION_PARAMS["width"]
    heads: int = FUSION_PARAMS["heads"]
    layers: int = FUSION_PARAMS["layers"]
    rank: int = FUSION_PARAMS["rank"]

    def width_for(self, text_width: int) -> int:
        """The fusion's width: `width`, but never wider than the text encoder (0: the text encoder's). At the real
        sizes (768) a 256-wide cross-attention block adds 4 % to a fine-tuned step, a 768-wide one 15 %
        (docs/performance.md); a fusion wider than what it reads adds weights, not information."""
        return min(self.width, text_width) if self.width else text_width


def build(name: str, text_width: int, speech_width: int, settings: FusionSettings) -> Fusion:
    """The fusion of the registry named `name`, for encoders of these widths."""
    return globals()[FUSIONS[name].cls](text_width, speech_width, settings)
