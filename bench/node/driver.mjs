// The Node side of the benchmark (see ../README.md): the Chat SDK webhook
// flow of flow.mjs over the official @upstash/redis client with its
// defaults (auto-pipelining, keep-alive, automatic JSON). Spawned by the Go
// harness, with the protocol of bench/driver:
//
//   node driver.mjs coldstart THREAD   take the lock of THREAD, print {"event":"locked"}, exit at EOF on stdin
//   node driver.mjs serve node         then commands on stdin, one JSON line answered each:
//     warmup | run N CALLERS THREADS | handle MSG THREAD SEQ
//
// The URL and token come from UPSTASH_REDIS_REST_URL and
// UPSTASH_REDIS_REST_TOKEN (Redis.fromEnv).
import { Redis } from "@upstash/redis";
import { createInterface } from "node:readline";
import { Flow, run } from "./flow.mjs";

async function command(flow, f) {
  if (f[0] === "warmup" && f.length === 1) {
    await flow.warmup();
    return { ok: true };
  }
  if (f[0] === "run" && f.length === 4) {
    return await run(flow, Number(f[1]), Number(f[2]), Number(f[3]));
  }
  if (f[0] === "handle" && f.length === 4) {
    return await flow.handle({ messageId: f[1], threadId: f[2], seq: Number(f[3]) });
  }
  throw new Error(`unknown command ${JSON.stringify(f.join(" "))}`);
}

async function serve() {
  const flow = new Flow(Redis.fromEnv());
  process.stdout.write(JSON.stringify({ event: "hello", client: "node", available: true }) + "\n");
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    const f = line.trim().split(/\s+/).filter(Boolean);
    if (f.length === 0) continue;
    let reply;
    try {
      reply = await command(flow, f);
    } catch (err) {
      reply = { error: String(err?.message ?? err) };
    }
    process.stdout.write(JSON.stringify(reply) + "\n");
  }
}

async function coldStart(thread) {
  const flow = new Flow(Redis.fromEnv());
  const lock = await flow.acquireLock(thread);
  if (lock === null) throw new Error(`lock of ${thread} is busy`);
  process.stdout.write('{"event":"locked"}\n');
  // Stay until stdin closes, so the harness can read the peak RSS.
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}

const [mode, arg] = process.argv.slice(2);
try {
  if (mode === "coldstart" && arg) await coldStart(arg);
  else if (mode === "serve" && arg === "node") await serve();
  else throw new Error("usage: node driver.mjs coldstart THREAD | node driver.mjs serve node");
} catch (err) {
  process.stderr.write(`driver.mjs: ${err?.stack ?? err}\n`);
  process.exit(1);
}
