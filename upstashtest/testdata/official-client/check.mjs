// check.mjs: the official @upstash/redis client as the judge of an
// Upstash-REST-compatible server (upstashtest, cmd/upstash-local, or the real
// service).
//
//   UPSTASH_REDIS_REST_URL=http://127.0.0.1:PORT \
//   UPSTASH_REDIS_REST_TOKEN=... \
//   UPSTASH_REDIS_REST_READ_ONLY_TOKEN=... \
//   node check.mjs
//
// Every check is named and asserts with node:assert/strict. The last line of
// output is exactly "N passed, N failed"; the exit code is 1 if any check
// failed (2 if the environment is incomplete).
//
// Optional: CHECK_FILTER=<regexp> runs only the checks whose name matches.
//
// The checks call the client the way application code does. A small wrapper
// around globalThis.fetch records what went over the wire (path, command
// bodies, status, sync-token headers) so that some checks can also assert
// how the client talked to the server (EVALSHA then EVAL, /pipeline, 401...).
// Keys are prefixed with a per-run unique prefix; the script cache is flushed
// once (SCRIPT FLUSH), so do not point this at a database whose cached
// scripts matter.

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Redis } from "@upstash/redis";

const URL_ = process.env.UPSTASH_REDIS_REST_URL ?? "";
const TOKEN = process.env.UPSTASH_REDIS_REST_TOKEN ?? "";
const RO_TOKEN = process.env.UPSTASH_REDIS_REST_READ_ONLY_TOKEN ?? "";
const FILTER = process.env.CHECK_FILTER ? new RegExp(process.env.CHECK_FILTER) : null;
const CHECK_TIMEOUT_MS = 60_000; // a hang, not a slow machine

if (!URL_ || !TOKEN || !RO_TOKEN) {
  console.error(
    "check.mjs needs UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN and " +
      "UPSTASH_REDIS_REST_READ_ONLY_TOKEN in the environment",
  );
  console.log("0 passed, 1 failed");
  process.exit(2);
}

const RUN = `${Date.now().toString(36)}${randomBytes(4).toString("hex")}`;
const PREFIX = `officialclient:${RUN}:`;

// ---------------------------------------------------------------------------
// Wire log: every fetch the client makes.

const BASE_PATH = new URL(URL_).pathname.replace(/\/+$/, "");
/** @type {{path: string, body: any, headers: Record<string,string>, status?: number, syncToken?: string|null, error?: string}[]} */
const wire = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init = {}) => {
  const url = new URL(typeof input === "string" ? input : input.url);
  let rel = url.pathname.startsWith(BASE_PATH) ? url.pathname.slice(BASE_PATH.length) : url.pathname;
  if (rel === "") rel = "/";
  let body;
  try {
    body = typeof init.body === "string" ? JSON.parse(init.body) : init.body;
  } catch {
    body = init.body;
  }
  const headers = {};
  for (const [k, v] of Object.entries(init.headers ?? {})) headers[k.toLowerCase()] = v;
  const entry = { path: rel, body, headers };
  wire.push(entry);
  try {
    const res = await realFetch(input, init);
    entry.status = res.status;
    entry.syncToken = res.headers.get("upstash-sync-token");
    entry.contentType = res.headers.get("content-type");
    return res;
  } catch (e) {
    entry.error = String(e);
    throw e;
  }
};

/** Wire entries recorded since mark. */
const since = (mark) => wire.slice(mark);
/** Commands (arrays) sent since mark, flattened over "/" and "/pipeline" and "/multi-exec". */
function commandsSince(mark) {
  const out = [];
  for (const e of since(mark)) {
    if (e.path === "/") out.push(e.body);
    else if (e.path === "/pipeline" || e.path === "/multi-exec") out.push(...e.body);
  }
  return out;
}
const names = (cmds) => cmds.map((c) => String(c[0]).toLowerCase());

// ---------------------------------------------------------------------------
// Clients.

/** Client variants the data checks run under. */
const VARIANTS = [
  { tag: "base64", opts: {} }, // the client's defaults: base64 on, auto-pipelining on
  { tag: "raw", opts: { responseEncoding: false } },
  { tag: "base64/direct", opts: { enableAutoPipelining: false } }, // single commands go to POST /
  { tag: "raw/direct", opts: { responseEncoding: false, enableAutoPipelining: false } },
];
const ENCODINGS = VARIANTS.filter((v) => !v.tag.includes("/"));

function client(opts = {}, token = TOKEN) {
  return new Redis({ url: URL_, token, ...opts });
}
/** A client that returns exactly what the server stored (no JSON parsing of values). */
function rawValues(opts = {}) {
  return client({ ...opts, automaticDeserialization: false });
}

let keyCounter = 0;
const key = (name) => `${PREFIX}${name}:${++keyCounter}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const utf8len = (s) => Buffer.byteLength(s, "utf8");

/** Asserts that promise rejects and returns the error. */
async function rejection(promise, what) {
  try {
    const v = await promise;
    assert.fail(`${what}: expected a rejection, got ${JSON.stringify(v)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    return e;
  }
}

// ---------------------------------------------------------------------------
// Check registry.

const checks = [];
function check(name, fn) {
  checks.push({ name, fn });
}
/** Registers one check per variant. */
function eachVariant(variants, name, fn) {
  for (const v of variants) check(`${name} [${v.tag}]`, () => fn(v.opts, v.tag));
}

// ---------------------------------------------------------------------------
// Strings, JSON values, integers, nil.

