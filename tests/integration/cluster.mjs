// Starts a real kvferry cluster on 127.0.0.1 for the integration tests: an orchestrator and node
// agents as separate processes, every port chosen at run time (port 0 + --port-file), readiness
// by polling (never fixed sleeps), and a stop that checks no process is left behind. Every
// cluster is secured as a deployed one is: a fresh cluster secret signs the control plane
// (common/control_auth.h); signedFetch() makes a control call the way the orchestrator does.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const BIN = process.env.KVFERRY_BIN_DIR;
export const MODEL = process.env.KVFERRY_MODEL;
if (!BIN || !MODEL) throw new Error('KVFERRY_BIN_DIR and KVFERRY_MODEL must be set');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `check` until it returns a truthy value or `ms` pass (then throws `what`).
export async function waitFor(what, ms, check) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    await sleep(25);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}` + (last ? `: ${last}` : ''));
}

// The X-Kvferry-Auth header of a control-plane call signed with `secret`, as
// common/control_auth.cc makes it: v1 ts=<unix ms> nonce=<32 hex> mac=HMAC-SHA256(secret,
// "v1\n" METHOD "\n" target "\n" ts "\n" nonce "\n" body).
export function controlAuthHeader(secret, method, url, body) {
  const target = new URL(url);
  const ts = String(Date.now());
  const nonce = crypto.randomBytes(16).toString('hex');
  const mac = crypto.createHmac('sha256', secret)
    .update(`v1\n${method}\n${target.pathname}${target.search}\n${ts}\n${nonce}\n`)
    .update(body)
    .digest('hex');
  return `v1 ts=${ts} nonce=${nonce} mac=${mac}`;
}

export function signedFetch(secret, url, { method = 'POST', body = '', headers = {} } = {}) {
  return fetch(url, {
    method,
    headers: { ...headers, 'x-kvferry-auth': controlAuthHeader(secret, method, url, body) },
    body: method === 'GET' ? undefined : body,
  });
}

class Proc {
  constructor(name, args, dir) {
    this.name = name;
    this.log = path.join(dir, `${name}.log`);
    this.portFile = path.join(dir, `${name}.port`);
    const out = fs.openSync(this.log, 'w');
    this.child = spawn(args[0], [...args.slice(1), '--port-file', this.portFile], {
      stdio: ['ignore', out, out],
    });
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
    this.child.on('exit', () => (this.dead = true));
  }
  async port() {
    return waitFor(`${this.name} to listen (log: ${this.log})`, 30000, () => {
      if (this.dead) throw new Error(`${this.name} exited: ${this.tail()}`);
      return fs.existsSync(this.portFile) && Number(fs.readFileSync(this.portFile, 'utf8'));
    });
  }
  tail(lines = 15) {
    try {
      return fs.readFileSync(this.log, 'utf8').trim().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }
  kill(signal = 'SIGKILL') {
    if (!this.dead) this.child.kill(signal);
    return this.exited;
  }
  // Resolves once the process is stopped (SIGSTOP, or its own `action=stall` fault point):
  // state T in /proc/<pid>/stat.
  async stopped(ms = 30000) {
    return waitFor(`${this.name} to stop (log: ${this.log})`, ms, () => {
      if (this.dead) throw new Error(`${this.name} exited: ${this.tail()}`);
      const stat = fs.readFileSync(`/proc/${this.child.pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2)[0] === 'T';
    });
  }
}

// options: { prefill: n, decode: n, both: n, orchestratorYaml: extra YAML, kvBlocks,
//   kvBlocksFor: { role: blocks } (a role's own KV capacity, else kvBlocks, else 256), model: the
//   model path for every process (default KVFERRY_MODEL), agentArgs: { name: [flags] } (extra
//   flags of one agent, by its name: prefill0, decode1, ...), openControlPlane: true (no cluster
//   secret: the control plane takes calls from anyone, as before one is configured),
//   heartbeatTimeoutMs (default 1500: a killed agent is declared dead quickly) }
export class Cluster {
  constructor(options = {}) {
    this.options = options;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvferry-it-'));
    this.agents = [];
    this.secretArgs = [];
    if (!options.openControlPlane) {
      this.secret = crypto.randomBytes(32).toString('hex');
      this.secretFile = path.join(this.dir, 'cluster.secret');
      fs.writeFileSync(this.secretFile, `${this.secret}\n`, { mode: 0o600 });
      this.secretArgs = ['--cluster-secret-file', this.secretFile];
    }
  }

  async start() {
    const yaml = path.join(this.dir, 'orchestrator.yaml');
    fs.writeFileSync(
      yaml,
      `registry:\n  heartbeat_interval_ms: 100\n` +
        `  heartbeat_timeout_ms: ${this.options.heartbeatTimeoutMs ?? 1500}\n` +
        (this.options.orchestratorYaml ?? ''),
    );
    this.startOrchestrator('127.0.0.1:0');
    this.port = await this.orchestrator.port();
    this.url = `http://127.0.0.1:${this.port}`;
    const roles = [];
    for (const role of ['prefill', 'decode', 'both']) {
      for (let i = 0; i < (this.options[role] ?? 0); ++i) roles.push(role);
    }
    for (const role of roles) this.addAgent(role);
    await Promise.all(this.agents.map((a) => a.port()));
    await this.waitForNodes(roles.length);
    return this;
  }

