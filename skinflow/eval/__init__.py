"""The evaluation (docs/evaluation.md, docs/design.md §3b): predictions file -> metrics -> report.

- :mod:`skinflow.eval.metrics` (pure Python): read and check a predictions file, compute every metric from it with
  the rewards' scoring core (top-k at four credit levels, Stage II reward, safety, per skin type with bootstrap CIs,
  Stage I per-field caption scores).
- :mod:`skinflow.eval.report`: ``report.json``, ``report.md`` and the plots (matplotlib, imported when plotting).
- :mod:`skinflow.eval.predict`: run a model over a JSONL data set and write the predictions file (torch; resumable).

This ``__init__`` imports nothing, so ``import skinflow.eval.metrics`` stays pure.
"""