const STRINGS = {
  ascii4: "abcd1234", // valid base64 alphabet, length % 4 == 0: garbage if the server ignores Upstash-Encoding
  latin: "héllo wörld ñ ß",
  emoji: "emoji 😀👍🏽🇯🇵👨‍👩‍👧 end",
  cjk: "漢字 かな カナ 한국어 中文",
  combining: "e\u0301 a\u0308 o\u0302\u0323 Z\u0351\u0360 (NFD, must not be normalized)",
  nul: "before\u0000after",
  nulOnly: "\u0000",
  controls: "tab\tnl\ncr\r \"q\" \\ / \u007f \u2028",
  ok: "OK",
  spaces: "  padded  ",
  empty: "",
};

eachVariant(VARIANTS, "strings: unicode, NUL and \"OK\" round-trip via set/get/mget/strlen", async (opts) => {
  const r = client(opts);
  const keys = {};
  for (const [name, value] of Object.entries(STRINGS)) {
    keys[name] = key(`str:${name}`);
    assert.equal(await r.set(keys[name], value), "OK", `set ${name}`);
  }
  for (const [name, value] of Object.entries(STRINGS)) {
    assert.equal(await r.get(keys[name]), value, `get ${name}`);
    assert.equal(await r.strlen(keys[name]), utf8len(value), `strlen ${name} (bytes stored)`);
  }
  // mget replies with an array: strings at depth 1 are always base64-decoded
  // by the client, so a bulk "OK" must be encoded there too.
  const names_ = Object.keys(STRINGS);
  assert.deepEqual(
    await r.mget(...names_.map((n) => keys[n])),
    names_.map((n) => STRINGS[n]),
    "mget of all",
  );
});

eachVariant(VARIANTS, "strings: a stored \"OK\" reads back as \"OK\" (not \"8\") everywhere", async (opts) => {
  const r = client(opts);
  const k = key("ok");
  assert.equal(await r.set(k, "OK"), "OK");
  assert.equal(await r.get(k), "OK", "get");
  assert.deepEqual(await r.mget(k, k), ["OK", "OK"], "mget");
  assert.equal(await r.getrange(k, 0, -1), "OK", "getrange");
  assert.equal(await r.echo("OK"), "OK", "echo");
  const l = key("ok:list");
  await r.rpush(l, "OK", "x", "OK");
  assert.deepEqual(await r.lrange(l, 0, -1), ["OK", "x", "OK"], "lrange");
  const h = key("ok:hash");
  await r.hset(h, { OK: "OK" });
  assert.deepEqual(await r.hgetall(h), { OK: "OK" }, "hgetall");
  const p = r.pipeline();
  p.get(k).mget(k).lrange(l, 0, 0);
  assert.deepEqual(await p.exec(), ["OK", ["OK"], ["OK"]], "pipeline");
});

const JSON_VALUES = {
  object: { a: 1, b: "two", c: [1, 2, { d: "ü😀" }], e: null, f: true, g: { h: -0.5 } },
  array: [1, "x", false, null, { y: 2 }, []],
  int: 42,
  negative: -7,
  float: 3.25,
  millis: 1700000000000,
  true: true,
  false: false,
};
// What the server must have stored for each (the client sends objects as
// JSON text and numbers/booleans as JSON primitives).
const JSON_STORED = {
  object: JSON.stringify(JSON_VALUES.object),
  array: JSON.stringify(JSON_VALUES.array),
  int: "42",
  negative: "-7",
  float: "3.25",
  millis: "1700000000000",
  true: "true",
  false: "false",
};

eachVariant(VARIANTS, "JSON values (objects, arrays, numbers, booleans) round-trip", async (opts) => {
  const r = client(opts);
  const raw = rawValues(opts);
  for (const [name, value] of Object.entries(JSON_VALUES)) {
    const k = key(`json:${name}`);
    assert.equal(await r.set(k, value), "OK", `set ${name}`);
    assert.deepEqual(await r.get(k), value, `get ${name} (deserialized)`);
    assert.equal(await raw.get(k), JSON_STORED[name], `get ${name} (stored text)`);
  }
  const [a, b, c] = [key("json:m1"), key("json:m2"), key("json:m3")];
  assert.equal(await r.mset({ [a]: { x: [1, "y"] }, [b]: 2.5, [c]: "plain" }), "OK", "mset");
  assert.deepEqual(await r.mget(a, b, c), [{ x: [1, "y"] }, 2.5, "plain"], "mget");
});

eachVariant(VARIANTS, "integers: incr, incrby 1700000000000, big numbers stay strings", async (opts) => {
  const r = client(opts);
  const k = key("int");
  assert.equal(await r.incr(k), 1, "incr of a missing key");
  assert.equal(await r.incrby(k, 1700000000000), 1700000000001, "incrby 1700000000000");
  assert.equal(await r.get(k), 1700000000001, "get");
  assert.equal(await r.decr(k), 1700000000000, "decr");
  assert.equal(await r.incrby(k, -1700000000000), 0, "incrby negative");
  assert.equal(await r.decrby(k, 5), -5, "decrby");
  const f = key("float");
  assert.equal(await r.incrbyfloat(f, 1.5), 1.5, "incrbyfloat 1.5");
  assert.equal(await r.incrbyfloat(f, 1.25), 2.75, "incrbyfloat 1.25");
  const big = key("big");
  await r.set(big, "101600000000150081467");
  assert.equal(await r.get(big), "101600000000150081467", "integer beyond 2^53 comes back as the same string");
});

