"""The GPU lease of experiments/gpu/lease.sh (issue 22), by job: `settings` (the LEASE_*
variables), `sweep` (the sweep's job list, its shares and their detached launch), `bench_plan`
(the time-boxed benches and the compile mode and concurrency their JSONs favour), `machine`
(the environment record and the data decoded once), `records` (what `poll` shows and what
`collect` packs) and `cli` (`python -m lease <verb>`).

The lease script sets the environment (LEASE_* variables, read by `LeaseSettings.from_env`;
they are listed in experiments/gpu/README.md) and calls the verbs. The runs and benches are
`python -m resnet_repro ...` subprocesses, as a user would type them, so this package reads no
composed config (the job list comes from the exp file itself) and imports torch only to decode
the data (`data`).
"""
