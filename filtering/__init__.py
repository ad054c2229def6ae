"""Whisper-WER filtering of dialogue and TTS data, dialogue shards, and the data-quality audit.

    python -m pipelines.filter --input DIALOGUES.jsonl --output OUT --asr tiny.en [--max-wer 0.10] [--codec tiny|PATH]
    python -m pipelines.audit OUT --report REPORT_DIR

Modules: `asr` (faster-whisper / openai-whisper backends, `load_asr`), `ct2_to_openai_whisper`
(shipped CTranslate2 weights -> openai-whisper checkpoint), `normalize`, `wer`, `rules`
(`Rules`, `decide`), `quality` (DNSMOS, Silero VAD),
`filter_job` (the filter job for the engine: Ray-free steps, the kept / rejects sink, `filter_job`),
`sample_dialogues` (espeak sample), `audit/`.
The dialogue and scored-TTS row contracts live on the ground floor (`tokenization.dialogue_schema`), and so does
the dialogue reader (`tokenization.readers.dialogue`).
"""
