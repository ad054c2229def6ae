"""The evaluation loop: teacher-forced metrics in batches, then one streamed reply per example.

Replies are generated one request at a time, on purpose: first-chunk latency and real-time
factor are per-request numbers, measured on a model that serves nothing else meanwhile (what
a user of `pipelines.speak` sees). One warm-up request runs first and is not counted.

    >>> summary = evaluate(model, codec, load_asr("tiny.en"), read_examples(uri, "test"), GenerationConfig())
    >>> summary["wer"], summary["first_chunk_latency_s"], summary["mtp_acc"]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from tokenization.codec import SpeechCodec
from tokenization.dialogue_schema import DIALOGUE, TTS
from training.data.collate import collate_dialogue, collate_tts
from training.evaluation.examples import EvalExample
from training.evaluation.speech import SpeechScorer, speech_wer
from training.evaluation.teacher_forced import TeacherForcedMetrics, teacher_forced_metrics
from training.inference import GenerationConfig, StreamingGenerator
from training.model.audio_encoder import build_feature_extractor

REPLY_MODES = ("generate", "reference")


@dataclass
class EvalConfig:
    batch_size: int = 4  # examples per teacher-forced batch
    chunk_causal: bool = True  # Talker text mask under teacher forcing (streaming generation uses it)
    reply: str = "generate"  # generate: the Thinker writes the reply; reference: speak the reference text
    warmup: bool = True  # one uncounted request first (lazy initialisation out of the latency)


def teacher_forced_over(model, examples: list[EvalExample], cfg: EvalConfig) -> TeacherForcedMetrics:
    """Merged teacher-forced metrics over `examples` (stage 3 for dialogues, stage 1 for TTS rows)."""
    fe = build_feature_extractor(model.cfg.audio)
    parts = []
    for i in range(0, len(examples), cfg.batch_size):
        chunk = examples[i : i + cfg.batch_size]
        rows = [e.example for e in chunk]
        if chunk[0].kind == DIALOGUE:
            batch = collate_dialogue(rows, model.tokenizer, model.cfg, fe)
        else:
            batch = collate_tts(rows, model.tokenizer, model.cfg)
        batch = {k: v.to(model.cfg.device) for k, v in batch.items()}
        batch["chunk_causal"] = cfg.chunk_causal
        parts.append(teacher_forced_metrics(model, batch))
    return TeacherForcedMetrics.merge(parts)


def _forced_reply(ex: EvalExample, reply: str) -> str | None:
    """The text to speak instead of generating one (TTS rows always; dialogues in reference mode)."""
    return ex.reference_text if reply == "reference" or ex.kind == TTS else None


def speak_and_score(gen: StreamingGenerator, asr: SpeechScorer, ex: EvalExample, reply: str = "generate") -> dict:
    """Generate the reply to one example as a stream, transcribe it, score it: one result row.

    WER/CER compare the ASR transcript with the *generated* text (does the speech say what
    the model wrote?); `text_wer_vs_reference` compares the generated text with the
    reference reply.
    """
    if reply not in REPLY_MODES:
        raise ValueError(f"reply must be one of {REPLY_MODES}, not {reply!r}")
    wav, _, rep = gen.generate(audio=ex.user_audio, reply_text=_forced_reply(ex, reply))
    hyp, s = speech_wer(asr, wav, gen.codec.sample_rate, rep.text, ex.language)
    spoke = rep.chunks > 0
    return {
        "id": ex.id, "dialogue_id": ex.dialogue_id, "kind": ex.kind, "language": ex.language,
        "reference_text": ex.reference_text, "generated_text": rep.text, "asr_hyp": hyp,
        "wer": s.wer, "cer": s.cer, "n_ref_words": s.n_ref_words, "n_sub": s.n_sub, "n_del": s.n_del, "n_ins": s.n_ins,
        "text_wer_vs_reference": asr.score(ex.reference_text, rep.text, ex.language).wer,
        "first_chunk_latency_s": rep.first_chunk_latency_s if spoke else None,
        "thinker_first_chunk_s": rep.thinker_first_chunk_s,
        "rtf": rep.rtf if spoke else None,
        "audio_s": rep.audio_s, "total_s": rep.total_s, "talker_forwards": rep.talker_forwards,
        "frames": rep.frames, "text_tokens": rep.text_tokens,
    }


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def summarize(rows: list[dict], tf: TeacherForcedMetrics, n_codebooks: int, n_mtp: int) -> dict:
    """Means over the reply rows and the merged teacher-forced metrics (None where nothing was measured).

    `wer` is corpus-level (all edits / all reference words, the usual way to report WER);
    `wer_mean` averages the per-reply WERs.
    """
    spoken = [r for r in rows if r["first_chunk_latency_s"] is not None]
    n_ref = sum(r["n_ref_words"] for r in rows)
    edits = sum(r["n_sub"] + r["n_del"] + r["n_ins"] for r in rows)
    acc, fcl = tf.accuracy(), [r["first_chunk_latency_s"] for r in spoken]
    forwards = sum(r["talker_forwards"] for r in rows)
    return {
        "n_dialogues": len({r["dialogue_id"] for r in rows}),
        "n_replies": len(rows),
        "n_replies_spoken": len(spoken),
        "wer": edits / n_ref if n_ref else _mean([r["wer"] for r in rows]),
        "wer_mean": _mean([r["wer"] for r in rows]),
        "cer_mean": _mean([r["cer"] for r in rows]),
        "text_wer_vs_reference": _mean([r["text_wer_vs_reference"] for r in rows]),
        "first_chunk_latency_s": _mean(fcl),
        "first_chunk_latency_s_p50": _pct(fcl, 50),
        "first_chunk_latency_s_p90": _pct(fcl, 90),
        "rtf": _mean([r["rtf"] for r in spoken]),
        "talker_forwards_per_reply": _mean([r["talker_forwards"] for r in rows]),
        "frames_per_forward": sum(r["frames"] for r in rows) / forwards if forwards else None,
        "text_acc": acc.get("text"),
        "speech_acc": acc.get("speech"),
        "codebook_acc": [acc.get(f"cb{k}") for k in range(n_codebooks)],
        "mtp_acc": [acc.get(f"mtp{i}") for i in range(1, n_mtp + 1)],
        "loss": tf.loss(),
        "teacher_forced": tf.to_dict(),
        "rows": rows,
    }


def evaluate(model, codec: SpeechCodec, asr: SpeechScorer, examples: list[EvalExample], gen_cfg: GenerationConfig,
             cfg: EvalConfig | None = None, progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Teacher-forced metrics, then a streamed, transcribed reply per example; the summary dict.

    Args:
        model: a `VocalNetM2` with its tokenizer (e.g. `VocalNetM2.from_pretrained(export)`).
        codec: the codec the Talker's codes belong to (its decoder makes the waveform).
        asr: loaded ASR backend (`filtering.asr.load_asr`).
        examples: from `read_examples`.
        progress: called as (done, total, row) after each reply.
    Returns:
        `summarize(...)` plus `setup` (generation and evaluation settings, model sizes, ASR and codec names).
    """
    cfg = cfg or EvalConfig()
    if not examples:
        raise ValueError("nothing to evaluate: no examples")
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer (checkpoint without tokenizer.json: pass one)")
    model.eval()
    tf = teacher_forced_over(model, examples, cfg)
    gen = StreamingGenerator(model, codec, gen=gen_cfg)
    if cfg.warmup:
        gen.generate(audio=examples[0].user_audio, reply_text=_forced_reply(examples[0], cfg.reply))
    rows = []
    for i, ex in enumerate(examples):
        rows.append(speak_and_score(gen, asr, ex, cfg.reply))
        if progress:
            progress(i + 1, len(examples), rows[-1])
    tc = model.cfg.talker
    out = summarize(rows, tf, tc.n_codebooks, tc.n_mtp)
    out["setup"] = {
        **asdict(cfg), "generation": asdict(gen_cfg), "n_mtp": tc.n_mtp, "n_codebooks": tc.n_codebooks,
        "chunk_frames": tc.chunk_frames, "asr_model": asr.name, "codec": codec.info.name,
        "device": str(model.cfg.device), "dtype": model.cfg.dtype, "torch_threads": torch.get_num_threads(),
    }
    return out

