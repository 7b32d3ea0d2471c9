package main

import (
	"io"
	"strings"
	"testing"
)

func TestBrokerAddr(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "tcp://127.0.0.1:1883", want: "127.0.0.1:1883"},
		{in: "mqtt://127.0.0.1:18830", want: "127.0.0.1:18830"},
		{in: "127.0.0.1:18830", want: "127.0.0.1:18830"},
		{in: "tcp://127.0.0.1", want: "127.0.0.1:1883"},
		{in: "localhost", want: "localhost:1883"},
		{in: "[::1]:1884", want: "[::1]:1884"},
		{in: "::1", want: "[::1]:1883"},
		{in: "ws://127.0.0.1:80", wantErr: true},
		{in: "ssl://127.0.0.1:8883", wantErr: true},
		{in: ":1883", wantErr: true},
	}
	for _, tt := range tests {
		got, err := brokerAddr(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("brokerAddr(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    string
		wantErr string
		check   func(*options) bool
	}{
		{args: "", check: func(o *options) bool {
			return o.addr == "127.0.0.1:1883" && o.SubQoS == 1 && o.Publishers == 10 && o.Inflight == 32
		}},
		{args: "-qos 0", check: func(o *options) bool { return o.SubQoS == 0 }},
		{args: "-qos 2 -subqos 1", check: func(o *options) bool { return o.SubQoS == 1 }},
		{args: "-subscribe-only -expect 5 -topic a/+", check: func(o *options) bool { return o.Subscribers == 1 }},
		{args: "-qos 3", wantErr: "-qos"},
		{args: "-topic a/#", wantErr: "-topic"},
		{args: "-subscribe-only", wantErr: "-expect"},
		{args: "-inflight 0", wantErr: "-inflight"},
		{args: "-rate -1", wantErr: "-rate"},
		{args: "extra", wantErr: "unexpected"},
	}
	for _, tt := range tests {
		o, err := parseFlags(strings.Fields(tt.args), io.Discard)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseFlags(%q) error %v, want one mentioning %q", tt.args, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("parseFlags(%q): %v", tt.args, err)
		case !tt.check(o):
			t.Errorf("parseFlags(%q) = %+v: check failed", tt.args, o)
		}
	}
}
