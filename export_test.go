package upstash

// Hooks for the external tests (package upstash_test); this file is compiled
// only with the tests.

// DecodeReply decodes a single-command response body the way the client
// does, for the decoder's unit and fuzz tests.
func DecodeReply(body []byte, base64Encoded bool) (Value, error) {
	return decodeReply(body, base64Encoded, "", nil, "")
}
