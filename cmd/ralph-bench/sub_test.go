package main

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

func TestSubscriberTracking(t *testing.T) {
	type msg struct{ pub, seq uint32 }
	tests := []struct {
		name             string
		publishers       int // 0: subscribe-only mode
		msgs             []msg
		raw              [][]byte // payloads without a valid header
		unique           int64
		dups, ooo, undec int64
	}{
		{name: "in order", publishers: 2, msgs: []msg{{0, 0}, {1, 0}, {0, 1}, {1, 1}}, unique: 4},
		{name: "duplicate", publishers: 1, msgs: []msg{{0, 0}, {0, 1}, {0, 1}, {0, 2}}, unique: 3, dups: 1},
		{name: "late arrival", publishers: 1, msgs: []msg{{0, 0}, {0, 2}, {0, 1}, {0, 3}}, unique: 4, ooo: 1},
		{name: "order is per publisher", publishers: 2, msgs: []msg{{0, 5}, {1, 0}, {1, 1}, {0, 6}}, unique: 4},
		{name: "unknown publisher", publishers: 1, msgs: []msg{{0, 0}, {1, 0}}, unique: 1, undec: 1},
		{name: "short payload", publishers: 1, msgs: []msg{{0, 0}}, raw: [][]byte{[]byte("hi")}, unique: 1, undec: 1},
		{name: "subscribe-only grows", msgs: []msg{{300, 100000}, {2, 0}, {300, 100000}, {300, 5}},
			raw: [][]byte{nil}, unique: 4, dups: 1, ooo: 1, undec: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSubscriber(0, tt.publishers, 10, 0)
			s.countUndecodable = tt.publishers == 0
			deliver := func(payload []byte) {
				_, _ = s.onPublish(paho.PublishReceived{Packet: &paho.Publish{Payload: payload}})
			}
			for _, m := range tt.msgs {
				b := make([]byte, 64)
				encodeHeader(b, m.pub, m.seq, time.Now().UnixNano())
				deliver(b)
			}
			for _, b := range tt.raw {
				deliver(b)
			}
			if got := s.unique.Load(); got != tt.unique {
				t.Errorf("unique = %d, want %d", got, tt.unique)
			}
			if s.duplicates != tt.dups || s.outOfOrder != tt.ooo || s.undecodable != tt.undec {
				t.Errorf("dups/ooo/undecodable = %d/%d/%d, want %d/%d/%d",
					s.duplicates, s.outOfOrder, s.undecodable, tt.dups, tt.ooo, tt.undec)
			}
			if want := int64(len(tt.msgs) + len(tt.raw)); s.received != want {
				t.Errorf("received = %d, want %d", s.received, want)
			}
		})
	}
}
