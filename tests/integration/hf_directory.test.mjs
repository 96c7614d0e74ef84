// A cluster serving a Hugging Face model directory (issue #16): orchestrator and agents read the
// same directory (config.json, safetensors, tokenizer.json, the chat template), chat completions
// render the model's own template, the disaggregated answer is token for token the one the GGUF
// file of the same weights gives, and a GGUF agent is refused by a safetensors cluster.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Cluster, waitFor } from './cluster.mjs';

const BIN = process.env.KVFERRY_BIN_DIR;
const CHATML =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + " +
  "message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}" +
  "{{ '<|im_start|>assistant\\n' }}{% endif %}";

describe('a Hugging Face directory', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvferry-hf-'));
  const model = path.join(dir, 'Qwen3-test');
  let hf;
  let gguf;

  before(async () => {
    // The same random qwen3 weights as a directory and as model.gguf inside it.
    execFileSync(path.join(BIN, 'model', 'kvferry-make-model'),
      ['--shape', 'test-qwen3', '--format', 'both', '--type', 'bf16', '--seed', '3', '--out', model]);
    fs.writeFileSync(path.join(model, 'chat_template.jinja'), CHATML);
    hf = await new Cluster({ prefill: 1, decode: 1, model }).start();
    gguf = await new Cluster({ both: 1, model: path.join(model, 'model.gguf') }).start();
  });
  after(async () => {
    for (const c of [hf, gguf]) {
      if (c) assert.deepEqual(await c.stop(), []);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('is served under its directory name, and renders its chat template', async () => {
    const models = await (await fetch(`${hf.url}/v1/models`)).json();
    assert.equal(models.data[0].id, 'Qwen3-test');
    const r = await hf.post('/v1/chat/completions', {
      model: 'Qwen3-test', temperature: 0, max_tokens: 6, return_token_ids: true,
      messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello world' }],
    });
    assert.equal(r.status, 200, r.text + '\n' + hf.logs());
    // Exactly the ids of the rendered template, markers as single control tokens, no BOS added.
    const rendered = '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello world' +
      '<|im_end|>\n<|im_start|>assistant\n';
    const ids = JSON.parse(execFileSync(path.join(BIN, 'model', 'kvferry-tokenize'),
      ['--model', model, '--parse-special'], { input: JSON.stringify([rendered]) }))[0];
    assert.equal(r.json.usage.prompt_tokens, ids.length);
    assert.equal(ids.filter((id) => id === ids[0]).length, 3);  // <|im_start|> three times
    assert.ok(r.json.choices[0].token_ids.length > 0);
  });

  test('answers disaggregated exactly as the GGUF of the same weights', async () => {
    for (const prompt of ['Once upon a time', 'Hello world, the girl named Lily said']) {
      const body = { prompt, max_tokens: 24, temperature: 0, return_token_ids: true };
      const a = await hf.post('/v1/completions', { ...body, model: 'Qwen3-test' });
      const b = await gguf.post('/v1/completions', { ...body, model: 'model' });
      assert.equal(a.status, 200, a.text);
      assert.equal(b.status, 200, b.text);
      assert.deepEqual(a.json.choices[0].token_ids, b.json.choices[0].token_ids, prompt);
      assert.equal(a.json.usage.prompt_tokens, b.json.usage.prompt_tokens);
    }
  });

  test('refuses an agent with the GGUF copy: another format, another fingerprint', async () => {
    const agent = hf.addAgent('decode', path.join(model, 'model.gguf'));
    await waitFor('the GGUF agent to be refused', 30000, () => {
      const log = agent.tail(50);
      return log.includes('refused') && log.includes('fingerprint');
    });
    const nodes = await hf.nodes();
    assert.equal(nodes.filter((n) => n.alive).length, 2);
  });
});
