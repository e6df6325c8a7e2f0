"""The worker's model engine: one per model variant per worker process.

`engine.BatchingEngine` wraps transformers' continuous batching (paged KV cache, iteration-level
scheduling); `admission` and `stream` hold our own logic and import no torch.
"""
