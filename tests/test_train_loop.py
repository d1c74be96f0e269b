"""The shared train loop end to end: summary/metrics outputs, SIGKILL + resume equality, NaN stop, eval CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from mirecall_jax.config import base_config, override
from mirecall_jax.train.checkpoint import Checkpointer
from mirecall_jax.train.loop import restore_for_inference, train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "data.synthetic.num_users": 300, "data.synthetic.num_items": 1500, "data.synthetic.num_topics": 10,
    "data.synthetic.num_uploaders": 50, "data.synthetic.num_tags": 60, "data.synthetic.min_seq_len": 20,
    "data.synthetic.max_seq_len": 40, "data.synthetic.popularity_alpha": 0.5, "model.embed_dim": 16, "model.max_len": 20, "model.hidden_dim": 32,
    "loss.num_negatives": 64, "train.batch_size": 64, "train.max_steps": 60, "train.eval_every": 20,
    "train.log_every": 10, "train.patience": 0, "eval.batch_size": 64,
}


def _env(tmp_path):
    env = dict(os.environ, MIRECALL_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's run would have
    return env


def _train_cmd(workdir, **extra):
    args = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/single_vector_synthetic.py"),
            "--workdir", str(workdir)]
    return args + [f"--config.{k}={v}" for k, v in {**TINY, **extra}.items()]


def _final_params(workdir):
    run = restore_for_inference(str(workdir), "latest")
    return run.step, jax.tree.leaves(jax.device_get(run.state.params))


def test_sigkill_and_resume_gives_bitwise_identical_parameters(tmp_path):
    env = _env(tmp_path)
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(straight), env=env, check=True, capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 240
    # Kill once the step-20 evaluation is logged (its checkpoint save is then under way).
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and '"split": "valid"' in metrics.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Checkpointer(killed / "checkpoints").latest_step() in (None, 20)
    assert not (killed / "summary.json").exists()
    subprocess.run(_train_cmd(killed), env=env, check=True, capture_output=True, timeout=300)

    step_a, params_a = _final_params(straight)
    step_b, params_b = _final_params(killed)
    assert step_a == step_b == 60
    for a, b in zip(params_a, params_b):
        assert np.array_equal(a, b)

    summary = json.loads((killed / "summary.json").read_text())
    assert summary["best_step"] in (20, 40, 60) and 0.0 < summary["test"]["recall@50"] <= 1.0
    events = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert {e["split"] for e in events} == {"train", "valid", "test"}
    valid = [e for e in events if e["split"] == "valid"]
    assert [e["step"] for e in valid] == [20, 40, 60]
    for key in ("loss", "recall@20", "recall@50", "ndcg@20", "ndcg@50", "hitrate@20", "hitrate@50"):
        assert key in valid[0]
    assert "examples_per_s" in events[0] and list((straight / "tensorboard").iterdir())

    # The evaluate CLI: one JSON line with the metrics of the chosen checkpoint.
    out = subprocess.run([sys.executable, "-m", "mirecall_jax.evaluate", "--workdir", str(straight), "--split", "test",
                          "--checkpoint", "latest"], env=env, check=True, capture_output=True, text=True, timeout=300)
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["split"] == "test" and line["step"] == 60
    for key in ("recall@20", "recall@50", "hitrate@50", "ndcg@50", "ndcg_comirec@50", "coverage@50", "users"):
        assert key in line


def _tiny_config(tmp_path, **extra):
    c = base_config()
    c.data.cache_dir = str(tmp_path / "cache")
    return override(c, {**TINY, **extra})


def test_nan_loss_stops_the_run_and_keeps_good_checkpoints(tmp_path):
    c = _tiny_config(tmp_path, **{"train.learning_rate": 1e30, "train.warmup_steps": 50, "train.log_every": 1,
                                  "train.eval_every": 2})
    with pytest.raises(FloatingPointError, match="non-finite"):
        train_and_evaluate(c, str(tmp_path / "w"))
    ckpt = Checkpointer(tmp_path / "w" / "checkpoints")
    for step in ckpt.all_steps():  # whatever was saved before the blow-up is finite
        run = restore_for_inference(str(tmp_path / "w"), str(step))
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(run.state.params)))


def test_training_beats_popularity_on_synthetic(tmp_path):
    """The loop learns: test recall@50 beats recommending the 50 most popular training items."""
    from mirecall_jax.data.pipeline import load_dataset
    from mirecall_jax.metrics import ranking_metrics

    c = _tiny_config(tmp_path, **{"train.max_steps": 400, "train.eval_every": 200, "train.learning_rate": 5e-3})
    summary = train_and_evaluate(c, str(tmp_path / "w"))
    ds = load_dataset(c)
    popular = np.argsort(-ds.item_count, kind="stable")[:50]
    targets = np.zeros((len(ds.test.users), int((ds.test.target_end - ds.test.history_end).max())), np.int32)
    for row, (u, h, t) in enumerate(zip(ds.test.users, ds.test.history_end, ds.test.target_end)):
        targets[row, : t - h] = ds.sequence(u)[h:t]
    pop = ranking_metrics(np.tile(popular, (len(targets), 1)), targets, ns=(50,))["recall@50"]
    assert summary["test"]["recall@50"] > pop + 0.05, (summary["test"]["recall@50"], pop)


def test_rerunning_an_early_stopped_run_trains_no_further(tmp_path):
    # patience 1 with a constant-lr toy run: it stops at the first evaluation that does not improve.
    c = _tiny_config(tmp_path, **{"train.max_steps": 400, "train.eval_every": 20, "train.patience": 1,
                                  "train.learning_rate": 0.5})
    first = train_and_evaluate(c, str(tmp_path / "w"))
    assert first["last_step"] < 400
    again = train_and_evaluate(c, str(tmp_path / "w"))
    assert again["last_step"] == first["last_step"] and again["best_step"] == first["best_step"]


def test_moe_evaluation_reports_each_experts_gate_mass(tmp_path):
    """evaluate() averages the MoE gate over the split's users: E shares that sum to 1."""
    from mirecall_jax.config import use_family

    c = _tiny_config(tmp_path, **{"train.max_steps": 20, "train.eval_every": 20})
    use_family(c, "moe")
    c.train.batch_size = 64
    summary = train_and_evaluate(c, str(tmp_path / "w"))
    mass = [summary["test"][f"gate_mass/{e}"] for e in range(c.model.num_interests)]
    assert all(m > 0 for m in mass) and abs(sum(mass) - 1.0) < 1e-5, mass
    single = _tiny_config(tmp_path, **{"train.max_steps": 20, "train.eval_every": 20})
    assert "gate_mass/0" not in train_and_evaluate(single, str(tmp_path / "sv"))["test"]


def test_auto_merge_is_chosen_on_the_valid_split_and_recorded_for_export(tmp_path):
    """eval.merge = "auto": both rules evaluated on the best checkpoint's valid split, the better one
    used for the summary and written into config.json (what evaluation CLI, export and serving read)."""
    from mirecall_jax.config import use_family

    c = _tiny_config(tmp_path, **{"train.max_steps": 40, "train.eval_every": 40})
    use_family(c, "comirec_sa")
    assert c.eval.merge == "auto"
    summary = train_and_evaluate(c, str(tmp_path / "w"))
    choice = summary["merge_choice"]
    assert set(choice["valid"]) == {"score", "mixture"} and choice["merge"] in choice["valid"]
    assert choice["valid"][choice["merge"]] == max(choice["valid"].values())
    assert summary["valid"]["recall@50"] == choice["valid"][choice["merge"]]
    run = restore_for_inference(str(tmp_path / "w"))
    assert run.config.eval.merge == choice["merge"]
    run.checkpointer.close()
