"""``python -m benchmarks.perf``: speed, memory and call counts of every generation method.

Measures, in one process and on one device, side by side:

* latency per motion against duration for each method (same noise, sampler, steps, guidance);
* throughput of the collage at a large batch (motions/s, generated frames/s, achieved FLOP/s);
* peak memory of each run (CUDA ``max_memory_allocated``; on CPU the growth of the resident set
  over the run, from the kernel's peak-RSS counter reset before it: allocator slack included);
* sequential piece-denoiser calls, network calls, network rows and frame evaluations;
* a host-synchronisation audit of the collage's sampling loop, the equality of chunked and
  unchunked piece evaluation, and the bf16/fp16 deviation from fp32.

FLOPs are counted analytically from the shapes of every network call (matmuls and attention of
the transformer, padded tokens included), so the achieved fraction of the device's peak can be
printed. Warm-up runs (same shapes, one step) are excluded from the timings; on CUDA the timers
are bracketed by ``torch.cuda.synchronize()``.

The ``official`` model is the release's architecture (trans_enc, 8 layers, latent 512, ff 1024,
4 heads) with random weights: it runs exactly as fast as the released checkpoint. Its text
feature comes from a stand-in encoder (a fixed random 512-dim feature per prompt): text is
encoded once per prompt before sampling and is not part of the sampling loop.

Modules, one job each:

* ``settings``: the bench's own choices (prompt, methods timed by default, method options);
* ``zoo``: the models (random-weight architectures or a loaded checkpoint) wrapped for recording;
* ``flops``: the analytic FLOP and memory-traffic model of one network call;
* ``device``: the accelerators' nominal peaks (one table), the measured matmul rate, syncing;
* ``memory``: peak memory of a block; ``sync_audit``: host synchronisations per sampling step;
* ``kernels``: kernel-launching ATen ops (the one module on a private torch API);
* ``runs``: one timed generation; ``checks``: audit, chunking and numerics sections;
* ``sections``: the measured report, section by section; ``estimate``: the analytic GPU estimate;
* ``report``: environment, ratios, tables, plot and atomic files; ``cli``: the command.
"""
