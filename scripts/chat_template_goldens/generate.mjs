// Renders real chat templates over a set of conversations with @huggingface/jinja (Hugging Face's
// own JavaScript implementation, which transformers.js uses), as transformers'
// apply_chat_template calls a template: messages, tools (null when none), add_generation_prompt,
// the tokenizer's special tokens that are set (bos_token, eos_token), plus any extra keyword
// arguments; strftime_now and raise_exception are the library's. Writes tests/data/chat_templates/goldens.json,
// which tests/orchestrator/openai/chat_template_test.cc compares kvferry's rendering (minja) with.
//
//   cd scripts/chat_template_goldens && npm ci && node generate.mjs
import { Template } from "@huggingface/jinja";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const data = join(root, "tests", "data");
const version = JSON.parse(
  readFileSync(join(dirname(fileURLToPath(import.meta.url)), "node_modules", "@huggingface",
                    "jinja", "package.json"), "utf8")).version;

// The time strftime_now formats (the library's own, which reads `new Date()` in local time):
// fixed, and in UTC, so the goldens do not depend on the day or the place they were made.
process.env.TZ = "UTC";
const NOW_MS = Date.UTC(2026, 11, 4, 9, 30, 0);
const RealDate = Date;
globalThis.Date = class extends RealDate {
  constructor(...args) {
    super(...(args.length === 0 ? [NOW_MS] : args));
  }
  static now() {
    return NOW_MS;
  }
};
const NOW = new Date();

const fromConfig = (path) => JSON.parse(readFileSync(join(data, path), "utf8")).chat_template;
const fromFile = (path) => readFileSync(join(data, path), "utf8");
const templates = [
  { name: "llama-3", source: "tokenizers/llama3/tokenizer_config.json",
    text: fromConfig("tokenizers/llama3/tokenizer_config.json"),
    bos_token: "<|begin_of_text|>", eos_token: "<|end_of_text|>" },
  { name: "llama-3.1", source: "chat_templates/meta-llama-Llama-3.1-8B-Instruct.jinja",
    bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>" },
  { name: "llama-3.2", source: "chat_templates/meta-llama-Llama-3.2-3B-Instruct.jinja",
    bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>" },
  { name: "qwen2.5", source: "chat_templates/Qwen-Qwen2.5-7B-Instruct.jinja",
    bos_token: null, eos_token: "<|im_end|>" },
  { name: "qwen3", source: "tokenizers/qwen3/tokenizer_config.json",
    text: fromConfig("tokenizers/qwen3/tokenizer_config.json"),
    bos_token: null, eos_token: "<|im_end|>" },
  { name: "mistral-nemo", source: "chat_templates/mistralai-Mistral-Nemo-Instruct-2407.jinja",
    bos_token: "<s>", eos_token: "</s>" },
  { name: "mistral-small-3.2", source: "chat_templates/Mistral-Small-3.2-24B-Instruct-2506.jinja",
    bos_token: "<s>", eos_token: "</s>" },
];
for (const t of templates) t.text ??= fromFile(t.source);

const weather = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The current weather in a city.",
    parameters: {
      type: "object",
      properties: {
        city: { type: "string", description: "City name, e.g. Paris" },
        unit: { type: "string", enum: ["celsius", "fahrenheit"] },
      },
      required: ["city"],
    },
  },
};
const time = {
  type: "function",
  function: {
    name: "get_time",
    description: "The local time in a time zone.",
    parameters: { type: "object", properties: { zone: { type: "string" } }, required: ["zone"] },
  },
};
const call = {
  id: "call12345", type: "function",
  function: { name: "get_weather", arguments: { city: "Paris", unit: "celsius" } },
};

const conversations = [
  { name: "one user message", messages: [{ role: "user", content: "Hello!" }] },
  { name: "system and user",
    messages: [{ role: "system", content: "You are a terse assistant." },
               { role: "user", content: "What is 2+2?" }] },
  { name: "multi-turn",
    messages: [{ role: "system", content: "Answer briefly." },
               { role: "user", content: "Name a colour." },
               { role: "assistant", content: "Blue." },
               { role: "user", content: "Another one?" }] },
  { name: "no generation prompt", add_generation_prompt: false,
    messages: [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello there." }] },
  { name: "whitespace and unicode",
    messages: [{ role: "system", content: "  Spaces around \n" },
               { role: "user", content: "  Ünïcödé 你好 🚀\n\nTwo lines\t" }] },
  { name: "tools", tools: [weather, time],
    messages: [{ role: "system", content: "You can call tools." },
               { role: "user", content: "Weather in Paris?" }] },
  { name: "tools without a system message", tools: [weather],
    messages: [{ role: "user", content: "Weather in Paris?" }] },
  { name: "tool call and result", tools: [weather],
    messages: [{ role: "user", content: "Weather in Paris?" },
               { role: "assistant", content: "", tool_calls: [call] },
               { role: "tool", tool_call_id: "call12345", name: "get_weather",
                 content: "{\"temperature\": 21, \"unit\": \"celsius\"}" },
               { role: "assistant", content: "It is 21 °C in Paris." },
               { role: "user", content: "Thanks. And tomorrow?" }] },
  { name: "thinking off", extra: { enable_thinking: false },
    messages: [{ role: "user", content: "Quick answer: capital of France?" }] },
  { name: "assistant first",
    messages: [{ role: "assistant", content: "I start." }, { role: "user", content: "Fine." }] },
];

const cases = [];
for (const t of templates) {
  const template = new Template(t.text);
  for (const c of conversations) {
    const add_generation_prompt = c.add_generation_prompt ?? true;
    const context = {
      messages: c.messages,
      tools: c.tools ?? null,
      add_generation_prompt,
      ...(c.extra ?? {}),
    };
    if (t.bos_token !== null) context.bos_token = t.bos_token;
    if (t.eos_token !== null) context.eos_token = t.eos_token;
    const entry = { template: t.name, conversation: c.name, messages: c.messages,
                    add_generation_prompt };
    if (c.tools) entry.tools = c.tools;
    if (c.extra) entry.extra = c.extra;
    try {
      entry.output = template.render(context);
    } catch (error) {
      entry.error = String(error.message ?? error);
    }
    cases.push(entry);
  }
}

const goldens = {
  renderer: `@huggingface/jinja ${version}`,
  now: NOW.toISOString(),
  templates: templates.map(({ name, source, bos_token, eos_token }) =>
    ({ name, source, bos_token, eos_token })),
  cases,
};
writeFileSync(join(data, "chat_templates", "goldens.json"), JSON.stringify(goldens, null, 1) + "\n");
console.log(`chat_template_goldens: ${cases.length} cases (${cases.filter((c) => c.error).length} ` +
            `errors) from ${templates.length} templates, @huggingface/jinja ${version}`);
