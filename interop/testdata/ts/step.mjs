// step.mjs runs ONE step of the Go interop test (../../interop_test.go)
// against the real @chat-adapter/state-redis, then exits.
//
//   REDIS_URL=redis://127.0.0.1:PORT node step.mjs <step> '<json-args>'
//
// Steps:
//   versions   the installed package versions and node's: {"chat","state-redis","redis","node"}.
//   ops        {"ops":[op, ...]}: runs the StateAdapter operations in order,
//              one adapter per key prefix, and reports every result.
//
// An op is {"op": <StateAdapter method>, ...its arguments by name...} with
// these optional fields:
//   "prefix"  keyPrefix of the adapter to use (absent: the adapter's default, "chat-sdk")
//   "save"    remember the result under this name; a later "lock" may be "$name"
//   "label"   echoed in the result, for error messages
//   "expect"  compare the result with this value (util.isDeepStrictEqual) and
//             report "equal": true|false, so a value is judged as JavaScript
//             saw it, before any re-serialisation; on a mismatch "got" is
//             util.inspect of the value (which shows what JSON hides, as -0)
// Arguments by op:
//   subscribe, unsubscribe, isSubscribed, forceReleaseLock, dequeue, queueDepth: threadId
//   acquireLock: threadId, ttlMs;  releaseLock: lock;  extendLock: lock, ttlMs
//   get, delete, getList: key;  set, setIfNotExists: key, value, ttlMs (absent: no TTL)
//   appendToList: key, value, options ({maxLength, ttlMs}, absent: none)
//   enqueue: threadId, entry, maxSize.  entry is {message, enqueuedAt, expiresAt};
//            with "chatMessage" instead of "message" the message is a real
//            chat Message built from that spec, stored through its toJSON().
//   dequeue: with "revive": true, also reports Message.fromJSON(entry.message)
//            as {isMessage, id, threadId, text, dateSent (ISO), authorUserName}.
//   now:     Date.now() (no adapter call).
//
// Output: exactly one JSON line on stdout:
//   {"ok":true,"results":[{"op","ok":true,"value",["equal"]} | {"op","ok":false,"error"}, ...]}
// or {"ok":false,"error":"..."} when the step itself failed (exit status 1).
// A failing op does not stop the step: its error is its result. Diagnostics
// go to stderr.
import { readFileSync } from "node:fs";
import { inspect, isDeepStrictEqual } from "node:util";
import { createRedisState } from "@chat-adapter/state-redis";
import { Message } from "chat";

const STEP_TIMEOUT_MS = 30_000;

// The adapter's logger only sees client "error" events; keep stdout clean.
const stderrLogger = {
  debug() {},
  info() {},
  warn: (msg, ...args) => console.error(`[state-redis] warn: ${msg}`, ...args),
  error: (msg, ...args) => console.error(`[state-redis] error: ${msg}`, ...args),
  child() {
    return stderrLogger;
  },
};

function finish(obj, code) {
  process.stdout.write(`${JSON.stringify(obj)}\n`, () => process.exit(code));
}

const watchdog = setTimeout(() => {
  finish({ ok: false, error: `step did not finish within ${STEP_TIMEOUT_MS} ms` }, 1);
}, STEP_TIMEOUT_MS);
watchdog.unref();

function installedVersion(name) {
  const url = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(url, "utf8")).version;
}

const adapters = new Map(); // JSON of the prefix option -> connected adapter

async function adapterFor(prefix) {
  // undefined (no keyPrefix option) and "" are different options, even if
  // state-redis maps both to its default.
  const k = prefix === undefined ? "default" : JSON.stringify(prefix);
  let a = adapters.get(k);
  if (!a) {
    const url = process.env.REDIS_URL;
    if (!url) throw new Error("REDIS_URL is not set");
    a = createRedisState(
      prefix === undefined ? { url, logger: stderrLogger } : { url, keyPrefix: prefix, logger: stderrLogger },
    );
    adapters.set(k, a);
    await a.connect();
  }
  return a;
}

function buildMessage(spec) {
  return new Message({
    id: spec.id,
    threadId: spec.threadId,
    text: spec.text,
    formatted: spec.formatted ?? { type: "root", children: [] },
    raw: spec.raw ?? {},
    author: spec.author ?? {
      userId: "U1",
      userName: "alice",
      fullName: "Alice",
      isBot: false,
      isMe: false,
    },
    metadata: {
      dateSent: new Date(spec.dateSent ?? 0),
      edited: spec.edited ?? false,
    },
    attachments: spec.attachments ?? [],
    isMention: spec.isMention,
  });
}

