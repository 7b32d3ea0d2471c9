// Command ralph is the Ralph edge MQTT gateway.
//
//	ralph [run] [--config FILE]   run the gateway (no file: the embedded default config)
//	ralph check --config FILE     validate a config file, print a summary
//	ralph status [--json]         health, queue and bridges of the running gateway
//	ralph queue stats|peek [N] [--dir PATH]|purge --bridge NAME|acknowledge
//	ralph passwd                  print the bcrypt hash of a password for [[broker.users]]
//	ralph version                 print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/ralph-gateway/ralph/configs"
	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/serialin"
)

// embeddedConfig names the built-in config in logs.
const embeddedConfig = "(embedded default)"

// defaultMemoryLimit is the Go heap's soft limit unless GOMEMLIMIT says
// otherwise.
const defaultMemoryLimit = 80 << 20

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runGateway(args, stderr)
	case "check":
		return check(args, stdout, stderr)
	case "status":
		return status(args, stdout, stderr)
	case "queue":
		return queueCmd(args, stdout, stderr)
	case "passwd":
		return passwd(args, os.Stdin, stdout, stderr)
	case "serial":
		return serialCmd(args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "ralph", versionString())
		return 0
	case "help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "ralph: unknown command %q\n", cmd)
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  ralph [run] [--config FILE]   run the gateway (default: embedded config, broker on 127.0.0.1:1883)
  ralph check --config FILE     validate a config file and print a summary
  ralph status [--json]         ask the running gateway: health, queue, bridges, serial boards
  ralph queue stats|peek [N]|purge --bridge NAME
                                inspect or purge the queue (running or stopped)
  ralph queue stats|peek [N] --dir PATH
                                read a database set aside in <data_dir>/lost+found
  ralph queue acknowledge       mark the databases set aside as seen (they no longer make ralph unhealthy)
  ralph passwd                  read a password (terminal or stdin), print its bcrypt hash for password_hash
  ralph serial                  list the USB serial devices present, for a [[serial]] path or match
  ralph version                 print the version
  (status and queue take --config FILE, default /etc/ralph/ralph.toml, or --addr HOST:PORT)
