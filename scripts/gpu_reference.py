#!/usr/bin/env python3
"""kvferry's engine against an independent implementation on identical weights (DESIGN.md §5).

Loads a GGUF written by kvferry-make-model, with its config.json, into transformers'
LlamaForCausalLM in bfloat16 — the GGUF's own tensors, so both implementations see bit-identical
weights (llama.cpp's Q/K row permutation undone) — and compares with what kvferry-dump-logits
wrote for the same prompts:

  * logits at every prompt position (kvferry's prefill path) and at every greedy decode step
    (its decode path, teacher-forced on kvferry's tokens), against transformers' logits at the
    same positions. The reference logits are transformers' final hidden states times lm_head in
    float32 (transformers' own bfloat16 lm_head output has ties among 128K tokens);
  * greedy agreement: transformers' own greedy continuation against kvferry's.

As the yardstick for "within bfloat16's error", the same weights also run in float32 (exact
arithmetic for this purpose): the script reports kvferry's and transformers' bfloat16 distance
from it side by side, and how often transformers' bfloat16 greedy run leaves the float32 one.

With --bench it also measures transformers' prefill and decode throughput (eager, no compile) for
scripts/bench_gpu.sh. Writes one JSON object to --json.
"""
import argparse
import json
import mmap
import struct
import sys
import time
import warnings

import numpy as np

SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
TENSOR_TYPES = {0: np.float32, 1: np.float16, 30: np.uint16}  # F32, F16, BF16 (as raw bits)


class GgufReader:
    """The parts of GGUF v3 kvferry-make-model writes: metadata and F32/F16/BF16 tensors."""

    def __init__(self, path):
        self.file = open(path, "rb")
        self.buf = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
        self.pos = 0
        if self.read("I") != 0x46554747:
            raise ValueError(f"{path}: not a GGUF file")
        version = self.read("I")
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version}")
        tensor_count = self.read("Q")
        kv_count = self.read("Q")
        self.metadata = {}
        for _ in range(kv_count):
            key = self.string()
            self.metadata[key] = self.value(self.read("I"))
        infos = []
        for _ in range(tensor_count):
            name = self.string()
            dims = [self.read("Q") for _ in range(self.read("I"))]
            infos.append((name, dims, self.read("I"), self.read("Q")))
        alignment = int(self.metadata.get("general.alignment", 32))
        start = (self.pos + alignment - 1) // alignment * alignment
        self.tensors = {}
        for name, dims, ggml_type, offset in infos:
            if ggml_type not in TENSOR_TYPES:
                raise ValueError(f"{path}: tensor {name} has ggml type {ggml_type}")
            count = int(np.prod(dims))
            array = np.frombuffer(self.buf, dtype=TENSOR_TYPES[ggml_type], count=count,
                                  offset=start + offset)
            # ggml dims are {row length, rows}: numpy's shape is the reverse.
            self.tensors[name] = (ggml_type, array.reshape(list(reversed(dims))))

    def read(self, fmt):
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize("<" + fmt)
        return value

    def string(self):
        n = self.read("Q")
        text = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", "replace")
        self.pos += n
        return text

    def value(self, kind):
        if kind == 8:
            return self.string()
        if kind == 9:
            element, n = self.read("I"), self.read("Q")
            if element in SCALARS and element != 7:
                dtype = np.dtype("<" + SCALARS[element])
                array = np.frombuffer(self.buf, dtype=dtype, count=n, offset=self.pos)
                self.pos += n * dtype.itemsize
                return array
            return [self.value(element) for _ in range(n)]
        return self.read(SCALARS[kind])


