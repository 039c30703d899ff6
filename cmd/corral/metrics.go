package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// metricsTokenFlag adds --metrics-require-token to a server's flags.
func metricsTokenFlag(cmd *cobra.Command, v *bool) {
	cmd.Flags().BoolVar(v, "metrics-require-token", false, "make GET /metrics on the API ask for a token with cluster:read as well as a certificate (default: any certificate of the cluster reads it, as the metrics carry no secrets)")
}

// metricsServer serves an agent's /metrics on a port of its own.
type metricsServer struct {
	ln  net.Listener
	srv *http.Server
}

// serveMetrics listens on addr and serves h at /metrics until close.
func serveMetrics(addr string, h http.Handler, log *slog.Logger) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("corral: metrics listen %s: %w (is another agent serving there? use --metrics-addr)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	m := &metricsServer{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}}
	go func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("agent metrics stopped serving", "addr", addr, "err", err)
		}
	}()
	return m, nil
}

func (m *metricsServer) addr() string { return m.ln.Addr().String() }

// requireBearer wraps h so that it answers only a request carrying the
// token in file as "Authorization: Bearer TOKEN"; others get 401. The
// file is read once, at start.
func requireBearer(file string, h http.Handler) (http.Handler, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("corral: --metrics-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 {
		return nil, fmt.Errorf("corral: --metrics-token-file %s holds %d characters: give a secret of at least 16 (e.g. openssl rand -hex 32 > %s)", file, len(tok), file)
	}
	want := []byte("Bearer " + tok)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="corral agent metrics"`)
			http.Error(w, "corral: the agent's metrics need its bearer token (corral agent --metrics-token-file)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}), nil
}

func (m *metricsServer) close() {
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m.srv.Shutdown(ctx)
}
