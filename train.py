"""Train a recall model: python train.py --config configs/X.py --workdir DIR [--config.a.b=v ...].

Running it again on the same workdir resumes from the latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from mirecall_jax.train.loop import train_and_evaluate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file (get_config()).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the summary.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # Orbax logs every save at INFO; keep the console for progress
        logging.set_verbosity(logging.WARNING)
    summary = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    test = summary["test"]
    print(f"best step {summary['best_step']}: test recall@50={test['recall@50']:.4f} "
          f"hitrate@50={test['hitrate@50']:.4f} ndcg@50={test['ndcg@50']:.4f} ({summary['wall_seconds']} s)")


if __name__ == "__main__":
    app.run(main)
