"""What DPO and ORPO share: pairs for data, the packed pair batch, the per-pair statistics.

The tensors (the packed layout, the forward that returns each answer's log-probability, the
reference store) are preference.py; this is the objective around them. A subclass gives its
`pair_loss` and, when it has one, the reference log-probabilities of a split's rows.
"""
from __future__ import annotations

from typing import Optional

from tunelab.errors import TunelabError
from tunelab.train import inputs
from tunelab.train.objectives import Objective


class PairObjective(Objective):
    """A loss over the summed log-probabilities of each pair's chosen and rejected answers."""

    family = "preference"
    packed = True  # a pair is one packed document: its prompt once, both answers after it
    pairs = True

    @classmethod
    def check(cls, cfg) -> None:
        for key, value in (("data.max_toxicity", cfg.data.max_toxicity), ("replay", cfg.replay)):
            if value is not None:
                raise TunelabError(f"{key} is not supported with method: {cfg.method}; remove it (screen or "
                                   "mix the preference file itself)")

    @staticmethod
    def pair_loss(settings, logps, seq_tokens, norms, ref=None) -> tuple:
        """(this micro-batch's share of the step loss, statistics as SUMS over its pairs).

        logps, seq_tokens, ref: (2n,) interleaved [chosen 0, rejected 0, chosen 1, ...]."""
        raise NotImplementedError

    def load(self, source: inputs.DataSource):
        return inputs.load_pairs(source)

    def wrap(self, model):
        from tunelab.train.preference import PreferenceLM

        return PreferenceLM(model)

    def collate(self, examples, *, pad_id: int, width: Optional[int]):
        from tunelab.train.preference import collate_pairs

        return collate_pairs(examples, pad_id=pad_id, width=width)

    def start(self, live, data) -> None:
        from tunelab.train.preference import Norms

        super().start(live, data)
        self.sums: dict[str, float] = {}
        self.n_eval = len(data.eval_ex)
        # the held-out set's denominators: an evaluation's loss is the mean over all its pairs
        self.eval_norms = Norms(max(self.n_eval, 1), max(sum(len(e.chosen) for e in data.eval_ex), 1))

    def reference(self, split: str, idx: list[int]):
        """(2n,) reference log-probabilities of rows `idx` of the split; None: the loss has no reference."""
        return None

    def _loss(self, model, batch, idx: list[int], norms, split: str, weight: float):
        from tunelab.train.preference import batch_forward

        logps = batch_forward(model, batch, self.live.attn)  # (2n,) summed answer log-probs
        ref = self.reference(split, idx)
        part, stats = self.pair_loss(self.cfg.preference, logps, batch.seq_tokens, norms,
                                     None if ref is None else ref.to(logps.device))
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * weight
        return part

    def step_loss(self, model, batch, idx, counts, weight):
        from tunelab.train.preference import Norms

        norms = Norms(max(counts.pairs, 1), max(counts.chosen, 1))  # the step's global denominators
        # the share of the step's mean pair loss, × the supervised count the loop divides it by
        return self._loss(model, batch, idx, norms, "train", weight) * max(counts.supervised, 1)

    def step_stats(self, counts, reduce) -> dict:
        return self._means(counts.pairs, reduce)

    def eval_part(self, model, batch, idx, weight):
        # already the mean over the held-out pairs: the share of this batch
        return float(self._loss(model, batch, idx, self.eval_norms, "eval", weight)) * weight, 0

    def eval_result(self, total, count, reduce):
        return total, {"eval_" + k: v for k, v in self._means(self.n_eval, reduce).items()}

    def _means(self, n_pairs: int, reduce) -> dict[str, float]:
        """Per-pair means, over all processes (`reduce` sums a tensor over them), of the statistics
        added since the last call; starts the next sums."""
        import torch

        sums, self.sums = self.sums, {}
        if not sums:
            return {}
        keys = sorted(sums)
        total = reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
        return {k: float(v) / max(n_pairs, 1) for k, v in zip(keys, total.tolist())}
