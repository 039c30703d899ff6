// Package events defines corral's event log vocabulary: the envelope every
// committed change travels in, the typed payloads, their stable wire encoding,
// and the validation of user-supplied values (guest IDs, sizes, ranges) that
// every event must pass before it is proposed.
//
// Event types are append-only: a Type number is never renumbered or reused and
// an encoding once written stays decodable. The golden files in testdata/
// hold one encoding of every type as released; TestGolden fails if a change
// makes any of them undecodable or decodes it differently.
//
// Dependency rule: this package imports the standard library only, nothing
// of corral's and no other module; every other package may import it.
package events
