#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target into fuzz/corpus/<target>/ (run once; the files are
committed). Seeds are valid inputs of each format, so the fuzzer starts inside the parser."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def write(target, name, data):
    folder = os.path.join(HERE, 'corpus', target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), 'wb') as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# fuzz_openai_request: selector byte (bit 0: chat) + body.
write('fuzz_openai_request', 'completion', b'\x00' + json.dumps({
    'model': 'stories260K', 'prompt': 'Once upon a time', 'max_tokens': 16, 'temperature': 0.7,
    'top_p': 0.9, 'stop': ['.', '\n'], 'logprobs': 2, 'seed': 7, 'logit_bias': {'5': -100},
    'stream': True, 'stream_options': {'include_usage': True}}).encode())
write('fuzz_openai_request', 'chat', b'\x01' + json.dumps({
    'model': 'stories260K', 'messages': [{'role': 'system', 'content': 'Be brief.'},
                                         {'role': 'user', 'content': [{'type': 'text', 'text': 'Hi'}]}],
    'max_tokens': 8, 'logprobs': True, 'top_logprobs': 3, 'ignore_eos': True,
    'min_tokens': 2, 'stop_token_ids': [2], 'repetition_penalty': 1.1}).encode())
write('fuzz_openai_request', 'token_ids', b'\x00' + json.dumps({
    'model': 'stories260K', 'prompt': [1, 2, 3, 400], 'max_tokens': 4, 'n': 1,
    'presence_penalty': 0.5, 'frequency_penalty': -0.5, 'return_token_ids': True}).encode())

# fuzz_config: selector byte (0 agent, 1 orchestrator, 2 transfer bench, 3 routesim) + YAML.
for selector, name in [(0, 'node_agent.yaml'), (1, 'orchestrator.yaml'),
                       (2, 'transfer_bench.yaml'), (3, 'routesim.yaml')]:
    path = os.path.join(ROOT, 'config', 'examples', name)
    if os.path.exists(path):
        with open(path, 'rb') as f:
            write('fuzz_config', name, bytes([selector]) + f.read())


# fuzz_gguf: a small GGUF v3 file: metadata of each value type and two tensors.
def gguf():
    def s(text):
        b = text.encode()
        return struct.pack('<Q', len(b)) + b
    kvs = [
        (s('general.architecture'), 8, s('llama')),
        (s('general.alignment'), 4, struct.pack('<I', 32)),
        (s('llama.block_count'), 4, struct.pack('<I', 1)),
        (s('llama.rope.freq_base'), 6, struct.pack('<f', 10000.0)),
        (s('tokenizer.ggml.tokens'), 9, struct.pack('<IQ', 8, 2) + s('a') + s('b')),
        (s('general.flag'), 7, b'\x01'),
        (s('general.count'), 10, struct.pack('<Q', 3)),
    ]
    tensors = [(s('tok.weight'), [4, 2], 0, 0), (s('norm.weight'), [4], 1, 32)]  # f32, f16
    out = b'GGUF' + struct.pack('<IQQ', 3, len(tensors), len(kvs))
    for key, kind, value in kvs:
        out += key + struct.pack('<I', kind) + value
    for name, dims, kind, offset in tensors:
        out += name + struct.pack('<I', len(dims)) + b''.join(struct.pack('<Q', d) for d in dims)
        out += struct.pack('<IQ', kind, offset)
    out += b'\0' * (-len(out) % 32)
    return out + bytes(range(64))
write('fuzz_gguf', 'small.gguf', gguf())

# fuzz_control_wire: selector byte (the message type, fuzz_control_wire.cc's order) + JSON.
wire = [
    (0, {'name': 'p0', 'role': 'prefill', 'control_address': '127.0.0.1:7000',
         'model_fingerprint': 'ab', 'tokenizer_hash': 'cd', 'hash_seed_id': 'ef', 'block_tokens': 16,
         'kv_layout': {'dtype': 'bf16', 'layers': 2, 'kv_heads': 1, 'head_dim': 8, 'block_bytes': 256},
         'transport': 'tcp', 'transport_blob': 'S1ZGQgIA', 'kv_blocks': 64, 'max_sequence_tokens': 512,
         'prefill_model': {'fixed_s': 0.01, 'per_token_s': 0.001, 'per_token_squared_s': 0}}),
    (1, {'node_id': 3, 'node_token': 12345, 'heartbeat_interval_ms': 1000, 'heartbeat_timeout_ms': 5000}),
    (2, {'node_id': 3, 'node_token': 12345, 'load': {'free_kv_blocks': 10, 'total_kv_blocks': 64},
         'kv_events': [{'sequence': 1, 'stored': [1, 2], 'evicted': [3]}], 'draining': False}),
    (3, {'resync': True}),
    (4, {'node_id': 3, 'node_token': 12345}),
    (5, {'request_id': 9, 'tokens': [1, 2, 3], 'lease_ms': 30000}),
    (9, {'lease_id': 4, 'first_token': 5, 'max_tokens': 8, 'stop_tokens': [2],
         'sampling': {'temperature': 0.5, 'top_p': 0.9, 'seed': 1}}),
    (11, {'token': 7, 'logprobs': {'logprob': -0.5, 'top': [[7, -0.5], [8, -1.5]]}}),
    (11, {'finish': 'stop'}),
    (12, {'id': 4, 'writer_done': True}),
]
for i, (selector, body) in enumerate(wire):
    write('fuzz_control_wire', f'msg{i}', bytes([selector]) + json.dumps(body).encode())
