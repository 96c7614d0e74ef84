// The disaggregated pipeline end to end (issue #5): real orchestrator and node-agent processes on
// 127.0.0.1 serving the stories260K model over the TCP transport.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createRequire } from 'node:module';
import net from 'node:net';

import {
  Cluster, controlAuthHeader, readSse, signedFetch, sleep, waitFor,
} from './cluster.mjs';

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
    // The pairs move KV over two tcp rails each (transport.rails: two local addresses), every
    // layer's batch of 4 KiB or more sliced over both.
    const railsYaml = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kvferry-rails-')), 'agent.yaml');
    fs.writeFileSync(railsYaml,
      'transport:\n  rails: ["127.0.0.1", "127.0.0.2"]\n  stripe_min_bytes: 4096\n');
    const rails = ['--config', railsYaml];
    disaggregated = await new Cluster({
      prefill: 2,
      decode: 2,
      orchestratorYaml: 'scheduler:\n  policy: round_robin\n',
      agentArgs: { prefill0: rails, prefill1: rails, decode0: rails, decode1: rails },
    }).start();
    disaggregatedOut = await runAll(disaggregated);
  });
  after(async () => {
    for (const c of [single, disaggregated]) {
      if (c) assert.deepEqual(await c.stop(), []);
    }
  });

  test('2 prefill + 2 decode agents over two TCP rails give a single agent\'s tokens exactly', () => {
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
        const r = await cluster.agentCall(agent, route);
        assert.equal(r.status, 400, `${agent.name} ${route}`);
        assert.match(await r.text(), why);
      }
    });

  test('the control plane takes only calls signed with the cluster secret', async () => {
    const decode = cluster.agents.find((a) => a.role === 'decode');
    const agentUrl = `http://127.0.0.1:${await decode.port()}`;
    // Unsigned, or signed with another cluster's secret: 401, and nothing reserved.
    const forger = crypto.randomBytes(32).toString('hex');
    for (const send of [
      () => fetch(`${agentUrl}/agent/reserve`, { method: 'POST', body: '{"blocks":1}' }),
      () => signedFetch(forger, `${agentUrl}/agent/reserve`, { body: '{"blocks":1}' }),
      () => fetch(`${cluster.url}/v1/agents/register`, { method: 'POST', body: '{}' }),
      () => signedFetch(forger, `${cluster.url}/v1/agents/leave`, { body: '{"node_id":1}' }),
      () => fetch(`${cluster.url}/v1/nodes`),
    ]) {
      const r = await send();
      assert.equal(r.status, 401);
      assert.match((await r.json()).error.message, /unauthenticated control call/);
    }
    // A signed call replayed byte for byte is refused the second time.
    const url = `${agentUrl}/agent/cancel`;
    const body = '{"request_id":"none"}';
    const header = controlAuthHeader(cluster.secret, 'POST', url, body);
    const send = () => fetch(url, { method: 'POST', body, headers: { 'x-kvferry-auth': header } });
    assert.notEqual((await send()).status, 401);
    const replay = await send();
    assert.equal(replay.status, 401);
    assert.match((await replay.json()).error.message, /replayed/);
    await cluster.waitForIdle();
    assert.equal((await cluster.nodes()).filter((n) => n.alive).length, cluster.agents.length);
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

// Sends `request` (raw HTTP) on a new connection and reads until the server closes it.
function rawExchange(port, request) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(request));
    const chunks = [];
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    socket.on('error', reject);
    socket.setTimeout(30000, () => {
      socket.destroy();
      reject(new Error('no close within 30 s'));
    });
  });
}

