// Package e2e holds the process-level tests: they build the custos binary,
// run real nodes as separate processes on 127.0.0.1 and drive them with the
// CLI, as an operator would.
package e2e