eachVariant(VARIANTS, "nil: missing keys read as null", async (opts) => {
  const r = client(opts);
  const present = key("nil:present");
  await r.set(present, "here");
  assert.equal(await r.get(key("nil:missing")), null, "get");
  assert.deepEqual(
    await r.mget(key("nil:m1"), present, key("nil:m2")),
    [null, "here", null],
    "mget with holes",
  );
  assert.equal(await r.hget(key("nil:h"), "f"), null, "hget");
  assert.equal(await r.lpop(key("nil:l")), null, "lpop");
  assert.equal(await r.hgetall(key("nil:h2")), null, "hgetall");
  assert.equal(await r.exists(key("nil:e")), 0, "exists");
  assert.equal(await r.set(present, "again", { nx: true }), null, "set nx on an existing key");
  const fresh = key("nil:nx");
  assert.equal(await r.set(fresh, "first", { nx: true }), "OK", "set nx on a new key");
  assert.equal(await r.set(fresh, "second", { get: true }), "first", "set get returns the old value");
  assert.equal(await r.set(key("nil:get"), "v", { get: true }), null, "set get on a new key");
});

eachVariant(VARIANTS, "keys: slashes, query characters, spaces, unicode and the empty key", async (opts) => {
  const r = client(opts);
  const base = key("weird");
  const keys = [
    `${base}/a/b?c=d&e#f`,
    `${base} with spaces %20 %2F +plus`,
    `${base}:ключ😀漢字`,
    `${base}:OK`,
    `${base}:"quoted"\\back`,
  ];
  for (const [i, k] of keys.entries()) assert.equal(await r.set(k, `value ${i}`), "OK", `set ${k}`);
  for (const [i, k] of keys.entries()) assert.equal(await r.get(k), `value ${i}`, `get ${k}`);
  assert.equal(await r.exists(...keys), keys.length, "exists");
  assert.deepEqual(await r.mget(...keys), keys.map((_, i) => `value ${i}`), "mget");
  const found = await r.keys(`${base}*`);
  assert.deepEqual([...found].sort(), [...keys].sort(), "keys returns the exact key bytes");
  assert.equal(await r.del(...keys), keys.length, "del");
  assert.equal(await r.set("", "empty key"), "OK", "set on the empty key");
  assert.equal(await r.get(""), "empty key", "get of the empty key");
  assert.equal(await r.del(""), 1, "del of the empty key");
});

eachVariant(ENCODINGS, "generic redis.exec([...]) with stringified arguments", async (opts) => {
  const r = client(opts);
  const k = key("exec");
  assert.equal(await r.exec(["SET", k, "via exec"]), "OK", "SET in capitals");
  assert.equal(await r.exec(["get", k]), "via exec");
  assert.equal(await r.exec(["INCRBY", key("exec:n"), 1700000000000]), 1700000000000, "number argument stringified");
  assert.equal(await r.exec(["PING"]), "PONG");
  const e = await rejection(r.exec(["NOSUCHCOMMAND", "x"]), "an unknown command");
  assert.equal(e.name, "UpstashError");
  assert.match(e.message, /^ERR /);
});

// ---------------------------------------------------------------------------
// Lists, sets, hashes, expiry.

eachVariant(VARIANTS, "lists: rpush/lrange/lpop/llen", async (opts) => {
  const r = client(opts);
  const k = key("list");
  assert.equal(await r.rpush(k, "a", "OK", "ü😀", { n: 1 }, 7), 5, "rpush");
  assert.deepEqual(await r.lrange(k, 0, -1), ["a", "OK", "ü😀", { n: 1 }, 7], "lrange");
  assert.equal(await r.llen(k), 5, "llen");
  assert.equal(await r.lpop(k), "a", "lpop");
  assert.deepEqual(await r.lpop(k, 2), ["OK", "ü😀"], "lpop count 2");
  assert.equal(await r.llen(k), 2, "llen after pops");
  assert.deepEqual(await r.lrange(k, 0, -1), [{ n: 1 }, 7], "lrange after pops");
  assert.deepEqual(await r.lrange(key("list:missing"), 0, -1), [], "lrange of a missing key");
});

eachVariant(VARIANTS, "sets: sadd/sismember/smembers/srem", async (opts) => {
  const r = client(opts);
  const k = key("set");
  assert.equal(await r.sadd(k, "x", "ü😀", "OK"), 3, "sadd");
  assert.equal(await r.sadd(k, "x"), 0, "sadd existing");
  assert.equal(await r.sismember(k, "x"), 1, "sismember x");
  assert.equal(await r.sismember(k, "ü😀"), 1, "sismember emoji");
  assert.equal(await r.sismember(k, "nope"), 0, "sismember absent");
  assert.deepEqual((await r.smembers(k)).sort(), ["OK", "x", "ü😀"].sort(), "smembers");
  assert.equal(await r.srem(k, "x"), 1, "srem");
  assert.equal(await r.srem(k, "x"), 0, "srem again");
  assert.deepEqual((await r.smembers(k)).sort(), ["OK", "ü😀"].sort(), "smembers after srem");
  assert.equal(await r.scard(k), 2, "scard");
});

eachVariant(VARIANTS, "hashes: hset/hget/hgetall", async (opts) => {
  const r = client(opts);
  const k = key("hash");
  const fields = { f1: "v1", n: 42, obj: { nested: [1, "two"] }, "ключ😀": "значение", okf: "OK" };
  assert.equal(await r.hset(k, fields), 5, "hset");
  assert.equal(await r.hget(k, "f1"), "v1", "hget string");
  assert.equal(await r.hget(k, "n"), 42, "hget number");
  assert.deepEqual(await r.hget(k, "obj"), { nested: [1, "two"] }, "hget object");
  assert.equal(await r.hget(k, "ключ😀"), "значение", "hget unicode field");
  assert.equal(await r.hget(k, "okf"), "OK", "hget OK");
  assert.deepEqual(await r.hgetall(k), fields, "hgetall");
  assert.equal(await r.hlen(k), 5, "hlen");
  assert.equal(await r.hset(k, { f1: "v2" }), 0, "hset existing field");
  assert.equal(await r.hget(k, "f1"), "v2", "hget after overwrite");
  assert.equal(await r.hdel(k, "f1"), 1, "hdel");
  assert.equal(await r.hget(k, "f1"), null, "hget deleted field");
});

