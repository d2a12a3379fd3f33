// Package decimal is the exact decimal arithmetic the hub's pipeline uses for
// business quantities: unit conversions in crosswalks, rounding to a
// destination's decimals and the decimal functions of the CEL rules. Stored
// quantities travel as decimal strings ("12.5") and are never converted to
// floating point.
package decimal
