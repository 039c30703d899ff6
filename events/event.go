package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Type identifies the kind of an event. Numbers are append-only: never
// renumber or reuse one.
type Type uint16

// The event types. Add new ones at the end.
const (
	TypeInvalid                  Type = 0
	TypeNodeRegistered           Type = 1
	TypeNodeUp                   Type = 2
	TypeNodeDown                 Type = 3
	TypeGuestDefined             Type = 4
	TypeGuestPlaced              Type = 5
	TypeGuestStartRequested      Type = 6
	TypeGuestStopRequested       Type = 7
	TypeGuestStarted             Type = 8
	TypeGuestExited              Type = 9
	TypeGuestUndefined           Type = 10
	TypeGuestTuned               Type = 11
	TypeServerRegistered         Type = 12
	TypeNodeEligibility          Type = 13
	TypeSchedulerConfig          Type = 14
	TypeNodeUsage                Type = 15
	TypeGuestLimitHit            Type = 16
	TypeGuestTuningApplied       Type = 17
	TypeGuestDrift               Type = 18
	TypeNodeCleanup              Type = 19
	TypeGuestSuspendRequested    Type = 20
	TypeGuestResumeRequested     Type = 21
	TypeACLTokenCreated          Type = 22
	TypeACLTokenDeleted          Type = 23
	TypeACLPolicySet             Type = 24
	TypeACLPolicyDeleted         Type = 25
	TypeNodeJoinTokenCreated     Type = 26
	TypeNodeEnrolled             Type = 27
	TypeGuestTuningFailed        Type = 28
	TypeGuestBalloon             Type = 29
	TypeGuestBalloonNoncompliant Type = 30
	TypePartitionSet             Type = 31
	TypePartitionDeleted         Type = 32
	TypeGuestRestarting          Type = 36
	TypeGuestRestartsExhausted   Type = 37

	// Migration (migration.go).
	TypeGuestMigrationRequested   Type = 40
	TypeGuestMigrationTargetReady Type = 41
	TypeGuestMigrationProgress    Type = 42
	TypeGuestMigrationSwitched    Type = 43
	TypeGuestMigrated             Type = 44
	TypeGuestMigrationAborted     Type = 45
)

// SchemaVersion is the envelope version written by this build.
const SchemaVersion = 1

type typeInfo struct {
	name string
	new  func() Payload
}

