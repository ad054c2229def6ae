"""Near-duplicate and eval-leakage detection over tokenize and filter output folders; no Ray.

    index.py     one input shard file -> its index rows: exact keys, text key, word n-grams, fingerprint, LSH bands
    match.py     one hash part of every unit's index -> exact, text and candidate pairs; exact Jaccard verification
    decide.py    edges -> connected components -> `decisions/*.parquet` rows and `_summary.json`
    job.py       the driver sequence (plan, index, match, verify, decide) over a `map` function that `pipelines/dedup.py`
                 backs with Ray tasks and tests with a plain loop

The decisions table and the rows it drops from a source (training's `data.sources[].exclude`) are the
ground floor's contract: `tokenization/dedup_schema.py`. Method and file layout: docs/dedup.md.
"""
