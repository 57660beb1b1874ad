package upstash

// Hooks for the external tests (package upstash_test); this file is compiled
// only with the tests.

// DecodeReply decodes a single-command response body the way the client
// does, for the decoder's unit and fuzz tests.
func DecodeReply(body []byte, base64Encoded bool) (Value, error) {
	return decodeReply(body, base64Encoded, "", nil, "")
}

// OnAutoQueue makes c call f, with the number of calls waiting, each time
// a call queues for an auto-pipelined batch. c must have auto-pipelining
// on, and f must not call c.
func OnAutoQueue(c *Client, f func(queued int)) {
	c.auto.mu.Lock()
	defer c.auto.mu.Unlock()
	c.auto.onQueue = f
}
