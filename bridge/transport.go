package bridge

// This file holds what carries MQTT to the upstream, under either
// protocol: plain TCP, TLS (with ALPN, as AWS IoT Core wants on port 443),
// MQTT over WebSocket (ws://, wss://: binary messages, subprotocol
// "mqtt") and, in front of any of them, an HTTP proxy that opens a tunnel
// with CONNECT. The MQTT clients are handed the result as a net.Conn.
import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// WebSocketSubprotocol is what an MQTT client asks for in its WebSocket
// handshake (MQTT 5 §6, 3.1.1 §6).
const WebSocketSubprotocol = "mqtt"

func (b *Bridge) dial(ctx context.Context, u *url.URL) (*flushConn, error) {
	var c net.Conn
	var err error
	switch u.Scheme {
	case "mqtt", "tcp":
		c, err = b.dialTCP(ctx, u.Host)
	case "mqtts", "ssl", "tls":
		c, err = b.dialTLS(ctx, u)
	case "ws", "wss":
		c, err = b.dialWebSocket(ctx, u)
	default:
		return nil, fmt.Errorf("unsupported URL scheme %q", u.Scheme)
	}
	if err != nil {
		return nil, err
	}
	return newFlushConn(c), nil // its lock serialises paho's writers, as tls.Conn and websocket.Conn need
}

// dialTCP opens a TCP connection to addr (host:port), through the proxy
// if there is one.
func (b *Bridge) dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	if b.cfg.Proxy != nil {
		c, err = dialProxy(ctx, b.cfg.Proxy, addr)
	} else {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, &unreachableError{err}
	}
	return c, nil
}

// unreachableError is a connection attempt that failed before anything
// answered: no route, nothing listening, a proxy that could not reach
// the upstream. While that is the reason, the bridge probes for the
// upstream instead of waiting out its backoff (probe.go).
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// dialTLS opens a TLS connection to u's host.
func (b *Bridge) dialTLS(ctx context.Context, u *url.URL) (net.Conn, error) {
	raw, err := b.dialTCP(ctx, u.Host)
	if err != nil {
		return nil, err
	}
	cfg := b.cfg.TLS
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, tlsError(u.Host, cfg, err)
	}
	if len(cfg.NextProtos) > 0 && c.ConnectionState().NegotiatedProtocol == "" {
		c.Close()
		return nil, fmt.Errorf("TLS handshake with %s: the server agreed to none of the ALPN protocols offered (%s)", u.Host, quoteList(cfg.NextProtos))
	}
	return c, nil
}

// tlsError words a failed TLS handshake. A server that requires ALPN (AWS
// IoT Core on port 443, with x-amzn-mqtt-ca) refuses a client that offers
// none with an alert that does not say why: the error does.
func tlsError(addr string, cfg *tls.Config, err error) error {
	msg := fmt.Sprintf("TLS handshake with %s: %v", addr, err)
	var oe *net.OpError
	if len(cfg.NextProtos) == 0 && errors.As(err, &oe) && oe.Op == "remote error" && !strings.Contains(err.Error(), "certificate") {
		msg += ` (the server refused the handshake, and this bridge offers no ALPN protocol: a server that requires one refuses such handshakes, e.g. AWS IoT Core on port 443 wants alpn = ["x-amzn-mqtt-ca"])`
	}
	return &wrapped{msg: msg, err: err}
}

// wrapped is an error with a message of its own that still unwraps to
// its cause.
type wrapped struct {
	msg string
	err error
}

func (e *wrapped) Error() string { return e.msg }
func (e *wrapped) Unwrap() error { return e.err }

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// dialWebSocket opens MQTT over WebSocket to u (ws:// or wss://): a
// WebSocket handshake asking for the subprotocol "mqtt", which the server
// must agree to, over TCP or TLS (through the proxy if there is one).
func (b *Bridge) dialWebSocket(ctx context.Context, u *url.URL) (net.Conn, error) {
	d := websocket.Dialer{
		NetDialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return b.dialTCP(ctx, addr)
		},
		// TLS as for mqtts:// (the bridge's CA, client certificate, ALPN).
		NetDialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return b.dialTLS(ctx, &url.URL{Scheme: "wss", Host: addr})
		},
		Subprotocols: []string{WebSocketSubprotocol},
	}
	target := *u
	if target.Path == "" {
		target.Path = "/"
	}
	ws, resp, err := d.DialContext(ctx, target.String(), http.Header{"User-Agent": {"ralph"}})
	if err != nil {
		if resp != nil && errors.Is(err, websocket.ErrBadHandshake) {
			return nil, fmt.Errorf("WebSocket handshake with %s: the server answered %q, not 101 Switching Protocols to a WebSocket", u.Redacted(), resp.Status)
		}
		return nil, err
	}
	if p := ws.Subprotocol(); p != WebSocketSubprotocol {
		ws.Close()
		if p == "" {
			return nil, fmt.Errorf("WebSocket handshake with %s: the server chose no subprotocol, where MQTT needs %q", u.Redacted(), WebSocketSubprotocol)
		}
		return nil, fmt.Errorf("WebSocket handshake with %s: the server chose the subprotocol %q, where MQTT needs %q", u.Redacted(), p, WebSocketSubprotocol)
	}
	return &wsConn{ws: ws}, nil
}

