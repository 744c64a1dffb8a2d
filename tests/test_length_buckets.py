"""Length buckets: the bucket rule by hand, the cut batch equals the max_len-padded batch
(loss, metrics, gradients, eval logits), and a jitted step compiles once per bucket met."""

import pathlib
import types
import sys

import jax
import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from configs import reward_model  # noqa: E402  pylint: disable=g-import-not-at-top
from rmjax import data as rm_data  # noqa: E402
from rmjax.tasks import policy  # noqa: E402
from rmjax.tasks import reward_model as rm_task  # noqa: E402
from rmjax.tasks.policy.config import get_config as policy_config  # noqa: E402
from rmjax.train import batching  # noqa: E402
from rmjax.train import program as program_lib  # noqa: E402
from rmjax.train import trainer  # noqa: E402

# float32 on CPU: the cut batch's sums over fewer (zero) padding terms round differently.
TOL = dict(rtol=2e-5, atol=2e-6)


# The bucket rule.

@pytest.mark.parametrize("spec, max_len, expected", [
    ("", 24, (24,)),
    ("  ", 24, (24,)),
    ("multiple:64", 384, (64, 128, 192, 256, 320, 384)),
    ("multiple:64", 200, (64, 128, 192, 200)),
    ("multiple:64", 64, (64,)),
    ("multiple:64", 30, (30,)),
    ("pow2", 24, (8, 16, 24)),
    ("pow2", 384, (8, 16, 32, 64, 128, 256, 384)),
    ("pow2", 256, (8, 16, 32, 64, 128, 256)),
    ("pow2", 8, (8,)),
    ("12,16", 24, (12, 16, 24)),
    ("12, 16, 24", 24, (12, 16, 24)),
])
def test_bucket_lengths_by_hand(spec, max_len, expected):
  assert rm_data.length_buckets(spec, max_len) == expected


@pytest.mark.parametrize("spec, message", [
    ("multiple:0", "'multiple:K' needs a positive integer K"),
    ("multiple:x", "'multiple:K' needs a positive integer K"),
    ("16,12", "positive and increasing"),
    ("16,16", "positive and increasing"),
    ("0,8", "positive and increasing"),
    ("8,32", "bucket 32 exceeds data.max_len=24"),
    ("powers", "expected '', 'multiple:K', 'pow2' or comma-separated lengths"),
])
def test_bad_bucket_specs_name_the_field(spec, message):
  with pytest.raises(ValueError, match="data.length_buckets: .*" + message.replace("(", r"\(")):
    rm_data.length_buckets(spec, 24)


def test_bad_spec_fails_when_the_data_config_is_checked():
  config = reward_model.get_config("smoke")
  config.data.length_buckets = "8,32"
  with pytest.raises(ValueError, match="bucket 32 exceeds data.max_len=24"):
    rm_data.load_preference_data(config.data, workdir="/nonexistent")


def test_bucket_of_a_length_exact_fits_and_too_long():
  buckets = (8, 16, 24)
  assert [rm_data.bucket_length(n, buckets) for n in (1, 8, 9, 16, 17, 24)] == [
      8, 8, 16, 16, 24, 24]
  with pytest.raises(ValueError, match="25 tokens does not fit the largest bucket 24"):
    rm_data.bucket_length(25, buckets)


def test_longest_real_lengths_of_pairs_and_lists():
  mask = lambda *lengths: np.array([[1] * n + [0] * (6 - n) for n in lengths], np.int32)
  arrays = {"chosen_mask": mask(2, 5, 3), "rejected_mask": mask(4, 2, 3)}
  seq_len, longest = rm_data.longest_real_lengths(arrays, ("chosen_mask", "rejected_mask",
                                                           "mask"))
  assert seq_len == 6 and longest.tolist() == [4, 5, 3]
  lists = {"mask": np.stack([mask(2, 6), mask(3, 3)])}  # [N=2, K=2, L=6]
  assert rm_data.longest_real_lengths(lists, ("mask",))[1].tolist() == [6, 3]
  # Left padding (real tokens last) or a hole: the width is the last real position + 1,
  # never the count of real tokens (cutting there would drop real tokens).
  left = np.array([[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]], np.int32)
  assert rm_data.longest_real_lengths({"mask": left}, ("mask",))[1].tolist() == [5, 0]
  with pytest.raises(ValueError, match="different lengths"):
    rm_data.longest_real_lengths({"chosen_mask": mask(2), "mask": np.ones((1, 4))},
                                 ("chosen_mask", "mask"))


