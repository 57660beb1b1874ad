// The webhook flow of the benchmark for @upstash/redis, mirroring
// bench/internal/flow/flow.go step for step: the same keys, values and
// TTLs, with the commands @chat-adapter/state-redis sends. It imports no
// package, so the Go tests can compare its messages with Go's.
import { performance } from "node:perf_hooks";

const PREFIX = "chat-sdk";
const DEDUPE_TTL = 10 * 60 * 1000;
const LOCK_TTL = 30 * 1000;
const QUEUE_ENTRY_TTL = 90 * 1000;
const MAX_QUEUE = 10;
const THREAD_STATE_TTL = 30 * 24 * 3600 * 1000;
const HISTORY_MAX = 100;
const HISTORY_TTL = 7 * 24 * 3600 * 1000;
const DUP_EVERY = 10;
const DUP_BACK = 5;

// The scripts state-redis runs (append, enqueue with its 60 s floor
// computed by the caller, compare-and-delete release).
const APPEND_LUA = `redis.call('RPUSH', KEYS[1], ARGV[1])
local maxLength = tonumber(ARGV[2])
if maxLength > 0 then redis.call('LTRIM', KEYS[1], -maxLength, -1) end
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1`;
const ENQUEUE_LUA = `redis.call('RPUSH', KEYS[1], ARGV[1])
local maxSize = tonumber(ARGV[2])
if maxSize > 0 then redis.call('LTRIM', KEYS[1], -maxSize, -1) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('LLEN', KEYS[1])`;
const RELEASE_LUA = `if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;

const cacheKey = (k) => `${PREFIX}:cache:${k}`;
const listKey = (k) => `${PREFIX}:list:${k}`;
const lockKey = (t) => `${PREFIX}:lock:${t}`;
const queueKey = (t) => `${PREFIX}:queue:${t}`;
const subscriptionsKey = `${PREFIX}:subscriptions`;

// state-redis's token: not cryptographically random, as shipped.
const newToken = () => `redis_${Date.now()}_${Math.random().toString(36).substring(2, 15)}`;

export function threadName(k) {
  return `bench:T${k}`;
}

// workload mirrors flow.Workload.
export function workload(n, threads) {
  threads = Math.max(threads, 1);
  const out = new Array(n);
  for (let i = 0; i < n; i++) {
    if (i % DUP_EVERY === DUP_EVERY - 1) {
      out[i] = out[i - DUP_BACK];
      continue;
    }
    out[i] = { seq: i, messageId: `m${i}`, threadId: threadName(i % threads) };
  }
  return out;
}

// newMessage mirrors flow.NewMessage (Message.toJSON()'s shape).
export function newMessage(w) {
  const text = `message ${w.messageId} in ${w.threadId}: ` + "lorem ipsum ".repeat(6);
  return {
    _type: "chat:Message",
    id: w.messageId,
    threadId: w.threadId,
    text,
    formatted: { type: "root", children: [{ type: "paragraph", children: [{ type: "text", value: text }] }] },
    raw: { type: "message", channel: w.threadId, user: "U0BENCH", ts: `1700000000.${100000 + w.seq}` },
    author: { userId: "U0BENCH", userName: "bench", fullName: "Bench User", isBot: false, isMe: false, isSystem: false },
    metadata: { dateSent: "2026-01-01T00:00:00.000Z", edited: false },
    attachments: [],
    isMention: false,
  };
}

export class Flow {
  constructor(redis) {
    this.redis = redis;
    this.ops = 0;
    this.append = redis.createScript(APPEND_LUA);
    this.enqueueScript = redis.createScript(ENQUEUE_LUA);
    this.release = redis.createScript(RELEASE_LUA);
  }

  async acquireLock(threadId) {
    const token = newToken();
    const ok = await this.redis.set(lockKey(threadId), token, { nx: true, px: LOCK_TTL });
    return ok === null ? null : { threadId, token, expiresAt: Date.now() + LOCK_TTL };
  }

  async enqueue(threadId, message) {
    const now = Date.now();
    const entry = { message, enqueuedAt: now, expiresAt: now + QUEUE_ENTRY_TTL };
    const ttl = Math.max(entry.expiresAt - now, 60000);
    return await this.enqueueScript.exec([queueKey(threadId)], [JSON.stringify(entry), String(MAX_QUEUE), String(ttl)]);
  }

  // dequeue is state-redis's LPOP; the core drops expired entries.
  async dequeue(threadId) {
    for (;;) {
      this.ops++;
      const entry = await this.redis.lpop(queueKey(threadId));
      if (entry === null) return null;
      if (Date.now() <= entry.expiresAt) return entry;
    }
  }

  async warmup() {
    const w = { seq: -1, messageId: "warmup", threadId: "bench:warmup" };
    await this.handle(w);
    this.ops += 1;
    await this.enqueue(w.threadId, newMessage(w));
    await this.dequeue(w.threadId);
  }

  // handle mirrors flow.Calls.Handle.
  async handle(w) {
    const r = this.redis;
    this.ops++;
    const first = await r.set(cacheKey(`dedupe:bench:${w.messageId}`), true, { nx: true, px: DEDUPE_TTL });
    if (first === null) return { status: "duplicate", drained: 0 };
    this.ops += 2;
    const subscribed = (await r.sismember(subscriptionsKey, w.threadId)) === 1;
    const lock = await this.acquireLock(w.threadId);
    const msg = newMessage(w);
    if (lock === null) {
      this.ops += 2;
      await r.llen(queueKey(w.threadId));
      await this.enqueue(w.threadId, msg);
      return { status: "queued", drained: 0 };
    }
    const out = { status: "handled", drained: 0 };
    try {
      await this.process(msg, subscribed);
      for (;;) {
        const entry = await this.dequeue(w.threadId);
        if (entry === null) break;
        await this.process(entry.message, subscribed);
        out.drained++;
      }
    } finally {
      this.ops++;
      await this.release.exec([lockKey(lock.threadId)], [lock.token]);
    }
    return out;
  }

  async process(m, subscribed) {
    const r = this.redis;
    this.ops += 3;
    const key = cacheKey(`thread-state:${m.threadId}`);
    const ts = (await r.get(key)) ?? { count: 0 };
    await r.set(key, { count: ts.count + 1, last: m.id, subscribed }, { px: THREAD_STATE_TTL });
    const item = { ...m, raw: null };
    await this.append.exec([listKey(`msg-history:${m.threadId}`)], [JSON.stringify(item), String(HISTORY_MAX), String(HISTORY_TTL)]);
  }
}

export function percentile(values, p) {
  if (values.length === 0) return 0;
  const s = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((s.length * p) / 100) - 1;
  return s[Math.min(Math.max(rank, 0), s.length - 1)];
}

// run mirrors flow.Run, and adds the process's CPU time.
export async function run(flow, n, callers, threads) {
  const webhooks = workload(n, threads);
  const res = { webhooks: n, seconds: 0, handled: 0, drained: 0, queued: 0, duplicates: 0, errors: 0, ops: 0, latencies_us: [] };
  let next = 0;
  const ops0 = flow.ops;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const caller = async () => {
    for (;;) {
      const i = next++;
      if (i >= webhooks.length) return;
      const t0 = performance.now();
      let out = { status: "", drained: 0 };
      try {
        out = await flow.handle(webhooks[i]);
      } catch (err) {
        res.errors++;
        res.first_error ??= String(err?.message ?? err);
      }
      res.latencies_us.push(Math.round((performance.now() - t0) * 1000));
      if (out.status === "handled") res.handled++;
      else if (out.status === "queued") res.queued++;
      else if (out.status === "duplicate") res.duplicates++;
      res.drained += out.drained;
    }
  };
  await Promise.all(Array.from({ length: Math.max(callers, 1) }, caller));
  res.seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  res.cpu_user_ms = cpu.user / 1000;
  res.cpu_sys_ms = cpu.system / 1000;
  res.ops = flow.ops - ops0;
  return res;
}
