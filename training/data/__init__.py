"""Pure data helpers for training: shard rows -> model batches."""
