package coordinator

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
)

// TestAppendIndentedMatchesIndent requires appendIndented to write what
// json.Indent writes, for values with nesting, empty and nil containers,
// escapes, HTML and non-ASCII text, and for the whole state.
func TestAppendIndentedMatchesIndent(t *testing.T) {
	values := []any{
		nil, true, 0, -1.5e300, math.MaxInt64, "", `a "quoted" \ back\\slash \"`, "<tag> & \u2028 é 日本 \x01",
		[]any{}, map[string]any{}, []any{[]any{}, map[string]any{}, []any{1, []any{2, []any{3}}}},
		map[string]any{"a": map[string]any{"b": []any{"c", map[string]any{}, nil}}, "{[,:]}": "},{", `"\`: `\"`},
		struct {
			T time.Time
			R json.RawMessage
			P *int
		}{time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC), json.RawMessage(` { "x" : [ 1 , 2 ] } `), nil},
		&api.State{Index: 7, Guests: []*api.Guest{{Status: "running", Tuning: map[string]string{"cpu_shares": "512"}}}},
		buildStateView(t),
	}
	for i, v := range values {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if err := json.Indent(&want, b, "", "  "); err != nil {
			t.Fatal(err)
		}
		if got := appendIndented([]byte("prefix"), b, "  "); !bytes.Equal(got, append([]byte("prefix"), want.Bytes()...)) {
			t.Errorf("value %d: got\n%s\nwant\n%s", i, got, want.Bytes())
		}
	}
}

func buildStateView(t *testing.T) *api.State {
	h := buildHistoryLog(t, t.TempDir(), 3000, DefaultStoreConfig())
	return h.state.View()
}

func BenchmarkWriteJSONState(b *testing.B) {
	h := buildHistoryLog(b, b.TempDir(), 10_000, DefaultStoreConfig())
	v := h.state.View()
	b.Run("indented", func(b *testing.B) {
		for range b.N {
			out, _ := json.Marshal(v)
			appendIndented(make([]byte, 0, 2*len(out)+1), out, "  ")
		}
	})
	b.Run("encoder", func(b *testing.B) {
		for range b.N {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetIndent("", "  ")
			enc.Encode(v)
		}
	})
}

// FuzzAppendIndented compares appendIndented with json.Indent on any valid
// JSON, compacted first as json.Marshal's output is.
func FuzzAppendIndented(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `{"a":[1,{"b":"\"}"}],"c":{}}`, `"\\\""`, `[[],[{}],null]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var compact bytes.Buffer
		if json.Compact(&compact, in) != nil {
			return
		}
		var want bytes.Buffer
		if err := json.Indent(&want, compact.Bytes(), "", "\t"); err != nil {
			t.Fatal(err)
		}
		if got := appendIndented(nil, compact.Bytes(), "\t"); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("got\n%s\nwant\n%s", got, want.Bytes())
		}
	})
}
