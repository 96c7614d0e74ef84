// The disaggregated pipeline end to end (issue #5): real orchestrator and node-agent processes on
// 127.0.0.1 serving the stories260K model over the TCP transport.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createRequire } from 'node:module';

import { Cluster, readSse, sleep, waitFor } from './cluster.mjs';

const MODEL_ID = 'stories260K';

// Prompts with and without shared prefixes: the second half repeats the first half's 40-token
// opening, so the prefill nodes and the decode nodes hit their prefix caches.
const OPENING =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the sun ' +
  'with her dog. One day, ';
const PROMPTS = [
  'Once upon a time',
  'Tom had a big red ball.',
  'The cat sat on the mat and looked at the bird.',
  OPENING + 'she found a shiny rock.',
  OPENING + 'it started to rain.',
  OPENING + 'her mom made a cake.',
];

function completionBody(prompt, extra = {}) {
  return { model: MODEL_ID, prompt, max_tokens: 40, temperature: 0, return_token_ids: true, ...extra };
}

// Runs every prompt twice (the second time with cached prefixes) and returns the outputs.
async function runAll(cluster) {
  const outputs = [];
  for (let round = 0; round < 2; ++round) {
    for (const prompt of PROMPTS) {
      const r = await cluster.post('/v1/completions', completionBody(prompt));
      assert.equal(r.status, 200, `${prompt}: ${r.text}\n${cluster.logs()}`);
      outputs.push({
        prompt,
        round,
        text: r.json.choices[0].text,
        tokens: r.json.choices[0].token_ids,
        finish: r.json.choices[0].finish_reason,
        usage: r.json.usage,
      });
    }
    // Let heartbeats carry the KV events to the orchestrator's prefix index.
    await sleep(300);
  }
  return outputs;
}

describe('disaggregation invariance', () => {
  let single;
  let disaggregated;
  let singleOut;
  let disaggregatedOut;

  before(async () => {
    single = await new Cluster({ both: 1 }).start();
    singleOut = await runAll(single);
    disaggregated = await new Cluster({
      prefill: 2,
      decode: 2,
      orchestratorYaml: 'scheduler:\n  policy: round_robin\n',
    }).start();
    disaggregatedOut = await runAll(disaggregated);
  });
  after(async () => {
    for (const c of [single, disaggregated]) {
      if (c) assert.deepEqual(await c.stop(), []);
    }
  });

  test('2 prefill + 2 decode agents over TCP give a single agent\'s tokens exactly', () => {
    assert.equal(singleOut.length, disaggregatedOut.length);
    for (let i = 0; i < singleOut.length; ++i) {
      const a = singleOut[i];
      const b = disaggregatedOut[i];
      assert.ok(Array.isArray(a.tokens) && a.tokens.length > 0, `no token ids for ${a.prompt}`);
      assert.deepEqual(b.tokens, a.tokens, `tokens differ for "${a.prompt}" (round ${a.round})`);
      assert.equal(b.text, a.text);
      assert.equal(b.finish, a.finish);
      assert.equal(b.usage.completion_tokens, a.tokens.length);
    }
  });

  test('the repeated prompts hit the prefix cache, and report it', () => {
    for (const out of [singleOut, disaggregatedOut]) {
      const second = out.filter((o) => o.round === 1 && o.prompt.startsWith(OPENING));
      for (const o of second) {
        assert.ok(o.usage.prompt_tokens_details.cached_tokens > 0,
          `no cached tokens reported for a repeated prompt: ${JSON.stringify(o.usage)}`);
      }
    }
  });

  test('every block and lease is returned afterwards', async () => {
    await disaggregated.waitForIdle();
    await single.waitForIdle();
  });
});

