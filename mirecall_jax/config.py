"""Default configuration: every field, with a comment saying what it does.

`configs/{family}_{dataset}.py` files start from `base_config()` and override what differs, so this
file is the one place that documents the whole public contract. Keys users and scripts rely on:
`seed`, `data.format`, `data.path`, `data.on_bad_row`, `model.embed_dim`, `model.max_len`,
`model.num_interests`, `train.batch_size`, `train.max_steps`, `train.eval_every`.
"""

from __future__ import annotations

import importlib.util

import ml_collections

from mirecall_jax.pinnersage.config import item2vec_config, pinnersage_config


def synthetic_config() -> ml_collections.ConfigDict:
    """The built-in synthetic log with planted multi-interest structure (data.format = "synthetic")."""
    c = ml_collections.ConfigDict()
    c.num_users = 5000  # users generated (before k-core; nearly all survive it)
    c.num_items = 20000  # videos in the catalogue
    c.num_topics = 50  # planted topics; each video has exactly one
    c.num_uploaders = 2000  # uploaders; each specialises in `uploader_topics` topics
    c.uploader_topics = 2  # topics an uploader posts in
    c.num_tags = 500  # tag vocabulary; tags are topic-correlated
    c.tags_per_item = 3  # tags drawn per video (mostly from its topic's tag pool)
    c.tag_noise = 0.1  # probability a tag is drawn uniformly instead of from the topic pool
    c.max_interests = 4  # a user has 1..max_interests planted topics (count varies across users)
    c.min_seq_len = 20  # watch-sequence length range per user, uniform
    c.max_seq_len = 80
    c.switch_prob = 0.3  # probability the next watch switches to another of the user's interests
    c.noise = 0.05  # probability a watch is a uniformly random video (off-interest noise)
    c.popularity_alpha = 1.0  # Zipf exponent of video popularity within a topic
    return c


def csv_config() -> ml_collections.ConfigDict:
    """Column mapping for data.format = "csv" / "parquet"."""
    c = ml_collections.ConfigDict()
    c.events_file = "events.csv"  # file name inside data.path
    c.delimiter = ","  # field separator (csv only); "\t" for TSV
    c.header = True  # first line holds column names (csv only); else columns are 0-based positions
    c.user_col = "user_id"  # column with the user id
    c.item_col = "item_id"  # column with the item id
    c.time_col = "timestamp"  # column with an integer timestamp
    c.uploader_col = ""  # optional column with the uploader / creator id ("" = none)
    c.tags_col = ""  # optional column with tags, separated by `tag_separator` ("" = none)
    c.tag_separator = "|"
    c.category_col = ""  # optional column with the item category, for diversity metrics
    return c


