package simtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/coordinator/bus"
)

// Bus is an in-memory message bus with NATS's subjects ("." separated
// tokens, "*" for one token, ">" for the rest) and its delivery promise:
// none. Every delivery, from one endpoint to one subscriber, goes through
// the bus's [Fault] function, which may drop, delay or duplicate it; the
// bus counts what it published and delivered per subject.
//
// Endpoints are [Conn]s, one per daemon, named after it (a server's or a
// node's ID), so that a fault can single out who talks to whom.
type Bus struct {
	mu        sync.Mutex
	rng       *rand.Rand
	fault     Fault
	cut       func(from, to string) bool
	subs      []*subscription // in subscription order, for a deterministic fan-out
	nextID    uint64
	stats     map[string]*SubjectStats
	received  map[string]map[string]int // endpoint -> subject -> deliveries
	observers []func(Delivery)
}

// Delivery is one message on its way from one endpoint to one subscriber.
type Delivery struct {
	From, To string
	Subject  string
	// Index and Prev are the message's log index and its receiver's
	// previous index, as the publisher set them (0 on requests and
	// replies).
	Index, Prev uint64
	Data        []byte
	// ReplyTo is the inbox a request wants its reply on ("" for a plain
	// message); Reply marks a reply to a request.
	ReplyTo string
	Reply   bool
}

// Fate is what happens to one delivery: dropped, or delivered after
// Delay, Copies extra times (a duplicate arrives with the same delay).
type Fate struct {
	Drop   bool
	Delay  time.Duration
	Copies int
}

// Fault decides the fate of each delivery. It is called with the bus
// locked, one delivery at a time, with the bus's random source, which is
// seeded from the cluster's seed: a fault that draws only from rng is
// reproducible. nil delivers everything at once, exactly once, in order.
type Fault func(d Delivery, rng *rand.Rand) Fate

// SubjectStats counts what happened on one subject.
type SubjectStats struct {
	Published  int // messages and requests sent on the subject
	Delivered  int // deliveries handed to subscribers, duplicates included
	Dropped    int // deliveries the fault function dropped
	Duplicated int // extra copies the fault function made
}

// ErrClosed is returned by a [Conn] that was closed, as by a crash.
var ErrClosed = errors.New("simtest: bus connection closed")

// NewBus returns an empty bus whose faults draw from a source seeded with
// seed.
func NewBus(seed uint64) *Bus {
	return &Bus{
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		stats:    map[string]*SubjectStats{},
		received: map[string]map[string]int{},
	}
}

// SetFault replaces the fault function; nil removes it.
func (b *Bus) SetFault(f Fault) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fault = f
}

// SetCut installs a function that decides whether endpoint from can
// reach endpoint to at all: the hook partitions build on. A delivery it
// refuses is dropped before the fault function sees it. nil lets every
// endpoint reach every other.
func (b *Bus) SetCut(f func(from, to string) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cut = f
}

// Observe calls fn for every delivery handed to a subscriber, with the
// bus locked: fn must be quick and must not use the bus.
func (b *Bus) Observe(fn func(Delivery)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.observers = append(b.observers, fn)
}

// Stats returns the counts of one subject (no wildcards).
func (b *Bus) Stats(subject string) SubjectStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.stats[subject]; s != nil {
		return *s
	}
	return SubjectStats{}
}

// Received returns how many deliveries endpoint to was handed on subjects
// matching pattern (wildcards allowed).
func (b *Bus) Received(to, pattern string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for subj, k := range b.received[to] {
		if matchSubject(pattern, subj) {
			n += k
		}
	}
	return n
}

// Subscribed reports whether endpoint name has a subscription whose
// pattern matches subject.
func (b *Bus) Subscribed(name, subject string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.subs {
		if s.conn.name == name && matchSubject(s.pattern, subject) {
			return true
		}
	}
	return false
}

// Conn returns a new endpoint named name. Close it to take the daemon off
// the bus.
func (b *Bus) Conn(name string) *Conn {
	return &Conn{bus: b, name: name, closed: make(chan struct{})}
}

// stat returns the counts of subject; replies are counted together under
// "_INBOX", since every request has an inbox of its own.
func (b *Bus) stat(subject string) *SubjectStats {
	if strings.HasPrefix(subject, inboxPrefix) {
		subject = "_INBOX"
	}
	s := b.stats[subject]
	if s == nil {
		s = &SubjectStats{}
		b.stats[subject] = s
	}
	return s
}

