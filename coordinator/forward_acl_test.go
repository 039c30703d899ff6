package coordinator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/pki"
)

// TestTokenDeletedThroughFollowerIsGoneThere: forwarded writes are
// answered at the leader's commit, but an ACL write still waits until the
// forwarding server has applied it, so a token deleted through a follower
// is refused by that follower in the very next request, every time.
func TestTokenDeletedThroughFollowerIsGoneThere(t *testing.T) {
	sc := newSecureCluster(t, 3)
	sc.setup()
	li, leader := sc.leader()
	follower := sc.servers[(li+1)%3]
	alice := sc.httpClient(pki.Identity{Role: pki.RoleClient, Name: "alice"})
	for i := range 20 {
		a := call(t, alice, "POST", sc.url(leader, "/v1/acl/tokens"), sc.mgmt, api.CreateToken{Name: fmt.Sprint("t", i), Policies: []string{"read"}})
		if a.status != http.StatusOK {
			t.Fatalf("create token %d: %d %s", i, a.status, a.body)
		}
		var tok api.ACLTokenSecret
		json.Unmarshal([]byte(a.body), &tok)
		if a := call(t, alice, "GET", sc.url(follower, "/v1/acl/tokens/self"), tok.Secret, nil); a.status != http.StatusOK {
			t.Fatalf("token %d on follower %s before it was deleted: %d %s", i, follower.ID(), a.status, a.body)
		}
		if a := call(t, alice, "DELETE", sc.url(follower, "/v1/acl/tokens/"+tok.Accessor), sc.mgmt, nil); a.status != http.StatusOK {
			t.Fatalf("delete token %d through follower %s: %d %s", i, follower.ID(), a.status, a.body)
		}
		if a := call(t, alice, "GET", sc.url(follower, "/v1/acl/tokens/self"), tok.Secret, nil); a.status != http.StatusUnauthorized {
			t.Fatalf("token %d on follower %s right after it was deleted there: %d %s, want 401", i, follower.ID(), a.status, a.body)
		}
	}
}
