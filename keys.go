package upstash

// The key layout of the state layer, the one @chat-adapter/state-redis uses
// (plus the dead-letter list, which state-redis does not have). {p} is the
// key prefix, "chat-sdk" unless WithKeyPrefix says otherwise; ids and keys
// are used as given, colons and all:
//
//	{p}:subscriptions         SET of subscribed thread ids
//	{p}:lock:{threadID}       STRING holding the lock token, PX ttl
//	{p}:cache:{key}           STRING holding the value's JSON text, optional PX ttl
//	{p}:list:{key}            LIST of JSON texts, oldest first
//	{p}:queue:{threadID}      LIST of JSON queue entries, oldest first
//	{p}:queue-corrupt:{threadID}
//	                          LIST of queue entries Dequeue could not read (7 days)
//
// and two namespaces of this library's own, which no TypeScript adapter
// reads or writes:
//
//	{p}:op:{opID}             STRING: the recorded outcome of one state
//	                          operation (see runOp), PX at least 10 minutes
//	{p}:fence:{threadID}      STRING: the last fencing token handed out for
//	                          the lock of threadID, PX the lock's TTL
//
// Every key the state layer touches is built by one of the functions below,
// and nowhere else.

// subscriptionsKey is {p}:subscriptions.
func (s *State) subscriptionsKey() string { return s.prefix + ":subscriptions" }

// lockKey is {p}:lock:{threadID}.
func (s *State) lockKey(threadID string) string { return s.prefix + ":lock:" + threadID }

// cacheKey is {p}:cache:{key}.
func (s *State) cacheKey(key string) string { return s.prefix + ":cache:" + key }

// listKey is {p}:list:{key}.
func (s *State) listKey(key string) string { return s.prefix + ":list:" + key }

// queueKey is {p}:queue:{threadID}.
func (s *State) queueKey(threadID string) string { return s.prefix + ":queue:" + threadID }

// deadLetterKey is {p}:queue-corrupt:{threadID}, where Dequeue moves the
// entries of queueKey(threadID) that it cannot read. "queue-corrupt" is not
// a namespace state-redis uses, so it cannot collide with a thread's queue.
func (s *State) deadLetterKey(threadID string) string {
	return s.prefix + ":queue-corrupt:" + threadID
}

// opKey is {p}:op:{opID}, where the operation opID records its outcome.
// "op" is not a namespace state-redis uses, and op ids are 32 hex digits,
// so no key of another kind can collide with it.
func (s *State) opKey(opID string) string { return s.prefix + ":op:" + opID }

// fenceKey is {p}:fence:{threadID}, the fencing counter of lockKey(threadID).
func (s *State) fenceKey(threadID string) string { return s.prefix + ":fence:" + threadID }