// send routes d to every subscriber whose pattern matches its subject and
// returns how many matched, before faults.
func (b *Bus) send(d Delivery) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.stat(d.Subject)
	st.Published++
	n := 0
	for _, s := range b.subs {
		if !matchSubject(s.pattern, d.Subject) {
			continue
		}
		n++
		d := d
		d.To = s.conn.name
		fate := Fate{}
		if b.cut != nil && b.cut(d.From, d.To) {
			fate.Drop = true
		} else if b.fault != nil {
			fate = b.fault(d, b.rng)
		}
		if fate.Drop {
			st.Dropped++
			continue
		}
		st.Duplicated += max(fate.Copies, 0)
		for range 1 + max(fate.Copies, 0) {
			if fate.Delay <= 0 {
				b.deliverLocked(s, d)
				continue
			}
			time.AfterFunc(fate.Delay, func() {
				b.mu.Lock()
				defer b.mu.Unlock()
				b.deliverLocked(s, d)
			})
		}
	}
	return n
}

// deliverLocked hands d to s unless s is gone meanwhile.
func (b *Bus) deliverLocked(s *subscription, d Delivery) {
	if !slices.Contains(b.subs, s) {
		return
	}
	b.stat(d.Subject).Delivered++
	r := b.received[d.To]
	if r == nil {
		r = map[string]int{}
		b.received[d.To] = r
	}
	key := d.Subject
	if d.Reply {
		key = "_INBOX"
	}
	r[key]++
	for _, fn := range b.observers {
		fn(d)
	}
	s.deliver(d)
}

func (b *Bus) subscribe(s *subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs = append(b.subs, s)
}

func (b *Bus) unsubscribe(s *subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs = slices.DeleteFunc(b.subs, func(x *subscription) bool { return x == s })
}

// subscription is one pattern of one endpoint. deliver runs with the bus
// locked and must not block: queued subscriptions append to their queue,
// reply inboxes hand the first reply over.
type subscription struct {
	conn    *Conn
	pattern string
	deliver func(Delivery)
}

// queue is an unbounded FIFO of deliveries with a wake-up channel, for the
// one goroutine that consumes a subscription.
type queue struct {
	mu    sync.Mutex
	items []Delivery
	wake  chan struct{}
}

func newQueue() *queue { return &queue{wake: make(chan struct{}, 1)} }

func (q *queue) push(d Delivery) {
	q.mu.Lock()
	q.items = append(q.items, d)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) take() []Delivery {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.items
	q.items = nil
	return out
}

// Conn is one daemon's connection to the [Bus]. It implements
// [coordinator.Bus] for a server and the subscriptions a node agent needs.
type Conn struct {
	bus  *Bus
	name string

	mu      sync.Mutex
	subs    []*subscription
	closed  chan struct{}
	isClose bool
}

var _ coordinator.Bus = (*Conn)(nil)

// Name is the endpoint's name.
func (c *Conn) Name() string { return c.name }

func (c *Conn) add(pattern string, deliver func(Delivery)) (*subscription, error) {
	if err := validPattern(pattern); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isClose {
		return nil, ErrClosed
	}
	s := &subscription{conn: c, pattern: pattern, deliver: deliver}
	c.subs = append(c.subs, s)
	c.bus.subscribe(s)
	return s, nil
}

func (c *Conn) remove(s *subscription) {
	c.bus.unsubscribe(s)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.subs = slices.DeleteFunc(c.subs, func(x *subscription) bool { return x == s })
}

func (c *Conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// Publish sends data on subject with its log index and, when prev > 0,
// the index of the previous message for the same receiver.
func (c *Conn) Publish(subject string, index, prev uint64, data []byte) error {
	if c.isClosed() {
		return ErrClosed
	}
	if err := validSubject(subject); err != nil {
		return err
	}
	c.bus.send(Delivery{From: c.name, Subject: subject, Index: index, Prev: prev, Data: clone(data)})
	return nil
}

// Handle answers every request on subject (wildcards allowed) with
// handler's reply, one at a time on a goroutine of its own, until stop is
// called or the connection closes. Messages without a reply address are
// ignored, as NATS's request handlers do.
func (c *Conn) Handle(subject string, handler func(subject string, data []byte) []byte) (stop func(), err error) {
	q := newQueue()
	s, err := c.add(subject, q.push)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-done:
				return
			case <-c.closed:
				return
			case <-q.wake:
			}
			for _, d := range q.take() {
				if d.ReplyTo == "" {
					continue
				}
				rep := handler(d.Subject, d.Data)
				if c.isClosed() {
					return
				}
				c.bus.send(Delivery{From: c.name, Subject: d.ReplyTo, Data: clone(rep), Reply: true})
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.remove(s)
			close(done)
			<-exited
		})
	}, nil
}