write('fuzz_control_wire', 'base64', b'\x0dS1ZGQgIAA3RjcAEAAAAAAAAAAA==')


# fuzz_endpoint_blob: v1 and v2 blobs as rdma/endpoint_blob.cc writes them.
def blob(version, gpu):
    out = struct.pack('<IHB', 0x4246564B, version, 3) + b'tcp' + struct.pack('<QI', 0x1234, 2)
    for rid in (1, 2):
        out += struct.pack('<IQQI', rid, 4096, 0x10000 * rid, 7)
        if version >= 2:
            out += struct.pack('<BI', 1 if gpu else 0, 1 if gpu else 0)
    address = b'127.0.0.1:7001'
    return out + struct.pack('<I', len(address)) + address
write('fuzz_endpoint_blob', 'v1', blob(1, False))
write('fuzz_endpoint_blob', 'v2', blob(2, False))
write('fuzz_endpoint_blob', 'v2_gpu', blob(2, True))

# fuzz_http_request: requests as the control plane and the API see them.
write('fuzz_http_request', 'signed', 'POST /agent/reserve HTTP/1.1\r\nHost: 127.0.0.1\r\n'
      'X-Kvferry-Auth: v1 ts=1733400000000 nonce=0123456789abcdef0123456789abcdef '
      'mac=' + '0' * 64 + '\r\nContent-Length: 13\r\n\r\n{"blocks":4}\n')
write('fuzz_http_request', 'chunked', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\n'
      'Transfer-Encoding: chunked\r\nAuthorization: Bearer sk\r\n\r\n4\r\n{"a"\r\n2\r\n:1\r\n0\r\n\r\n')
write('fuzz_http_request', 'get', 'GET /v1/nodes?x=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n')


# fuzz_tcp_frames: a mode byte (bit 0: the harness sends a valid hello first), then frames as a
# tcp initiator sends them (rdma/tcp/tcp_wire.h) to a target whose one region is 64 KiB, id 1.
def frame(opcode, flags=0, region=0, imm=0, request_id=0, offset=0, length=0, op_index=0):
    return struct.pack('<IBBHIIQQQII', 0x5246564B, opcode, flags, 0, region, imm, request_id,
                       offset, length, op_index, 0)
def write_batch(ops, imm=None, request_id=1):  # ops: (region, offset, payload)
    table = b''.join(struct.pack('<IIQQ', r, 0, o, len(p)) for r, o, p in ops)
    body = table + b''.join(p for _, _, p in ops)
    return frame(3, 1 | (2 if imm is not None else 0), imm=imm or 0, request_id=request_id,
                 length=len(body), op_index=len(ops)) + body
def read_request(region, offset, length, request_id=2, op_index=0, last=True):
    return frame(4, 1 if last else 0, region=region, request_id=request_id, offset=offset,
                 length=length, op_index=op_index)
write('fuzz_tcp_frames', 'write_imm', b'\x01' + write_batch([(1, 0, b'a' * 64), (1, 4096, b'b' * 32)], imm=7))
write('fuzz_tcp_frames', 'write_then_read', b'\x01' + write_batch([(1, 100, b'kv' * 50)]) +
      read_request(1, 100, 100, last=False) + read_request(1, 65000, 536, op_index=1))
write('fuzz_tcp_frames', 'edges', b'\x01' + write_batch([(1, 65536 - 8, b'x' * 8), (1, 0, b'')]) +
      read_request(1, 65536, 1) + read_request(2, 0, 16))
write('fuzz_tcp_frames', 'hello', b'\x00' + frame(1, region=2, request_id=9, offset=1))
write('fuzz_tcp_frames', 'read', b'\x01' + read_request(1, 0, 100))
