"""A run's records on disk: the run directory and its lock (`rundir`), checkpoints
(`checkpoint`), where a run stands (`state`: `status`), provenance, the metrics sinks
(`sinks`: metrics.jsonl and W&B), W&B history read back (`wandb_history`), durations (`units`).

May import: `config`, `paper`, `data`, the ground; never the loop or a command."""