const inboxPrefix = "_INBOX."

// newInbox returns a subject no one else subscribes to.
func (b *Bus) newInbox() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextID++
	return inboxPrefix + strconv.FormatUint(b.nextID, 10)
}

// Request sends data on subject and returns the first reply. It fails with
// an error wrapping bus.ErrNoResponders when nobody subscribes to the
// subject, and bus.ErrTimeout when ctx ends first (a dropped request or
// reply ends that way).
func (c *Conn) Request(ctx context.Context, subject string, data []byte) ([]byte, error) {
	if c.isClosed() {
		return nil, ErrClosed
	}
	if err := validSubject(subject); err != nil {
		return nil, err
	}
	inbox := c.bus.newInbox()
	replies := make(chan []byte, 1)
	s, err := c.add(inbox, func(d Delivery) {
		select {
		case replies <- d.Data:
		default: // a later reply or a duplicate: the first one won
		}
	})
	if err != nil {
		return nil, err
	}
	defer c.remove(s)
	if c.bus.send(Delivery{From: c.name, Subject: subject, Data: clone(data), ReplyTo: inbox}) == 0 {
		return nil, fmt.Errorf("%w: %s", bus.ErrNoResponders, subject)
	}
	select {
	case b := <-replies:
		return b, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %s", bus.ErrTimeout, subject)
	case <-c.closed:
		return nil, ErrClosed
	}
}

// Serve answers every request on subject with handler's reply, one at a
// time on Serve's goroutine, until ctx ends or the connection closes.
func (c *Conn) Serve(ctx context.Context, subject string, handler func(req []byte) []byte) error {
	q := newQueue()
	s, err := c.add(subject, q.push)
	if err != nil {
		return err
	}
	defer c.remove(s)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closed:
			return ErrClosed
		case <-q.wake:
		}
		for _, d := range q.take() {
			if d.ReplyTo == "" || ctx.Err() != nil || c.isClosed() {
				continue
			}
			rep := handler(d.Data)
			c.bus.send(Delivery{From: c.name, Subject: d.ReplyTo, Data: clone(rep), Reply: true})
		}
	}
}

// Watch calls fn with every message on subject (wildcards allowed), on
// Watch's goroutine, until ctx ends or the connection closes. The
// subscription is in place when ready is called (nil: not told).
func (c *Conn) Watch(ctx context.Context, subject string, ready func(), fn func(bus.Msg)) error {
	q := newQueue()
	s, err := c.add(subject, q.push)
	if err != nil {
		return err
	}
	defer c.remove(s)
	if ready != nil {
		ready()
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closed:
			return ErrClosed
		case <-q.wake:
		}
		for _, d := range q.take() {
			if ctx.Err() != nil || c.isClosed() {
				break
			}
			fn(bus.Msg{Subject: d.Subject, Index: d.Index, Prev: d.Prev, Data: d.Data})
		}
	}
}

// Close takes the endpoint off the bus: its subscriptions end, pending
// requests fail, and later calls return ErrClosed.
func (c *Conn) Close() {
	c.mu.Lock()
	if c.isClose {
		c.mu.Unlock()
		return
	}
	c.isClose = true
	subs := c.subs
	c.subs = nil
	close(c.closed)
	c.mu.Unlock()
	for _, s := range subs {
		c.bus.unsubscribe(s)
	}
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// matchSubject reports whether subject matches pattern as NATS matches
// them: "*" is one token, a final ">" one or more.
func matchSubject(pattern, subject string) bool {
	p := strings.Split(pattern, ".")
	s := strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

func validSubject(s string) error {
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
			return fmt.Errorf("simtest: subject %q is not a NATS subject", s)
		}
	}
	return nil
}

func validPattern(p string) error {
	toks := strings.Split(p, ".")
	for i, tok := range toks {
		if tok == "" || strings.ContainsAny(tok, " \t\r\n") || (tok == ">" && i != len(toks)-1) ||
			(len(tok) > 1 && strings.ContainsAny(tok, "*>")) {
			return fmt.Errorf("simtest: subject %q is not a NATS subject pattern", p)
		}
	}
	return nil
}