async function metricValue(cluster, series) {
  const text = await (await fetch(`${cluster.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

// Issue #18: what users of OpenAI, vLLM and SGLang clients rely on.
describe('conformance with the official client, curl and the vLLM/SGLang extensions', () => {
  let cluster;
  let client;
  before(async () => {
    cluster = await new Cluster({
      prefill: 1,
      decode: 1,
      orchestratorYaml: 'scheduler:\n  kvferry_colocate_max_tokens: 0\n',
    }).start();
    const require = createRequire(import.meta.url);
    const { OpenAI } = require(process.env.KVFERRY_OPENAI_MODULE ?? 'openai');
    client = new OpenAI({ baseURL: `${cluster.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => {
    if (cluster) assert.deepEqual(await cluster.stop(), []);
  });

  const greedy = (prompt, extra = {}) => cluster.post('/v1/completions',
    { model: MODEL_ID, prompt, max_tokens: 120, temperature: 0, return_token_ids: true, ...extra });

  test('models.retrieve finds the served model and 404s another', async () => {
    const model = await client.models.retrieve(MODEL_ID);
    assert.equal(model.id, MODEL_ID);
    assert.equal(model.object, 'model');
    await assert.rejects(client.models.retrieve('gpt-4'), (e) => e.status === 404 &&
      e.code === 'model_not_found');
  });

  test('unknown fields, max_tokens past the context and lone surrogates are 400s naming them',
    async () => {
      await assert.rejects(
        client.completions.create({ model: MODEL_ID, prompt: 'Once', best_effort: true }),
        (e) => e.status === 400 && e.param === 'best_effort' && e.code === 'unknown_parameter');
      const big = await greedy('Once', { max_tokens: 1e9 });
      assert.equal(big.status, 400);
      assert.equal(big.json.error.param, 'max_tokens');
      assert.match(big.json.error.message, /maximum context length is \d+ tokens/);
      const surrogate = await cluster.post('/v1/chat/completions',
        `{"model":"${MODEL_ID}","messages":[{"role":"user","content":"a\\ud800b"}]}`);
      assert.equal(surrogate.status, 400);
      assert.equal(surrogate.json.error.param, 'messages[0].content');
      assert.match(surrogate.json.error.message, /lone UTF-16 surrogate/);
    });

  test('404, 405 and 413 come in OpenAI\'s shape and are counted', async () => {
    const notFound = await cluster.post('/v1/embeddings', { model: MODEL_ID, input: 'x' });
    assert.equal(notFound.status, 404);
    assert.equal(notFound.json.error.code, 'unknown_url');
    assert.equal(notFound.json.error.type, 'invalid_request_error');
    const wrongMethod = await fetch(`${cluster.url}/v1/completions`);
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get('allow'), 'POST');
    assert.equal((await wrongMethod.json()).error.code, 'method_not_allowed');
    const before413 = await metricValue(cluster,
      'kvferry_requests_total{endpoint="/v1/chat/completions",status="413"}');
    const tooLarge = await rawExchange(cluster.port, 'POST /v1/chat/completions HTTP/1.1\r\n' +
      'Host: x\r\nContent-Type: application/json\r\nContent-Length: 9000000\r\n\r\n');
    assert.match(tooLarge, /^HTTP\/1\.1 413/);
    assert.equal(JSON.parse(tooLarge.slice(tooLarge.indexOf('\r\n\r\n') + 4)).error.code,
      'request_too_large');
    assert.equal(await metricValue(cluster,
      'kvferry_requests_total{endpoint="/v1/chat/completions",status="413"}'), before413 + 1);
    assert.ok(await metricValue(cluster,
      'kvferry_requests_total{endpoint="/v1/completions",status="405"}') >= 1);
  });

  test('an HTTP/1.0 client gets its stream unchunked, ended by the close', async () => {
    const body = JSON.stringify({ model: MODEL_ID, prompt: 'Once', max_tokens: 8, stream: true });
    const response = await rawExchange(cluster.port, 'POST /v1/completions HTTP/1.0\r\n' +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    assert.match(response, /^HTTP\/1\.0 200/);
    const header = response.slice(0, response.indexOf('\r\n\r\n'));
    assert.doesNotMatch(header, /transfer-encoding/i);
    assert.ok(response.endsWith('data: [DONE]\n\n'), response);
  });

  test('ignore_eos, min_tokens and stop_token_ids shape the answer as vLLM\'s do', async () => {
    // A prompt whose greedy answer ends with the end-of-sequence token before the budget, when
    // one of these has one.
    let prompt = 'Once upon a time';
    let plain;
    for (const candidate of ['Once upon a time', 'Tom had a big red ball.', 'The cat sat.']) {
      plain = await greedy(candidate);
      assert.equal(plain.status, 200, plain.text);
      prompt = candidate;
      if (plain.json.choices[0].finish_reason === 'stop') break;
    }
    const tokens = plain.json.choices[0].token_ids;
    const ignored = await greedy(prompt, { ignore_eos: true });
    assert.equal(ignored.status, 200, ignored.text);
    assert.equal(ignored.json.choices[0].finish_reason, 'length');
    assert.equal(ignored.json.usage.completion_tokens, 120);
    assert.deepEqual(ignored.json.choices[0].token_ids.slice(0, tokens.length - 1),
      tokens.slice(0, -1));  // the same answer up to where it stopped, then on

    const atLeast = await greedy(prompt, { min_tokens: 100, max_tokens: 110 });
    assert.equal(atLeast.status, 200, atLeast.text);
    assert.ok(atLeast.json.usage.completion_tokens >= 100, JSON.stringify(atLeast.json.usage));

    // Stopping at the answer's fourth token: the answer ends there.
    const stopAt = tokens[3];
    const stopped = await greedy(prompt, { stop_token_ids: [stopAt] });
    assert.equal(stopped.status, 200, stopped.text);
    const ids = stopped.json.choices[0].token_ids;
    assert.equal(ids.at(-1), stopAt);
    assert.equal(ids.indexOf(stopAt), ids.length - 1);
    assert.equal(stopped.json.choices[0].finish_reason, 'stop');
  });

  test('penalties and logit_bias change the answer, and split and colocated agree on it',
    async () => {
      const plain = await greedy('Once upon a time');
      const first = plain.json.choices[0].token_ids[0];
      const banned = await greedy('Once upon a time', { logit_bias: { [first]: -100 } });
      assert.equal(banned.status, 200, banned.text);
      assert.notEqual(banned.json.choices[0].token_ids[0], first);
      const extras = { repetition_penalty: 1.8, frequency_penalty: 1.5, presence_penalty: 0.5,
        logit_bias: { [first]: -5 }, seed: 3, temperature: 0.7 };
      const penalised = await greedy('Once upon a time', extras);
      assert.equal(penalised.status, 200, penalised.text);
      assert.notDeepEqual(penalised.json.choices[0].token_ids, plain.json.choices[0].token_ids);
      // The same request on one agent (colocated: the decode agent serves it whole).
      const single = await new Cluster({ both: 1 }).start();
      try {
        const alone = await single.post('/v1/completions', { model: MODEL_ID,
          prompt: 'Once upon a time', max_tokens: 120, return_token_ids: true, ...extras });
        assert.deepEqual(alone.json.choices[0].token_ids, penalised.json.choices[0].token_ids);
      } finally {
        assert.deepEqual(await single.stop(), []);
      }
    });

  test('logprobs: the chosen token and its alternatives, streamed and not', async () => {
    const messages = [{ role: 'user', content: 'Once upon a time' }];
    const whole = await client.chat.completions.create({ model: MODEL_ID, messages,
      max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3 });
    const content = whole.choices[0].logprobs.content;
    assert.equal(content.length, whole.usage.completion_tokens);
    for (const entry of content) {
      assert.ok(entry.logprob <= 0);
      assert.equal(entry.top_logprobs.length, 3);
      assert.equal(entry.top_logprobs[0].token, entry.token);  // greedy: the most likely one
      assert.ok(Array.isArray(entry.bytes));
    }
    const stream = await client.chat.completions.create({ model: MODEL_ID, messages,
      max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3, stream: true });
    const streamed = [];
    for await (const chunk of stream) {
      for (const choice of chunk.choices) streamed.push(...(choice.logprobs?.content ?? []));
    }
    assert.deepEqual(streamed.map((e) => e.token), content.map((e) => e.token));
    const completion = await greedy('Once upon a time', { logprobs: 2, max_tokens: 6 });
    const lp = completion.json.choices[0].logprobs;
    assert.equal(lp.tokens.length, 6);
    assert.equal(lp.token_logprobs.length, 6);
    assert.equal(Object.keys(lp.top_logprobs[0]).length <= 2, true);
    assert.equal(lp.text_offset[0], 0);
  });
});

// A prompt of about `tokens` tokens (stories260K's vocabulary is small: mostly short pieces).
function longPrompt(tokens, salt) {
  const words = ['Lily', 'Ben', 'the', 'dog', 'park', 'ran', 'sun', 'happy', 'ball', 'tree'];
  let text = `${salt}.`;
  for (let i = 0; text.length < tokens * 2.2; ++i) text += ` ${words[(i * 7 + salt) % words.length]}`;
  return text;
}

// Issue #18: KV room is a reason to wait, not to fail.
describe('capacity: requests wait for KV room', () => {
  let cluster;
  before(async () => {
    // Each decode agent holds one ~200-token sequence at a time (24 blocks of 16 tokens).
    cluster = await new Cluster({
      prefill: 1,
      decode: 2,
      kvBlocksFor: { decode: 24 },
      orchestratorYaml: 'scheduler:\n  kvferry_colocate_max_tokens: 0\n',
    }).start();
  });
  after(async () => {
    if (cluster) assert.deepEqual(await cluster.stop(), []);
  });

  test('6 concurrent long prompts on 2 decode agents with room for 2 all succeed', async () => {
    const probe = await cluster.post('/v1/completions',
      { model: MODEL_ID, prompt: longPrompt(200, 0), max_tokens: 1 });
    assert.equal(probe.status, 200, probe.text);
    const promptTokens = probe.json.usage.prompt_tokens;
    assert.ok(promptTokens > 13 * 16 / 2 && promptTokens < 16 * 20, `prompt of ${promptTokens}`);
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) =>
      cluster.post('/v1/completions', { model: MODEL_ID, prompt: longPrompt(200, i + 1),
        max_tokens: 40, temperature: 0 })));
    for (const r of results) assert.equal(r.status, 200, `${r.text}\n${cluster.logs()}`);
    assert.equal(await metricValue(cluster, 'kvferry_rejections_total{reason="no_nodes"}'), 0);
    await cluster.waitForIdle();
  });
});

describe('capacity: only a full queue answers 429', () => {
  let cluster;
  before(async () => {
    cluster = await new Cluster({
      both: 1,
      kvBlocks: 24,
      // The agent freezes itself mid-answer (its fault point) for well under this.
      heartbeatTimeoutMs: 10000,
      agentArgs: { both0: ['--fault', 'at=decode_step,after=20,action=stall'] },
      orchestratorYaml: 'admission:\n  max_inflight: 8\n  max_queue: 1\n  retry_after_s: 3\n',
    }).start();
  });
  after(async () => {
    if (cluster) assert.deepEqual(await cluster.stop(), []);
  });

  test('one request runs, one waits for its KV, the third is refused with Retry-After',
    async () => {
      const agent = cluster.agents[0];
      // A prompt of which one fits the agent's 24 blocks with its answer, and two do not.
      const body = (i) => ({ model: MODEL_ID, prompt: longPrompt(260, i), max_tokens: 20 });
      const probe = await cluster.post('/v1/completions', { ...body(0), max_tokens: 1 });
      assert.equal(probe.status, 200, probe.text);
      const tokens = probe.json.usage.prompt_tokens;
      // The running request answers at length, and the agent stops itself at its 20th decode
      // step: it holds its KV however fast it decodes (a SIGSTOP sent by the test after the
      // first chunk came after the end of a 20-token answer on a loaded machine; seen in CI).
      const running = 120;
      assert.ok(2 * Math.ceil((tokens + 1) / 16) > 24 && Math.ceil((tokens + running) / 16) <= 24,
        `a prompt of ${tokens} tokens`);
      const response = await fetch(`${cluster.url}/v1/completions`, { method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...body(1), max_tokens: running, stream: true }) });
      assert.equal(response.status, 200);
      const reader = response.body.getReader();
      await reader.read();  // it runs: its KV is taken
      try {
        // Only once the agent has stopped itself: a SIGCONT sent before its 20th step (a loaded
        // machine decodes slowly) was lost, the agent then stopped for good and was judged dead.
        await agent.stopped();
        const waiting = cluster.post('/v1/completions', body(2));
        await sleep(100);
        const refused = await cluster.post('/v1/completions', body(3));
        assert.equal(refused.status, 429, refused.text);
        assert.equal(refused.headers.get('retry-after'), '3');
        assert.equal(refused.json.error.type, 'rate_limit_error');
        agent.child.kill('SIGCONT');
        while (!(await reader.read()).done);
        const served = await waiting;
        assert.equal(served.status, 200, served.text);
      } finally {
        agent.child.kill('SIGCONT');
      }
      await cluster.waitForIdle();
    });
});

