package chatflow

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// MessageType is the value of "_type" in a serialized Chat SDK message.
const MessageType = "chat:Message"

// Message is the Chat SDK's serialized message: the JSON that
// Message.toJSON() writes and Message.fromJSON() reads in the TypeScript
// package chat (4.41.1). Queue entries and history items hold it, so a
// message written by Go is read by a TypeScript bot and the other way
// round.
//
// Encoded, the fields come in toJSON's order, "_type" first, and optional
// fields that are absent (undefined in TypeScript) are left out exactly as
// JSON.stringify leaves them out. Decoding accepts what fromJSON accepts,
// "_type" included or not.
type Message struct {
	// ID is the platform's message id. Required.
	ID string
	// ThreadID is the Chat SDK thread id ("slack:C123:1700000000.000100").
	// Required.
	ThreadID string
	// Text is the plain text, formatting stripped.
	Text string
	// Formatted is the message as an mdast Root (JSON); nil leaves it out.
	// FormattedText builds a minimal one from plain text.
	Formatted json.RawMessage
	// Raw is the platform's own payload (JSON); nil leaves it out, and the
	// JSON null is kept as null (history items carry "raw": null).
	Raw json.RawMessage
	// Author is who wrote the message.
	Author Author
	// Metadata holds the dates.
	Metadata Metadata
	// Attachments is always written, as [] when empty: the TypeScript core
	// reads its length without checking for undefined.
	Attachments []Attachment
	// ReplyTo is the message this one replies to, if any.
	ReplyTo *Message
	// IsMention says whether the bot is mentioned; nil leaves it out
	// (TypeScript then detects the mention from the text).
	IsMention *bool
	// Links are the links found in the message; written only when there is
	// at least one, as toJSON does.
	Links []Link
}

// Author is the author of a Message.
type Author struct {
	// UserID is the platform's user id.
	UserID string `json:"userId"`
	// UserName is the handle.
	UserName string `json:"userName"`
	// FullName is the display name.
	FullName string `json:"fullName"`
	// Email is left out when empty.
	Email string `json:"email,omitempty"`
	// IsBot is true, false or unknown (the TypeScript type is
	// boolean | "unknown").
	IsBot BotStatus `json:"isBot"`
	// IsMe is true for the bot's own messages; Flow.Handle ignores them, as
	// the TypeScript core does.
	IsMe bool `json:"isMe"`
	// IsSystem is optional in TypeScript; nil leaves it out.
	IsSystem *bool `json:"isSystem,omitempty"`
}

// BotStatus is Author.IsBot: false (the zero value), true or unknown.
type BotStatus int8

const (
	// NotBot is a human author (JSON false).
	NotBot BotStatus = iota
	// Bot is a bot author (JSON true).
	Bot
	// BotUnknown is an author the platform does not classify (JSON
	// "unknown").
	BotUnknown
)

// MarshalJSON writes false, true or "unknown".
func (b BotStatus) MarshalJSON() ([]byte, error) {
	switch b {
	case NotBot:
		return []byte("false"), nil
	case Bot:
		return []byte("true"), nil
	case BotUnknown:
		return []byte(`"unknown"`), nil
	}
	return nil, fmt.Errorf("chatflow: invalid BotStatus %d", int8(b))
}

// UnmarshalJSON reads false, true or "unknown"; null and a missing field
// are false.
func (b *BotStatus) UnmarshalJSON(data []byte) error {
	switch string(bytes.TrimSpace(data)) {
	case "false", "null":
		*b = NotBot
	case "true":
		*b = Bot
	case `"unknown"`:
		*b = BotUnknown
	default:
		return fmt.Errorf("chatflow: author.isBot is %.40s, not true, false or \"unknown\"", data)
	}
	return nil
}

// Metadata is a Message's dates. Both are written as ISO 8601 strings in
// UTC with milliseconds, as JavaScript's Date.toISOString() writes them
// ("2025-01-02T03:04:05.678Z"); finer precision is lost.
type Metadata struct {
	// DateSent is when the message was sent. Always written; fromJSON
	// fails without it.
	DateSent time.Time
	// Edited says whether the message was edited.
	Edited bool
	// EditedAt is when it was edited; the zero time leaves it out.
	EditedAt time.Time
}

// Attachment is a file, image, video or audio clip attached to a Message.
// The binary content never travels in a serialized message.
type Attachment struct {
	// Type is "image", "file", "video" or "audio".
	Type string `json:"type"`
	// URL is where the content is; left out when empty.
	URL string `json:"url,omitempty"`
	// Name is the file name; left out when empty.
	Name string `json:"name,omitempty"`
	// MimeType is the content type; left out when empty.
	MimeType string `json:"mimeType,omitempty"`
	// Size is in bytes; nil leaves it out. JavaScript numbers are float64.
	Size *float64 `json:"size,omitempty"`
	// Width is in pixels; nil leaves it out.
	Width *float64 `json:"width,omitempty"`
	// Height is in pixels; nil leaves it out.
	Height *float64 `json:"height,omitempty"`
	// FetchMetadata is the adapter's data for fetching the content again
	// (a JSON object of strings), kept as JSON so its key order survives.
	FetchMetadata json.RawMessage `json:"fetchMetadata,omitempty"`
}

// Link is a link found in a Message.
type Link struct {
	// URL is the link.
	URL string `json:"url"`
	// Title is the preview's title; left out when empty.
	Title string `json:"title,omitempty"`
	// Description is the preview's description; left out when empty.
	Description string `json:"description,omitempty"`
	// ImageURL is the preview's image; left out when empty.
	ImageURL string `json:"imageUrl,omitempty"`
	// SiteName is the preview's site name; left out when empty.
	SiteName string `json:"siteName,omitempty"`
}