def data_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Source format: synthetic | movietweetings | movielens | grocery | comirec | csv | parquet.
    c.format = "synthetic"
    c.path = ""  # directory holding the source files (unused for synthetic)
    c.comirec_name = ""  # comirec format: file prefix, e.g. "book" for book_train.txt ("" = detect)
    c.on_bad_row = "error"  # "error": stop at the first bad row; "skip": count it by reason, go on
    c.min_item_count = 5  # k-core: keep items with >= this many interactions (ComiRec: 5) ...
    c.min_user_count = 5  # ... then users with >= this many (0 disables either filter)
    c.split = "comirec"  # "comirec": users 8:1:1, eval users split 80/20; "leave_last_out"
    c.split_fractions = (0.8, 0.1, 0.1)  # train / valid / test user fractions (comirec split)
    c.eval_history_fraction = 0.8  # eval users: this leading share of the sequence is the history
    c.max_tags = 4  # T: tags kept per item (padded with 0)
    c.cache_dir = ""  # processed-dataset cache ("" = $MIRECALL_CACHE or ~/.cache/mirecall_jax)
    c.synthetic = synthetic_config()
    c.csv = csv_config()
    return c


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # every random draw (data split, sampler, init, dropout, negatives) derives from it
    c.data = data_config()

    c.model = ml_collections.ConfigDict()
    c.model.family = "single_vector"  # user tower + loss; the table is mirecall_jax/models/__init__.py
    c.model.embed_dim = 64  # D: item embedding and interest vector size
    c.model.max_len = 50  # L: history length seen by the user tower (most recent L items)
    c.model.num_interests = 4  # K: interest vectors per user (single_vector always uses 1)
    c.model.hidden_dim = 256  # width of the user tower's hidden layer(s)
    c.model.use_uploader = False  # fuse the uploader id embedding into item representations
    c.model.use_tags = False  # fuse the masked mean of the item's tag embeddings
    c.model.dropout = 0.0  # dropout rate inside the user tower (training only)
    # Transformer (single_activation): pre-LN encoder, then K interests read out of it.
    c.model.num_layers = 2  # encoder layers
    c.model.num_heads = 2  # attention heads (D must divide by it)
    c.model.mlp_dim = 0  # encoder MLP width (0 = 4 * embed_dim)
    c.model.readout = "queries"  # "queries": K learned query tokens; "attentive": ComiRec-SA pooling
    c.model.readout_values = "encoded"  # pool the "encoded" transformer outputs or the watched videos' "ids" embeddings
    c.model.readout_projection = True  # a Dense layer on the pooled interests (off: pooled as they are)
    # Disagreement regularisation among the K interests (each weight 0 = off; raw terms always logged).
    c.model.cos_weight = 0.0  # mean |cos| between pairs of interest vectors
    c.model.orth_weight = 0.0  # ||M_n M_n^T - I||^2 on L2-normalised interests
    c.model.attn_weight = 0.0  # overlap of the K read-out attention maps ||A A^T - I||^2
    # Which interest the loss trains (multi-interest families).
    c.model.activation = "argmax"  # "argmax": single activation; "label_aware": MIND's soft attention
    c.model.activation_power = 1.0  # p of label-aware attention softmax(sign(s)|s|^p)
    c.model.comirec_hidden_factor = 4  # ComiRec-SA: attention hidden size D_a = factor * D
    c.model.routing_iters = 3  # MIND: dynamic-routing iterations
    c.model.dynamic_k = True  # MIND: K'_u = max(1, min(K, floor(log2 |history|)))
    # Mixture-of-Experts two-tower (family "moe"); E = model.num_interests experts.
    c.model.moe = ml_collections.ConfigDict()
    c.model.moe.aggregation = "max"  # "max": score = max_e <m_e, v> (E queries); "gated": sum_e g_e <m_e, v>
    c.model.moe.gate_hidden = 0  # gate MLP width (0 = linear gate)
    c.model.moe.balance_weight = 0.01  # Switch-style load-balancing loss against expert collapse
    c.model.moe.router_weight = 0.1  # "max": train the gate to predict the expert that wins
    c.model.moe.item_mlp = True  # video tower: MLP on top of the (side-fused) id embedding
    c.model.moe.gate_threshold = 0.0  # "max", inference: drop experts whose gate weight is below
    c.model.moe.share_embeddings = True  # history pools read the video tower's id / uploader / tag tables (else own ones)
    c.model.moe.normalize = True  # L2-normalise expert and video vectors: scores are cosines / loss.temperature
    # Activation records and dynamic capacity (multi-interest families).
    c.model.record_per_user = True  # keep the [num_users, K] table besides the global [K] counts
    c.model.prune_threshold = 0.0  # at inference drop interests whose activation share is below (0 = off)
    c.model.prune_min_count = 20  # a user needs this many own records to use them; else history share
    c.model.item2vec = item2vec_config()  # family "item2vec" (fields in mirecall_jax/pinnersage/config.py)
    c.model.pinnersage = pinnersage_config()  # family "pinnersage" (fields in mirecall_jax/pinnersage/config.py)

    c.loss = ml_collections.ConfigDict()
    c.loss.kind = "sampled_softmax"  # "sampled_softmax" (shared sampled negatives) | "in_batch"
    c.loss.num_negatives = 1280  # N: shared negatives per step (sampled_softmax)
    c.loss.negative_sampling = "popularity"  # "uniform" | "popularity" (count ** alpha)
    c.loss.popularity_alpha = 0.75  # exponent of the popularity sampling distribution (word2vec's 0.75)
    c.loss.logq_correction = True  # subtract log Q(item) from logits (sampling-bias correction)
    # in_batch only: Q from precomputed training "counts", or "streaming" estimates updated inside
    # the step (Yi et al. 2019: hashed last-seen-step / gap arrays), for logs too large to count.
    c.loss.logq_source = "counts"
    c.loss.frequency_buckets = 1 << 18  # hash buckets of the streaming estimate (collisions share one)
    c.loss.frequency_lr = 0.05  # EMA rate of the streaming gap estimate
    c.loss.temperature = 1.0  # logits are divided by it
    c.loss.focal_gamma = 0.0  # focal loss -(1 - p)^gamma log p; 0 = plain softmax cross-entropy

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 256  # global batch size (split over processes and devices)
    c.train.max_steps = 20000  # optimisation steps at most (early stopping may end sooner)
    c.train.eval_every = 1000  # steps between evaluations on the valid split (and checkpoints)
    c.train.patience = 5  # stop after this many evaluations without a better valid recall@50 (0 = never)
    c.train.log_every = 100  # steps between training-metric log lines (loss is checked for NaN there)
    c.train.optimizer = "adam"  # "adam" | "adamw" | "adagrad"
    c.train.learning_rate = 1e-3  # peak learning rate
    c.train.weight_decay = 0.0  # adamw only
    c.train.warmup_steps = 0  # linear warmup from 0 to learning_rate
    c.train.schedule = "constant"  # after warmup: "constant" | "cosine" (to 0 at max_steps)
    c.train.grad_clip_norm = 0.0  # clip gradients to this global norm (0 = off)
    c.train.keep_checkpoints = 2  # latest checkpoints kept (the best by valid recall@50 is kept too)
    c.train.async_checkpoint = True  # save checkpoints in the background while training continues

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 512  # users per evaluation batch
    c.eval.exclude_history = False  # drop history items from recommendations (ComiRec keeps them)
    # How the K per-interest top-N lists become one (serving/merge.py): "score" = ComiRec's max raw score;
    # "mixture" = log sum_k pi_k p_k(i), p_k interest k's softmax over the catalogue, pi = the user's
    # activation share; "auto" = "score" while training (checkpoint selection), then whichever of the two
    # has the higher valid recall@50 on the best checkpoint, written back to the workdir's config.json
    # (export and serving use it). Neither wins everywhere: same checkpoints, test recall@50, mixture vs
    # score: synthetic +2-4.5%, MovieTweetings -2..+1%, Grocery -20..-0.5% (bench/merge_rules.py, README).
    c.eval.merge = "auto"
    c.eval.mixture_uniform = 0.1  # pi = (1 - u) * share + u / K: every queried interest keeps some weight
    c.eval.chunk_size = 65536  # items scored at once by the exact top-k (bounds memory)
    return c


def use_dataset(c: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """Dataset presets shared by every family's config (format, default path, history length, cadence).

    Real logs here are small (a few thousand training users), so models peak within a few epochs:
    evaluate often and stop on the valid split rather than training for a fixed budget.
    """
    if name == "synthetic":
        c.data.format = "synthetic"
        c.model.max_len = 50
        c.train.batch_size = 256
        c.train.max_steps = 5000  # the transformer is still improving at 3,000; the others stop early
        c.train.eval_every = 500
    elif name in ("movietweetings", "grocery"):
        c.data.format = name
        c.data.path = {"movietweetings": "../shared/data/movietweetings-100k", "grocery": "../shared/data/grocery"}[name]
        c.model.max_len = 20  # 5-core median history is 8-10 items; ComiRec uses 20 on comparable logs
        c.train.batch_size = 128
        c.train.max_steps = 30000
        c.train.eval_every = 200
        c.train.patience = 5
    else:
        raise ValueError(f"unknown dataset preset {name!r}")
    return c


def use_family(c: ml_collections.ConfigDict, family: str) -> ml_collections.ConfigDict:
    """Family presets shared by every dataset's config: the model and loss a family is defined by."""
    c.model.family = family
    if family == "single_vector":
        c.model.num_interests = 1
    elif family == "single_activation":
        c.model.num_interests = 4
        c.model.use_uploader = True  # side features enter the history encoder only;
        c.model.use_tags = True  # the loss and the index use video-id embeddings
        c.model.dropout = 0.1
        # Measured on synthetic (3,000 steps, valid recall@50 at step 1,500): one layer whose residual
        # branches start at zero (EncoderBlock) 0.4879, the same with random output projections
        # 0.4593, no encoder layer 0.4891; pooling the watched videos' id embeddings beats pooling
        # the side-fused inputs (test 0.4856 vs 0.4657 at 4,000 steps) and query tokens over
        # encoded outputs (valid 0.4407 at 2,000 steps, 2 layers).
        c.model.num_layers = 1
        c.model.readout = "attentive"
        c.model.readout_values = "ids"
        c.model.readout_projection = False
    elif family in ("comirec_sa", "mind"):
        c.model.num_interests = 4
    elif family == "moe":
        c.model.num_interests = 4  # E experts
        c.model.use_uploader = True  # the video tower fuses uploader and tag embeddings
        c.model.use_tags = True
        c.loss.kind = "in_batch"  # negatives: the other targets of the global batch, on every device
        c.loss.focal_gamma = 1.0  # up-weights examples whose positive is hard; 0 = plain softmax
        c.loss.temperature = 0.05  # cosine logits (model.moe.normalize) span [-20, 20]
        c.model.dropout = 0.2  # on the pooled history and inside the experts: the towers overfit without it
        preset_batch = c.train.batch_size
        c.train.batch_size = max(preset_batch, 512)  # in-batch: the batch is the negative pool
        # Evaluate after as many training examples as the dataset preset intends, not as many
        # steps: on MovieTweetings the MoE peaks within ~100 steps of 512 (about one epoch).
        c.train.eval_every = max(1, c.train.eval_every * preset_batch // c.train.batch_size)
    elif family == "item2vec":
        c.model.num_interests = 1  # one query vector (the window's pair-weighted input vectors)
        c.loss.negative_sampling = "popularity"  # count ** 0.75: word2vec's noise distribution
        c.loss.popularity_alpha = 0.75
        c.loss.logq_correction = False  # word2vec's negative sampling does not correct for the proposal
    elif family == "pinnersage":
        c.model.num_interests = 4  # K medoids queried per user
        c.model.record_per_user = False  # no activation records: nothing is trained
        c.model.pinnersage.embeddings = "item2vec"  # the source workdir: --config.model.pinnersage.source=
    else:
        raise ValueError(f"unknown family preset {family!r}")
    return c


def override(c: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
    """Sets dotted keys ({"train.max_steps": 10}) in place, like --config.a.b=v on the command line."""
    for dotted, value in overrides.items():
        node = c
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of a configs/*.py file, loaded by path (what --config does)."""
    spec = importlib.util.spec_from_file_location("mirecall_config_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
