package chatflow

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// fixturesFile is the output of `node testdata/ts/messages.mjs fixtures`:
// messages serialized by the real chat 4.41.1 package.
const fixturesFile = "testdata/messages.jsonl"

func readFixtures(t *testing.T) [][]byte {
	t.Helper()
	data, err := os.ReadFile(fixturesFile)
	if err != nil {
		t.Fatal(err)
	}
	var lines [][]byte
	for _, l := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			lines = append(lines, l)
		}
	}
	if len(lines) < 5 {
		t.Fatalf("%s has %d messages, want at least 5", fixturesFile, len(lines))
	}
	return lines
}

// Every message chat 4.41.1 wrote decodes and encodes back to the same bytes.
func TestMessageFixturesRoundTrip(t *testing.T) {
	for _, line := range readFixtures(t) {
		var m Message
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("decode %s: %v", line, err)
		}
		if got := jsStringify(t, m); !bytes.Equal(got, line) {
			t.Errorf("message %s does not round-trip:\nchat: %s\n  go: %s", m.ID, line, got)
		}
	}
}

func TestMessageFixturesDecoded(t *testing.T) {
	byID := map[string]Message{}
	for _, line := range readFixtures(t) {
		var m Message
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		byID[m.ID] = m
	}
	full := byID["m-full"]
	if full.Author.IsBot != BotUnknown || full.Author.Email != "ada@example.com" {
		t.Errorf("m-full author = %+v", full.Author)
	}
	if full.Author.IsSystem == nil || *full.Author.IsSystem {
		t.Errorf("m-full isSystem = %v, want an explicit false", full.Author.IsSystem)
	}
	wantSent := time.Date(1999, 12, 31, 23, 59, 59, int(time.Millisecond), time.UTC)
	if !full.Metadata.DateSent.Equal(wantSent) || !full.Metadata.Edited ||
		!full.Metadata.EditedAt.Equal(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("m-full metadata = %+v", full.Metadata)
	}
	if full.ReplyTo == nil || full.ReplyTo.ID != "parent" || full.ReplyTo.Text != "the question" {
		t.Errorf("m-full replyTo = %+v", full.ReplyTo)
	}
	if full.IsMention == nil || !*full.IsMention || len(full.Links) != 2 || len(full.Attachments) != 2 {
		t.Errorf("m-full isMention/links/attachments = %v %v %v", full.IsMention, full.Links, full.Attachments)
	}
	if a := full.Attachments[0]; a.Width == nil || *a.Width != 640.5 || string(a.FetchMetadata) != `{"zeta":"1","alpha":"2"}` {
		t.Errorf("m-full attachment = %+v", a)
	}
	bot := byID["m-bot"]
	if bot.Raw != nil || bot.Formatted != nil || !bot.Author.IsMe || bot.Author.IsBot != Bot || bot.IsMention == nil || *bot.IsMention {
		t.Errorf("m-bot = %+v", bot)
	}
	hist := byID["m-history"]
	if string(hist.Raw) != "null" || hist.ReplyTo == nil || string(hist.ReplyTo.Raw) != "null" {
		t.Errorf("m-history raw = %q, reply raw = %v", hist.Raw, hist.ReplyTo)
	}
	if byID["m-minimal"].Links != nil || byID["m-minimal"].IsMention != nil {
		t.Errorf("m-minimal has links or isMention: %+v", byID["m-minimal"])
	}
}

// The committed fixtures are what the pinned chat package writes today.
func TestMessageFixturesMatchChatPackage(t *testing.T) {
	node, dir := requireTS(t)
	got := runNode(t, node, dir, nil, "messages.mjs", "fixtures")
	want, err := os.ReadFile(fixturesFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: regenerate it with (cd chatflow/testdata/ts && node messages.mjs fixtures > ../messages.jsonl)\nnode wrote:\n%s", fixturesFile, got)
	}
}

