"""Run a reader the way a task does, then decode every utterance the way the load step does."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenization.audio import BadAudio, read_ref
from tokenization.schema import QuarantineRow
from tokenization.readers.registry import list_units, read_unit
from tokenization.units import ReaderOptions, Unit, Utterance


@dataclass
class Outcome:
    units: list[Unit]
    kept: dict[str, Utterance] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    quarantined: list[QuarantineRow] = field(default_factory=list)  # by the reader
    load_bad: dict[str, str] = field(default_factory=dict)  # utt_id -> BadAudio reason

    def reasons(self) -> str:
        return "\n".join(q.reason for q in self.quarantined)


def run_reader(uri: str, fmt: str, opts: ReaderOptions | None = None) -> Outcome:
    opts = opts or ReaderOptions()
    out = Outcome(list_units(uri, fmt, opts))
    for unit in out.units:
        for rec in read_unit(unit, opts):
            if isinstance(rec, QuarantineRow):
                out.quarantined.append(rec)
                continue
            try:
                samples, rate = read_ref(rec.audio)
            except BadAudio as exc:
                out.load_bad[rec.utt_id] = str(exc)
                continue
            assert rec.utt_id not in out.kept, f"duplicate kept id {rec.utt_id}"
            out.kept[rec.utt_id], out.seconds[rec.utt_id] = rec, len(samples) / rate
    return out


def assert_matches(out: Outcome, corpus) -> None:
    """Kept ids/texts, each bad kind with its reason, and rows in = kept + quarantined."""
    assert {k: u.text for k, u in out.kept.items()} == corpus.good
    for name, fragment in corpus.bad.items():
        hits = [q for q in out.quarantined if name in q.utt_id or name in q.reason]
        assert len(hits) == 1 and fragment in hits[0].reason, (name, fragment, out.reasons())
    assert set(out.load_bad) == set(corpus.load_bad), out.load_bad
    assert all(corpus.load_bad[k] in reason for k, reason in out.load_bad.items()), out.load_bad
    assert len(out.kept) + len(out.quarantined) + len(out.load_bad) == corpus.n_rows
