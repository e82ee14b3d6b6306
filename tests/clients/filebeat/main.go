// filebeat is Elastic's Filebeat, built from github.com/elastic/beats/v7 at the version
// go.mod requires, for lumberd's tests (tests/filebeat.rs). It is beats' own
// filebeat/main.go: Filebeat's command with its default inputs, nothing added, so the
// tests run the code a user runs (config loading, filestream, registry, publisher
// pipeline, the logstash output over go-lumber). See tests/clients/README.md.
package main

import (
	"os"

	"github.com/elastic/beats/v7/filebeat/cmd"
	inputs "github.com/elastic/beats/v7/filebeat/input/default-inputs"
)

func main() {
	if err := cmd.Filebeat(inputs.Init, cmd.FilebeatSettings()).Execute(); err != nil {
		os.Exit(1)
	}
}