async function runOp(op, saved) {
  const a = op.op === "now" ? null : await adapterFor(op.prefix);
  const lockArg = () => (typeof op.lock === "string" && op.lock.startsWith("$") ? saved.get(op.lock.slice(1)) : op.lock);
  switch (op.op) {
    case "now":
      return Date.now();
    case "subscribe":
      return a.subscribe(op.threadId);
    case "unsubscribe":
      return a.unsubscribe(op.threadId);
    case "isSubscribed":
      return a.isSubscribed(op.threadId);
    case "acquireLock":
      return a.acquireLock(op.threadId, op.ttlMs);
    case "releaseLock":
      return a.releaseLock(lockArg());
    case "extendLock":
      return a.extendLock(lockArg(), op.ttlMs);
    case "forceReleaseLock":
      return a.forceReleaseLock(op.threadId);
    case "get":
      return a.get(op.key);
    case "set":
      return a.set(op.key, op.value, op.ttlMs);
    case "setIfNotExists":
      return a.setIfNotExists(op.key, op.value, op.ttlMs);
    case "delete":
      return a.delete(op.key);
    case "appendToList":
      return a.appendToList(op.key, op.value, op.options);
    case "getList":
      return a.getList(op.key);
    case "enqueue": {
      const e = op.entry;
      const message = "chatMessage" in e ? buildMessage(e.chatMessage) : e.message;
      // Same shape and key order as chat's core: {message, enqueuedAt, expiresAt}.
      return a.enqueue(op.threadId, { message, enqueuedAt: e.enqueuedAt, expiresAt: e.expiresAt }, op.maxSize);
    }
    case "dequeue": {
      const entry = await a.dequeue(op.threadId);
      if (op.revive && entry) {
        const m = Message.fromJSON(entry.message);
        return {
          entry,
          revived: {
            isMessage: m instanceof Message,
            id: m.id,
            threadId: m.threadId,
            text: m.text,
            dateSent: m.metadata.dateSent.toISOString(),
            authorUserName: m.author.userName,
          },
        };
      }
      return entry;
    }
    case "queueDepth":
      return a.queueDepth(op.threadId);
    default:
      throw new Error(`unknown op ${JSON.stringify(op.op)}`);
  }
}

async function runOps(args) {
  if (!Array.isArray(args.ops)) throw new Error('ops: want {"ops":[...]}');
  const saved = new Map();
  const results = [];
  for (const op of args.ops) {
    let r;
    try {
      const value = await runOp(op, saved);
      if (op.save) saved.set(op.save, value);
      r = { op: op.op, ok: true, value: value === undefined ? null : value };
      if (op.label !== undefined) r.label = op.label;
      if ("expect" in op) {
        r.equal = isDeepStrictEqual(value === undefined ? null : value, op.expect);
        // JSON cannot show every difference (-0 prints as 0): say it in JS.
        if (!r.equal) r.got = inspect(value, { depth: 20 });
      }
    } catch (err) {
      r = { op: op.op, ok: false, error: String(err?.message ?? err) };
      if (op.label !== undefined) r.label = op.label;
    }
    results.push(r);
  }
  return { ok: true, results };
}

async function main() {
  const [step, rawArgs = "{}"] = process.argv.slice(2);
  const args = JSON.parse(rawArgs);
  try {
    switch (step) {
      case "versions":
        return {
          ok: true,
          chat: installedVersion("chat"),
          "state-redis": installedVersion("@chat-adapter/state-redis"),
          redis: installedVersion("redis"),
          node: process.versions.node,
        };
      case "ops":
        return await runOps(args);
      default:
        throw new Error(`unknown step ${JSON.stringify(step)}; want versions or ops`);
    }
  } finally {
    for (const a of adapters.values()) {
      try {
        await a.disconnect();
      } catch (err) {
        console.error(`disconnect: ${err?.message ?? err}`);
      }
    }
  }
}

main().then(
  (out) => finish(out, 0),
  (err) => finish({ ok: false, error: String(err?.stack ?? err) }, 1),
);
