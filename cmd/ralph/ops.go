package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ralph-gateway/ralph/bridge"
	"github.com/ralph-gateway/ralph/configs"
	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/queue"
)

// defaultConfigPath is where the package installs the config; status and
// queue look there when no --config or --addr is given.
const defaultConfigPath = "/etc/ralph/ralph.toml"

// target is how an operator command reaches the gateway: its HTTP
// endpoint, and the config for opening the data dir when it is stopped.
type target struct {
	addr string
	cfg  *configs.Config
}

func opsFlags(fs *flag.FlagSet) (cfgPath, addr *string) {
	cfgPath = fs.String("config", "", "config file (default "+defaultConfigPath+" if it exists)")
	addr = fs.String("addr", "", "HTTP endpoint host:port (default: http.listen from the config)")
	return cfgPath, addr
}

func resolve(cfgPath, addr string) (target, error) {
	var t target
	if cfgPath == "" {
		if _, err := os.Stat(defaultConfigPath); err == nil {
			cfgPath = defaultConfigPath
		}
	}
	if cfgPath != "" {
		cfg, err := configs.Load(cfgPath)
		if err != nil {
			return t, err
		}
		t.cfg = cfg
	} else {
		t.cfg = configs.Default()
	}
	t.addr = addr
	if t.addr == "" {
		t.addr = t.cfg.HTTP.Listen
	}
	return t, nil
}

