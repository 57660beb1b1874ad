// Package chatflow is the Chat SDK core's webhook orchestration in Go: what
// the TypeScript package chat (4.41.1) does around its state adapter for
// every incoming message, over any upstash.StateAdapter, sharing keys,
// locks, queues and history with TypeScript bots on the same database.
//
//	state := upstash.NewState(client)
//	flow, err := chatflow.New(state, func(ctx context.Context, turn *chatflow.Turn) error {
//		// turn.Message is the latest message, turn.Skipped the ones it superseded.
//		return reply(ctx, turn)
//	}, chatflow.WithStrategy(chatflow.Queue))
//	...
//	res, err := flow.Handle(ctx, "slack", msg) // in the webhook handler
//
// # One message, step by step
//
// Flow.Handle ignores the bot's own messages, claims
// "dedupe:{adapter}:{id}" (10 minutes; a platform's retry is a duplicate),
// appends the message to "msg-history:{thread}" when history is on, and
// then applies the strategy:
//
//   - Drop (the default): take the thread's lock or drop the message with
//     ErrLocked; ConflictForce takes the lock over instead.
//   - Queue: take the lock, handle the message, then drain the queue; when
//     the lock is busy, enqueue the message for the holder (10 entries at
//     most, the oldest dropped, or the new one with DropNewest; each
//     deliverable for 90 s).
//   - Debounce: every message is queued; the holder waits for a 1.5 s
//     window without new messages and hands over the latest one.
//   - Burst: the holder waits one 1.5 s window, then hands over the latest
//     message and drains.
//   - Concurrent: no lock; at most WithMaxConcurrent handlers per thread in
//     this process.
//
// The handler gets a Turn: the latest message and, from a drain, the older
// ones as Skipped (the core's context.skipped), plus Thread helpers for
// subscriptions, thread state ("thread-state:{thread}", merged like the
// core's setState) and history. While it runs, a heartbeat extends the
// lock every third of its TTL (30 s, so every 10 s) up to a maximum
// lifetime (10 minutes). Afterwards the lock is released on a context
// detached from the caller's cancellation. Every goroutine a call starts
// has returned when the call returns.
//
// # Serverless
//
// A call takes its time budget from the context's deadline (Lambda), or
// from WithBudget where the context has none (Vercel's r.Context()). The
// lock's TTL is bounded by the time left (plus one second), so a killed
// invocation's lock does not outlive it by much; the handler's context
// ends ReleaseReserve before the deadline, leaving time to release; and it
// ends LockMargin before the lock could lapse when extends fail or find
// the lock gone (context.Cause is then ErrLockLost), so a handler that
// honours its context never runs unlocked. A call that starts with too
// little time left fails with ErrNoTime before writing anything.
//
// # Delivery
//
// Handle returns an error only when its message was neither handed to the
// handler nor queued (nor deliberately dropped), and it then deletes the
// dedupe marker, so that the platform's retry is processed; or when the
// handler failed for that message. When a write's outcome is unknown (a
// lost reply), the flow prefers a message handled twice to a message lost:
// a dedupe claim in doubt counts as claimed by this call, and an enqueue
// in doubt is reported as an error so the platform retries, which may
// queue the message twice.
//
// On *upstash.State a write whose reply is lost (or answered 5xx, or cut
// by a reset) is sent again under its operation id and applied once, so an
// outcome is unknown only when every attempt of the client's retry policy
// failed. On the fused path the flow then sends the same Admit or Finish
// again under the same operation id (upstash.AdmitRequest.OperationID),
// up to three more times with a short backoff while the call's time
// allows, and learns the recorded outcome: an admission in doubt no longer
// costs a message handled twice, nor a Finish in doubt a batch of queued
// messages lost (the fault tests find none left on the fused path). What
// follows applies when those resends fail too, and to the single
// operations.
//
// The flow logs each doubt (WithLogger) with what it may cost: "may be
// handled twice" for an enqueue, an admission or a put-back in doubt (the
// message may be queued and also retried); "may be lost" for a take off
// the queue in doubt (a Dequeue, or a Finish that took a batch: its reply
// is gone and so are the entries, up to WithMaxQueueSize of them, the
// line's "upTo" attribute), and likewise when a message taken off the
// queue cannot be put back or a dedupe marker cannot be cleared (the
// platform's retry is then taken for a duplicate). After a dedupe claim in
// doubt, the marker is written again once the message was handled or
// queued ("may be handled twice" if that fails too), so that a retry of
// the platform stays a duplicate. With history on, a webhook delivered
// again after an error appends its message again. Apart from these and
// the drops by design (ErrLocked, a full queue, an entry past its TTL),
// chatflow's fault tests find every message handled exactly once,
// counting handlings against these lines.
//
// # Fused operations
//
// When the adapter also implements upstash.FusedAdapter (*upstash.State
// does; New finds it with a type assertion), Handle admits a message with
// one Admit (dedupe, history append, the thread's subscription and state
// read for the turn, lock, or the enqueue when the lock is busy, or the
// take-over under ConflictForce) and ends each holder's turn with one
// Finish, which releases the lock only when the queue holds no live entry
// and otherwise takes the queued messages, up to WithMaxQueueSize of them
// (all of them when every writer uses the same cap), and keeps the lock
// for them: they are the drain's next turn, the latest as Turn.Message and
// the others as Turn.Skipped, with no Dequeue. The turn's Thread answers
// IsSubscribed and State from the admission's read while it is current
// (within the lock hold, updated by the flow's own writes: see Thread),
// and with WithDeferredWrites its SetState, ReplaceState and
// AppendHistory go out with the turn's Finish, applied atomically with
// the release-or-next and only while the lock is held.
//
// HTTP requests, scripts loaded:
//
//   - a handled webhook: 2 under Queue and Drop (Admit, Finish), reads of
//     the subscription and the state included, plus one per write of the
//     handler unless WithDeferredWrites carries them with Finish; 3 under
//     Debounce and Burst, whose window ends with a look at the queue;
//   - a queued, dropped or duplicate webhook: 1;
//   - a drain of N queued messages: the holder's Finish hands all N over,
//     and one more Finish releases after their turn, whatever N;
//   - Concurrent: 1 (Admit, no lock) plus the handler's writes, which go
//     out at once.
//
// Deferred writes trade durability for round trips: until its Finish, a
// turn's write is only in this process, so other processes (and Thread
// helpers outside the turn) see it after the turn, and a crash before
// Finish loses it, as it would leave the lock to lapse. Finish never
// applies them once the lock was lost (another holder may have written
// since): they are then reported in Result.Errors (ErrWritesNotApplied, or
// upstash.ErrOutcomeUnknown when Finish's outcome stayed unknown) and
// logged at Error level.
//
// Both operations carry an operation id, so a lost reply is replayed, not
// applied twice (only when every attempt fails is the outcome unknown: see
// Delivery). Other adapters get the same semantics from the 18 operations,
// in more requests, every Thread call a request and every write at once.
//
// The stranded message of the TypeScript core (vercel/chat#928: B finds
// the lock busy, the holder takes its last empty look at the queue and
// releases, B enqueues, nobody drains) cannot happen on the fused path:
// Admit's lock check and enqueue are one atomic step, and so are Finish's
// look at the queue and release. On the 18 operations it is closed from
// both sides: after enqueueing, B tries the lock once more and drains if
// it is free; after releasing, the holder looks at the queue once more and
// drains again if it is not empty and the lock is free.
//
// What the 18 operations cannot prevent: an acquire whose outcome stays
// unknown leaves a lock that nobody releases until its TTL, and messages
// queued behind it wait for the next message or for Flow.Drain (a
// scheduled sweep can call it). The same holds on both paths for a lock
// whose release (or Finish) failed three times in a row. On both paths, a
// write whose every attempt failed (upstash.ErrOutcomeUnknown) is handled
// as Delivery says.
//
// # Sharing threads with TypeScript bots
//
// Message is the core's serialized message (Message.toJSON), byte for
// byte, so queue entries and history items written by either side are read
// by the other; dedupe, lock, queue, state and history keys are the
// core's. A Go Flow and a TypeScript Chat with the same strategy can serve
// the same threads: whichever holds the lock drains what the other queued
// (chatflow's tests run this against the real chat package). Where the
// two differ on purpose: Go hands every thread of a channel-scoped drain
// its own turn (the core hands over only the latest message's thread and
// drops the others'); Go keeps the holder's own message in memory under
// Debounce and Burst instead of enqueueing it (two requests fewer); Go
// looks at the queue depth only when DropNewest needs it; Go cancels the
// handler's context when the lock is lost (the core only logs); and Go
// puts back on the queue the messages it took but could not hand over.
package chatflow
