"""Teacher-forced accuracies and losses of one batch: text tokens, each codebook, each MTP head.

Accuracy is argmax == target over the positions the losses count (IGNORE, i.e. padding and
everything past a row's end, is masked out). Counts are kept, not ratios, so batches merge
exactly:

    >>> m = TeacherForcedMetrics.merge([teacher_forced_metrics(model, b) for b in batches])
    >>> m.accuracy()["cb0"], m.loss()["loss/mtp1"]

Keys: `text` (next reply token, stages 2/3), `cb0`..`cb{K-1}` (backbone head per codebook),
`speech` (backbone, all codebooks), `mtp1`..`mtpN` (module i predicts frame t + i, all codebooks);
each has a token-weighted CE `loss/<key>`. Unlike training's `loss/speech` (codebook mean plus
weighted MTP terms), `loss/speech` here is the backbone's CE alone, and `loss` = `loss/text` +
`loss/speech`, so the numbers compare across MTP depths.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from training.model.codebook_layout import IGNORE


@dataclass
class TeacherForcedMetrics:
    correct: dict[str, int] = field(default_factory=dict)  # key -> positions predicted right
    total: dict[str, int] = field(default_factory=dict)  # key -> positions counted
    loss_sums: dict[str, float] = field(default_factory=dict)  # "loss/<key>" -> loss x its token count

    def accuracy(self) -> dict[str, float]:
        return {k: self.correct[k] / self.total[k] for k in self.total if self.total[k]}

    def loss(self) -> dict[str, float]:
        """Token-weighted mean losses; `loss` is the sum of the parts, as in training."""
        out = {k: v / self.total[k.split("/", 1)[1]] for k, v in self.loss_sums.items()
               if self.total.get(k.split("/", 1)[1])}
        out["loss"] = out.get("loss/text", 0.0) + out.get("loss/speech", 0.0)
        return out

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy(), "loss": self.loss(), "count": dict(self.total)}

    @classmethod
    def merge(cls, items: list["TeacherForcedMetrics"]) -> "TeacherForcedMetrics":
        out = cls(defaultdict(int), defaultdict(int), defaultdict(float))
        for m in items:
            for k in m.total:
                out.correct[k] += m.correct[k]
                out.total[k] += m.total[k]
            for k, v in m.loss_sums.items():
                out.loss_sums[k] += v
        return cls(dict(out.correct), dict(out.total), dict(out.loss_sums))


def _count(metrics: TeacherForcedMetrics, key: str, logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Add argmax accuracy and CE of logits [..., V] against targets [...] (IGNORE masked)."""
    valid = targets != IGNORE
    n = int(valid.sum())
    metrics.total[key] = n
    metrics.correct[key] = int(((logits.argmax(-1) == targets) & valid).sum())
    if n:
        ce = torch.nn.functional.cross_entropy(logits[valid].float(), targets[valid], reduction="sum")
        metrics.loss_sums[f"loss/{key}"] = float(ce)


@torch.no_grad()
def teacher_forced_metrics(model, batch: dict[str, torch.Tensor], stage: int | None = None) -> TeacherForcedMetrics:
    """Accuracies and losses of `model` (a `VocalNetM2`) on one collated batch, in eval mode.

    Args:
        batch: from `training.data.collate` (`collate_dialogue` or `collate_tts`); its
            `chunk_causal` key (if any) picks the Talker's text mask.
        stage: which parts to score; default: 3 when the batch has user speech and codes,
            2 with speech only, 1 (TTS) otherwise.
    Returns:
        Counts and loss sums (see module docstring for the keys).
    """
    if stage is None:
        has_speech, has_codes = "input_features" in batch, "codes" in batch
        stage = 3 if has_speech and has_codes else 2 if has_speech else 1
    was_training = model.training
    model.eval()
    try:
        tf = model.teacher_forced(batch, stage)
    finally:
        model.train(was_training)
    m = TeacherForcedMetrics()
    if tf.text_logits is not None:
        _count(m, "text", tf.text_logits, tf.text_labels)
    if tf.talker is not None:
        targets, K = tf.targets, tf.targets.shape[-1]
        main = tf.talker.logits[0]  # (B, T', K, V)
        for k in range(K):
            _count(m, f"cb{k}", main[..., k, :], targets[..., k])
        _count(m, "speech", main, targets)
        for i, logits in enumerate(tf.talker.logits[1:], start=1):
            # Module i at position t predicts frame t + i: shift the targets left by i.
            shifted = torch.cat([targets[:, i:], targets.new_full((targets.shape[0], i, K), IGNORE)], dim=1)
            _count(m, f"mtp{i}", logits, shifted)
    return m
