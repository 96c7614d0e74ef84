#!/usr/bin/env python3
"""kvferry's engines against transformers reading the same Hugging Face directory (issue #16).

kvferry-make-model --format hf writes a random-weight model as a Hugging Face directory
(config.json, model.safetensors, tokenizer files); kvferry-dump-logits runs kvferry's CPU and/or
CUDA engine on fixed prompts from that directory. This script loads the same directory with
transformers' AutoModelForCausalLM (its own safetensors reader and its own architecture code:
LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM) in float32, without
TF32, and compares:

  * logits at every prompt position and every greedy step (teacher-forced on kvferry's tokens):
    per row max |ours - transformers| / rms(transformers);
  * greedy agreement: how many of kvferry's greedy tokens transformers' own greedy run repeats.

  hf_reference.py --dir DIR --prompts P.json --ours NAME=LOGITS.bin,TOKENS.json [--ours ...]
                  --json OUT.json

Prints one line per engine and writes the JSON (device, versions, per engine the worst and
per-prompt figures).
"""
import argparse
import json
import sys

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, help="the Hugging Face directory")
    parser.add_argument("--prompts", required=True, help="JSON array of token-id arrays")
    parser.add_argument("--ours", action="append", required=True,
                        help="NAME=LOGITS.bin,TOKENS.json from kvferry-dump-logits")
    parser.add_argument("--json", required=True)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()

    import torch
    import transformers

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = transformers.AutoModelForCausalLM.from_pretrained(args.dir, torch_dtype=torch.float32)
    model = model.to(args.device).eval()
    vocab = model.config.vocab_size
    prompts = json.load(open(args.prompts))

    def logits_of(ids):
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids], device=args.device)).logits[0].float()

    def greedy(prompt, steps):
        ids = list(prompt)
        for _ in range(steps):
            ids.append(int(logits_of(ids)[-1].argmax()))
        return ids[len(prompt):]

    result = {"dir": args.dir, "architecture": model.config.architectures,
              "torch": torch.__version__, "transformers": transformers.__version__,
              "device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
              "engines": {}}
    for spec in args.ours:
        name, files = spec.split("=", 1)
        logits_path, tokens_path = files.split(",")
        ours_tokens = json.load(open(tokens_path))
        ours = np.fromfile(logits_path, dtype=np.float32).reshape(-1, vocab)
        row, worst, agreeing, per_prompt = 0, 0.0, 0, []
        for prompt, tokens in zip(prompts, ours_tokens):
            n = len(prompt) + len(tokens)
            mine = torch.from_numpy(ours[row:row + n]).to(args.device)
            row += n
            ref = logits_of(prompt + tokens)
            rel = ((mine - ref).abs().max(dim=-1).values / ref.pow(2).mean(dim=-1).sqrt()).cpu().numpy()
            theirs = greedy(prompt, len(tokens))
            agree = next((i for i, (a, b) in enumerate(zip(tokens, theirs)) if a != b), len(tokens))
            agreeing += agree == len(tokens)
            worst = max(worst, float(rel.max()))
            per_prompt.append({"prompt_tokens": len(prompt), "steps": len(tokens),
                               "max_abs_over_rms": float(rel.max()), "greedy_agreement": agree})
        if row != ours.shape[0]:
            raise ValueError(f"{logits_path}: {ours.shape[0]} rows, the prompts and tokens need {row}")
        result["engines"][name] = {"worst_max_abs_over_rms": worst,
                                   "prompts_agreeing_all_steps": agreeing,
                                   "prompts": per_prompt}
        print(f"  {args.dir} [{name}]: worst max|Δlogit|/rms {worst:.2e}; greedy tokens equal "
              f"transformers' for {agreeing}/{len(prompts)} prompts", flush=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