def unpermute(weight, heads):
    """llama.cpp's convert script interleaves each head's two RoPE halves; transformers does not."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def load_transformers(gguf_path, config_path, device, dtype_name="bfloat16"):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with open(config_path) as f:
        config = LlamaConfig(**json.load(f))
    try:
        config._attn_implementation = "sdpa"
    except AttributeError:
        pass  # a version that picks by itself
    # The GGUF is memory-mapped read-only; tensors are copied to the device, never written.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    gguf = GgufReader(gguf_path)
    dtype = getattr(torch, dtype_name)
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model.eval()
    torch.set_default_dtype(torch.float32)

    def tensor(name, heads=None):
        kind, array = gguf.tensors[name]
        if heads is not None:
            array = unpermute(array, heads)
        array = np.ascontiguousarray(array)
        if kind == 30:
            return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16).to(dtype)
        # Norms are float32 in the file: both models see them rounded to bfloat16, as the engine.
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16).to(dtype)

    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    parts = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    state = {}
    with torch.no_grad():
        for name in gguf.tensors:
            if name == "rope_freqs.weight":
                continue  # transformers computes the Llama 3 frequencies from config.json
            if name in names:
                target = names[name]
                value = tensor(name)
            else:
                _, layer, part, _ = name.split(".")
                target = f"model.layers.{layer}.{parts[part]}.weight"
                heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}.get(part)
                value = tensor(name, heads)
            state[target] = value
        missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"weights did not map: missing {missing}, unexpected {unexpected}")
    return model, config


def reference_logits(model, ids, device):
    import torch

    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids], device=device)).last_hidden_state[0]
        return hidden.float() @ model.lm_head.weight.float().T


def greedy(model, prompt, steps, device):
    import torch

    tokens, gaps = [], []
    with torch.no_grad():
        out = model.model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
        for _ in range(steps):
            logits = out.last_hidden_state[0, -1].float() @ model.lm_head.weight.float().T
            top = torch.topk(logits, 2)
            tokens.append(int(top.indices[0]))
            gaps.append(float(top.values[0] - top.values[1]))
            out = model.model(input_ids=torch.tensor([[tokens[-1]]], device=device),
                              past_key_values=out.past_key_values, use_cache=True)
    return tokens, gaps


def relative_max(ours, ref):
    """Per row: max |ours - ref| / rms(ref)."""
    scale = ref.pow(2).mean(dim=-1).sqrt()
    return ((ours - ref).abs().max(dim=-1).values / scale).cpu().numpy()


def agreement(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare(args, model, exact, config, device):
    import torch

    prompts = json.load(open(args.prompts))
    ours_tokens = json.load(open(args.tokens))
    vocab = config.vocab_size
    ours = np.fromfile(args.logits, dtype=np.float32).reshape(-1, vocab)
    results, row = [], 0
    worst = {"ours_vs_bf16": 0.0, "ours_vs_f32": 0.0, "bf16_vs_f32": 0.0}
    agreeing = 0
    for prompt, tokens in zip(prompts, ours_tokens):
        steps = len(tokens)
        mine = torch.from_numpy(ours[row:row + len(prompt) + steps]).to(device)
        row += len(prompt) + steps
        ids = prompt + tokens
        bf16 = reference_logits(model, ids, device)
        f32 = reference_logits(exact, ids, device)
        distances = {"ours_vs_bf16": relative_max(mine, bf16), "ours_vs_f32": relative_max(mine, f32),
                     "bf16_vs_f32": relative_max(bf16, f32)}
        summary = {}
        for name, values in distances.items():
            summary[name + "_prefill"] = float(values[:len(prompt)].max())
            summary[name + "_decode"] = float(values[len(prompt):].max())
            worst[name] = max(worst[name], float(values.max()))
        theirs, gaps = greedy(model, prompt, steps, device)
        exact_tokens, _ = greedy(exact, prompt, steps, device)
        agree = agreement(tokens, theirs)
        agreeing += agree == steps
        results.append({"prompt_tokens": len(prompt), "steps": steps, "greedy_agreement": agree,
                        "gap_at_divergence": gaps[agree] if agree < steps else None,
                        "smallest_gap": min(gaps),
                        "ours_vs_f32_greedy_agreement": agreement(tokens, exact_tokens),
                        "bf16_vs_f32_greedy_agreement": agreement(theirs, exact_tokens),
                        "logit_rms": float(bf16.pow(2).mean(dim=-1).sqrt().mean()), **summary})
        print(f"  prompt of {len(prompt)}: greedy agrees with transformers for {agree}/{steps} steps"
              + (f" (its top-2 gap there {gaps[agree]:.4f})" if agree < steps else "")
              + f"; max|Δlogit|/rms vs transformers-bf16 {float(distances['ours_vs_bf16'].max()):.4f};"
              + f" vs float32: ours {float(distances['ours_vs_f32'].max()):.4f},"
              + f" transformers-bf16 {float(distances['bf16_vs_f32'].max()):.4f}", flush=True)
    return {"prompts": results, "worst_max_abs_over_rms": worst, "prompts_agreeing_all_steps": agreeing}


def bench(model, config, device):
    import torch

    def timed(fn, repeats=3):
        best = float("inf")
        for _ in range(repeats):
            torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return best

    generator = torch.Generator(device="cpu").manual_seed(0)
    def prompt(batch, length):
        return torch.randint(3, config.vocab_size, (batch, length), generator=generator).to(device)

    out = {}
    with torch.no_grad():
        for length in (1024, 8192):
            ids = prompt(1, length)
            seconds = timed(lambda: model(input_ids=ids, logits_to_keep=1))
            out[f"prefill_{length}_tokens_per_s"] = length / seconds
        for batch, context, steps in ((1, 128, 64), (32, 512, 32)):
            ids = prompt(batch, context)
            first = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            past = first.past_key_values
            token = first.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                step = model(input_ids=token, past_key_values=past, use_cache=True)
                past = step.past_key_values
                token = step.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            out[f"decode_batch{batch}_tokens_per_s"] = batch * steps / (time.perf_counter() - start)
    print("  transformers: " + ", ".join(f"{k} {v:.1f}" for k, v in out.items()), flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--config", required=True, help="the model's config.json")
    parser.add_argument("--prompts", help="JSON array of token-id arrays given to kvferry-dump-logits")
    parser.add_argument("--logits", help="kvferry-dump-logits --out")
    parser.add_argument("--tokens", help="kvferry-dump-logits --tokens")
    parser.add_argument("--bench", action="store_true", help="also measure transformers' throughput")
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    import torch
    import transformers

    # Both references accumulate in float32: no bfloat16 partial sums in split reductions, no
    # TF32 in the float32 model.
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_tf32 = False
    started = time.perf_counter()
    model, config = load_transformers(args.gguf, args.config, args.device)
    result = {"gguf": args.gguf, "torch": torch.__version__, "transformers": transformers.__version__,
              "device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
              "load_s": time.perf_counter() - started}
    if args.logits:
        exact, _ = load_transformers(args.gguf, args.config, args.device, "float32")
        result["comparison"] = compare(args, model, exact, config, args.device)
        del exact
        torch.cuda.empty_cache()
    if args.bench:
        result["bench"] = bench(model, config, args.device)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
