"""Tests of rmjax.data.tokenizer: byte ids, round trips, the sequence layout and truncation."""

import numpy as np
import pytest

from rmjax.data import tokenizer as tokenizer_lib
from rmjax.data.tokenizer import ByteTokenizer
from rmjax.data.tokenizer import Truncation


def ids(text):
  """Hand-computed ids: UTF-8 bytes + 3."""
  return [b + 3 for b in text.encode("utf-8")]


def test_special_ids_and_vocab():
  tok = ByteTokenizer()
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 259)


def test_encode_values():
  tok = ByteTokenizer()
  out = tok.encode("Az\x00")
  assert out.dtype == np.int32
  assert out.tolist() == [65 + 3, 122 + 3, 0 + 3]
  assert tok.encode("").tolist() == []
  assert tok.encode("\xff").tolist() == [0xC3 + 3, 0xBF + 3]  # U+00FF is 2 bytes in UTF-8


@pytest.mark.parametrize("text", ["hello", "héllo wörld", "日本語 ✓ 🙂", "", "a\nb\tc\x7f"])
def test_round_trip(text):
  tok = ByteTokenizer()
  encoded = tok.encode(text)
  assert encoded.tolist() == ids(text)
  assert tok.decode(encoded) == text


def test_decode_ignores_specials_and_replaces_broken_utf8():
  tok = ByteTokenizer()
  assert tok.decode([1, *ids("hi"), 2, 0, 0]) == "hi"
  assert tok.decode(np.array([1, 2, 0], dtype=np.int64)) == ""
  assert tok.decode(ids("é")[:1]) == "\ufffd"  # a character cut in half
  with pytest.raises(ValueError, match="ids must lie in"):
    tok.decode([1, 259])
  with pytest.raises(ValueError, match="1-D"):
    tok.decode(np.zeros((2, 2), dtype=np.int32))
  with pytest.raises(TypeError, match="text must be a str"):
    tok.encode(b"bytes")


def test_pair_without_truncation():
  tokens, mask, cut = ByteTokenizer().encode_pair_sequences(
      "ab", "cde", max_len=10, max_prompt_len=5)
  assert tokens.dtype == np.int32 and mask.dtype == np.int32
  assert tokens.tolist() == [1, 100, 101, 102, 103, 104, 2, 0, 0, 0]
  assert mask.tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
  assert cut == Truncation(0, 0)
  assert not cut.prompt_truncated and not cut.response_truncated


def test_prompt_cut_from_the_left():
  # 8 prompt tokens, 3 kept: "fgh"; the response fits.
  tokens, mask, cut = ByteTokenizer().encode_pair_sequences(
      "abcdefgh", "xy", max_len=10, max_prompt_len=3)
  assert tokens.tolist() == [1, *ids("fgh"), *ids("xy"), 2, 0, 0, 0]
  assert mask.tolist() == [1] * 7 + [0] * 3
  assert cut == Truncation(prompt_tokens_cut=5, response_tokens_cut=0)
  assert cut.prompt_truncated and not cut.response_truncated


def test_response_keeps_its_first_tokens():
  # room for the response: 8 - 2 - 2 = 4 tokens of 10.
  tokens, mask, cut = ByteTokenizer().encode_pair_sequences(
      "ab", "0123456789", max_len=8, max_prompt_len=5)
  assert tokens.tolist() == [1, *ids("ab"), *ids("0123"), 2]
  assert mask.tolist() == [1] * 8
  assert cut == Truncation(prompt_tokens_cut=0, response_tokens_cut=6)


def test_both_cut_and_room_follows_kept_prompt():
  # prompt "abcdef" keeps "cdef" (4); response room 9 - 2 - 4 = 3 of "uvwxyz".
  tokens, mask, cut = ByteTokenizer().encode_pair_sequences(
      "abcdef", "uvwxyz", max_len=9, max_prompt_len=4)
  assert tokens.tolist() == [1, *ids("cdef"), *ids("uvw"), 2]
  assert cut == Truncation(2, 3)
  # A short prompt leaves more room for the response.
  tokens, _, cut = ByteTokenizer().encode_pair_sequences(
      "a", "uvwxyz", max_len=9, max_prompt_len=4)
  assert tokens.tolist() == [1, *ids("a"), *ids("uvwxyz"), 2]
  assert cut == Truncation(0, 0)


def test_multibyte_prompt_counts_bytes():
  # "é" is 2 tokens; max_prompt_len=1 keeps only its second byte.
  tokens, _, cut = ByteTokenizer().encode_pair_sequences(
      "é", "z", max_len=6, max_prompt_len=1)
  assert tokens.tolist() == [1, 0xA9 + 3, ids("z")[0], 2, 0, 0]
  assert cut == Truncation(1, 0)


def test_empty_parts_still_have_bos_and_eos():
  tok = ByteTokenizer()
  tokens, mask, cut = tok.encode_pair_sequences("", "", max_len=4, max_prompt_len=1)
  assert tokens.tolist() == [1, 2, 0, 0] and mask.tolist() == [1, 1, 0, 0]
  assert cut == Truncation(0, 0)
  tokens, mask, _ = tok.encode_pair_sequences("ab", "", max_len=6, max_prompt_len=3)
  assert tokens.tolist() == [1, *ids("ab"), 2, 0, 0]


def test_eos_is_last_real_token():
  tok = ByteTokenizer()
  for prompt, response in [("a" * 50, "b" * 50), ("x", "y"), ("", "long" * 20)]:
    tokens, mask, _ = tok.encode_pair_sequences(prompt, response, max_len=16,
                                                max_prompt_len=8)
    last = mask.sum() - 1
    assert tokens[0] == 1 and tokens[last] == 2 and mask.sum() >= 2
    assert np.all(tokens[last + 1:] == 0)


@pytest.mark.parametrize("max_len, max_prompt_len, match", [
    (3, 1, "max_len must be >= 4"),
    (8, 0, "max_prompt_len must satisfy 0 < max_prompt_len <= max_len - 3 = 5"),
    (8, 6, "got max_prompt_len=6 with max_len=8"),
    (8.0, 2, "max_len must be an int"),
    (8, True, "max_prompt_len must be an int"),
])
def test_length_validation(max_len, max_prompt_len, match):
  with pytest.raises(ValueError, match=match):
    ByteTokenizer().encode_pair_sequences("a", "b", max_len=max_len,
                                          max_prompt_len=max_prompt_len)
  with pytest.raises(ValueError, match=match):
    tokenizer_lib.validate_lengths(max_len, max_prompt_len)


def test_largest_allowed_prompt_leaves_one_response_token():
  tokens, _, cut = ByteTokenizer().encode_pair_sequences(
      "abcdef", "xyz", max_len=6, max_prompt_len=3)
  assert tokens.tolist() == [1, *ids("def"), ids("x")[0], 2]
  assert cut == Truncation(3, 2)
