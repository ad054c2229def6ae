"""Streaming generation: chunked decode equals full decode; text-in / audio-in; the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from training.inference import ChunkDecoder, GenerationConfig, StreamingGenerator
from tests.jobs import last_json


def test_streaming_output_equals_full_decode_of_same_codes(make_model, tiny_codec):
    m = make_model(n_mtp=4)
    gen = StreamingGenerator(m, tiny_codec, gen=GenerationConfig(max_frames=40, ignore_eos=True))
    chunks = list(gen.stream(reply_text="streaming speech comes out chunk by chunk"))
    assert [len(c.codes) for c in chunks] == [15, 15, 10]  # chunk_frames = 15
    assert [c.start_frame for c in chunks] == [0, 15, 30]
    codes = np.concatenate([c.codes for c in chunks])
    wav = np.concatenate([c.waveform for c in chunks])
    full = tiny_codec.decode([codes])[0]
    assert wav.shape == full.shape == (40 * tiny_codec.samples_per_frame,)
    # fp32 conv noise only: the tiny random Mimi peaks near 20, so 1e-4 is ~5e-6 relative.
    np.testing.assert_allclose(wav, full, rtol=0, atol=1e-4)
    rep = gen.report
    assert rep.chunks == 3 and rep.frames == 40 and rep.talker_forwards == 8
    assert 0 < rep.thinker_first_chunk_s <= rep.first_chunk_latency_s <= rep.total_s
    assert rep.rtf > 0 and rep.audio_s == 40 / 12.5


def test_chunk_decoder_left_context(tiny_codec):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2048, (30, 8))
    full = tiny_codec.decode([codes])[0]
    spf = tiny_codec.samples_per_frame
    for streaming in (True, False):  # a chunk out of order replays the prefix through the stream state
        exact = ChunkDecoder(tiny_codec, streaming=streaming)(codes, 15, 30)
        np.testing.assert_allclose(exact, full[15 * spf : 30 * spf], rtol=0, atol=1e-4)


def test_streaming_decode_matches_full_decode_past_the_attention_window(tiny_codec):
    """160 frames = 320 transformer positions > Mimi's sliding window (250): the KV cache, the
    bounded conv context and the window all have to agree with one full decode. Tolerance: fp32
    rounding only, 1e-4 absolute on a waveform that peaks near 20 (~5e-6 relative)."""
    from tokenization.mimi_stream import MimiStreamDecoder

    rng = np.random.default_rng(3)
    codes = rng.integers(0, 2048, (160, 8))
    full = tiny_codec.decode([codes])[0]
    assert np.abs(full).max() > 1.0
    dec = ChunkDecoder(tiny_codec)
    bounds = list(range(0, 160, 15)) + [160]
    wav = np.concatenate([dec(codes, a, b) for a, b in zip(bounds, bounds[1:])])
    np.testing.assert_allclose(wav, full, rtol=0, atol=1e-4)
    assert dec.stream.cache.get_seq_length() == 320
    # The conv context is what makes it exact: too short a one is audibly wrong.
    short = MimiStreamDecoder(tiny_codec.model, seanet_context=1)
    bad = np.concatenate([short.decode(codes[a:b]) for a, b in zip(bounds, bounds[1:])])
    assert np.abs(bad - full).max() > 100 * 1e-4


def test_text_in_audio_in_and_eos(make_model, tiny_codec, tmp_path):
    m = make_model(n_mtp=2)
    gen = StreamingGenerator(m, tiny_codec, gen=GenerationConfig(max_frames=20, max_text_tokens=8))
    wav, codes, rep = gen.generate(text="What time is it?", out_wav=str(tmp_path / "a.wav"))
    assert codes.shape[1] == 8 and codes.max() < 2048 and len(wav) == len(codes) * tiny_codec.samples_per_frame
    assert rep.text_tokens <= 8 and rep.frames <= 20
    assert sf.info(str(tmp_path / "a.wav")).samplerate == tiny_codec.sample_rate
    audio = (0.1 * np.random.default_rng(0).standard_normal(m.cfg.audio.sampling_rate)).astype(np.float32)
    _, codes2, rep2 = gen.generate(audio=audio)
    assert rep2.frames == len(codes2) <= 20
    # Non-streaming (whole reply first) also works and produces the same frame budget.
    gen_full = StreamingGenerator(m, tiny_codec, gen=GenerationConfig(max_frames=20, ignore_eos=True, streaming=False))
    _, codes3, rep3 = gen_full.generate(reply_text="hello")
    assert codes3.shape == (20, 8) and rep3.text_tokens == 1


@pytest.mark.parametrize("layout", ["export", "ray_checkpoint"])
def test_speak_cli_tiny(tmp_path, make_model, tokenizer_path, layout):
    """--checkpoint takes an export or a Ray checkpoint holding `model/`, as the check accepts both."""
    ckpt = tmp_path / "ckpt"
    make_model(n_mtp=1).save_pretrained(ckpt if layout == "export" else ckpt / "model")
    out = tmp_path / "reply.wav"
    res = subprocess.run(
        [sys.executable, "-m", "pipelines.speak", "--checkpoint", str(ckpt), "--text", "hello",
         "--codec", "tiny", "--out", str(out), "--max-frames", "16", "--ignore-eos"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    report = last_json(res.stdout)
    assert report["frames"] == 16 and report["talker_forwards"] == 8 and out.is_file()
    assert {"thinker_first_chunk_s", "talker_s", "codec_decode_s", "first_chunk_latency_s", "rtf"} <= set(report)