eachVariant(VARIANTS, "expiry: set px / pxat, expire, pttl, ttl, persist", async (opts) => {
  const r = client(opts);
  const k = key("ttl");
  assert.equal(await r.set(k, "v", { px: 60000 }), "OK", "set px 60000");
  let pttl = await r.pttl(k);
  assert.ok(Number.isInteger(pttl) && pttl > 50000 && pttl <= 60000, `pttl after px 60000: ${pttl}`);
  assert.equal(await r.expire(k, 120), 1, "expire 120");
  pttl = await r.pttl(k);
  assert.ok(pttl > 110000 && pttl <= 120000, `pttl after expire 120: ${pttl}`);
  const ttl = await r.ttl(k);
  assert.ok(ttl > 110 && ttl <= 120, `ttl after expire 120: ${ttl}`);
  const k2 = key("pxat");
  assert.equal(await r.set(k2, "v", { pxat: Date.now() + 90000 }), "OK", "set pxat (ms timestamp)");
  pttl = await r.pttl(k2);
  assert.ok(pttl > 80000 && pttl <= 90000, `pttl after pxat now+90s: ${pttl}`);
  assert.equal(await r.persist(k), 1, "persist");
  assert.equal(await r.pttl(k), -1, "pttl without expiry");
  assert.equal(await r.pttl(key("ttl:missing")), -2, "pttl of a missing key");
  assert.equal(await r.expire(key("ttl:missing2"), 10), 0, "expire of a missing key");
});

// The key is checked to be readable only while its TTL certainly has not run
// out, and to be gone once it certainly has (the SET ran before its reply
// came back), so that a loaded machine cannot make the check fail.
eachVariant(ENCODINGS, "expiry: a key set with px 1000 is gone 1000 ms later (wall clock)", async (opts) => {
  const r = client(opts);
  const k = key("shortttl");
  const start = Date.now();
  assert.equal(await r.set(k, "v", { px: 1000 }), "OK");
  const setDone = Date.now();
  const before = await r.get(k);
  if (Date.now() - start < 1000) assert.equal(before, "v", "readable before its TTL ran out");
  await sleep(Math.max(0, setDone + 1100 - Date.now()));
  assert.equal(await r.get(k), null, "get after expiry");
  assert.equal(await r.exists(k), 0, "exists after expiry");
});

// Scores are chosen so that every Redis formats them alike: Redis 7.2+ (and
// miniredis) print doubles with grisu2, which switches to exponent form for
// round numbers (1700000000000 -> "1.7e+12"), while Redis <= 7.0 uses %.17g
// ("1700000000000", but 0.1 -> "0.10000000000000001").
eachVariant(VARIANTS, "sorted sets: zadd/zscore/zincrby/zrange withScores (float replies)", async (opts) => {
  const r = client(opts);
  const k = key("zset");
  assert.equal(
    await r.zadd(k, { score: 1.5, member: "a" }, { score: 1700000000123, member: "b" }, { score: -2, member: "ü😀" }),
    3,
    "zadd",
  );
  assert.equal(await r.zscore(k, "a"), 1.5, "zscore");
  assert.equal(await r.zincrby(k, 0.25, "a"), 1.75, "zincrby");
  assert.equal(await r.zcard(k), 3, "zcard");
  assert.equal(await r.zrank(k, "b"), 2, "zrank");
  assert.deepEqual(await r.zrange(k, 0, -1), ["ü😀", "a", "b"], "zrange");
  assert.deepEqual(
    await r.zrange(k, 0, -1, { withScores: true }),
    ["ü😀", -2, "a", 1.75, "b", 1700000000123],
    "zrange withScores",
  );
  assert.equal(await r.zscore(k, "missing"), null, "zscore of a missing member");
});

eachVariant(ENCODINGS, "scan: cursor loop with match collects exactly the keys", async (opts) => {
  const r = client(opts);
  const base = key("scan");
  const want = [];
  for (let i = 0; i < 7; i++) {
    want.push(`${base}:${i}`);
    await r.set(`${base}:${i}`, i);
  }
  const got = new Set();
  let cursor = "0";
  let rounds = 0;
  do {
    const [next, keys] = await r.scan(cursor, { match: `${base}:*`, count: 3 });
    assert.equal(typeof next, "string", `cursor is a string, got ${JSON.stringify(next)}`);
    assert.ok(Array.isArray(keys));
    for (const k of keys) got.add(k);
    cursor = next;
    assert.ok(++rounds < 1000, "scan terminates");
  } while (cursor !== "0");
  assert.deepEqual([...got].sort(), want.sort());
});

eachVariant(VARIANTS, "binary replies: invalid UTF-8 bytes arrive as U+FFFD", async (opts) => {
  const r = client(opts);
  const k = key("bin");
  assert.equal(await r.setbit(k, 0, 1), 0, "setbit");
  assert.equal(await r.strlen(k), 1, "one byte stored");
  assert.equal(await r.get(k), "\uFFFD", "byte 0x80 read back");
  const script = r.createScript(`-- ${RUN}\nreturn {string.char(255, 65, 200, 66, 0, 67), 'ok'}`);
  assert.deepEqual(await script.exec([], []), ["\uFFFDA\uFFFDB\u0000C", "ok"], "lua string.char bytes");
});

// ---------------------------------------------------------------------------
// Status replies.