// registry maps each type to its stable name and a constructor of its
// payload. It is read-only after package initialisation.
var registry = map[Type]typeInfo{
	TypeNodeRegistered:           {"node.registered", func() Payload { return new(NodeRegistered) }},
	TypeNodeUp:                   {"node.up", func() Payload { return new(NodeUp) }},
	TypeNodeDown:                 {"node.down", func() Payload { return new(NodeDown) }},
	TypeGuestDefined:             {"guest.defined", func() Payload { return new(GuestDefined) }},
	TypeGuestPlaced:              {"guest.placed", func() Payload { return new(GuestPlaced) }},
	TypeGuestStartRequested:      {"guest.start_requested", func() Payload { return new(GuestStartRequested) }},
	TypeGuestStopRequested:       {"guest.stop_requested", func() Payload { return new(GuestStopRequested) }},
	TypeGuestStarted:             {"guest.started", func() Payload { return new(GuestStarted) }},
	TypeGuestExited:              {"guest.exited", func() Payload { return new(GuestExited) }},
	TypeGuestUndefined:           {"guest.undefined", func() Payload { return new(GuestUndefined) }},
	TypeGuestTuned:               {"guest.tuned", func() Payload { return new(GuestTuned) }},
	TypeServerRegistered:         {"server.registered", func() Payload { return new(ServerRegistered) }},
	TypeNodeEligibility:          {"node.eligibility", func() Payload { return new(NodeEligibility) }},
	TypeSchedulerConfig:          {"scheduler.config", func() Payload { return new(SchedulerConfig) }},
	TypeNodeUsage:                {"node.usage", func() Payload { return new(NodeUsage) }},
	TypeGuestLimitHit:            {"guest.limit_hit", func() Payload { return new(GuestLimitHit) }},
	TypeGuestTuningApplied:       {"guest.tuning_applied", func() Payload { return new(GuestTuningApplied) }},
	TypeGuestDrift:               {"guest.drift", func() Payload { return new(GuestDrift) }},
	TypeNodeCleanup:              {"node.cleanup", func() Payload { return new(NodeCleanup) }},
	TypeGuestSuspendRequested:    {"guest.suspend_requested", func() Payload { return new(GuestSuspendRequested) }},
	TypeGuestResumeRequested:     {"guest.resume_requested", func() Payload { return new(GuestResumeRequested) }},
	TypeACLTokenCreated:          {"acl.token_created", func() Payload { return new(ACLTokenCreated) }},
	TypeACLTokenDeleted:          {"acl.token_deleted", func() Payload { return new(ACLTokenDeleted) }},
	TypeACLPolicySet:             {"acl.policy_set", func() Payload { return new(ACLPolicySet) }},
	TypeACLPolicyDeleted:         {"acl.policy_deleted", func() Payload { return new(ACLPolicyDeleted) }},
	TypeNodeJoinTokenCreated:     {"node.join_token_created", func() Payload { return new(NodeJoinTokenCreated) }},
	TypeNodeEnrolled:             {"node.enrolled", func() Payload { return new(NodeEnrolled) }},
	TypeGuestTuningFailed:        {"guest.tuning_failed", func() Payload { return new(GuestTuningFailed) }},
	TypeGuestBalloon:             {"guest.balloon", func() Payload { return new(GuestBalloon) }},
	TypeGuestBalloonNoncompliant: {"guest.balloon_noncompliant", func() Payload { return new(GuestBalloonNoncompliant) }},
	TypePartitionSet:             {"partition.set", func() Payload { return new(PartitionSet) }},
	TypePartitionDeleted:         {"partition.deleted", func() Payload { return new(PartitionDeleted) }},
	TypeGuestRestarting:          {"guest.restarting", func() Payload { return new(GuestRestarting) }},
	TypeGuestRestartsExhausted:   {"guest.restarts_exhausted", func() Payload { return new(GuestRestartsExhausted) }},

	TypeGuestMigrationRequested:   {"guest.migration_requested", func() Payload { return new(GuestMigrationRequested) }},
	TypeGuestMigrationTargetReady: {"guest.migration_target_ready", func() Payload { return new(GuestMigrationTargetReady) }},
	TypeGuestMigrationProgress:    {"guest.migration_progress", func() Payload { return new(GuestMigrationProgress) }},
	TypeGuestMigrationSwitched:    {"guest.migration_switched", func() Payload { return new(GuestMigrationSwitched) }},
	TypeGuestMigrated:             {"guest.migrated", func() Payload { return new(GuestMigrated) }},
	TypeGuestMigrationAborted:     {"guest.migration_aborted", func() Payload { return new(GuestMigrationAborted) }},
}

// NewPayload returns an empty payload of type t, to decode into.
func NewPayload(t Type) (Payload, error) {
	info, ok := registry[t]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrUnknownType, uint16(t))
	}
	return info.new(), nil
}

var byName = func() map[string]Type {
	m := make(map[string]Type, len(registry))
	for t, info := range registry {
		m[info.name] = t
	}
	return m
}()

// String returns the stable name of t, such as "guest.defined".
func (t Type) String() string {
	if info, ok := registry[t]; ok {
		return info.name
	}
	return fmt.Sprintf("type(%d)", uint16(t))
}

// ParseType returns the type with the given stable name.
func ParseType(name string) (Type, error) {
	if t, ok := byName[name]; ok {
		return t, nil
	}
	return TypeInvalid, fmt.Errorf("%w: %q (known: %s)", ErrUnknownType, name, typeNames())
}

// Types returns every known type in number order.
func Types() []Type {
	out := make([]Type, 0, len(registry))
	for t := range registry {
		out = append(out, t)
	}
	slices.Sort(out) // numbers may have gaps: reserved ones not yet merged
	return out
}

func typeNames() string {
	s := ""
	for i, t := range Types() {
		if i > 0 {
			s += ", "
		}
		s += t.String()
	}
	return s
}

// MarshalText encodes t as its stable name.
func (t Type) MarshalText() ([]byte, error) {
	info, ok := registry[t]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrUnknownType, uint16(t))
	}
	return []byte(info.name), nil
}

