"""One training run: the loop (`loop`), what it carries between iterations (`state`), one step
and the optimiser (`step`), the learning-rate schedule, precise BN, the precision and device
policy, data parallelism, the inputs and the model as training builds them, and the run summary.

May import: `models`, `evaluation`, `runs`, `config`, `paper`, `data` and the ground (`errors`,
`atomic`); never a command."""