// wsConn is a WebSocket connection as a stream: MQTT packets travel in
// binary messages, which need not align with packets.
type wsConn struct {
	ws *websocket.Conn
	r  io.Reader // the message being read
	// closeOnce sends the close message once.
	closeOnce sync.Once

	// The write deadline: websocket.Conn keeps its own in a field that
	// its writer reads, so it is set there only by Write (which
	// flushConn serialises), and on the socket at once, which ends a
	// blocked write as on a TCP connection.
	mu            sync.Mutex
	writeDeadline time.Time
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, wsReadError(err)
			}
			if typ != websocket.BinaryMessage {
				return 0, errors.New("WebSocket: the upstream sent a text message (MQTT travels in binary messages)")
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil // on to the next message
			err = nil
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
}

// wsReadError makes the end of a WebSocket connection io.EOF, as for a
// TCP connection, saying how it ended unless it was a normal close.
func wsReadError(err error) error {
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		return err
	}
	switch ce.Code {
	case websocket.CloseNormalClosure, websocket.CloseNoStatusReceived, websocket.CloseAbnormalClosure:
		return io.EOF
	}
	return &wrapped{msg: fmt.Sprintf("%v (%v)", io.EOF, ce), err: io.EOF}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	dl := c.writeDeadline
	c.mu.Unlock()
	c.ws.SetWriteDeadline(dl)
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error {
	c.closeOnce.Do(func() {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	})
	return c.ws.Close()
}

func (c *wsConn) LocalAddr() net.Addr               { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr              { return c.ws.RemoteAddr() }
func (c *wsConn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

func (c *wsConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDeadline = t
	c.mu.Unlock()
	return c.ws.NetConn().SetWriteDeadline(t)
}

func (c *wsConn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

// dialProxy opens a tunnel to addr (host:port) through the HTTP proxy
// proxy: CONNECT, with Basic credentials if the proxy URL has a user, and
// a 2xx answer (RFC 9110 §9.3.6).
func dialProxy(ctx context.Context, proxy *url.URL, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", proxy.Host)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", proxy.Host, err)
	}
	// The exchange is bounded by ctx like the rest of the connection.
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	conn, err := connectTunnel(c, proxy, addr)
	if !stop() && err == nil { // ctx ended meanwhile: the deadline may be set
		err = context.Cause(ctx)
	}
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("proxy %s: CONNECT %s: %w", proxy.Host, addr, context.Cause(ctx))
		}
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return conn, nil
}

func connectTunnel(c net.Conn, proxy *url.URL, addr string) (net.Conn, error) {
	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: addr},
		Host:   addr,
		Header: http.Header{"User-Agent": {"ralph"}},
	}
	if proxy.User != nil {
		pw, _ := proxy.User.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(proxy.User.Username()+":"+pw)))
	}
	if err := req.Write(c); err != nil {
		return nil, fmt.Errorf("proxy %s: CONNECT %s: %w", proxy.Host, addr, err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: CONNECT %s: no HTTP answer: %w", proxy.Host, addr, err)
	}
	resp.Body.Close() // a CONNECT answer has no body to read
	if resp.StatusCode/100 != 2 {
		msg := fmt.Sprintf("proxy %s refused CONNECT %s: %s", proxy.Host, addr, resp.Status)
		if resp.StatusCode == http.StatusProxyAuthRequired {
			if proxy.User == nil {
				msg += ` (it wants credentials: proxy = "http://user:password@host:port")`
			} else {
				msg += " (it did not accept the credentials in the proxy URL)"
			}
		}
		return nil, errors.New(msg)
	}
	if br.Buffered() > 0 {
		// The upstream spoke first, and the bytes are in br.
		return &readerConn{Conn: c, r: io.MultiReader(io.LimitReader(br, int64(br.Buffered())), c)}, nil
	}
	return c, nil
}

// readerConn is a connection whose first bytes were already read.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c *readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }
