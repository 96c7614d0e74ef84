// Faults under load (issue #17): agents that die or stall at a chosen phase (--fault), transfers
// that are cut, lost or delayed (--transport-faults), an orchestrator killed and restarted. Real
// processes on 127.0.0.1 serving stories260K. Every request must end, before its deadline,
// either with the tokens an unbroken single agent gives or with a typed error; afterwards every
// surviving agent holds no lease, no sequence and no used block.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Cluster, readSse, sleep } from './cluster.mjs';

const MODEL_ID = 'stories260K';
const DEADLINE_MS = 45000;  // per request: far above a healthy answer (~0.1 s), below ctest's
const PROMPTS = [
  'Once upon a time',
  'Tom had a big red ball.',
  'The cat sat on the mat and looked at the bird.',
  'Lily wanted to go to the park with her mom.',
  'One day, a little dog found a bone in the garden.',
  'The sun was shining and the birds were singing.',
  'Ben and Mia built a tall tower of blocks.',
  'There was a big tree next to the river.',
];
const body = (prompt, extra = {}) => ({
  model: MODEL_ID, prompt, max_tokens: 48, temperature: 0, ignore_eos: true, ...extra,
});

// The unbroken answers: one `both` agent, no faults.
let reference;
before(async () => {
  const single = await new Cluster({ both: 1 }).start();
  try {
    reference = new Map();
    for (const prompt of PROMPTS) {
      const r = await single.post('/v1/completions', body(prompt));
      assert.equal(r.status, 200, r.text);
      reference.set(prompt, r.json.choices[0].text);
    }
  } finally {
    assert.deepEqual(await single.stop(), []);
  }
});

