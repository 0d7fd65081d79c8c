"""A fusion head in one file: what adding a head takes (README, "Adding a fusion head").

`EMO_PLUGINS=tests/toy_head.py emo fit --cache C --out R --fusion toy-mean` trains it like any
head: `--fusion`'s help lists it, FitConfig and `emo ablate --fusion` accept it, and the run's
checkpoint names it, so `emo eval` rebuilds it (with the same EMO_PLUGINS).
"""

from __future__ import annotations

from torch import Tensor, nn

from emo.fuse.heads import register_head
from emo.fuse.model import masked_mean


@register_head("toy-mean", "one linear layer over the mean of the present slots", needs=("proj_dim", "num_outputs"))
class ToyMean(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.out = nn.Linear(config.proj_dim, config.num_outputs)

    def forward(self, embeddings: Tensor, present: Tensor) -> Tensor:
        return self.out(masked_mean(embeddings, present))
