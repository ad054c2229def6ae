"""Audio I/O, the `SpeechCodec` interface and its backends, and the token-shard contract."""
