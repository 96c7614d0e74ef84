#!/usr/bin/env bash
# kvferry-tokenize as a script uses it: every PATH kind, the output shape, the errors.
# Usage: TOKENIZE=path/to/kvferry-tokenize DATA=tests/data bash tokenize_cli_test.sh
set -euo pipefail
T="${TOKENIZE:?}"
D="${DATA:?}"
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() {  # expect WANT CMD...: stdout of CMD (stdin: $INPUT) equals WANT
  local want="$1"; shift
  local got
  got="$(printf '%s' "$INPUT" | "$@")" || fail "$* exited $?"
  [[ "$got" == "$want" ]] || fail "$*: got '$got', want '$want'"
}
expect_error() {  # expect_error CODE FRAGMENT CMD...: exit CODE, FRAGMENT on stderr
  local code="$1" fragment="$2"; shift 2
  local err rc=0
  err="$(printf '%s' "$INPUT" | "$@" 2>&1 >/dev/null)" || rc=$?
  [[ $rc == "$code" ]] || fail "$*: exit $rc, want $code ($err)"
  [[ "$err" == *"$fragment"* ]] || fail "$*: stderr '$err' lacks '$fragment'"
}

INPUT='["Hello world", "你好", "<|im_start|>x", ""]'
# The same Llama 3 vocabulary from its GGUF, its tokenizer.json's directory and the file itself.
for model in "$D/tokenizers/llama.cpp/ggml-vocab-llama-bpe.gguf" "$D/tokenizers/llama3" \
             "$D/tokenizers/llama3/tokenizer.json"; do
  expect '[[9906,1917],[57668,53901],[27,91,318,5011,91,29,87],[]]' "$T" --model "$model"
done
expect '[[9707,1879],[108386],[151644,87],[]]' "$T" --model "$D/tokenizers/qwen3" --parse-special
INPUT='["Hello world"]'
expect '[[128000,9906,1917]]' "$T" --model "$D/tokenizers/llama.cpp/ggml-vocab-llama-bpe.gguf" \
  --add-special
expect '[[346,306,414,263,304,341]]' "$T" --model "$D/models/stories260K/stories260K.gguf"
"$T" --help | grep -q 'usage: kvferry-tokenize --model PATH' || fail "--help"

expect_error 2 "--model PATH is required" "$T"
expect_error 2 "unknown option '--nope'" "$T" --model x --nope
expect_error 1 "/nonexistent: no such file or directory" "$T" --model /nonexistent
expect_error 1 "tokenizers: directory has no tokenizer.json" "$T" --model "$D/tokenizers"
INPUT='["a", 3]'
expect_error 1 "stdin: element 1 is 3, not a string" "$T" --model "$D/tokenizers/llama3"
INPUT='["a"'
expect_error 1 "stdin: invalid JSON at byte 4" "$T" --model "$D/tokenizers/llama3"
INPUT='{"a": 1}'
expect_error 1 "stdin: expected a JSON array of strings" "$T" --model "$D/tokenizers/llama3"
echo "kvferry-tokenize: all checks passed"