`)
}

func serialCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "ralph serial: unexpected argument %q\n", args[0])
		return 2
	}
	devs, err := serialin.Devices()
	if err != nil {
		fmt.Fprintf(stderr, "ralph serial: %v\n", err)
		return 1
	}
	if len(devs) == 0 {
		fmt.Fprintln(stdout, "no USB serial devices found (is the board plugged in, with a data cable?)")
		return 0
	}
	for _, d := range devs {
		fmt.Fprintf(stdout, "%s: vid %s, pid %s, serial %s, %s\n", d.Path, orDash(d.VID), orDash(d.PID), orDash(d.Serial), orDash(d.Product))
		if d.ByID != "" {
			fmt.Fprintf(stdout, "  path = %q\n", d.ByID)
		}
		fmt.Fprintf(stdout, "  match = { vid = %q, pid = %q, serial = %q }\n", d.VID, d.PID, d.Serial)
	}
	return 0
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func loadConfig(fs *flag.FlagSet, args []string, required bool, stderr io.Writer) (*configs.Config, string, bool) {
	path := fs.String("config", "", "config file (TOML)")
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return nil, "", false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ralph %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return nil, "", false
	}
	if *path == "" {
		if required {
			fmt.Fprintf(stderr, "ralph %s: --config FILE is required\n", fs.Name())
			return nil, "", false
		}
		return configs.Default(), embeddedConfig, true
	}
	cfg, err := configs.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "ralph: %v\n", err)
		return nil, "", false
	}
	return cfg, *path, true
}

func check(args []string, stdout, stderr io.Writer) int {
	cfg, path, ok := loadConfig(flag.NewFlagSet("check", flag.ContinueOnError), args, true, stderr)
	if !ok {
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	fmt.Fprintf(stdout, "data_dir %s\n", cfg.DataDir)
	anon := ""
	if cfg.Broker.AllowAnonymous {
		anon = " (anonymous clients allowed)"
	}
	fmt.Fprintf(stdout, "broker listens on %s%s\n", strings.Join(cfg.Broker.Listen, ", "), anon)
	fmt.Fprintf(stdout, "queue: durability %s, max_bytes %s, on_full %s\n", cfg.Queue.Durability, cfg.Queue.MaxBytes, cfg.Queue.OnFull)
	if cfg.HTTP.Listen != "" {
		fmt.Fprintf(stdout, "http endpoint on %s\n", cfg.HTTP.Listen)
	}
	for _, b := range cfg.Bridges {
		fmt.Fprintf(stdout, "bridge %s → %s as %s\n", b.Name, strings.Join(b.URLs, ", "), b.ClientID)
		for _, f := range b.Forward {
			strip := ""
			if f.StripPrefix != "" {
				strip = fmt.Sprintf(" without %q", f.StripPrefix)
			}
			fmt.Fprintf(stdout, "  forward %s → %q + topic%s, qos %d\n", f.Local, f.RemotePrefix, strip, f.QoS)
		}
	}
	if len(cfg.Bridges) == 0 {
		fmt.Fprintln(stdout, "no bridges: messages are stored but forwarded nowhere")
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stdout, "warning:", w)
	}
	for _, sp := range cfg.Serial {
		dev := sp.Path
		if dev == "" {
			dev = fmt.Sprintf("USB vid=%s pid=%s serial=%s", orDash(sp.Match.VID), orDash(sp.Match.PID), orDash(sp.Match.Serial))
		}
		fmt.Fprintf(stdout, "serial %s: %s at %d baud, topics under %q, client serial-%s\n", sp.Name, dev, sp.Baud, sp.TopicPrefix, sp.Name)
	}
	return 0
}

func runGateway(args []string, stderr io.Writer) int {
	cfg, path, ok := loadConfig(flag.NewFlagSet("run", flag.ContinueOnError), args, false, stderr)
	if !ok {
		return 1
	}
	var level slog.LevelVar // a reload may change it
	level.Set(logLevel(cfg.Log))
	log := newLogger(cfg.Log, &level, stderr)
	log.Info("starting ralph", "version", versionString(), "config", path)
	if os.Getenv("GOMEMLIMIT") == "" {
		// A soft heap limit for a 512 MB board: the garbage collector
		// works harder near it instead of letting the heap double.
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	if f := os.Getenv("RALPH_CPUPROFILE"); f != "" {
		// For the benchmarks (README, Performance): a CPU profile of the
		// whole run, written when it ends.
		stopProfile, err := startCPUProfile(f)
		if err != nil {
			log.Error("cannot start", "err", err)
			return 1
		}
		defer stopProfile()
	}
	g, err := gateway.New(cfg, log, versionString())
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP (systemctl reload) re-reads the config file and applies its
	// bridges; a config that does not load leaves everything as it is.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if path == embeddedConfig {
				log.Warn("SIGHUP: running on the embedded config, nothing to reload")
				continue
			}
			next, err := configs.Load(path)
			if err != nil {
				log.Error("SIGHUP: the new config is invalid; keeping the running one", "err", err)
				continue
			}
			log.Info("SIGHUP: reloading", "config", path)
			if l := logLevel(next.Log); l != level.Level() {
				log.Info("reload: log level applied", "level", next.Log.Level)
				level.Set(l)
			}
			g.Reload(next)
		}
	}()
	go func() {
		// Tell systemd (Type=notify) once the broker accepts connections.
		if err := g.Ready(ctx); err == nil {
			if err := sdNotify("READY=1"); err != nil {
				log.Warn("sd_notify failed", "err", err)
			}
		}
	}()
	if err := g.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("stopped with an error", "err", err)
		return 1
	}
	return 0
}

// logLevel is c's level (validated by configs: debug, info, warn or
// error).
func logLevel(c configs.Log) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.Level)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// newLogger logs to w in c.Format, at level.
func newLogger(c configs.Log, level slog.Leveler, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// sdNotify sends state to systemd's notification socket, if there is one
// (the sd_notify protocol: one datagram to $NOTIFY_SOCKET).
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}

// startCPUProfile profiles the process's CPU into the file path until
// the returned function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("RALPH_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("RALPH_CPUPROFILE: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
