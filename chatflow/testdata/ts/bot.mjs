// bot.mjs runs the real Chat SDK core (chat 4.41.1) over the real
// @chat-adapter/state-redis, with a minimal adapter named "test", for the Go
// interop tests (../../interop_test.go). It reads commands from stdin and
// writes events to stdout, one JSON object per line.
//
//   REDIS_URL=redis://127.0.0.1:PORT node bot.mjs '{"concurrency":"queue"}'
//
// The argument is passed to new Chat() as its concurrency option. The
// adapter persists thread history (persistThreadHistory), and its channel
// id is the thread id's first two colon-separated parts.
//
// Commands:
//   {"cmd":"message","id","threadId","text","userName","dateSent","hold"}
//        builds a chat Message and runs chat.processMessage; with "hold":
//        true its turn waits for a "release" command before returning.
//        Emits "processed" (or "error") when processMessage settles.
//   {"cmd":"release","id"}            lets a held turn return
//   {"cmd":"history","threadId"}      emits the thread's history as the
//                                     core's ThreadHistoryCache reads it
//   {"cmd":"get","key"}               emits state.get(key)
//   {"cmd":"exit"}                    disconnects and exits
//
// Events:
//   {"event":"ready"}
//   {"event":"turn","id","threadId","text","author","dateSent","isDate","raw","skipped":[ids]}
//        a handler call: the latest message and context.skipped; the
//        handler then merges {"ts_<id>": true} into the thread state
//   {"event":"processed","id"} | {"event":"error","id","error"}
//   {"event":"history","threadId","messages":[{id,text,isDate,raw}]}
//   {"event":"value","key","value"}
//   {"event":"fatal","error"}
import { createInterface } from "node:readline";
import { createRedisState } from "@chat-adapter/state-redis";
import { Chat, Message, ThreadHistoryCache, parseMarkdown } from "chat";

const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

const logger = {
  debug() {},
  info() {},
  warn: (msg, ...args) => console.error(`[chat] warn: ${msg}`, ...args),
  error: (msg, ...args) => console.error(`[chat] error: ${msg}`, ...args),
  child() {
    return logger;
  },
};

const config = JSON.parse(process.argv[2] ?? "{}");
const state = createRedisState({ url: process.env.REDIS_URL, logger });
const adapter = {
  name: "test",
  userName: "bot",
  persistThreadHistory: true,
  async initialize() {},
  channelIdFromThreadId: (threadId) => threadId.split(":").slice(0, 2).join(":"),
  isDM: () => false,
};
const chat = new Chat({ userName: "bot", adapters: { test: adapter }, state, concurrency: config.concurrency, logger });

const held = new Set();
const gates = new Map();

async function handler(thread, message, context) {
  emit({
    event: "turn",
    id: message.id,
    threadId: thread.id,
    text: message.text,
    author: message.author.userName,
    dateSent: message.metadata.dateSent.toISOString(),
    isDate: message.metadata.dateSent instanceof Date,
    raw: message.raw,
    skipped: (context?.skipped ?? []).map((m) => m.id),
  });
  await thread.setState({ [`ts_${message.id}`]: true });
  if (held.has(message.id)) {
    await new Promise((resolve) => gates.set(message.id, resolve));
  }
}
chat.onNewMessage(/[\s\S]*/, handler);
chat.onNewMention(handler);
chat.onSubscribedMessage(handler);

function buildMessage(spec) {
  return new Message({
    id: spec.id,
    threadId: spec.threadId,
    text: spec.text,
    formatted: parseMarkdown(spec.text),
    raw: { source: "ts", id: spec.id },
    author: { userId: `U-${spec.userName}`, userName: spec.userName, fullName: spec.userName, isBot: false, isMe: false },
    metadata: { dateSent: new Date(spec.dateSent), edited: false },
    attachments: [],
  });
}

async function run(cmd) {
  switch (cmd.cmd) {
    case "message": {
      if (cmd.hold) held.add(cmd.id);
      const m = buildMessage(cmd);
      chat.processMessage(adapter, m.threadId, m).then(
        () => emit({ event: "processed", id: cmd.id }),
        (err) => emit({ event: "error", id: cmd.id, error: String(err?.stack ?? err) }),
      );
      return;
    }
    case "release": {
      held.delete(cmd.id);
      gates.get(cmd.id)?.();
      return;
    }
    case "history": {
      const msgs = await new ThreadHistoryCache(state).getMessages(cmd.threadId);
      emit({
        event: "history",
        threadId: cmd.threadId,
        messages: msgs.map((m) => ({ id: m.id, text: m.text, isDate: m.metadata.dateSent instanceof Date, raw: m.raw })),
      });
      return;
    }
    case "get": {
      emit({ event: "value", key: cmd.key, value: await state.get(cmd.key) });
      return;
    }
    case "exit": {
      await state.disconnect();
      process.exit(0);
    }
    default:
      throw new Error(`unknown command ${JSON.stringify(cmd)}`);
  }
}

try {
  await chat.initialize();
  emit({ event: "ready" });
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (line.trim() === "") continue;
    await run(JSON.parse(line));
  }
  await state.disconnect();
} catch (err) {
  emit({ event: "fatal", error: String(err?.stack ?? err) });
  process.exit(1);
}
