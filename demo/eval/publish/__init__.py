"""Publishing the evaluation: docs/results.md, docs/leaderboard.md and the per-run reports, read from the
JSON results that the running side (`demo.eval`, `demo.eval.suite run`) writes; and the one markdown table
renderer that the results, the sweep and the benchmark share."""
