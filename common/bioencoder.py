"""The bio encoder: an utterance's standardised bio-signal features (`common.bio`) -> one bio vector.

Each signal's features pass a linear layer of their own. Where an utterance has no sample of a signal (its features
are NaN: no file, no tagged sample), a learnt embedding of that signal's absence takes the projection's place: the
model learns what "no EDA here" means instead of reading a zero as a level. The signals' vectors, side by side,
are mixed by one more layer into the bio vector that a cell's heads or fusion read.

The features are few and per utterance (level, change, variability, EDA peaks): a few hundred weights learn from
them without overfitting a fold, which a convolution over KEMDy's 4-Hz samples (a handful per utterance) would not.
"""

from __future__ import annotations

import torch
from torch import nn

from common.bio import FEATURES


class BioEncoder(nn.Module):
    """Features of `signals` (utterances x their FEATURES, in order; NaN where a signal is missing) -> utterances
    x `width`."""

    def __init__(self, signals: tuple[str, ...], width: int = 32, dropout: float = 0.1):
        super().__init__()
        self.signals, self.width = tuple(signals), width
        self.sizes = [len(FEATURES[s]) for s in self.signals]
        self.features = sum(self.sizes)  # the width of what it reads
        self.projections = nn.ModuleList(nn.Linear(n, width) for n in self.sizes)
        self.absent = nn.Parameter(torch.zeros(len(self.signals), width))  # one learnt vector per missing signal
        nn.init.normal_(self.absent, std=0.02)
        self.mix = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(width * len(self.signals), width))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        parts = []
        for k, (projection, part) in enumerate(zip(self.projections, features.split(self.sizes, dim=-1), strict=True)):
            missing = part.isnan().any(dim=-1, keepdim=True)
            projected = projection(torch.where(missing, 0.0, part))  # a missing signal's NaN never reaches a gradient
            parts.append(torch.where(missing, self.absent[k], projected))
        return self.mix(torch.cat(parts, dim=-1))