describe('one cluster of 2 prefill + 2 decode agents', () => {
  let cluster;
  before(async () => {
    cluster = await new Cluster({ prefill: 2, decode: 2, kvBlocks: 512 }).start();
  });
  after(async () => {
    if (cluster) assert.deepEqual(await cluster.stop(), []);
  });

  test('the official openai client, with and without streaming', async () => {
    const require = createRequire(import.meta.url);
    const { OpenAI } = require(process.env.KVFERRY_OPENAI_MODULE ?? 'openai');
    const client = new OpenAI({ baseURL: `${cluster.url}/v1`, apiKey: 'unused' });

    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [MODEL_ID]);

    const messages = [{ role: 'user', content: 'Once upon a time' }];
    const whole = await client.chat.completions.create({
      model: MODEL_ID, messages, max_tokens: 30, temperature: 0,
    });
    const text = whole.choices[0].message.content;
    assert.equal(whole.object, 'chat.completion');
    assert.equal(whole.choices[0].message.role, 'assistant');
    assert.ok(text.length > 0);
    assert.ok(['stop', 'length'].includes(whole.choices[0].finish_reason));
    assert.ok(whole.usage.prompt_tokens > 0);
    assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + whole.usage.completion_tokens);

    const stream = await client.chat.completions.create({
      model: MODEL_ID, messages, max_tokens: 30, temperature: 0, stream: true,
      stream_options: { include_usage: true },
    });
    let streamed = '';
    let usage;
    let finish;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        streamed += choice.delta.content ?? '';
        finish = choice.finish_reason ?? finish;
      }
    }
    assert.equal(streamed, text);
    assert.equal(finish, whole.choices[0].finish_reason);
    assert.deepEqual(usage.completion_tokens, whole.usage.completion_tokens);
    assert.deepEqual(usage.prompt_tokens, whole.usage.prompt_tokens);
  });

  test('bad input gets the right status and a message saying what is wrong', async () => {
    const cases = [
      ['{"model": "stories260K", "prompt": ', 400, /JSON/i],
      [{ model: MODEL_ID, prompt: 'x', max_tokens: 'ten' }, 400, /max_tokens/],
      [{ model: MODEL_ID, prompt: 'x', max_tokens: 0 }, 400, /max_tokens/],
      [{ model: MODEL_ID, prompt: 'x', max_tokens: -3 }, 400, /max_tokens/],
      [{ model: MODEL_ID, prompt: 'x', temperature: 'hot' }, 400, /temperature/],
      [{ model: 'gpt-4', prompt: 'x' }, 404, /gpt-4/],
      [{ model: MODEL_ID, prompt: 'x', n: 2 }, 400, /n/],
      [{ model: MODEL_ID, prompt: 'Once '.repeat(3000) }, 400, /context|too long|tokens/i],
      [{ model: MODEL_ID, messages: 'hi' }, 400, /prompt/],
    ];
    for (const [body, status, message] of cases) {
      const r = await cluster.post('/v1/completions', body);
      assert.equal(r.status, status, `${JSON.stringify(body).slice(0, 80)} → ${r.text}`);
      assert.ok(r.json?.error?.message, `no OpenAI error body: ${r.text}`);
      assert.match(r.json.error.message, message);
      assert.equal(typeof r.json.error.type, 'string');
    }
    const invalidUtf8 = Buffer.concat([
      Buffer.from('{"model": "stories260K", "messages": [{"role": "user", "content": "a'),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('"}]}'),
    ]);
    const r = await cluster.post('/v1/chat/completions', new Uint8Array(invalidUtf8));
    assert.equal(r.status, 400);
    assert.match(r.json.error.message, /UTF-8/);
    const chat = await cluster.post('/v1/chat/completions', { model: MODEL_ID, messages: [] });
    assert.equal(chat.status, 400);
    assert.match(chat.json.error.message, /messages/);
  });

  test('an agent refuses control calls its role does not serve, saying which node to use',
    async () => {
      const prefill = cluster.agents.find((a) => a.role === 'prefill');
      const decode = cluster.agents.find((a) => a.role === 'decode');
      for (const [agent, route, why] of [
        [prefill, '/agent/reserve', /only prefills; reserve on a decode node/],
        [prefill, '/agent/decode', /only prefills; decode on a decode node/],
        [prefill, '/agent/generate', /only prefills; generate on a decode node/],
        [decode, '/agent/prefill', /only decodes; prefill on another node/],
      ]) {
        const r = await fetch(`http://127.0.0.1:${await agent.port()}${route}`,
          { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
        assert.equal(r.status, 400, `${agent.name} ${route}`);
        assert.match(await r.text(), why);
      }
    });

  test('streaming follows OpenAI\'s chunk format and ends with [DONE]', async () => {
    const response = await fetch(`${cluster.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL_ID, stream: true, max_tokens: 12, temperature: 0,
        messages: [{ role: 'user', content: 'Tom had a big red ball.' }] }),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /text\/event-stream/);
    const { events } = await readSse(response);
    assert.equal(events.at(-1), '[DONE]');
    const chunks = events.slice(0, -1);
    assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
    const last = chunks.at(-1);
    assert.ok(['stop', 'length'].includes(last.choices[0].finish_reason));
    const ids = new Set(chunks.map((c) => c.id));
    assert.equal(ids.size, 1);
  });

  test('64 concurrent streaming requests complete and return every block', async () => {
    const one = async (i) => {
      const response = await fetch(`${cluster.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: MODEL_ID, stream: true, max_tokens: 24, temperature: 0.8,
          seed: i, prompt: `${i % 2 ? 'Lily' : 'Ben'} went to the park number ${i}.` }),
      });
      assert.equal(response.status, 200, await response.clone().text());
      const { events } = await readSse(response);
      assert.equal(events.at(-1), '[DONE]');
      const finish = events.at(-2).choices[0].finish_reason;
      assert.ok(['stop', 'length'].includes(finish), JSON.stringify(events.at(-2)));
    };
    await Promise.all(Array.from({ length: 64 }, (_, i) => one(i)));
    await cluster.waitForIdle();
  });

  test('a client that disconnects mid-stream leaves no reserved blocks', async () => {
    const controller = new AbortController();
    const response = await fetch(`${cluster.url}/v1/completions`, {
      method: 'POST',
      signal: controller.signal,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL_ID, stream: true, max_tokens: 400, temperature: 0.9,
        seed: 7, prompt: 'Once upon a time' }),
    });
    assert.equal(response.status, 200);
    const reader = response.body.getReader();
    await reader.read();
    await reader.read();
    controller.abort();
    await cluster.waitForIdle();
  });

  test('a decode agent killed before the first byte: the request succeeds on the other pair',
    async () => {
      const victim = cluster.agents.find((a) => a.role === 'decode');
      await victim.kill('SIGKILL');
      // Before the orchestrator's heartbeat deadline passes, it still routes to the dead node.
      const results = await Promise.all(
        Array.from({ length: 6 }, (_, i) =>
          cluster.post('/v1/completions', completionBody(`Ben and Mia ${i}`, { max_tokens: 8 }))),
      );
      for (const r of results) assert.equal(r.status, 200, r.text);
      const nodes = await waitFor('the dead node to be noticed', 10000, async () => {
        const all = await cluster.nodes();
        return all.some((n) => n.name === victim.name && !n.alive) && all;
      });
      assert.ok(nodes);
      await cluster.waitForIdle();
    });
});