eachVariant(VARIANTS, "status and simple replies: ping, echo, type", async (opts) => {
  const r = client(opts);
  assert.equal(await r.ping(), "PONG", "ping");
  assert.equal(await r.ping(["hello 世界"]), "hello 世界", "ping with a message");
  assert.equal(await r.echo("echo ü 😀"), "echo ü 😀", "echo");
  const s = key("type:s");
  const l = key("type:l");
  const st = key("type:set");
  const h = key("type:h");
  await r.set(s, "v");
  await r.rpush(l, "v");
  await r.sadd(st, "v");
  await r.hset(h, { f: "v" });
  assert.equal(await r.type(s), "string", "type string");
  assert.equal(await r.type(l), "list", "type list");
  assert.equal(await r.type(st), "set", "type set");
  assert.equal(await r.type(h), "hash", "type hash");
  assert.equal(await r.type(key("type:none")), "none", "type of a missing key");
});

// ---------------------------------------------------------------------------
// Errors on single commands.

eachVariant(
  VARIANTS.filter((v) => v.tag.includes("direct")),
  "command error on POST /: HTTP 400 and the Redis error text",
  async (opts) => {
    const r = client(opts);
    const k = key("err");
    await r.set(k, "not a number");
    const mark = wire.length;
    const e = await rejection(r.incr(k), "incr on a string");
    assert.equal(e.name, "UpstashError");
    assert.match(e.message, /^ERR value is not an integer or out of range/);
    assert.match(e.message, /, command was: /, "non-2xx path of the client");
    const w = since(mark);
    assert.deepEqual(w.map((x) => [x.path, x.status]), [["/", 400]]);
    assert.equal(await r.get(k), "not a number", "value untouched");
    const e2 = await rejection(r.lpush(k, "x"), "lpush on a string");
    assert.match(e2.message, /^WRONGTYPE Operation against a key holding the wrong kind of value/);
  },
);

eachVariant(ENCODINGS, "command error inside an auto-pipeline: HTTP 200, per-command error", async (opts) => {
  const r = client(opts);
  const k = key("aperr");
  await r.set(k, "not a number");
  const mark = wire.length;
  const e = await rejection(r.incr(k), "incr on a string");
  assert.equal(e.name, "UpstashError");
  assert.match(e.message, /^Command failed: ERR value is not an integer or out of range/);
  assert.deepEqual(since(mark).map((x) => [x.path, x.status]), [["/pipeline", 200]]);
});

// ---------------------------------------------------------------------------
// Explicit pipelines.

eachVariant(ENCODINGS, "pipeline: a failing command in the middle, keepErrors", async (opts) => {
  const r = client(opts);
  const bad = key("p:bad");
  const after = key("p:after");
  await r.set(bad, "not a number");
  const p = r.pipeline();
  p.set(key("p:before"), "b").incr(bad).set(after, "after-value").get(after).incr(key("p:counter"));
  const mark = wire.length;
  const res = await p.exec({ keepErrors: true });
  assert.deepEqual(since(mark).map((x) => [x.path, x.status]), [["/pipeline", 200]]);
  assert.equal(res.length, 5);
  assert.deepEqual(res[0], { result: "OK", error: undefined }, "command 1");
  assert.equal(res[1].result, undefined, "failed command has no result");
  assert.match(String(res[1].error), /^ERR value is not an integer or out of range/, "command 2 error");
  assert.deepEqual(res[2], { result: "OK", error: undefined }, "command 3 ran");
  assert.deepEqual(res[3], { result: "after-value", error: undefined }, "command 4 ran");
  assert.deepEqual(res[4], { result: 1, error: undefined }, "command 5 ran");
  assert.equal(await r.get(after), "after-value");
});

eachVariant(ENCODINGS, "pipeline: a failing command in the middle, without keepErrors throws", async (opts) => {
  const r = client(opts);
  const bad = key("p2:bad");
  const after = key("p2:after");
  await r.set(bad, "not a number");
  const p = r.pipeline();
  p.set(key("p2:before"), "b").incr(bad).set(after, "ran anyway");
  const e = await rejection(p.exec(), "pipeline exec");
  assert.equal(e.name, "UpstashError");
  assert.match(e.message, /^Command 2 \[ incr \] failed: ERR value is not an integer or out of range/);
  assert.equal(await r.get(after), "ran anyway", "later commands ran on the server");
});

// ---------------------------------------------------------------------------
// MULTI/EXEC.

eachVariant(ENCODINGS, "multi/exec: results in order, sent to /multi-exec", async (opts) => {
  const r = client(opts);
  const k = key("tx");
  const l = key("tx:l");
  const tx = r.multi();
  tx.set(k, "1").incr(k).incrby(k, 10).get(k).rpush(l, "a", "OK").lrange(l, 0, -1).ping().echo("ü");
  const mark = wire.length;
  assert.deepEqual(await tx.exec(), ["OK", 2, 12, 12, 2, ["a", "OK"], "PONG", "ü"]);
  assert.deepEqual(since(mark).map((x) => [x.path, x.status]), [["/multi-exec", 200]]);

  const tx2 = r.multi();
  tx2.eval("return {ARGV[1], redis.call('incr', KEYS[1])}", [k], ["ü😀"]).get(k);
  assert.deepEqual(await tx2.exec(), [["ü😀", 13], 13], "EVAL inside a transaction");
});

check("multi/exec: concurrent transactions do not interleave", async () => {
  const k = key("tx:atomic");
  const N = 40;
  const clients = [client(), client(), client(), client()];
  const all = await Promise.all(
    clients.map((c) => {
      const tx = c.multi();
      for (let i = 0; i < N; i++) tx.incr(k);
      return tx.exec();
    }),
  );
  const firsts = [];
  for (const res of all) {
    assert.equal(res.length, N);
    for (let i = 1; i < N; i++) assert.equal(res[i], res[0] + i, `results of one transaction are consecutive: ${res}`);
    firsts.push(res[0]);
  }
  assert.deepEqual(firsts.sort((a, b) => a - b), [1, N + 1, 2 * N + 1, 3 * N + 1]);
  assert.equal(await client().get(k), 4 * N);
});