def test_cut_keeps_other_fields_and_refuses_a_short_axis():
  batch = {"tokens": np.arange(12).reshape(2, 6), "features": np.ones((2, 6, 3)),
           "margin": np.ones(2)}
  cut = batching.cut_to_width(batch, 4, {"tokens": -1, "features": -2, "absent": -1})
  assert cut["tokens"].tolist() == [[0, 1, 2, 3], [6, 7, 8, 9]]
  assert cut["features"].shape == (2, 4, 3) and cut["margin"] is batch["margin"]
  with pytest.raises(ValueError, match="'tokens' has 6 positions on axis -1"):
    batching.cut_to_width(batch, 8, {"tokens": -1})


def test_buckets_on_a_task_without_token_axes_is_refused():
  config = reward_model.get_config("smoke")
  config.data.length_buckets = "pow2"
  task = rm_task.make_task(config)
  no_axes = task.__class__(**{**task.__dict__, "length_axes": None, "name": "rl"})
  with pytest.raises(ValueError, match="task 'rl' declares no token axes"):
    trainer.make_placer(config, no_axes, None)


# Values: a cut batch against the max_len-padded batch.

def _values(task, program, params, batch):
  loss_fn = task.make_loss(program.graphdef, lambda fn: fn)
  (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      params, batch, jax.random.PRNGKey(0))
  # The eval logits of pairs (listwise trains on lists and evaluates pairs).
  logits = (jax.jit(task.make_eval(program.graphdef, lambda fn: fn))(params, batch)
            if "chosen_mask" in batch else None)
  return jax.device_get((loss, metrics, grads, logits))


def _task(kind, max_len, spec):
  """A reward-model family's smoke task, or ("sft") the SFT task's, at max_len / spec."""
  config = policy_config("sft", "smoke") if kind == "sft" else reward_model.get_config(
      f"{kind},smoke")
  config.data.update(max_len=max_len, length_buckets=spec)
  config.mesh.num_devices = 1
  return config, (policy.make_task if kind == "sft" else rm_task.make_task)(config)


@pytest.mark.parametrize("kind", ["bt", "listwise", "sft"])
def test_cut_batch_equals_the_padded_batch(kind):
  """Loss, metrics, every gradient and (pairs) the eval logits of a batch cut from 48 to
  24 positions equal those of the same batch padded to 48 (pairs, lists, SFT sequences)."""
  config, task = _task(kind, 48, "24")
  program = program_lib.build_program(config, task, devices=jax.devices()[:1])
  params = program.init(jax.random.PRNGKey(0)).params
  data = task.load_data("/nonexistent")
  placer = trainer.make_placer(config, task, program.batch_sharding)
  indices = data.train.train_indices(0, config.train.batch_size, config.data_seed)
  cut = placer(data.train, indices)
  full = batching.place_batch(data.train, indices, program.batch_sharding, task.batch_fields)
  token_fields = [k for k in task.length_axes if k in cut]
  assert token_fields and all(cut[k].shape[-1] == 24 for k in token_fields)
  assert all(full[k].shape[-1] == 48 for k in token_fields)
  got, want = _values(task, program, params, cut), _values(task, program, params, full)
  for (path, a), (_, b) in zip(jax.tree_util.tree_flatten_with_path(got)[0],
                               jax.tree_util.tree_flatten_with_path(want)[0]):
    np.testing.assert_allclose(a, b, **TOL, err_msg=jax.tree_util.keystr(path))
  assert float(np.abs(want[0])) > 0.1  # a real loss, not a vacuous comparison


# Compiles: at most one per bucket met.

