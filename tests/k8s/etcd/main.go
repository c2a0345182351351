// Command etcd starts a single-member etcd (go.etcd.io/etcd/server/v3/embed) for the end-to-end
// tests: one member, plain HTTP, on the addresses given (loopback). It serves the etcd v3 gRPC API
// and its JSON gateway (/v3/kv/range, /v3/kv/compaction, ...) on the client URL, and stops cleanly
// on SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func parseURL(name, s string) url.URL {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		log.Fatalf("etcd: bad --%s %q", name, s)
	}
	return *u
}

func main() {
	dataDir := flag.String("data-dir", "", "directory for the member's data (required)")
	name := flag.String("name", "default", "member name")
	clientURL := flag.String("listen-client-urls", "http://127.0.0.1:2379", "client URL to listen on and advertise")
	peerURL := flag.String("listen-peer-urls", "http://127.0.0.1:2380", "peer URL to listen on and advertise")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	noFsync := flag.Bool("unsafe-no-fsync", false, "skip fsync (throwaway test data only)")
	quota := flag.Int64("quota-backend-bytes", 0, "backend size quota (0: etcd's default)")
	flag.Parse()
	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "etcd: --data-dir is required")
		os.Exit(2)
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cu := parseURL("listen-client-urls", *clientURL)
	pu := parseURL("listen-peer-urls", *peerURL)
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = *logLevel
	cfg.LogOutputs = []string{"stderr"}
	cfg.UnsafeNoFsync = *noFsync
	if *quota > 0 {
		cfg.QuotaBackendBytes = *quota
	}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatalf("etcd: start: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "etcd: ready, serving clients on %s\n", cu.String())
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		log.Fatal("etcd: not ready after 60s")
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "etcd: %v, stopping\n", s)
		e.Close()
	case err := <-e.Err():
		log.Fatalf("etcd: %v", err)
	}
}
