"""Model evaluation, measured the way the paper reports it; Ray-free (see `pipelines.evaluate`).

- `teacher_forced_metrics(model, batch)`: text, per-codebook and per-MTP-head accuracy and losses.
- `speech_wer(asr, waveform, sr, text, language)`: ASR-WER of speech through the filter job's ASR,
  normalizer and WER code.
- `read_examples(uri, split)`: evaluation examples from dialogue or token shards, by `split`.
- `evaluate(model, codec, asr, examples, gen_cfg)`: both of the above over the examples with the
  streaming generator (first-chunk latency, RTF per reply); a summary dict.
- `render_markdown` / `render_html`: that summary as short tables.
"""

from training.evaluation.examples import EvalExample, read_examples
from training.evaluation.report import render_html, render_markdown
from training.evaluation.run import EvalConfig, evaluate, speak_and_score, summarize, teacher_forced_over
from training.evaluation.speech import speech_wer
from training.evaluation.teacher_forced import TeacherForcedMetrics, teacher_forced_metrics

__all__ = [
    "EvalConfig", "EvalExample", "TeacherForcedMetrics", "evaluate", "read_examples", "render_html", "render_markdown",
    "speak_and_score", "speech_wer", "summarize", "teacher_forced_metrics", "teacher_forced_over",
]
