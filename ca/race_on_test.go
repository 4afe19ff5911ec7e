//go:build race

package ca

// raceEnabled tells tests too slow under the race detector to skip.
const raceEnabled = true
