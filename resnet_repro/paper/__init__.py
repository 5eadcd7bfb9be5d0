"""The paper's numbers (`numbers`: Tables 1-4 and 6, the published peers) and the judge that
compares a run's recipe and results with a paper row (`judge`). No torch.

May import: `config`, `runs.state`, the ground."""
