"""Fixture builders: small corpora in the layouts people ship, from espeak-ng speech.

Plain functions (no pytest), so reader tests, end-to-end job tests and S3 tests build the
same inputs. Each returns a `Corpus`: where it is and what a correct reader must make of it.

    >>> wds = make_webdataset(tmp / "emilia")        # 2 good tars + 1 truncated
    >>> wds.good                                    # {utt_id: text} that must be kept
    >>> wds.bad                                     # {name: reason fragment} quarantined by the reader
    >>> wds.load_bad                                # {utt_id: reason fragment} quarantined when decoded
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from tokenization.sample_corpus import VOICES, espeak_to_wav, sentences

GARBAGE = b"this is not audio at all " * 40


@dataclass
class Corpus:
    input: Path  # what `--input` gets
    good: dict[str, str] = field(default_factory=dict)  # utt_id -> text
    bad: dict[str, str] = field(default_factory=dict)  # name -> reason fragment (reader quarantine)
    load_bad: dict[str, str] = field(default_factory=dict)  # utt_id -> reason fragment (quarantined at decode)
    durations: dict[str, float] = field(default_factory=dict)  # utt_id -> expected seconds (spans)

    @property
    def n_rows(self) -> int:
        return len(self.good) + len(self.bad) + len(self.load_bad)


def speech(n: int, cache: Path) -> list[tuple[str, np.ndarray, int]]:
    """n (text, mono float32 samples, rate) clips of espeak-ng speech, cached as WAVs under `cache`."""
    out = []
    voices = list(VOICES.values())
    for i, text in enumerate(sentences()[:n]):
        wav = cache / f"clip_{i:03d}.wav"
        if not wav.exists():
            espeak_to_wav(text, wav, *voices[i % len(voices)])
        samples, rate = sf.read(wav, dtype="float32")
        out.append((text, samples, rate))
    return out


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """Samples -> encoded bytes. MP3 needs libsndfile >= 1.1, which soundfile >= 0.12 wheels bundle (1.2 here);
    readers decode MP3 through the same library, so a build without it could not read Emilia either."""
    if fmt not in sf.available_formats():
        raise RuntimeError(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}; install soundfile>=0.12")
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt)
    return buf.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tf.addfile(info, io.BytesIO(data))
    return path


def _emilia(key: str, text: str, speaker: str, **extra) -> bytes:
    return json.dumps({"id": key, "wav": f"{key}.mp3", "text": f" {text} ", "duration": 1.0, "speaker": speaker,
                       "language": "en", "dnsmos": 3.25, **extra}).encode()


def make_webdataset(out: Path, cache: Path | None = None) -> Corpus:
    """Emilia-style tars: `EN-B000000.tar`, `EN-B000001.tar` (MP3 + JSON, one FLAC + TXT) and a truncated third.

    Bad kinds: a sample without audio, one without text, one with undecodable audio (load step),
    and the truncated tar (one row naming it; its first two samples stay).
    """
    out.mkdir(parents=True, exist_ok=True)
    clips = speech(7, cache or out / "_speech")
    c = Corpus(out)
    a = []
    for i in range(3):
        key = f"EN_B000000_S00000_W{i:06d}"
        text, samples, rate = clips[i]
        a += [(f"{key}.json", _emilia(key, text, "EN_B000000_S00000")), (f"{key}.mp3", encode(samples, rate, "MP3"))]
        c.good[key] = text
    a += [("EN_B000000_S00000_W000003.json", _emilia("EN_B000000_S00000_W000003", "audio went missing", "s"))]
    c.bad["EN_B000000_S00000_W000003"] = "no audio member"
    a += [("EN_B000000_S00000_W000004.json", _emilia("EN_B000000_S00000_W000004", "garbled", "s")),
          ("EN_B000000_S00000_W000004.mp3", GARBAGE)]
    c.load_bad["EN_B000000_S00000_W000004"] = "not readable as audio"
    _tar(out / "EN-B000000.tar", a)

    b = []
    text, samples, rate = clips[3]
    b += [("EN_B000001_S00001_W000000.json", _emilia("EN_B000001_S00001_W000000", text, "EN_B000001_S00001")),
          ("EN_B000001_S00001_W000000.mp3", encode(samples, rate, "MP3"))]
    c.good["EN_B000001_S00001_W000000"] = text
    text, samples, rate = clips[4]  # no JSON: id = key, text from .txt
    b += [("sub/EN_B000001_S00001_W000001.flac", encode(samples, rate, "FLAC")),
          ("sub/EN_B000001_S00001_W000001.txt", f"{text}\n".encode())]
    c.good["sub/EN_B000001_S00001_W000001"] = text
    b += [("EN_B000001_S00001_W000002.json", json.dumps({"id": "EN_B000001_S00001_W000002", "speaker": "s"}).encode()),
          ("EN_B000001_S00001_W000002.mp3", encode(samples, rate, "MP3"))]
    c.bad["EN_B000001_S00001_W000002"] = "no text"
    _tar(out / "EN-B000001.tar", b)

    t = []
    for i, clip in enumerate(clips[5:7]):
        key = f"EN_B000002_S00002_W{i:06d}"
        t += [(f"{key}.json", _emilia(key, clip[0], "EN_B000002_S00002")), (f"{key}.mp3", encode(clip[1], clip[2], "MP3"))]
        c.good[key] = clip[0]
    t += [("EN_B000002_S00002_W000002.json", _emilia("EN_B000002_S00002_W000002", "cut off", "s")),
          ("EN_B000002_S00002_W000002.mp3", encode(clips[0][1], clips[0][2], "MP3"))]
    full_path = _tar(out / "_full.tar", t)
    with tarfile.open(full_path) as tf:
        last = tf.getmembers()[-1]
    cut = last.offset_data + last.size // 2  # inside the last mp3
    (out / "EN-B000002.tar").write_bytes(full_path.read_bytes()[:cut])
    full_path.unlink()
    c.bad["EN-B000002.tar"] = "truncated or corrupt at byte"
    return c


def _hf_audio_type() -> pa.DataType:
    return pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def make_hf_parquet(out: Path, cache: Path | None = None) -> Corpus:
    """HF-style Parquet under `out/data/`: FLAC/WAV bytes in row groups of 3, a null and a garbage row,
    an empty text; no id column (ids hash file + row); a second file with `{array, sampling_rate}` audio."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    clips = speech(6, cache or out / "_speech")
    from tokenization.readers.base import stable_utt_id

    rows, c = [], Corpus(data)
    name = "train-00000-of-00002.parquet"
    for i, (text, samples, rate) in enumerate(clips[:4]):
        fmt = "FLAC" if i % 2 == 0 else "WAV"
        rows.append({"audio": {"bytes": encode(samples, rate, fmt), "path": f"clip{i}.{fmt.lower()}"},
                     "text_normalized": text, "speaker_id": f"spk{i % 2}", "chapter_id": 7 + i})
        c.good[stable_utt_id("data", name, f"row{i}")] = text
    rows.append({"audio": None, "text_normalized": "no audio here", "speaker_id": "spk0", "chapter_id": 1})
    c.bad[stable_utt_id("data", name, "row4")] = "null audio"
    rows.append({"audio": {"bytes": GARBAGE, "path": "garbage.wav"}, "text_normalized": "garbage", "speaker_id": "spk0",
                 "chapter_id": 1})
    c.load_bad[stable_utt_id("data", name, "row5")] = "not readable as audio"
    rows.append({"audio": {"bytes": encode(clips[0][1], clips[0][2], "FLAC"), "path": "x.flac"}, "text_normalized": "  ",
                 "speaker_id": "spk0", "chapter_id": 1})
    c.bad[stable_utt_id("data", name, "row6")] = "empty or missing text"
    schema = pa.schema([("audio", _hf_audio_type()), ("text_normalized", pa.string()), ("speaker_id", pa.string()),
                        ("chapter_id", pa.int64())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), data / name, row_group_size=3)

    arr_rows = []
    for i, (text, samples, rate) in enumerate(clips[4:6]):
        arr_rows.append({"id": f"arr{i}", "audio": {"array": samples.tolist(), "sampling_rate": rate}, "sentence": text,
                         "client_id": "cv_speaker"})
        c.good[f"arr{i}"] = text
    pq.write_table(pa.Table.from_pylist(arr_rows), data / "train-00001-of-00002.parquet", row_group_size=1)
    return c