eachVariant(ENCODINGS, "multi/exec: a run-time error is per-command, the rest commits", async (opts) => {
  const r = client(opts);
  const bad = key("txe:bad");
  const after = key("txe:after");
  await r.set(bad, "not a number");
  const tx = r.multi();
  tx.set(key("txe:before"), "b").incr(bad).set(after, "after-value").get(after);
  const res = await tx.exec({ keepErrors: true });
  assert.equal(res.length, 4);
  assert.deepEqual(res[0], { result: "OK", error: undefined });
  assert.equal(res[1].result, undefined, "failed command has no result");
  assert.match(String(res[1].error), /^ERR value is not an integer or out of range/);
  assert.deepEqual(res[2], { result: "OK", error: undefined });
  assert.deepEqual(res[3], { result: "after-value", error: undefined });

  const tx2 = r.multi();
  const after2 = key("txe:after2");
  tx2.incr(bad).set(after2, "x");
  const e = await rejection(tx2.exec(), "multi exec without keepErrors");
  assert.match(e.message, /^Command 1 \[ incr \] failed: ERR value is not an integer or out of range/);
  assert.equal(await r.get(after2), "x", "the rest of the transaction committed");
});

eachVariant(ENCODINGS, "multi/exec: a queue-time error discards the whole transaction", async (opts) => {
  const r = client(opts);
  const k = key("txq");
  const tx = r.multi();
  tx.set(k, "must not be written");
  tx.lpush(key("txq:l")); // no elements: wrong number of arguments, refused when queued
  tx.set(key("txq:2"), "must not be written either");
  const mark = wire.length;
  const e = await rejection(tx.exec(), "multi exec");
  assert.equal(e.name, "UpstashError", `a whole-transaction error, not ${e.name}: ${e.message}`);
  assert.match(e.message, /EXECABORT|wrong number of arguments/i);
  const w = since(mark);
  assert.equal(w.length, 1);
  assert.equal(w[0].path, "/multi-exec");
  assert.ok(w[0].status >= 400, `non-2xx status for a discarded transaction, got ${w[0].status}`);
  assert.equal(await r.get(k), null, "nothing from the transaction was written");
  assert.equal(await r.get(key("txq:2")), null);
});

// ---------------------------------------------------------------------------
// Scripts.

check("scripts: createScript after SCRIPT FLUSH falls back from EVALSHA to EVAL, then uses EVALSHA", async () => {
  const r = client();
  assert.equal(await r.scriptFlush(), "OK", "script flush");
  const src = `-- officialclient ${RUN}\nreturn {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}`;
  const sha = createHash("sha1").update(src, "utf8").digest("hex");
  assert.deepEqual(await r.scriptExists(sha), [0], "not cached after flush");
  const script = r.createScript(src);
  const k = key("script");

  let mark = wire.length;
  assert.deepEqual(await script.exec([k], ["héllo 😀", "41"]), [k, "héllo 😀", 42], "first exec");
  const first = commandsSince(mark);
  assert.deepEqual(names(first), ["evalsha", "eval"], "first exec: EVALSHA, NOSCRIPT, then EVAL");
  assert.equal(first[0][1], sha, "EVALSHA sends the SHA-1 of the source");
  assert.deepEqual(await r.scriptExists(sha), [1], "EVAL cached the script");

  mark = wire.length;
  assert.deepEqual(await script.exec([k], ["again", "1"]), [k, "again", 2], "second exec");
  assert.deepEqual(names(commandsSince(mark)), ["evalsha"], "second exec: EVALSHA only");

  const e = await rejection(r.evalsha("0".repeat(40), [], []), "evalsha of an unknown sha");
  assert.match(e.message, /NOSCRIPT/);

  const src2 = `-- officialclient ${RUN} load\nreturn 'loaded'`;
  const sha2 = createHash("sha1").update(src2, "utf8").digest("hex");
  assert.equal(await r.scriptLoad(src2), sha2, "SCRIPT LOAD returns the SHA-1");
  assert.equal(await r.evalsha(sha2, [], []), "loaded", "EVALSHA of a loaded script");
});

eachVariant(ENCODINGS, "scripts: Lua status replies and bulk strings as the client decodes them", async (opts) => {
  const r = client(opts);
  const tag = `-- ${RUN}\n`;
  const run = (src, keys = [], args = []) => r.createScript(tag + src).exec(keys, args);
  assert.equal(await run("return redis.status_reply('OK')"), "OK", "top-level status OK");
  assert.equal(await run("return redis.status_reply('DONE')"), "DONE", "top-level status DONE");
  assert.equal(await run("return 'bulk'"), "bulk", "top-level bulk");
  assert.deepEqual(
    await run("return {redis.status_reply('OK'), 'bulk', 42, redis.status_reply('FINE'), 'OK'}"),
    ["OK", "bulk", 42, "FINE", "OK"],
    "table with status replies at depth 1",
  );
  assert.deepEqual(
    await run("return {1, {redis.status_reply('OK'), 'x', {redis.status_reply('OK'), 'y'}}}"),
    [1, ["OK", "x", ["OK", "y"]]],
    "nested tables",
  );
  assert.deepEqual(await run("return {ARGV[1], ARGV[2]}", [], ["ü😀", "a\u0000b"]), ["ü😀", "a\u0000b"], "args echoed");
  const e = await rejection(run("return redis.error_reply('MYERR custom failure')"), "error_reply");
  assert.match(e.message, /MYERR custom failure/);
});

// ---------------------------------------------------------------------------
// Read-your-writes.

