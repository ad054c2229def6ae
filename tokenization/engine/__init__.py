"""The sharded-job engine shared by tokenize and filter: plan units -> run steps -> write shards
atomically -> `_manifest.json` with counts that add up. No Ray here: `pipelines/sharded_ray.py` runs the
same pieces on a cluster, `local_run.run_local` runs them in one process (tests, benchmarks).

A job is a `jobs.JobSpec`: how to read a unit into records, how to load one record (task side), the actor
steps (codec, ASR), and a `Sink` that turns finished rows into output tables. The engine owns everything
else, so the two jobs differ only in their steps.

    jobs.py           job types (`JobSpec`, `Step`, `Sink`, `Item`, `Batch`) and reading a unit into batches
    output_folder.py  the folder's names, `_run.json` and run id, `_progress/` (one listing per run), sync/retire
    duplicates.py     the duplicate-id pre-pass: first occurrence in listing order wins, across incremental runs
    writer.py         writing a shard atomically with its done mark; `_manifest.json` from the done marks
    local_run.py      the same steps in one process, no Ray

Shards derive from units: record `pos` of the unit keyed `KEY` (`Unit.key`, a hash of its path under the
input root and its range) lands in shard `shard-KEY-{pos // rows_per_shard:03d}`, so a shard's name and
bytes depend only on its unit and the config: not on the scheduling, nor on what else the input holds.

An output folder is a living dataset (`output_folder.sync_output`): with the same config, a rerun over a
grown, repaired or shrunk input runs only new units and units whose fingerprint (size + etag/mtime)
changed, retires the files of units that are gone, and ends equal to a fresh run over today's input.

Output folder:
    shards/ (tokenize) or kept/ + rejects/ (filter)   one Parquet per shard; absent when it has no rows
    quarantine/shard-KEY-000.parquet                  rows of that shard that could not become rows, with reasons
    _progress/shard-KEY-000.json                      written last: the shard is done (counts, checksums)
    _progress/units/KEY.json                          a reader task read the whole unit: rows, shards, fingerprint
    _progress/ids/KEY.FP.parquet                      the unit's record ids (FP: its fingerprint's hash), for the pre-pass
    _progress/ids/duplicates.json                     the id pre-pass result (only the duplicated ids) and its listing
    _run.json                                         run_id and config, checked on rerun
    _manifest.json                                    shards, rows, checksums, counts; written last
"""