def make_long_recording(out: Path, clips: list[tuple[str, np.ndarray, int]], gap_s: float = 0.3) -> tuple[Path, list[tuple[str, float, float]]]:
    """Concatenate clips (with silence gaps) into one FLAC; returns it and (text, start_s, duration_s) per clip."""
    rate = clips[0][2]
    parts, spans, t = [], [], gap_s
    gap = np.zeros(int(gap_s * rate), np.float32)
    parts.append(gap)
    for text, samples, r in clips:
        assert r == rate
        parts += [samples, gap]
        spans.append((text, round(t, 3), round(len(samples) / rate, 3)))
        t += len(samples) / rate + gap_s
    path = out / "recordings" / "long.flac"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.concatenate(parts), rate, format="FLAC")
    return path, spans


def _cut(cut_id: str, source: str, start: float, duration: float, text: str, speaker: str, custom: bool = False) -> dict:
    sup = {"id": cut_id, "recording_id": "rec", "start": 0.0, "duration": duration, "channel": 0, "speaker": speaker,
           "language": "English"}
    if custom:
        sup["custom"] = {"texts": [text, text.upper()]}
    else:
        sup["text"] = text
    return {"id": cut_id, "start": start, "duration": duration, "channel": 0, "supervisions": [sup],
            "recording": {"id": "rec", "sources": [{"type": "file", "channels": [0], "source": source}],
                          "sampling_rate": 22050, "num_samples": 0, "duration": 0.0},
            "type": "MonoCut"}