func goMessages() []Message {
	yes, no := true, false
	size := 2048.0
	sent := time.Date(2026, 3, 4, 5, 6, 7, 891_234_567, time.FixedZone("CET", 3600))
	parent := Message{
		ID: "g-parent", ThreadID: "slack:C9:1.2", Text: "first",
		Author:   Author{UserID: "U1", UserName: "u", FullName: "U One"},
		Metadata: Metadata{DateSent: sent.Add(-time.Minute)},
	}
	return []Message{
		{ID: "g-min", ThreadID: "slack:C9:1.2", Metadata: Metadata{DateSent: sent}},
		{
			ID: "g-full", ThreadID: "slack:C9:1.2", Text: "a <b> & \u2028 \U0001F600 \\u2028",
			Formatted: FormattedText("a <b> & c"),
			Raw:       json.RawMessage(`{"z":1,"a":[true,null,"<x>"]}`),
			Author:    Author{UserID: "U2", UserName: "v", FullName: "V Two", Email: "v@example.com", IsBot: BotUnknown, IsSystem: &no},
			Metadata:  Metadata{DateSent: sent, Edited: true, EditedAt: sent.Add(time.Second)},
			Attachments: []Attachment{
				{Type: "file", URL: "https://x.example/f", Name: "f.txt", MimeType: "text/plain", Size: &size, FetchMetadata: json.RawMessage(`{"b":"1","a":"2"}`)},
			},
			ReplyTo:   &parent,
			IsMention: &yes,
			Links:     []Link{{URL: "https://x.example", Title: "X"}},
		},
		{ID: "g-bot", ThreadID: "t", Text: "", Raw: json.RawMessage("null"), Author: Author{IsBot: Bot, IsMe: true, IsSystem: &yes}, IsMention: &no, Metadata: Metadata{DateSent: sent}},
	}
}

// What Go writes, chat's Message.fromJSON reads and toJSON writes back
// unchanged.
func TestMessageGoReadByChatPackage(t *testing.T) {
	node, dir := requireTS(t)
	var in bytes.Buffer
	var want [][]byte
	for _, m := range goMessages() {
		b := jsStringify(t, m)
		want = append(want, b)
		in.Write(b)
		in.WriteByte('\n')
	}
	out := runNode(t, node, dir, in.Bytes(), "messages.mjs", "roundtrip")
	got := bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n"))
	if len(got) != len(want) {
		t.Fatalf("node returned %d lines for %d messages:\n%s", len(got), len(want), out)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("message %d changed in chat's fromJSON/toJSON:\n  go: %s\nchat: %s", i, want[i], got[i])
		}
	}
}

func TestMessageEncoding(t *testing.T) {
	b := jsStringify(t, Message{})
	want := `{"_type":"chat:Message","id":"","threadId":"","text":"","author":{"userId":"","userName":"","fullName":"","isBot":false,"isMe":false},"metadata":{"dateSent":"0001-01-01T00:00:00.000Z","edited":false},"attachments":[]}`
	if string(b) != want {
		t.Errorf("zero Message:\n got %s\nwant %s", b, want)
	}
	// Milliseconds, UTC, Z: Date.prototype.toISOString.
	m := Message{Metadata: Metadata{DateSent: time.Date(2026, 1, 2, 3, 4, 5, 999_999_999, time.FixedZone("X", -7200))}}
	if b := jsStringify(t, m); !strings.Contains(string(b), `"dateSent":"2026-01-02T05:04:05.999Z"`) {
		t.Errorf("dateSent not in toISOString form: %s", b)
	}
	if _, err := json.Marshal(Message{Metadata: Metadata{DateSent: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}); err == nil {
		t.Error("year 10000 encoded without error")
	}
	if _, err := json.Marshal(Author{IsBot: 7}); err == nil {
		t.Error("BotStatus 7 encoded without error")
	}
	if got := string(FormattedText("hi")); got != `{"type":"root","children":[{"type":"paragraph","children":[{"type":"text","value":"hi"}]}]}` {
		t.Errorf("FormattedText(hi) = %s", got)
	}
	if got := string(FormattedText("")); got != `{"type":"root","children":[]}` {
		t.Errorf("FormattedText('') = %s", got)
	}
}

func TestMessageDecoding(t *testing.T) {
	// Legacy entries without _type are accepted, as the core's
	// rehydrateMessage accepts them.
	var m Message
	if err := json.Unmarshal([]byte(`{"id":"x","threadId":"t","text":"hi","author":{"userId":"u","userName":"n","fullName":"f","isBot":null,"isMe":false},"metadata":{"dateSent":"2025-01-02T03:04:05Z","edited":false}}`), &m); err != nil {
		t.Fatal(err)
	}
	if m.ID != "x" || m.Text != "hi" || !m.Metadata.DateSent.Equal(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)) || m.Attachments != nil {
		t.Errorf("decoded %+v", m)
	}
	for _, bad := range []string{
		`{"_type":"chat:Thread","id":"x"}`,
		`{"id":"x","metadata":{"dateSent":"yesterday"}}`,
		`{"id":"x","metadata":{"dateSent":12}}`,
		`{"id":"x","author":{"isBot":"maybe"}}`,
		`[]`,
	} {
		if err := json.Unmarshal([]byte(bad), &m); err == nil {
			t.Errorf("%s decoded without error", bad)
		}
	}
}
