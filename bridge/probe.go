package bridge

// This file holds fast link-up. After a failed round of URLs the bridge
// backs off, up to ReconnectMax, so as not to hammer an upstream that
// answers but refuses it. An upstream that did not answer at all is
// another matter: while the backoff runs, the bridge tries a TCP
// connection to each URL every ProbeInterval (through the proxy, if
// there is one) and reconnects as soon as one is accepted. A probe is a
// TCP handshake and a close, nothing an upstream logs as a failed login,
// so an upstream that refuses the bridge (a wrong password, say) still
// sees one attempt per backoff.

import (
	"context"
	"sync"
	"time"
)

// defaultProbeInterval is Config.ProbeInterval's zero value.
const defaultProbeInterval = time.Second

// waitOrReachable waits d, or until some URL accepts a TCP connection
// while it waits. It returns that URL's index (the first if several do),
// or -1 when d passed; ok is false when ctx ended.
func (b *Bridge) waitOrReachable(ctx context.Context, d time.Duration) (index int, ok bool) {
	every := b.cfg.ProbeInterval
	if every <= 0 {
		every = defaultProbeInterval
	}
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return -1, true
		}
		if !sleep(ctx, min(every, left)) {
			return -1, false
		}
		if i := b.probe(ctx, every); i >= 0 {
			b.log.Info("upstream reachable again: reconnecting without waiting out the backoff", "url", b.cfg.URLs[i].Redacted())
			return i, true
		}
	}
}

// probe tries a TCP connection to every URL at once, each for at most
// timeout, and returns the index of the first that accepted one, or -1.
func (b *Bridge) probe(ctx context.Context, timeout time.Duration) int {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reached := make([]bool, len(b.cfg.URLs))
	var wg sync.WaitGroup
	for i, u := range b.cfg.URLs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := b.dialTCP(pctx, u.Host) // as dial does: the config gave every URL its port
			if err == nil {
				c.Close()
				reached[i] = true
			}
		}()
	}
	wg.Wait()
	for i, ok := range reached {
		if ok {
			return i
		}
	}
	return -1
}
