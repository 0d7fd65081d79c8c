"""One extraction, from a plan to finished shards: `plan` (which shards this process owns),
`workers` (spawned decoding processes that die with their parent), `prepare` (the per-clip
worker job), `shard` (one shard's clips through the encoders), `summary`, and `run`
(`run_extract(config, progress)`, orchestration only). `emo predict` runs the same
`prepare` and `shard` code on new media."""
