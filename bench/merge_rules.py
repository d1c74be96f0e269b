"""How the per-interest lists are merged: the "mixture" merge against ComiRec's "score" merge.

For each trained workdir (best checkpoint), evaluates the valid and test splits twice with the same
interests and the same exact per-interest top-50 lists, once per `eval.merge`, and prints test
recall@20/50, NDCG@50, the mixture / score ratio and what `eval.merge = "auto"` picks (the rule with
the higher valid recall@50; "score" on ties) with its test recall@50. Writes
bench/results/merge_rules.json.

  .venv/bin/python bench/merge_rules.py --workdirs W1 [W2 ...]

For runs trained with eval.merge "score" or "auto" (both select checkpoints with the score merge) the
"auto" column is what train.py reports for the same seed today.
"""

from __future__ import annotations

import argparse

from mirecall_jax.evaluate import evaluate
from mirecall_jax.train.loop import restore_for_inference
from record import write_result

METRICS = ("recall@20", "recall@50", "ndcg@50")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdirs", nargs="+", required=True)
    args = p.parse_args()
    rows = []
    for workdir in args.workdirs:
        run = restore_for_inference(workdir, "best")
        row = {"workdir": workdir, "family": run.config.model.family, "dataset": run.config.data.format,
               "seed": run.config.seed, "step": run.step}
        for merge in ("score", "mixture"):
            run.config.eval.merge = merge
            m = evaluate(run.model, run.state, run.dataset, "test", run.config)
            row[merge] = {k: m[k] for k in METRICS}
            row[merge]["valid_recall@50"] = evaluate(run.model, run.state, run.dataset, "valid", run.config)["recall@50"]
        run.checkpointer.close()
        row["ratio@50"] = row["mixture"]["recall@50"] / row["score"]["recall@50"]
        row["auto"] = "mixture" if row["mixture"]["valid_recall@50"] > row["score"]["valid_recall@50"] else "score"
        rows.append(row)
        cells = "  ".join(f"{k} {row['score'][k]:.4f} -> {row['mixture'][k]:.4f}" for k in METRICS)
        print(f"{row['family']} {row['dataset']} seed {row['seed']} step {row['step']}: {cells}  "
              f"(recall@50 x{row['ratio@50']:.3f}; valid {row['score']['valid_recall@50']:.4f} -> "
              f"{row['mixture']['valid_recall@50']:.4f}; auto: {row['auto']}, test recall@50 "
              f"{row[row['auto']]['recall@50']:.4f})", flush=True)
    write_result("merge_rules", {"rows": rows})


if __name__ == "__main__":
    main()