// Issue #18: a prefill that is cancelled or fails used to leave its reservation's blocks held on
// the decode agent for the writer's op timeout (11 s), refusing the next requests meanwhile.
describe('capacity: a cancelled prefill frees its reservation at once', () => {
  let cluster;
  before(async () => {
    cluster = await new Cluster({
      prefill: 1,
      decode: 1,
      kvBlocksFor: { decode: 24 },
      orchestratorYaml: 'scheduler:\n  kvferry_colocate_max_tokens: 0\n',
    }).start();
  });
  after(async () => {
    if (cluster) assert.deepEqual(await cluster.stop(), []);
  });

  test('the next request needing the same blocks is served within seconds, not after 11',
    async () => {
      const prefill = cluster.agents.find((a) => a.role === 'prefill');
      const body = (i) => JSON.stringify({ model: MODEL_ID, prompt: longPrompt(200, i),
        max_tokens: 20 });
      for (let round = 0; round < 3; ++round) {
        // The prefill agent freezes, so the client leaves while its prefill is pending.
        prefill.child.kill('SIGSTOP');
        const controller = new AbortController();
        const leaving = fetch(`${cluster.url}/v1/completions`, { method: 'POST',
          signal: controller.signal, headers: { 'content-type': 'application/json' },
          body: body(round) }).catch(() => null);
        try {
          await waitFor('the reservation on the decode agent', 1000, async () =>
            (await cluster.nodes()).some((n) => n.role === 'decode' && n.active_leases > 0));
          controller.abort();
          await sleep(100);  // the orchestrator sees the client go and cancels the prefill
        } finally {
          prefill.child.kill('SIGCONT');
        }
        await leaving;
        const started = Date.now();
        const next = await cluster.post('/v1/completions', JSON.parse(body(10 + round)));
        assert.equal(next.status, 200, next.text);
        assert.ok(Date.now() - started < 5000,
          `the next request took ${Date.now() - started} ms\n${cluster.logs()}`);
      }
      await cluster.waitForIdle();
    });
});