eachVariant(ENCODINGS, "read-your-writes: sync token set by writes, handed to another client", async (opts) => {
  const a = client(opts);
  const k = key("ryw");
  assert.equal(await a.set(k, "v1"), "OK");
  const t1 = a.readYourWritesSyncToken;
  assert.equal(typeof t1, "string");
  assert.ok(t1.length > 0, "sync token non-empty after a write");
  assert.equal(await a.set(k, "v2"), "OK");
  const t2 = a.readYourWritesSyncToken;
  assert.ok(t2.length > 0, "sync token non-empty after the second write");
  assert.notEqual(t2, t1, "sync token changes after another write");

  const b = client(opts);
  b.readYourWritesSyncToken = t2;
  const mark = wire.length;
  assert.equal(await b.get(k), "v2", "second client reads the write");
  const w = since(mark);
  assert.equal(w.length, 1);
  assert.equal(w[0].headers["upstash-sync-token"], t2, "second client sent the handed-over token");
  assert.equal(w[0].status, 200);
});

check("read-your-writes: unknown and empty sync tokens are accepted", async () => {
  const a = client();
  const k = key("ryw2");
  await a.set(k, "v");
  const b = client();
  b.readYourWritesSyncToken = `not-a-real-token-${RUN}`;
  assert.equal(await b.get(k), "v", "unknown token");
  const c = client({ enableAutoPipelining: false });
  c.readYourWritesSyncToken = "";
  assert.equal(await c.get(k), "v", "empty token");
  const d = client({ readYourWrites: false });
  assert.equal(await d.get(k), "v", "no token header at all");
});

// ---------------------------------------------------------------------------
// Authentication.

eachVariant(VARIANTS, "auth: a wrong token is rejected with 401", async (opts) => {
  const bad = client(opts, `${TOKEN}-wrong`);
  const k = key("auth");
  const mark = wire.length;
  const e = await rejection(bad.set(k, "x"), "set with a wrong token");
  assert.equal(e.name, "UpstashError");
  assert.match(e.message, /unauthori[sz]ed|WRONGPASS|401/i);
  const w = since(mark);
  assert.equal(w.length, 1);
  assert.equal(w[0].status, 401);
  const e2 = await rejection(bad.get(k), "get with a wrong token");
  assert.match(e2.message, /unauthori[sz]ed|WRONGPASS|401/i);
  const tx = bad.multi();
  tx.set(k, "x").get(k);
  const e3 = await rejection(tx.exec(), "multi with a wrong token");
  assert.match(e3.message, /unauthori[sz]ed|WRONGPASS|401/i);
  assert.equal(since(mark).at(-1).status, 401, "multi-exec with a wrong token");
  assert.equal(await client().get(k), null, "nothing was written");
});

eachVariant(VARIANTS, "auth: read-only token reads, and a write rejects with NOPERM", async (opts) => {
  const rw = client(opts);
  const ro = client(opts, RO_TOKEN);
  const k = key("ro");
  await rw.set(k, "written by rw");
  assert.equal(await ro.get(k), "written by rw", "read with the read-only token");
  assert.equal(await ro.exists(k), 1, "exists with the read-only token");
  const e = await rejection(ro.set(k, "written by ro"), "set with the read-only token");
  assert.equal(e.name, "UpstashError");
  assert.match(e.message, /NOPERM/);
  const e2 = await rejection(ro.incr(key("ro:n")), "incr with the read-only token");
  assert.match(e2.message, /NOPERM/);
  assert.equal(await rw.get(k), "written by rw", "value unchanged");
  assert.equal(await rw.exists(key("ro:n")), 0, "incr did not create the key");
});

eachVariant(ENCODINGS, "auth: read-only token in a pipeline: reads succeed, the write fails alone", async (opts) => {
  const rw = client(opts);
  const ro = client(opts, RO_TOKEN);
  const k = key("ro:p");
  await rw.set(k, "v");
  const p = ro.pipeline();
  p.get(k).set(k, "ro").get(k);
  const res = await p.exec({ keepErrors: true });
  assert.deepEqual(res[0], { result: "v", error: undefined });
  assert.match(String(res[1].error), /NOPERM/);
  assert.equal(res[1].result, undefined);
  assert.deepEqual(res[2], { result: "v", error: undefined });

  const tx = ro.multi();
  tx.get(k).exists(k).strlen(k);
  assert.deepEqual(await tx.exec(), ["v", 1, 1], "a read-only transaction");
});

check("auth: read-only token cannot run EVAL", async () => {
  const ro = client({}, RO_TOKEN);
  const e = await rejection(ro.eval("return 1", [], []), "eval with the read-only token");
  assert.match(e.message, /NOPERM/);
});

check("auth: read-only token cannot run KEYS (documented for Upstash read-only tokens)", async () => {
  const ro = client({}, RO_TOKEN);
  await rejection(ro.keys(`${PREFIX}*`), "keys with the read-only token");
});

// ---------------------------------------------------------------------------
// Auto-pipelining.

