// Command custos is the custos server and its command line.
package main

import "github.com/custos-pki/custos/cli"

func main() { cli.Execute() }