// Issue #18: with no node that can prefill, decode agents serve whole requests.
describe('the only prefill agent killed under load', () => {
  let cluster;
  before(async () => {
    cluster = await new Cluster({ prefill: 1, decode: 2 }).start();
  });
  after(async () => {
    if (cluster) assert.deepEqual(await cluster.stop(), []);
  });

  test('every request succeeds; the decode agents take over the prefills', async () => {
    const prefill = cluster.agents.find((a) => a.role === 'prefill');
    const total = 40;
    const deadline = Date.now() + 60000;
    let next = 0;
    let done = 0;
    const statuses = [];
    const worker = async () => {
      while (next < total && Date.now() < deadline) {
        const i = next++;
        const r = await cluster.post('/v1/completions', { model: MODEL_ID, max_tokens: 16,
          temperature: 0, prompt: `${i % 3 ? 'Mia' : 'Sam'} saw a bird number ${i}.` });
        statuses.push(r.status === 200 ? 200 : `${r.status} ${r.text}`);
        if (++done === 8) await prefill.kill('SIGKILL');
      }
    };
    await Promise.all(Array.from({ length: 4 }, worker));
    assert.equal(statuses.length, total, 'the load did not finish in time');
    assert.deepEqual(statuses.filter((s) => s !== 200), [], cluster.logs());
    assert.ok(await metricValue(cluster, 'kvferry_colocated_fallbacks_total') > 0);
    const health = await waitFor('the dead prefill agent to be noticed', 10000, async () => {
      const r = await fetch(`${cluster.url}/health`);
      const b = await r.json();
      return b.prefill_nodes === 0 && { status: r.status, body: b };
    });
    assert.equal(health.status, 200);
    assert.match(health.body.message, /decode nodes serve whole requests/);
  });
});