eachVariant(ENCODINGS, "auto-pipeline: Promise.all of 22 mixed commands, one failure isolated", async (opts) => {
  const r = client(opts);
  const base = key("ap");
  const k = (n) => `${base}:${n}`;
  // Fixtures first: reads and writes of one batch travel in two concurrent
  // requests, so the batch reads only keys that exist before it.
  await r.set(k("pre"), "pre");
  await r.set(k("okv"), "OK");
  await r.set(k("bad"), "not a number");
  await r.set(k("counter"), 10);
  await r.rpush(k("list"), "l1", "l2");
  await r.hset(k("hash"), { f: { j: 1 } });
  await r.sadd(k("set"), "m1", "m2", "m3");
  await r.set(k("del"), "x");

  const mark = wire.length;
  const calls = [
    ["set", r.set(k("w1"), "v1"), "OK"],
    ["get pre", r.get(k("pre")), "pre"],
    ["incr counter", r.incr(k("counter")), 11],
    ["incr bad", r.incr(k("bad")), Error],
    ["incrby", r.incrby(k("big"), 1700000000000), 1700000000000],
    ["get missing", r.get(k("missing")), null],
    ["mget", r.mget(k("pre"), k("missing"), k("okv")), ["pre", null, "OK"]],
    ["rpush", r.rpush(k("list2"), "a", "b"), 2],
    ["llen", r.llen(k("list")), 2],
    ["sadd", r.sadd(k("set2"), "x"), 1],
    ["scard", r.scard(k("set")), 3],
    ["hset", r.hset(k("hash2"), { a: "b" }), 1],
    ["hget", r.hget(k("hash"), "f"), { j: 1 }],
    ["exists", r.exists(k("pre"), k("missing")), 1],
    ["strlen", r.strlen(k("pre")), 3],
    ["type", r.type(k("pre")), "string"],
    ["echo", r.echo("ü 😀"), "ü 😀"],
    ["ping", r.ping(), "PONG"],
    ["get OK", r.get(k("okv")), "OK"],
    ["del", r.del(k("del")), 1],
    ["set json", r.set(k("w2"), { a: [1, 2] }), "OK"],
    ["append", r.append(k("app"), "tail"), 4],
  ];
  const settled = await Promise.allSettled(calls.map((c) => c[1]));
  for (const [i, [name, , want]] of calls.entries()) {
    const s = settled[i];
    if (want === Error) {
      assert.equal(s.status, "rejected", `${name} must reject`);
      assert.match(s.reason.message, /^Command failed: ERR value is not an integer or out of range/, name);
    } else {
      assert.equal(s.status, "fulfilled", `${name}: ${s.reason?.message}`);
      assert.deepEqual(s.value, want, name);
    }
  }
  const w = since(mark);
  assert.ok(w.length >= 1 && w.length <= 2, `batched into at most 2 requests, got ${w.length}`);
  for (const x of w) assert.deepEqual([x.path, x.status], ["/pipeline", 200]);
  assert.equal(commandsSince(mark).length, calls.length, "every command went over the wire once");

  // The writes landed.
  assert.equal(await r.get(k("w1")), "v1");
  assert.deepEqual(await r.get(k("w2")), { a: [1, 2] });
  assert.deepEqual(await r.lrange(k("list2"), 0, -1), ["a", "b"]);
  assert.equal(await r.get(k("del")), null);
  assert.equal(await r.get(k("bad")), "not a number");
});

check("auto-pipeline: 2500 concurrent INCRs (batches of 1000) each land exactly once", async () => {
  const r = client();
  const k = key("ap:many");
  const N = 2500;
  const mark = wire.length;
  const got = await Promise.all(Array.from({ length: N }, () => r.incr(k)));
  assert.deepEqual(
    [...got].sort((a, b) => a - b),
    Array.from({ length: N }, (_, i) => i + 1),
    "every INCR returned a distinct value 1..N",
  );
  const w = since(mark);
  assert.deepEqual(w.map((x) => [x.path, x.status, x.body.length]), [
    ["/pipeline", 200, 1000],
    ["/pipeline", 200, 1000],
    ["/pipeline", 200, 500],
  ]);
  assert.equal(await r.get(k), N);
});

// ---------------------------------------------------------------------------
// Large values.

eachVariant(VARIANTS, "large value: ~1 MB round-trip", async (opts) => {
  const r = client(opts);
  const unit = "abcdefgh😀漢字\u0000ü\n";
  const value = unit.repeat(Math.ceil((1 << 20) / utf8len(unit)));
  assert.ok(utf8len(value) >= 1 << 20);
  const k = key("large");
  assert.equal(await r.set(k, value), "OK");
  const got = await r.get(k);
  assert.equal(got.length, value.length, "length in UTF-16 units");
  assert.ok(got === value, "content identical");
  assert.equal(await r.strlen(k), utf8len(value), "bytes stored");
  const p = r.pipeline();
  p.get(k).strlen(k);
  const [g2, n2] = await p.exec();
  assert.ok(g2 === value, "content identical via pipeline");
  assert.equal(n2, utf8len(value));
});

// ---------------------------------------------------------------------------
// Whole-run wire properties (keep this check last).

check("wire: every response so far was JSON with Content-Type application/json", async () => {
  const done = wire.filter((x) => x.status !== undefined);
  assert.ok(done.length > 0);
  const bad = done.filter((x) => !/^application\/json\b/i.test(x.contentType ?? ""));
  assert.deepEqual(
    bad.slice(0, 5).map((x) => `${x.path} -> ${x.status} ${x.contentType}`),
    [],
    `${bad.length} of ${done.length} responses were not application/json`,
  );
});

// ---------------------------------------------------------------------------
// Runner.

function withTimeout(promise, ms, name) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

let passed = 0;
let failed = 0;
console.log(`# @upstash/redis against ${URL_} (key prefix ${PREFIX})`);
for (const { name, fn } of checks) {
  if (FILTER && !FILTER.test(name)) continue;
  const start = Date.now();
  const mark = wire.length;
  try {
    await withTimeout(Promise.resolve().then(fn), CHECK_TIMEOUT_MS, name);
    passed++;
    console.log(`ok   ${name} (${Date.now() - start} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}`);
    for (const line of String(e?.stack ?? e).split("\n").slice(0, 12)) console.log(`     ${line}`);
    const w = since(mark).slice(-6);
    if (w.length) {
      console.log("     last requests of this check:");
      for (const x of w) {
        const body = JSON.stringify(x.body);
        console.log(
          `       POST ${x.path} ${body.length > 300 ? body.slice(0, 300) + "..." : body} -> ${x.status ?? x.error}`,
        );
      }
    }
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed > 0 ? 1 : 0;
