"""The worker's model engine: one per model variant per worker process.

`engine.BatchingEngine` runs iteration-level (continuous) batching over our dense-cache manager
(`dense.py`, the default) or transformers' paged one; `admission` and `stream` hold our own
logic and import no torch.
"""
