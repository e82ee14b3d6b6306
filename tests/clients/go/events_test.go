package main

import "testing"

// lumberd's default document id is a digest of host.name, log.file.path and
// log.offset (src/pipeline/fingerprint.rs, DEFAULT_FINGERPRINT), so a resent event is
// a 409 duplicate only if no two events of a run share that triple.
func TestEveryEventOfARunHasItsOwnHostPathOffset(t *testing.T) {
	type triple struct {
		host, path string
		offset     int64
	}
	const window, windows = 2048, 200
	seen := make(map[triple]string, window*windows)
	for w := 0; w < windows; w++ {
		for i := 0; i < window; i++ {
			ev := makeEvent("go", w, i, w*window+i)
			k := triple{ev.Host.Name, ev.Log.File.Path, ev.Log.Offset}
			if other, dup := seen[k]; dup {
				t.Fatalf("%s and %s share host.name, log.file.path and log.offset %v", other, ev.TestID, k)
			}
			seen[k] = ev.TestID
		}
	}
}
