// messages.mjs writes and reads serialized Chat SDK messages with the real
// chat package, for the Go Message tests (../../message_test.go).
//
//   node messages.mjs fixtures    one JSON line per fixture message, as
//                                 JSON.stringify(new Message(spec)) writes it
//                                 (the committed ../messages.jsonl is this
//                                 output; the Go test regenerates and compares)
//   node messages.mjs roundtrip   reads JSON lines on stdin and writes, for
//                                 each, JSON.stringify(Message.fromJSON(line))
//
// Diagnostics go to stderr; the exit status is 1 on any failure.
import { createInterface } from "node:readline";
import { Message, parseMarkdown } from "chat";

const author = (over = {}) => ({
  userId: "U123",
  userName: "ada",
  fullName: "Ada Lovelace",
  isBot: false,
  isMe: false,
  ...over,
});

const base = (id, over = {}) => ({
  id,
  threadId: "slack:C123:1700000000.000100",
  text: `message ${id}`,
  formatted: parseMarkdown(`message ${id}`),
  raw: { ts: "1700000000.000100", type: "message" },
  author: author(),
  metadata: { dateSent: new Date("2025-01-02T03:04:05.678Z"), edited: false },
  attachments: [],
  ...over,
});

function fixtures() {
  const parent = new Message(base("parent", { text: "the question" }));
  return [
    // The smallest message an adapter builds.
    new Message(base("m-minimal")),
    // Every optional field present.
    new Message(
      base("m-full", {
        text: "**bold** <tags> & ampersands \u2028 line separator, emoji \u{1F600}, quote \" and backslash \\",
        formatted: parseMarkdown("**bold** <tags> & ampersands, a [link](https://example.com)"),
        raw: { nested: { list: [1, 2.5, -0, 1e21, 1e-7, null, true, "x"] }, html: "<b>&</b>" },
        author: author({ email: "ada@example.com", isBot: "unknown", isSystem: false }),
        metadata: {
          dateSent: new Date("1999-12-31T23:59:59.001Z"),
          edited: true,
          editedAt: new Date("2000-01-01T00:00:00.000Z"),
        },
        attachments: [
          {
            type: "image",
            url: "https://files.example.com/a.png",
            name: "a.png",
            mimeType: "image/png",
            size: 1024,
            width: 640.5,
            height: 480,
            fetchMetadata: { zeta: "1", alpha: "2" },
          },
          { type: "file" },
        ],
        replyTo: parent,
        isMention: true,
        links: [
          { url: "https://example.com", title: "Example", description: "d", imageUrl: "https://example.com/i.png", siteName: "ex" },
          { url: "https://example.org" },
        ],
      }),
    ),
    // A bot's message, isMention false, isSystem true, no raw, no formatted.
    new Message(
      base("m-bot", {
        formatted: undefined,
        raw: undefined,
        author: author({ userId: "B1", userName: "bot", fullName: "Bot", isBot: true, isMe: true, isSystem: true }),
        isMention: false,
      }),
    ),
    // A history item: raw is null, on the reply too.
    new Message(base("m-history", { raw: null, replyTo: new Message(base("m-history-parent", { raw: null })) })),
    // Empty text and an empty Markdown root.
    new Message(base("m-empty", { text: "", formatted: parseMarkdown("") })),
  ];
}

async function roundtrip() {
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (line.trim() === "") continue;
    process.stdout.write(`${JSON.stringify(Message.fromJSON(JSON.parse(line)))}\n`);
  }
}

const mode = process.argv[2];
try {
  if (mode === "fixtures") {
    for (const m of fixtures()) process.stdout.write(`${JSON.stringify(m)}\n`);
  } else if (mode === "roundtrip") {
    await roundtrip();
  } else {
    throw new Error(`unknown mode ${mode}; use fixtures or roundtrip`);
  }
} catch (err) {
  console.error(err);
  process.exit(1);
}