// UnmarshalText decodes a stable name.
func (t *Type) UnmarshalText(b []byte) error {
	v, err := ParseType(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// Payload is the typed body of an event. Each payload type belongs to
// exactly one Type.
type Payload interface {
	EventType() Type
}

// Event is one committed fact. Index is assigned by the coordinator's state
// machine when the event is applied: indexes are dense (1, 2, 3, …) and the
// same on every server. Time, Actor and Reason are written by whoever
// proposes the event, never by the state machine.
type Event struct {
	Index   uint64    `json:"index"`
	Type    Type      `json:"type"`
	Version int       `json:"v"`
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`
	Reason  string    `json:"reason,omitempty"`
	Guest   string    `json:"guest,omitempty"`
	Node    string    `json:"node,omitempty"`
	Payload Payload   `json:"payload"`
}

// New returns an event carrying p with its type and schema version set.
func New(now time.Time, actor string, p Payload) Event {
	return Event{Type: p.EventType(), Version: SchemaVersion, Time: now.UTC(), Actor: actor, Payload: p}
}

// Sentinel errors. Check with errors.Is.
var (
	ErrUnknownType = errors.New("corral: unknown event type")
	ErrMalformed   = errors.New("corral: malformed event")
)

type wireEvent struct {
	Index   uint64          `json:"index"`
	Type    Type            `json:"type"`
	Version int             `json:"v"`
	Time    time.Time       `json:"time"`
	Actor   string          `json:"actor"`
	Reason  string          `json:"reason,omitempty"`
	Guest   string          `json:"guest,omitempty"`
	Node    string          `json:"node,omitempty"`
	Payload json.RawMessage `json:"payload"`
}

// Marshal encodes e in the wire and storage form (JSON, one line).
func Marshal(e Event) ([]byte, error) {
	if e.Payload == nil {
		return nil, fmt.Errorf("%w: event %d has no payload", ErrMalformed, e.Index)
	}
	if e.Payload.EventType() != e.Type {
		return nil, fmt.Errorf("%w: type %s carries a %s payload", ErrMalformed, e.Type, e.Payload.EventType())
	}
	return json.Marshal(e)
}

// Unmarshal decodes an event written by any released version of Marshal.
// Unknown types, unknown fields, a missing payload and trailing data are
// errors: it is for input from outside.
func Unmarshal(b []byte) (Event, error) { return decode(b, strictDecode) }

// TypeOf is the type of the encoded event raw, 0 when it has none. It
// reads the envelope only as far as its type, which Marshal puts before
// the payload, so a large event (a node's usage names every guest) is not
// decoded whole to learn what it is.
func TypeOf(raw []byte) Type {
	if len(raw) == 0 {
		return 0
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return 0
		}
		if key == "type" {
			var t Type
			if dec.Decode(&t) != nil {
				return 0
			}
			return t
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return 0
		}
	}
	return 0
}

// Decode decodes an event from corral's own log: like Unmarshal, but fields
// it does not know are ignored and it does half the work. The state machine
// uses it for committed entries, which the leader validated.
func Decode(b []byte) (Event, error) { return decode(b, json.Unmarshal) }

func decode(b []byte, dec func([]byte, any) error) (Event, error) {
	var w wireEvent
	if err := dec(b, &w); err != nil {
		var ut *json.UnmarshalTypeError
		if errors.Is(err, ErrUnknownType) || errors.As(err, &ut) && ut.Field == "type" {
			return Event{}, fmt.Errorf("%w: %v", ErrUnknownType, err)
		}
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	info, ok := registry[w.Type]
	if !ok {
		return Event{}, fmt.Errorf("%w: %d", ErrUnknownType, uint16(w.Type))
	}
	if w.Version < 1 || w.Version > SchemaVersion {
		return Event{}, fmt.Errorf("%w: schema version %d is not one this build reads (1..%d)", ErrMalformed, w.Version, SchemaVersion)
	}
	if len(w.Payload) == 0 || string(w.Payload) == "null" {
		return Event{}, fmt.Errorf("%w: %s event has no payload", ErrMalformed, w.Type)
	}
	p := info.new()
	if err := dec(w.Payload, p); err != nil {
		return Event{}, fmt.Errorf("%w: %s payload: %v", ErrMalformed, w.Type, err)
	}
	return Event{
		Index: w.Index, Type: w.Type, Version: w.Version, Time: w.Time, Actor: w.Actor,
		Reason: w.Reason, Guest: w.Guest, Node: w.Node, Payload: p,
	}, nil
}