// get fetches path from the endpoint and decodes JSON into v.
func (t target) do(method, path string, v any) error {
	if t.addr == "" {
		return errEndpointOff
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+t.addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusServiceUnavailable {
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func status(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath, addr := opsFlags(fs)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if fs.Parse(args) != nil {
		return 2
	}
	t, err := resolve(*cfgPath, *addr)
	if err != nil {
		fmt.Fprintf(stderr, "ralph status: %v\n", err)
		return 1
	}
	var st gateway.Status
	if err := t.do("GET", "/status", &st); err != nil {
		fmt.Fprintf(stderr, "ralph status: cannot reach ralph at %s: %v\n", t.addr, err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
	} else {
		printStatus(stdout, st)
	}
	if !st.Healthy {
		return 1
	}
	return 0
}

func printStatus(w io.Writer, st gateway.Status) {
	fmt.Fprintf(w, "ralph %s, up %s, %d clients, listening on %s\n", st.Version,
		time.Since(st.Started).Round(time.Second), st.Clients, strings.Join(st.Listen, ", "))
	if st.Healthy {
		fmt.Fprintln(w, "health: ok")
	} else {
		fmt.Fprintf(w, "health: UNHEALTHY: %s\n", strings.Join(st.Unhealthy, "; "))
	}
	q := st.Queue
	budget := "no budget"
	if q.MaxBytes > 0 {
		budget = fmt.Sprintf("%.0f%% of %s", 100*float64(q.Bytes)/float64(q.MaxBytes), bytesStr(q.MaxBytes))
	}
	fmt.Fprintf(w, "queue: %d messages, %s (%s), oldest %s old; appended %d, rejected %d, dropped %d (full) %d (max_age)\n",
		q.Messages, bytesStr(q.Bytes), budget, (time.Duration(q.OldestAge) * time.Second).String(),
		q.Appended, q.Rejected, q.DroppedFull, q.Expired)
	if q.DiskLow {
		fmt.Fprintln(w, "queue: DISK NEARLY FULL: new messages are refused")
	}
	for _, sa := range q.SetAside {
		if sa.Acknowledged {
			fmt.Fprintf(w, "queue: database set aside at %s (acknowledged)\n", sa.Path)
		} else {
			fmt.Fprintf(w, "queue: DATABASE SET ASIDE at %s: %s; its messages are not forwarded (ralph queue peek --dir %s; then ralph queue acknowledge)\n",
				sa.Path, orDash(sa.Reason), sa.Path)
		}
	}
	if len(q.RecoveredFiles) > 0 {
		fmt.Fprintf(w, "queue: at start, %d empty files a power cut left were moved aside (they held nothing synced): %s\n",
			len(q.RecoveredFiles), strings.Join(q.RecoveredFiles, ", "))
	}
	printStorage(w, st.Storage)
	for _, b := range st.Bridges {
		state := "offline"
		if b.Connected {
			state = "online"
		}
		fmt.Fprintf(w, "bridge %s: %s since %s (%s), queued %d, in flight %d, forwarded %d, dropped %d, reconnects %d\n",
			b.Name, state, b.Since.Local().Format(time.DateTime), orDash(b.URL), b.Queued, b.Inflight, b.Forwarded, b.Dropped, b.Reconnects)
		if b.LastError != "" {
			fmt.Fprintf(w, "  last error: %s\n", b.LastError)
		}
		printBacklog(w, b.Backlog)
		if b.DeadLetter+b.DownlinkDeadLetter > 0 {
			fmt.Fprintf(w, "  dead-lettered: %d over the upstream's packet size or limits, %d downlink with an invalid local topic\n", b.DeadLetter, b.DownlinkDeadLetter)
		}
		if b.PropertiesDropped > 0 {
			fmt.Fprintf(w, "  MQTT %s: %d messages forwarded without their MQTT 5 properties\n", b.Protocol, b.PropertiesDropped)
		}
	}
	for _, sp := range st.Serial {
		state := "absent"
		switch {
		case sp.Online:
			state = "online"
		case sp.Present:
			state = "silent"
		}
		c := sp.Counters
		fmt.Fprintf(w, "serial %s: %s since %s (%s, board %s), published %d, delivered %d, bad frames %d\n",
			sp.Name, state, sp.Since.Local().Format(time.DateTime), orDash(sp.Device), orDash(sp.Board),
			c.Published, c.Delivered, c.BadChecksum+c.Malformed+c.Oversize)
	}
}

// printStorage prints what Ralph wrote to its disk, for sizing an SD card.
func printStorage(w io.Writer, s gateway.StorageStatus) {
	window := time.Duration(s.WindowSeconds * float64(time.Second)).Round(time.Second).String()
	line := "storage: "
	if s.WrittenBytes != nil {
		line += fmt.Sprintf("wrote %s since start", bytesStr(*s.WrittenBytes))
		if s.BytesPerMessage != nil {
			line += fmt.Sprintf(" (%s per message)", bytesStr(int64(*s.BytesPerMessage)))
		}
		line += ", "
	}
	line += fmt.Sprintf("%d syncs", s.Syncs)
	if s.WindowSeconds > 0 {
		line += fmt.Sprintf("; over the last %s: %.1f syncs/s", window, s.SyncsPerSecond)
		if s.ProjectedBytesPerDay != nil {
			line += fmt.Sprintf(", %s a day projected", bytesStr(int64(*s.ProjectedBytesPerDay)))
		}
	}
	if s.WrittenBytes == nil {
		line += " (bytes written: not reported by this system's /proc/self/io)"
	}
	fmt.Fprintln(w, line)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesStr(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// queueCmd is `ralph queue stats|peek [N]|purge --bridge NAME|acknowledge`.
// It asks the running gateway, or opens the data dir itself when nothing
// answers at the endpoint (ralph is stopped), read-only for stats and
// peek; with --dir, stats and peek read a database set aside instead.
func queueCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: ralph queue stats|peek [N] [--dir PATH]|purge --bridge NAME|acknowledge [--config FILE] [--addr HOST:PORT]")
		return 2
	}
	sub, args := args[0], args[1:]
	var count string // peek's N may come before the flags
	if sub == "peek" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		count, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("queue "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath, addr := opsFlags(fs)
	bridgeName := fs.String("bridge", "", "with purge: the bridge whose backlog to drop")
	dir := fs.String("dir", "", "with stats and peek: read the queue database at `PATH` (a copy set aside in <data_dir>/lost+found) instead of the gateway's")
	if fs.Parse(args) != nil {
		return 2
	}
	if *dir != "" && sub != "stats" && sub != "peek" {
		fmt.Fprintf(stderr, "ralph queue %s: --dir applies to stats and peek only\n", sub)
		return 2
	}
	t, err := resolve(*cfgPath, *addr)
	if err != nil {
		fmt.Fprintf(stderr, "ralph queue: %v\n", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	switch sub {
	case "stats":
		var st gateway.Status
		if *dir == "" {
			err := t.do("GET", "/status", &st)
			if err == nil {
				enc.Encode(map[string]any{"queue": st.Queue, "bridges": st.Bridges})
				return 0
			}
			if !isUnreachable(err) {
				return answeredWithError(t, sub, err, stderr)
			}
		}
		return offline(t, *dir, true, stderr, func(q *queue.Queue, _ map[string][]bridge.Lane) error {
			enc.Encode(map[string]any{"queue": q.Stats(), "bridges": q.Consumers()})
			return nil
		})
	case "peek":
		n := 10
		if count == "" && fs.NArg() > 0 {
			count = fs.Arg(0)
		}
		if count != "" {
			if n, err = strconv.Atoi(count); err != nil || n < 1 {
				fmt.Fprintf(stderr, "ralph queue peek: %q is not a positive number\n", count)
				return 2
			}
		}
		var msgs []gateway.PeekedMessage
		if *dir == "" {
			err := t.do("GET", "/queue/peek?n="+strconv.Itoa(n), &msgs)
			if err == nil {
				enc.Encode(msgs)
				return 0
			}
			if !isUnreachable(err) {
				return answeredWithError(t, sub, err, stderr)
			}
		}
		return offline(t, *dir, true, stderr, func(q *queue.Queue, _ map[string][]bridge.Lane) error {
			msgs, err := q.Peek(n)
			if err == nil {
				enc.Encode(gateway.Peeked(msgs))
			}
			return err
		})
	case "purge":
		if *bridgeName == "" {
			fmt.Fprintln(stderr, "ralph queue purge: --bridge NAME is required")
			return 2
		}
		var res map[string]uint64
		if err := t.do("POST", "/queue/purge?bridge="+*bridgeName, &res); err == nil {
			fmt.Fprintf(stdout, "purged %d messages for bridge %s\n", res["purged"], *bridgeName)
			return 0
		} else if !isUnreachable(err) {
			fmt.Fprintf(stderr, "ralph queue purge: %v\n", err)
			return 1
		}
		return offline(t, "", false, stderr, func(q *queue.Queue, cons map[string][]bridge.Lane) error {
			lanes, ok := cons[*bridgeName]
			if !ok {
				return fmt.Errorf("no bridge named %q in the config", *bridgeName)
			}
			var n uint64
			for _, l := range lanes {
				n += l.Consumer.Purge()
			}
			fmt.Fprintf(stdout, "purged %d messages for bridge %s\n", n, *bridgeName)
			return nil
		})
	case "acknowledge":
		return acknowledge(t, stdout, stderr)
	}
	fmt.Fprintf(stderr, "ralph queue: unknown subcommand %q (stats, peek, purge, acknowledge)\n", sub)
	return 2
}

// acknowledge marks the databases set aside beside the data dir's queue as
// seen, so that they no longer make the gateway unhealthy. It only writes
// marker files, so it works whether ralph runs or not.
func acknowledge(t target, stdout, stderr io.Writer) int {
	dir := filepath.Join(t.cfg.DataDir, "db")
	before, err := queue.SetAsides(dir)
	if err != nil {
		fmt.Fprintf(stderr, "ralph queue acknowledge: %v\n", err)
		return 1
	}
	if _, err := queue.AcknowledgeSetAsides(dir); err != nil {
		fmt.Fprintf(stderr, "ralph queue acknowledge: %v\n", err)
		return 1
	}
	after, err := queue.SetAsides(dir)
	if err != nil {
		fmt.Fprintf(stderr, "ralph queue acknowledge: %v\n", err)
		return 1
	}
	was := make(map[string]bool)
	for _, sa := range before {
		was[sa.Path] = sa.Acknowledged
	}
	n := 0
	for _, sa := range after {
		if sa.Acknowledged && !was[sa.Path] {
			fmt.Fprintf(stdout, "acknowledged %s (%s)\n", sa.Path, orDash(sa.Reason))
			n++
		}
	}
	switch {
	case len(after) == 0:
		fmt.Fprintf(stdout, "nothing to acknowledge: no database set aside in %s\n", queue.LostFound(dir))
	case n == 0:
		fmt.Fprintf(stdout, "nothing to acknowledge: every database set aside in %s (%d) was acknowledged before\n", queue.LostFound(dir), len(after))
	default:
		fmt.Fprintf(stdout, "the copies stay in %s: delete them once their messages are no longer needed\n", queue.LostFound(dir))
	}
	return 0
}

var errEndpointOff = errors.New("the HTTP endpoint is off (http.listen = \"\")")

// isUnreachable tells "nobody answers there" (ralph is stopped: nothing
// listens at the address, or its name does not resolve; or it has no
// endpoint) from an answer that was an error, or no answer in time, from
// something that listens: a running ralph, which holds the data dir.
func isUnreachable(err error) bool {
	var dns *net.DNSError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, errEndpointOff) ||
		errors.As(err, &dns) && dns.IsNotFound
}

// answeredWithError reports the error of a gateway that is there: its data
// dir is not opened behind its back.
func answeredWithError(t target, sub string, err error, stderr io.Writer) int {
	fmt.Fprintf(stderr, "ralph queue %s: ralph at %s: %v (the data dir is read directly only when nothing answers there)\n", sub, t.addr, err)
	return 1
}

// offline opens a queue database directly: the data dir's, only possible
// while ralph is stopped since Badger locks its directory, or the one at
// setAside (a copy in lost+found). With inspect (stats and peek) it is
// opened read-only (queue.Options.Inspect): nothing in it changes, not a
// cursor, not a deletion, not a file.
func offline(t target, setAside string, inspect bool, stderr io.Writer, fn func(*queue.Queue, map[string][]bridge.Lane) error) int {
	dir := filepath.Join(t.cfg.DataDir, "db")
	if setAside != "" {
		dir = setAside
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		if setAside != "" {
			fmt.Fprintf(stderr, "ralph queue: there is no queue database at %s\n", dir)
		} else {
			fmt.Fprintf(stderr, "ralph queue: ralph does not answer at %s and there is no queue at %s\n", t.addr, dir)
		}
		return 1
	}
	opts := queue.Options{Dir: dir, MinFree: -1, Inspect: inspect, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var q *queue.Queue
	var err error
	if setAside != "" {
		q, err = openSetAside(opts)
	} else {
		q, err = queue.Open(opts)
	}
	if err != nil {
		if setAside != "" {
			fmt.Fprintf(stderr, "ralph queue: %v\n", err)
		} else {
			fmt.Fprintf(stderr, "ralph queue: ralph does not answer at %s, and opening %s failed (is ralph running?): %v\n", t.addr, dir, err)
		}
		return 1
	}
	defer q.Close()
	// Register every configured bridge, and leave them registered until
	// the queue closes: what no consumer holds would be deleted (by purge;
	// inspecting deletes nothing).
	cons := make(map[string][]bridge.Lane)
	for _, b := range t.cfg.Bridges {
		if lanes, err := gateway.BridgeLanes(q, b); err == nil {
			cons[b.Name] = lanes
		}
	}
	if err := fn(q, cons); err != nil {
		fmt.Fprintf(stderr, "ralph queue: %v\n", err)
		return 1
	}
	return 0
}

// openSetAside opens a database set aside, to read it, without setting
// anything aside in turn: a copy that still does not open stays where the
// operator found it.
func openSetAside(opts queue.Options) (*queue.Queue, error) {
	q, err := queue.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("%s does not open either (%v): it is left as it was", opts.Dir, err)
	}
	return q, nil
}

// printBacklog shows a bridge's backlog per priority: every priority when
// its rules have several, the one only when it has a backlog.
func printBacklog(w io.Writer, lanes []bridge.Backlog) {
	for _, l := range lanes {
		if len(lanes) == 1 && l.Messages == 0 {
			return
		}
		counted := ""
		if l.Counting {
			counted = " (still counting)"
		}
		eta := "unknown (not draining)"
		if l.ETA != nil {
			eta = (time.Duration(*l.ETA) * time.Second).String()
		}
		fmt.Fprintf(w, "  priority %d: %d messages%s, %s, oldest %s, draining %.0f/s, left %s\n",
			l.Priority, l.Messages, counted, bytesStr(int64(l.Bytes)), (time.Duration(l.OldestAge) * time.Second).String(), l.DrainRate, eta)
	}
}