def test_one_compile_per_bucket_met_over_varied_lengths():
  """Smoke batches' longest sequences are 17 to 19 tokens: under buckets (12, 16, 18, 20,
  24) they take widths 18 and 20, and the jitted train and eval steps compile exactly once
  for each width met, whatever the number of steps."""
  config, task = _task("bt", 24, "12,16,18,20")
  program = program_lib.build_program(config, task, devices=jax.devices()[:1])
  state = program.init(jax.random.PRNGKey(0))
  data = task.load_data("/nonexistent")
  placer = trainer.make_placer(config, task, program.batch_sharding)
  for step in range(12):
    batch = placer(data.train, data.train.train_indices(step, config.train.batch_size,
                                                        config.data_seed))
    state, _ = program.train_step(state, batch)
  train_widths = set(placer.widths_used["train"])
  assert train_widths == {18, 20}
  assert program.train_step._cache_size() == len(train_widths)  # pylint: disable=protected-access
  for indices, valid in rm_data.eval_index_batches(data.eval.num_examples, 32):
    program.eval_step(state.params, placer(data.eval, indices, valid))
  eval_widths = set(placer.widths_used["eval"])
  assert eval_widths and eval_widths <= {16, 18, 20, 24}
  assert program.eval_step._cache_size() == len(eval_widths)  # pylint: disable=protected-access


def test_every_process_picks_the_bucket_of_the_global_batch():
  """The width comes from the global indices and the whole dataset's masks: a process that
  loads only half of the rows still picks the bucket of the batch's longest sequence, even
  when that sequence is in the other half."""
  config, task = _task("bt", 24, "12,16,18,20")
  data = task.load_data("/nonexistent")
  placer = batching.BatchPlacer(None, task.batch_fields, length_axes=task.length_axes,
                                mask_fields=task.token_mask_fields, spec="12,16,18,20")
  _, longest = placer.buckets_and_lengths(data.train)
  order = np.argsort(longest, kind="stable")
  indices = np.concatenate([order[:8], order[-8:]])  # the longest rows in the second half
  assert longest[indices[:8]].max() < longest[indices].max()
  expected = rm_data.bucket_length(int(longest[indices].max()), (12, 16, 18, 20, 24))
  assert placer.width(data.train, indices) == expected
  assert placer.width(data.train, indices[::-1]) == expected


def test_default_preset_is_never_cut_so_its_run_is_unchanged():
  """The default job's buckets are (8, 16, 24); every one of its 1000 training batches and
  its eval batches holds a sequence of more than 16 tokens, so each is cut to 24 = max_len:
  the arrays it trains and evaluates on, and so its compiled step and its metrics
  (held-out accuracy 0.8687 at step 1000), are bitwise those of the unbucketed job."""
  config = reward_model.get_config()
  assert rm_data.length_buckets(config.data.length_buckets, config.data.max_len) == (8, 16, 24)
  task = rm_task.make_task(config)
  data = task.load_data("/nonexistent")
  placer = trainer.make_placer(config, task, None)
  train_widths = {placer.width(data.train, data.train.train_indices(
      step, config.train.batch_size, config.data_seed)) for step in range(config.train.num_steps)}
  eval_widths = {placer.width(data.eval, indices) for indices, _ in
                 rm_data.eval_index_batches(data.eval.num_examples, config.eval.batch_size)}
  assert train_widths == eval_widths == {config.data.max_len}


def test_reward_model_token_axes_of_each_input_kind():
  """Tokens and masks are cut on their last axis, per-token cached features [B, L, D]
  (trainable "last_blocks") on their second-to-last; pooled features [B, D] have none."""
  from rmjax.tasks.reward_model import task as task_lib  # pylint: disable=g-import-not-at-top
  pairs = types.SimpleNamespace(data_format="pairs")
  model = lambda *fields: types.SimpleNamespace(input_fields=fields)
  assert task_lib._length_axes(pairs, model("tokens", "mask")) == {  # pylint: disable=protected-access
      "chosen_tokens": -1, "rejected_tokens": -1, "chosen_mask": -1, "rejected_mask": -1}
  assert task_lib._length_axes(pairs, model("features", "mask")) == {  # pylint: disable=protected-access
      "chosen_features": -2, "rejected_features": -2, "chosen_mask": -1, "rejected_mask": -1}
  assert task_lib._length_axes(pairs, model("features")) == {}  # pylint: disable=protected-access
  lists = types.SimpleNamespace(data_format="lists")
  assert task_lib._length_axes(lists, model("tokens", "mask")) == {"tokens": -1, "mask": -1}  # pylint: disable=protected-access