// DESIGN.md §2: a stream that breaks after the client has tokens resumes on a healthy pair. Split:
// the prefill agent computes prompt + answer so far and the new decode agent goes on; colocated
// (the policy's default for short prompts): the new decode agent does both. Greedy and seeded
// sampling (the resumed attempt skips the random draws the answer used).
const SPLIT = 'scheduler:\n  kvferry_colocate_max_tokens: 0\n';
for (const [path, yaml, sampling] of [
  ['split', SPLIT, { temperature: 0 }],
  ['split', SPLIT, { temperature: 0.8, seed: 11 }],
  ['colocated', '', { temperature: 0 }],
  ['colocated', '', { temperature: 0.8, seed: 11 }],
]) describe(`a decode agent killed mid-stream (${path}, temperature ${sampling.temperature})`, () => {
  let cluster;
  before(async () => {
    cluster = await new Cluster({ prefill: 1, decode: 1, orchestratorYaml: yaml }).start();
  });
  after(async () => {
    if (cluster) assert.deepEqual(await cluster.stop(), []);
  });

  const resumes = async () => {
    const text = await (await fetch(`${cluster.url}/metrics`)).text();
    return Number(/^kvferry_request_resumes_total (\S+)$/m.exec(text)?.[1] ?? NaN);
  };

  test('the answer goes on on another decode agent, as the unbroken answer would have', async () => {
    const body = { model: MODEL_ID, prompt: 'Once upon a time', max_tokens: 400, ...sampling };
    const reference = await cluster.post('/v1/completions', body);
    assert.equal(reference.status, 200, reference.text);
    const want = reference.json.choices[0].text;
    // One decode agent serves each try: freeze it once the first token reached us, add another,
    // then kill the frozen one. The freeze must land before the answer is complete (the agent
    // writes hundreds of tokens per second), so a try that finished first is repeated.
    let resumed = false;
    for (let attempt = 0; attempt < 3 && !resumed; ++attempt) {
      const serving = cluster.agents.find((a) => a.role === 'decode' && !a.dead);
      const before = await resumes();
      const response = await fetch(`${cluster.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...body, stream: true }),
      });
      assert.equal(response.status, 200);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let raw = '';
      for (;;) {
        const { value, done } = await reader.read();
        assert.ok(!done, 'the stream ended before its first token');
        raw += decoder.decode(value, { stream: true });
        if (raw.includes('"text"')) break;
      }
      serving.child.kill('SIGSTOP');
      const fresh = cluster.addAgent('decode');
      await fresh.port();
      await waitFor('the new decode agent to register', 30000, async () =>
        (await cluster.nodes()).some((n) => n.name === fresh.name && n.alive));
      await serving.kill('SIGKILL');
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        raw += decoder.decode(value, { stream: true });
      }
      const events = raw.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
      assert.equal(events.at(-1), '[DONE]', raw);
      const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
      assert.ok(chunks.every((c) => !c.error), `an error event: ${raw}\n${cluster.logs()}`);
      const text = chunks.map((c) => c.choices?.[0]?.text ?? '').join('');
      assert.equal(text, want, `the resumed answer differs\n${cluster.logs()}`);
      assert.equal(chunks.at(-1).choices[0].finish_reason, reference.json.choices[0].finish_reason);
      resumed = (await resumes()) > before;
    }
    assert.ok(resumed, 'three tries finished before the freeze: nothing was resumed');
    await cluster.waitForIdle();
  });
});

describe('admission', () => {
  let cluster;
  before(async () => {
    cluster = await new Cluster({
      both: 1,
      orchestratorYaml: 'admission:\n  max_inflight: 1\n  max_queue: 0\n  retry_after_s: 2\n',
    }).start();
  });
  after(async () => {
    if (cluster) assert.deepEqual(await cluster.stop(), []);
  });

  test('overload is a 429 with Retry-After', async () => {
    const controller = new AbortController();
    const busy = await fetch(`${cluster.url}/v1/completions`, {
      method: 'POST',
      signal: controller.signal,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL_ID, stream: true, max_tokens: 400, prompt: 'Once' }),
    });
    assert.equal(busy.status, 200);
    const r = await cluster.post('/v1/completions', { model: MODEL_ID, prompt: 'x', max_tokens: 2 });
    assert.equal(r.status, 429, r.text);
    assert.equal(r.headers.get('retry-after'), '2');
    assert.ok(r.json.error.message.length > 0);
    controller.abort();
    await cluster.waitForIdle();
  });
});
