"""`python -m resnet_repro report RUN_OR_SWEEP_DIR...`: our runs beside the paper's tables.

Reads every run under the given directories (a run dir is one with `summary.json`; a dir with
`metrics.jsonl` or a checkpoint but no summary is an unfinished run, listed as incomplete),
folds copies of one run into one (same content: recipe, seed, data fingerprint, weights digest),
groups the runs by experiment name, data set, recipe (every setting that changes what is
learned: resnet_repro/paper/judge.py) and training precision (never averaged across), counts seeds
(two runs of one seed are one seed), and writes into `--out` (default `./report`: the run
directories are only read, never written):

  report.md            Table 6 (CIFAR-10), plain nets, Tables 2/3/4 (ImageNet), figures, runs
  results.csv          every table row, one metric per line
  figure6_cifar.png    CIFAR-10 curves (Figure 6), when there are CIFAR runs
  figure4_imagenet.png ImageNet curves (Figure 4), when there are ImageNet runs
  figure7_layer_responses.png  layer responses (Figure 7), when runs have layer_responses.json
  layer_responses/        with --layer-responses: the responses measured for runs without one
  peers.json           with --peers DIR: public weights evaluated on the runs' CIFAR-10 data sets

Ours = mean ± sample std (n-1) over seeds, with the best run and n. A row gets a verdict only
when its runs followed the paper row's recipe (its exp with no overrides) on the paper's data,
else "not the paper's recipe: <each difference>"; on the JPEG copy, the gap and "no verdict".
The verdict compares our mean of n runs with the paper's number (a mean of n_paper runs) within
band = 2 * sigma * sqrt(1/n + 1/n_paper): "reproduced", "better than the paper" (below the
band) or "worse than the paper" (above). The rule and the arithmetic: resnet_repro/paper/judge.py.
"""

from resnet_repro.report.build import Report, build_report, cli_main
from resnet_repro.report.collect import EVAL_MISSING, Incomplete, Run, find_runs, load_run, read_eval_results
from resnet_repro.report.compare import Group, group_runs, stats
from resnet_repro.report.tables import imagenet_sections, table6

__all__ = [
    "EVAL_MISSING", "Group", "Incomplete", "Report", "Run", "build_report", "cli_main", "find_runs", "group_runs",
    "imagenet_sections", "load_run", "read_eval_results", "stats", "table6",
]