  startOrchestrator(listen) {
    this.orchestrator = new Proc(
      'orchestrator',
      [path.join(BIN, 'orchestrator', 'orchestrator'), '--config', path.join(this.dir, 'orchestrator.yaml'),
        '--model', this.options.model ?? MODEL,
        '--listen', listen, ...this.secretArgs, ...(this.options.orchestratorArgs ?? [])],
      this.dir,
    );
  }

  // kill -9 the orchestrator and start a new one on the same port (the agents find it again).
  async restartOrchestrator() {
    await this.orchestrator.kill('SIGKILL');
    fs.renameSync(this.orchestrator.log, path.join(this.dir, `orchestrator-${Date.now()}.log`));
    fs.rmSync(this.orchestrator.portFile, { force: true });
    this.startOrchestrator(`127.0.0.1:${this.port}`);
    await this.orchestrator.port();
  }

  // `model`: this agent's model path, when it differs from the cluster's.
  addAgent(role, model = this.options.model ?? MODEL) {
    const name = `${role}${this.agents.filter((a) => a.role === role).length}`;
    const agent = new Proc(
      name,
      [path.join(BIN, 'node_agent', 'node_agent'), '--model', model, '--role', role,
        '--orchestrator', `127.0.0.1:${this.port}`, '--control-address', '127.0.0.1:0',
        '--name', name,
        '--kv-blocks', String(this.options.kvBlocksFor?.[role] ?? this.options.kvBlocks ?? 256),
        ...this.secretArgs, ...(this.options.agentArgs?.[name] ?? [])],
      this.dir,
    );
    agent.role = role;
    this.agents.push(agent);
    return agent;
  }

  // Waits until `count` nodes are alive in the registry.
  async waitForNodes(count) {
    return waitFor(`${count} live nodes`, 30000, async () => {
      const nodes = await this.nodes();
      return nodes.filter((n) => n.alive).length >= count && nodes;
    });
  }

  // The registry, read as an operator does (the cluster secret as Bearer).
  async nodes() {
    const headers = this.secret ? { authorization: `Bearer ${this.secret}` } : {};
    const r = await fetch(`${this.url}/v1/nodes`, { headers });
    const body = await r.json();
    return Array.isArray(body) ? body : body.nodes ?? body.data;
  }

  // Every live agent reports no lease, no decoding sequence and every KV block free (free
  // counts cached-but-unused blocks).
  async waitForIdle(ms = 10000) {
    return waitFor('every lease and KV block to be returned', ms, async () => {
      const nodes = (await this.nodes()).filter((n) => n.alive);
      const idle = nodes.every(
        (n) => n.active_leases === 0 && n.leased_blocks === 0 && n.active_decode_seqs === 0 &&
          n.free_kv_blocks === n.total_kv_blocks,
      );
      if (!idle) this.lastBusy = JSON.stringify(nodes);
      return idle;
    });
  }

  async post(route, body, headers = {}) {
    const r = await fetch(`${this.url}${route}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
    });
    const text = await r.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: r.status, headers: r.headers, text, json };
  }

  // A call on `agent`'s control API, signed as the orchestrator signs it.
  async agentCall(agent, route, body = '{}') {
    const url = `http://127.0.0.1:${await agent.port()}${route}`;
    const init = { body, headers: { 'content-type': 'application/json' } };
    return this.secret ? signedFetch(this.secret, url, init) : fetch(url, { method: 'POST', ...init });
  }

  // SIGTERM everything, then check every process exited by itself.
  async stop() {
    const all = [...this.agents, this.orchestrator].filter(Boolean);
    await Promise.all(all.map((p) => p.kill('SIGTERM')));
    const results = await Promise.all(
      all.map(async (p) => {
        const timeout = sleep(15000).then(() => 'timeout');
        const r = await Promise.race([p.exited, timeout]);
        if (r === 'timeout') {
          p.kill('SIGKILL');
          return `${p.name} did not exit within 15 s of SIGTERM`;
        }
        return null;
      }),
    );
    const problems = results.filter(Boolean);
    if (problems.length === 0 && !process.env.KVFERRY_KEEP_LOGS) {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
    return problems;
  }

  logs() {
    return [...this.agents, this.orchestrator]
      .filter(Boolean)
      .map((p) => `--- ${p.name} ---\n${p.tail()}`)
      .join('\n');
  }
}

// Reads an SSE response into its `data:` payloads (parsed JSON, or the string "[DONE]").
export async function readSse(response, { stopAfter } = {}) {
  const events = [];
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of response.body) {
    buffer += decoder.decode(chunk, { stream: true });
    let at;
    while ((at = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, at);
      buffer = buffer.slice(at + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        events.push(data === '[DONE]' ? data : JSON.parse(data));
      }
      if (stopAfter && events.length >= stopAfter) return { events, rest: buffer, stopped: true };
    }
  }
  return { events, rest: buffer, stopped: false };
}
