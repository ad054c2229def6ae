"""The ground floor every other package (`filtering`, `training`, `pipelines`) stands on; it imports none of them.

What lives here, by group:
- audio and codecs: `audio` (decode, resample, Whisper's 16 kHz rate), `codec` (the `SpeechCodec`
  interface), `codec_factory` (`load_codec` picks a backend), `mimi_codec`, `mimi_stream`;
- shard row contracts: `schema` (token and quarantine rows, output layout, file metadata),
  `dialogue_schema` (dialogue and scored-TTS rows, FLAC helpers, output-folder kinds), `splits`;
- corpus readers: `units` (units of work and `Utterance` records), `readers/` (one reader per layout, one table: `readers.registry`),
  `paths`;
- shared infrastructure: `storage` (local paths and `s3://`), `errors` (`UserError`), `strict_config`;
- the Ray-free sharded-job engine: `engine/`, and the tokenize job it runs (`tokenize_job`);
- the bundled sample: `espeak`, `sample_corpus`.
"""