// messageJSON is the wire form, in toJSON's field order.
type messageJSON struct {
	Type        string          `json:"_type"`
	ID          string          `json:"id"`
	ThreadID    string          `json:"threadId"`
	Text        string          `json:"text"`
	Formatted   json.RawMessage `json:"formatted,omitempty"`
	Raw         json.RawMessage `json:"raw,omitempty"`
	Author      Author          `json:"author"`
	Metadata    metadataJSON    `json:"metadata"`
	Attachments []Attachment    `json:"attachments"`
	ReplyTo     *Message        `json:"replyTo,omitempty"`
	IsMention   *bool           `json:"isMention,omitempty"`
	Links       []Link          `json:"links,omitempty"`
}

type metadataJSON struct {
	DateSent isoTime  `json:"dateSent"`
	Edited   bool     `json:"edited"`
	EditedAt *isoTime `json:"editedAt,omitempty"`
}

// MarshalJSON writes the message as Message.toJSON() followed by
// JSON.stringify would, without escaping <, > and &. (json.Marshal escapes
// them again around a MarshalJSON result, and always escapes U+2028 and
// U+2029; an Encoder with SetEscapeHTML(false) does not, and the State
// adapter stores the bytes JSON.stringify writes either way.)
func (m Message) MarshalJSON() ([]byte, error) {
	w := messageJSON{
		Type:        MessageType,
		ID:          m.ID,
		ThreadID:    m.ThreadID,
		Text:        m.Text,
		Formatted:   m.Formatted,
		Raw:         m.Raw,
		Author:      m.Author,
		Metadata:    metadataJSON{DateSent: isoTime(m.Metadata.DateSent), Edited: m.Metadata.Edited},
		Attachments: m.Attachments,
		ReplyTo:     m.ReplyTo,
		IsMention:   m.IsMention,
		Links:       m.Links,
	}
	if !m.Metadata.EditedAt.IsZero() {
		at := isoTime(m.Metadata.EditedAt)
		w.Metadata.EditedAt = &at
	}
	if w.Attachments == nil {
		w.Attachments = []Attachment{}
	}
	if len(w.Links) == 0 {
		w.Links = nil
	}
	return marshalJS(w)
}

// marshalJS is json.Marshal without the escaping of <, > and &.
func marshalJS(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// UnmarshalJSON reads a serialized message. "_type" may be missing (the
// TypeScript core accepts such legacy entries too) but, when present, must
// be "chat:Message". A missing metadata.dateSent gives the zero time; a
// string that is not a date is an error.
func (m *Message) UnmarshalJSON(data []byte) error {
	var w struct {
		messageJSON
		Type *string `json:"_type"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	if w.Type != nil && *w.Type != MessageType {
		return fmt.Errorf("chatflow: message _type is %q, not %q", *w.Type, MessageType)
	}
	*m = Message{
		ID:          w.ID,
		ThreadID:    w.ThreadID,
		Text:        w.Text,
		Formatted:   w.Formatted,
		Raw:         w.Raw,
		Author:      w.Author,
		Metadata:    Metadata{DateSent: time.Time(w.Metadata.DateSent), Edited: w.Metadata.Edited},
		Attachments: w.Attachments,
		ReplyTo:     w.ReplyTo,
		IsMention:   w.IsMention,
		Links:       w.Links,
	}
	if w.Metadata.EditedAt != nil {
		m.Metadata.EditedAt = time.Time(*w.Metadata.EditedAt)
	}
	return nil
}

// isoTime is a time written as Date.prototype.toISOString writes it.
type isoTime time.Time

const isoLayout = "2006-01-02T15:04:05.000Z"

func (t isoTime) MarshalJSON() ([]byte, error) {
	u := time.Time(t).UTC()
	if y := u.Year(); y < 0 || y > 9999 {
		return nil, fmt.Errorf("chatflow: year %d cannot be written as an ISO date", y)
	}
	b := make([]byte, 0, len(isoLayout)+2)
	b = append(b, '"')
	b = u.AppendFormat(b, isoLayout)
	return append(b, '"'), nil
}

func (t *isoTime) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		*t = isoTime{}
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("chatflow: date %.40s is not a string", data)
	}
	if s == "" {
		*t = isoTime{}
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("chatflow: date %q is not an ISO 8601 date: %w", s, err)
	}
	*t = isoTime(v)
	return nil
}

// FormattedText returns a minimal mdast Root holding text as one
// paragraph: {"type":"root","children":[{"type":"paragraph","children":
// [{"type":"text","value":…}]}]}. TypeScript handlers that read
// message.formatted expect a Root; the Chat SDK's own parser would also
// turn Markdown syntax into nodes, which this does not.
func FormattedText(text string) json.RawMessage {
	type leaf struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	}
	type paragraph struct {
		Type     string `json:"type"`
		Children []leaf `json:"children"`
	}
	root := struct {
		Type     string      `json:"type"`
		Children []paragraph `json:"children"`
	}{Type: "root", Children: []paragraph{}}
	if text != "" {
		root.Children = []paragraph{{Type: "paragraph", Children: []leaf{{Type: "text", Value: text}}}}
	}
	b, _ := marshalJS(root) // cannot fail: strings only
	return b
}

// forHistory returns a copy of m with Raw set to null on it and on every
// message it replies to, as the Chat SDK's thread history stores messages.
func (m *Message) forHistory() *Message {
	c := *m
	c.Raw = json.RawMessage("null")
	if m.ReplyTo != nil {
		c.ReplyTo = m.ReplyTo.forHistory()
	}
	return &c
}
