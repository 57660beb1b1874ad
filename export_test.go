package upstash

import (
	"encoding/json"
	"fmt"
)

// Hooks for the external tests (package upstash_test); this file is compiled
// only with the tests.

// DecodeReply decodes a single-command response body the way the client
// does, for the decoder's unit and fuzz tests.
func DecodeReply(body []byte, base64Encoded bool) (Value, error) {
	return decodeReply(body, base64Encoded, "", 0, "")
}

// OnAutoQueue makes c call f, with the number of calls waiting, each time
// a call queues for an auto-pipelined batch. c must have auto-pipelining
// on, and f must not call c.
func OnAutoQueue(c *Client, f func(queued int)) {
	c.auto.mu.Lock()
	defer c.auto.mu.Unlock()
	c.auto.onQueue = f
}

// CheckEnvelope reports how the envelope reader differs from
// json.Unmarshal on body, read as one reply and as an array of replies:
// "" when they agree (both fail, or both give the same replies).
func CheckEnvelope(body []byte) string {
	var fast, slow reply
	fastErr := parseReply(body, &fast)
	slowErr := json.Unmarshal(body, &slow)
	if (fastErr == nil) != (slowErr == nil) {
		return fmt.Sprintf("one reply: error %v, json.Unmarshal %v", fastErr, slowErr)
	}
	if fastErr == nil && !sameReply(fast, slow) {
		return fmt.Sprintf("one reply: %s/%v, json.Unmarshal %s/%v", fast.Result, fast.Error, slow.Result, slow.Error)
	}
	fastArr, fastErr := parseReplyArray(body)
	var slowArr []reply
	slowErr = json.Unmarshal(body, &slowArr)
	if (fastErr == nil) != (slowErr == nil) {
		return fmt.Sprintf("array: error %v, json.Unmarshal %v", fastErr, slowErr)
	}
	if fastErr == nil {
		if len(fastArr) != len(slowArr) {
			return fmt.Sprintf("array: %d replies, json.Unmarshal %d", len(fastArr), len(slowArr))
		}
		for i := range fastArr {
			if !sameReply(fastArr[i], slowArr[i]) {
				return fmt.Sprintf("array element %d: %s/%v, json.Unmarshal %s/%v", i, fastArr[i].Result, fastArr[i].Error, slowArr[i].Result, slowArr[i].Error)
			}
		}
	}
	return ""
}

func sameReply(a, b reply) bool {
	if (a.Result == nil) != (b.Result == nil) || string(a.Result) != string(b.Result) {
		return false
	}
	if (a.Error == nil) != (b.Error == nil) {
		return false
	}
	return a.Error == nil || *a.Error == *b.Error
}

// ParseFinishReply splits a finish.lua reply as Finish does, for the
// parser's tests: the kind, counts and entries, and whether it is well
// formed.
func ParseFinishReply(r string) (kind byte, expired, dead int, entries [][]byte, ok bool) {
	return parseFinish(r)
}
