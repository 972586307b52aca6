"""What one training command runs: the cell, its settings, the folds, and what its command line said.

The command line (`common.cli`) makes the plan and the loop (`common.train`) resolves what the settings leave to
the run (the demo's corpus and encoders, --text_pooling auto); every module below receives the plan, its
settings, or the model's configuration.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from common.grid import Cell
from common.settings import Settings


@dataclass(frozen=True)
class RunPlan:
    cell: Cell
    settings: Settings
    folds: tuple[int, ...]  # the folds it tests on, one after the other (one for a cross-corpus run)
    notes: tuple[str, ...] = ()  # what the command line said, printed when the run starts
    encoder_tags: tuple[str, ...] = ()  # the names of non-default encoders, for the default run folders

    def but(self, **changes) -> RunPlan:
        """The plan with these settings changed."""
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, **changes))

    def record(self) -> dict:
        """The settings and the plan, as config.json's "args" and a marker record them."""
        plan = {"folds": list(self.folds), "notes": list(self.notes), "encoder_tags": list(self.encoder_tags)}
        return dataclasses.asdict(self.settings) | plan

    def per_seed(self) -> list[RunPlan]:
        """The plans of --seeds: one per seed, in order (a plan without it: itself). Each one's folder is the
        default one of its seed, or with --output_dir DIR, DIR_seed<seed>."""
        settings = self.settings
        if not settings.seeds:
            return [self]
        out = []
        for seed in settings.seeds:
            folder = f"{settings.output_dir.rstrip('/')}_seed{seed}" if settings.output_dir else None
            out.append(self.but(seed=seed, seeds=None, output_dir=folder))
        return out
