"""Export a trained workdir to a serving artifact:
python serve_export.py --workdir DIR --out ARTIFACT [--checkpoint best|latest|STEP] [--export.a.b=v ...]

Writes the item embeddings + vocabulary, a ScaNN index (parameters from the catalogue size unless
overridden, e.g. --export.index.kind=tree_ah --export.index.num_leaves_to_search=200), the user
encoder (jax.export), side tables and manifest.json; see mirecall_jax/serving/artifact.py.
Precedence: export_config() defaults < the workdir config's `export` section (if any) < flags.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from mirecall_jax.serving.export import export_config, export_from_workdir

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints/).")
flags.DEFINE_string("out", None, "Artifact directory to write.")
flags.DEFINE_string("checkpoint", "best", "best | latest | a saved step number.")
flags.DEFINE_bool("overwrite", False, "Replace --out if it already exists.")
config_flags.DEFINE_config_dict("export", export_config(), "Export / index parameters.", lock_config=True)
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    overrides: dict = {}  # only what was given on the command line: a workdir's own export section stays
    for dotted, value in config_flags.get_override_values(FLAGS["export"]).items():
        node = overrides
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    manifest = export_from_workdir(FLAGS.workdir, FLAGS.out, FLAGS.checkpoint, export_cfg=overrides,
                                   overwrite=FLAGS.overwrite)
    idx = manifest["index"]
    print(f"wrote {FLAGS.out}: family {manifest['family']}, step {manifest['checkpoint_step']}, "
          f"{manifest['num_items']} items x {manifest['embed_dim']}, K={manifest['num_interests']}, "
          f"index {idx['kind']} recall@{idx['recall_k']}={idx.get('recall@' + str(idx['recall_k']))}")


if __name__ == "__main__":
    app.run(main)