def make_lhotse_cuts(out: Path, cache: Path | None = None, gz: bool = False) -> Corpus:
    """LibriHeavy-style cuts into one long FLAC: good spans (text in `text` or `custom.texts[0]`), a span past
    the end, a missing recording, and a source that escapes the folder."""
    out.mkdir(parents=True, exist_ok=True)
    clips = speech(4, cache or out / "_speech")
    long, spans = make_long_recording(out, clips)
    total = sf.info(long).duration
    cuts, c = [], Corpus(out / ("cuts.jsonl.gz" if gz else "cuts.jsonl"))
    for i, (text, start, dur) in enumerate(spans):
        cid = f"cut{i}"
        cuts.append(_cut(cid, "recordings/long.flac", start, dur, text, f"spk{i % 2}", custom=i % 2 == 1))
        c.good[cid], c.durations[cid] = text, dur
    cuts.append(_cut("past_end", "recordings/long.flac", total - 0.5, 2.0, "too long", "spk0"))
    c.load_bad["past_end"] = "past the end"
    cuts.append(_cut("missing_rec", "recordings/nowhere.flac", 0.0, 1.0, "missing", "spk0"))
    c.load_bad["missing_rec"] = "file not found"
    cuts.append(_cut("escapes", "../outside.flac", 0.0, 1.0, "outside", "spk0"))
    c.bad["escapes"] = "escapes"
    body = "".join(json.dumps(cut) + "\n" for cut in cuts).encode()
    c.input.write_bytes(gzip.compress(body, mtime=0) if gz else body)
    return c


def make_span_manifest(out: Path, cache: Path | None = None) -> Corpus:
    """A JSONL manifest of segments of one long FLAC (`start` + `end`, or `offset` + `duration`), with a
    segment past the end and a `..` path."""
    out.mkdir(parents=True, exist_ok=True)
    clips = speech(3, cache or out / "_speech")
    long, spans = make_long_recording(out, clips)
    total = sf.info(long).duration
    lines, c = [], Corpus(out / "segments.jsonl")
    for i, (text, start, dur) in enumerate(spans):
        span = {"start": start, "end": round(start + dur, 3)} if i % 2 == 0 else {"offset": start, "duration": dur}
        lines.append({"id": f"seg{i}", "audio_path": "recordings/long.flac", "text": text, "speaker": "s", **span})
        c.good[f"seg{i}"], c.durations[f"seg{i}"] = text, dur
    lines.append({"id": "seg_past", "audio_path": "recordings/long.flac", "text": "past", "start": total - 0.2,
                  "end": total + 3.0})
    c.load_bad["seg_past"] = "past the end"
    lines.append({"id": "seg_up", "audio_path": "../long.flac", "text": "up", "start": 0.0, "end": 1.0})
    c.bad["seg_up"] = "escapes"
    c.input.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return c


# --- dialogues (filter input) -----------------------------------------------------------------------


def _audio_struct(samples: np.ndarray, rate: int, name: str) -> dict:
    return {"bytes": encode(samples, rate, "FLAC"), "path": name}


