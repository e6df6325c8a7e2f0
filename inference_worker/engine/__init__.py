"""The worker's model engine: one per model variant per worker process.

Torch-free (unit-tested without a model, and imported by the worker's streaming side):

- `types`: the `Engine` interface, a request's `RequestHandle` and its `EngineEvent`s;
- `backends`: which batching backend ENGINE_BACKEND names (`resolve_backend`: "auto" is dense);
- `admission`: the order in which requests get a place in the batch;
- `dense`: our continuous batching's request state and step loop (`DenseBatchManager`);
- `pump`: the one thread that streams every running request to its sink;
- `stream`: generated tokens into answer and reasoning text.

With torch:

- `engine`: `BatchingEngine`, continuous batching over our dense manager or transformers' paged
  one, with admission, routing, timing and cancellation around it;
- `dense_runner`: the dense manager's tensors on a left-padded cache (the CPU's);
- `slot_runner`: the same on a cache slot per request, decode steps replayed from CUDA graphs;
- `qwen2`: the Qwen2/Llama layer math both runners share;
- `int4`: the CPU int4 matmul of gptqmodel's packed weights.

The engine in a process of its own is `inference_worker.engine_process`, built by
`inference_worker.engine_factory`.
"""