// One request, streamed or not: { status, text, error } with the text joined from the stream.
async function ask(cluster, prompt, stream) {
  const signal = AbortSignal.timeout(DEADLINE_MS);
  const response = await fetch(`${cluster.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body(prompt, { stream })),
    signal,
  });
  if (!stream || response.status !== 200) {
    const json = await response.json();
    return { status: response.status, text: json.choices?.[0]?.text, error: json.error };
  }
  const { events } = await readSse(response);
  const chunks = events.filter((e) => e !== '[DONE]');
  const error = chunks.find((c) => c.error)?.error;
  const text = chunks.map((c) => c.choices?.[0]?.text ?? '').join('');
  return { status: error ? 'stream-error' : 200, text, error, done: events.at(-1) === '[DONE]' };
}

// Sends every prompt `rounds` times, `concurrency` at a time, and checks each outcome.
async function load(cluster, { rounds = 2, concurrency = 4, stream = false } = {}) {
  const queue = [];
  for (let r = 0; r < rounds; ++r) queue.push(...PROMPTS);
  const outcomes = [];
  const worker = async () => {
    while (queue.length > 0) {
      const prompt = queue.shift();
      const outcome = await ask(cluster, prompt, stream);
      outcomes.push({ prompt, ...outcome });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  for (const o of outcomes) {
    if (o.status === 200) {
      assert.equal(o.text, reference.get(o.prompt), `wrong tokens for "${o.prompt}"\n${cluster.logs()}`);
    } else {
      // A typed error, in OpenAI's shape: never a hang (the deadline would have thrown); it
      // names no internal address (the orchestrator's log does).
      assert.ok(o.error?.type && o.error?.message, `untyped failure ${JSON.stringify(o)}`);
      assert.doesNotMatch(o.error.message, /127\.0\.0\.1|\d+\.\d+\.\d+\.\d+:\d+/,
        'an internal address reached a client');
    }
  }
  return outcomes;
}

const succeeded = (outcomes) => outcomes.filter((o) => o.status === 200).length;

// Starts a cluster, runs `fn` on it, then checks the surviving agents hold nothing and stops it.
// `victim`: the agent a fault kills or freezes; it is SIGKILLed after the load (a frozen one
// would never answer the SIGTERM of stop()).
async function withCluster(options, fn, victim = null) {
  const cluster = new Cluster(options);
  const reap = async () => {
    const agent = cluster.agents.find((a) => a.name === victim);
    if (agent && !agent.dead) await agent.kill('SIGKILL');
  };
  try {
    await cluster.start();
    await fn(cluster);
    await reap();
    await cluster.waitForIdle(20000).catch((e) => {
      throw new Error(`${e.message}: ${cluster.lastBusy}\n${cluster.logs()}`);
    });
  } catch (e) {
    await reap();
    await cluster.stop();
    throw e;
  }
  assert.deepEqual(await cluster.stop(), []);
}

describe('an agent dies or stalls at a chosen phase, under load', () => {
  const cases = [
    { name: 'a prefill agent killed mid-transfer (after layer 1)', victim: 'prefill0',
      fault: 'at=transfer_layer,layer=1,after=3,action=die' },
    { name: 'a prefill agent killed before a prefill', victim: 'prefill0',
      fault: 'at=before_prefill,after=3,action=die' },
    { name: 'a decode agent killed mid-decode (streams resume)', victim: 'decode0',
      fault: 'at=decode_step,after=40,action=die', stream: true },
    { name: 'a prefill agent frozen before a prefill', victim: 'prefill0',
      fault: 'at=before_prefill,after=3,action=stall' },
    { name: 'a decode agent frozen mid-decode (streams resume)', victim: 'decode0',
      fault: 'at=decode_step,after=40,action=stall', stream: true },
  ];
  for (const c of cases) {
    test(c.name, () => withCluster({
      prefill: 2, decode: 2, agentArgs: { [c.victim]: ['--fault', c.fault] },
      orchestratorYaml: 'scheduler:\n  policy: round_robin\n',
    }, async (cluster) => {
      const outcomes = await load(cluster, { stream: c.stream });
      // A healthy pair was there all along: every request is answered, correctly.
      assert.equal(succeeded(outcomes), outcomes.length,
        `${JSON.stringify(outcomes.filter((o) => o.status !== 200))}\n${cluster.logs()}`);
      const victim = cluster.agents.find((a) => a.name === c.victim);
      assert.ok(fs.readFileSync(victim.log, 'utf8').includes('fault point reached'),
        `the fault point was never reached: the test tested nothing\n${victim.tail()}`);
    }, c.victim));
  }
});

describe('transfers cut, lost and delayed, under load', () => {
  let dir;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvferry-faults-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('every request gets its tokens or a typed error, and nothing is left behind', async () => {
    // Lost batches end after op_timeout_ms: short, so they fail (and are retried) quickly.
    const lossy = path.join(dir, 'lossy.yaml');
    fs.writeFileSync(lossy, 'transport:\n  op_timeout_ms: 1000\n  faults:\n    drop_rate: 0.2\n' +
      '    delay_ms: 2\n    delay_jitter_ms: 5\n    seed: 3\n');
    await withCluster({
      prefill: 2, decode: 2,
      agentArgs: {
        prefill0: ['--transport-faults', 'cut_every_batches=7,connect_fail_rate=0.2,seed=5'],
        prefill1: ['--config', lossy],
      },
    }, async (cluster) => {
      const outcomes = await load(cluster, { rounds: 3 });
      assert.ok(succeeded(outcomes) > 0, `nothing got through\n${cluster.logs()}`);
      const logs = ['prefill0', 'prefill1'].map((n) =>
        fs.readFileSync(cluster.agents.find((a) => a.name === n).log, 'utf8'));
      assert.ok(logs.every((l) => l.includes('transport faults ON')), 'faults were not armed');
    });
  });
});

describe('KV corrupted on the way (agent.kv_checksum)', () => {
  test('corrupt KV is never decoded: the request goes on through a healthy pair', () => withCluster({
    prefill: 2, decode: 2,
    agentArgs: {
      // Every batch prefill0 sends lands with 16 bytes changed.
      prefill0: ['--kv-checksum', 'true', '--transport-faults', 'corrupt_rate=1,seed=4'],
      prefill1: ['--kv-checksum', 'true'],
    },
    orchestratorYaml: 'scheduler:\n  policy: round_robin\n',
  }, async (cluster) => {
    const outcomes = await load(cluster, { rounds: 1 });
    assert.equal(succeeded(outcomes), outcomes.length,
      `${JSON.stringify(outcomes.filter((o) => o.status !== 200))}\n${cluster.logs()}`);
    const metrics = await (await fetch(`${cluster.url}/metrics`)).text();
    const corrupt = Number(/^kvferry_kv_corruptions_total (\S+)$/m.exec(metrics)?.[1]);
    assert.ok(corrupt > 0, `no corruption was caught: the test tested nothing\n${cluster.logs()}`);
  }));
});

describe('the orchestrator killed and restarted', () => {
  test('agents register again, requests are served, in-flight ones fail typed', async () => {
    await withCluster({ prefill: 1, decode: 1 }, async (cluster) => {
      await load(cluster, { rounds: 1 });
      // Streams under way when it dies end (the socket closes); the agents must let go of them.
      const inFlight = PROMPTS.slice(0, 4).map((p) =>
        fetch(`${cluster.url}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body(p, { stream: true, max_tokens: 400 })),
          signal: AbortSignal.timeout(DEADLINE_MS),
        }).then(async (r) => { for await (const _ of r.body); }).catch((e) => e));
      await sleep(50);
      await cluster.restartOrchestrator();
      await Promise.all(inFlight);
      await cluster.waitForNodes(2);
      const outcomes = await load(cluster, { rounds: 1 });
      assert.equal(succeeded(outcomes), outcomes.length, cluster.logs());
      const nodes = await cluster.nodes();
      assert.deepEqual(nodes.map((n) => n.name).sort(), ['decode0', 'prefill0']);
    });
  });
});
