package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/coordinator/pki"
)

// TestAttacks replays, against a 3-server cluster with TLS and ACLs on,
// every attack that worked when nothing was authenticated, and checks that
// each one is refused and changes nothing.
func TestAttacks(t *testing.T) {
	sc := newSecureCluster(t, 3)
	sc.setup()
	li, leader := sc.leader()
	follower := sc.servers[(li+1)%3]
	anon := sc.httpClient(pki.Identity{})
	alice := sc.httpClient(pki.Identity{Role: pki.RoleClient, Name: "alice"})
	n1 := sc.httpClient(pki.Identity{Role: pki.RoleNode, Name: "n1"})
	n2 := sc.httpClient(pki.Identity{Role: pki.RoleNode, Name: "n2"})
	indexBefore := leader.AppliedIndex()

	attacks := []struct {
		name   string
		hc     *http.Client
		token  string
		target *Server
		method string
		path   string
		body   any
	}{
		{"create a guest that runs id as root, no credentials", anon, "", follower, "POST", "/v1/guests",
			map[string]any{"name": "pwn", "driver": "process", "memory": "16MiB", "command": []string{"id"}}},
		{"create a guest with a read-only token", alice, sc.token["read"], follower, "POST", "/v1/guests",
			map[string]any{"name": "pwn", "driver": "process", "memory": "16MiB", "command": []string{"id"}}},
		{"create a guest as a node", n1, "", leader, "POST", "/v1/guests",
			map[string]any{"name": "pwn", "driver": "process", "memory": "16MiB", "command": []string{"id"}}},
		{"register a rogue 64-CPU node, no credentials", anon, "", leader, "POST", "/v1/nodes",
			map[string]any{"id": "rogue", "cpus": 64, "memory_bytes": 1 << 40}},
		{"register a rogue node with a write token", alice, sc.token["write"], leader, "POST", "/v1/nodes",
			map[string]any{"id": "rogue", "cpus": 64, "memory_bytes": 1 << 40}},
		{"register a rogue node as node n1", n1, "", follower, "POST", "/v1/nodes",
			map[string]any{"id": "rogue", "cpus": 64, "memory_bytes": 1 << 40}},
		{"declare n2 down through a follower, no credentials", anon, "", follower, "POST", "/v1/nodes/n2/status",
			map[string]any{"status": "down"}},
		{"declare n2 down as node n1", n1, "", follower, "POST", "/v1/nodes/n2/status",
			map[string]any{"status": "down"}},
		{"declare n2 down with a write token", alice, sc.token["write"], follower, "POST", "/v1/nodes/n2/status",
			map[string]any{"status": "down"}},
		{"take over n2: re-register it as node n1", n1, "", follower, "POST", "/v1/nodes", nodeBody("n2")},
		{"join a dead voter, no credentials", anon, "", follower, "POST", "/v1/cluster/join",
			map[string]any{"id": "s9", "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:1"}},
		{"join a dead voter with a management token", alice, sc.mgmt, leader, "POST", "/v1/cluster/join",
			map[string]any{"id": "s9", "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:1"}},
		{"join a dead voter as a node", n1, "", leader, "POST", "/v1/cluster/join",
			map[string]any{"id": "s9", "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:1"}},
		{"remove a server with an operator's read token", alice, sc.token["read"], leader, "POST", "/v1/cluster/remove-peer",
			map[string]any{"id": follower.ID()}},
		{"report for node n2 as node n1", n1, "", follower, "POST", "/v1/nodes/n2/report",
			map[string]any{"items": []map[string]any{{"type": "node.usage", "payload": map[string]any{}}}}},
		{"report for a static node without a certificate", anon, "", leader, "POST", "/v1/nodes/n2/report",
			map[string]any{"items": []map[string]any{{"type": "node.usage", "payload": map[string]any{}}}}},
		{"read a node's desired state (guest definitions) as another node", n2, "", follower, "GET", "/v1/nodes/n1/desired", nil},
		{"make a management token with an operator token", alice, sc.token["operator"], leader, "POST", "/v1/acl/tokens",
			api.CreateToken{Name: "mine", Policies: []string{"management"}}},
		{"bootstrap again", alice, "", leader, "POST", "/v1/acl/bootstrap", nil},
		{"read the read index as a client", alice, sc.mgmt, follower, "GET", "/v1/internal/read-index", nil},
	}
	denied := uint64(0)
	for _, a := range attacks {
		got := call(t, a.hc, a.method, sc.url(a.target, a.path), a.token, a.body)
		if got.status == 200 || got.status == -1 {
			t.Errorf("%s: %s %s answered %d: %s", a.name, a.method, a.path, got.status, got.body)
		}
		if got.refused() {
			denied++
		}
	}
	// Three joins of dead servers, even through a server's own
	// certificate, leave the cluster with a leader that commits.
	srv := sc.httpClient(pki.Identity{Role: pki.RoleServer, Name: "s9"})
	for i, id := range []string{"s7", "s8", "s9"} {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		dead := ln.Addr().String()
		ln.Close()
		call(t, srv, "POST", sc.url(sc.servers[i], "/v1/cluster/join"), "", map[string]any{"id": id, "raft_addr": dead, "http_addr": dead})
	}
	if a := call(t, alice, "POST", sc.url(follower, "/v1/guests"), sc.token["write"],
		map[string]any{"name": "after-joins", "driver": "process", "memory": "16MiB", "command": []string{"true"}, "no_start": true}); a.status != 200 {
		t.Fatalf("after three dead joins the cluster does not commit: %d %s", a.status, a.body)
	}

	// Nothing the attacks sent reached the log.
	leader.fsm.read(func(st *cluster.State) {
		if _, ok := st.Guests["pwn"]; ok {
			t.Error("guest pwn exists")
		}
		if _, ok := st.Nodes["rogue"]; ok {
			t.Error("node rogue exists")
		}
		if n := st.Nodes["n2"]; n.Status != cluster.NodeStatusUp {
			t.Errorf("n2 is %s", n.Status)
		}
	})
	// The store writer may run behind the state machine.
	if err := leader.waitStored(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs, _ := leader.store.Read(indexBefore, 10000)
	for _, r := range recs {
		s := string(r.Data)
		if strings.Contains(s, `"pwn"`) || strings.Contains(s, `"rogue"`) || strings.Contains(s, `"node.down"`) {
			t.Errorf("an attack reached the log: %s", s)
		}
	}

	// Node list shows no secret hash.
	a := call(t, alice, "GET", sc.url(follower, "/v1/nodes"), sc.token["read"], nil)
	if a.status != 200 || strings.Contains(a.body, "secret_hash\": \"") && !strings.Contains(a.body, `"secret_hash": ""`) {
		t.Errorf("node list: %d %s", a.status, a.body)
	}
	var nodes []api.NodeView
	json.Unmarshal([]byte(a.body), &nodes)
	for _, n := range nodes {
		if n.SecretHash != "" {
			t.Errorf("node list shows %s's secret hash", n.ID)
		}
	}

	// NATS: nobody without a certificate gets in; node n1 can neither
	// forge n2's heartbeats nor read the event stream.
	natsURL := leader.NATSURL()
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(natsURL, "tls://"), time.Second); err == nil {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write([]byte("CONNECT {}\r\nSUB corral.events.> 1\r\nPING\r\n"))
		buf := make([]byte, 4096)
		n, _ := c.Read(buf)
		m, _ := c.Read(buf[n:])
		if strings.Contains(string(buf[:n+m]), "PONG") {
			t.Error("a plain NATS client was served")
		}
		c.Close()
	}
	l1, err := sc.files(pki.Identity{Role: pki.RoleNode, Name: "n1"}).Load()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := bus.Dial(natsURL, "attacker-n1", bus.WithTLS(l1.DialConfig()))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, _, err := nc.Subscribe("corral.events.>"); !errors.Is(err, bus.ErrNotPermitted) {
		t.Errorf("node n1 subscribed to every event: %v", err)
	}
	if _, _, err := nc.Subscribe(bus.NodeSubject("n2")); !errors.Is(err, bus.ErrNotPermitted) {
		t.Errorf("node n1 subscribed to n2's updates: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if b, err := nc.Request(ctx, bus.HeartbeatSubject("n2"), []byte(`{}`)); err == nil {
		t.Errorf("node n1 sent a heartbeat for n2 and got %s", b)
	}
	if got := leader.Denials() + follower.Denials(); got < denied || denied < uint64(len(attacks))-1 {
		t.Errorf("%d refusals counted, %d of %d attacks refused by authorization (all but a second bootstrap, a conflict)", got, denied, len(attacks))
	}
}