def make_hf_dialogues(out: Path, cache: Path | None = None) -> Corpus:
    """Dialogue Parquet with embedded audio, under `out/`:

    - `voiceassistant.parquet`: VoiceAssistant-400K columns (`split_name`, `index`, `round`, `question`,
      `question_audio`, `answer`, `answer_snac`): no answer audio, so every row is quarantined (codec units only);
    - `qa.parquet`: `question_audio` + `answer_audio`, no id column (ids `split_name-index-round`);
    - `turns.parquet`: native `turns` whose `audio` is an HF struct, in two row groups.
    `good` maps dialogue ids to the assistant text.
    """
    out.mkdir(parents=True, exist_ok=True)
    clips = speech(4, cache or out / "_speech")
    c = Corpus(out)
    va = [{"split_name": "train", "index": i, "round": 0, "question": clips[i][0],
           "question_audio": _audio_struct(clips[i][1], clips[i][2], f"q{i}.flac"), "answer": clips[i + 1][0],
           "answer_snac": "<snac>1 2 3</snac>"} for i in range(2)]
    pq.write_table(pa.Table.from_pylist(va), out / "voiceassistant.parquet")
    for i in range(2):
        c.bad[f"train-{i}-0"] = "only as codec units"
    qa = [{"split_name": "test", "index": 7, "round": r, "question": clips[r][0],
           "question_audio": _audio_struct(clips[r][1], clips[r][2], "q.flac"), "answer": clips[r + 2][0],
           "answer_audio": _audio_struct(clips[r + 2][1], clips[r + 2][2], "a.flac")} for r in range(2)]
    pq.write_table(pa.Table.from_pylist(qa), out / "qa.parquet")
    c.good.update({f"test-7-{r}": clips[r + 2][0] for r in range(2)})
    turns = []
    for i in range(3):
        turns.append({"id": f"t{i}", "speaker": "asst", "turns": [
            {"role": "user", "text": clips[i][0], "audio": _audio_struct(clips[i][1], clips[i][2], "u.flac")},
            {"role": "assistant", "text": clips[i + 1][0], "audio": _audio_struct(clips[i + 1][1], clips[i + 1][2], "a.flac")}]})
        c.good[f"t{i}"] = clips[i + 1][0]
    turns[2]["turns"][0]["audio"] = None  # a null struct: no audio
    c.good.pop("t2")
    c.bad["t2"] = "missing audio path"
    pq.write_table(pa.Table.from_pylist(turns), out / "turns.parquet", row_group_size=2)
    return c


def make_instruct_s2s(out: Path, cache: Path | None = None) -> Corpus:
    """InstructS2S JSON list (`conversation` of `{from, text, speech, unit}`) with WAVs beside it: two good
    dialogues, one whose assistant speech is only `unit`s, one whose path climbs out of the folder."""
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    clips = speech(3, cache or out / "_speech")
    for i, (_, samples, rate) in enumerate(clips):
        sf.write(out / "wavs" / f"c{i}.wav", samples, rate)
    sf.write(out.parent / "outside.wav", clips[0][1], clips[0][2])
    c = Corpus(out / "instruct_s2s.json")

    def conv(user: int, asst: int, asst_speech: str | None, asst_path: str | None = None) -> list[dict]:
        return [{"from": "human", "text": f"<speech>\n{clips[user][0]}", "speech": asst_path or f"wavs/c{user}.wav", "unit": None},
                {"from": "gpt", "text": clips[asst][0], "speech": asst_speech, "unit": "12 40 40 7"}]

    records = [{"id": "s2s_0", "conversation": conv(0, 1, "wavs/c1.wav")},
               {"id": "s2s_1", "conversation": conv(1, 2, "wavs/c2.wav") + conv(2, 0, "wavs/c0.wav")},
               {"id": "s2s_units", "conversation": conv(0, 2, None)},
               {"id": "s2s_up", "conversation": conv(0, 1, "wavs/c1.wav", asst_path="../outside.wav")}]
    c.good = {"s2s_0": clips[1][0], "s2s_1": clips[0][0]}
    c.bad = {"s2s_units": "only as codec units", "s2s_up": "escapes"}
    c.input.write_text(json.dumps(records, indent=1))
    return c


def upload_tree(client, bucket: str, folder: Path, prefix: str) -> str:
    """Upload every file under `folder` (boto3 client) to `s3://bucket/prefix/...`; returns that URI."""
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            client.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(folder).as_posix()}")
    return f"s3://{bucket}/{prefix}"
