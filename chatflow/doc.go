// Package chatflow is the Chat SDK core's webhook orchestration over any upstash.StateAdapter.
package chatflow
