"""The hf rows of benchmarks/generation.py: transformers' greedy `generate` (CPU or --device).

Run by benchmarks/generation.py in an interpreter that has torch and transformers (they are
not rmjax dependencies; exit status 3 says they are missing). Prints one JSON line per case.

  <python with torch> benchmarks/generation_hf.py --model default --cases 1x32x32,8x32x32
  <python with torch> benchmarks/generation_hf.py --model smollm2 --gguf <file.gguf> ...
"""

import argparse
import json
import resource
import statistics
import sys
import time


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", required=True, choices=("default", "smollm2"))
  parser.add_argument("--gguf", default="")
  parser.add_argument("--cases", required=True, help="BxPxT,...")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
  args = parser.parse_args()
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f"torch/transformers not installed here ({e.name})")
    sys.exit(3)
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  if args.model == "smollm2":
    import pathlib  # pylint: disable=g-import-not-at-top
    path = pathlib.Path(args.gguf)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32)
  else:
    config = transformers.LlamaConfig(vocab_size=259, hidden_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=344,
                                      max_position_embeddings=512, tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(config)
  model.eval()
  device = torch.device(args.device)
  model.to(device)
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  vocab = model.config.vocab_size
  for case in args.cases.split(","):
    b, p, t = (int(x) for x in case.split("x"))
    prompt = torch.randint(3, vocab, (b, p), generator=torch.Generator().manual_seed(0))
    prompt = prompt.to(device)
    mask = torch.ones_like(prompt)
    kwargs = dict(attention_mask=mask, do_sample=False, max_new_tokens=t, min_new_tokens=t,
                  pad_token_id=0, eos_token_id=None)
    with torch.inference_mode():
      model.generate(prompt, **kwargs)  # warm-up
      sync()
      times = []
      for _ in range(args.repeats):
        start = time.perf_counter()
        model.generate(prompt, **kwargs)
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(json.dumps(dict(
        model=args.model, mode="hf", batch=b, prompt=p, new_tokens=t,
        median_s=round(median, 4), tokens_per_s=round(b * t / median, 1),
        memory_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **({"device": str(device), "cuda_peak_mb": round(
            torch.cuda.max_memory_allocated() / 2**20, 1)} if device.type == "cuda" else {}),
        torch=torch.__version__, transformers=transformers.__version__)), flush=True)


if __name__ == "__main__":
  main()
