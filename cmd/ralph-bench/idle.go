package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// runIdle connects n MQTT clients that then stay idle, and reports the
// broker's memory before and with them: what each connection costs.
// The CONNECT packets are written by hand (MQTT 3.1.1, keepalive 300 s) so
// that the tool itself stays light with thousands of connections.
func runIdle(broker string, n, pid int, hold time.Duration, w io.Writer) error {
	addr := strings.TrimPrefix(strings.TrimPrefix(broker, "tcp://"), "mqtt://")
	_, before, err := readMemStatus(pid)
	if err != nil {
		return err
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	for i := range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c)
		if _, err := c.Write(connectPacket(fmt.Sprintf("idle-%d", i))); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		ack := make([]byte, 4)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			return fmt.Errorf("connection %d: no successful CONNACK (% x, %v)", i, ack, err)
		}
	}
	connected := time.Since(start)
	time.Sleep(hold) // let the broker settle with every client connected
	hwm, with, err := readMemStatus(pid)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "idle          %d clients connected in %v\n", n, connected.Round(time.Millisecond))
	fmt.Fprintf(w, "rss           before %.1f MiB  with clients %.1f MiB  peak %.1f MiB  per connection %.1f KiB\n",
		float64(before)/1024, float64(with)/1024, float64(hwm)/1024, float64(with-before)/float64(n))
	return nil
}

func connectPacket(clientID string) []byte {
	var body bytes.Buffer
	body.Write([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 2, 1, 44}) // MQTT 3.1.1, clean session, keepalive 300 s
	body.Write([]byte{byte(len(clientID) >> 8), byte(len(clientID))})
	body.WriteString(clientID)
	return append([]byte{0x10, byte(body.Len())}, body.Bytes()...)
}
